"""The state of a training run, saved and restored, so that it can stop anywhere and go on exactly.

A checkpoint is a folder: `model.safetensors` + `config.json` (what `clipkit.checkpoint.load_checkpoint`
reads: MiniCLIP's or LiT's format) and `train_state.safetensors` + `train_state.json` (optimizer, step, RNG, train config,
history). `train_state.safetensors` also holds the weights and, in its header, the whole training
state, and is renamed into place in one step: whenever the process dies, the folder holds one
consistent checkpoint to resume from. `train_state.json` is the same state for people to read.

Every file goes through `clipkit.io.atomic_write` (a temporary file, then a rename).
"""

from __future__ import annotations

import base64
import json
import random
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipkit.config import config_diff
from clipkit.interface import ConfiguredCLIP
from clipkit.io import BadFileError, atomic_write, load_safetensors, read_safetensors_header

TRAIN_STATE_FILE = "train_state.safetensors"
TRAIN_STATE_JSON = "train_state.json"


class CheckpointMismatchError(ValueError):
    """A checkpoint in out_dir was written by another model or training config."""


# ---------------------------------------------------------------------------------------------
# Random number generators: resuming mid-run must draw what the uninterrupted run would have


def rng_state() -> dict[str, Any]:
    """The state of Python's, numpy's and torch's (CPU and CUDA) generators, as plain JSON."""
    numpy_state = np.random.get_state()
    state = {
        "python": _jsonable(random.getstate()),
        "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]],
        "torch": _encode_bytes(torch.get_rng_state()),
    }
    if torch.cuda.is_available():
        state["cuda"] = [_encode_bytes(s) for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back what `rng_state` returned (CUDA's only on as many GPUs as it was saved from)."""
    random.setstate(_tuples(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), *rest))
    torch.set_rng_state(_decode_bytes(state["torch"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_decode_bytes(s) for s in state["cuda"]])


def _encode_bytes(tensor: torch.Tensor) -> str:
    return base64.b64encode(tensor.cpu().numpy().tobytes()).decode("ascii")


def _decode_bytes(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8)


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, (list, tuple)) else value


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


# ---------------------------------------------------------------------------------------------
# Saving, reading and restoring


def save_checkpoint(folder, model, optimizer, state: dict[str, Any], metadata: dict[str, Any]) -> Path:
    """Write the training state (one atomic file), then `model.safetensors` + `config.json`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    optimizer_state = optimizer.state_dict()
    for index, values in optimizer_state["state"].items():
        for key, value in values.items():
            tensors[f"optimizer.{index}.{key}"] = value.detach().contiguous().cpu()
    state = {**state, "optimizer": {"param_groups": optimizer_state["param_groups"], "keys": {
        str(index): sorted(values) for index, values in optimizer_state["state"].items()}}}
    header = {"train_state": json.dumps(state)}
    atomic_write(folder / TRAIN_STATE_FILE, lambda path: save_file(tensors, path, metadata=header))
    atomic_write(folder / TRAIN_STATE_JSON, lambda path: path.write_text(json.dumps(state, indent=1) + "\n"))
    _save_model(model, folder, metadata)
    return folder


def _save_model(model, folder: Path, metadata: dict[str, Any]) -> None:
    """`model.safetensors` + `config.json` in the model's own format (LiT's names its frozen tower)."""
    from clipkit.lit import LiTModel, save_lit
    from clipkit.model import save_model

    (save_lit if isinstance(model, LiTModel) else save_model)(model, folder, metadata)


def model_config(model) -> dict[str, Any] | None:
    """The model's config as plain JSON (MiniCLIP's `CLIPConfig`, LiT's `LiTConfig`), None for others."""
    return model.config.to_dict() if isinstance(model, ConfiguredCLIP) else None


_STATE_FIX = ("It was damaged or written by another program: delete train_state.safetensors and train_state.json "
              "to start over from the saved model, or train into a new out_dir.")


def read_train_state(folder) -> dict[str, Any] | None:
    """The training state saved in `folder` (from the safetensors header), or None if there is none."""
    path = Path(folder) / TRAIN_STATE_FILE
    if not path.exists() and not path.is_symlink():
        return None
    header = read_safetensors_header(path, "train state file", _STATE_FIX)
    text = header.get("__metadata__", {}).get("train_state") if isinstance(header.get("__metadata__"), dict) else None
    try:
        state = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        state = None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise BadFileError(path, f"train state file {path} holds no readable training state (step, optimizer, RNG) in its header. {_STATE_FIX}")
    return state


def restore_checkpoint(folder, model, optimizer, state: dict[str, Any]) -> None:
    """Load the weights and optimizer tensors of `folder`'s training state into `model` and
    `optimizer`; `state` is what `read_train_state(folder)` returned."""
    path = Path(folder) / TRAIN_STATE_FILE
    tensors = load_safetensors(path, "train state file", _STATE_FIX)
    try:
        _restore(model, optimizer, state, tensors)
    except (KeyError, RuntimeError, ValueError, TypeError) as error:  # names the tensor or shape that does not fit
        raise BadFileError(path, f"train state file {path} does not fit this model and optimizer ({error!r}). {_STATE_FIX}") from None


def _restore(model, optimizer, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    saved = state["optimizer"]
    optimizer.load_state_dict({
        "param_groups": saved["param_groups"],
        "state": {int(i): {key: tensors[f"optimizer.{i}.{key}"] for key in keys} for i, keys in saved["keys"].items()},
    })


def check_resumable(model, config, data_spec, state: dict[str, Any], folder, free_fields=()) -> None:
    """Raise `CheckpointMismatchError`, naming every difference, unless the saved `state` was
    written by the same model config, train config (`config`, a dataclass; `free_fields` may
    differ) and data spec."""
    model_now, model_saved = model_config(model), state.get("model_config")
    problems = [] if model_now is None or model_saved is None else [
        f"model config field {name}" for name in config_diff(model_now, model_saved)]
    saved = state["train_config"]
    mine = asdict(config)
    problems += [
        f"train config field {name} ({saved.get(name)!r} saved, {mine[name]!r} now)"
        for name in mine if name not in free_fields and _plain(saved.get(name)) != _plain(mine[name])
    ]
    if _plain(state.get("data")) != _plain(data_spec):
        problems.append(f"data ({state.get('data')} saved, {data_spec} now)")
    if problems:
        raise CheckpointMismatchError(
            f"the checkpoint in {folder} was written by another run; these differ: {'; '.join(problems)}. "
            "Train into a new out_dir, pass resume=False (--no-resume) to start over there, or use the saved settings."
        )


def _plain(value):
    return json.loads(json.dumps(value))
