"""Tokenizers: text -> fixed-length rows of token ids, as CLIP's text encoder reads them.

Four tokenizers share one interface (see DEVELOPERS.md):
- `WordTokenizer`: one id per word seen in the captions, `<unk>` for the rest. The simplest thing
  that works on a small closed vocabulary like the shapes world's.
- `BPETokenizer`: byte-level byte-pair encoding trained on the captions (after minbpe). Every
  string encodes, unknown words included, as pieces learnt from frequent byte pairs.
- `OpenCLIPTokenizer`: open_clip's 49,408-token BPE, for pretrained models.
- `SentenceTokenizer`: a sentence model's WordPiece (BERT's layout: [CLS] ids [SEP], padded with
  0), for LiT's frozen text tower (`clipkit.lit`).

Layout of ids (SentenceTokenizer keeps BERT's), mirroring open_clip so code written for one works for all: 0 pads, the start token
is `vocab_size - 2` and the end token `vocab_size - 1` (the largest id, like open_clip's 49407).
A row is `[sot, ids..., eot, 0, 0, ...]`; a text too long keeps its first ids and ends with eot,
so the text encoder, which pools at the end token (the row's argmax), always finds it.
"""

from __future__ import annotations

import difflib
import functools
import re
import warnings
from collections import Counter
from typing import Iterable, Sequence

import torch


class TextTruncatedWarning(UserWarning):
    """Some texts were longer than the context length and were cut."""


