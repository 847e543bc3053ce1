"""The model configs: one dataclass per tower, one for the whole CLIP, and named presets.

Configs are plain data: `CLIPConfig.to_dict()` is what a checkpoint's config.json stores and
`CLIPConfig.from_dict` rebuilds it. Presets are nested dicts of the same fields, so a preset is
read like a config file and changed with `config_from_preset(name, **overrides)`.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import numbers
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from typing import Any, get_type_hints

from clipkit.data.transforms import OPENAI_MEAN, OPENAI_STD


@dataclass
class VisionConfig:
    kind: str = "vit"  # "vit" (openai/CLIP-style Vision Transformer) or "cnn" (small ResNet: learns small data fast on a CPU)
    image_size: int = 224  # side of the square input images, in pixels
    patch_size: int = 32  # ViT: side of a patch; image_size must be a multiple of it
    width: int = 768  # ViT: width of every token in the Transformer
    layers: int = 12  # ViT: number of residual attention blocks
    heads: int = 12  # ViT: attention heads; must divide width (OpenAI uses width / 64)
    mlp_ratio: float = 4.0  # ViT: hidden width of each block's MLP, as a multiple of width
    act: str = "gelu"  # ViT: MLP activation, "gelu" or "quick_gelu" (needed by OpenAI's released weights)
    cnn_channels: tuple[int, ...] = (32, 64, 128)  # CNN: channels of each stage; every stage after the first halves the resolution
    cnn_blocks: int | tuple[int, ...] = 1  # CNN: blocks (two 3x3 convolutions each) per stage, or one count per stage; a first stage of 0 leaves full resolution to the stem alone
    cnn_block: str = "residual"  # CNN: "residual" (ResNet: shortcut, strided convolution) or "plain" (VGG: max pooling halves the resolution)
    cnn_stem_stride: int = 1  # CNN: stride of the first convolution; 2 quarters the cost of large images
    cnn_pool: str = "mean"  # CNN: "mean" (global average: forgets where things are), "max" (the strongest response anywhere) or "centroid" (mean and each channel's centre of mass)

    def blocks_per_stage(self) -> tuple[int, ...]:
        """`cnn_blocks` as one count per stage of `cnn_channels`; a ValueError names the field that does not fit."""
        stages = len(self.cnn_channels)
        if not stages:
            raise ValueError("cnn_channels is empty: give one channel count per stage, e.g. (32, 64, 128)")
        counts = (self.cnn_blocks,) * stages if isinstance(self.cnn_blocks, int) else tuple(self.cnn_blocks)
        if len(counts) != stages or min(counts[1:], default=1) < 1 or counts[0] < 0:
            raise ValueError(
                f"cnn_blocks {self.cnn_blocks!r} does not fit cnn_channels {tuple(self.cnn_channels)}: give one count, "
                "or one per stage, each >= 1 (the first may be 0: the stem alone at full resolution), e.g. (0, 1, 1)"
            )
        return counts


@dataclass
class TextConfig:
    vocab_size: int = 49408  # token ids lie in [0, vocab_size); must cover the tokenizer's ids
    context_length: int = 77  # longest token sequence, start and end tokens included
    width: int = 512  # width of every token in the Transformer
    layers: int = 12  # number of causal residual attention blocks
    heads: int = 8  # attention heads; must divide width
    mlp_ratio: float = 4.0  # hidden width of each block's MLP, as a multiple of width
    act: str = "gelu"  # MLP activation, "gelu" or "quick_gelu" (needed by OpenAI's released weights)
    eot_token_id: int | None = None  # end-of-text id to pool at; None means vocab_size - 1, where our and OpenAI's tokenizers put it
    pool: str = "eot"  # "eot": the end-of-text token's state; "argmax": the largest id's (OpenAI's shortcut)

    @property
    def resolved_eot_token_id(self) -> int:
        return self.vocab_size - 1 if self.eot_token_id is None else self.eot_token_id


@dataclass
class CLIPConfig:
    embed_dim: int = 512  # size of the shared embedding space both towers project into
    vision: VisionConfig = field(default_factory=VisionConfig)  # the image tower
    text: TextConfig = field(default_factory=TextConfig)  # the text tower
    init_logit_scale: float = math.log(1 / 0.07)  # log of the initial inverse temperature (CLIP: 1/0.07)
    max_logit_scale: float = math.log(100)  # the log scale is clamped here so the softmax cannot become a hard max
    image_mean: tuple[float, float, float] = tuple(OPENAI_MEAN)  # per-channel mean images are normalised with
    image_std: tuple[float, float, float] = tuple(OPENAI_STD)  # per-channel std images are normalised with
    tokenizer: dict | None = None  # the tokenizer's to_dict() spec, so a checkpoint rebuilds its own tokenizer

    def to_dict(self) -> dict[str, Any]:
        return plain_data(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CLIPConfig:
        """A config from plain data, checked field by field; a bad field is a `ConfigError` naming it."""
        config = dataclass_from_dict(cls, data, "config")
        _check_consistent(config)
        return config


def plain_data(config) -> dict[str, Any]:
    """A config dataclass as plain JSON data, as config.json stores it: tuples become lists, paths strings."""
    return json.loads(json.dumps(asdict(config), default=_path_text))


def _path_text(value: Any) -> str:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"config value {value!r} ({type(value).__name__}) is not plain data a config.json can hold")


class ConfigError(ValueError):
    """A config (from a dict or a config.json) with a field of the wrong type, out of range, or unknown."""


# Fields that count things or sizes: each must be at least 1.
_POSITIVE = {"embed_dim", "image_size", "patch_size", "width", "layers", "heads", "cnn_stem_stride",
             "vocab_size", "context_length", "mlp_ratio", "cnn_channels", "text_dim"}


def dataclass_from_dict(cls, data: Any, where: str = "config"):
    """`cls(**data)` after checking every field against `cls`'s annotations (types, positive sizes)
    and that no field is unknown; a `ConfigError` names the field and what it should be."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a JSON object of fields, got {_describe(data)}")
    hints = get_type_hints(cls)
    known = [f.name for f in fields(cls)]
    for name in data:
        if name not in hints:
            close = difflib.get_close_matches(str(name), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"unknown {where} field {name!r}{hint} (known fields: {', '.join(known)})")
    values = {name: _checked(f"{where}.{name}" if where != "config" else name, value, hints[name]) for name, value in data.items()}
    return cls(**values)


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f"the string {value!r}"
    if value is None:
        return "null"
    return {bool: "a boolean", list: "a list", dict: "an object"}.get(type(value), type(value).__name__) + f" ({value!r})"[:80]


