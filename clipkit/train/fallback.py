"""The model later notebooks, labs and `make demo` use: notebook 05's checkpoint when it is there,
else a fallback model trained now, in plain view.

Training a fallback says so and where, shows a progress bar, prints how long it will take on this
machine (a few steps timed, then extrapolated), and checkpoints every few dozen steps: stopped and
called again, it resumes where it was instead of starting over.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from clipkit.train.config import TrainConfig
from clipkit.train.loop import train
from clipkit.train.profiles import build_model, default_out_dir, resolve_profile
from clipkit.train.state import CheckpointMismatchError, read_train_state

CHECKPOINT_EVERY = 25  # steps between a fallback run's checkpoints: an interruption loses fewer than this
TIMED_STEPS = 5  # steps timed (after a first, warming-up one) before the estimate is printed


def load_or_train(
    profile: str | dict = "cpu",
    out_dir: str | Path | None = None,
    seed: int = 0,
    steps: int | None = None,
    device=None,
    progress: bool = True,
    checkpoint_every: int = CHECKPOINT_EVERY,
    on_step: Callable[[int, float], None] | None = None,
):
    """The finished checkpoint of `profile` in `out_dir` (default `default_out_dir(seed, profile)`:
    `checkpoint_dir()/"mini-clip"`, or "mini-clip-seed{seed}"), else a model trained with the profile
    and saved there; in eval mode. `steps` (default: the profile's) applies only when training: a
    finished checkpoint is loaded however long it trained (its card says). A folder holding another
    profile's or seed's model is an error; an unfinished run of this profile is resumed.

    Training checkpoints every `checkpoint_every` steps; `progress` shows a bar; `on_step(step,
    train_seconds)` is called after each step (an exception there stops training, as Ctrl-C does).
    """
    from clipkit.env import get_device
    from clipkit.model import CONFIG_FILE, load_model, read_checkpoint_config

    spec = resolve_profile(profile)
    name = profile if isinstance(profile, str) else "custom"
    out_dir = Path(out_dir) if out_dir is not None else default_out_dir(seed, profile)
    device = torch.device(device) if device is not None else get_device()
    if (out_dir / CONFIG_FILE).exists():
        _, card = read_checkpoint_config(out_dir)
        found = (card.get("profile"), card.get("seed"))
        if found != (name, seed) and card.get("profile") is not None:
            raise CheckpointMismatchError(
                f"{out_dir} holds a model of profile {found[0]!r}, seed {found[1]}, not {name!r}, seed {seed}: "
                f"pass profile={found[0]!r}, seed={found[1]} to use it, another out_dir, or delete the folder to retrain"
            )
    state = read_train_state(out_dir) or {}
    if state.get("finished"):
        return load_model(out_dir, device=device)
    wanted_steps = steps or spec["train"].get("steps", TrainConfig.steps)
    wanted_steps = state.get("train_config", {}).get("steps", wanted_steps)  # resume as it was started
    if state:
        print(f"Resuming the unfinished training of a fallback model in {out_dir} at step {state['step']} of {wanted_steps}.")
    else:
        print(f"No checkpoint found at {out_dir}: training a fallback model there (profile {name!r}, "
              f"{wanted_steps} steps). It is saved every {checkpoint_every} steps: if you stop it, "
              "running this again resumes.")
    model, data = build_model(profile, seed=seed)
    config = TrainConfig(**{**spec["train"], "steps": wanted_steps, "seed": seed, "checkpoint_every": checkpoint_every})
    estimate = _Estimate(config)
    train(model.to(device), data, config, out_dir=out_dir, progress=progress, metadata={"profile": name},
          on_step=estimate if on_step is None else lambda *run: (estimate(*run), on_step(*run)))
    return load_model(out_dir, device=device)


class _Estimate:
    """Prints, once, how long the rest of a run will take: the pace of a few steps, extrapolated."""

    def __init__(self, config: TrainConfig):
        self.config = config
        self.first: tuple[int, float] | None = None  # (step, train_seconds) after this session's first step

    def __call__(self, step: int, train_seconds: float) -> None:
        if self.first is None:
            self.first = (step, train_seconds)  # the first step pays one-off costs: time from after it
            return
        timed = step - self.first[0]
        if timed != TIMED_STEPS or step >= self.config.steps:
            return
        per_step = (train_seconds - self.first[1]) / timed
        remaining = self.config.steps - step
        every = self.config.eval_every
        evaluations = 1 + (remaining // every if every else 0)
        from tqdm.auto import tqdm

        tqdm.write(f"Training will take about {_duration(per_step * remaining)} more on this machine "
                   f"({per_step * 1000:.0f} ms per step, {remaining} steps to go, plus {evaluations} evaluation"
                   f"{'s' if evaluations > 1 else ''}).")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{max(1, round(seconds))} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
