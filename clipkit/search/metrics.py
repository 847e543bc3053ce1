"""Retrieval recall: R@k both ways for paired image/caption sets, as CLIP papers report it."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from clipkit.search.vectors import unit_rows, exact_top_k

def retrieval_recall(
    image_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    text_to_image: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    max_score_elements: int = 2**24,
) -> dict[str, float]:
    """Recall@k both ways for a set of images [I, D] and captions [T, D] by cosine similarity.

    `text_to_image[t]` is the image caption t describes; an image may own several captions.
    Text->image R@k: the fraction of captions whose image is among their k nearest images.
    Image->text R@k: the fraction of images with *any* of their captions among their k nearest
    captions (images owning no caption cannot be scored and are left out of that average).
    A k beyond the gallery size counts the whole gallery, i.e. recall 1, with a warning.
    Returns {"text_to_image_recall@k": ..., "image_to_text_recall@k": ...} as Python floats.
    """
    images = unit_rows(image_embeddings, None, "image_embeddings")
    texts = unit_rows(text_embeddings, images.shape[1], "text_embeddings", "image_embeddings")
    owners = torch.as_tensor(text_to_image).to(texts.device)
    if owners.dtype.is_floating_point or owners.dtype == torch.bool or owners.shape != (texts.shape[0],):
        raise ValueError(
            f"text_to_image must be an integer tensor with one image index per caption, shape "
            f"({texts.shape[0]},); got dtype {owners.dtype}, shape {tuple(owners.shape)}."
        )
    owners = owners.long()
    if bool((owners < 0).any()) or bool((owners >= images.shape[0]).any()):
        raise ValueError(f"text_to_image holds indices outside [0, {images.shape[0]}), the number of images.")
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive ints, got {ks!r}.")
    if ks[-1] > min(images.shape[0], texts.shape[0]):
        warnings.warn(
            f"k={ks[-1]} exceeds the gallery ({images.shape[0]} images, {texts.shape[0]} captions); "
            f"recall at such k counts the whole gallery.",
            stacklevel=2,
        )

    # Text -> image: is the caption's own image among its top k?
    _, nearest_images = exact_top_k(texts, images, min(ks[-1], images.shape[0]), max_score_elements)
    text_hit_rank = (nearest_images == owners[:, None]).cumsum(dim=1) > 0  # [T, k]: hit within first j+1

    # Image -> text: is any caption owned by the image among its top k?
    _, nearest_texts = exact_top_k(images, texts, min(ks[-1], texts.shape[0]), max_score_elements)
    image_ids = torch.arange(images.shape[0], device=images.device)
    image_hit_rank = (owners[nearest_texts] == image_ids[:, None]).cumsum(dim=1) > 0  # [I, k]
    has_caption = torch.bincount(owners, minlength=images.shape[0]) > 0

    recalls = {}
    for k in ks:
        text_column = min(k, text_hit_rank.shape[1]) - 1
        image_column = min(k, image_hit_rank.shape[1]) - 1
        recalls[f"text_to_image_recall@{k}"] = float(text_hit_rank[:, text_column].float().mean())
        image_hits = image_hit_rank[has_caption, image_column].float()
        recalls[f"image_to_text_recall@{k}"] = float(image_hits.mean())  # T >= 1, so some image has a caption
    return recalls
