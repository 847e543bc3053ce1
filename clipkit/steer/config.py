"""How to steer: SteerConfig and the constants its defaults come from.

Plain data at the bottom of the steering package, so the painters, the views, the losses and the
loop all read one config without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

# What steering can optimise, freest first (clipkit.steer.painters has a class for each).
PARAMETERISATIONS = ("pixels", "fourier", "strokes", "shapes", "stamps")
LOSSES = ("cosine", "spherical", "contrastive")
LR_SCHEDULES = ("cosine", "constant")
# Adam step sizes that suit each parameterisation at 64 px (SteerConfig.lr=None picks these).
DEFAULT_LR = {"pixels": 0.05, "fourier": 0.03, "strokes": 0.02, "shapes": 0.05, "stamps": 0.05}
# Total-variation weight for each parameterisation (SteerConfig.smoothness_weight=None picks these):
# stamps are their own prior, and a penalty on edges would only shrink them.
DEFAULT_SMOOTHNESS = {"pixels": 0.05, "fourier": 0.05, "strokes": 0.05, "shapes": 0.05, "stamps": 0.0}
# The cosine schedule decays to this fraction of the peak rate by the last step.
MIN_LR_RATIO = 0.1
# Views that stay within the shapes world's own variation (notebook 08): its noise is about 0.004,
# so the default views (noise 0.02, 20% crops, cutouts) look to a small model like another world.
GENTLE_VIEWS = dict(noise_std=0.008, colour_jitter=0.05, crop_scale=(0.9, 1.0), cutout_probability=0.0)
# Settings for a CLIP at its full input size (a 224 px ViT-B/32 from open_clip or Hugging Face), as
# CLIPDraw and VQGAN+CLIP steer one: the image is painted at the model's own size, and each step the
# model sees random cutouts (crops of half to all of the side, each resized to its input size, then
# turned a little, flipped, jittered and noised). Large CLIPs saw noisy, cropped photos in training,
# so wide crops do them no harm, and a grey start suits photographic prompts. Pass with
# SteerConfig(**{**REAL_SCALE, "image_size": model.image_size}, parameterisation="fourier").
REAL_SCALE = dict(image_size=224, num_augmentations=8, crop_scale=(0.5, 1.0), rotation_degrees=10.0, cutout_probability=0.0,
                  noise_std=0.05, colour_jitter=0.1, init_background=(0.5, 0.5, 0.5))
# Words that name a side: a horizontal flip swaps them, so flips are off for prompts holding them.
SIDE_WORDS = ("left", "right")


@dataclass
class SteerConfig:
    image_size: int = 64  # side of the image being optimised, in pixels (views are resized to the model's size)
    steps: int = 200  # optimisation steps
    parameterisation: str = "shapes"  # "pixels" (sigmoid logits), "fourier" (decorrelated spectrum), "strokes" or "shapes" (soft painted primitives)
    lr: float | None = None  # Adam learning rate; None takes DEFAULT_LR for the parameterisation
    lr_schedule: str = "cosine"  # "cosine": warm up, then decay to 10%; "constant": the same rate throughout
    warmup_steps: int = 10  # steps of linear warm-up before the cosine decay (ignored by "constant")
    augment: bool = True  # False: the model sees the one full image each step (the ablation)
    num_augmentations: int = 16  # augmented views per step, each a random crop with the effects below
    # crop side as a fraction of the image (above 1 zooms out); smaller crops would move objects
    # "on the left" to the centre and make "small" ones look "large"
    crop_scale: tuple[float, float] = (0.8, 1.0)
    rotation_degrees: float = 0.0  # views turn by up to this angle either way; keep it small, a square turned 45 degrees is a diamond
    cutout_probability: float = 0.5  # chance that a view has a rectangle blanked out, so no small region carries the match alone
    cutout_size: float = 0.25  # side of the cutout rectangle, as a fraction of the view
    flip: bool | None = None  # horizontal flips; None flips unless a prompt says "left" or "right" (a flip would swap them)
    noise_std: float = 0.02  # Gaussian pixel noise added to each view (images in [0, 1])
    colour_jitter: float = 0.1  # most each view's brightness and contrast move (fraction); hue stays, prompts name colours
    # "cosine": 1 - cos; "spherical": squared great-circle distance (steeper far from the prompt);
    # "contrastive": cross-entropy of the prompts among prompts + negative prompts, as a zero-shot
    # classifier would read the image (needs negative prompts: the alternatives to beat)
    loss: str = "cosine"
    smoothness_weight: float | None = None  # weight of the total-variation penalty (a prior against pixel noise); None takes DEFAULT_SMOOTHNESS
    num_strokes: int = 24  # strokes painted by the "strokes" parameterisation
    num_shapes: int = 3  # filled shapes painted by the "shapes" parameterisation
    num_stamps: int = 1  # shapes stamped by the "stamps" parameterisation
    search_every: int = 10  # "stamps": every this many steps each stamp tries every colour, shape, place and size, and keeps the best
    # "stamps": the first search tries every colour, shape, size and place of the world together,
    # each seen once through a plain view, before searching one attribute at a time
    joint_first_search: bool = True
    position_search_step: float = 0.22  # how far (fraction of the side) the places tried are from the current one; 0: shapes only
    shape_harmonics: int = 8  # harmonics of each shape's outline: more allow sharper points
    edge_softness: float = 1.0  # width of a stroke's or shape's soft edge, in pixels: softer edges pass gradient further
    fourier_decay: float = 1.0  # spectrum scaled by 1 / frequency ** decay: larger favours smoother images
    init_background: tuple[float, float, float] = (0.06, 0.06, 0.08)  # starting colour in [0, 1]: dark like the shapes world; try grey for photos
    seed: int = 0  # seeds the initial image and every augmentation
    # independent runs from seeds seed, seed + 1, ...; the one whose final image the steering model
    # itself scores best (the steering loss over one fixed set of views) is kept: a run stuck in a
    # poor optimum (a blob, a wrong colour picked early) rarely recovers, another start often avoids it
    restarts: int = 1
    frame_every: int = 10  # keep a frame for the grid and GIF every this many steps (the last step is always kept)

    def __post_init__(self):
        if self.parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"parameterisation must be one of {PARAMETERISATIONS}, got {self.parameterisation!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        for name in ("image_size", "steps", "num_augmentations", "num_strokes", "num_shapes", "num_stamps", "search_every", "frame_every", "restarts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        low, high = self.crop_scale
        if not 0 < low <= high <= 2:
            raise ValueError(f"crop_scale must be (low, high) with 0 < low <= high <= 2, got {self.crop_scale}")

    @property
    def resolved_lr(self) -> float:
        return DEFAULT_LR[self.parameterisation] if self.lr is None else self.lr

    @property
    def resolved_smoothness_weight(self) -> float:
        return DEFAULT_SMOOTHNESS[self.parameterisation] if self.smoothness_weight is None else self.smoothness_weight
