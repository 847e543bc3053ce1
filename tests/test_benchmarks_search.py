"""The search benchmark's smoke run: it finishes, prints a table, and ends with one JSON line of figures."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_search_benchmark_quick_run():
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "search.py"), "--quick"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=dict(os.environ),
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) > 2, "the table should precede the JSON line"
    figures = json.loads(lines[-1])
    assert figures["vectors"] == 20_000
    assert figures["add_vectors_per_second"] > 0 and figures["torch_queries_per_second"] > 0
    assert figures["peak_rss_mib"] >= figures["baseline_rss_mib"] > 0
    if "faiss_search_seconds" in figures:  # faiss is optional; when present both must find the same neighbours
        assert figures["index_agreement_fraction"] == 1.0 and figures["scores_agree"] is True
