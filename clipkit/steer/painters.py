"""What steering optimises: an image described by parameters, each description a prior.

Every painter is a module whose forward() renders an image [1, 3, H, W] in [0, 1] from its
parameters; `clipkit.steer.loop` takes Adam steps on them. From freest to most constrained:
- pixels: sigmoid logits, with a total-variation penalty against pixel noise;
- fourier: a spectrum scaled by 1/frequency in a decorrelated colour basis (as in lucid);
- strokes and shapes: soft primitives painted in order over a background, in pure torch (the
  idea of CLIPDraw, without diffvg): segments, or filled outlines whose radius varies with angle;
- stamps: the shapes world's own masks, stamped at a learnt place, size and colour, the kind of
  shape chosen by search since no gradient can choose it.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.data.shapes import COLOURS, POSITIONS, SHAPES, SIZES, shape_mask
from clipkit.data.transforms import resize_images
from clipkit.steer.config import SteerConfig

# Smallest and largest diameter of a stamp, as fractions of the side: around the shapes world's SIZES.
STAMP_DIAMETERS = (0.2, 0.5)


def _logit(x: torch.Tensor) -> torch.Tensor:
    return torch.logit(x.clamp(1e-3, 1 - 1e-3))


class PixelImage(nn.Module):
    """Every pixel free, through a sigmoid so values stay in [0, 1]; needs the smoothness prior."""

    def __init__(self, config: SteerConfig, generator: torch.Generator, init_image: torch.Tensor | None = None):
        super().__init__()
        side = config.image_size
        if init_image is None:
            start = torch.tensor(config.init_background).view(1, 3, 1, 1)  # [3] -> [1, 3, 1, 1]
            logits = _logit(start).expand(1, 3, side, side) + 0.1 * torch.randn(1, 3, side, side, generator=generator)
        else:
            logits = _logit(init_image)
        self.logits = nn.Parameter(logits.clone())

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


# Square root of ImageNet's colour correlation (lucid's color_correlation_svd_sqrt): optimising in
# this basis moves luminance and colour apart, so a step does not drag all channels together.
_COLOUR_CORRELATION_SQRT = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOUR_MIX = _COLOUR_CORRELATION_SQRT / _COLOUR_CORRELATION_SQRT.norm(dim=0).max()


class FourierImage(nn.Module):
    """A spectrum scaled by 1 / frequency, in decorrelated colour: low frequencies move first, so
    images start smooth and gain detail only where the loss asks for it (lucid's image param)."""

    def __init__(self, config: SteerConfig, generator: torch.Generator, init_image: torch.Tensor | None = None):
        super().__init__()
        side = config.image_size
        frequencies = torch.sqrt(torch.fft.fftfreq(side)[:, None] ** 2 + torch.fft.rfftfreq(side)[None, :] ** 2)
        self.register_buffer("scale", 1.0 / frequencies.clamp(min=1.0 / side) ** config.fourier_decay)
        bias = _logit(torch.tensor(config.init_background))
        self.register_buffer("bias", bias.view(1, 3, 1, 1))  # [3] -> [1, 3, 1, 1]
        if init_image is None:
            spectrum = 0.01 * torch.randn(1, 3, side, side // 2 + 1, 2, generator=generator)
        else:
            spectrum = torch.view_as_real(self._image_to_spectrum(init_image))
        self.spectrum = nn.Parameter(spectrum)

    def _image_to_spectrum(self, image: torch.Tensor) -> torch.Tensor:
        """The exact inverse of forward(): start steering from a given image."""
        decorrelated = _logit(image) - self.bias
        mixed = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(_COLOUR_MIX), decorrelated)
        return torch.fft.rfft2(mixed * 4.0, norm="ortho") / self.scale

    def forward(self) -> torch.Tensor:
        side = self.scale.shape[0]
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        # lucid divides by 4 so that the initial image has a small spread around the bias
        mixed = torch.fft.irfft2(spectrum, s=(side, side), norm="ortho") / 4.0
        colours = torch.einsum("ij,bjhw->bihw", _COLOUR_MIX.to(mixed.device), mixed)
        return torch.sigmoid(colours + self.bias)


class PaintedImage(nn.Module):
    """Soft primitives composited in order over a background: what strokes and shapes share.

    Subclasses define `coverage()`, each primitive's soft mask [N, H, W] in [0, 1]; every primitive
    also has a colour and, unless `opaque`, an opacity, so all of them get gradients. The background
    is learnt, or is `init_image` (kept fixed) when one is given: primitives then paint over a
    picture. With `learn_canvas=False` the background stays `config.init_background`.
    """

    def __init__(self, config: SteerConfig, count: int, generator: torch.Generator, init_image: torch.Tensor | None,
                 learn_canvas: bool = True, opaque: bool = False):
        super().__init__()
        side = config.image_size
        self.colour_logits = nn.Parameter(0.1 * torch.randn(count, 3, generator=generator))
        if not opaque:
            self.opacity_logits = nn.Parameter(torch.zeros(count))
        background = torch.tensor(config.init_background).view(1, 3, 1, 1)  # [3] -> [1, 3, 1, 1]
        if init_image is None and learn_canvas:
            self.background_logits = nn.Parameter(_logit(background))
        else:
            canvas = background.expand(1, 3, side, side) if init_image is None else init_image
            self.register_buffer("background_image", canvas.clone())
        self.softness = config.edge_softness / side
        self.register_buffer("xs", (torch.arange(side) + 0.5) / side)  # pixel centres, as fractions of the side
        self.register_buffer("ys", (torch.arange(side) + 0.5) / side)

    def coverage(self) -> torch.Tensor:
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        if hasattr(self, "background_image"):
            canvas = self.background_image
        else:
            canvas = torch.sigmoid(self.background_logits).expand(1, 3, len(self.ys), len(self.xs))
        alpha = self.coverage()
        if hasattr(self, "opacity_logits"):
            alpha = torch.sigmoid(self.opacity_logits)[:, None, None] * alpha  # opacity [N] -> [N, 1, 1]
        colours = torch.sigmoid(self.colour_logits)
        for alpha, colour in zip(alpha, colours):
            canvas = torch.lerp(canvas, colour.view(1, 3, 1, 1), alpha)  # colour [3] -> [1, 3, 1, 1]
        return canvas


class StrokeImage(PaintedImage):
    """Soft strokes (capsules: a segment with a radius), as in CLIPDraw but without diffvg.

    A stroke covers sigmoid((radius - distance to its segment) / softness) of each pixel. A
    zero-length stroke is a disc; a few strokes make crosses, stars or squares.
    """

    def __init__(self, config: SteerConfig, generator: torch.Generator, init_image: torch.Tensor | None = None):
        count = config.num_strokes
        super().__init__(config, count, generator, init_image)
        centres = 0.15 + 0.7 * torch.rand(count, 1, 2, generator=generator)
        directions = (torch.rand(count, 1, 2, generator=generator) - 0.5) * 0.1
        self.ends = nn.Parameter(torch.cat([centres - directions, centres + directions], dim=1))  # [N, 2 ends, (x, y)]
        self.width_logits = nn.Parameter(torch.full((count,), -2.0) + 0.3 * torch.randn(count, generator=generator))

    def coverage(self) -> torch.Tensor:
        # x and y kept apart ([N, 1, W] and [N, H, 1]) and broadcast only when combined: ten times
        # cheaper than [N, H, W, 2] tensors, and this runs forward and backward every step.
        x0, y0 = self.ends[:, 0, 0, None, None], self.ends[:, 0, 1, None, None]  # [N] -> [N, 1, 1]
        dx, dy = self.ends[:, 1, 0, None, None] - x0, self.ends[:, 1, 1, None, None] - y0
        to_x, to_y = self.xs[None, None, :] - x0, self.ys[None, :, None] - y0  # [N, 1, W], [N, H, 1]
        along = ((to_x * dx + to_y * dy) / (dx**2 + dy**2).clamp(min=1e-8)).clamp(0, 1)  # [N, H, W]
        distance = torch.sqrt((to_x - along * dx) ** 2 + (to_y - along * dy) ** 2 + 1e-12)
        radius = 0.25 * torch.sigmoid(self.width_logits)[:, None, None]  # [N] -> [N, 1, 1]
        return torch.sigmoid((radius - distance) / self.softness)


class ShapeImage(PaintedImage):
    """Soft filled shapes, each a star-convex outline: its radius at angle t is
    r(t) = r0 * exp(sum_k a_k cos(k t) + b_k sin(k t)). No harmonics is a disc; the 2nd stretches it,
    the 3rd to 6th make triangles, squares, stars and hexagons, so one primitive can take any shape
    of the shapes world, and gradients reach its outline through the soft edge.
    """

    def __init__(self, config: SteerConfig, generator: torch.Generator, init_image: torch.Tensor | None = None):
        count = config.num_shapes
        super().__init__(config, count, generator, init_image)
        # Centres live in [0.15, 0.85] and radii in [0.04, 0.3] of the side (through sigmoids): a shape
        # cannot slide off the canvas and be judged by the sliver that is left, nor fill the frame.
        self.centre_logits = nn.Parameter(0.5 * torch.randn(count, 2, generator=generator))  # [N, (x, y)]
        self.radius_logits = nn.Parameter(torch.full((count,), -0.5))
        self.harmonics = nn.Parameter(0.02 * torch.randn(count, config.shape_harmonics, 2, generator=generator))  # [N, K, (a, b)]
        self.register_buffer("orders", torch.arange(1, config.shape_harmonics + 1, dtype=torch.float32))

    def coverage(self) -> torch.Tensor:
        centres = 0.15 + 0.7 * torch.sigmoid(self.centre_logits)
        to_x = self.xs[None, None, :] - centres[:, 0, None, None]  # [N, 1, W]
        to_y = self.ys[None, :, None] - centres[:, 1, None, None]  # [N, H, 1]
        distance = torch.sqrt(to_x**2 + to_y**2 + 1e-12)  # [N, H, W]
        angle = torch.atan2(to_y, to_x + 1e-9)[..., None] * self.orders  # [N, H, W, K]
        # Harmonic k is scaled by 1/k (as the Fourier image scales by 1/frequency): outlines start
        # smooth and only grow points where the loss keeps asking for them.
        scaled = self.harmonics / self.orders[:, None]  # [N, K, 2] / [K, 1]
        a, b = scaled[:, None, None, :, 0], scaled[:, None, None, :, 1]  # [N, K] -> [N, 1, 1, K]
        base = 0.04 + 0.26 * torch.sigmoid(self.radius_logits)[:, None, None]  # [N] -> [N, 1, 1]
        radius = base * torch.exp((a * torch.cos(angle) + b * torch.sin(angle)).sum(-1))
        return torch.sigmoid((radius - distance) / self.softness)


class StampImage(PaintedImage):
    """The shapes world's own shapes, stamped opaque on its dark background at a learnt position,
    size and colour: a painter that cannot draw an outline the world never shows, so it cannot
    paint an adversarial one either.

    Each stamp is one canonical mask (`clipkit.data.shapes.shape_mask`) resampled (bilinear) at its
    centre and diameter, filled with one of the world's palette colours, so position and size get
    gradients through the anti-aliased edge. Which shape and which colour are discrete choices that
    gradients cannot make: `steer` makes them by exhaustive search (`search`) every
    `SteerConfig.search_every` steps, so the image is always one real shape in a real colour, and the
    final image is exactly what was optimised. The same search tries other places and sizes too,
    since a small object's place gets gradient only from its edge and would otherwise stay put.
    """

    def __init__(self, config: SteerConfig, generator: torch.Generator, init_image: torch.Tensor | None = None):
        count = config.num_stamps
        super().__init__(config, count, generator, init_image, learn_canvas=False, opaque=True)
        self.centre_logits = nn.Parameter(0.1 * torch.randn(count, 2, generator=generator))  # [N, (x, y)]
        self.diameter_logits = nn.Parameter(torch.zeros(count))
        self.register_buffer("shape_index", torch.randint(len(SHAPES), (count,), generator=generator))
        # Canonical masks drawn at twice the largest diameter in pixels, so resampling only shrinks them.
        canonical = 2 * STAMP_DIAMETERS[1] * config.image_size
        masks = [torch.from_numpy(shape_mask(shape, canonical)) for shape in SHAPES]
        self.register_buffer("masks", torch.stack(masks)[:, None])  # [S, B, B] -> [S, 1, B, B]
        self.mask_reach = masks[0].shape[-1] / canonical  # the mask box's side, in diameters
        # Colours are the world's palette, a discrete choice like the shape: not learnt, searched.
        self.register_buffer("palette", _logit(torch.tensor(list(COLOURS.values())) / 255))  # [colours, 3] logits
        del self.colour_logits
        self.register_buffer("colour_logits", self.palette[torch.randint(len(COLOURS), (count,), generator=generator)])

    def centres(self) -> torch.Tensor:
        return 0.15 + 0.7 * torch.sigmoid(self.centre_logits)  # [N, (x, y)] as fractions of the side

    def diameters(self) -> torch.Tensor:
        low, high = STAMP_DIAMETERS
        return low + (high - low) * torch.sigmoid(self.diameter_logits)  # [N], fractions of the side

    @staticmethod
    def centre_logits_for(centres: torch.Tensor) -> torch.Tensor:
        """The inverse of `centres`: fractions of the side in (0.15, 0.85) -> centre logits."""
        return _logit((centres - 0.15) / 0.7)

    @staticmethod
    def diameter_logits_for(diameters: torch.Tensor) -> torch.Tensor:
        """The inverse of `diameters`: fractions of the side within STAMP_DIAMETERS -> diameter logits."""
        low, high = STAMP_DIAMETERS
        return _logit((diameters - low) / (high - low))

    def shapes(self) -> list[str]:
        return [SHAPES[index] for index in self.shape_index.tolist()]

    def coverage(self) -> torch.Tensor:
        count, side = len(self.shape_index), len(self.xs)
        # affine_grid maps output coordinates o in [-1, 1] (pixel x = (o + 1) / 2 of the side) to mask
        # coordinates g in [-1, 1] across the mask box: g = (x - centre) / (diameter * reach / 2).
        zoom = 2 / (self.diameters() * self.mask_reach)  # [N]
        theta = torch.zeros(count, 2, 3, device=zoom.device)
        theta[:, 0, 0] = theta[:, 1, 1] = zoom / 2
        theta[:, :, 2] = (0.5 - self.centres()) * zoom[:, None]
        grid = F.affine_grid(theta, [count, 1, side, side], align_corners=False)  # [N, H, W, 2]
        sampled = F.grid_sample(self.masks[self.shape_index], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return sampled[:, 0]  # [N, 1, H, W] -> [N, H, W]

    @torch.no_grad()
    def _candidates(self, stamp: int, buffer: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """[C, 3, H, W]: the image with `buffer[stamp]` set to each of `values` in turn, all else kept."""
        kept = buffer[stamp].clone()
        candidates = []
        for value in values:
            buffer[stamp] = value
            candidates.append(self()[0])
        buffer[stamp] = kept
        return torch.stack(candidates)

    @torch.no_grad()
    def search(self, losses_of: Callable[[torch.Tensor], torch.Tensor], position_step: float,
               joint_losses_of: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Coordinate descent on what gradients cannot reach or reach badly: each stamp in turn takes
        the palette colour, then the shape and size together (its own size, small or large), then
        the place (its own, one of the 8 around it `position_step` away, or one of the world's five)
        whose image `losses_of` ([C, 3, H, W] -> [C] steering losses) scores lowest. Colour and shape
        are discrete, and a small object's place gets gradient only from its edge; gradient steps
        refine place and size in between.

        One attribute at a time can stall: a small green triangle may beat every other colour of
        triangle and every other shape in green, while a large yellow star beats them all. Given
        `joint_losses_of` (a cheaper scorer, e.g. one plain view per image), each stamp first tries
        every colour, shape, size and place of the world together (8 x 8 x 2 x 5 = 640 stamps)."""
        device = self.centre_logits.device
        shapes = torch.arange(len(SHAPES), device=device)
        offsets = position_step * torch.tensor([-1.0, 0.0, 1.0], device=device)
        moves = torch.cartesian_prod(offsets, offsets)  # [9, (dx, dy)], staying put among them
        world_places = torch.tensor(list(POSITIONS.values()), device=device)  # [5, (x, y)]
        world_sizes = torch.tensor(list(SIZES.values()), device=device)  # [2] diameters
        for stamp in range(len(self.shape_index)):
            if joint_losses_of is not None:
                self._joint_search(stamp, joint_losses_of, world_places, world_sizes)
            self.colour_logits[stamp] = self.palette[int(losses_of(self._candidates(stamp, self.colour_logits, self.palette)).argmin())]
            # shape and size together: which shape fits best depends on how large it is drawn
            sizes = self.diameter_logits_for(torch.cat([self.diameters()[stamp, None], world_sizes]))  # own, small, large
            pairs = torch.cartesian_prod(shapes, torch.arange(len(sizes), device=device))  # [S * 3, (shape, size)]
            candidates = []
            for shape, size in pairs.tolist():
                self.shape_index[stamp], self.diameter_logits[stamp] = shape, sizes[size]
                candidates.append(self()[0])
            shape, size = pairs[int(losses_of(torch.stack(candidates)).argmin())].tolist()
            self.shape_index[stamp], self.diameter_logits[stamp] = shape, sizes[size]
            if position_step > 0:
                # nearby places, and the world's own five: "at the top" may be far from where it started
                places = torch.cat([self.centres()[stamp] + moves, world_places])
                places = self.centre_logits_for(places)
                self.centre_logits[stamp] = places[int(losses_of(self._candidates(stamp, self.centre_logits.data, places)).argmin())]

    @torch.no_grad()
    def _joint_search(self, stamp: int, losses_of, places: torch.Tensor, sizes: torch.Tensor, chunk: int = 128) -> None:
        """Set stamp `stamp` to the (colour, shape, size, place) of the world whose image scores lowest;
        `places` [P, (x, y)] and `sizes` [S] are fractions of the side."""
        place_logits, size_logits = self.centre_logits_for(places), self.diameter_logits_for(sizes)
        grid = torch.cartesian_prod(*(torch.arange(n) for n in (len(self.palette), len(SHAPES), len(sizes), len(places))))

        def set_to(combination: list[int]) -> None:
            colour, shape, size, place = combination
            self.colour_logits[stamp], self.shape_index[stamp] = self.palette[colour], shape
            self.diameter_logits[stamp], self.centre_logits[stamp] = size_logits[size], place_logits[place]

        scores = []
        for start in range(0, len(grid), chunk):  # [C, 4] combinations scored a chunk at a time, to bound memory
            candidates = []
            for combination in grid[start:start + chunk].tolist():
                set_to(combination)
                candidates.append(self()[0])
            scores.append(losses_of(torch.stack(candidates)))
        set_to(grid[int(torch.cat(scores).argmin())].tolist())

_PARAMETERISATION_CLASSES = {"pixels": PixelImage, "fourier": FourierImage, "strokes": StrokeImage, "shapes": ShapeImage, "stamps": StampImage}


def build_parameterisation(
    config: SteerConfig, generator: torch.Generator | None = None, init_image: torch.Tensor | None = None
) -> nn.Module:
    """The module config.parameterisation names; init_image (float [3, H, W] in [0, 1]) is where
    pixels and fourier start from, and what strokes and shapes paint over."""
    generator = generator or torch.Generator().manual_seed(config.seed)
    if init_image is not None:
        if not init_image.is_floating_point() or init_image.ndim != 3 or init_image.shape[0] != 3:
            raise ValueError(f"init_image must be a float [3, H, W] in [0, 1], got {init_image.dtype} {tuple(init_image.shape)}")
        batch = init_image.detach().float().cpu()[None]  # [3, H, W] -> [1, 3, H, W]
        init_image = resize_images(batch, config.image_size)
    return _PARAMETERISATION_CLASSES[config.parameterisation](config, generator, init_image)
