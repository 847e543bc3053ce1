"""Notebook 04's exercise: CLIP's symmetric contrastive loss, from features and the stored log scale."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clipkit.exercises.core import check, norm_range
from clipkit.exercises.spec import Case, Exercise, Mistake, Output, register

NOTEBOOK = "04_contrastive_loss"


def clip_loss_by_hand(image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor) -> torch.Tensor:
    image_features, text_features = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    logits = logit_scale.exp() * image_features @ text_features.T  # [B images, B captions]
    image_to_text = -torch.log_softmax(logits, dim=1).diagonal().mean()  # each image picks its caption
    text_to_image = -torch.log_softmax(logits, dim=0).diagonal().mean()  # each caption picks its image
    return (image_to_text + text_to_image) / 2


def _symmetric(logits: torch.Tensor) -> torch.Tensor:
    targets = torch.arange(len(logits))
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def _cosines(image_features, text_features):
    return F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T


def _no_exp(image_features, text_features, logit_scale):
    return _symmetric(logit_scale * _cosines(image_features, text_features))


def _no_scale(image_features, text_features, logit_scale):
    return _symmetric(_cosines(image_features, text_features))


def _one_direction(image_features, text_features, logit_scale):
    logits = logit_scale.exp() * _cosines(image_features, text_features)
    return F.cross_entropy(logits, torch.arange(len(logits)))


def _not_normalised(image_features, text_features, logit_scale):
    return _symmetric(logit_scale.exp() * image_features @ text_features.T)


def _whole_matrix(image_features, text_features, logit_scale):
    logits = logit_scale.exp() * _cosines(image_features, text_features)
    return -(torch.log_softmax(logits, dim=1).mean() + torch.log_softmax(logits, dim=0).mean()) / 2


def _targets_all_zero(image_features, text_features, logit_scale):
    logits = logit_scale.exp() * _cosines(image_features, text_features)
    zeros = torch.zeros(len(logits), dtype=torch.long)
    return (F.cross_entropy(logits, zeros) + F.cross_entropy(logits.T, zeros)) / 2


def _sum_of_directions(image_features, text_features, logit_scale):
    logits = logit_scale.exp() * _cosines(image_features, text_features)
    return 2 * _symmetric(logits)


def _cases() -> list[Case]:
    generator = torch.Generator().manual_seed(5)
    cases = []
    for batch, dim, scale in ((5, 8, 1 / 0.07), (3, 16, 50.0)):
        # lengths far from 1, so forgetting to normalise shows
        images = 3 * torch.randn(batch, dim, generator=generator)
        texts = 0.5 * torch.randn(batch, dim, generator=generator) + 0.5 * images / 3
        cases.append(Case(
            f"{batch} unnormalised pairs of width {dim} with logit_scale = ln({scale:.3g})",
            {"image_features": images, "text_features": texts, "logit_scale": torch.tensor(math.log(scale))},
        ))
    return cases


def _cosine_facts(case: Case) -> dict:
    inputs = case.inputs
    return {
        "largest": float(_cosines(inputs["image_features"], inputs["text_features"]).max()),
        "stored": float(inputs["logit_scale"]),
        "scale": float(inputs["logit_scale"].exp()),
    }


def _length_facts(case: Case) -> dict:
    return norm_range(case.inputs["image_features"])


CLIP_LOSS_BY_HAND = register(Exercise(
    notebook=NOTEBOOK,
    reference=clip_loss_by_hand,
    cases=_cases,
    returns=(Output("loss", "[]"),),
    differentiable=("image_features", "text_features", "logit_scale"),  # training learns the scale too
    mistakes=[
        Mistake("no_exp", _no_exp,
                "logits must be scaled by exp(logit_scale): you multiplied by logit_scale itself ({stored:.2f}, the "
                "stored log) instead of its exponential ({scale:.1f}). CLIP keeps the log so the scale stays positive.",
                _cosine_facts),
        Mistake("no_scale", _no_scale,
                "logits must be scaled by exp(logit_scale): yours are bare cosines, whose largest value is "
                "{largest:.2f}, so no softmax over them can be confident. Multiply by logit_scale.exp().", _cosine_facts),
        Mistake("one_direction", _one_direction,
                "only one direction is there (each image picking its caption). CLIP's loss is symmetric: also let each "
                "caption pick its image (softmax over dim=0, or over logits.T) and average the two."),
        Mistake("not_normalised", _not_normalised,
                "the features are not normalised: their lengths range over [{low:.1f}, {high:.1f}] here, so the logits "
                "are dot products, not cosine similarities. F.normalize(features, dim=-1) both sides first.",
                _length_facts),
        Mistake("whole_matrix", _whole_matrix,
                "you averaged the log-probabilities of the whole matrix. The loss scores the right pairs only: the "
                "diagonal (image i with caption i), e.g. log_softmax(...).diagonal().mean()."),
        Mistake("targets_all_zero", _targets_all_zero,
                "every target is 0, as if caption 0 were right for every image. Image i's caption is caption i: the "
                "targets are torch.arange(B)."),
        Mistake("sum_of_directions", _sum_of_directions,
                "you added the two directions. Average them, (image_to_text + text_to_image) / 2, so the loss starts "
                "near ln B and compares with clip_loss and open_clip."),
    ],
    verifies="features normalised, logits scaled by exp(logit_scale), targets on the diagonal, and both "
             "directions averaged",
    hints=[
        "Normalise both feature sets with F.normalize(x, dim=-1); then image_features @ text_features.T holds "
        "cosine similarities, [B images, B captions].",
        "logit_scale is stored as a log: the scale is logit_scale.exp() (about 14.3 at initialisation).",
        "Row i of torch.log_softmax(logits, dim=1) scores image i against every caption; its right answer is "
        "column i, so take .diagonal(). Do the same with dim=0 for the captions, then average the two means.",
    ],
))


def check_clip_loss_by_hand(function):
    """Check notebook 04's clip_loss_by_hand(image_features, text_features, logit_scale); returns the function to go on with."""
    return check("clip_loss_by_hand", function)
