"""The shapes world: determinism, the compositional split, captions that match the pixels, the binding probe."""

import re
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from clipkit.data import COLOURS, ShapesConfig, ShapesWorld, make_loader
from clipkit.data.negatives import swap_attribute
from clipkit.data.shapes import INVERSE_RELATIONS, RELATIONS, Scene, shape_mask
from clipkit.data.transforms import jpeg_roundtrip

RELATION_PATTERN = re.compile(r"\b(left of|right of|above|below)\b")


@pytest.fixture(scope="module")
def world():
    return ShapesWorld()


def mentioned_pairs(caption, world):
    """(colour, shape) of each object a caption names, in order: every template names both once per object."""
    words = re.findall(r"[a-z]+", caption)
    colours = [w for w in words if w in world.colours]
    shapes = [w for w in words if w in world.shapes]
    assert len(colours) == len(shapes), caption
    return list(zip(colours, shapes))


def reference_render(world, scene, background):
    """Naive per-pixel loop: paste each object's mask at its recorded centre over a flat background."""
    side = world.config.image_size
    image = np.empty((3, side, side))
    image[:] = np.asarray(background, dtype=float)[:, None, None]
    for obj in scene.objects:
        mask = shape_mask(obj.shape, world.config.sizes[obj.size] * side, world.config.supersample)
        box = mask.shape[0]
        top, left = int(obj.y - box / 2), int(obj.x - box / 2)
        for r in range(box):
            for c in range(box):
                a = mask[r, c]
                for channel in range(3):
                    old = image[channel, top + r, left + c]
                    image[channel, top + r, left + c] = old + (world.colours[obj.colour][channel] - old) * a
    return np.clip(np.rint(image), 0, 255)


def test_compositional_split_holds_one_pair_per_colour_and_shape(world):
    assert len(world.colours) >= 6 and len(world.shapes) >= 6
    assert len(world.pairs) == len(world.colours) * len(world.shapes)
    held = world.heldout_pairs
    assert Counter(c for c, _ in held) == Counter(list(world.colours)) and Counter(s for _, s in held) == Counter(world.shapes)
    assert set(world.seen_pairs).isdisjoint(held) and len(world.seen_pairs) + len(held) == len(world.pairs)
    for colour in world.colours:
        assert sum(c == colour for c, _ in world.seen_pairs) == len(world.shapes) - 1
    for shape in world.shapes:
        assert sum(s == shape for _, s in world.seen_pairs) == len(world.colours) - 1


def test_palette_is_flat_and_well_separated_on_a_dark_background():
    rgb = np.array(list(COLOURS.values()), dtype=float)
    distances = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1) + np.eye(len(rgb)) * 1e9
    assert distances.min() > 80  # far beyond the colour jitter a threshold oracle must tolerate
    config = ShapesConfig()
    assert max(config.background) + config.background_jitter < 40
    assert np.linalg.norm(rgb - np.array(config.background), axis=1).min() > 150


@pytest.mark.parametrize("size", [32, 64])
def test_sample_shapes_and_types(size):
    sample = ShapesWorld(ShapesConfig(image_size=size)).sample(20, seed=0)
    assert sample.images.shape == (20, 3, size, size) and sample.images.dtype == torch.uint8
    assert len(sample.captions) == len(sample.scenes) == 20
    assert sample.pair_labels.dtype == torch.long and sample.pair_labels.shape == (20,)


def test_same_seed_same_sample_in_any_call_order(world):
    first = world.sample(50, seed=7)
    world.sample(30, seed=1)
    world.binding_probe(5, seed=3)
    again = world.sample(50, seed=7)
    assert torch.equal(first.images, again.images)
    assert first.captions == again.captions and first.scenes == again.scenes
    other = world.sample(50, seed=8)
    assert not torch.equal(first.images, other.images)


def test_batches_depend_only_on_seed_and_step(world):
    three = list(world.batches(16, seed=5, num_batches=3))
    assert len(three) == 3
    again = list(world.batches(16, seed=5, num_batches=3))
    assert all(torch.equal(a.images, b.images) and a.captions == b.captions for a, b in zip(three, again))
    assert not torch.equal(three[0].images, three[1].images)