def _checked(name: str, value: Any, hint: Any) -> Any:
    """`value` converted to the field's type (JSON lists become tuples), or a ConfigError."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"field {name} must not be null")
    problems = []
    for option in (o for o in options if o is not type(None)):
        try:
            return _as_type(name, value, option)
        except ConfigError as error:
            problems.append(str(error))
    raise ConfigError(problems[0] if len(problems) == 1 else " or ".join(problems))


def _as_type(name: str, value: Any, kind: Any) -> Any:
    short = name.rsplit(".", 1)[-1]
    if kind is int or kind is float:
        wanted = numbers.Integral if kind is int else numbers.Real  # numpy's numbers count too
        if isinstance(value, bool) or not isinstance(value, wanted):
            raise ConfigError(f"field {name} must be {'an integer' if kind is int else 'a number'}, got {_describe(value)}")
        if short in _POSITIVE and value <= 0:
            raise ConfigError(f"field {name} must be positive, got {value!r}")
        return int(value) if kind is int else float(value)
    if kind is str:
        if not isinstance(value, str):
            raise ConfigError(f"field {name} must be a string, got {_describe(value)}")
        return value
    if kind is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"field {name} must be an object, got {_describe(value)}")
        return value
    if typing.get_origin(kind) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"field {name} must be a list, got {_describe(value)}")
        items = typing.get_args(kind)
        if items and items[-1] is not Ellipsis and len(items) != len(value):
            raise ConfigError(f"field {name} must be a list of {len(items)} values, got {len(value)}")
        item_kind = items[0] if items else Any
        return tuple(value if item_kind is Any else [_as_type(name, item, item_kind) for item in value])
    if dataclasses.is_dataclass(kind):
        return value if isinstance(value, kind) else dataclass_from_dict(kind, value, name)
    return value


def _check_consistent(config: CLIPConfig) -> None:
    """Cross-field rules the towers would otherwise fail on later, with less clear messages."""
    vision, text = config.vision, config.text
    if vision.kind not in ("vit", "cnn"):
        raise ConfigError(f"field vision.kind must be 'vit' or 'cnn', got {vision.kind!r}")
    if vision.kind == "vit" and vision.width % vision.heads:
        raise ConfigError(f"field vision.heads ({vision.heads}) must divide vision.width ({vision.width})")
    if vision.kind == "vit" and vision.image_size % vision.patch_size:
        raise ConfigError(f"field vision.patch_size ({vision.patch_size}) must divide vision.image_size ({vision.image_size})")
    if vision.kind == "cnn":
        try:
            vision.blocks_per_stage()
        except ValueError as error:
            raise ConfigError(f"field vision.{error}") from None
    if text.width % text.heads:
        raise ConfigError(f"field text.heads ({text.heads}) must divide text.width ({text.width})")
    if not 0 <= text.resolved_eot_token_id < text.vocab_size:
        raise ConfigError(f"field text.eot_token_id ({text.eot_token_id}) must lie in [0, text.vocab_size={text.vocab_size})")


# Named presets are plain data (nested dicts of CLIPConfig fields); `config_from_preset` builds them.
# The text vocabularies of the small presets are placeholders: pass the tokenizer you train with.
PRESETS: dict[str, dict[str, Any]] = {
    # ~0.9M parameters: 32 px images, a word-level vocabulary; trains in minutes on 2 CPU cores.
    # The strided stem makes a step ~3x cheaper than a full-resolution one; in a quick trial on the
    # shapes world (batch 128) it also had the lower loss after equal steps, and reached 87% zero-shot
    # accuracy on the 64 colour-shape classes after 400 steps.
    "tiny-cpu": {
        "embed_dim": 128,
        "vision": {"kind": "cnn", "image_size": 32, "cnn_channels": [32, 64, 128], "cnn_blocks": 1, "cnn_stem_stride": 2},
        "text": {"vocab_size": 1000, "context_length": 24, "width": 128, "layers": 2, "heads": 4},
    },
    # The same budget with a small ViT (8x8 grid of 4-pixel patches), for comparing the towers.
    "tiny-cpu-vit": {
        "embed_dim": 128,
        "vision": {"kind": "vit", "image_size": 32, "patch_size": 4, "width": 128, "layers": 3, "heads": 4},
        "text": {"vocab_size": 1000, "context_length": 24, "width": 128, "layers": 2, "heads": 4},
    },
    # ~10M parameters: 64 px images through an 8x8 grid of 8-pixel patches; minutes on one GPU.
    "small-gpu": {
        "embed_dim": 256,
        "vision": {"kind": "vit", "image_size": 64, "patch_size": 8, "width": 256, "layers": 6, "heads": 8},
        "text": {"vocab_size": 1000, "context_length": 32, "width": 256, "layers": 6, "heads": 8},
    },
    # open_clip's "ViT-B-32" config exactly (151M parameters); OpenAI's released weights need act "quick_gelu".
    "ViT-B-32": {
        "embed_dim": 512,
        "vision": {"kind": "vit", "image_size": 224, "patch_size": 32, "width": 768, "layers": 12, "heads": 12},
        "text": {"vocab_size": 49408, "context_length": 77, "width": 512, "layers": 12, "heads": 8, "eot_token_id": 49407},
        "tokenizer": {"kind": "open_clip", "context_length": 77},
    },
}


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def config_from_preset(name: str, tokenizer=None, **overrides: Any) -> CLIPConfig:
    """A preset's config with `overrides` applied; nested dicts merge, e.g.
    `config_from_preset("tiny-cpu", embed_dim=64, text={"layers": 1})`.

    With `tokenizer`, the text vocabulary, context length and end-of-text id come from it and its
    spec is stored in the config, so checkpoints rebuild the same tokenizer.
    """
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    data = PRESETS[name]
    if tokenizer is not None:
        data = _merge(data, {
            "text": {
                "vocab_size": tokenizer.vocab_size,
                "context_length": tokenizer.context_length,
                "eot_token_id": tokenizer.eot_token_id,
            },
            "tokenizer": tokenizer.to_dict(),
        })
    return CLIPConfig.from_dict(_merge(data, overrides))


def config_diff(a: CLIPConfig | dict[str, Any], b: CLIPConfig | dict[str, Any]) -> list[str]:
    """Dotted names of the fields where two configs differ (e.g. ["text.layers", "embed_dim"]), in
    `a`'s order. Either may be a config or its plain data (a saved config.json's, which may lack
    fields a newer clipkit added); the tokenizer spec is compared whole, as one field."""
    return _differing(_as_data(a), _as_data(b), "")


def _as_data(config) -> dict[str, Any]:
    return config if isinstance(config, dict) else config.to_dict()


def _differing(a: dict[str, Any], b: dict[str, Any], prefix: str) -> list[str]:
    names = []
    for key, value in a.items():
        other = b.get(key)
        if isinstance(value, dict) and isinstance(other, dict) and key != "tokenizer":
            names += _differing(value, other, f"{prefix}{key}.")
        elif value != other:
            names.append(f"{prefix}{key}")
    return names
