"""Notebook 06's exercise: a zero-shot classifier's weights from prompt embeddings (the prompt ensemble)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from clipkit.exercises.core import check, norm_range
from clipkit.exercises.spec import Case, Exercise, Mistake, Output, register

NOTEBOOK = "06_zero_shot"


def classifier_weights(prompt_embeddings: torch.Tensor) -> torch.Tensor:
    unit = F.normalize(prompt_embeddings, dim=-1)  # [T templates, C classes, D], every prompt unit length
    return F.normalize(unit.mean(dim=0), dim=-1)  # [C, D]: averaged over templates, unit length again


def _not_renormalised(prompt_embeddings):
    return F.normalize(prompt_embeddings, dim=-1).mean(dim=0)


def _prompts_not_normalised(prompt_embeddings):
    return F.normalize(prompt_embeddings.mean(dim=0), dim=-1)


def _averaged_over_classes(prompt_embeddings):
    return F.normalize(F.normalize(prompt_embeddings, dim=-1).mean(dim=1), dim=-1)


def _first_template_only(prompt_embeddings):
    return F.normalize(prompt_embeddings[0], dim=-1)


def _last_template_only(prompt_embeddings):
    return F.normalize(prompt_embeddings[-1], dim=-1)


def _cases() -> list[Case]:
    generator = torch.Generator().manual_seed(6)
    cases = []
    for templates, classes, dim in ((3, 4, 5), (5, 2, 8)):
        lengths = torch.rand(templates, classes, 1, generator=generator) * 3 + 0.5  # far from unit length
        embeddings = lengths * F.normalize(torch.randn(templates, classes, dim, generator=generator), dim=-1)
        cases.append(Case(f"{templates} templates x {classes} classes of width {dim}, not unit length",
                          {"prompt_embeddings": embeddings}))
    return cases


def _mean_norm(case: Case) -> dict:
    return norm_range(_not_renormalised(**case.inputs))


CLASSIFIER_WEIGHTS = register(Exercise(
    notebook=NOTEBOOK,
    reference=classifier_weights,
    cases=_cases,
    returns=(Output("weights", "[C, D]"),),
    on_device=("prompt_embeddings",),  # embed_texts returns them on the model's device
    mistakes=[
        Mistake("not_renormalised", _not_renormalised,
                "the zero-shot classifier is not renormalised after averaging templates: the mean of unit vectors is "
                "shorter than 1 (your rows have lengths {low:.2f}-{high:.2f}), so classes whose prompts disagree get "
                "smaller scores. F.normalize the average again.", _mean_norm),
        Mistake("prompts_not_normalised", _prompts_not_normalised,
                "you averaged the raw prompt embeddings, so a prompt with a longer embedding outweighs the others. "
                "Normalise each prompt first (dim=-1), then average, then normalise again."),
        Mistake("averaged_over_classes", _averaged_over_classes,
                "you averaged over the classes (dim=1) instead of over the templates (dim=0): the input is "
                "[templates, classes, D] and the classifier needs one row per class, [classes, D]."),
        Mistake("first_template_only", _first_template_only,
                "you used the first template only. The prompt ensemble averages every template's embedding of a class."),
        Mistake("last_template_only", _last_template_only,
                "you used the last template only. The prompt ensemble averages every template's embedding of a class."),
    ],
    verifies="each prompt is normalised, the templates are averaged per class, and the average is normalised again",
    hints=[
        "prompt_embeddings is [T templates, C classes, D]. F.normalize(x, dim=-1) makes every prompt unit length.",
        "Average over the templates with .mean(dim=0), giving [C, D], then F.normalize again: the mean of unit "
        "vectors is shorter than 1.",
    ],
))


def check_classifier_weights(function):
    """Check notebook 06's classifier_weights(prompt_embeddings [T, C, D]) -> [C, D]; returns the function to go on with."""
    return check("classifier_weights", function)
