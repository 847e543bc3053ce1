"""Contrastive losses against open_clip's ClipLoss and naive loops."""

import math

import pytest
import torch
import torch.nn.functional as F

from clipkit.loss import clip_loss, clip_loss_with_positives, multi_positive_clip_loss


def features(batch: int, dim: int = 16, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    text = F.normalize(torch.randn(batch, dim, generator=generator, dtype=torch.float64), dim=-1)
    return image.requires_grad_(), text.requires_grad_()


def naive_multi_positive(logits: torch.Tensor, image_groups: list, text_groups: list) -> torch.Tensor:
    """Loop over rows and columns: average -log p over each row's (and column's) positives."""
    n = len(image_groups)
    image_to_text = text_to_image = 0.0
    for i in range(n):
        log_p = torch.log_softmax(logits[i], dim=0)
        positives = [j for j in range(n) if text_groups[j] == image_groups[i]]
        image_to_text = image_to_text - sum(log_p[j] for j in positives) / len(positives)
    for j in range(n):
        log_p = torch.log_softmax(logits[:, j], dim=0)
        positives = [i for i in range(n) if image_groups[i] == text_groups[j]]
        text_to_image = text_to_image - sum(log_p[i] for i in positives) / len(positives)
    return (image_to_text + text_to_image) / (2 * n)


@pytest.mark.parametrize("batch", [1, 2, 7, 32])
@pytest.mark.parametrize("scale", [1.0, 1 / 0.07, 100.0])
def test_clip_loss_matches_open_clip_with_finite_equal_gradients(batch, scale):
    from open_clip.loss import ClipLoss

    image, text = features(batch, seed=batch)
    reference = ClipLoss()(image, text, torch.tensor(scale, dtype=torch.float64))
    reference_grads = torch.autograd.grad(reference, (image, text))
    ours = clip_loss(scale * image @ text.T)
    grads = torch.autograd.grad(ours, (image, text))
    assert abs(ours.item() - reference.item()) < 1e-6
    for grad, reference_grad in zip(grads, reference_grads):
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(grad, reference_grad, atol=1e-6, rtol=1e-6)


def test_clip_loss_uses_logits_per_text_when_given():
    from open_clip.loss import ClipLoss

    image, text = features(6)
    logits_per_image = 10 * image @ text.T
    logits_per_text = 10 * text @ image.T
    torch.testing.assert_close(clip_loss(logits_per_image, logits_per_text), ClipLoss()(image, text, 10.0))


def test_uniform_logits_give_ln_batch_size():
    for batch in (2, 8, 128):
        assert math.isclose(clip_loss(torch.zeros(batch, batch)).item(), math.log(batch), rel_tol=1e-6)


def test_multi_positive_equals_clip_loss_when_every_group_is_distinct():
    image, text = features(9)
    logits = 14.3 * image @ text.T
    torch.testing.assert_close(multi_positive_clip_loss(logits, torch.arange(9)), clip_loss(logits))
    torch.testing.assert_close(multi_positive_clip_loss(logits, [f"caption {i}" for i in range(9)]), clip_loss(logits))


@pytest.mark.parametrize(
    "image_groups, text_groups",
    [
        ([0, 1, 0, 2, 1, 0], None),  # repeated captions
        (["red circle", "blue square", "red circle", "red circle", "green star", "blue square"], None),
        ([0, 0, 1, 1, 2, 2], [1, 0, 0, 2, 1, 2]),  # captions of another order, each group present on both sides
    ],
)
def test_multi_positive_matches_a_naive_loop(image_groups, text_groups):
    image, text = features(6, seed=3)
    logits = 20 * image @ text.T
    expected = naive_multi_positive(logits, image_groups, text_groups or image_groups)
    ours = multi_positive_clip_loss(logits, image_groups, text_groups)
    torch.testing.assert_close(ours, expected)
    grads = torch.autograd.grad(ours, (image, text))
    assert all(torch.isfinite(g).all() for g in grads)


def test_multi_positive_does_not_push_apart_two_images_with_the_same_caption():
    # Images 0 and 1 share a caption and are embedded identically. Plain InfoNCE still has a
    # gradient pushing them apart (each is a "negative" of the other's caption); with both
    # counted as positives that configuration is already optimal: the gradient vanishes.
    embeddings = torch.eye(3, dtype=torch.float64)[[0, 0, 1, 2]]
    logits = (100 * embeddings @ embeddings.T).requires_grad_()
    (plain_grad,) = torch.autograd.grad(clip_loss(logits), logits)
    (multi_grad,) = torch.autograd.grad(multi_positive_clip_loss(logits, [0, 0, 1, 2]), logits)
    assert plain_grad.abs().max() > 0.05
    assert multi_grad.abs().max() < 1e-12


def test_losses_refuse_bad_input_by_name():
    with pytest.raises(ValueError, match="square"):
        clip_loss(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="transpose"):
        clip_loss(torch.zeros(3, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="one group label per item"):
        multi_positive_clip_loss(torch.zeros(3, 3), [0, 1])
    with pytest.raises(ValueError, match="no positive"):
        multi_positive_clip_loss(torch.zeros(3, 3), [0, 1, 2], [0, 1, 1])


def naive_loss_with_positives(logits: torch.Tensor, positives: torch.Tensor) -> torch.Tensor:
    """Loops: each image averages -log p over its positive captions; each caption that describes
    some image averages -log p over those images."""
    rows, columns = logits.shape
    image_to_text = sum(
        -sum(torch.log_softmax(logits[i], 0)[j] for j in range(columns) if positives[i, j]) / int(positives[i].sum())
        for i in range(rows)
    ) / rows
    described = [j for j in range(columns) if positives[:, j].any()]
    text_to_image = sum(
        -sum(torch.log_softmax(logits[:, j], 0)[i] for i in range(rows) if positives[i, j]) / int(positives[:, j].sum())
        for j in described
    ) / len(described)
    return (image_to_text + text_to_image) / 2


def test_loss_with_positives_matches_naive_loops_and_reduces_to_the_other_losses():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 9, generator=generator, dtype=torch.float64) * 3
    groups = [0, 1, 0, 2, 1, 3]
    positives = torch.zeros(6, 9, dtype=torch.bool)
    positives[:, :6] = torch.tensor(groups)[:, None] == torch.tensor(groups)[None, :]
    positives[5, 8] = True  # an extra caption true of one image; columns 6 and 7 are pure negatives
    torch.testing.assert_close(clip_loss_with_positives(logits, positives), naive_loss_with_positives(logits, positives))
    square = logits[:, :6]
    torch.testing.assert_close(clip_loss_with_positives(square, torch.eye(6, dtype=torch.bool)), clip_loss(square))
    torch.testing.assert_close(clip_loss_with_positives(square, positives[:, :6]), multi_positive_clip_loss(square, groups))
    with pytest.raises(ValueError, match="no positive"):
        clip_loss_with_positives(square, torch.zeros(6, 6, dtype=torch.bool))


def test_positives_from_groups_matches_a_loop_over_pairs():
    from clipkit.loss import positives_from_groups

    images, texts = ["star", "moon", "star", 3], ["moon", "star", 3, "sun"]
    expected = torch.tensor([[a == b for b in texts] for a in images])
    assert torch.equal(positives_from_groups(images, texts), expected)
    ids = torch.tensor([0, 1, 0, 2])
    assert torch.equal(positives_from_groups(ids), ids[:, None] == ids[None, :])
