"""Checked, L2-normalised embedding rows and exact top-k search in bounded memory: what the index and
the retrieval metrics share."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

def checked_rows(
    values: Any, dim: int | None, what: str, against: str = "the index"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate embeddings/queries; return them as float32 [rows, dim] with their L2 norms [rows, 1].

    A single vector [D] becomes one row. Everything a search could silently get wrong
    (empty input, wrong width, NaN, zero vectors with no direction) is an error here.
    """
    tensor = torch.as_tensor(values).detach()
    if tensor.dtype == torch.bool or tensor.is_complex():
        raise TypeError(f"{what} must be real numbers, got dtype {tensor.dtype}.")
    if tensor.ndim == 1:
        tensor = tensor.unsqueeze(0)  # [D] -> [1, D]
    if tensor.ndim != 2:
        raise ValueError(f"{what} must have shape [N, D] or [D], got {tuple(tensor.shape)}.")
    if tensor.shape[0] == 0:
        raise ValueError(f"{what} is empty (shape {tuple(tensor.shape)}); pass at least one vector.")
    if dim is not None and tensor.shape[1] != dim:
        raise ValueError(
            f"{what} have dimension {tensor.shape[1]} but {against} has dimension {dim}; "
            f"embed both with the same model."
        )
    tensor = tensor.float()
    # One pass for the norms doubles as the NaN/inf check: any non-finite entry makes its row's norm non-finite.
    norms = tensor.norm(dim=1, keepdim=True)  # [N, 1]
    if not bool(torch.isfinite(norms).all()):
        row = int((~torch.isfinite(norms[:, 0])).nonzero()[0])
        if bool(torch.isfinite(tensor[row]).all()):
            raise ValueError(f"{what} row {row} is too large to normalise in float32; rescale the embeddings.")
        raise ValueError(
            f"{what} row {row} contains NaN or inf; check the encoder output (a diverged model or "
            f"an all-padding caption) before indexing it."
        )
    if not bool((norms > 0).all()):
        row = int((norms[:, 0] == 0).nonzero()[0])
        raise ValueError(f"{what} row {row} is all zeros, which has no direction for cosine similarity.")
    return tensor, norms


def unit_rows(values: Any, dim: int | None, what: str, against: str = "the index") -> torch.Tensor:
    """Validated, L2-normalised float32 [rows, dim]: see `checked_rows`."""
    tensor, norms = checked_rows(values, dim, what, against)
    return tensor / norms


def check_items(items: Any, count: int) -> list[Any]:
    """Items must be one per vector and JSON-able, because `save` writes them as JSON."""
    if items is None:
        return [None] * count
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise TypeError(f"items must be a list with one entry per vector, got {type(items).__name__}.")
    items = list(items)
    if len(items) != count:
        raise ValueError(f"got {count} vectors but {len(items)} items; pass exactly one item per vector.")
    try:
        json.dumps(items)
    except (TypeError, ValueError):
        for position, item in enumerate(items):
            try:
                json.dumps(item)
            except (TypeError, ValueError) as error:
                raise TypeError(
                    f"item {position} ({type(item).__name__}) cannot be saved as JSON ({error}); "
                    f"store plain str/int/float/list/dict metadata such as a path or caption."
                ) from None
        raise
    return items


def exact_top_k(
    queries: torch.Tensor, vectors: torch.Tensor, k: int, max_score_elements: int = 2**24
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k inner products of `queries` [Q, D] against `vectors` [N, D], in bounded memory.

    The collection is scored a chunk of rows at a time and each chunk's top-k is merged into a
    running top-k, so memory stays at one [Q, chunk] score block (`max_score_elements` floats,
    64 MiB by default) however large N is. Large chunks keep the matmul efficient; the
    collection is read from memory once per query batch, so batching queries is much cheaper
    than searching them one by one.
    """
    count = vectors.shape[0]
    if not 0 < k <= count:
        raise ValueError(f"k must be between 1 and the number of vectors ({count}), got {k}.")
    rows_per_chunk = max(k, min(count, max_score_elements // max(1, queries.shape[0])))
    best_scores = best_indices = None
    for start in range(0, count, rows_per_chunk):
        chunk = vectors[start : start + rows_per_chunk]
        scores = queries @ chunk.T  # [Q, chunk]
        chunk_scores, chunk_indices = scores.topk(min(k, chunk.shape[0]), dim=1)
        chunk_indices += start
        if best_scores is None:
            best_scores, best_indices = chunk_scores, chunk_indices
            continue
        merged_scores = torch.cat([best_scores, chunk_scores], dim=1)  # [Q, 2k]
        merged_indices = torch.cat([best_indices, chunk_indices], dim=1)  # [Q, 2k]
        best_scores, order = merged_scores.topk(k, dim=1)
        best_indices = merged_indices.gather(1, order)
    return best_scores, best_indices
