"""The Gradio app, served on a free loopback port and driven through gradio_client like any user script.

Every endpoint is checked against a recomputation with the library (zero-shot probabilities,
search hits, the model card); every kind of bad input must come back as a clear message while
the server goes on answering good requests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from clipkit.app import (  # noqa: E402
    Collection,
    build_app,
    classify,
    default_examples,
    folder_collection,
    launch,
    search,
)
from clipkit.app import server  # noqa: E402
from clipkit.app.inputs import TEMPLATE_CHOICES, parse_labels  # noqa: E402
from conftest import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEST_MODEL_DIR = ROOT / "build" / "app-test-model"
# The "ci" profile trained longer: ~40 s once on 2 CPU cores, then loaded from build/ in a second.
# At its 120 steps the ci model is near chance on single classes; at 600 it names most shapes.
TEST_MODEL_STEPS = 600
# Circles, hexagons and squares are a pixel apart at 32 px, which this quick model (unlike the cpu
# profile's) does not tell apart; these labels still test colour (4 circles) and shape (4 reds).
RED_CIRCLE_LABELS = "red circle, blue circle, green circle, yellow circle, red triangle, red star, red cross, red heart"


def trained_test_model():
    """A shapes-world mini-CLIP that knows a red circle, cached in build/app-test-model."""
    from clipkit.train import load_or_train

    return load_or_train("ci", out_dir=TEST_MODEL_DIR, steps=TEST_MODEL_STEPS, progress=False, device="cpu")


def make_client(url: str):
    # ssl_verify=False: plain http on loopback has no TLS; with it, every call skips building a TLS context.
    return gradio_client.Client(url, verbose=False, analytics_enabled=False, download_files=False, ssl_verify=False)


def wait_for_page(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    """Until the app a subprocess started answers HTTP 200; fails with its output if it exits or never does."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    output = server.stdout or server.stderr
    pytest.fail(f"the app did not answer at {url}: {output.read()[-3000:] if server.poll() is not None and output else ''}")


def _caption_folder(root: Path) -> Path:
    from clipkit.data import ShapesWorld

    from PIL import Image

    sample = ShapesWorld().sample(6, seed=4, split="train", objects=1)
    for position, (image, caption) in enumerate(zip(sample.images, sample.captions)):
        Image.fromarray(image.permute(1, 2, 0).numpy()).save(root / f"picture{position}.png")  # [3, H, W] -> [H, W, 3]
        (root / f"picture{position}.txt").write_text(caption)
    return root


@pytest.fixture(scope="module")
def model():
    return trained_test_model()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Good and bad files to upload."""
    from PIL import Image

    root = tmp_path_factory.mktemp("app-files")
    red_circle = default_examples(root / "examples")[0]
    huge = root / "huge.png"
    Image.new("1", (10_000, 10_000)).save(huge)  # 1 bit per pixel: quick to make, 12 kB on disk
    not_image = root / "notes.png"
    not_image.write_text("this is text, whatever the name says\n" * 20)
    (root / "folder").mkdir()
    return {"red_circle": red_circle, "huge": huge, "not_image": not_image, "folder": _caption_folder(root / "folder")}


@pytest.fixture(scope="module")
def collections(files):
    from clipkit.data import ShapesConfig, ShapesWorld

    shapes = ShapesWorld(ShapesConfig(image_size=64)).sample(200, seed=0, split="all")
    return {
        "shapes world": Collection.from_images("shapes world", shapes.images, shapes.captions),
        "mine": folder_collection(files["folder"], name="mine"),
    }


@pytest.fixture(scope="module")
def served(model, collections):
    """The whole app on a free loopback port: (app, url, client)."""
    app = build_app(model, collections)
    url = launch(app, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield app, url, make_client(url)
    finally:
        app.close()


def _probabilities(label_output: dict) -> dict[str, float]:
    return {item["label"]: item["confidence"] for item in label_output["confidences"]}


def _reference_probabilities(model, image_path, labels: list[str], templates) -> torch.Tensor:
    """Zero-shot by hand: prompt ensemble, cosine similarity, CLIP's temperature, softmax."""
    import torch.nn.functional as F
    from PIL import Image

    from clipkit.interface import embed_images, embed_texts

    with torch.no_grad():
        per_template = torch.stack([embed_texts(model, [t.format(label) for label in labels]) for t in templates])  # [T, C, D]
        weights = F.normalize(per_template.mean(dim=0), dim=-1)  # [C, D]
        image = embed_images(model, [Image.open(image_path).convert("RGB")])  # [1, D]
        scale = model.logit_scale.exp().clamp(max=100)
        return (scale * image @ weights.T).softmax(dim=-1)[0]


