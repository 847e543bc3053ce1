"""Named distribution-shift suites: the shapes world's vocabulary drawn in ways training never shows,
as ImageNet has its -R, -Sketch and -A variants.

A suite is plain data, a dict of `ShiftSpec` fields; `draw_suite(world, name, n, seed, split)` draws
`n` one-object images of it with labels indexing `world.pairs`: split "train" draws the pairs the
world trains on, "heldout" its held-out pairs. Every suite goes through the independent renderer
(`draw.py`), so even "redrawn", which keeps the world's sizes, places, colours and background, is a
shift of renderer; the others add one change each, and "combined" several at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch

from clipkit.data.grammar import with_articles
from clipkit.data.shapes.words import POSITIONS, class_prompt
from clipkit.data.shifts.draw import background, finish, shape_coverage
from clipkit.data.transforms import CaptionedImages


@dataclass(frozen=True)
class ShiftSpec:
    rotation: float = 0.0  # most degrees an object turns either way (uniform)
    sizes: tuple[float, float] | None = None  # diameter range as a fraction of the side; None: the world's size words
    placement: str = "grid"  # "grid": the world's five places with its jitter; "free": anywhere the object fits
    background: str = "world"  # world, tinted, plain, gradient or texture (see draw.background)
    shade: float = 0.0  # how far a colour moves toward other shades, as a fraction of the gap to the nearest other palette colour (< 0.5 keeps it nearest its own)
    colour_jitter: int = 12  # most a colour moves per channel (0-255), as the world's jitter
    blur: tuple[float, float] | None = None  # Gaussian blur radius range as a fraction of the side; None: sharp
    jpeg: tuple[int, int] | None = None  # JPEG quality range; None: no compression
    stroke: float = 0.0  # outline width as a fraction of the object's diameter; 0 fills the shape
    noise_std: float = 2.0  # per-pixel Gaussian noise (0-255), as the world's

    def __post_init__(self):
        if self.placement not in ("grid", "free"):
            raise ValueError(f"placement must be 'grid' or 'free', got {self.placement!r}")
        if not 0.0 <= self.shade < 0.5:
            raise ValueError(f"shade must be in [0, 0.5) so every colour stays nearest its own, got {self.shade}")
        if self.sizes is not None and not 0.1 <= self.sizes[0] <= self.sizes[1] <= 0.9:
            raise ValueError(f"sizes must be a range (low, high) within [0.1, 0.9] of the side, got {self.sizes}")


# The suites, plain data: a name and the ShiftSpec fields that differ from the world's look.
SUITES: dict[str, dict] = {
    "redrawn": {},  # only the renderer changes
    "rotation": {"rotation": 30.0},
    "size": {"sizes": (0.26, 0.56)},
    "placement": {"placement": "free"},
    "background": {"background": "plain"},
    "gradient": {"background": "gradient"},
    "texture": {"background": "texture"},
    "blur": {"blur": (0.02, 0.035)},
    "jpeg": {"jpeg": (15, 40), "noise_std": 4.0},
    "shade": {"shade": 0.42, "colour_jitter": 0},
    "sketch": {"stroke": 0.14},
    # The "drawn another way": turned a little, off-grid size and place, a tinted dark
    # background, a touch of blur.
    "combined": {"rotation": 12.0, "sizes": (0.26, 0.5), "placement": "free", "background": "tinted", "blur": (0.01, 0.025)},
}


def suite_spec(suite: str | dict | ShiftSpec) -> ShiftSpec:
    """A suite's ShiftSpec from its name in SUITES, a dict of ShiftSpec fields, or a ShiftSpec."""
    if isinstance(suite, ShiftSpec):
        return suite
    if isinstance(suite, str):
        if suite not in SUITES:
            raise ValueError(f"unknown shift suite {suite!r}: choose among {sorted(SUITES)} or pass a dict of ShiftSpec fields")
        suite = SUITES[suite]
    known = {f.name for f in fields(ShiftSpec)}
    unknown = sorted(set(suite) - known)
    if unknown:
        raise ValueError(f"unknown ShiftSpec fields {unknown}: known fields are {sorted(known)}")
    return ShiftSpec(**suite)


@dataclass(eq=False)
class ShiftSample(CaptionedImages):
    """One-object images of a suite; `labels` index `world.pairs`. `geometry` and `colours` say what
    was drawn, so a pixel oracle can check each image."""

    geometry: torch.Tensor = field(default_factory=lambda: torch.empty(0, 6))  # float [N, 6]: x, y, diameter (pixels), angle (degrees), stroke (pixels, 0 filled), blur radius (pixels)
    colours: torch.Tensor = field(default_factory=lambda: torch.empty(0, 3))  # float [N, 3]: the RGB the object was painted
    per_item_fields: tuple[str, ...] = field(default=("images", "captions", "labels", "geometry", "colours"), repr=False)


