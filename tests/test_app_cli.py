"""clipkit.app.cli as a person meets it: `python -m clipkit.app` and `make demo`, run as subprocesses."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import free_port
from test_app import TEST_MODEL_DIR, trained_test_model

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}


def app_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "clipkit.app", *arguments]


def test_command_line_help_names_the_options():
    result = subprocess.run(app_command("--help"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for option in ("--model", "open_clip:NAME", "hf:ID", "export", "--checkpoint", "--from-notebook-checkpoint", "--port", "--host", "--share", "--folder"):
        assert option in result.stdout


def busy_port():
    """A port something already listens on (the caller closes the socket)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener, listener.getsockname()[1]


def test_a_busy_port_is_one_line_naming_port(tmp_path):
    listener, port = busy_port()
    with listener:
        began = time.monotonic()
        # the port is checked first: no checkpoint needs loading (or training) before it is refused
        result = subprocess.run(app_command("--checkpoint", str(tmp_path / "nowhere"), "--port", str(port)),
                                capture_output=True, text=True, timeout=60, env=ENV)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode != 0
    assert len(lines) == 1, lines
    assert "--port" in lines[0] and str(port) in lines[0] and "Traceback" not in lines[0]
    assert time.monotonic() - began < 30


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_takes_port_and_a_busy_one_is_one_line():
    listener, port = busy_port()
    with listener:
        result = subprocess.run(["make", "--no-print-directory", "demo", f"PORT={port}"], capture_output=True, text=True,
                                timeout=120, cwd=ROOT, env=ENV)
    ours = [line for line in (result.stdout + result.stderr).splitlines() if line.strip() and not line.startswith("make")]
    assert result.returncode != 0
    assert len(ours) == 1, ours
    assert "--port" in ours[0] and str(port) in ours[0] and f"make demo PORT={port + 1}" in ours[0]


@pytest.mark.slow
def test_the_banner_names_the_address_and_share_flag():
    import httpx

    trained_test_model()
    port = free_port()
    server = subprocess.Popen(app_command("--checkpoint", str(TEST_MODEL_DIR), "--port", str(port), "--tabs", "about"),
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        banner = [server.stdout.readline() for _ in range(2)]
        text = "".join(banner)
        assert f"http://127.0.0.1:{port}" in text and "this machine only" in text
        assert "--share" in text and "share=True" not in text
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=30).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize("damage", ["truncated weights", "config not JSON"])
def test_a_damaged_checkpoint_is_one_message_and_exit_2_without_a_traceback(tmp_path, damage):
    from clipkit.config import config_from_preset
    from clipkit.model import MiniCLIP, save_model

    folder = save_model(MiniCLIP(config_from_preset("tiny-cpu", embed_dim=16, text={"layers": 1})), tmp_path / "damaged")
    damaged = folder / ("model.safetensors" if damage == "truncated weights" else "config.json")
    damaged.write_bytes(damaged.read_bytes()[:300])
    began = time.monotonic()
    result = subprocess.run(app_command("--checkpoint", str(folder), "--port", str(free_port())),
                            capture_output=True, text=True, timeout=120, env=ENV)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and len(lines) <= 2, lines
    assert str(damaged) in lines[0] and "--debug" in lines[-1]
    assert time.monotonic() - began < 60
    shown = subprocess.run(app_command("--checkpoint", str(folder), "--port", str(free_port()), "--debug"),
                           capture_output=True, text=True, timeout=120, env=ENV)
    assert shown.returncode != 0 and "Traceback" in shown.stderr and str(damaged) in shown.stderr


def test_a_model_spec_nothing_reads_exits_2_naming_each_form(tmp_path):
    result = subprocess.run(app_command("--model", str(tmp_path / "nowhere"), "--port", str(free_port())),
                            capture_output=True, text=True, timeout=120, env=ENV)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    for form in ("clipkit checkpoint folder", "open_clip:NAME", "hf:ID-or-folder", str(tmp_path / "nowhere")):
        assert form in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["open_clip", "hf"])
def test_the_command_line_serves_a_model_spec_and_its_card_names_the_weights(kind, tmp_path, tiny_open_clip):
    from gradio_client import Client

    from test_app import foreign_model_specs, wait_for_page

    spec = foreign_model_specs(tmp_path, tiny_open_clip)[kind]
    # open_clip knows the tiny test architecture only in this process: the server gets its config folder too
    register = "import open_clip, sys; open_clip.add_model_config(sys.argv.pop(1)); from clipkit.app.cli import main; sys.exit(main())"
    import open_clip

    configs = next(Path(p) for p in open_clip.factory._MODEL_CONFIG_PATHS if (Path(p) / f"{tiny_open_clip}.json").exists())
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", register, str(configs), "--model", spec, "--port", str(port), "--tabs", "zero-shot,about"],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_page(f"http://127.0.0.1:{port}/", server)
        card = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False).predict(api_name="/model_card")
        assert "Weights:" in card and spec.split(":")[-1] in card
    finally:
        server.terminate()
        server.wait(timeout=30)
