"""Thresholds from labelled data: each rule's operating point chosen for a target precision or recall.

A zero-shot score is not a probability, and its scale differs from rule to rule and model to model;
a threshold of 0.5 means nothing until it is checked against images whose answer is known. For one
rule, with scores s and labels y (True: the rule should fire):

- `pr_curve(s, y)`: precision and recall at every threshold that changes a decision;
- `threshold_for_precision(s, y, 0.9)`: the lowest threshold whose precision is at least 0.9, i.e. the
  most recall that precision allows (flagging is then as often right as asked, missing the fewest);
- `threshold_for_recall(s, y, 0.9)`: the highest threshold that still finds 90% of what should fire
  (the fewest false alarms at that coverage);
- `confusion(s, y, t)`: true/false positives and negatives at threshold t, with the rates derived;
- `wilson_interval(tp, tp + fp)`: how much a precision measured on few flagged images can be trusted.

`calibrate(policy, scores, labels, precision=0.9)` does it for every rule and returns the policy with
its thresholds set, beside the per-rule operating points. All pure functions of tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from clipkit.moderation.policy import Policy

NEVER = 1.0 + 1e-6  # the threshold of a rule that no threshold makes precise enough: it never fires (scores <= 1)


def _checked(scores: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    labels = torch.as_tensor(labels).flatten().bool()
    if scores.shape != labels.shape:
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels: give one label per scored image")
    if len(scores) == 0:
        raise ValueError("no scores: calibration needs a labelled validation set")
    return scores, labels


def confusion(scores, labels, threshold: float) -> dict[str, float]:
    """Counts and rates at `threshold` (fire when score >= threshold). A rate with nothing to count is nan."""
    scores, labels = _checked(scores, labels)
    fired = scores >= threshold
    tp, fp = int((fired & labels).sum()), int((fired & ~labels).sum())
    fn, tn = int((~fired & labels).sum()), int((~fired & ~labels).sum())

    def ratio(top: int, bottom: int) -> float:
        return top / bottom if bottom else float("nan")

    return {"threshold": float(threshold), "tp": tp, "fp": fp, "fn": fn, "tn": tn,
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn), "fpr": ratio(fp, fp + tn),
            "fnr": ratio(fn, tp + fn), "flag_rate": ratio(tp + fp, len(scores))}


def wilson_interval(successes: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's score interval for a proportion (95% at z = 1.96): how far a precision measured on
    `trials` flagged images may be from the precision on many more. A rule that flags 4 test
    images and is right on 3 has precision 0.75 and an interval of about (0.30, 0.95): one such
    figure can neither meet nor miss a target. (nan, nan) with no trials."""
    if trials <= 0:
        return float("nan"), float("nan")
    p, n = successes / trials, trials
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def pr_curve(scores, labels) -> dict[str, torch.Tensor]:
    """Precision, recall and false-positive rate at each distinct score used as threshold, highest
    first: firing on score >= thresholds[i] gives precision[i], recall[i], fpr[i]."""
    scores, labels = _checked(scores, labels)
    order = torch.argsort(scores, descending=True, stable=True)
    ordered, hits = scores[order], labels[order].double()
    tp = hits.cumsum(0)  # [N]: true positives when the first i + 1 images fire
    fp = (1 - hits).cumsum(0)
    # Tied scores fire together: keep only the last position of each run of equal scores.
    last = torch.ones(len(ordered), dtype=torch.bool)
    last[:-1] = ordered[1:] != ordered[:-1]
    tp, fp, thresholds = tp[last], fp[last], ordered[last]
    positives, negatives = hits.sum(), (1 - hits).sum()
    recall = tp / positives if positives > 0 else torch.full_like(tp, float("nan"))
    fpr = fp / negatives if negatives > 0 else torch.full_like(fp, float("nan"))
    return {"thresholds": thresholds, "precision": tp / (tp + fp), "recall": recall, "fpr": fpr}


