"""Turning a batch's layout into pixels, in torch, on whichever device the world lives on.

Both worlds draw from masks kept on the device:
- the grid world pastes one anti-aliased mask per (shape, size) at whole-pixel corners, exactly as
  the original numpy renderer did (`backend="numpy"` keeps that path as the reference: on the CPU the
  two agree bit for bit, elsewhere the noise comes from the device's own generator);
- the random world samples one high-resolution unit mask per shape through a per-object affine map
  (turn, scale, move) with `grid_sample` on a supersampled grid, then averages the sub-pixels, so any
  angle, size and place costs the same; outlines are the shape minus a shrunk copy of itself.
Pixel randomness (noise) comes from a generator on the device seeded from the layout's generator;
everything per object or per image was drawn in numpy beforehand, so scenes never depend on the device.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn.functional as F

from clipkit.data.shapes.masks import UNIT_EXTENT, shape_mask, unit_masks
from clipkit.data.shapes.variation import DARK_MAX
from clipkit.data.transforms import jpeg_images

_RENDER_CHUNK = 2048  # grid images drawn at once: bounds the float32 canvas at 64 px to ~100 MB
_RANDOM_SUBPIXELS = 2**22  # random world: sub-pixels sampled at once, which bounds its chunk's memory
_RANDOM_SUPERSAMPLE = 2  # sub-pixels per side in the random world: its unit masks are already smooth
_UNIT_RESOLUTION = 96  # unit mask side: finer than any object's sub-pixel grid at 64 px
_MIN_CONTRAST = 90.0  # a background colour nearer than this (RGB distance) to an object's is made dark
_OUTLINE_WIDTH = 0.15  # an outline's stroke, as a fraction of the diameter (at least one pixel)


class ShapesRenderer:
    """Draws `_Layout`s of one world: `render(layout, seed) -> uint8 [N, 3, S, S]` on `device`."""

    def __init__(self, config, shapes: tuple[str, ...], palette: np.ndarray, diameters: list[float],
                 device: str | torch.device = "cpu", backend: str = "torch"):
        if backend not in ("torch", "numpy"):
            raise ValueError(f"backend must be 'torch' or 'numpy', got {backend!r}")
        if backend == "numpy" and config.variation != "grid":
            raise ValueError("the numpy renderer draws the grid world only; use backend='torch'")
        self.config, self.shapes, self.backend = config, shapes, backend
        self.palette_np = palette.astype(np.float32)
        self.masks_np = {
            (shape_id, size_id): shape_mask(shape, diameter, config.supersample)
            for shape_id, shape in enumerate(shapes)
            for size_id, diameter in enumerate(diameters)
        }
        # How far each colour's shade may move: `shade` of half the way to its nearest other colour,
        # so every shade stays nearer its own palette colour than any other.
        distance = np.linalg.norm(self.palette_np[:, None] - self.palette_np[None], axis=-1)
        np.fill_diagonal(distance, np.inf)
        self.shade_radius = config.shade * distance.min(axis=1) / 2 if len(palette) > 1 else np.zeros(len(palette))
        self.to(device)

    def to(self, device: str | torch.device) -> "ShapesRenderer":
        """Keep the masks on `device` and draw there from now on."""
        self.device = torch.device(device)
        if self.backend == "numpy" and self.device.type != "cpu":
            raise ValueError("the numpy renderer draws on the CPU only; use backend='torch' for other devices")
        self.masks = {key: torch.from_numpy(mask).to(self.device) for key, mask in self.masks_np.items()}
        if self.config.variation == "random":
            unit = unit_masks(self.shapes, _UNIT_RESOLUTION)
            self.unit_masks = torch.from_numpy(unit)[:, None].to(self.device)  # [K, R, R] -> [K, 1, R, R]
        return self

    def render(self, layout, seed: int) -> torch.Tensor:
        generator = torch.Generator(device=self.device).manual_seed(seed)
        rnd = getattr(layout, "random", None)
        if rnd is None:
            return self._render_grid(layout, generator)
        if rnd.grid is None or not rnd.grid.any():
            return self._render_random(layout, generator)
        # `p_grid`'s share is the grid world's own drawing; only the rest is randomised
        side = self.config.image_size
        images = torch.empty((len(layout.pairs), 3, side, side), dtype=torch.uint8, device=self.device)
        for rows, draw in ((rnd.grid, self._render_grid), (~rnd.grid, self._render_random)):
            if rows.any():
                images[torch.from_numpy(np.flatnonzero(rows)).to(self.device)] = draw(_rows_of(layout, rows), generator)
        return images

    # -- the grid world ------------------------------------------------------------------------

    def _render_grid(self, layout, generator) -> torch.Tensor:
        cfg = self.config
        n, side, n_shapes = len(layout.pairs), cfg.image_size, len(self.shapes)
        images = torch.empty((n, 3, side, side), dtype=torch.uint8, device=self.device)
        for start in range(0, n, _RENDER_CHUNK):
            part = slice(start, min(n, start + _RENDER_CHUNK))
            background = torch.from_numpy(layout.background[part]).float().to(self.device)
            canvas = background[:, :, None, None].repeat(1, 1, side, side)  # [n, 3] -> [n, 3, S, S]
            for slot in (0, 1):
                pairs = layout.pairs[part, slot]
                alpha = self._paste_masks(
                    pairs % n_shapes, layout.sizes[part, slot], layout.corners[part, slot], present=pairs >= 0
                )
                colour = np.clip(self.palette_np[pairs // n_shapes] + layout.colour_offsets[part, slot], 0, 255)
                colour = torch.from_numpy(colour.astype(np.float32)).to(self.device)[:, :, None, None]  # [n, 3] -> [n, 3, 1, 1]
                alpha = alpha[:, None]  # [n, S, S] -> [n, 1, S, S]
                canvas.lerp_(colour.expand_as(canvas), alpha.expand_as(canvas))  # in place: no temporaries
            if cfg.noise_std > 0:
                noise = torch.randn(canvas.shape, generator=generator, device=self.device)
                canvas.add_(noise, alpha=cfg.noise_std)
            images[part] = canvas.round_().clamp_(0, 255).to(torch.uint8)
        return images

    def _paste_masks(self, shape_ids, size_ids, corners, present) -> torch.Tensor:
        """Coverage [n, S, S] of one object per image, by pasting each (shape, size) mask group at once."""
        side = self.config.image_size
        numpy = self.backend == "numpy"
        alpha = np.zeros((len(shape_ids), side, side), np.float32) if numpy else torch.zeros(
            (len(shape_ids), side, side), device=self.device)
        for (shape_id, size_id), mask in self.masks_np.items():
            index = np.flatnonzero(present & (shape_ids == shape_id) & (size_ids == size_id))
            if len(index) == 0:
                continue
            offsets = np.arange(mask.shape[0])
            rows = corners[index, 0, None] + offsets  # [k, B]
            cols = corners[index, 1, None] + offsets  # [k, B]
            where = (index[:, None, None], rows[:, :, None], cols[:, None, :])
            if numpy:
                alpha[where] = mask
            else:
                alpha[tuple(torch.from_numpy(w).to(self.device) for w in where)] = self.masks[shape_id, size_id]
        return torch.from_numpy(alpha) if numpy else alpha

    # -- the random world ----------------------------------------------------------------------

    def _render_random(self, layout, generator) -> torch.Tensor:
        cfg, rnd = self.config, layout.random
        n, side, n_shapes = len(layout.pairs), cfg.image_size, len(self.shapes)
        colour_ids = np.maximum(layout.pairs, 0) // n_shapes
        colours = self.palette_np[colour_ids] + rnd.shade_unit * self.shade_radius[colour_ids][..., None]
        colours = np.clip(colours, 0, 255).astype(np.float32)  # [N, 2, 3]
        backgrounds = _contrasting(rnd.backgrounds, colours, layout.pairs >= 0)
        to = lambda array: torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)  # noqa: E731
        images = torch.empty((n, 3, side, side), dtype=torch.uint8, device=self.device)
        chunk = max(1, _RANDOM_SUBPIXELS // (side * _RANDOM_SUPERSAMPLE) ** 2)
        ramp = (torch.arange(side, device=self.device) + 0.5) / side - 0.5
        cells = rnd.texture.shape[-1]
        # Linear interpolation as a matrix [S, cells]: a texture's rows and columns upsampled at once
        upsample = F.interpolate(torch.eye(cells, device=self.device)[:, None], size=side, mode="linear", align_corners=False)[:, 0].T
        for start in range(0, n, chunk):
            part = slice(start, min(n, start + chunk))
            gradient, bg = to(rnd.gradient[part]), to(backgrounds[part])
            # Fade position 0..1 along the gradient's direction: [n, S, S], flat where strength is 0
            fade = 0.5 + gradient[:, 0, None, None] * ramp[None, None, :] + gradient[:, 1, None, None] * ramp[None, :, None]
            fade = (fade.clamp(0, 1) * gradient[:, 2, None, None])[:, None]  # [n, S, S] -> [n, 1, S, S]
            canvas = bg[:, 0, :, None, None] + (bg[:, 1] - bg[:, 0])[:, :, None, None] * fade  # [n, 3, S, S]
            canvas += torch.einsum("ij,ncjk,lk->ncil", upsample, to(rnd.texture[part]), upsample)  # [n, 3, 4, 4] -> [n, 3, S, S]
            canvas += _pattern(to(rnd.pattern[part]), ramp + 0.5)[:, None] * to(rnd.pattern_amplitude[part])[:, :, None, None]
            for slot in (0, 1):
                rows = np.flatnonzero(layout.pairs[part, slot] >= 0)
                if len(rows) == 0:
                    continue
                index = start + rows
                alpha = self._coverage(layout.pairs[index, slot] % n_shapes, rnd.centres[index, slot],
                                       rnd.diameters[index, slot], rnd.angles[index, slot], rnd.outline[index, slot])
                colour = to(colours[index, slot])[:, :, None, None]  # [m, 3] -> [m, 3, 1, 1]
                colour, alpha = colour.expand(-1, -1, side, side), alpha[:, None].expand(-1, 3, -1, -1)  # [m, 3, S, S]
                if len(rows) == len(canvas):
                    canvas.lerp_(colour, alpha)
                else:
                    rows = torch.from_numpy(rows).to(self.device)
                    canvas[rows] = torch.lerp(canvas[rows], colour, alpha)
            blurred = np.flatnonzero(rnd.blur[part] > 0)
            if len(blurred):
                where = torch.from_numpy(blurred).to(self.device)
                canvas[where] = _blur(canvas[where], to(rnd.blur[part][blurred]))
            noise = torch.randn(canvas.shape, generator=generator, device=self.device)
            canvas += noise * to(rnd.noise[part])[:, None, None, None]
            images[part] = canvas.round_().clamp_(0, 255).to(torch.uint8)
        compressed = np.flatnonzero(rnd.jpeg_quality > 0)
        if len(compressed):  # JPEG is a CPU codec: those pictures go through PIL and come back
            where = torch.from_numpy(compressed).to(self.device)
            images[where] = jpeg_images(images[where], rnd.jpeg_quality[compressed].tolist())
        return images

    def _coverage(self, shape_ids, centres, diameters, angles, outline) -> torch.Tensor:
        """Anti-aliased coverage [m, S, S] of m objects, each turned, scaled and moved."""
        fine = self.config.image_size * _RANDOM_SUPERSAMPLE
        radius = diameters / 2
        alpha = self._sample_units(shape_ids, centres, radius, angles, fine)
        drawn = np.flatnonzero(outline)
        if len(drawn):
            stroke = np.maximum(_OUTLINE_WIDTH * diameters[drawn], 1.0)
            inner = self._sample_units(shape_ids[drawn], centres[drawn], np.maximum(radius[drawn] - stroke, 0.2 * radius[drawn]),
                                       angles[drawn], fine)
            where = torch.from_numpy(drawn).to(self.device)
            alpha[where] = (alpha[where] - inner).clamp_(0, 1)
        return F.avg_pool2d(alpha, _RANDOM_SUPERSAMPLE)[:, 0]  # [m, 1, fine, fine] -> [m, S, S]

    def _sample_units(self, shape_ids, centres, radius, angles, fine) -> torch.Tensor:
        """The unit masks of `shape_ids` seen through each object's affine map: [m, 1, fine, fine]."""
        side = self.config.image_size
        turn = np.deg2rad(angles)
        cos, sin = np.cos(turn), np.sin(turn)
        # affine_grid maps output coordinates in [-1, 1] (pixel p at 2p/S - 1) to the unit mask's
        # [-1, 1]: rotate (p - centre) by the angle, divide by the radius, then by UNIT_EXTENT.
        scale = side / (2 * radius * UNIT_EXTENT)
        shift_x, shift_y = side / 2 - centres[:, 0], side / 2 - centres[:, 1]
        theta = np.stack([
            np.stack([cos * scale, sin * scale, (cos * shift_x + sin * shift_y) / (radius * UNIT_EXTENT)], axis=1),
            np.stack([-sin * scale, cos * scale, (-sin * shift_x + cos * shift_y) / (radius * UNIT_EXTENT)], axis=1),
        ], axis=1)  # [m, 2, 3]
        theta = torch.from_numpy(theta.astype(np.float32)).to(self.device)
        steps = (torch.arange(fine, device=self.device) * 2 + 1) / fine - 1  # sub-pixel centres in [-1, 1]
        alpha = torch.empty((len(shape_ids), 1, fine, fine), device=self.device)
        for shape_id in np.unique(shape_ids):
            where = torch.from_numpy(np.flatnonzero(shape_ids == shape_id)).to(self.device)
            t = theta[where]
            # What F.affine_grid computes, as a sum of a column part and a row part (its batched
            # matmul over every sub-pixel is several times slower on a CPU)
            columns = (t[:, :, 0, None] * steps + t[:, :, 2, None]).transpose(1, 2)[:, None]  # [m, 2, fine] -> [m, 1, fine, 2]
            rows = (t[:, :, 1, None] * steps).transpose(1, 2)[:, :, None]  # [m, 2, fine] -> [m, fine, 1, 2]
            mask = self.unit_masks[shape_id : shape_id + 1].expand(len(where), -1, -1, -1)
            alpha[where] = F.grid_sample(mask, columns + rows, mode="bilinear", padding_mode="zeros", align_corners=False)
        return alpha


