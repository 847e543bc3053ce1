"""An embedding index for text-to-image and image-to-image search.

`EmbeddingIndex` holds L2-normalised vectors with one JSON-able item each (a caption, a path,
a label) and answers top-k queries by cosine similarity. Vectors are normalised on `add` and
queries on `search`, so the inner product the search computes *is* the cosine similarity and
scores lie in [-1, 1] whatever scale the encoder produced.

Exact search runs in torch, in chunks of the collection so that scoring a million vectors
never materialises a [Q, N] matrix; an optional faiss backend (IndexFlatIP, exact too) returns
the same neighbours, and is written to and read from one faiss file (`write_faiss`, `read_faiss`)
so a large collection need not be added again on the next start.
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

from clipkit.io import BadFileError, MissingFileError, atomic_write, load_safetensors, read_json
from clipkit.search.vectors import check_items, checked_rows, unit_rows, exact_top_k

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


def _import_faiss():
    try:
        import faiss
    except ImportError as error:
        raise ImportError(
            "backend='faiss' needs the faiss package: `pip install faiss-cpu` (or faiss-gpu), "
            "or use the default backend='torch', which gives the same exact results."
        ) from error
    return faiss



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
        rows, norms = checked_rows(embeddings, self.dim, "embeddings")
        self._append(rows, norms, check_items(items, rows.shape[0]))

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
        queries = unit_rows(queries, self.dim, "queries")
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

    def write_faiss(self, path: str | Path) -> Path:
        """Save a faiss-backed index's vectors as one faiss file (items are the caller's to keep):
        loading it back with `read_faiss` skips re-adding every vector on the next start."""
        if self.backend != "faiss":
            raise ValueError("write_faiss needs backend='faiss'; use save() for a torch index.")
        faiss = _import_faiss()
        atomic_write(Path(path), lambda temporary: faiss.write_index(self._faiss_index, str(temporary)))
        return Path(path)

    @classmethod
    def read_faiss(cls, path: str | Path, items: Sequence[Any]) -> EmbeddingIndex:
        """A faiss-backed index from a file `write_faiss` wrote, with one item per stored vector;
        a damaged, foreign or mismatched file is a `BadFileError`."""
        faiss = _import_faiss()
        path = Path(path)
        fix = "Delete it, or write it again with index.write_faiss()."
        if not path.is_file():
            raise MissingFileError(path, f"faiss index {path} does not exist. {fix}")
        try:
            stored = faiss.read_index(str(path))
        except Exception as error:  # faiss raises RuntimeError subclasses whose names vary by version
            raise BadFileError(path, f"faiss index {path} is damaged ({(str(error).strip().splitlines() or [type(error).__name__])[0]}). {fix}") from None
        items = list(items)
        if not isinstance(stored, faiss.IndexFlatIP) or stored.ntotal != len(items):
            raise BadFileError(
                path, f"faiss index {path} holds {stored.ntotal} vectors of a {type(stored).__name__}, "
                f"not an IndexFlatIP of {len(items)}. {fix}",
            )
        index = cls(stored.d, backend="faiss")
        index._faiss_index, index._size = stored, len(items)
        index.items = check_items(items, len(items))
        return index

    @classmethod
    def load(
        cls, folder: str | Path, backend: str | None = None, device: str | torch.device | None = None
    ) -> EmbeddingIndex:
        """Rebuild an index written by `save`; `backend` defaults to the one it was saved with."""
        folder = Path(folder)
        fix = "Point EmbeddingIndex.load at a folder written by index.save(), or save the index again."
        for name in (METADATA_FILE, EMBEDDINGS_FILE):
            if not (folder / name).exists():
                raise MissingFileError(folder / name, f"{folder / name} is missing; {fix}")
        metadata = read_json(folder / METADATA_FILE, "embedding index metadata", fix)
        if metadata.get("format") != INDEX_FORMAT or not isinstance(metadata.get("version", 0), int) or metadata.get("version", 0) > FORMAT_VERSION:
            raise BadFileError(
                folder / METADATA_FILE,
                f"{folder / METADATA_FILE} is not a clipkit embedding index this version can read "
                f"(format={metadata.get('format')!r}, version={metadata.get('version')!r}). {fix}",
            )
        embeddings = load_safetensors(folder / EMBEDDINGS_FILE, "embedding index file", fix).get("embeddings")
        size, dim, items = metadata.get("size"), metadata.get("dim"), metadata.get("items")
        if not (isinstance(size, int) and isinstance(dim, int) and isinstance(items, list) and dim > 0
                and metadata.get("backend") in (None, *BACKENDS)):
            raise BadFileError(folder / METADATA_FILE, f"{folder / METADATA_FILE} is damaged (size, dim, backend or items missing or of the wrong type). {fix}")
        if embeddings is None or embeddings.shape != (size, dim) or len(items) != size:
            shape = None if embeddings is None else tuple(embeddings.shape)
            raise BadFileError(
                folder / EMBEDDINGS_FILE,
                f"{folder} is inconsistent: {shape} embeddings, {len(items)} items, "
                f"metadata says {size} x {dim}; it was probably written only in part, "
                f"so save the index again.",
            )
        index = cls(dim, backend=backend or metadata.get("backend") or "torch", device=device)
        if size:
            index.reserve(size)
            try:
                index._append(embeddings, None, items)
            except (TypeError, ValueError, RuntimeError) as error:  # items or rows of the wrong kind
                raise BadFileError(folder, f"the embedding index in {folder} is damaged ({error}). {fix}") from None
        return index