@pytest.mark.parametrize(
    "config, arguments",
    [
        (ShapesConfig(), dict(n=40, seed=12345, split="all")),
        (ShapesConfig(image_size=64), dict(n=40, seed=3, split="train", caption_style="plain")),
        (ShapesConfig(p_two_objects=0.8, pair_weights={("red", "circle"): 4.0}), dict(n=40, seed=9, split="all")),
        (ShapesConfig(), dict(n=20, seed=1, split="heldout", objects=1)),
    ],
)
def test_sample_captions_are_the_captions_of_the_same_sample(config, arguments):
    world = ShapesWorld(config)
    assert world.sample_captions(**arguments) == world.sample(**arguments).captions


def test_vectorised_drawing_matches_a_naive_loop():
    config = ShapesConfig(image_size=32, noise_std=0.0, colour_jitter=0, background_jitter=0, p_two_objects=0.5)
    world = ShapesWorld(config)
    sample = world.sample(24, seed=3, split="all")
    for image, scene in zip(sample.images, sample.scenes):
        expected = reference_render(world, scene, config.background)
        assert np.abs(image.numpy().astype(float) - expected).max() <= 1  # float32 vs float64 rounding


def test_pair_labels_name_the_first_object(world):
    sample = world.sample(40, seed=2, split="all")
    for label, scene in zip(sample.pair_labels.tolist(), sample.scenes):
        assert world.pairs[label] == scene.pairs[0]
        assert sample.class_names[label] == f"{scene.objects[0].colour} {scene.objects[0].shape}"


def test_captions_name_exactly_the_objects_in_the_scene(world):
    sample = world.sample(400, seed=4, split="all")
    for caption, scene in zip(sample.captions, sample.scenes):
        assert Counter(mentioned_pairs(caption, world)) == Counter(scene.pairs), caption


def test_relation_words_match_the_geometry(world):
    sample = world.sample(400, seed=5, objects=2)
    checked = 0
    for caption, scene in zip(sample.captions, sample.scenes):
        first_pair, second_pair = mentioned_pairs(caption, world)
        a, b = ({o.colour + o.shape: o for o in scene.objects}[c + s] for c, s in (first_pair, second_pair))
        assert scene.relation in RELATIONS
        match = RELATION_PATTERN.search(caption)
        if match is None:
            continue  # a conjunction: "a red circle and a blue square"
        checked += 1
        relation = match.group(1)
        expected = scene.relation if scene.objects[0] is a else INVERSE_RELATIONS[scene.relation]
        assert relation == expected, caption
        geometry = {"left of": a.x < b.x, "right of": a.x > b.x, "above": a.y < b.y, "below": a.y > b.y}
        assert geometry[relation], (caption, a, b)
    assert checked > 100


def test_two_objects_never_touch():
    for size in (32, 64):
        world = ShapesWorld(ShapesConfig(image_size=size))
        for scene in world.sample(500, seed=size, objects=2).scenes:
            coverage = []
            for obj in scene.objects:
                mask = shape_mask(obj.shape, world.config.sizes[obj.size] * size, world.config.supersample)
                canvas = np.zeros((size, size))
                top, left = int(obj.y - mask.shape[0] / 2), int(obj.x - mask.shape[0] / 2)
                canvas[top : top + mask.shape[0], left : left + mask.shape[0]] = mask
                coverage.append(canvas)
            assert (coverage[0] * coverage[1]).sum() == 0, scene


def test_one_object_position_words_match_where_the_object_is(world):
    sample = world.sample(300, seed=6, objects=1)
    side = world.config.image_size
    for scene in sample.scenes:
        (obj,) = scene.objects
        x, y = obj.x / side, obj.y / side
        expected = {"left": x < 0.4, "right": x > 0.6, "top": y < 0.4, "bottom": y > 0.6}.get(obj.position)
        assert expected is None or expected, obj
        if obj.position == "centre":
            assert abs(x - 0.5) < 0.1 and abs(y - 0.5) < 0.1


def centre_colours(world, sample):
    """Nearest palette colour of the pixel at each object's centre (objects never overlap)."""
    names, palette = list(world.colours), np.array(list(world.colours.values()), dtype=float)
    found = []
    for image, scene in zip(sample.images.numpy().astype(float), sample.scenes):
        row = []
        for obj in scene.objects:
            pixel = image[:, int(obj.y), int(obj.x)]
            row.append(names[np.linalg.norm(palette - pixel, axis=1).argmin()])
        found.append(row)
    return found


