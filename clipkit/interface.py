"""The clipkit model interface: what every CLIP in clipkit offers, written once.

`MiniCLIP` (built from scratch), `OpenCLIPModel` (open_clip's models) and `LiTModel` (a frozen
sentence model as text tower) all derive from `CLIPBase`. A subclass provides the two towers and
the facts about its inputs; the base owns what must not differ between them:

- the temperature: `logit_scale` holds log(1/T) as openai/CLIP keeps it; `logit_scale_exp()` is
  the clamped scale every logit is multiplied by, and `clamp_logit_scale_()` keeps the stored log
  in [0, max_logit_scale] after an optimizer step;
- `forward(images, tokens) -> (logits_per_image, logits_per_text)`;
- `device`, `preprocess` (PIL -> normalised tensor), `to_model_input` (PIL list, uint8 tensor or
  float tensor in [0, 1] -> normalised model input on the model's device);
- `evaluating()`, a context that runs the model in eval mode without gradients and restores it.

`ConfiguredCLIP` is the base for models whose config holds those facts (MiniCLIP, LiT).
`embed_texts(model, texts)` and `embed_images(model, images)` turn raw captions and images into
L2-normalised embeddings in batches for any of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.data.transforms import build_transform, images_to_model_input, normalize_images, resize_images

# CLIP clamps its learnt inverse temperature at 100: beyond it the softmax is nearly a hard max.
MAX_LOGIT_SCALE = math.log(100)


class CLIPBase(nn.Module):
    """Base of every clipkit model. Subclasses set `tokenizer` and a `logit_scale` parameter, and
    implement `encode_image`, `encode_text`, `image_size`, `image_mean`, `image_std`, `embed_dim`."""

    tokenizer = None  # turns captions into token ids [B, L]; subclasses set their own
    # True when encode_text is a trainable head on a frozen text model (LiT): training then embeds
    # each caption with the frozen part once and caches it instead of running it every step.
    text_tower_frozen = False
    # What the checkpoint recorded beside the weights (training data, metrics); None when the model
    # was not loaded from a clipkit checkpoint. The loaders set it.
    metadata: dict | None = None

    # --- what a subclass provides ------------------------------------------------------------

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Model input [B, 3, S, S] -> image embeddings [B, D]."""
        raise NotImplementedError

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Token ids [B, L] -> text embeddings [B, D]."""
        raise NotImplementedError

    @property
    def image_size(self) -> int:
        raise NotImplementedError

    @property
    def image_mean(self) -> tuple[float, ...]:
        raise NotImplementedError

    @property
    def image_std(self) -> tuple[float, ...]:
        raise NotImplementedError

    @property
    def embed_dim(self) -> int:
        raise NotImplementedError

    @property
    def max_logit_scale(self) -> float:
        return MAX_LOGIT_SCALE

    def describe(self) -> dict:
        """The architecture as plain JSON data, for model cards and logs."""
        return {"model": type(self).__name__}

    # --- the temperature ---------------------------------------------------------------------

    def logit_scale_exp(self) -> torch.Tensor:
        """exp(logit_scale), clamped at exp(max_logit_scale): the inverse temperature of the logits.
        Clamped here too, so a scale an optimizer pushed past the cap still scores sanely."""
        return self.logit_scale.clamp(max=self.max_logit_scale).exp()

    def clamp_logit_scale_(self) -> None:
        """Keep the stored log scale in [0, max_logit_scale]: call after each optimizer step, as OpenAI did."""
        with torch.no_grad():
            self.logit_scale.clamp_(0, self.max_logit_scale)

    def similarity_logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Normalised features [B_images, D] and [B_texts, D] -> logits [B_images, B_texts]."""
        return (self.logit_scale_exp() * image_features) @ text_features.T

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits_per_image = self.similarity_logits(
            self.encode_image(images, normalize=True), self.encode_text(tokens, normalize=True)
        )  # [B_images, B_texts]
        return logits_per_image, logits_per_image.T

    # --- inputs ------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def preprocess(self):
        """PIL image -> normalised float tensor [3, S, S] for this model."""
        return build_transform(self.image_size, self.image_mean, self.image_std, train=False)

    def to_model_input(self, images) -> torch.Tensor:
        """A PIL list, a uint8 tensor [N, 3, H, W] or a float tensor in [0, 1] -> normalised
        [N, 3, S, S] on the model's device (float images stay differentiable: steering needs it)."""
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = images.unsqueeze(0)  # one image [3, H, W] -> a batch [1, 3, H, W]
        if not isinstance(images, torch.Tensor):
            preprocess = self.preprocess
            return torch.stack([preprocess(image) for image in images]).to(self.device)
        if images.dtype == torch.uint8:
            return images_to_model_input(images.to(self.device), self.image_size, self.image_mean, self.image_std)
        if not images.is_floating_point():
            raise TypeError(f"images must be uint8 or float in [0, 1], got {images.dtype}")
        return normalize_images(resize_images(images.to(self.device), self.image_size), self.image_mean, self.image_std)

    @contextmanager
    def evaluating(self) -> Iterator[CLIPBase]:
        """Eval mode without gradients for the block; the caller's mode comes back afterwards."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                yield self
        finally:
            self.train(was_training)


class ConfiguredCLIP(CLIPBase):
    """A `CLIPBase` whose input facts and scale cap come from its config: `self.config` holds
    `vision.image_size`, `image_mean`, `image_std` and `max_logit_scale` (MiniCLIP's `CLIPConfig`,
    LiT's `LiTConfig`, each with `to_dict()`), and whose image tower is `self.visual`, trained from
    scratch. Subclasses still say what `embed_dim` is and encode text their own way."""

    config = None  # the model's config dataclass; subclasses set it in __init__
    visual: nn.Module  # the image tower: model input [B, 3, S, S] -> [B, embed_dim]; subclasses build it

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Model input [B, 3, S, S] -> image embeddings [B, embed_dim]."""
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def image_mean(self) -> tuple[float, ...]:
        return tuple(self.config.image_mean)

    @property
    def image_std(self) -> tuple[float, ...]:
        return tuple(self.config.image_std)

    @property
    def max_logit_scale(self) -> float:
        return self.config.max_logit_scale

    def describe(self) -> dict:
        return self.config.to_dict()  # what config.json stores


def embed_texts(model: CLIPBase, texts: Sequence[str] | str, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised text embeddings [N, D] of raw captions, tokenized with `model.tokenizer`."""
    if isinstance(texts, str):
        texts = [texts]
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer: build it with MiniCLIP(config, tokenizer=...) or a config with a tokenizer spec")
    texts = list(texts)

    def encode(chunk):
        return model.encode_text(model.tokenizer(chunk).to(model.device), normalize=True)

    return _in_batches(model, texts, batch_size, encode)


def embed_images(model: CLIPBase, images, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised image embeddings [N, D] of a PIL list, a uint8 tensor [N, 3, H, W] or a float
    tensor in [0, 1], resized to the model's image size and normalised with its mean/std."""
    if isinstance(images, torch.Tensor) and images.ndim == 3:
        images = images.unsqueeze(0)  # one image [3, H, W] -> a batch [1, 3, H, W]

    def encode(chunk):
        return model.encode_image(model.to_model_input(chunk), normalize=True)

    return _in_batches(model, images, batch_size, encode)


def _in_batches(model: CLIPBase, items, batch_size: int, encode) -> torch.Tensor:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    with model.evaluating():
        chunks = [encode(items[start : start + batch_size]) for start in range(0, len(items), batch_size)]
    if not chunks:
        return torch.empty(0, model.embed_dim)
    return torch.cat(chunks)