class Tokenizer:
    """What every tokenizer shares: special ids, batching with padding and truncation, specs."""

    kind = "base"
    pad_token_id = 0
    vocab_size: int
    context_length: int

    @property
    def sot_token_id(self) -> int:
        return self.vocab_size - 2

    @property
    def eot_token_id(self) -> int:
        return self.vocab_size - 1

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, without start or end tokens."""
        raise NotImplementedError

    def decode(self, ids: Iterable[int]) -> str:
        """Text of `ids`; padding, start and end tokens are skipped."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """A JSON-ready spec that `build_tokenizer` turns back into this tokenizer."""
        raise NotImplementedError

    def unknown_words(self, texts: Sequence[str]) -> list[str]:
        """Words of `texts` this tokenizer would read as "unknown", sorted. Byte-level tokenizers
        spell out any word, so only word-level ones ever return some."""
        return []

    def pieces(self, text: str) -> list[str]:
        """The text of each token of `text`: shows how the tokenizer cuts it."""
        return [self.decode([token]) for token in self.encode(text)]

    def _content_ids(self, ids: Iterable[int]) -> list[int]:
        """`ids` as ints without padding, start and end tokens; an id outside the vocabulary is an error."""
        special = {self.pad_token_id, self.sot_token_id, self.eot_token_id}
        kept = []
        for token in ids:
            token = int(token)
            if not 0 <= token < self.vocab_size:
                raise ValueError(f"token id {token} is outside this vocabulary of {self.vocab_size}")
            if token not in special:
                kept.append(token)
        return kept

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> torch.Tensor:
        """LongTensor [B, L]: start token, ids, end token, zero padding; too-long texts cut with a warning."""
        if isinstance(texts, str):
            texts = [texts]
        length = context_length or self.context_length
        if length < 2:
            raise ValueError(f"context_length must be at least 2 (start and end tokens), got {length}")
        rows, cut = [], 0
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"tokenizers take strings, got {type(text).__name__}: {text!r}")
            ids = [self.sot_token_id] + self.encode(text) + [self.eot_token_id]
            if len(ids) > length:
                ids = ids[: length - 1] + [self.eot_token_id]
                cut += 1
            rows.append(ids + [self.pad_token_id] * (length - len(ids)))
        if cut:
            warnings.warn(
                f"{cut} of {len(texts)} texts were longer than the context length ({length} tokens) and were "
                "cut, keeping the end token last; pass a larger context_length to keep them whole",
                TextTruncatedWarning,
                stacklevel=2,
            )
        return torch.tensor(rows, dtype=torch.long).view(len(rows), length)  # [B * L] rows -> [B, L], also for B = 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size}, context_length={self.context_length})"


def _normalise(text: str, lowercase: bool) -> str:
    """Collapse runs of whitespace, trim, and lower-case when asked (CLIP captions ignore case)."""
    text = " ".join(text.split())
    return text.lower() if lowercase else text


# Words (letters and digits, with inner apostrophes or hyphens: "t-shirt", "don't") or single marks.
_WORD = re.compile(r"\w+(?:['\-]\w+)*|[^\w\s]")
_SPACE_BEFORE_MARK = re.compile(r" (?=[,.;:!?)\]])")


class WordTokenizer(Tokenizer):
    """One id per known word; ids are ordered by frequency in the captions it was fitted on."""

    kind = "word"
    unk_token_id = 1
    special_tokens = ("<pad>", "<unk>")  # ids 0 and 1; "<start_of_text>", "<end_of_text>" come last

    def __init__(self, words: Sequence[str], context_length: int = 32, lowercase: bool = True):
        words = list(words)
        duplicates = sorted(w for w, count in Counter(words).items() if count > 1)
        if duplicates:
            raise ValueError(f"the word list repeats {duplicates[:5]}; give each word once")
        self.words = words
        self.context_length = context_length
        self.lowercase = lowercase
        self.vocab = list(self.special_tokens) + words + ["<start_of_text>", "<end_of_text>"]
        self.vocab_size = len(self.vocab)
        self._ids = {word: index for index, word in enumerate(self.vocab) if index >= len(self.special_tokens)}

    @classmethod
    def fit(
        cls,
        captions: Iterable[str],
        min_count: int = 1,
        max_words: int | None = None,
        context_length: int = 32,
        lowercase: bool = True,
    ) -> WordTokenizer:
        """Keep words seen at least `min_count` times (the `max_words` most frequent); the rest become <unk>."""
        counts = Counter(word for caption in captions for word in _WORD.findall(_normalise(caption, lowercase)))
        ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
        return cls(ranked[:max_words], context_length=context_length, lowercase=lowercase)

    def split(self, text: str) -> list[str]:
        """The words of `text`, as the tokenizer sees them."""
        return _WORD.findall(_normalise(text, self.lowercase))

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(word, self.unk_token_id) for word in self.split(text)]

    def unknown_words(self, texts: Sequence[str]) -> list[str]:
        return sorted({word for text in texts for word in self.split(text) if word not in self._ids})

    def decode(self, ids: Iterable[int]) -> str:
        words = [self.vocab[token] for token in self._content_ids(ids)]
        return _SPACE_BEFORE_MARK.sub("", " ".join(words))

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "context_length": self.context_length,
            "lowercase": self.lowercase,
            "words": list(self.words),
        }


# GPT-2's pre-split (stdlib `re` version): words with their leading space, numbers, runs of marks,
# whitespace. Merges never cross these chunks, so "red circle" cannot become one token.
_CHUNK = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+")
_BYTE_OFFSET = 1  # byte b has id b + 1: id 0 is padding
_FIRST_MERGE_ID = 256 + _BYTE_OFFSET


def _merge(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """Replace every occurrence of `pair` in `ids` by `new_id`, left to right."""
    merged, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            merged.append(new_id)
            i += 2
        else:
            merged.append(ids[i])
            i += 1
    return merged


class BPETokenizer(Tokenizer):
    """Byte-level BPE: ids 1-256 are the bytes, then one id per learnt merge, then sot and eot."""

    kind = "bpe"
    _CACHE_LIMIT = 100_000  # chunks remembered by `encode`; a long text repeats words, so each is merged once

    def __init__(self, merges: Sequence[tuple[int, int]], context_length: int = 32, lowercase: bool = True):
        self.merges = [tuple(int(i) for i in pair) for pair in merges]
        self.context_length = context_length
        self.lowercase = lowercase
        self.vocab_size = _FIRST_MERGE_ID + len(self.merges) + 2
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.token_bytes = [b""] + [bytes([b]) for b in range(256)]
        for rank, (left, right) in enumerate(self.merges):
            if not (0 < left < _FIRST_MERGE_ID + rank and 0 < right < _FIRST_MERGE_ID + rank):
                raise ValueError(f"merge {rank} ({left}, {right}) refers to a token not yet defined")
            self.token_bytes.append(self.token_bytes[left] + self.token_bytes[right])
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, context_length: int = 32, lowercase: bool = True
    ) -> BPETokenizer:
        """Learn `vocab_size - 259` merges (259 = padding, 256 bytes, start, end), most frequent pair first.

        Stops early when no pair is left to merge (then `vocab_size` is smaller than asked).
        """
        minimum = _FIRST_MERGE_ID + 2
        if vocab_size < minimum:
            raise ValueError(
                f"vocab_size must be at least {minimum} (padding, 256 bytes, start, end), got {vocab_size}"
            )
        # Count each distinct chunk once with its frequency: captions repeat the same few words.
        chunk_counts = Counter(chunk for text in texts for chunk in _CHUNK.findall(_normalise(text, lowercase)))
        words = [[b + _BYTE_OFFSET for b in chunk.encode("utf-8")] for chunk in chunk_counts]
        frequencies = list(chunk_counts.values())
        merges = []
        for new_id in range(_FIRST_MERGE_ID, vocab_size - 2):
            pair_counts: Counter = Counter()
            for ids, frequency in zip(words, frequencies):
                for pair in zip(ids, ids[1:]):
                    pair_counts[pair] += frequency
            if not pair_counts:
                break
            # Most frequent pair; ties go to the smallest ids so training is deterministic.
            best = max(pair_counts, key=lambda pair: (pair_counts[pair], -pair[0], -pair[1]))
            words = [_merge(ids, best, new_id) for ids in words]
            merges.append(best)
        return cls(merges, context_length=context_length, lowercase=lowercase)

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = [b + _BYTE_OFFSET for b in chunk.encode("utf-8")]
        while len(ids) >= 2:
            # Apply merges in the order they were learnt: the earliest one present goes first.
            pair = min(zip(ids, ids[1:]), key=lambda p: self.ranks.get(p, len(self.ranks)))
            if pair not in self.ranks:
                break
            ids = _merge(ids, pair, _FIRST_MERGE_ID + self.ranks[pair])
        return ids

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for chunk in _CHUNK.findall(_normalise(text, self.lowercase)):
            cached = self._cache.get(chunk)
            if cached is None:
                cached = self._encode_chunk(chunk)
                if len(self._cache) < self._CACHE_LIMIT:
                    self._cache[chunk] = cached
            ids.extend(cached)
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        pieces = b"".join(self.token_bytes[token] for token in self._content_ids(ids))
        return pieces.decode("utf-8", errors="replace")  # a token can end inside a multi-byte character

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "context_length": self.context_length,
            "lowercase": self.lowercase,
            "merges": [list(pair) for pair in self.merges],
        }


@functools.lru_cache(maxsize=1)
def _open_clip_simple_tokenizer():
    """open_clip's tokenizer, loaded once: reading its BPE vocabulary takes a moment."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer()