# --- the plain functions ---------------------------------------------------------------------------


def test_classify_matches_a_hand_computation(model, files):
    labels = parse_labels(RED_CIRCLE_LABELS)
    for choice in ("a {}", "shapes ensemble (6 templates)"):
        got = classify(model, str(files["red_circle"]), RED_CIRCLE_LABELS, choice)
        expected = _reference_probabilities(model, files["red_circle"], labels, TEMPLATE_CHOICES[choice])
        assert list(got) == labels
        assert torch.allclose(torch.tensor(list(got.values())), expected, atol=1e-5)


def test_classifier_cache_embeds_a_label_set_once_and_notices_new_weights(model, files, monkeypatch):
    import clipkit.zeroshot

    calls = []
    original = clipkit.zeroshot.zeroshot_classifier
    monkeypatch.setattr(clipkit.zeroshot, "zeroshot_classifier", lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    labels = "pink star, cyan heart"  # with the "{}" template below, a key no other test uses
    first = classify(model, str(files["red_circle"]), labels, "{}")
    assert classify(model, str(files["red_circle"]), labels, "{}") == first
    assert len(calls) == 1
    with torch.no_grad():
        model.logit_scale.add_(0.0)  # an in-place update, as an optimizer step makes
    classify(model, str(files["red_circle"]), labels, "{}")
    assert len(calls) == 2


def test_search_matches_the_index_and_finds_an_image_itself(model, collections):
    from clipkit.search import search_text

    shapes = collections["shapes world"]
    hits = search(model, shapes, "a red circle", k=5)
    expected = search_text(shapes.index_for(model), model, "a red circle", k=5)
    assert [caption for _, caption in hits] == [f"{score:.2f} {item}" for score, _, item in expected.hits(0)]
    images, items = shapes.data()
    self_hits = search(model, shapes, images[7].permute(1, 2, 0).numpy(), k=3)  # [3, H, W] -> [H, W, 3]
    assert self_hits[0][1] == f"1.00 {items[7]}"


# --- the served app ------------------------------------------------------------------------------


def test_app_binds_loopback_with_upload_limit_and_queue(served):
    app, url, _ = served
    assert app.server_name == "127.0.0.1" and url.startswith("http://127.0.0.1:")
    assert app.max_file_size == 20 * 1024 * 1024
    assert app._queue.default_concurrency_limit == server.CONCURRENCY_LIMIT
    assert app._queue.max_size == server.QUEUE_SIZE
    steer_event = next(fn for fn in app.fns.values() if fn.api_name == "steer")
    assert steer_event.concurrency_limit == 1


def test_classify_endpoint_names_the_red_circle(served, model, files):
    _, _, client = served
    result, warning = client.predict(gradio_client.handle_file(str(files["red_circle"])), RED_CIRCLE_LABELS, "a {}", api_name="/classify")
    assert result["label"] == "red circle" and warning == ""
    direct = classify(model, str(files["red_circle"]), RED_CIRCLE_LABELS, "a {}")
    top_five = sorted(direct, key=direct.get, reverse=True)[:5]  # the Label shows the five best
    served_probabilities = _probabilities(result)
    assert list(served_probabilities) == top_five
    assert all(abs(served_probabilities[label] - direct[label]) < 1e-5 for label in top_five)


def test_classify_sketch_endpoint(served, files):
    _, _, client = served
    picture = gradio_client.handle_file(str(files["red_circle"]))
    sketch = {"background": picture, "layers": [], "composite": picture, "id": None}
    result, warning = client.predict(sketch, RED_CIRCLE_LABELS, "a {}", api_name="/classify_sketch")
    assert result["label"] == "red circle" and warning == ""


def test_search_endpoints_return_scored_galleries(served, model, collections, files):
    _, _, client = served
    text_hits, warning = client.predict("shapes world", "a red circle", 4, api_name="/search_text")
    assert warning == ""
    direct = search(model, collections["shapes world"], "a red circle", k=4)
    assert [hit["caption"] for hit in text_hits] == [caption for _, caption in direct]
    scores = [float(hit["caption"].split()[0]) for hit in text_hits]
    assert scores == sorted(scores, reverse=True)

    image_hits, _ = client.predict("mine", gradio_client.handle_file(str(files["folder"] / "picture2.png")), 3, api_name="/search_image")
    caption = (files["folder"] / "picture2.txt").read_text()
    assert image_hits[0]["caption"] == f"1.00 {caption}"
    assert len(image_hits) == 3


def test_steer_endpoint_streams_frames(served):
    _, _, client = served
    job = client.submit("a red circle", "", 10, "shapes", 0, api_name="/steer")
    final_image, final_status = job.result(timeout=120)
    outputs = job.outputs()
    statuses = [status for _, status in outputs]
    assert statuses[:2] == ["step 5/10" + statuses[0][9:], "step 10/10" + statuses[1][10:]]  # a frame every 5 steps
    assert final_status.startswith("done: 10 steps") and statuses[-1] == final_status
    assert all(image is not None for image, _ in outputs)


def test_model_card_endpoint_shows_config_data_and_metrics(served, model):
    _, _, client = served
    card = client.predict(api_name="/model_card")
    assert f"| embed_dim | {model.config.embed_dim} |" in card
    assert f"| profile | {model.metadata['profile']} |" in card
    for metric in ("seen", "heldout_vs_heldout"):
        assert f"| {metric} | {model.metadata['metrics'][metric]:.3f} |" in card
    assert '"shapes"' in card


BAD_REQUESTS = {
    "no image": ("/classify", lambda f: (None, "red circle, blue square", "a {}"), "no image"),
    "empty labels": ("/classify", lambda f: (gradio_client.handle_file(str(f["red_circle"])), " , ", "a {}"), "no labels"),
    "500 labels": ("/classify", lambda f: (gradio_client.handle_file(str(f["red_circle"])), ",".join(f"thing {i}" for i in range(500)), "a {}"), "500 labels is more than"),
    "10,000 x 10,000 image": ("/classify", lambda f: (gradio_client.handle_file(str(f["huge"])), "a, b", "a {}"), "10000 x 10000 = 100,000,000 pixels"),
    "non-image file": ("/classify", lambda f: (gradio_client.handle_file(str(f["not_image"])), "a, b", "a {}"), "not an image"),
    "template without {}": ("/classify", lambda f: (gradio_client.handle_file(str(f["red_circle"])), "a, b", "a drawing"), "exactly one '{}'"),
    "empty query": ("/search_text", lambda f: ("shapes world", "   ", 5), "empty query"),
    "image query missing": ("/search_image", lambda f: ("shapes world", None, 5), "no image"),
    "non-image query": ("/search_image", lambda f: ("shapes world", gradio_client.handle_file(str(f["not_image"])), 5), "not an image"),
    "no prompt": ("/steer", lambda f: ("", "", 5, "shapes", 0), "no prompt"),
    "5,000-word prompt": ("/steer", lambda f: (" ".join(["circle"] * 5000), "", 5, "shapes", 0), "characters long, more than this app takes"),
    "pasted label list": ("/classify", lambda f: (gradio_client.handle_file(str(f["red_circle"])), "red circle, " * 2000, "a {}"), "shorten it"),
    "601-character query": ("/search_text", lambda f: ("shapes world", "a" * 601, 5), "601 characters long"),
    "unknown words": ("/steer", lambda f: ("a zebra", "", 5, "shapes", 0), "does not know"),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_input_gets_a_clear_message_and_the_server_keeps_serving(served, files, case):
    _, _, client = served
    endpoint, arguments, message = BAD_REQUESTS[case]
    with pytest.raises(gradio_client.exceptions.AppError) as raised:
        client.predict(*arguments(files), api_name=endpoint)
    assert message in str(raised.value)
    good = client.predict(gradio_client.handle_file(str(files["red_circle"])), RED_CIRCLE_LABELS, "a {}", api_name="/classify")
    assert good[0]["label"] == "red circle"


def test_unknown_words_come_back_with_the_scores_as_a_warning(served, model, files):
    _, _, client = served
    result, warning = client.predict(gradio_client.handle_file(str(files["red_circle"])), "cat, dog", "a {}", api_name="/classify")
    direct = classify(model, str(files["red_circle"]), "cat, dog", "a {}")
    assert {item["label"] for item in result["confidences"]} == {"cat", "dog"}
    assert abs(_probabilities(result)["cat"] - direct["cat"]) < 1e-5
    from clipkit.tokenizer import unknown_words_message

    assert warning == unknown_words_message(model.tokenizer, ["cat", "dog"])  # whole: "<unk>" and all
    hits, warning = client.predict("shapes world", "a red apple", 3, api_name="/search_text")
    assert len(hits) == 3 and warning == unknown_words_message(model.tokenizer, ["apple"])


def offered_texts(app) -> list[str]:
    """Every text the page offers as something to send the model: text box values and placeholders
    ("e.g. ..." stripped) and the template choices, each filled with the first label."""
    texts, templates = [], []
    for block in app.blocks.values():
        if isinstance(block, gr.Textbox) and block.interactive is not False:
            texts += [text for text in (block.value, (block.placeholder or "").removeprefix("e.g. ")) if text]
        if isinstance(block, gr.Dropdown) and block.label == "template":
            templates = [value for _, value in block.choices]
    labels = parse_labels(next(block.value for block in app.blocks.values() if getattr(block, "label", None) == "labels"))
    return texts + [template.format(labels[0]) for name in templates for template in TEMPLATE_CHOICES[name]]


def test_every_example_and_placeholder_is_known_to_the_served_model(served, model):
    app, _, _ = served
    texts = offered_texts(app)
    assert any("e.g." not in text and "circle" in text for text in texts)  # the walk found the boxes
    items = [item for text in texts for item in parse_labels(text)]
    assert model.tokenizer.unknown_words(items) == []


def test_the_api_description_shows_no_server_path(served):
    import tempfile

    _, _, client = served
    description = client.view_api(print_info=False, return_format="str")
    assert "/classify_sketch" in description
    for path in {tempfile.gettempdir(), str(Path.home()), str(ROOT), "/tmp", "gradio"}:
        assert path not in description, f"{path} in the API description"


def test_server_refuses_uploads_over_the_size_limit(served, files):
    import httpx

    app, url, client = served
    too_big = b"\0" * (app.max_file_size + 1)
    response = httpx.post(f"{url}gradio_api/upload", files={"files": ("big.png", too_big, "image/png")}, timeout=30)
    assert response.status_code == 413
    good = client.predict(gradio_client.handle_file(str(files["red_circle"])), RED_CIRCLE_LABELS, "a {}", api_name="/classify")
    assert good[0]["label"] == "red circle"


def test_fifty_concurrent_requests_all_succeed(served, model, files):
    _, url, _ = served
    client = make_client(url)
    picture = gradio_client.handle_file(str(files["red_circle"]))
    expected = classify(model, str(files["red_circle"]), RED_CIRCLE_LABELS, "a {}")
    jobs = [client.submit(picture, RED_CIRCLE_LABELS, "a {}", api_name="/classify") for _ in range(50)]
    results = [job.result(timeout=120)[0] for job in jobs]
    assert all(result["label"] == "red circle" for result in results)
    assert all(abs(_probabilities(result)["red circle"] - expected["red circle"]) < 1e-5 for result in results)


def test_fifty_clients_in_threads(served, files):
    _, url, _ = served

    def one_user(_):
        return make_client(url).predict(gradio_client.handle_file(str(files["red_circle"])), RED_CIRCLE_LABELS, "a {}", api_name="/classify")[0]

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(one_user, range(50)))
    assert [result["label"] for result in results] == ["red circle"] * 50


# --- building blocks -----------------------------------------------------------------------------


def test_a_single_tab_app_has_only_its_endpoints(model):
    app = build_app(model, tabs=("zero-shot",), examples=[])
    names = {fn.api_name for fn in app.fns.values()}
    assert {"classify", "classify_sketch"} <= names
    assert not names & {"search_text", "search_image", "steer", "model_card"}
    with pytest.raises(ValueError, match="unknown tabs"):
        build_app(model, tabs=("zero-shot", "chat"))


def test_folder_collection_needs_an_existing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        folder_collection(tmp_path / "nowhere")


def test_from_notebook_checkpoint_loads_notebook_05s_model_with_its_profile(model, tmp_path, monkeypatch):
    import shutil

    from clipkit.app.cli import notebook_checkpoint

    shutil.copytree(TEST_MODEL_DIR, tmp_path / "mini-clip")  # where notebook 05 saves, here a "ci" run
    monkeypatch.setenv("CLIPKIT_CHECKPOINT_DIR", str(tmp_path))
    loaded = notebook_checkpoint(device="cpu")
    assert loaded.metadata["profile"] == "ci"
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


@pytest.mark.slow
def test_command_line_serves_a_checkpoint_on_loopback(model):

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "-m", "clipkit.app", "--checkpoint", str(TEST_MODEL_DIR), "--port", str(port),
                               "--tabs", "zero-shot,about"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_page(f"http://127.0.0.1:{port}/", server)
        card = make_client(f"http://127.0.0.1:{port}/").predict(api_name="/model_card")
        assert "MiniCLIP" in card
    finally:
        server.terminate()
        server.wait(timeout=30)


# --- the app on foreign models: open_clip and Hugging Face weights, named by a model spec ---------


def foreign_model_specs(root: Path, open_clip_name: str) -> dict[str, str]:
    """Model specs of a random-init open_clip model saved as a weights file, and of a saved
    transformers folder with its tokenizer files: the code paths real downloads take."""
    import transformers

    from clipkit.hf import write_clip_tokenizer_files
    from clipkit.pretrained import load_open_clip, openclip_state_dict_file
    from test_hf import SMALL  # a transformers CLIP as small as TINY_OPEN_CLIP_CONFIG: OpenAI's vocabulary, 32 px

    torch.manual_seed(0)
    weights = openclip_state_dict_file(load_open_clip(open_clip_name), root / "open_clip" / "tiny.safetensors")
    transformers.CLIPModel(transformers.CLIPConfig(**SMALL)).save_pretrained(root / "hf")
    write_clip_tokenizer_files(root / "hf", context_length=SMALL["text_config"]["max_position_embeddings"])
    return {"open_clip": f"open_clip:{open_clip_name}:{weights}", "hf": f"hf:{root / 'hf'}"}


@pytest.fixture(scope="module")
def foreign_specs(tmp_path_factory, tiny_open_clip):
    pytest.importorskip("transformers")
    return foreign_model_specs(tmp_path_factory.mktemp("foreign-models"), tiny_open_clip)


@pytest.mark.parametrize("kind", ["open_clip", "hf"])
def test_every_tab_serves_a_foreign_model(kind, foreign_specs, files):
    from clipkit.checkpoint import load_model_spec
    from clipkit.data import ShapesWorld

    model, spec = load_model_spec(foreign_specs[kind])
    shapes = ShapesWorld().sample(24, seed=0, split="all")
    collections = {"shapes": Collection.from_images("shapes", shapes.images, shapes.captions),
                   "mine": folder_collection(files["folder"], name="mine")}
    app = build_app(model, collections, source=spec.describe())
    url = launch(app, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        client = make_client(url)
        picture = gradio_client.handle_file(str(files["red_circle"]))
        result, warning = client.predict(picture, RED_CIRCLE_LABELS, "a {}", api_name="/classify")
        direct = classify(model, str(files["red_circle"]), RED_CIRCLE_LABELS, "a {}")
        shown = _probabilities(result)  # the label box shows the top few
        assert warning == "" and shown and all(abs(p - direct[label]) < 1e-5 for label, p in shown.items())
        sketch = {"background": picture, "layers": [], "composite": picture, "id": None}
        assert client.predict(sketch, RED_CIRCLE_LABELS, "a {}", api_name="/classify_sketch")[0]["label"] == result["label"]
        hits, warning = client.predict("shapes", "a red circle", 4, api_name="/search_text")
        assert warning == "" and [hit["caption"] for hit in hits] == [caption for _, caption in search(model, collections["shapes"], "a red circle", k=4)]
        image_hits, _ = client.predict("mine", gradio_client.handle_file(str(files["folder"] / "picture2.png")), 3, api_name="/search_image")
        assert image_hits[0]["caption"] == f"1.00 {(files['folder'] / 'picture2.txt').read_text()}"
        _, status = client.submit("a red circle", "", 2, "shapes", 0, api_name="/steer").result(timeout=120)
        assert status.startswith("done: 2 steps")
        card = client.predict(api_name="/model_card")
        assert type(model).__name__ in card and "Weights:" in card and foreign_specs[kind].split(":")[-1] in card
    finally:
        app.close()
