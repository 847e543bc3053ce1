"""What the tabs do, as plain functions: no Gradio here, so notebooks, tests and API callers use them directly.

- `classify` (an image and labels -> label probabilities) and `saliency_picture` (where the model
  looks for its best label);
- `search` (a text or image query -> the nearest images of a collection, with scores);
- `steer_frames` (prompts -> a stream of images as steering paints them).

Bad input raises `InputError` naming the problem and the fix. Words a word-level model would read
as <unk> are not an error for classify and search, which answer anyway: their `..._with_warning`
forms return the answer and the warning together, so the page and API clients both see it.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from clipkit.app.collections import Collection
from clipkit.app.defaults import enlarged, suggestions
from clipkit.app.inputs import (
    MAX_QUERY_CHARS,
    MAX_RESULTS,
    MAX_STEER_STEPS,
    InputError,
    check_length,
    parse_labels,
    read_image,
    resolve_templates,
    split_items,
    unknown_words_warning,
)

MAX_PROMPTS = 16  # steering prompts (and things to avoid) per request: each is embedded every step
SALIENCY_SIDE = 256  # the saliency map is computed on the picture shrunk to this long side, and shown at about it
SALIENCY_SAMPLES = 4  # noisy copies averaged (SmoothGrad): a single gradient of a small model is speckled


# ---------------------------------------------------------------------------------------------
# Zero-shot


def _weights_version(model) -> int:
    """Changes whenever any parameter is modified in place (an optimizer step, load_state_dict)."""
    return sum(parameter._version for parameter in model.parameters())


class _ClassifierCache:
    """Zero-shot weights per (model, labels, templates): a label set is embedded once, not per request.
    Entries of a model go when the model goes (weak keys) or its weights change."""

    def __init__(self, size: int = 32):
        self.size = size
        self._lock = threading.Lock()
        self._by_model: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, model, labels: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
        from clipkit.zeroshot import zeroshot_classifier

        key = (tuple(labels), tuple(templates), _weights_version(model))
        with self._lock:
            entries = self._by_model.setdefault(model, OrderedDict())
            if key in entries:
                entries.move_to_end(key)
                return entries[key]
        weights = zeroshot_classifier(model, labels, templates)  # outside the lock: other requests go on
        with self._lock:
            entries[key] = weights
            while len(entries) > self.size:
                entries.popitem(last=False)
        return weights


_CLASSIFIERS = _ClassifierCache()


def classify_with_warning(model, image, labels_text, template: str | None = "a {}") -> tuple[dict[str, float], str]:
    """`classify`'s probabilities and a warning naming words the model would read as <unk> ("" if none)."""
    from clipkit.interface import embed_images

    picture = read_image(image)
    labels = parse_labels(labels_text, example=suggestions(model).labels_example)
    templates = resolve_templates(template)
    warning = unknown_words_warning(model.tokenizer, [t.format(label) for t in templates for label in labels])
    weights = _CLASSIFIERS.get(model, labels, templates)  # [C, D], unit rows
    embedding = embed_images(model, [picture])  # [1, D], unit length; embed_images runs the model evaluating()
    scale = model.logit_scale_exp().item()  # a number: nothing below needs a gradient
    probabilities = (scale * embedding @ weights.T).softmax(dim=-1)[0]
    return dict(zip(labels, probabilities.cpu().tolist())), warning


def classify(model, image, labels_text, template: str | None = "a {}") -> dict[str, float]:
    """Zero-shot probabilities {label: p} of `image` (anything `read_image` takes) over labels
    (split by the one rule, SPLIT_RULE), each put into `template` (a TEMPLATE_CHOICES name or
    text with one "{}")."""
    return classify_with_warning(model, image, labels_text, template)[0]


