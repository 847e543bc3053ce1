"""The words of the shapes world: its colours, shapes, sizes, places and relations, the pairs the
compositional split holds out, and the caption templates, all plain data.

Change a list here and the world, its captions and its class names follow.
"""

from __future__ import annotations

# Flat, well separated colours: a pixel oracle can tell them apart by thresholds on a dark background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "orange": (250, 140, 10),
    "yellow": (240, 230, 30),
    "green": (30, 190, 50),
    "cyan": (30, 220, 230),
    "blue": (40, 70, 250),
    "purple": (150, 50, 220),
    "pink": (250, 120, 200),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross", "heart", "diamond")
# Object diameter as a fraction of the image side; two large objects side by side still do not touch.
SIZES: dict[str, float] = {"small": 0.28, "large": 0.44}
# Object centre (x, y) as fractions of the image side, before jitter.
POSITIONS: dict[str, tuple[float, float]] = {
    "left": (0.27, 0.5),
    "right": (0.73, 0.5),
    "top": (0.5, 0.27),
    "bottom": (0.5, 0.73),
    "centre": (0.5, 0.5),
}
# How the first object stands to the second, and where that puts each of them.
RELATIONS: dict[str, tuple[str, str]] = {
    "left of": ("left", "right"),
    "right of": ("right", "left"),
    "above": ("top", "bottom"),
    "below": ("bottom", "top"),
}
INVERSE_RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}

# One pair per colour and one per shape, so every colour and every shape keeps 7 partners in training.
HELDOUT_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("orange", "hexagon"),
    ("yellow", "heart"),
    ("green", "star"),
    ("cyan", "square"),
    ("blue", "diamond"),
    ("purple", "circle"),
    ("pink", "cross"),
)

WHERE_PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left of the frame"),
    "right": ("on the right", "at the right of the frame"),
    "top": ("at the top", "near the top of the frame"),
    "bottom": ("at the bottom", "near the bottom of the frame"),
    "centre": ("in the centre", "in the middle of the frame"),
}

# Caption templates, plain data: add a style or a template and every sampler picks it up.
# "object" phrases name one object and hold {colour} and {shape} exactly once (optionally {size});
# "one" captions hold {object} (optionally {where}); "two" captions hold {a} and {b} (optionally
# {relation}). The "separate" style names colour and shape apart, which helps a model learn them as
# separate attributes and so compose held-out pairs.
CAPTION_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "terse": {
        "object": ["{colour} {shape}"],
        "one": ["{object}"],
        "two": ["{a} {relation} {b}", "{a} and {b}"],
    },
    "plain": {
        "object": ["a {colour} {shape}", "a {size} {colour} {shape}"],
        "one": ["{object}", "{object} {where}"],
        "two": ["{a} {relation} {b}", "{a} and {b}"],
    },
    "wordy": {
        "object": ["a {size} {colour} {shape}", "a {colour} {shape}"],
        "one": [
            "a picture of {object} {where}",
            "a simple drawing of {object} on a dark background",
            "an image showing {object} {where}",
        ],
        "two": [
            "a picture of {a} {relation} {b}",
            "a drawing with {a} and {b}",
            "there is {a} {relation} {b}, on a dark background",
        ],
    },
    "separate": {
        "object": [
            "a {shape}, coloured {colour}",
            "something {colour}: a {shape}",
            "a {size} {shape} painted {colour}",
            "a {shape} whose colour is {colour}",
        ],
        "one": ["{object}", "{object}, {where}"],
        "two": ["{a}, {relation} {b}", "{a}, and {b}"],
    },
}
# How the random world names an object drawn in outline only, whatever the caption style: the colour
# and shape words stay side by side, so the prompt "a red star" still fits "an outline of a red star".
OUTLINE_TEMPLATES: list[str] = [
    "an outline of a {colour} {shape}",
    "a {colour} {shape} drawn in outline",
    "the outline of a {size} {colour} {shape}",
]
BINDING_TEMPLATE = "a {colour_a} {shape_a} and a {colour_b} {shape_b}"


def class_prompt(pair: tuple[str, str]) -> str:
    """The class name of a colour-shape pair, e.g. ('red', 'circle') -> 'red circle'."""
    colour, shape = pair
    return f"{colour} {shape}"
