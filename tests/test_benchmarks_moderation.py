"""The moderation benchmark's smoke run: it trains a LiT model for a few steps, prints a table, and ends with one JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")


@pytest.mark.slow
@pytest.mark.skipif(not FONT.is_file(), reason="needs the Debian package fonts-noto-color-emoji")
def test_moderation_benchmark_quick_run():
    pytest.importorskip("sentence_transformers")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "moderation.py"), "--quick"],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    assert len(lines) > 5, "the table should precede the JSON line"
    figures = json.loads(lines[-1])
    assert figures["target_precision"] == 0.9 and figures["images_per_second"] > 0
    for rule in ("weapons", "alcohol_and_tobacco", "people"):
        for setting in ("before", "after"):
            recall = figures[f"{rule}_test_recall_{setting}"]
            assert recall is None or 0 <= recall <= 1
    assert {"largest_skin_tone_fpr_gap_before", "largest_skin_tone_fpr_gap_after"} <= set(figures)
