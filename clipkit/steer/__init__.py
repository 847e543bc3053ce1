"""CLIP-guided image optimisation: change an image until a model agrees it matches a prompt.

Naive steering (raw pixels, one view, many steps) finds adversarial noise that only the steering
model believes. Three things make results that other judges recognise too:
- a parameterisation with a prior towards natural images (`painters`): sigmoid pixels with a
  smoothness penalty, a decorrelated-colour Fourier spectrum (as in lucid), soft strokes or
  filled shapes painted in pure torch, or stamps of the shapes world's own shapes;
- many augmented views per step (`views`: crops, cutouts, flips, noise, colour jitter, optionally
  small rotations and zoom-outs), so no single view's quirks can be exploited;
- a loss on normalised embeddings (`losses`): cosine or spherical distance to weighted prompts
  (negatives push away), or a contrastive one that tells the prompt apart from its alternatives.

The package, read from the bottom: `config` (SteerConfig and its defaults), `views`, `losses`,
`painters`, `loop` (`steer`, its step and result), and `judges` of steered shapes-world images
(pixel oracle, zero-shot judge, contrast captions), none of them the model that steered.
`steer(model, prompts)` works with any clipkit model (`clipkit.interface.CLIPBase`): MiniCLIP or
an open_clip model from `clipkit.pretrained`. A 224 px CLIP (ViT-B/32) is steered at its own size
through random cutouts, as CLIPDraw and VQGAN+CLIP do: `SteerConfig(**REAL_SCALE, ...)`.
"""

from clipkit.steer.config import GENTLE_VIEWS, LOSSES, PARAMETERISATIONS, REAL_SCALE, SteerConfig
from clipkit.steer.judges import (
    OracleReading,
    ShapesPrompt,
    oracle_agrees,
    parse_shapes_prompt,
    pixel_oracle,
    shapes_contrasts,
    shapes_prompt,
    zero_shot_judge,
)
from clipkit.steer.losses import cosine_distance, prompt_weights, spherical_distance, steering_loss, total_variation
from clipkit.steer.loop import SteerResult, SteerStep, steer
from clipkit.steer.painters import build_parameterisation
from clipkit.steer.views import augmented_views, side_named

__all__ = [
    "GENTLE_VIEWS",
    "LOSSES",
    "PARAMETERISATIONS",
    "REAL_SCALE",
    "OracleReading",
    "ShapesPrompt",
    "SteerConfig",
    "SteerResult",
    "SteerStep",
    "augmented_views",
    "build_parameterisation",
    "cosine_distance",
    "oracle_agrees",
    "parse_shapes_prompt",
    "pixel_oracle",
    "prompt_weights",
    "shapes_contrasts",
    "shapes_prompt",
    "side_named",
    "spherical_distance",
    "steer",
    "steering_loss",
    "total_variation",
    "zero_shot_judge",
]
