"""The Transformer both towers share: multi-head self-attention (causal for text, bidirectional for
image patches), a GELU MLP, pre-LayerNorm residual blocks and OpenAI's depth-scaled initialisation.

Notebook 02 builds it inline for the text tower; notebook 03 reuses it for the Vision Transformer.
The parameter layout follows openai/CLIP's model.py, so `clipkit.interop` maps released weights
onto it one tensor at a time; the names are our own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = ("gelu", "quick_gelu")


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

    def forward(self, x: torch.Tensor, query_index: int | torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, width] -> [B, L, width]; with `query_index` (an int, or one position per sequence [B]),
        only that token's output, [B, width]: keys and values for every token, a query for one."""
        if query_index is not None:
            return self._attend_from(x, query_index)
        batch, length, width = x.shape
        qkv = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads)  # [B, L, 3, H, Dh]
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, L, Dh]
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)  # [B, H, L, Dh]
        attended = attended.transpose(1, 2).reshape(batch, length, width)  # [B, L, H * Dh]
        return self.out_proj(attended)

    def _attend_from(self, x: torch.Tensor, query_index: int | torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q_weight, kv_weight = self.qkv.weight.split([width, 2 * width])
        q_bias, kv_bias = self.qkv.bias.split([width, 2 * width])
        query = pick_tokens(x, query_index)  # [B, width]
        q = F.linear(query, q_weight, q_bias).view(batch, 1, self.heads, width // self.heads).transpose(1, 2)  # [B, H, 1, Dh]
        kv = F.linear(x, kv_weight, kv_bias).view(batch, length, 2, self.heads, width // self.heads)  # [B, L, 2, H, Dh]
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # 2 x [B, H, L, Dh]
        mask = None
        if self.causal:  # the query sees its own position and the ones before it, as in the full pass
            positions = torch.arange(length, device=x.device)
            limit = query_index.view(batch, 1) if torch.is_tensor(query_index) else torch.tensor([[query_index]], device=x.device)
            mask = (positions.view(1, length) <= limit).view(-1, 1, 1, length)  # [B or 1, 1, 1, L]
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, H, 1, Dh]
        return self.out_proj(attended.reshape(batch, width))  # [B, H * Dh]: one query, so heads concatenate in place


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

    def forward(self, x: torch.Tensor, query_index: int | torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, width] -> [B, L, width], or with `query_index` only that token's output [B, width]."""
        if query_index is None:
            x = x + self.attention(self.attention_norm(x))
            return x + self.mlp(self.mlp_norm(x))
        token = pick_tokens(x, query_index) + self.attention(self.attention_norm(x), query_index)  # [B, width]
        return token + self.mlp(self.mlp_norm(token))


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

    def forward(self, x: torch.Tensor, pool_index: int | torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, width] -> [B, L, width]; with `pool_index` (an int, or one position per sequence [B]) only
        that token's final state, [B, width].

        A tower keeps one token (the class token, the end-of-text token) and throws the rest away, and
        in the last block no other token reads the others' outputs. So the last block needs keys and
        values for every token but a query, an output projection and an MLP for the kept one only:
        the same numbers for about 5/6 less of that block's work (about a quarter of a 3-block ViT's
        Transformer, 40% of a 2-block text tower's)."""
        if pool_index is None or not self.blocks:
            for block in self.blocks:
                x = block(x)
            return x if pool_index is None else pick_tokens(x, pool_index)
        for block in self.blocks[:-1]:
            x = block(x)
        return self.blocks[-1](x, pool_index)


def pick_tokens(x: torch.Tensor, index: int | torch.Tensor) -> torch.Tensor:
    """One token per sequence: [B, L, width] -> [B, width], at position `index` (an int for every
    sequence, or a LongTensor [B] of positions)."""
    if not torch.is_tensor(index):
        return x[:, index]
    return x[torch.arange(x.shape[0], device=x.device), index]


def attention_weights(q: torch.Tensor, k: torch.Tensor, causal: bool) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) with the causal mask, [..., L, L]: what the fused kernel computes but
    never materialises. For drawing attention maps and for checking the kernel by hand."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if causal:
        length = q.shape[-2]
        future = torch.ones(length, length, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
    return scores.softmax(dim=-1)
