"""Zero-shot classifiers and metrics against naive references (loops, per-prompt recomputation)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipkit.config import config_from_preset
from clipkit.interface import embed_texts
from clipkit.model import MiniCLIP
from clipkit.tokenizer import TextTruncatedWarning, WordTokenizer
from clipkit.zeroshot import topk_accuracy, zeroshot_classifier, zeroshot_logits

CLASS_NAMES = ["red circle", "blue square", "green star", "pink heart"]
TEMPLATES = ("a {}", "a photo of a {}", "a drawing of a {} on the left")


@pytest.fixture(scope="module")
def model() -> MiniCLIP:
    torch.manual_seed(0)
    tokenizer = WordTokenizer.fit([f"{t.format(name)}" for name in CLASS_NAMES for t in TEMPLATES], context_length=12)
    config = config_from_preset("tiny-cpu", tokenizer=tokenizer, embed_dim=32, text={"width": 32, "heads": 2})
    return MiniCLIP(config).eval()


def _random(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


# --- zeroshot_classifier -------------------------------------------------------------------


def test_classifier_is_the_normalised_mean_of_normalised_prompt_embeddings(model):
    weights = zeroshot_classifier(model, CLASS_NAMES, TEMPLATES, batch_size=5)
    assert weights.shape == (len(CLASS_NAMES), 32)
    for row, name in enumerate(CLASS_NAMES):  # reference: one class at a time, one prompt at a time
        prompts = [embed_texts(model, [template.format(name)])[0] for template in TEMPLATES]
        expected = F.normalize(torch.stack([F.normalize(p, dim=0) for p in prompts]).mean(0), dim=0)
        torch.testing.assert_close(weights[row], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(weights.norm(dim=1), torch.ones(len(CLASS_NAMES)))


def test_one_template_gives_that_prompts_embedding(model):
    weights = zeroshot_classifier(model, CLASS_NAMES, ["a photo of a {}"])
    torch.testing.assert_close(weights, embed_texts(model, [f"a photo of a {n}" for n in CLASS_NAMES]), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "names, error, message",
    [
        ([], ValueError, "empty"),
        (["red circle", "blue square", "red circle"], ValueError, "repeats \\['red circle'\\]"),
        ("red circle", TypeError, "single string"),
        (["red circle", "  "], ValueError, "blank"),
        (["red circle", 3], TypeError, "strings"),
    ],
)
def test_bad_class_names_name_the_problem(model, names, error, message):
    with pytest.raises(error, match=message):
        zeroshot_classifier(model, names)


@pytest.mark.parametrize("templates, message", [([], "empty"), (["a photo"], "exactly one"), (["{} and {}"], "exactly one")])
def test_bad_templates_name_the_problem(model, templates, message):
    with pytest.raises(ValueError, match=message):
        zeroshot_classifier(model, CLASS_NAMES, templates)


def test_a_label_longer_than_the_context_is_cut_with_a_warning(model):
    long_name = " ".join(["red"] * 40) + " circle"
    with pytest.warns(TextTruncatedWarning):
        weights = zeroshot_classifier(model, [long_name, "blue square"])
    assert torch.isfinite(weights).all() and weights.shape == (2, 32)


# --- zeroshot_logits, topk_accuracy --------------------------------------------------------


def test_logits_are_scaled_cosine_similarities():
    images, weights = _random(6, 8, 0) * 3, _random(4, 8, 1)
    logits = zeroshot_logits(images, weights, scale=10.0)
    for i in range(6):
        for c in range(4):
            expected = 10.0 * F.cosine_similarity(images[i], weights[c], dim=0)
            assert float(logits[i, c]) == pytest.approx(float(expected), abs=1e-5)


def test_logits_reject_mismatched_widths():
    with pytest.raises(ValueError, match="width 8 but the classifier 5"):
        zeroshot_logits(_random(3, 8, 0), _random(2, 5, 1))


def _naive_topk(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    hits = 0
    for row, label in zip(logits.tolist(), labels.tolist()):
        order = sorted(range(len(row)), key=lambda c: -row[c])
        hits += label in order[:k]
    return hits / len(labels)


def test_topk_matches_a_naive_loop():
    logits = _random(200, 12, 2)
    labels = torch.randint(0, 12, (200,), generator=torch.Generator().manual_seed(3))
    result = topk_accuracy(logits, labels, ks=(1, 3, 5))
    assert set(result) == {"top1", "top3", "top5"}
    for k in (1, 3, 5):
        assert result[f"top{k}"] == pytest.approx(_naive_topk(logits, labels, k))


def test_k_larger_than_the_number_of_classes_counts_every_class():
    logits, labels = _random(10, 3, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    result = topk_accuracy(logits, labels)
    assert result["top5"] == 1.0 and result["top1"] == pytest.approx(_naive_topk(logits, labels, 1))


@pytest.mark.parametrize(
    "labels, message", [(torch.tensor([0, 5]), "class indices"), (torch.tensor([0]), "expected logits"), (torch.tensor([0.0, 1.0]), "integer")]
)
def test_topk_rejects_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        topk_accuracy(_random(2, 3, 0), labels)


# --- evaluation ----------------------------------------------------------------------------


def test_confusion_and_per_class_accuracy_match_a_loop():
    from clipkit.zeroshot import confusion_matrix, per_class_accuracy

    generator = torch.Generator().manual_seed(5)
    labels, predictions = torch.randint(0, 4, (300,), generator=generator), torch.randint(0, 4, (300,), generator=generator)
    labels[labels == 3] = 2  # class 3 has no images: its accuracy is undefined
    confusion = confusion_matrix(labels, predictions, 4)
    expected = torch.zeros(4, 4, dtype=torch.long)
    for truth, guess in zip(labels.tolist(), predictions.tolist()):
        expected[truth, guess] += 1
    assert torch.equal(confusion, expected)
    accuracy = per_class_accuracy(confusion)
    for c in range(3):
        assert float(accuracy[c]) == pytest.approx(float((predictions[labels == c] == c).double().mean()))
    assert torch.isnan(accuracy[3])


def test_evaluate_zeroshot_recomputes_from_embeddings(model):
    from clipkit.interface import embed_images
    from clipkit.zeroshot import evaluate_zeroshot

    images = torch.randint(0, 256, (20, 3, 32, 32), generator=torch.Generator().manual_seed(6), dtype=torch.uint8)
    labels = torch.arange(20) % len(CLASS_NAMES)
    report = evaluate_zeroshot(model, images, labels, CLASS_NAMES, TEMPLATES)
    logits = zeroshot_logits(embed_images(model, images), zeroshot_classifier(model, CLASS_NAMES, TEMPLATES))
    torch.testing.assert_close(report.logits, logits)
    assert torch.equal(report.predictions, logits.argmax(1))
    assert report.top1 == pytest.approx(_naive_topk(logits, labels, 1)) and report.top5 == 1.0
    assert int(report.confusion.sum()) == 20 and len(report.worst_classes(2)) == 2


def test_compare_templates_has_each_template_and_the_ensemble(model):
    from clipkit.zeroshot import compare_templates, evaluate_zeroshot

    images = torch.randint(0, 256, (12, 3, 32, 32), generator=torch.Generator().manual_seed(7), dtype=torch.uint8)
    labels = torch.arange(12) % len(CLASS_NAMES)
    rows = compare_templates(model, images, labels, CLASS_NAMES, TEMPLATES)
    assert [row["template"] for row in rows] == list(TEMPLATES) + ["ensemble of 3"]
    assert rows[1]["top1"] == pytest.approx(evaluate_zeroshot(model, images, labels, CLASS_NAMES, [TEMPLATES[1]]).top1)
    assert rows[-1]["top1"] == pytest.approx(evaluate_zeroshot(model, images, labels, CLASS_NAMES, TEMPLATES).top1)


def test_plot_confusion_draws_a_figure():
    import matplotlib

    matplotlib.use("agg")
    from clipkit.zeroshot import plot_confusion

    figure = plot_confusion(torch.tensor([[3, 1], [0, 2]]), ["a", "b"], title="t")
    assert figure.axes and figure.axes[0].get_title() == "t"


# --- calibrated stacking --------------------------------------------------------------------


def test_calibration_subtracts_gamma_from_seen_columns_only():
    from clipkit.zeroshot import calibrated_logits

    logits, seen = _random(5, 4, 8), torch.tensor([True, False, True, False])
    shifted = calibrated_logits(logits, seen, 0.3)
    for c in range(4):
        torch.testing.assert_close(shifted[:, c], logits[:, c] - (0.3 if seen[c] else 0.0))
    with pytest.raises(ValueError, match="bool tensor with one entry per class"):
        calibrated_logits(logits, torch.tensor([1, 0, 1, 0]), 0.3)


def test_choose_gamma_trades_seen_for_unseen_accuracy():
    from clipkit.zeroshot import choose_gamma, generalized_accuracy

    # Unseen images (classes 2, 3) score their class 0.2 below a seen impostor: only gamma > 0.2 fixes them.
    seen = torch.tensor([True, True, False, False])
    labels = torch.tensor([0, 1, 2, 3])
    logits = torch.tensor([[0.9, 0.1, 0.5, 0.0], [0.1, 0.9, 0.0, 0.5], [0.7, 0.0, 0.5, 0.0], [0.0, 0.7, 0.0, 0.5]])
    assert generalized_accuracy(logits, labels, seen) == {"seen": 1.0, "unseen": 0.0, "harmonic": 0.0}
    gamma, rows = choose_gamma(logits, labels, seen, gammas=[0.0, 0.1, 0.25, 0.35, 0.5])
    assert gamma == 0.25  # the smallest gamma that gets every image right
    assert [row["harmonic"] for row in rows] == [0.0, 0.0, 1.0, 1.0, 0.0]


# --- the template benchmark -----------------------------------------------------------------


@pytest.mark.slow
def test_template_benchmark_quick_run():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    completed = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "zeroshot_templates.py"), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=root, env=dict(os.environ),
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    lines = completed.stdout.strip().splitlines()
    assert len(lines) > 3, "the table should precede the JSON line"
    figures = json.loads(lines[-1])
    assert figures["profile"] == "ci" and figures["images_per_split"] == 256
    for key in ("ensemble_seen_top1_fraction", "single_template_mean_seen_top1_fraction", "ensemble_heldout_top1_fraction"):
        assert 0.0 <= figures[key] <= 1.0
    assert figures["classifier_seconds_per_template"] > 0
