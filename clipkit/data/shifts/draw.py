"""An independent renderer of the shapes world's vocabulary: other code, other geometry.

The world (`clipkit.data.shapes`) fills inside-tests on a pixel grid and pastes them on a fixed grid of
sizes and places. Here every shape is an outline of vertices (a circle an ellipse) that PIL's
ImageDraw fills or strokes at `supersample` times the resolution; a box filter brings it down to
size. Nothing here reads the world's masks, so a model that learnt the world's pixels rather than
its shapes fails on these drawings.

Backgrounds (world-like, tinted, plain colours, gradients, textures), blur and JPEG compression are
drawn here too: everything one image needs, given plain numbers. `suites.py` decides the numbers.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from clipkit.data.transforms import jpeg_roundtrip


def _regular(corners: int, phase: float) -> np.ndarray:
    angles = phase + np.arange(corners) * 2 * np.pi / corners
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.48) -> np.ndarray:
    angles = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles) + 0.06], axis=1)


def _heart(steps: int = 40) -> np.ndarray:
    # The parametric heart x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t spans
    # x in [-16, 16], y in [-17, 12] (y up): centre it and scale it into the unit disc, y down.
    t = np.linspace(0, 2 * np.pi, steps, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x / 17.0, -(y + 2.5) / 17.0], axis=1)


def _cross(arm: float = 0.32, reach: float = 0.92) -> np.ndarray:
    a, r = arm, reach
    return np.array([(-a, -r), (a, -r), (a, -a), (r, -a), (r, a), (a, a), (a, r), (-a, r), (-a, a), (-r, a), (-r, -a), (-a, -a)])


# Each shape as vertices (x, y) in the unit disc, y pointing down; the circle is drawn as an ellipse.
OUTLINES: dict[str, np.ndarray | None] = {
    "circle": None,
    "square": np.array([(-0.76, -0.76), (0.76, -0.76), (0.76, 0.76), (-0.76, 0.76)]),
    "triangle": np.array([(0.0, -0.92), (0.9, 0.72), (-0.9, 0.72)]),
    "star": _star(),
    "hexagon": _regular(6, 0.0) * np.array([0.98, 0.94]),
    "cross": _cross(),
    "heart": _heart(),
    "diamond": np.array([(0.0, -0.98), (0.72, 0.0), (0.0, 0.98), (-0.72, 0.0)]),
}


def shape_coverage(
    shape: str, x: float, y: float, diameter: float, angle: float, side: int, stroke: float = 0.0, supersample: int = 4
) -> np.ndarray:
    """Anti-aliased coverage float32 [side, side] in [0, 1] of one shape centred at pixel (x, y),
    `diameter` pixels across, turned `angle` degrees anticlockwise; `stroke` > 0 draws only its outline,
    that many pixels wide."""
    if shape not in OUTLINES:
        raise ValueError(f"the independent renderer cannot draw {shape!r}; it draws {sorted(OUTLINES)}")
    k = supersample
    canvas = Image.new("L", (side * k, side * k), 0)
    pen = ImageDraw.Draw(canvas)
    radius = diameter / 2 * k
    cx, cy = x * k, y * k
    width = max(1, round(stroke * k)) if stroke > 0 else 0
    outline = OUTLINES[shape]
    if outline is None:
        box = [cx - 0.92 * radius, cy - 0.92 * radius, cx + 0.92 * radius, cy + 0.92 * radius]
        if width:
            pen.ellipse(box, outline=255, width=width)
        else:
            pen.ellipse(box, fill=255)
    else:
        theta = np.deg2rad(angle)
        # anticlockwise on screen, where y points down
        turn = np.array([[np.cos(theta), np.sin(theta)], [-np.sin(theta), np.cos(theta)]])
        points = [(float(px), float(py)) for px, py in outline @ turn.T * radius + np.array([cx, cy])]
        if width:
            pen.line(points + points[:2], fill=255, width=width, joint="curve")
        else:
            pen.polygon(points, fill=255)
    return np.asarray(canvas.resize((side, side), Image.Resampling.BOX), dtype=np.float32) / 255.0


def _ramp(side: int, angle: float) -> np.ndarray:
    """A 0..1 ramp [side, side] across the image in direction `angle` (radians)."""
    grid = (np.arange(side) + 0.5) / side - 0.5
    u, v = np.meshgrid(grid, grid)
    along = u * np.cos(angle) + v * np.sin(angle)
    return (along - along.min()) / max(float(np.ptp(along)), 1e-6)


def _smooth_noise(side: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Noise in [-1, 1] that varies over about side / cells pixels: a coarse random grid, upsampled."""
    coarse = Image.fromarray(((rng.random((cells, cells)) * 255)).astype(np.uint8), mode="L")
    return np.asarray(coarse.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1.0


def background(kind: str, side: int, rng: np.random.Generator) -> np.ndarray:
    """A background float32 [side, side, 3] in 0..255 of one of the kinds:
    "world" (the world's dark grey, its brightness jitter), "tinted" (dark, a slight colour cast),
    "plain" (one grey-to-mid colour), "gradient" (a ramp between two such colours), "texture"
    (stripes, checks or blotches over a dark colour)."""
    def colour(low: float, high: float, tint: float) -> np.ndarray:
        return np.clip(rng.uniform(low, high) + rng.uniform(-tint, tint, 3), 0, 255)

    if kind == "world":
        flat = np.array([16.0, 16.0, 20.0]) + rng.integers(-6, 7)
    elif kind == "tinted":
        flat = colour(5, 45, 14)
    elif kind == "plain":
        flat = colour(0, 140, 25)
    elif kind == "gradient":
        ramp = _ramp(side, rng.uniform(0, 2 * np.pi))[..., None]  # [S, S] -> [S, S, 1]
        start, end = colour(0, 120, 25), colour(0, 120, 25)
        return (start + (end - start) * ramp).astype(np.float32)
    elif kind == "texture":
        base = colour(10, 70, 15)
        pattern = rng.integers(3)
        grid = np.arange(side) / side
        u, v = np.meshgrid(grid, grid)
        if pattern == 0:  # stripes at any angle, 3 to 8 across the image
            angle, count = rng.uniform(0, np.pi), rng.uniform(3, 8)
            wave = np.sin(2 * np.pi * count * (u * np.cos(angle) + v * np.sin(angle)))
        elif pattern == 1:  # a checkerboard of 4 to 8 squares a side
            count = rng.integers(4, 9)
            wave = np.where((np.floor(u * count) + np.floor(v * count)) % 2 == 0, 1.0, -1.0)
        else:
            wave = _smooth_noise(side, int(rng.integers(4, 9)), rng)
        amplitude = rng.uniform(12, 28) * rng.choice([-1, 1], 3) * rng.uniform(0.5, 1.0, 3)
        return np.clip(base + wave[..., None] * amplitude, 0, 255).astype(np.float32)
    else:
        raise ValueError(f"unknown background {kind!r}: choose world, tinted, plain, gradient or texture")
    return np.broadcast_to(flat.astype(np.float32), (side, side, 3)).copy()


def finish(canvas: np.ndarray, blur: float = 0.0, jpeg_quality: int | None = None) -> np.ndarray:
    """A float canvas [S, S, 3] -> uint8 [S, S, 3], blurred (Gaussian, radius in pixels) and/or
    passed through JPEG at `jpeg_quality`."""
    image = Image.fromarray(np.clip(np.rint(canvas), 0, 255).astype(np.uint8), mode="RGB")
    if blur > 0:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(blur)))
    if jpeg_quality is not None:
        image = jpeg_roundtrip(image, jpeg_quality)
    return np.asarray(image, dtype=np.uint8)
