"""clipkit.moderation: policy checks, per-rule scores, calibration against a brute-force sweep, group metrics against a recomputation."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from clipkit.config import ConfigError
from clipkit.io import BadFileError
from clipkit.moderation import (
    NEVER, Policy, PolicyScorer, Rule, audit, calibrate, confusion, group_metrics, largest_gap, load_policy,
    plot_group_metrics, plot_pr_curves, policy_from_dict, policy_from_json, policy_to_dict, pr_curve, save_policy,
    threshold_for_precision, threshold_for_recall, wilson_interval,
)

SHAPES_POLICY = Policy(rules=(
    Rule("red things", ("a red circle", "a red square"), counter=("a blue circle",), action="block"),
    Rule("stars", ("a star",), action="review", threshold=0.3),
), neutral=("a green square", "a yellow heart"), templates=("{}", "a picture of {}"))


# --- policy --------------------------------------------------------------------------------------


def test_policy_round_trips_through_json(tmp_path):
    path = save_policy(SHAPES_POLICY, tmp_path / "policy.json")
    assert load_policy(path) == SHAPES_POLICY
    assert policy_from_json(json.dumps(policy_to_dict(SHAPES_POLICY))) == SHAPES_POLICY


@pytest.mark.parametrize("data, words", [
    ({"rules": []}, ["no rules"]),
    ({}, ["no \"rules\""]),
    ({"rules": [{"name": "weapons", "descriptions": []}]}, ["'weapons'", "descriptions", "empty"]),
    ({"rules": [{"name": "weapons"}]}, ["'weapons'", "no descriptions"]),
    ({"rules": [{"name": "weapons", "descriptions": ["  "]}]}, ["'weapons'", "descriptions"]),
    ({"rules": [{"name": "weapons", "descriptions": ["a gun"], "threshold": 1.5}]}, ["'weapons'", "threshold", "[0, 1]"]),
    ({"rules": [{"name": "weapons", "descriptions": ["a gun"], "threshold": -0.1}]}, ["'weapons'", "threshold"]),
    ({"rules": [{"name": "weapons", "descriptions": ["a gun"], "threshold": "high"}]}, ["'weapons'", "threshold"]),
    ({"rules": [{"name": "weapons", "descriptions": ["a gun"], "action": "delete"}]}, ["'weapons'", "action", "block"]),
    ({"rules": [{"name": "weapons", "descriptions": ["a gun"], "treshold": 0.3}]}, ["'weapons'", "treshold"]),
    ({"rules": [{"name": "a", "descriptions": ["a gun"]}, {"name": "a", "descriptions": ["a knife"]}]}, ["'a'", "twice"]),
    ({"rules": [{"descriptions": ["a gun"]}]}, ["rules[0]", "no name"]),
    ({"rules": [{"name": "w", "descriptions": ["a gun"], "counter": ["a gun"]}]}, ["'w'", "a gun"]),
    ({"rules": [{"name": "w", "descriptions": ["a gun"]}], "templates": ["a photo"]}, ["templates", "{}"]),
])
def test_bad_policies_get_a_message_naming_the_rule_and_field(data, words):
    with pytest.raises(ConfigError) as error:
        policy_from_dict(data)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


def test_bad_policy_files_and_text(tmp_path):
    path = tmp_path / "policy.json"
    path.write_text("{\"rules\": [")
    with pytest.raises(BadFileError, match="not valid JSON"):
        load_policy(path)
    with pytest.raises(ConfigError, match="line 1"):
        policy_from_json("{\"rules\": [")
    with pytest.raises(ConfigError, match="threshold"):
        Rule("x", ("a gun",), threshold=2) and Policy(rules=(Rule("x", ("a gun",), threshold=2),))


def test_with_thresholds_replaces_only_named_rules():
    changed = SHAPES_POLICY.with_thresholds({"stars": 0.7})
    assert [r.threshold for r in changed.rules] == [0.5, 0.7]
    with pytest.raises(KeyError, match="weapons"):
        SHAPES_POLICY.with_thresholds({"weapons": 0.1})


# --- scores --------------------------------------------------------------------------------------


def _manual_scores(model, policy, images):
    """Each rule scored by hand: template-averaged texts, one softmax over [descriptions..., counter..., neutral...],
    the descriptions' shares summed."""
    from clipkit.interface import embed_images, embed_texts

    def ensemble(texts):
        rows = [F.normalize(embed_texts(model, [t.format(x) for t in policy.templates]).mean(0), dim=-1) for x in texts]
        return torch.stack(rows)

    image_rows = embed_images(model, images).double()
    columns = []
    for rule in policy.rules:
        flagged = ensemble(rule.descriptions).double()
        others = ensemble(list(rule.counter) + [n for n in policy.neutral if n not in rule.counter]).double()
        logits = model.logit_scale_exp().item() * image_rows @ torch.cat([flagged, others]).T
        columns.append(logits.softmax(-1)[:, : len(rule.descriptions)].sum(-1))
    return torch.stack(columns, dim=1)


