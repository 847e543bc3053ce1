"""CLIP-guided image optimisation: change an image until a model agrees it matches a prompt.

Naive steering (raw pixels, one view, many steps) finds adversarial noise that only the steering
model believes. Three things make results that other judges recognise too:
- a parameterisation with a prior towards natural images (`clipkit.painters`): sigmoid pixels
  with a smoothness penalty, a decorrelated-colour Fourier spectrum (as in lucid), soft strokes or
  filled shapes painted in pure torch, or stamps of the shapes world's own shapes;
- many augmented views per step (crops, cutouts, flips, noise, colour jitter, optionally small
  rotations and zoom-outs), so no single view's quirks can be exploited;
- a loss on normalised embeddings: cosine or spherical distance to weighted prompts (negatives
  push away), or a contrastive one that tells the prompt apart from its alternatives.

`steer(model, prompts)` works with any model that has the clipkit interface (`encode_image`,
`encode_text`, `tokenizer`, `image_size`, `image_mean`, `image_std`): MiniCLIP or an open_clip
model from `clipkit.pretrained`. The painters live in `clipkit.painters`; the judges of steered
shapes-world images (pixel oracle, zero-shot judge, contrast captions) in `clipkit.judges`.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from clipkit.data.transforms import normalize_images, resize_images
from clipkit.painters import PARAMETERISATIONS, build_parameterisation, total_variation

LOSSES = ("cosine", "spherical", "contrastive")
LR_SCHEDULES = ("cosine", "constant")
# Adam step sizes that suit each parameterisation at 64 px (SteerConfig.lr=None picks these).
DEFAULT_LR = {"pixels": 0.05, "fourier": 0.03, "strokes": 0.02, "shapes": 0.05, "stamps": 0.05}
# Total-variation weight for each parameterisation (SteerConfig.smoothness_weight=None picks these):
# stamps are their own prior, and a penalty on edges would only shrink them.
DEFAULT_SMOOTHNESS = {"pixels": 0.05, "fourier": 0.05, "strokes": 0.05, "shapes": 0.05, "stamps": 0.0}
# Views that stay within the shapes world's own variation (notebook 08): its noise is about 0.004,
# so the default views (noise 0.02, 20% crops, cutouts) look to a small model like another world.
GENTLE_VIEWS = dict(noise_std=0.008, colour_jitter=0.05, crop_scale=(0.9, 1.0), cutout_probability=0.0)
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


# ---------------------------------------------------------------------------------------------
# Augmented views


def side_named(prompts: Sequence[str]) -> bool:
    """True when a prompt names a side, which a horizontal flip would swap."""
    return any(re.search(rf"\b{word}\b", prompt.lower()) for prompt in prompts for word in SIDE_WORDS)


def augmented_views(image: torch.Tensor, config: SteerConfig, size: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """[1, 3, H, W] -> [K, 3, size, size]: random crops resized to `size`, then flips, cutouts,
    colour jitter and noise. Differentiable in `image`; randomness comes from `generator` (CPU)."""
    count, device = config.num_augmentations, image.device
    # Downsample once with antialiasing so that cropping with bilinear sampling does not alias.
    working = math.ceil(size / config.crop_scale[0])
    if image.shape[-1] > working:
        image = F.interpolate(image, size=(working, working), mode="bilinear", antialias=True, align_corners=False)
    low, high = config.crop_scale
    scale = low + (high - low) * torch.rand(count, generator=generator)
    # crop centres in [-1, 1] coordinates: a crop stays inside the image (a zoom-out keeps it all in view)
    centre = (torch.rand(count, 2, generator=generator) * 2 - 1) * (1 - scale).abs()[:, None]
    mirror = torch.where(torch.rand(count, generator=generator) < 0.5, -1.0, 1.0) if flip else torch.ones(count)
    angle = (torch.rand(count, generator=generator) * 2 - 1) * math.radians(config.rotation_degrees)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    theta = torch.zeros(count, 2, 3)  # output -> input coordinates: rotate, scale, mirror, then shift
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos * mirror, -sin, sin * mirror, cos
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta.to(device), [count, 3, size, size], align_corners=False)
    views = F.grid_sample(image.expand(count, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False)

    if config.cutout_probability > 0:
        hole = max(1, round(config.cutout_size * size))
        corner = torch.randint(0, size - hole + 1, (count, 2), generator=generator)
        has_hole = torch.rand(count, generator=generator) < config.cutout_probability
        rows = torch.arange(size)[None, :, None]  # [1, S, 1]
        cols = torch.arange(size)[None, None, :]  # [1, 1, S]
        top, left = corner[:, 0, None, None], corner[:, 1, None, None]  # [K] -> [K, 1, 1]
        inside = (rows >= top) & (rows < top + hole) & (cols >= left) & (cols < left + hole)
        holes = (inside & has_hole[:, None, None]).float()[:, None].to(device)  # [K, S, S] -> [K, 1, S, S]
        # fill with each view's own mean colour: blank, without adding a colour of its own
        fill = views.mean(dim=(2, 3), keepdim=True).detach()
        views = torch.lerp(views, fill.expand_as(views), holes)
    if config.colour_jitter > 0:
        brightness = 1 + (torch.rand(count, 1, 1, 1, generator=generator) * 2 - 1) * config.colour_jitter
        contrast = 1 + (torch.rand(count, 1, 1, 1, generator=generator) * 2 - 1) * config.colour_jitter
        mean = views.mean(dim=(1, 2, 3), keepdim=True)
        views = (views - mean) * contrast.to(device) + mean * brightness.to(device)
    if config.noise_std > 0:
        views = views + config.noise_std * torch.randn(views.shape, generator=generator).to(device)
    return views.clamp(0, 1)


# ---------------------------------------------------------------------------------------------
# Losses: pure functions of normalised embeddings.


def cosine_distance(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """[K, D] x [P, D] unit vectors -> [K, P] of 1 - cos, in [0, 2]."""
    return 1 - image_features @ text_features.T


def spherical_distance(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """[K, D] x [P, D] unit vectors -> [K, P] of 2 * arcsin(|a - b| / 2) ** 2, half the squared angle,
    as CLIP-guided diffusion uses: its pull grows with the angle, where 1 - cos flattens out far away."""
    chord = (image_features[:, None] - text_features[None]).norm(dim=-1)  # [K, P]
    return 2 * torch.arcsin((chord / 2).clamp(max=1)) ** 2


_DISTANCES = {"cosine": cosine_distance, "spherical": spherical_distance}


def steering_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, weights: torch.Tensor, kind: str = "cosine", logit_scale: float = 100.0
) -> torch.Tensor:
    """Weighted distance of every view [K, D] to every prompt [P, D], averaged over views.

    `weights` [P] are already normalised (see `prompt_weights`); negative ones push away. With
    kind="contrastive" the loss is instead the cross-entropy of the positive prompts (weighted)
    under a softmax over all prompts at `logit_scale` (the model's exp(logit_scale)): negative
    prompts are the alternatives the image must be told apart from, not directions to flee."""
    if kind not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {kind!r}")
    image_features, text_features = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)
    if kind == "contrastive":
        if not bool((weights < 0).any()):
            raise ValueError("the contrastive loss needs negative prompts, the alternatives to tell the image apart from "
                             "(e.g. shapes_contrasts(prompt)); pass negative_prompts=... or use loss='cosine'")
        log_probs = (logit_scale * image_features @ text_features.T).log_softmax(dim=-1)  # [K, P]
        return -(log_probs * weights.clamp(min=0)).sum(dim=1).mean()
    return (_DISTANCES[kind](image_features, text_features) * weights).sum(dim=1).mean()


# ---------------------------------------------------------------------------------------------
# Prompts: weights, and checks made before any optimisation.


def _as_weights(prompts, what: str) -> dict[str, float]:
    if prompts is None:
        return {}
    if isinstance(prompts, str):
        prompts = [prompts]
    if isinstance(prompts, Mapping):
        items = [(str(text), float(weight)) for text, weight in prompts.items()]
    else:
        items = [(text, 1.0) for text in prompts]
    for text, weight in items:
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{what} holds an empty prompt ({text!r}); give each prompt some words, e.g. 'a red star'")
        if not math.isfinite(weight):
            raise ValueError(f"the weight of {what[:-1]} {text!r} is {weight}; give a finite number")
    return dict(items)


def prompt_weights(prompts, negative_prompts=None) -> dict[str, float]:
    """{prompt: weight} with weights normalised as `steer` uses them.

    `prompts` is a string, a list (weight 1 each) or a dict prompt -> weight (negative weights push
    away); `negative_prompts` likewise, its weights being how strongly to avoid each (1 each for a
    list). All weights are on one scale and divided by the sum of the `prompts` weights, so that
    the pull towards the prompts always totals 1. That sum must therefore be positive.
    """
    positive = _as_weights(prompts, "prompts")
    negative = _as_weights(negative_prompts, "negative_prompts")
    if not positive:
        raise ValueError("no prompt given: pass a prompt such as 'a red star' (a string, a list or a dict prompt -> weight)")
    bad = {text: weight for text, weight in negative.items() if weight <= 0}
    if bad:
        raise ValueError(f"negative_prompts weights say how strongly to avoid each and must be positive; got {bad}")
    total = sum(positive.values())
    if abs(total) < 1e-12:
        raise ValueError(
            f"the prompt weights {positive} sum to zero, so they cannot be normalised and pull nowhere in total; "
            "make the weights towards what you want outweigh the negative ones, or pass the unwanted prompts as negative_prompts"
        )
    if total < 0:
        raise ValueError(
            f"the prompt weights {positive} sum to {total:g}: the image would be pushed away from everything; "
            "make the positive weights larger, or pass the unwanted prompts as negative_prompts"
        )
    overlap = sorted(set(positive) & set(negative))
    if overlap:
        raise ValueError(f"{overlap} appear both as prompts and as negative prompts; keep each in one place")
    weights = {text: weight / total for text, weight in positive.items()}
    weights.update({text: -weight / total for text, weight in negative.items()})
    return weights


def check_prompt_words(tokenizer, prompts: Sequence[str]) -> None:
    """Word-level tokenizers map unknown words to <unk>, which would steer towards nothing in
    particular: refuse them, naming the unknown words and some the model does know."""
    unk = getattr(tokenizer, "unk_token_id", None)
    known_words = getattr(tokenizer, "words", None)
    if unk is None or known_words is None:
        return  # BPE tokenizers spell out any word
    split = getattr(tokenizer, "split", str.split)
    unknown = sorted({word for prompt in prompts for word in split(prompt) if tokenizer.encode(word) == [unk]})
    if not unknown:
        return
    # Frequent content words say more about the vocabulary than "a", "of" or punctuation.
    examples = [word for word in known_words if word.isalpha() and len(word) > 3][:12]
    hints = []
    for word in unknown:
        close = difflib.get_close_matches(word, known_words, n=3)
        if close:
            hints.append(f"{word!r}: did you mean {', '.join(close)}?")
    raise ValueError(
        f"the model's word-level tokenizer does not know {unknown}, which it would read as <unk>. "
        + (" ".join(hints) + " " if hints else "")
        + f"Use words it knows, e.g. {', '.join(examples)} ({len(known_words)} words in all)."
    )


# ---------------------------------------------------------------------------------------------
# The optimisation


@dataclass
class SteerStep:
    """What a progress callback receives after each step."""

    step: int  # 1-based number of the step just taken
    steps: int  # total steps planned
    loss: float  # the steering loss of this step (smoothness penalty excluded)
    image: torch.Tensor  # the current image, float [3, H, W] in [0, 1] on the CPU, detached
    restart: int = 0  # which of config.restarts runs this step belongs to (0-based)


@dataclass
class SteerResult:
    image: torch.Tensor  # the final image, float [3, H, W] in [0, 1] on the CPU
    frames: list[torch.Tensor]  # snapshots every config.frame_every steps, float [3, H, W] each
    frame_steps: list[int]  # the step each frame was taken after (0: the starting image)
    losses: list[float]  # the steering loss at every step
    weights: dict[str, float]  # the normalised prompt weights steered with (negative: avoided)
    config: SteerConfig = field(default_factory=SteerConfig)  # the settings used
    # each restart's final image scored by the steering model over the same fixed views; the kept
    # run is the lowest (one entry when config.restarts is 1)
    restart_losses: list[float] = field(default_factory=list)
    restart: int = 0  # which restart was kept (its seed is config.seed + restart)

    def to_pil(self, image: torch.Tensor | None = None, scale: int = 1):
        from PIL import Image

        array = (self.image if image is None else image).clamp(0, 1).mul(255).round().byte()
        picture = Image.fromarray(array.permute(1, 2, 0).numpy())  # [3, H, W] -> [H, W, 3]
        return picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST) if scale > 1 else picture

    def save_grid(self, path: str | Path, ncols: int = 8, scale: int = 2, gap: int = 2) -> Path:
        """The frames side by side (rows of `ncols`), upscaled `scale` times, as one PNG."""
        from PIL import Image

        pictures = [self.to_pil(frame, scale) for frame in self.frames]
        side = pictures[0].width
        ncols = min(ncols, len(pictures))
        nrows = -(-len(pictures) // ncols)
        grid = Image.new("RGB", (ncols * (side + gap) - gap, nrows * (side + gap) - gap), (255, 255, 255))
        for index, picture in enumerate(pictures):
            grid.paste(picture, ((index % ncols) * (side + gap), (index // ncols) * (side + gap)))
        path = Path(path)
        grid.save(path)
        return path

    def save_gif(self, path: str | Path, scale: int = 4, frame_ms: int = 80, hold_last_ms: int = 1000) -> Path:
        """The optimisation as an animated GIF, looping, pausing on the final image."""
        pictures = [self.to_pil(frame, scale) for frame in self.frames]
        durations = [frame_ms] * (len(pictures) - 1) + [hold_last_ms]
        path = Path(path)
        pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=durations, loop=0)
        return path


def _learning_rate_factor(config: SteerConfig) -> Callable[[int], float]:
    if config.lr_schedule == "constant":
        return lambda step: 1.0
    warmup = min(config.warmup_steps, config.steps - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, config.steps - warmup - 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def steer(
    model: nn.Module,
    prompts,
    negative_prompts=None,
    config: SteerConfig | None = None,
    callback: Callable[[SteerStep], bool | None] | None = None,
    init_image: torch.Tensor | None = None,
) -> SteerResult:
    """Optimise an image towards `prompts` (and away from `negative_prompts`) under `model`.

    Prompts are a string, a list, or a dict prompt -> weight (see `prompt_weights`). The model is
    frozen and in eval mode while it steers (its state is restored after). Each step renders the
    image, makes `config.num_augmentations` views at the model's image size (or one plain view
    with `augment=False`), normalises them with the model's statistics and takes an Adam step on
    the image parameters. `callback(SteerStep)` runs after every step; returning True stops early.
    With `config.restarts` > 1 it runs that many times from different seeds and keeps the run
    whose final image the steering model scores best (`SteerResult.restart_losses`).
    """
    config = config or SteerConfig()
    if getattr(model, "tokenizer", None) is None:
        raise ValueError("the model has no tokenizer; steering needs one to read the prompts")
    weights = prompt_weights(prompts, negative_prompts)
    texts = list(weights)
    check_prompt_words(model.tokenizer, texts)
    flip = (not side_named(texts)) if config.flip is None else config.flip

    device = _device_of(model)
    weight_tensor = torch.tensor([weights[text] for text in texts], device=device)
    was_training = model.training
    grad_flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        with torch.no_grad():
            text_features = model.encode_text(model.tokenizer(texts).to(device)).float()  # steering_loss normalises, once, as a hand-written loop would
        runs = []
        for restart in range(config.restarts):
            generator = torch.Generator().manual_seed(config.seed + restart)
            image_param = build_parameterisation(config, generator, init_image).to(device)
            runs.append(_optimise(model, image_param, text_features, weight_tensor, config, flip, generator, callback, restart))
            if len(runs[-1][2]) < config.steps:
                break  # the callback asked to stop: no further restarts either
        # Every run's final image through the same views, so the runs are compared, not their luck.
        finals = torch.stack([frames[-1] for frames, _, _ in runs]).to(device)
        scores = _losses_through_same_views(finals, model, text_features, weight_tensor, config, flip,
                                            torch.Generator().manual_seed(config.seed)).tolist()
    finally:
        model.train(was_training)
        for parameter, flag in zip(model.parameters(), grad_flags):
            parameter.requires_grad_(flag)
    best = min(range(len(runs)), key=scores.__getitem__)
    frames, frame_steps, losses = runs[best]
    return SteerResult(image=frames[-1], frames=frames, frame_steps=frame_steps, losses=losses, weights=weights, config=config,
                       restart_losses=scores, restart=best)


def _logit_scale_of(model) -> float:
    return float(model.logit_scale.exp()) if hasattr(model, "logit_scale") else 100.0


@torch.no_grad()
def _losses_through_same_views(candidates: torch.Tensor, model, text_features, weights, config: SteerConfig, flip: bool,
                               generator: torch.Generator) -> torch.Tensor:
    """[C, 3, H, W] -> [C] steering losses, every candidate seen through the same views (the
    generator is rewound for each), so their differences are theirs, not the views'."""
    state = generator.get_state()
    views = []
    for candidate in candidates:
        generator.set_state(state)
        views.append(_model_views(candidate[None], model, config, flip, generator))
    features = model.encode_image(torch.cat(views)).float()
    per_candidate = features.view(len(candidates), -1, features.shape[-1])  # [C*K, D] -> [C, K, D]
    scale = _logit_scale_of(model)
    return torch.stack([steering_loss(chunk, text_features, weights, config.loss, scale) for chunk in per_candidate])


