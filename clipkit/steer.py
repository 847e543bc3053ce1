"""CLIP-guided image optimisation: change an image until a model agrees it matches a prompt.

Naive steering (raw pixels, one view, many steps) finds adversarial noise that only the steering
model believes. Three things make results that other judges recognise too:
- a parameterisation with a prior towards natural images: sigmoid pixels with a smoothness
  penalty, a decorrelated-colour Fourier spectrum (as in lucid), or soft strokes or filled shapes
  painted in pure torch;
- many augmented views per step (crops, cutouts, flips, noise, colour jitter, optionally small
  rotations and zoom-outs), so no single view's quirks can be exploited;
- a loss on normalised embeddings (cosine or spherical distance) to weighted prompts, negatives
  included.

`steer(model, prompts)` works with any model that has the clipkit interface (`encode_image`,
`encode_text`, `tokenizer`, `image_size`, `image_mean`, `image_std`): MiniCLIP or an open_clip
model from `clipkit.pretrained`. The end of the file holds judges for the shapes world: a prompt
parser, a pixel oracle, and a zero-shot judge that asks a second model.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.data.shapes import COLOURS, POSITIONS, SHAPES, SIZES, WHERE_PHRASES, with_articles
from clipkit.data.transforms import normalize_images, resize_images

PARAMETERISATIONS = ("pixels", "fourier", "strokes", "shapes")
LOSSES = ("cosine", "spherical")
LR_SCHEDULES = ("cosine", "constant")
# Adam step sizes that suit each parameterisation at 64 px (SteerConfig.lr=None picks these).
DEFAULT_LR = {"pixels": 0.05, "fourier": 0.03, "strokes": 0.02, "shapes": 0.05}
# Words that name a side: a horizontal flip swaps them, so flips are off for prompts holding them.
SIDE_WORDS = ("left", "right")


@dataclass
class SteerConfig:
    image_size: int = 64  # side of the image being optimised, in pixels (views are resized to the model's size)
    steps: int = 200  # optimisation steps
    parameterisation: str = "shapes"  # "pixels" (sigmoid logits), "fourier" (decorrelated spectrum), "strokes" or "shapes" (soft painted primitives)
    lr: float | None = None  # Adam learning rate; None takes DEFAULT_LR for the parameterisation
    lr_schedule: str = "cosine"  # "cosine": warm up, then decay to 10%; "constant": the same rate throughout
    warmup_steps: int = 10  # steps of linear warm-up before the cosine decay (ignored by "constant")
    augment: bool = True  # False: the model sees the one full image each step (the ablation)
    num_augmentations: int = 16  # augmented views per step, each a random crop with the effects below
    # crop side as a fraction of the image (above 1 zooms out); smaller crops would move objects
    # "on the left" to the centre and make "small" ones look "large"
    crop_scale: tuple[float, float] = (0.8, 1.0)
    rotation_degrees: float = 0.0  # views turn by up to this angle either way; keep it small, a square turned 45 degrees is a diamond
    cutout_probability: float = 0.5  # chance that a view has a rectangle blanked out, so no small region carries the match alone
    cutout_size: float = 0.25  # side of the cutout rectangle, as a fraction of the view
    flip: bool | None = None  # horizontal flips; None flips unless a prompt says "left" or "right" (a flip would swap them)
    noise_std: float = 0.02  # Gaussian pixel noise added to each view (images in [0, 1])
    colour_jitter: float = 0.1  # most each view's brightness and contrast move (fraction); hue stays, prompts name colours
    loss: str = "cosine"  # "cosine": 1 - cos; "spherical": squared great-circle distance (steeper far from the prompt)
    smoothness_weight: float = 0.05  # weight of the total-variation penalty on the image (a prior against pixel noise)
    num_strokes: int = 24  # strokes painted by the "strokes" parameterisation
    num_shapes: int = 3  # filled shapes painted by the "shapes" parameterisation
    shape_harmonics: int = 8  # harmonics of each shape's outline: more allow sharper points
    edge_softness: float = 1.0  # width of a stroke's or shape's soft edge, in pixels: softer edges pass gradient further
    fourier_decay: float = 1.0  # spectrum scaled by 1 / frequency ** decay: larger favours smoother images
    init_background: tuple[float, float, float] = (0.06, 0.06, 0.08)  # starting colour in [0, 1]: dark like the shapes world; try grey for photos
    seed: int = 0  # seeds the initial image and every augmentation
    frame_every: int = 10  # keep a frame for the grid and GIF every this many steps (the last step is always kept)

    def __post_init__(self):
        if self.parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {self.parameterisation!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        for name in ("image_size", "steps", "num_augmentations", "num_strokes", "num_shapes", "frame_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 2:
            raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 2, got {self.crop_scale}")

    @property
    def resolved_lr(self) -> float:
        return DEFAULT_LR[self.parameterisation] if self.lr is None else self.lr


# ---------------------------------------------------------------------------------------------
# Parameterisations: modules whose forward() renders an image [1, 3, H, W] in [0, 1].


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
    also has a colour and an opacity, so all of them get gradients. The background is learnt, or is
    `init_image` (kept fixed) when one is given: primitives then paint over a picture.
    """

    def __init__(self, config: SteerConfig, count: int, generator: torch.Generator, init_image: torch.Tensor | None):
        super().__init__()
        side = config.image_size
        self.colour_logits = nn.Parameter(0.1 * torch.randn(count, 3, generator=generator))
        self.opacity_logits = nn.Parameter(torch.zeros(count))
        background = torch.tensor(config.init_background).view(1, 3, 1, 1)  # [3] -> [1, 3, 1, 1]
        if init_image is None:
            self.background_logits = nn.Parameter(_logit(background))
        else:
            self.register_buffer("background_image", init_image.clone())
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
        opacity = torch.sigmoid(self.opacity_logits)[:, None, None]  # [N] -> [N, 1, 1]
        colours = torch.sigmoid(self.colour_logits)
        for alpha, colour in zip(opacity * self.coverage(), colours):
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


