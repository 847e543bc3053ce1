"""Anti-aliased masks of the shapes: each shape is an inside-test on coordinates (u, v) in [-1, 1],
v pointing down, drawn once per (shape, size) and then pasted wherever an object goes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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


UNIT_EXTENT = 1.25  # unit masks cover u, v in [-UNIT_EXTENT, UNIT_EXTENT]: every shape with room to spare


def unit_masks(shapes: Sequence[str], resolution: int = 96, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage of each shape on the square [-UNIT_EXTENT, UNIT_EXTENT]^2: float32 [K, R, R].

    The randomised world samples these (rotated, scaled, moved) instead of re-running the inside-tests.
    """
    unknown = [shape for shape in shapes if shape not in SHAPE_TESTS]
    if unknown:
        raise ValueError(f"unknown shapes {unknown}; known shapes: {sorted(SHAPE_TESTS)}")
    fine = resolution * supersample
    coords = ((np.arange(fine) + 0.5) / fine * 2 - 1) * UNIT_EXTENT
    u, v = np.meshgrid(coords, coords)
    inside = np.stack([SHAPE_TESTS[shape](u, v) for shape in shapes]).astype(np.float32)
    # [K, R*s, R*s] -> [K, R, s, R, s]: average each pixel's s x s sub-pixels
    return inside.reshape(len(shapes), resolution, supersample, resolution, supersample).mean(axis=(2, 4))
