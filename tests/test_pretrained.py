"""The open_clip wrapper: same embeddings as open_clip, the clipkit helpers on top, clear errors offline."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

open_clip = pytest.importorskip("open_clip")

from clipkit.interface import embed_images, embed_texts  # noqa: E402
from clipkit.pretrained import (  # noqa: E402
    OpenCLIPModel,
    PretrainedWeightsUnavailableError,
    load_open_clip,
    openclip_state_dict_file,
)
from clipkit.search import index_images, search_image, search_text  # noqa: E402
from clipkit.zeroshot import zeroshot_classifier  # noqa: E402
from conftest import TINY_OPEN_CLIP, TINY_OPEN_CLIP_CONFIG  # noqa: E402

CAPTIONS = ["a photo of a cat", "a red circle on the left", "x"]


@pytest.fixture(scope="module")
def saved(tiny_open_clip, tmp_path_factory):
    """A random-init open_clip model and its weights saved to a local file."""
    torch.manual_seed(0)
    original = open_clip.create_model(tiny_open_clip).eval()
    path = openclip_state_dict_file(original, tmp_path_factory.mktemp("weights") / "tiny.safetensors")
    return original, path


def _images(n: int, size: int = 32) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, size, size, generator=generator)


def test_loaded_weights_give_the_original_embeddings(saved):
    original, path = saved
    model = load_open_clip(TINY_OPEN_CLIP, pretrained=path)
    assert isinstance(model, OpenCLIPModel) and not model.training and model.pretrained == str(path)
    tokens = open_clip.tokenize(CAPTIONS, context_length=16)
    torch.testing.assert_close(model.tokenizer(CAPTIONS), tokens, rtol=0, atol=0)
    images = _images(2)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), original.encode_text(tokens), rtol=0, atol=1e-6)
        torch.testing.assert_close(model.encode_image(images, normalize=True), original.encode_image(images, normalize=True), rtol=0, atol=1e-6)
        logits_per_image, logits_per_text = model(images, tokens)
        reference = original.logit_scale.exp() * original.encode_image(images, normalize=True) @ original.encode_text(tokens, normalize=True).T
    torch.testing.assert_close(logits_per_image, reference, rtol=0, atol=1e-5)
    assert torch.equal(logits_per_text, logits_per_image.T)


def test_the_clipkit_interface_and_helpers_work_through_the_wrapper(saved):
    original, path = saved
    model = load_open_clip(TINY_OPEN_CLIP, pretrained=str(path))
    assert model.image_size == 32 and len(model.image_mean) == 3 and len(model.image_std) == 3 and model.embed_dim == 32
    pictures = [Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype("uint8")) for img in _images(4, 48)]
    assert model.preprocess(pictures[0]).shape == (3, 32, 32)
    # embed_texts is open_clip's normalised text embedding of open_clip's tokens
    with torch.no_grad():
        expected = original.encode_text(open_clip.tokenize(CAPTIONS, context_length=16), normalize=True)
    torch.testing.assert_close(embed_texts(model, CAPTIONS), expected, rtol=0, atol=1e-6)
    image_embeddings = embed_images(model, pictures)
    assert image_embeddings.shape == (4, 32)
    index = index_images(model, pictures, items=list(range(4)), progress=False)
    assert search_image(index, model, pictures[2], k=1).items[0] == [2]
    assert search_text(index, model, "a photo of a cat", k=4).scores.shape == (1, 4)
    assert zeroshot_classifier(model, ["cat", "dog"], ["a photo of a {}."]).shape == (2, 32)


def test_random_init_and_conversion_to_miniclip(tiny_open_clip):
    model = load_open_clip(tiny_open_clip)
    assert model.pretrained is None
    mini = model.to_miniclip()
    tokens = model.tokenizer(CAPTIONS)
    with torch.no_grad():
        torch.testing.assert_close(mini.encode_text(tokens), model.encode_text(tokens), rtol=0, atol=1e-5)


def test_an_unfetchable_tag_says_how_to_pass_a_local_file(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def offline(*args, **kwargs):  # what open_clip raises when the hub cannot be reached
        raise RuntimeError("Failed to download weights for tag 'laion2b_s34b_b79k'")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(PretrainedWeightsUnavailableError, match="HF_HUB_OFFLINE=1 is set.*pretrained='/path/to/"):
        load_open_clip("ViT-B-32", pretrained="laion2b_s34b_b79k")


_OFFLINE_TRY = """
import time
from clipkit.pretrained import PretrainedWeightsUnavailableError, load_open_clip
start = time.perf_counter()
try:
    load_open_clip("RN50", pretrained="openai")
except PretrainedWeightsUnavailableError as error:
    print(f"{time.perf_counter() - start:.3f}")
    print(error)
"""


def test_without_network_a_tag_fails_in_seconds_with_one_line(tmp_path):
    """Issue 14: with HF_HUB_OFFLINE unset, the hub client used to retry for about a minute first."""
    import os
    import subprocess
    import sys

    from clipkit.pretrained import _weights_host, host_reachable

    if host_reachable(_weights_host(open_clip.get_pretrained_cfg("RN50", "openai"))):
        pytest.skip("this machine reaches the hub: the test would download weights")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "empty-cache")  # nothing cached: the weights cannot come from disk
    done = subprocess.run([sys.executable, "-c", _OFFLINE_TRY], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    seconds, message = done.stdout.strip().split("\n")  # the error message is one line
    assert float(seconds) < 15
    assert "'openai'" in message and "cannot reach the hub" in message and "pretrained='/path/to/" in message
    assert "thrown while requesting" not in done.stderr and "Failed to download" not in done.stderr  # no retry chatter


@pytest.mark.parametrize(
    "name, pretrained, error, message",
    [
        ("ViT-B-32", "no-such-tag", ValueError, "has no pretrained tag"),
        ("ViT-B-33", None, ValueError, "did you mean"),
        ("ViT-B-32", "/nonexistent/weights.safetensors", FileNotFoundError, "does not exist"),
    ],
)
def test_bad_names_tags_and_paths_are_named(name, pretrained, error, message):
    with pytest.raises(error, match=message):
        load_open_clip(name, pretrained=pretrained)


def test_weights_of_another_architecture_are_refused(saved, tmp_path):
    _, path = saved
    other = dict(TINY_OPEN_CLIP_CONFIG, embed_dim=16)
    (tmp_path / "clipkit-test-other.json").write_text(json.dumps(other))
    open_clip.add_model_config(tmp_path)
    with pytest.raises(ValueError, match="does not hold weights for open_clip's 'clipkit-test-other'"):
        load_open_clip("clipkit-test-other", pretrained=path)