_PARAMETERISATION_CLASSES = {"pixels": PixelImage, "fourier": FourierImage, "strokes": StrokeImage, "shapes": ShapeImage}


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


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels of [B, C, H, W]: low for smooth images."""
    down = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    across = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return down + across


# ---------------------------------------------------------------------------------------------
# Augmented views


def side_named(prompts: Sequence[str]) -> bool:
    """True when a prompt names a side, which a horizontal flip would swap."""
    return any(re.search(rf"\b{word}\b", prompt.lower()) for prompt in prompts for word in SIDE_WORDS)


def augmented_views(image: torch.Tensor, config: SteerConfig, size: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """[1, 3, H, W] -> [K, 3, size, size]: random crops resized to `size`, then flips, cutouts,
    colour jitter and noise. Differentiable in `image`; randomness comes from `generator` (CPU)."""
    count, device = config.num_augmentations, image.device
    # Downsample once with antialiasing so that cropping with bilinear sampling does not alias.
    working = math.ceil(size / config.crop_scale[0])
    if image.shape[-1] > working:
        image = F.interpolate(image, size=(working, working), mode="bilinear", antialias=True, align_corners=False)
    low, high = config.crop_scale
    scale = low + (high - low) * torch.rand(count, generator=generator)
    # crop centres in [-1, 1] coordinates: a crop stays inside the image (a zoom-out keeps it all in view)
    centre = (torch.rand(count, 2, generator=generator) * 2 - 1) * (1 - scale).abs()[:, None]
    mirror = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(count)
    angle = (torch.rand(count, generator=generator) * 2 - 1) * math.radians(config.rotation_degrees)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.zeros(count, 2, 3)  # output -> input coordinates: rotate, scale, mirror, then shift
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos * mirror, -sin, sin * mirror, cos
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta.to(device), [count, 3, size, size], align_corners=False)
    views = F.grid_sample(image.expand(count, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False)

    if config.cutout_probability > 0:
        hole = max(1, round(config.cutout_size * size))
        corner = torch.randint(0, size - hole + 1, (count, 2), generator=generator)
        has_hole = torch.rand(count, generator=generator) < config.cutout_probability
        rows = torch.arange(size)[None, :, None]  # [1, S, 1]
        cols = torch.arange(size)[None, None, :]  # [1, 1, S]
        top, left = corner[:, 0, None, None], corner[:, 1, None, None]  # [K] -> [K, 1, 1]
        inside = (rows >= top) & (rows < top + hole) & (cols >= left) & (cols < left + hole)
        holes = (inside & has_hole[:, None, None]).float()[:, None].to(device)  # [K, S, S] -> [K, 1, S, S]
        # fill with each view's own mean colour: blank, without adding a colour of its own
        fill = views.mean(dim=(2, 3), keepdim=True).detach()
        views = torch.lerp(views, fill.expand_as(views), holes)
    if config.colour_jitter > 0:
        brightness = 1 + (torch.rand(count, 1, 1, 1, generator=generator) * 2 - 1) * config.colour_jitter
        contrast = 1 + (torch.rand(count, 1, 1, 1, generator=generator) * 2 - 1) * config.colour_jitter
        mean = views.mean(dim=(1, 2, 3), keepdim=True)
        views = (views - mean) * contrast.to(device) + mean * brightness.to(device)
    if config.noise_std > 0:
        views = views + config.noise_std * torch.randn(views.shape, generator=generator).to(device)
    return views.clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Losses: pure functions of normalised embeddings.


def cosine_distance(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """[K, D] x [P, D] unit vectors -> [K, P] of 1 - cos, in [0, 2]."""
    return 1 - image_features @ text_features.T


def spherical_distance(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """[K, D] x [P, D] unit vectors -> [K, P] of 2 * arcsin(|a - b| / 2) ** 2, half the squared angle,
    as CLIP-guided diffusion uses: its pull grows with the angle, where 1 - cos flattens out far away."""
    chord = (image_features[:, None] - text_features[None]).norm(dim=-1)  # [K, P]
    return 2 * torch.arcsin((chord / 2).clamp(max=1)) ** 2


_DISTANCES = {"cosine": cosine_distance, "spherical": spherical_distance}


def steering_loss(image_features: torch.Tensor, text_features: torch.Tensor, weights: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Weighted distance of every view [K, D] to every prompt [P, D], averaged over views.

    `weights` [P] are already normalised (see `prompt_weights`); negative ones push away."""
    if kind not in _DISTANCES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    distances = _DISTANCES[kind](F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1))
    return (distances * weights).sum(dim=1).mean()


