"""A fairness audit: the same error rates, group by group, and the largest gap between groups.

A filter that is right 95% of the time overall can still flag one group's harmless pictures far
more often than another's. For one rule at its threshold, `group_metrics` gives each group's
confusion (`clipkit.moderation.calibrate.confusion`): false-positive rate (harmless images flagged),
false-negative rate (what should be caught and is not), precision, flag rate. `largest_gap` names
the two groups furthest apart on one of them; `audit` does every rule; `plot_group_metrics` draws it.

    rows = audit(policy, scores, labels, groups)      # {rule: {group: confusion}}
    gap = largest_gap(rows["weapons"], "fpr")          # {"gap", "highest", "lowest", ...}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clipkit.moderation.calibrate import confusion
from clipkit.moderation.policy import Policy

METRICS = ("fpr", "fnr", "precision", "recall", "flag_rate")  # what an audit compares between groups


def group_metrics(scores, labels, groups: Sequence, threshold: float) -> dict[str, dict]:
    """{group: confusion(...)} for one rule: `scores` [N], `labels` bool [N], `groups` one name per image."""
    scores, labels = torch.as_tensor(scores).flatten(), torch.as_tensor(labels).flatten().bool()
    groups = [str(g) for g in groups]
    if len(groups) != len(scores):
        raise ValueError(f"{len(scores)} scores but {len(groups)} group names: give one group per image")
    result = {}
    for group in dict.fromkeys(groups):  # in order of first appearance (skin tones light to dark, as the data lists them)
        members = torch.tensor([g == group for g in groups])
        result[group] = confusion(scores[members], labels[members], threshold)
    return result


def largest_gap(per_group: dict[str, dict], metric: str = "fpr") -> dict:
    """The two groups furthest apart on `metric` (groups where it is undefined, e.g. an fpr with no
    negatives, are left out): {"metric", "gap", "highest", "lowest", "values"}."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}: choose one of {METRICS}")
    values = {group: row[metric] for group, row in per_group.items() if row[metric] == row[metric]}
    if len(values) < 2:
        return {"metric": metric, "gap": float("nan"), "highest": None, "lowest": None, "values": values}
    highest, lowest = max(values, key=values.get), min(values, key=values.get)
    return {"metric": metric, "gap": values[highest] - values[lowest], "highest": highest, "lowest": lowest, "values": values}


def audit(policy: Policy, scores, labels, groups: Sequence) -> dict[str, dict[str, dict]]:
    """{rule: {group: confusion}} at each rule's threshold: `scores` [N, R], `labels` bool [N, R]."""
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels).bool()
    if scores.ndim != 2 or scores.shape[1] != len(policy.rules) or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must both be [N, {len(policy.rules)}], got {tuple(scores.shape)} and {tuple(labels.shape)}")
    return {rule.name: group_metrics(scores[:, r], labels[:, r], groups, rule.threshold) for r, rule in enumerate(policy.rules)}


def plot_group_metrics(per_group: dict[str, dict], metrics: Sequence[str] = ("fpr", "fnr"), title: str | None = None, ax=None):
    """Bars of each metric per group, the largest gap written above each metric; returns the Figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    groups = list(per_group)
    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 0.9 * len(groups) * len(metrics), 3.6))
    width = 0.8 / len(groups)
    for g, group in enumerate(groups):
        values = [per_group[group][m] for m in metrics]
        ax.bar(np.arange(len(metrics)) + g * width, np.nan_to_num(values), width, label=group)
    for m, metric in enumerate(metrics):
        gap = largest_gap(per_group, metric)
        if gap["highest"] is not None:
            top = max(gap["values"].values())
            ax.text(m + 0.4 - width / 2, top + 0.02, f"gap {gap['gap']:.2f}", ha="center", fontsize=8)
        else:  # e.g. an FNR where no group has anything to flag: say so, rather than draw bars of 0
            ax.text(m + 0.4 - width / 2, 0.05, "nothing to\nmeasure", ha="center", fontsize=8, color="grey")
    ax.set_xticks(np.arange(len(metrics)) + 0.4 - width / 2, list(metrics))
    ax.set_ylabel("rate")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=7, ncols=min(len(groups), 3))
    ax.set_title(title or "error rates per group")
    ax.figure.tight_layout()
    return ax.figure
