"""Hard-negative captions (NegCLIP's swaps and replacements), checked against a reading of the caption
written independently: which colour goes with which shape, by order of appearance."""

import random
import re

import pytest

from clipkit.data.negatives import (
    NEGATIVE_KINDS,
    hard_negatives,
    replace_attribute,
    swap_attribute,
    swap_relation,
)
from clipkit.data.shapes import COLOURS, SHAPES, ShapesWorld
from clipkit.data.stream import ShapesSource

WORLD = ShapesWorld()
HELD = set(WORLD.heldout_pairs)


def described_pairs(caption: str) -> set[tuple[str, str]]:
    """The (colour, shape) pairs a caption states: its i-th colour word goes with its i-th shape word
    (every template names an object's colour and shape next to each other, in either order)."""
    words = re.findall(r"\w+", caption)
    colours = [w for w in words if w in COLOURS]
    shapes = [w for w in words if w in SHAPES]
    assert len(colours) == len(shapes), caption
    return set(zip(colours, shapes))


def bag(text: str) -> list[str]:
    return sorted("a" if w == "an" else w for w in re.findall(r"\w+", text))


@pytest.fixture(scope="module")
def two_objects():
    sample = WORLD.sample(300, seed=3, objects=2)
    return list(zip(sample.captions, sample.scenes))


def test_the_reading_agrees_with_every_true_caption(two_objects):
    for caption, scene in two_objects:
        assert described_pairs(caption) == set(scene.pairs)


@pytest.mark.parametrize("kind", ["colour", "shape"])
def test_swaps_keep_the_words_and_make_the_caption_false(two_objects, kind):
    made = 0
    for caption, scene in two_objects:
        negative = swap_attribute(caption, scene, kind)
        (colour_a, shape_a), (colour_b, shape_b) = scene.pairs
        if colour_a == colour_b or shape_a == shape_b:
            assert negative is None
            continue
        made += 1
        assert bag(negative) == bag(caption) and negative != caption
        assert described_pairs(negative) != set(scene.pairs)  # false of the image it was made from
        assert " a orange" not in negative and " an red" not in negative
    assert made > 200


def test_size_swaps_change_only_size_words_and_need_different_sizes(two_objects):
    made = 0
    for caption, scene in two_objects:
        negative = swap_attribute(caption, scene, "size")
        sizes = [obj.size for obj in scene.objects]
        said = [w for w in re.findall(r"\w+", caption) if w in ("small", "large")]
        if sizes[0] == sizes[1] or not said:
            assert negative is None
            continue
        made += 1
        assert [w for w in re.findall(r"\w+", negative) if w in ("small", "large")] == [
            {"small": "large", "large": "small"}[w] for w in said]
        assert described_pairs(negative) == set(scene.pairs)
    assert made > 20


def test_relation_swaps_reverse_the_relation_and_keep_the_objects(two_objects):
    opposite = {"left": "right", "right": "left", "above": "below", "below": "above"}
    made = 0
    for caption, scene in two_objects:
        negative = swap_relation(caption, scene)
        relation = re.search(r"\b(left|right) of\b|\b(above|below)\b", caption)
        if relation is None:
            assert negative is None
            continue
        made += 1
        word = relation.group(1) or relation.group(2)
        assert re.search(rf"\b{opposite[word]}\b", negative) and described_pairs(negative) == set(scene.pairs)
        assert negative.replace(opposite[word], word) == caption
    assert made > 100


def test_replacements_change_one_word_to_a_value_absent_from_the_scene(two_objects):
    rng = random.Random(0)
    for caption, scene in two_objects[:100]:
        negative = replace_attribute(caption, scene, "colour", list(COLOURS), rng)
        if negative is None:
            continue
        changed = [(a, b) for a, b in zip(bag(caption), bag(negative)) if a != b]
        assert len(re.findall(r"\w+", negative)) == len(re.findall(r"\w+", caption))
        new = set(re.findall(r"\w+", negative)) - set(re.findall(r"\w+", caption))
        assert changed and len(new - {"a", "an"}) == 1
        (colour,) = new - {"a", "an"}
        assert colour in COLOURS and colour not in {obj.colour for obj in scene.objects}
    one = WORLD.sample(1, seed=0, objects=1)
    first = replace_attribute(one.captions[0], one.scenes[0], "shape", list(SHAPES), random.Random(5))
    again = replace_attribute(one.captions[0], one.scenes[0], "shape", list(SHAPES), random.Random(5))
    assert first == again and first != one.captions[0] and described_pairs(first) != set(one.scenes[0].pairs)


def test_no_negative_names_a_held_out_pair_when_told_the_seen_pairs(two_objects):
    seen, vocabulary = set(WORLD.seen_pairs), {"colour": list(COLOURS), "shape": list(SHAPES), "size": ["small", "large"]}
    unguarded = 0
    for caption, scene in two_objects:
        for negative in hard_negatives(caption, scene, NEGATIVE_KINDS, vocabulary, allowed=seen, rng=random.Random(1)):
            assert not described_pairs(negative) & HELD, negative
        unguarded += any(described_pairs(n) & HELD for n in hard_negatives(caption, scene, ("swap_colour", "swap_shape")))
    assert unguarded > 0  # without the guard some would: the guard is what keeps the split clean


def test_one_object_and_unknown_kinds():
    one = WORLD.sample(5, seed=1, objects=1)
    for caption, scene in zip(one.captions, one.scenes):
        assert hard_negatives(caption, scene) == []
    with pytest.raises(ValueError, match="unknown hard-negative kinds.*choose among"):
        hard_negatives(one.captions[0], one.scenes[0], ("swap_everything",))
    with pytest.raises(ValueError, match="needs vocabulary"):
        hard_negatives(one.captions[0], one.scenes[0], ("replace_colour",))


def test_a_shapes_batch_holds_false_captions_only_and_is_the_same_for_the_same_step():
    source = ShapesSource(p_two_objects=0.5)
    batch = source.batch(64, seed=2, step=7, hard_negatives=True, attributes=False)
    again = source.batch(64, seed=2, step=7, hard_negatives=True, attributes=False)
    assert batch.hard_negatives == again.hard_negatives and len(batch.hard_negatives) > 32
    captions = {caption.lower() for caption in batch.captions}
    assert len(set(batch.hard_negatives)) == len(batch.hard_negatives)
    for negative in batch.hard_negatives:
        assert negative.lower() not in captions and not described_pairs(negative) & HELD