def assert_no_heldout_pair(world, sample):
    """No held-out pair in any scene or caption, and every caption names exactly its scene's pairs."""
    held = set(world.heldout_pairs)
    for caption, scene in zip(sample.captions, sample.scenes):
        assert held.isdisjoint(scene.pairs) and held.isdisjoint(mentioned_pairs(caption, world)), caption
        assert Counter(mentioned_pairs(caption, world)) == Counter(scene.pairs), caption


def test_train_split_never_shows_a_heldout_pair_in_images_or_captions(world):
    sample = world.sample(3000, seed=11, split="train")
    assert_no_heldout_pair(world, sample)
    # The pixels agree with the scenes, so no held-out colour sits on a held-out shape in any image.
    first = sample.subset(range(500))
    for colours, scene in zip(centre_colours(world, first), first.scenes):
        assert colours == [o.colour for o in scene.objects]
    # And the split still covers every seen pair, in both object slots.
    assert {p for scene in sample.scenes for p in scene.pairs} == set(world.seen_pairs)


def test_heldout_split_shows_only_heldout_pairs_alone(world):
    sample = world.sample(200, seed=12, split="heldout")
    assert all(len(scene.objects) == 1 for scene in sample.scenes)
    assert {scene.pairs[0] for scene in sample.scenes} == set(world.heldout_pairs)
    assert centre_colours(world, sample) == [[s.objects[0].colour] for s in sample.scenes]
    with pytest.raises(ValueError, match="one-object"):
        world.sample(4, split="heldout", objects=2)


def test_all_split_mixes_seen_and_heldout_pairs(world):
    pairs = {p for scene in world.sample(2000, seed=13, split="all").scenes for p in scene.pairs}
    assert pairs == set(world.pairs)


def test_objects_argument_and_two_object_layout(world):
    assert all(len(s.objects) == 1 for s in world.sample(50, seed=1, objects=1).scenes)
    two = world.sample(50, seed=1, objects=2).scenes
    assert all(len(s.objects) == 2 and s.objects[0].colour + s.objects[0].shape != s.objects[1].colour + s.objects[1].shape for s in two)
    mixed = world.sample(400, seed=1).scenes
    share = sum(len(s.objects) == 2 for s in mixed) / len(mixed)
    assert abs(share - world.config.p_two_objects) < 0.1


def test_caption_styles_are_selectable_and_all_templates_appear(world):
    terse = world.sample(200, seed=1, caption_style="terse").captions
    assert all(len(c.split()) <= 6 and not c.startswith("a ") for c in terse)
    wordy = world.sample(200, seed=1, caption_style="wordy").captions
    assert np.mean([len(c.split()) for c in wordy]) > np.mean([len(c.split()) for c in terse]) + 3
    separate = world.sample(200, seed=1, caption_style="separate", objects=1).captions
    assert all(re.search(r"coloured|something \w+:|painted|colour is", c) for c in separate)
    # Every template of every style shows up in a large enough sample.
    captions = " | ".join(world.sample(4000, seed=2).captions)
    for style, parts in world.config.templates.items():
        for template in parts["object"] + parts["one"] + parts["two"]:
            fixed = [piece for piece in re.split(r"\{\w+\}", template) if piece.strip(" ,:")]
            assert all(piece.strip() in captions for piece in fixed), (style, template)


def test_articles_agree_with_the_next_word(world):
    captions = world.sample(2000, seed=3).captions
    assert any("an orange" in c for c in captions)
    assert not any(re.search(r"\ba [aeiou]", c) for c in captions)
    assert not any(re.search(r"\ban [^aeiou]", c) for c in captions)


def test_templates_are_plain_data_and_extensible():
    templates = {"mine": {"object": ["the {shape} is {colour}"], "one": ["look: {object}"], "two": ["{a} plus {b}"]}}
    world = ShapesWorld(ShapesConfig(templates=templates, caption_styles=("mine",)))
    captions = world.sample(20, seed=0).captions
    assert all(c.startswith("look: the ") or " plus the " in c for c in captions)
    with pytest.raises(ValueError, match="must hold"):
        ShapesConfig(templates={"bad": {"object": ["a {shape}"], "one": ["{object}"], "two": ["{a} {b}"]}}, caption_styles=("bad",))


