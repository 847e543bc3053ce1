"""Training-step throughput: MiniCLIP against open_clip's CLIP built with the same config and weights.

A full step (both towers forward, CLIP's loss, backward, AdamW, the logit-scale clamp) on the same
batch for both models, timed in interleaved repeats so that load from other processes hits both
alike; the median of the repeats is reported. open_clip has no counterpart of our small CNN, so the
comparison uses a ViT preset (default: "tiny-cpu-vit", the CPU profile's ViT twin).

    python benchmarks/train_throughput.py                 # tiny-cpu-vit, batch 128
    python benchmarks/train_throughput.py --preset small-gpu --batch-size 256 --device cuda
    python benchmarks/train_throughput.py --quick         # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny-cpu-vit", help="a ViT preset of clipkit.model.PRESETS")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed repeats per model")
    parser.add_argument("--device", default=None, help="default: clipkit.get_device()")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
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
    steps = {
        "miniclip": lambda: _step_miniclip(ours, optimizers["miniclip"], images, tokens),
        "open_clip": lambda: _step_open_clip(theirs, optimizers["open_clip"], images, tokens),
    }
    for step in steps.values():  # warm-up: allocator, kernels, optimizer state
        step()
    seconds = {name: [] for name in steps}
    for _ in range(args.repeats):
        for name, step in steps.items():
            seconds[name].append(_time_steps(step, args.steps, device))
    rates = {name: args.batch_size * args.steps / statistics.median(times) for name, times in seconds.items()}
    ratio = rates["miniclip"] / rates["open_clip"]

    print(f"training-step throughput, preset {args.preset}, batch {args.batch_size}, {device}, "
          f"{torch.get_num_threads()} threads, load {os.getloadavg()[0]:.2f}")
    print(f"{'model':<12} {'images/s (median)':>18} {'min':>10} {'max':>10}")
    for name, times in seconds.items():
        per_repeat = [args.batch_size * args.steps / t for t in times]
        print(f"{name:<12} {rates[name]:>18.1f} {min(per_repeat):>10.1f} {max(per_repeat):>10.1f}")
    print(f"MiniCLIP / open_clip: {ratio:.2f}x  (loss gap at step 0: {loss_gap:.2e})")
    figures = {
        "preset": args.preset,
        "batch_size": args.batch_size,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "miniclip_images_per_second": round(rates["miniclip"], 2),
        "open_clip_images_per_second": round(rates["open_clip"], 2),
        "speedup_ratio": round(ratio, 3),
        "step0_loss_abs_diff": loss_gap,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
