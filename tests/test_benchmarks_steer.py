"""The steering benchmark's smoke run: it finishes, prints a table, and ends with one JSON line of figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_steer_benchmark_quick_run(tmp_path):
    # An empty clipkit home: the benchmark must also run where notebook 05 never saved a checkpoint.
    env = {**os.environ, "CLIPKIT_HOME": str(tmp_path)}
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "steer.py"), "--quick"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) > 2, "the table should precede the JSON line"
    figures = json.loads(lines[-1])
    assert figures["steps"] == 5 and figures["image_size_px"] == 64
    assert figures["run_seconds"] > 0 and figures["steps_per_second"] > 0
    assert figures["transfer_parameterisation"] == "stamps" and figures["transfer_steps"] == 5
    assert figures["transfer_run_seconds"] > 0
    assert "random-init" in figures["model"]
