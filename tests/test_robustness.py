"""Robustness evaluation against a per-image recomputation from the model's own embeddings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from clipkit.config import config_from_preset
from clipkit.data.shapes import ShapesWorld
from clipkit.data.shifts import draw_suite
from clipkit.evaluate import compositional_zeroshot
from clipkit.model import MiniCLIP
from clipkit.prompts import TEMPLATES, class_prompts
from clipkit.robustness import evaluate_suites, robustness_table, shift_average
from clipkit.tokenizer import WordTokenizer


@pytest.fixture(scope="module")
def world() -> ShapesWorld:
    return ShapesWorld()


@pytest.fixture(scope="module")
def model(world) -> MiniCLIP:
    torch.manual_seed(0)
    prompts = [prompt for template in TEMPLATES["shapes"] for prompt in class_prompts(world.class_names, template)]
    tokenizer = WordTokenizer.fit(prompts, context_length=16)
    config = config_from_preset("tiny-cpu", tokenizer=tokenizer, embed_dim=32, text={"width": 32, "heads": 2})
    return MiniCLIP(config).eval()


def _naive_top1(model, world, suite: str, n: int, seed: int, split: str, candidates: list[int]) -> float:
    """One image at a time: the candidate pair whose prompt ensemble is most similar wins."""
    weights = []
    for pair in candidates:
        prompts = [class_prompts([world.class_names[pair]], template)[0] for template in TEMPLATES["shapes"]]
        with torch.no_grad():
            texts = F.normalize(model.encode_text(model.tokenizer(prompts)), dim=-1)
        weights.append(F.normalize(texts.mean(dim=0), dim=0))
    weights = torch.stack(weights)  # [candidates, D]
    sample = draw_suite(world, suite, n, seed=seed, split=split)
    right = 0
    for image, label in zip(sample.images, sample.labels.tolist()):
        with torch.no_grad():
            embedding = F.normalize(model.encode_image(model.to_model_input(image[None])), dim=-1)[0]
        right += int(candidates[int((weights @ embedding).argmax())] == label)
    return right / n


def test_suite_scores_match_a_per_image_recomputation(model, world):
    results = evaluate_suites(model, world, suites=["redrawn", "sketch"], n=24, seed=3)
    every_pair = list(range(len(world.pairs)))
    heldout = world.pair_ids("heldout").tolist()
    for suite in ("redrawn", "sketch"):
        assert results[f"{suite}_seen_top1"] == pytest.approx(_naive_top1(model, world, suite, 24, 3, "train", every_pair), abs=1e-6)
        assert results[f"{suite}_heldout_top1"] == pytest.approx(_naive_top1(model, world, suite, 24, 3, "heldout", heldout), abs=1e-6)
        assert results[f"{suite}_heldout_vs_all_top1"] == pytest.approx(_naive_top1(model, world, suite, 24, 3, "heldout", every_pair), abs=1e-6)


def test_in_distribution_figures_are_compositional_zeroshot(model, world):
    results = evaluate_suites(model, world, suites=[], n=24, seed=2)
    own = compositional_zeroshot(model, world, n=24, seed=1002)
    assert results == {
        "in_distribution_seen_top1": own["seen"],
        "in_distribution_heldout_top1": own["heldout_vs_heldout"],
        "in_distribution_heldout_vs_all_top1": own["heldout_vs_all"],
    }


def test_every_suite_by_default_and_the_callers_mode_is_kept(model, world):
    model.train()
    try:
        results = evaluate_suites(model, world, n=4)
        assert model.training, "evaluate_suites restores the caller's mode"
    finally:
        model.eval()
    assert "combined_heldout_top1" in results and "sketch_seen_top1" in results
    assert all(0.0 <= value <= 1.0 for value in results.values())


def test_table_and_shift_average(model, world):
    results = {
        "in_distribution_seen_top1": 0.9, "in_distribution_heldout_top1": 1.0, "in_distribution_heldout_vs_all_top1": 0.7,
        "blur_seen_top1": 0.5, "blur_heldout_top1": 0.6, "blur_heldout_vs_all_top1": 0.2,
        "sketch_seen_top1": 0.3, "sketch_heldout_top1": 0.4, "sketch_heldout_vs_all_top1": 0.1,
    }
    table = robustness_table(results)
    assert [line.split()[0] for line in table.splitlines()[2:5]] == ["in_distribution", "blur", "sketch"]
    assert "0.500" in table and "held-out among held-out" in table
    side_by_side = robustness_table({"grid": results, "random": results})
    assert "grid" in side_by_side.splitlines()[0] and "random" in side_by_side.splitlines()[0]
    assert side_by_side.splitlines()[4].count("0.500") == 2
    assert shift_average(results) == pytest.approx(0.4)
    assert shift_average(results, "heldout") == pytest.approx(0.5)


def test_unknown_suites_are_named(model, world):
    with pytest.raises(ValueError, match="unknown shift suites \\['photos'\\]"):
        evaluate_suites(model, world, suites=["photos"], n=4)
