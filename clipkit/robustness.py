"""Zero-shot accuracy under distribution shift: the shapes world's vocabulary drawn in ways training
never showed (`clipkit.data.shifts`), next to the in-distribution figures.

The CLIP paper's "effective robustness" (Radford et al., 2021, section 3.3; Taori et al., 2020) asks
not whether accuracy drops under shift (it always does) but how far a model sits above the line that
models trained on one distribution follow: plot in-distribution accuracy against accuracy under
shift and a model that learnt shapes, not one renderer's pixels, sits near y = x.

`evaluate_suites(model, world)` gives, for each suite, `<suite>_seen_top1` (images of training
pairs, all pairs as labels) and `<suite>_heldout_top1` (held-out pairs among the held-out pairs,
classic zero-shot), plus `<suite>_heldout_vs_all_top1`; and the same three for the world's own
renderer as `in_distribution_*`, from `clipkit.evaluate.compositional_zeroshot`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from clipkit.data.shifts import SUITES, draw_suite
from clipkit.evaluate import compositional_zeroshot
from clipkit.interface import embed_images
from clipkit.prompts import TEMPLATES
from clipkit.zeroshot import topk_accuracy, zeroshot_classifier, zeroshot_logits

IN_DISTRIBUTION = "in_distribution"  # the row name of the world's own renderer
COLUMNS = ("seen", "heldout", "heldout_vs_all")  # the figures each row reports, as key suffixes <row>_<column>_top1
COLUMN_SHORT = {"seen": "seen", "heldout": "held", "heldout_vs_all": "held/all"}
COLUMN_TITLES = {"seen": "seen pairs, all labels", "heldout": "held-out among held-out", "heldout_vs_all": "held-out among all"}


def original_world(world):
    """The same world (vocabulary, size, held-out pairs) drawn the original way (`variation="grid"`):
    its test set is the in-distribution row every model is compared on, as ImageNet's is."""
    from dataclasses import replace

    from clipkit.data.shapes import ShapesWorld

    if world.config.variation == "grid":
        return world
    return ShapesWorld(replace(world.config, variation="grid"))


def suite_accuracy(model, world, suite, classifier: torch.Tensor, n: int, seed: int, batch_size: int = 256) -> dict[str, float]:
    """Top-1 of `model` on `n` images of each split of one suite, scored against `classifier`
    ([len(world.pairs), D], class-major as `world.class_names`): {"seen", "heldout", "heldout_vs_all"}."""
    heldout_ids = torch.from_numpy(world.pair_ids("heldout"))
    scores = {}
    for split in ("train", "heldout"):
        sample = draw_suite(world, suite, n, seed=seed, split=split)
        logits = zeroshot_logits(embed_images(model, sample.images, batch_size).cpu(), classifier.cpu())  # [n, pairs]
        if split == "train":
            scores["seen"] = topk_accuracy(logits, sample.labels, ks=(1,))["top1"]
            continue
        scores["heldout_vs_all"] = topk_accuracy(logits, sample.labels, ks=(1,))["top1"]
        remap = torch.full((len(world.pairs),), -1, dtype=torch.long)
        remap[heldout_ids] = torch.arange(len(heldout_ids))
        scores["heldout"] = topk_accuracy(logits[:, heldout_ids], remap[sample.labels], ks=(1,))["top1"]
    return scores


def evaluate_suites(
    model,
    world,
    suites: Sequence[str] | None = None,
    n: int = 256,
    seed: int = 0,
    templates: Sequence[str] = TEMPLATES["shapes"],
    batch_size: int = 256,
) -> dict[str, float]:
    """Zero-shot top-1 of `model` (any CLIPBase) on `world` (a ShapesWorld) in distribution and on
    each of `suites` (names in clipkit.data.shifts.SUITES; default all), `n` images per split.

    Keys `<row>_seen_top1`, `<row>_heldout_top1`, `<row>_heldout_vs_all_top1` for row
    "in_distribution" (`world`'s own test images: pass `original_world(world)` to compare models
    trained in other worlds on one test set) and each suite. The prompts are the shapes world's (`TEMPLATES["shapes"]`),
    as training evaluates. The model is evaluated in eval mode without gradients; its mode is restored.
    """
    names = list(SUITES) if suites is None else list(suites)
    unknown = [name for name in names if name not in SUITES]
    if unknown:
        raise ValueError(f"unknown shift suites {unknown}: choose among {list(SUITES)}")
    results: dict[str, float] = {}
    with model.evaluating():
        own = compositional_zeroshot(model, world, n=n, seed=1000 + seed, templates=templates, batch_size=batch_size)
        own_figures = {"seen": own["seen"], "heldout": own["heldout_vs_heldout"], "heldout_vs_all": own["heldout_vs_all"]}
        results.update({f"{IN_DISTRIBUTION}_{column}_top1": own_figures[column] for column in COLUMNS})
        classifier = zeroshot_classifier(model, world.class_names, templates, batch_size)
        for name in names:
            scores = suite_accuracy(model, world, name, classifier, n, seed, batch_size)
            results.update({f"{name}_{column}_top1": scores[column] for column in COLUMNS})
    return results


def result_rows(results: dict[str, float]) -> list[str]:
    """The row names in `results` (in distribution first, then the suites in the order evaluated)."""
    suffix = f"_{COLUMNS[0]}_top1"
    return [key[: -len(suffix)] for key in results if key.endswith(suffix)]


def robustness_table(results: dict[str, float] | dict[str, dict[str, float]]) -> str:
    """`evaluate_suites` results as a text table, one row per suite, with a legend of the columns.
    Pass {label: results, ...} to put several models (training worlds) side by side."""
    runs = results if results and all(isinstance(value, dict) for value in results.values()) else {"": results}
    rows = result_rows(next(iter(runs.values())))
    width = max(len(row) for row in rows + ["pictures"])
    cell = 9
    group = len(COLUMNS) * cell
    lines = []
    if any(runs):
        lines.append(" " * width + "".join(f" | {label:^{group}}" for label in runs))
    lines.append(f"{'pictures':<{width}}" + "".join(" | " + "".join(f"{COLUMN_SHORT[c]:>{cell}}" for c in COLUMNS) for _ in runs))
    lines.append("-" * len(lines[-1]))
    for row in rows:
        values = (" | " + "".join(f"{run.get(f'{row}_{c}_top1', float('nan')):>{cell}.3f}" for c in COLUMNS) for run in runs.values())
        lines.append(f"{row:<{width}}" + "".join(values))
    lines.append("; ".join(f"{COLUMN_SHORT[c]}: {COLUMN_TITLES[c]}" for c in COLUMNS) + " (zero-shot top-1)")
    return "\n".join(lines)


def shift_average(results: dict[str, float], column: str = "seen", exclude: Sequence[str] = (IN_DISTRIBUTION,)) -> float:
    """Mean of `column` top-1 over the suites in `results` (the in-distribution row left out): the
    "accuracy under shift" axis of an effective-robustness plot."""
    values = [results[f"{row}_{column}_top1"] for row in result_rows(results) if row not in exclude]
    if not values:
        raise ValueError("results hold no shift suite: evaluate_suites(model, world, suites=[...]) with at least one")
    return sum(values) / len(values)
