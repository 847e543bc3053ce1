"""Steering: augmentations, losses and prompt checks against references, and
the loop's contract (frozen model, device, early stop, saved grid and GIF), on tiny random models."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipkit.data import normalize_images
from clipkit.data.transforms import resize_images
from clipkit.steer import (
    SteerConfig,
    SteerStep,
    augmented_views,
    cosine_distance,
    prompt_weights,
    side_named,
    spherical_distance,
    steer,
    steering_loss,
)

QUICK = dict(steps=3, num_augmentations=2, num_strokes=4, frame_every=1)
# -- augmentations --------------------------------------------------------------------------------


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


# -- losses ---------------------------------------------------------------------------------------


def test_distances_match_their_definitions():
    a = F.normalize(torch.randn(4, 8, dtype=torch.float64), dim=1)
    b = F.normalize(torch.randn(3, 8, dtype=torch.float64), dim=1)
    for k in range(4):
        for p in range(3):
            angle = math.acos(float(a[k] @ b[p]))
            assert cosine_distance(a, b)[k, p].item() == pytest.approx(1 - math.cos(angle))
            assert spherical_distance(a, b)[k, p].item() == pytest.approx(angle**2 / 2)


@pytest.mark.parametrize("kind", ["cosine", "spherical"])
def test_steering_loss_matches_a_naive_loop(kind):
    image_features, text_features = torch.randn(5, 8), torch.randn(3, 8)
    weights = torch.tensor([0.7, 0.5, -0.2])
    distance = cosine_distance if kind == "cosine" else spherical_distance
    unit_i, unit_t = F.normalize(image_features, dim=1), F.normalize(text_features, dim=1)
    expected = sum(weights[p] * distance(unit_i[k : k + 1], unit_t[p : p + 1])[0, 0] for k in range(5) for p in range(3)) / 5
    assert steering_loss(image_features, text_features, weights, kind).item() == pytest.approx(expected.item(), rel=1e-5)


def test_contrastive_loss_matches_a_naive_loop():
    image_features, text_features = torch.randn(4, 8), torch.randn(5, 8)
    weights = torch.tensor([0.75, 0.25, -0.5, -0.5, -0.25])  # two prompts, three alternatives
    unit_i, unit_t = F.normalize(image_features, dim=1), F.normalize(text_features, dim=1)
    total = 0.0
    for k in range(4):
        logits = [20.0 * float(unit_i[k] @ unit_t[p]) for p in range(5)]
        log_norm = math.log(sum(math.exp(v) for v in logits))
        total += sum(-float(weights[p]) * (logits[p] - log_norm) for p in range(5) if weights[p] > 0)
    loss = steering_loss(image_features, text_features, weights, "contrastive", logit_scale=20.0)
    assert loss.item() == pytest.approx(total / 4, rel=1e-5)
    with pytest.raises(ValueError, match="needs negative prompts.*shapes_contrasts"):
        steering_loss(image_features, text_features, weights.abs(), "contrastive")


# -- prompts --------------------------------------------------------------------------------------


def test_prompt_weights_accept_strings_lists_dicts_and_negatives():
    assert prompt_weights("a red star") == {"a red star": 1.0}
    assert prompt_weights(["a", "b"]) == {"a": 0.5, "b": 0.5}
    weights = prompt_weights({"a": 3.0, "b": 1.0}, negative_prompts=["c"])
    assert weights == pytest.approx({"a": 0.75, "b": 0.25, "c": -0.25})
    assert prompt_weights({"a": 2.0, "b": -1.0}) == pytest.approx({"a": 2.0, "b": -1.0})


@pytest.mark.parametrize(
    "prompts, negatives, message",
    [
        ("", None, "empty prompt"),
        (["a red star", "  "], None, "empty prompt"),
        ([], None, "no prompt given"),
        ({"a red star": 1.0, "a blue star": -1.0}, None, "sum to zero"),
        ({"a red star": 0.0}, None, "sum to zero"),
        ({"a red star": 1.0, "a blue star": -3.0}, None, "pushed away from everything"),
        ("a red star", {"a blue star": -1.0}, "must be positive"),
        ({"a red star": float("nan")}, None, "finite"),
    ],
)
def test_bad_prompts_get_clear_errors(prompts, negatives, message):
    with pytest.raises(ValueError, match=message):
        prompt_weights(prompts, negatives)


def test_unknown_words_are_named_with_known_ones_before_any_step(tiny_word_clip):
    calls = []
    with pytest.raises(ValueError, match=r"does not know \['glitter', 'pentagon'\].*did you mean") as error:
        steer(tiny_word_clip, "a red pentagon with glitter", config=SteerConfig(**QUICK), callback=calls.append)
    assert "circle" in str(error.value) or "red" in str(error.value)
    assert calls == []
    with pytest.raises(ValueError, match="sum to zero"):
        steer(tiny_word_clip, {"a red star": 1.0, "a blue star": -1.0}, config=SteerConfig(**QUICK))


# -- the loop -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pixels", "fourier", "strokes", "shapes", "stamps"])
def test_steer_runs_keeps_frames_and_restores_the_model(tiny_word_clip, kind, tmp_path):
    tiny_word_clip.train()
    tiny_word_clip.text.requires_grad_(False)
    flags = [p.requires_grad for p in tiny_word_clip.parameters()]
    seen = []
    result = steer(tiny_word_clip, {"a red star": 1.0}, negative_prompts="a blue star",
                   config=SteerConfig(parameterisation=kind, image_size=32, **QUICK), callback=seen.append)
    assert tiny_word_clip.training and [p.requires_grad for p in tiny_word_clip.parameters()] == flags
    assert all(p.grad is None for p in tiny_word_clip.parameters())
    tiny_word_clip.eval().requires_grad_(True)
    assert result.image.shape == (3, 32, 32) and 0 <= result.image.min() and result.image.max() <= 1
    assert result.frame_steps == [0, 1, 2, 3] and len(result.frames) == 4 and len(result.losses) == 3
    assert [s.step for s in seen] == [1, 2, 3] and isinstance(seen[0], SteerStep)
    assert result.weights == {"a red star": 1.0, "a blue star": -1.0}
    from PIL import Image

    grid = Image.open(result.save_grid(tmp_path / "grid.png", ncols=2, scale=1, gap=0))
    assert grid.size == (64, 64)
    gif = Image.open(result.save_gif(tmp_path / "steps.gif", scale=2))
    assert gif.n_frames == 4 and gif.size == (64, 64)


def test_steer_lowers_the_loss_and_is_seeded(tiny_word_clip):
    config = SteerConfig(parameterisation="pixels", image_size=32, steps=25, num_augmentations=2, lr=0.1)
    first = steer(tiny_word_clip, "a red star", config=config)
    again = steer(tiny_word_clip, "a red star", config=config)
    assert torch.equal(first.image, again.image)
    assert np.mean(first.losses[-5:]) < np.mean(first.losses[:5])


def test_steer_without_augmentation_equals_a_hand_written_loop(tiny_word_clip):
    """No augmentation, constant rate, no smoothness: steer is plain Adam on sigmoid pixels."""
    start = torch.rand(3, 32, 32) * 0.8 + 0.1
    config = SteerConfig(parameterisation="pixels", image_size=32, steps=4, augment=False, lr_schedule="constant",
                         smoothness_weight=0.0, lr=0.05)
    result = steer(tiny_word_clip, "a red star", config=config, init_image=start)
    with torch.no_grad():
        text = F.normalize(tiny_word_clip.encode_text(tiny_word_clip.tokenizer(["a red star"])), dim=-1)
    logits = torch.logit(start.clamp(1e-3, 1 - 1e-3))[None].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(4):
        views = normalize_images(resize_images(torch.sigmoid(logits), 32), tiny_word_clip.image_mean, tiny_word_clip.image_std)
        loss = (1 - F.normalize(tiny_word_clip.encode_image(views), dim=-1) @ text.T).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.allclose(result.image, torch.sigmoid(logits).detach()[0], atol=1e-6)


def test_steer_works_under_no_grad(tiny_word_clip):
    with torch.no_grad():
        result = steer(tiny_word_clip, "a red star", config=SteerConfig(image_size=32, **QUICK))
    assert len(result.losses) == 3 and result.frames[0].ne(result.image).any()


def test_steer_works_with_an_open_clip_model_through_the_bridge(tmp_path):
    """The clipkit interface is all steer needs: a tiny random-init open_clip model (BPE tokenizer, 48 px input)."""
    import json

    open_clip = pytest.importorskip("open_clip")
    from clipkit.pretrained import load_open_clip

    config = {"embed_dim": 32, "vision_cfg": {"image_size": 48, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "clipkit-steer-tiny.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    model = load_open_clip("clipkit-steer-tiny")
    result = steer(model, "a watercolour of a lighthouse, with glitter", config=SteerConfig(parameterisation="fourier", **QUICK))
    assert result.image.shape == (3, 64, 64) and len(result.losses) == 3


def test_callback_returning_true_stops_early(tiny_word_clip):
    result = steer(tiny_word_clip, "a red star", config=SteerConfig(steps=50, frame_every=20, num_augmentations=1, image_size=32),
                   callback=lambda progress: progress.step == 3)
    assert len(result.losses) == 3 and result.frame_steps == [0, 3]


def test_restarts_keep_the_run_the_steering_model_scores_best(tiny_word_clip):
    from dataclasses import replace

    config = SteerConfig(parameterisation="shapes", image_size=32, steps=4, num_augmentations=3, restarts=3, seed=5)
    seen = []
    result = steer(tiny_word_clip, "a red star", config=config, callback=seen.append)
    assert [s.restart for s in seen] == [0] * 4 + [1] * 4 + [2] * 4
    singles = [steer(tiny_word_clip, "a red star", config=replace(config, restarts=1, seed=5 + i)) for i in range(3)]
    # recompute each run's score: its final image through the same views, drawn from a generator seeded with config.seed
    with torch.no_grad():
        text = F.normalize(tiny_word_clip.encode_text(tiny_word_clip.tokenizer(["a red star"])), dim=-1)
        scores = []
        for single in singles:
            views = augmented_views(single.image[None], config, tiny_word_clip.image_size, True, torch.Generator().manual_seed(5))
            features = F.normalize(tiny_word_clip.encode_image(normalize_images(views, tiny_word_clip.image_mean, tiny_word_clip.image_std)), dim=-1)
            scores.append((1 - features @ text.T).mean().item())
    assert result.restart_losses == pytest.approx(scores, abs=1e-6)
    best = int(np.argmin(scores))
    assert result.restart == best and torch.equal(result.image, singles[best].image)
    assert result.losses == singles[best].losses


def test_a_stop_from_the_callback_ends_every_restart(tiny_word_clip):
    config = SteerConfig(steps=20, num_augmentations=1, image_size=32, restarts=3)
    result = steer(tiny_word_clip, "a red star", config=config, callback=lambda progress: progress.step == 2)
    assert len(result.restart_losses) == 1 and len(result.losses) == 2
    with pytest.raises(ValueError, match="restarts must be at least 1"):
        SteerConfig(restarts=0)
