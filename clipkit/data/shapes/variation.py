"""Domain randomisation: everything the "random" world draws beyond the grid world's scene.

The grid world decides what each picture shows (pairs, size words, place words, relations); this
module decides how it is drawn, within what keeps every word true:
- a continuous size within ±`size_spread` of the size word's, so "small" and "large" never meet;
- a free place whose centre falls in the region its place word names (see `region_of`), and, for two
  objects, on the relation's side of the other, far enough along that axis that they never touch;
- a turn, a shade of the palette colour that stays nearer it than any other palette colour, an
  outline-only style, a background (dark tint or any colour, a gradient, a smooth texture, stripes
  or checks), blur, noise and JPEG compression;
- and, for a share of the pictures (`p_grid`), none of it: the grid world's own drawing, so that the
  original renderer stays one of the world's many (`drawn_on_grid`).
All of it is numbers per object or per image, drawn from the layout's numpy generator, so a scene is
the same on every device; the renderer (`clipkit.data.shapes.render`) turns them into pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

# Regions of the place words, as fractions of the side: "centre" is within CENTRE_HALF of the middle;
# otherwise the axis the centre is farther along names the side, at least SIDE_MIN from the middle.
CENTRE_HALF = 0.08
SIDE_MIN = 0.12
# Which axis (0: x, 1: y) and which way (-1 towards 0) each side word points.
_SIDES = {"left": (0, -1), "right": (0, 1), "top": (1, -1), "bottom": (1, 1)}
_TEXTURE_CELLS = 4  # a background texture is a 4 x 4 grid of values, smoothly upsampled
DARK_MAX = 70  # a dark tint has every channel in [0, DARK_MAX]


@dataclass
class Randomisation:
    """How each object and background of a batch is drawn in the random world (slot 1 unused for one object)."""

    centres: np.ndarray  # float [N, 2, 2], (x, y) of each object's centre in pixels
    diameters: np.ndarray  # float [N, 2], in pixels
    angles: np.ndarray  # float [N, 2], turn in degrees
    outline: np.ndarray  # bool [N, 2], drawn in outline only
    shade_unit: np.ndarray  # float [N, 2, 3], a point in the unit ball: the colour's shift, scaled per colour by the renderer
    backgrounds: np.ndarray  # float [N, 2, 3], first and second background colour (0-255)
    gradient: np.ndarray  # float [N, 3], (cos, sin) of the fade's direction and its strength (0: flat)
    texture: np.ndarray  # float [N, 3, 4, 4], a smooth texture's values (0-255 scale), upsampled to the image
    pattern: np.ndarray  # float [N, 3]: kind (0 none, 1 stripes, 2 checks), repeats across the image, angle (radians)
    pattern_amplitude: np.ndarray  # float [N, 3], the pattern's swing per channel (0-255 scale)
    blur: np.ndarray  # float [N], Gaussian blur's standard deviation in pixels
    noise: np.ndarray  # float [N], per-pixel noise's standard deviation (0-255 scale)
    jpeg_quality: np.ndarray  # int [N], the quality each picture is saved as a JPEG at; 0: not compressed
    grid: np.ndarray | None = None  # bool [N], drawn exactly as the grid world draws it (see `drawn_on_grid`); None: none


def region_of(x: float, y: float) -> str:
    """The place word of a centre at (x, y), as fractions of the side."""
    dx, dy = x - 0.5, y - 0.5
    if max(abs(dx), abs(dy)) <= CENTRE_HALF:
        return "centre"
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "top" if dy < 0 else "bottom"


def draw_randomisation(config, size_fractions: np.ndarray, positions: np.ndarray, position_names: tuple[str, ...],
                       two: np.ndarray, rng: np.random.Generator) -> Randomisation:
    """How to draw a batch whose objects have size fractions [N, 2] and place words `positions` [N, 2]
    (indices into `position_names`); `two` [N] marks two-object images. Every array is drawn whatever
    the scene, so the draws stay aligned."""
    n, side = len(size_fractions), config.image_size
    diameters = size_fractions * (1 + config.size_spread * rng.uniform(-1, 1, (n, 2)))  # fractions of the side
    reach = diameters / 2
    along, across = rng.uniform(0, 1, (n, 2)), rng.uniform(-1, 1, (n, 2))
    middle = rng.uniform(-CENTRE_HALF, CENTRE_HALF, (n, 2, 2))
    centres = 0.5 + middle
    for slot in (0, 1):
        for word, (axis, sign) in _SIDES.items():
            rows = positions[:, slot] == position_names.index(word)
            if not rows.any():
                continue
            r = reach[rows, slot]
            # Far enough out to name the side and, for two objects on opposite sides, not to touch
            # (distance along the axis >= the sum of the two radii); near enough to stay in the frame.
            low = np.maximum(r, SIDE_MIN)
            high = np.maximum(low, 0.5 - r)
            out = low + along[rows, slot] * (high - low)
            # Across the axis less than along it, so the region stays the word's.
            off = across[rows, slot] * np.minimum(0.85 * out, 0.5 - r)
            centres[rows, slot, axis] = 0.5 + sign * out
            centres[rows, slot, 1 - axis] = 0.5 + off
    angles = rng.uniform(-config.max_rotation, config.max_rotation, (n, 2))
    outline = rng.random((n, 2)) < config.p_outline
    direction = rng.normal(size=(n, 2, 3))
    radius = rng.random((n, 2, 1)) ** (1 / 3)  # uniform in the ball, not crowded at its centre
    shade_unit = direction / np.linalg.norm(direction, axis=-1, keepdims=True).clip(1e-9) * radius
    dark = rng.uniform(0, DARK_MAX, (n, 2, 3))
    anything = rng.uniform(0, 255, (n, 2, 3))
    backgrounds = np.where((rng.random(n) < config.p_any_background)[:, None, None], anything, dark)
    fade = rng.uniform(0, 2 * np.pi, n)
    strength = np.where(rng.random(n) < config.p_gradient, rng.uniform(0.5, 1.0, n), 0.0)
    gradient = np.stack([np.cos(fade), np.sin(fade), strength], axis=1)
    amplitude = rng.uniform(0, config.texture, (n, 1, 1, 1))
    texture = rng.uniform(-1, 1, (n, 3, _TEXTURE_CELLS, _TEXTURE_CELLS)) * amplitude
    kind = rng.integers(0, 3, n) * (rng.random(n) < config.p_pattern)
    pattern = np.stack([kind, rng.uniform(2, 8, n), rng.uniform(0, np.pi, n)], axis=1)
    pattern_amplitude = rng.uniform(-config.texture, config.texture, (n, 3))
    blur = rng.uniform(0, config.max_blur, n) * (rng.random(n) < 0.5)  # half the pictures sharp
    noise = rng.uniform(0, config.max_noise, n)
    # Drawn only where the world compresses, so worlds without JPEG keep their pictures draw for draw.
    jpeg_quality = np.zeros(n, dtype=np.int64)
    if config.p_jpeg > 0:
        quality = rng.integers(int(config.min_jpeg_quality), 96, n)
        jpeg_quality = np.where(rng.random(n) < config.p_jpeg, quality, 0)
    # The second slot of a one-object image is never drawn; give it the first slot's place anyway.
    centres = np.where(two[:, None, None], centres, centres[:, :1])
    return Randomisation(
        centres=centres * side, diameters=diameters * side, angles=angles, outline=outline, shade_unit=shade_unit,
        backgrounds=backgrounds, gradient=gradient, texture=texture, pattern=pattern,
        pattern_amplitude=pattern_amplitude, blur=blur, noise=noise, jpeg_quality=jpeg_quality,
    )


def drawn_on_grid(rnd: Randomisation, rows: np.ndarray, centres: np.ndarray, diameters: np.ndarray) -> Randomisation:
    """`rnd` with the pictures `rows` [N] (bool) drawn as the grid world draws them (`p_grid`; the
    renderer hands them to the grid's drawing): their objects at the grid's centres [N, 2, 2] and
    diameters [N, 2] (pixels), unturned and filled, so that scenes and captions say what is drawn."""
    def keep(grid_value, value: np.ndarray) -> np.ndarray:
        return np.where(rows.reshape((-1,) + (1,) * (value.ndim - 1)), grid_value, value)

    return replace(rnd, grid=rows, centres=keep(centres, rnd.centres), diameters=keep(diameters, rnd.diameters),
                   angles=keep(0.0, rnd.angles), outline=keep(False, rnd.outline), blur=keep(0.0, rnd.blur),
                   jpeg_quality=keep(0, rnd.jpeg_quality))
