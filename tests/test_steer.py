"""Steering: parameterisations, augmentations, losses and prompt checks against references, and
the loop's contract (frozen model, device, early stop, saved grid and GIF), on tiny random models."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clipkit.data import COLOURS, ShapesConfig, ShapesWorld, normalize_images
from clipkit.data.shapes import POSITIONS
from clipkit.data.transforms import resize_images
from clipkit.model import MiniCLIP, config_from_preset
from clipkit.steer import (
    SteerConfig,
    SteerStep,
    augmented_views,
    build_parameterisation,
    cosine_distance,
    oracle_agrees,
    parse_shapes_prompt,
    pixel_oracle,
    prompt_weights,
    side_named,
    spherical_distance,
    steer,
    steering_loss,
    total_variation,
    zero_shot_judge,
)
from clipkit.tokenizer import WordTokenizer

QUICK = dict(steps=3, num_augmentations=2, num_strokes=4, frame_every=1)


@pytest.fixture(scope="module")
def world():
    return ShapesWorld(ShapesConfig(image_size=32))


@pytest.fixture(scope="module")
def tiny_model(world):
    torch.manual_seed(0)
    tokenizer = WordTokenizer.fit(world.sample(500, seed=1).captions, context_length=24)
    config = config_from_preset(
        "tiny-cpu", tokenizer=tokenizer, embed_dim=32,
        vision={"cnn_channels": [8, 16]}, text={"width": 32, "layers": 1, "heads": 2},
    )
    return MiniCLIP(config).eval()


# -- parameterisations --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pixels", "fourier", "strokes", "shapes"])
def test_parameterisations_render_images_in_range_with_gradients(kind):
    config = SteerConfig(parameterisation=kind, image_size=24, num_strokes=5, num_shapes=2)
    image_param = build_parameterisation(config)
    image = image_param()
    assert image.shape == (1, 3, 24, 24)
    assert image.min() >= 0 and image.max() <= 1
    image.mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in image_param.parameters())


@pytest.mark.parametrize("kind", ["pixels", "fourier"])
def test_init_image_is_rendered_back(kind):
    start = torch.rand(3, 16, 16) * 0.9 + 0.05
    rendered = build_parameterisation(SteerConfig(parameterisation=kind, image_size=16), init_image=start)()
    assert torch.allclose(rendered[0], start, atol=1e-4)


def test_fourier_image_matches_a_naive_inverse_dft():
    """The irfft2-based render equals a plain sum of cosines and sines over the scaled spectrum."""
    side = 8
    image_param = build_parameterisation(SteerConfig(parameterisation="fourier", image_size=side, fourier_decay=1.0))
    spectrum = torch.view_as_complex(image_param.spectrum.detach().double())[0]  # [3, H, W//2+1]
    frequencies = np.sqrt(np.fft.fftfreq(side)[:, None] ** 2 + np.fft.rfftfreq(side)[None, :] ** 2)
    scaled = spectrum.numpy() * (1 / np.maximum(frequencies, 1 / side))
    full = np.zeros((3, side, side), dtype=complex)  # rebuild the full Hermitian spectrum by hand
    for u in range(side):
        for v in range(side):
            full[:, u, v] = scaled[:, u, v] if v <= side // 2 else np.conj(scaled[:, (-u) % side, (-v) % side])
    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    spatial = np.zeros((3, side, side))
    for u in range(side):
        for v in range(side):
            spatial += (full[:, u, v, None, None] * np.exp(2j * np.pi * (u * rows + v * cols) / side)).real
    spatial /= side * 4.0  # "ortho" normalisation (1 / sqrt(H W) = 1 / side), then lucid's / 4
    mix = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    mix = mix / np.linalg.norm(mix, axis=0).max()
    bias = np.log(np.array(SteerConfig().init_background) / (1 - np.array(SteerConfig().init_background)))
    expected = 1 / (1 + np.exp(-(np.einsum("ij,jhw->ihw", mix, spatial) + bias[:, None, None])))
    assert np.allclose(image_param()[0].detach().numpy(), expected, atol=1e-5)


def test_stroke_coverage_matches_a_per_pixel_loop():
    image_param = build_parameterisation(SteerConfig(parameterisation="strokes", image_size=10, num_strokes=2))
    alpha = image_param.coverage().detach()
    ends = image_param.ends.detach()
    radius = 0.25 * torch.sigmoid(image_param.width_logits.detach())
    for stroke in range(2):
        (x0, y0), (x1, y1) = ends[stroke].tolist()
        for row in range(10):
            for col in range(10):
                px, py = (col + 0.5) / 10, (row + 0.5) / 10
                length2 = max((x1 - x0) ** 2 + (y1 - y0) ** 2, 1e-8)
                t = min(1.0, max(0.0, ((px - x0) * (x1 - x0) + (py - y0) * (y1 - y0)) / length2))
                distance = math.hypot(px - (x0 + t * (x1 - x0)), py - (y0 + t * (y1 - y0)))
                expected = 1 / (1 + math.exp(-(radius[stroke] - distance) / image_param.softness))
                assert alpha[stroke, row, col].item() == pytest.approx(float(expected), abs=1e-5)


def test_shape_coverage_matches_a_per_pixel_polar_outline():
    image_param = build_parameterisation(SteerConfig(parameterisation="shapes", image_size=12, num_shapes=2, shape_harmonics=3))
    with torch.no_grad():
        image_param.harmonics.normal_(0, 0.5)
    alpha = image_param.coverage().detach()
    for shape in range(2):
        cx, cy = (0.15 + 0.7 * torch.sigmoid(image_param.centre_logits[shape].detach())).tolist()
        base = 0.04 + 0.26 * torch.sigmoid(image_param.radius_logits[shape].detach()).item()
        harmonics = image_param.harmonics[shape].detach().tolist()
        for row in range(12):
            for col in range(12):
                px, py = (col + 0.5) / 12 - cx, (row + 0.5) / 12 - cy
                angle = math.atan2(py, px)
                outline = base * math.exp(sum((a * math.cos(k * angle) + b * math.sin(k * angle)) / k
                                              for k, (a, b) in enumerate(harmonics, start=1)))
                expected = 1 / (1 + math.exp(-(outline - math.hypot(px, py)) / image_param.softness))
                assert alpha[shape, row, col].item() == pytest.approx(expected, abs=1e-4)


def test_painting_lays_each_primitive_over_the_ones_before():
    image_param = build_parameterisation(SteerConfig(parameterisation="shapes", image_size=16, num_shapes=3))
    with torch.no_grad():
        image_param.opacity_logits.normal_(0, 3)
        alpha = torch.sigmoid(image_param.opacity_logits)[:, None, None] * image_param.coverage()
        colours = torch.sigmoid(image_param.colour_logits)
        expected = torch.sigmoid(image_param.background_logits).expand(1, 3, 16, 16).clone()
        for row in range(16):
            for col in range(16):
                for shape in range(3):  # back to front, one pixel at a time
                    a = alpha[shape, row, col]
                    expected[0, :, row, col] = (1 - a) * expected[0, :, row, col] + a * colours[shape]
        assert torch.allclose(image_param(), expected, atol=1e-6)


def test_painted_primitives_paint_over_an_init_image():
    photo = torch.rand(3, 16, 16)
    image_param = build_parameterisation(SteerConfig(parameterisation="strokes", image_size=16, num_strokes=3), init_image=photo)
    with torch.no_grad():
        image_param.opacity_logits.fill_(-30)  # invisible strokes: only the picture shows
        assert torch.allclose(image_param()[0], photo, atol=1e-6)


def test_total_variation_matches_a_loop():
    image = torch.rand(2, 3, 5, 6)
    down = sum(abs(image[b, c, i + 1, j] - image[b, c, i, j]) for b in range(2) for c in range(3) for i in range(4) for j in range(6))
    across = sum(abs(image[b, c, i, j + 1] - image[b, c, i, j]) for b in range(2) for c in range(3) for i in range(5) for j in range(5))
    assert total_variation(image).item() == pytest.approx((down / (2 * 3 * 4 * 6) + across / (2 * 3 * 5 * 5)).item(), rel=1e-5)


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


def test_unknown_words_are_named_with_known_ones_before_any_step(tiny_model):
    calls = []
    with pytest.raises(ValueError, match=r"does not know \['glitter', 'pentagon'\].*did you mean") as error:
        steer(tiny_model, "a red pentagon with glitter", config=SteerConfig(**QUICK), callback=calls.append)
    assert "circle" in str(error.value) or "red" in str(error.value)
    assert calls == []
    with pytest.raises(ValueError, match="sum to zero"):
        steer(tiny_model, {"a red star": 1.0, "a blue star": -1.0}, config=SteerConfig(**QUICK))


# -- the loop -------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["pixels", "fourier", "strokes", "shapes"])
def test_steer_runs_keeps_frames_and_restores_the_model(tiny_model, kind, tmp_path):
    tiny_model.train()
    tiny_model.text.requires_grad_(False)
    flags = [p.requires_grad for p in tiny_model.parameters()]
    seen = []
    result = steer(tiny_model, {"a red star": 1.0}, negative_prompts="a blue star",
                   config=SteerConfig(parameterisation=kind, image_size=32, **QUICK), callback=seen.append)
    assert tiny_model.training and [p.requires_grad for p in tiny_model.parameters()] == flags
    assert all(p.grad is None for p in tiny_model.parameters())
    tiny_model.eval().requires_grad_(True)
    assert result.image.shape == (3, 32, 32) and 0 <= result.image.min() and result.image.max() <= 1
    assert result.frame_steps == [0, 1, 2, 3] and len(result.frames) == 4 and len(result.losses) == 3
    assert [s.step for s in seen] == [1, 2, 3] and isinstance(seen[0], SteerStep)
    assert result.weights == {"a red star": 1.0, "a blue star": -1.0}
    from PIL import Image

    grid = Image.open(result.save_grid(tmp_path / "grid.png", ncols=2, scale=1, gap=0))
    assert grid.size == (64, 64)
    gif = Image.open(result.save_gif(tmp_path / "steps.gif", scale=2))
    assert gif.n_frames == 4 and gif.size == (64, 64)


def test_steer_lowers_the_loss_and_is_seeded(tiny_model):
    config = SteerConfig(parameterisation="pixels", image_size=32, steps=25, num_augmentations=2, lr=0.1)
    first = steer(tiny_model, "a red star", config=config)
    again = steer(tiny_model, "a red star", config=config)
    assert torch.equal(first.image, again.image)
    assert np.mean(first.losses[-5:]) < np.mean(first.losses[:5])


def test_steer_without_augmentation_equals_a_hand_written_loop(tiny_model):
    """No augmentation, constant rate, no smoothness: steer is plain Adam on sigmoid pixels."""
    start = torch.rand(3, 32, 32) * 0.8 + 0.1
    config = SteerConfig(parameterisation="pixels", image_size=32, steps=4, augment=False, lr_schedule="constant",
                         smoothness_weight=0.0, lr=0.05)
    result = steer(tiny_model, "a red star", config=config, init_image=start)
    with torch.no_grad():
        text = F.normalize(tiny_model.encode_text(tiny_model.tokenizer(["a red star"])), dim=-1)
    logits = torch.logit(start.clamp(1e-3, 1 - 1e-3))[None].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=0.05)
    for _ in range(4):
        views = normalize_images(resize_images(torch.sigmoid(logits), 32), tiny_model.image_mean, tiny_model.image_std)
        loss = (1 - F.normalize(tiny_model.encode_image(views), dim=-1) @ text.T).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.allclose(result.image, torch.sigmoid(logits).detach()[0], atol=1e-6)


def test_steer_works_under_no_grad(tiny_model):
    with torch.no_grad():
        result = steer(tiny_model, "a red star", config=SteerConfig(image_size=32, **QUICK))
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


def test_callback_returning_true_stops_early(tiny_model):
    result = steer(tiny_model, "a red star", config=SteerConfig(steps=50, frame_every=20, num_augmentations=1, image_size=32),
                   callback=lambda progress: progress.step == 3)
    assert len(result.losses) == 3 and result.frame_steps == [0, 3]


# -- judges ---------------------------------------------------------------------------------------


def test_parse_shapes_prompt():
    parsed = parse_shapes_prompt("a large blue circle on the left")
    assert (parsed.colour, parsed.shape, parsed.size, parsed.position) == ("blue", "circle", "large", "left")
    parsed = parse_shapes_prompt("an orange star in the middle of the frame")
    assert (parsed.colour, parsed.shape, parsed.size, parsed.position) == ("orange", "star", None, "centre")


def test_pixel_oracle_reads_the_shapes_world_it_was_made_for():
    """Recompute each rendered scene's colour and position from pixels alone, against the scene record."""
    world = ShapesWorld(ShapesConfig(image_size=64))
    sample = world.sample(200, seed=5, objects=1, split="all")
    right = 0
    for image, scene in zip(sample.images, sample.scenes):
        reading = pixel_oracle(image.float() / 255)
        target = scene.objects[0]
        right += reading.colour == target.colour and reading.position == target.position
        assert abs(reading.x - target.x / 64) < 0.08 and abs(reading.y - target.y / 64) < 0.08
    assert right / len(sample) >= 0.95


