"""Shared test set-up: offline hubs, quiet gradio, headless matplotlib in-process, the gpu marker, and the
helpers several test files use (tests import the plain ones: `from conftest import free_port`)."""

import os

# Set before anything imports huggingface_hub or gradio: an online lookup of a
# pretrained tag takes ~47 s to fail here, and gradio phones home on import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import json  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402

import matplotlib  # noqa: E402
import pytest  # noqa: E402

# Tests draw headless in this process only. Never through MPLBACKEND: notebook kernels inherit the
# environment, and agg there would keep every figure out of the executed notebooks.
matplotlib.use("agg")


# Debian's chromium, never a browser Playwright downloads; these flags work headless as root, offline.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium (Debian's, driven by Playwright); skips where either is missing."""
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("needs Debian's chromium (apt install chromium, or `make system-test`)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


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

    from clipkit.config import config_from_preset
    from clipkit.model import MiniCLIP
    from clipkit.tokenizer import WordTokenizer

    torch.manual_seed(0)
    tokenizer = WordTokenizer.fit(world32.sample(500, seed=1).captions, context_length=24)
    config = config_from_preset(
        "tiny-cpu", tokenizer=tokenizer, embed_dim=32,
        vision={"cnn_channels": [8, 16]}, text={"width": 32, "layers": 1, "heads": 2},
    )
    return MiniCLIP(config).eval()


def free_port() -> int:
    """A loopback port no one listens on now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# A training run of a few seconds on CPU (a TrainConfig's fields).
TINY = {"steps": 12, "batch_size": 16, "warmup_steps": 2, "eval_size": 32, "lr": 3e-3}


@pytest.fixture
def one_thread():
    """On a shared 2-core machine one thread is several times faster than two fighting for cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class LeavesAMarker:
    """Unpickling this creates the file `marker`: proof that a loader ran a pickle's code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# A ViT-B-32-shaped open_clip model small enough to build in milliseconds; registered with open_clip by name.
TINY_OPEN_CLIP = "clipkit-test-tiny"
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory) -> str:
    """The name open_clip knows TINY_OPEN_CLIP_CONFIG by; skips without open_clip."""
    open_clip = pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("open_clip_configs")
    (folder / f"{TINY_OPEN_CLIP}.json").write_text(json.dumps(TINY_OPEN_CLIP_CONFIG))
    open_clip.add_model_config(folder)
    return TINY_OPEN_CLIP
