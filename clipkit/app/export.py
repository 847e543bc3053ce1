"""`python -m clipkit.app export DIR --model SPEC`: a folder that runs as a Hugging Face Space as it stands.

A `--share` link lasts about three days; a Space stays. The folder holds:

- `app.py`, the entry point a Gradio Space runs: it puts the folder first on `sys.path` and serves
  the app with `space_app(folder)`;
- `clipkit/`, a copy of this package (so the folder needs neither this repository nor a release of
  clipkit on PyPI: what runs is exactly what was exported);
- `model/`, the weights as safetensors with their config, in the model's own format (a clipkit
  checkpoint, an open_clip state dict with its model config, or a transformers folder);
- `clipkit_space.json`, which model to load from `model/` and where its weights came from;
- `requirements.txt` (the Space installs it; version floors from clipkit's own dependencies),
  `README.md` with the Space's metadata block (sdk: gradio, app_file: app.py, ...) and
  `.gitattributes` sending the weights through Git LFS, as the Hub requires for large files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from importlib import metadata
from pathlib import Path

SETTINGS_FILE = "clipkit_space.json"
MODEL_FOLDER = "model"
OPEN_CLIP_WEIGHTS = "open_clip_model.safetensors"
OPEN_CLIP_CONFIGS = "open_clip_config"  # the architecture's config, so names registered at run time travel too
# The distributions a Space needs to serve the app; their version floors come from clipkit's metadata.
SPACE_PACKAGES = ("torch", "torchvision", "open_clip_torch", "safetensors", "tqdm", "numpy", "pillow", "matplotlib", "gradio")
EXTRA_PACKAGES = {"hf": ("transformers",), "lit": ("sentence-transformers",)}

APP_PY = '''"""The clipkit demo as a Hugging Face Space: written by `python -m clipkit.app export`.

Runs as it stands: `python app.py` here, or push this folder to a Space (sdk: gradio).
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the copy of clipkit beside this file, before any installed one
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import clipkit  # noqa: E402
from clipkit.app.export import space_app  # noqa: E402
from clipkit.app.server import launch  # noqa: E402

print(f"clipkit from {Path(clipkit.__file__).parent}", flush=True)
demo = space_app(HERE)

