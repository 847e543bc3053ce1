"""What a shapes world is made of (`ShapesConfig`) and what sampling it returns (scenes, samples,
binding probes)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from clipkit.data.shapes.masks import SHAPE_TESTS
from clipkit.data.shapes.words import CAPTION_TEMPLATES, COLOURS, HELDOUT_PAIRS, SHAPES, SIZES
from clipkit.data.transforms import CaptionedImages

VARIATIONS = ("grid", "random")
# Allowed range of each randomisation field: beyond these, words stop being true of the pictures.
_RANDOM_RANGES = {
    "max_rotation": (0.0, 45.0),
    "size_spread": (0.0, 0.2),
    "shade": (0.0, 0.95),
    "p_outline": (0.0, 1.0),
    "p_any_background": (0.0, 1.0),
    "p_gradient": (0.0, 1.0),
    "p_pattern": (0.0, 1.0),
    "texture": (0.0, 64.0),
    "max_blur": (0.0, 2.0),
    "max_noise": (0.0, 32.0),
    "p_jpeg": (0.0, 1.0),
    "min_jpeg_quality": (5, 95),
    "p_grid": (0.0, 1.0),
}


def _default_templates() -> dict[str, dict[str, list[str]]]:
    return copy.deepcopy(CAPTION_TEMPLATES)


@dataclass
class ShapesConfig:
    image_size: int = 32  # image side in pixels: 32 trains in minutes on a CPU, 64 draws shapes more clearly
    p_two_objects: float = 0.5  # chance that an image holds two objects in a stated relation
    position_jitter: float = 0.05  # random shift of each object (fraction of the side): a position word names a region
    colour_jitter: int = 12  # most an object's colour moves per channel (0-255); mild so colours stay separable
    background: tuple[int, int, int] = (16, 16, 20)  # dark, so every palette colour stands out from it
    background_jitter: int = 6  # most the background brightness moves per image (0-255)
    noise_std: float = 2.0  # per-pixel Gaussian noise (0-255): low, so colours stay flat for a threshold oracle
    supersample: int = 4  # sub-pixels per pixel side when drawing masks (anti-aliasing)
    caption_styles: tuple[str, ...] = ("terse", "plain", "wordy", "separate")  # styles captions are drawn from
    templates: dict[str, dict[str, list[str]]] = field(default_factory=_default_templates)  # style -> templates
    colours: dict[str, tuple[int, int, int]] = field(default_factory=lambda: dict(COLOURS))  # name -> RGB
    shapes: tuple[str, ...] = SHAPES  # shape names, each a key of SHAPE_TESTS
    sizes: dict[str, float] = field(default_factory=lambda: dict(SIZES))  # size word -> diameter / image side
    heldout_pairs: tuple[tuple[str, str], ...] = HELDOUT_PAIRS  # colour-shape pairs never shown in training
    pair_weights: dict[tuple[str, str], float] | None = None  # relative frequency of (colour, shape) pairs, unnamed ones 1; None: uniform (a skewed world for bias studies)
    # Domain randomisation: "grid" is the fixed world above (sizes, places and colours on a grid);
    # "random" draws every picture another way, so a model must learn shapes, not one renderer's
    # pixels. The fields below act only in the "random" world.
    variation: str = "grid"  # "grid" or "random"
    max_rotation: float = 30.0  # most an object turns either way, in degrees (0-45: a square turned 45 degrees is a diamond)
    size_spread: float = 0.18  # each diameter is its size word's times 1 +- up to this (0-0.2, so small and large never meet)
    shade: float = 0.85  # how far a colour moves towards its nearest other palette colour, as a fraction of half the way (0-0.95: it stays nearest its own)
    p_outline: float = 0.2  # chance an object is drawn in outline only (its caption says so)
    p_any_background: float = 0.5  # chance a background is any colour far from the objects' (else a dark tint)
    p_gradient: float = 0.5  # chance a background fades into a second colour
    texture: float = 16.0  # most a background's texture or pattern moves each channel (0-64, 0-255 scale)
    p_pattern: float = 0.3  # chance a background also carries stripes or checks
    max_blur: float = 1.5  # most Gaussian blur, in pixels of standard deviation (0-2)
    max_noise: float = 6.0  # most per-pixel noise, standard deviation on the 0-255 scale (0-32)
    p_jpeg: float = 0.0  # chance a picture is saved as a JPEG and read back (blocks, ringing, smeared colour); 0 keeps older random worlds' pictures
    min_jpeg_quality: int = 30  # lowest JPEG quality drawn (5-95); each JPEG's quality is uniform up to 95
    p_grid: float = 0.0  # chance a picture is drawn the grid world's way (no turn, the size word's size, its place, a dark background, sharp): the original drawing stays one of many; 0 keeps older random worlds' pictures

    def __post_init__(self):
        if self.image_size < 16:
            raise ValueError(f"image_size must be at least 16 pixels to draw shapes, got {self.image_size}")
        if not 0.0 <= self.p_two_objects <= 1.0:
            raise ValueError(f"p_two_objects must be a probability in [0, 1], got {self.p_two_objects}")
        unknown = [s for s in self.shapes if s not in SHAPE_TESTS]
        if unknown:
            raise ValueError(f"shapes {unknown} have no drawing; choose from {sorted(SHAPE_TESTS)}")
        self.heldout_pairs = tuple(tuple(pair) for pair in self.heldout_pairs)
        for colour, shape in self.heldout_pairs:
            if colour not in self.colours or shape not in self.shapes:
                raise ValueError(f"held-out pair ({colour!r}, {shape!r}) names an unknown colour or shape")
        held = set(self.heldout_pairs)
        for colour in self.colours:
            if all((colour, shape) in held for shape in self.shapes):
                raise ValueError(f"every pair with colour {colour!r} is held out, so training never shows it")
        for shape in self.shapes:
            if all((colour, shape) in held for colour in self.colours):
                raise ValueError(f"every pair with shape {shape!r} is held out, so training never shows it")
        self._check_templates()
        self._check_pair_weights()
        self._check_variation()

    def _check_variation(self):
        if self.variation not in VARIATIONS:
            raise ValueError(f"variation must be one of {VARIATIONS}, got {self.variation!r}")
        for name, (low, high) in _RANDOM_RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ValueError(f"{name} must lie in [{low}, {high}], got {value!r}")

    def _check_pair_weights(self):
        if self.pair_weights is None:
            return
        self.pair_weights = {tuple(pair): float(weight) for pair, weight in self.pair_weights.items()}
        unknown = [pair for pair in self.pair_weights if pair[0] not in self.colours or pair[1] not in self.shapes]
        if unknown:
            raise ValueError(f"pair_weights names unknown (colour, shape) pairs {unknown[:4]}; colours {list(self.colours)}, shapes {list(self.shapes)}")
        negative = {pair: weight for pair, weight in self.pair_weights.items() if not weight >= 0}
        if negative:
            raise ValueError(f"pair_weights must be >= 0 (they are relative frequencies), got {negative}")
        held = set(self.heldout_pairs)
        if not any(self.pair_weights.get((c, s), 1.0) > 0 for c in self.colours for s in self.shapes if (c, s) not in held):
            raise ValueError("pair_weights gives every training pair weight 0: at least one must be positive")

    def _check_templates(self):
        missing = [style for style in self.caption_styles if style not in self.templates]
        if missing:
            raise ValueError(f"caption styles {missing} have no templates; known: {sorted(self.templates)}")
        required = {"object": ("{colour}", "{shape}"), "one": ("{object}",), "two": ("{a}", "{b}")}
        for style, parts in self.templates.items():
            for part, fields in required.items():
                if not parts.get(part):
                    raise ValueError(f"caption style {style!r} needs a non-empty list of {part!r} templates")
                for template in parts[part]:
                    if any(template.count(f) != 1 for f in fields):
                        raise ValueError(f"template {template!r} ({style}/{part}) must hold each of {fields} once")


@dataclass(frozen=True)
class ShapeObject:
    colour: str
    shape: str
    size: str  # "small" or "large"
    position: str  # "left", "right", "top", "bottom" or "centre"
    x: float  # centre column in pixels
    y: float  # centre row in pixels
    diameter: float = 0.0  # in pixels
    angle: float = 0.0  # turn in degrees (the random world)
    outline: bool = False  # drawn in outline only (the random world; the caption says so)


@dataclass(frozen=True)
class Scene:
    objects: tuple[ShapeObject, ...]
    relation: str | None = None  # how objects[0] stands to objects[1] ("left of"...), None for one object

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple((o.colour, o.shape) for o in self.objects)


@dataclass(eq=False)
class ShapesSample(CaptionedImages):
    """Shape images with captions; `labels` (also `pair_labels`) index `ShapesWorld.pairs` by the first object."""

    scenes: list[Scene] = field(default_factory=list)  # what each image shows, object by object
    per_item_fields: tuple[str, ...] = field(default=("images", "captions", "labels", "scenes"), repr=False)

    @property
    def pair_labels(self) -> torch.Tensor:
        return self.labels


@dataclass(eq=False)
class BindingProbe:
    """Image pairs that hold the same shapes in the same places with the colours swapped.

    `images[i]` matches `captions[i]`; `swapped_images[i]` matches `swapped_captions[i]`; the two
    captions use the same words, so only a model that binds colours to shapes tells them apart.
    """

    images: torch.Tensor  # uint8 [N, 3, H, W]
    swapped_images: torch.Tensor  # uint8 [N, 3, H, W], colours exchanged between the two objects
    captions: list[str]
    swapped_captions: list[str]
    scenes: list[Scene]
    swapped_scenes: list[Scene]

    def __len__(self) -> int:
        return len(self.images)
