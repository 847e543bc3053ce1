"""The text tower: token + positional embeddings, a causal pre-LayerNorm Transformer, pooling at
the end-of-text token, and a linear projection into the shared embedding space.

The residual attention block and the Transformer stack defined here are shared with the
Vision Transformer in `clipkit.image_encoder` (notebook 02 builds them first; notebook 03 reuses
them). The structure follows openai/CLIP's model.py so that `clipkit.interop` can map released
weights onto it one tensor at a time; the names are our own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # the configs live in clipkit.model, which imports this module
    from clipkit.model import TextConfig

ACTIVATIONS = ("gelu", "quick_gelu")
POOLINGS = ("eot", "argmax")


class QuickGELU(nn.Module):
    """x * sigmoid(1.702 x): the GELU approximation OpenAI trained CLIP with.

    Released OpenAI weights only reproduce their embeddings with this activation, which is why
    open_clip keeps "-quickgelu" variants of its configs; new models train fine with exact GELU.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


def make_activation(name: str) -> nn.Module:
    if name == "gelu":
        return nn.GELU()
    if name == "quick_gelu":
        return QuickGELU()
    raise ValueError(f"unknown activation {name!r}: use one of {ACTIVATIONS}")


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection and PyTorch's fused attention kernel.

    One Linear for q, k and v (laid out like nn.MultiheadAttention's in_proj_weight, so weights
    convert by copying) means one matmul instead of three; `F.scaled_dot_product_attention` with
    `is_causal` builds the causal mask inside the kernel instead of adding a [L, L] tensor of -inf.
    """

    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}: pick heads that divide the width")
        self.heads = heads
        self.causal = causal
        self.qkv = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads)  # [B, L, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, L, Dh]
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # [B, H, L, Dh]
        attended = attended.transpose(1, 2).reshape(batch, length, width)  # [B, L, H * Dh]
        return self.out_proj(attended)


class MLP(nn.Module):
    def __init__(self, width: int, mlp_ratio: float, act: str):
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.fc_in = nn.Linear(width, hidden)
        self.act = make_activation(act)
        self.fc_out = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


class ResidualAttentionBlock(nn.Module):
    """Pre-LayerNorm block: x + attention(norm(x)), then x + mlp(norm(x)).

    Normalising before each sub-layer (rather than after the residual sum) keeps the residual
    stream an identity path, which is what lets deep stacks train without warm-up tricks.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0, act: str = "gelu", causal: bool = False):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = SelfAttention(width, heads, causal)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio, act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """A stack of residual attention blocks on [batch, length, width] tensors."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0, act: str = "gelu", causal: bool = False):
        super().__init__()
        self.width = width
        self.blocks = nn.ModuleList(ResidualAttentionBlock(width, heads, mlp_ratio, act, causal) for _ in range(layers))
        self.init_weights()

    def init_weights(self) -> None:
        """OpenAI's scheme: output projections shrink with depth so the residual stream's variance
        stays about constant however many blocks add to it."""
        attention_std = self.width**-0.5
        output_std = attention_std * (2 * max(len(self.blocks), 1)) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.blocks:
            nn.init.normal_(block.attention.qkv.weight, std=attention_std)
            nn.init.zeros_(block.attention.qkv.bias)
            nn.init.normal_(block.attention.out_proj.weight, std=output_std)
            nn.init.zeros_(block.attention.out_proj.bias)
            nn.init.normal_(block.mlp.fc_in.weight, std=fc_std)
            nn.init.normal_(block.mlp.fc_out.weight, std=output_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class TextEncoder(nn.Module):
    """Token ids [B, L] -> text embeddings [B, embed_dim].

    `hidden_states` gives the per-token features (after the final LayerNorm); `pool` picks one
    vector per caption from them. Subclass and override `pool` to try other poolings.
    """

    def __init__(self, config: TextConfig, embed_dim: int):
        super().__init__()
        if config.pool not in POOLINGS:
            raise ValueError(f"unknown text pooling {config.pool!r}: use one of {POOLINGS}")
        self.config = config
        self.context_length = config.context_length
        self.vocab_size = config.vocab_size
        self.eot_token_id = config.resolved_eot_token_id
        self.token_embedding = nn.Embedding(config.vocab_size, config.width)
        self.positional_embedding = nn.Parameter(torch.empty(config.context_length, config.width))
        self.transformer = Transformer(config.width, config.layers, config.heads, config.mlp_ratio, config.act, causal=True)
        self.ln_final = nn.LayerNorm(config.width)
        self.projection = nn.Linear(config.width, embed_dim, bias=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.projection.weight, std=config.width**-0.5)

    def check_tokens(self, tokens: torch.Tensor) -> None:
        if tokens.ndim != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"expected integer token ids of shape [batch, length], got {tuple(tokens.shape)} {tokens.dtype}: "
                "pass captions through the model's tokenizer, e.g. model.tokenizer(texts)"
            )
        if tokens.shape[1] > self.context_length:
            raise ValueError(
                f"token sequences of length {tokens.shape[1]} exceed the model's context length {self.context_length}: "
                f"tokenize with context_length={self.context_length}"
            )
        if tokens.numel() and (int(tokens.max()) >= self.vocab_size or int(tokens.min()) < 0):
            raise ValueError(
                f"token ids range over [{int(tokens.min())}, {int(tokens.max())}] but the vocabulary has "
                f"{self.vocab_size} entries: tokenize with the tokenizer this model was built for (model.tokenizer)"
            )

    def hidden_states(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token features [B, L, width] after the final LayerNorm."""
        self.check_tokens(tokens)
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        return self.ln_final(self.transformer(x))

    def eot_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index of each caption's end-of-text token, [B].

        OpenAI pools at `tokens.argmax(-1)`, which works only because their end token has the
        largest id. Looking for `eot_token_id` itself does not depend on that accident, so a
        tokenizer that adds tokens after the end token (or orders its vocabulary differently)
        still pools at the right place. Under the causal mask the end token has seen the whole
        caption and nothing after it, so the padding that follows cannot change the embedding.
        """
        if self.config.pool == "argmax":
            return tokens.argmax(dim=-1)
        is_eot = tokens == self.eot_token_id
        if not bool(is_eot.any(dim=-1).all()):
            raise ValueError(
                f"some captions have no end-of-text token (id {self.eot_token_id}): tokenize with the model's "
                "tokenizer, which always ends a caption with it, or set TextConfig.eot_token_id to your tokenizer's"
            )
        return is_eot.int().argmax(dim=-1)  # argmax of a 0/1 row is the first 1

    def pool(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """One vector per caption [B, width] from the per-token features [B, L, width]."""
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        return hidden[rows, self.eot_positions(tokens)]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.projection(self.pool(self.hidden_states(tokens), tokens))


def attention_weights(q: torch.Tensor, k: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) with the causal mask, [..., L, L]: what the fused kernel computes but
    never materialises. For drawing attention maps and for checking the kernel by hand."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        length = q.shape[-2]
        future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1)