def test_bad_configs_and_arguments_are_explained(world):
    with pytest.raises(ValueError, match="image_size"):
        ShapesConfig(image_size=8)
    with pytest.raises(ValueError, match="unknown colour or shape"):
        ShapesConfig(heldout_pairs=(("mauve", "circle"),))
    with pytest.raises(ValueError, match="every pair with colour 'red'"):
        ShapesConfig(heldout_pairs=tuple(("red", s) for s in ShapesConfig().shapes))
    with pytest.raises(ValueError, match="split"):
        world.sample(3, split="test")
    with pytest.raises(ValueError, match="caption style"):
        world.sample(3, caption_style="poetic")


def test_binding_probe_swaps_colours_between_the_same_shapes(world):
    probe = world.binding_probe(60, seed=4)
    assert probe.images.shape == probe.swapped_images.shape == (60, 3, 32, 32)
    seen = set(world.seen_pairs)
    for caption, swapped_caption, scene, swapped in zip(probe.captions, probe.swapped_captions, probe.scenes, probe.swapped_scenes):
        assert caption != swapped_caption and sorted(caption.split()) == sorted(swapped_caption.split())
        (c1, s1), (c2, s2) = scene.pairs
        assert c1 != c2 and s1 != s2
        assert swapped.pairs == ((c2, s1), (c1, s2))
        assert {(c1, s1), (c2, s2), (c1, s2), (c2, s1)} <= seen
        assert mentioned_pairs(caption, world) == list(scene.pairs)
        assert mentioned_pairs(swapped_caption, world) == list(swapped.pairs)
        assert [(o.x, o.y, o.size) for o in scene.objects] == [(o.x, o.y, o.size) for o in swapped.objects]
    # Pixels: the colour at each object's centre follows the swap; the background is untouched.
    assert centre_colours(world, _as_sample(probe.swapped_images, probe.swapped_scenes)) == [
        [o.colour for o in s.objects] for s in probe.swapped_scenes
    ]
    assert torch.equal(probe.images[:, :, 0, 0], probe.swapped_images[:, :, 0, 0])


def _as_sample(images, scenes):
    from clipkit.data import ShapesSample

    return ShapesSample(images=images, captions=[""] * len(images), scenes=scenes)


def test_sample_is_a_dataset_for_loaders_and_subsets_stay_aligned(world):
    sample = world.sample(10, seed=0)
    images, captions = next(iter(make_loader(sample, batch_size=4)))
    assert images.shape == (4, 3, 32, 32) and captions == sample.captions[:4]
    part = sample.subset([7, 2])
    assert part.captions == [sample.captions[7], sample.captions[2]]
    assert part.scenes == [sample.scenes[7], sample.scenes[2]]
    assert torch.equal(part.images[0], sample.images[7]) and part.pair_labels.tolist() == sample.pair_labels[[7, 2]].tolist()


def test_pair_weights_skew_how_often_each_pair_is_drawn():
    """A skewed world for the bias lab: 95% of stars yellow. Drawn frequencies follow the weights."""
    probe = ShapesWorld(ShapesConfig(image_size=16))
    star_colours = [colour for colour, shape in probe.seen_pairs if shape == "star"]
    others = [colour for colour in star_colours if colour != "yellow"]
    weights = {("yellow", "star"): 0.95 * len(others) / 0.05} | {(colour, "star"): 1.0 for colour in others}
    world = ShapesWorld(ShapesConfig(image_size=16, pair_weights=weights))
    sample = world.sample(4000, seed=0, objects=1)
    stars = [scene.objects[0].colour for scene in sample.scenes if scene.objects[0].shape == "star"]
    assert abs(stars.count("yellow") / len(stars) - 0.95) < 0.02
    # the other shapes keep weight 1 each: their colours stay about uniform
    squares = [scene.objects[0].colour for scene in sample.scenes if scene.objects[0].shape == "square"]
    square_colours = [colour for colour, shape in world.seen_pairs if shape == "square"]
    assert max(squares.count(c) for c in square_colours) / len(squares) < 2.0 / len(square_colours)
    two = world.sample(500, seed=1, objects=2)
    assert all(scene.pairs[0] != scene.pairs[1] for scene in two.scenes)


@pytest.mark.parametrize(
    "weights, message",
    [
        ({("mauve", "star"): 2.0}, "unknown"),
        ({("red", "star"): -1.0}, ">= 0"),
    ],
)
def test_bad_pair_weights_are_named(weights, message):
    with pytest.raises(ValueError, match=message):
        ShapesConfig(pair_weights=weights)


