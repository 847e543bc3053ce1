"""Contrastive losses, as pure functions of the logits (no state, no modules).

CLIP scores every image of a batch against every caption: `logits_per_image[i, j]` is the scaled
cosine similarity of image i and caption j, and the training signal is "pick your own partner out
of the batch", in both directions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _check_square(logits_per_image: torch.Tensor, logits_per_text: torch.Tensor | None) -> None:
    if logits_per_image.ndim != 2 or logits_per_image.shape[0] != logits_per_image.shape[1]:
        raise ValueError(
            f"expected square logits [batch, batch] (image i is paired with caption i), got {tuple(logits_per_image.shape)}: "
            "encode the same number of images and captions, one caption per image"
        )
    if logits_per_text is not None and logits_per_text.shape != logits_per_image.shape:
        raise ValueError(
            f"logits_per_text has shape {tuple(logits_per_text.shape)} but logits_per_image has "
            f"{tuple(logits_per_image.shape)}: pass the transpose, or leave logits_per_text out"
        )


def clip_loss(logits_per_image: torch.Tensor, logits_per_text: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP's loss) for a batch of N matched pairs.

        L = 1/2 [ -1/N sum_i log softmax_j(logits_per_image[i, :])[i]
                  -1/N sum_j log softmax_i(logits_per_text[j, :])[j] ]

    i.e. the mean of two cross-entropies whose target for row i is column i. `logits_per_text`
    defaults to `logits_per_image.T` (they differ only when computed separately, as in open_clip).
    At initialisation the logits are nearly equal, so each softmax is about uniform and the loss
    is about ln N.
    """
    _check_square(logits_per_image, logits_per_text)
    if logits_per_text is None:
        logits_per_text = logits_per_image.T
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device)
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2


def positives_from_groups(
    image_groups: torch.Tensor | Sequence, text_groups: torch.Tensor | Sequence | None = None, device=None
) -> torch.Tensor:
    """The truth table P[i, j] = [image_groups[i] == text_groups[j]], bool [N images, N texts].

    Labels may be any hashables (class names, caption strings) or an integer tensor; equal labels
    mean "describes the same thing", so those pairs are positives, not negatives. `text_groups`
    defaults to `image_groups` (caption i belongs to image i's group).
    """
    labels: dict = {}  # shared by both sides so equal labels get equal ids
    image_ids = _group_ids(image_groups, "image_groups", labels, device)
    text_ids = image_ids if text_groups is None else _group_ids(text_groups, "text_groups", labels, device)
    return image_ids[:, None] == text_ids[None, :]  # [N images, N texts]


def _group_ids(groups: torch.Tensor | Sequence, name: str, index: dict, device) -> torch.Tensor:
    if not isinstance(groups, torch.Tensor):
        groups = torch.tensor([index.setdefault(label, len(index)) for label in groups], dtype=torch.long)
    if groups.ndim != 1:
        raise ValueError(f"{name} has shape {tuple(groups.shape)}: give one group label per item")
    return groups.to(device) if device is not None else groups


def multi_positive_clip_loss(
    logits_per_image: torch.Tensor,
    image_groups: torch.Tensor | Sequence,
    text_groups: torch.Tensor | Sequence | None = None,
) -> torch.Tensor:
    """CLIP's loss where every pair with equal group labels counts as a positive.

    With a small vocabulary, two images in a batch often have the same caption (or class); plain
    InfoNCE then pushes image i away from caption j even though it describes image i just as well
    (a false negative). Here the target of each row is spread uniformly over its positives:

        P[i, j] = [image_groups[i] == text_groups[j]]
        L = 1/2 [ -1/N sum_i sum_j P[i, j] / sum_k P[i, k]  log softmax_j(logits[i, :])[j]
                  -1/N sum_j sum_i P[i, j] / sum_k P[k, j]  log softmax_i(logits[:, j])[i] ]

    `text_groups` defaults to `image_groups` (caption i belongs to image i's group). When all
    labels are distinct, P is the identity and this equals `clip_loss`.
    """
    _check_square(logits_per_image, None)
    positives = positives_from_groups(image_groups, text_groups, logits_per_image.device)
    if positives.shape != logits_per_image.shape:
        raise ValueError(
            f"{positives.shape[0]} image and {positives.shape[1]} text group labels for logits of shape "
            f"{tuple(logits_per_image.shape)}: give one group label per item (each image and each caption)"
        )
    if not (bool(positives.any(dim=1).all()) and bool(positives.any(dim=0).all())):
        raise ValueError(
            "some images or captions have no positive in the batch: label caption j with the group of the image it "
            "describes (with text_groups=None every item is its own pair's positive)"
        )
    return clip_loss_with_positives(logits_per_image, positives)


def clip_loss_with_positives(logits_per_image: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """CLIP's loss for any image-caption truth table, including captions that match no image.

    `logits_per_image` is [N images, T captions] with T >= N allowed; `positives[i, j]` says caption
    j describes image i. Extra columns with no positive are hard negatives (e.g. a caption with its
    colours swapped): they compete in each image's softmax but have no image to pick themselves.

        image -> text: every row, target uniform over its positives (each image needs one);
        text -> image: the columns with at least one positive, target uniform over their images.

    With `positives` the identity this is `clip_loss`; with equal-group masks it is
    `multi_positive_clip_loss`.
    """
    if logits_per_image.ndim != 2 or positives.shape != logits_per_image.shape:
        raise ValueError(
            f"expected logits [images, captions] and a positives mask of the same shape, got "
            f"{tuple(logits_per_image.shape)} and {tuple(positives.shape)}"
        )
    positives = positives.to(device=logits_per_image.device, dtype=logits_per_image.dtype)
    per_image = positives.sum(dim=1, keepdim=True)
    if bool((per_image == 0).any()):
        raise ValueError(
            "some images have no positive caption: every row of `positives` needs at least one True "
            "(the caption of that image)"
        )
    image_to_text = F.cross_entropy(logits_per_image, positives / per_image)
    described = positives.sum(dim=0) > 0  # captions that describe some image of the batch
    columns = positives[:, described]  # [N, T'] with T' <= T
    text_to_image = F.cross_entropy(logits_per_image[:, described].T, (columns / columns.sum(dim=0, keepdim=True)).T)
    return (image_to_text + text_to_image) / 2
