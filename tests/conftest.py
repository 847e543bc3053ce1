"""Shared test set-up: offline hubs, quiet gradio, and the gpu marker."""

import os

# Set before anything imports huggingface_hub or gradio: an online lookup of a
# pretrained tag takes ~47 s to fail here, and gradio phones home on import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="module")
def world32():
    """The shapes world at 32 px."""
    from clipkit.data import ShapesConfig, ShapesWorld

    return ShapesWorld(ShapesConfig(image_size=32))


@pytest.fixture(scope="module")
def tiny_word_clip(world32):
    """A random-init MiniCLIP of a few thousand weights with a word tokenizer fitted on the shapes world."""
    import torch

    from clipkit.model import MiniCLIP, config_from_preset
    from clipkit.tokenizer import WordTokenizer

    torch.manual_seed(0)
    tokenizer = WordTokenizer.fit(world32.sample(500, seed=1).captions, context_length=24)
    config = config_from_preset(
        "tiny-cpu", tokenizer=tokenizer, embed_dim=32,
        vision={"cnn_channels": [8, 16]}, text={"width": 32, "layers": 1, "heads": 2},
    )
    return MiniCLIP(config).eval()
