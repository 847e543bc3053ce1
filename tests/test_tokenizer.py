"""Tokenizers: the shared interface, round trips, BPE against a naive reference, the open_clip adapter."""

import json
import re
from collections import Counter

import pytest
import torch

from clipkit.data import ShapesWorld
from clipkit.tokenizer import (
    BPETokenizer,
    OpenCLIPTokenizer,
    TextTruncatedWarning,
    WordTokenizer,
    build_tokenizer,
)

CAPTIONS = ShapesWorld().sample(600, seed=0).captions
ODD_TEXTS = [
    "",
    "   ",
    "A Picture   of a RED circle!",
    "an emoji 😀 and ünïcödé, with punctuation: yes?",
    "tabs\tand\nnewlines",
    "numbers 12345 and t-shirts",
]


@pytest.fixture(scope="module")
def word():
    return WordTokenizer.fit(CAPTIONS)


@pytest.fixture(scope="module")
def bpe():
    return BPETokenizer.train(CAPTIONS, vocab_size=360)


@pytest.fixture(scope="module")
def openclip():
    return OpenCLIPTokenizer()


@pytest.fixture(params=["word", "bpe", "openclip"])
def tokenizer(request):
    return request.getfixturevalue(request.param)


def normalised(text):
    return " ".join(text.lower().split())


def test_shared_interface(tokenizer):
    assert tokenizer.pad_token_id == 0
    assert tokenizer.sot_token_id == tokenizer.vocab_size - 2
    assert tokenizer.eot_token_id == tokenizer.vocab_size - 1
    texts = CAPTIONS[:5]
    tokens = tokenizer(texts)
    assert tokens.dtype == torch.long and tokens.shape == (5, tokenizer.context_length)
    for row, text in zip(tokens.tolist(), texts):
        ids = tokenizer.encode(text)
        assert row[: len(ids) + 2] == [tokenizer.sot_token_id] + ids + [tokenizer.eot_token_id]
        assert set(row[len(ids) + 2 :]) <= {0}
        assert row.index(max(row)) == len(ids) + 1  # the end token is the row's argmax, where encoders pool
        assert tokenizer.decode(row) == normalised(text)
    assert tokenizer("one text").shape == (1, tokenizer.context_length)
    assert tokenizer([]).shape == (0, tokenizer.context_length)
    assert tokenizer(texts, context_length=40).shape == (5, 40)


def test_empty_text_is_start_then_end(tokenizer):
    row = tokenizer("")[0].tolist()
    assert row[:2] == [tokenizer.sot_token_id, tokenizer.eot_token_id] and not any(row[2:])


def test_truncation_keeps_the_end_token_last_and_warns_once_with_a_count(tokenizer):
    long_text = " ".join(CAPTIONS[:40])
    texts = [long_text, "a red circle", long_text]
    with pytest.warns(TextTruncatedWarning, match=r"2 of 3 texts") as caught:
        tokens = tokenizer(texts, context_length=12)
    assert len([w for w in caught if issubclass(w.category, TextTruncatedWarning)]) == 1
    ids = tokenizer.encode(long_text)
    assert tokens[0].tolist() == [tokenizer.sot_token_id] + ids[:10] + [tokenizer.eot_token_id]
    assert torch.equal(tokens[0], tokens[2])


@pytest.mark.timeout(60)
def test_a_ten_thousand_word_caption(tokenizer):
    words = re.findall(r"[a-z]+", " ".join(CAPTIONS))
    text = " ".join(words[i % len(words)] + ("s" if i % 7 == 0 else "") for i in range(10_000))
    with pytest.warns(TextTruncatedWarning):
        row = tokenizer(text)[0]
    assert row[-1].item() == tokenizer.eot_token_id
    assert len(tokenizer.encode(text)) >= 10_000


def test_spec_round_trip_through_json(tokenizer):
    spec = json.loads(json.dumps(tokenizer.to_dict()))
    rebuilt = build_tokenizer(spec)
    assert type(rebuilt) is type(tokenizer) and rebuilt.vocab_size == tokenizer.vocab_size
    texts = CAPTIONS[:50] + ODD_TEXTS
    assert torch.equal(rebuilt(texts, context_length=77), tokenizer(texts, context_length=77))


def test_build_tokenizer_explains_bad_specs():
    with pytest.raises(ValueError, match="known kinds"):
        build_tokenizer({"kind": "sentencepiece"})
    with pytest.raises(ValueError, match="'kind'"):
        build_tokenizer({"words": ["a"]})


# -- word tokenizer --------------------------------------------------------------------------


