import random

import numpy as np
import pytest
import torch

import clipkit
from clipkit import env


def test_get_device_honours_the_override(monkeypatch):
    monkeypatch.setenv(env.DEVICE_ENV, "cpu")
    assert clipkit.get_device() == torch.device("cpu")
    assert clipkit.get_device("cpu").type == "cpu"


def test_get_device_refuses_cuda_it_does_not_have(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv(env.DEVICE_ENV, "cuda")
    with pytest.raises(RuntimeError, match="CLIPKIT_DEVICE"):
        clipkit.get_device()


def test_get_device_prefers_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.delenv(env.DEVICE_ENV, raising=False)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert clipkit.get_device().type == expected


def test_seed_everything_repeats_every_generator():
    def draw():
        return random.random(), np.random.rand(), torch.rand(3)

    clipkit.seed_everything(7)
    first = draw()
    generator = clipkit.seed_everything(7)
    second = draw()
    assert first[0] == second[0] and first[1] == second[1]
    assert torch.equal(first[2], second[2])
    assert torch.equal(torch.rand(2, generator=generator), torch.rand(2, generator=torch.Generator().manual_seed(7)))


def test_directories_follow_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("CLIPKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLIPKIT_DATA_DIR", raising=False)
    monkeypatch.setenv("CLIPKIT_CHECKPOINT_DIR", str(tmp_path / "ckpt"))
    assert clipkit.data_dir() == tmp_path / "home" / "data"
    assert clipkit.checkpoint_dir() == tmp_path / "ckpt"
    assert clipkit.cache_dir().is_dir()


def test_version_is_exposed():
    assert clipkit.__version__.count(".") == 2