def test_scores_match_a_hand_computation(tiny_word_clip, world32):
    images = world32.sample(12, seed=3).images
    scores = PolicyScorer(tiny_word_clip, SHAPES_POLICY).score_images(images)
    assert scores.shape == (12, 2) and ((scores >= 0) & (scores <= 1)).all()
    torch.testing.assert_close(scores, _manual_scores(tiny_word_clip, SHAPES_POLICY, images), atol=1e-5, rtol=1e-4)
    from clipkit.interface import embed_images
    from clipkit.moderation import rule_classes, rule_scores

    with tiny_word_clip.evaluating():  # the one-rule function gives the scorer's column
        rows, scale = embed_images(tiny_word_clip, images), tiny_word_clip.logit_scale_exp().item()
        for column, rule in enumerate(SHAPES_POLICY.rules):
            alone = rule_scores(rows, rule_classes(tiny_word_clip, rule, SHAPES_POLICY), len(rule.descriptions), scale)
            torch.testing.assert_close(alone.cpu(), scores[:, column], atol=1e-5, rtol=1e-4)


def test_a_rules_score_does_not_depend_on_the_other_rules(tiny_word_clip, world32):
    images = world32.sample(10, seed=4).images
    before = PolicyScorer(tiny_word_clip, SHAPES_POLICY).score_images(images)
    more = Policy(rules=SHAPES_POLICY.rules + (Rule("hearts", ("a heart", "a small heart"), counter=("a circle", "a square", "a star")),),
                  neutral=SHAPES_POLICY.neutral, templates=SHAPES_POLICY.templates)
    after = PolicyScorer(tiny_word_clip, more).score_images(images)
    torch.testing.assert_close(after[:, :2], before, atol=1e-6, rtol=0)
    alone = PolicyScorer(tiny_word_clip, Policy(rules=SHAPES_POLICY.rules[1:], neutral=SHAPES_POLICY.neutral,
                                                templates=SHAPES_POLICY.templates)).score_images(images)
    torch.testing.assert_close(alone[:, 0], before[:, 1], atol=1e-6, rtol=0)


def test_a_rule_with_nothing_to_weigh_against_scores_its_best_cosine(tiny_word_clip, world32):
    from clipkit.interface import embed_images, embed_texts

    images = world32.sample(6, seed=6).images
    lonely = Policy(rules=(Rule("reds", ("a red circle", "a red star")),), neutral=())
    cosines = embed_images(tiny_word_clip, images) @ embed_texts(tiny_word_clip, ["a red circle", "a red star"]).T
    expected = (cosines.max(dim=1).values + 1) / 2
    torch.testing.assert_close(PolicyScorer(tiny_word_clip, lonely).score_images(images)[:, 0], expected.double(), atol=1e-5, rtol=0)


def test_scores_keep_their_order_where_float32_would_round_them_to_one(tiny_word_clip):
    """Images a rule is sure of (shares of 1 - 1e-9 and beyond) keep distinct, correctly ordered scores:
    each agrees with its log-odds (flagged logits' logsumexp minus the others'), recomputed apart."""
    scorer = PolicyScorer(tiny_word_clip, SHAPES_POLICY)
    scorer.scale = 100.0
    classes = scorer.classes[0, : int(scorer.sizes[0])]  # rule 0: 2 descriptions, then 3 others
    towards = torch.linspace(-1.0, 1.0, 401, dtype=torch.float64)[:, None]
    images = F.normalize(classes[0] + towards * (classes[0] - classes[2:].mean(0)), dim=-1)  # [401, D], ever surer
    logits = scorer.scale * images @ classes.T
    log_odds = torch.logsumexp(logits[:, :2], -1) - torch.logsumexp(logits[:, 2:], -1)
    # shares between 1 - 1e-8 (float32's last step below 1 is 6e-8) and 1 - 1e-14 (float64's resolution)
    sure = (log_odds > 18.5) & (log_odds < 32)
    assert sure.sum() >= 5, "the test needs images float32 cannot tell apart"
    images, log_odds = images[sure], log_odds[sure]
    scores = scorer.score_embeddings(images)[:, 0]
    assert scores.float().unique().numel() < len(scores) <= scores.unique().numel()
    torch.testing.assert_close(torch.log(scores) - torch.log1p(-scores), log_odds, rtol=1e-3, atol=1e-3)


