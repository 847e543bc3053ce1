"""Emoji with their Unicode names as captions: ~1,400 small colour pictures, each with a unique caption.

Rendered from the Noto Color Emoji font (Debian: fonts-noto-color-emoji): every single-codepoint
pictograph in its character map, captioned with its lower-cased Unicode name ("grinning face").
Unlike the shapes world the captions are open vocabulary and every class has one example, which
makes it a good retrieval and few-shot playground. Rendering takes seconds, so the result is cached
in `clipkit.cache_dir()/emoji` as safetensors + JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from clipkit.data.transforms import CaptionedImages
from clipkit.env import cache_dir
from clipkit.io import atomic_write

FONT_ENV = "CLIPKIT_EMOJI_FONT"
FONT_PATHS = (
    Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"),  # Debian, Ubuntu
    Path("/usr/share/fonts/noto/NotoColorEmoji.ttf"),  # Arch
    Path("/usr/share/fonts/google-noto-emoji/NotoColorEmoji.ttf"),  # Fedora
    Path("/usr/share/fonts/noto-color-emoji/NotoColorEmoji.ttf"),
)
BITMAP_SIZE = 109  # Noto Color Emoji is a bitmap font: its glyphs exist at this size only
# Pictographs, plus the symbol and punctuation emoji ("double exclamation mark").
_CATEGORIES = {"So", "Sm", "Po", "Pd", "Sk"}
# Code points that are building blocks rather than pictures: flag letters and skin-tone swatches.
_EXCLUDED_NAME_PREFIXES = ("REGIONAL INDICATOR", "EMOJI MODIFIER")
_CACHE_VERSION = 1  # bump when rendering changes, so old caches are not reused


class EmojiFontNotFoundError(FileNotFoundError):
    """The Noto Color Emoji font is not installed where we look."""


@dataclass(eq=False)
class EmojiSet(CaptionedImages):
    """Rendered emoji: `captions[i]` is the Unicode name of `characters[i]`; `labels` index `class_names`."""

    characters: list[str] = field(default_factory=list)  # the emoji itself, one per image
    per_item_fields: tuple[str, ...] = field(default=("images", "captions", "labels", "characters"), repr=False)


def find_emoji_font(font_path: str | Path | None = None) -> Path:
    """The font file: `font_path`, else $CLIPKIT_EMOJI_FONT, else the usual system places."""
    if font_path is not None or os.environ.get(FONT_ENV):
        path = Path(font_path if font_path is not None else os.environ[FONT_ENV]).expanduser()
        if path.is_file():
            return path
        raise EmojiFontNotFoundError(
            f"emoji font {path} does not exist; point font_path= or {FONT_ENV} at NotoColorEmoji.ttf"
        )
    for path in FONT_PATHS:
        if path.is_file():
            return path
    raise EmojiFontNotFoundError(
        f"Noto Color Emoji font not found (looked in {', '.join(str(p) for p in FONT_PATHS)}). "
        f"Install it with `sudo apt install fonts-noto-color-emoji`, or download NotoColorEmoji.ttf and set "
        f"{FONT_ENV}=/path/to/NotoColorEmoji.ttf (or pass font_path=...)."
    )


def emoji_characters(font_path: str | Path) -> list[str]:
    """Single code points the font draws that have a Unicode name (in Python's Unicode database)."""
    from fontTools.ttLib import TTFont

    with TTFont(str(font_path), lazy=True) as font:
        codepoints = sorted(font.getBestCmap())
    characters = []
    for codepoint in codepoints:
        character = chr(codepoint)
        name = unicodedata.name(character, "")
        if codepoint >= 0xA0 and name and unicodedata.category(character) in _CATEGORIES:
            if not name.startswith(_EXCLUDED_NAME_PREFIXES):
                characters.append(character)
    return characters


def render_emoji(character: str, font, image_size: int, background: tuple[int, int, int]):
    """One emoji as an RGB PIL image of `image_size` pixels, centred on `background`; None if blank."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(character)
    canvas = Image.new("RGBA", (max(right, 1), max(bottom, 1)), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((0, 0), character, font=font, embedded_color=True)
    box = canvas.getbbox()
    if box is None:
        return None
    glyph = canvas.crop(box)
    side = int(max(glyph.size) * 1.08)  # a small margin, as emoji pickers show them
    square = Image.new("RGBA", (side, side), (*background, 255))
    square.alpha_composite(glyph, ((side - glyph.width) // 2, (side - glyph.height) // 2))
    return square.convert("RGB").resize((image_size, image_size), Image.Resampling.LANCZOS)


def _cache_files(font: Path, image_size: int, background: tuple[int, int, int]) -> tuple[Path, Path]:
    stat = font.stat()
    # Any change to the font file or the rendering options makes a new cache entry.
    key = json.dumps([_CACHE_VERSION, str(font.resolve()), stat.st_size, stat.st_mtime_ns, image_size, background])
    stem = f"emoji-{image_size}px-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
    folder = cache_dir() / "emoji"
    return folder / f"{stem}.safetensors", folder / f"{stem}.json"


def _read_cache(tensor_file: Path, json_file: Path):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not (tensor_file.is_file() and json_file.is_file()):
        return None
    try:
        meta = json.loads(json_file.read_text())
        images = load_file(str(tensor_file))["images"]
    except (OSError, ValueError, KeyError, SafetensorError):
        return None  # a damaged cache is rebuilt, not trusted
    if len(images) != len(meta.get("captions", ())) or len(images) != len(meta.get("characters", ())):
        return None
    return images, meta["captions"], meta["characters"]


def _write_cache(tensor_file: Path, json_file: Path, images: torch.Tensor, captions, characters, font: Path) -> None:
    from safetensors.torch import save_file

    tensor_file.parent.mkdir(parents=True, exist_ok=True)
    meta = json.dumps({"font": str(font), "captions": captions, "characters": characters})
    atomic_write(tensor_file, lambda temporary: save_file({"images": images.contiguous()}, str(temporary)))
    atomic_write(json_file, lambda temporary: temporary.write_text(meta))


def load_emoji(
    image_size: int = 64,
    font_path: str | Path | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    cache: bool = True,
) -> EmojiSet:
    """All emoji of the font as uint8 [N, 3, image_size, image_size] with their names as captions.

    The first call renders (seconds) and, with `cache`, stores the result; later calls load it.
    """
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    font = find_emoji_font(font_path)
    background = tuple(int(c) for c in background)
    tensor_file, json_file = _cache_files(font, image_size, background)
    cached = _read_cache(tensor_file, json_file) if cache else None
    if cached is None:
        from PIL import ImageFont

        try:
            face = ImageFont.truetype(str(font), BITMAP_SIZE)
        except OSError as error:
            raise EmojiFontNotFoundError(f"{font} cannot be read as a colour bitmap font ({error}); "
                                         "use NotoColorEmoji.ttf from fonts-noto-color-emoji") from error
        pictures, captions, characters = [], [], []
        for character in emoji_characters(font):
            picture = render_emoji(character, face, image_size, background)
            if picture is not None:
                pictures.append(np.asarray(picture))
                captions.append(unicodedata.name(character).lower())
                characters.append(character)
        images = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()  # [N, H, W, 3] -> [N, 3, H, W]
        if cache:
            _write_cache(tensor_file, json_file, images, captions, characters, font)
    else:
        images, captions, characters = cached
    return EmojiSet(
        images=images,
        captions=list(captions),
        labels=torch.arange(len(captions)),
        class_names=list(captions),
        characters=list(characters),
    )
