"""One loader for every clipkit checkpoint: the folder's `config.json` says what it holds.

A checkpoint is a folder with `model.safetensors` and `config.json`, whose "format" field names
the model that wrote it: "clipkit.MiniCLIP" (`clipkit.model.save_model`) or "clipkit.LiTModel"
(`clipkit.lit.save_lit`). `load_checkpoint(folder)` reads that field and hands the folder to the
model's own loader, so code that only wants "the model in this folder" (the app, the notebooks,
evaluation) never has to know which kind it is. A training run adds its train state beside them
(`clipkit.train.state`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from clipkit.interface import CLIPBase
from clipkit.lit import CHECKPOINT_FORMAT as LIT_FORMAT
from clipkit.lit import load_lit
from clipkit.model import CHECKPOINT_FORMAT as MINICLIP_FORMAT
from clipkit.model import CONFIG_FILE, load_model

# format field -> the loader of that model: folder, device -> the model, in eval mode
LOADERS = {
    MINICLIP_FORMAT: load_model,
    LIT_FORMAT: load_lit,
}


class CheckpointFormatError(ValueError):
    """A folder that is not a clipkit checkpoint, or one whose format no loader here reads."""


def checkpoint_format(folder: str | Path) -> str:
    """The "format" field of `folder`/config.json, e.g. "clipkit.MiniCLIP"."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a checkpoint folder: it has no {CONFIG_FILE}. A clipkit checkpoint holds "
            f"{CONFIG_FILE} and model.safetensors, as save_model or save_lit write them."
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointFormatError(
            f"{path} is not readable JSON ({error}); the checkpoint in {folder} is damaged: save the model again"
        ) from None
    form = document.get("format") if isinstance(document, dict) else None
    if not isinstance(form, str):
        raise CheckpointFormatError(
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
            f"{Path(folder) / CONFIG_FILE} has format {form!r}, which no clipkit loader reads; known formats: "
            f"{sorted(LOADERS)}. Was the folder written by another program or a newer clipkit?"
        )
    return loader(folder, device=device)