def test_pair_weights_cannot_silence_every_training_pair():
    world = ShapesWorld(ShapesConfig(image_size=16))
    with pytest.raises(ValueError, match="weight 0"):
        ShapesConfig(image_size=16, pair_weights={pair: 0.0 for pair in world.pairs})


# -- the randomised world and the torch renderer -------------------------------------------------

from clipkit.data.shapes import SHAPE_TESTS, region_of  # noqa: E402
from clipkit.data.stream import build_data  # noqa: E402


@pytest.fixture(scope="module")
def random_world():
    return ShapesWorld(ShapesConfig(variation="random"))


@pytest.mark.parametrize("config", [ShapesConfig(), ShapesConfig(image_size=64, p_two_objects=0.8)])
def test_torch_renderer_draws_the_grid_world_bit_for_bit_as_the_numpy_one(config):
    torch_world, numpy_world = ShapesWorld(config), ShapesWorld(config, backend="numpy")
    for seed in (0, [4, 2]):
        assert torch.equal(torch_world.sample(300, seed=seed, split="all").images,
                           numpy_world.sample(300, seed=seed, split="all").images)
    probe, reference = torch_world.binding_probe(50, seed=1), numpy_world.binding_probe(50, seed=1)
    assert torch.equal(probe.swapped_images, reference.swapped_images)


def test_to_device_keeps_scenes_and_pictures(random_world):
    before = random_world.sample(64, seed=5, split="all")
    moved = ShapesWorld(ShapesConfig(variation="random")).to("cpu")
    after = moved.sample(64, seed=5, split="all")
    assert after.images.device == moved.device == torch.device("cpu")
    assert torch.equal(before.images, after.images) and before.captions == after.captions
    data = build_data({"shapes": {"image_size": 32, "variation": "random"}})
    batch = data.batch(16, seed=0, step=3)
    assert torch.equal(data.to("cpu").batch(16, seed=0, step=3).images, batch.images)


def test_numpy_renderer_refuses_what_it_cannot_draw():
    with pytest.raises(ValueError, match="grid world only"):
        ShapesWorld(ShapesConfig(variation="random"), backend="numpy")
    with pytest.raises(ValueError, match="backend"):
        ShapesWorld(backend="opengl")


def test_random_world_depends_only_on_seed_and_step(random_world):
    batches = list(random_world.batches(24, seed=3, num_batches=3))
    again = random_world.sample(24, seed=[3, 2])
    assert torch.equal(batches[2].images, again.images) and batches[2].captions == again.captions
    assert not torch.equal(batches[0].images, batches[1].images)
    assert random_world.sample_captions(40, seed=9, split="all") == random_world.sample(40, seed=9, split="all").captions


def test_random_world_spec_round_trips():
    data = build_data({"shapes": {"image_size": 32, "variation": "random", "max_rotation": 20.0}})
    assert data.spec["shapes"]["variation"] == "random"
    rebuilt = build_data(data.spec)
    assert rebuilt.spec == data.spec
    from clipkit.data.stream import as_training_data

    assert as_training_data(ShapesWorld(ShapesConfig(variation="random")), 32).spec["shapes"]["variation"] == "random"
    assert torch.equal(rebuilt.batch(8, seed=1, step=2).images, data.batch(8, seed=1, step=2).images)
    assert not torch.equal(build_data({"shapes": {}}).batch(8, seed=1, step=2).images, data.batch(8, seed=1, step=2).images)


@pytest.mark.parametrize(
    "field, value",
    [("variation", "wobbly"), ("max_rotation", 90.0), ("size_spread", 0.5), ("shade", 1.0), ("p_outline", 1.5),
     ("p_any_background", -0.1), ("p_gradient", 2), ("p_pattern", 1.2), ("texture", 300.0), ("max_blur", 5.0), ("max_noise", -1.0),
     ("p_jpeg", 1.5), ("min_jpeg_quality", 0), ("min_jpeg_quality", 100), ("max_rotation", "lots"), ("p_grid", 1.5)],
)
def test_bad_randomisation_fields_are_named_with_their_range(field, value):
    with pytest.raises(ValueError, match=field):
        ShapesConfig(**{"variation": "random", field: value})


