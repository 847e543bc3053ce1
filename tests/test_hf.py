"""transformers CLIP <-> clipkit: equal embeddings both ways, HF's own tokenization and pooling, refusals by name."""

import pytest
import torch

transformers = pytest.importorskip("transformers")

from clipkit.config import config_from_preset  # noqa: E402
from clipkit.hf import (  # noqa: E402
    HFCLIPModel,
    HFCLIPTokenizer,
    config_from_hf,
    hf_config_from_miniclip,
    hf_from_miniclip,
    load_hf_clip,
    miniclip_from_hf,
    save_hf,
    write_clip_tokenizer_files,
)
from clipkit.interface import embed_texts  # noqa: E402
from clipkit.model import MiniCLIP  # noqa: E402
from clipkit.tokenizer import OpenCLIPTokenizer, WordTokenizer  # noqa: E402

TOLERANCE = 1e-5
CAPTIONS = ["a photo of a cat", "Two RED circles, on the left!", "x", "naïve café   déjà-vu & <b>tags</b>", ""]
# Small configs carrying what the conversion must get right: QuickGELU with pooling at eos 49407
# (current configs), and exact GELU with eos_token_id 2 (configs before transformers' PR #24773,
# which pool at the largest id), a head width other than 64 and an MLP ratio other than 4.
SMALL = {
    "text_config": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                    "max_position_embeddings": 32},
    "vision_config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 128,
                      "image_size": 32, "patch_size": 8},
    "projection_dim": 24,
}
SMALL_LEGACY_GELU = {
    "text_config": {"hidden_size": 48, "num_hidden_layers": 1, "num_attention_heads": 3, "intermediate_size": 96,
                    "max_position_embeddings": 20, "hidden_act": "gelu", "eos_token_id": 2},
    "vision_config": {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64,
                      "image_size": 48, "patch_size": 16, "hidden_act": "gelu"},
    "projection_dim": 16,
}


def random_hf(config: dict, seed: int = 0):
    torch.manual_seed(seed)
    return transformers.CLIPModel(transformers.CLIPConfig(**config)).eval()


def hf_text(hf_model, tokens):
    return hf_model.get_text_features(input_ids=tokens).pooler_output


def hf_image(hf_model, images):
    return hf_model.get_image_features(pixel_values=images).pooler_output


def images_for(size: int, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))


