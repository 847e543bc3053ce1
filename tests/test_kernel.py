"""The `clipkit` kernel belongs to its checkout: `make lab` registers it inside this environment, it
wins over a stale user-level kernel of the same name, and the code it imports is this checkout's."""

import json
import os
import sys
from pathlib import Path

import pytest

from clipkit.notebook import KERNEL_NAME, install_kernel, lab_environment

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stale_user_kernel(tmp_path, monkeypatch):
    """A user-level `clipkit` kernel another clone registered, and the environment `make lab` runs in."""
    user_data = tmp_path / "user-data"
    stale = user_data / "kernels" / KERNEL_NAME
    stale.mkdir(parents=True)
    (stale / "kernel.json").write_text(json.dumps(
        {"argv": ["/elsewhere/clone/.venv/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
         "display_name": "Python (clipkit)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(user_data))
    for name, value in lab_environment().items():
        monkeypatch.setenv(name, value)
    return stale


def test_the_kernel_is_installed_in_this_environment_and_wins_over_a_user_one(stale_user_kernel):
    from jupyter_client.kernelspec import KernelSpecManager

    if not os.access(sys.prefix, os.W_OK):
        pytest.skip(f"{sys.prefix} is not writable (a system Python): the kernel goes to the user's kernels")
    folder = install_kernel()
    assert folder.resolve().is_relative_to(Path(sys.prefix).resolve()), f"kernel installed outside the environment: {folder}"

    spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    assert Path(spec.resource_dir).resolve() == folder.resolve(), f"{KERNEL_NAME!r} resolves to {spec.resource_dir}"
    assert spec.argv[0] == sys.executable


@pytest.mark.slow
def test_the_kernel_imports_this_checkouts_clipkit(stale_user_kernel):
    from jupyter_client.manager import start_new_kernel

    install_kernel()
    manager, client = start_new_kernel(kernel_name=KERNEL_NAME, cwd=str(ROOT / "notebooks"))
    try:
        printed = []
        reply = client.execute_interactive(
            "import sys, clipkit; print(clipkit.__file__); print(sys.executable)",
            timeout=60,
            output_hook=lambda message: printed.append(message["content"].get("text", "")),
        )
        assert reply["content"]["status"] == "ok"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    module_file, executable = "".join(printed).split()
    assert Path(module_file).resolve().is_relative_to(ROOT), f"the kernel imported {module_file}, not this checkout's clipkit"
    assert executable == sys.executable