def test_reading_images_as_a_vocabulary_matches_a_loop_and_scores_what_it_reads(tiny_word_clip, world32):
    from clipkit.interface import embed_images, embed_texts
    from clipkit.moderation import read_as_vocabulary

    vocabulary = ["a red circle", "a blue square", "a green star", "a yellow heart"]
    images = world32.sample(5, seed=7).images
    scorer = PolicyScorer(tiny_word_clip, SHAPES_POLICY, vocabulary=vocabulary)
    rows, texts = embed_images(tiny_word_clip, images).double(), embed_texts(tiny_word_clip, vocabulary).double()
    expected = []
    for row in rows:  # the mean of the texts, each weighted by its softmax share of the image, renormalised
        weights = [math.exp(scorer.scale * float(row @ text)) for text in texts]
        mixture = sum(w * text for w, text in zip(weights, texts)) / sum(weights)
        expected.append(mixture / mixture.norm())
    read = read_as_vocabulary(rows, texts, scorer.scale)
    torch.testing.assert_close(read, torch.stack(expected))
    plain = PolicyScorer(tiny_word_clip, SHAPES_POLICY)
    torch.testing.assert_close(scorer.score_images(images), plain.score_embeddings(read))
    # at a scale that makes the softmax a choice, an image reads exactly as its nearest text
    nearest = texts[(rows @ texts.T).argmax(dim=1)]
    torch.testing.assert_close(read_as_vocabulary(rows, texts, 1e4), nearest)


def test_decide_reports_score_threshold_action(tiny_word_clip, world32):
    from PIL import Image

    picture = Image.fromarray(world32.sample(1, seed=5).images[0].permute(1, 2, 0).numpy())
    verdicts = PolicyScorer(tiny_word_clip, SHAPES_POLICY).decide(picture)
    assert [v["rule"] for v in verdicts] == ["red things", "stars"]
    for verdict, rule in zip(verdicts, SHAPES_POLICY.rules):
        assert verdict["action"] == rule.action and verdict["threshold"] == rule.threshold
        assert verdict["flagged"] == (verdict["score"] >= rule.threshold)


# --- calibration ---------------------------------------------------------------------------------


def _brute_force(scores, labels):
    """Every distinct score as threshold, counted by a plain loop."""
    rows = []
    for t in sorted(set(scores.tolist()), reverse=True):
        tp = sum(1 for s, y in zip(scores.tolist(), labels.tolist()) if s >= t and y)
        fp = sum(1 for s, y in zip(scores.tolist(), labels.tolist()) if s >= t and not y)
        rows.append((t, tp / (tp + fp), tp / max(1, int(labels.sum()))))
    return rows


