"""``python -m clipkit.exercises generate [--check]``: write (or verify) tutorials/ from notebooks/."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from clipkit.exercises.generate import ROOT, generate, out_of_date


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipkit.exercises", description="Write or verify tutorials/, the exercise versions of notebooks/.")
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("generate", help="write tutorials/NN_name.ipynb from the solution markers in notebooks/")
    write.add_argument("--check", action="store_true", help="write nothing; exit 1 when tutorials/ is out of date")
    write.add_argument("--root", type=Path, default=ROOT, help="the repository (default: this checkout)")
    args = parser.parse_args(argv)

    if args.check:
        problems = out_of_date(args.root)
        for problem in problems:
            print(problem)
        if problems:
            print("tutorials/ is out of date: run `make tutorials`", file=sys.stderr)
        return 1 if problems else 0
    for path in generate(args.root):
        print(f"wrote {path.relative_to(args.root)}" if path.exists() else f"removed {path.relative_to(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
