"""The model configs: one dataclass per tower, one for the whole CLIP, and named presets.

Configs are plain data: `CLIPConfig.to_dict()` is what a checkpoint's config.json stores and
`CLIPConfig.from_dict` rebuilds it. Presets are nested dicts of the same fields, so a preset is
read like a config file and changed with `config_from_preset(name, **overrides)`.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

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
    cnn_blocks: int = 1  # CNN: residual blocks per stage
    cnn_stem_stride: int = 1  # CNN: stride of the first convolution; 2 quarters the cost of large images
    cnn_pool: str = "mean"  # CNN: "mean" (global average: forgets where things are) or "centroid" (also each channel's centre of mass)


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
        return json.loads(json.dumps(asdict(self)))  # plain JSON types: tuples become lists

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CLIPConfig:
        data = dict(data)
        vision = _dataclass_from_dict(VisionConfig, data.pop("vision", {}), "vision")
        text = _dataclass_from_dict(TextConfig, data.pop("text", {}), "text")
        return _dataclass_from_dict(cls, {**data, "vision": vision, "text": text}, "config")


def _dataclass_from_dict(cls, data: dict[str, Any], where: str):
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {where} field(s) {unknown}: known fields are {sorted(known)}")
    # JSON has no tuples; turn lists back into them so configs compare equal after a round trip.
    values = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
    return cls(**values)


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


def config_diff(a: CLIPConfig, b: CLIPConfig) -> list[str]:
    """Dotted names of the fields where two configs differ (e.g. ["text.layers", "embed_dim"])."""

    def flatten(config: CLIPConfig) -> dict[str, Any]:
        flat = {}
        for key, value in config.to_dict().items():
            if key in ("vision", "text"):
                flat.update({f"{key}.{name}": item for name, item in value.items()})
            else:
                flat[key] = value
        return flat

    flat_a, flat_b = flatten(a), flatten(b)
    return [key for key in flat_a if flat_a[key] != flat_b[key]]
