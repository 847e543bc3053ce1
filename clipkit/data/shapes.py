"""A procedural world of coloured shapes with captions: CLIP's data in miniature, made in milliseconds.

Each image holds one or two flat-coloured shapes on a dark background. Its caption names colour and
shape, sometimes size and position, and for two objects how they stand ("a red circle left of a blue
square"). Because we make the world we control it:
- a compositional split holds some colour-shape pairs out of training entirely, so zero-shot
  accuracy on them measures whether a model composes "red" and "triangle" it has seen apart;
- a binding probe pairs images whose captions differ only in which colour goes with which shape.

Drawing is vectorised: an anti-aliased mask per (shape, size) is drawn once at the configured
resolution, then pasted into a whole batch with numpy indexing (thousands of images a second).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch

from clipkit.data.transforms import CaptionedImages

# Flat, well separated colours: a pixel oracle can tell them apart by thresholds on a dark background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "orange": (250, 140, 10),
    "yellow": (240, 230, 30),
    "green": (30, 190, 50),
    "cyan": (30, 220, 230),
    "blue": (40, 70, 250),
    "purple": (150, 50, 220),
    "pink": (250, 120, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross", "heart", "diamond")
# Object diameter as a fraction of the image side; two large objects side by side still do not touch.
SIZES: dict[str, float] = {"small": 0.28, "large": 0.44}
# Object centre (x, y) as fractions of the image side, before jitter.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "centre": (0.5, 0.5),
}
# How the first object stands to the second, and where that puts each of them.
RELATIONS: dict[str, tuple[str, str]] = {
    "left of": ("left", "right"),
    "right of": ("right", "left"),
    "above": ("top", "bottom"),
    "below": ("bottom", "top"),
}
INVERSE_RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# One pair per colour and one per shape, so every colour and every shape keeps 7 partners in training.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("orange", "hexagon"),
    ("yellow", "heart"),
    ("green", "star"),
    ("cyan", "square"),
    ("blue", "diamond"),
    ("purple", "circle"),
    ("pink", "cross"),
)

WHERE_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left of the frame"),
    "right": ("on the right", "at the right of the frame"),
    "top": ("at the top", "near the top of the frame"),
    "bottom": ("at the bottom", "near the bottom of the frame"),
    "centre": ("in the centre", "in the middle of the frame"),
}

# Caption templates, plain data: add a style or a template and every sampler picks it up.
# "object" phrases name one object and hold {colour} and {shape} exactly once (optionally {size});
# "one" captions hold {object} (optionally {where}); "two" captions hold {a} and {b} (optionally
# {relation}). The "separate" style names colour and shape apart, which helps a model learn them as
# separate attributes and so compose held-out pairs.
CAPTION_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "terse": {
        "object": ["{colour} {shape}"],
        "one": ["{object}"],
        "two": ["{a} {relation} {b}", "{a} and {b}"],
    },
    "plain": {
        "object": ["a {colour} {shape}", "a {size} {colour} {shape}"],
        "one": ["{object}", "{object} {where}"],
        "two": ["{a} {relation} {b}", "{a} and {b}"],
    },
    "wordy": {
        "object": ["a {size} {colour} {shape}", "a {colour} {shape}"],
        "one": [
            "a picture of {object} {where}",
            "a simple drawing of {object} on a dark background",
            "an image showing {object} {where}",
        ],
        "two": [
            "a picture of {a} {relation} {b}",
            "a drawing with {a} and {b}",
            "there is {a} {relation} {b}, on a dark background",
        ],
    },
    "separate": {
        "object": [
            "a {shape}, coloured {colour}",
            "something {colour}: a {shape}",
            "a {size} {shape} painted {colour}",
            "a {shape} whose colour is {colour}",
        ],
        "one": ["{object}", "{object}, {where}"],
        "two": ["{a}, {relation} {b}", "{a}, and {b}"],
    },
}
BINDING_TEMPLATE = "a {colour_a} {shape_a} and a {colour_b} {shape_b}"

_ARTICLE = re.compile(r"\ba (?=[aeiou])")


def with_articles(text: str) -> str:
    """'a orange circle' -> 'an orange circle'."""
    return _ARTICLE.sub("an ", text)


def class_prompt(pair: tuple[str, str]) -> str:
    """The class name of a colour-shape pair, e.g. ('red', 'circle') -> 'red circle'."""
    colour, shape = pair
    return f"{colour} {shape}"


# ---------------------------------------------------------------------------------------------
# Masks: each shape is an inside-test on coordinates (u, v) in [-1, 1], v pointing down.


def _inside_polygon(u: np.ndarray, v: np.ndarray, vertices: Sequence[tuple[float, float]]) -> np.ndarray:
    """Even-odd rule: a point is inside when a ray to its right crosses the outline an odd number of times."""
    inside = np.zeros(u.shape, dtype=bool)
    for (x1, y1), (x2, y2) in zip(vertices, list(vertices[1:]) + [vertices[0]]):
        crosses = (y1 > v) != (y2 > v)
        x_at_v = x1 + (x2 - x1) * (v - y1) / ((y2 - y1) or 1e-12)
        inside ^= crosses & (u < x_at_v)
    return inside


def _star_outline(points: int = 5, inner: float = 0.42) -> list[tuple[float, float]]:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return list(zip(radii * np.cos(angles), radii * np.sin(angles)))


def _hexagon_outline() -> list[tuple[float, float]]:
    angles = np.arange(6) * np.pi / 3
    return list(zip(np.cos(angles), 0.95 * np.sin(angles)))


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    # The classic implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0 spans x in [-1.14, 1.14],
    # y in [-1, 1.25] (y up); map it onto the box.
    x = 1.18 * u
    y = -1.15 * v + 0.12
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


SHAPE_TESTS = {
    "circle": lambda u, v: u**2 + v**2 <= 0.92**2,
    "square": lambda u, v: (np.abs(u) <= 0.8) & (np.abs(v) <= 0.8),
    "triangle": lambda u, v: _inside_polygon(u, v, [(0.0, -0.95), (0.95, 0.8), (-0.95, 0.8)]),
    "star": lambda u, v: _inside_polygon(u, v - 0.08, _star_outline()),
    "hexagon": lambda u, v: _inside_polygon(u, v, _hexagon_outline()),
    "cross": lambda u, v: ((np.abs(u) <= 0.3) & (np.abs(v) <= 0.95)) | ((np.abs(u) <= 0.95) & (np.abs(v) <= 0.3)),
    "heart": _heart,
    "diamond": lambda u, v: 1.25 * np.abs(u) + np.abs(v) <= 1.0,
}


def mask_box_size(diameter: float) -> int:
    """Side in pixels of the square that holds a mask of this diameter (one pixel spare for edges)."""
    return int(np.ceil(diameter)) + 1


def shape_mask(shape: str, diameter: float, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage of `shape` drawn `diameter` pixels wide: float32 [B, B] in [0, 1].

    Each pixel is the fraction of its supersample x supersample sub-pixels inside the shape.
    """
    if shape not in SHAPE_TESTS:
        raise ValueError(f"unknown shape {shape!r}; known shapes: {sorted(SHAPE_TESTS)}")
    box = mask_box_size(diameter)
    sub_centres = (np.arange(box * supersample) + 0.5) / supersample  # in pixels from the box corner
    coords = (sub_centres - box / 2) / (diameter / 2)
    u, v = np.meshgrid(coords, coords)
    inside = SHAPE_TESTS[shape](u, v).astype(np.float32)
    # [B*s, B*s] -> [B, s, B, s]: average each pixel's s x s sub-pixels
    return inside.reshape(box, supersample, box, supersample).mean(axis=(1, 3))


