"""Prompt templates and the prompt vocabulary, against the construction the data sources used to do themselves."""

from __future__ import annotations

import pytest
import torch

from clipkit.data.shapes import ShapesConfig, ShapesWorld
from clipkit.data.stream import CaptionedSource, ShapesSource, TrainingData
from clipkit.data.transforms import CaptionedImages
from clipkit.prompts import (
    DEFAULT_TEMPLATES,
    TEMPLATES,
    check_templates,
    class_prompts,
    prompt_vocabulary,
    source_templates,
)
from clipkit.tokenizer import WordTokenizer


def test_prompts_fix_articles_before_vowels():
    assert class_prompts(["orange hexagon", "red circle"], "a photo of a {}") == [
        "a photo of an orange hexagon",
        "a photo of a red circle",
    ]


def test_template_lists_are_plain_data():
    for name, templates in TEMPLATES.items():
        assert templates and all(isinstance(t, str) and t.count("{}") == 1 for t in templates), name


@pytest.mark.parametrize("templates", [[], ["no slot"], ["{} and {}"], [3]])
def test_bad_templates_are_refused_with_the_rule(templates):
    with pytest.raises(ValueError, match="template"):
        check_templates(templates)


def toy_set(count: int = 12) -> CaptionedImages:
    images = torch.randint(0, 256, (count, 3, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    names = ["apple", "boot", "umbrella"]
    labels = torch.arange(count) % 3
    return CaptionedImages(images, [f"a photo of my {names[int(i)]} no {n}" for n, i in enumerate(labels)], labels, names)


def test_a_source_is_asked_with_its_own_templates_or_a_named_set_or_the_default():
    world = ShapesWorld(ShapesConfig(image_size=32))
    assert source_templates(ShapesSource(world=world)) == TEMPLATES["shapes"]
    assert source_templates(CaptionedSource(8, toy_set(), name="toy")) == DEFAULT_TEMPLATES
    assert source_templates(CaptionedSource(8, toy_set(), templates=["a {} here"], name="toy")) == ("a {} here",)
    assert source_templates(CaptionedSource(8, toy_set(), templates="fashion-mnist", name="toy")) == TEMPLATES["fashion-mnist"]
    with pytest.raises(ValueError, match="unknown template set"):
        source_templates(CaptionedSource(8, toy_set(), templates="fashion", name="toy"))


def _texts_as_sources_wrote_them(data: TrainingData) -> list[str]:
    """The tokenizer texts as each source's vocabulary() built them before prompts moved out of the
    data layer: captions, then the prompts of every template, then (shapes) the attribute texts."""
    texts = []
    for source in data.sources:
        if isinstance(source, ShapesSource):
            captions = source.world.sample(4000, seed=12345, split="all").captions
            prompts = [p for t in TEMPLATES["shapes"] for p in class_prompts(source.world.class_names, t)]
            texts += captions + prompts + source.attribute_texts
        else:
            # before: CaptionedSource(dataset=None) held TEMPLATES["fashion-mnist"] itself, others theirs or "a {}"
            templates = TEMPLATES[source.templates] if isinstance(source.templates, str) else source.templates or ("a {}",)
            names = source.dataset.class_names or []
            texts += list(source.dataset.captions) + [p for t in templates for p in class_prompts(names, t)]
    return texts


@pytest.mark.parametrize("attributes", [("colour", "shape"), ("colour", "shape", "size", "position")])
def test_the_fitted_word_list_is_what_it_was(attributes):
    world = ShapesWorld(ShapesConfig(image_size=32))
    data = TrainingData([
        ShapesSource(world=world, attributes=attributes),
        CaptionedSource(8, toy_set(), templates=["a photo of a {}", "an {} again"], name="toy"),
    ])
    before = _texts_as_sources_wrote_them(data)
    now = data.vocabulary() + prompt_vocabulary(data)
    assert sorted(now) == sorted(before)  # the same texts, so every count is the same
    fitted_before, fitted_now = WordTokenizer.fit(before), WordTokenizer.fit(now)
    assert fitted_now.vocab == fitted_before.vocab  # same words, same order
    assert max(len(fitted_now.encode(t)) for t in now) == max(len(fitted_before.encode(t)) for t in before)
    assert not fitted_now.unknown_words(prompt_vocabulary(data))


def test_the_fitted_word_list_is_what_it_was_for_shapes_and_fashion():
    from clipkit.data.fashion import FashionMNISTNotFoundError
    from clipkit.data.stream import build_data

    try:
        data = build_data("shapes+fashion", image_size=32)
    except FashionMNISTNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (Debian package dataset-fashion-mnist)")
    before = _texts_as_sources_wrote_them(data)
    assert WordTokenizer.fit(data.vocabulary() + prompt_vocabulary(data)).vocab == WordTokenizer.fit(before).vocab
