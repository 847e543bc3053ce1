"""One training step: images to model input, both towers, features gathered across processes, the
contrastive loss with its targets, then the optimizer update.

The step needs only the clipkit model interface (`clipkit.interface.CLIPBase`), so it trains
MiniCLIP and LiT alike. A model whose text tower is frozen (LiT) says so with `text_tower_frozen`;
its frozen text features never change, so the step takes them from a `FrozenTextCache` (each
distinct text is embedded once per run) and runs only the trainable head on them.
"""

from __future__ import annotations

import contextlib
import math
from functools import partial

import numpy as np
import torch
from torch import nn

from clipkit.data.stream import Batch
from clipkit.loss import clip_loss_with_positives, positives_from_groups
from clipkit.schedule import warmup_cosine
from clipkit.train.config import TrainConfig
from clipkit.train.ddp import average_gradients, gather_with_grad, world

# ---------------------------------------------------------------------------------------------
# The towers and the text they read


class FrozenTextCache:
    """A frozen text tower's features [T, text_dim] of texts, each distinct text computed once."""

    def __init__(self, model):
        self.model = model
        self.rows: dict[str, int] = {}  # text -> its row of `table`
        self.table: torch.Tensor | None = None  # [U, text_dim], one row per distinct text seen so far

    def __call__(self, texts: list[str]) -> torch.Tensor:
        missing = [text for text in dict.fromkeys(texts) if text not in self.rows]
        if missing:
            with torch.autocast(self.model.device.type, enabled=False):  # cached features stay fp32
                new = self.model.frozen_text_features(missing)
            self.table = new if self.table is None else torch.cat([self.table, new])
            self.rows.update({text: len(self.rows) + i for i, text in enumerate(missing)})
        return self.table[torch.tensor([self.rows[text] for text in texts], device=self.table.device)]


class Towers(nn.Module):
    """Both towers in one forward, so `torch.compile` sees (and fuses) the whole step. The text
    side reads token ids, or cached frozen features when the model's text tower is frozen."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.frozen_text = model.text_tower_frozen

    def forward(self, images: torch.Tensor, texts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        encode_text = self.model.project_text if self.frozen_text else self.model.encode_text
        return self.model.encode_image(images, normalize=True), encode_text(texts, normalize=True)


def batch_to_input(model, images: torch.Tensor, augment_seed: int | None = None) -> torch.Tensor:
    """uint8 images [B, 3, S, S] -> normalised model input on the model's device. With a seed they
    are augmented first, as floats in [0, 1] (shifts, brightness, noise), then normalised."""
    from clipkit.data.transforms import augment_shapes_batch, resize_images

    if augment_seed is None:
        return model.to_model_input(images)
    x = resize_images(images.to(model.device, non_blocking=True).float() / 255, model.image_size)
    return model.to_model_input(augment_shapes_batch(x, torch.Generator().manual_seed(augment_seed)))


def step_seed(*numbers: int) -> int:
    """A seed from several integers (numpy's SeedSequence), so (seed, step, rank) never collide."""
    return int(np.random.SeedSequence(list(numbers)).generate_state(1, dtype=np.uint64)[0] % 2**63)


# ---------------------------------------------------------------------------------------------
# The loss and its targets


def compute_loss(
    model, batch: Batch, config: TrainConfig, images: torch.Tensor, towers=None, text_cache: FrozenTextCache | None = None
) -> dict[str, torch.Tensor]:
    """The loss of a global batch, seen from one process: it encodes its share of the images
    (`images`, already model input) and captions, gathers every process's features with gradients,
    and scores the whole batch. Returns {"loss", "accuracy", "logit_scale"}.

    Columns: the B captions, then K hard negatives (true of no image; `hard_negative_weight` w weighs
    each as w columns, NegCLIP's being w = 1). With `attribute_weight`, a
    second loss matches images to single-attribute texts ("something red") that are true of them."""
    rank, size = world()
    towers = towers if towers is not None else Towers(model)
    share = len(batch.captions) // size
    mine = slice(rank * share, (rank + 1) * share)
    texts = batch.captions[mine] + batch.hard_negatives + batch.attribute_texts
    device = images.device
    if model.text_tower_frozen:
        text_input = (text_cache or FrozenTextCache(model))(texts)  # [T, text_dim]
    else:
        text_input = model.tokenizer(texts).to(device)  # [T, L]
    image_features, text_features = towers(images, text_input)
    image_features, text_features = image_features.float(), text_features.float()
    captions = gather_with_grad(text_features[:share])
    image_features = gather_with_grad(image_features)
    negatives = text_features[share : share + len(batch.hard_negatives)]
    attributes = text_features[share + len(batch.hard_negatives) :]

    scale = model.logit_scale_exp()
    logits = scale * image_features @ torch.cat([captions, negatives]).T  # [B, B + K]
    weight = config.hard_negative_weight
    if len(negatives) and weight != 1.0:
        # NegCLIP's negatives compete in each image's softmax; weight w counts each as w copies of
        # itself (its logit + ln w), so a caption read as a bag of words costs ln(1 + w), not ln 2.
        logits = torch.cat([logits[:, : len(captions)], logits[:, len(captions) :] + math.log(weight)], dim=1)
    n = len(batch.captions)
    if config.loss == "clip":
        positives = torch.eye(n, dtype=torch.bool, device=device)
    else:
        positives = positives_from_groups(batch.groups, device=device)  # [B, B]
    positives = torch.cat([positives, positives.new_zeros(n, len(negatives))], dim=1)  # [B, B + K]
    loss = clip_loss_with_positives(logits, positives)
    if len(attributes) and config.attribute_weight > 0:
        truth = batch.attribute_positives.to(device)
        described = truth.any(dim=1)  # images other sources gave (Fashion-MNIST) have no attributes
        attribute_logits = scale * image_features[described] @ attributes.T  # [B', K]
        loss = loss + config.attribute_weight * clip_loss_with_positives(attribute_logits, truth[described])
    with torch.no_grad():
        accuracy = positives[torch.arange(n, device=device), logits.argmax(dim=1)].float().mean()
    return {"loss": loss, "accuracy": accuracy, "logit_scale": model.logit_scale.detach()}


def autocast(device: torch.device, precision: str):
    """bf16 autocast where asked (or on CUDA under "auto"); fp32 otherwise."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# ---------------------------------------------------------------------------------------------
# The update: AdamW, warmup then cosine, clipping, the logit-scale clamp


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Decay weight matrices only: decaying norms' gains, biases or the temperature pulls them
    towards 0, which is not a simpler model, just a worse one."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        exempt = parameter.ndim < 2 or "logit_scale" in name or "norm" in name or name.endswith(".bias")
        (no_decay if exempt else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, config: TrainConfig):
    """AdamW over `parameter_groups` and its `clipkit.schedule.warmup_cosine` LambdaLR."""
    optimizer = torch.optim.AdamW(
        parameter_groups(model, config.weight_decay), lr=config.lr, betas=config.betas, eps=config.eps
    )
    schedule = partial(warmup_cosine, warmup_steps=config.warmup_steps, total_steps=config.steps,
                       min_ratio=config.min_lr_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def update(model, optimizer, scheduler, loss: torch.Tensor, grad_clip: float) -> None:
    """Backward, average gradients over processes, clip, step the optimizer and the schedule, clamp the scale."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    average_gradients(model)
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    scheduler.step()
    model.clamp_logit_scale_()
