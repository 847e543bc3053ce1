"""One loader for every clipkit checkpoint: the folder's `config.json` says what it holds.

A checkpoint is a folder with `model.safetensors` and `config.json`, whose "format" field names
the model that wrote it: "clipkit.MiniCLIP" (`clipkit.model.save_model`) or "clipkit.LiTModel"
(`clipkit.lit.save_lit`). `load_checkpoint(folder)` reads that field and hands the folder to the
model's own loader, so code that only wants "the model in this folder" (the app, the notebooks,
evaluation) never has to know which kind it is. A training run adds its train state beside them
(`clipkit.train.state`).
"""

from __future__ import annotations

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
