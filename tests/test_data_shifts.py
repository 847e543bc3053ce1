"""The distribution-shift suites: deterministic, any size, the compositional split kept, and every drawing
labelled right by pixel oracles that share no code with the renderer (the world's own masks)."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from clipkit.data.shapes import ShapesWorld, shape_mask
from clipkit.data.shifts import SUITES, ShiftSpec, draw_suite, draw_suites, shaded_palette, suite_spec


@pytest.fixture(scope="module")
def world():
    return ShapesWorld()


def _palette(world) -> torch.Tensor:
    return torch.tensor(list(world.colours.values()), dtype=torch.float32)


def _nearest_colour(world, rgb: torch.Tensor) -> int:
    return int(((_palette(world) - rgb) ** 2).sum(dim=1).argmin())


def _border_colour(image: torch.Tensor) -> torch.Tensor:
    """The median RGB [3] of the image's outermost pixels: its background where no object touches the edge."""
    border = torch.cat([image[:, 0], image[:, -1], image[:, :, 0], image[:, :, -1]], dim=1).float()  # [3, 4S]
    return border.median(dim=1).values


def _object_colour(image: torch.Tensor, geometry: torch.Tensor, filled: bool) -> torch.Tensor:
    """Mean RGB of the object's pixels: a disc at the centre of a filled shape; for an outline, the
    pixels near the object that stand out most from the image's border (the background)."""
    x, y, diameter = geometry[:3].tolist()
    side = image.shape[-1]
    rows, cols = torch.meshgrid(torch.arange(side) + 0.5, torch.arange(side) + 0.5, indexing="ij")
    distance = ((cols - x) ** 2 + (rows - y) ** 2).sqrt()
    pixels = image.float().flatten(1)  # [3, S, S] -> [3, S*S]
    if filled:
        return pixels[:, (distance <= max(1.0, 0.15 * diameter)).flatten()].mean(dim=1)
    contrast = (pixels - _border_colour(image)[:, None]).norm(dim=0)
    near = (distance <= 0.6 * diameter).flatten()
    strongest = contrast[near].topk(max(3, int(near.sum()) // 8)).indices
    return pixels[:, near][:, strongest].mean(dim=1)


def _shape_by_iou(world, image: torch.Tensor, geometry: torch.Tensor, colour: torch.Tensor) -> int:
    """The world's shape whose own mask (its inside-tests, not this renderer's outlines), placed where
    the object is and blurred as much as the drawing, overlaps most (soft IoU) with how far each pixel
    has gone from the background toward the object's colour."""
    x, y, diameter, _, _, blur = geometry.tolist()
    side = image.shape[-1]
    pixels = image.float()
    background = _border_colour(image)
    towards = colour - background
    foreground = (((pixels - background[:, None, None]) * towards[:, None, None]).sum(dim=0) / towards.dot(towards)).clamp(0, 1)
    scores = []
    for shape in world.shapes:
        mask = shape_mask(shape, diameter)
        box = mask.shape[0]
        top, left = int(round(y - box / 2)), int(round(x - box / 2))
        reference = np.zeros((side, side), dtype=np.float32)
        rows, cols = slice(max(top, 0), min(top + box, side)), slice(max(left, 0), min(left + box, side))
        reference[rows, cols] = mask[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
        if blur > 0:
            blurred = Image.fromarray((reference * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(blur))
            reference = np.asarray(blurred, dtype=np.float32) / 255
        reference = torch.from_numpy(reference)
        scores.append(float(torch.minimum(foreground, reference).sum() / torch.maximum(foreground, reference).sum()))
    return int(np.argmax(scores))


def test_every_suite_is_deterministic_for_a_seed(world):
    for name in SUITES:
        first, again = draw_suite(world, name, 12, seed=3), draw_suite(world, name, 12, seed=3)
        assert torch.equal(first.images, again.images) and torch.equal(first.labels, again.labels), name
        assert not torch.equal(first.images, draw_suite(world, name, 12, seed=4).images), name


@pytest.mark.parametrize("size", [32, 48, 64])
def test_suites_draw_uint8_images_at_any_size(world, size):
    for name, sample in draw_suites(world, n=5, seed=0, image_size=size).items():
        assert sample.images.shape == (5, 3, size, size) and sample.images.dtype == torch.uint8, name
        assert len(sample.captions) == len(sample.labels) == 5
        assert sample.class_names == world.class_names


def test_splits_keep_the_compositional_holdout(world):
    heldout = set(world.pair_ids("heldout").tolist())
    for name in SUITES:
        train = draw_suite(world, name, 200, seed=1, split="train")
        held = draw_suite(world, name, 40, seed=1, split="heldout")
        assert not heldout & set(train.labels.tolist()), f"{name}: a held-out pair in the train split"
        assert set(held.labels.tolist()) <= heldout, f"{name}: a seen pair in the held-out split"
        for sample in (train, held):
            assert all(world.class_names[label] in caption for label, caption in zip(sample.labels.tolist(), sample.captions))


@pytest.mark.parametrize("name", list(SUITES))
def test_each_drawing_shows_the_labelled_colour(world, name):
    sample = draw_suite(world, name, 120, seed=5, split="all", image_size=64)
    filled = suite_spec(name).stroke == 0
    right = [
        _nearest_colour(world, _object_colour(image, geometry, filled)) == label // len(world.shapes)
        for image, geometry, label in zip(sample.images, sample.geometry, sample.labels.tolist())
    ]
    # JPEG's chroma subsampling bleeds the background into the smallest objects now and then.
    assert np.mean(right) >= (0.97 if suite_spec(name).jpeg else 1.0), f"{name}: colour right in {np.mean(right):.3f}"


@pytest.mark.parametrize("name", [n for n in SUITES if suite_spec(n).rotation == 0 and suite_spec(n).stroke == 0])
def test_each_upright_drawing_matches_the_worlds_mask_of_its_shape_best(world, name):
    sample = draw_suite(world, name, 120, seed=6, split="all", image_size=64)
    right = [
        _shape_by_iou(world, image, geometry, colour) == label % len(world.shapes)
        for image, geometry, colour, label in zip(sample.images, sample.geometry, sample.colours, sample.labels.tolist())
    ]
    assert np.mean(right) >= 0.95, f"{name}: shape right by IoU in {np.mean(right):.3f}"


def test_rotation_turns_objects_within_the_stated_range(world):
    angles = draw_suite(world, "rotation", 200, seed=0).geometry[:, 3]
    limit = SUITES["rotation"]["rotation"]
    assert angles.abs().max() <= limit and angles.abs().max() > 0.8 * limit
    assert (draw_suite(world, "redrawn", 50, seed=0).geometry[:, 3] == 0).all()


def test_free_placement_and_continuous_sizes_keep_objects_in_the_frame(world):
    sample = draw_suite(world, "combined", 300, seed=2)
    x, y, diameter = sample.geometry[:, 0], sample.geometry[:, 1], sample.geometry[:, 2]
    side = sample.images.shape[-1]
    assert ((x - diameter / 2) >= 0).all() and ((x + diameter / 2) <= side).all()
    assert ((y - diameter / 2) >= 0).all() and ((y + diameter / 2) <= side).all()
    assert len(set(diameter.tolist())) > 100, "sizes are continuous, not the world's two words"


def test_shades_stay_nearest_their_own_palette_colour(world):
    palette = np.array(list(world.colours.values()), dtype=np.float64)
    ids = np.repeat(np.arange(len(palette)), 200)
    shaded = shaded_palette(palette, 0.49, np.random.default_rng(0), ids)
    distances = np.linalg.norm(shaded[:, None] - palette[None], axis=-1)  # [n, C]
    assert (distances.argmin(axis=1) == ids).all()
    assert np.median(np.linalg.norm(shaded - palette[ids], axis=1)) > 2 * 12, "most shades go well beyond the world's colour jitter"


def test_bad_suites_are_named(world):
    with pytest.raises(ValueError, match="unknown shift suite 'photo'"):
        draw_suite(world, "photo", 4)
    with pytest.raises(ValueError, match="unknown ShiftSpec fields"):
        draw_suite(world, {"spin": 10}, 4)
    with pytest.raises(ValueError, match="shade must be in"):
        ShiftSpec(shade=0.6)
    with pytest.raises(ValueError, match="split must be one of"):
        draw_suite(world, "redrawn", 4, split="test")


def test_suites_drawn_with_one_seed_show_the_same_objects(world):
    plain, blurred = draw_suite(world, "redrawn", 30, seed=8), draw_suite(world, "blur", 30, seed=8)
    assert torch.equal(plain.labels, blurred.labels)
    assert torch.equal(plain.geometry[:, :5], blurred.geometry[:, :5]), "only the blur differs"
    assert (blurred.geometry[:, 5] > 0).all() and (plain.geometry[:, 5] == 0).all()
