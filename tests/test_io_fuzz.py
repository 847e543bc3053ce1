"""Fuzzing every reader of a file a person hands over: damaged, foreign and hostile files.

Each reader is given generated damage (truncations at several offsets, random bytes, wrong JSON
types, wrong encodings, a folder or a dangling link in place of the file, a pickle whose loading
would create a marker file). Each must raise `BadFileError` naming the file, never advise unsafe
loading, and never run the pickle.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from clipkit.config import config_from_preset
from clipkit.data.files import ImageCaptionCSV, ImageCaptionFolder
from clipkit.io import BadFileError
from clipkit.lit import CHECKPOINT_FORMAT as LIT_FORMAT
from clipkit.lit import LiTConfig, load_lit
from clipkit.model import MiniCLIP, load_model, save_model
from clipkit.checkpoint import load_checkpoint
from clipkit.search import EmbeddingIndex
from clipkit.train.state import read_train_state, restore_checkpoint, save_checkpoint
from conftest import LeavesAMarker


pytestmark = pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch on random bytes


def hostile_pickle(marker: Path) -> bytes:
    return pickle.dumps({"weight": LeavesAMarker(marker)}, protocol=4)


def hostile_torch_file(marker: Path, tmp: Path) -> bytes:
    path = tmp / "hostile.pt"
    torch.save({"weight": LeavesAMarker(marker)}, path)  # a zip with the pickle inside, as torch writes
    return path.read_bytes()


def damaged_versions(original: bytes, marker: Path, tmp: Path, text: bool = False) -> dict[str, bytes | str]:
    """name -> bytes to write in place of the file, or "DIR" / "DANGLING" for a folder / a dangling link."""
    rng = random.Random(len(original))
    cases: dict[str, bytes | str] = {"folder in its place": "DIR", "dangling link": "DANGLING"}
    if not text:  # cut text is still text; cut binary and JSON files are damaged
        for offset in sorted({0, 1, 7, 8, 9, 40, len(original) // 2, len(original.rstrip()) - 1}):
            cases[f"truncated at byte {offset}"] = original[:offset]
    for size in (8, 100, 5000):
        cases[f"{size} random bytes"] = bytes([0x80]) + rng.randbytes(size - 1)  # 0x80: never UTF-8's first byte
    cases["pickle"] = hostile_pickle(marker)
    cases["torch.save zip"] = hostile_torch_file(marker, tmp)
    return cases


def text_versions(original: str) -> dict[str, bytes]:
    return {
        "UTF-16": original.encode("utf-16"),
        "UTF-16 without a BOM": original.encode("utf-16-le"),
        "latin-1 with non-ASCII": (original + " café à Zürich").encode("latin-1"),
    }


def json_versions(document: dict, field_path: tuple[str, ...], bad_value) -> dict[str, bytes]:
    """Wrong JSON types at the top, and `bad_value` put at `field_path`."""
    cases = {f"top level {name}": value.encode() for name, value in
             {"[]": "[]", "null": "null", "string": '"model"', "number": "3"}.items()}
    changed = json.loads(json.dumps(document))
    target = changed
    for key in field_path[:-1]:
        target = target[key]
    target[field_path[-1]] = bad_value
    cases[f"{'.'.join(field_path)} = {bad_value!r}"] = json.dumps(changed).encode()
    cases.update(text_versions(json.dumps(document, ensure_ascii=False)))
    cases["invalid UTF-8"] = json.dumps(document).encode()[:-5] + b"\xff\xfe\xc3(}"
    return cases


def put(path: Path, damage: bytes | str) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    if damage == "DIR":
        path.mkdir()
    elif damage == "DANGLING":
        path.symlink_to(path.parent / "nothing-here")
    else:
        path.write_bytes(damage)


def expect_bad_file(read, path: Path, marker: Path, case: str) -> None:
    with pytest.raises(BadFileError) as caught:
        read()
    message = str(caught.value)
    assert str(path) in message or str(path.parent) in message, f"{case}: the file is not named: {message}"
    assert "weights_only=False" not in message and "Traceback" not in message, f"{case}: {message}"
    assert not marker.exists(), f"{case}: the pickle ran"


def fuzz(path: Path, read, cases: dict, marker: Path) -> int:
    original = path.read_bytes()
    for case, damage in cases.items():
        put(path, damage)
        expect_bad_file(read, path, marker, case)
    put(path, original)
    read()  # the undamaged file still loads: the errors above came from the damage
    return len(cases)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("checkpoint")
    config = config_from_preset("tiny-cpu", embed_dim=16, vision={"cnn_channels": [8, 16]}, text={"width": 16, "layers": 1, "heads": 2, "vocab_size": 50})
    model = MiniCLIP(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sum((p * p).sum() for p in model.parameters()).backward()
    optimizer.step()
    save_checkpoint(folder, model, optimizer, {"step": 1}, {"profile": "fuzz"})
    return folder, model, optimizer


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "MARKER-the-pickle-ran"


def test_model_checkpoint_weights(checkpoint, tmp_path, marker):
    folder = tmp_path / "ck"
    shutil.copytree(checkpoint[0], folder)
    path = folder / "model.safetensors"
    cases = damaged_versions(path.read_bytes(), marker, tmp_path)
    assert fuzz(path, lambda: load_model(folder), cases, marker) >= 12
    fuzz(path, lambda: load_checkpoint(folder), cases, marker)


def test_model_checkpoint_config(checkpoint, tmp_path, marker):
    folder = tmp_path / "ck"
    shutil.copytree(checkpoint[0], folder)
    path = folder / "config.json"
    document = json.loads(path.read_text())
    cases = {**damaged_versions(path.read_bytes(), marker, tmp_path),
             **json_versions(document, ("config", "embed_dim"), "512"),
             **json_versions(document, ("config", "vision", "kind"), 3),
             **json_versions(document, ("config", "text", "hedas"), 2),
             **json_versions(document, ("config",), []),
             "no config field": json.dumps({"format": document["format"]}).encode()}
    fuzz(path, lambda: load_model(folder), cases, marker)
    fuzz(path, lambda: load_checkpoint(folder), cases, marker)


def test_lit_checkpoint(tmp_path, marker):
    # Damaged files fail before the frozen sentence model would load, so this needs no sentence model.
    folder = tmp_path / "lit"
    folder.mkdir()
    document = {"format": LIT_FORMAT, "config": json.loads(json.dumps(asdict(LiTConfig()))), "metadata": {}}
    (folder / "config.json").write_text(json.dumps(document))
    weights = folder / "model.safetensors"
    from safetensors.torch import save_file

    save_file({"logit_scale": torch.zeros(())}, weights)
    for case, damage in damaged_versions(weights.read_bytes(), marker, tmp_path).items():
        put(weights, damage)
        expect_bad_file(lambda: load_lit(folder), weights, marker, case)
    save_file({"logit_scale": torch.zeros(())}, weights)
    config = folder / "config.json"
    for case, damage in {**damaged_versions(config.read_bytes(), marker, tmp_path),
                         **json_versions(document, ("config", "context_length"), "32")}.items():
        put(config, damage)
        expect_bad_file(lambda: load_lit(folder), config, marker, case)


def test_train_state(checkpoint, tmp_path, marker):
    folder = tmp_path / "ck"
    shutil.copytree(checkpoint[0], folder)
    _, model, optimizer = checkpoint
    path = folder / "train_state.safetensors"

    def read_and_restore():
        state = read_train_state(folder)
        restore_checkpoint(folder, model, optimizer, state)

    cases = damaged_versions(path.read_bytes(), marker, tmp_path)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"x": torch.zeros(2)}, foreign, metadata={"train_state": "[1, 2"})
    cases["safetensors without a train state"] = foreign.read_bytes()
    fuzz(path, read_and_restore, cases, marker)


def test_embedding_index(tmp_path, marker):
    index = EmbeddingIndex(4)
    index.add(torch.randn(3, 4), ["a", "b", "c"])
    folder = index.save(tmp_path / "index")
    embeddings = folder / "embeddings.safetensors"
    fuzz(embeddings, lambda: EmbeddingIndex.load(folder), damaged_versions(embeddings.read_bytes(), marker, tmp_path), marker)
    metadata = folder / "index.json"
    document = json.loads(metadata.read_text())
    cases = {**damaged_versions(metadata.read_bytes(), marker, tmp_path),
             **json_versions(document, ("size",), "3"), **json_versions(document, ("items",), None),
             **json_versions(document, ("dim",), 5)}
    fuzz(metadata, lambda: EmbeddingIndex.load(folder), cases, marker)


def test_caption_table(tmp_path, marker):
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "red.png")
    path = tmp_path / "captions.csv"
    path.write_text("filepath\ttitle\nred.png\ta red square\n")
    cases = {**{k: v for k, v in damaged_versions(path.read_bytes(), marker, tmp_path, text=True).items()},
             **text_versions(path.read_text()), "empty": b"", "cut inside the header": b"filep"}
    fuzz(path, lambda: ImageCaptionCSV(path), cases, marker)


def test_sidecar_caption(tmp_path, marker):
    from PIL import Image

    root = tmp_path / "images"
    root.mkdir()
    Image.new("RGB", (8, 8), "red").save(root / "red.png")
    path = root / "red.txt"
    path.write_text("a red square")
    cases = {k: v for k, v in damaged_versions(path.read_bytes(), marker, tmp_path, text=True).items() if v != "DIR"}
    cases.update(text_versions("a red square"))  # a folder named red.txt is not a caption file: it is skipped
    fuzz(path, lambda: ImageCaptionFolder(root), cases, marker)


def test_open_clip_weight_files(tiny_open_clip, tmp_path, marker):
    import open_clip

    from clipkit.pretrained import load_open_clip, openclip_state_dict_file

    name = tiny_open_clip
    path = openclip_state_dict_file(open_clip.create_model(name), tmp_path / "weights.safetensors")
    cases = damaged_versions(path.read_bytes(), marker, tmp_path)
    fuzz(path, lambda: load_open_clip(name, pretrained=path), cases, marker)
    for suffix in (".pt", ".bin"):
        other = tmp_path / f"weights{suffix}"
        torch.save(open_clip.create_model(name).state_dict(), other)
        fuzz(other, lambda: load_open_clip(name, pretrained=other), damaged_versions(other.read_bytes(), marker, tmp_path), marker)
