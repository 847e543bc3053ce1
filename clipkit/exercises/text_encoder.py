"""Notebook 02's exercises: causal attention weights, and pooling at the end-of-text token."""

from __future__ import annotations

import math

import torch

from clipkit.exercises.core import check
from clipkit.exercises.spec import Case, Exercise, Mistake, Output, register

NOTEBOOK = "02_text_encoder"


# ---------------------------------------------------------------------------------------------
# masked_attention(q, k, v) -> (mixed, weights)


def _future(length: int, device: torch.device, diagonal: int = 1) -> torch.Tensor:
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(diagonal)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, heads, L, L]
    weights = scores.masked_fill(_future(q.shape[-2], q.device), float("-inf")).softmax(dim=-1)
    return weights @ v, weights


def _attention(q, k, v, scale: float, mask: torch.Tensor | None, softmax_dim: int = -1, fill_after: bool = False):
    scores = q @ k.transpose(-2, -1) / scale
    if mask is not None and not fill_after:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = scores.softmax(dim=softmax_dim)
    if mask is not None and fill_after:
        weights = weights.masked_fill(mask, 0.0)
    return weights @ v, weights


def _no_mask(q, k, v):
    return _attention(q, k, v, math.sqrt(q.shape[-1]), None)


def _mask_reversed(q, k, v):
    return _attention(q, k, v, math.sqrt(q.shape[-1]), _future(q.shape[-2], q.device).T)


def _mask_hides_diagonal(q, k, v):
    return _attention(q, k, v, math.sqrt(q.shape[-1]), _future(q.shape[-2], q.device, diagonal=0))


def _no_scaling(q, k, v):
    return _attention(q, k, v, 1.0, _future(q.shape[-2], q.device))


def _softmax_over_queries(q, k, v):
    return _attention(q, k, v, math.sqrt(q.shape[-1]), _future(q.shape[-2], q.device), softmax_dim=-2)


def _mask_after_softmax(q, k, v):
    return _attention(q, k, v, math.sqrt(q.shape[-1]), _future(q.shape[-2], q.device), fill_after=True)


def _attention_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(2)
    cases = []
    for batch, heads, length, dim in ((2, 2, 5, 4), (1, 3, 3, 8)):
        q, k, v = (2 * torch.randn(batch, heads, length, dim, generator=generator) for _ in range(3))
        cases.append(Case(f"q, k, v of shape [{batch}, {heads}, {length}, {dim}]", {"q": q, "k": k, "v": v}))
    return cases


def _future_share(case: Case) -> dict:
    _, weights = _no_mask(**case.inputs)
    future = _future(weights.shape[-1], weights.device)
    return {"leak": float((weights * future).sum(dim=-1).mean())}


def _row_sum(case: Case) -> dict:
    _, weights = _mask_after_softmax(**case.inputs)
    return {"row_sum": float(weights.sum(dim=-1).mean())}


def _sqrt_d(case: Case) -> dict:
    return {"dim": case.inputs["q"].shape[-1], "sqrt_d": math.sqrt(case.inputs["q"].shape[-1])}


MASKED_ATTENTION = register(Exercise(
    notebook=NOTEBOOK,
    reference=masked_attention,
    cases=_attention_cases,
    returns=(Output("mixed", "[B, heads, L, d]"), Output("weights", "[B, heads, L, L]")),
    differentiable=("q", "k", "v"),
    mistakes=[
        Mistake("no_mask", _no_mask,
                "tokens attend to tokens after them: on average {leak:.0%} of a token's attention goes to the future. "
                "Before the softmax, fill the scores above the diagonal (key after query) with -inf.", _future_share),
        Mistake("mask_reversed", _mask_reversed,
                "the mask is reversed: each token sees itself and the tokens after it, never the ones before. Mask "
                "where the key comes after the query: torch.ones(L, L, dtype=torch.bool).triu(1)."),
        Mistake("mask_hides_diagonal", _mask_hides_diagonal,
                "the mask hides the diagonal too, so the first token can attend to nothing and its weights are NaN. "
                "A token may attend to itself: mask strictly above the diagonal, .triu(1)."),
        Mistake("no_scaling", _no_scaling,
                "the scores are not divided by sqrt(d) = sqrt({dim}) = {sqrt_d:.2f}, so the softmax comes out too sharp "
                "(and grows sharper with wider heads). Divide q @ k.transpose(-2, -1) by math.sqrt(q.shape[-1]).", _sqrt_d),
        Mistake("softmax_over_queries", _softmax_over_queries,
                "the softmax runs over the queries (dim=-2), so each column sums to 1. Each query distributes its "
                "attention over the keys: softmax(dim=-1), so that every row sums to 1."),
        Mistake("mask_after_softmax", _mask_after_softmax,
                "the future is zeroed after the softmax, so the rows no longer sum to 1 (on average they sum to "
                "{row_sum:.2f}). Fill the *scores* with -inf before the softmax instead.", _row_sum),
    ],
    verifies="the future is masked with -inf before a softmax over the keys, the diagonal stays visible, "
             "scores are divided by sqrt(d), and the values are mixed with those weights",
    hints=[
        "scores = q @ k.transpose(-2, -1) has shape [B, heads, L, L]: row i holds query i's score for every key.",
        "A boolean [L, L] matrix that is True above the diagonal marks the keys in each query's future: "
        "torch.ones(L, L, dtype=torch.bool).triu(1). scores.masked_fill(that, float('-inf')) hides them.",
        "Divide the scores by math.sqrt(q.shape[-1]) before masking, softmax over dim=-1, and return "
        "(weights @ v, weights).",
    ],
))