# ---------------------------------------------------------------------------------------------
# Prompts: weights, and checks made before any optimisation.


def _as_weights(prompts, what: str) -> dict[str, float]:
    if prompts is None:
        return {}
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, Mapping):
        items = [(str(text), float(weight)) for text, weight in prompts.items()]
    else:
        items = [(text, 1.0) for text in prompts]
    for text, weight in items:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{what} holds an empty prompt ({text!r}); give each prompt some words, e.g. 'a red star'")
        if not math.isfinite(weight):
            raise ValueError(f"the weight of {what[:-1]} {text!r} is {weight}; give a finite number")
    return dict(items)


def prompt_weights(prompts, negative_prompts=None) -> dict[str, float]:
    """{prompt: weight} with weights normalised as `steer` uses them.

    `prompts` is a string, a list (weight 1 each) or a dict prompt -> weight (negative weights push
    away); `negative_prompts` likewise, its weights being how strongly to avoid each (1 each for a
    list). All weights are on one scale and divided by the sum of the `prompts` weights, so that
    the pull towards the prompts always totals 1. That sum must therefore be positive.
    """
    positive = _as_weights(prompts, "prompts")
    negative = _as_weights(negative_prompts, "negative_prompts")
    if not positive:
        raise ValueError("no prompt given: pass a prompt such as 'a red star' (a string, a list or a dict prompt -> weight)")
    bad = {text: weight for text, weight in negative.items() if weight <= 0}
    if bad:
        raise ValueError(f"negative_prompts weights say how strongly to avoid each and must be positive; got {bad}")
    total = sum(positive.values())
    if abs(total) < 1e-12:
        raise ValueError(
            f"the prompt weights {positive} sum to zero, so they cannot be normalised and pull nowhere in total; "
            "make the weights towards what you want outweigh the negative ones, or pass the unwanted prompts as negative_prompts"
        )
    if total < 0:
        raise ValueError(
            f"the prompt weights {positive} sum to {total:g}: the image would be pushed away from everything; "
            "make the positive weights larger, or pass the unwanted prompts as negative_prompts"
        )
    overlap = sorted(set(positive) & set(negative))
    if overlap:
        raise ValueError(f"{overlap} appear both as prompts and as negative prompts; keep each in one place")
    weights = {text: weight / total for text, weight in positive.items()}
    weights.update({text: -weight / total for text, weight in negative.items()})
    return weights


