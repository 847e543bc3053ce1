"""What a person types or uploads, checked before any model sees it.

Every problem raises `InputError` (a ValueError) whose message names the problem and the fix; the
tabs show it in the page, API clients get it as their error. One splitting rule serves every list
box (labels, prompts, things to avoid): `SPLIT_RULE`, written under each box. Every text box has a
length limit, checked here with a clear message rather than cut silently by the browser.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from clipkit.prompts import TEMPLATES

MAX_IMAGE_PIXELS = 25_000_000  # larger images are refused from their header, before decoding (a 5000 x 5000 photo fits)
WORKING_SIDE = 1024  # accepted images are shrunk to this long side first: every model here sees far fewer pixels
MAX_ITEMS = 200  # more labels or prompts than this are refused: each costs a text embedding
MAX_ITEM_CHARS = 200  # a longer label or prompt is surely a paste gone wrong
MAX_BOX_CHARS = 10_000  # a whole list box: MAX_ITEMS short items fit, a pasted book does not
MAX_QUERY_CHARS = 500
MAX_TEMPLATE_CHARS = 200
MAX_RESULTS = 48  # most hits a search returns
MAX_STEER_STEPS = 300  # the steering slider's end: ~a minute of CPU for the small models

# The one rule for every list box: commas, semicolons and line breaks all separate items.
SPLIT_PATTERN = r"[,;\n]"
SPLIT_RULE = "separate items with commas, semicolons or new lines"

# The template dropdown: single templates and the ensembles of clipkit.prompts.TEMPLATES. Any text
# with one "{}" typed into the box is used as a template too.
TEMPLATE_CHOICES: dict[str, tuple[str, ...]] = {
    "a {}": ("a {}",),
    "{}": ("{}",),
    "a photo of a {}": ("a photo of a {}",),
    **{f"{name} ensemble ({len(templates)} templates)": tuple(templates) for name, templates in TEMPLATES.items()},
}


class InputError(ValueError):
    """Input a person can fix; the message says how."""


def check_length(text: str, limit: int, what: str) -> str:
    """`text` unchanged when it has at most `limit` characters, else an InputError naming `what`."""
    if len(text) > limit:
        raise InputError(f"the {what} is {len(text):,} characters long, more than this app takes ({limit:,}): shorten it")
    return text


def split_items(text: str | Sequence[str] | None, what: str, example: str, limit: int = MAX_ITEMS) -> list[str]:
    """A list box's text -> its items by the one rule (SPLIT_RULE); blanks dropped, repeats kept
    once, in order. A list or tuple is taken as the items already. Empty, too many or too long
    items are refused, naming `what` and showing `example`."""
    if isinstance(text, str):
        check_length(text, MAX_BOX_CHARS, f"{what} box")
        pieces = re.split(SPLIT_PATTERN, text)
    else:
        pieces = list(text or [])
    items = list(dict.fromkeys(str(piece).strip() for piece in pieces if str(piece).strip()))
    if not items:
        raise InputError(f"no {what}: type some ({SPLIT_RULE}), e.g. {example!r}")
    if len(items) > limit:
        raise InputError(f"{len(items)} {what} is more than this app takes ({limit}): remove some, or ask in several rounds")
    long = [item for item in items if len(item) > MAX_ITEM_CHARS]
    if long:
        raise InputError(f"one of the {what} is {len(long[0]):,} characters long (at most {MAX_ITEM_CHARS}): "
                         f"did a paste go wrong? {SPLIT_RULE[0].upper()}{SPLIT_RULE[1:]}")
    return items


def parse_labels(text: str | Sequence[str] | None, max_labels: int = MAX_ITEMS, example: str = "red circle, blue square") -> list[str]:
    """Labels by the one splitting rule -> a list; blanks dropped, repeats kept once, in order."""
    return split_items(text, "labels", example, max_labels)


def resolve_templates(choice: str | None) -> tuple[str, ...]:
    """A TEMPLATE_CHOICES name, or any text with one "{}" where the label goes."""
    if choice is None or not choice.strip():
        return TEMPLATE_CHOICES["a {}"]
    if choice in TEMPLATE_CHOICES:
        return TEMPLATE_CHOICES[choice]
    check_length(choice, MAX_TEMPLATE_CHARS, "template")
    if choice.count("{}") != 1:
        raise InputError(f"the template {choice!r} needs exactly one '{{}}' where the label goes, e.g. 'a {{}}'")
    return (choice,)


def unknown_words_warning(tokenizer, texts: Sequence[str]) -> str:
    """The words of `texts` a word-level tokenizer reads as <unk>, as one paragraph; "" when it knows them all."""
    from clipkit.tokenizer import unknown_words_message

    unknown = tokenizer.unknown_words(list(texts))
    return unknown_words_message(tokenizer, unknown) if unknown else ""


# ---------------------------------------------------------------------------------------------
# Images


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise InputError(
            f"the image is {width} x {height} = {width * height:,} pixels, more than this app accepts "
            f"({max_pixels:,}): shrink it (to 1,000 px on its long side, say) and try again"
        )


_NOT_AN_IMAGE = "the file is not an image this app can read (not an image, or damaged): upload a PNG, JPEG or WebP picture"


def check_image_file(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse a file that is not an image or is too large, reading only its header."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit, below, is lower
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Image.DecompressionBombError as error:
            raise InputError(f"the image is far too large to open safely ({error}); shrink it and try again") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            raise InputError(_NOT_AN_IMAGE) from None
    _check_pixels(width, height, max_pixels)


def read_image(image, max_pixels: int = MAX_IMAGE_PIXELS):
    """An RGB PIL image from whatever a Gradio input or a caller hands over: a file path, a PIL image,
    a numpy array [H, W, C], a uint8/float tensor [3, H, W], an unprocessed Gradio file payload
    ({"path": ...}) or a Sketchpad value (its composite). None, non-images and images over
    `max_pixels` (checked from the file header, before decoding) are refused with an InputError."""
    from PIL import Image

    from clipkit.data.files import BadImageError, _to_rgb, load_image_rgb

    if isinstance(image, dict) and "composite" in image:  # the Sketchpad's {"background", "layers", "composite"}
        image = image["composite"]
    if isinstance(image, dict):  # an unprocessed upload: Gradio's FileData
        image = image.get("path")
    if image is None:
        raise InputError("no image: upload one, draw one or pick an example, then press the button again")
    if isinstance(image, (str, Path)):
        check_image_file(image, max_pixels)
        try:
            picture = load_image_rgb(image, max_pixels=max_pixels)
        except BadImageError:
            raise InputError(_NOT_AN_IMAGE) from None
    elif isinstance(image, Image.Image):
        _check_pixels(*image.size, max_pixels)
        picture = _to_rgb(image)
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        picture = _array_to_pil(image, max_pixels)
    else:
        raise InputError(f"cannot read an image from a {type(image).__name__}: pass a file path, a PIL image or an array [H, W, 3]")
    if max(picture.size) > WORKING_SIDE:
        picture = picture.copy()
        picture.thumbnail((WORKING_SIDE, WORKING_SIDE))
    return picture


def _array_to_pil(array, max_pixels: int):
    from PIL import Image

    from clipkit.data.files import _to_rgb
    from clipkit.viz import to_display_array

    shape = tuple(array.shape)
    channels_first = len(shape) == 3 and shape[0] in (1, 3) and shape[-1] not in (1, 3, 4)
    height, width = (shape[1:3] if channels_first else shape[:2]) if len(shape) in (2, 3) else (0, 0)
    if height * width == 0:
        raise InputError(f"an image array must be [H, W], [H, W, 3 or 4] or [3, H, W], got shape {shape}")
    _check_pixels(width, height, max_pixels)
    if len(shape) == 3 and shape[-1] == 4:  # RGBA from a sketch: composite on white like a browser shows it
        return _to_rgb(Image.fromarray(np.asarray(array, dtype=np.uint8), mode="RGBA"))
    return Image.fromarray(to_display_array(array))