def _rows_of(layout, rows: np.ndarray):
    """The layout (and randomisation) of the pictures `rows` (bool [N]) of `layout`; the rows that
    `p_grid` draws the grid world's way are drawn as a grid layout, without randomisation."""
    def picked(record):
        return {f.name: getattr(record, f.name)[rows] for f in dataclasses.fields(record)
                if f.name != "random" and getattr(record, f.name) is not None}

    rnd = layout.random
    random = None if rnd.grid[rows].all() else dataclasses.replace(rnd, **picked(rnd))
    return dataclasses.replace(layout, random=random, **picked(layout))


def _contrasting(backgrounds: np.ndarray, colours: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Background colours [N, 2, 3], each made dark where it comes near an object's colour [N, 2, 3]."""
    distance = np.linalg.norm(backgrounds[:, :, None] - colours[:, None], axis=-1)  # [N, 2 backgrounds, 2 objects]
    near = ((distance < _MIN_CONTRAST) & present[:, None]).any(axis=2)
    return np.where(near[..., None], backgrounds * (DARK_MAX / 255), backgrounds)


def _pattern(pattern: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Stripes or checks [n, S, S] in [-1, 1] (0 where the kind is none) from `pattern` [n, 3] (kind,
    repeats, angle) at pixel-centre positions [S] in [0, 1]."""
    kind, repeats, angle = pattern[:, 0, None, None], pattern[:, 1, None, None], pattern[:, 2, None, None]
    x, y = position[None, None, :], position[None, :, None]
    stripes = torch.sin(2 * torch.pi * repeats * (x * torch.cos(angle) + y * torch.sin(angle)))
    checks = torch.sign(torch.sin(torch.pi * repeats * x) * torch.sin(torch.pi * repeats * y))
    return torch.where(kind == 1, stripes, torch.where(kind == 2, checks, torch.zeros_like(stripes)))


def _blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image [n, 3, S, S] blurred by its own Gaussian (5 taps, standard deviation `sigma` [n] pixels)."""
    n, channels, side, _ = images.shape
    offsets = torch.arange(-2, 3, device=images.device, dtype=images.dtype)
    kernel = torch.exp(-offsets**2 / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))  # [n, 5]
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)  # [n, 5] -> [n*C, 5]: one per channel
    flat = images.reshape(1, n * channels, side, side)  # [n, C, S, S] -> [1, n*C, S, S] for a grouped convolution
    flat = F.conv2d(F.pad(flat, (2, 2, 0, 0), mode="replicate"), kernel[:, None, None, :], groups=n * channels)
    flat = F.conv2d(F.pad(flat, (0, 0, 2, 2), mode="replicate"), kernel[:, None, :, None], groups=n * channels)
    return flat.reshape(n, channels, side, side)  # [1, n*C, S, S] -> [n, C, S, S]
