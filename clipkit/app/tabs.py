"""The tabs: thin Gradio wiring around the plain functions of `clipkit.app.services`.

Call them inside `with gr.Blocks():` (build_app does). What every tab does the same way:
- messages reach the page whole: an error's text is HTML-escaped before Gradio shows it (a toast
  reads "<unk>" as a tag and cuts the message there);
- a warning (words the model would read as <unk>) is part of the answer: shown once, in a box
  under the result, and returned to API clients beside the scores ("" when there is none);
- a click first clears the previous answer, so an error never stands beside an old result;
- each list box says the one splitting rule and its limit underneath.
"""

from __future__ import annotations

import html
import inspect
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from functools import wraps
from pathlib import Path

import numpy as np

from clipkit.app import services
from clipkit.app.card import model_card
from clipkit.app.collections import Collection
from clipkit.app.defaults import box_info, default_examples, default_template, suggestions, template_choices, trained_on
from clipkit.app.inputs import (
    MAX_BOX_CHARS,
    MAX_ITEM_CHARS,
    MAX_ITEMS,
    MAX_QUERY_CHARS,
    MAX_RESULTS,
    MAX_STEER_STEPS,
    MAX_TEMPLATE_CHARS,
    InputError,
)

WARNING_LABEL = "warning"
HEAT_LABEL = "where the model looks for the top label"


def page_error(message: str, print_exception: bool = False):
    """A gr.Error whose text the page shows whole ("<" and ">" escaped)."""
    import gradio as gr

    return gr.Error(html.escape(message, quote=False), print_exception=print_exception)


@contextmanager
def errors_shown_whole():
    """Errors leave as gr.Error with escaped text: input errors (InputError, any ValueError, a missing
    file) as they are worded, anything unexpected named by its type (and its traceback logged)."""
    import gradio as gr

    try:
        yield
    except gr.Error:
        raise
    except (ValueError, FileNotFoundError) as error:
        raise page_error(str(error)) from None
    except Exception as error:
        raise page_error(f"the app failed ({type(error).__name__}: {error}); try again, or restart it", True) from error


def shown_in_page(function: Callable) -> Callable:
    """`function` with its errors shown whole in the page (errors_shown_whole); generators (the steering stream) too."""
    if inspect.isgeneratorfunction(function):

        @wraps(function)
        def stream(*args, **kwargs):
            with errors_shown_whole():
                yield from function(*args, **kwargs)

        return stream

    @wraps(function)
    def call(*args, **kwargs):
        with errors_shown_whole():
            return function(*args, **kwargs)

    return call


def warning_box(elem_id: str):
    """Where a warning shows, under the answer: plain text (nothing read as HTML). Always there, so the
    API answers a plain string beside the result ("" when all is well)."""
    import gradio as gr

    return gr.Textbox("", label=WARNING_LABEL, placeholder="none: the model knows every word", interactive=False,
                      lines=1, max_lines=8, elem_id=elem_id)


def on_click(trigger, function, inputs, outputs, also_clear: dict | None = None, warning: bool = True, **options):
    """`trigger(function)` after emptying `outputs` (the last one a warning box when `warning`) and
    setting each component of `also_clear` to what its function makes: an error then stands alone, not
    beside an old answer. Returns the event of `function`, the one an API name, a cancel or a `.success` hangs on."""
    also_clear = also_clear or {}

    def clear():
        return [None] * (len(outputs) - warning) + [""] * warning + [make() for make in also_clear.values()]

    clearing = trigger(clear, None, [*outputs, *also_clear], queue=False, api_visibility="private", show_progress="hidden")
    return clearing.then(shown_in_page(function), inputs, outputs, **options)


