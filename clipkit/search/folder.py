"""Search a folder of your own photos, with every embedding cached on disk.

>>> photos = PhotoIndex("~/Pictures", model)          # first start: embeds every photo (a progress bar)
>>> photos.search_text("a dog on a beach", k=8).hits()  # [(score, position, "2023/dog.jpg"), ...]
>>> photos.search_image("query.jpg", k=8)               # image-to-image

Any clipkit model (`CLIPBase`) works. The cache (`clipkit.search.cache`) is keyed by the model's
fingerprint and each file's content, so a second start embeds nothing, an added or changed file is
embedded alone, a deleted one drops out, and renaming or copying a photo costs one hash, not one
embedding. Large folders are searched with a faiss IndexFlatIP (exact) saved beside the cache and
loaded on the next start. Files PIL cannot decode are skipped, counted in one warning, and not
decoded again until they change.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clipkit.data.files import DEFAULT_MAX_PIXELS, BadImageError, BadItemError, list_photos, load_image_rgb, warn_skipped
from clipkit.interface import CLIPBase, embed_images
from clipkit.io import BadFileError
from clipkit.search import cache as store
from clipkit.search.embedding import search_image, search_text
from clipkit.search.index import EmbeddingIndex, SearchResult

FAISS_FROM = 5000  # from this many photos on, the index is a faiss IndexFlatIP persisted beside the cache
FAISS_CHECK_ROWS = 8  # rows of a saved faiss index compared with the cache before it is trusted


def default_cache_folder(root: str | Path) -> Path:
    """`cache_dir()/photo-search/<folder name>-<hash of its absolute path>`: one cache per folder."""
    from clipkit.env import cache_dir

    root = Path(root).expanduser().resolve()
    key = hashlib.blake2b(str(root).encode(), digest_size=6).hexdigest()
    return cache_dir() / "photo-search" / f"{root.name or 'root'}-{key}"


@dataclass
class IndexingReport:
    """What one (re)indexing of a folder did."""

    photos: int  # photos in the index now
    embedded: int  # file contents the model embedded this time (0 on a second start)
    reused: int  # photos whose embedding came from the cache
    hashed: int  # files read and hashed because they were new or changed since last seen
    dropped: int  # cached contents no longer in the folder, removed from the cache
    skipped: int  # files and captions left out (cannot be decoded or read)
    seconds: float  # wall time of the whole refresh


class PhotoIndex:
    """The photos under `root` (nested folders, any format PIL reads, captions optional), embedded
    with `model` and searchable by text or image. Indexing happens here and in `refresh()`.

    `cache`: the cache folder (default `default_cache_folder(root)`); `batch_size`: images per model
    call; `workers`: threads decoding images; `faiss_from`: folder size from which search runs on a
    persisted faiss index (None: never).
    """

    def __init__(
        self,
        root: str | Path,
        model: CLIPBase,
        cache: str | Path | None = None,
        batch_size: int = 64,
        progress: bool = True,
        workers: int = 4,
        faiss_from: int | None = FAISS_FROM,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ):
        if batch_size < 1 or workers < 1:
            raise ValueError(f"batch_size and workers must be positive ints, got {batch_size!r} and {workers!r}.")
        self.root = Path(root).expanduser()
        self.model = model
        self.cache = Path(cache) if cache is not None else default_cache_folder(self.root)
        self.batch_size, self.progress, self.workers = batch_size, progress, workers
        self.faiss_from, self.max_pixels = faiss_from, max_pixels
        self.refresh()

    def __len__(self) -> int:
        return len(self.photos)

    def __repr__(self) -> str:
        return f"PhotoIndex({str(self.root)!r}, {len(self.photos)} photos, {len(self.skipped)} skipped, cache={str(self.cache)!r})"

    @property
    def captions(self) -> list[str | None]:
        """Each indexed photo's sidecar caption, or None."""
        return [photo.caption for photo in self.photos]

    def refresh(self) -> IndexingReport:
        """Bring the index up to date with the folder: hash new or changed files, embed contents the
        cache lacks, drop what left the folder, save the cache. Returns (and keeps) an `IndexingReport`."""
        start = time.perf_counter()
        listed, self.skipped = list_photos(self.root)
        old_memo = store.read_file_memo(self.cache)
        memo, hashed = {}, 0
        for photo in listed:
            try:
                stat = photo.path.stat()
                entry = old_memo.get(photo.name)
                if entry is None or (entry["size"], entry["mtime_ns"]) != (stat.st_size, stat.st_mtime_ns):
                    entry = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "digest": store.file_digest(photo.path)}
                    hashed += 1
                memo[photo.name] = entry
            except OSError as error:  # vanished or unreadable since it was listed
                self.skipped.append((photo.name, f"unreadable ({error.strerror or error})"))

        fingerprint = store.model_fingerprint(self.model)
        model_folder = self.cache / fingerprint[:16]
        dim = self.model.embed_dim
        rows = store.read_embeddings(model_folder, fingerprint, dim)
        bad = store.bad_digests(memo)
        wanted = {}  # digest -> first file holding it, in folder order: identical copies embed once
        for photo in listed:
            digest = memo.get(photo.name, {}).get("digest")
            if digest is not None and digest not in rows and digest not in bad:
                wanted.setdefault(digest, photo.path)
        embedded = self._embed(wanted, rows, bad)
        for entry in memo.values():
            if entry["digest"] in bad:
                entry["bad"] = bad[entry["digest"]]

        in_folder = {entry["digest"] for entry in memo.values()}
        dropped = [digest for digest in rows if digest not in in_folder]
        for digest in dropped:
            del rows[digest]
        try:
            if memo != old_memo:
                store.write_file_memo(self.cache, memo)
            if embedded or dropped or not (model_folder / store.EMBEDDINGS_FILE).exists():
                store.write_embeddings(model_folder, fingerprint, dim, rows)
        except OSError as error:  # a read-only disk must not stop a search
            warnings.warn(f"could not save the search cache in {self.cache} ({error}); the next start embeds again.", stacklevel=2)

        self.photos = [photo for photo in listed if photo.name in memo and memo[photo.name]["digest"] in rows]
        self.skipped += [(photo.name, memo[photo.name]["bad"]) for photo in listed if "bad" in memo.get(photo.name, {})]
        if self.skipped:
            warn_skipped(str(self.root), self.skipped, len(listed), "fix or remove those files", stacklevel=2)
        if not self.photos:
            raise BadItemError(f"{self.root}: no photos to search (found {len(listed)} image files, all skipped)")
        order = [memo[photo.name]["digest"] for photo in self.photos]
        self.index = self._build_index(model_folder, order, rows)
        self.report = IndexingReport(
            photos=len(self.photos), embedded=len(embedded), reused=len(self.photos) - len(embedded), hashed=hashed,
            dropped=len(dropped), skipped=len(self.skipped), seconds=time.perf_counter() - start,
        )
        return self.report

    def _load(self, path: Path) -> Any:
        try:
            return load_image_rgb(path, self.max_pixels, draft=self.model.image_size)
        except BadImageError as error:
            return error

    def _embed(self, wanted: dict[str, Path], rows: dict[str, torch.Tensor], bad: dict[str, str]) -> list[str]:
        """Embed `wanted` (digest -> file) into `rows`; record undecodable contents in `bad`."""
        from tqdm.auto import tqdm

        done: list[str] = []
        if not wanted:
            return done
        digests = list(wanted)
        bar = tqdm(total=len(digests), desc=f"indexing {self.root.name or self.root}", unit="image", disable=not self.progress)
        with ThreadPoolExecutor(self.workers) as pool:  # PIL decodes without the GIL: threads overlap it
            for start in range(0, len(digests), self.batch_size):
                chunk = digests[start : start + self.batch_size]
                images, good = [], []
                for digest, image in zip(chunk, pool.map(self._load, [wanted[d] for d in chunk])):
                    if isinstance(image, BadImageError):
                        bad[digest] = str(image).split(": ", 1)[-1]
                    else:
                        images.append(image)
                        good.append(digest)
                if images:
                    embeddings = embed_images(self.model, images, batch_size=self.batch_size).cpu()
                    rows.update(zip(good, embeddings))
                    done += good
                bar.update(len(chunk))
        bar.close()
        return done

    def _build_index(self, model_folder: Path, order: list[str], rows: dict[str, torch.Tensor]) -> EmbeddingIndex:
        matrix = torch.stack([rows[digest] for digest in order])  # [N, D] unit rows in folder order
        items = [photo.name for photo in self.photos]
        if self.faiss_from is None or len(order) < self.faiss_from:
            index = EmbeddingIndex(matrix.shape[1])
            index.add(matrix, items)
            return index
        # The file name says which rows, in which order, the saved index holds.
        key = hashlib.blake2b("".join(order).encode(), digest_size=8).hexdigest()
        path = model_folder / f"faiss-{key}.index"
        if path.exists():
            try:
                index = EmbeddingIndex.read_faiss(path, items)
                check = torch.linspace(0, len(order) - 1, min(FAISS_CHECK_ROWS, len(order))).long()
                if torch.allclose(index.embeddings[check], matrix[check], atol=1e-6):
                    return index
                raise BadFileError(path, "its vectors differ from the cached embeddings")
            except BadFileError as error:
                store.warn_rebuilt(path, error)
        index = EmbeddingIndex(matrix.shape[1], backend="faiss")
        index.add(matrix, items)
        try:
            index.write_faiss(path)
            for stale in model_folder.glob("faiss-*.index"):
                if stale != path:
                    stale.unlink(missing_ok=True)
        except OSError as error:
            warnings.warn(f"could not save the faiss index {path} ({error}); it is rebuilt next start.", stacklevel=3)
        return index

    def image(self, position: int):
        """Photo `position` (as in search results) as an RGB PIL image."""
        return load_image_rgb(self.photos[position].path, self.max_pixels)

    def search_text(self, query: str | list[str], k: int = 5) -> SearchResult:
        """The photos nearest a caption (or each caption of a list); items are the photos' names."""
        return search_text(self.index, self.model, query, k)

    def search_image(self, image: Any, k: int = 5) -> SearchResult:
        """The photos nearest an image: a PIL image, a tensor [3, H, W], or a path to an image file."""
        if isinstance(image, (str, Path)):
            image = load_image_rgb(image, self.max_pixels)
        return search_image(self.index, self.model, image, k)
