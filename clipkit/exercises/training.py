"""Notebook 05's exercises: the learning-rate schedule, and the multi-positive targets of a batch."""

from __future__ import annotations

import math

import torch

from clipkit.exercises.core import check
from clipkit.exercises.spec import Case, Exercise, Mistake, Output, register

NOTEBOOK = "05_train_mini_clip"


# ---------------------------------------------------------------------------------------------
# lr_multiplier(step, warmup, total, floor) -> float


def lr_multiplier(step: int, warmup: int, total: int, floor: float) -> float:
    if step < warmup:
        return 1e-3 + (1 - 1e-3) * step / warmup
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _cosine(progress: float, floor: float) -> float:
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def _after_warmup(step, warmup, total):
    return min(1.0, (step - warmup) / max(1, total - warmup))


def _no_warmup(step, warmup, total, floor):
    return _cosine(min(1.0, step / total), floor)


def _warmup_from_zero(step, warmup, total, floor):
    return step / warmup if step < warmup else _cosine(_after_warmup(step, warmup, total), floor)


def _no_floor(step, warmup, total, floor):
    return lr_multiplier(step, warmup, total, 0.0)


def _cosine_from_step_zero(step, warmup, total, floor):
    return 1e-3 + (1 - 1e-3) * step / warmup if step < warmup else _cosine(min(1.0, step / total), floor)


def _no_clamp(step, warmup, total, floor):
    return 1e-3 + (1 - 1e-3) * step / warmup if step < warmup else _cosine((step - warmup) / max(1, total - warmup), floor)


def _linear_decay(step, warmup, total, floor):
    if step < warmup:
        return 1e-3 + (1 - 1e-3) * step / warmup
    return floor + (1 - floor) * (1 - _after_warmup(step, warmup, total))


def _schedule_cases() -> list[Case]:
    return [
        Case("warmup=10, total=100, floor=0.1 at steps 0-120", {"warmup": 10, "total": 100, "floor": 0.1, "steps": range(121)}),
        Case("warmup=4, total=20, floor=0.0 at steps 0-25", {"warmup": 4, "total": 20, "floor": 0.0, "steps": range(26)}),
    ]


def _every_step(call, inputs):
    return [call({**inputs, "step": step}) for step in inputs["steps"]]


def _schedule_facts(case: Case) -> dict:
    warmup, total, floor = (case.inputs[key] for key in ("warmup", "total", "floor"))
    return {
        "warmup": warmup,
        "total": total,
        "floor": floor,
        "at_warmup": _cosine_from_step_zero(warmup, warmup, total, floor),
        "after_end": _no_clamp(total + 20, warmup, total, floor),
    }


LR_MULTIPLIER = register(Exercise(
    notebook=NOTEBOOK,
    reference=lr_multiplier,
    cases=_schedule_cases,
    apply=_every_step,
    returns=(Output("multiplier", ""),),
    mistakes=[
        Mistake("no_warmup", _no_warmup,
                "there is no warmup: the multiplier starts at 1. For the first `warmup` steps it should rise "
                "linearly from 1e-3 to 1 (Adam's first moment estimates are noisy), and only then follow the cosine."),
        Mistake("warmup_from_zero", _warmup_from_zero,
                "at step 0 your multiplier is 0, so the first step does nothing. Start the warmup at 1e-3: "
                "1e-3 + (1 - 1e-3) * step / warmup, as clipkit.schedule.warmup_cosine does."),
        Mistake("no_floor", _no_floor,
                "the cosine ends at 0 whatever `floor` says (floor={floor} here). Scale it to end at the floor: "
                "floor + (1 - floor) * 0.5 * (1 + cos(pi * progress)).", _schedule_facts),
        Mistake("cosine_from_step_zero", _cosine_from_step_zero,
                "the cosine counts from step 0 instead of from the end of the warmup, so the multiplier drops "
                "straight after the warmup (step {warmup} gives {at_warmup:.3f}, not 1). Use progress = "
                "(step - warmup) / (total - warmup).", _schedule_facts),
        Mistake("no_clamp", _no_clamp,
                "after `total` steps the multiplier climbs again ({after_end:.3f} at step {total} + 20): clamp the "
                "progress at 1 with min(1.0, ...) so a run that goes on past the schedule stays at the floor.",
                _schedule_facts),
        Mistake("linear_decay", _linear_decay,
                "after the warmup the multiplier falls along a straight line. The schedule is a cosine: "
                "0.5 * (1 + cos(pi * progress)) goes from 1 to 0 slowly, then fast, then slowly."),
    ],
    verifies="a linear warmup from 1e-3, then a cosine from the end of the warmup down to the floor, held there "
             "after the last step",
    hints=[
        "Two cases: step < warmup (rise linearly from 1e-3 to 1), and after it (the cosine).",
        "After the warmup, progress = min(1.0, (step - warmup) / (total - warmup)) runs from 0 to 1; the "
        "multiplier is floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)).",
    ],
))


