"""Painters: each renders images in range with gradients, and matches a per-pixel or naive
reference (inverse DFT, polar outline, the shapes world's own masks); the stamp search finds a
known target."""

import math

import numpy as np
import pytest
import torch

from clipkit.data.shapes import COLOURS, POSITIONS, SHAPES, SIZES, shape_mask
from clipkit.steer.config import PARAMETERISATIONS, SteerConfig
from clipkit.steer.painters import StampImage, build_parameterisation


def test_every_parameterisation_the_config_accepts_has_a_painter():
    built = {kind: type(build_parameterisation(SteerConfig(parameterisation=kind, image_size=8))).__name__ for kind in PARAMETERISATIONS}
    assert built == {"pixels": "PixelImage", "fourier": "FourierImage", "strokes": "StrokeImage", "shapes": "ShapeImage", "stamps": "StampImage"}


@pytest.mark.parametrize("kind", ["pixels", "fourier", "strokes", "shapes", "stamps"])
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


def _stamp(shape: str, centre: tuple[float, float], diameter: float, side: int = 64) -> StampImage:
    stamp = StampImage(SteerConfig(parameterisation="stamps", image_size=side), torch.Generator().manual_seed(0))
    with torch.no_grad():
        stamp.shape_index[0] = SHAPES.index(shape)
        stamp.centre_logits[0] = torch.logit((torch.tensor(centre) - 0.15) / 0.7)
        stamp.diameter_logits[0] = torch.logit(torch.tensor((diameter - 0.2) / 0.3))
    return stamp


@pytest.mark.parametrize("shape", SHAPES)
def test_stamps_draw_the_shapes_worlds_own_masks(shape):
    """A stamp at a place and size covers what the world's rasteriser draws there."""
    side, diameter, centre = 64, 0.44, (0.27, 0.5)
    coverage = _stamp(shape, centre, diameter, side).coverage()[0].detach()
    mask = torch.from_numpy(shape_mask(shape, diameter * side)).float()  # [box, box], centred on the object
    reference = torch.zeros(side, side)
    box = mask.shape[-1]
    top, left = round(centre[1] * side - box / 2), round(centre[0] * side - box / 2)
    reference[top : top + box, left : left + box] = mask
    drawn, expected = coverage > 0.5, reference > 0.5
    assert (drawn & expected).sum() / (drawn | expected).sum() > 0.85


def test_stamp_search_recovers_a_target_by_shape_place_size_and_colour():
    """Coordinate descent over what gradients reach badly: given a loss that is the distance to a
    target picture, the search finds its colour, shape, place and size."""
    target_stamp = _stamp("star", POSITIONS["left"], SIZES["large"])
    with torch.no_grad():
        target_stamp.colour_logits[0] = target_stamp.palette[list(COLOURS).index("red")]
        target = target_stamp()
    searcher = _stamp("circle", POSITIONS["right"], SIZES["small"])

    def losses_of(candidates):
        return (candidates - target).square().flatten(1).mean(dim=1)

    for _ in range(2):
        searcher.search(losses_of, position_step=0.22)
    assert searcher.shapes() == ["star"]
    torch.testing.assert_close(searcher.centres()[0], torch.tensor(POSITIONS["left"]), atol=1e-3, rtol=0)
    assert searcher.diameters()[0].item() == pytest.approx(SIZES["large"], abs=1e-3)
    assert losses_of(searcher()).item() < 1e-6


def _paint_colour(stamp: StampImage, colour: str) -> None:
    with torch.no_grad():
        stamp.colour_logits[0] = stamp.palette[list(COLOURS).index(colour)]


def test_joint_search_escapes_a_trap_that_one_attribute_at_a_time_cannot():
    """A deceptive loss: only the target (a large yellow star on the right) scores 0, and anything
    green scores 1, below every other wrong image (2). From a small green triangle, changing one
    attribute at a time always loses the green and scores worse, so coordinate descent stays put;
    trying colour, shape, size and place together finds the target."""
    target_stamp = _stamp("star", POSITIONS["right"], SIZES["large"])
    _paint_colour(target_stamp, "yellow")
    with torch.no_grad():
        target = target_stamp()[0]
    green = torch.tensor(COLOURS["green"], dtype=torch.float32) / 255

    def losses_of(candidates):
        exact = (candidates - target).abs().flatten(1).amax(dim=1) < 1e-4
        has_green = ((candidates - green[:, None, None]).abs().amax(dim=1) < 0.02).flatten(1).any(dim=1)
        return torch.where(exact, 0.0, torch.where(has_green, 1.0, 2.0))

    one_at_a_time = _stamp("triangle", POSITIONS["right"], SIZES["small"])
    _paint_colour(one_at_a_time, "green")
    one_at_a_time.search(losses_of, position_step=0.22)
    assert losses_of(one_at_a_time()).item() == 1.0  # trapped in green

    joint = _stamp("triangle", POSITIONS["right"], SIZES["small"])
    _paint_colour(joint, "green")
    joint.search(losses_of, position_step=0.22, joint_losses_of=losses_of)
    assert losses_of(joint()).item() == 0.0
    assert joint.shapes() == ["star"] and torch.equal(joint.colour_logits[0], joint.palette[list(COLOURS).index("yellow")])
