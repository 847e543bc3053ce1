"""open_clip <-> MiniCLIP conversion: equal embeddings both ways on random-init open_clip models."""

import pytest
import torch
from torch import nn

from clipkit.interop import (
    config_from_openclip,
    load_openclip_checkpoint,
    miniclip_from_openclip,
    openclip_from_miniclip,
    openclip_model_config,
)
from clipkit.config import config_from_preset
from clipkit.model import MiniCLIP, count_parameters

open_clip = pytest.importorskip("open_clip")

TOLERANCE = 1e-5
# Small open_clip configs with the features the conversion must carry: QuickGELU, a head width
# other than 64, mlp_ratio, and (second) pooling at an explicit end-of-text id that is not the largest.
SMALL_QUICKGELU = {
    "embed_dim": 48,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 96, "layers": 2, "head_width": 32, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 20, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
SMALL_EOS = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 100, "width": 32, "heads": 4, "layers": 3, "pool_type": "eos", "eos_id": 7},
}


def tokens_for(openclip_model: nn.Module, batch: int = 3) -> torch.Tensor:
    context, vocab = openclip_model.positional_embedding.shape[0], openclip_model.vocab_size
    if vocab == 49408:
        return open_clip.tokenize(["a photo of a cat", "two red circles on the left", "x"][:batch], context_length=context)
    eos = openclip_model.text_eos_id
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(eos + 1, vocab, (batch, context), generator=generator)  # larger ids than eos on purpose
    for row in range(batch):
        tokens[row, 3 + row] = eos
        tokens[row, 4 + row :] = 0
    return tokens


def assert_same_embeddings(openclip_model: nn.Module, mini: MiniCLIP, batch: int = 2) -> None:
    size = mini.image_size
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    tokens = tokens_for(openclip_model, batch)
    with torch.no_grad():
        torch.testing.assert_close(mini.encode_image(images), openclip_model.encode_image(images), atol=TOLERANCE, rtol=0)
        torch.testing.assert_close(mini.encode_text(tokens), openclip_model.encode_text(tokens), atol=TOLERANCE, rtol=0)


def random_openclip(cfg, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = open_clip.create_model(cfg) if isinstance(cfg, str) else open_clip.model.CLIP(**cfg)
    return model.eval()


@pytest.fixture(scope="module")
def vit_b_32() -> nn.Module:
    return random_openclip("ViT-B-32")


@pytest.fixture(scope="module")
def vit_b_32_mini(vit_b_32) -> MiniCLIP:
    return miniclip_from_openclip(vit_b_32).eval()


def test_vit_b_32_converts_to_miniclip_with_equal_embeddings_and_parameter_count(vit_b_32, vit_b_32_mini):
    mini = vit_b_32_mini
    with torch.device("meta"):  # shapes only: no time spent initialising 151M weights
        from_preset = MiniCLIP(config_from_preset("ViT-B-32"))
    assert count_parameters(mini) == count_parameters(vit_b_32) == count_parameters(from_preset)
    assert mini.config == config_from_openclip("ViT-B-32") == config_from_preset("ViT-B-32")
    assert_same_embeddings(vit_b_32, mini, batch=1)
    texts = ["a photo of a dog", "a diagram"]  # the converted model carries open_clip's tokenizer
    assert torch.equal(mini.tokenizer(texts), open_clip.tokenize(texts))


def test_vit_b_32_miniclip_converts_to_open_clip_with_equal_embeddings(vit_b_32_mini):
    mini = vit_b_32_mini
    openclip_model = openclip_from_miniclip(mini).eval()
    assert count_parameters(openclip_model) == count_parameters(mini)
    assert_same_embeddings(openclip_model, mini, batch=1)


@pytest.mark.parametrize("cfg", [SMALL_QUICKGELU, SMALL_EOS], ids=["quickgelu", "eos"])
def test_small_configs_convert_both_ways_exactly(cfg):
    openclip_model = random_openclip(cfg)
    mini = miniclip_from_openclip(openclip_model).eval()
    assert_same_embeddings(openclip_model, mini, batch=3)
    assert mini.logit_scale.item() == openclip_model.logit_scale.item()
    back = openclip_from_miniclip(mini).eval()
    assert back.state_dict().keys() == openclip_model.state_dict().keys()
    for name, tensor in openclip_model.state_dict().items():
        assert torch.equal(back.state_dict()[name], tensor), name
    assert openclip_model_config(mini.config)["text_cfg"].get("pool_type") == cfg["text_cfg"].get("pool_type", "argmax")


def test_preprocessing_statistics_travel_with_the_weights():
    openclip_model = random_openclip(SMALL_EOS)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    open_clip.set_model_preprocess_cfg(openclip_model, {**open_clip.get_model_preprocess_cfg(openclip_model), "mean": mean, "std": std})
    mini = miniclip_from_openclip(openclip_model)
    assert (mini.image_mean, mini.image_std) == (mean, std)
    assert open_clip.get_model_preprocess_cfg(openclip_from_miniclip(mini))["mean"] == mean


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_load_openclip_checkpoint_from_a_local_state_dict(tmp_path, suffix):
    openclip_model = random_openclip(SMALL_QUICKGELU, seed=3)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save(openclip_model.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in openclip_model.state_dict().items()}, str(path))
    mini = load_openclip_checkpoint(path, SMALL_QUICKGELU)
    assert_same_embeddings(openclip_model, mini)


class _Holder(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, OpenAI shipped it anyway
def test_load_openclip_checkpoint_reads_an_openai_style_torchscript_archive(tmp_path):
    # OpenAI released TorchScript archives holding the weights under open_clip's names; build one.
    cfg = {**SMALL_QUICKGELU, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 128, "layers": 1},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2}}
    openclip_model = random_openclip(cfg)
    root = _Holder()
    for name, tensor in openclip_model.state_dict().items():
        *path, leaf = name.split(".")
        module = root
        for part in path:
            if not hasattr(module, part):
                module.add_module(part, _Holder())
            module = getattr(module, part)
        module.register_buffer(leaf, tensor.clone())
    torch.jit.script(root).save(str(tmp_path / "ViT-tiny.pt"))
    mini = load_openclip_checkpoint(tmp_path / "ViT-tiny.pt")
    assert mini.config.vision.act == mini.config.text.act == "quick_gelu"
    # open_clip stores OpenAI's weights as float16 on the way in, as OpenAI released them.
    reference = open_clip.load_openai_model(str(tmp_path / "ViT-tiny.pt"), precision="fp32", device="cpu").eval()
    assert_same_embeddings(reference, mini)


def test_what_does_not_convert_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="ModifiedResNet"):
        config_from_openclip("RN50")
    with pytest.raises(ValueError, match="ls_init_value"):
        config_from_openclip({**SMALL_EOS, "vision_cfg": {**SMALL_EOS["vision_cfg"], "ls_init_value": 0.1}})
    with pytest.raises(ValueError, match="init_logit_bias|custom_text"):
        config_from_openclip("ViT-B-16-SigLIP")
    with pytest.raises(ValueError, match="'cnn' image tower"):
        openclip_from_miniclip(MiniCLIP(config_from_preset("tiny-cpu")))
    with pytest.raises(ValueError, match="one activation"):
        openclip_model_config(config_from_preset("tiny-cpu-vit", text={"act": "quick_gelu"}))
    with pytest.raises(FileNotFoundError, match="download"):
        load_openclip_checkpoint(tmp_path / "missing.pt")
