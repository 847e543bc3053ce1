"""clipkit.app.defaults: every example the app offers is one the served model can read.

Checked the way a person meets them: build the app for a model, walk its boxes (values,
placeholders, template choices) and the examples its messages give, and run each through that
model's tokenizer. Models trained on different data get different suggestions.
"""

from __future__ import annotations

import re

import pytest

gr = pytest.importorskip("gradio")

from clipkit.app import build_app  # noqa: E402
from clipkit.app.defaults import example_texts, suggestions, template_choices  # noqa: E402
from clipkit.app.inputs import InputError, parse_labels  # noqa: E402
from clipkit.app.services import search, steer_frames  # noqa: E402
from test_app import offered_texts  # noqa: E402


@pytest.fixture(scope="module")
def fashion_word_clip():
    """A random-init MiniCLIP whose word tokenizer knows Fashion-MNIST's captions only, marked as trained on them."""
    import torch

    from clipkit.config import config_from_preset
    from clipkit.data.fashion import CAPTION_TEMPLATES, CLASS_NAMES
    from clipkit.model import MiniCLIP
    from clipkit.tokenizer import WordTokenizer

    torch.manual_seed(0)
    items = [("an " if name[0] in "aeiou" else "a ") + name for name in CLASS_NAMES]
    tokenizer = WordTokenizer.fit([template.format(item=item) for template in CAPTION_TEMPLATES for item in items])
    config = config_from_preset("tiny-cpu", tokenizer=tokenizer, embed_dim=32, vision={"cnn_channels": [8, 16]},
                                text={"width": 32, "layers": 1, "heads": 2})
    model = MiniCLIP(config).eval()
    model.metadata = {"data": {"fashion": {}}}
    return model


def message_examples(model) -> list[str]:
    """The examples the app's messages give (the quoted text after "e.g.")."""
    from clipkit.app import Collection

    failing = [
        lambda: parse_labels(" ", example=suggestions(model).labels_example),
        lambda: search(model, Collection("none", lambda: ([], [])), "   "),
        lambda: next(steer_frames(model, " ")),
    ]
    found = []
    for call in failing:
        with pytest.raises(InputError) as raised:
            call()
        found += re.findall(r"e\.g\. '([^']+)'", str(raised.value))
    return found


@pytest.mark.parametrize("name", ["tiny_word_clip", "fashion_word_clip"])
def test_every_offered_text_is_known_to_the_model(name, request):
    model = request.getfixturevalue(name)
    app = build_app(model, examples=[])
    texts = offered_texts(app) + message_examples(model) + example_texts(model)
    assert len(message_examples(model)) == 3
    items = [item for text in texts for item in parse_labels(text)]
    assert model.tokenizer.unknown_words(items) == [], texts


def test_suggestions_follow_the_training_data(tiny_word_clip, fashion_word_clip):
    assert "circle" in suggestions(tiny_word_clip).query
    assert suggestions(fashion_word_clip).labels[0] == "t-shirt"
    assert "shapes ensemble (6 templates)" in template_choices(tiny_word_clip)
    assert "a photo of a {}" not in template_choices(tiny_word_clip)  # "photo" is not a shapes word
    assert "a photo of a {}" in template_choices(fashion_word_clip)
