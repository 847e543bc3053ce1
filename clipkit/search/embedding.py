"""Search with a model: index a collection of images, then query it with captions or images.

Any clipkit model (`clipkit.interface.CLIPBase`) embeds through `embed_images` / `embed_texts`,
so the same helpers serve MiniCLIP, open_clip models and LiT.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from clipkit.interface import CLIPBase, embed_images, embed_texts
from clipkit.search.index import EmbeddingIndex, SearchResult
from clipkit.search.vectors import check_items

def index_images(
    model: CLIPBase,
    images: Sequence[Any] | torch.Tensor,
    items: Sequence[Any] | None = None,
    batch_size: int = 256,
    progress: bool = True,
    index: EmbeddingIndex | None = None,
    backend: str = "torch",
    device: str | torch.device | None = None,
) -> EmbeddingIndex:
    """Embed `images` (a list of PIL images, or a uint8/float tensor [N, 3, H, W]) in batches
    and add them, with `items`, to `index` (a new one with `backend`/`device` when None).

    A tqdm bar shows progress; batching here (besides inside `embed_images`) is what lets it move.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    count = len(images)
    if count == 0:
        raise ValueError("no images to index; pass a non-empty list or tensor of images.")
    items = check_items(items, count)
    batches = tqdm(range(0, count, batch_size), desc="indexing images", unit="batch", disable=not progress)
    for start in batches:
        embeddings = embed_images(model, images[start : start + batch_size], batch_size=batch_size)
        if index is None:
            index = EmbeddingIndex(int(embeddings.shape[-1]), backend=backend, device=device)
        index.add(embeddings, items[start : start + batch_size])
    return index


def search_text(index: EmbeddingIndex, model: CLIPBase, query: str | Sequence[str], k: int = 5) -> SearchResult:
    """Images whose embeddings best match a caption (or each caption of a list)."""
    texts = [query] if isinstance(query, str) else list(query)
    if not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError("query must be a caption or a non-empty list of captions (strings).")
    return index.search(embed_texts(model, texts), k)


def search_image(index: EmbeddingIndex, model: CLIPBase, image: Any, k: int = 5) -> SearchResult:
    """Nearest neighbours of an image: a PIL image, a tensor [3, H, W], or a batch of either."""
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        image = image.unsqueeze(0)  # [3, H, W] -> [1, 3, H, W]
    elif not isinstance(image, (torch.Tensor, list, tuple)):
        image = [image]
    return index.search(embed_images(model, image), k)

