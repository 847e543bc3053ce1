"""Emoji: names as captions, at least 1,300 pairs, a safetensors+JSON cache, a clear error without the font."""

import unicodedata

import pytest
import torch

from clipkit.data import EmojiFontNotFoundError, load_emoji
from clipkit.data import emoji

FONT = next((p for p in emoji.FONT_PATHS if p.is_file()), None)
needs_font = pytest.mark.skipif(FONT is None, reason="needs the Debian package fonts-noto-color-emoji")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("emoji-cache")
        patch.setenv("CLIPKIT_CACHE_DIR", str(folder))
        patch.delenv(emoji.FONT_ENV, raising=False)
        yield folder


@pytest.fixture(scope="module")
def rendered(cache):
    return load_emoji(image_size=32)


@needs_font
def test_every_emoji_is_captioned_with_its_unicode_name(rendered):
    assert len(rendered) >= 1300
    assert rendered.images.shape == (len(rendered), 3, 32, 32) and rendered.images.dtype == torch.uint8
    for character, caption in zip(rendered.characters, rendered.captions):
        assert len(character) == 1 and caption == unicodedata.name(character).lower()
    assert len(set(rendered.captions)) == len(rendered)
    assert rendered.labels.tolist() == list(range(len(rendered))) and rendered.class_names == rendered.captions
    assert not any(c.startswith(("regional indicator", "emoji modifier")) for c in rendered.captions)


@needs_font
def test_images_are_centred_pictures_on_the_background(rendered):
    corners = rendered.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 255).float().mean() > 0.9  # a white margin around most glyphs
    per_image_spread = rendered.images.float().flatten(1).std(dim=1)
    assert per_image_spread.min() > 5  # no blank squares


@needs_font
def test_second_load_comes_from_the_cache(rendered, cache, monkeypatch):
    files = sorted(p.name for p in (cache / "emoji").iterdir())
    assert [f.rsplit(".", 1)[-1] for f in files] == ["json", "safetensors"]  # no pickle anywhere

    def no_rendering(*args, **kwargs):
        raise AssertionError("rendered again instead of reading the cache")

    monkeypatch.setattr(emoji, "render_emoji", no_rendering)
    again = load_emoji(image_size=32)
    assert torch.equal(again.images, rendered.images) and again.captions == rendered.captions
    assert again.characters == rendered.characters


@needs_font
def test_a_damaged_cache_is_rebuilt(rendered, cache):
    (tensor_file,) = (cache / "emoji").glob("emoji-32px-*.safetensors")
    tensor_file.write_bytes(b"garbage")
    again = load_emoji(image_size=32)
    assert torch.equal(again.images, rendered.images)


@needs_font
def test_subset_keeps_characters_aligned(rendered):
    part = rendered.subset([5, 1])
    assert part.characters == [rendered.characters[5], rendered.characters[1]]
    assert part.captions == [rendered.captions[5], rendered.captions[1]] and part.labels.tolist() == [5, 1]


def test_missing_font_names_the_package_and_the_override(monkeypatch, tmp_path):
    monkeypatch.delenv(emoji.FONT_ENV, raising=False)
    monkeypatch.setattr(emoji, "FONT_PATHS", (tmp_path / "NotoColorEmoji.ttf",))
    with pytest.raises(EmojiFontNotFoundError) as error:
        load_emoji()
    assert "fonts-noto-color-emoji" in str(error.value) and emoji.FONT_ENV in str(error.value)
    with pytest.raises(EmojiFontNotFoundError, match="does not exist"):
        load_emoji(font_path=tmp_path / "elsewhere.ttf")
    monkeypatch.setenv(emoji.FONT_ENV, str(tmp_path / "nope.ttf"))
    with pytest.raises(EmojiFontNotFoundError, match=emoji.FONT_ENV):
        load_emoji()


def test_a_file_that_is_not_a_colour_font_is_explained(monkeypatch, tmp_path):
    fake = tmp_path / "fake.ttf"
    fake.write_bytes(b"not a font")
    monkeypatch.setenv("CLIPKIT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(EmojiFontNotFoundError, match="fake.ttf cannot be read"):
        load_emoji(font_path=fake)


# --- what moderation needs: label sets and skin tones --------------------------------------------


@pytest.fixture(scope="module")
def toned(cache):
    return emoji.load_skin_tone_emoji(image_size=32)


@needs_font
def test_every_skin_toned_emoji_comes_in_all_six_tones(toned):
    tones = list(emoji.SKIN_TONES)
    assert len(toned) == 6 * len(set(toned.bases)) and len(set(toned.bases)) >= 100
    for start in range(0, len(toned), 6):
        assert toned.tones[start:start + 6] == tones and len(set(toned.bases[start:start + 6])) == 1
        base = toned.characters[start]
        assert [c[len(base):] for c in toned.characters[start:start + 6]] == list(emoji.SKIN_TONES.values())
        assert toned.captions[start] == unicodedata.name(base).lower()
        assert toned.captions[start + 6 - 1] == f"{toned.bases[start]}: dark skin tone"
    # the font really draws each tone: a toned picture differs from the default one
    default, darkest = toned.images[0::6].float(), toned.images[5::6].float()
    assert ((default - darkest).abs().flatten(1).mean(dim=1) > 1).float().mean() > 0.95
    assert {"thumbs up sign", "waving hand sign", "runner"} <= set(toned.bases)


@needs_font
def test_modifier_bases_are_exactly_the_emoji_the_font_draws_as_one_glyph_with_a_tone():
    from PIL import ImageFont

    font = emoji.find_emoji_font()
    face = ImageFont.truetype(str(font), emoji.BITMAP_SIZE)
    bases = set(emoji.modifier_bases(font, face))
    assert "\U0001F44D" in bases and "\U0001F3C3" in bases  # thumbs up, runner
    assert "\U0001F52B" not in bases and "\U0001F600" not in bases  # pistol, grinning face


@needs_font
def test_moderation_labels_pick_the_named_emoji(rendered, toned):
    labels = emoji.moderation_labels(rendered.captions)
    for name, members in emoji.LABEL_SETS.items():
        flagged = {c for c, hit in zip(rendered.captions, labels[name].tolist()) if hit}
        assert flagged == set(members), f"{name}: the font lacks {set(members) - flagged}"
    toned_labels = emoji.moderation_labels(toned.captions)
    assert not toned_labels["weapons"].any() and not toned_labels["alcohol and tobacco"].any()
    people = {b for b, hit in zip(toned.bases, toned_labels["people"].tolist()) if hit}
    assert {"runner", "woman", "baby", "person with folded hands"} <= people
    assert not {"thumbs up sign", "ear", "flexed biceps", "handshake"} & people
    # a tone never changes whether an emoji shows a person
    assert all(len(set(toned_labels["people"][i:i + 6].tolist())) == 1 for i in range(0, len(toned), 6))


def test_is_person_reads_whole_words():
    assert emoji.is_person("woman: dark skin tone") and emoji.is_person("horse racing")
    assert not emoji.is_person("mantelpiece clock") and not emoji.is_person("thumbs up sign")
