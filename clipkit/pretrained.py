"""Pretrained open_clip models behind the clipkit model interface.

`load_open_clip("ViT-B-32", pretrained="laion2b_s34b_b79k")` fetches real CLIP weights through
open_clip (it caches them under ~/.cache/huggingface) and wraps the model so everything written for
`MiniCLIP` works on it unchanged: `encode_image` / `encode_text`, `logit_scale`, `forward`,
`tokenizer`, `preprocess`, `clipkit.interface.embed_texts` / `embed_images`, the zero-shot and search
helpers. `pretrained` may instead be a local weights file (`.safetensors`, `.bin`, `.pt`), which is
how offline machines use it; `pretrained=None` gives a randomly initialised model (for tests and
for looking at the architecture). `clipkit.interop.miniclip_from_openclip` goes one step further
and copies the weights into the MiniCLIP a student built (`OpenCLIPModel.to_miniclip()`).
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from clipkit.interface import CLIPBase
from clipkit.interop import WEIGHT_SUFFIXES, open_clip_from_file
from clipkit.tokenizer import OpenCLIPTokenizer

class PretrainedWeightsUnavailableError(RuntimeError):
    """open_clip could not fetch a pretrained tag's weights (offline, or the hub unreachable)."""


class OpenCLIPModel(CLIPBase):
    """An open_clip CLIP wrapped in the clipkit model interface (`clipkit.interface.CLIPBase`).

    `model` is the open_clip module itself, for anything open_clip-specific; `name` and
    `pretrained` record where the weights came from.
    """

    def __init__(self, model: nn.Module, name: str, pretrained: str | None = None):
        super().__init__()
        import open_clip

        _require_clip_tokenizer(name)
        self.model = model
        self.name = name
        self.pretrained = pretrained
        self.preprocess_cfg = dict(open_clip.get_model_preprocess_cfg(model))
        self.tokenizer = OpenCLIPTokenizer(context_length=int(model.context_length))
        self._preprocess = open_clip.image_transform(
            self.preprocess_cfg["size"],
            is_train=False,
            mean=self.preprocess_cfg["mean"],
            std=self.preprocess_cfg["std"],
            interpolation=self.preprocess_cfg.get("interpolation"),
            resize_mode=self.preprocess_cfg.get("resize_mode"),
        )

    def describe(self) -> dict:
        return {"model": self.name, "pretrained": self.pretrained}

    def extra_repr(self) -> str:
        return f"name={self.name!r}, pretrained={self.pretrained!r}"

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    @property
    def preprocess(self):
        """open_clip's own eval transform (its resize mode and interpolation), not clipkit's."""
        return self._preprocess

    @property
    def image_size(self) -> int:
        size = self.preprocess_cfg["size"]
        return int(size if isinstance(size, int) else size[0])

    @property
    def image_mean(self) -> tuple[float, ...]:
        return tuple(self.preprocess_cfg["mean"])

    @property
    def image_std(self) -> tuple[float, ...]:
        return tuple(self.preprocess_cfg["std"])

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim)

    def encode_image(self, images: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_image(images, normalize=normalize)

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        return self.model.encode_text(tokens, normalize=normalize)

    def similarity_logits(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        logits = super().similarity_logits(image_features, text_features)  # [B_images, B_texts]
        bias = getattr(self.model, "logit_bias", None)  # SigLIP-style models add a learnt bias; CLIPs have none
        return logits if bias is None else logits + bias

    def to_miniclip(self):
        """A `clipkit.model.MiniCLIP` with these weights (ViT towers only; see clipkit.interop)."""
        from clipkit.interop import miniclip_from_openclip

        return miniclip_from_openclip(self.model)


def _require_clip_tokenizer(name: str) -> None:
    """The wrapper speaks CLIP's BPE through OpenCLIPTokenizer; models with a Hugging Face text
    tower (SigLIP, multilingual CLIPs) tokenize differently and are refused rather than mis-tokenized."""
    import open_clip

    config = open_clip.get_model_config(name) or {}
    hf_tokenizer = (config.get("text_cfg") or {}).get("hf_tokenizer_name")
    if hf_tokenizer:
        raise ValueError(
            f"{name!r} tokenizes with the Hugging Face tokenizer {hf_tokenizer!r}, which clipkit's interface does not "
            "wrap; use a CLIP-tokenizer model (ViT-B-32, ViT-B-16, ViT-L-14, ...) or open_clip directly"
        )


def _check_model_name(name: str) -> None:
    import open_clip

    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5)
        raise ValueError(
            f"open_clip has no model called {name!r}"
            + (f"; did you mean {close}?" if close else "")
            + " open_clip.list_models() lists them all"
        )


def _looks_like_path(pretrained: str | os.PathLike) -> bool:
    text = str(pretrained)
    return isinstance(pretrained, os.PathLike) or os.sep in text or text.endswith(WEIGHT_SUFFIXES) or Path(text).exists()


# How long the connectivity probe waits before calling the weights' host unreachable. Without it, a
# machine with no network spends about a minute in the hub client's retries before failing.
PROBE_SECONDS = 3.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def _weights_host(pretrained_cfg: dict) -> str | None:
    """The host open_clip would download a tag's weights from (the Hugging Face hub or the tag's URL)."""
    if pretrained_cfg.get("hf_hub"):
        from huggingface_hub import constants

        return urlparse(constants.ENDPOINT).hostname
    return urlparse(pretrained_cfg.get("url", "")).hostname


def host_reachable(host: str | None, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to `host`:443 opens within `timeout` seconds. Behind a proxy the
    direct probe says nothing, so it answers True and leaves the download to decide."""
    if host is None or any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def _hub_offline_unless(reachable: bool):
    """The Hugging Face hub client in offline mode (cache only, no retries) while the host is
    unreachable; open_clip's "failed to download" log line is left out, the error says it once."""
    from huggingface_hub import constants

    quiet = _DropDownloadFailures()
    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = previous or not reachable
    logging.getLogger().addFilter(quiet)
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous
        logging.getLogger().removeFilter(quiet)


class _DropDownloadFailures(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to download weights")


def _offline_hint(name: str, tag: str, reachable: bool = True) -> str:
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        reason = "HF_HUB_OFFLINE=1 is set and they are not in the local cache"
    elif not reachable:
        reason = "this machine cannot reach the hub and they are not in the local cache"
    else:
        reason = "the download failed"
    return (
        f"could not fetch the pretrained weights of {name!r} (tag {tag!r}): {reason}. On a machine with internet, "
        f"load_open_clip({name!r}, pretrained={tag!r}) downloads and caches them; offline, copy the weights file "
        f"(e.g. open_clip_pytorch_model.bin or a .safetensors) here and pass its path: "
        f"load_open_clip({name!r}, pretrained='/path/to/weights.safetensors')"
    )


def load_open_clip(
    name: str = "ViT-B-32",
    pretrained: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    cache_dir: str | None = None,
) -> OpenCLIPModel:
    """An open_clip model as an `OpenCLIPModel`, in eval mode and float32.

    - `pretrained=None`: random weights (nothing is downloaded);
    - a tag such as "laion2b_s34b_b79k" or "openai" (`open_clip.list_pretrained_tags_by_model(name)`):
      open_clip downloads the weights once; offline this raises `PretrainedWeightsUnavailableError`;
    - a path to a weights file for architecture `name` (a state dict, as open_clip caches it).
    """
    import open_clip

    _check_model_name(name)
    _require_clip_tokenizer(name)
    if pretrained is None:
        model = open_clip.create_model(name, pretrained=None, device="cpu")
    elif _looks_like_path(pretrained):
        model = open_clip_from_file(open_clip, name, Path(pretrained).expanduser())
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ValueError(f"{name!r} has no pretrained tag {pretrained!r}; open_clip knows {tags}, or pass a weights file path")
        # A quick probe first: offline, the hub client answers from its cache at once instead of retrying.
        reachable = host_reachable(_weights_host(open_clip.get_pretrained_cfg(name, pretrained)))
        try:
            with _hub_offline_unless(reachable):
                model = open_clip.create_model(name, pretrained=pretrained, device="cpu", cache_dir=cache_dir, require_pretrained=True)
        except (RuntimeError, OSError) as error:
            if reachable:
                raise PretrainedWeightsUnavailableError(f"{_offline_hint(name, str(pretrained))} ({error})") from error
            raise PretrainedWeightsUnavailableError(_offline_hint(name, str(pretrained), reachable=False)) from None
    wrapped = OpenCLIPModel(model.float(), name, None if pretrained is None else str(pretrained)).eval()
    return wrapped.to(device) if device is not None else wrapped


def openclip_state_dict_file(model: nn.Module | OpenCLIPModel, path: str | os.PathLike) -> Path:
    """Save an open_clip model's weights as safetensors (what `load_open_clip(name, pretrained=path)` reads)."""
    from safetensors.torch import save_file

    inner = model.model if isinstance(model, OpenCLIPModel) else model
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({key: value.detach().contiguous().cpu() for key, value in inner.state_dict().items()}, str(path))
    return path

