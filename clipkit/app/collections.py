"""Search collections: images with one caption each, loaded and indexed on first use.

The app's defaults are ~1,400 emoji, 2,000 Fashion-MNIST test images and 1,000 shapes-world scenes;
`folder_collection` adds a folder of your own captioned images, `Collection.from_images` a data set
a notebook already holds (with its index, when it has one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipkit.app.defaults import GALLERY_SIDE, enlarged
from clipkit.app.inputs import read_image

MAX_FOLDER_IMAGES = 5000  # a user folder is indexed up to this many images


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


def folder_collection(root: str | Path, name: str | None = None, limit: int = MAX_FOLDER_IMAGES) -> Collection:
    """Your images with sidecar captions (`cat.jpg` + `cat.txt`, see `clipkit.data.ImageCaptionFolder`),
    read on first search; unreadable files are skipped with a warning."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist: pass a folder of images with sidecar .txt captions")

    def load():
        from clipkit.data import ImageCaptionFolder

        folder = ImageCaptionFolder(root)
        pictures, captions = [], []
        for path, caption in folder.items[:limit]:
            picture = read_image(path)
            picture.thumbnail((256, 256))  # keeps memory small; every model here looks at 224 px or less
            pictures.append(picture)
            captions.append(caption)
        return pictures, captions

    return Collection(name or root.name, load, f"your images in {root} (at most {limit:,})")


def default_collections(folders: Sequence[str | Path] = ()) -> dict[str, Collection]:
    """Emoji, Fashion-MNIST, a shapes-world sample and each of `folders`; nothing is loaded yet."""
    collections = [_emoji_collection(), _fashion_collection(), _shapes_collection()]
    collections += [folder_collection(folder) for folder in folders]
    return {collection.name: collection for collection in collections}