def test_random_world_compresses_its_share_of_pictures_as_pil_would_and_nothing_else():
    config = ShapesConfig(variation="random", p_jpeg=0.5, min_jpeg_quality=20)
    world, plain = ShapesWorld(config), ShapesWorld(replace(config, p_jpeg=0.0))
    rng = np.random.default_rng(4)  # what sample(200, seed=4) draws: the scenes, then the pixels' seed
    layout, _ = world._described_layout(200, rng, "train", None, None)
    render_seed = int(rng.integers(2**63))
    qualities = layout.random.jpeg_quality.copy()
    assert 60 <= (qualities > 0).sum() <= 140 and qualities[qualities > 0].min() >= 20 and qualities.max() <= 95
    sample = world.sample(200, seed=4)
    assert torch.equal(sample.images, world.sample(200, seed=4).images)  # deterministic for a seed
    # The same picture drawn by hand, then saved and read back with PIL at each image's quality.
    layout.random.jpeg_quality = np.zeros_like(qualities)
    sharp = world.renderer.render(layout, render_seed)
    compressed = qualities > 0
    expected = torch.stack([
        torch.from_numpy(np.array(jpeg_roundtrip(Image.fromarray(image.permute(1, 2, 0).numpy()), quality))).permute(2, 0, 1)
        if quality else image
        for image, quality in zip(sharp, qualities)
    ])
    assert torch.equal(sample.images, expected)
    assert not torch.equal(sample.images[compressed], sharp[compressed])
    # Without JPEG the world draws what it drew before the option existed.
    assert torch.equal(plain.sample(64, seed=4).images, ShapesWorld(ShapesConfig(variation="random")).sample(64, seed=4).images)



def test_random_world_draws_its_grid_share_exactly_as_the_grid_world_and_says_so():
    config = ShapesConfig(variation="random", p_grid=0.4, noise_std=0.0, max_noise=0.0)
    world = ShapesWorld(config)
    rng = np.random.default_rng(6)  # what sample(300, seed=6) draws: the scenes, then the pixels' seed
    layout, _ = world._described_layout(300, rng, "train", None, None)
    sample = world.sample(300, seed=6)
    on_grid = layout.random.grid
    assert 0.3 < on_grid.mean() < 0.5
    # Those pictures are the grid world's drawing of the same scenes, pixel for pixel.
    grid_drawn = world.renderer.render(replace(layout, random=None), seed=0)
    assert torch.equal(sample.images[on_grid], grid_drawn[on_grid])
    assert not torch.equal(sample.images[~on_grid], grid_drawn[~on_grid])
    # Their scenes and captions say so: unturned, filled, each diameter its size word's.
    diameters = dict(zip(world.size_names, world._diameters))
    for index in np.flatnonzero(on_grid):
        scene, caption = sample.scenes[index], sample.captions[index]
        assert all(o.angle == 0 and not o.outline and o.diameter == diameters[o.size] for o in scene.objects), scene
        assert "outline" not in caption
    assert any(o.angle != 0 for i in np.flatnonzero(~on_grid) for o in sample.scenes[i].objects)
    assert_no_heldout_pair(world, sample)
    assert torch.equal(sample.images, world.sample(300, seed=6).images)  # deterministic for a seed
    # Without it the world draws what it drew before the option existed.
    plain = ShapesConfig(variation="random")
    assert torch.equal(ShapesWorld(replace(plain, p_grid=0.0)).sample(64, seed=4).images, ShapesWorld(plain).sample(64, seed=4).images)


def test_random_split_keeps_heldout_pairs_out_of_training_images_and_captions(random_world):
    sample = random_world.sample(1500, seed=11, split="train")
    assert_no_heldout_pair(random_world, sample)
    for caption, scene in zip(sample.captions, sample.scenes):
        assert ("outline" in caption) == any(o.outline for o in scene.objects), caption
        assert "dark background" not in caption  # random backgrounds are not always dark
    heldout = random_world.sample(200, seed=12, split="heldout")
    assert {pair for scene in heldout.scenes for pair in scene.pairs} <= set(random_world.heldout_pairs)


