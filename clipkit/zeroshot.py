"""Zero-shot classification: class names in sentences become a linear classifier over image embeddings.

CLIP never sees a label during training, yet it classifies: put each class name into a caption
("a photo of a {}"), embed the captions with the text tower, and the class whose caption is nearest
an image's embedding wins. The CLIP paper (Radford et al., 2021, section 3.1.4) embeds every class
through many templates, L2-normalises each, averages them and normalises again: the "prompt
ensemble" that `zeroshot_classifier` builds from the templates in `clipkit.prompts`.

Scoring and metrics (`zeroshot_logits`, `topk_accuracy`, `per_class_accuracy`, `confusion_matrix`,
`calibrated_logits`) are pure functions of tensors; only `zeroshot_classifier`,
`evaluate_zeroshot` and `compare_templates` run a model, always through `clipkit.interface.embed_texts`
/ `embed_images`, which run it in `model.evaluating()` (eval mode, no gradients, mode restored). The compositional probes of the shapes
world (held-out pairs, attribute binding) live in `clipkit.evaluate`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from clipkit.interface import embed_images, embed_texts
from clipkit.prompts import DEFAULT_TEMPLATES, check_templates, class_prompts


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    """A non-empty list of distinct strings; duplicates are an error because two rows of the
    classifier would be identical and accuracy on either class meaningless."""
    if isinstance(class_names, str):
        raise TypeError(f"class_names must be a list of names, got the single string {class_names!r}; wrap it in a list")
    names = list(class_names)
    if not names:
        raise ValueError("class_names is empty: pass at least one class name (two for a classifier that can choose)")
    not_strings = [name for name in names if not isinstance(name, str)]
    if not_strings:
        raise TypeError(f"class names must be strings, got {not_strings[:5]!r}")
    blank = [index for index, name in enumerate(names) if not name.strip()]
    if blank:
        raise ValueError(f"class names at positions {blank[:5]} are blank: give every class a name")
    repeated = sorted(name for name, count in Counter(names).items() if count > 1)
    if repeated:
        raise ValueError(
            f"class_names repeats {repeated[:5]}: each class needs a distinct name, or two classes get the same "
            f"weights; de-duplicate with list(dict.fromkeys(class_names)) and remap the labels"
        )
    return names


def zeroshot_classifier(
    model, class_names: Sequence[str], templates: Sequence[str] = DEFAULT_TEMPLATES, batch_size: int = 256
) -> torch.Tensor:
    """Classifier weights [C, D]: each class name embedded through every template, the L2-normalised
    embeddings averaged over templates and normalised again (the CLIP paper's prompt ensemble).

    Prompts are made by `class_prompts`. A name longer than the tokenizer's context is cut, with the
    tokenizer's TextTruncatedWarning. Works with any model `clipkit.interface.embed_texts` accepts.
    """
    names = _check_class_names(class_names)
    templates = check_templates(templates)
    by_template = [class_prompts(names, template) for template in templates]
    prompts = [by_template[t][c] for c in range(len(names)) for t in range(len(templates))]  # class-major
    embeddings = embed_texts(model, prompts, batch_size=batch_size)  # [C * T, D], unit rows
    embeddings = embeddings.view(len(names), len(templates), -1)  # [C * T, D] -> [C, T, D]
    return F.normalize(embeddings.mean(dim=1), dim=-1)


def zeroshot_logits(image_embeddings: torch.Tensor, classifier: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Cosine similarities [N, C] of images [N, D] to class weights [C, D], times `scale`
    (pass `model.logit_scale_exp()` for CLIP's softmax temperature; argmax is the same either way)."""
    if image_embeddings.ndim != 2 or classifier.ndim != 2:
        raise ValueError(
            f"expected image embeddings [N, D] and a classifier [C, D], got {tuple(image_embeddings.shape)} "
            f"and {tuple(classifier.shape)}"
        )
    if image_embeddings.shape[1] != classifier.shape[1]:
        raise ValueError(
            f"image embeddings have width {image_embeddings.shape[1]} but the classifier {classifier.shape[1]}: "
            "build both with the same model"
        )
    images = F.normalize(image_embeddings.float(), dim=-1)
    weights = F.normalize(classifier.float().to(images.device), dim=-1)
    return scale * images @ weights.T  # [N, C]


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """{"top1": ..., "top5": ...}: the fraction of rows whose label is among the k highest logits.

    A k larger than the number of classes counts every class (accuracy 1.0), as open_clip does.
    """
    labels = torch.as_tensor(labels, device=logits.device)
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"expected logits [N, C] and labels [N], got {tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("no rows to score: logits and labels are empty")
    if labels.dtype.is_floating_point or bool((labels < 0).any()) or bool((labels >= logits.shape[1]).any()):
        raise ValueError(f"labels must be integer class indices in [0, {logits.shape[1]}), the number of classes")
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive ints, got {ks!r}")
    ranked = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices  # [N, k]
    hits = (ranked == labels[:, None]).cumsum(dim=1) > 0  # [N, k]: label within the first j + 1
    return {f"top{k}": float(hits[:, min(k, hits.shape[1]) - 1].float().mean()) for k in ks}


# --- evaluation ----------------------------------------------------------------------------------


def confusion_matrix(labels: torch.Tensor, predictions: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts [C, C]: row = true class, column = predicted class."""
    labels, predictions = torch.as_tensor(labels).long().cpu(), torch.as_tensor(predictions).long().cpu()
    if labels.shape != predictions.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and predictions {tuple(predictions.shape)} must match")
    flat = torch.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return flat.view(num_classes, num_classes)  # [C * C] -> [C, C]


def per_class_accuracy(confusion: torch.Tensor) -> torch.Tensor:
    """Top-1 accuracy of each true class [C] from a confusion matrix; NaN for classes with no images."""
    counts = confusion.sum(dim=1).double()
    return torch.where(counts > 0, confusion.diagonal().double() / counts.clamp(min=1), torch.nan)


@dataclass
class ZeroShotReport:
    """What `evaluate_zeroshot` (or `report_from_logits`) measured on one labelled image set."""

    accuracy: dict[str, float]  # {"top1": ..., "top5": ...}
    per_class: torch.Tensor  # [C] top-1 accuracy of each class, NaN where a class has no images
    predictions: torch.Tensor  # [N] argmax class of each image
    confusion: torch.Tensor  # [C, C] counts, row = true class, column = predicted
    logits: torch.Tensor  # [N, C] the scores predictions came from
    class_names: list[str]  # names of the C classes, in classifier order

    @property
    def top1(self) -> float:
        return self.accuracy["top1"]

    @property
    def top5(self) -> float | None:
        return self.accuracy.get("top5")

    def worst_classes(self, count: int = 5) -> list[tuple[str, float]]:
        """The `count` classes with the lowest accuracy (classes without images left out)."""
        scored = [(name, float(a)) for name, a in zip(self.class_names, self.per_class) if not torch.isnan(a)]
        return sorted(scored, key=lambda item: item[1])[:count]


def report_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str], ks: Sequence[int] = (1, 5)
) -> ZeroShotReport:
    """A `ZeroShotReport` for precomputed scores [N, C] (e.g. after `calibrated_logits`)."""
    names = _check_class_names(class_names)
    if logits.ndim != 2 or logits.shape[1] != len(names):
        raise ValueError(f"logits {tuple(logits.shape)} must have one column per class name ({len(names)})")
    logits, labels = logits.detach().cpu(), torch.as_tensor(labels).long().cpu()
    predictions = logits.argmax(dim=1)
    confusion = confusion_matrix(labels, predictions, len(names))
    return ZeroShotReport(
        accuracy=topk_accuracy(logits, labels, ks),
        per_class=per_class_accuracy(confusion),
        predictions=predictions,
        confusion=confusion,
        logits=logits,
        class_names=names,
    )


def evaluate_zeroshot(
    model,
    images,
    labels: torch.Tensor,
    class_names: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    ks: Sequence[int] = (1, 5),
    batch_size: int = 256,
) -> ZeroShotReport:
    """Zero-shot top-k, per-class accuracy and confusion of `model` on labelled `images`
    (anything `clipkit.interface.embed_images` takes: uint8 or float tensors, a PIL list)."""
    classifier = zeroshot_classifier(model, class_names, templates, batch_size)
    image_embeddings = embed_images(model, images, batch_size=batch_size)
    return report_from_logits(zeroshot_logits(image_embeddings, classifier), labels, class_names, ks)


def compare_templates(
    model, images, labels: torch.Tensor, class_names: Sequence[str], templates: Sequence[str], batch_size: int = 256
) -> list[dict]:
    """Top-1 accuracy of each template alone and of their ensemble, on the same images.

    Rows {"template": ..., "top1": ...}, the ensemble last as "ensemble of N"; images are embedded once.
    """
    templates = check_templates(templates)
    image_embeddings = embed_images(model, images, batch_size=batch_size)

    def top1(chosen: Sequence[str]) -> float:
        classifier = zeroshot_classifier(model, class_names, chosen, batch_size)
        return topk_accuracy(zeroshot_logits(image_embeddings, classifier), labels, ks=(1,))["top1"]

    rows = [{"template": template, "top1": top1([template])} for template in templates]
    rows.append({"template": f"ensemble of {len(templates)}", "top1": top1(templates)})
    return rows


def plot_confusion(
    confusion: torch.Tensor, class_names: Sequence[str], normalize: bool = True, title: str | None = None, ax=None
):
    """Draw a confusion matrix (rows = true class) as an image; returns the matplotlib Figure.

    `normalize` shows each row as fractions of its class, so rare and common classes compare.
    Tick labels are drawn for up to 40 classes; beyond that they would overlap.
    """
    import matplotlib.pyplot as plt

    values = confusion.double()
    if normalize:
        values = values / values.sum(dim=1, keepdim=True).clamp(min=1)
    count = len(class_names)
    if ax is None:
        side = min(12.0, 2.0 + 0.35 * count)
        _, ax = plt.subplots(figsize=(side, side))
    shown = ax.imshow(values.numpy(), cmap="Blues", vmin=0, vmax=1 if normalize else None)
    ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.04)
    if count <= 40:
        ax.set_xticks(range(count), list(class_names), rotation=90, fontsize=7)
        ax.set_yticks(range(count), list(class_names), fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    ax.figure.tight_layout()
    return ax.figure


# --- generalised zero-shot and calibrated stacking ------------------------------------------------
# With seen and unseen classes among the labels ("generalised zero-shot"), a model prefers what it
# was trained on: held-out colour-shape pairs lose to seen pairs sharing a word. Calibrated stacking
# (Chao et al., 2016) subtracts a constant gamma from every seen class's score; gamma is chosen on a
# validation split to balance seen and unseen accuracy (their harmonic mean, Xian et al., 2017).


def calibrated_logits(logits: torch.Tensor, seen_mask: torch.Tensor, gamma: float) -> torch.Tensor:
    """`logits` [N, C] with `gamma` subtracted from the columns of seen classes (`seen_mask` [C], bool)."""
    seen_mask = torch.as_tensor(seen_mask, device=logits.device)
    if seen_mask.dtype != torch.bool or seen_mask.shape != (logits.shape[-1],):
        raise ValueError(
            f"seen_mask must be a bool tensor with one entry per class ({logits.shape[-1]}), "
            f"got dtype {seen_mask.dtype}, shape {tuple(seen_mask.shape)}"
        )
    return logits - gamma * seen_mask.to(logits.dtype)


def generalized_accuracy(logits: torch.Tensor, labels: torch.Tensor, seen_mask: torch.Tensor) -> dict[str, float]:
    """Top-1 over all classes, split by whether an image's true class is seen:
    {"seen": ..., "unseen": ..., "harmonic": ...} (harmonic mean; 0 when either is 0; NaN when a group is empty)."""
    labels = torch.as_tensor(labels, device=logits.device).long()
    seen_mask = torch.as_tensor(seen_mask, device=logits.device)
    correct = (logits.argmax(dim=1) == labels).double()
    is_seen = seen_mask[labels]
    seen = float(correct[is_seen].mean()) if bool(is_seen.any()) else float("nan")
    unseen = float(correct[~is_seen].mean()) if bool((~is_seen).any()) else float("nan")
    harmonic = 2 * seen * unseen / (seen + unseen) if seen + unseen > 0 else 0.0
    return {"seen": seen, "unseen": unseen, "harmonic": harmonic}


def choose_gamma(
    logits: torch.Tensor, labels: torch.Tensor, seen_mask: torch.Tensor, gammas: Sequence[float] | None = None
) -> tuple[float, list[dict]]:
    """The calibration gamma with the best harmonic mean of seen and unseen accuracy on a validation
    split (its logits [N, C], labels [N], holding images of both kinds), and the whole sweep as rows
    {"gamma", "seen", "unseen", "harmonic"}. Ties go to the smallest gamma. Default grid: 41 steps
    from 0 to the spread of the logits."""
    if gammas is None:
        spread = float(logits.max() - logits.min())
        gammas = torch.linspace(0, spread, 41).tolist()
    rows = [
        {"gamma": float(gamma), **generalized_accuracy(calibrated_logits(logits, seen_mask, gamma), labels, seen_mask)}
        for gamma in gammas
    ]
    if not rows:
        raise ValueError("gammas is empty: pass candidate values, or None for the default grid")
    best = max(rows, key=lambda row: (row["harmonic"], -row["gamma"]))
    return best["gamma"], rows
