"""The training benchmarks' smoke runs: each finishes, prints a table, and ends with one JSON line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *arguments: str) -> tuple[list[str], dict]:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *arguments],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.strip().splitlines()
    assert len(lines) > 2, "the table should precede the JSON line"
    return lines, json.loads(lines[-1])


@pytest.mark.slow  # a fresh interpreter importing torch (and open_clip) each
def test_train_throughput_quick_run_compares_the_same_model():
    _, figures = _run("train_throughput.py")
    assert figures["miniclip_images_per_second"] > 0 and figures["open_clip_images_per_second"] > 0
    ratio = figures["miniclip_images_per_second"] / figures["open_clip_images_per_second"]
    assert abs(figures["speedup_ratio"] - ratio) < 1e-2
    assert figures["step0_loss_abs_diff"] < 1e-5, "both models were built with the same weights"
    assert figures["matmul_peak_gflops_per_second"] > 0
    assert figures["miniclip_flops_per_step"] > 0 and figures["open_clip_flops_per_step"] > 0
    for name in ("miniclip", "open_clip"):  # achieved GFLOP/s is the step's FLOPs at the measured rate
        expected = figures[f"{name}_flops_per_step"] * figures[f"{name}_images_per_second"] / figures["batch_size"] / 1e9
        assert figures[f"{name}_gflops_per_second"] == pytest.approx(expected, rel=0.02, abs=0.02)
    assert 1 <= figures["miniclip_threads"] <= figures["threads"]


@pytest.mark.slow  # a fresh interpreter, and a busy-loop neighbour it must stop again
def test_train_throughput_runs_beside_a_cpu_bound_neighbour():
    lines, figures = _run("train_throughput.py", "--load", "1")
    assert figures["load_processes"] == 1 and any("1 CPU-bound neighbours" in line for line in lines)


@pytest.mark.slow  # three fresh interpreters (the writer, then readers as 1 and 2 processes)
def test_shards_quick_run_reads_with_one_and_two_processes():
    lines, figures = _run("shards.py")
    assert figures["one_process_images_per_second"] > 0
    assert len(figures["two_processes_images_per_second_each"]) == 2
    assert figures["two_processes_images_per_second_total"] == pytest.approx(
        sum(figures["two_processes_images_per_second_each"]), abs=0.2)
    assert any(line.startswith("2 ") for line in lines)


@pytest.mark.slow  # a fresh interpreter importing torch (and open_clip) each
def test_time_to_accuracy_quick_run_reports_each_target():
    lines, figures = _run("time_to_accuracy.py")
    assert figures["profile"] == "ci" and figures["steps"] == 20
    assert 0 < figures["train_seconds"] <= figures["wall_seconds"]
    for key in ("heldout_vs_heldout_seconds", "heldout_vs_all_seconds", "seen_seconds", "all_targets_within_budget"):
        assert key in figures
    assert 0 <= figures["final_seen"] <= 1
    assert any(line.startswith("target seen") for line in lines)


@pytest.mark.slow  # a fresh interpreter importing torch (and open_clip) each
def test_gpu_check_quick_run_takes_the_same_path_on_cpu():
    _, figures = _run("gpu_check.py")
    assert figures["profile"] == "ci" and figures["steps"] == 10
    assert figures["flops_per_step"] > 0 and figures["images_per_second"] > 0
    assert figures["mfu_fraction"] is None, "a CPU has no bf16 peak to divide by"
    assert 0 <= figures["heldout_vs_heldout"] <= 1
