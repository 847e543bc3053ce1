"""Search collections: images with one caption each, loaded and indexed on first use.

The app's defaults are ~1,400 emoji, 2,000 Fashion-MNIST test images and 1,000 shapes-world scenes;
`folder_collection` adds a folder of your own photos (captions optional, embeddings cached on disk),
`Collection.from_images` a data set
a notebook already holds (with its index, when it has one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipkit.app.defaults import GALLERY_SIDE, enlarged

@dataclass(eq=False)
class Collection:
    """Images to search, loaded and indexed on first use (once, however many requests arrive).

    `load()` returns (images, items): a uint8 tensor [N, 3, H, W] or a list of PIL images, and one
    caption per image. Pass `index` when these images are already indexed with the app's model.
    """

    name: str
    load: Callable[[], tuple[Any, list[str]]]
    description: str = ""
    index: Any = None  # an EmbeddingIndex of the images made with the app's model, or None to build one
    _data: tuple[Any, list[str]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_images(cls, name: str, images, items: Sequence[str], index=None, description: str = "") -> Collection:
        """A collection of images already in memory (e.g. a notebook's data set and its index)."""
        if len(images) != len(items):
            raise ValueError(f"collection {name!r}: {len(images)} images but {len(items)} items; give one caption per image")
        return cls(name, lambda: (images, list(items)), description or f"{len(items):,} images", index)

    def data(self) -> tuple[Any, list[str]]:
        with self._lock:
            if self._data is None:
                self._data = self.load()
            return self._data

    def index_for(self, model):
        from clipkit.search import index_images

        images, items = self.data()
        with self._lock:
            if self.index is None:
                self.index = index_images(model, images, items=items, progress=False)
            return self.index

    def picture(self, position: int):
        """Image `position` as a PIL image, enlarged (nearest neighbour) when small so pixels stay sharp."""
        from PIL import Image

        from clipkit.viz import to_display_array

        images, _ = self.data()
        image = images[position]
        return enlarged(image if isinstance(image, Image.Image) else Image.fromarray(to_display_array(image)), GALLERY_SIDE)


def _emoji_collection() -> Collection:
    def load():
        from clipkit.data import load_emoji

        emoji = load_emoji(64)
        return emoji.images, list(emoji.captions)

    return Collection("emoji", load, "~1,400 emoji from Noto Color Emoji, captioned with their Unicode names")


def _fashion_collection(limit: int = 2000) -> Collection:
    def load():
        from clipkit.data import load_fashion_mnist

        test = load_fashion_mnist("test", limit=limit)
        return test.images, [test.class_names[label] for label in test.labels.tolist()]

    return Collection("fashion-mnist", load, f"the first {limit:,} Fashion-MNIST test images, labelled by class")


def _shapes_collection(count: int = 1000) -> Collection:
    def load():
        from clipkit.data import ShapesConfig, ShapesWorld

        sample = ShapesWorld(ShapesConfig(image_size=64)).sample(count, seed=0, split="all")
        return sample.images, list(sample.captions)

    return Collection("shapes world", load, f"{count:,} shapes-world scenes (held-out pairs included), with captions")


class FolderCollection(Collection):
    """A folder of your photos (nested folders, any format PIL reads, captions optional), indexed
    through the on-disk embedding cache (`clipkit.search.PhotoIndex`): the first search with a model
    embeds the folder (a progress bar in the terminal), later starts reuse the cache and embed only
    new or changed files. Results show a photo's caption, or its path in the folder when it has none."""

    def __init__(self, root: str | Path, name: str | None = None, cache: str | Path | None = None):
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} does not exist: pass a folder of photos (captions optional)")
        self.cache = cache
        self.photos = None  # the PhotoIndex, built by the first index_for
        super().__init__(name or self.root.name, self._listing, f"your photos in {self.root} (cached embeddings)")

    def _listing(self) -> tuple[list[Path], list[str]]:
        """(files, labels) of the indexed photos: files, not pixels, so a big folder is never held in memory."""
        if self.photos is None:
            raise RuntimeError(f"collection {self.name!r} is indexed on its first search: call index_for(model) first")
        return [photo.path for photo in self.photos.photos], [photo.caption or photo.name for photo in self.photos.photos]

    def index_for(self, model):
        from clipkit.search import PhotoIndex

        with self._lock:
            if self.photos is None or self.photos.model is not model:
                photos = PhotoIndex(self.root, model, cache=self.cache)
                photos.index.items = [photo.caption or photo.name for photo in photos.photos]  # what results show
                self.photos, self._data = photos, None
            return self.photos.index

    def picture(self, position: int):
        if self.photos is None:
            raise RuntimeError(f"collection {self.name!r} has not been searched yet: call index_for(model) first")
        picture = self.photos.image(position)
        picture.thumbnail((2 * GALLERY_SIDE, 2 * GALLERY_SIDE))  # a 12-megapixel photo need not travel whole
        return enlarged(picture, GALLERY_SIDE)


def folder_collection(root: str | Path, name: str | None = None, cache: str | Path | None = None) -> Collection:
    """Your photos in `root`, captioned or not (`cat.jpg` + an optional `cat.txt`), searched through the
    embedding cache (`cache`: its folder, default under `clipkit.cache_dir()`); unreadable files are
    skipped with one counting warning."""
    return FolderCollection(root, name, cache)


def default_collections(folders: Sequence[str | Path] = ()) -> dict[str, Collection]:
    """Emoji, Fashion-MNIST, a shapes-world sample and each of `folders`; nothing is loaded yet."""
    collections = [_emoji_collection(), _fashion_collection(), _shapes_collection()]
    collections += [folder_collection(folder) for folder in folders]
    return {collection.name: collection for collection in collections}