def zero_shot_tab(model, labels: Sequence[str] | None = None, examples: Sequence[str | Path] | None = None, blocks=None) -> None:
    """Upload, sketch or pick an image; labels and a template; a bar of probabilities, a warning when
    the model does not know a word, and a saliency map of the top label. Endpoints: /classify (an
    uploaded image) and /classify_sketch, each answering (probabilities, warning)."""
    import gradio as gr

    from clipkit.data.shapes import COLOURS, ShapesConfig

    offered = suggestions(model, labels)
    # the shapes world's dark background and palette for shapes models (and untrained ones), else white paper
    canvas_colour = ShapesConfig().background if "shapes" in trained_on(model) or not trained_on(model) else (255, 255, 255)
    brush_colours = ["#{:02x}{:02x}{:02x}".format(*rgb) for rgb in COLOURS.values()] + ["#ffffff", "#000000"]
    with gr.Tab("Zero-shot", id="zero-shot"):
        gr.Markdown("Which label fits the image best? The model embeds each label inside the template and "
                    "compares it with the image: no training on these labels.")
        with gr.Row():
            with gr.Column():
                with gr.Tab("Upload"):
                    image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"], height=256)
                    classify_button = gr.Button("Classify", variant="primary")
                with gr.Tab("Sketch"):
                    # No value here: a starting picture would be saved to a temp file whose path the API
                    # description shows as the default. The page paints the background on load instead.
                    sketch = gr.Sketchpad(label="sketch", canvas_size=(256, 256), height=300, interactive=True,
                                          brush=gr.Brush(default_size=12, colors=brush_colours))
                    sketch_button = gr.Button("Classify sketch", variant="primary")
            with gr.Column():
                labels_box = gr.Textbox(", ".join(offered.labels), label="labels", lines=3, elem_id="zero-shot-labels",
                                        info=box_info(MAX_ITEMS, f"labels, {MAX_BOX_CHARS:,} characters"))
                template = gr.Dropdown(template_choices(model), value=default_template(model), allow_custom_value=True,
                                       label="template",
                                       info=f"or type your own with {{}} where the label goes (at most {MAX_TEMPLATE_CHARS} characters)")
                result = gr.Label(num_top_classes=5, label="probabilities")
                warning = warning_box("zero-shot-warning")
                heat = gr.Image(label=HEAT_LABEL, type="numpy", interactive=False,
                                height=services.SALIENCY_SIDE, elem_id="zero-shot-saliency")

        # no old label above an empty map; made when clearing (made here, inside the Blocks, it would be drawn)
        unexplained = {heat: lambda: gr.Image(value=None, label=HEAT_LABEL)}

        def classify_upload(picture, labels_text, template_choice):
            probabilities, text = services.classify_with_warning(model, picture, labels_text, template_choice)
            return probabilities, text

        def explain(picture, labels_text, template_choice):
            painted, label = services.saliency_picture(model, picture, labels_text, template_choice)
            return gr.Image(value=painted, label=f"where the model looks for '{label}' (gradient saliency)")

        # preprocess=False: the handler gets the uploaded file's path (Gradio has checked that it is an
        # upload), so a non-image or a huge picture is refused by read_image before anything decodes it.
        # The saliency map follows a successful classification as a private event: the API keeps its endpoints.
        for trigger, source, name in ((classify_button.click, image, "classify"), (sketch_button.click, sketch, "classify_sketch")):
            on_click(trigger, classify_upload, [source, labels_box, template], [result, warning], also_clear=unexplained,
                     api_name=name, preprocess=False).success(
                shown_in_page(explain), [source, labels_box, template], heat, api_visibility="private", preprocess=False)
        example_paths = [str(path) for path in (examples if examples is not None else default_examples())]
        if example_paths:
            shown = gr.Examples([[path] for path in example_paths], [image], label="examples: click one")
            # a click fills the image, then classifies it with whatever labels and template are set
            on_click(shown.load_input_event.then, classify_upload, [image, labels_box, template], [result, warning],
                     also_clear=unexplained, api_visibility="private", preprocess=False).success(
                shown_in_page(explain), [image, labels_box, template], heat, api_visibility="private", preprocess=False)
    if blocks is not None:
        background = {"background": np.full((256, 256, 3), canvas_colour, dtype=np.uint8), "layers": [], "composite": None}
        blocks.load(lambda: background, None, sketch, api_visibility="private", queue=False)


def search_tab(model, collections: dict[str, Collection]) -> None:
    """A text or image query against a chosen collection; a gallery of hits with their scores and a
    warning when the model does not know a word. Endpoints: /search_text and /search_image, each
    answering (gallery, warning)."""
    import gradio as gr

    if not collections:
        raise ValueError("no collections to search: pass collections=default_collections() or your own Collection objects")
    names = list(collections)
    with gr.Tab("Search", id="search"):
        descriptions = "; ".join(f"**{name}**: {c.description}" for name, c in collections.items())
        gr.Markdown(f"Find the images nearest a caption or another image. Collections are indexed on first use. {descriptions}.")
        with gr.Row():
            with gr.Column():
                collection = gr.Dropdown(names, value=names[0], label="collection")
                count = gr.Slider(1, MAX_RESULTS, value=12, step=1, label="results")
                text = gr.Textbox(label="text query", placeholder=f"e.g. {suggestions(model).query}", elem_id="search-query",
                                  info=f"One caption, at most {MAX_QUERY_CHARS} characters.")
                text_button = gr.Button("Search by text", variant="primary")
                image = gr.Image(label="or an image query", type="filepath", sources=["upload", "clipboard"], height=200)
                image_button = gr.Button("Search by image")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="nearest images (cosine similarity, caption)", columns=4, height=560, object_fit="contain")
                warning = warning_box("search-warning")

        def lookup(name: str) -> Collection:
            if name not in collections:
                raise InputError(f"no collection {name!r}: choose one of {names}")
            return collections[name]

        def by_text(name, query, k):
            hits, text_warning = services.search_with_warning(model, lookup(name), query if query is not None else "", k)
            return hits, text_warning

        def by_image(name, picture, k):
            if picture is None:
                raise InputError("no image: upload an image to search with, or search by text")
            hits, _ = services.search_with_warning(model, lookup(name), picture, k)
            return hits, ""

        on_click(text_button.click, by_text, [collection, text, count], [gallery, warning], api_name="search_text")
        on_click(text.submit, by_text, [collection, text, count], [gallery, warning], api_visibility="private")
        on_click(image_button.click, by_image, [collection, image, count], [gallery, warning], api_name="search_image",
                 preprocess=False)


