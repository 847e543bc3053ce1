"""An embedding index for text-to-image and image-to-image search, and retrieval recall.

`EmbeddingIndex` holds L2-normalised vectors with one JSON-able item each (a caption, a path,
a label) and answers top-k queries by cosine similarity. Vectors are normalised on `add` and
queries on `search`, so the inner product the search computes *is* the cosine similarity and
scores lie in [-1, 1] whatever scale the encoder produced.

Exact search runs in torch, in chunks of the collection so that scoring a million vectors
never materialises a [Q, N] matrix; an optional faiss backend (IndexFlatIP, exact too) returns
the same neighbours. `retrieval_recall` is the standard R@k for paired image/caption sets.
"""

from __future__ import annotations

import json
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipkit.checkpoint import atomic_write

INDEX_FORMAT = "clipkit.search.EmbeddingIndex"
FORMAT_VERSION = 1
EMBEDDINGS_FILE = "embeddings.safetensors"
METADATA_FILE = "index.json"
BACKENDS = ("torch", "faiss")


@dataclass
class SearchResult:
    """Top-k neighbours for each of Q queries, best first."""

    scores: torch.Tensor  # [Q, k] cosine similarities, descending along each row
    indices: torch.Tensor  # [Q, k] int64 positions in the index (the order vectors were added)
    items: list[list[Any]]  # items[q][j] is the item stored with indices[q, j]

    def hits(self, query: int = 0) -> list[tuple[float, int, Any]]:
        """(score, index, item) for one query, best first: handy for printing and for Gradio tables."""
        return [
            (float(score), int(position), item)
            for score, position, item in zip(self.scores[query], self.indices[query], self.items[query])
        ]


def _checked_rows(
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


def _unit_rows(values: Any, dim: int | None, what: str, against: str = "the index") -> torch.Tensor:
    """Validated, L2-normalised float32 [rows, dim]: see `_checked_rows`."""
    tensor, norms = _checked_rows(values, dim, what, against)
    return tensor / norms


def _check_items(items: Any, count: int) -> list[Any]:
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


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "backend='faiss' needs the faiss package: `pip install faiss-cpu` (or faiss-gpu), "
            "or use the default backend='torch', which gives the same exact results."
        ) from error
    return faiss


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