@pytest.mark.parametrize("seed", range(6))
def test_calibration_agrees_with_a_brute_force_sweep(seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.rand(200, generator=generator) < 0.3
    # informative but overlapping scores, rounded so that ties occur
    scores = ((labels.float() * 0.3 + torch.rand(200, generator=generator) * 0.7) * 50).round() / 50
    rows = _brute_force(scores, labels)
    curve = pr_curve(scores, labels)
    assert curve["thresholds"].tolist() == pytest.approx([r[0] for r in rows])
    assert curve["precision"].tolist() == pytest.approx([r[1] for r in rows])
    assert curve["recall"].tolist() == pytest.approx([r[2] for r in rows])
    for goal in (0.5, 0.7, 0.9, 1.0):
        precise = [r for r in rows if r[1] >= goal]
        expected = min(r[0] for r in precise) if precise else NEVER
        assert threshold_for_precision(scores, labels, goal) == pytest.approx(expected)
        enough = [r for r in rows if r[2] >= goal]
        assert threshold_for_recall(scores, labels, goal) == pytest.approx(max(r[0] for r in enough))


def test_calibrate_sets_each_rules_threshold_and_reports_the_confusion():
    generator = torch.Generator().manual_seed(0)
    labels = torch.rand(300, 2, generator=generator) < 0.25
    scores = (labels.float() * 0.4 + torch.rand(300, 2, generator=generator) * 0.6).double()
    calibrated, points = calibrate(SHAPES_POLICY, scores, labels, precision=0.9)
    for column, (rule, point) in enumerate(zip(calibrated.rules, points)):
        assert rule.threshold == pytest.approx(threshold_for_precision(scores[:, column], labels[:, column], 0.9))
        assert point.reached and point.confusion["precision"] >= 0.9
        again = confusion(scores[:, column], labels[:, column], rule.threshold)
        assert again == point.confusion and again["tp"] + again["fp"] + again["fn"] + again["tn"] == 300
    by_recall, points = calibrate(SHAPES_POLICY, scores, labels, precision=None, recall={"red things": 0.8, "stars": 0.5})
    assert points[0].confusion["recall"] >= 0.8 and points[1].confusion["recall"] >= 0.5
    with pytest.raises(ValueError, match="exactly one"):
        calibrate(SHAPES_POLICY, scores, labels, precision=0.9, recall=0.9)
    import matplotlib

    matplotlib.use("agg")
    assert plot_pr_curves(points).axes


def test_an_unreachable_precision_never_fires():
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([False, True, False])
    assert threshold_for_precision(scores, labels, 0.9) == NEVER
    calibrated, points = calibrate(Policy(rules=(Rule("x", ("a gun",)),)), scores[:, None], labels[:, None], precision=0.9)
    assert not points[0].reached and calibrated.rules[0].threshold == 1.0


# --- fairness ------------------------------------------------------------------------------------


@pytest.mark.parametrize("successes, trials", [(3, 4), (0, 5), (5, 5), (45, 50), (1, 1000)])
def test_wilson_interval_matches_scipy(successes, trials):
    stats = pytest.importorskip("scipy.stats")
    expected = stats.binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    low, high = wilson_interval(successes, trials)
    assert low == pytest.approx(expected.low, abs=1e-3) and high == pytest.approx(expected.high, abs=1e-3)
    assert low <= successes / trials <= high


def test_wilson_interval_of_nothing_is_nan():
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def test_group_metrics_match_a_recomputation_and_the_gap_is_the_extremes():
    generator = torch.Generator().manual_seed(1)
    groups = [["light", "medium", "dark"][i % 3] for i in range(90)]
    labels = torch.rand(90, generator=generator) < 0.3
    scores = torch.rand(90, generator=generator) + torch.tensor([0.0, 0.1, 0.3] * 30)
    rows = group_metrics(scores, labels, groups, 0.6)
    for group, row in rows.items():
        members = [i for i, g in enumerate(groups) if g == group]
        fp = sum(1 for i in members if scores[i] >= 0.6 and not labels[i])
        negatives = sum(1 for i in members if not labels[i])
        tp = sum(1 for i in members if scores[i] >= 0.6 and labels[i])
        assert row["fp"] == fp and row["fpr"] == pytest.approx(fp / negatives) and row["tp"] == tp
    gap = largest_gap(rows, "fpr")
    fprs = {g: r["fpr"] for g, r in rows.items()}
    assert gap["gap"] == pytest.approx(max(fprs.values()) - min(fprs.values()))
    assert fprs[gap["highest"]] == max(fprs.values()) and fprs[gap["lowest"]] == min(fprs.values())
    table = audit(SHAPES_POLICY, torch.stack([scores, scores], 1), torch.stack([labels, labels], 1), groups)
    assert table["red things"]["dark"] == group_metrics(scores, labels, groups, 0.5)["dark"]
    import matplotlib

    matplotlib.use("agg")
    assert plot_group_metrics(rows).axes


def test_a_group_without_negatives_is_left_out_of_the_fpr_gap():
    rows = group_metrics(torch.tensor([0.9, 0.1, 0.9]), torch.tensor([False, False, True]), ["a", "a", "b"], 0.5)
    assert math.isnan(rows["b"]["fpr"])
    assert math.isnan(largest_gap(rows, "fpr")["gap"])


def test_the_plot_says_when_a_metric_has_nothing_to_measure():
    # weapons among skin-toned emoji: nothing to flag in any group, so no false-negative rate anywhere
    import matplotlib

    matplotlib.use("agg")
    rows = group_metrics(torch.tensor([0.9, 0.1, 0.2, 0.1]), torch.zeros(4, dtype=torch.bool), ["a", "a", "b", "b"], 0.5)
    assert all(math.isnan(row["fnr"]) for row in rows.values())
    texts = [t.get_text() for t in plot_group_metrics(rows).axes[0].texts]
    assert any("nothing to" in t for t in texts) and any(t.startswith("gap ") for t in texts)