def shaded_palette(palette: np.ndarray, shade: float, rng: np.random.Generator, colour_ids: np.ndarray) -> np.ndarray:
    """Colours [n, 3] moved from palette[colour_ids] in a random direction by between half and all of
    `shade` times the gap to the nearest other palette colour: being less than half that gap away,
    each stays nearer its own palette colour than any other (clipping to 0..255 only brings it nearer)."""
    gaps = np.linalg.norm(palette[:, None] - palette[None], axis=-1)  # [C, C]
    np.fill_diagonal(gaps, np.inf)
    nearest = gaps.min(axis=1)[colour_ids]  # [n]
    direction = rng.normal(size=(len(colour_ids), 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    reach = shade * nearest * rng.uniform(0.5, 1.0, len(colour_ids))
    return np.clip(palette[colour_ids] + direction * reach[:, None], 0, 255)


def draw_suite(world, suite: str | dict | ShiftSpec, n: int, seed: int = 0, split: str = "train", image_size: int | None = None) -> ShiftSample:
    """`n` one-object images of `suite` (a name in SUITES, a dict of ShiftSpec fields or a ShiftSpec)
    in `world`'s vocabulary, uint8 [n, 3, S, S] at `image_size` (default the world's); the pairs of
    `split` ("train": seen pairs, "heldout": held-out pairs, "all"). Same arguments, same images."""
    spec = suite_spec(suite)
    if n < 0:
        raise ValueError(f"n must be a non-negative number of images, got {n}")
    side = int(image_size or world.config.image_size)
    if side < 16:
        raise ValueError(f"image_size must be at least 16 pixels to draw shapes, got {side}")
    rng = np.random.default_rng(seed)
    allowed = world.pair_ids(split)
    pair_ids = allowed[rng.integers(0, len(allowed), n)]
    colour_ids, shape_ids = np.divmod(pair_ids, len(world.shapes))
    palette = np.array(list(world.colours.values()), dtype=np.float64)
    # Every random array is drawn whatever the spec, so suites drawn with one seed show the same
    # objects: "blur" is "redrawn" blurred, and a change in accuracy is the shift's alone.
    size_words = np.array(list(world.config.sizes.values()))[rng.integers(0, len(world.config.sizes), n)]
    size_range = spec.sizes or (0.0, 0.0)
    free_sizes = size_range[0] + rng.random(n) * (size_range[1] - size_range[0])
    diameters = (size_words if spec.sizes is None else free_sizes) * side
    places = np.array(list(POSITIONS.values()))[rng.integers(0, len(POSITIONS), n)]  # [n, 2] (x, y)
    jitter = world.config.position_jitter
    grid_centres = (places + rng.uniform(-jitter, jitter, (n, 2))) * side
    margin = diameters[:, None] / 2 + 1  # the whole object stays in the frame
    free_centres = margin + rng.random((n, 2)) * (side - 2 * margin)
    centres = grid_centres if spec.placement == "grid" else free_centres
    angles = (2 * rng.random(n) - 1) * spec.rotation
    shades = shaded_palette(palette, spec.shade, rng, colour_ids)
    jitter_u = rng.random((n, 3))
    colours = np.clip(shades + np.floor(jitter_u * (2 * spec.colour_jitter + 1)) - spec.colour_jitter, 0, 255)
    strokes = np.full(n, spec.stroke) * diameters
    blur_range = spec.blur or (0.0, 0.0)
    blurs = (blur_range[0] + rng.random(n) * (blur_range[1] - blur_range[0])) * side
    quality_u = rng.random(n)
    qualities = [int(spec.jpeg[0] + u * (spec.jpeg[1] - spec.jpeg[0] + 1)) for u in quality_u] if spec.jpeg else [None] * n
    image_seeds = rng.integers(0, 2**63, n)

    images = np.empty((n, side, side, 3), dtype=np.uint8)
    for i in range(n):
        image_rng = np.random.default_rng(int(image_seeds[i]))  # backgrounds and noise of image i
        canvas = background(spec.background, side, image_rng)
        alpha = shape_coverage(world.shapes[shape_ids[i]], *centres[i], diameters[i], angles[i], side, strokes[i])
        canvas += (colours[i].astype(np.float32) - canvas) * alpha[..., None]  # [S, S] -> [S, S, 1]
        if spec.noise_std > 0:
            canvas += image_rng.normal(0.0, spec.noise_std, canvas.shape).astype(np.float32)
        images[i] = finish(canvas, blurs[i], qualities[i])
    geometry = np.column_stack([centres, diameters, angles, strokes, blurs])
    return ShiftSample(
        images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),  # [n, S, S, 3] -> [n, 3, S, S]
        captions=[with_articles(f"a {class_prompt(world.pairs[p])}") for p in pair_ids],
        labels=torch.from_numpy(pair_ids.astype(np.int64)),
        class_names=list(world.class_names),
        geometry=torch.from_numpy(geometry).float(),
        colours=torch.from_numpy(colours).float(),
    )


def draw_suites(world, suites=None, n: int = 256, seed: int = 0, split: str = "train", image_size: int | None = None) -> dict[str, ShiftSample]:
    """`draw_suite` for each of `suites` (default: every suite in SUITES), by name."""
    names = list(SUITES) if suites is None else list(suites)
    return {name: draw_suite(world, name, n, seed, split, image_size) for name in names}
