"""The training loop: draw the step's batch, take the step, log, evaluate, checkpoint; resume exactly.

Every step's batch depends only on (seed, step) (`clipkit.data.stream`) and the augmentation on
(seed, step, rank), so a run resumed from a checkpoint (`clipkit.train.state`) draws what the
uninterrupted run would have, and ends with the same weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clipkit.data.shards import ShardData
from clipkit.data.stream import Batch, as_training_data, step_batches
from clipkit.evaluate import evaluate_training_data
from clipkit.train.config import RESUME_FREE_FIELDS, TrainConfig
from clipkit.train.ddp import gather_objects, rank_zero_says, wait_for_everyone, world
from clipkit.train.state import (
    check_resumable,
    model_config,
    read_train_state,
    restore_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from clipkit.train.step import (
    FrozenTextCache,
    Towers,
    autocast,
    batch_to_input,
    build_optimizer,
    compute_loss,
    step_seed,
    update,
)

HISTORY_KEYS = ("step", "loss", "accuracy", "logit_scale", "temperature", "lr", "images_per_second", "eval_step",
                "eval_train_seconds")


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class RunState:
    """Where a run stands: what a checkpoint saves besides weights, optimizer and RNG."""

    step: int = 0  # optimizer steps taken
    train_seconds: float = 0.0  # time spent in steps, evaluation excluded
    history: dict[str, list] = field(default_factory=lambda: {key: [] for key in HISTORY_KEYS})


def train(
    model: nn.Module,
    data,
    config: TrainConfig | None = None,
    out_dir: str | Path | None = None,
    resume: bool = True,
    progress: bool = True,
    until_step: int | None = None,
    metadata: dict[str, Any] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, list]:
    """Train `model` in place on `data`; returns the history (a dict of lists: step, loss,
    accuracy, logit_scale, temperature, lr, images_per_second; and eval_step, eval_train_seconds
    and one "eval/<metric>" list per evaluation metric).

    `data`: a `TrainingData`, a spec for `build_data`, a `ShapesWorld` or a `CaptionedImages` (pairs
    held in memory, whose labels, when given, mark the images each caption is a positive for).
    With `out_dir`, checkpoints are written every `config.checkpoint_every` steps and at the end, and
    a checkpoint already there is resumed (`resume=False` starts over). `until_step` stops early
    (and saves) at that step, as if interrupted, so a run can be split across sessions.
    `metadata` is stored in config.json with the metrics (the app's model card).
    `on_step(step, train_seconds)` is called after every step (and its checkpoint, if any).
    """
    config = config or TrainConfig()
    rank, size = world()
    if config.batch_size % size:
        raise ValueError(f"batch_size {config.batch_size} must divide evenly over {size} processes")
    device = model.device
    data = data if isinstance(data, ShardData) else as_training_data(data, model.image_size)
    if config.data_workers == 0 and not isinstance(data, ShardData):
        data.to(device)  # drawn on the training device; worker processes draw on the CPU (no CUDA in forked workers)
    optimizer, scheduler = build_optimizer(model, config)
    out_dir = Path(out_dir) if out_dir is not None else None
    run = _resume(out_dir, model, optimizer, scheduler, config, data.spec) if out_dir is not None and resume else None
    run = run or RunState()
    model.train()
    towers = torch.compile(Towers(model)) if config.compile else Towers(model)
    text_cache = FrozenTextCache(model) if model.text_tower_frozen else None
    stop = min(config.steps, until_step if until_step is not None else config.steps)
    bar = _progress_bar(config.steps, run.step) if progress and rank == 0 else None
    throughput = _Throughput()
    governor = ThreadGovernor(config.cpu_threads) if device.type == "cpu" else None
    share = config.batch_size // size
    local = isinstance(data, ShardData)  # each process reads its own shards: its batch is its share
    batches = _shard_batches(data, share, config, run.step) if local else step_batches(
        data, config.batch_size, config.seed, run.step, stop, config.hard_negatives, config.attribute_weight > 0,
        config.data_workers)
    try:
        while run.step < stop:
            if governor is not None:
                governor.threads()
            started = time.perf_counter()
            batch = next(batches)
            seed = step_seed(config.seed, run.step, rank) if config.augment else None
            images = batch_to_input(model, batch.images if local else batch.images[rank * share : (rank + 1) * share], seed)
            with autocast(device, config.precision):
                out = compute_loss(model, batch, config, images, towers, text_cache)
            # Reading the loss waits for the GPU; on CUDA it is read only when logging, evaluating or saving
            # (always before anything is written), so the CPU can queue the next step meanwhile.
            if device.type != "cuda" or (run.step + 1) % config.log_every == 0:
                _check_finite(out["loss"], run.step, out_dir, config)
            update(model, optimizer, scheduler, out["loss"], config.grad_clip)
            run.step += 1
            elapsed = time.perf_counter() - started
            run.train_seconds += elapsed
            if governor is not None:
                governor.timed(elapsed)
            throughput.count(config.batch_size)

            done = run.step == config.steps or _out_of_time(run.train_seconds, config.time_limit_seconds)
            evaluating = (config.eval_every and run.step % config.eval_every == 0) or done
            saving = done or run.step == stop or (config.checkpoint_every and run.step % config.checkpoint_every == 0)
            if run.step % config.log_every == 0 or done:
                _log(run, out, optimizer, throughput.rate(), bar)
            if bar is not None:
                bar.update(1)
            if evaluating or saving:
                _check_finite(out["loss"], run.step - 1, out_dir, config)
            if evaluating:
                _evaluate_into(run, model, data, config.eval_size)
            if saving and out_dir is not None:
                if rank == 0:
                    position = _shard_position(data, run.step, share, config) if local else None
                    _save(out_dir, model, optimizer, run, config, data.spec, metadata, finished=done, position=position)
                # Every process waits for the checkpoint: one that returned early could otherwise resume
                # (`train` again on the same folder) from a checkpoint rank 0 has not written yet, and the
                # processes would then run different steps and wait on each other's collectives for ever.
                wait_for_everyone()
            if on_step is not None:
                on_step(run.step, run.train_seconds)
            if done:
                break
    finally:
        if bar is not None:
            bar.close()
        if governor is not None:
            governor.restore()
    return run.history


# ---------------------------------------------------------------------------------------------
# The parts of the loop


def _shard_position(data: ShardData, step: int, share: int, config: TrainConfig) -> dict:
    """Where each process stands in its shards, for people and for checks: a resumed run finds its
    place from the step alone (see `clipkit.data.shards`), given the same number of data workers."""
    _, size = world()
    return {"local_batches_read": step, "samples_read_per_process": step * share,
            "epoch": step * config.batch_size // max(len(data), 1), "processes": size,
            "data_workers": config.data_workers, "samples_skipped_rank0": len(data.skipped)}


def _shard_batches(data: ShardData, share: int, config: TrainConfig, start: int):
    """Global batches from shards: this process's images, every process's captions (in rank order,
    which is how `compute_loss` finds its own); captions equal up to case describe each other's images."""
    rank, size = world()
    for images, captions in data.local_batches(share, config.seed, start, rank, size, config.data_workers):
        everyone = [caption for part in gather_objects(captions) for caption in part]
        yield Batch(images, everyone, [caption.lower() for caption in everyone])


def _resume(out_dir: Path, model, optimizer, scheduler, config: TrainConfig, data_spec) -> RunState | None:
    """Put the checkpoint in `out_dir` back (weights, optimizer, schedule, RNG) and return its
    progress; None when there is none. A checkpoint of another run is refused."""
    state = read_train_state(out_dir)
    if state is None:
        return None
    check_resumable(model, config, data_spec, state, out_dir, RESUME_FREE_FIELDS)
    restore_checkpoint(out_dir, model, optimizer, state)
    scheduler.last_epoch = state["step"]
    set_rng_state(state["rng"])
    return RunState(state["step"], state["train_seconds"], state["history"])


def _save(out_dir: Path, model, optimizer, run: RunState, config: TrainConfig, data_spec, metadata, finished: bool,
          position: dict | None = None) -> None:
    """A checkpoint of the run so far, with a model card of its latest metrics in config.json."""
    record = {
        "step": run.step, "finished": finished, "train_seconds": run.train_seconds, "history": run.history,
        "rng": rng_state(), "train_config": asdict(config), "data": data_spec, "model_config": model_config(model),
    }
    if position is not None:
        record["data_position"] = position
    metrics = {key[5:]: values[-1] for key, values in run.history.items() if key.startswith("eval/") and values}
    card = {**(metadata or {}), "data": data_spec, "steps": run.step, "finished": finished, "seed": config.seed,
            "train_seconds": round(run.train_seconds, 1), "metrics": metrics}
    save_checkpoint(out_dir, model, optimizer, record, card)


def _check_finite(loss: torch.Tensor, step: int, out_dir: Path | None, config: TrainConfig) -> None:
    if bool(torch.isfinite(loss)):
        return
    saved = read_train_state(out_dir) if out_dir is not None else None
    kept = f"the last good checkpoint (step {saved['step']}) in {out_dir} is intact" if saved else "no checkpoint was written"
    raise NonFiniteLossError(
        f"the loss became {loss.item()} at step {step}; {kept}. Lower the learning rate ({config.lr}), "
        "keep gradient clipping on, or check the batch for bad images or captions."
    )


def _log(run: RunState, out: dict[str, torch.Tensor], optimizer, images_per_second: float, bar) -> None:
    loss = out["loss"].item()  # waits for the GPU: the throughput window's time is now real
    scale, accuracy = float(out["logit_scale"]), float(out["accuracy"])
    entries = {"step": run.step, "loss": loss, "accuracy": accuracy, "logit_scale": scale,
               "temperature": math.exp(-scale), "lr": optimizer.param_groups[0]["lr"],
               "images_per_second": images_per_second}
    for key, value in entries.items():
        run.history[key].append(value)
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.2f}", img_s=f"{images_per_second:.0f}")