class OpenCLIPTokenizer(Tokenizer):
    """open_clip's BPE tokenizer (the one OpenAI's CLIP uses) behind the clipkit interface.

    Rows equal `open_clip.tokenize(texts, context_length)`; text is cleaned and lower-cased by open_clip.
    """

    kind = "open_clip"

    def __init__(self, context_length: int = 77):
        self._tokenizer = _open_clip_simple_tokenizer()
        self.context_length = context_length
        self.vocab_size = len(self._tokenizer.encoder)
        if (self._tokenizer.sot_token_id, self._tokenizer.eot_token_id) != (self.sot_token_id, self.eot_token_id):
            raise RuntimeError(
                "this open_clip version places its start/end tokens elsewhere; clipkit expects the last two ids"
            )

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text)

    def decode(self, ids: Iterable[int]) -> str:
        kept = self._content_ids(ids)
        # open_clip puts a space after every token, marks included: "a circle , coloured red".
        return _SPACE_BEFORE_MARK.sub("", self._tokenizer.decode(kept).strip())

    def to_dict(self) -> dict:
        return {"kind": self.kind, "context_length": self.context_length}


def build_tokenizer(spec: dict) -> Tokenizer:
    """Rebuild a tokenizer from its `to_dict()` spec (as checkpoints store it)."""
    if not isinstance(spec, dict) or "kind" not in spec:
        raise ValueError(
            f"a tokenizer spec is a dict with a 'kind' key, as Tokenizer.to_dict() writes; got {spec!r:.200}"
        )
    options = {key: value for key, value in spec.items() if key != "kind"}
    kind = spec["kind"]
    if kind == WordTokenizer.kind:
        return WordTokenizer(**options)
    if kind == BPETokenizer.kind:
        return BPETokenizer(**options)
    if kind == OpenCLIPTokenizer.kind:
        return OpenCLIPTokenizer(**options)
    raise ValueError(f"unknown tokenizer kind {kind!r}; known kinds: 'word', 'bpe', 'open_clip'")


