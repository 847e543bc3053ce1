"""The one learning-rate schedule: warm-up then a half cosine, checked against its definition."""

import math

import pytest
import torch

from clipkit.schedule import warmup_cosine


@pytest.mark.parametrize("warmup, total, floor", [(0, 10, 0.0), (5, 50, 0.1), (10, 10, 0.0), (3, 1, 0.2)])
def test_warmup_cosine_rises_linearly_then_follows_half_a_cosine(warmup, total, floor):
    start = 1e-3
    for step in range(total + 5):
        if step < warmup:
            expected = start + (1 - start) * step / warmup
        else:
            done = min(1.0, (step - warmup) / max(1, total - warmup))
            expected = floor + (1 - floor) * (1 + math.cos(math.pi * done)) / 2
        assert warmup_cosine(step, warmup, total, floor) == pytest.approx(expected, abs=1e-12)
    assert warmup_cosine(total + 100, warmup, total, floor) == pytest.approx(floor)


def test_warmup_cosine_drives_a_torch_scheduler_to_the_peak_and_down():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, 4, 20, 0.1))
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert max(rates) == pytest.approx(0.5) and rates.index(max(rates)) == 4
    assert all(a <= b for a, b in zip(rates[:4], rates[1:5])) and all(a >= b for a, b in zip(rates[4:], rates[5:]))
