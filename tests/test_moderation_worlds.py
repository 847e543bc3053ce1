"""clipkit.moderation.worlds: the shapes toy policy's exact labels, the emoji sets with skin tone as the group."""

from __future__ import annotations

import re

import pytest
import torch

from clipkit.data import emoji
from clipkit.moderation import Policy, PolicyScorer, Rule
from clipkit.moderation.worlds import (
    EMOJI_COUNTERS, EMOJI_POLICY, NO_TONE, SHAPES_POLICY, TEST_BACKGROUNDS, TRAINING_BACKGROUNDS, VALIDATION_BACKGROUNDS,
    ModerationSet, concat, emoji_moderation_set, emoji_training_pairs, shapes_moderation_set, split_renders, with_counters,
)

FONT = next((p for p in emoji.FONT_PATHS if p.is_file()), None)
needs_font = pytest.mark.skipif(FONT is None, reason="needs the Debian package fonts-noto-color-emoji")


def test_shapes_labels_follow_the_scenes_and_the_captions(world32):
    data = shapes_moderation_set(world32, 60, seed=2)
    labels = data.label_matrix(SHAPES_POLICY)
    assert labels.shape == (60, 2) and labels[:, 0].any() and not labels[:, 0].all()
    for caption, (red, star) in zip(data.captions, labels.tolist()):
        words = set(re.findall(r"[a-z]+", caption))
        assert red == ("red" in words) and star == ("star" in words), caption
    assert set(data.groups) <= {"small", "large"}
    with pytest.raises(KeyError, match="weapons"):
        data.label_matrix(EMOJI_POLICY)


def test_embedded_sets_score_like_the_images(tiny_word_clip, world32):
    data = shapes_moderation_set(world32, 10, seed=3).embedded(tiny_word_clip)
    scorer = PolicyScorer(tiny_word_clip, SHAPES_POLICY)
    torch.testing.assert_close(scorer.score_embeddings(data.embeddings), scorer.score_images(data.images))
    part = data.subset(torch.tensor([True, False] * 5))
    assert len(part) == 5 and torch.equal(part.embeddings, data.embeddings[::2]) and part.captions == data.captions[::2]


def test_with_counters_adds_counter_descriptions_once():
    changed = with_counters(EMOJI_POLICY, EMOJI_COUNTERS)
    for rule in changed.rules:
        assert rule.counter == EMOJI_COUNTERS[rule.name] and rule.descriptions == EMOJI_POLICY.rule(rule.name).descriptions
    assert with_counters(changed, EMOJI_COUNTERS) == changed
    policy = Policy(rules=(Rule("x", ("a gun",), counter=("a hand",)),))
    assert with_counters(policy, {"x": ("a hand", "a toy")}).rules[0].counter == ("a hand", "a toy")


@pytest.fixture(scope="module")
def emoji_cache(tmp_path_factory):
    """One cache for this module's tests: each renders the same 16 px emoji on white (seconds), once."""
    return tmp_path_factory.mktemp("emoji-cache")


def _renders(names: int, backgrounds: int) -> ModerationSet:
    """`names` pictures, each rendered on `backgrounds` backgrounds (pixel value = background), as emoji_moderation_set lays them out."""
    images = torch.arange(backgrounds).repeat_interleave(names).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).to(torch.uint8)
    captions = [f"emoji {i}" for i in range(names)] * backgrounds
    labels = {"weapons": torch.tensor([i % 3 == 0 for i in range(names)] * backgrounds)}
    return ModerationSet(images.contiguous(), captions, labels, ["none"] * len(captions), torch.randn(len(captions), 4))


