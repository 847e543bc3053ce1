"""Open-vocabulary retrieval: queries worded unlike any training caption, what each should find,
and precision/recall@k of a model's answers.

Emoji relevance comes from Unicode's own grouping of the code points (Food & Drink, Animals &
Nature blocks), fashion relevance from the class labels. Plain data: add a query by adding a line.
Notebook 07 measures with it how much a frozen sentence-model text tower (`clipkit.lit`) buys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

EMOJI_GROUPS: dict[str, tuple[tuple[int, int], ...]] = {
    "food": (
        (0x1F32D, 0x1F330), (0x1F336, 0x1F336), (0x1F33D, 0x1F33D), (0x1F344, 0x1F372), (0x1F37F, 0x1F37F),
        (0x1F950, 0x1F961), (0x1F965, 0x1F96F), (0x1F9C0, 0x1F9C1), (0x1F9C4, 0x1F9C8), (0x1FAD0, 0x1FAD5),
        (0x1FAD8, 0x1FAD8),
    ),
    "drink": (
        (0x2615, 0x2615), (0x1F375, 0x1F37C), (0x1F37E, 0x1F37E), (0x1F95B, 0x1F95B), (0x1F964, 0x1F964),
        (0x1F9C3, 0x1F9C3), (0x1F9C9, 0x1F9C9), (0x1F9CB, 0x1F9CB), (0x1FAD6, 0x1FAD6),
    ),
    "animal": ((0x1F400, 0x1F43D), (0x1F43F, 0x1F43F), (0x1F980, 0x1F99F), (0x1F9A1, 0x1F9AE)),
    "plant": ((0x1F331, 0x1F335), (0x1F337, 0x1F33C), (0x1F33F, 0x1F343)),
}

OPEN_VOCAB_QUERIES: dict[str, dict[str, tuple[str, ...]]] = {
    "emoji": {
        "something to eat": ("food",),
        "a tasty snack": ("food",),
        "a meal": ("food",),
        "an animal": ("animal",),
        "a wild creature": ("animal",),
        "something to drink": ("drink",),
        "a beverage": ("drink",),
        "a plant": ("plant",),
    },
    "fashion-mnist": {
        "footwear": ("sandal", "sneaker", "ankle boot"),
        "shoes": ("sandal", "sneaker", "ankle boot"),
        "something to wear on your feet": ("sandal", "sneaker", "ankle boot"),
        "pants": ("pair of trousers",),
        "jeans": ("pair of trousers",),
        "a sweater": ("pullover",),
        "a jacket": ("coat",),
        "a gown": ("dress",),
        "a purse": ("bag",),
    },
}


def emoji_relevance(characters: Sequence[str], groups: Sequence[str]) -> torch.Tensor:
    """bool [N]: which emoji fall in any of `groups` (keys of EMOJI_GROUPS)."""
    unknown = [group for group in groups if group not in EMOJI_GROUPS]
    if unknown:
        raise ValueError(f"unknown emoji groups {unknown}; known: {sorted(EMOJI_GROUPS)}")
    ranges = [span for group in groups for span in EMOJI_GROUPS[group]]
    return torch.tensor([any(lo <= ord(c) <= hi for lo, hi in ranges) for c in characters], dtype=torch.bool)


def class_relevance(labels: torch.Tensor, class_names: Sequence[str], relevant_names: Sequence[str]) -> torch.Tensor:
    """bool [N]: which labelled images belong to any of `relevant_names`."""
    missing = [name for name in relevant_names if name not in class_names]
    if missing:
        raise ValueError(f"classes {missing} are not among {list(class_names)}")
    wanted = torch.tensor([class_names.index(name) for name in relevant_names])
    return torch.isin(torch.as_tensor(labels), wanted)


def precision_recall_at_k(scores: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (10,)) -> dict[str, torch.Tensor]:
    """Per query [Q]: precision@k (relevant share of the top k) and recall@k (share of the relevant
    found in the top k) for scores [Q, N] and relevance bool [Q, N]. A k beyond N counts all N."""
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and relevant {tuple(relevant.shape)} must both be [Q, N]")
    if not bool(relevant.any(dim=1).all()):
        raise ValueError("every query needs at least one relevant item, or its recall is undefined")
    ranked = relevant.gather(1, scores.argsort(dim=1, descending=True)).double()  # [Q, N], relevance in rank order
    found = ranked.cumsum(dim=1)  # [Q, N]: relevant items within the first j + 1
    result = {}
    for k in ks:
        column = min(int(k), scores.shape[1]) - 1
        result[f"precision@{k}"] = found[:, column] / (column + 1)
        result[f"recall@{k}"] = found[:, column] / relevant.sum(dim=1)
    return result


@torch.no_grad()
def open_vocab_eval(
    model, image_embeddings: torch.Tensor, queries: Sequence[str], relevant: torch.Tensor, ks: Sequence[int] = (10,)
) -> dict[str, Any]:
    """Precision/recall@k of text queries against a gallery's embeddings [N, D]; `relevant` is [Q, N].

    Returns the means over queries ({"precision@10": ...}) and "per_query": one row per query.
    """
    from clipkit.interface import embed_texts

    text = embed_texts(model, list(queries)).to(image_embeddings.device)
    scores = text @ F.normalize(image_embeddings.float(), dim=-1).T  # [Q, N]
    per_query = precision_recall_at_k(scores.cpu(), relevant.cpu(), ks)
    rows = [{"query": query, **{name: float(values[q]) for name, values in per_query.items()}} for q, query in enumerate(queries)]
    return {**{name: float(values.mean()) for name, values in per_query.items()}, "per_query": rows}
