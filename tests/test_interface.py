"""The one model interface: MiniCLIP, the open_clip wrapper and a LiT-like model behave alike through it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from clipkit.config import VisionConfig, config_from_preset
from clipkit.data.transforms import build_transform, images_to_model_input, normalize_images, resize_images
from clipkit.image_encoder import build_image_encoder
from clipkit.interface import MAX_LOGIT_SCALE, CLIPBase, embed_images, embed_texts
from clipkit.model import MiniCLIP
from clipkit.tokenizer import WordTokenizer

CAPTIONS = ["a red circle", "a blue square on the left", "circle"]
WORDS = ["a", "red", "blue", "circle", "square", "on", "the", "left"]


class TinyLiT(CLIPBase):
    """LiT in miniature: a frozen bag-of-words text tower and a trainable CNN image tower, written
    only against CLIPBase (nothing borrowed from MiniCLIP)."""

    def __init__(self, dim: int = 16):
        super().__init__()
        self.tokenizer = WordTokenizer(WORDS, context_length=8)
        self.config = VisionConfig(kind="cnn", image_size=24, cnn_channels=(8, 16))
        self.visual = build_image_encoder(self.config, dim)
        self.words = nn.Embedding(self.tokenizer.vocab_size, dim).requires_grad_(False)  # frozen
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    image_size = 24
    image_mean = (0.5, 0.4, 0.3)
    image_std = (0.2, 0.25, 0.3)
    embed_dim = 16

    def encode_image(self, images, normalize=False):
        features = self.visual(images)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens, normalize=False):
        mask = (tokens != 0).unsqueeze(-1).float()  # [B, L] -> [B, L, 1]
        features = (self.words(tokens) * mask).sum(1) / mask.sum(1)  # [B, D]
        return F.normalize(features, dim=-1) if normalize else features


def miniclip() -> CLIPBase:
    torch.manual_seed(0)
    tokenizer = WordTokenizer(WORDS, context_length=8)
    return MiniCLIP(config_from_preset("tiny-cpu", tokenizer=tokenizer))


def open_clip_model(request) -> CLIPBase:
    from clipkit.pretrained import load_open_clip

    # asked for only here, so that without open_clip only this case skips
    name = request.getfixturevalue("tiny_open_clip")
    torch.manual_seed(0)
    return load_open_clip(name, pretrained=None)


def tiny_lit() -> CLIPBase:
    torch.manual_seed(0)
    return TinyLiT()


@pytest.fixture(params=["miniclip", "open_clip", "lit-like"])
def model(request) -> CLIPBase:
    build = {"miniclip": miniclip, "lit-like": tiny_lit, "open_clip": lambda: open_clip_model(request)}
    return build[request.param]()


def _uint8(n: int, size: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_forward_is_the_scaled_cosine_similarity_both_ways(model):
    model.eval()
    pixels = model.to_model_input(_uint8(2))
    tokens = model.tokenizer(CAPTIONS)
    logits_per_image, logits_per_text = model(pixels, tokens)
    images = model.encode_image(pixels)
    texts = model.encode_text(tokens)
    by_hand = model.logit_scale.exp() * (images / images.norm(dim=-1, keepdim=True)) @ (texts / texts.norm(dim=-1, keepdim=True)).T
    torch.testing.assert_close(logits_per_image, by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(logits_per_text, by_hand.T)
    assert logits_per_image.shape == (2, len(CAPTIONS))
    torch.testing.assert_close(model.similarity_logits(F.normalize(images, dim=-1), F.normalize(texts, dim=-1)), by_hand,
                               rtol=1e-5, atol=1e-5)


def test_the_scale_is_clamped_when_read_and_when_stored(model):
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # exp(10) ~ 22026, far past the cap
    assert float(model.logit_scale_exp().detach()) == pytest.approx(math.exp(model.max_logit_scale), rel=1e-5)
    assert model.max_logit_scale == pytest.approx(MAX_LOGIT_SCALE)
    model.clamp_logit_scale_()
    assert float(model.logit_scale.detach()) == pytest.approx(model.max_logit_scale)
    with torch.no_grad():
        model.logit_scale.fill_(-3.0)
    model.clamp_logit_scale_()
    assert float(model.logit_scale.detach()) == 0.0


def test_model_input_from_pil_uint8_and_float_is_what_the_transforms_make(model):
    images = _uint8(3, size=40, seed=1)
    pictures = [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in images]  # [3, H, W] -> [H, W, 3]
    size, mean, std = model.image_size, model.image_mean, model.image_std
    from_uint8 = model.to_model_input(images)
    torch.testing.assert_close(from_uint8, images_to_model_input(images, size, mean, std))
    floats = images.float() / 255
    torch.testing.assert_close(model.to_model_input(floats), normalize_images(resize_images(floats, size), mean, std))
    torch.testing.assert_close(model.to_model_input(floats), from_uint8, rtol=0, atol=1e-5)
    torch.testing.assert_close(model.to_model_input(pictures), torch.stack([model.preprocess(p) for p in pictures]))
    torch.testing.assert_close(model.to_model_input(images[0]), from_uint8[:1])  # one image becomes a batch of one
    assert from_uint8.shape == (3, 3, size, size) and from_uint8.device == model.device
    with pytest.raises(TypeError, match="uint8 or float"):
        model.to_model_input(images.long())


def test_clipkit_models_preprocess_with_clipkits_transform():
    for model in (miniclip(), tiny_lit()):
        picture = Image.fromarray(np.asarray(_uint8(1)[0].permute(1, 2, 0)))  # [3, H, W] -> [H, W, 3]
        expected = build_transform(model.image_size, model.image_mean, model.image_std)(picture)
        torch.testing.assert_close(model.preprocess(picture), expected)


@pytest.mark.parametrize("start_training", [True, False])
def test_evaluating_runs_without_grad_in_eval_mode_and_restores_the_mode(model, start_training):
    model.train(start_training)
    with model.evaluating() as inside:
        assert inside is model and not model.training and not torch.is_grad_enabled()
        assert not any(module.training for module in model.modules())
    assert model.training == start_training and torch.is_grad_enabled()
    with pytest.raises(RuntimeError, match="boom"), model.evaluating():
        raise RuntimeError("boom")
    assert model.training == start_training and torch.is_grad_enabled()


def test_embeddings_are_the_normalised_encodings_in_any_batch_size(model):
    model.train()  # embed_* evaluate in eval mode whatever the caller's mode, and give it back
    images = _uint8(5, seed=2)
    embedded = embed_images(model, images, batch_size=2)
    with model.evaluating():
        direct = F.normalize(model.encode_image(model.to_model_input(images)), dim=-1)
        texts = F.normalize(model.encode_text(model.tokenizer(CAPTIONS).to(model.device)), dim=-1)
    torch.testing.assert_close(embedded, direct, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(embed_texts(model, CAPTIONS, batch_size=2), texts, rtol=1e-4, atol=1e-5)
    assert embed_texts(model, CAPTIONS[0]).shape == (1, model.embed_dim)
    assert embed_images(model, images[:0]).shape == (0, model.embed_dim)
    assert model.training and not embedded.requires_grad


def test_describe_is_the_config_as_json_for_configured_models(tiny_word_clip):
    import json

    assert tiny_word_clip.describe() == json.loads(json.dumps(tiny_word_clip.config.to_dict()))
    assert tiny_word_clip.metadata is None or isinstance(tiny_word_clip.metadata, dict)