# ---------------------------------------------------------------------------------------------
# Configuration and results


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


@dataclass
class _Layout:
    """Everything random about a batch of scenes, as arrays (object slot 1 is unused for one-object images)."""

    pairs: np.ndarray  # int [N, 2], index into ShapesWorld.pairs, -1 for no object
    sizes: np.ndarray  # int [N, 2], index into config.sizes
    positions: np.ndarray  # int [N, 2], index into POSITIONS
    corners: np.ndarray  # int [N, 2, 2], (row, column) of each mask box's top-left corner
    relations: np.ndarray  # int [N], index into RELATIONS, -1 for one object
    colour_offsets: np.ndarray  # int [N, 2, 3], per-object colour jitter
    background: np.ndarray  # float [N, 3]


_SPLITS = ("train", "heldout", "all")
_RENDER_CHUNK = 2048  # images drawn at once: bounds the float32 canvas at 64 px to ~100 MB


class ShapesWorld:
    """Samples captioned shape images from a `ShapesConfig`. Same seed, same sample, in any call order."""

    def __init__(self, config: ShapesConfig | None = None):
        self.config = config or ShapesConfig()
        cfg = self.config
        self.colours: dict[str, tuple[int, int, int]] = dict(cfg.colours)
        self.shapes: tuple[str, ...] = tuple(cfg.shapes)
        self.size_names: tuple[str, ...] = tuple(cfg.sizes)
        self.pairs: list[tuple[str, str]] = [(c, s) for c in self.colours for s in self.shapes]
        self.pair_index = {pair: index for index, pair in enumerate(self.pairs)}
        self.heldout_pairs: list[tuple[str, str]] = list(cfg.heldout_pairs)
        held = set(self.heldout_pairs)
        self.seen_pairs: list[tuple[str, str]] = [pair for pair in self.pairs if pair not in held]
        self.class_names: list[str] = [class_prompt(pair) for pair in self.pairs]
        self._palette = np.array(list(self.colours.values()), dtype=np.float32)
        self._position_names = tuple(POSITIONS)
        self._relation_names = tuple(RELATIONS)
        diameters = [cfg.sizes[name] * cfg.image_size for name in self.size_names]
        self._box_sizes = np.array([mask_box_size(d) for d in diameters])
        self._masks = {
            (shape_id, size_id): shape_mask(shape, diameter, cfg.supersample)
            for shape_id, shape in enumerate(self.shapes)
            for size_id, diameter in enumerate(diameters)
        }

    def pair_ids(self, split: str) -> np.ndarray:
        """Indices into `pairs` that `split` ("train", "heldout" or "all") draws objects from."""
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        chosen = {"train": self.seen_pairs, "heldout": self.heldout_pairs, "all": self.pairs}[split]
        return np.array([self.pair_index[pair] for pair in chosen], dtype=np.int64)

    # -- public samplers ----------------------------------------------------------------------

    def sample(
        self,
        n: int,
        seed: int = 0,
        split: str = "train",
        objects: int | None = None,
        caption_style: str | Sequence[str] | None = None,
    ) -> ShapesSample:
        """`n` captioned images. `objects` forces 1 or 2 objects per image; `caption_style` picks
        template styles (default: the config's). split="heldout" gives one-object images of held-out pairs."""
        return self._sample(n, np.random.default_rng(seed), split, objects, caption_style)

    def batches(
        self,
        batch_size: int,
        seed: int = 0,
        split: str = "train",
        objects: int | None = None,
        caption_style: str | Sequence[str] | None = None,
        num_batches: int | None = None,
    ) -> Iterator[ShapesSample]:
        """Fresh batches for training (endless unless `num_batches`); batch k depends only on (seed, k)."""
        step = 0
        while num_batches is None or step < num_batches:
            yield self._sample(batch_size, np.random.default_rng([seed, step]), split, objects, caption_style)
            step += 1

    def binding_probe(self, n: int, seed: int = 0, split: str = "train") -> BindingProbe:
        """`n` image pairs whose captions swap colours between two shapes (see `BindingProbe`).

        With split="train" all four colour-shape pairs involved are seen in training."""
        if split == "heldout":
            raise ValueError("a binding probe needs two objects; use split='train' or 'all'")
        rng = np.random.default_rng(seed)
        colours_ab, shapes_ab = self._binding_attributes(n, rng, split)
        layout = self._layout(n, rng, "all", objects=2)
        n_shapes = len(self.shapes)
        layout.pairs = colours_ab * n_shapes + shapes_ab
        swapped = copy.copy(layout)
        swapped.pairs = colours_ab[:, ::-1] * n_shapes + shapes_ab
        render_seed = int(rng.integers(2**63))  # the same noise in both images: only the colours differ
        images = self._render(layout, np.random.default_rng(render_seed))
        swapped_images = self._render(swapped, np.random.default_rng(render_seed))
        return BindingProbe(
            images=images,
            swapped_images=swapped_images,
            captions=[self._binding_caption(pairs) for pairs in layout.pairs],
            swapped_captions=[self._binding_caption(pairs) for pairs in swapped.pairs],
            scenes=self._scenes(layout),
            swapped_scenes=self._scenes(swapped),
        )

    # -- sampling ------------------------------------------------------------------------------

    def _sample(self, n, rng, split, objects, caption_style) -> ShapesSample:
        if n < 0:
            raise ValueError(f"n must be a non-negative number of images, got {n}")
        styles = self._styles(caption_style)
        layout = self._layout(n, rng, split, objects)
        captions = self._captions(layout, rng, styles)
        images = self._render(layout, rng)
        return ShapesSample(
            images=images,
            captions=captions,
            labels=torch.from_numpy(layout.pairs[:, 0].copy()),
            class_names=list(self.class_names),
            scenes=self._scenes(layout),
        )

    def _styles(self, caption_style) -> tuple[str, ...]:
        styles = self.config.caption_styles if caption_style is None else caption_style
        styles = (styles,) if isinstance(styles, str) else tuple(styles)
        unknown = [s for s in styles if s not in self.config.templates]
        if unknown or not styles:
            raise ValueError(f"unknown caption style(s) {unknown}; choose from {sorted(self.config.templates)}")
        return styles

    def _layout(self, n: int, rng: np.random.Generator, split: str, objects: int | None) -> _Layout:
        cfg = self.config
        allowed = self.pair_ids(split)
        if objects not in (None, 1, 2):
            raise ValueError(f"objects must be 1, 2 or None (mixed), got {objects!r}")
        if split == "heldout" and objects == 2:
            raise ValueError("split='heldout' holds one-object images only; pass objects=None or 1")
        # Draw every array whatever the split, so each choice always consumes the same random numbers.
        two_drawn = rng.random(n) < cfg.p_two_objects
        two = np.full(n, objects == 2) if objects is not None else two_drawn
        if split == "heldout":
            two[:] = False
        if cfg.pair_weights is None:
            first = rng.integers(0, len(allowed), n)
            # A second pair different from the first: draw from one fewer and step over the first.
            other = rng.integers(0, max(len(allowed) - 1, 1), n)
            second = other + (other >= first)
        else:
            first, second = self._weighted_pairs(allowed, n, rng)
        pairs = np.stack([allowed[first], np.where(two, allowed[np.minimum(second, len(allowed) - 1)], -1)], axis=1)
        sizes = rng.integers(0, len(self.size_names), (n, 2))
        single_position = rng.integers(0, len(self._position_names), n)
        relation = rng.integers(0, len(self._relation_names), n)
        relation_positions = np.array(
            [[self._position_names.index(p) for p in RELATIONS[r]] for r in self._relation_names]
        )
        single_positions = np.stack([single_position, single_position], axis=1)
        positions = np.where(two[:, None], relation_positions[relation], single_positions)
        jitter = rng.uniform(-cfg.position_jitter, cfg.position_jitter, (n, 2, 2))
        colour_offsets = rng.integers(-cfg.colour_jitter, cfg.colour_jitter + 1, (n, 2, 3))
        brightness = rng.integers(-cfg.background_jitter, cfg.background_jitter + 1, (n, 1))

        base_xy = np.array(list(POSITIONS.values()))[positions]  # [N, 2] position ids -> [N, 2, 2] (x, y)
        # Two objects only move apart along their relation's axis, so even two large ones never touch.
        outward = np.sign(base_xy - 0.5)
        jitter = np.where(two[:, None, None] & (outward != 0), np.abs(jitter) * outward, jitter)
        centres_xy = (base_xy + jitter) * cfg.image_size
        box = self._box_sizes[sizes][..., None]  # [N, 2] -> [N, 2, 1]
        corners = np.clip(np.rint(centres_xy[..., ::-1] - box / 2), 0, cfg.image_size - box).astype(np.int64)
        return _Layout(
            pairs=pairs,
            sizes=sizes,
            positions=positions,
            corners=corners,
            relations=np.where(two, relation, -1),
            colour_offsets=colour_offsets,
            background=np.clip(np.asarray(cfg.background, dtype=np.float32) + brightness, 0, 255),
        )

    def _weighted_pairs(self, allowed: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Positions in `allowed` of each image's first and second pair, drawn by `pair_weights`; the
        second differs from the first (the next allowed pair when the draw repeats it)."""
        weights = np.array([self.config.pair_weights.get(self.pairs[index], 1.0) for index in allowed])
        if weights.sum() <= 0:
            raise ValueError("pair_weights gives every pair of this split weight 0: nothing to draw")
        first = rng.choice(len(allowed), size=n, p=weights / weights.sum())
        other = rng.choice(len(allowed), size=n, p=weights / weights.sum())
        return first, np.where(other == first, (first + 1) % len(allowed), other)

    def _binding_attributes(self, n: int, rng: np.random.Generator, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Colour and shape indices [n, 2], distinct within each row, with all four combinations allowed."""
        n_colours, n_shapes = len(self.colours), len(self.shapes)
        allowed = np.zeros(n_colours * n_shapes, dtype=bool)
        allowed[self.pair_ids(split)] = True
        allowed = allowed.reshape(n_colours, n_shapes)  # [pairs] -> [colour, shape]
        colours, shapes = np.empty((0, 2), np.int64), np.empty((0, 2), np.int64)
        while len(colours) < n:
            c = rng.integers(0, n_colours, (2 * n + 16, 2))
            s = rng.integers(0, n_shapes, (2 * n + 16, 2))
            ok = (c[:, 0] != c[:, 1]) & (s[:, 0] != s[:, 1])
            for ci in (0, 1):
                for si in (0, 1):
                    ok &= allowed[c[:, ci], s[:, si]]
            colours, shapes = np.concatenate([colours, c[ok]]), np.concatenate([shapes, s[ok]])
        return colours[:n], shapes[:n]

    # -- drawing -------------------------------------------------------------------------------

    def _render(self, layout: _Layout, rng: np.random.Generator) -> torch.Tensor:
        cfg = self.config
        n, side = len(layout.pairs), cfg.image_size
        images = torch.empty((n, 3, side, side), dtype=torch.uint8)
        n_shapes = len(self.shapes)
        noise_generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        for start in range(0, n, _RENDER_CHUNK):
            part = slice(start, min(n, start + _RENDER_CHUNK))
            background = torch.from_numpy(layout.background[part]).float()
            canvas = background[:, :, None, None].repeat(1, 1, side, side)  # [n, 3] -> [n, 3, S, S]
            for slot in (0, 1):
                pairs = layout.pairs[part, slot]
                alpha = self._paste_masks(
                    pairs % n_shapes, layout.sizes[part, slot], layout.corners[part, slot], present=pairs >= 0
                )
                colour = np.clip(self._palette[pairs // n_shapes] + layout.colour_offsets[part, slot], 0, 255)
                colour = torch.from_numpy(colour.astype(np.float32))[:, :, None, None]  # [n, 3] -> [n, 3, 1, 1]
                alpha = torch.from_numpy(alpha)[:, None]  # [n, S, S] -> [n, 1, S, S]
                canvas.lerp_(colour.expand_as(canvas), alpha.expand_as(canvas))  # in place: no temporaries
            if cfg.noise_std > 0:
                canvas.add_(torch.randn(canvas.shape, generator=noise_generator), alpha=cfg.noise_std)
            images[part] = canvas.round_().clamp_(0, 255).to(torch.uint8)
        return images

    def _paste_masks(self, shape_ids, size_ids, corners, present) -> np.ndarray:
        """Coverage [n, S, S] of one object per image, by pasting each (shape, size) mask group at once."""
        side = self.config.image_size
        alpha = np.zeros((len(shape_ids), side, side), dtype=np.float32)
        for (shape_id, size_id), mask in self._masks.items():
            index = np.flatnonzero(present & (shape_ids == shape_id) & (size_ids == size_id))
            if len(index) == 0:
                continue
            offsets = np.arange(mask.shape[0])
            rows = corners[index, 0, None] + offsets  # [k, B]
            cols = corners[index, 1, None] + offsets  # [k, B]
            alpha[index[:, None, None], rows[:, :, None], cols[:, None, :]] = mask
        return alpha

    # -- words ---------------------------------------------------------------------------------

    def _scenes(self, layout: _Layout) -> list[Scene]:
        half_boxes = self._box_sizes / 2
        scenes = []
        columns = (layout.pairs, layout.sizes, layout.positions, layout.corners, layout.relations)
        for pairs, sizes, positions, corners, relation in zip(*(column.tolist() for column in columns)):
            objects = tuple(
                ShapeObject(
                    colour=self.pairs[pair][0],
                    shape=self.pairs[pair][1],
                    size=self.size_names[size],
                    position=self._position_names[position],
                    x=float(corner[1] + half_boxes[size]),
                    y=float(corner[0] + half_boxes[size]),
                )
                for pair, size, position, corner in zip(pairs, sizes, positions, corners)
                if pair >= 0
            )
            scenes.append(Scene(objects, self._relation_names[relation] if relation >= 0 else None))
        return scenes

    def _captions(self, layout: _Layout, rng: np.random.Generator, styles: tuple[str, ...]) -> list[str]:
        n = len(layout.pairs)
        # Uniform numbers in [0, 1) pick among lists of any length: index = int(u * len(list)).
        style_u, caption_u, where_u = rng.random(n), rng.random(n), rng.random(n)
        object_u = rng.random((n, 2))
        flip = rng.random(n) < 0.5
        captions = []
        rows = zip(layout.pairs.tolist(), layout.sizes.tolist(), layout.relations.tolist())
        for i, (pairs, sizes, relation) in enumerate(rows):
            templates = self.config.templates[styles[int(style_u[i] * len(styles))]]
            phrases = []
            for slot in range(2 if relation >= 0 else 1):
                options = templates["object"]
                colour, shape = self.pairs[pairs[slot]]
                template = options[int(object_u[i, slot] * len(options))]
                phrases.append(template.format(colour=colour, shape=shape, size=self.size_names[sizes[slot]]))
            if relation < 0:
                options = templates["one"]
                where_options = WHERE_PHRASES[self._position_names[layout.positions[i, 0]]]
                caption = options[int(caption_u[i] * len(options))].format(
                    object=phrases[0], where=where_options[int(where_u[i] * len(where_options))]
                )
            else:
                relation_words = self._relation_names[relation]
                if flip[i]:  # "a blue square right of a red circle" says the same as the reverse
                    phrases.reverse()
                    relation_words = INVERSE_RELATIONS[relation_words]
                options = templates["two"]
                template = options[int(caption_u[i] * len(options))]
                caption = template.format(a=phrases[0], b=phrases[1], relation=relation_words)
            captions.append(with_articles(caption))
        return captions

    def _binding_caption(self, pairs: np.ndarray) -> str:
        (colour_a, shape_a), (colour_b, shape_b) = (self.pairs[p] for p in pairs)
        caption = BINDING_TEMPLATE.format(colour_a=colour_a, shape_a=shape_a, colour_b=colour_b, shape_b=shape_b)
        return with_articles(caption)
