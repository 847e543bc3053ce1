"""Steering speed: one 64 px run of 200 steps with the default SteerConfig, and one with the
setting of notebook 08's ablation (stamps painter, contrastive loss against the prompt's
alternatives, gentle views), whose search adds forward passes.

    python benchmarks/steer.py            # target: within 30 s on 2 CPU cores
    python benchmarks/steer.py --quick    # a few steps, seconds

With `--model SPEC` (anything `clipkit.checkpoint.load_model_spec` reads: a checkpoint folder,
`open_clip:NAME[:TAG]`, `hf:ID-or-folder`) it instead times the pixels, Fourier and strokes painters
on that model at its own input size with the REAL_SCALE settings (random cutouts, as CLIPDraw and
VQGAN+CLIP steer), on the CPU and on CUDA when there is one:

    python benchmarks/steer.py --model open_clip:ViT-B-32           # random-init ViT-B/32, 224 px, 200 steps
    python benchmarks/steer.py --model open_clip:ViT-B-32 --steps 10 # 10 steps timed, 200 extrapolated

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
from dataclasses import replace

import torch

from clipkit.steer import GENTLE_VIEWS, REAL_SCALE, SteerConfig, shapes_contrasts, steer

REAL_SCALE_PAINTERS = ("pixels", "fourier", "strokes")
REFERENCE_STEPS = 200  # the run length the figures are given for (extrapolated when fewer steps are timed)


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


def time_real_scale(spec: str, steps: int, devices: list[str], views: int | None = None) -> dict:
    """Each painter of REAL_SCALE_PAINTERS steering the model `spec` names for `steps` steps at its
    input size, on each device: prints a table and returns the figures."""
    from clipkit.checkpoint import load_model_spec

    prompt = "an oil painting of a lighthouse at sunset"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    figures: dict = {"model": spec, "steps": steps, "torch_threads": torch.get_num_threads()}
    print(f"steering '{prompt}' with {spec}, {steps} steps timed, {torch.get_num_threads()} threads, load {load:.2f}")
    print(f"{'device':<7} {'painter':<8} {'size':>5} {'views':>5} {'s/step':>8} {'cpu s/step':>10} {f's/{REFERENCE_STEPS} steps':>12} {'loss first -> last':>20}")
    for device in devices:
        model, parsed = load_model_spec(spec, device=device)
        config = SteerConfig(**{**REAL_SCALE, "image_size": model.image_size, "num_augmentations": views or REAL_SCALE["num_augmentations"]},
                             steps=steps)
        figures.update({"image_size_px": model.image_size, "views_per_step": config.num_augmentations, "weights": parsed.describe()})
        for painter in REAL_SCALE_PAINTERS:
            run = replace(config, parameterisation=painter)
            steer(model, prompt, config=replace(run, steps=1))  # one-off costs stay untimed
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            began, began_cpu = time.perf_counter(), time.process_time()
            result = steer(model, prompt, config=run)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            per_step = (time.perf_counter() - began) / len(result.losses)
            # CPU seconds of this process per step (all its threads): on a shared machine the wall
            # time swells with the load, this much less, so it tells what a quiet run would take
            cpu_per_step = (time.process_time() - began_cpu) / len(result.losses)
            figures.update({f"{device}_{painter}_seconds_per_step": round(per_step, 4),
                            f"{device}_{painter}_process_cpu_seconds_per_step": round(cpu_per_step, 4),
                            f"{device}_{painter}_seconds_per_{REFERENCE_STEPS}_steps": round(per_step * REFERENCE_STEPS, 1)})
            print(f"{device:<7} {painter:<8} {model.image_size:>5} {config.num_augmentations:>5} {per_step:>8.3f} {cpu_per_step:>10.3f} "
                  f"{per_step * REFERENCE_STEPS:>12.1f} {result.losses[0]:>9.4f} -> {result.losses[-1]:.4f}")
        del model
    figures["extrapolated"] = steps != REFERENCE_STEPS
    figures["load_average_1min"] = round(load, 2)
    return figures


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=SteerConfig.steps, help="optimisation steps")
    parser.add_argument("--parameterisation", default=SteerConfig.parameterisation, help="pixels, fourier or strokes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--model", default=None, help="a model spec (open_clip:ViT-B-32, hf:FOLDER, a checkpoint folder): "
                        "time the pixels, Fourier and strokes painters on it at its own input size instead")
    parser.add_argument("--devices", default=None, help="with --model: comma-separated devices (default: cpu, and cuda when there is one)")
    parser.add_argument("--views", type=int, default=None, help="with --model: views per step (default: REAL_SCALE's)")
    parser.add_argument("--quick", action="store_true", help="5 steps (2 with --model): a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 2 if args.model else 5
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
        figures = time_real_scale(args.model, args.steps, devices, args.views)
        print(json.dumps(figures))
        return figures

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
