"""What the model sees of the image each step: many augmented views, so that no single view's
quirks can be exploited (crops, cutouts, flips, noise, colour jitter, optionally small rotations
and zoom-outs), or the one plain image for the ablation.
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import torch
import torch.nn.functional as F

from clipkit.interface import CLIPBase
from clipkit.steer.config import SIDE_WORDS, SteerConfig


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


def model_views(image: torch.Tensor, model: CLIPBase, config: SteerConfig, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """[1, 3, H, W] -> what the model sees each step: augmented views at its input size (or the one
    image, resized, when config.augment is off), normalised as the model expects."""
    views = augmented_views(image, config, model.image_size, flip, generator) if config.augment else image
    return model.to_model_input(views)
