"""The robustness benchmark's smoke runs: each finishes, prints the table, and ends with one JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipkit.data.shifts import SUITES

ROOT = Path(__file__).resolve().parents[1]


def _run(*arguments: str) -> tuple[list[str], dict]:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "robustness.py"), "--quick", *arguments],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    assert len(lines) > 2, "the table should precede the JSON line"
    return lines, json.loads(lines[-1])


@pytest.mark.slow  # a fresh interpreter importing torch, and a few training steps
def test_quick_run_reports_every_suite_seen_and_heldout():
    lines, figures = _run()
    for row in ["in_distribution", *SUITES]:
        for column in ("seen", "heldout", "heldout_vs_all"):
            assert 0.0 <= figures[f"{row}_{column}_top1"] <= 1.0
        assert any(line.startswith(row) for line in lines), f"{row} missing from the table"
    assert figures["train_seconds"] > 0 and figures["device"]
    assert isinstance(figures["targets_met"], bool)


@pytest.mark.slow
def test_old_and_new_world_side_by_side():
    lines, figures = _run("--data-variation", "grid,random", "--steps", "4")
    assert any("grid" in line and "random" in line for line in lines), "the two worlds side by side"
    for world in ("grid", "random"):
        assert 0.0 <= figures[f"{world}_combined_seen_top1"] <= 1.0 and figures[f"{world}_train_seconds"] > 0
