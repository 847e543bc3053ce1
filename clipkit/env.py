"""Where things run and where files live: device detection, seeding, directories.

Every notebook's first cell calls these three, so a notebook behaves the same on a
laptop CPU, a CUDA box or an Apple machine, and writes its files where the
user (or CI) says.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

# The repository root when clipkit is used from a checkout (the usual case for the
# workbench); a pip-installed clipkit falls back to the user's cache directory.
_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_ROOT = _PACKAGE_DIR.parent if (_PACKAGE_DIR.parent / "pyproject.toml").exists() else None

DEVICE_ENV = "CLIPKIT_DEVICE"
HOME_ENV = "CLIPKIT_HOME"


def get_device(preferred: str | None = None) -> torch.device:
    """The best available device: cuda, then mps, then cpu.

    `preferred` (or the CLIPKIT_DEVICE environment variable) overrides the choice,
    e.g. CLIPKIT_DEVICE=cpu to keep a notebook off a busy GPU.
    """
    choice = preferred or os.environ.get(DEVICE_ENV)
    if choice:
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                f"{DEVICE_ENV}={choice!r} asks for CUDA but torch sees no CUDA device; "
                f"unset {DEVICE_ENV} or set it to 'cpu'."
            )
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"{DEVICE_ENV}={choice!r} asks for MPS but it is not available; use 'cpu'.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a torch Generator with that seed.

    Bitwise determinism on GPU also needs deterministic kernels, which cost speed;
    we do not force them here.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def home_dir() -> Path:
    """Root of everything clipkit writes: $CLIPKIT_HOME, else `<checkout>/.clipkit` or ~/.cache/clipkit."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    if _CHECKOUT_ROOT is not None:
        return _CHECKOUT_ROOT / ".clipkit"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clipkit"


def _directory(env_name: str, default_name: str) -> Path:
    path = Path(os.environ[env_name]).expanduser() if os.environ.get(env_name) else home_dir() / default_name
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Downloaded or user-supplied data sets ($CLIPKIT_DATA_DIR)."""
    return _directory("CLIPKIT_DATA_DIR", "data")


def cache_dir() -> Path:
    """Things that can be rebuilt, such as rendered emoji ($CLIPKIT_CACHE_DIR)."""
    return _directory("CLIPKIT_CACHE_DIR", "cache")


def checkpoint_dir() -> Path:
    """Trained models; notebook 05 writes here and notebooks 06-09 read from here ($CLIPKIT_CHECKPOINT_DIR)."""
    return _directory("CLIPKIT_CHECKPOINT_DIR", "checkpoints")


def describe_environment() -> dict[str, str]:
    """Versions and device, for the welcome notebook and bug reports."""
    import platform

    device = get_device()
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
        "cpu_threads": str(torch.get_num_threads()),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    for name in ("open_clip", "gradio", "torchvision", "numpy"):
        try:
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?")
        except Exception as error:  # a broken optional install should not hide the rest
            info[name] = f"unavailable ({error.__class__.__name__})"
    return info