def threshold_for_precision(scores, labels, precision: float = 0.9) -> float:
    """The lowest threshold whose precision on (scores, labels) is at least `precision` (the most recall
    it allows); NEVER if no threshold reaches it (the rule should then not fire at all)."""
    if not 0 < precision <= 1:
        raise ValueError(f"target precision must be in (0, 1], got {precision}")
    curve = pr_curve(scores, labels)
    good = curve["precision"] >= precision - 1e-12
    if not good.any():
        return NEVER
    return float(curve["thresholds"][good.nonzero()[-1, 0]])


def threshold_for_recall(scores, labels, recall: float = 0.9) -> float:
    """The highest threshold whose recall on (scores, labels) is at least `recall` (the fewest false
    alarms at that coverage)."""
    if not 0 < recall <= 1:
        raise ValueError(f"target recall must be in (0, 1], got {recall}")
    curve = pr_curve(scores, labels)
    if torch.isnan(curve["recall"]).all():
        raise ValueError("no positive examples: a recall target needs images the rule should flag")
    good = curve["recall"] >= recall - 1e-12
    return float(curve["thresholds"][good.nonzero()[0, 0]])


@dataclass
class OperatingPoint:
    rule: str  # the rule's name
    target: str  # "precision" or "recall"
    goal: float  # the target value asked for
    threshold: float  # the chosen threshold (NEVER: no threshold reaches the target)
    reached: bool  # whether the target holds on the calibration data
    confusion: dict  # confusion() at the threshold, on the calibration data
    curve: dict  # pr_curve() of the calibration data


def calibrate(policy: Policy, scores, labels, precision: float | None = 0.9, recall: float | None = None) -> tuple[Policy, list[OperatingPoint]]:
    """Each rule's threshold set on labelled scores: `scores` [N, R] (rules in policy order), `labels`
    bool [N, R]. Give exactly one of `precision` or `recall` as the per-rule target (a number for all
    rules, or a {rule: target} dict). Returns (the calibrated policy, one OperatingPoint per rule)."""
    if (precision is None) == (recall is None):
        raise ValueError("give exactly one target: precision=... or recall=...")
    scores, labels = torch.as_tensor(scores), torch.as_tensor(labels).bool()
    if scores.ndim != 2 or scores.shape[1] != len(policy.rules) or labels.shape != scores.shape:
        raise ValueError(f"scores and labels must both be [N, {len(policy.rules)}] (one column per rule), "
                         f"got {tuple(scores.shape)} and {tuple(labels.shape)}")
    kind, goals = ("precision", precision) if precision is not None else ("recall", recall)
    points = []
    for column, rule in enumerate(policy.rules):
        goal = goals.get(rule.name, 0.9) if isinstance(goals, dict) else goals
        choose = threshold_for_precision if kind == "precision" else threshold_for_recall
        threshold = choose(scores[:, column], labels[:, column], goal)
        at = confusion(scores[:, column], labels[:, column], threshold)
        reached = at[kind] >= goal - 1e-12 if at[kind] == at[kind] else False
        points.append(OperatingPoint(rule.name, kind, float(goal), threshold, bool(reached), at,
                                     pr_curve(scores[:, column], labels[:, column])))
    return policy.with_thresholds({p.rule: min(p.threshold, 1.0) if p.reached else 1.0 for p in points}), points


def plot_pr_curves(points: list[OperatingPoint], title: str | None = None, ax=None):
    """Each rule's precision-recall curve with its chosen operating point marked; returns the Figure."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))
    for point in points:
        line = ax.step(point.curve["recall"].numpy(), point.curve["precision"].numpy(), where="post", label=point.rule)[0]
        ax.plot([point.confusion["recall"]], [point.confusion["precision"]], "o", color=line.get_color(), markersize=7)
    goals = {p.goal for p in points if p.target == "precision"}
    for goal in goals:
        ax.axhline(goal, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or "precision-recall per rule (dots: chosen thresholds)")
    ax.figure.tight_layout()
    return ax.figure
