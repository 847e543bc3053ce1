"""Your own images and captions: a CSV in open_clip's layout, a folder with sidecar .txt captions, or
a folder of plain photos (`list_photos`: captions optional, any format PIL reads).

Real folders hold surprises: greyscale, transparent, palette, CMYK and 16-bit images, files that
are corrupt, truncated, not images at all or missing, empty captions, and decompression bombs.
Images of any mode are converted to RGB. Bad items are found when the data set is built (so a
training epoch never stops half way), left out, and reported in one warning that counts them and
names the first few; `strict=True` raises on the first instead.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections import Counter
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from clipkit.io import BadFileError, read_text

# Larger images are refused before decoding: 50 megapixels (~150 MB as RGB) is far above what CLIP
# preprocessing keeps and far below what a decompression bomb expands to.
DEFAULT_MAX_PIXELS = 50_000_000
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
_SHOWN_IN_WARNING = 5


class BadImageError(ValueError):
    """An image file that cannot be used: missing, corrupt, truncated, not an image, or too large."""


class BadItemError(ValueError):
    """A data set item that cannot be used (raised instead of skipping when strict=True)."""


class SkippedItemsWarning(UserWarning):
    """A data set left out items it could not use."""


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB. Transparency is composited on white; 16/32-bit values are scaled to 8 bits."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0  # 16-bit range 0-65535 -> 0-255
        elif image.mode == "F" and values.max(initial=0) <= 1.0:
            values = values * 255.0  # float images in [0, 1]
        return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L").convert("RGB")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV


def load_image_rgb(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS, draft: int | None = None) -> Image.Image:
    """Open an image file fully decoded as RGB (EXIF rotation applied). Raises BadImageError naming the file.

    `draft=S` lets a JPEG decode at a reduced scale that still covers S x S pixels (a 12-megapixel
    photo bound for a 224 px model then decodes about 8x faster); other formats ignore it.
    """
    path = Path(path)
    if not path.is_file():
        raise BadImageError(f"{path}: missing (no such file)")
    try:
        with warnings.catch_warnings():
            # We enforce our own limit below; PIL's bomb warning would only repeat it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise BadImageError(
                        f"{path}: too large ({width}x{height} = {width * height:,} pixels "
                        f"> max_pixels={max_pixels:,}); "
                        "possibly a decompression bomb. Raise max_pixels if you trust the file."
                    )
                if draft is not None and image.format == "JPEG":
                    image.draft("RGB", (draft, draft))
                image.load()  # decode now: truncated data fails here, not in the middle of an epoch
                image = ImageOps.exif_transpose(image)
                return _to_rgb(image)
    except BadImageError:
        raise
    except Image.DecompressionBombError as error:
        raise BadImageError(f"{path}: too large (decompression bomb: {error})") from error
    except UnidentifiedImageError as error:
        raise BadImageError(f"{path}: not an image PIL can read (corrupt, or another kind of file)") from error
    except (OSError, SyntaxError, ValueError) as error:  # truncated or damaged data
        raise BadImageError(f"{path}: corrupt or truncated ({error})") from error


def skip_summary(skipped: Sequence[tuple[str, str]]) -> str:
    """"2 corrupt or truncated, 1 not an image PIL can read": (name, reason) pairs counted by kind."""
    kinds = Counter(reason.split(" (")[0] for _, reason in skipped)
    return ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())


def warn_skipped(source: str, skipped: Sequence[tuple[str, str]], total: int, alternative: str, stacklevel: int = 2) -> None:
    """The one warning every loader gives for the items it left out: counted by kind, the first few named."""
    shown = "; ".join(f"{name} ({reason})" for name, reason in skipped[:_SHOWN_IN_WARNING])
    more = f"; and {len(skipped) - _SHOWN_IN_WARNING} more" if len(skipped) > _SHOWN_IN_WARNING else ""
    warnings.warn(
        f"{source}: skipped {len(skipped)} of {total} items ({skip_summary(skipped)}): {shown}{more}. "
        f"See .skipped for all of them, or {alternative}.",
        SkippedItemsWarning,
        stacklevel=stacklevel + 1,
    )


class _ImageCaptionFiles(torch.utils.data.Dataset):
    """Shared by the CSV and folder data sets: checks every item up front, then serves (image, caption)."""

    in_memory = False  # images are read per item: loaders use worker processes

    def __init__(self, candidates, transform, max_pixels, strict, check_images, source):
        self.transform = transform
        self.strict = strict
        self.max_pixels = max_pixels
        self.source = source
        self.items: list[tuple[Path, str]] = []
        self.skipped: list[tuple[str, str]] = []  # (file or row, reason)
        for path, caption, name in candidates:
            reason = self._problem(path, caption, check_images)
            if reason is None:
                self.items.append((path, caption))
            elif strict:
                raise BadItemError(f"{source}: {name}: {reason} (pass strict=False to skip bad items with a warning)")
            else:
                self.skipped.append((name, reason))
        if self.skipped:
            self._warn_skipped(len(self.items) + len(self.skipped))
        if not self.items:
            summary = f" ({self.skip_summary()})" if self.skipped else ""
            raise BadItemError(f"{source}: no usable image-caption pairs{summary}")

    def _problem(self, path: Path | None, caption: str, check_images: bool) -> str | None:
        if path is None:
            return "no image file for this caption"
        if caption is None:
            return "no caption file"
        if not caption.strip():
            return "empty caption"
        if not path.is_file():
            return "missing image file"
        if check_images:
            try:
                load_image_rgb(path, self.max_pixels)
            except BadImageError as error:
                return str(error).split(": ", 1)[-1]
        return None

    def skip_summary(self) -> str:
        return skip_summary(self.skipped)

    def _warn_skipped(self, total: int) -> None:
        warn_skipped(self.source, self.skipped, total, "pass strict=True to raise instead", stacklevel=4)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        # Files can still fail here (check_images=False, or changed since): use the next good item
        # rather than stop the epoch; strict=True raises instead.
        if not -len(self.items) <= index < len(self.items):
            raise IndexError(f"index {index} is out of range for {len(self.items)} items")
        index %= len(self.items)
        for offset in range(len(self.items)):
            path, caption = self.items[(index + offset) % len(self.items)]
            try:
                image = load_image_rgb(path, self.max_pixels)
            except BadImageError as error:
                if self.strict:
                    raise BadItemError(f"{self.source}: {error}") from error
                message = f"{self.source}: {error}; serving the next item instead"
                warnings.warn(message, SkippedItemsWarning, stacklevel=2)
                continue
            return (self.transform(image) if self.transform else image), caption
        raise BadItemError(f"{self.source}: none of the {len(self.items)} images can be read any more")


def _read_caption(path: Path) -> str:
    return " ".join(read_text(path, "caption file").split())


class ImageCaptionCSV(_ImageCaptionFiles):
    """Rows of (image path, caption) from a CSV or TSV file, in open_clip's layout.

    Defaults match open_clip's `--csv-img-key filepath --csv-caption-key title --csv-separator "\\t"`.
    Relative image paths are read from `root` (default: the CSV file's folder). Indexing gives
    `(transform(image) or the PIL image, caption)`. `check_images=False` skips decoding every image
    up front (faster on big sets, but a corrupt file then fails when it is read).
    """

    def __init__(
        self,
        path: str | Path,
        image_key: str = "filepath",
        caption_key: str = "title",
        sep: str = "\t",
        root: str | Path | None = None,
        transform: Callable | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        strict: bool = False,
        check_images: bool = True,
    ):
        path = Path(path)
        root = Path(root) if root is not None else path.parent
        text = read_text(path, "caption table")  # UTF-8 with or without the BOM Excel writes
        try:
            reader = csv.DictReader(StringIO(text, newline=""), delimiter=sep)
            columns = reader.fieldnames or []
            rows = list(reader)
        except csv.Error as error:
            raise BadFileError(path, f"caption table {path} is not a readable CSV ({error}). Save it again as CSV/TSV.") from None
        missing = [key for key in (image_key, caption_key) if key not in columns]
        if missing:
            raise BadFileError(
                path,
                f"{path} has no column(s) {missing}; its columns are {columns} (separator {sep!r}). "
                "Set image_key=, caption_key= or sep= to match the file.",
            )
        candidates = []
        for line, row in enumerate(rows, start=2):  # line 1 is the header
            image = (row.get(image_key) or "").strip()
            caption = " ".join((row.get(caption_key) or "").split())
            candidates.append(((root / image) if image else None, caption, f"line {line} ({image or 'no path'})"))
        super().__init__(candidates, transform, max_pixels, strict, check_images, source=str(path))


class ImageCaptionFolder(_ImageCaptionFiles):
    """Images in a folder (recursively), each captioned by a sidecar text file: `cat.jpg` + `cat.txt`.

    Files with an image extension but no caption, and sidecars whose image is missing or unreadable,
    are reported as skipped; other files (a README, say) are ignored. Whitespace in captions is collapsed.
    """

    def __init__(
        self,
        root: str | Path,
        transform: Callable | None = None,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        strict: bool = False,
        check_images: bool = True,
        caption_extension: str = ".txt",
    ):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {root} does not exist")
        extensions = tuple(e.lower() for e in extensions)
        candidates = []
        for stem, files in sorted(_files_by_stem(root).items()):
            captions = [f for f in files if f.suffix.lower() == caption_extension]
            images = [f for f in files if f.suffix.lower() != caption_extension]
            shown = stem.relative_to(root).as_posix()
            if captions:
                caption = _read_caption(captions[0])
                if not images:
                    candidates.append((None, caption, f"{shown}{caption_extension}"))
                for image in images:
                    candidates.append((image, caption, image.relative_to(root).as_posix()))
            else:
                for image in (f for f in images if f.suffix.lower() in extensions):
                    candidates.append((image, None, image.relative_to(root).as_posix()))
        super().__init__(candidates, transform, max_pixels, strict, check_images, source=str(root))


def _files_by_stem(root: Path) -> dict[Path, list[Path]]:
    """Every file under `root` grouped by its path without the extension (`cat.jpg` and `cat.txt` together)."""
    by_stem: dict[Path, list[Path]] = {}
    for dirpath, _, filenames in os.walk(root):
        for filename in sorted(filenames):  # sorted: `cat.jpeg` comes before `cat.png` on every machine
            file = Path(dirpath) / filename
            by_stem.setdefault(file.with_suffix(""), []).append(file)
    return by_stem


def pil_image_extensions() -> tuple[str, ...]:
    """Every file extension PIL can open in this environment (lower case, with the dot)."""
    Image.init()  # registers every installed plugin, so plugins such as pillow-heif count too
    readable = {ext.lower() for ext, kind in Image.registered_extensions().items() if kind in Image.OPEN}
    return tuple(sorted(readable | set(IMAGE_EXTENSIONS)))


@dataclass(frozen=True)
class Photo:
    """One image file of a photo folder."""

    path: Path  # the file itself
    name: str  # its path relative to the folder, with "/" separators: stable across machines, shown in results
    caption: str | None  # the sidecar caption (`cat.jpg` + `cat.txt`), or None when there is none


def list_photos(
    root: str | Path, extensions: Sequence[str] | None = None, caption_extension: str = ".txt"
) -> tuple[list[Photo], list[tuple[str, str]]]:
    """The images under `root` (nested folders, sorted by name), captioned when a sidecar text file
    exists, and the (name, reason) of each caption that could not be read (its image stays, uncaptioned).

    Unlike `ImageCaptionFolder`, captions are optional and images are not opened here: a folder of
    10,000 photos lists in a fraction of a second, and whoever decodes them (the search cache, once
    per file content) skips and counts the bad ones. Hidden files and folders are left out.
    `extensions` defaults to every format PIL can read (`pil_image_extensions()`).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"photo folder {root} does not exist (or is not a folder); pass a folder of images")
    extensions = {e.lower() for e in (extensions or pil_image_extensions())} - {caption_extension}
    photos, problems = [], []
    # Plain strings, not Path objects, while walking: pathlib's parsing would triple the time of a big folder.
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [name for name in dirnames if not name.startswith(".")]
        relative = os.path.relpath(dirpath, root)
        prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
        split = [os.path.splitext(name) for name in filenames if not name.startswith(".")]
        captions = {stem: stem + ext for stem, ext in split if ext.lower() == caption_extension}
        for stem, ext in split:
            if ext.lower() not in extensions:
                continue
            caption = None
            if stem in captions:
                try:
                    caption = _read_caption(Path(dirpath, captions[stem])) or None  # an empty caption counts as none
                except BadFileError as error:
                    problems.append((prefix + captions[stem], f"unreadable caption ({error})"))
            photos.append(Photo(Path(dirpath, stem + ext), prefix + stem + ext, caption))
    photos.sort(key=lambda photo: photo.name)
    return photos, problems
