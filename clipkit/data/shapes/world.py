"""A procedural world of coloured shapes with captions: CLIP's data in miniature, made in milliseconds.

Each image holds one or two flat-coloured shapes on a dark background. Its caption names colour and
shape, sometimes size and position, and for two objects how they stand ("a red circle left of a blue
square"). Because we make the world we control it:
- a compositional split holds some colour-shape pairs out of training entirely, so zero-shot
  accuracy on them measures whether a model composes "red" and "triangle" it has seen apart;
- a binding probe pairs images whose captions differ only in which colour goes with which shape,
  and training batches may hold such pairs too (`sample(..., swapped_twins=p)`).

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
from clipkit.data.shapes.masks import mask_box_size
from clipkit.data.shapes.render import ShapesRenderer
from clipkit.data.shapes.variation import Randomisation, draw_randomisation, drawn_on_grid
from clipkit.data.shapes.words import (
    BINDING_TEMPLATE,
    INVERSE_RELATIONS,
    POSITIONS,
    RELATIONS,
    OUTLINE_TEMPLATES,
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
    random: Randomisation | None = None  # how the random world draws it; None in the grid world


_SPLITS = ("train", "heldout", "all")


class ShapesWorld:
    """Samples captioned shape images from a `ShapesConfig`. Same seed, same sample, in any call order."""

    def __init__(self, config: ShapesConfig | None = None, device: str | torch.device = "cpu", backend: str = "torch"):
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
        self._diameters = np.array(diameters)
        # `backend="numpy"` draws the grid world with the original numpy pasting (the reference).
        self.renderer = ShapesRenderer(cfg, self.shapes, self._palette, diameters, device, backend)

    @property
    def device(self) -> torch.device:
        return self.renderer.device

    def to(self, device: str | torch.device) -> "ShapesWorld":
        """Draw images on `device` from now on (masks are kept there); scenes and captions stay the same."""
        self.renderer.to(device)
        return self

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
        swapped_twins: float = 0.0,
    ) -> ShapesSample:
        """`n` captioned images. `objects` forces 1 or 2 objects per image; `caption_style` picks
        template styles (default: the config's). split="heldout" gives one-object images of held-out pairs.
        With `swapped_twins` (a probability) each two-object image whose colour swap is another picture
        of `split` is followed by its colour-swapped twin that often (see `_with_twins`): still `n`
        images, the twins taking the places of the plain sample's last two-object images."""
        return self._sample(n, np.random.default_rng(seed), split, objects, caption_style, swapped_twins)

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
        swapped_twins: float = 0.0,
    ) -> Iterator[ShapesSample]:
        """Fresh batches for training (endless unless `num_batches`); batch k depends only on (seed, k)."""
        step = 0
        while num_batches is None or step < num_batches:
            rng = np.random.default_rng([seed, step])
            yield self._sample(batch_size, rng, split, objects, caption_style, swapped_twins)
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
        swapped.pairs = self._colours_exchanged(layout.pairs)
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

    def _sample(self, n, rng, split, objects, caption_style, swapped_twins=0.0) -> ShapesSample:
        if not 0.0 <= swapped_twins <= 1.0:
            raise ValueError(f"swapped_twins must be a probability in [0, 1], got {swapped_twins}")
        replay = copy.deepcopy(rng) if swapped_twins else None  # the same word choices for the twins' captions
        layout, captions = self._described_layout(n, rng, split, objects, caption_style)
        render_seed = int(rng.integers(2**63))  # the one draw `_render` takes; twins reuse it, so their noise too
        sample = self._as_sample(layout, captions, self.renderer.render(layout, render_seed))
        if not swapped_twins:
            return sample
        # Drawn after everything of the plain sample, so the originals stay the plain sample's images.
        twins = self._twin_layout(layout, rng.random(n) < swapped_twins, split)
        _, twin_captions = self._described_layout(n, replay, split, objects, caption_style, described=twins)
        twin_sample = self._as_sample(twins, twin_captions, self.renderer.render(twins, render_seed))
        is_twin = (twins.pairs != layout.pairs).any(axis=1)
        return self._with_twins(sample, twin_sample, is_twin, layout.relations >= 0)

    def _as_sample(self, layout: _Layout, captions: list[str], images: torch.Tensor) -> ShapesSample:
        return ShapesSample(
            images=images,
            captions=captions,
            labels=torch.from_numpy(layout.pairs[:, 0].copy()),
            class_names=list(self.class_names),
            scenes=self._scenes(layout),
        )

    def _described_layout(self, n, rng, split, objects, caption_style, described=None) -> tuple[_Layout, list[str]]:
        """The scenes and their captions: everything of a sample the rng draws before the pixels.
        With `described` (a layout of the same rows) the captions are its, in the same words."""
        if n < 0:
            raise ValueError(f"n must be a non-negative number of images, got {n}")
        styles = self._styles(caption_style)
        layout = self._layout(n, rng, split, objects)
        return layout, self._captions(layout if described is None else described, rng, styles)

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
        layout = _Layout(
            pairs=pairs,
            sizes=sizes,
            positions=positions,
            corners=corners,
            relations=np.where(two, relation, -1),
            colour_offsets=colour_offsets,
            background=np.clip(np.asarray(cfg.background, dtype=np.float32) + brightness, 0, 255),
        )
        if cfg.variation == "random":
            fractions = np.array([cfg.sizes[name] for name in self.size_names])[sizes]
            layout.random = draw_randomisation(cfg, fractions, positions, self._position_names, two, rng)
            if cfg.p_grid > 0:  # drawn last, so worlds without it keep their pictures draw for draw
                on_grid = rng.random(n) < cfg.p_grid
                layout.random = drawn_on_grid(layout.random, on_grid, self._grid_centres(layout), self._diameters[sizes])
        return layout

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

    # -- colour-swapped twins --------------------------------------------------------------------

    def _colours_exchanged(self, pairs: np.ndarray) -> np.ndarray:
        """Pair indices [N, 2] with the two objects' colours exchanged, shapes kept (the binding probe's swap)."""
        colours, shapes = np.divmod(pairs, len(self.shapes))  # [N, 2] each
        return colours[:, ::-1] * len(self.shapes) + shapes

    def _twin_layout(self, layout: _Layout, wanted: np.ndarray, split: str) -> _Layout:
        """`layout` with the colours exchanged in the `wanted` rows where the swap makes another true
        picture (two objects, different colours and shapes) and names only pairs of `split`, so a
        twin never shows a held-out pair in training."""
        colours, shapes = np.divmod(layout.pairs, len(self.shapes))  # [N, 2] each
        swapped = self._colours_exchanged(layout.pairs)
        allowed = np.isin(swapped, self.pair_ids(split)).all(axis=1)
        differ = (colours[:, 0] != colours[:, 1]) & (shapes[:, 0] != shapes[:, 1])
        twin = wanted & (layout.relations >= 0) & differ & allowed
        twins = copy.copy(layout)  # same sizes, places, colour jitter and randomisation: only colours move
        twins.pairs = np.where(twin[:, None], swapped, layout.pairs)
        return twins

    def _with_twins(
        self, sample: ShapesSample, twins: ShapesSample, is_twin: np.ndarray, two: np.ndarray
    ) -> ShapesSample:
        """`sample` with each twin (the rows of `twins` where `is_twin`) right after its original. Twins
        take the places of `sample`'s last two-object images (`two`): the batch keeps its size (a step
        costs the same) and its one-object images (what the compositional split is measured on)."""
        n = len(sample)
        rows = np.arange(n)
        # Original i then (if it has one) its twin, n + i in the stacked samples: [N, 2] -> [2N], gaps dropped
        order = np.stack([rows, np.where(is_twin, n + rows, -1)], axis=1).reshape(-1)
        order = order[order >= 0]
        paired = np.concatenate([two, np.ones(n, dtype=bool)])[order]  # every twin holds two objects
        order = order[~paired | (np.cumsum(paired) <= two.sum())]
        index = torch.from_numpy(order)
        captions, scenes = sample.captions + twins.captions, sample.scenes + twins.scenes
        return ShapesSample(
            images=torch.cat([sample.images, twins.images])[index.to(sample.images.device)],
            captions=[captions[i] for i in order],
            labels=torch.cat([sample.labels, twins.labels])[index],
            class_names=list(self.class_names),
            scenes=[scenes[i] for i in order],
        )

    # -- drawing -------------------------------------------------------------------------------

    def _render(self, layout: _Layout, rng: np.random.Generator) -> torch.Tensor:
        return self.renderer.render(layout, int(rng.integers(2**63)))

    # -- words ---------------------------------------------------------------------------------

    def _grid_centres(self, layout: _Layout) -> np.ndarray:
        """Where the grid world draws each object: its mask box's centre, (x, y) in pixels [N, 2, 2]."""
        return layout.corners[..., ::-1] + self._box_sizes[layout.sizes][..., None] / 2  # (row, col) -> (x, y)

    def _scenes(self, layout: _Layout) -> list[Scene]:
        n, rnd = len(layout.pairs), layout.random
        if rnd is None:
            centres = self._grid_centres(layout)
            angles, outline = np.zeros((n, 2)), np.zeros((n, 2), dtype=bool)
            diameters = self._diameters[layout.sizes]
        else:
            centres, angles, outline, diameters = rnd.centres, rnd.angles, rnd.outline, rnd.diameters
        scenes = []
        columns = (layout.pairs, layout.sizes, layout.positions, centres, diameters, angles, outline, layout.relations)
        for pairs, sizes, positions, xys, widths, turns, outlines, relation in zip(*(column.tolist() for column in columns)):
            objects = tuple(
                ShapeObject(
                    colour=self.pairs[pair][0],
                    shape=self.pairs[pair][1],
                    size=self.size_names[size],
                    position=self._position_names[position],
                    x=float(xy[0]),
                    y=float(xy[1]),
                    diameter=float(width),
                    angle=float(turn),
                    outline=bool(drawn),
                )
                for pair, size, position, xy, width, turn, drawn in zip(pairs, sizes, positions, xys, widths, turns, outlines)
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
        outline = layout.random.outline if layout.random is not None else np.zeros((n, 2), dtype=bool)
        captions = []
        rows = zip(layout.pairs.tolist(), layout.sizes.tolist(), layout.relations.tolist())
        for i, (pairs, sizes, relation) in enumerate(rows):
            templates = self.config.templates[styles[int(style_u[i] * len(styles))]]
            phrases = []
            for slot in range(2 if relation >= 0 else 1):
                options = OUTLINE_TEMPLATES if outline[i, slot] else templates["object"]
                colour, shape = self.pairs[pairs[slot]]
                template = options[int(object_u[i, slot] * len(options))]
                phrases.append(template.format(colour=colour, shape=shape, size=self.size_names[sizes[slot]]))
            if relation < 0:
                options = self._true_templates(templates["one"])
                where_options = WHERE_PHRASES[self._position_names[layout.positions[i, 0]]]
                caption = options[int(caption_u[i] * len(options))].format(
                    object=phrases[0], where=where_options[int(where_u[i] * len(where_options))]
                )
            else:
                relation_words = self._relation_names[relation]
                if flip[i]:  # "a blue square right of a red circle" says the same as the reverse
                    phrases.reverse()
                    relation_words = INVERSE_RELATIONS[relation_words]
                options = self._true_templates(templates["two"])
                template = options[int(caption_u[i] * len(options))]
                caption = template.format(a=phrases[0], b=phrases[1], relation=relation_words)
            captions.append(with_articles(caption))
        return captions

    def _true_templates(self, options: list[str]) -> list[str]:
        """The templates true of this world's pictures: the random world's backgrounds are not always dark."""
        if self.config.variation == "grid":
            return options
        return [template for template in options if "dark background" not in template] or options

    def _binding_caption(self, pairs: np.ndarray) -> str:
        (colour_a, shape_a), (colour_b, shape_b) = (self.pairs[p] for p in pairs)
        caption = BINDING_TEMPLATE.format(colour_a=colour_a, shape_a=shape_a, colour_b=colour_b, shape_b=shape_b)
        return with_articles(caption)