if __name__ == "__main__":
    # A Space sets GRADIO_SERVER_NAME=0.0.0.0; anywhere else the app stays on 127.0.0.1.
    launch(demo, host=os.environ.get("GRADIO_SERVER_NAME"), port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
'''

README = """---
title: {title}
emoji: 🔎
colorFrom: indigo
colorTo: green
sdk: gradio
sdk_version: {gradio}
app_file: app.py
pinned: false
---

# {title}

A CLIP demo (zero-shot classification, search, steering, model card) written by
`python -m clipkit.app export`. Weights: {source}.

Run it here with `pip install -r requirements.txt && python app.py`, or publish it as a Space:
create a Gradio Space and push this folder (`huggingface-cli upload USER/SPACE .` or git with
Git LFS: `.gitattributes` already sends `*.safetensors` through LFS).
"""


def _requirements(kind: str) -> str:
    floors = {}
    try:
        requirements = metadata.requires("clipkit") or ()
    except metadata.PackageNotFoundError:  # clipkit run from a folder, not installed: installed versions as floors
        requirements = ()
    for requirement in requirements:
        if "extra ==" not in requirement:
            name = requirement.split(">")[0].split("=")[0].split("<")[0].strip()
            floors[name.lower()] = requirement
    lines = []
    for name in SPACE_PACKAGES + EXTRA_PACKAGES.get(kind, ()):
        if name in floors:
            lines.append(floors[name])
        else:
            try:
                lines.append(f"{name}>={metadata.version(name)}")
            except metadata.PackageNotFoundError:
                lines.append(name)
    return "\n".join(lines) + "\n"


def _save_weights(model, spec, target: Path) -> dict:
    """Write the model's weights into `target`; the settings that load them again (paths relative to the folder)."""
    from clipkit.checkpoint import checkpoint_format

    if spec.kind == "open_clip":
        import open_clip

        from clipkit.pretrained import openclip_state_dict_file

        target.mkdir(parents=True)
        openclip_state_dict_file(model, target / OPEN_CLIP_WEIGHTS)
        configs = target / OPEN_CLIP_CONFIGS
        configs.mkdir()
        (configs / f"{spec.target}.json").write_text(json.dumps(open_clip.get_model_config(spec.target)))
        return {"kind": "open_clip", "name": spec.target, "weights": f"{MODEL_FOLDER}/{OPEN_CLIP_WEIGHTS}",
                "random_init": spec.pretrained is None}
    if spec.kind == "hf":
        from clipkit.hf import save_hf

        save_hf(model, target)
        return {"kind": "hf"}
    form = checkpoint_format(spec.target)
    shutil.copytree(Path(spec.target).expanduser(), target, ignore=shutil.ignore_patterns("train_state*", ".*"))
    return {"kind": "lit" if form == "clipkit.LiTModel" else "clipkit"}


def export_space(folder: str | Path, spec: str, title: str | None = None, device: str = "cpu") -> Path:
    """Write the Space folder for the model `spec` names (see the module docstring); returns the folder."""
    import clipkit
    from clipkit.checkpoint import load_model_spec

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} exists and is not empty: export into a new folder (nothing was overwritten)")
    model, parsed = load_model_spec(spec, device=device)
    staging = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        settings = _save_weights(model, parsed, staging / MODEL_FOLDER)
        settings.update(source=parsed.describe(), title=title or f"clipkit demo: {parsed.target}")
        shutil.copytree(Path(clipkit.__file__).parent, staging / "clipkit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        (staging / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
        (staging / "app.py").write_text(APP_PY)
        (staging / "requirements.txt").write_text(_requirements(settings["kind"]))
        (staging / "README.md").write_text(README.format(title=settings["title"], gradio=metadata.version("gradio"), source=settings["source"]))
        (staging / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)  # the folder appears whole or not at all
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def space_app(folder: str | Path):
    """The app an exported folder serves: its model from `model/`, the card naming where the weights came from."""
    from clipkit.app.server import build_app
    from clipkit.checkpoint import ModelSpec, load_model_spec
    from clipkit.io import read_json

    folder = Path(folder)
    settings = read_json(folder / SETTINGS_FILE, "Space settings", "export the folder again with python -m clipkit.app export")
    if settings["kind"] == "open_clip":
        import open_clip

        open_clip.add_model_config(folder / MODEL_FOLDER / OPEN_CLIP_CONFIGS)
        spec = ModelSpec("open_clip", settings["name"], str(folder / settings["weights"]))
    else:
        spec = ModelSpec("hf" if settings["kind"] == "hf" else "clipkit", str(folder / MODEL_FOLDER))
    model, _ = load_model_spec(spec)
    return build_app(model, title=settings["title"], source=settings["source"])


def main(argv: list[str] | None = None) -> int:
    from clipkit.io import report_bad_input
    from clipkit.pretrained import PretrainedWeightsUnavailableError

    parser = argparse.ArgumentParser(prog="python -m clipkit.app export", description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path, help="the Space folder to write (new or empty)")
    parser.add_argument("--model", required=True, metavar="SPEC",
                        help="a checkpoint folder, open_clip:NAME[:TAG or weights file] or hf:ID-or-folder")
    parser.add_argument("--title", help="the Space's title (default: names the model)")
    parser.add_argument("--debug", action="store_true", help="on bad input, show the full traceback")
    args = parser.parse_args(argv)
    try:
        folder = export_space(args.folder, args.model, args.title)
    except (FileNotFoundError, FileExistsError, ValueError, PretrainedWeightsUnavailableError) as error:
        return report_bad_input(error, args.debug)
    print(f"wrote {folder}: run it with `cd {folder} && python app.py`, or push it to a Gradio Space", file=sys.stderr)
    return 0
