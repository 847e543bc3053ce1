"""One loader for every clipkit checkpoint: the folder's `config.json` says what it holds.

A checkpoint is a folder with `model.safetensors` and `config.json`, whose "format" field names
the model that wrote it: "clipkit.MiniCLIP" (`clipkit.model.save_model`) or "clipkit.LiTModel"
(`clipkit.lit.save_lit`). `load_checkpoint(folder)` reads that field and hands the folder to the
model's own loader, so code that only wants "the model in this folder" (the app, the notebooks,
evaluation) never has to know which kind it is. A training run adds its train state beside them
(`clipkit.train.state`).

`load_model_spec(spec)` is the one loader of any model by name: a checkpoint folder,
`open_clip:NAME[:TAG or weights file]` or `hf:ID-or-folder` (a transformers CLIPModel); the app,
notebooks and benchmarks all take that string.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from clipkit.interface import CLIPBase
from clipkit.io import BadFileError, MissingFileError, read_json
from clipkit.lit import CHECKPOINT_FORMAT as LIT_FORMAT
from clipkit.lit import load_lit
from clipkit.model import CHECKPOINT_FORMAT as MINICLIP_FORMAT
from clipkit.model import CONFIG_FILE, load_model

# format field -> the loader of that model: folder, device -> the model, in eval mode
LOADERS = {
    MINICLIP_FORMAT: load_model,
    LIT_FORMAT: load_lit,
}


class CheckpointFormatError(BadFileError):
    """A folder that is not a clipkit checkpoint, or one whose format no loader here reads."""


def checkpoint_format(folder: str | Path) -> str:
    """The "format" field of `folder`/config.json, e.g. "clipkit.MiniCLIP"."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not folder.is_dir():
        raise MissingFileError(folder, f"checkpoint folder {folder} does not exist (or is not a folder), so it has no {CONFIG_FILE}: "
                               "pass the folder save_model or save_lit wrote")
    try:
        document = read_json(path, "checkpoint config", f"{folder} is not a whole checkpoint folder: a clipkit checkpoint holds "
                             f"{CONFIG_FILE} and model.safetensors, as save_model or save_lit write them; save the model again.")
    except MissingFileError:
        raise
    except BadFileError as error:  # damaged JSON: still "not a checkpoint this loader can read"
        raise CheckpointFormatError(error.path, str(error)) from None
    form = document.get("format") if isinstance(document, dict) else None
    if not isinstance(form, str):
        raise CheckpointFormatError(
            path,
            f"{path} names no checkpoint format (no \"format\" field): {folder} was not written by clipkit; "
            f"known formats: {sorted(LOADERS)}"
        )
    return form


def load_checkpoint(folder: str | Path, device: str | torch.device | None = None) -> CLIPBase:
    """The model saved in `folder`, whichever clipkit model wrote it, in eval mode (on `device` if given)."""
    form = checkpoint_format(folder)
    loader = LOADERS.get(form)
    if loader is None:
        raise CheckpointFormatError(
            Path(folder) / CONFIG_FILE,
            f"{Path(folder) / CONFIG_FILE} has format {form!r}, which no clipkit loader reads; known formats: "
            f"{sorted(LOADERS)}. Was the folder written by another program or a newer clipkit?"
        )
    return loader(folder, device=device)


# --- one string for any model: the app, notebooks and benchmarks take the same spec ------------

SPEC_FORMS = (
    "a clipkit checkpoint folder (model.safetensors + config.json with a \"format\" field)",
    "open_clip:NAME[:TAG or weights file] (NAME from open_clip.list_models(); no TAG: random weights)",
    "hf:ID-or-folder (a transformers CLIPModel: a hub id such as openai/clip-vit-base-patch32, or a saved folder)",
)


class ModelSpecError(ValueError):
    """A model spec none of the forms could read; the message says, form by form, why."""


