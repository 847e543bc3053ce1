"""clipkit.app.inputs: what a person types or uploads, checked with a message that names the fix."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from clipkit.app.inputs import (
    MAX_BOX_CHARS,
    MAX_ITEM_CHARS,
    MAX_ITEMS,
    MAX_TEMPLATE_CHARS,
    SPLIT_PATTERN,
    SPLIT_RULE,
    TEMPLATE_CHOICES,
    InputError,
    parse_labels,
    read_image,
    resolve_templates,
    split_items,
)


def test_labels_are_split_deduplicated_and_limited():
    assert parse_labels(" cat, dog\nbird,, cat ") == ["cat", "dog", "bird"]
    assert parse_labels(["a", " b "]) == ["a", "b"]
    with pytest.raises(InputError, match="no labels"):
        parse_labels(" , ,")
    with pytest.raises(InputError, match="more than this app takes"):
        parse_labels(",".join(f"label {i}" for i in range(MAX_ITEMS + 1)))


def test_one_splitting_rule_and_it_is_the_one_written_down():
    # every separator the rule names splits, in labels and prompts alike
    for separator in (",", ";", "\n"):
        assert split_items(f"red circle{separator} blue square", "prompts", "x") == ["red circle", "blue square"]
        assert parse_labels(f"red circle{separator}blue square") == ["red circle", "blue square"]
    # the rule under each box names exactly the separators that split
    named = {",": "commas", ";": "semicolons", "\n": "new lines"}
    assert all(name in SPLIT_RULE for name in named.values())
    assert [c for c in ",;\n:|/.-' " if re.fullmatch(SPLIT_PATTERN, c)] == list(named)


def test_every_length_limit_has_a_clear_message():
    with pytest.raises(InputError, match=rf"{MAX_ITEM_CHARS + 1} characters long \(at most {MAX_ITEM_CHARS}\)"):
        parse_labels("x" * (MAX_ITEM_CHARS + 1))
    five_thousand_words = " ".join(["circle"] * 5000)
    with pytest.raises(InputError, match=rf"the prompts box is {len(five_thousand_words):,} characters long.*\({MAX_BOX_CHARS:,}\): shorten it"):
        split_items(five_thousand_words, "prompts", "a red circle")
    with pytest.raises(InputError, match="template is .* characters long"):
        resolve_templates("a {} " + "x" * MAX_TEMPLATE_CHARS)


def test_templates_resolve_by_name_or_by_text():
    assert resolve_templates(None) == ("a {}",)
    assert all(resolve_templates(name) == templates for name, templates in TEMPLATE_CHOICES.items())
    assert resolve_templates("a drawing of a {}") == ("a drawing of a {}",)
    with pytest.raises(InputError, match=r"exactly one '\{\}'"):
        resolve_templates("a drawing")


def test_input_errors_are_value_errors():
    # library callers catch ValueError as for any bad argument
    assert issubclass(InputError, ValueError)


def test_read_image_takes_arrays_tensors_and_sketches(tmp_path):
    from PIL import Image

    from clipkit.app import default_examples

    reference = np.asarray(Image.open(default_examples(tmp_path)[0]).convert("RGB"))
    tensor = torch.from_numpy(reference.copy()).permute(2, 0, 1)  # [H, W, 3] -> [3, H, W]
    rgba = np.concatenate([reference, np.full(reference.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    for given in (reference, tensor, {"composite": rgba, "layers": [], "background": None}, Image.fromarray(reference)):
        assert np.array_equal(np.asarray(read_image(given)), reference)
    with pytest.raises(InputError, match="no image"):
        read_image({"composite": None})
    with pytest.raises(InputError, match="pixels, more than"):
        read_image(np.zeros((6000, 6000), dtype=np.uint8))
    not_image = tmp_path / "notes.png"
    not_image.write_text("text\n")
    with pytest.raises(InputError, match="not an image"):
        read_image(str(not_image))
