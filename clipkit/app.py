"""The Gradio app: zero-shot classification, search, steering and a model card for any clipkit model.

Each tab is thin wiring around a plain function that notebooks and tests call directly:
`classify` (an image and labels -> label probabilities), `search` (a text or image query -> the
nearest images of a collection), `steer_frames` (prompts -> a stream of images) and `model_card`
(markdown). Those functions check their input and raise `gr.Error` with a message naming the
problem and the fix, which Gradio shows in the page while the server goes on serving.

    app = build_app(model)                        # all four tabs; or tabs=("zero-shot",)
    launch(app, prevent_thread_lock=True)         # 127.0.0.1 unless host= or share=
    app.close()

    python -m clipkit.app --checkpoint PATH [--port 7860] [--host H] [--share] [--folder DIR]
    python -m clipkit.app --from-notebook-checkpoint   # notebook 05's model, trained here if absent

Safe defaults: the server binds 127.0.0.1, uploads are capped at `MAX_FILE_SIZE`, images above
`MAX_IMAGE_PIXELS` are refused before they are decoded, and a queue runs at most
`CONCURRENCY_LIMIT` requests at once (steering, the heavy one, one at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any

import numpy as np
import torch

from clipkit.zeroshot import TEMPLATES

TAB_NAMES = ("zero-shot", "search", "steer", "about")
HOST = "127.0.0.1"  # loopback only: nobody else on the network reaches the app unless asked (--host, --share)
DEFAULT_PORT = 7860
MAX_FILE_SIZE = "20mb"  # uploads above this are refused by the server before any handler runs
MAX_IMAGE_PIXELS = 25_000_000  # larger images are refused from their header, before decoding (a 5000 x 5000 photo fits)
WORKING_SIDE = 1024  # accepted images are shrunk to this long side first: every model here sees far fewer pixels
MAX_LABELS = 200  # more labels than this are refused: each costs a text embedding, and a bar chart of 500 helps no one
MAX_LABEL_CHARS = 200  # a longer label is surely a paste gone wrong
MAX_QUERY_CHARS = 500
MAX_RESULTS = 48  # most hits a search returns
MAX_STEER_STEPS = 300  # the steering slider's end: ~a minute of CPU for the small models
MAX_FOLDER_IMAGES = 5000  # a user folder is indexed up to this many images
CONCURRENCY_LIMIT = 4  # requests served at once (per event); the rest wait in the queue
QUEUE_SIZE = 256  # requests waiting beyond this are refused with "queue full"
GALLERY_SIDE = 128  # small images (32 px shapes, 28 px Fashion-MNIST) are enlarged to this for display

# The template dropdown: single templates and the ensembles of clipkit.zeroshot.TEMPLATES. Any text
# with one "{}" typed into the box is used as a template too.
TEMPLATE_CHOICES: dict[str, tuple[str, ...]] = {
    "a {}": ("a {}",),
    "{}": ("{}",),
    "a photo of a {}": ("a photo of a {}",),
    **{f"{name} ensemble ({len(templates)} templates)": tuple(templates) for name, templates in TEMPLATES.items()},
}


# ---------------------------------------------------------------------------------------------
# Checking input: every problem becomes a gr.Error that says what to do


def _fail(message: str):
    import gradio as gr

    raise gr.Error(message, print_exception=False)


def _user_errors(function: Callable) -> Callable:
    """Library errors about the input (ValueError, a missing data file) reach the page as gr.Error."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        import gradio as gr

        try:
            return function(*args, **kwargs)
        except gr.Error:  # a ValueError too, already worded for the page
            raise
        except (ValueError, FileNotFoundError) as error:
            _fail(str(error))

    return wrapper


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        _fail(
            f"the image is {width} x {height} = {width * height:,} pixels, more than this app accepts "
            f"({max_pixels:,}): shrink it (to 1,000 px on its long side, say) and try again"
        )


