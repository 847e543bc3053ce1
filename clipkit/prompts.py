"""Prompts: how a class name becomes the captions zero-shot classification asks with.

CLIP never sees a label during training; to classify, each class name goes into sentences a
caption might use ("a photo of a {}"), and the CLIP paper (Radford et al., 2021, section 3.1.4)
averages the embeddings of many such templates, the "prompt ensemble". The templates are plain
data here; `class_prompts` fills one in. A model can only read the words its tokenizer knows, so a
tokenizer for training is fitted on the data's own texts plus `prompt_vocabulary(data)`: the
prompts evaluation will ask with.
"""

from __future__ import annotations

from collections.abc import Sequence

from clipkit.data.grammar import with_articles
from clipkit.data.stream import CaptionedSource, ShapesSource, TrainingData

# CLIP-paper-style ensembles: the class name in several sentences a caption might use. The shapes
# list mirrors the shapes world's caption styles; the Fashion-MNIST one its photo descriptions; the
# photo list is the 7 templates OpenAI found best for ImageNet (CLIP repo, Prompt_Engineering notebook).
TEMPLATES: dict[str, tuple[str, ...]] = {
    "shapes": (
        "{}",
        "a {}",
        "a picture of a {}",
        "a simple drawing of a {} on a dark background",
        "an image showing a {}",
        "there is a {}",
    ),
    "fashion-mnist": (
        "a {}",
        "a photo of a {}",
        "a grayscale photo of a {}",
        "a small black and white picture of a {}",
        "a low-resolution image of a {}",
        "a product photo of a {} on a black background",
        "this is a {}",
    ),
    "photos": (
        "itap of a {}.",
        "a bad photo of the {}.",
        "a origami {}.",
        "a photo of the large {}.",
        "a {} in a video game.",
        "art of the {}.",
        "a photo of the small {}.",
    ),
}

DEFAULT_TEMPLATES: tuple[str, ...] = ("a {}",)  # what a data set without templates of its own is asked with


def check_templates(templates: Sequence[str] | str) -> list[str]:
    """A non-empty list of templates, each holding exactly one "{}" where the class name goes."""
    if isinstance(templates, str):
        templates = [templates]
    templates = list(templates)
    if not templates:
        raise ValueError('templates is empty: pass at least one, e.g. ("a photo of a {}.",)')
    for template in templates:
        if not isinstance(template, str) or template.count("{}") != 1:
            raise ValueError(f"each template needs exactly one '{{}}' where the class name goes, got {template!r}")
    return templates


def class_prompts(class_names: Sequence[str], template: str) -> list[str]:
    """`template` filled with each class name, "a" made "an" before a vowel as captions are written
    ("a {}" + "orange hexagon" -> "an orange hexagon")."""
    return [with_articles(template.format(name)) for name in class_names]


def source_templates(source) -> tuple[str, ...]:
    """The templates a data source is evaluated with: the shapes world's set for the shapes world; for
    a captioned set its own (a tuple, or the name of a set in `TEMPLATES`), else `DEFAULT_TEMPLATES`."""
    if isinstance(source, ShapesSource):
        return TEMPLATES["shapes"]
    templates = source.templates if isinstance(source, CaptionedSource) else None
    if templates is None:
        return DEFAULT_TEMPLATES
    if isinstance(templates, str):
        if templates not in TEMPLATES:
            raise ValueError(f"unknown template set {templates!r}: choose among {sorted(TEMPLATES)} or pass the templates")
        return TEMPLATES[templates]
    return tuple(templates)


def source_class_names(source) -> list[str]:
    """The class names zero-shot evaluation asks a source's images about ([] when it has no labels)."""
    if isinstance(source, ShapesSource):
        return list(source.world.class_names)
    if isinstance(source, CaptionedSource):
        return list(source.dataset.class_names or [])
    return []


def prompt_vocabulary(data: TrainingData) -> list[str]:
    """Every prompt evaluation asks `data`'s sources with: fit a tokenizer on
    `data.vocabulary() + prompt_vocabulary(data)` so that no prompt word is unknown to it."""
    return [
        prompt
        for source in data.sources
        for template in source_templates(source)
        for prompt in class_prompts(source_class_names(source), template)
    ]
