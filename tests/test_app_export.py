"""`python -m clipkit.app export DIR --model SPEC`: the folder alone runs as a Gradio Space, driven with gradio_client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

gradio_client = pytest.importorskip("gradio_client")

from clipkit.app.cli import main as app_main  # noqa: E402
from clipkit.app.export import SETTINGS_FILE, export_space, space_app  # noqa: E402
from conftest import free_port  # noqa: E402
from test_app import RED_CIRCLE_LABELS, foreign_model_specs, make_client, wait_for_page  # noqa: E402


@pytest.fixture(scope="module")
def specs(tmp_path_factory, tiny_open_clip):
    pytest.importorskip("transformers")
    return foreign_model_specs(tmp_path_factory.mktemp("export-models"), tiny_open_clip)


def front_matter(readme: str) -> dict[str, str]:
    """The Space's metadata block: the YAML between the first two '---' lines (flat keys only)."""
    lines = readme.splitlines()
    assert lines[0] == "---", "a Space README starts with its metadata block"
    end = lines.index("---", 1)
    return dict(line.split(": ", 1) for line in lines[1:end])


@pytest.mark.parametrize("kind", ["open_clip", "hf"])
def test_export_writes_a_whole_space_folder(kind, specs, tmp_path):
    folder = tmp_path / "space"
    assert app_main(["export", str(folder), "--model", specs[kind], "--title", "my demo"]) == 0
    meta = front_matter((folder / "README.md").read_text())
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["title"] == "my demo"
    requirements = (folder / "requirements.txt").read_text().split()
    assert any(line.startswith("gradio") for line in requirements) and any(line.startswith("open_clip_torch") for line in requirements)
    assert any(line.startswith("transformers") for line in requirements) == (kind == "hf")
    assert (folder / "clipkit" / "app" / "export.py").is_file() and not list(folder.rglob("__pycache__"))
    assert list((folder / "model").glob("*.safetensors")) and "*.safetensors filter=lfs" in (folder / ".gitattributes").read_text()
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    assert settings["kind"] == kind and specs[kind].split(":")[-1] in settings["source"]


def test_the_exported_model_computes_what_the_original_does(specs, tmp_path):
    from clipkit.checkpoint import load_model_spec
    from clipkit.interface import embed_images, embed_texts

    original, _ = load_model_spec(specs["hf"])
    app = space_app(export_space(tmp_path / "space", specs["hf"]))
    try:
        served, _ = load_model_spec(f"hf:{tmp_path / 'space' / 'model'}")
        images = torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8)
        torch.testing.assert_close(embed_images(served, images), embed_images(original, images), atol=1e-6, rtol=0)
        torch.testing.assert_close(embed_texts(served, ["a red circle"]), embed_texts(original, ["a red circle"]), atol=1e-6, rtol=0)
    finally:
        app.close()


def test_export_refuses_a_folder_that_holds_something(specs, tmp_path):
    (tmp_path / "space").mkdir()
    (tmp_path / "space" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        export_space(tmp_path / "space", specs["open_clip"])
    assert (tmp_path / "space" / "mine.txt").read_text() == "keep me"
    assert app_main(["export", str(tmp_path / "other"), "--model", str(tmp_path / "nowhere")]) == 2
    assert not (tmp_path / "other").exists()


@pytest.mark.slow
def test_the_folder_alone_runs_as_a_space(specs, tmp_path):
    """Started from its own folder (a temporary one) with -I (no PYTHONPATH, no user site), the
    folder's app answers every tab with its own copy of clipkit, not the repository's."""
    folder = export_space(tmp_path / "space", specs["open_clip"])
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    server = subprocess.Popen([sys.executable, "-I", "app.py"], cwd=folder, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for_page(url, server)
        client = make_client(url)
        picture = Path(folder / "picture.png")
        from PIL import Image

        Image.new("RGB", (40, 40), "red").save(picture)
        result, warning = client.predict(gradio_client.handle_file(str(picture)), RED_CIRCLE_LABELS, "a {}", api_name="/classify")
        assert warning == "" and result["confidences"]
        hits, warning = client.predict("shapes world", "a red circle", 3, api_name="/search_text")
        assert warning == "" and len(hits) == 3
        _, status = client.submit("a red circle", "", 2, "shapes", 0, api_name="/steer").result(timeout=120)
        assert status.startswith("done: 2 steps")
        assert "Weights: open_clip" in client.predict(api_name="/model_card")
    finally:
        server.terminate()
        output = server.communicate(timeout=30)[0]
    assert f"clipkit from {folder / 'clipkit'}" in output, output[-2000:]