def test_word_vocabulary_matches_a_counter(word):
    counts = Counter(w for c in CAPTIONS for w in re.findall(r"[\w'-]+|[^\w\s]", c.lower()))
    assert set(word.words) == set(counts)
    frequencies = [counts[w] for w in word.words]
    assert frequencies == sorted(frequencies, reverse=True)
    rare = WordTokenizer.fit(CAPTIONS, min_count=20)
    assert set(rare.words) == {w for w, c in counts.items() if c >= 20}
    assert WordTokenizer.fit(CAPTIONS, max_words=5).words == word.words[:5]


def test_word_round_trip_and_unknown_words(word):
    for caption in CAPTIONS:
        assert word.decode(word.encode(caption)) == normalised(caption)
        assert word.unk_token_id not in word.encode(caption)
    ids = word.encode("a glittering red circle")
    assert ids[1] == word.unk_token_id and word.decode(ids) == "a <unk> red circle"
    assert word.split("A T-shirt, isn't it?") == ["a", "t-shirt", ",", "isn't", "it", "?"]
    with pytest.raises(ValueError, match="outside"):
        word.decode([word.vocab_size])


# -- BPE ---------------------------------------------------------------------------------------


def naive_pair_counts(sequences):
    counts = Counter()
    for ids in sequences:
        counts.update(zip(ids, ids[1:]))
    return counts


def naive_merge_all(ids, merges, first_id):
    """Reference encoding: apply every learnt merge, in order, to the whole sequence."""
    for rank, pair in enumerate(merges):
        out, i = [], 0
        while i < len(ids):
            if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                out.append(first_id + rank)
                i += 2
            else:
                out.append(ids[i])
                i += 1
        ids = out
    return ids


def chunks_of(text):
    from clipkit.tokenizer import _CHUNK

    return _CHUNK.findall(normalised(text))


def test_bpe_each_merge_was_the_most_frequent_pair(bpe):
    sequences = [[b + 1 for b in chunk.encode()] for caption in CAPTIONS for chunk in chunks_of(caption)]
    for rank, pair in enumerate(bpe.merges):
        counts = naive_pair_counts(sequences)
        assert counts[pair] == max(counts.values()), rank
        sequences = [naive_merge_all(ids, [pair], 257 + rank) for ids in sequences]
    assert bpe.vocab_size == 360


def test_bpe_encode_matches_applying_merges_in_order(bpe):
    for text in CAPTIONS[:100] + ODD_TEXTS + ["unseen words: zebra quokka"]:
        expected = [i for chunk in chunks_of(text) for i in naive_merge_all([b + 1 for b in chunk.encode()], bpe.merges, 257)]
        assert bpe.encode(text) == expected


def test_bpe_round_trips_any_text_and_compresses_captions(bpe):
    for text in CAPTIONS + ODD_TEXTS:
        assert bpe.decode(bpe.encode(text)) == normalised(text)
    raw_bytes = sum(len(normalised(c).encode()) for c in CAPTIONS)
    assert sum(len(bpe.encode(c)) for c in CAPTIONS) < raw_bytes / 2.5
    assert "".join(bpe.pieces("a red circle")) == "a red circle"


def test_bpe_stops_when_nothing_is_left_to_merge():
    tiny = BPETokenizer.train(["ab ab"], vocab_size=1000)
    assert tiny.vocab_size < 1000 and tiny.decode(tiny.encode("ab ab")) == "ab ab"
    with pytest.raises(ValueError, match="at least 259"):
        BPETokenizer.train(CAPTIONS, vocab_size=100)


def test_bpe_rejects_merges_that_refer_to_unknown_tokens():
    with pytest.raises(ValueError, match="not yet defined"):
        BPETokenizer([(300, 2)])


# -- open_clip adapter -------------------------------------------------------------------------


def test_open_clip_adapter_equals_open_clip(openclip):
    import open_clip

    texts = CAPTIONS[:30] + ODD_TEXTS + ["&amp; html entities &lt;3", " ".join(CAPTIONS[:30])]
    with pytest.warns(TextTruncatedWarning):
        ours = openclip(texts)
    assert torch.equal(ours, open_clip.tokenize(texts))
    assert torch.equal(ours, open_clip.get_tokenizer("ViT-B-32")(texts))
    short = OpenCLIPTokenizer(context_length=16)
    with pytest.warns(TextTruncatedWarning):
        assert torch.equal(short(texts), open_clip.tokenize(texts, context_length=16))
    assert openclip.vocab_size == 49408 and openclip.eot_token_id == 49407
    assert openclip.decode(openclip("a red circle")[0]) == "a red circle"
