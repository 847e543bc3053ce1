"""The command line: `python -m clipkit.train` (and torchrun's entry point).

    python -m clipkit.train --profile cpu --out runs/mini-clip
    torchrun --nproc_per_node=2 -m clipkit.train --profile ci --out runs/ddp
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from clipkit.config import ConfigError
from clipkit.io import BadFileError, report_bad_input
from clipkit.train import ddp
from clipkit.train.config import PRECISIONS, TrainConfig
from clipkit.train.loop import train
from clipkit.train.profiles import PROFILES, build_model, default_out_dir, resolve_profile
from clipkit.train.state import CheckpointMismatchError, read_train_state


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipkit.train",
        description="Train a mini-CLIP. A profile gives the model preset, data and settings; the flags override it.\n"
        "Under torchrun (--nproc_per_node=N) it trains with DDP, gathering features so the loss sees the global batch.\n"
        "A run resumes from the checkpoint in --out; the last line printed is a JSON summary.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="profiles:\n" + "\n".join(
            f"  {name:<4} {spec['preset']}, data {json.dumps(spec['data'])}, {spec['train'].get('steps')} steps"
            for name, spec in PROFILES.items()
        ) + "\n\nexamples:\n  python -m clipkit.train --profile cpu --out runs/cpu\n"
        "  python -m clipkit.train --preset tiny-cpu-vit --data shapes --steps 500 --out runs/vit\n"
        "  torchrun --nproc_per_node=2 -m clipkit.train --profile ci --out runs/ddp\n"
        "  python -m clipkit.data.shards write shapes shards/ --count 10000   # then:\n"
        "  torchrun --nproc_per_node=2 -m clipkit.train --data 'webdataset:shards/{000000..000009}.tar' --out runs/wds",
    )
    parser.add_argument("--profile", default="cpu", choices=sorted(PROFILES), help="starting point for every setting (default: cpu)")
    parser.add_argument("--preset", help="model preset from clipkit.config.PRESETS (default: the profile's)")
    parser.add_argument("--data", help="'shapes', 'fashion', 'shapes+fashion', a JSON spec, or WebDataset shards "
                        "'webdataset:DIR/{000000..000009}.tar' (default: the profile's)")
    parser.add_argument("--steps", type=int, help="optimizer steps (default: the profile's)")
    parser.add_argument("--batch-size", type=int, help="global batch size (default: the profile's)")
    parser.add_argument("--lr", type=float, help="peak learning rate (default: the profile's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and data (default: 0)")
    parser.add_argument("--out", type=Path, help="checkpoint folder (default: checkpoint_dir()/mini-clip, or mini-clip-seedN)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default: only at the end)")
    parser.add_argument("--eval-every", type=int, help="steps between evaluations, 0 for only at the end (default: the profile's)")
    parser.add_argument("--hard-negatives", action="store_true", help="add colour-swapped captions as negatives")
    parser.add_argument("--precision", choices=PRECISIONS, help="auto: bf16 autocast on CUDA, fp32 elsewhere (default: auto)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the towers")
    parser.add_argument("--device", help="cpu, cuda, mps (default: clipkit.get_device())")
    parser.add_argument("--data-workers", type=int, help="processes drawing (or reading shards) ahead of the step (default: the profile's)")
    parser.add_argument("--cpu-threads", type=int, help="torch threads on a CPU; 0 chooses by timing steps (default: 0)")
    parser.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--debug", action="store_true", help="on bad input, show the full traceback")
    return parser


def _profile_from_args(args) -> dict:
    """The chosen profile with --preset and --data applied (another preset drops the profile's model overrides)."""
    profile = dict(resolve_profile(args.profile))
    profile["preset"] = args.preset or profile["preset"]
    if args.preset and args.preset != PROFILES[args.profile]["preset"]:
        profile["model"] = {}
    if args.data:
        profile["data"] = json.loads(args.data) if args.data.lstrip().startswith("{") else args.data
    return profile


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _main(args)
    except (BadFileError, ConfigError, CheckpointMismatchError) as error:  # a damaged or foreign out_dir, a bad config
        return report_bad_input(error, args.debug)


def _main(args: argparse.Namespace) -> int:
    from clipkit.env import get_device

    ddp.init_from_environment(args.device)
    rank, size = ddp.world()
    device = get_device(args.device)
    if device.type == "cuda" and size > 1:
        device = torch.device("cuda", torch.cuda.current_device())

    profile = _profile_from_args(args)
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                 "checkpoint_every": args.checkpoint_every, "eval_every": args.eval_every,
                 "precision": args.precision, "hard_negatives": args.hard_negatives or None,
                 "compile": args.compile or None, "data_workers": args.data_workers, "cpu_threads": args.cpu_threads}
    config = TrainConfig(**{**profile["train"], **{k: v for k, v in overrides.items() if v is not None}})
    model, data = build_model(profile, seed=args.seed)
    out_dir = args.out or default_out_dir(args.seed, args.profile)
    saved = read_train_state(out_dir) if not args.no_resume else None
    if saved is not None and rank == 0:
        print(f"resuming from step {saved['step']} in {out_dir}", file=sys.stderr, flush=True)
    history = train(model.to(device), data, config, out_dir=out_dir, resume=not args.no_resume,
                    progress=not args.no_progress, metadata={"profile": args.profile})
    if rank == 0:
        final = {k[5:]: round(v[-1], 4) for k, v in history.items() if k.startswith("eval/") and v}
        print(json.dumps({"step": history["step"][-1] if history["step"] else 0, "out": str(out_dir), **final}))
    ddp.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
