"""Steering losses and prompt weights against naive loops and their definitions, and the
clear errors bad prompts get."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipkit.steer.losses import cosine_distance, prompt_weights, spherical_distance, steering_loss, total_variation


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



def test_total_variation_matches_a_loop():
    image = torch.rand(2, 3, 5, 6)
    down = sum(abs(image[b, c, i + 1, j] - image[b, c, i, j]) for b in range(2) for c in range(3) for i in range(4) for j in range(6))
    across = sum(abs(image[b, c, i, j + 1] - image[b, c, i, j]) for b in range(2) for c in range(3) for i in range(5) for j in range(5))
    assert total_variation(image).item() == pytest.approx((down / (2 * 3 * 4 * 6) + across / (2 * 3 * 5 * 5)).item(), rel=1e-5)
