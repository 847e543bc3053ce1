"""The text tower: token + positional embeddings, a causal pre-LayerNorm Transformer, pooling at
the end-of-text token, and a linear projection into the shared embedding space.

The Transformer itself lives in `clipkit.transformer`, shared with the Vision Transformer in
`clipkit.image_encoder` (notebook 02 builds it first; notebook 03 reuses it). The structure
follows openai/CLIP's model.py so that `clipkit.interop` can map released weights onto it one
tensor at a time; the names are our own.
"""

from __future__ import annotations

import torch
from torch import nn

from clipkit.config import TextConfig
from clipkit.transformer import Transformer

POOLINGS = ("eot", "argmax")


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
        return self.ln_final(self.transformer(self.embed(tokens)))

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """The Transformer's input: token plus position embeddings, [B, L, width]."""
        self.check_tokens(tokens)
        length = tokens.shape[1]
        return self.token_embedding(tokens) + self.positional_embedding[:length]

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
        tokens = trim_padding(tokens)
        if type(self).pool is not TextEncoder.pool:  # a subclass's own pooling needs every token's features
            return self.projection(self.pool(self.hidden_states(tokens), tokens))
        # Only the end-of-text token is kept, so the last block runs for it alone (Transformer.forward);
        # LayerNorm acts per token, so normalising the pooled one equals normalising all, then picking.
        pooled = self.transformer(self.embed(tokens), pool_index=self.eot_positions(tokens))  # [B, width]
        return self.projection(self.ln_final(pooled))


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Token ids [B, L] without the trailing columns that are padding (id 0) in every row, [B, L'].

    Under the causal mask no position attends to a later one, so these columns change neither the
    features before them nor the pooled end-of-text feature: dropping them gives the same embedding
    for the cost of the longest caption instead of the whole context (captions of 10 tokens in a
    context of 24 halve the text tower's work). Skipped under torch.compile, where a new length
    would mean a new graph."""
    if tokens.ndim != 2 or not tokens.shape[1] or torch.compiler.is_compiling():
        return tokens
    used = (tokens != 0).any(dim=0)  # [L]: columns holding a token in some row
    length = int(used.nonzero().max()) + 1 if bool(used.any()) else tokens.shape[1]
    return tokens[:, :length]
