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
