"""A procedural world of coloured shapes with captions: CLIP's data in miniature, made in milliseconds.

- `words`: colours, shapes, sizes, places, relations, the held-out pairs and the caption templates (plain data);
- `masks`: an anti-aliased mask per shape, drawn once and pasted (or sampled, turned and scaled);
- `variation`: domain randomisation, how the "random" world draws each scene;
- `render`: `ShapesRenderer`, layouts to pixels in torch on any device;
- `config`: `ShapesConfig` and what sampling returns (`Scene`, `ShapesSample`, `BindingProbe`);
- `world`: `ShapesWorld`, which samples captioned images, the compositional split and the binding probe.
"""

from clipkit.data.shapes.config import BindingProbe, Scene, ShapeObject, ShapesConfig, ShapesSample
from clipkit.data.shapes.masks import SHAPE_TESTS, mask_box_size, shape_mask, unit_masks
from clipkit.data.shapes.render import ShapesRenderer
from clipkit.data.shapes.variation import Randomisation, region_of
from clipkit.data.shapes.words import (
    BINDING_TEMPLATE,
    CAPTION_TEMPLATES,
    COLOURS,
    HELDOUT_PAIRS,
    INVERSE_RELATIONS,
    OUTLINE_TEMPLATES,
    POSITIONS,
    RELATIONS,
    SHAPES,
    SIZES,
    WHERE_PHRASES,
    class_prompt,
)
from clipkit.data.shapes.world import ShapesWorld

__all__ = [
    "BINDING_TEMPLATE",
    "CAPTION_TEMPLATES",
    "COLOURS",
    "HELDOUT_PAIRS",
    "INVERSE_RELATIONS",
    "OUTLINE_TEMPLATES",
    "POSITIONS",
    "RELATIONS",
    "SHAPES",
    "SHAPE_TESTS",
    "SIZES",
    "WHERE_PHRASES",
    "BindingProbe",
    "Scene",
    "Randomisation",
    "ShapeObject",
    "ShapesConfig",
    "ShapesRenderer",
    "ShapesSample",
    "ShapesWorld",
    "class_prompt",
    "mask_box_size",
    "region_of",
    "shape_mask",
    "unit_masks",
]
