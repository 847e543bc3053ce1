"""clipkit.app.tabs: what every tab does alike, checked on the built Blocks (no server needed)."""

from __future__ import annotations

import pytest

gr = pytest.importorskip("gradio")

from clipkit.app import build_app  # noqa: E402
from clipkit.app.inputs import SPLIT_RULE, InputError  # noqa: E402
from clipkit.app.server import TAB_NAMES  # noqa: E402
from clipkit.app.tabs import moderation_tab, shown_in_page  # noqa: E402

MODERATION = "moderation" in TAB_NAMES  # build_app serves the moderation tab once the server lists it


@pytest.fixture(scope="module")
def app(tiny_word_clip):
    return build_app(tiny_word_clip, examples=[])


def text_boxes(app) -> list:
    return [block for block in app.blocks.values() if isinstance(block, gr.Textbox) and block.interactive is not False]


def test_every_list_box_states_the_one_splitting_rule(app):
    list_boxes = [box for box in text_boxes(app) if box.label in ("labels", "prompts", "avoid (optional)")]
    assert len(list_boxes) == 3
    assert all(SPLIT_RULE in box.info.lower() for box in list_boxes)


def test_every_text_box_states_its_length_limit(app):
    boxes = text_boxes(app) + [block for block in app.blocks.values() if isinstance(block, gr.Dropdown) and block.label == "template"]
    assert len(boxes) == 5
    assert all("at most" in (box.info or "") and "characters" in box.info for box in boxes), [box.label for box in boxes]
    # the limit is the server's, with a message: the browser never cuts a paste short silently
    assert all(box.max_length is None for box in text_boxes(app))


def test_each_component_is_drawn_once(app):
    from clipkit.app.tabs import HEAT_LABEL

    # (an update built inside the Blocks as a component would be drawn as a second, stray one)
    assert [block.elem_id for block in app.blocks.values() if getattr(block, "label", None) == HEAT_LABEL] == ["zero-shot-saliency"]
    images = [block.label for block in app.blocks.values() if isinstance(block, gr.Image)]
    assert sorted(images) == sorted(["image", HEAT_LABEL, "or an image query", "image"] + ["image"] * MODERATION)


def test_errors_reach_the_page_escaped_and_whole():
    message = "the model does not know ['zebra'], which it would read as <unk> (a token) & more"

    def refuse():
        raise InputError(message)

    def stream():
        yield 1
        raise ValueError(message)

    def crash():
        raise RuntimeError("<boom>")

    with pytest.raises(gr.Error) as raised:
        shown_in_page(refuse)()
    assert raised.value.message == "the model does not know ['zebra'], which it would read as &lt;unk&gt; (a token) &amp; more"
    frames = shown_in_page(stream)()
    assert next(frames) == 1
    with pytest.raises(gr.Error, match="&lt;unk&gt;"):
        next(frames)
    with pytest.raises(gr.Error, match="RuntimeError: &lt;boom&gt;"):
        shown_in_page(crash)()


def test_each_answer_is_cleared_before_its_request_runs(app):
    # every public endpoint follows a private event that empties the same outputs first
    by_id = {fn._id: fn for fn in app.fns.values()}
    public = [fn for fn in app.fns.values() if fn.api_visibility != "private" and fn.api_name not in ("model_card",)]
    expected = {"classify", "classify_sketch", "search_text", "search_image", "steer"} | ({"moderate"} if MODERATION else set())
    assert {fn.api_name for fn in public} == expected
    for fn in public:
        clearing = [other for other in by_id.values() if other.name == "clear" and {o._id for o in fn.outputs} <= {o._id for o in other.outputs}]
        assert clearing, f"/{fn.api_name} has no clearing event"


def test_moderation_tab_offers_a_policy_the_model_knows_and_clears_before_answering(tiny_word_clip):
    import json

    from clipkit.app import services
    from clipkit.moderation import policy_from_json, policy_to_dict

    with gr.Blocks() as blocks:
        moderation_tab(tiny_word_clip)
    (policy_box,) = [block for block in blocks.blocks.values() if isinstance(block, gr.Code)]
    offered = policy_from_json(policy_box.value)
    assert offered == services.default_policy(tiny_word_clip) and json.loads(policy_box.value) == policy_to_dict(offered)
    assert services.unknown_words_warning(tiny_word_clip.tokenizer, services._policy_texts(offered)) == ""
    notes = [block.value for block in blocks.blocks.values() if isinstance(block, gr.Markdown)]
    assert any("threshold" in note and f"{services.MAX_POLICY_CHARS:,} characters" in note for note in notes)
    (moderate,) = [fn for fn in blocks.fns.values() if fn.api_name == "moderate"]
    clearing = [fn for fn in blocks.fns.values() if fn.name == "clear" and {o._id for o in moderate.outputs} <= {o._id for o in fn.outputs}]
    assert clearing, "/moderate has no clearing event"