def check_lr_multiplier(function):
    """Check notebook 05's lr_multiplier(step, warmup, total, floor); returns the function to go on with."""
    return check("lr_multiplier", function)


# ---------------------------------------------------------------------------------------------
# multi_positive_targets(captions) -> [B, B]


def multi_positive_targets(captions: list[str]) -> torch.Tensor:
    captions = [caption.lower() for caption in captions]
    positives = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float)  # [B, B]
    return positives / positives.sum(dim=1, keepdim=True)  # each row spreads 1 over its positives


def _identity(captions):
    return torch.eye(len(captions))


def _unnormalised(captions):
    lowered = [caption.lower() for caption in captions]
    return torch.tensor([[a == b for b in lowered] for a in lowered], dtype=torch.float)


def _case_sensitive(captions):
    positives = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float)
    return positives / positives.sum(dim=1, keepdim=True)


def _divided_by_total(captions):
    positives = _unnormalised(captions)
    return positives / positives.sum()


def _uniform(captions):
    return torch.full((len(captions), len(captions)), 1 / len(captions))


def _target_cases() -> list[Case]:
    return [
        Case("5 captions, two equal and one differing only in case",
             {"captions": ["a red circle", "a blue square", "A red circle", "a green star", "a red circle"]}),
        Case("4 captions, two pairs of equals", {"captions": ["red star", "blue cross", "blue cross", "red star"]}),
    ]


MULTI_POSITIVE_TARGETS = register(Exercise(
    notebook=NOTEBOOK,
    reference=multi_positive_targets,
    cases=_target_cases,
    returns=(Output("targets", "[B, B]"),),
    mistakes=[
        Mistake("identity", _identity,
                "you returned the identity: only caption i is right for image i. When two images have the same "
                "caption, each caption is right for both; mark every equal caption as a positive."),
        Mistake("unnormalised", _unnormalised,
                "each row holds 1 for every positive, so a row with three positives sums to 3. Targets are "
                "probabilities: divide each row by its number of positives."),
        Mistake("case_sensitive", _case_sensitive,
                "'A red circle' and 'a red circle' should count as the same caption: compare captions in lower case."),
        Mistake("divided_by_total", _divided_by_total,
                "you divided by the number of positives in the whole batch, so no row sums to 1. Divide each row by "
                "its own count: positives.sum(dim=1, keepdim=True)."),
        Mistake("uniform", _uniform,
                "every caption gets the same target, so nothing tells right from wrong. Only captions equal to image "
                "i's own are its positives."),
    ],
    verifies="every caption equal to image i's own (ignoring case) is a positive, and each row sums to 1",
    hints=[
        "Lower-case the captions, then compare every pair: [[a == b for b in captions] for a in captions].",
        "Make that a float tensor and divide each row by its sum (keepdim=True keeps the shape [B, 1] for broadcasting).",
    ],
))


def check_multi_positive_targets(function):
    """Check notebook 05's multi_positive_targets(captions) -> [B, B]; returns the function to go on with."""
    return check("multi_positive_targets", function)