@dataclass(frozen=True)
class ModelSpec:
    """A parsed model spec: which kind of weights, and where they come from."""

    kind: str  # "clipkit" (a checkpoint folder), "open_clip" or "hf"
    target: str  # the folder, the open_clip model name, or the hub id / folder
    pretrained: str | None = None  # open_clip only: the pretrained tag or weights file; None = random init

    def describe(self) -> str:
        """Where the weights came from, in words (the model card shows it)."""
        if self.kind == "open_clip":
            if self.pretrained is None:
                return f"open_clip `{self.target}`, randomly initialised (no pretrained weights: for trying the app, not for results)"
            what = "weights file" if _looks_like_file(self.pretrained) else "pretrained tag"
            return f"open_clip `{self.target}`, {what} `{self.pretrained}`"
        if self.kind == "hf":
            where = "folder" if Path(self.target).expanduser().is_dir() else "Hugging Face hub id"
            return f"transformers CLIPModel, {where} `{self.target}`"
        return f"clipkit checkpoint folder `{self.target}`"

    def __str__(self) -> str:
        if self.kind == "clipkit":
            return self.target
        return ":".join(part for part in (self.kind, self.target, self.pretrained) if part is not None)


def _looks_like_file(text: str) -> bool:
    from clipkit.interop import WEIGHT_SUFFIXES

    return "/" in text or os.sep in text or text.endswith(WEIGHT_SUFFIXES)


def parse_model_spec(spec: str | os.PathLike) -> ModelSpec:
    """`open_clip:NAME[:TAG or file]`, `hf:ID-or-folder`, or a folder -> a ModelSpec (nothing is loaded)."""
    text = str(spec).strip()
    if text.startswith("open_clip:"):
        name, _, pretrained = text[len("open_clip:"):].partition(":")  # a weights path may hold ':' itself
        if not name:
            raise ModelSpecError(f"model spec {text!r} names no open_clip model: write open_clip:NAME[:TAG], e.g. open_clip:ViT-B-32:laion2b_s34b_b79k")
        return ModelSpec("open_clip", name, pretrained or None)
    if text.startswith("hf:"):
        if not text[3:]:
            raise ModelSpecError(f"model spec {text!r} names no model: write hf:ID (openai/clip-vit-base-patch32) or hf:path/to/folder")
        return ModelSpec("hf", text[3:])
    if not text:
        raise ModelSpecError("the model spec is empty; use one of: " + "; ".join(SPEC_FORMS))
    return ModelSpec("clipkit", text)


def _is_hf_folder(folder: Path) -> bool:
    try:
        document = read_json(folder / CONFIG_FILE, "model config", "")
    except BadFileError:
        return False
    return isinstance(document, dict) and "format" not in document and "model_type" in document


def _load_foreign(spec: ModelSpec, device) -> CLIPBase:
    if spec.kind == "open_clip":
        from clipkit.pretrained import load_open_clip

        return load_open_clip(spec.target, pretrained=spec.pretrained, device=device)
    from clipkit.hf import load_hf_clip

    return load_hf_clip(spec.target, device=device)


def load_model_spec(spec: str | os.PathLike | ModelSpec, device: str | torch.device | None = None) -> tuple[CLIPBase, ModelSpec]:
    """The model a spec names, in eval mode, and the parsed spec (`spec.describe()` says where the weights came from).

    A bare folder is read as a clipkit checkpoint, or as a transformers folder when its config.json
    is one; when nothing reads it, the error names each form tried and why it failed."""
    parsed = spec if isinstance(spec, ModelSpec) else parse_model_spec(spec)
    if parsed.kind in ("open_clip", "hf"):
        try:
            return _load_foreign(parsed, device), parsed
        except BadFileError:
            raise  # names the file and the fix already
        except (ValueError, FileNotFoundError) as error:
            form = SPEC_FORMS[1 if parsed.kind == "open_clip" else 2]
            raise ModelSpecError(f"could not read the model {str(parsed)!r} as {form}: {error}") from None
    folder = Path(parsed.target).expanduser()
    if folder.is_dir() and _is_hf_folder(folder):  # a transformers folder named without its hf: prefix
        return load_model_spec(ModelSpec("hf", parsed.target), device)
    try:
        return load_checkpoint(folder, device=device), parsed
    except BadFileError as error:
        if not isinstance(error, MissingFileError) or folder.exists():
            raise  # a checkpoint folder that is damaged: its own message says what and how to fix it
        raise ModelSpecError(
            f"could not read the model {parsed.target!r}:\n"
            f"  - as {SPEC_FORMS[0]}: {folder} does not exist;\n"
            f"  - as open_clip or Hugging Face: it has no open_clip: or hf: prefix (did you mean "
            f"open_clip:{parsed.target} or hf:{parsed.target}?).\n"
            f"Write one of: {'; '.join(SPEC_FORMS)}"
        ) from None
