"""The steering benchmarks' smoke runs: each finishes, prints a table, and ends with one JSON line of figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_run(script: str, home: Path) -> tuple[list[str], dict]:
    """Run a benchmark's --quick in an empty clipkit home (no checkpoint of any notebook there):
    its output lines and the figures of its last line."""
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick"],
        capture_output=True, text=True, timeout=180, cwd=ROOT, env={**os.environ, "CLIPKIT_HOME": str(home)},
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) > 2, "the table should precede the JSON line"
    return lines, json.loads(lines[-1])


def test_steer_benchmark_quick_run(tmp_path):
    _, figures = _quick_run("steer.py", tmp_path)
    assert figures["steps"] == 5 and figures["image_size_px"] == 64
    assert figures["run_seconds"] > 0 and figures["steps_per_second"] > 0
    assert figures["transfer_parameterisation"] == "stamps" and figures["transfer_steps"] == 5
    assert figures["transfer_run_seconds"] > 0
    assert "random-init" in figures["model"] and "random-init" in figures["transfer_model"]


def test_steer_transfer_benchmark_quick_run(tmp_path):
    lines, figures = _quick_run("steer_transfer.py", tmp_path)
    assert figures["prompts"] == 2 and figures["steps"] == 5
    for setting in ("augmented", "plain"):
        assert 0 <= figures[f"{setting}_judge_fraction"] <= 1 and 0 <= figures[f"{setting}_oracle_fraction"] <= 1
        assert figures[f"{setting}_seconds_per_prompt"] > 0
    # the table has one row per prompt and setting, and the fractions are its verdicts counted
    rows = [line.split() for line in lines if line.endswith(tuple("0123456789")) and (" augmented " in line or " plain " in line)]
    assert len(rows) == 4
    judged = sum(row[-3] == "yes" for row in rows if "augmented" in row)
    assert figures["augmented_judge_fraction"] == judged / 2


def test_random_prompts_name_colour_and_shape_and_sometimes_size_and_place():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from steer_transfer import random_prompts

    from clipkit.steer.judges import parse_shapes_prompt

    prompts = random_prompts(40, seed=3)
    assert prompts == random_prompts(40, seed=3) and prompts != random_prompts(40, seed=4)
    parsed = [parse_shapes_prompt(prompt) for prompt in prompts]
    assert all(p.colour and p.shape for p in parsed)
    assert sum(p.size is not None for p in parsed) == 20 and sum(p.position is not None for p in parsed) == 20
