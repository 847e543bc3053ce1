"""Training-step throughput: MiniCLIP against open_clip's CLIP built with the same config and weights.

A full step (both towers forward, CLIP's loss, backward, AdamW, the logit-scale clamp) on the same
batch for both models, timed in interleaved repeats so that load from other processes hits both
alike; the median of the repeats is reported. open_clip has no counterpart of our small CNN, so the
comparison uses a ViT preset (default: "tiny-cpu-vit", the CPU profile's ViT twin).

MiniCLIP's step runs as `clipkit.train` runs it on a CPU: under `ThreadGovernor`, which picks the
thread count by timing steps (its first choice is made in the warm-up); open_clip's step runs with
torch's default threads, as open_clip's own training would. Both report achieved GFLOP/s (the
step's FLOPs counted by torch.utils.flop_counter) against a matmul peak measured in the same run.
`--load N` starts N CPU-bound processes beside the benchmark (a busy loop each), so the figure
"under load" is reproducible; they are stopped at the end.

    python benchmarks/train_throughput.py                 # tiny-cpu-vit, batch 128
    python benchmarks/train_throughput.py --preset small-gpu --batch-size 256 --device cuda
    python benchmarks/train_throughput.py --load 1        # with one CPU-bound process beside it
    python benchmarks/train_throughput.py --quick         # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch


def _step_miniclip(model, optimizer, images, tokens):
    from clipkit.loss import clip_loss

    logits_per_image, logits_per_text = model(images, tokens)
    loss = clip_loss(logits_per_image, logits_per_text)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.clamp_logit_scale_()
    return loss


def _step_open_clip(model, optimizer, images, tokens):
    from clipkit.loss import clip_loss

    image_features, text_features, scale = model(images, tokens)  # both normalised, scale = exp(logit_scale)
    logits_per_image = scale * image_features @ text_features.T
    loss = clip_loss(logits_per_image, logits_per_image.T)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, 4.6052)
    return loss


def _time_steps(step, steps: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _matmul_peak_gflops(device: torch.device, threads: int, seconds: float = 0.5) -> float:
    """fp32 GFLOP/s of a square matmul loop at `threads` threads: the ceiling the steps are measured against."""
    size = 1024
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a @ b  # warm-up
        count, elapsed = 1, _time_steps(lambda: a @ b, 1, device)
        while elapsed < seconds:  # more matmuls until the timing is long enough to trust
            count *= 2
            elapsed = _time_steps(lambda: a @ b, count, device)
        return 2 * size**3 * count / elapsed / 1e9
    finally:
        torch.set_num_threads(before)


def _flops(step) -> int:
    """FLOPs of one step (matmuls, attention and convolutions, forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def _start_load(processes: int) -> list[subprocess.Popen]:
    """CPU-bound neighbours: a busy Python loop each, at this process's priority."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny-cpu-vit", help="a ViT preset of clipkit.model.PRESETS")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed repeats per model")
    parser.add_argument("--device", default=None, help="default: clipkit.get_device()")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--load", type=int, default=0, help="CPU-bound processes to run beside the benchmark (default 0)")
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_size, args.steps, args.repeats = 16, 2, 2
    if args.threads:
        torch.set_num_threads(args.threads)

    from clipkit import get_device
    from clipkit.data.shapes import ShapesConfig, ShapesWorld
    from clipkit.data.transforms import images_to_model_input
    from clipkit.interop import openclip_from_miniclip
    from clipkit.config import config_from_preset
    from clipkit.model import MiniCLIP
    from clipkit.data.stream import ShapesSource, TrainingData
    from clipkit.train import fit_tokenizer, parameter_groups

    device = get_device(args.device)
    overrides = {"vision": {"width": 64, "layers": 1, "heads": 2}, "text": {"width": 64, "layers": 1, "heads": 2}} if args.quick else {}
    probe = config_from_preset(args.preset)
    world = ShapesWorld(ShapesConfig(image_size=max(32, probe.vision.image_size)))
    tokenizer = fit_tokenizer(TrainingData([ShapesSource(world=world)]))
    torch.manual_seed(0)
    ours = MiniCLIP(config_from_preset(args.preset, tokenizer=tokenizer, **overrides)).to(device).train()
    theirs = openclip_from_miniclip(ours).to(device).train()

    sample = world.sample(args.batch_size, seed=0)
    images = images_to_model_input(sample.images, ours.image_size).to(device)
    tokens = tokenizer(sample.captions).to(device)
    with torch.no_grad():  # same weights, same batch: both must compute the same loss before timing
        li, lt = ours(images, tokens)
        fi, ft, scale = theirs(images, tokens)
        from clipkit.loss import clip_loss

        loss_gap = abs(clip_loss(li, lt).item() - clip_loss(scale * fi @ ft.T).item())
    optimizers = {
        name: torch.optim.AdamW(parameter_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.98), eps=1e-6)
        for name, model in (("miniclip", ours), ("open_clip", theirs))
    }
    from clipkit.train.loop import ThreadGovernor

    default_threads = torch.get_num_threads()
    governor = ThreadGovernor()

    def ours_step():
        governor.threads()
        started = time.perf_counter()
        _step_miniclip(ours, optimizers["miniclip"], images, tokens)
        governor.timed(time.perf_counter() - started)

    def theirs_step():
        torch.set_num_threads(default_threads)
        _step_open_clip(theirs, optimizers["open_clip"], images, tokens)

    steps = {"miniclip": ours_step, "open_clip": theirs_step}
    flops = {"miniclip": _flops(ours_step), "open_clip": _flops(theirs_step)}  # also the first warm-up step
    load = _start_load(args.load)
    try:
        time.sleep(0.5 if load else 0)  # let the neighbours reach full speed
        # Warm-up (allocator, kernels, optimizer state) long enough for the governor's first choice.
        for _ in range(len(governor.candidates) * (governor.probe + 1)):
            for step in steps.values():
                step()
        seconds = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, step in steps.items():
                seconds[name].append(_time_steps(step, args.steps, device))
        threads_used = {"miniclip": governor.threads(), "open_clip": default_threads}
        peaks = {n: _matmul_peak_gflops(device, n, 0.1 if args.quick else 0.5) for n in set(threads_used.values())}
        load_average = os.getloadavg()[0]
    finally:
        for process in load:
            process.kill()
            process.wait()
    torch.set_num_threads(default_threads)
    rates = {name: args.batch_size * args.steps / statistics.median(times) for name, times in seconds.items()}
    gflops = {name: flops[name] * rates[name] / args.batch_size / 1e9 for name in steps}
    ratio = rates["miniclip"] / rates["open_clip"]

    print(f"training-step throughput, preset {args.preset}, batch {args.batch_size}, {device}, "
          f"{default_threads} threads available, {args.load} CPU-bound neighbours, load {load_average:.2f}")
    print(f"{'model':<12} {'threads':>8} {'images/s (median)':>18} {'min':>10} {'max':>10} {'GFLOP/s':>9} "
          f"{'matmul peak':>12} {'of peak':>8}")
    for name, times in seconds.items():
        per_repeat = [args.batch_size * args.steps / t for t in times]
        peak = peaks[threads_used[name]]
        print(f"{name:<12} {threads_used[name]:>8} {rates[name]:>18.1f} {min(per_repeat):>10.1f} "
              f"{max(per_repeat):>10.1f} {gflops[name]:>9.1f} {peak:>12.1f} {gflops[name] / peak:>8.1%}")
    print(f"MiniCLIP / open_clip: {ratio:.2f}x  (loss gap at step 0: {loss_gap:.2e}; "
          f"GFLOP per step: {flops['miniclip'] / 1e9:.2f} vs {flops['open_clip'] / 1e9:.2f})")
    figures = {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": default_threads,
        "miniclip_threads": threads_used["miniclip"],
        "load_processes": args.load,
        "miniclip_images_per_second": round(rates["miniclip"], 2),
        "open_clip_images_per_second": round(rates["open_clip"], 2),
        "speedup_ratio": round(ratio, 3),
        "miniclip_gflops_per_second": round(gflops["miniclip"], 2),
        "open_clip_gflops_per_second": round(gflops["open_clip"], 2),
        "matmul_peak_gflops_per_second": round(peaks[default_threads], 2),
        "miniclip_peak_fraction": round(gflops["miniclip"] / peaks[threads_used["miniclip"]], 4),
        "open_clip_peak_fraction": round(gflops["open_clip"] / peaks[default_threads], 4),
        # Each model's own count: MiniCLIP skips the text columns that are padding in every row, so
        # its step does fewer FLOPs than open_clip's on the same batch.
        "miniclip_flops_per_step": flops["miniclip"],
        "open_clip_flops_per_step": flops["open_clip"],
        "step0_loss_abs_diff": loss_gap,
        "load_average_1min": round(load_average, 2),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
