"""Evaluation of what a model learnt from the training data: compositional zero-shot on the shapes
world (seen pairs, held-out pairs, calibrated), attribute binding, and the metrics training reports.

`evaluate_training_data(model, data, size)` is what the training loop logs: for the shapes world the
compositional zero-shot scores and caption retrieval recall, for a captioned set with labels its
zero-shot top-1 on the held-back split. The data layer only holds the data; the measuring is here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from clipkit.data.stream import CaptionedSource, ShapesSource, TrainingData
from clipkit.interface import embed_images, embed_texts
from clipkit.prompts import TEMPLATES, source_templates
from clipkit.search import retrieval_recall
from clipkit.zeroshot import (
    calibrated_logits,
    choose_gamma,
    evaluate_zeroshot,
    generalized_accuracy,
    topk_accuracy,
    zeroshot_classifier,
    zeroshot_logits,
)

# --- compositional probes on the shapes world --------------------------------------------------


def compositional_zeroshot(
    model, world, n: int = 512, seed: int = 1000, templates: Sequence[str] = TEMPLATES["shapes"], batch_size: int = 256
) -> dict[str, float]:
    """Zero-shot top-1 on one-object shapes images, the way notebook 06 and training report it:

    - `seen`: images of training pairs, labels = all pairs;
    - `heldout_vs_heldout`: images of held-out pairs, labels = held-out pairs only (classic zero-shot);
    - `heldout_vs_all`: the same images, labels = all pairs (generalised zero-shot, where seen pairs
      tempt the model), and `harmonic` of seen and held-out accuracy;
    - `gamma` chosen on a validation sample (seed + 1) and the calibrated `seen_calibrated`,
      `heldout_calibrated`, `harmonic_calibrated` on the test sample (seed).
    """
    classifier = zeroshot_classifier(model, world.class_names, templates, batch_size)
    seen_mask = torch.ones(len(world.pairs), dtype=torch.bool)
    heldout_ids = torch.from_numpy(world.pair_ids("heldout"))
    seen_mask[heldout_ids] = False

    def scored(sample_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        samples = [world.sample(n, seed=sample_seed, split=split, objects=1) for split in ("train", "heldout")]
        images = torch.cat([sample.images for sample in samples])
        labels = torch.cat([sample.labels for sample in samples])
        return zeroshot_logits(embed_images(model, images, batch_size).cpu(), classifier.cpu()), labels

    logits, labels = scored(seed)
    gamma, _ = choose_gamma(*scored(seed + 1), seen_mask)
    heldout = ~seen_mask[labels]
    heldout_only = logits[heldout][:, heldout_ids]  # [n_heldout_images, n_heldout_pairs]
    remap = torch.full((len(world.pairs),), -1, dtype=torch.long)
    remap[heldout_ids] = torch.arange(len(heldout_ids))
    plain = generalized_accuracy(logits, labels, seen_mask)
    calibrated = generalized_accuracy(calibrated_logits(logits, seen_mask, gamma), labels, seen_mask)
    return {
        "seen": plain["seen"],
        "heldout_vs_heldout": topk_accuracy(heldout_only, remap[labels[heldout]], ks=(1,))["top1"],
        "heldout_vs_all": plain["unseen"],
        "harmonic": plain["harmonic"],
        "gamma": gamma,
        "seen_calibrated": calibrated["seen"],
        "heldout_calibrated": calibrated["unseen"],
        "harmonic_calibrated": calibrated["harmonic"],
    }


def binding_accuracy(
    images: torch.Tensor, swapped_images: torch.Tensor, captions: torch.Tensor, swapped_captions: torch.Tensor
) -> dict[str, float]:
    """Attribute-binding scores from embeddings [N, D] of a `BindingProbe` (Winoground's scores):

    - `text`: each image scores its own caption above the swapped one (both images of every pair
      are asked); chance 0.5;
    - `image`: each caption scores its own image above the swapped one; chance 0.5;
    - `group`: all four comparisons of a pair right; chance 1/6 for random scores.
    A bag-of-words model sees the same words in both captions and sits near chance.
    """
    def cos(a, b):
        return (F.normalize(a.float(), dim=-1) * F.normalize(b.float(), dim=-1)).sum(dim=-1)  # [N]

    s_ii, s_is = cos(images, captions), cos(images, swapped_captions)  # image, own / swapped caption
    s_si, s_ss = cos(swapped_images, captions), cos(swapped_images, swapped_captions)
    text_right = torch.stack([s_ii > s_is, s_ss > s_si])  # [2, N]
    image_right = torch.stack([s_ii > s_si, s_ss > s_is])  # [2, N]
    return {
        "text": float(text_right.double().mean()),
        "image": float(image_right.double().mean()),
        "group": float((text_right.all(dim=0) & image_right.all(dim=0)).double().mean()),
    }


def binding_probe_accuracy(model, probe, batch_size: int = 256) -> dict[str, float]:
    """`binding_accuracy` of `model` on a `ShapesWorld.binding_probe(...)`."""
    if len(probe) == 0:
        raise ValueError("the binding probe is empty: sample it with world.binding_probe(n) for n >= 1")
    return binding_accuracy(
        embed_images(model, probe.images, batch_size),
        embed_images(model, probe.swapped_images, batch_size),
        embed_texts(model, probe.captions, batch_size),
        embed_texts(model, probe.swapped_captions, batch_size),
    )


# --- what training reports ---------------------------------------------------------------------


def evaluate_shapes(model, source: ShapesSource, size: int) -> dict[str, float]:
    """Compositional zero-shot (`compositional_zeroshot`, `size` images per split), caption
    retrieval recall on `size` fresh train-split images (keys `text_to_image_r@k`, `image_to_text_r@k`)
    and the binding probe on `size` pairs of seen pairs (`binding_text`, `binding_image`, `binding_group`)."""
    scores = compositional_zeroshot(model, source.world, n=size, seed=1000, templates=source_templates(source))
    sample = source.world.sample(size, seed=2000, split="train")
    recall = retrieval_recall(
        embed_images(model, sample.images), embed_texts(model, sample.captions), torch.arange(size)
    )
    binding = binding_probe_accuracy(model, source.world.binding_probe(size, seed=3000, split="train"))
    return {**scores, **{key.replace("_recall", "_r"): value for key, value in recall.items()},
            **{f"binding_{key}": value for key, value in binding.items()}}


def evaluate_captioned(model, source: CaptionedSource) -> dict[str, float]:
    """Zero-shot top-1 on the source's held-back labelled split (`<name>_top1`); {} without one."""
    held_back = source.eval_dataset
    if held_back is None or held_back.labels is None:
        return {}
    report = evaluate_zeroshot(model, held_back.images, held_back.labels, held_back.class_names, source_templates(source))
    return {f"{source.name}_top1": report.top1}


def evaluate_training_data(model, data: TrainingData, size: int = 256) -> dict[str, float]:
    """The metrics of every source of `data`, in eval mode without gradients (the model's mode is
    restored): what training logs at each evaluation."""
    metrics: dict[str, float] = {}
    with model.evaluating():
        for source in data.sources:
            if isinstance(source, ShapesSource):
                metrics.update(evaluate_shapes(model, source, size))
            elif isinstance(source, CaptionedSource):
                metrics.update(evaluate_captioned(model, source))
            else:
                raise TypeError(f"no evaluation for a {type(source).__name__} source: add one to clipkit.evaluate")
    return metrics
