"""The steering loop's contract on tiny random models: prompt checks before any step, a frozen
model restored after, frames, seeds, early stops, restarts, the learning-rate schedule, and
agreement with a hand-written loop and with an open_clip model."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipkit.data import normalize_images
from clipkit.data.transforms import resize_images
from clipkit.steer.config import SteerConfig
from clipkit.steer.loop import SteerStep, learning_rate_factor, steer
from clipkit.steer.views import augmented_views

QUICK = dict(steps=3, num_augmentations=2, num_strokes=4, frame_every=1)


def test_unknown_words_are_named_with_known_ones_before_any_step(tiny_word_clip):
    calls = []
    with pytest.raises(ValueError, match=r"does not know \['glitter', 'pentagon'\].*did you mean") as error:
        steer(tiny_word_clip, "a red pentagon with glitter", config=SteerConfig(**QUICK), callback=calls.append)
    assert "circle" in str(error.value) or "red" in str(error.value)
    assert calls == []
    with pytest.raises(ValueError, match="sum to zero"):
        steer(tiny_word_clip, {"a red star": 1.0, "a blue star": -1.0}, config=SteerConfig(**QUICK))


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



def test_the_schedule_warms_up_in_equal_steps_then_decays_to_a_tenth_at_the_last_step():
    config = SteerConfig(steps=30, warmup_steps=10)
    factors = [learning_rate_factor(config)(step) for step in range(30)]
    assert factors[:10] == pytest.approx([(step + 1) / 10 for step in range(10)])  # the 10th step at the peak
    cosine = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * (step - 9) / 20)) for step in range(9, 30)]
    assert factors[9:] == pytest.approx(cosine) and factors[-1] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))
    assert learning_rate_factor(SteerConfig(steps=1))(0) == 1.0  # one step: taken at the full rate
    assert [learning_rate_factor(SteerConfig(steps=5, lr_schedule="constant"))(step) for step in range(5)] == [1.0] * 5


def test_the_contrastive_loss_reads_the_models_clamped_scale(tiny_word_clip):
    """The scale comes from model.logit_scale_exp(): a stored log scale past the cap scores at the cap."""
    config = SteerConfig(parameterisation="pixels", image_size=32, steps=2, num_augmentations=3, loss="contrastive")
    saved = tiny_word_clip.logit_scale.detach().clone()
    try:
        with torch.no_grad():
            tiny_word_clip.logit_scale.fill_(math.log(1000.0))  # ten times past the cap of 100
        result = steer(tiny_word_clip, "a red star", negative_prompts=["a blue star"], config=config)
        with torch.no_grad():
            text = F.normalize(tiny_word_clip.encode_text(tiny_word_clip.tokenizer(["a red star", "a blue star"])), dim=-1)
            views = augmented_views(result.image[None], config, tiny_word_clip.image_size, True, torch.Generator().manual_seed(0))
            features = F.normalize(tiny_word_clip.encode_image(normalize_images(views, tiny_word_clip.image_mean, tiny_word_clip.image_std)), dim=-1)
            expected = -(100.0 * features @ text.T).log_softmax(dim=-1)[:, 0].mean().item()
    finally:
        with torch.no_grad():
            tiny_word_clip.logit_scale.copy_(saved)
    assert result.restart_losses == pytest.approx([expected], abs=1e-5)


def test_a_model_without_the_clipkit_interface_gets_a_clear_error():
    with pytest.raises(TypeError, match="CLIPBase"):
        steer(torch.nn.Linear(2, 2), "a red star", config=SteerConfig(**QUICK))


@pytest.mark.parametrize("kind", ["pixels", "fourier", "strokes"])
def test_real_scale_steering_shows_the_model_cutouts_at_its_size_in_its_own_statistics(world32, kind):
    """REAL_SCALE as on a 224 px CLIP, scaled down: a 40 px painting, a model of 24 px input with its own
    mean and std. Every step the model sees random cutouts resized to 24 px, normalised with the model's
    statistics (recomputed from the painter and the seeded views), and gradient reaches the painting."""
    from clipkit.config import config_from_preset
    from clipkit.model import MiniCLIP
    from clipkit.steer import REAL_SCALE
    from clipkit.steer.painters import build_parameterisation
    from clipkit.tokenizer import WordTokenizer

    torch.manual_seed(0)
    tokenizer = WordTokenizer.fit(world32.sample(200, seed=1).captions, context_length=24)
    model = MiniCLIP(config_from_preset("tiny-cpu", tokenizer=tokenizer, embed_dim=16, image_mean=(0.2, 0.5, 0.7), image_std=(0.1, 0.3, 0.2),
                                        vision={"image_size": 24, "cnn_channels": [8, 16]}, text={"width": 16, "layers": 1, "heads": 2})).eval()
    config = SteerConfig(**{**REAL_SCALE, "image_size": 40, "num_augmentations": 3}, parameterisation=kind, steps=2, num_strokes=4)
    shown, grads = [], []

    def spy(images, normalize=False, encode=model.encode_image):
        shown.append(images.detach().clone())
        if images.requires_grad:  # the optimisation steps (the final scoring of the run is under no_grad)
            images.register_hook(lambda grad: grads.append(grad.abs().sum().item()))
        return encode(images, normalize)

    model.encode_image = spy
    result = steer(model, "a red star", config=config)
    assert [tuple(x.shape) for x in shown[:2]] == [(3, 3, 24, 24)] * 2  # the views of each step, at the model's size
    generator = torch.Generator().manual_seed(config.seed)  # the first step, recomputed: painter, then its views
    painting = build_parameterisation(config, generator)()
    views = augmented_views(painting, config, 24, True, generator)
    assert not torch.allclose(views[0], views[1])  # random cutouts, not one view three times
    assert torch.allclose(shown[0], normalize_images(views, model.image_mean, model.image_std), atol=1e-6)
    assert len(grads) == 2 and min(grads) > 0
    assert not torch.equal(result.frames[0], result.image)  # the painting moved


@pytest.mark.slow
def test_a_random_init_vit_b_32_steers_at_224_px_through_cutouts():
    """The real scale: open_clip's ViT-B-32 (random init, offline), a 224 px painting, REAL_SCALE's cutouts."""
    pytest.importorskip("open_clip")
    from clipkit.pretrained import load_open_clip
    from clipkit.steer import REAL_SCALE

    model = load_open_clip("ViT-B-32")
    assert model.image_size == 224
    config = SteerConfig(**{**REAL_SCALE, "num_augmentations": 2}, parameterisation="strokes", steps=1, num_strokes=8)
    result = steer(model, "an oil painting of a lighthouse", config=config)
    assert result.image.shape == (3, 224, 224) and len(result.losses) == 1 and math.isfinite(result.losses[0])