def test_random_world_varies_how_objects_are_drawn_and_keeps_size_and_place_words_true(random_world):
    sample = random_world.sample(600, seed=7, split="all")
    side = random_world.config.image_size
    objects = [o for scene in sample.scenes for o in scene.objects]
    angles = np.array([o.angle for o in objects])
    assert np.abs(angles).max() <= random_world.config.max_rotation and angles.std() > 5
    assert 0.1 < np.mean([o.outline for o in objects]) < 0.3
    small, large = ([o.diameter for o in objects if o.size == word] for word in ("small", "large"))
    assert max(small) < min(large) and np.std(small) > 0.3  # continuous, and the size word still true
    for scene in sample.scenes:
        for obj in scene.objects:
            assert 0 <= obj.x <= side and 0 <= obj.y <= side
            assert region_of(obj.x / side, obj.y / side) == obj.position, obj
        if len(scene.objects) == 2:
            a, b = scene.objects
            geometry = {"left of": a.x < b.x, "right of": a.x > b.x, "above": a.y < b.y, "below": a.y > b.y}
            assert geometry[scene.relation], scene
    # backgrounds differ image to image, far beyond the grid world's brightness jitter
    corners = sample.images[:, :, 0, 0].float()
    assert corners.std(dim=0).min() > 30


def analytic_coverage(obj, side, supersample=8):
    """Naive recomputation: the shape's inside-test at sub-pixel centres, rotated and scaled by hand."""
    fine = (np.arange(side * supersample) + 0.5) / supersample
    px, py = np.meshgrid(fine, fine)
    turn = np.deg2rad(obj.angle)
    dx, dy = px - obj.x, py - obj.y
    radius = obj.diameter / 2
    u = (np.cos(turn) * dx + np.sin(turn) * dy) / radius
    v = (-np.sin(turn) * dx + np.cos(turn) * dy) / radius
    inside = SHAPE_TESTS[obj.shape](u, v).astype(float)
    return inside.reshape(side, supersample, side, supersample).mean(axis=(1, 3))  # [S*s, S*s] -> [S, s, S, s] -> [S, S]


def test_random_coverage_matches_the_analytic_shapes_turned_and_scaled(random_world):
    layout = random_world._layout(40, np.random.default_rng(0), "all", objects=1)
    rnd = layout.random
    shape_ids = layout.pairs[:, 0] % len(random_world.shapes)
    coverage = random_world.renderer._coverage(shape_ids, rnd.centres[:, 0], rnd.diameters[:, 0], rnd.angles[:, 0],
                                                np.zeros(40, dtype=bool))
    for i, scene in enumerate(random_world._scenes(layout)):
        expected = analytic_coverage(scene.objects[0], random_world.config.image_size)
        assert np.abs(coverage[i].numpy() - expected).mean() < 0.01
        assert np.abs(coverage[i].numpy().sum() - expected.sum()) < 0.03 * expected.sum()


def test_pixel_oracle_reads_random_world_colours_right(random_world):
    """The median colour of the pixels an object fully covers is nearest its own palette colour."""
    sample = random_world.sample(300, seed=8, split="all")
    names, palette = list(random_world.colours), np.array(list(random_world.colours.values()), dtype=float)
    side, right, total = random_world.config.image_size, 0, 0
    for image, scene in zip(sample.images.numpy().astype(float), sample.scenes):
        for obj in scene.objects:
            core = analytic_coverage(obj, side, 4) >= 0.99
            if obj.outline or core.sum() < 2:
                continue
            colour = np.median(image[:, core], axis=1)
            total += 1
            right += names[np.linalg.norm(palette - colour, axis=1).argmin()] == obj.colour
    assert total > 250 and right / total >= 0.97, (right, total)


def colour_swapped(scene):
    """The scene with its two objects' colours exchanged, everything else kept."""
    first, second = scene.objects
    return Scene((replace(first, colour=second.colour), replace(second, colour=first.colour)), scene.relation)


def twin_rows(sample):
    """Rows that hold the colour-swapped twin of the row before them (same places, to the float)."""
    return [row for row in range(1, len(sample)) if len(sample.scenes[row - 1].objects) == 2
            and sample.scenes[row - 1].pairs != sample.scenes[row].pairs
            and colour_swapped(sample.scenes[row - 1]) == sample.scenes[row]]


def far_from_objects(scene, side):
    """bool [S, S]: pixels outside every object's box (with a margin), where only background and noise are."""
    rows, cols = np.mgrid[0:side, 0:side]
    far = np.ones((side, side), dtype=bool)
    for obj in scene.objects:
        reach = obj.diameter / 2 + 2
        far &= (np.abs(cols + 0.5 - obj.x) > reach) | (np.abs(rows + 0.5 - obj.y) > reach)
    return torch.from_numpy(far)