def saliency_picture(model, image, labels_text, template: str | None = "a {}") -> tuple[np.ndarray, str]:
    """Where the model looks for its best label: the gradient saliency (`clipkit.saliency`) of the top
    zero-shot label, put in the same templates, painted over the image; returns (RGB array, label)."""
    from clipkit.saliency import gradient_saliency, overlay, top_label_text

    picture = read_image(image)
    probabilities = classify(model, picture, labels_text, template)
    label = max(probabilities, key=probabilities.get)
    if max(picture.size) > SALIENCY_SIDE:
        picture = picture.copy()
        picture.thumbnail((SALIENCY_SIDE, SALIENCY_SIDE))
    saliency = gradient_saliency(model, picture, top_label_text(label, resolve_templates(template)), samples=SALIENCY_SAMPLES)
    return overlay(picture, saliency, scale=max(1, SALIENCY_SIDE // max(picture.size))), label


# ---------------------------------------------------------------------------------------------
# Search


def search_with_warning(model, collection: Collection, query, k: int = 12) -> tuple[list[tuple[Any, str]], str]:
    """`search`'s hits and a warning naming words of a text query the model would read as <unk> ("" if none)."""
    from clipkit.search import search_image, search_text

    k = int(k)
    if not 1 <= k <= MAX_RESULTS:
        raise InputError(f"ask for between 1 and {MAX_RESULTS} results, not {k}")
    warning = ""
    if isinstance(query, str):
        query = check_length(query.strip(), MAX_QUERY_CHARS, "query")
        if not query:
            raise InputError(f"empty query: type what to look for, e.g. {suggestions(model).query!r}, or search with an image")
        warning = unknown_words_warning(model.tokenizer, [query])
        index = collection.index_for(model)
        result = search_text(index, model, query, k=min(k, len(index)))
    else:
        picture = read_image(query)
        index = collection.index_for(model)
        result = search_image(index, model, picture, k=min(k, len(index)))
    return [(collection.picture(position), f"{score:.2f} {item}") for score, position, item in result.hits(0)], warning


def search(model, collection: Collection, query, k: int = 12) -> list[tuple[Any, str]]:
    """The `k` images of `collection` nearest a text query (a str) or an image query (anything else
    `read_image` takes), as (PIL image, "score caption") pairs, best first."""
    return search_with_warning(model, collection, query, k)[0]


# ---------------------------------------------------------------------------------------------
# Steering


def _frame(image: torch.Tensor, side: int = 256):
    from PIL import Image

    from clipkit.viz import to_display_array

    return enlarged(Image.fromarray(to_display_array(image)), side)


def steer_frames(
    model,
    prompts,
    negative_prompts=None,
    steps: int = 60,
    parameterisation: str = "shapes",
    seed: int = 0,
    every: int = 5,
) -> Iterator[tuple[Any, str]]:
    """Steer an image towards `prompts` (split by the one rule, SPLIT_RULE) and away from
    `negative_prompts`, yielding (PIL image, status) every `every` steps and at the end. Closing
    the generator stops the optimisation."""
    import queue

    from clipkit.steer import SteerConfig, SteerStep, prompt_weights, steer
    from clipkit.tokenizer import check_known_words

    offered = suggestions(model)
    if not (prompts.strip() if isinstance(prompts, str) else prompts):
        raise InputError(f"no prompt: type what the image should show, e.g. {offered.prompt!r}")
    positive = split_items(prompts, "prompts", offered.prompt, MAX_PROMPTS)
    avoid = negative_prompts.strip() if isinstance(negative_prompts, str) else negative_prompts
    negative = split_items(negative_prompts, "things to avoid", offered.negative, MAX_PROMPTS) if avoid else []
    if not 1 <= int(steps) <= MAX_STEER_STEPS:
        raise InputError(f"steps must be between 1 and {MAX_STEER_STEPS}, got {steps}")
    try:  # checked here, so that a bad prompt fails at once rather than in the worker thread
        config = SteerConfig(steps=int(steps), parameterisation=parameterisation, seed=int(seed), frame_every=max(1, int(every)))
        check_known_words(model.tokenizer, list(prompt_weights(positive, negative)))
    except ValueError as error:
        raise InputError(str(error)) from None

    updates: queue.Queue = queue.Queue()
    stop = threading.Event()

    def callback(step: SteerStep) -> bool:
        if step.step % config.frame_every == 0 or step.step == step.steps:
            updates.put(step)
        return stop.is_set()

    def work():
        try:
            updates.put(steer(model, positive, negative or None, config=config, callback=callback))
        except Exception as error:  # handed to the generator, which raises it in the request
            updates.put(error)

    worker = threading.Thread(target=work, name="clipkit-steer", daemon=True)
    started = time.perf_counter()
    worker.start()
    try:
        while True:
            update = updates.get()
            if isinstance(update, ValueError):
                raise InputError(str(update)) from update
            if isinstance(update, Exception):
                raise update
            if isinstance(update, SteerStep):
                yield _frame(update.image), f"step {update.step}/{update.steps}, loss {update.loss:.3f}"
                continue
            seconds = time.perf_counter() - started
            yield _frame(update.image), f"done: {len(update.losses)} steps in {seconds:.1f} s, final loss {update.losses[-1]:.3f}"
            return
    finally:
        stop.set()  # the client left (or we are done): the worker stops after its current step
        worker.join()
