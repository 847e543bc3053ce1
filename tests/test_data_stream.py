"""The training-data stream: batches that depend only on (seed, step), mixed sources, hard negatives."""

import re

import pytest
import torch

from clipkit.data.shapes import ShapesConfig, ShapesWorld
from clipkit.data.stream import (
    CaptionedSource,
    ShapesSource,
    TrainingData,
    build_data,
    step_batches,
)
from clipkit.data.transforms import CaptionedImages


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(ShapesConfig(image_size=32))


def numbered_images(count: int, size: int = 8) -> CaptionedImages:
    """Grey images whose every pixel is 10 * their index, so a batch row tells which image it is."""
    values = torch.arange(count, dtype=torch.uint8) * 10
    images = values[:, None, None, None].expand(count, 3, size, size).contiguous()  # [N] -> [N, 3, S, S]
    return CaptionedImages(images, [f"image {i}" for i in range(count)], torch.arange(count) % 3, ["a", "b", "c"])


def test_shapes_batches_are_what_the_world_yields_at_that_step(world):
    source = ShapesSource(world=world)
    expected = list(world.batches(16, seed=5, num_batches=3))
    for step in (2, 0, 1):  # any order: a batch depends only on (seed, step)
        batch = source.batch(16, seed=5, step=step, hard_negatives=False, attributes=False)
        assert torch.equal(batch.images, expected[step].images) and batch.captions == expected[step].captions
        assert batch.groups == [caption.lower() for caption in expected[step].captions]


def test_captioned_batches_visit_every_image_once_per_epoch_in_a_new_order():
    data = numbered_images(10)
    source = CaptionedSource(8, data, name="toy")
    batches = [source.batch(4, seed=3, step=step, hard_negatives=False, attributes=False) for step in range(5)]
    captions = [caption for batch in batches for caption in batch.captions]  # 20 positions: two epochs
    assert sorted(captions[:10]) == sorted(data.captions) == sorted(captions[10:])
    assert captions[:10] != captions[10:]
    for batch in batches:
        indices = [int(caption.split()[1]) for caption in batch.captions]
        assert batch.images.shape == (4, 3, 8, 8)
        assert all(bool((image == 10 * index).all()) for image, index in zip(batch.images, indices))
        assert batch.groups == [("toy", index % 3) for index in indices]
    again = source.batch(4, seed=3, step=3, hard_negatives=False, attributes=False)
    assert again.captions == batches[3].captions


def test_mixed_data_splits_the_batch_by_weight_and_aligns_attribute_rows(world):
    shapes, toy = ShapesSource(world=world), CaptionedSource(32, numbered_images(10), name="toy")
    batch = TrainingData([shapes, toy], weights=[3, 1]).batch(16, seed=1, step=2, hard_negatives=True, attributes=True)
    first = shapes.batch(12, 1, 2, hard_negatives=True, attributes=True)
    second = toy.batch(4, 1 + 7919, 2, hard_negatives=True, attributes=True)  # each source its own seed
    assert torch.equal(batch.images, torch.cat([first.images, second.images]))
    assert batch.captions == first.captions + second.captions and batch.groups == first.groups + second.groups
    assert batch.hard_negatives == first.hard_negatives
    assert batch.attribute_texts == sorted(first.attribute_texts)
    columns = [batch.attribute_texts.index(text) for text in first.attribute_texts]
    assert torch.equal(batch.attribute_positives[:12, columns], first.attribute_positives)
    assert not batch.attribute_positives[12:].any()  # the captioned images have no attributes


def test_a_worker_draws_the_same_batches_as_the_loop(world):
    data = TrainingData([ShapesSource(world=world)])
    inline = list(step_batches(data, 8, seed=2, start=3, stop=6, attributes=True))
    drawn = list(step_batches(data, 8, seed=2, start=3, stop=6, attributes=True, workers=1))
    assert [b.captions for b in drawn] == [b.captions for b in inline]
    assert all(torch.equal(a.images, b.images) and torch.equal(a.attribute_positives, b.attribute_positives)
               for a, b in zip(drawn, inline))


def test_attribute_texts_can_name_sizes_and_places_and_mark_every_object():
    source = ShapesSource(32, attributes=["colour", "shape", "size", "position"], p_two_objects=0.5)
    batch = source.batch(32, seed=0, step=0, hard_negatives=False, attributes=True)
    sample = source.world.sample(32, seed=[0, 0])
    for row, scene in enumerate(sample.scenes):
        expected = set()
        for obj in scene.objects:
            where = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom", "centre": "in the centre"}
            article = "an" if obj.shape[0] in "aeiou" else "a"
            expected |= {f"something {obj.colour}", f"{article} {obj.shape}", f"something {obj.size}", f"something {where[obj.position]}"}
        marked = {text for text, on in zip(batch.attribute_texts, batch.attribute_positives[row]) if on}
        assert marked == expected
    assert source.spec["attributes"] == ["colour", "shape", "size", "position"]
    assert "attributes" not in ShapesSource(32).spec  # the default stays out of saved specs
    with pytest.raises(ValueError, match="unknown attributes.*texture"):
        ShapesSource(32, attributes=["colour", "texture"])


