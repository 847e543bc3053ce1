"""The moderation tab through gradio_client: /moderate answers each rule's score, threshold and action; bad policies get a clear message."""

from __future__ import annotations

import json

import pytest

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from clipkit.app import launch, services  # noqa: E402
from clipkit.app.inputs import InputError  # noqa: E402
from clipkit.app.tabs import moderation_tab  # noqa: E402
from clipkit.moderation import PolicyScorer, policy_to_dict, policy_to_json, save_policy  # noqa: E402
from clipkit.moderation.worlds import SHAPES_POLICY  # noqa: E402

from conftest import free_port  # noqa: E402


@pytest.fixture(scope="module")
def picture(tmp_path_factory, world32):
    from PIL import Image

    path = tmp_path_factory.mktemp("moderation") / "shape.png"
    Image.fromarray(world32.sample(1, seed=7, objects=1).images[0].permute(1, 2, 0).numpy()).save(path)  # [3, H, W] -> [H, W, 3]
    return path


@pytest.fixture(scope="module")
def served(tiny_word_clip):
    with gr.Blocks(analytics_enabled=False) as app:
        with gr.Tabs():
            moderation_tab(tiny_word_clip)
    app.queue()
    url = launch(app, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield gradio_client.Client(url, verbose=False, analytics_enabled=False, download_files=False, ssl_verify=False)
    finally:
        app.close()


def _reference(model, path, policy):
    from PIL import Image

    return PolicyScorer(model, policy).decide(Image.open(path).convert("RGB"))



def test_moderate_endpoint_matches_the_scorer(served, tiny_word_clip, picture):
    verdicts, warning = served.predict(gradio_client.handle_file(str(picture)), policy_to_json(SHAPES_POLICY), api_name="/moderate")
    expected = _reference(tiny_word_clip, picture, SHAPES_POLICY)
    assert [v["rule"] for v in verdicts] == SHAPES_POLICY.names and warning == ""
    for got, want in zip(verdicts, expected):
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert (got["threshold"], got["action"], got["flagged"]) == (want["threshold"], want["action"], want["flagged"])


def test_a_changed_threshold_changes_the_verdict(served, picture):
    data = policy_to_dict(SHAPES_POLICY)
    for threshold, fires in ((0.0, True), (1.0, False)):
        data["rules"][0]["threshold"] = threshold
        verdicts, _ = served.predict(gradio_client.handle_file(str(picture)), json.dumps(data), api_name="/moderate")
        assert verdicts[0]["flagged"] is fires and verdicts[0]["threshold"] == threshold


BAD_POLICIES = {
    "no rules": ({"rules": []}, "bad policy: the policy has no rules"),
    "rule without text": ({"rules": [{"name": "reds", "descriptions": []}]}, "rule 'reds': descriptions is empty"),
    "threshold above 1": ({"rules": [{"name": "reds", "descriptions": ["a red circle"], "threshold": 1.5}]}, "outside [0, 1]"),
    "not JSON": ("{\"rules\": [", "not valid JSON"),
    "empty": ("  ", "no policy: write one as JSON"),
}


@pytest.mark.parametrize("case", list(BAD_POLICIES))
def test_bad_policies_get_a_clear_message_and_the_server_keeps_serving(served, picture, case):
    policy, message = BAD_POLICIES[case]
    text = policy if isinstance(policy, str) else json.dumps(policy)
    with pytest.raises(gradio_client.exceptions.AppError) as raised:
        served.predict(gradio_client.handle_file(str(picture)), text, api_name="/moderate")
    assert message in str(raised.value)
    verdicts, _ = served.predict(gradio_client.handle_file(str(picture)), policy_to_json(SHAPES_POLICY), api_name="/moderate")
    assert len(verdicts) == len(SHAPES_POLICY.rules)


def test_unknown_policy_words_come_back_as_a_warning(served, picture):
    data = policy_to_dict(SHAPES_POLICY)
    data["rules"][1]["descriptions"].append("a zebra")
    verdicts, warning = served.predict(gradio_client.handle_file(str(picture)), json.dumps(data), api_name="/moderate")
    assert "zebra" in warning and len(verdicts) == 2


def test_a_policy_file_loads_and_a_bad_one_is_named(tiny_word_clip, picture, tmp_path):
    from pathlib import Path

    path = save_policy(SHAPES_POLICY, tmp_path / "policy.json")
    assert services.read_policy(Path(path)) == SHAPES_POLICY
    assert services.moderate(tiny_word_clip, str(picture), Path(path)) == _reference(tiny_word_clip, picture, SHAPES_POLICY)
    broken = tmp_path / "broken.json"
    broken.write_text("[1, 2]")
    with pytest.raises(InputError, match="broken.json"):
        services.read_policy(Path(broken))


def test_a_shapes_model_is_offered_the_shapes_policy_whose_words_it_knows(tiny_word_clip):
    assert services.default_policy(tiny_word_clip) == SHAPES_POLICY