def test_pixel_oracle_sees_no_object_on_a_blank_image_and_judges_prompts():
    assert pixel_oracle(torch.full((3, 32, 32), 0.07)).colour is None
    image = torch.full((3, 64, 64), 0.07)
    x, y = POSITIONS["left"]
    image[:, int(y * 64) - 6 : int(y * 64) + 6, int(x * 64) - 6 : int(x * 64) + 6] = torch.tensor(COLOURS["blue"])[:, None, None] / 255
    reading = pixel_oracle(image)
    assert (reading.colour, reading.position) == ("blue", "left")
    assert oracle_agrees("a large blue circle on the left", reading) and oracle_agrees("a blue star", reading)
    assert not oracle_agrees("a blue star on the right", reading) and not oracle_agrees("a red star", reading)
    with pytest.raises(ValueError, match="names no colour"):
        oracle_agrees("a star", reading)


def test_zero_shot_judge_agrees_with_a_direct_argmax(tiny_model, world):
    from clipkit.model import embed_images, embed_texts

    image = world.sample(1, seed=3, objects=1).images[0].float() / 255
    answer = zero_shot_judge(tiny_model, image, "a small red circle at the top")
    features = embed_images(tiny_model, image[None])
    positions = ["left", "right", "top", "bottom", "centre"]
    phrases = ["on the left", "on the right", "at the top", "at the bottom", "in the centre"]
    scores = features @ embed_texts(tiny_model, [f"a small red circle {p}" for p in phrases]).T
    assert answer["position"] == positions[int(scores.argmax())]
    wanted = ("red", "circle", "small", "top")
    assert answer["correct"] == ((answer["colour"], answer["shape"], answer["size"], answer["position"]) == wanted)
