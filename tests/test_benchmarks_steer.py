"""The steering benchmarks' smoke runs: each finishes, prints a table, and ends with one JSON line of figures."""

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

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
    # for a model that does not read places (the cpu and cpu-grid profiles): the same prompts, their places left out
    unplaced = [parse_shapes_prompt(prompt) for prompt in random_prompts(40, seed=3, places=False)]
    assert unplaced == [replace(p, position=None) for p in parsed]


def test_steer_benchmark_times_each_painter_on_a_model_spec(tmp_path, capsys):
    """`--model open_clip:NAME` (here a tiny random-init architecture registered for the test, 48 px
    input) times pixels, Fourier and strokes at the model's own input size, on the CPU."""
    open_clip = pytest.importorskip("open_clip")
    config = {"embed_dim": 32, "vision_cfg": {"image_size": 48, "patch_size": 16, "width": 32, "layers": 1, "head_width": 16},
              "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (tmp_path / "clipkit-bench-tiny.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from steer import REAL_SCALE_PAINTERS, main

    figures = main(["--model", "open_clip:clipkit-bench-tiny", "--quick", "--devices", "cpu", "--views", "2"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == figures
    assert figures["image_size_px"] == 48 and figures["steps"] == 2 and figures["views_per_step"] == 2 and figures["extrapolated"]
    for painter in REAL_SCALE_PAINTERS:
        per_step = figures[f"cpu_{painter}_seconds_per_step"]
        assert per_step > 0 and figures[f"cpu_{painter}_seconds_per_200_steps"] == pytest.approx(200 * per_step, abs=0.1)