def _evaluate_into(run: RunState, model, data, size: int) -> None:
    run.history["eval_step"].append(run.step)
    run.history["eval_train_seconds"].append(run.train_seconds)  # time to reach these metrics, evaluation excluded
    for key, value in evaluate_training_data(model, data, size).items():
        run.history.setdefault(f"eval/{key}", []).append(value)


class _Throughput:
    """Images per second since the last reading (a logging window, evaluation and saving included)."""

    def __init__(self):
        self.start, self.images = time.perf_counter(), 0

    def count(self, images: int) -> None:
        self.images += images

    def rate(self) -> float:
        now = time.perf_counter()
        rate = self.images / max(now - self.start, 1e-9)
        self.start, self.images = now, 0
        return rate


def _progress_bar(total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="training", unit="step", dynamic_ncols=True)


def _out_of_time(train_seconds: float, limit: float | None) -> bool:
    """Whether the time budget is spent; under DDP every process follows rank 0's clock, so all stop together."""
    return limit is not None and rank_zero_says(train_seconds >= limit)


class ThreadGovernor:
    """Chooses torch's CPU thread count by timing steps, and chooses again as the load changes.

    Why: each op of a step is an OpenMP parallel region ending in a barrier. When another process
    holds one of the cores, every barrier waits for a descheduled thread (a scheduler slice, not
    microseconds), and a step of ~400 ops on 2 cores ran several times slower with 2 threads than
    with 1 (benchmarks/train_throughput.py --load). Which count is best depends on a load nobody
    knows in advance, so the governor times `probe` steps at each candidate count, keeps the
    fastest for `hold` steps, then looks again (holding twice as long when nothing changed).
    On a quiet machine that is all cores, as torch would pick.
    """

    def __init__(self, threads: int = 0, probe: int = 2, hold: int = 40):
        self.most = torch.get_num_threads()  # the caller's setting is the ceiling and is put back by restore()
        self.candidates = [threads] if threads else sorted({self.most, max(1, self.most // 2), 1}, reverse=True)
        self.probe, self.base_hold, self.hold = probe, hold, hold
        self.chosen = self.candidates[0]
        self._start_round()

    def _start_round(self) -> None:
        self.queue = list(self.candidates) if len(self.candidates) > 1 else []  # counts still to time
        self.timings: dict[int, float] = {}  # count -> seconds of its timed probe steps
        self.steps = 0  # steps at the current setting: this candidate's probe, or since the choice

    def threads(self) -> int:
        """Sets the count for the next step in torch and returns it."""
        wanted = self.queue[0] if self.queue else self.chosen
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)
        return wanted

    def timed(self, seconds: float) -> None:
        """The step just taken at `threads()` took `seconds`."""
        self.steps += 1
        if not self.queue:
            if len(self.candidates) > 1 and self.steps >= self.hold:
                self._start_round()
            return
        if self.steps > 1:  # the first step after a switch wakes the thread pool: not timed
            self.timings[self.queue[0]] = self.timings.get(self.queue[0], 0.0) + seconds
        if self.steps == self.probe + 1:
            self.queue.pop(0)
            self.steps = 0
            if not self.queue:
                best = min(self.timings, key=self.timings.get)
                self.hold = min(8 * self.base_hold, 2 * self.hold) if best == self.chosen else self.base_hold
                self.chosen = best

    def restore(self) -> None:
        torch.set_num_threads(self.most)