def test_swapped_twins_are_the_probe_swap_of_the_image_before_them_with_the_same_noise(world):
    plain, twinned = world.sample(96, seed=3), world.sample(96, seed=3, swapped_twins=1.0)
    assert twinned.images.shape == plain.images.shape and len(twinned.captions) == len(twinned.scenes) == 96
    twins = twin_rows(twinned)
    originals = [row for row in range(96) if row not in twins]
    assert len(twins) >= 10
    # The originals are the plain sample's images, unchanged, less its last two-object ones: twins take
    # their places, so the batch keeps every one-object image.
    two = [row for row in range(96) if len(plain.scenes[row].objects) == 2]
    kept = [row for row in range(96) if row not in two[len(two) - len(twins):]]
    assert [twinned.captions[row] for row in originals] == [plain.captions[row] for row in kept]
    assert [twinned.scenes[row] for row in originals] == [plain.scenes[row] for row in kept]
    assert torch.equal(twinned.images[originals], plain.images[kept])
    assert sum(len(scene.objects) == 1 for scene in twinned.scenes) == len(plain) - len(two)
    seen = set(world.seen_pairs)
    for row in twins:
        original, twin = twinned.scenes[row - 1], twinned.scenes[row]
        (c1, s1), (c2, s2) = original.pairs
        assert c1 != c2 and s1 != s2 and {(c1, s2), (c2, s1)} <= seen
        assert twinned.captions[row] == swap_attribute(twinned.captions[row - 1], original, "colour")
        assert Counter(mentioned_pairs(twinned.captions[row], world)) == Counter(twin.pairs)
        assert twinned.labels[row] == world.pair_index[twin.pairs[0]]
        # Same background and the same noise wherever no object is; each object wears the other's colour.
        far = far_from_objects(original, 32)
        assert far.any() and torch.equal(twinned.images[row][:, far], twinned.images[row - 1][:, far])
    assert centre_colours(world, twinned.subset(twins)) == [[o.colour for o in twinned.scenes[r].objects] for r in twins]
    # With swapped_twins=1 every two-object original whose swap is another picture of the train split
    # has its twin, unless it is the last two-object one (no room left).
    for row in [row for row in originals if len(twinned.scenes[row].objects) == 2][:-1]:
        (c1, s1), (c2, s2) = twinned.scenes[row].pairs
        swappable = c1 != c2 and s1 != s2 and {(c1, s2), (c2, s1)} <= seen
        assert (row + 1 in twins) == swappable


def test_swapped_twins_never_show_a_heldout_pair_and_depend_only_on_seed_and_step(world):
    twinned = world.sample(256, seed=8, swapped_twins=1.0)
    assert_no_heldout_pair(world, twinned)
    held = set(world.heldout_pairs)
    crossed = [((c2, s1), (c1, s2)) for (c1, s1), (c2, s2) in (s.pairs for s in twinned.scenes if len(s.objects) == 2)]
    assert any(held & set(pairs) for pairs in crossed)  # the split had swaps to refuse
    batches = list(world.batches(16, seed=5, num_batches=3, swapped_twins=0.5))
    for step in (2, 0, 1):
        again = world.sample(16, seed=[5, step], swapped_twins=0.5)
        assert again.captions == batches[step].captions and torch.equal(again.images, batches[step].images)
    assert world.sample(16, seed=4, swapped_twins=0.0).captions == world.sample(16, seed=4).captions
    with pytest.raises(ValueError, match="swapped_twins must be a probability"):
        world.sample(4, swapped_twins=1.5)


def test_random_world_twins_keep_turns_outlines_and_background(random_world):
    twinned = random_world.sample(64, seed=2, swapped_twins=1.0)
    twins = twin_rows(twinned)
    assert len(twins) >= 5
    for row in twins:
        far = far_from_objects(twinned.scenes[row], 32)
        change = (twinned.images[row].int() - twinned.images[row - 1].int()).abs()  # [3, S, S]
        assert change[:, far].max() <= 8 < change.max()  # blur carries a trace of the colours past the boxes
    assert_no_heldout_pair(random_world, twinned)