def check_prompt_words(tokenizer, prompts: Sequence[str]) -> None:
    """Word-level tokenizers map unknown words to <unk>, which would steer towards nothing in
    particular: refuse them, naming the unknown words and some the model does know."""
    unk = getattr(tokenizer, "unk_token_id", None)
    known_words = getattr(tokenizer, "words", None)
    if unk is None or known_words is None:
        return  # BPE tokenizers spell out any word
    split = getattr(tokenizer, "split", str.split)
    unknown = sorted({word for prompt in prompts for word in split(prompt) if tokenizer.encode(word) == [unk]})
    if not unknown:
        return
    # Frequent content words say more about the vocabulary than "a", "of" or punctuation.
    examples = [word for word in known_words if word.isalpha() and len(word) > 3][:12]
    hints = []
    for word in unknown:
        close = difflib.get_close_matches(word, known_words, n=3)
        if close:
            hints.append(f"{word!r}: did you mean {', '.join(close)}?")
    raise ValueError(
        f"the model's word-level tokenizer does not know {unknown}, which it would read as <unk>. "
        + (" ".join(hints) + " " if hints else "")
        + f"Use words it knows, e.g. {', '.join(examples)} ({len(known_words)} words in all)."
    )


# ---------------------------------------------------------------------------------------------
# The optimisation


@dataclass
class SteerStep:
    """What a progress callback receives after each step."""

    step: int  # 1-based number of the step just taken
    steps: int  # total steps planned
    loss: float  # the steering loss of this step (smoothness penalty excluded)
    image: torch.Tensor  # the current image, float [3, H, W] in [0, 1] on the CPU, detached


