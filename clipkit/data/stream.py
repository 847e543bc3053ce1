"""The training-data stream: the batch of every step depends only on (seed, step).

That one property carries three features of the training loop: a resumed run draws exactly the
batches the interrupted one would have (nothing to save but the step), every DDP process draws the
same global batch and takes its own share (no sampler to keep in sync), and DataLoader workers can
draw batches ahead in any order.

A `TrainingData` mixes one or more sources (the shapes world, a captioned image set such as
Fashion-MNIST) in fixed proportions. Each source makes batches, lists every text it can produce (to
fit a tokenizer) and keeps data it never trains on for evaluation; `clipkit.evaluate` measures
models on it and `clipkit.prompts` adds the prompts evaluation asks with, for the data layer knows
nothing of models. `build_data` makes one from a plain spec, which checkpoints store to refuse
resuming on other data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from clipkit.data.fashion import load_fashion_mnist
from clipkit.data.grammar import fix_articles
from clipkit.data.negatives import OPPOSITE_RELATIONS, RELATION_WORDS
from clipkit.data.negatives import hard_negatives as negatives_of
from clipkit.data.shapes import POSITIONS, WHERE_PHRASES, ShapesConfig, ShapesWorld
from clipkit.data.transforms import CaptionedImages, resize_images


@dataclass
class Batch:
    images: torch.Tensor  # uint8 [B, 3, S, S] at the model's image size
    captions: list[str]  # caption i describes image i
    groups: list  # hashable labels: captions of equal groups describe each other's images
    hard_negatives: list[str] = field(default_factory=list)  # captions true of no image in the batch
    attribute_texts: list[str] = field(default_factory=list)  # single-attribute texts ("something red")
    attribute_positives: torch.Tensor | None = None  # bool [B, K]: attribute text k is true of image i


ATTRIBUTE_KINDS = ("colour", "shape", "size", "position")  # what single-attribute texts may name


def _may_say(pairs: list[tuple[str, str]], relation: str | None, scene) -> bool:
    """Whether a caption naming `pairs` (in order) and `relation` may be true of `scene`: the same
    pairs, standing as it says. Sizes and outlines are not read, so "may": a negative it lets through
    is false of the scene."""
    if sorted(pairs) != sorted(scene.pairs):
        return False
    if relation is None or scene.relation is None:
        return True
    first_stands = scene.relation if scene.pairs[0] == pairs[0] else OPPOSITE_RELATIONS[scene.relation]
    return first_stands == relation


class ShapesSource:
    """Fresh shapes-world batches from the train split: held-out colour-shape pairs never appear."""

    name = "shapes"

    def __init__(self, image_size: int = 32, world=None, attributes=("colour", "shape"), swapped_twins: float = 0.0,
                 **config: Any):
        unknown = set(attributes) - set(ATTRIBUTE_KINDS)
        if unknown:
            raise ValueError(f"unknown attributes {sorted(unknown)}: choose among {ATTRIBUTE_KINDS}")
        if not 0.0 <= swapped_twins <= 1.0:
            raise ValueError(f"swapped_twins must be a probability in [0, 1], got {swapped_twins}")
        self.world = world or ShapesWorld(ShapesConfig(image_size=image_size, **config))
        self.spec = {"image_size": self.world.config.image_size, **config}
        # Chance that a two-object image comes with its colour-swapped twin (same layout and noise,
        # the colours of its objects exchanged) in the same batch. Hard negatives make a model tell
        # "a red circle and a blue square" from "a blue circle and a red square", but only a twin
        # makes a caption tell the two images apart (the binding probe's image and group scores).
        # A training option, not the world's: evaluation samples stay plain.
        self.swapped_twins = float(swapped_twins)
        if self.swapped_twins:
            self.spec["swapped_twins"] = self.swapped_twins
        if self.world.config.variation != "grid":  # a world handed over says how it draws, so a checkpoint records it
            self.spec.setdefault("variation", self.world.config.variation)
        if tuple(attributes) != ("colour", "shape"):
            self.spec["attributes"] = list(attributes)
        # One single-attribute text per value of each kind: "something red", "a star", and (a
        # caption's "on the left" rarely decides a batch's loss, so without them a model learns
        # sizes and places late) "something small", "something on the left".
        values = {"colour": list(self.world.colours), "shape": list(self.world.shapes),
                  "size": list(self.world.size_names), "position": list(POSITIONS)}
        phrase = {"colour": lambda v: f"something {v}", "shape": lambda v: fix_articles(f"a {v}"),
                  "size": lambda v: f"something {v}", "position": lambda v: f"something {WHERE_PHRASES[v][0]}"}
        self.attribute_columns = [(kind, value) for kind in attributes for value in values[kind]]
        self.attribute_texts = [phrase[kind](value) for kind, value in self.attribute_columns]

    def to(self, device) -> "ShapesSource":
        """Draw every batch's images on `device` (the world keeps its masks there): the same scenes and
        captions, the same pixels within the renderer's tolerance."""
        self.world.to(device)
        return self

    def sample(self, size: int, seed: int, step: int):
        """The world's sample behind `batch(size, seed, step, ...)`: its images, captions and scenes."""
        # Seed [seed, step] draws exactly what `ShapesWorld.batches(seed)` yields at `step`.
        return self.world.sample(size, seed=[seed, step], swapped_twins=self.swapped_twins)

    def batch(self, size: int, seed: int, step: int, hard_negatives: bool, attributes: bool) -> Batch:
        sample = self.sample(size, seed, step)
        # Groups by caption: a twin's caption differs from its original's (colours exchanged), so the
        # two are negatives of each other, while equal captions still describe each other's images.
        batch = Batch(sample.images, sample.captions, [caption.lower() for caption in sample.captions])
        if hard_negatives:
            batch.hard_negatives = self._hard_negatives(sample.captions, sample.scenes)
        if attributes:
            column = {key: index for index, key in enumerate(self.attribute_columns)}
            truth = torch.zeros(size, len(self.attribute_texts), dtype=torch.bool)
            for row, scene in enumerate(sample.scenes):
                for obj in scene.objects:
                    for kind in ATTRIBUTE_KINDS:
                        index = column.get((kind, getattr(obj, kind)))
                        if index is not None:
                            truth[row, index] = True
            batch.attribute_texts, batch.attribute_positives = list(self.attribute_texts), truth
        return batch

    def _hard_negatives(self, captions: list[str], scenes: list) -> list[str]:
        """NegCLIP's swaps (clipkit.data.negatives), none naming a held-out pair or a batch caption, nor
        one that may be true of another image of the batch in other words than its caption: "a red
        square and a blue circle" (the shape swap of "a red circle and a blue square") is true of
        that image's colour-swapped twin."""
        seen, said = set(self.world.seen_pairs), {caption.lower() for caption in captions}
        holders: dict[frozenset, list[int]] = {}  # colour-shape pairs -> the rows whose images hold exactly them
        for row, scene in enumerate(scenes):
            holders.setdefault(frozenset(scene.pairs), []).append(row)
        negatives = []
        for row, (caption, scene) in enumerate(zip(captions, scenes)):
            for negative in negatives_of(caption, scene, allowed=seen):
                pairs, relation = self._statement(negative)
                others = [scenes[other] for other in holders.get(frozenset(pairs), []) if other != row]
                if negative.lower() not in said and not any(_may_say(pairs, relation, other) for other in others):
                    negatives.append(negative)
        return list(dict.fromkeys(negatives))

    def _statement(self, text: str) -> tuple[list[tuple[str, str]], str | None]:
        """The colour-shape pairs a caption names, in order (each object's colour and shape words are
        next to each other, in either order), and the relation it states, if any."""
        words = re.findall(r"[a-z]+", text.lower())
        colours = [word for word in words if word in self.world.colours]
        shapes = [word for word in words if word in self.world.shapes]
        relation = RELATION_WORDS.search(text.lower())
        return list(zip(colours, shapes)), relation.group(1) if relation else None

    def vocabulary(self) -> list[str]:
        """Every text this source writes: a large sample of captions (all splits) and the attribute texts."""
        return self.world.sample_captions(4000, seed=12345, split="all") + self.attribute_texts


