"""What steering minimises, as pure functions: distances of normalised embeddings to weighted
prompts (negatives push away), a contrastive loss that tells the prompt apart from its
alternatives, the smoothness prior, and the prompt weights with their checks.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F

from clipkit.steer.config import LOSSES


def cosine_distance(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """[K, D] x [P, D] unit vectors -> [K, P] of 1 - cos, in [0, 2]."""
    return 1 - image_features @ text_features.T


def spherical_distance(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """[K, D] x [P, D] unit vectors -> [K, P] of 2 * arcsin(|a - b| / 2) ** 2, half the squared angle,
    as CLIP-guided diffusion uses: its pull grows with the angle, where 1 - cos flattens out far away."""
    chord = (image_features[:, None] - text_features[None]).norm(dim=-1)  # [K, P]
    return 2 * torch.arcsin((chord / 2).clamp(max=1)) ** 2


_DISTANCES = {"cosine": cosine_distance, "spherical": spherical_distance}


def steering_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, weights: torch.Tensor, kind: str = "cosine", logit_scale: float = 100.0
) -> torch.Tensor:
    """Weighted distance of every view [K, D] to every prompt [P, D], averaged over views.

    `weights` [P] are already normalised (see `prompt_weights`); negative ones push away. With
    kind="contrastive" the loss is instead the cross-entropy of the positive prompts (weighted)
    under a softmax over all prompts at `logit_scale` (the model's `logit_scale_exp()`): negative
    prompts are the alternatives the image must be told apart from, not directions to flee."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    image_features, text_features = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    if kind == "contrastive":
        if not bool((weights < 0).any()):
            raise ValueError("the contrastive loss needs negative prompts, the alternatives to tell the image apart from "
                             "(e.g. shapes_contrasts(prompt)); pass negative_prompts=... or use loss='cosine'")
        log_probs = (logit_scale * image_features @ text_features.T).log_softmax(dim=-1)  # [K, P]
        return -(log_probs * weights.clamp(min=0)).sum(dim=1).mean()
    return (_DISTANCES[kind](image_features, text_features) * weights).sum(dim=1).mean()


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels of [B, C, H, W]: low for smooth images."""
    down = (images[..., 1:, :] - images[..., :-1, :]).abs().mean()
    across = (images[..., :, 1:] - images[..., :, :-1]).abs().mean()
    return down + across


# ---------------------------------------------------------------------------------------------
# Prompts: weights, checked before any optimisation.


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