def steer_tab(model) -> None:
    """Prompts and a step count; the image as it is optimised, streamed. Endpoint: /steer."""
    import gradio as gr

    from clipkit.steer import PARAMETERISATIONS

    offered = suggestions(model)
    rule = box_info(services.MAX_PROMPTS, f"prompts, each up to {MAX_ITEM_CHARS} characters")
    with gr.Tab("Steer", id="steer"):
        gr.Markdown("Paint an image the model thinks matches the prompt (CLIP-guided optimisation, `clipkit.steer`). "
                    "Frames stream in as it goes; press Stop to end early.")
        with gr.Row():
            with gr.Column():
                prompts = gr.Textbox(offered.prompt, label="prompts", lines=2, info=rule, elem_id="steer-prompts")
                negatives = gr.Textbox("", label="avoid (optional)", placeholder=f"e.g. {offered.negative}", info=rule)
                steps = gr.Slider(1, MAX_STEER_STEPS, value=60, step=1, label="steps")
                parameterisation = gr.Dropdown(list(PARAMETERISATIONS), value="shapes", label="what is painted")
                seed = gr.Number(0, label="seed", precision=0)
                with gr.Row():
                    run = gr.Button("Steer", variant="primary")
                    stop = gr.Button("Stop", variant="stop")
            with gr.Column():
                picture = gr.Image(label="image", type="pil", height=300, interactive=False)
                status = gr.Textbox(label="progress", interactive=False)

        def stream(prompt_text, negative_text, step_count, kind, seed_value):
            yield from services.steer_frames(model, prompt_text, negative_text, int(step_count), kind, int(seed_value or 0))

        event = on_click(run.click, stream, [prompts, negatives, steps, parameterisation, seed], [picture, status],
                         warning=False, api_name="steer", concurrency_limit=1)
        stop.click(None, cancels=[event], api_visibility="private")


def about_tab(model, card: str | None = None) -> str:
    """The model card (markdown); returns it. build_app serves it at the endpoint /model_card too."""
    import gradio as gr

    text = card or model_card(model)
    with gr.Tab("About", id="about"):
        gr.Markdown(text)
    return text


def moderation_tab(model, policy=None) -> None:
    """An image and a policy (JSON, editable, or loaded from a file); each rule's score, threshold, action
    and whether it fires, and a warning when the model does not know a policy word. Endpoint: /moderate,
    answering (verdicts, warning)."""
    import gradio as gr

    from clipkit.moderation import policy_to_json

    text = policy_to_json(policy if policy is not None else services.default_policy(model))
    with gr.Tab("Moderation", id="moderation"):
        gr.Markdown("Does the image break a rule of the policy? Each rule's score weighs its descriptions against its "
                    "counter-descriptions and ordinary things: it does not depend on the other rules. A rule fires at "
                    "or above its threshold; calibrate thresholds on labelled images (`clipkit.moderation.calibrate`), "
                    "never trust 0.5.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"], height=256)
                run = gr.Button("Moderate", variant="primary")
                verdicts = gr.JSON(label="verdicts: rule, score, threshold, action, flagged")
                warning = warning_box("moderation-warning")
            with gr.Column():
                policy_box = gr.Code(text, language="json", label="policy", lines=16, elem_id="moderation-policy")
                gr.Markdown(f"Rules with `name`, `descriptions`, optional `counter`, `action` and `threshold` in [0, 1]; "
                            f"at most {services.MAX_POLICY_CHARS:,} characters.")
                upload = gr.File(label="load a policy file (JSON)", file_types=[".json"], type="filepath")

        def judge(picture, policy_text):
            return services.moderate_with_warning(model, picture, policy_text)

        def load(path):
            if path is None:
                raise InputError("no file: choose a policy JSON file")
            return policy_to_json(services.read_policy(Path(path)))

        on_click(run.click, judge, [image, policy_box], [verdicts, warning], api_name="moderate", preprocess=False)
        upload.upload(shown_in_page(load), upload, policy_box, api_visibility="private")