def unknown_words_message(tokenizer: Tokenizer, unknown: Sequence[str]) -> str:
    """One paragraph for people: which words the model cannot read, close ones it can, examples."""
    known_words = list(getattr(tokenizer, "words", []))
    # Frequent content words say more about the vocabulary than "a", "of" or punctuation.
    examples = [word for word in known_words if word.isalpha() and len(word) > 3][:12]
    hints = []
    for word in unknown:
        close = difflib.get_close_matches(word, known_words, n=3)
        if close:
            hints.append(f"{word!r}: did you mean {', '.join(close)}?")
    return (
        f"the model's word-level tokenizer does not know {list(unknown)}, which it would read as <unk> "
        "(a token meaning 'some word I never saw'). "
        + (" ".join(hints) + " " if hints else "")
        + f"Use words it knows, e.g. {', '.join(examples)} ({len(known_words)} words in all)."
    )


def check_known_words(tokenizer: Tokenizer, texts: Sequence[str]) -> None:
    """Refuse texts with words a word-level tokenizer would read as <unk> (they would steer or
    classify towards nothing in particular), naming the unknown words and some the model knows."""
    unknown = tokenizer.unknown_words(list(texts))
    if unknown:
        raise ValueError(unknown_words_message(tokenizer, unknown))


class SentenceTokenizer(Tokenizer):
    """A Hugging Face WordPiece tokenizer (a sentence model's, as LiT's frozen text tower reads it)
    behind the clipkit interface: rows [CLS] ids [SEP] 0 0 ...

    BERT pads with id 0 as clipkit does, so `tokens != 0` is the attention mask; [CLS] and [SEP]
    play the start and end tokens. Too-long texts are cut with the usual TextTruncatedWarning.
    """

    kind = "sentence_transformers"
    start_token = "cls_token_id"  # the wrapped tokenizer's attribute that plays the start token
    end_token = "sep_token_id"  # ... and the end token
    pads_with_zero = True  # the wrapped tokenizer must pad with 0, so `tokens != 0` is the attention mask

    def __init__(self, hf_tokenizer, context_length: int = 32, source: str | None = None):
        if self.pads_with_zero and hf_tokenizer.pad_token_id != self.pad_token_id:
            raise ValueError(f"this tokenizer pads with id {hf_tokenizer.pad_token_id}; SentenceTokenizer needs padding id 0")
        self._tokenizer = hf_tokenizer
        self.vocab_size = len(hf_tokenizer)
        self.context_length = context_length
        self.source = source

    @property
    def sot_token_id(self) -> int:
        return getattr(self._tokenizer, self.start_token)

    @property
    def eot_token_id(self) -> int:
        return getattr(self._tokenizer, self.end_token)

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids) -> str:
        return self._tokenizer.decode(self._content_ids(ids))

    def to_dict(self) -> dict:
        return {"kind": self.kind, "context_length": self.context_length, "source": self.source}
