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
