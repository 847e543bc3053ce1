"""Does steering transfer? Steer random shapes-world prompts with one checkpoint and judge each
result twice: by a checkpoint trained independently (seed + 1) and by the pixel oracle.

Notebook 08 measures this on its 14 hand-picked prompts; this draws fresh ones (every colour and
shape, half of them with a size, half with a place), so the figure is not tuned to a list.
Settings: the stamps painter with the contrastive loss, through gentle augmented views and through
one plain view.

    python benchmarks/steer_transfer.py              # 30 prompts; target: both judges >= 90% with views
    python benchmarks/steer_transfer.py --quick      # ci profile, 2 prompts, 5 steps: seconds

Is a robust model harder to fool? Steer and judge with models of the randomised world (`cpu`,
notebook 05's since issue 17) and of the grid world (`cpu-grid`), the same prompts (no places:
neither profile trains to read them):

    python benchmarks/steer_transfer.py --profile cpu
    python benchmarks/steer_transfer.py --profile cpu-grid

Models come from `load_or_train(profile, seed)`, so the notebooks' checkpoints are reused (the
cpu-where profile trains about ten minutes per seed on one CPU thread when they are missing,
cpu about five minutes per seed on two).
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's clipkit, installed or not

from clipkit.data.shapes import COLOURS, SHAPES, SIZES, WHERE_PHRASES
from clipkit.steer import GENTLE_VIEWS, SteerConfig, oracle_agrees, pixel_oracle, shapes_contrasts, shapes_prompt, steer, zero_shot_judge


def random_prompts(count: int, seed: int, places: bool = True) -> list[str]:
    """Shapes-world prompts: every other one names a size, and two in four a place (none without `places`)."""
    rng = random.Random(seed)
    prompts = []
    for index in range(count):
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        size = rng.choice(list(SIZES)) if index % 2 else None
        place = rng.choice(list(WHERE_PHRASES)) if index % 4 in (1, 2) else None
        prompts.append(shapes_prompt(colour, shape, size, place if places else None))
    return prompts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu-where", help="training profile of both checkpoints (e.g. cpu, the randomised "
                        "world, against cpu-grid: is a robust model harder to fool?)")
    parser.add_argument("--places", choices=("auto", "yes", "no"), default="auto",
                        help="prompts that name a place; auto: when the profile trains its model to read places (cpu-where)")
    parser.add_argument("--prompts", type=int, default=30, help="how many random prompts")
    parser.add_argument("--steps", type=int, default=SteerConfig.steps, help="steering steps per prompt")
    parser.add_argument("--restarts", type=int, default=1, help="SteerConfig.restarts")
    parser.add_argument("--seed", type=int, default=0, help="steering checkpoint's seed (the judge's is seed + 1) and the prompts' seed")
    parser.add_argument("--device", default=None, help="default: the auto-detected device")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--quick", action="store_true", help="ci profile trained 30 steps in a temporary folder, 2 prompts, 5 steps")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from clipkit.env import get_device
    from clipkit.train import load_or_train

    device = torch.device(args.device) if args.device else get_device()
    if args.quick:
        args.profile, args.prompts, args.steps = "ci", 2, 5
        scratch = Path(tempfile.mkdtemp(prefix="clipkit-steer-transfer-"))
        models = [load_or_train("ci", out_dir=scratch / f"seed{s}", seed=s, steps=30, device=device, progress=False)
                  for s in (args.seed, args.seed + 1)]
    else:
        models = [load_or_train(args.profile, seed=s, device=device, progress=False) for s in (args.seed, args.seed + 1)]
    steerer, judge = models
    from clipkit.train import PROFILES

    places = args.places == "yes" or (args.places == "auto" and "position" in PROFILES[args.profile]["data"].get("shapes", {}).get("attributes", []))
    prompts = random_prompts(args.prompts, args.seed, places)
    base = SteerConfig(parameterisation="stamps", loss="contrastive", steps=args.steps, restarts=args.restarts, **GENTLE_VIEWS)
    settings = {"augmented": base, "plain": replace(base, augment=False)}

    print(f"{len(prompts)} prompts{'' if places else ' (no places)'}, profile {args.profile}, {args.steps} steps, restarts {args.restarts}, "
          f"{device}, {torch.get_num_threads()} threads")
    print(f"{'prompt':<36} {'setting':<10} {'judge':>6} {'oracle':>7} {'seconds':>8}")
    tally = {name: {"judge": 0, "oracle": 0, "seconds": 0.0} for name in settings}
    for prompt in prompts:
        for name, config in settings.items():
            began = time.perf_counter()
            result = steer(steerer, prompt, negative_prompts=shapes_contrasts(prompt), config=config)
            seconds = time.perf_counter() - began
            judged = zero_shot_judge(judge, result.image, prompt)["correct"]
            read = oracle_agrees(prompt, pixel_oracle(result.image))
            counts = tally[name]
            counts["judge"] += judged
            counts["oracle"] += read
            counts["seconds"] += seconds
            print(f"{prompt:<36} {name:<10} {'yes' if judged else 'NO':>6} {'yes' if read else 'NO':>7} {seconds:>8.1f}")

    print(f"\n{'setting':<10} {'judge':>7} {'oracle':>7} {'s/prompt':>9}")
    figures: dict = {"prompts": len(prompts), "profile": args.profile, "places": places, "steps": args.steps, "restarts": args.restarts,
                     "device": str(device), "torch_threads": torch.get_num_threads()}
    for name, counts in tally.items():
        judge_rate, oracle_rate = counts["judge"] / len(prompts), counts["oracle"] / len(prompts)
        print(f"{name:<10} {judge_rate:>7.0%} {oracle_rate:>7.0%} {counts['seconds'] / len(prompts):>9.1f}")
        figures.update({f"{name}_judge_fraction": round(judge_rate, 4), f"{name}_oracle_fraction": round(oracle_rate, 4),
                        f"{name}_seconds_per_prompt": round(counts["seconds"] / len(prompts), 2)})
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    main()