def check_masked_attention(function):
    """Check notebook 02's masked_attention(q, k, v) -> (mixed, weights); returns the function to go on with."""
    return check("masked_attention", function)


# ---------------------------------------------------------------------------------------------
# pool_at_eot(hidden, tokens, eot_token_id) -> [B, width]

SOT, EOT, ABOVE_EOT = 10, 9, 11  # crafted ids: the end token is *not* the largest id, as in some tokenizers


def pool_at_eot(hidden: torch.Tensor, tokens: torch.Tensor, eot_token_id: int) -> torch.Tensor:
    eot_positions = (tokens == eot_token_id).int().argmax(dim=-1)  # [B]
    return hidden[torch.arange(len(tokens)), eot_positions]  # [B, width]


def _rows(hidden, positions):
    return hidden[torch.arange(len(hidden)), positions]


def _last_position(hidden, tokens, eot_token_id):
    return hidden[:, -1]


def _first_position(hidden, tokens, eot_token_id):
    return hidden[:, 0]


def _mean_of_all(hidden, tokens, eot_token_id):
    return hidden.mean(dim=1)


def _mean_of_caption(hidden, tokens, eot_token_id):
    present = (tokens != 0).float()[..., None]  # [B, L] -> [B, L, 1]
    return (hidden * present).sum(dim=1) / present.sum(dim=1)


def _largest_id(hidden, tokens, eot_token_id):
    return _rows(hidden, tokens.argmax(dim=-1))


def _one_before_eot(hidden, tokens, eot_token_id):
    return _rows(hidden, (tokens == eot_token_id).int().argmax(dim=-1) - 1)


def _pooling_cases() -> list[Case]:
    generator = torch.Generator().manual_seed(3)
    rows = (
        [[SOT, 3, 5, EOT, 0, 0, 0], [SOT, ABOVE_EOT, 2, 4, 6, EOT, 0], [SOT, 1, EOT, 0, 0, 0, 0]],
        [[SOT, 1, 2, 3, 4, 5, EOT], [SOT, 7, ABOVE_EOT, EOT, 0, 0, 0]],
    )
    cases = []
    for token_rows in rows:
        tokens = torch.tensor(token_rows)
        hidden = torch.randn(*tokens.shape, 6, generator=generator)
        cases.append(Case(f"{len(tokens)} captions of up to {tokens.shape[1]} tokens (end-of-text id {EOT})",
                          {"hidden": hidden, "tokens": tokens, "eot_token_id": EOT}))
    return cases


POOL_AT_EOT = register(Exercise(
    notebook=NOTEBOOK,
    reference=pool_at_eot,
    cases=_pooling_cases,
    returns=(Output("pooled", "[B, width]"),),
    differentiable=("hidden",),
    mistakes=[
        Mistake("last_position", _last_position,
                "you took the last position of every row, which is padding for every caption shorter than the "
                "context. Each caption's end-of-text token sits at its own position: find it with "
                "(tokens == eot_token_id)."),
        Mistake("first_position", _first_position,
                "you took the first position: the start token, which under the causal mask has seen only itself, "
                "so every caption would get the same vector. Pool at the end-of-text token, which has seen them all."),
        Mistake("mean_of_all", _mean_of_all,
                "you averaged over every position, padding included, so the same caption changes with the "
                "amount of padding. CLIP keeps one state: the one at the end-of-text token."),
        Mistake("mean_of_caption", _mean_of_caption,
                "you averaged the caption's tokens. That is a pooling of its own, but CLIP keeps only the state at the "
                "end-of-text token, which under the causal mask has seen the whole caption: index it per row."),
        Mistake("largest_id", _largest_id,
                f"you located the end token as the largest id in each row (OpenAI's shortcut). Here id {ABOVE_EOT} "
                f"comes after the end token's id {EOT}, as with tokenizers that add tokens: look for "
                "eot_token_id itself, (tokens == eot_token_id).int().argmax(dim=-1)."),
        Mistake("one_before_eot", _one_before_eot,
                "you pooled one position early, at the caption's last word. Pool at the end-of-text token itself."),
    ],
    verifies="each caption is pooled at its own end-of-text token, found by its id (not as the largest id), "
             "whatever the padding",
    hints=[
        "(tokens == eot_token_id) is a boolean [B, L] with one True per row; .int().argmax(dim=-1) gives the "
        "position of that True in each row, shape [B].",
        "Advanced indexing picks one row of hidden per caption: hidden[torch.arange(B), positions] has shape [B, width].",
    ],
))


def check_pool_at_eot(function):
    """Check notebook 02's pool_at_eot(hidden, tokens, eot_token_id) -> [B, width]; returns the function to go on with."""
    return check("pool_at_eot", function)
