"""Emoji with their Unicode names as captions: ~1,400 small colour pictures, each with a unique caption.

Rendered from the Noto Color Emoji font (Debian: fonts-noto-color-emoji): every single-codepoint
pictograph in its character map, captioned with its lower-cased Unicode name ("grinning face").
Unlike the shapes world the captions are open vocabulary and every class has one example, which
makes it a good retrieval and few-shot playground. Rendering takes seconds, so the result is cached
in `clipkit.cache_dir()/emoji` as safetensors + JSON.

For moderation (`clipkit.moderation`): `LABEL_SETS` (weapons, alcohol and tobacco, by Unicode name)
and `is_person` give labels (`moderation_labels`); `load_skin_tone_emoji` renders every emoji that
takes a skin-tone modifier in all six tones (`SKIN_TONES`), the group attribute of a fairness audit.
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


def _cache_files(font: Path, image_size: int, background: tuple[int, int, int], kind: str = "emoji") -> tuple[Path, Path]:
    stat = font.stat()
    # Any change to the font file or the rendering options makes a new cache entry.
    key = json.dumps([_CACHE_VERSION, str(font.resolve()), stat.st_size, stat.st_mtime_ns, image_size, background])
    stem = f"{kind}-{image_size}px-{hashlib.sha1(key.encode()).hexdigest()[:12]}"
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


def _open_face(font: Path):
    from PIL import ImageFont

    try:
        return ImageFont.truetype(str(font), BITMAP_SIZE)
    except OSError as error:
        raise EmojiFontNotFoundError(f"{font} cannot be read as a colour bitmap font ({error}); "
                                     "use NotoColorEmoji.ttf from fonts-noto-color-emoji") from error


def _rendered(kind: str, sequences, image_size: int, font_path, background, cache: bool):
    """(images uint8 [N, 3, S, S], captions, characters) of the emoji `sequences(font, face)` yields as
    (characters, caption) pairs, from the cache when it holds them; blank glyphs are left out."""
    if image_size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {image_size}")
    font = find_emoji_font(font_path)
    background = tuple(int(c) for c in background)
    tensor_file, json_file = _cache_files(font, image_size, background, kind)
    cached = _read_cache(tensor_file, json_file) if cache else None
    if cached is not None:
        return cached
    face = _open_face(font)
    pictures, captions, characters = [], [], []
    for character, caption in sequences(font, face):
        picture = render_emoji(character, face, image_size, background)
        if picture is not None:
            pictures.append(np.asarray(picture))
            captions.append(caption)
            characters.append(character)
    images = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2).contiguous()  # [N, H, W, 3] -> [N, 3, H, W]
    if cache:
        _write_cache(tensor_file, json_file, images, captions, characters, font)
    return images, captions, characters


def load_emoji(
    image_size: int = 64,
    font_path: str | Path | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    cache: bool = True,
) -> EmojiSet:
    """All emoji of the font as uint8 [N, 3, image_size, image_size] with their names as captions.

    The first call renders (seconds) and, with `cache`, stores the result; later calls load it.
    """

    def single(font, face):
        return ((character, unicodedata.name(character).lower()) for character in emoji_characters(font))

    images, captions, characters = _rendered("emoji", single, image_size, font_path, background, cache)
    return EmojiSet(
        images=images,
        captions=list(captions),
        labels=torch.arange(len(captions)),
        class_names=list(captions),
        characters=list(characters),
    )


# ---------------------------------------------------------------------------------------------
# What moderation needs: label sets, and skin-tone variants as a group attribute.

# The five Fitzpatrick-based modifiers (Unicode 8.0); "default" is the unmodified yellow emoji.
SKIN_TONES = {
    "default": "",
    "light": "\U0001F3FB",
    "medium-light": "\U0001F3FC",
    "medium": "\U0001F3FD",
    "medium-dark": "\U0001F3FE",
    "dark": "\U0001F3FF",
}
# Emoji by lower-cased Unicode name in each label set a moderation policy can be checked against
# (plain data, chosen by hand from the font's names; the Unicode/CLDR groups are too coarse for rules).
LABEL_SETS: dict[str, tuple[str, ...]] = {
    "weapons": ("pistol", "dagger knife", "hocho", "crossed swords", "bow and arrow", "bomb", "axe"),
    "alcohol and tobacco": ("wine glass", "beer mug", "clinking beer mugs", "cocktail glass", "tropical drink",
                            "sake bottle and cup", "bottle with popping cork", "clinking glasses", "tumbler glass",
                            "smoking symbol"),
}
# A whole person (not a lone hand or body part) has one of these words in its Unicode name.
PERSON_WORDS = (
    "person", "man", "woman", "men", "women", "boy", "girl", "baby", "child", "adult", "bride", "prince", "princess",
    "officer", "worker", "guardsman", "dancer", "runner", "surfer", "swimmer", "golfer", "snowboarder", "bicyclist",
    "pedestrian", "ninja", "superhero", "supervillain", "mage", "fairy", "vampire", "merperson", "elf", "sleuth",
    "christmas", "juggling", "wrestlers", "lifter", "selfie", "palm", "shrug", "angel", "couple", "kiss", "rowboat",
    "horse racing", "breast-feeding", "haircut", "massage", "bath", "accommodation", "polo", "handball", "levitating",
)


def is_person(caption: str) -> bool:
    """Whether an emoji's (base) name shows a whole person: "runner" yes, "thumbs up sign" no."""
    words = set(caption.replace(":", " ").split())
    return any((word in words) if " " not in word else (word in caption) for word in PERSON_WORDS)