def _model_views(image: torch.Tensor, model, config: SteerConfig, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """[1, 3, H, W] -> what the model sees each step: augmented views (or the one resized image), normalised."""
    if config.augment:
        views = augmented_views(image, config, model.image_size, flip, generator)
    else:
        views = resize_images(image, model.image_size)
    return normalize_images(views, model.image_mean, model.image_std)


@torch.enable_grad()  # steering works even when called under torch.no_grad()
def _optimise(model, image_param, text_features, weights, config: SteerConfig, flip: bool, generator, callback, restart: int = 0):
    """The loop of `steer`: returns (frames, frame_steps, losses)."""
    optimizer = torch.optim.Adam(image_param.parameters(), lr=config.resolved_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _learning_rate_factor(config))
    scale = _logit_scale_of(model)

    def losses_of(candidates: torch.Tensor) -> torch.Tensor:
        return _losses_through_same_views(candidates, model, text_features, weights, config, flip, generator)

    plain = replace(config, augment=False)

    def plain_losses_of(candidates: torch.Tensor) -> torch.Tensor:
        return _losses_through_same_views(candidates, model, text_features, weights, plain, flip, generator)

    frames, frame_steps, losses = [image_param().detach().cpu()[0]], [0], []
    for step in range(1, config.steps + 1):
        if hasattr(image_param, "search") and (step - 1) % config.search_every == 0:
            joint = plain_losses_of if step == 1 and config.joint_first_search else None
            image_param.search(losses_of, config.position_search_step, joint)
        image = image_param()
        image_features = model.encode_image(_model_views(image, model, config, flip, generator)).float()
        loss = steering_loss(image_features, text_features, weights, config.loss, scale)
        smoothness = config.resolved_smoothness_weight
        total = loss + smoothness * total_variation(image) if smoothness else loss
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        keep = step % config.frame_every == 0 or step == config.steps
        if not keep and callback is None:
            continue
        with torch.no_grad():
            current = image_param().cpu()[0]
        stop = callback is not None and bool(callback(SteerStep(step, config.steps, losses[-1], current, restart)))
        if keep or stop:
            frames.append(current)
            frame_steps.append(step)
        if stop:
            break
    return frames, frame_steps, losses