class EmbeddingIndex:
    """Normalised embeddings plus one item each, searchable by cosine similarity.

    >>> index = EmbeddingIndex(dim=256)
    >>> index.add(image_embeddings, items=paths)          # normalised on the way in
    >>> result = index.search(text_embedding, k=5)        # normalised too
    >>> result.hits(0)                                     # [(score, position, path), ...]

    `backend="torch"` (default) does exact search in chunks on `device` (CPU unless given;
    pass `clipkit.get_device()` to search on a GPU). `backend="faiss"` keeps the vectors in a
    faiss IndexFlatIP, exact as well and returning the same neighbours (ties aside).
    A k larger than the index is clipped to the index size with a warning.
    """

    def __init__(self, dim: int, backend: str = "torch", device: str | torch.device | None = None):
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or dim <= 0:
            raise ValueError(f"dim must be a positive int (the embedding width), got {dim!r}.")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}.")
        self.dim = int(dim)
        self.backend = backend
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.items: list[Any] = []
        self._size = 0
        if backend == "faiss":
            if self.device.type != "cpu":
                raise ValueError(
                    f"backend='faiss' searches on the CPU; drop device={str(self.device)!r} "
                    f"or use backend='torch' to search on that device."
                )
            self._faiss_index = _import_faiss().IndexFlatIP(self.dim)
        else:
            # Rows [0, _size) are live; the rest is spare capacity so adds are amortised O(rows added).
            self._storage = torch.empty(0, self.dim, device=self.device)

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return f"EmbeddingIndex(dim={self.dim}, size={self._size}, backend={self.backend!r}, device='{self.device}')"

    @property
    def embeddings(self) -> torch.Tensor:
        """The stored (normalised) vectors [len, dim], in the order they were added."""
        if self.backend == "faiss":
            if self._size == 0:
                return torch.empty(0, self.dim)
            return torch.from_numpy(self._faiss_index.reconstruct_n(0, self._size))
        return self._storage[: self._size]

    def reserve(self, capacity: int) -> None:
        """Pre-allocate room for `capacity` vectors, so a known-size collection is copied once only."""
        if self.backend == "torch" and capacity > self._storage.shape[0]:
            grown = torch.empty(capacity, self.dim, device=self.device)
            grown[: self._size] = self._storage[: self._size]
            self._storage = grown

    def add(self, embeddings: Any, items: Sequence[Any] | None = None) -> None:
        """Append vectors [N, D] (or one [D]) with one JSON-able item each; they are L2-normalised here.

        Items default to None. Storage grows geometrically, so adding a million vectors in
        batches copies each vector a small constant number of times, not once per add.
        """
        rows, norms = _checked_rows(embeddings, self.dim, "embeddings")
        self._append(rows, norms, _check_items(items, rows.shape[0]))

    def _append(self, rows: torch.Tensor, norms: torch.Tensor | None, items: list[Any]) -> None:
        """Store validated `rows / norms`; `load` passes norms=None for saved unit rows, keeping them bit-exact."""
        if self.backend == "faiss":
            unit = rows if norms is None else rows / norms
            self._faiss_index.add(unit.cpu().contiguous().numpy())
        else:
            needed = self._size + rows.shape[0]
            if needed > self._storage.shape[0]:
                self.reserve(max(needed, 2 * self._storage.shape[0], 1024))
            target = self._storage[self._size : needed]
            if norms is None:
                target.copy_(rows)
            else:  # dividing straight into storage skips a temporary the size of the batch
                torch.div(rows.to(self.device), norms.to(self.device), out=target)
        self._size += rows.shape[0]
        self.items.extend(items)

    def search(self, queries: Any, k: int = 10) -> SearchResult:
        """The k nearest stored vectors to each query [Q, D] (or one query [D], giving Q = 1).

        Queries are L2-normalised, so scores are cosine similarities. k larger than the index
        returns every vector (k is clipped to `len(index)`) with a warning.
        """
        if self._size == 0:
            raise ValueError("the index is empty: add embeddings with index.add(...) before searching.")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}.")
        queries = _unit_rows(queries, self.dim, "queries")
        if k > self._size:
            warnings.warn(
                f"k={k} is larger than the index ({self._size} vectors); returning all {self._size}.", stacklevel=2
            )
            k = self._size
        k = int(k)
        if self.backend == "faiss":
            scores, indices = self._faiss_index.search(queries.cpu().contiguous().numpy(), k)
            scores, indices = torch.from_numpy(scores), torch.from_numpy(indices).long()
        else:
            scores, indices = exact_top_k(queries.to(self.device), self._storage[: self._size], k)
            scores, indices = scores.cpu(), indices.cpu()
        items = [[self.items[position] for position in row] for row in indices.tolist()]
        return SearchResult(scores=scores, indices=indices, items=items)

    def save(self, folder: str | Path) -> Path:
        """Write `embeddings.safetensors` and `index.json` (dim, backend, items) into `folder`."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        metadata = {
            "format": INDEX_FORMAT,
            "version": FORMAT_VERSION,
            "dim": self.dim,
            "size": self._size,
            "backend": self.backend,
            "normalized": True,
            "items": self.items,
        }
        tensors = {"embeddings": self.embeddings.detach().cpu().contiguous()}
        atomic_write(folder / EMBEDDINGS_FILE, lambda path: save_file(tensors, str(path)))
        atomic_write(folder / METADATA_FILE, lambda path: path.write_text(json.dumps(metadata)))
        return folder

    @classmethod
    def load(
        cls, folder: str | Path, backend: str | None = None, device: str | torch.device | None = None
    ) -> EmbeddingIndex:
        """Rebuild an index written by `save`; `backend` defaults to the one it was saved with."""
        from safetensors.torch import load_file

        folder = Path(folder)
        for name in (METADATA_FILE, EMBEDDINGS_FILE):
            if not (folder / name).is_file():
                raise FileNotFoundError(
                    f"{folder / name} is missing; point EmbeddingIndex.load at a folder written by index.save()."
                )
        metadata = json.loads((folder / METADATA_FILE).read_text())
        if metadata.get("format") != INDEX_FORMAT or metadata.get("version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{folder / METADATA_FILE} is not a clipkit embedding index this version can read "
                f"(format={metadata.get('format')!r}, version={metadata.get('version')!r})."
            )
        embeddings = load_file(str(folder / EMBEDDINGS_FILE))["embeddings"]
        if embeddings.shape != (metadata["size"], metadata["dim"]) or len(metadata["items"]) != metadata["size"]:
            raise ValueError(
                f"{folder} is inconsistent: {tuple(embeddings.shape)} embeddings, {len(metadata['items'])} items, "
                f"metadata says {metadata['size']} x {metadata['dim']}; it was probably written only in part, "
                f"so save the index again."
            )
        index = cls(metadata["dim"], backend=backend or metadata["backend"], device=device)
        if metadata["size"]:
            index.reserve(metadata["size"])
            index._append(embeddings, None, metadata["items"])
        return index


# --- model-facing helpers -------------------------------------------------------------------


def _embedder(model: Any, kind: str):
    """`model.embed_<kind>` when the model offers one (e.g. a wrapper around another library),
    else the clipkit model interface through `clipkit.model.embed_<kind>(model, ...)`."""
    name = f"embed_{kind}"
    method = getattr(model, name, None)
    if callable(method):
        return method
    from clipkit import model as model_module

    function = getattr(model_module, name)
    return lambda batch: function(model, batch)


def index_images(
    model: Any,
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

    A tqdm bar shows progress; batching here (besides inside the embedder) is what lets it move.
    """
    from tqdm.auto import tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    count = len(images)
    if count == 0:
        raise ValueError("no images to index; pass a non-empty list or tensor of images.")
    items = _check_items(items, count)
    embed = _embedder(model, "images")
    batches = tqdm(range(0, count, batch_size), desc="indexing images", unit="batch", disable=not progress)
    with torch.no_grad():
        for start in batches:
            embeddings = embed(images[start : start + batch_size])
            if index is None:
                index = EmbeddingIndex(int(embeddings.shape[-1]), backend=backend, device=device)
            index.add(embeddings, items[start : start + batch_size])
    return index


