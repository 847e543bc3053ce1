"""Fashion-MNIST with captions: 70,000 greyscale 28x28 clothing images in 10 classes.

A step up from the shapes world that is still small: real (if tiny) photographs, a classic
zero-shot benchmark once each class name is put in a sentence. Files are the original IDX
format (gzip), parsed here with numpy; they come from, in order: the `root` argument,
$CLIPKIT_FASHION_MNIST_DIR, `clipkit.data_dir()/fashion-mnist`, the Debian package
`dataset-fashion-mnist`, or a download from the canonical source when online.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import torch

from clipkit.data.grammar import with_articles
from clipkit.data.transforms import CaptionedImages
from clipkit.env import data_dir
from clipkit.io import atomic_write

ENV_VARIABLE = "CLIPKIT_FASHION_MNIST_DIR"
SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)  # where `apt install dataset-fashion-mnist` puts them
DOWNLOAD_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# MD5 of the canonical gzip files (as torchvision checks them); the Debian package recompresses, so
# only downloads are checked this way. Every file, wherever from, is checked by parsing.
DOWNLOAD_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
SPLIT_PREFIX = {"train": "train", "test": "t10k"}

# The data set's own class names, and the words captions use for them (with their article).
FASHION_MNIST_LABELS = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"
)
CLASS_NAMES = (
    "t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot"
)
_WITH_ARTICLE = {name: with_articles(f"a {name}") for name in CLASS_NAMES}

# Caption templates; {item} is the class name with its article ("an ankle boot").
CAPTION_TEMPLATES = (
    "{item}",
    "a photo of {item}",
    "a grayscale photo of {item}",
    "a small black and white picture of {item}",
    "a low-resolution image of {item}",
    "a product photo of {item} on a black background",
    "this is {item}",
)


class FashionMNISTNotFoundError(FileNotFoundError):
    """Fashion-MNIST is neither on disk nor downloadable."""


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (optionally gzip-compressed) into a numpy array of its stated shape.

    Layout: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions, one
    big-endian uint32 per dimension, then the values.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"{path}: cannot read ({error}); delete it and fetch the file again") from error
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file (header {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise ValueError(f"{path}: holds {len(data) - header} values where its header promises {expected} {shape}; "
                         "the file is truncated or corrupt, fetch it again")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)  # flat -> header's shape


def _files(split: str) -> tuple[str, str]:
    prefix = SPLIT_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"


def _find(directory: Path, name: str) -> Path | None:
    """The file, gzipped or not."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.is_file():
            return candidate
    return None


def _has_split(directory: Path, split: str) -> bool:
    return all(_find(directory, name) for name in _files(split))


def candidate_dirs(root: str | Path | None = None) -> list[Path]:
    """Folders searched, in order."""
    if root is not None:
        return [Path(root).expanduser()]
    dirs = [Path(os.environ[ENV_VARIABLE]).expanduser()] if os.environ.get(ENV_VARIABLE) else []
    return dirs + [data_dir() / "fashion-mnist", *SYSTEM_DIRS]


def download_fashion_mnist(target: str | Path, split: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch the IDX files (one split, or all) from the canonical source into `target`, checking MD5s."""
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    names = _files(split) if split else tuple(DOWNLOAD_MD5)
    for name in names:
        if (target / name).is_file():
            continue
        with urllib.request.urlopen(DOWNLOAD_URL + name, timeout=timeout) as response:
            payload = response.read()
        digest = hashlib.md5(payload).hexdigest()
        if digest != DOWNLOAD_MD5[name]:
            raise OSError(f"downloaded {name} has MD5 {digest}, expected {DOWNLOAD_MD5[name]}; try again later")
        atomic_write(target / name, lambda temporary: temporary.write_bytes(payload))
    return target


def locate_fashion_mnist(split: str = "train", root: str | Path | None = None, download: bool = True) -> Path:
    """The folder holding `split`'s files: found on disk, else downloaded, else a clear error."""
    if split not in SPLIT_PREFIX:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    searched = candidate_dirs(root)
    for directory in searched:
        if _has_split(directory, split):
            return directory
    target = searched[0] if (root is not None or os.environ.get(ENV_VARIABLE)) else data_dir() / "fashion-mnist"
    problem = "download=False"
    if download:
        try:
            return download_fashion_mnist(target, split)
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            problem = f"the download from {DOWNLOAD_URL} failed: {error}"
    raise FashionMNISTNotFoundError(
        f"Fashion-MNIST ({split}) is not in {', '.join(str(d) for d in searched)}, and {problem}. "
        f"Install it with `sudo apt install dataset-fashion-mnist`, or put the four *-idx?-ubyte.gz files in a "
        f"folder and set {ENV_VARIABLE}=/that/folder (or pass root=...)."
    )


def load_fashion_mnist(
    split: str = "train",
    root: str | Path | None = None,
    limit: int | None = None,
    channels: int = 3,
    seed: int = 0,
    download: bool = True,
) -> CaptionedImages:
    """Fashion-MNIST as a captioned data set: images uint8 [N, channels, 28, 28], labels, class names.

    Each image gets a caption from `CAPTION_TEMPLATES` picked at random (fixed by `seed`); `limit`
    keeps the first N images; `channels=3` repeats the grey channel as models expect.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    directory = locate_fashion_mnist(split, root, download)
    image_file, label_file = (_find(directory, name) for name in _files(split))
    images, labels = read_idx(image_file), read_idx(label_file)
    if images.ndim != 3 or len(images) != len(labels) or labels.ndim != 1:
        raise ValueError(
            f"{directory}: images {images.shape} and labels {labels.shape} do not match; fetch the files again"
        )
    if labels.max(initial=0) >= len(CLASS_NAMES):
        raise ValueError(f"{label_file}: labels go up to {labels.max()}, Fashion-MNIST has {len(CLASS_NAMES)} classes")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    pixels = torch.from_numpy(images.copy()).unsqueeze(1)  # [N, 28, 28] -> [N, 1, 28, 28]
    if channels == 3:
        pixels = pixels.expand(-1, 3, -1, -1).contiguous()  # [N, 1, 28, 28] -> [N, 3, 28, 28]
    choices = np.random.default_rng(seed).integers(0, len(CAPTION_TEMPLATES), len(labels))
    captions = [
        CAPTION_TEMPLATES[template].format(item=_WITH_ARTICLE[CLASS_NAMES[label]])
        for template, label in zip(choices, labels.tolist())
    ]
    return CaptionedImages(
        images=pixels,
        captions=captions,
        labels=torch.from_numpy(labels.astype(np.int64)),
        class_names=list(CLASS_NAMES),
    )