def moderation_labels(captions) -> dict[str, torch.Tensor]:
    """Bool [N] per label set of LABEL_SETS, plus "people", for emoji captioned by their (base) names."""
    bases = [caption.split(":")[0] for caption in captions]
    labels = {name: torch.tensor([base in members for base in bases]) for name, members in LABEL_SETS.items()}
    labels["people"] = torch.tensor([is_person(base) for base in bases])
    return labels


@dataclass(eq=False)
class SkinToneEmojiSet(EmojiSet):
    """Every emoji that takes a skin-tone modifier, once per tone: `tones[i]` (a SKIN_TONES key) is the
    group attribute a fairness audit breaks results down by; `bases[i]` is the unmodified emoji's name."""

    tones: list[str] = field(default_factory=list)  # the skin tone of each image ("default": none)
    bases: list[str] = field(default_factory=list)  # the base emoji's lower-cased Unicode name
    per_item_fields: tuple[str, ...] = field(default=("images", "captions", "labels", "characters", "tones", "bases"), repr=False)


def modifier_bases(font, face) -> list[str]:
    """The emoji the font draws with skin tones: with a modifier appended it lays out one glyph, not two."""
    modifier = SKIN_TONES["medium"]
    return [c for c in emoji_characters(font) if face.getbbox(c + modifier)[2] < 1.5 * face.getbbox(c)[2]]


def load_skin_tone_emoji(
    image_size: int = 64,
    font_path: str | Path | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    cache: bool = True,
) -> SkinToneEmojiSet:
    """Each emoji that takes a skin tone, in every tone of SKIN_TONES (default first): about 130 x 6
    images captioned as CLDR names them ("thumbs up sign: dark skin tone"). Cached like load_emoji."""

    def toned(font, face):
        for base in modifier_bases(font, face):
            name = unicodedata.name(base).lower()
            for tone, modifier in SKIN_TONES.items():
                yield base + modifier, name if not modifier else f"{name}: {tone} skin tone"

    images, captions, characters = _rendered("skin-tones", toned, image_size, font_path, background, cache)
    by_modifier = {modifier: tone for tone, modifier in SKIN_TONES.items() if modifier}
    tones = [by_modifier.get(character[-1], "default") for character in characters]
    return SkinToneEmojiSet(
        images=images,
        captions=list(captions),
        labels=torch.arange(len(captions)),
        class_names=list(captions),
        characters=list(characters),
        tones=tones,
        bases=[caption.split(":")[0] for caption in captions],
    )