class CaptionedSource:
    """A captioned image set held in memory (Fashion-MNIST by default), shuffled anew each epoch."""

    def __init__(self, image_size: int, dataset=None, eval_dataset=None, templates=None, name: str = "fashion"):
        if dataset is None:
            dataset, eval_dataset = load_fashion_mnist("train"), load_fashion_mnist("test")
            templates = templates or "fashion-mnist"
        self.name, self.spec = name, {"images": len(dataset)}
        self.dataset, self.eval_dataset = dataset, eval_dataset
        # Zero-shot prompts for evaluation: templates such as ("a photo of a {}",), or the name of a
        # set in clipkit.prompts.TEMPLATES; None asks with "a {}".
        self.templates = templates if templates is None or isinstance(templates, str) else tuple(templates)
        # Resized once to the model's size (and kept one channel when grey): batches are then slices.
        grey = dataset.images[:, :1] if bool((dataset.images[:, :1] == dataset.images).all()) else dataset.images
        chunks = [
            (resize_images(chunk.float() / 255, image_size) * 255).round().to(torch.uint8)
            for chunk in grey.split(4096)
        ]
        self.images = torch.cat(chunks)

    def to(self, device) -> "CaptionedSource":
        """Keep the (resized) images on `device`, so a batch is a slice there and nothing crosses per step."""
        self.images = self.images.to(device)
        return self

    def batch(self, size: int, seed: int, step: int, hard_negatives: bool, attributes: bool) -> Batch:
        count = len(self.images)
        first, last = step * size, (step + 1) * size  # positions in an endless sequence of epochs
        rows = torch.cat([
            torch.randperm(count, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            for epoch in range(first // count, (last - 1) // count + 1)
        ])[first - (first // count) * count:][:size]
        captions = [self.dataset.captions[i] for i in rows.tolist()]
        labels = self.dataset.labels[rows].tolist() if self.dataset.labels is not None else captions
        groups = [(self.name, label) for label in labels]  # any caption of a class describes any of its images
        return Batch(self.images[rows].expand(-1, 3, -1, -1), captions, groups)

    def vocabulary(self) -> list[str]:
        """Every caption of the data set."""
        return list(self.dataset.captions)


class TrainingData:
    """One or more sources; each step's global batch is split between them in proportion to `weights`."""

    def __init__(self, sources: list, weights: list[float] | None = None, spec: dict | None = None):
        if not sources:
            raise ValueError("no data sources: give a spec such as {'shapes': {'image_size': 32}}")
        self.sources = list(sources)
        self.weights = list(weights or [1.0] * len(sources))
        self.spec = spec or {source.name: getattr(source, "spec", {}) for source in self.sources}
        self.device: torch.device | None = None  # where batches' images land; None: where each source draws them

    def to(self, device) -> "TrainingData":
        """Draw batches on `device`: sources that can (`to`) draw or keep their images there, the others'
        images are moved as each batch is put together."""
        self.device = torch.device(device)
        for source in self.sources:
            if callable(getattr(source, "to", None)):
                source.to(self.device)
        return self

    def batch(self, size: int, seed: int, step: int, hard_negatives: bool = False, attributes: bool = False) -> Batch:
        counts = _split_sizes(size, self.weights)
        parts = [
            source.batch(count, seed + 7919 * index, step, hard_negatives, attributes)
            for index, (source, count) in enumerate(zip(self.sources, counts)) if count
        ]
        if self.device is not None:
            for part in parts:
                part.images = part.images.to(self.device)
        if len(parts) == 1:
            return parts[0]
        texts = sorted({text for part in parts for text in part.attribute_texts})
        truth = torch.zeros(size, len(texts), dtype=torch.bool)
        row = 0
        for part in parts:
            for column, text in enumerate(part.attribute_texts):
                truth[row : row + len(part.captions), texts.index(text)] = part.attribute_positives[:, column]
            row += len(part.captions)
        return Batch(
            torch.cat([part.images for part in parts]),
            [c for part in parts for c in part.captions],
            [g for part in parts for g in part.groups],
            [n for part in parts for n in part.hard_negatives],
            texts,
            truth if texts else None,
        )

    def vocabulary(self) -> list[str]:
        """Every text the sources write (their captions and attribute texts), to fit a tokenizer on;
        `clipkit.prompts.prompt_vocabulary(data)` adds the prompts evaluation will ask with."""
        return [text for source in self.sources for text in source.vocabulary()]


class _StepBatches(torch.utils.data.Dataset):
    """Item k is the batch of step k, so DataLoader workers can draw batches ahead in any order."""

    def __init__(self, data: TrainingData, size: int, seed: int, steps: int, hard_negatives: bool, attributes: bool):
        self.data, self.size, self.seed, self.steps = data, size, seed, steps
        self.hard_negatives, self.attributes = hard_negatives, attributes

    def __len__(self) -> int:
        return self.steps

    def __getitem__(self, step: int) -> Batch:
        return self.data.batch(self.size, self.seed, step, self.hard_negatives, self.attributes)


def step_batches(
    data: TrainingData,
    size: int,
    seed: int,
    start: int,
    stop: int,
    hard_negatives: bool = False,
    attributes: bool = False,
    workers: int = 0,
) -> Iterator[Batch]:
    """The batches of steps `start` to `stop - 1`, in order; `workers` processes draw them ahead
    (0 draws each when it is asked for)."""
    dataset = _StepBatches(data, size, seed, stop, hard_negatives, attributes)
    if workers == 0:
        return (dataset[step] for step in range(start, stop))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, sampler=range(start, stop), num_workers=workers, prefetch_factor=4
    )
    return iter(loader)


def _split_sizes(total: int, weights: list[float]) -> list[int]:
    sizes = [int(total * w / sum(weights)) for w in weights]
    sizes[0] += total - sum(sizes)
    return sizes


def build_data(spec: str | dict | TrainingData, image_size: int | None = None) -> TrainingData:
    """A `TrainingData` from a spec: {"shapes": {...ShapesConfig fields}, "fashion": {}}, or the
    strings "shapes", "fashion", "shapes+fashion". `image_size` (the model's) overrides the shapes'."""
    if isinstance(spec, TrainingData):
        return spec
    if isinstance(spec, str) and spec.startswith("webdataset:") or isinstance(spec, dict) and "webdataset" in spec:
        from clipkit.data.shards import ShardData  # tar shards stream per process: not a TrainingData

        pattern = spec[len("webdataset:"):] if isinstance(spec, str) else spec["webdataset"]
        return ShardData(pattern, image_size or (64 if isinstance(spec, str) else spec.get("image_size", 64)))
    if isinstance(spec, str):
        names = spec.split("+")
        unknown = [name for name in names if name not in ("shapes", "fashion")]
        if unknown:
            raise ValueError(f"unknown data {unknown}: use 'shapes', 'fashion' or 'shapes+fashion'")
        spec = {name: {} for name in names}
    spec = json.loads(json.dumps(spec))
    sources = []
    for name, options in spec.items():
        if name == "shapes":
            if image_size is not None:
                options["image_size"] = image_size
            sources.append(ShapesSource(**options))
        elif name == "fashion":
            sources.append(CaptionedSource(image_size or 32, **options))
        else:
            raise ValueError(f"unknown data source {name!r} in the spec: use 'shapes' or 'fashion'")
    return TrainingData(sources, spec=spec)


def as_training_data(data, image_size: int) -> TrainingData:
    """What `train` accepts as data, made a `TrainingData`: a `ShapesWorld`, a `CaptionedImages`, or
    anything `build_data` takes."""
    if isinstance(data, ShapesWorld):
        return TrainingData([ShapesSource(world=data)])
    if isinstance(data, CaptionedImages):
        return TrainingData([CaptionedSource(image_size, data, None, name="captioned")], spec={"captioned": len(data)})
    return build_data(data, image_size)

