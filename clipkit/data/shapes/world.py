"""A procedural world of coloured shapes with captions: CLIP's data in miniature, made in milliseconds.

Each image holds one or two flat-coloured shapes on a dark background. Its caption names colour and
shape, sometimes size and position, and for two objects how they stand ("a red circle left of a blue
square"). Because we make the world we control it:
- a compositional split holds some colour-shape pairs out of training entirely, so zero-shot
  accuracy on them measures whether a model composes "red" and "triangle" it has seen apart;
- a binding probe pairs images whose captions differ only in which colour goes with which shape.

Drawing is vectorised: an anti-aliased mask per (shape, size) is drawn once at the configured
resolution, then pasted into a whole batch with numpy indexing (thousands of images a second).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from clipkit.data.grammar import with_articles
from clipkit.data.shapes.config import BindingProbe, Scene, ShapeObject, ShapesConfig, ShapesSample
from clipkit.data.shapes.masks import mask_box_size, shape_mask
from clipkit.data.shapes.words import (
    BINDING_TEMPLATE,
    INVERSE_RELATIONS,
    POSITIONS,
    RELATIONS,
    WHERE_PHRASES,
    class_prompt,
)

@dataclass
class _Layout:
    """Everything random about a batch of scenes, as arrays (object slot 1 is unused for one-object images)."""

    pairs: np.ndarray  # int [N, 2], index into ShapesWorld.pairs, -1 for no object
    sizes: np.ndarray  # int [N, 2], index into config.sizes
    positions: np.ndarray  # int [N, 2], index into POSITIONS
    corners: np.ndarray  # int [N, 2, 2], (row, column) of each mask box's top-left corner
    relations: np.ndarray  # int [N], index into RELATIONS, -1 for one object
    colour_offsets: np.ndarray  # int [N, 2, 3], per-object colour jitter
    background: np.ndarray  # float [N, 3]


_SPLITS = ("train", "heldout", "all")
_RENDER_CHUNK = 2048  # images drawn at once: bounds the float32 canvas at 64 px to ~100 MB


class ShapesWorld:
    """Samples captioned shape images from a `ShapesConfig`. Same seed, same sample, in any call order."""

    def __init__(self, config: ShapesConfig | None = None):
        self.config = config or ShapesConfig()
        cfg = self.config
        self.colours: dict[str, tuple[int, int, int]] = dict(cfg.colours)
        self.shapes: tuple[str, ...] = tuple(cfg.shapes)
        self.size_names: tuple[str, ...] = tuple(cfg.sizes)
        self.pairs: list[tuple[str, str]] = [(c, s) for c in self.colours for s in self.shapes]
        self.pair_index = {pair: index for index, pair in enumerate(self.pairs)}
        self.heldout_pairs: list[tuple[str, str]] = list(cfg.heldout_pairs)
        held = set(self.heldout_pairs)
        self.seen_pairs: list[tuple[str, str]] = [pair for pair in self.pairs if pair not in held]
        self.class_names: list[str] = [class_prompt(pair) for pair in self.pairs]
        self._palette = np.array(list(self.colours.values()), dtype=np.float32)
        self._position_names = tuple(POSITIONS)
        self._relation_names = tuple(RELATIONS)
        diameters = [cfg.sizes[name] * cfg.image_size for name in self.size_names]
        self._box_sizes = np.array([mask_box_size(d) for d in diameters])
        self._masks = {
            (shape_id, size_id): shape_mask(shape, diameter, cfg.supersample)
            for shape_id, shape in enumerate(self.shapes)
            for size_id, diameter in enumerate(diameters)
        }

    def pair_ids(self, split: str) -> np.ndarray:
        """Indices into `pairs` that `split` ("train", "heldout" or "all") draws objects from."""
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
        chosen = {"train": self.seen_pairs, "heldout": self.heldout_pairs, "all": self.pairs}[split]
        return np.array([self.pair_index[pair] for pair in chosen], dtype=np.int64)

    # -- public samplers ----------------------------------------------------------------------

    def sample(
        self,
        n: int,
        seed: int = 0,
        split: str = "train",
        objects: int | None = None,
        caption_style: str | Sequence[str] | None = None,
    ) -> ShapesSample:
        """`n` captioned images. `objects` forces 1 or 2 objects per image; `caption_style` picks
        template styles (default: the config's). split="heldout" gives one-object images of held-out pairs."""
        return self._sample(n, np.random.default_rng(seed), split, objects, caption_style)

    def sample_captions(
        self, n: int, seed: int = 0, split: str = "train", objects: int | None = None, caption_style: str | Sequence[str] | None = None
    ) -> list[str]:
        """The captions of `sample(n, seed, ...)` with the same arguments, without drawing the images:
        fitting a tokenizer needs only the words, and drawing thousands of images takes a second."""
        return self._described_layout(n, np.random.default_rng(seed), split, objects, caption_style)[1]

    def batches(
        self,
        batch_size: int,
        seed: int = 0,
        split: str = "train",
        objects: int | None = None,
        caption_style: str | Sequence[str] | None = None,
        num_batches: int | None = None,
    ) -> Iterator[ShapesSample]:
        """Fresh batches for training (endless unless `num_batches`); batch k depends only on (seed, k)."""
        step = 0
        while num_batches is None or step < num_batches:
            yield self._sample(batch_size, np.random.default_rng([seed, step]), split, objects, caption_style)
            step += 1

    def binding_probe(self, n: int, seed: int = 0, split: str = "train") -> BindingProbe:
        """`n` image pairs whose captions swap colours between two shapes (see `BindingProbe`).

        With split="train" all four colour-shape pairs involved are seen in training."""
        if split == "heldout":
            raise ValueError("a binding probe needs two objects; use split='train' or 'all'")
        rng = np.random.default_rng(seed)
        colours_ab, shapes_ab = self._binding_attributes(n, rng, split)
        layout = self._layout(n, rng, "all", objects=2)
        n_shapes = len(self.shapes)
        layout.pairs = colours_ab * n_shapes + shapes_ab
        swapped = copy.copy(layout)
        swapped.pairs = colours_ab[:, ::-1] * n_shapes + shapes_ab
        render_seed = int(rng.integers(2**63))  # the same noise in both images: only the colours differ
        images = self._render(layout, np.random.default_rng(render_seed))
        swapped_images = self._render(swapped, np.random.default_rng(render_seed))
        return BindingProbe(
            images=images,
            swapped_images=swapped_images,
            captions=[self._binding_caption(pairs) for pairs in layout.pairs],
            swapped_captions=[self._binding_caption(pairs) for pairs in swapped.pairs],
            scenes=self._scenes(layout),
            swapped_scenes=self._scenes(swapped),
        )

    # -- sampling ------------------------------------------------------------------------------

    def _sample(self, n, rng, split, objects, caption_style) -> ShapesSample:
        layout, captions = self._described_layout(n, rng, split, objects, caption_style)
        images = self._render(layout, rng)
        return ShapesSample(
            images=images,
            captions=captions,
            labels=torch.from_numpy(layout.pairs[:, 0].copy()),
            class_names=list(self.class_names),
            scenes=self._scenes(layout),
        )

    def _described_layout(self, n, rng, split, objects, caption_style) -> tuple[_Layout, list[str]]:
        """The scenes and their captions: everything of a sample the rng draws before the pixels."""
        if n < 0:
            raise ValueError(f"n must be a non-negative number of images, got {n}")
        styles = self._styles(caption_style)
        layout = self._layout(n, rng, split, objects)
        return layout, self._captions(layout, rng, styles)

    def _styles(self, caption_style) -> tuple[str, ...]:
        styles = self.config.caption_styles if caption_style is None else caption_style
        styles = (styles,) if isinstance(styles, str) else tuple(styles)
        unknown = [s for s in styles if s not in self.config.templates]
        if unknown or not styles:
            raise ValueError(f"unknown caption style(s) {unknown}; choose from {sorted(self.config.templates)}")
        return styles

    def _layout(self, n: int, rng: np.random.Generator, split: str, objects: int | None) -> _Layout:
        cfg = self.config
        allowed = self.pair_ids(split)
        if objects not in (None, 1, 2):
            raise ValueError(f"objects must be 1, 2 or None (mixed), got {objects!r}")
        if split == "heldout" and objects == 2:
            raise ValueError("split='heldout' holds one-object images only; pass objects=None or 1")
        # Draw every array whatever the split, so each choice always consumes the same random numbers.
        two_drawn = rng.random(n) < cfg.p_two_objects
        two = np.full(n, objects == 2) if objects is not None else two_drawn
        if split == "heldout":
            two[:] = False
        if cfg.pair_weights is None:
            first = rng.integers(0, len(allowed), n)
            # A second pair different from the first: draw from one fewer and step over the first.
            other = rng.integers(0, max(len(allowed) - 1, 1), n)
            second = other + (other >= first)
        else:
            first, second = self._weighted_pairs(allowed, n, rng)
        pairs = np.stack([allowed[first], np.where(two, allowed[np.minimum(second, len(allowed) - 1)], -1)], axis=1)
        sizes = rng.integers(0, len(self.size_names), (n, 2))
        single_position = rng.integers(0, len(self._position_names), n)
        relation = rng.integers(0, len(self._relation_names), n)
        relation_positions = np.array(
            [[self._position_names.index(p) for p in RELATIONS[r]] for r in self._relation_names]
        )
        single_positions = np.stack([single_position, single_position], axis=1)
        positions = np.where(two[:, None], relation_positions[relation], single_positions)
        jitter = rng.uniform(-cfg.position_jitter, cfg.position_jitter, (n, 2, 2))
        colour_offsets = rng.integers(-cfg.colour_jitter, cfg.colour_jitter + 1, (n, 2, 3))
        brightness = rng.integers(-cfg.background_jitter, cfg.background_jitter + 1, (n, 1))

        base_xy = np.array(list(POSITIONS.values()))[positions]  # [N, 2] position ids -> [N, 2, 2] (x, y)
        # Two objects only move apart along their relation's axis, so even two large ones never touch.
        outward = np.sign(base_xy - 0.5)
        jitter = np.where(two[:, None, None] & (outward != 0), np.abs(jitter) * outward, jitter)
        centres_xy = (base_xy + jitter) * cfg.image_size
        box = self._box_sizes[sizes][..., None]  # [N, 2] -> [N, 2, 1]
        corners = np.clip(np.rint(centres_xy[..., ::-1] - box / 2), 0, cfg.image_size - box).astype(np.int64)
        return _Layout(
            pairs=pairs,
            sizes=sizes,
            positions=positions,
            corners=corners,
            relations=np.where(two, relation, -1),
            colour_offsets=colour_offsets,
            background=np.clip(np.asarray(cfg.background, dtype=np.float32) + brightness, 0, 255),
        )

    def _weighted_pairs(self, allowed: np.ndarray, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Positions in `allowed` of each image's first and second pair, drawn by `pair_weights`; the
        second differs from the first (the next allowed pair when the draw repeats it)."""
        weights = np.array([self.config.pair_weights.get(self.pairs[index], 1.0) for index in allowed])
        if weights.sum() <= 0:
            raise ValueError("pair_weights gives every pair of this split weight 0: nothing to draw")
        first = rng.choice(len(allowed), size=n, p=weights / weights.sum())
        other = rng.choice(len(allowed), size=n, p=weights / weights.sum())
        return first, np.where(other == first, (first + 1) % len(allowed), other)

    def _binding_attributes(self, n: int, rng: np.random.Generator, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Colour and shape indices [n, 2], distinct within each row, with all four combinations allowed."""
        n_colours, n_shapes = len(self.colours), len(self.shapes)
        allowed = np.zeros(n_colours * n_shapes, dtype=bool)
        allowed[self.pair_ids(split)] = True
        allowed = allowed.reshape(n_colours, n_shapes)  # [pairs] -> [colour, shape]
        colours, shapes = np.empty((0, 2), np.int64), np.empty((0, 2), np.int64)
        while len(colours) < n:
            c = rng.integers(0, n_colours, (2 * n + 16, 2))
            s = rng.integers(0, n_shapes, (2 * n + 16, 2))
            ok = (c[:, 0] != c[:, 1]) & (s[:, 0] != s[:, 1])
            for ci in (0, 1):
                for si in (0, 1):
                    ok &= allowed[c[:, ci], s[:, si]]
            colours, shapes = np.concatenate([colours, c[ok]]), np.concatenate([shapes, s[ok]])
        return colours[:n], shapes[:n]

    # -- drawing -------------------------------------------------------------------------------

    def _render(self, layout: _Layout, rng: np.random.Generator) -> torch.Tensor:
        cfg = self.config
        n, side = len(layout.pairs), cfg.image_size
        images = torch.empty((n, 3, side, side), dtype=torch.uint8)
        n_shapes = len(self.shapes)
        noise_generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
        for start in range(0, n, _RENDER_CHUNK):
            part = slice(start, min(n, start + _RENDER_CHUNK))
            background = torch.from_numpy(layout.background[part]).float()
            canvas = background[:, :, None, None].repeat(1, 1, side, side)  # [n, 3] -> [n, 3, S, S]
            for slot in (0, 1):
                pairs = layout.pairs[part, slot]
                alpha = self._paste_masks(
                    pairs % n_shapes, layout.sizes[part, slot], layout.corners[part, slot], present=pairs >= 0
                )
                colour = np.clip(self._palette[pairs // n_shapes] + layout.colour_offsets[part, slot], 0, 255)
                colour = torch.from_numpy(colour.astype(np.float32))[:, :, None, None]  # [n, 3] -> [n, 3, 1, 1]
                alpha = torch.from_numpy(alpha)[:, None]  # [n, S, S] -> [n, 1, S, S]
                canvas.lerp_(colour.expand_as(canvas), alpha.expand_as(canvas))  # in place: no temporaries
            if cfg.noise_std > 0:
                canvas.add_(torch.randn(canvas.shape, generator=noise_generator), alpha=cfg.noise_std)
            images[part] = canvas.round_().clamp_(0, 255).to(torch.uint8)
        return images

    def _paste_masks(self, shape_ids, size_ids, corners, present) -> np.ndarray:
        """Coverage [n, S, S] of one object per image, by pasting each (shape, size) mask group at once."""
        side = self.config.image_size
        alpha = np.zeros((len(shape_ids), side, side), dtype=np.float32)
        for (shape_id, size_id), mask in self._masks.items():
            index = np.flatnonzero(present & (shape_ids == shape_id) & (size_ids == size_id))
            if len(index) == 0:
                continue
            offsets = np.arange(mask.shape[0])
            rows = corners[index, 0, None] + offsets  # [k, B]
            cols = corners[index, 1, None] + offsets  # [k, B]
            alpha[index[:, None, None], rows[:, :, None], cols[:, None, :]] = mask
        return alpha

    # -- words ---------------------------------------------------------------------------------

    def _scenes(self, layout: _Layout) -> list[Scene]:
        half_boxes = self._box_sizes / 2
        scenes = []
        columns = (layout.pairs, layout.sizes, layout.positions, layout.corners, layout.relations)
        for pairs, sizes, positions, corners, relation in zip(*(column.tolist() for column in columns)):
            objects = tuple(
                ShapeObject(
                    colour=self.pairs[pair][0],
                    shape=self.pairs[pair][1],
                    size=self.size_names[size],
                    position=self._position_names[position],
                    x=float(corner[1] + half_boxes[size]),
                    y=float(corner[0] + half_boxes[size]),
                )
                for pair, size, position, corner in zip(pairs, sizes, positions, corners)
                if pair >= 0
            )
            scenes.append(Scene(objects, self._relation_names[relation] if relation >= 0 else None))
        return scenes

    def _captions(self, layout: _Layout, rng: np.random.Generator, styles: tuple[str, ...]) -> list[str]:
        n = len(layout.pairs)
        # Uniform numbers in [0, 1) pick among lists of any length: index = int(u * len(list)).
        style_u, caption_u, where_u = rng.random(n), rng.random(n), rng.random(n)
        object_u = rng.random((n, 2))
        flip = rng.random(n) < 0.5
        captions = []
        rows = zip(layout.pairs.tolist(), layout.sizes.tolist(), layout.relations.tolist())
        for i, (pairs, sizes, relation) in enumerate(rows):
            templates = self.config.templates[styles[int(style_u[i] * len(styles))]]
            phrases = []
            for slot in range(2 if relation >= 0 else 1):
                options = templates["object"]
                colour, shape = self.pairs[pairs[slot]]
                template = options[int(object_u[i, slot] * len(options))]
                phrases.append(template.format(colour=colour, shape=shape, size=self.size_names[sizes[slot]]))
            if relation < 0:
                options = templates["one"]
                where_options = WHERE_PHRASES[self._position_names[layout.positions[i, 0]]]
                caption = options[int(caption_u[i] * len(options))].format(
                    object=phrases[0], where=where_options[int(where_u[i] * len(where_options))]
                )
            else:
                relation_words = self._relation_names[relation]
                if flip[i]:  # "a blue square right of a red circle" says the same as the reverse
                    phrases.reverse()
                    relation_words = INVERSE_RELATIONS[relation_words]
                options = templates["two"]
                template = options[int(caption_u[i] * len(options))]
                caption = template.format(a=phrases[0], b=phrases[1], relation=relation_words)
            captions.append(with_articles(caption))
        return captions

    def _binding_caption(self, pairs: np.ndarray) -> str:
        (colour_a, shape_a), (colour_b, shape_b) = (self.pairs[p] for p in pairs)
        caption = BINDING_TEMPLATE.format(colour_a=colour_a, shape_a=shape_a, colour_b=colour_b, shape_b=shape_b)
        return with_articles(caption)
