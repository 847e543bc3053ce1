"""Judges of steered shapes-world images, none of them the model that steered: a prompt parser,
a pixel oracle that reads colours and places by thresholds, a zero-shot judge that asks a second
model, and the contrast captions (one attribute changed) that the contrastive steering loss uses.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping

import torch

from clipkit.data.grammar import with_articles
from clipkit.data.shapes import COLOURS, POSITIONS, SHAPES, SIZES, WHERE_PHRASES
from clipkit.interface import CLIPBase, embed_images, embed_texts


@dataclass(frozen=True)
class ShapesPrompt:
    """What a shapes-world prompt asks for; None where it does not say."""

    colour: str | None
    shape: str | None
    size: str | None = None
    position: str | None = None


# Every word of WHERE_PHRASES that names its position and no other ("middle" as well as "centre").
_POSITION_WORDS = {"left": "left", "right": "right", "top": "top", "bottom": "bottom", "centre": "centre", "middle": "centre", "center": "centre"}


def parse_shapes_prompt(prompt: str) -> ShapesPrompt:
    """'a large blue circle on the left' -> ShapesPrompt('blue', 'circle', 'large', 'left')."""
    words = re.findall(r"[a-z]+", prompt.lower())

    def first(vocabulary) -> str | None:
        return next((word for word in words if word in vocabulary), None)

    position = first(_POSITION_WORDS)
    return ShapesPrompt(first(COLOURS), first(SHAPES), first(SIZES), _POSITION_WORDS.get(position) if position else None)


@dataclass(frozen=True)
class OracleReading:
    colour: str | None  # the palette colour covering most pixels, None when nothing is painted
    x: float  # centre of that colour's pixels, as a fraction of the width
    y: float  # centre of that colour's pixels, as a fraction of the height
    position: str | None  # the nearest named position (clipkit.data.shapes.POSITIONS)
    coverage: float  # fraction of the image in that colour
    size: str | None  # the size word whose area is nearest that coverage


def pixel_oracle(
    image: torch.Tensor,
    palette: Mapping[str, tuple[int, int, int]] = COLOURS,
    min_brightness: float = 0.25,
    min_saturation: float = 0.4,
    max_distance: float = 0.35,
    min_coverage: float = 0.01,
) -> OracleReading:
    """Read an image by colour thresholds, as one would check the shapes world's renderer.

    A pixel (float [3, H, W] in [0, 1]) is painted when it is bright and saturated enough to stand
    out from a dark or grey background (HSV value >= `min_brightness`, saturation >=
    `min_saturation`). Its colour is the nearest palette colour after both are scaled to full
    brightness, so a dim red still reads as red but not as orange; pixels farther than
    `max_distance` from every palette colour are left out. The colour covering most pixels is the
    object; its pixels' centroid gives the position, and its area, next to the area a circle of
    each SIZES diameter covers, the size.
    """
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"pixel_oracle reads one image [3, H, W], got shape {tuple(image.shape)}")
    names = list(palette)
    colours = torch.tensor([palette[name] for name in names], dtype=torch.float32)  # [C, 3]
    colours = colours / colours.max(dim=1, keepdim=True).values
    pixels = image.detach().float().cpu().permute(1, 2, 0).reshape(-1, 3)  # [3, H, W] -> [H*W, 3]
    value = pixels.max(dim=1).values
    saturation = (value - pixels.min(dim=1).values) / value.clamp(min=1e-6)
    distance, nearest = torch.cdist(pixels / value.clamp(min=1e-6)[:, None], colours).min(dim=1)
    painted = (value >= min_brightness) & (saturation >= min_saturation) & (distance <= max_distance)
    counts = torch.bincount(nearest[painted], minlength=len(names))
    height, width = image.shape[1:]
    coverage = counts.max().item() / (height * width)
    if coverage < min_coverage:
        return OracleReading(None, 0.5, 0.5, None, coverage, None)
    winner = int(counts.argmax())
    index = (painted & (nearest == winner)).nonzero().squeeze(1)
    y = ((index // width).float().mean().item() + 0.5) / height
    x = ((index % width).float().mean().item() + 0.5) / width
    position = min(POSITIONS, key=lambda name: (POSITIONS[name][0] - x) ** 2 + (POSITIONS[name][1] - y) ** 2)
    size = min(SIZES, key=lambda name: abs(math.pi / 4 * SIZES[name] ** 2 - coverage))
    return OracleReading(names[winner], x, y, position, coverage, size)


def oracle_agrees(prompt: str, reading: OracleReading) -> bool:
    """The pixel oracle's verdict: the dominant colour is the prompt's, and so is the position when it says one."""
    wanted = parse_shapes_prompt(prompt)
    if wanted.colour is None:
        raise ValueError(f"{prompt!r} names no colour of the shapes world ({', '.join(COLOURS)}); the pixel oracle judges colours")
    return reading.colour == wanted.colour and (wanted.position is None or reading.position == wanted.position)


def _object_phrase(colour: str, shape: str, size: str | None) -> str:
    return with_articles(f"a {size + ' ' if size else ''}{colour} {shape}")


def shapes_prompt(colour: str, shape: str, size: str | None = None, position: str | None = None) -> str:
    """The prompt `parse_shapes_prompt` reads back: ('red', 'star', 'large', 'left') -> 'a large red star on the left'."""
    phrase = _object_phrase(colour, shape, size)
    return f"{phrase} {WHERE_PHRASES[position][0]}" if position else phrase


def shapes_contrasts(prompt: str) -> list[str]:
    """The shapes-world captions that differ from `prompt` in one stated attribute: every other
    colour, shape, size and position. As negative prompts of the "contrastive" loss they make the
    steered image tell the prompt apart from its nearest alternatives; a cosine pull alone barely
    moves a small object "to the left", since position is a small part of the whole embedding."""
    wanted = parse_shapes_prompt(prompt)
    if wanted.colour is None or wanted.shape is None:
        raise ValueError(f"{prompt!r} must name a colour ({', '.join(COLOURS)}) and a shape ({', '.join(SHAPES)})")

    def caption(colour=wanted.colour, shape=wanted.shape, size=wanted.size, position=wanted.position) -> str:
        return shapes_prompt(colour, shape, size, position)

    contrasts = [caption(colour=c) for c in COLOURS if c != wanted.colour]
    contrasts += [caption(shape=shape) for shape in SHAPES if shape != wanted.shape]
    if wanted.size is not None:
        contrasts += [caption(size=size) for size in SIZES if size != wanted.size]
    if wanted.position is not None:
        contrasts += [caption(position=place) for place in POSITIONS if place != wanted.position]
    return contrasts


def zero_shot_judge(model: CLIPBase, image: torch.Tensor, prompt: str) -> dict[str, str | bool]:
    """Ask `model` (ideally not the one that steered) what `image` shows, one question per attribute
    the prompt states: which of the 64 colour-shape classes, then which size, then which position
    (the other attributes fixed to the prompt's). Returns each answer and `correct`: all match."""
    wanted = parse_shapes_prompt(prompt)
    if wanted.colour is None or wanted.shape is None:
        raise ValueError(f"{prompt!r} must name a colour ({', '.join(COLOURS)}) and a shape ({', '.join(SHAPES)})")
    image_features = embed_images(model, image[None].float())  # [3, H, W] -> [1, 3, H, W]

    def choose(captions: list[str]) -> int:
        return int((image_features @ embed_texts(model, captions).T).argmax())

    pairs = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    colour, shape = pairs[choose([_object_phrase(c, s, wanted.size) for c, s in pairs])]
    answer: dict[str, str | bool] = {"colour": colour, "shape": shape}
    if wanted.size is not None:
        sizes = list(SIZES)
        answer["size"] = sizes[choose([_object_phrase(wanted.colour, wanted.shape, s) for s in sizes])]
    if wanted.position is not None:
        places = list(WHERE_PHRASES)
        object_phrase = _object_phrase(wanted.colour, wanted.shape, wanted.size)
        answer["position"] = places[choose([f"{object_phrase} {WHERE_PHRASES[p][0]}" for p in places])]
    answer["correct"] = all(answer[key] == getattr(wanted, key) for key in ("colour", "shape", "size", "position") if key in answer)
    return answer
