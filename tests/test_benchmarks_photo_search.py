"""The photo-search benchmark's smoke run: it finishes, prints a table, and ends with one JSON line of figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_photo_search_benchmark_quick_run(tmp_path):
    env = dict(os.environ, CLIPKIT_CHECKPOINT_DIR=str(tmp_path / "checkpoints"), OMP_NUM_THREADS="1")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "photo_search.py"), "--quick", "--device", "cpu"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) > 2, "the table should precede the JSON line"
    figures = json.loads(lines[-1])
    assert figures["images"] == 200 and figures["images_indexed_per_second"] > 0
    assert figures["second_start_embedded"] == 0 and figures["add_one_embedded"] == 1
    assert figures["second_start_seconds"] > 0 and figures["text_search_p50_ms"] > 0 and figures["image_search_p50_ms"] > 0
