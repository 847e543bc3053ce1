"""Content moderation with a CLIP model: a policy of rules, per-rule scores, calibrated thresholds, a fairness audit.

    policy = Policy(rules=(Rule("weapons", ("a weapon", "a gun", "a knife")), ...))   # or load_policy(path)
    scorer = PolicyScorer(model, policy)            # any CLIPBase: MiniCLIP, LiT, open_clip, Hugging Face
    scores = scorer.score_images(images)            # [N, R] in [0, 1], each rule on its own
    policy, points = calibrate(policy, scores, labels, precision=0.9)
    plot_pr_curves(points)
    rows = audit(policy, test_scores, test_labels, groups)   # per-group error rates per rule
    largest_gap(rows["weapons"], "fpr")

Read from the bottom up: `policy` (plain data and its checks), `scores`, `calibrate`, `fairness`.
"""

from clipkit.moderation.calibrate import (
    NEVER,
    OperatingPoint,
    calibrate,
    confusion,
    plot_pr_curves,
    pr_curve,
    threshold_for_precision,
    threshold_for_recall,
    wilson_interval,
)
from clipkit.moderation.fairness import audit, group_metrics, largest_gap, plot_group_metrics
from clipkit.moderation.policy import (
    ACTIONS,
    NEUTRAL,
    Policy,
    Rule,
    check_policy,
    load_policy,
    policy_from_dict,
    policy_from_json,
    policy_to_dict,
    policy_to_json,
    save_policy,
)
from clipkit.moderation.scores import PolicyScorer, flags, read_as_vocabulary, rule_classes, rule_scores, score_images

__all__ = [
    "ACTIONS", "NEUTRAL", "NEVER", "OperatingPoint", "Policy", "PolicyScorer", "Rule", "audit", "calibrate",
    "check_policy", "confusion", "flags", "group_metrics", "largest_gap", "load_policy", "plot_group_metrics",
    "plot_pr_curves", "policy_from_dict", "policy_from_json", "policy_to_dict", "policy_to_json", "pr_curve", "read_as_vocabulary",
    "rule_classes", "rule_scores", "save_policy", "score_images", "threshold_for_precision", "threshold_for_recall",
    "wilson_interval",
]
