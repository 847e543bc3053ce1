"""One training step: schedule and decay groups, model input, the loss against one written by hand, LiT's text cache."""

import pytest
import torch
import torch.nn.functional as F

from clipkit.data.stream import Batch
from clipkit.data.transforms import augment_shapes_batch, images_to_model_input, normalize_images
from clipkit.lit import LiTModel
from clipkit.schedule import warmup_cosine
from clipkit.train import TrainConfig, batch_to_input, build_model, compute_loss, parameter_groups
from clipkit.train.step import FrozenTextCache

pytestmark = pytest.mark.usefixtures("one_thread")


def test_schedule_warms_up_then_follows_a_cosine_and_decay_skips_norms_biases_and_scale():
    assert warmup_cosine(0, 10, 110, 0.1) == pytest.approx(1e-3)
    assert warmup_cosine(10, 10, 110, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(60, 10, 110, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(110, 10, 110, 0.1) == pytest.approx(0.1)
    model, _ = build_model("ci")
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert "logit_scale" in exempt and all(p.ndim >= 2 for p in decay["params"])
    assert any(n.endswith(".bias") for n in exempt) and any("norm" in n or "bn" in n for n in exempt)
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def _hand_loss(logits: torch.Tensor, captions: list[str]) -> torch.Tensor:
    """Multi-positive CLIP loss written out: targets uniform over the equal captions, both directions."""
    same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float)  # [B, B]
    targets = same / same.sum(dim=1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets.T)) / 2


def test_the_step_loss_is_the_multi_positive_loss_written_by_hand():
    model, data = build_model("ci")
    batch = data.batch(16, seed=0, step=0)
    batch.captions[1] = batch.captions[0]  # a repeated caption: positives of each other's images
    batch.groups[1] = batch.groups[0]
    config = TrainConfig(batch_size=16, augment=False)
    images = batch_to_input(model, batch.images)
    out = compute_loss(model, batch, config, images)
    logits = model.logit_scale_exp() * (
        model.encode_image(images, normalize=True) @ model.encode_text(model.tokenizer(batch.captions), normalize=True).T
    )
    torch.testing.assert_close(out["loss"], _hand_loss(logits, batch.captions), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight", [1.0, 4.0])
def test_hard_negatives_are_extra_columns_of_the_image_to_text_softmax_weighted_as_copies(weight):
    """NegCLIP: each hard negative is a column no image picks; weight w counts it as w equal columns."""
    model, data = build_model("ci")
    batch = data.batch(16, seed=0, step=3, hard_negatives=True)
    assert batch.hard_negatives
    config = TrainConfig(batch_size=16, augment=False, hard_negatives=True)
    config.hard_negative_weight = weight
    images = batch_to_input(model, batch.images)
    out = compute_loss(model, batch, config, images)
    image_features = model.encode_image(images, normalize=True)
    captions = model.encode_text(model.tokenizer(batch.captions), normalize=True)
    # w copies of every negative column, written out: the softmax then counts each w times.
    copies = [model.encode_text(model.tokenizer(batch.hard_negatives), normalize=True)] * int(weight)
    logits = model.logit_scale_exp() * image_features @ torch.cat([captions, *copies]).T  # [B, B + w K]
    n = len(batch.captions)
    same = torch.tensor([[a == b for b in batch.groups] for a in batch.groups], dtype=torch.float)  # [B, B]
    targets = torch.cat([same, same.new_zeros(n, logits.shape[1] - n)], dim=1) / same.sum(dim=1, keepdim=True)
    by_hand = (F.cross_entropy(logits, targets) + F.cross_entropy(logits[:, :n].T, (same / same.sum(0)).T)) / 2
    torch.testing.assert_close(out["loss"], by_hand, rtol=1e-5, atol=1e-6)


def test_images_become_model_input_as_the_transforms_define_it():
    model, data = build_model("ci")
    images = data.batch(4, seed=0, step=0).images
    plain = images_to_model_input(images, model.image_size, model.image_mean, model.image_std)
    torch.testing.assert_close(batch_to_input(model, images), plain, rtol=0, atol=0)
    augmented = augment_shapes_batch(images.float() / 255, torch.Generator().manual_seed(5))
    expected = normalize_images(augmented, model.image_mean, model.image_std)
    torch.testing.assert_close(batch_to_input(model, images, augment_seed=5), expected, rtol=0, atol=0)


def test_a_frozen_text_tower_embeds_each_distinct_text_once_and_scores_as_encode_text():
    from lit_fakes import CAPTIONS, FakeSentenceModel, random_images, tiny_lit_config

    lit = LiTModel(tiny_lit_config(embed_dim=6), text_model=FakeSentenceModel())
    embedded = []
    forward = lit.text_model.forward

    def counting(features):
        embedded.append(len(features["input_ids"]))
        return forward(features)

    lit.text_model.forward = counting
    batch = Batch(random_images(8), CAPTIONS * 2, CAPTIONS * 2)
    config = TrainConfig(batch_size=8, augment=False)
    images = batch_to_input(lit, batch.images)
    cache = FrozenTextCache(lit)
    losses = [compute_loss(lit, batch, config, images, text_cache=cache)["loss"] for _ in range(3)]
    assert sum(embedded) == len(CAPTIONS)  # three steps, four distinct captions: each embedded once

    logits = lit.logit_scale_exp() * (
        lit.encode_image(images, normalize=True) @ lit.encode_text(lit.tokenizer(batch.captions), normalize=True).T
    )
    torch.testing.assert_close(losses[0], _hand_loss(logits, batch.captions), rtol=1e-5, atol=1e-6)
    losses[0].backward()
    assert lit.text_projection.weight.grad is not None and next(lit.visual.parameters()).grad is not None
