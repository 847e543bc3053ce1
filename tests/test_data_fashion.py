"""Fashion-MNIST: IDX parsing against the arrays written, the lookup order, (mocked) download, clear errors."""

import gzip
import hashlib
import io
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from clipkit.data import FashionMNISTNotFoundError, load_fashion_mnist
from clipkit.data import fashion

SYSTEM_DIR = fashion.SYSTEM_DIRS[0]


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_split(folder: Path, split="train", count=30, seed=0, compress=True):
    """Small random IDX files in the real layout; returns the images and labels written."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, count, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    prefix = fashion.SPLIT_PREFIX[split]
    for name, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        if compress:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return images, labels


@pytest.fixture
def nowhere(monkeypatch, tmp_path):
    """No Fashion-MNIST anywhere: no variable, an empty data dir, no system package."""
    monkeypatch.delenv(fashion.ENV_VARIABLE, raising=False)
    monkeypatch.setenv("CLIPKIT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(fashion, "SYSTEM_DIRS", (tmp_path / "system",))
    return tmp_path


def test_loads_what_the_idx_files_hold(nowhere):
    images, labels = write_split(nowhere / "mine", count=30)
    data = load_fashion_mnist(root=nowhere / "mine", download=False)
    assert data.images.shape == (30, 3, 28, 28) and data.images.dtype == torch.uint8
    for channel in range(3):
        assert np.array_equal(data.images[:, channel].numpy(), images)
    assert data.labels.tolist() == labels.tolist()
    for caption, label in zip(data.captions, labels):
        assert data.class_names[label] in caption
    single = load_fashion_mnist(root=nowhere / "mine", channels=1, limit=10, download=False)
    assert single.images.shape == (10, 1, 28, 28) and np.array_equal(single.images[:, 0].numpy(), images[:10])


def test_uncompressed_files_and_the_test_split(nowhere):
    images, _ = write_split(nowhere / "raw", split="test", count=12, compress=False)
    data = load_fashion_mnist("test", root=nowhere / "raw", download=False)
    assert np.array_equal(data.images[:, 0].numpy(), images)


def test_captions_use_several_templates_and_follow_the_seed(nowhere):
    write_split(nowhere / "mine", count=200)
    first = load_fashion_mnist(root=nowhere / "mine", seed=1, download=False).captions
    assert first == load_fashion_mnist(root=nowhere / "mine", seed=1, download=False).captions
    assert first != load_fashion_mnist(root=nowhere / "mine", seed=2, download=False).captions
    used = {t for t in fashion.CAPTION_TEMPLATES for c in first if c.startswith(t.split("{")[0]) and t.split("}")[-1] in c}
    assert len(used) >= 4
    assert not any(" a ankle" in c or c.startswith("a ankle") for c in first)


def test_lookup_order_variable_then_data_dir_then_system(nowhere, monkeypatch):
    system_images, _ = write_split(nowhere / "system", seed=1)
    assert np.array_equal(load_fashion_mnist(download=False).images[:, 0].numpy(), system_images)
    data_dir_images, _ = write_split(nowhere / "data" / "fashion-mnist", seed=2)
    assert np.array_equal(load_fashion_mnist(download=False).images[:, 0].numpy(), data_dir_images)
    variable_images, _ = write_split(nowhere / "variable", seed=3)
    monkeypatch.setenv(fashion.ENV_VARIABLE, str(nowhere / "variable"))
    assert np.array_equal(load_fashion_mnist(download=False).images[:, 0].numpy(), variable_images)
    root_images, _ = write_split(nowhere / "root", seed=4)
    assert np.array_equal(load_fashion_mnist(root=nowhere / "root", download=False).images[:, 0].numpy(), root_images)


def test_absent_and_offline_names_the_package_and_the_variable(nowhere, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(fashion.urllib.request, "urlopen", offline)
    with pytest.raises(FashionMNISTNotFoundError) as error:
        load_fashion_mnist()
    message = str(error.value)
    assert "apt install dataset-fashion-mnist" in message and fashion.ENV_VARIABLE in message and "no network" in message
    with pytest.raises(FashionMNISTNotFoundError, match="download=False"):
        load_fashion_mnist(download=False)


def test_download_fetches_checks_and_stores_the_files(nowhere, monkeypatch):
    source = nowhere / "server"
    images, labels = write_split(source, count=8)
    write_split(source, split="test", count=4)
    payloads = {p.name: p.read_bytes() for p in source.iterdir()}
    monkeypatch.setattr(fashion, "DOWNLOAD_MD5", {name: hashlib.md5(data).hexdigest() for name, data in payloads.items()})
    requested = []

    def fake_urlopen(url, timeout=None):
        requested.append(url)
        return io.BytesIO(payloads[url.rsplit("/", 1)[-1]])

    monkeypatch.setattr(fashion.urllib.request, "urlopen", fake_urlopen)
    data = load_fashion_mnist()
    assert all(url.startswith(fashion.DOWNLOAD_URL) for url in requested) and len(requested) == 2
    assert np.array_equal(data.images[:, 0].numpy(), images) and data.labels.tolist() == labels.tolist()
    stored = nowhere / "data" / "fashion-mnist"
    assert sorted(p.name for p in stored.iterdir()) == sorted(n for n in payloads if n.startswith("train"))
    # A corrupted download is refused, not stored.
    monkeypatch.setattr(fashion, "DOWNLOAD_MD5", {name: "0" * 32 for name in payloads})
    with pytest.raises(FashionMNISTNotFoundError, match="MD5"):
        load_fashion_mnist("test", root=nowhere / "elsewhere")
    assert not any((nowhere / "elsewhere").glob("*.gz"))


def test_truncated_or_foreign_files_are_explained(nowhere):
    write_split(nowhere / "bad", count=5)
    path = nowhere / "bad" / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-100]))
    with pytest.raises(ValueError, match="truncated"):
        load_fashion_mnist(root=nowhere / "bad", download=False)
    path.write_bytes(gzip.compress(b"%PDF-1.4 not idx"))
    with pytest.raises(ValueError, match="not an unsigned-byte IDX"):
        load_fashion_mnist(root=nowhere / "bad", download=False)
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist("validation")


@pytest.mark.skipif(not SYSTEM_DIR.is_dir(), reason="needs the Debian package dataset-fashion-mnist")
def test_the_real_data_set():
    train = load_fashion_mnist("train", root=SYSTEM_DIR)
    test = load_fashion_mnist("test", root=SYSTEM_DIR, channels=1)
    assert train.images.shape == (60_000, 3, 28, 28) and test.images.shape == (10_000, 1, 28, 28)
    assert torch.bincount(train.labels).tolist() == [6000] * 10
    assert torch.equal(train.images[:, 0], train.images[:, 2])
    assert 0 < train.images.float().mean() < 255