def search_text(index: EmbeddingIndex, model: Any, query: str | Sequence[str], k: int = 5) -> SearchResult:
    """Images whose embeddings best match a caption (or each caption of a list)."""
    texts = [query] if isinstance(query, str) else list(query)
    if not texts or not all(isinstance(text, str) for text in texts):
        raise ValueError("query must be a caption or a non-empty list of captions (strings).")
    with torch.no_grad():
        embeddings = _embedder(model, "texts")(texts)
    return index.search(embeddings, k)


def search_image(index: EmbeddingIndex, model: Any, image: Any, k: int = 5) -> SearchResult:
    """Nearest neighbours of an image: a PIL image, a tensor [3, H, W], or a batch of either."""
    if isinstance(image, torch.Tensor) and image.ndim == 3:
        image = image.unsqueeze(0)  # [3, H, W] -> [1, 3, H, W]
    elif not isinstance(image, (torch.Tensor, list, tuple)):
        image = [image]
    with torch.no_grad():
        embeddings = _embedder(model, "images")(image)
    return index.search(embeddings, k)


# --- metrics -------------------------------------------------------------------------------


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
    images = _unit_rows(image_embeddings, None, "image_embeddings")
    texts = _unit_rows(text_embeddings, images.shape[1], "text_embeddings", "image_embeddings")
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
