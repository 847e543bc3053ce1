"""Judges of steered images: the prompt parser, the pixel oracle on the world it was made for, the
zero-shot judge against a direct argmax, and the contrast captions."""

import pytest
import torch

from clipkit.data import COLOURS, ShapesConfig, ShapesWorld
from clipkit.data.shapes import POSITIONS, SHAPES, SIZES
from clipkit.steer.judges import oracle_agrees, parse_shapes_prompt, pixel_oracle, shapes_contrasts, zero_shot_judge


def test_shapes_contrasts_change_exactly_one_stated_attribute():
    for prompt in ("a red star", "a large blue circle on the left", "a small green square at the top"):
        wanted = parse_shapes_prompt(prompt)
        stated = [key for key in ("colour", "shape", "size", "position") if getattr(wanted, key) is not None]
        contrasts = shapes_contrasts(prompt)
        expected = {"colour": len(COLOURS) - 1, "shape": len(SHAPES) - 1, "size": len(SIZES) - 1, "position": len(POSITIONS) - 1}
        assert len(contrasts) == len(set(contrasts)) == sum(expected[key] for key in stated)
        for contrast in contrasts:
            parsed = parse_shapes_prompt(contrast)
            changed = [key for key in stated if getattr(parsed, key) != getattr(wanted, key)]
            assert len(changed) == 1, (prompt, contrast)
    with pytest.raises(ValueError, match="must name a colour"):
        shapes_contrasts("a nice picture")


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


def test_zero_shot_judge_agrees_with_a_direct_argmax(tiny_word_clip, world32):
    from clipkit.interface import embed_images, embed_texts

    image = world32.sample(1, seed=3, objects=1).images[0].float() / 255
    answer = zero_shot_judge(tiny_word_clip, image, "a small red circle at the top")
    features = embed_images(tiny_word_clip, image[None])
    positions = ["left", "right", "top", "bottom", "centre"]
    phrases = ["on the left", "on the right", "at the top", "at the bottom", "in the centre"]
    scores = features @ embed_texts(tiny_word_clip, [f"a small red circle {p}" for p in phrases]).T
    assert answer["position"] == positions[int(scores.argmax())]
    wanted = ("red", "circle", "small", "top")
    assert answer["correct"] == ((answer["colour"], answer["shape"], answer["size"], answer["position"]) == wanted)
