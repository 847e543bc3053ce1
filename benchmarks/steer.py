"""Steering speed: one 64 px run of 200 steps with the default SteerConfig.

    python benchmarks/steer.py            # target: within 30 s on 2 CPU cores
    python benchmarks/steer.py --quick    # a few steps, seconds

The model is notebook 05's checkpoint (`checkpoint_dir()/"mini-clip"`) when it exists, else a
random-init MiniCLIP of the same preset: the time per step does not depend on the weights, and the
output says which one ran. The first step is run untimed (it pays one-off costs such as torch's
lazy imports), then the whole run is timed. The machine's load average is printed beside the
figures, since on a shared machine it explains slow runs. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from clipkit.steer import SteerConfig, steer


def load_model(device: str):
    """(model, description): the notebook-05 checkpoint if present, else a random-init tiny-cpu MiniCLIP."""
    from clipkit.env import checkpoint_dir
    from clipkit.model import CONFIG_FILE, MiniCLIP, config_from_preset, load_model as load_checkpoint

    folder = checkpoint_dir() / "mini-clip"
    if (folder / CONFIG_FILE).exists():
        return load_checkpoint(folder, device=device), f"checkpoint {folder}"
    from clipkit.data import ShapesWorld
    from clipkit.tokenizer import WordTokenizer

    tokenizer = WordTokenizer.fit(ShapesWorld().sample(2000, seed=0).captions, context_length=24)
    torch.manual_seed(0)
    model = MiniCLIP(config_from_preset("tiny-cpu", tokenizer=tokenizer)).to(device).eval()
    return model, "random-init tiny-cpu MiniCLIP (no checkpoint found; timing does not depend on weights)"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=SteerConfig.steps, help="optimisation steps")
    parser.add_argument("--parameterisation", default=SteerConfig.parameterisation, help="pixels, fourier or strokes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="5 steps: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 5
    if args.threads:
        torch.set_num_threads(args.threads)

    model, description = load_model(args.device)
    config = SteerConfig(steps=args.steps, parameterisation=args.parameterisation)
    steer(model, "a red star", config=SteerConfig(steps=1, parameterisation=args.parameterisation))  # warm-up
    began = time.perf_counter()
    result = steer(model, "a red star", config=config)
    seconds = time.perf_counter() - began
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")

    figures = {
        "image_size_px": config.image_size,
        "steps": len(result.losses),
        "parameterisation": config.parameterisation,
        "views_per_step": config.num_augmentations,
        "run_seconds": round(seconds, 3),
        "steps_per_second": round(len(result.losses) / seconds, 2),
        "torch_threads": torch.get_num_threads(),
        "load_average_1min": round(load, 2),
        "first_loss": round(result.losses[0], 4),
        "last_loss": round(result.losses[-1], 4),
        "model": description,
    }
    print(f"steering {config.image_size} px, {config.parameterisation}, {config.num_augmentations} views/step on {args.device}")
    print(f"model: {description}")
    print(f"{'steps':>6} {'seconds':>8} {'steps/s':>8} {'threads':>8} {'load 1m':>8} {'loss first -> last':>20}")
    print(f"{figures['steps']:>6} {seconds:>8.2f} {figures['steps_per_second']:>8.2f} {figures['torch_threads']:>8} "
          f"{load:>8.2f} {result.losses[0]:>9.4f} -> {result.losses[-1]:.4f}")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
