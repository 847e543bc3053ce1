"""The model card: markdown about a model, from the model and its checkpoint's metadata."""

from __future__ import annotations

import html
import json
from typing import Any


def _cell(value) -> str:
    """A table cell shown whole: "<" and ">" escaped (the page would read them as tags), "|" kept out of the table's way."""
    return html.escape(str(value), quote=False).replace("|", "\\|")


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _config_dict(model) -> dict[str, Any]:
    data = model.describe()
    data.pop("tokenizer", None)  # a word list of thousands; summarised on its own line instead
    vision = data.get("vision")
    if isinstance(vision, dict) and vision.get("kind") in ("cnn", "vit"):  # only the fields of the tower it has
        data["vision"] = {k: v for k, v in vision.items() if k == "kind" or k.startswith("cnn_") == (vision["kind"] == "cnn")}
    return data


def model_card(model, title: str = "Model card", source: str | None = None) -> str:
    """Markdown: where the weights came from (`source`, e.g. `ModelSpec.describe()`), parameters,
    tokenizer, config, training data and metrics (from the checkpoint's metadata)."""
    metadata = dict(model.metadata or {})
    parameters = sum(p.numel() for p in model.parameters())
    tokenizer = model.tokenizer
    lines = [f"## {title}", "", f"**{type(model).__name__}**, {parameters / 1e6:.2f}M parameters, "
             f"{model.image_size} px images, on {model.device}."]
    if source:
        lines.append(f"Weights: {html.escape(source, quote=False)}.")
    if tokenizer is not None:
        lines.append(f"Tokenizer: {type(tokenizer).__name__}, {tokenizer.vocab_size:,} tokens, context {tokenizer.context_length}.")
    metrics = metadata.pop("metrics", None) or {}
    data = metadata.pop("data", None)
    lines += ["", "### Training data", "", f"`{json.dumps(data)}`" if data else "Not recorded (the model was not loaded from a training checkpoint)."]
    if metadata:
        lines += ["", "### Training run", "", "| field | value |", "| --- | --- |"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in metadata.items()]
    lines += ["", "### Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |" for key, value in metrics.items()]
    else:
        lines.append("None recorded.")
    lines += ["", "### Config", "", "| field | value |", "| --- | --- |"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in _flatten(_config_dict(model)).items()]
    return "\n".join(lines)