def test_build_data_names_the_choices_for_unknown_sources():
    with pytest.raises(ValueError, match="'shapes', 'fashion' or 'shapes\\+fashion'"):
        build_data("pictures")
    with pytest.raises(ValueError, match="'pictures'.*use 'shapes' or 'fashion'"):
        build_data({"pictures": {}})
    data = build_data({"shapes": {"image_size": 32}}, image_size=48)
    assert data.sources[0].world.config.image_size == 48 and data.spec == {"shapes": {"image_size": 48}}
    with pytest.raises(ValueError, match="no data sources"):
        TrainingData([])


def statement(text: str, world) -> tuple[list, str | None]:
    """The (colour, shape) pairs a caption names in order (its i-th colour word goes with its i-th
    shape word) and its relation words, if any."""
    words = re.findall(r"[a-z]+", text)
    relation = re.search(r"\b(left of|right of|above|below)\b", text)
    pairs = list(zip([w for w in words if w in world.colours], [w for w in words if w in world.shapes]))
    return pairs, relation.group(1) if relation else None


def true_by_geometry(pairs, relation, scene) -> bool:
    """Whether "<pairs[0]> <relation> <pairs[1]>" could describe `scene`, read from where its objects are
    (sizes unread): the same two pairs, the first mostly left of / right of / above / below the second."""
    if sorted(pairs) != sorted(scene.pairs):
        return False
    if relation is None:
        return True
    first, second = sorted(scene.objects, key=lambda o: (o.colour, o.shape) != pairs[0])
    across, down = second.x - first.x, second.y - first.y  # a relation holds along its axis, more than across it
    return {"left of": across > abs(down), "right of": -across > abs(down),
            "above": down > abs(across), "below": -down > abs(across)}[relation]


def test_swapped_twins_keep_the_batch_size_and_depend_only_on_seed_and_step(world):
    source = ShapesSource(world=world, swapped_twins=0.5)
    batch = source.batch(64, seed=2, step=7, hard_negatives=True, attributes=True)
    again = source.batch(64, seed=2, step=7, hard_negatives=True, attributes=True)
    expected = list(world.batches(64, seed=2, num_batches=8, swapped_twins=0.5))[7]
    assert len(batch.captions) == len(batch.groups) == batch.images.shape[0] == batch.attribute_positives.shape[0] == 64
    assert torch.equal(batch.images, again.images) and batch.captions == again.captions == expected.captions
    assert batch.hard_negatives == again.hard_negatives
    assert batch.captions != ShapesSource(world=world).batch(64, 2, 7, False, False).captions
    assert source.spec["swapped_twins"] == 0.5 and "swapped_twins" not in ShapesSource(32).spec
    with pytest.raises(ValueError, match="swapped_twins must be a probability"):
        ShapesSource(32, swapped_twins=-0.1)


def test_twins_are_negatives_of_their_original_and_no_hard_negative_is_true_of_a_batch_image(world):
    from clipkit.data.negatives import hard_negatives, swap_attribute
    from clipkit.loss import positives_from_groups

    source = ShapesSource(world=world, swapped_twins=1.0)
    batch = source.batch(128, seed=0, step=3, hard_negatives=True, attributes=False)
    scenes = world.sample(128, seed=[0, 3], swapped_twins=1.0).scenes
    twins = [row for row in range(1, 128) if len(scenes[row].objects) == 2
             and [(o.x, o.y) for o in scenes[row].objects] == [(o.x, o.y) for o in scenes[row - 1].objects]]
    assert len(twins) >= 15
    positives = positives_from_groups(batch.groups)  # [B, B]
    for row in twins:
        caption, original = batch.captions[row - 1], scenes[row - 1]
        assert batch.captions[row] == swap_attribute(caption, original, "colour")
        assert not positives[row, row - 1] and not positives[row - 1, row]
        if statement(caption, world)[1] is None:  # "a red circle and a blue square": its shape swap is true of the twin
            assert swap_attribute(caption, original, "shape", set(world.seen_pairs)) not in batch.hard_negatives
    equal = [(i, j) for i in range(128) for j in range(i) if batch.groups[i] == batch.groups[j]]
    assert all(positives[i, j] and positives[j, i] for i, j in equal)  # identical captions stay positives
    assert len(batch.hard_negatives) > 64
    said = {caption.lower() for caption in batch.captions}
    made_from = {}  # negative -> the rows whose captions it was made from (false of those by construction)
    for row, (caption, scene) in enumerate(zip(batch.captions, scenes)):
        for negative in hard_negatives(caption, scene, allowed=set(world.seen_pairs)):
            made_from.setdefault(negative, set()).add(row)
    for negative in batch.hard_negatives:
        assert negative.lower() not in said
        pairs, relation = statement(negative, world)
        assert not any(true_by_geometry(pairs, relation, scene)
                       for row, scene in enumerate(scenes) if row not in made_from[negative]), negative
