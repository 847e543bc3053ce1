"""Steering speed: one 64 px run of 200 steps with the default SteerConfig, and one with the
setting of notebook 08's ablation (stamps painter, contrastive loss against the prompt's
alternatives, gentle views), whose search adds forward passes.

    python benchmarks/steer.py            # target: within 30 s on 2 CPU cores
    python benchmarks/steer.py --quick    # a few steps, seconds

The default setting steers notebook 05's model (profile cpu), the transfer setting notebook 08's
(profile cpu-where, whose CNN runs at full resolution); each is the saved checkpoint when it exists,
else a random-init MiniCLIP of that profile: the time per step does not depend on the weights, and
the output says which one ran. The first step is run untimed (it pays one-off costs such as torch's
lazy imports), then the whole run is timed. The machine's load average is printed beside the
figures, since on a shared machine it explains slow runs. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from clipkit.steer import GENTLE_VIEWS, SteerConfig, shapes_contrasts, steer


def load_model(profile: str, device: str):
    """(model, description): the checkpoint `load_or_train(profile)` would load if present, else a
    random-init MiniCLIP of the same profile (same architecture and tokenizer, untrained)."""
    from clipkit.checkpoint import load_checkpoint
    from clipkit.model import CONFIG_FILE
    from clipkit.train import build_model, default_out_dir

    folder = default_out_dir(0, profile)
    if (folder / CONFIG_FILE).exists():
        return load_checkpoint(folder, device=device), f"checkpoint {folder}"
    model, _ = build_model(profile)
    return model.to(device).eval(), f"random-init {profile}-profile MiniCLIP (no checkpoint found; timing does not depend on weights)"


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

    prompt = "a red star"
    settings = {  # name -> (config, negative prompts, the profile of the model it steers)
        "default": (SteerConfig(steps=args.steps, parameterisation=args.parameterisation), None, "cpu"),
        "transfer": (SteerConfig(steps=args.steps, parameterisation="stamps", loss="contrastive", **GENTLE_VIEWS),
                     shapes_contrasts(prompt), "cpu-where"),
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"steering '{prompt}' at {SteerConfig.image_size} px on {args.device}, {torch.get_num_threads()} threads, load {load:.2f}")
    print(f"{'setting':<10} {'painter':<8} {'loss':<12} {'views':>5} {'steps':>6} {'seconds':>8} {'steps/s':>8} {'loss first -> last':>20}  model")
    figures = {"image_size_px": SteerConfig.image_size, "torch_threads": torch.get_num_threads()}
    for name, (config, negatives, profile) in settings.items():
        model, description = load_model(profile, args.device)
        warm_up = SteerConfig(**{**config.__dict__, "steps": 1})
        steer(model, prompt, negative_prompts=negatives, config=warm_up)  # one-off costs (lazy imports) stay untimed
        began = time.perf_counter()
        result = steer(model, prompt, negative_prompts=negatives, config=config)
        seconds = time.perf_counter() - began
        prefix = "" if name == "default" else f"{name}_"
        figures.update({
            f"{prefix}model": description,
            f"{prefix}parameterisation": config.parameterisation,
            f"{prefix}steps": len(result.losses),
            f"{prefix}views_per_step": config.num_augmentations,
            f"{prefix}run_seconds": round(seconds, 3),
            f"{prefix}steps_per_second": round(len(result.losses) / seconds, 2),
            f"{prefix}first_loss": round(result.losses[0], 4),
            f"{prefix}last_loss": round(result.losses[-1], 4),
        })
        print(f"{name:<10} {config.parameterisation:<8} {config.loss:<12} {config.num_augmentations:>5} {len(result.losses):>6} "
              f"{seconds:>8.2f} {len(result.losses) / seconds:>8.2f} {result.losses[0]:>9.4f} -> {result.losses[-1]:.4f}  {description}")
    figures["load_average_1min"] = round(load, 2)
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
