"""Stand-ins for LiT's frozen sentence model, so LiT tests need neither sentence-transformers nor MiniLM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.lit import LiTConfig

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "red", "circle", "blue", "square", "photo", "of", "sneaker", "dress"]


class FakeWordPiece:
    """The slice of a Hugging Face tokenizer SentenceTokenizer uses: whole words, BERT's special ids."""

    pad_token_id, unk_token_id, cls_token_id, sep_token_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(WORDS)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [WORDS.index(w) if w in WORDS else self.unk_token_id for w in text.lower().split()]

    def decode(self, ids) -> str:
        return " ".join(WORDS[i] for i in ids)


class FakeSentenceModel(nn.Module):
    """A sentence model in miniature: mean of word vectors under the attention mask, L2-normalised."""

    def __init__(self, dim: int = 12):
        super().__init__()
        torch.manual_seed(0)
        self.tokenizer = FakeWordPiece()
        self.words = nn.Embedding(len(WORDS), dim)
        self.dim = dim

    def get_embedding_dimension(self) -> int:
        return self.dim

    def forward(self, features: dict) -> dict:
        mask = features["attention_mask"].unsqueeze(-1).float()  # [B, L] -> [B, L, 1]
        pooled = (self.words(features["input_ids"]) * mask).sum(1) / mask.sum(1)
        return {"sentence_embedding": F.normalize(pooled, dim=-1)}


def tiny_lit_config(**overrides) -> LiTConfig:
    """A LiT config of a few thousand trainable weights over FakeSentenceModel's 12-d sentences."""
    vision = LiTConfig().vision
    vision.cnn_channels = (8, 16)
    return LiTConfig(vision=vision, text_dim=12, context_length=8, **overrides)


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    """`n` seeded random uint8 images [n, 3, 32, 32]."""
    return torch.randint(0, 256, (n, 3, 32, 32), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


CAPTIONS = ["a red circle", "a blue square", "a photo of a sneaker", "a photo of a dress"]
