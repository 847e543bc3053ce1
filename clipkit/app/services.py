"""What the tabs do, as plain functions: no Gradio here, so notebooks, tests and API callers use them directly.

- `classify` (an image and labels -> label probabilities) and `saliency_picture` (where the model
  looks for its best label);
- `search` (a text or image query -> the nearest images of a collection, with scores);
- `steer_frames` (prompts -> a stream of images as steering paints them);
- `moderate` (an image and a policy -> each rule's score, threshold, action and whether it fires).

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


class _PerModelCache:
    """What a request builds from a model's weights (zero-shot weights per label set, a policy's scorer),
    kept per model: built once, not per request. Entries of a model go when the model goes (weak keys)
    or its weights change."""

    def __init__(self, size: int = 32):
        self.size = size
        self._lock = threading.Lock()
        self._by_model: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def get(self, model, key, make):
        """The entry for (model, `key`, the weights now); `make()` builds it when missing."""
        key = (key, _weights_version(model))
        with self._lock:
            entries = self._by_model.setdefault(model, OrderedDict())
            if key in entries:
                entries.move_to_end(key)
                return entries[key]
        value = make()  # outside the lock: other requests go on
        with self._lock:
            entries[key] = value
            while len(entries) > self.size:
                entries.popitem(last=False)
        return value


_CLASSIFIERS = _PerModelCache()  # zero-shot weights [C, D] per (labels, templates)
_SCORERS = _PerModelCache(size=8)  # a PolicyScorer per policy


def classify_with_warning(model, image, labels_text, template: str | None = "a {}") -> tuple[dict[str, float], str]:
    """`classify`'s probabilities and a warning naming words the model would read as <unk> ("" if none)."""
    from clipkit.interface import embed_images
    from clipkit.zeroshot import zeroshot_classifier

    picture = read_image(image)
    labels = parse_labels(labels_text, example=suggestions(model).labels_example)
    templates = resolve_templates(template)
    warning = unknown_words_warning(model.tokenizer, [t.format(label) for t in templates for label in labels])
    weights = _CLASSIFIERS.get(model, (tuple(labels), tuple(templates)),
                               lambda: zeroshot_classifier(model, labels, templates))  # [C, D], unit rows
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


# ---------------------------------------------------------------------------------------------
# Moderation

MAX_POLICY_CHARS = 20_000  # a policy's JSON: MAX_RULES rules of a few descriptions fit, a pasted book does not


def default_policy(model):
    """The emoji policy (weapons, alcohol and tobacco, people) when the model knows its words, else
    the shapes world's toy policy (red shapes, stars), whose words a shapes model knows."""
    from clipkit.moderation.worlds import EMOJI_POLICY, SHAPES_POLICY

    return EMOJI_POLICY if not unknown_words_warning(model.tokenizer, _policy_texts(EMOJI_POLICY)) else SHAPES_POLICY


def _policy_texts(policy) -> list[str]:
    texts = list(policy.neutral) + [text for rule in policy.rules for text in rule.descriptions + rule.counter]
    return [template.format(text) for template in policy.templates for text in texts]


def read_policy(policy):
    """A checked Policy from a Policy, JSON text (the tab's box) or a file path; a bad one is an InputError
    naming the rule and field."""
    from pathlib import Path

    from clipkit.config import ConfigError
    from clipkit.io import BadFileError
    from clipkit.moderation import Policy, load_policy, policy_from_json

    if isinstance(policy, Policy):
        return policy
    try:
        if isinstance(policy, Path) or (isinstance(policy, dict) and "path" in policy):
            return load_policy(policy["path"] if isinstance(policy, dict) else policy)
        text = check_length((policy or "").strip(), MAX_POLICY_CHARS, "policy")
        if not text:
            raise InputError("no policy: write one as JSON, {\"rules\": [{\"name\": ..., \"descriptions\": [...]}]}, or load a file")
        return policy_from_json(text)
    except (ConfigError, BadFileError) as error:
        raise InputError(f"bad policy: {error}") from None


def moderate_with_warning(model, image, policy) -> tuple[list[dict], str]:
    """`moderate`'s verdicts and a warning naming policy words the model would read as <unk> ("" if none)."""
    from clipkit.moderation import PolicyScorer

    picture = read_image(image)
    checked = read_policy(policy)
    warning = unknown_words_warning(model.tokenizer, _policy_texts(checked))
    return _SCORERS.get(model, checked, lambda: PolicyScorer(model, checked)).decide(picture), warning


def moderate(model, image, policy) -> list[dict]:
    """Each rule's verdict on `image`: [{"rule", "score", "threshold", "action", "flagged"}], in policy
    order. `policy`: a clipkit.moderation.Policy, its JSON text, or a JSON file's path."""
    return moderate_with_warning(model, image, policy)[0]
