"""Hard-negative captions for the shapes world: NegCLIP's recipe (Yuksekgonul et al., 2023, "When and
why vision-language models behave like bags-of-words"), as pure functions of (caption, scene).

A contrastive batch only teaches what it makes the model tell apart. "a red circle and a blue square"
has to beat captions with other words, never "a blue circle and a red square", so a model may read
captions as bags of words and still win every batch. A hard negative is a caption made false by
moving words, not changing them, or by changing one word:

- `swap_attribute`: exchange the colours, shapes or sizes of the two objects;
- `swap_relation`: "left of" <-> "right of", "above" <-> "below", objects kept;
- `replace_attribute`: one object's colour, shape or size replaced by another value.

Each returns None when it cannot make the caption false (one object, equal values, a word the caption
does not say). With `allowed` (the world's seen pairs) no negative names a held-out colour-shape pair,
so the compositional split stays clean: held-out pairs appear in no training text, true or false.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Sequence

from clipkit.data.grammar import fix_articles

NEGATIVE_KINDS = ("swap_colour", "swap_shape", "swap_size", "swap_relation", "replace_colour", "replace_shape",
                  "replace_size")  # every way `hard_negatives` may falsify a caption
OPPOSITE_RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
RELATION_WORDS = re.compile(r"\b(" + "|".join(OPPOSITE_RELATIONS) + r")\b")  # a caption's relation phrase


def _exchange(caption: str, first: str, second: str) -> str:
    """Every whole word `first` becomes `second` and the other way round, in one pass."""
    words = {first: second, second: first}
    return re.sub(rf"\b({re.escape(first)}|{re.escape(second)})\b", lambda match: words[match.group(1)], caption)


def _names_pairs(scene_pairs: Sequence[tuple[str, str]], allowed: Collection[tuple[str, str]] | None) -> bool:
    return allowed is None or all(tuple(pair) in allowed for pair in scene_pairs)


def swap_attribute(caption: str, scene, kind: str, allowed: Collection[tuple[str, str]] | None = None) -> str | None:
    """The caption with the two objects' `kind` ("colour", "shape" or "size") exchanged: "a red circle
    and a blue square" -> "a blue circle and a red square" (colour). None with one object, equal
    values (the swap would say the same), a caption that names neither value, or (with `allowed`)
    a swap that would name a colour-shape pair outside `allowed`."""
    if len(scene.objects) != 2 or kind not in ("colour", "shape", "size"):
        return None
    a, b = (getattr(obj, kind) for obj in scene.objects)
    if a == b or (kind != "size" and (scene.objects[0].colour == scene.objects[1].colour
                                      or scene.objects[0].shape == scene.objects[1].shape)):
        return None  # equal colours or shapes: the swapped caption would still be true
    (colour_a, shape_a), (colour_b, shape_b) = scene.pairs
    named = {"colour": [(colour_b, shape_a), (colour_a, shape_b)],
             "shape": [(colour_a, shape_b), (colour_b, shape_a)], "size": []}[kind]
    if not _names_pairs(named, allowed):
        return None
    swapped = _exchange(caption, a, b)
    return fix_articles(swapped) if swapped != caption else None


def swap_relation(caption: str, scene) -> str | None:
    """The caption with its relation reversed, objects kept: "a red circle left of a blue square" ->
    "a red circle right of a blue square". None when the caption states no relation ("... and ...")."""
    if len(scene.objects) != 2 or scene.relation is None:
        return None
    swapped = RELATION_WORDS.sub(lambda match: OPPOSITE_RELATIONS[match.group(1)], caption)
    return swapped if swapped != caption else None


def replace_attribute(
    caption: str,
    scene,
    kind: str,
    values: Sequence[str],
    rng: random.Random,
    allowed: Collection[tuple[str, str]] | None = None,
) -> str | None:
    """The caption with one object's `kind` ("colour", "shape" or "size") replaced by another of
    `values`, drawn with `rng`: "a red circle" -> "a green circle". The new value is one the caption
    does not say and that no object of the scene has, so the caption becomes false whatever object
    it would now describe; with `allowed` the new colour-shape pair is one of them. None when no
    value qualifies or the caption does not say the object's value."""
    if kind not in ("colour", "shape", "size") or not scene.objects:
        return None
    slot = rng.randrange(len(scene.objects))
    obj = scene.objects[slot]
    old = getattr(obj, kind)
    if not re.search(rf"\b{re.escape(old)}\b", caption):
        return None
    if sum(getattr(other, kind) == old for other in scene.objects) > 1:
        return None  # both objects share the value: the caption does not say which one is meant
    present = {getattr(other, kind) for other in scene.objects}
    said = set(re.findall(r"\w+", caption))
    options = [value for value in values if value not in present and value not in said]
    if kind != "size":
        pair = {"colour": lambda v: (v, obj.shape), "shape": lambda v: (obj.colour, v)}[kind]
        options = [value for value in options if _names_pairs([pair(value)], allowed)]
    if not options:
        return None
    new = options[rng.randrange(len(options))]
    return fix_articles(re.sub(rf"\b{re.escape(old)}\b", new, caption, count=1))


def hard_negatives(
    caption: str,
    scene,
    kinds: Sequence[str] = ("swap_colour", "swap_shape", "swap_size", "swap_relation"),
    vocabulary: dict[str, Sequence[str]] | None = None,
    allowed: Collection[tuple[str, str]] | None = None,
    rng: random.Random | None = None,
) -> list[str]:
    """Every distinct false caption `kinds` (a subset of NEGATIVE_KINDS) make of `caption`, in the
    order of `kinds`. The "replace_*" kinds need `vocabulary` ({"colour": [...], "shape": [...],
    "size": [...]}, the world's words) and draw with `rng`."""
    unknown = [kind for kind in kinds if kind not in NEGATIVE_KINDS]
    if unknown:
        raise ValueError(f"unknown hard-negative kinds {unknown}: choose among {NEGATIVE_KINDS}")
    rng = rng or random.Random(0)
    made: list[str] = []
    for kind in kinds:
        verb, attribute = kind.split("_", 1)
        if kind == "swap_relation":
            negative = swap_relation(caption, scene)
        elif verb == "swap":
            negative = swap_attribute(caption, scene, attribute, allowed)
        else:
            if vocabulary is None or attribute not in vocabulary:
                raise ValueError(f"{kind} needs vocabulary[{attribute!r}]: the world's {attribute} words")
            negative = replace_attribute(caption, scene, attribute, vocabulary[attribute], rng, allowed)
        if negative is not None and negative != caption and negative not in made:
            made.append(negative)
    return made
