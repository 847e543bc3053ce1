"""MiniCLIP: configs and presets, the forward contract, the temperature, embedding helpers, checkpoints."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clipkit.config import PRESETS, CLIPConfig, config_diff, config_from_preset
from clipkit.interface import embed_images, embed_texts
from clipkit.model import MiniCLIP, count_parameters, load_model, read_checkpoint_config, save_model
from clipkit.tokenizer import WordTokenizer

CAPTIONS = ["a red circle", "a blue square on the left", "a small green star", "a red square"]


@pytest.fixture(scope="module")
def tokenizer() -> WordTokenizer:
    return WordTokenizer.fit(CAPTIONS, context_length=12)


@pytest.fixture(params=["tiny-cpu", "tiny-cpu-vit"])
def model(request, tokenizer) -> MiniCLIP:
    torch.manual_seed(0)
    config = config_from_preset(request.param, tokenizer=tokenizer, embed_dim=32, text={"width": 32, "heads": 2})
    return MiniCLIP(config).eval()


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_plain_data_and_configs_round_trip_through_json(name):
    json.dumps(PRESETS[name])  # plain data
    config = config_from_preset(name)
    assert CLIPConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config_diff(config, config) == []


def test_tiny_preset_is_laptop_sized_and_overrides_merge(tokenizer):
    config = config_from_preset("tiny-cpu", tokenizer=tokenizer)
    assert 2e5 < count_parameters(MiniCLIP(config)) < 2e6
    assert config.text.vocab_size == tokenizer.vocab_size and config.text.eot_token_id == tokenizer.eot_token_id
    changed = config_from_preset("tiny-cpu", tokenizer=tokenizer, embed_dim=64, text={"layers": 1})
    assert changed.text.width == config.text.width  # untouched fields survive a nested override
    assert config_diff(config, changed) == ["embed_dim", "text.layers"]


def test_config_errors_name_the_fix():
    with pytest.raises(KeyError, match="tiny-cpu"):
        config_from_preset("tiny")
    with pytest.raises(ValueError, match="unknown text field"):
        CLIPConfig.from_dict({"text": {"widht": 3}})


def test_forward_is_the_scaled_cosine_similarity_both_ways(model, tokenizer):
    pixels = torch.randn(4, 3, 32, 32)
    tokens = tokenizer(CAPTIONS)
    logits_per_image, logits_per_text = model(pixels, tokens)
    image = F.normalize(model.encode_image(pixels), dim=-1)
    text = model.encode_text(tokens, normalize=True)
    torch.testing.assert_close(logits_per_image, (1 / 0.07) * image @ text.T, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_per_text, logits_per_image.T)
    assert logits_per_image.shape == (4, 4)


def test_logit_scale_is_a_log_initialised_at_one_over_0_07_and_clamped_at_100(model, tokenizer):
    assert math.isclose(model.logit_scale.item(), math.log(1 / 0.07), rel_tol=1e-6)
    pixels, tokens = torch.randn(2, 3, 32, 32), tokenizer(CAPTIONS[:2])
    with torch.no_grad():
        model.logit_scale.fill_(10.0)  # e^10, far past the cap
    logits, _ = model(pixels, tokens)
    cosine = model.encode_image(pixels, normalize=True) @ model.encode_text(tokens, normalize=True).T
    torch.testing.assert_close(logits, 100 * cosine, atol=1e-4, rtol=1e-5)
    model.clamp_logit_scale_()
    assert math.isclose(model.logit_scale.item(), math.log(100), rel_tol=1e-6)


def test_model_offers_the_clipkit_model_interface(model):
    assert model.image_size == 32 and len(model.image_mean) == 3 and len(model.image_std) == 3
    assert model.preprocess(Image.new("RGB", (50, 40))).shape == (3, 32, 32)
    assert model.tokenizer is not None and model.config.tokenizer == model.tokenizer.to_dict()


def test_a_tokenizer_that_does_not_fit_is_refused(tokenizer):
    bigger = WordTokenizer.fit(CAPTIONS + ["a purple hexagon above a yellow heart"], context_length=12)
    with pytest.raises(ValueError, match="config_from_preset"):
        MiniCLIP(config_from_preset("tiny-cpu", tokenizer=tokenizer), tokenizer=bigger)


def test_embed_texts_batches_tokenizes_and_normalises(model):
    expected = model.encode_text(model.tokenizer(CAPTIONS), normalize=True)
    model.train()
    embedded = embed_texts(model, CAPTIONS, batch_size=3)
    assert model.training  # the caller's mode is restored
    torch.testing.assert_close(embedded, expected, atol=1e-6, rtol=1e-5)


def test_embed_images_takes_uint8_float_and_pil_images_alike(model):
    batch = images(5)
    from_uint8 = embed_images(model, batch, batch_size=2)
    from_float = embed_images(model, batch.float() / 255)
    from_pil = embed_images(model, [Image.fromarray(image.permute(1, 2, 0).numpy()) for image in batch])
    torch.testing.assert_close(from_float, from_uint8, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_pil, from_uint8, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_uint8.norm(dim=-1), torch.ones(5))
    big = embed_images(model, images(2, size=64))  # resized to the model's 32 px
    assert big.shape == (2, model.config.embed_dim)


def test_save_and_load_round_trip_with_tokenizer_and_metadata(model, tmp_path):
    folder = save_model(model, tmp_path / "ckpt", metadata={"data": "shapes", "steps": 3})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]  # no temp files left
    loaded = load_model(folder)
    assert config_diff(loaded.config, model.config) == []
    assert loaded.metadata == {"data": "shapes", "steps": 3}
    assert read_checkpoint_config(folder)[1]["steps"] == 3
    assert loaded.tokenizer.to_dict() == model.tokenizer.to_dict()
    pixels = torch.randn(2, 3, 32, 32)
    tokens = model.tokenizer(CAPTIONS[:2])
    for ours, theirs in zip(loaded(pixels, tokens), model(pixels, tokens)):
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_loading_weights_of_another_config_names_the_mismatched_tensors(model, tmp_path):
    save_model(model, tmp_path)
    document = json.loads((tmp_path / "config.json").read_text())
    document["config"]["text"]["layers"] += 1
    document["config"]["embed_dim"] = 48
    (tmp_path / "config.json").write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"missing \['text\.transformer\.blocks\.2\..*text\.projection\.weight"):
        load_model(tmp_path)


def test_loading_something_else_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_model"):
        load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a MiniCLIP checkpoint"):
        load_model(tmp_path)


def test_embedding_helpers_take_one_item_or_none_and_need_a_tokenizer(model):
    one = embed_images(model, images(1)[0])  # a single [3, H, W] image
    torch.testing.assert_close(one, embed_images(model, images(1)))
    assert embed_texts(model, []).shape == (0, model.config.embed_dim)
    assert embed_texts(model, CAPTIONS[0]).shape == (1, model.config.embed_dim)
    model.tokenizer = None
    with pytest.raises(ValueError, match="no tokenizer"):
        embed_texts(model, CAPTIONS)