@dataclass
class SteerResult:
    image: torch.Tensor  # the final image, float [3, H, W] in [0, 1] on the CPU
    frames: list[torch.Tensor]  # snapshots every config.frame_every steps, float [3, H, W] each
    frame_steps: list[int]  # the step each frame was taken after (0: the starting image)
    losses: list[float]  # the steering loss at every step
    weights: dict[str, float]  # the normalised prompt weights steered with (negative: avoided)
    config: SteerConfig = field(default_factory=SteerConfig)  # the settings used

    def to_pil(self, image: torch.Tensor | None = None, scale: int = 1):
        from PIL import Image

        array = (self.image if image is None else image).clamp(0, 1).mul(255).round().byte()
        picture = Image.fromarray(array.permute(1, 2, 0).numpy())  # [3, H, W] -> [H, W, 3]
        return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture

    def save_grid(self, path: str | Path, ncols: int = 8, scale: int = 2, gap: int = 2) -> Path:
        """The frames side by side (rows of `ncols`), upscaled `scale` times, as one PNG."""
        from PIL import Image

        pictures = [self.to_pil(frame, scale) for frame in self.frames]
        side = pictures[0].width
        ncols = min(ncols, len(pictures))
        nrows = -(-len(pictures) // ncols)
        grid = Image.new("RGB", (ncols * (side + gap) - gap, nrows * (side + gap) - gap), (255, 255, 255))
        for index, picture in enumerate(pictures):
            grid.paste(picture, ((index % ncols) * (side + gap), (index // ncols) * (side + gap)))
        path = Path(path)
        grid.save(path)
        return path

    def save_gif(self, path: str | Path, scale: int = 4, frame_ms: int = 80, hold_last_ms: int = 1000) -> Path:
        """The optimisation as an animated GIF, looping, pausing on the final image."""
        pictures = [self.to_pil(frame, scale) for frame in self.frames]
        durations = [frame_ms] * (len(pictures) - 1) + [hold_last_ms]
        path = Path(path)
        pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
        return path


def _learning_rate_factor(config: SteerConfig) -> Callable[[int], float]:
    if config.lr_schedule == "constant":
        return lambda step: 1.0
    warmup = min(config.warmup_steps, config.steps - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, config.steps - warmup - 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def steer(
    model: nn.Module,
    prompts,
    negative_prompts=None,
    config: SteerConfig | None = None,
    callback: Callable[[SteerStep], bool | None] | None = None,
    init_image: torch.Tensor | None = None,
) -> SteerResult:
    """Optimise an image towards `prompts` (and away from `negative_prompts`) under `model`.

    Prompts are a string, a list, or a dict prompt -> weight (see `prompt_weights`). The model is
    frozen and in eval mode while it steers (its state is restored after). Each step renders the
    image, makes `config.num_augmentations` views at the model's image size (or one plain view
    with `augment=False`), normalises them with the model's statistics and takes an Adam step on
    the image parameters. `callback(SteerStep)` runs after every step; returning True stops early.
    """
    config = config or SteerConfig()
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("the model has no tokenizer; steering needs one to read the prompts")
    weights = prompt_weights(prompts, negative_prompts)
    texts = list(weights)
    check_prompt_words(model.tokenizer, texts)
    flip = (not side_named(texts)) if config.flip is None else config.flip

    device = _device_of(model)
    generator = torch.Generator().manual_seed(config.seed)
    image_param = build_parameterisation(config, generator, init_image).to(device)
    weight_tensor = torch.tensor([weights[text] for text in texts], device=device)
    was_training = model.training
    grad_flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        with torch.no_grad():
            text_features = model.encode_text(model.tokenizer(texts).to(device), normalize=True).float()
        frames, frame_steps, losses = _optimise(model, image_param, text_features, weight_tensor, config, flip, generator, callback)
    finally:
        model.train(was_training)
        for parameter, flag in zip(model.parameters(), grad_flags):
            parameter.requires_grad_(flag)
    return SteerResult(image=frames[-1], frames=frames, frame_steps=frame_steps, losses=losses, weights=weights, config=config)


@torch.enable_grad()  # steering works even when called under torch.no_grad()
def _optimise(model, image_param, text_features, weights, config: SteerConfig, flip: bool, generator, callback):
    """The loop of `steer`: returns (frames, frame_steps, losses)."""
    optimizer = torch.optim.Adam(image_param.parameters(), lr=config.resolved_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _learning_rate_factor(config))
    frames, frame_steps, losses = [image_param().detach().cpu()[0]], [0], []
    for step in range(1, config.steps + 1):
        image = image_param()
        if config.augment:
            views = augmented_views(image, config, model.image_size, flip, generator)
        else:
            views = resize_images(image, model.image_size)
        views = normalize_images(views, model.image_mean, model.image_std)
        image_features = model.encode_image(views, normalize=True).float()
        loss = steering_loss(image_features, text_features, weights, config.loss)
        total = loss + config.smoothness_weight * total_variation(image) if config.smoothness_weight else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        keep = step % config.frame_every == 0 or step == config.steps
        if not keep and callback is None:
            continue
        with torch.no_grad():
            current = image_param().cpu()[0]
        stop = callback is not None and bool(callback(SteerStep(step, config.steps, losses[-1], current)))
        if keep or stop:
            frames.append(current)
            frame_steps.append(step)
        if stop:
            break
    return frames, frame_steps, losses


# ---------------------------------------------------------------------------------------------
# Judges for the shapes world


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


def zero_shot_judge(model: nn.Module, image: torch.Tensor, prompt: str) -> dict[str, str | bool]:
    """Ask `model` (ideally not the one that steered) what `image` shows, one question per attribute
    the prompt states: which of the 64 colour-shape classes, then which size, then which position
    (the other attributes fixed to the prompt's). Returns each answer and `correct`: all match."""
    from clipkit.model import embed_images, embed_texts

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
