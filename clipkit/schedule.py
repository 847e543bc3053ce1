"""The learning-rate schedule every optimisation in clipkit uses: linear warm-up, then a half cosine.

Training, LiT and steering all call `warmup_cosine` (through `torch.optim.lr_scheduler.LambdaLR`),
so one function says how a learning rate starts, peaks and decays.
"""

from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, warmup_start: float = 1e-3) -> float:
    """Multiplier of the peak learning rate at `step` (counted from 0).

    Linear from `warmup_start` to 1 over `warmup_steps` (a cold Adam with a full learning rate can
    blow up in its first steps, before its moment estimates mean anything), then a half cosine from
    1 down to `min_ratio`, reached at `total_steps` and held after it.
    """
    if step < warmup_steps:
        return warmup_start + (1 - warmup_start) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
