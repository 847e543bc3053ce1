"""Compositional metrics and what training reports, against recomputations from the zero-shot and retrieval pieces."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipkit.config import config_from_preset
from clipkit.data.shapes import ShapesConfig, ShapesWorld
from clipkit.data.stream import CaptionedSource, ShapesSource, TrainingData
from clipkit.data.transforms import CaptionedImages
from clipkit.evaluate import evaluate_training_data
from clipkit.interface import embed_images, embed_texts
from clipkit.model import MiniCLIP
from clipkit.prompts import TEMPLATES, class_prompts, prompt_vocabulary
from clipkit.tokenizer import WordTokenizer

CLASS_NAMES = ["red circle", "blue square", "green star", "pink heart"]


@pytest.fixture(scope="module")
def model() -> MiniCLIP:
    torch.manual_seed(0)
    tokenizer = WordTokenizer.fit([f"a {name}" for name in CLASS_NAMES], context_length=12)
    config = config_from_preset("tiny-cpu", tokenizer=tokenizer, embed_dim=32, text={"width": 32, "heads": 2})
    return MiniCLIP(config).eval()


def _random(rows: int, cols: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


# --- binding probe --------------------------------------------------------------------------


def test_binding_accuracy_matches_a_loop():
    from clipkit.evaluate import binding_accuracy

    a, b, c, d = (_random(40, 6, seed) for seed in range(10, 14))
    result = binding_accuracy(a, b, c, d)
    cos = F.cosine_similarity
    text = image = group = 0
    for i in range(40):
        ii, ij, ji, jj = cos(a[i], c[i], 0), cos(a[i], d[i], 0), cos(b[i], c[i], 0), cos(b[i], d[i], 0)
        text += int(ii > ij) + int(jj > ji)
        image += int(ii > ji) + int(jj > ij)
        group += int(ii > ij and jj > ji and ii > ji and jj > ij)
    assert result == pytest.approx({"text": text / 80, "image": image / 80, "group": group / 40})


def test_a_perfect_binder_scores_one():
    from clipkit.evaluate import binding_accuracy

    images, swapped = F.normalize(_random(8, 6, 1), dim=1), F.normalize(_random(8, 6, 2), dim=1)
    assert binding_accuracy(images, swapped, images, swapped) == {"text": 1.0, "image": 1.0, "group": 1.0}


def test_probes_run_on_a_model(model):
    from clipkit.data import ShapesWorld
    from clipkit.evaluate import binding_probe_accuracy, compositional_zeroshot

    world = ShapesWorld()
    scores = binding_probe_accuracy(model, world.binding_probe(16, seed=0))
    assert set(scores) == {"text", "image", "group"} and all(0 <= v <= 1 for v in scores.values())
    result = compositional_zeroshot(model, world, n=32, templates=("a {}",))
    assert 0 <= result["heldout_vs_heldout"] <= 1 and result["gamma"] >= 0
    assert result["harmonic_calibrated"] >= 0


# --- what training reports ------------------------------------------------------------------


def _toy_set(count: int, seed: int) -> CaptionedImages:
    images = torch.randint(0, 256, (count, 3, 16, 16), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    names = ["apple", "boot", "umbrella"]
    labels = torch.arange(count) % 3
    return CaptionedImages(images, [f"a {names[int(i)]}" for i in labels], labels, names)


def _top1(model, images, labels, names, templates) -> float:
    """Zero-shot top-1 by hand: prompt embeddings averaged per class, argmax of cosine similarity."""
    weights = torch.stack([
        F.normalize(torch.stack([embed_texts(model, class_prompts([name], t))[0] for t in templates]).mean(0), dim=-1)
        for name in names
    ])  # [C, D]
    return float((embed_images(model, images) @ weights.T).argmax(1).eq(labels).float().mean())


def test_training_metrics_are_the_recomputed_zero_shot_and_recall():
    world = ShapesWorld(ShapesConfig(image_size=32))
    toy = CaptionedSource(32, _toy_set(12, 0), _toy_set(9, 1), templates=["a {}", "a photo of a {}"], name="toy")
    data = TrainingData([ShapesSource(world=world), toy])
    tokenizer = WordTokenizer.fit(data.vocabulary() + prompt_vocabulary(data), context_length=24)
    torch.manual_seed(1)
    model = MiniCLIP(config_from_preset("tiny-cpu", tokenizer=tokenizer))
    model.train()
    size = 24

    metrics = evaluate_training_data(model, data, size)

    assert model.training and torch.is_grad_enabled()  # the caller's mode comes back
    model.eval()
    held = world.pair_ids("heldout")
    seen_mask = torch.ones(len(world.pairs), dtype=torch.bool)
    seen_mask[torch.from_numpy(held)] = False
    test = [world.sample(size, seed=1000, split=split, objects=1) for split in ("train", "heldout")]
    images = torch.cat([s.images for s in test])
    labels = torch.cat([s.labels for s in test])
    weights = torch.stack([
        F.normalize(torch.stack([embed_texts(model, class_prompts([n], t))[0] for t in TEMPLATES["shapes"]]).mean(0), dim=-1)
        for n in world.class_names
    ])  # [C, D]
    logits = embed_images(model, images) @ weights.T  # [N, C]
    correct = logits.argmax(1).eq(labels)
    is_seen = seen_mask[labels]
    assert metrics["seen"] == pytest.approx(float(correct[is_seen].float().mean()), abs=1e-6)
    assert metrics["heldout_vs_all"] == pytest.approx(float(correct[~is_seen].float().mean()), abs=1e-6)
    heldout_rows = logits[~is_seen][:, held]  # [n_heldout_images, n_heldout_pairs]
    expected = float((torch.from_numpy(held)[heldout_rows.argmax(1)] == labels[~is_seen]).float().mean())
    assert metrics["heldout_vs_heldout"] == pytest.approx(expected, abs=1e-6)
    assert 0 <= metrics["gamma"] and 0 <= metrics["harmonic_calibrated"] <= 1

    sample = world.sample(size, seed=2000, split="train")
    similarity = embed_texts(model, sample.captions) @ embed_images(model, sample.images).T  # [T, I]
    for k in (1, 5, 10):
        hits = (similarity.topk(k, dim=1).indices == torch.arange(size)[:, None]).any(1)
        assert metrics[f"text_to_image_r@{k}"] == pytest.approx(float(hits.float().mean()), abs=1e-6)
        image_hits = (similarity.T.topk(k, dim=1).indices == torch.arange(size)[:, None]).any(1)
        assert metrics[f"image_to_text_r@{k}"] == pytest.approx(float(image_hits.float().mean()), abs=1e-6)

    held_back = toy.eval_dataset
    expected_top1 = _top1(model, held_back.images, held_back.labels, held_back.class_names, ["a {}", "a photo of a {}"])
    assert metrics["toy_top1"] == pytest.approx(expected_top1, abs=1e-6)
    expected_keys = {"seen", "heldout_vs_heldout", "heldout_vs_all", "harmonic", "gamma", "seen_calibrated",
                     "heldout_calibrated", "harmonic_calibrated", "toy_top1"}
    expected_keys |= {f"{d}_r@{k}" for d in ("text_to_image", "image_to_text") for k in (1, 5, 10)}
    expected_keys |= {"binding_text", "binding_image", "binding_group"}
    assert set(metrics) == expected_keys

    probe = world.binding_probe(size, seed=3000, split="train")
    own, swapped = embed_images(model, probe.images), embed_images(model, probe.swapped_images)  # [N, D] each
    caption, swapped_caption = embed_texts(model, probe.captions), embed_texts(model, probe.swapped_captions)
    text_right = torch.cat([(own * caption).sum(1) > (own * swapped_caption).sum(1),
                            (swapped * swapped_caption).sum(1) > (swapped * caption).sum(1)])
    assert metrics["binding_text"] == pytest.approx(float(text_right.float().mean()), abs=1e-6)


def test_a_source_without_labels_reports_nothing(model):
    unlabelled = CaptionedSource(32, _toy_set(6, 0), None, name="toy")
    assert evaluate_training_data(model, TrainingData([unlabelled]), 8) == {}
