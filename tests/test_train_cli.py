"""The command line: help, and a run killed with SIGKILL that resumes from its last checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clipkit.model import load_model
from clipkit.train import read_train_state
from clipkit.train.__main__ import main

ROOT = Path(__file__).resolve().parents[1]


def test_help_names_the_flags_and_profiles(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--profile", "--preset", "--data", "--steps", "--out", "--no-resume", "torchrun", "ci", "gpu"):
        assert flag in text


def test_bad_data_spec_names_the_choices(tmp_path):
    with pytest.raises(ValueError, match="'shapes', 'fashion'"):
        main(["--profile", "ci", "--data", "pictures", "--out", str(tmp_path), "--no-progress"])


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_from_its_last_checkpoint(tmp_path):
    command = [sys.executable, "-m", "clipkit.train", "--profile", "ci", "--steps", "150", "--batch-size", "16",
               "--checkpoint-every", "10", "--out", str(tmp_path), "--no-progress", "--device", "cpu"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while read_train_state(tmp_path) is None and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed; give it more steps"
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed_at = read_train_state(tmp_path)["step"]
    assert 10 <= killed_at < 150 and killed_at % 10 == 0

    resumed = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from step {killed_at}" in resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["step"] == 150
    state = read_train_state(tmp_path)
    assert state["finished"] and state["step"] == 150
    assert state["history"]["step"] == list(range(10, 151, 10)), "the history runs on without gaps or repeats"
    assert load_model(tmp_path).metadata["steps"] == 150


def test_a_damaged_train_state_is_one_message_and_exit_2(tmp_path, capsys):
    (tmp_path / "train_state.safetensors").write_bytes(b"\x80\x04not weights")
    assert main(["--profile", "ci", "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "train_state.safetensors") in err and "written by another program" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 2
    with pytest.raises(Exception, match="written by another program"):  # --debug: the exception, with its traceback
        main(["--profile", "ci", "--out", str(tmp_path), "--no-progress", "--debug"])


def test_trains_from_webdataset_shards_and_names_missing_ones(tmp_path, capsys):
    from clipkit.data.shapes import ShapesConfig, ShapesWorld
    from clipkit.data.shards import write_shards

    pattern = write_shards(ShapesWorld(ShapesConfig(image_size=32)), tmp_path / "shards", count=32, per_shard=16)
    common = ["--profile", "ci", "--steps", "2", "--batch-size", "8", "--no-progress", "--cpu-threads", "1"]
    assert main([*common, "--data", f"webdataset:{pattern}", "--out", str(tmp_path / "run")]) == 0
    state = read_train_state(tmp_path / "run")
    assert state["step"] == 2 and state["data"]["webdataset"] == pattern
    assert state["data_position"]["samples_read_per_process"] == 16
    missing = str(tmp_path / "none" / "{000000..000001}.tar")
    assert main([*common, "--data", f"webdataset:{missing}", "--out", str(tmp_path / "run2")]) == 2
    assert "missing" in capsys.readouterr().err