@pytest.mark.parametrize("backgrounds", [2, 3, 4])
def test_split_renders_gives_each_side_every_picture_on_a_random_half_of_its_backgrounds(backgrounds):
    data = _renders(names=40, backgrounds=backgrounds)
    validation, test = split_renders(data, seed=0)
    assert len(validation) + len(test) == len(data)
    # every render lands on exactly one side (image and embedding travel together)
    pairs = {(c, int(i[0, 0, 0])) for c, i in zip(validation.captions + test.captions, torch.cat([validation.images, test.images]))}
    assert len(pairs) == len(data)
    for side in (validation, test):
        index = [data.captions.index(c) + 40 * int(i[0, 0, 0]) for c, i in zip(side.captions, side.images)]
        torch.testing.assert_close(side.embeddings, data.embeddings[index])
        assert torch.equal(side.labels["weapons"], data.labels["weapons"][index])
    # each side holds every picture, on half its backgrounds (the odd one out alternating)
    for caption in set(data.captions):
        assert validation.captions.count(caption) + test.captions.count(caption) == backgrounds
        assert backgrounds // 2 <= validation.captions.count(caption) <= (backgrounds + 1) // 2
    assert abs(len(validation) - len(test)) <= 1
    # which backgrounds go where is random: not always the first ones, and the same for the same seed
    chosen = [int(i[0, 0, 0]) for i in validation.images]
    assert len(set(chosen)) == backgrounds
    again, _ = split_renders(data, seed=0)
    other, _ = split_renders(data, seed=1)
    assert torch.equal(again.images, validation.images) and not torch.equal(other.images, validation.images)


def test_concat_keeps_embeddings_only_when_every_part_has_them():
    a, b = _renders(4, 1), _renders(3, 1)
    joined = concat([a, b])
    torch.testing.assert_close(joined.embeddings, torch.cat([a.embeddings, b.embeddings]))
    assert concat([a, ModerationSet(b.images, b.captions, b.labels, b.groups)]).embeddings is None


@needs_font
def test_emoji_set_holds_every_emoji_once_with_tones_as_groups(emoji_cache, monkeypatch):
    monkeypatch.setenv("CLIPKIT_CACHE_DIR", str(emoji_cache))
    monkeypatch.delenv(emoji.FONT_ENV, raising=False)
    data = emoji_moderation_set(16, backgrounds=((255, 255, 255),))
    assert len(set(data.captions)) == len(data) and data.images.shape[1:] == (3, 16, 16)
    tones = [g for g in data.groups if g != NO_TONE]
    assert set(tones) == set(emoji.SKIN_TONES) and len(tones) % 6 == 0
    labels = data.label_matrix(EMOJI_POLICY)
    assert labels.sum(0).tolist()[:2] == [len(emoji.LABEL_SETS["weapons"]), len(emoji.LABEL_SETS["alcohol and tobacco"])]
    plain = data.without_tones()
    assert set(plain.groups) == {"default", NO_TONE} and len(plain) == len(data) - 5 * len(tones) // 6


@needs_font
def test_training_pairs_name_every_tone_and_share_a_label_per_name(emoji_cache, monkeypatch):
    monkeypatch.setenv("CLIPKIT_CACHE_DIR", str(emoji_cache))
    monkeypatch.delenv(emoji.FONT_ENV, raising=False)
    # the model must never train on a rendering that calibration or the test uses
    assert not set(TRAINING_BACKGROUNDS) & (set(VALIDATION_BACKGROUNDS) | set(TEST_BACKGROUNDS))
    white = ((255, 255, 255),)  # the other test's renders, from the shared cache
    pairs = emoji_training_pairs(16, backgrounds=white)
    plain, toned = emoji.load_emoji(16, background=white[0]), emoji.load_skin_tone_emoji(16, background=white[0])
    assert len(pairs) == len(plain) + len(toned)
    assert set(pairs.captions) == set(plain.captions) | set(toned.captions)
    assert any(caption.endswith(": dark skin tone") for caption in pairs.captions)
    # one label per name: the default-tone copy of a plain emoji (same name) is its positive, never a negative
    label_of = {}
    for caption, label in zip(pairs.captions, pairs.labels.tolist()):
        assert label_of.setdefault(caption, label) == label
    assert len(set(label_of.values())) == len(label_of) < len(pairs)
    assert torch.equal(pairs.images[: len(plain)], plain.images)
