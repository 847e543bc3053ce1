"""The text tower: attention against references, the causal mask, eot pooling, padding invariance."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clipkit.config import TextConfig
from clipkit.text_encoder import TextEncoder
from clipkit.transformer import QuickGELU, SelfAttention, Transformer, attention_weights

VOCAB, CONTEXT, EOT = 50, 16, 49


def small_config(**overrides) -> TextConfig:
    return TextConfig(**{"vocab_size": VOCAB, "context_length": CONTEXT, "width": 32, "layers": 2, "heads": 4, **overrides})


def captions(lengths, context=CONTEXT, seed=0) -> torch.Tensor:
    """Rows like a tokenizer writes them: start token, words, end token, zero padding."""
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.zeros(len(lengths), context, dtype=torch.long)
    for row, length in enumerate(lengths):
        tokens[row, 0] = EOT - 1
        tokens[row, 1 : 1 + length] = torch.randint(1, EOT - 1, (length,), generator=generator)
        tokens[row, 1 + length] = EOT
    return tokens


@pytest.fixture
def encoder() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(small_config(), embed_dim=24).eval()


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_matches_a_per_head_loop(causal):
    torch.manual_seed(0)
    attention = SelfAttention(width=16, heads=4, causal=causal)
    x = torch.randn(3, 7, 16)
    q, k, v = attention.qkv(x).split(16, dim=-1)
    heads = []
    for head in range(4):
        part = slice(head * 4, (head + 1) * 4)
        heads.append(attention_weights(q[..., part], k[..., part], causal) @ v[..., part])
    expected = attention.out_proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(attention(x), expected, atol=1e-6, rtol=1e-5)


def test_self_attention_matches_torch_multihead_attention_with_an_additive_causal_mask():
    torch.manual_seed(0)
    attention = SelfAttention(width=16, heads=2, causal=True)
    reference = nn.MultiheadAttention(16, 2, batch_first=True)
    with torch.no_grad():
        reference.in_proj_weight.copy_(attention.qkv.weight)
        reference.in_proj_bias.copy_(attention.qkv.bias)
        reference.out_proj.weight.copy_(attention.out_proj.weight)
        reference.out_proj.bias.copy_(attention.out_proj.bias)
    x = torch.randn(2, 9, 16)
    mask = torch.full((9, 9), float("-inf")).triu(1)
    expected = reference(x, x, x, attn_mask=mask, need_weights=False)[0]
    torch.testing.assert_close(attention(x), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("index", ["first", "per_row"])
def test_the_pooled_last_block_gives_the_full_pass_at_the_kept_token_with_the_same_gradients(causal, index):
    torch.manual_seed(0)
    transformer = Transformer(width=16, layers=3, heads=4, causal=causal)
    x = torch.randn(5, 9, 16, requires_grad=True)
    keep = 0 if index == "first" else torch.tensor([8, 0, 3, 5, 8])  # per row, as the end-of-text positions are
    rows = torch.arange(5)
    full = transformer(x)[:, 0] if index == "first" else transformer(x)[rows, keep]  # [B, width]
    pooled = transformer(x, pool_index=keep)
    torch.testing.assert_close(pooled, full, atol=1e-6, rtol=1e-5)
    weights = torch.randn(16)
    full_grads = torch.autograd.grad((full @ weights).sum(), [x, *transformer.parameters()])
    pooled_grads = torch.autograd.grad((pooled @ weights).sum(), [x, *transformer.parameters()])
    for expected, actual in zip(full_grads, pooled_grads):
        torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-4)


def test_the_encoders_pool_through_the_short_last_block_and_agree_with_their_per_token_features(encoder):
    tokens = captions([1, 6, 3, 9])
    hidden = encoder.hidden_states(tokens)  # the full pass over every token
    expected = encoder.projection(hidden[torch.arange(4), encoder.eot_positions(tokens)])
    torch.testing.assert_close(encoder(tokens), expected, atol=1e-6, rtol=1e-5)


def test_attention_weights_are_causal_rows_of_probabilities():
    q, k = torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    weights = attention_weights(q, k, causal=True)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 5))
    assert torch.all(weights.triu(1) == 0)


def test_changing_a_later_token_leaves_earlier_hidden_states_unchanged(encoder):
    tokens = captions([10, 10])
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] % (EOT - 2)) + 1  # another ordinary word
    before, after = encoder.hidden_states(tokens), encoder.hidden_states(changed)
    torch.testing.assert_close(after[:, :6], before[:, :6], atol=1e-6, rtol=0)
    assert (after[:, 6:] - before[:, 6:]).abs().amax() > 1e-4  # later positions do see the change


def test_padding_does_not_change_the_pooled_embedding(encoder):
    tokens = captions([3, 7, 1])
    short = tokens[:, :10]  # the same captions with less padding
    noisy = tokens.clone()
    for row, end in enumerate((tokens == EOT).int().argmax(-1).tolist()):
        noisy[row, end + 1 :] = torch.randint(1, EOT - 1, (CONTEXT - end - 1,))  # garbage after eot
    full = encoder(tokens)
    torch.testing.assert_close(encoder(short), full, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(encoder(noisy), full, atol=1e-6, rtol=1e-5)


def test_pooling_picks_the_final_state_at_the_end_token_then_projects(encoder):
    tokens = captions([2, 5])
    hidden = encoder.hidden_states(tokens)
    ends = [(row == EOT).nonzero()[0, 0].item() for row in tokens]
    expected = torch.stack([hidden[i, end] for i, end in enumerate(ends)]) @ encoder.projection.weight.T
    torch.testing.assert_close(encoder(tokens), expected)


def test_eot_pooling_finds_the_end_token_even_when_a_larger_id_comes_first():
    torch.manual_seed(0)
    config = small_config(eot_token_id=5)  # a tokenizer whose end token is not the largest id
    encoder = TextEncoder(config, embed_dim=8).eval()
    tokens = torch.tensor([[1, 40, 30, 5, 0, 0]])
    assert encoder.eot_positions(tokens).tolist() == [3]
    argmax_encoder = TextEncoder(small_config(eot_token_id=5, pool="argmax"), embed_dim=8)
    assert argmax_encoder.eot_positions(tokens).tolist() == [1]  # OpenAI's shortcut gets it wrong here


def test_eot_defaults_to_the_last_vocabulary_id_like_the_tokenizers():
    assert small_config().resolved_eot_token_id == VOCAB - 1
    assert small_config(eot_token_id=3).resolved_eot_token_id == 3


def test_pooling_is_a_small_overridable_method():
    class MeanPooled(TextEncoder):
        def pool(self, hidden, tokens):
            keep = (tokens != 0).unsqueeze(-1).to(hidden.dtype)  # [B, L] -> [B, L, 1]
            return (hidden * keep).sum(1) / keep.sum(1)

    torch.manual_seed(0)
    encoder = MeanPooled(small_config(), embed_dim=8)
    tokens = captions([4])
    hidden = encoder.hidden_states(tokens)[0, :6]
    torch.testing.assert_close(encoder(tokens)[0], encoder.projection(hidden.mean(0)))


@pytest.mark.parametrize(
    "tokens, message",
    [
        (torch.zeros(2, CONTEXT + 1, dtype=torch.long), "context length"),
        (torch.full((1, 4), VOCAB, dtype=torch.long), "vocabulary"),
        (torch.ones(1, 4, dtype=torch.long), "end-of-text"),
        (torch.ones(4, dtype=torch.long), "shape"),
        (torch.ones(1, 4), "integer"),
    ],
)
def test_bad_tokens_get_errors_that_name_the_problem(encoder, tokens, message):
    with pytest.raises(ValueError, match=message):
        encoder(tokens)


def test_quick_gelu_matches_open_clip_and_its_formula():
    from open_clip.transformer import QuickGELU as OpenCLIPQuickGELU

    x = torch.linspace(-5, 5, 101)
    torch.testing.assert_close(QuickGELU()(x), OpenCLIPQuickGELU()(x))
    torch.testing.assert_close(QuickGELU()(x), x / (1 + torch.exp(-1.702 * x)))


def test_unknown_activation_and_pooling_are_refused():
    with pytest.raises(ValueError, match="activation"):
        TextEncoder(small_config(act="relu6"), embed_dim=8)
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(small_config(pool="cls"), embed_dim=8)
    with pytest.raises(ValueError, match="divisible"):
        Transformer(width=30, layers=1, heads=4)


def test_initial_residual_branches_keep_the_stream_scale_and_gradients_are_finite(encoder):
    tokens = captions([5, 9, 2, 12])
    encoder.train()
    embeddings = encoder(tokens)
    F.normalize(embeddings, dim=-1).sum().backward()
    for name, parameter in encoder.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    # Output projections start at std width^-1/2 / sqrt(2 * layers), the fc input at (2 width)^-1/2.
    block = encoder.transformer.blocks[0]
    assert math.isclose(block.attention.out_proj.weight.std().item(), 32**-0.5 / 2, rel_tol=0.15)
    assert math.isclose(block.mlp.fc_in.weight.std().item(), 64**-0.5, rel_tol=0.15)


@pytest.mark.parametrize("pool", ["eot", "argmax"])
def test_trailing_padding_is_dropped_without_changing_an_embedding(pool):
    from clipkit.text_encoder import trim_padding

    torch.manual_seed(0)
    encoder = TextEncoder(small_config(pool=pool), embed_dim=8).eval()
    tokens = captions([3, 7, 5])  # the longest row ends at column 8 of 16
    assert trim_padding(tokens).shape == (3, 9) and torch.equal(trim_padding(tokens), tokens[:, :9])
    full = tokens.clone()
    full[:, -1] = 1  # a token in the last column: nothing can be dropped
    assert torch.equal(trim_padding(full), full)
    with torch.no_grad():  # the reference: every column through the tower, pooled by hand
        hidden = encoder.hidden_states(tokens)
        reference = encoder.projection(hidden[torch.arange(3), encoder.eot_positions(tokens)])
        torch.testing.assert_close(encoder(tokens), reference, rtol=1e-5, atol=1e-6)
