"""The app benchmark's smoke run: it starts the app, times it, prints a table and ends with one JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_app_latency_benchmark_quick_run():
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "app_latency.py"), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    assert len(lines) > 2, "the table should precede the JSON line"
    figures = json.loads(lines[-1])
    assert figures["requests"] == 10 and figures["labels"] == 36 and figures["image_size"] == 32
    # figures only, no timing comparisons: on a loaded machine any of them may spike
    assert figures["handler_p50_ms"] > 0 and 0 < figures["zero_shot_p50_ms"] <= figures["zero_shot_p90_ms"]
    assert figures["app_start_seconds"] > 0
    assert isinstance(figures["meets_targets"], bool)


@pytest.mark.slow
def test_app_latency_benchmark_takes_a_model_spec(tmp_path, tiny_open_clip):
    pytest.importorskip("transformers")
    from test_app import foreign_model_specs

    spec = foreign_model_specs(tmp_path, tiny_open_clip)["hf"]  # a transformers folder: the spec names it alone
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "app_latency.py"), "--quick", "--model", spec],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    figures = json.loads(completed.stdout.strip().splitlines()[-1])
    assert figures["model"] == spec and figures["image_size"] == 32 and figures["requests"] == 10
    assert (figures["target_p50_ms"], figures["target_start_seconds"]) == (100.0, 10.0)
    assert figures["zero_shot_p50_ms"] > 0 and figures["app_start_seconds"] > 0


def test_the_targets_follow_the_image_size():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from app_latency import targets_for
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    assert targets_for(32) == (100.0, 10.0) and targets_for(64) == (100.0, 10.0)
    assert targets_for(224) == (300.0, 15.0) and targets_for(336) == (300.0, 15.0)
