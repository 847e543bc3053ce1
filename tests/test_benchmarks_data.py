"""benchmarks/data.py --quick runs and ends with one JSON line of positive figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_data_benchmark_quick_run_prints_figures_last():
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data.py"), "--quick"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    figures = json.loads(lines[-1])
    assert "images/s" in result.stdout  # the readable table comes first
    for key in ("shapes_32px_images_per_second", "shapes_64px_images_per_second", "shapes_numpy_32px_images_per_second",
                "shapes_random_32px_images_per_second", "shapes_random_64px_images_per_second", "bpe_train_seconds",
                "word_tokenizer_captions_per_second", "open_clip_tokenizer_10000_word_seconds"):
        assert figures[key] > 0, key
    assert all(key.endswith(("_per_second", "_seconds", "_pairs")) for key in figures)