def check_image_file(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse a file that is not an image or is too large, reading only its header."""
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit, below, is lower
        try:
            with Image.open(path) as image:
                width, height = image.size
        except Image.DecompressionBombError as error:
            _fail(f"the image is far too large to open safely ({error}); shrink it and try again")
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            _fail("the file is not an image this app can read (not an image, or damaged): upload a PNG, JPEG or WebP picture")
    _check_pixels(width, height, max_pixels)


def read_image(image, max_pixels: int = MAX_IMAGE_PIXELS):
    """An RGB PIL image from whatever a Gradio input or a caller hands over: a file path, a PIL image,
    a numpy array [H, W, C], a uint8/float tensor [3, H, W], an unprocessed Gradio file payload
    ({"path": ...}) or a Sketchpad value (its composite). None, non-images and images over
    `max_pixels` (checked from the file header, before decoding) are refused with a gr.Error."""
    from PIL import Image

    from clipkit.data.files import BadImageError, _to_rgb, load_image_rgb

    if isinstance(image, dict) and "composite" in image:  # the Sketchpad's {"background", "layers", "composite"}
        image = image["composite"]
    if isinstance(image, dict):  # an unprocessed upload: Gradio's FileData
        image = image.get("path")
    if image is None:
        _fail("no image: upload one, draw one or pick an example, then press the button again")
    if isinstance(image, (str, Path)):
        check_image_file(image, max_pixels)
        try:
            picture = load_image_rgb(image, max_pixels=max_pixels)
        except BadImageError:
            _fail("the file is not an image this app can read (damaged or truncated): upload a PNG, JPEG or WebP picture")
    elif isinstance(image, Image.Image):
        _check_pixels(*image.size, max_pixels)
        picture = _to_rgb(image)
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        picture = _array_to_pil(image, max_pixels)
    else:
        _fail(f"cannot read an image from a {type(image).__name__}: pass a file path, a PIL image or an array [H, W, 3]")
    if max(picture.size) > WORKING_SIDE:
        picture = picture.copy()
        picture.thumbnail((WORKING_SIDE, WORKING_SIDE))
    return picture


def _array_to_pil(array, max_pixels: int):
    from PIL import Image

    from clipkit.data.files import _to_rgb
    from clipkit.viz import to_display_array

    shape = tuple(array.shape)
    channels_first = len(shape) == 3 and shape[0] in (1, 3) and shape[-1] not in (1, 3, 4)
    height, width = (shape[1:3] if channels_first else shape[:2]) if len(shape) in (2, 3) else (0, 0)
    if height * width == 0:
        _fail(f"an image array must be [H, W], [H, W, 3 or 4] or [3, H, W], got shape {shape}")
    _check_pixels(width, height, max_pixels)
    if len(shape) == 3 and shape[-1] == 4:  # RGBA from a sketch: composite on white like a browser shows it
        return _to_rgb(Image.fromarray(np.asarray(array, dtype=np.uint8), mode="RGBA"))
    return Image.fromarray(to_display_array(array))


def parse_labels(text: str | Sequence[str] | None, max_labels: int = MAX_LABELS) -> list[str]:
    """Comma- (or line-) separated labels -> a list; blanks dropped, repeats kept once, in order."""
    pieces = re.split(r"[,\n]", text) if isinstance(text, str) else list(text or [])
    labels = list(dict.fromkeys(label.strip() for label in pieces if str(label).strip()))
    if not labels:
        _fail("no labels: type the classes to choose between, separated by commas, e.g. 'red circle, blue square'")
    if len(labels) > max_labels:
        _fail(f"{len(labels)} labels is more than this app takes ({max_labels}): remove some, or ask about them in several rounds")
    long = [label for label in labels if len(label) > MAX_LABEL_CHARS]
    if long:
        _fail(f"a label is {len(long[0])} characters long (at most {MAX_LABEL_CHARS}): did a paste go wrong? Separate labels with commas")
    return labels


def resolve_templates(choice: str | None) -> tuple[str, ...]:
    """A TEMPLATE_CHOICES name, or any text with one "{}" where the label goes."""
    if choice is None or not choice.strip():
        return TEMPLATE_CHOICES["a {}"]
    if choice in TEMPLATE_CHOICES:
        return TEMPLATE_CHOICES[choice]
    if choice.count("{}") != 1:
        _fail(f"the template {choice!r} needs exactly one '{{}}' where the label goes, e.g. 'a photo of a {{}}'")
    return (choice,)


def _warn_unknown_words(model, texts: Sequence[str]) -> None:
    """Word-level tokenizers read unknown words as <unk>: answer anyway, but say so in the page."""
    import gradio as gr

    from clipkit.steer import check_prompt_words

    try:
        check_prompt_words(model.tokenizer, texts)
    except ValueError as error:
        gr.Warning(str(error), duration=15)


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


def _logit_scale(model) -> float:
    """exp(logit_scale), clamped at 100 as training clamps it: the softmax temperature CLIP learnt."""
    return min(float(model.logit_scale.detach().exp()), 100.0)


@_user_errors
def classify(model, image, labels_text, template: str | None = "a {}") -> dict[str, float]:
    """Zero-shot probabilities {label: p} of `image` (anything `read_image` takes) over comma-separated
    labels, each put into `template` (a TEMPLATE_CHOICES name or text with one "{}")."""
    from clipkit.model import embed_images

    picture = read_image(image)
    labels = parse_labels(labels_text)
    templates = resolve_templates(template)
    _warn_unknown_words(model, labels)
    weights = _CLASSIFIERS.get(model, labels, templates)  # [C, D], unit rows
    with torch.no_grad():
        embedding = embed_images(model, [picture])  # [1, D], unit length
        probabilities = (_logit_scale(model) * embedding @ weights.T).softmax(dim=-1)[0]
    return dict(zip(labels, probabilities.cpu().tolist()))


SALIENCY_SIDE = 256  # the saliency map is computed on the picture shrunk to this long side, and shown at about it
SALIENCY_SAMPLES = 4  # noisy copies averaged (SmoothGrad): a single gradient of a small model is speckled


@_user_errors
def saliency_picture(model, image, labels_text, template: str | None = "a {}") -> tuple[np.ndarray, str]:
    """Where the model looks for its best label: the gradient saliency (`clipkit.saliency`) of the top
    zero-shot label, put in the same templates, painted over the image; returns (RGB array, label)."""
    from clipkit.saliency import gradient_saliency, overlay, top_label_text

    probabilities = classify(model, image, labels_text, template)
    label = max(probabilities, key=probabilities.get)
    picture = read_image(image)
    if max(picture.size) > SALIENCY_SIDE:
        picture = picture.copy()
        picture.thumbnail((SALIENCY_SIDE, SALIENCY_SIDE))
    saliency = gradient_saliency(model, picture, top_label_text(label, resolve_templates(template)), samples=SALIENCY_SAMPLES)
    return overlay(picture, saliency, scale=max(1, SALIENCY_SIDE // max(picture.size))), label


# ---------------------------------------------------------------------------------------------
# Search collections


def _enlarged(picture, side: int):
    """A small picture scaled up by a whole factor (nearest neighbour) to about `side`, so pixels stay sharp on screen."""
    from PIL import Image

    factor = side // max(picture.size)
    return picture.resize((picture.width * factor, picture.height * factor), Image.NEAREST) if factor > 1 else picture


@dataclass(eq=False)
class Collection:
    """Images to search, loaded and indexed on first use (once, however many requests arrive).

    `load()` returns (images, items): a uint8 tensor [N, 3, H, W] or a list of PIL images, and one
    caption per image. Pass `index` when these images are already indexed with the app's model.
    """

    name: str
    load: Callable[[], tuple[Any, list[str]]]
    description: str = ""
    index: Any = None  # an EmbeddingIndex of the images made with the app's model, or None to build one
    _data: tuple[Any, list[str]] | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def from_images(cls, name: str, images, items: Sequence[str], index=None, description: str = "") -> Collection:
        """A collection of images already in memory (e.g. a notebook's data set and its index)."""
        if len(images) != len(items):
            raise ValueError(f"collection {name!r}: {len(images)} images but {len(items)} items; give one caption per image")
        return cls(name, lambda: (images, list(items)), description or f"{len(items):,} images", index)

    def data(self) -> tuple[Any, list[str]]:
        with self._lock:
            if self._data is None:
                self._data = self.load()
            return self._data

    def index_for(self, model):
        from clipkit.search import index_images

        images, items = self.data()
        with self._lock:
            if self.index is None:
                self.index = index_images(model, images, items=items, progress=False)
            return self.index

    def picture(self, position: int):
        """Image `position` as a PIL image, enlarged (nearest neighbour) when small so pixels stay sharp."""
        from PIL import Image

        from clipkit.viz import to_display_array

        images, _ = self.data()
        image = images[position]
        return _enlarged(image if isinstance(image, Image.Image) else Image.fromarray(to_display_array(image)), GALLERY_SIDE)


def _emoji_collection() -> Collection:
    def load():
        from clipkit.data import load_emoji

        emoji = load_emoji(64)
        return emoji.images, list(emoji.captions)

    return Collection("emoji", load, "~1,400 emoji from Noto Color Emoji, captioned with their Unicode names")


def _fashion_collection(limit: int = 2000) -> Collection:
    def load():
        from clipkit.data import load_fashion_mnist

        test = load_fashion_mnist("test", limit=limit)
        return test.images, [test.class_names[label] for label in test.labels.tolist()]

    return Collection("fashion-mnist", load, f"the first {limit:,} Fashion-MNIST test images, labelled by class")


def _shapes_collection(count: int = 1000) -> Collection:
    def load():
        from clipkit.data import ShapesConfig, ShapesWorld

        sample = ShapesWorld(ShapesConfig(image_size=64)).sample(count, seed=0, split="all")
        return sample.images, list(sample.captions)

    return Collection("shapes world", load, f"{count:,} shapes-world scenes (held-out pairs included), with captions")


def folder_collection(root: str | Path, name: str | None = None, limit: int = MAX_FOLDER_IMAGES) -> Collection:
    """Your images with sidecar captions (`cat.jpg` + `cat.txt`, see `clipkit.data.ImageCaptionFolder`),
    read on first search; unreadable files are skipped with a warning."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist: pass a folder of images with sidecar .txt captions")

    def load():
        from clipkit.data import ImageCaptionFolder

        folder = ImageCaptionFolder(root)
        pictures, captions = [], []
        for path, caption in folder.items[:limit]:
            picture = read_image(path)
            picture.thumbnail((256, 256))  # keeps memory small; every model here looks at 224 px or less
            pictures.append(picture)
            captions.append(caption)
        return pictures, captions

    return Collection(name or root.name, load, f"your images in {root} (at most {limit:,})")


def default_collections(folders: Sequence[str | Path] = ()) -> dict[str, Collection]:
    """Emoji, Fashion-MNIST, a shapes-world sample and each of `folders`; nothing is loaded yet."""
    collections = [_emoji_collection(), _fashion_collection(), _shapes_collection()]
    collections += [folder_collection(folder) for folder in folders]
    return {collection.name: collection for collection in collections}


@_user_errors
def search(model, collection: Collection, query, k: int = 12) -> list[tuple[Any, str]]:
    """The `k` images of `collection` nearest a text query (a str) or an image query (anything else
    `read_image` takes), as (PIL image, "score caption") pairs, best first."""
    from clipkit.search import search_image, search_text

    k = int(k)
    if not 1 <= k <= MAX_RESULTS:
        _fail(f"ask for between 1 and {MAX_RESULTS} results, not {k}")
    if isinstance(query, str):
        query = query.strip()
        if not query:
            _fail("empty query: type what to look for, e.g. 'a red apple', or search with an image")
        if len(query) > MAX_QUERY_CHARS:
            _fail(f"the query is {len(query)} characters long; keep it under {MAX_QUERY_CHARS}")
        _warn_unknown_words(model, [query])
        index = collection.index_for(model)
        result = search_text(index, model, query, k=min(k, len(index)))
    else:
        picture = read_image(query)
        index = collection.index_for(model)
        result = search_image(index, model, picture, k=min(k, len(index)))
    return [(collection.picture(position), f"{score:.2f} {item}") for score, position, item in result.hits(0)]


# ---------------------------------------------------------------------------------------------
# Steering


def _split_prompts(text: str | Sequence[str] | None) -> list[str]:
    pieces = re.split(r"[;\n]", text) if isinstance(text, str) else list(text or [])
    return [piece.strip() for piece in pieces if piece.strip()]


def _frame(image: torch.Tensor, side: int = 256):
    from PIL import Image

    from clipkit.viz import to_display_array

    return _enlarged(Image.fromarray(to_display_array(image)), side)


def steer_frames(
    model,
    prompts,
    negative_prompts=None,
    steps: int = 60,
    parameterisation: str = "shapes",
    seed: int = 0,
    every: int = 5,
) -> Iterator[tuple[Any, str]]:
    """Steer an image towards `prompts` (one per line, or separated by ';'), yielding (PIL image,
    status) every `every` steps and at the end. Closing the generator stops the optimisation."""
    import queue

    from clipkit.steer import SteerConfig, SteerStep, check_prompt_words, prompt_weights, steer

    positive, negative = _split_prompts(prompts), _split_prompts(negative_prompts)
    if not positive:
        _fail("no prompt: type what the image should show, e.g. 'a red circle'")
    if not 1 <= int(steps) <= MAX_STEER_STEPS:
        _fail(f"steps must be between 1 and {MAX_STEER_STEPS}, got {steps}")
    try:  # checked here, so that a bad prompt fails at once rather than in the worker thread
        config = SteerConfig(steps=int(steps), parameterisation=parameterisation, seed=int(seed), frame_every=max(1, int(every)))
        check_prompt_words(model.tokenizer, list(prompt_weights(positive, negative)))
    except ValueError as error:
        _fail(str(error))

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
            if isinstance(update, Exception):
                if isinstance(update, ValueError):
                    _fail(str(update))
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
# The model card


def _flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _config_dict(model) -> dict[str, Any]:
    config = getattr(model, "config", None)
    if config is None:
        return {"model": getattr(model, "name", type(model).__name__)}
    if hasattr(config, "to_dict"):
        data = config.to_dict()
    else:
        from dataclasses import asdict, is_dataclass

        data = json.loads(json.dumps(asdict(config), default=str)) if is_dataclass(config) else {"config": repr(config)}
    data.pop("tokenizer", None)  # a word list of thousands; summarised on its own line instead
    vision = data.get("vision")
    if isinstance(vision, dict) and vision.get("kind") in ("cnn", "vit"):  # only the fields of the tower it has
        data["vision"] = {k: v for k, v in vision.items() if k == "kind" or k.startswith("cnn_") == (vision["kind"] == "cnn")}
    return data


def model_card(model, title: str = "Model card") -> str:
    """Markdown: parameters, tokenizer, config, training data and metrics (from the checkpoint's metadata)."""
    metadata = dict(getattr(model, "metadata", None) or {})
    parameters = sum(p.numel() for p in model.parameters())
    tokenizer = getattr(model, "tokenizer", None)
    lines = [f"## {title}", "", f"**{type(model).__name__}**, {parameters / 1e6:.2f}M parameters, "
             f"{model.image_size} px images, on {next(model.parameters()).device}."]
    if tokenizer is not None:
        lines.append(f"Tokenizer: {type(tokenizer).__name__}, {tokenizer.vocab_size:,} tokens, context {tokenizer.context_length}.")
    metrics = metadata.pop("metrics", None) or {}
    data = metadata.pop("data", None)
    lines += ["", "### Training data", "", f"`{json.dumps(data)}`" if data else "Not recorded (the model was not loaded from a training checkpoint)."]
    if metadata:
        lines += ["", "### Training run", "", "| field | value |", "| --- | --- |"]
        lines += [f"| {key} | {value} |" for key, value in metadata.items()]
    lines += ["", "### Metrics", ""]
    if metrics:
        lines += ["| metric | value |", "| --- | --- |"]
        lines += [f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |" for key, value in metrics.items()]
    else:
        lines.append("None recorded.")
    lines += ["", "### Config", "", "| field | value |", "| --- | --- |"]
    lines += [f"| {key} | {value} |" for key, value in _flatten(_config_dict(model)).items()]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Defaults that follow the model's training data


def _trained_on(model) -> set[str]:
    data = (getattr(model, "metadata", None) or {}).get("data") or {}
    return set(data) if isinstance(data, dict) else {str(data)}


def default_labels(model) -> list[str]:
    """Fashion-MNIST's classes for a model trained on it alone, else the shapes world's 64 colour-shape pairs."""
    if _trained_on(model) == {"fashion"}:
        from clipkit.data.fashion import CLASS_NAMES

        return list(CLASS_NAMES)
    from clipkit.data import ShapesWorld

    return list(ShapesWorld().class_names)


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
        _enlarged(Image.fromarray(to_display_array(sample.images[position])), 4 * world.config.image_size).save(path)
    return paths


# ---------------------------------------------------------------------------------------------
# The tabs: thin Gradio wiring around the functions above. Call them inside `with gr.Blocks():`.


def _default_template(model) -> str:
    """The shapes ensemble for shapes models, else the plain "a {}"."""
    return next(name for name in TEMPLATE_CHOICES if name.startswith("shapes")) if "shapes" in _trained_on(model) else "a {}"


def zero_shot_tab(model, labels: Sequence[str] | None = None, examples: Sequence[str | Path] | None = None) -> None:
    """Upload, sketch or pick an image; comma-separated labels and a template; a bar of probabilities and
    a saliency map of the top label. Endpoints: /classify (uploaded image) and /classify_sketch."""
    import gradio as gr

    labels_value = ", ".join(labels if labels is not None else default_labels(model))
    from clipkit.data.shapes import COLOURS, ShapesConfig

    # the shapes world's dark background and palette for shapes models (and untrained ones), else white paper
    canvas_colour = ShapesConfig().background if "shapes" in _trained_on(model) or not _trained_on(model) else (255, 255, 255)
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
                    sketch = gr.Sketchpad(
                        label="sketch", canvas_size=(256, 256), height=300, interactive=True,
                        value={"background": np.full((256, 256, 3), canvas_colour, dtype=np.uint8), "layers": [], "composite": None},
                        brush=gr.Brush(default_size=12, colors=brush_colours),
                    )
                    sketch_button = gr.Button("Classify sketch", variant="primary")
            with gr.Column():
                labels_box = gr.Textbox(labels_value, label=f"labels (comma-separated, at most {MAX_LABELS})", lines=3)
                template = gr.Dropdown(list(TEMPLATE_CHOICES), value=_default_template(model), allow_custom_value=True,
                                       label="template", info="or type your own with {} where the label goes")
                result = gr.Label(num_top_classes=5, label="probabilities")
                heat = gr.Image(label="where the model looks for the top label", type="numpy", interactive=False,
                                height=SALIENCY_SIDE, elem_id="zero-shot-saliency")

        def classify_upload(picture, labels_text, template_choice):
            return classify(model, picture, labels_text, template_choice)

        def explain(picture, labels_text, template_choice):
            painted, label = saliency_picture(model, picture, labels_text, template_choice)
            return gr.Image(value=painted, label=f"where the model looks for '{label}' (gradient saliency)")

        # preprocess=False: the handler gets the uploaded file's path (Gradio has checked that it is an
        # upload), so a non-image or a huge picture is refused by read_image before anything decodes it.
        # The saliency map follows a successful classification as a private event: the API keeps its endpoints.
        for button, source, name in ((classify_button, image, "classify"), (sketch_button, sketch, "classify_sketch")):
            button.click(classify_upload, [source, labels_box, template], result, api_name=name, preprocess=False).success(
                explain, [source, labels_box, template], heat, api_visibility="private", preprocess=False)
        example_paths = [str(path) for path in (examples if examples is not None else default_examples())]
        if example_paths:
            shown = gr.Examples([[path] for path in example_paths], [image], label="examples: click one")
            # a click fills the image, then classifies it with whatever labels and template are set
            shown.load_input_event.then(classify_upload, [image, labels_box, template], result, api_visibility="private",
                                        preprocess=False).success(explain, [image, labels_box, template], heat,
                                                                  api_visibility="private", preprocess=False)


def search_tab(model, collections: dict[str, Collection]) -> None:
    """A text or image query against a chosen collection; a gallery of hits with their scores.
    Endpoints: /search_text and /search_image."""
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
                text = gr.Textbox(label="text query", placeholder="e.g. a red apple", max_length=MAX_QUERY_CHARS)
                text_button = gr.Button("Search by text", variant="primary")
                image = gr.Image(label="or an image query", type="filepath", sources=["upload", "clipboard"], height=200)
                image_button = gr.Button("Search by image")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="nearest images (cosine similarity, caption)", columns=4, height=560, object_fit="contain")

        def lookup(name: str) -> Collection:
            if name not in collections:
                _fail(f"no collection {name!r}: choose one of {names}")
            return collections[name]

        def by_text(name, query, k):
            return search(model, lookup(name), query if query is not None else "", k)

        def by_image(name, picture, k):
            if picture is None:
                _fail("no image: upload an image to search with, or search by text")
            return search(model, lookup(name), picture, k)

        text_button.click(by_text, [collection, text, count], gallery, api_name="search_text")
        text.submit(by_text, [collection, text, count], gallery, api_visibility="private")
        image_button.click(by_image, [collection, image, count], gallery, api_name="search_image", preprocess=False)


def steer_tab(model) -> None:
    """Prompts and a step count; the image as it is optimised, streamed. Endpoint: /steer."""
    import gradio as gr

    from clipkit.steer import PARAMETERISATIONS

    with gr.Tab("Steer", id="steer"):
        gr.Markdown("Paint an image the model thinks matches the prompt (CLIP-guided optimisation, `clipkit.steer`). "
                    "Frames stream in as it goes; press Stop to end early.")
        with gr.Row():
            with gr.Column():
                prompts = gr.Textbox("a red circle", label="prompts (one per line, or separated by ';')", lines=2)
                negatives = gr.Textbox("", label="avoid (optional)", placeholder="e.g. a blue square")
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
            yield from steer_frames(model, prompt_text, negative_text, int(step_count), kind, int(seed_value or 0))

        event = run.click(stream, [prompts, negatives, steps, parameterisation, seed], [picture, status],
                          api_name="steer", concurrency_limit=1)
        stop.click(None, cancels=[event], api_visibility="private")


def about_tab(model, card: str | None = None) -> str:
    """The model card (markdown); returns it. build_app serves it at the endpoint /model_card too."""
    import gradio as gr

    text = card or model_card(model)
    with gr.Tab("About", id="about"):
        gr.Markdown(text)
    return text


def build_app(
    model,
    collections: dict[str, Collection] | Sequence[Collection] | None = None,
    title: str = "clipkit: a mini-CLIP at work",
    model_card: str | None = None,
    tabs: Sequence[str] = TAB_NAMES,
    labels: Sequence[str] | None = None,
    examples: Sequence[str | Path] | None = None,
):
    """A gr.Blocks with the chosen `tabs` (of TAB_NAMES) for `model` (put in eval mode), queued.

    `collections` (search): Collection objects or a name -> Collection dict; default
    `default_collections()`. `labels`, `examples`: the zero-shot tab's starting labels and example
    images (defaults follow the model's training data). `model_card`: markdown for the About tab.
    """
    import gradio as gr

    tabs = tuple(tabs)
    unknown = sorted(set(tabs) - set(TAB_NAMES))
    if unknown or not tabs:
        raise ValueError(f"unknown tabs {unknown}: choose from {TAB_NAMES}")
    if collections is None:
        collections = default_collections()
    elif not isinstance(collections, dict):
        collections = {collection.name: collection for collection in collections}
    model.eval()
    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"# {title}")
        with gr.Tabs():
            if "zero-shot" in tabs:
                zero_shot_tab(model, labels, examples)
            if "search" in tabs:
                search_tab(model, collections)
            if "steer" in tabs:
                steer_tab(model)
            if "about" in tabs:
                card = about_tab(model, model_card)
        if "about" in tabs:

            def read_model_card() -> str:
                return card

            gr.api(read_model_card, api_name="model_card")
    app.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)
    return app


def launch(
    app,
    host: str | None = None,
    port: int | None = None,
    share: bool = False,
    prevent_thread_lock: bool = False,
    inline: bool | None = None,
    quiet: bool = False,
) -> str:
    """Serve `app` on `host` (default 127.0.0.1) and `port` (default: the first free from 7860);
    returns the public link with share=True, else the local URL. `prevent_thread_lock=True`
    returns at once, the server running in the background (notebooks, tests)."""
    _, url, share_url = app.launch(
        server_name=host or HOST,
        server_port=port,
        share=share,
        prevent_thread_lock=prevent_thread_lock,
        inline=inline,
        quiet=quiet,
        max_file_size=MAX_FILE_SIZE,
        show_error=True,
        ssr_mode=False,
        mcp_server=False,
        enable_monitoring=False,
    )
    return share_url or url


# ---------------------------------------------------------------------------------------------
# Command line


def load_checkpoint(path: str | Path, device=None):
    """A MiniCLIP or LiT checkpoint folder -> the model (with its metadata)."""
    from clipkit.model import CONFIG_FILE, load_model

    path = Path(path)
    document = json.loads((path / CONFIG_FILE).read_text()) if (path / CONFIG_FILE).exists() else {}
    if document.get("format") == "clipkit.LiTModel":
        from clipkit.lit import load_lit

        return load_lit(path, device=device)
    return load_model(path, device=device)


def notebook_checkpoint(device=None):
    """The model notebook 05 saved in checkpoint_dir()/"mini-clip", with the profile it was trained
    with; trained with the "cpu" profile (a few minutes) when the folder holds none."""
    from clipkit.model import CONFIG_FILE, read_checkpoint_config
    from clipkit.train import default_out_dir, load_or_train

    folder = default_out_dir()
    profile = "cpu"
    if (folder / CONFIG_FILE).exists():
        profile = read_checkpoint_config(folder)[1].get("profile") or profile
    else:
        print(f"no checkpoint in {folder}: training one with profile {profile!r} (a few minutes on a CPU)", file=sys.stderr)
    return load_or_train(profile=profile, out_dir=folder, device=device)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the option help, and the examples kept line by line."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipkit.app",
        description="Serve the clipkit demo (zero-shot, search, steering, model card) for a checkpoint. "
        "It binds 127.0.0.1 (this machine only) unless --host is given; --share adds a public link.",
        formatter_class=_HelpFormatter,
        epilog="examples:\n  python -m clipkit.app --from-notebook-checkpoint\n"
        "  python -m clipkit.app --checkpoint runs/mini-clip --port 7861 --folder ~/Pictures/captioned",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", type=Path, help="a checkpoint folder (model.safetensors + config.json)")
    source.add_argument("--from-notebook-checkpoint", action="store_true",
                        help="notebook 05's checkpoint_dir()/mini-clip; trains it with the cpu profile when absent")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to serve on")
    parser.add_argument("--host", default=HOST, help="address to bind; 0.0.0.0 opens the app to your network")
    parser.add_argument("--share", action="store_true", help="also publish a temporary public gradio.live link")
    parser.add_argument("--folder", type=Path, action="append", default=[],
                        help="a folder of images with sidecar .txt captions to add as a search collection (repeatable)")
    parser.add_argument("--tabs", default=",".join(TAB_NAMES), help="comma-separated tabs to show")
    parser.add_argument("--device", help="cpu, cuda or mps; by default clipkit.get_device() picks")
    return parser


def main(argv: list[str] | None = None) -> int:
    from clipkit.env import get_device

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: it reports usage otherwise

    parser = _parser()
    args = parser.parse_args(argv)
    device = get_device(args.device)
    started = time.perf_counter()
    try:
        model = notebook_checkpoint(device) if args.from_notebook_checkpoint else load_checkpoint(args.checkpoint, device)
        tabs = [tab.strip() for tab in args.tabs.split(",") if tab.strip()]
        app = build_app(model, default_collections(args.folder), tabs=tabs)
    except (FileNotFoundError, ValueError) as error:  # a wrong path or option: say so, without a traceback
        parser.error(str(error))
    print(f"model ready in {time.perf_counter() - started:.1f} s; Ctrl-C stops the server", file=sys.stderr)
    launch(app, host=args.host, port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
