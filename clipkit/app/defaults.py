"""What the app suggests, chosen to fit the model it serves.

The starting labels, the template dropdown, the example images, and every example shown in a
placeholder or a message come from the model's training data and are checked against its
tokenizer: a word-level model is never offered a word it would read as <unk> ("a red apple" to a
shapes model). `suggestions(model)` gathers the texts; `example_texts(model)` lists every one of
them, so a test can run them all through the served model's tokenizer.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

from clipkit.app.inputs import SPLIT_RULE, TEMPLATE_CHOICES

GALLERY_SIDE = 128  # small images (32 px shapes, 28 px Fashion-MNIST) are enlarged to this for display


def enlarged(picture, side: int):
    """A small picture scaled up by a whole factor (nearest neighbour) to about `side`, so pixels stay sharp on screen."""
    from PIL import Image

    factor = side // max(picture.size)
    return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST) if factor > 1 else picture


def trained_on(model) -> set[str]:
    """The names of the data sets in the model's checkpoint metadata (empty for an untrained model)."""
    data = (model.metadata or {}).get("data") or {}
    return set(data) if isinstance(data, dict) else {str(data)}


def default_labels(model) -> list[str]:
    """Fashion-MNIST's classes for a model trained on it alone, else the shapes world's 64 colour-shape pairs."""
    if trained_on(model) == {"fashion"}:
        from clipkit.data.fashion import CLASS_NAMES

        return list(CLASS_NAMES)
    from clipkit.data import ShapesWorld

    return list(ShapesWorld().class_names)


def _known(model, texts) -> bool:
    return not model.tokenizer.unknown_words(list(texts))


def template_choices(model) -> list[str]:
    """The TEMPLATE_CHOICES whose words the model knows (all of them for a byte-level tokenizer)."""
    return [name for name, templates in TEMPLATE_CHOICES.items() if _known(model, [t.replace("{}", "") for t in templates])]


def default_template(model) -> str:
    """The shapes ensemble for shapes models, else the plain "a {}"."""
    shapes = next(name for name in TEMPLATE_CHOICES if name.startswith("shapes"))
    return shapes if "shapes" in trained_on(model) and shapes in template_choices(model) else "a {}"


@dataclass(frozen=True)
class Suggestions:
    """Texts the app shows a person as examples, all known to the model."""

    labels: tuple[str, ...]  # the zero-shot tab's starting labels
    labels_example: str  # two labels written by the splitting rule, for messages
    query: str  # the search box's placeholder
    prompt: str  # the steering box's starting prompt
    negative: str  # the "avoid" box's placeholder


_SUGGESTED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> its default Suggestions, made once


def suggestions(model, labels=None) -> Suggestions:
    """Examples from `labels` (default: `default_labels(model)`), keeping those the model's tokenizer knows."""
    if labels is None:
        if model not in _SUGGESTED:
            _SUGGESTED[model] = _suggest(model, default_labels(model))
        return _SUGGESTED[model]
    return _suggest(model, labels)


def _suggest(model, labels) -> Suggestions:
    given = list(labels)
    known = [label for label in given if _known(model, [label])] or given
    phrases = [f"a {label}" for label in known]
    phrases = [phrase for phrase in phrases if _known(model, [phrase])] or known
    second = phrases[1] if len(phrases) > 1 else phrases[0]
    return Suggestions(tuple(given), ", ".join(known[:2]), phrases[0], phrases[0], second)


def example_texts(model, labels=None) -> list[str]:
    """Every text the app offers the model as an example: suggestions and the template choices filled with them."""
    offered = suggestions(model, labels)
    texts = [*offered.labels, offered.query, offered.prompt, offered.negative, *offered.labels_example.split(", ")]
    texts += [template.format(offered.labels[0]) for name in template_choices(model) for template in TEMPLATE_CHOICES[name]]
    return texts


def box_info(limit: int, what: str = "items") -> str:
    """The line under a list box: the splitting rule and its limit."""
    return f"{SPLIT_RULE[0].upper()}{SPLIT_RULE[1:]}; at most {limit} {what}."


def default_examples(folder: str | Path | None = None) -> list[Path]:
    """PNGs of a few shapes-world classes, one object each, written once into `folder` (default
    cache_dir()/"app-examples") and enlarged 4x so the browser shows them crisply."""
    from PIL import Image

    from clipkit.data import ShapesWorld
    from clipkit.env import cache_dir
    from clipkit.viz import to_display_array

    folder = Path(folder) if folder is not None else cache_dir() / "app-examples"
    wanted = ["red circle", "blue square", "yellow star", "green triangle", "purple heart", "orange cross"]
    paths = [folder / f"{name.replace(' ', '-')}.png" for name in wanted]
    if all(path.exists() for path in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    world = ShapesWorld()
    sample = world.sample(2000, seed=3, split="all", objects=1)
    for name, path in zip(wanted, paths):
        # the first large one of the class: the clearest picture of it
        position = next(
            i for i, scene in enumerate(sample.scenes)
            if world.class_names[int(sample.labels[i])] == name and scene.objects[0].size == "large"
        )
        enlarged(Image.fromarray(to_display_array(sample.images[position])), 4 * world.config.image_size).save(path)
    return paths
