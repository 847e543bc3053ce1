"""MiniCLIP: the two-tower model built from scratch, and its checkpoints.

The API follows openai/CLIP's model.py: `encode_image`, `encode_text`, a learnable temperature
kept as a log (`logit_scale`), and `forward(images, tokens) -> (logits_per_image, logits_per_text)`
(the last two come from `clipkit.interface.CLIPBase`, which every clipkit model shares).
A checkpoint is a folder holding `model.safetensors` and `config.json` (never a pickle).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.config import CLIPConfig, ConfigError, TextConfig
from clipkit.image_encoder import build_image_encoder
from clipkit.interface import ConfiguredCLIP
from clipkit.io import BadFileError, atomic_write, load_safetensors, read_json
from clipkit.text_encoder import TextEncoder

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_FORMAT = "clipkit.MiniCLIP"


class MiniCLIP(ConfiguredCLIP):
    """Two towers and a temperature: images and captions in, a [B_images, B_texts] similarity matrix out."""

    def __init__(self, config: CLIPConfig, tokenizer=None):
        super().__init__()
        if tokenizer is None and config.tokenizer is not None:
            from clipkit.tokenizer import build_tokenizer

            tokenizer = build_tokenizer(config.tokenizer)
        elif tokenizer is not None:
            _check_tokenizer_fits(tokenizer, config.text)
            # The config records the tokenizer actually used, so a checkpoint rebuilds that one.
            config = replace(config, tokenizer=tokenizer.to_dict())
        self.config = config
        self.tokenizer = tokenizer
        self.visual = build_image_encoder(config.vision, config.embed_dim)
        self.text = TextEncoder(config.text, config.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features


def _check_tokenizer_fits(tokenizer, text: TextConfig) -> None:
    problems = []
    if tokenizer.vocab_size > text.vocab_size:
        problems.append(f"its vocabulary ({tokenizer.vocab_size}) is larger than the model's ({text.vocab_size})")
    if text.pool == "eot" and tokenizer.eot_token_id != text.resolved_eot_token_id:
        problems.append(f"its end-of-text id is {tokenizer.eot_token_id}, the model pools at {text.resolved_eot_token_id}")
    if tokenizer.context_length > text.context_length:
        problems.append(f"its context length ({tokenizer.context_length}) exceeds the model's ({text.context_length})")
    if problems:
        raise ValueError(
            "the tokenizer does not fit the model config: " + "; ".join(problems)
            + ". Build the config with config_from_preset(name, tokenizer=tokenizer)."
        )


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def save_model(model: MiniCLIP, folder: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write `model.safetensors` + `config.json` into `folder` (created if needed)."""
    return write_checkpoint(folder, CHECKPOINT_FORMAT, model, metadata)


def read_checkpoint_config(folder: str | Path) -> tuple[CLIPConfig, dict[str, Any]]:
    """The config and metadata stored in a checkpoint folder, without loading the weights."""
    return read_checkpoint(folder, CHECKPOINT_FORMAT, CLIPConfig.from_dict, "save_model")


def load_model(folder: str | Path, device: str | torch.device | None = None) -> MiniCLIP:
    """Rebuild a MiniCLIP (and its tokenizer) from a folder written by `save_model`, in eval mode
    (call `.train()` to go on training); `model.metadata` holds what was saved with it."""
    config, metadata = read_checkpoint_config(folder)
    return build_and_load(folder, lambda: MiniCLIP(config), metadata, device)


# --- the checkpoint folder, shared by every ConfiguredCLIP (MiniCLIP here, LiT in clipkit.lit) ---


def write_checkpoint(folder: str | Path, form: str, model: ConfiguredCLIP, metadata: dict[str, Any] | None) -> Path:
    """`model.safetensors` (the state dict) + `config.json` ("format" `form`, the config, the metadata)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    document = {"format": form, "config": model.config.to_dict(), "metadata": metadata or {}}
    atomic_write(folder / WEIGHTS_FILE, lambda path: save_file(tensors, path))
    atomic_write(folder / CONFIG_FILE, lambda path: path.write_text(json.dumps(document, indent=2) + "\n"))
    return folder


def read_checkpoint(folder: str | Path, form: str, parse: Callable[[dict], Any], writer: str) -> tuple[Any, dict[str, Any]]:
    """The config (`parse` of config.json's "config") and metadata of a checkpoint of format `form`,
    which `writer` (the saving function's name, for the fix) wrote; any problem is a `BadFileError`."""
    path = Path(folder) / CONFIG_FILE
    kind = form.rsplit(".", 1)[-1]
    fix = f"A {kind} checkpoint folder holds {CONFIG_FILE} and {WEIGHTS_FILE} as {writer} writes them: save the model again."
    document = read_json(path, "checkpoint config", fix)
    if document.get("format") != form:
        raise BadFileError(path, f"{path} is not a {kind} checkpoint (format {document.get('format')!r}, expected {form!r})")
    if "config" not in document:
        raise BadFileError(path, f"checkpoint config {path} has no \"config\" field (the model's sizes). {fix}")
    try:
        config = parse(document["config"])
    except ConfigError as error:
        raise BadFileError(path, f"checkpoint config {path} has a bad model config: {error}. Correct that field or save the model again.") from None
    metadata = document.get("metadata", {})
    return config, metadata if isinstance(metadata, dict) else {}


def build_and_load(folder: str | Path, build: Callable[[], ConfiguredCLIP], metadata: dict[str, Any], device) -> ConfiguredCLIP:
    """`build()`'s model with the folder's weights and `metadata`, in eval mode (on `device` if given)."""
    # The weights are checked before building: LiT's frozen tower takes seconds to load.
    weights = load_safetensors(Path(folder) / WEIGHTS_FILE, "checkpoint weights file",
                               f"The checkpoint in {folder} is damaged: save or copy the model again.")
    try:
        model = build()
    except (KeyError, TypeError, ValueError) as error:  # e.g. a damaged tokenizer spec
        path = Path(folder) / CONFIG_FILE
        raise BadFileError(path, f"checkpoint config {path} describes no model clipkit can build ({error!r}): save the model again") from None
    _load_weights(model, folder, weights)
    model.metadata = metadata
    model.eval()
    return model.to(device) if device is not None else model


def _load_weights(model: nn.Module, folder: str | Path, weights: dict[str, torch.Tensor]) -> None:
    """Load `weights` (read from `folder`) into `model`, naming every tensor that does not fit."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    reshaped = [
        f"{name} {tuple(weights[name].shape)} vs {tuple(expected[name].shape)}"
        for name in sorted(set(weights) & set(expected))
        if weights[name].shape != expected[name].shape
    ]
    if missing or unexpected or reshaped:
        raise BadFileError(
            Path(folder) / WEIGHTS_FILE,
            f"the weights in {folder} do not fit its config.json: missing {missing[:8]}, unexpected {unexpected[:8]}, "
            f"shape (file vs config) {reshaped[:8]}. Was {CONFIG_FILE} or {WEIGHTS_FILE} replaced by another model's?"
        )
    model.load_state_dict(weights)