def assert_same_embeddings(hf_model, mini: MiniCLIP) -> None:
    tokens = OpenCLIPTokenizer(mini.config.text.context_length)(CAPTIONS[:3])
    images = images_for(mini.image_size)
    with torch.no_grad():
        torch.testing.assert_close(mini.encode_image(images), hf_image(hf_model, images), atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(mini.encode_text(tokens), hf_text(hf_model, tokens), atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("config", [SMALL, SMALL_LEGACY_GELU], ids=["quick_gelu-eos", "gelu-legacy-argmax"])
def test_small_configs_convert_both_ways(config):
    hf_model = random_hf(config)
    mini = miniclip_from_hf(hf_model).eval()
    assert mini.config.text.pool == ("argmax" if config["text_config"].get("eos_token_id") == 2 else "eot")
    assert_same_embeddings(hf_model, mini)
    back = hf_from_miniclip(mini).eval()
    assert_same_embeddings(back, mini)
    assert torch.equal(back.logit_scale, hf_model.logit_scale)


@pytest.mark.slow
def test_vit_b_32_shape_converts_both_ways():
    hf_model = random_hf({})  # transformers' defaults are openai/clip-vit-base-patch32's shape
    mini = miniclip_from_hf(hf_model).eval()
    assert (mini.config.vision.width, mini.config.vision.layers, mini.config.embed_dim) == (768, 12, 512)
    assert sum(p.numel() for p in mini.parameters()) == sum(p.numel() for p in hf_model.parameters())
    assert_same_embeddings(hf_model, mini)
    assert_same_embeddings(hf_from_miniclip(mini).eval(), mini)


def test_hf_weights_reach_open_clip_through_miniclip():
    pytest.importorskip("open_clip")
    from clipkit.interop import openclip_from_miniclip

    hf_model = random_hf(SMALL)
    openclip_model = openclip_from_miniclip(miniclip_from_hf(hf_model)).eval()
    tokens = OpenCLIPTokenizer(32)(CAPTIONS[:3])
    with torch.no_grad():
        torch.testing.assert_close(openclip_model.encode_text(tokens), hf_text(hf_model, tokens), atol=TOLERANCE, rtol=0)
        images = images_for(32)
        torch.testing.assert_close(openclip_model.encode_image(images), hf_image(hf_model, images), atol=TOLERANCE, rtol=0)


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    """A random CLIPModel saved by transformers itself, with tokenizer files built from open_clip's BPE."""
    folder = tmp_path_factory.mktemp("hf-clip")
    hf_model = random_hf(SMALL)
    hf_model.save_pretrained(folder)
    write_clip_tokenizer_files(folder, context_length=32)
    return folder, hf_model


def test_tokenizer_files_give_hf_the_ids_open_clip_gives(hf_folder):
    folder, _ = hf_folder
    hf_tokenizer = transformers.CLIPTokenizer.from_pretrained(folder)
    ours = OpenCLIPTokenizer(32)(CAPTIONS)
    theirs = hf_tokenizer(CAPTIONS, padding="max_length", max_length=32, return_tensors="pt")
    mask = theirs["attention_mask"].bool()
    assert torch.equal(ours[mask], theirs["input_ids"][mask])  # same ids wherever HF has content or specials
    assert bool((ours[~mask] == 0).all()) and bool((theirs["input_ids"][~mask] == hf_tokenizer.eos_token_id).all())


def test_a_saved_folder_loads_with_hfs_tokenizer_and_pooling(hf_folder):
    folder, hf_model = hf_folder
    model = load_hf_clip(folder)
    assert isinstance(model, HFCLIPModel) and isinstance(model.tokenizer, HFCLIPTokenizer) and not model.training
    assert (model.image_size, model.embed_dim, model.source) == (32, 24, str(folder))
    hf_tokenizer = transformers.CLIPTokenizer.from_pretrained(folder)
    theirs = hf_tokenizer(CAPTIONS, padding="max_length", max_length=32, return_tensors="pt")
    with torch.no_grad():  # HF's own path: its tokenizer, its padding with the end token, its attention mask
        expected = hf_model.get_text_features(**theirs).pooler_output
    torch.testing.assert_close(embed_texts(model, CAPTIONS), torch.nn.functional.normalize(expected, dim=-1), atol=TOLERANCE, rtol=0)
    images = images_for(32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), hf_image(hf_model, images), atol=TOLERANCE, rtol=0)
    assert model.tokenizer.decode(model.tokenizer(["a photo of a cat"])[0]) == "a photo of a cat"


def test_save_hf_writes_a_folder_that_loads_back_to_the_same_model(tmp_path):
    torch.manual_seed(0)
    mini = MiniCLIP(config_from_hf(transformers.CLIPConfig(**SMALL), image_mean=(0.5, 0.5, 0.5), image_std=(0.25, 0.25, 0.25))).eval()
    loaded = load_hf_clip(save_hf(mini, tmp_path / "saved"))
    assert (loaded.image_mean, loaded.image_std) == ((0.5,) * 3, (0.25,) * 3)
    assert_same_embeddings(loaded.model, mini)
    round_trip = loaded.to_miniclip().eval()
    for name, tensor in mini.state_dict().items():
        assert torch.equal(round_trip.state_dict()[name], tensor), name


def test_offline_hub_id_fails_at_once_naming_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        load_hf_clip("openai/clip-vit-base-patch32-not-cached")
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_hf_clip("./no/such/folder")


@pytest.mark.parametrize("change, feature", [
    ({"text_config": {**SMALL["text_config"], "hidden_act": "gelu_new"}}, "hidden_act='gelu_new'"),
    ({"vision_config": {**SMALL["vision_config"], "layer_norm_eps": 1e-6}}, "layer_norm_eps=1e-06"),
    ({"vision_config": {**SMALL["vision_config"], "num_channels": 1}}, "num_channels=1"),
    ({"text_config": {**SMALL["text_config"], "eos_token_id": [7, 8]}}, "eos_token_id"),
])
def test_what_does_not_convert_is_refused_by_name(change, feature):
    with pytest.raises(ValueError, match=feature.replace("(", r"\(").replace("[", r"\[")):
        config_from_hf(transformers.CLIPConfig(**{**SMALL, **change}))


def test_other_families_and_cnn_towers_are_refused_by_name():
    siglip = transformers.SiglipConfig()
    with pytest.raises(ValueError, match="model_type 'siglip'"):
        config_from_hf(siglip)
    cnn = config_from_preset("tiny-cpu", tokenizer=WordTokenizer(["a"], context_length=8))
    with pytest.raises(ValueError, match="CNN"):
        hf_config_from_miniclip(cnn)


def test_the_wrapper_serves_what_only_conversion_refuses():
    """HFCLIPModel runs transformers' own code: an activation MiniCLIP lacks is served, and refused only on conversion."""
    hf_model = random_hf({**SMALL, "text_config": {**SMALL["text_config"], "hidden_act": "gelu_new"}})
    model = HFCLIPModel(hf_model, OpenCLIPTokenizer(32))
    tokens = model.tokenizer(CAPTIONS[:2])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), hf_text(hf_model, tokens), atol=0, rtol=0)
    with pytest.raises(ValueError, match="gelu_new"):
        model.to_miniclip()
    with pytest.raises(ValueError, match="model_type 'siglip'"):
        HFCLIPModel(transformers.SiglipModel(transformers.SiglipConfig(
            text_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32},
            vision_config={"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
                           "image_size": 16, "patch_size": 8})), OpenCLIPTokenizer(32))
