"""The one GPU check: train the gpu profile for at most two minutes, then report what it reached.

Prints held-out shapes accuracy, Fashion-MNIST zero-shot top-1 (prompt ensemble), images/s and
MFU (FLOPs of one training step counted by torch's FlopCounterMode, times steps per second,
over the GPU's dense bf16 peak), runs the tests marked `gpu`, and ends with one JSON line.
Needs no open_clip and no internet: Fashion-MNIST comes from --fashion-dir (or
$CLIPKIT_FASHION_MNIST_DIR), a folder holding the four *-idx?-ubyte.gz files.

    python benchmarks/gpu_check.py --fashion-dir .clipkit/data/fashion-mnist
    python benchmarks/gpu_check.py --quick        # CPU smoke run of the same path (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's clipkit, installed or not
# Dense bf16 tensor-core peaks (FLOP/s), from NVIDIA's data sheets (SXM parts).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}
TARGETS = {"heldout_vs_heldout": 0.97, "fashion_top1": 0.85}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in name), None)


def flops_per_step(model, data, config) -> int:
    """FLOPs of one forward and backward pass of a training step (the optimizer's are negligible)."""
    from torch.utils.flop_counter import FlopCounterMode

    from clipkit.train.step import autocast, batch_to_input, compute_loss

    device = next(model.parameters()).device
    batch = data.batch(config.batch_size, config.seed, 0, config.hard_negatives, config.attribute_weight > 0)
    images = batch_to_input(model, batch.images)
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(device, config.precision):
            loss = compute_loss(model, batch, config, images)["loss"]
        loss.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def run_gpu_tests() -> dict:
    """`pytest -m gpu` on the test files that hold gpu tests (collecting the others could need
    open_clip or gradio, which the GPU machine may lack)."""
    started = time.perf_counter()
    files = sorted(str(path) for path in (ROOT / "tests").glob("test_*.py") if "mark.gpu" in path.read_text())
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *files],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    tail = completed.stdout.strip().splitlines()[-1:] or [""]
    print("pytest -m gpu:", tail[0])
    return {"gpu_tests_returncode": completed.returncode, "gpu_tests_summary": tail[0],
            "gpu_tests_seconds": round(time.perf_counter() - started, 1)}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fashion-dir", help="folder with Fashion-MNIST's *-idx?-ubyte.gz files")
    parser.add_argument("--time-limit", type=float, default=110.0, help="seconds of training at most")
    parser.add_argument("--compile", action="store_true", help="torch.compile the towers")
    parser.add_argument("--workers", type=int, default=None, help="data worker processes (default: cores - 2, at most 12)")
    parser.add_argument("--no-tests", action="store_true", help="skip `pytest -m gpu`")
    parser.add_argument("--quick", action="store_true", help="CPU smoke run: the ci profile, a few steps")
    args = parser.parse_args(argv)
    if args.fashion_dir:
        os.environ["CLIPKIT_FASHION_MNIST_DIR"] = str(Path(args.fashion_dir).resolve())

    from clipkit import get_device
    from clipkit.train import PROFILES, TrainConfig, build_model, train

    device = get_device("cpu" if args.quick else None)
    if device.type != "cuda" and not args.quick:
        print("no CUDA device: run with --quick for the CPU smoke path", file=sys.stderr)
        return {}
    profile = "ci" if args.quick else "gpu"
    spec = PROFILES[profile]
    workers = args.workers if args.workers is not None else max(0, min(12, (os.cpu_count() or 2) - 2))
    settings = {**spec["train"], "time_limit_seconds": args.time_limit, "compile": args.compile,
                "data_workers": 0 if args.quick else workers, "eval_every": 0}
    if args.quick:
        settings.update(steps=10, time_limit_seconds=None)
    config = TrainConfig(**settings)
    print(f"torch {torch.__version__}, device {torch.cuda.get_device_name(device) if device.type == 'cuda' else device}, "
          f"profile {profile}, data workers {config.data_workers}, compile {config.compile}")

    started = time.perf_counter()
    model, data = build_model(profile, seed=config.seed)
    model = model.to(device)
    setup_seconds = time.perf_counter() - started
    flops = flops_per_step(model, data, config)
    history = train(model, data, config, progress=not args.quick)
    train_seconds = history["eval_train_seconds"][-1]
    steady = history["images_per_second"][len(history["images_per_second"]) // 4 :] or history["images_per_second"]
    images_per_second = statistics.median(steady)
    steps_per_second = images_per_second / config.batch_size
    peak = peak_flops(device)
    mfu = flops * steps_per_second / peak if peak else None
    final = {key[5:]: value[-1] for key, value in history.items() if key.startswith("eval/")}

    print(f"{'steps':<28} {history['step'][-1]}")
    print(f"{'train seconds':<28} {train_seconds:.1f} (set-up {setup_seconds:.1f})")
    print(f"{'images/s (steady)':<28} {images_per_second:.0f}")
    print(f"{'GFLOP per step':<28} {flops / 1e9:.2f}")
    print(f"{'MFU (bf16 dense peak)':<28} {mfu:.2%}" if mfu is not None else f"{'MFU':<28} n/a (peak unknown for {device})")
    for key in ("heldout_vs_heldout", "heldout_vs_all", "seen", "fashion_top1"):
        if key in final:
            target = f"  (target {TARGETS[key]})" if key in TARGETS else ""
            print(f"{key:<28} {final[key]:.4f}{target}")
    figures = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "torch": torch.__version__,
        "profile": profile,
        "steps": history["step"][-1],
        "train_seconds": round(train_seconds, 1),
        "images_per_second": round(images_per_second, 1),
        "flops_per_step": flops,
        "mfu_fraction": round(mfu, 4) if mfu is not None else None,
        **{key: round(value, 4) for key, value in final.items()},
        "targets_met": {key: final.get(key, 0) >= target for key, target in TARGETS.items()} if not args.quick else None,
    }
    if not args.no_tests and not args.quick:
        figures.update(run_gpu_tests())
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
