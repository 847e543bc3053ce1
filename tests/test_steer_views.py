"""Steering's augmented views against references: plain resizes, flips, rotations, zoom-outs,
crops that keep sides, cutouts, gradients and seeds; and what the model is shown each step."""

import math

import pytest
import torch

from clipkit.data import normalize_images
from clipkit.data.transforms import resize_images
from clipkit.steer.config import SteerConfig
from clipkit.steer.views import augmented_views, model_views, side_named


def _plain_views(**changes):
    return SteerConfig(cutout_probability=0, noise_std=0, colour_jitter=0, **changes)


def test_full_crop_without_effects_is_a_plain_resize():
    image = torch.rand(1, 3, 32, 32)
    views = augmented_views(image, _plain_views(crop_scale=(1.0, 1.0), num_augmentations=3), 32, False, torch.Generator())
    assert torch.allclose(views, image.expand(3, -1, -1, -1), atol=1e-5)


def test_flips_mirror_views_and_keep_left_on_the_left_when_off():
    image = torch.zeros(1, 3, 16, 16)
    image[..., :, :4] = 1.0  # a bright stripe on the left
    config = _plain_views(crop_scale=(1.0, 1.0), num_augmentations=64)
    flipped = augmented_views(image, config, 16, True, torch.Generator().manual_seed(0))
    left_bright = flipped[..., :4].mean(dim=(1, 2, 3)) > 0.5
    assert 0 < left_bright.sum() < 64 and torch.allclose(flipped[~left_bright], image.flip(-1).expand(int((~left_bright).sum()), -1, -1, -1), atol=1e-5)
    kept = augmented_views(image, config, 16, False, torch.Generator().manual_seed(0))
    assert (kept[..., :4].mean(dim=(1, 2, 3)) > 0.5).all()


def _disc(side: int, radius: float) -> torch.Tensor:
    centre = (torch.arange(side) + 0.5) - side / 2
    inside = (centre[None, :] ** 2 + centre[:, None] ** 2) <= radius**2
    return inside.float().expand(1, 3, side, side)


def test_rotations_turn_views_about_the_centre_within_the_limit():
    disc = _disc(32, 8)
    config = _plain_views(crop_scale=(1.0, 1.0), rotation_degrees=30.0, num_augmentations=8)
    assert (augmented_views(disc, config, 32, False, torch.Generator()) - disc).abs().mean() < 0.03  # a disc is unmoved (edges resampled)
    bar = torch.zeros(1, 3, 32, 32)
    bar[..., 14:18, 4:28] = 1.0
    views = augmented_views(bar, config, 32, False, torch.Generator().manual_seed(5))[:, 0]
    coords = torch.arange(32).float() + 0.5 - 16
    angles = []
    for view in views:  # the bar's orientation from its second moments
        mass = view.sum()
        xx = (view * coords[None, :] ** 2).sum() / mass
        yy = (view * coords[:, None] ** 2).sum() / mass
        xy = (view * coords[None, :] * coords[:, None]).sum() / mass
        angles.append(math.degrees(0.5 * math.atan2(2 * xy, xx - yy)))
    assert all(abs(angle) <= 31 for angle in angles) and max(angles) - min(angles) > 10


def test_zoom_out_shrinks_the_object_by_the_scale():
    disc = _disc(32, 8)
    views = augmented_views(disc, _plain_views(crop_scale=(1.25, 1.25), num_augmentations=4), 32, False, torch.Generator())
    assert views[:, 0].sum(dim=(1, 2)) / disc[0, 0].sum() == pytest.approx(torch.full((4,), 1 / 1.25**2), rel=0.05)


def test_flips_are_off_for_prompts_naming_a_side():
    assert side_named(["a red star on the left"]) and side_named(["a circle RIGHT of a square"])
    assert not side_named(["a red star", "a blue circle at the top", "a bright star"])


def test_crops_keep_an_object_on_its_side_and_cutouts_blank_a_square():
    image = torch.zeros(1, 3, 64, 64)
    image[..., 24:40, 10:26] = 1.0  # an object centred at x = 0.28, the shapes world's "left"
    views = augmented_views(image, _plain_views(num_augmentations=32), 32, False, torch.Generator().manual_seed(1))
    columns = torch.arange(32).float() + 0.5
    centre_x = (views[:, 0].sum(dim=1) * columns).sum(dim=1) / views[:, 0].sum(dim=(1, 2)) / 32
    assert (centre_x < 0.4).all()
    ramp = torch.linspace(0, 1, 32).expand(1, 3, 32, 32)
    config = SteerConfig(cutout_probability=1.0, cutout_size=0.25, noise_std=0, colour_jitter=0, crop_scale=(1.0, 1.0), num_augmentations=4)
    holes = augmented_views(ramp, config, 32, False, torch.Generator().manual_seed(2))
    for view in holes[:, 0]:
        changed = (view - ramp[0, 0]).abs() > 1e-4
        assert 6 * 8 <= changed.sum() <= 8 * 8  # an 8 x 8 hole, less any column whose value equals the fill
        assert view[changed].std() < 1e-5


def test_augmentations_are_differentiable_and_seeded():
    image = torch.rand(1, 3, 64, 64, requires_grad=True)
    config = SteerConfig(num_augmentations=4)
    views = augmented_views(image, config, 32, True, torch.Generator().manual_seed(3))
    assert views.shape == (4, 3, 32, 32) and views.min() >= 0 and views.max() <= 1
    views.sum().backward()
    assert image.grad.abs().sum() > 0
    again = augmented_views(image.detach(), config, 32, True, torch.Generator().manual_seed(3))
    assert torch.equal(views.detach(), again)



def test_model_views_are_the_views_normalised_with_the_models_statistics(tiny_word_clip):
    model = tiny_word_clip
    image = torch.rand(1, 3, 48, 48)
    config = SteerConfig(num_augmentations=3)
    shown = model_views(image, model, config, True, torch.Generator().manual_seed(4))
    views = augmented_views(image, config, model.image_size, True, torch.Generator().manual_seed(4))
    assert torch.equal(shown, normalize_images(views, model.image_mean, model.image_std))
    plain = model_views(image, model, SteerConfig(augment=False), True, torch.Generator())
    assert torch.equal(plain, normalize_images(resize_images(image, model.image_size), model.image_mean, model.image_std))
