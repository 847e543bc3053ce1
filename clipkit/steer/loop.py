"""The optimisation: change an image until a model agrees it matches a prompt.

`steer(model, prompts)` renders the image from a painter's parameters, shows the model views of
it, scores them against the weighted prompts and takes an Adam step on the parameters, for
`config.steps` steps; with restarts it keeps the run the steering model itself scores best.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

from clipkit.interface import CLIPBase
from clipkit.schedule import warmup_cosine
from clipkit.steer.config import MIN_LR_RATIO, SteerConfig
from clipkit.steer.losses import prompt_weights, steering_loss, total_variation
from clipkit.steer.painters import build_parameterisation
from clipkit.steer.views import model_views, side_named
from clipkit.tokenizer import check_known_words


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


def learning_rate_factor(config: SteerConfig) -> Callable[[int], float]:
    """Step (from 0) -> multiplier of config.resolved_lr, for LambdaLR. "cosine": the rate climbs in
    equal steps over the first `warmup_steps` steps, the last of them at the peak, then falls along
    a half cosine to MIN_LR_RATIO at the last step; "constant": 1 throughout."""
    if config.lr_schedule == "constant":
        return lambda step: 1.0
    warmup = min(config.warmup_steps, config.steps - 1)
    # warmup_cosine peaks at step `warmup_steps`; from 1 / warmup it reads 1/w, 2/w, ..., w/w = 1.
    peak_step, start = max(0, warmup - 1), 1 / warmup if warmup else 1.0
    return lambda step: warmup_cosine(step, peak_step, config.steps - 1, min_ratio=MIN_LR_RATIO, warmup_start=start)


def steer(
    model: CLIPBase,
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
    if not isinstance(model, CLIPBase):
        raise TypeError(f"steer needs a clipkit model (a clipkit.interface.CLIPBase such as MiniCLIP or "
                        f"clipkit.pretrained.load_open_clip(...)), got {type(model).__name__}")
    if model.tokenizer is None:
        raise ValueError("the model has no tokenizer; steering needs one to read the prompts")
    weights = prompt_weights(prompts, negative_prompts)
    texts = list(weights)
    check_known_words(model.tokenizer, texts)
    flip = (not side_named(texts)) if config.flip is None else config.flip

    weight_tensor = torch.tensor([weights[text] for text in texts], device=model.device)
    grad_flags = [p.requires_grad for p in model.parameters()]
    model.requires_grad_(False)  # gradients reach the image only
    try:
        with model.evaluating():
            text_features = model.encode_text(model.tokenizer(texts).to(model.device)).float()  # steering_loss normalises, once, as a hand-written loop would
            runs = []
            for restart in range(config.restarts):
                generator = torch.Generator().manual_seed(config.seed + restart)
                image_param = build_parameterisation(config, generator, init_image).to(model.device)
                runs.append(_optimise(model, image_param, text_features, weight_tensor, config, flip, generator, callback, restart))
                if len(runs[-1][2]) < config.steps:
                    break  # the callback asked to stop: no further restarts either
            # Every run's final image through the same views, so the runs are compared, not their luck.
            finals = torch.stack([frames[-1] for frames, _, _ in runs]).to(model.device)
            scores = _losses_through_same_views(finals, model, text_features, weight_tensor, config, flip,
                                                torch.Generator().manual_seed(config.seed)).tolist()
    finally:
        for parameter, flag in zip(model.parameters(), grad_flags):
            parameter.requires_grad_(flag)
    best = min(range(len(runs)), key=scores.__getitem__)
    frames, frame_steps, losses = runs[best]
    return SteerResult(image=frames[-1], frames=frames, frame_steps=frame_steps, losses=losses, weights=weights, config=config,
                       restart_losses=scores, restart=best)


@torch.no_grad()
def _losses_through_same_views(candidates: torch.Tensor, model: CLIPBase, text_features, weights, config: SteerConfig, flip: bool,
                               generator: torch.Generator) -> torch.Tensor:
    """[C, 3, H, W] -> [C] steering losses, every candidate seen through the same views (the
    generator is rewound for each), so their differences are theirs, not the views'."""
    state = generator.get_state()
    views = []
    for candidate in candidates:
        generator.set_state(state)
        views.append(model_views(candidate[None], model, config, flip, generator))
    features = model.encode_image(torch.cat(views)).float()
    per_candidate = features.view(len(candidates), -1, features.shape[-1])  # [C*K, D] -> [C, K, D]
    scale = float(model.logit_scale_exp())
    return torch.stack([steering_loss(chunk, text_features, weights, config.loss, scale) for chunk in per_candidate])


@torch.enable_grad()  # steering works even when called under torch.no_grad()
def _optimise(model: CLIPBase, image_param, text_features, weights, config: SteerConfig, flip: bool, generator, callback, restart: int = 0):
    """The loop of `steer`: returns (frames, frame_steps, losses)."""
    optimizer = torch.optim.Adam(image_param.parameters(), lr=config.resolved_lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_factor(config))
    scale = float(model.logit_scale_exp())

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
        image_features = model.encode_image(model_views(image, model, config, flip, generator)).float()
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
