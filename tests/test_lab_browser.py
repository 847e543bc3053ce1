"""JupyterLab as a student meets it: `make lab`'s server, a real browser, Run All, figures and a slider.

Starts JupyterLab with the command `make lab` runs (`python -m clipkit.notebook lab`: the
environment's `clipkit` kernel, 127.0.0.1, a token, `--allow-root` as root), opens notebook 04 in
Debian's headless Chromium driven by Playwright, runs all cells on the `clipkit` kernel, and checks
what a person sees: every cell that draws shows an image, the temperature slider renders, and
moving it redraws the bar chart. Notebook 04 runs as committed, with the CI parameters injected
into a copy under build/lab-browser/ (the server's root is the checkout, as in `make lab`); the
copies are the server's input, never executed on disk, so they are removed when the tests end.
Screenshots go to build/screenshots/lab_*.png.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from clipkit.notebook import KERNEL_DISPLAY_NAME, KERNEL_NAME, draws, notebook_text
from conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "04_contrastive_loss.ipynb"
COPIES = ROOT / "build" / "lab-browser"
SCREENSHOTS = ROOT / "build" / "screenshots"
CI_PARAMETERS = json.loads((ROOT / "tests" / "notebook_params.json").read_text())
RUN_SECONDS = 300  # Run All of notebook 04 under the CI parameters takes about half a minute here

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """(base URL, token) of a JupyterLab started as `make lab` starts it; its kernels use a throwaway clipkit home.
    The notebook copies it serves live in COPIES only while it runs: unexecuted, they are no one's to read."""
    shutil.rmtree(COPIES, ignore_errors=True)
    port, token = free_port(), secrets.token_hex(16)
    scratch = tmp_path_factory.mktemp("lab")
    # The user's Lab settings and workspaces stay out of it; no news toast over the figures.
    notification = scratch / "settings" / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    environment = {**os.environ, "CLIPKIT_HOME": str(scratch / "home"), "HF_HUB_OFFLINE": "1",
                   "JUPYTER_RUNTIME_DIR": str(scratch / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(scratch / "settings")}
    command = [sys.executable, "-m", "clipkit.notebook", "lab", "--port", str(port), "--root", str(ROOT),
               "--no-browser", f"--IdentityProvider.token={token}", "--ServerApp.port_retries=0",
               f"--LabApp.workspaces_dir={scratch / 'workspaces'}", "--LabApp.news_url=None",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    log = (scratch / "lab.log").open("w")
    server = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start:\n" + (scratch / "lab.log").read_text()[-3000:])
                time.sleep(0.5)
        yield url, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(COPIES, ignore_errors=True)


@pytest.fixture
def page(chromium, lab):
    page = chromium.new_page(viewport={"width": 1400, "height": 1000})
    try:
        yield page
    finally:
        page.close()


def _open(page, lab, relative: str):
    """Open a notebook in Lab and wait until its kernel is connected; returns the notebook panel."""
    url, token = lab
    page.goto(f"{url}/lab/tree/{relative}?reset&token={token}", wait_until="domcontentloaded", timeout=60_000)
    panel = page.locator(".jp-NotebookPanel:visible")
    panel.wait_for(timeout=60_000)
    kernel = panel.locator(".jp-KernelName")  # the toolbar's kernel button names the kernel in use
    kernel.filter(has_text=KERNEL_DISPLAY_NAME).wait_for(timeout=60_000)
    panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60_000)
    return panel


def _kernel_of(lab, relative: str) -> str:
    """The kernel the server runs for a notebook (path relative to the server's root)."""
    url, token = lab
    sessions = json.load(urllib.request.urlopen(f"{url}/api/sessions?token={token}", timeout=10))
    return next(session["kernel"]["name"] for session in sessions if session["path"] == relative)


def _prepared_copy(tmp_path) -> Path:
    """Notebook 04 with the CI parameters injected (as papermill does for the notebook tests)."""
    import papermill

    COPIES.mkdir(parents=True, exist_ok=True)
    copy = COPIES / NOTEBOOK.name
    metrics = tmp_path / "metrics.json"
    parameters = {**CI_PARAMETERS["notebooks/04_contrastive_loss.ipynb"], "metrics_path": str(metrics)}
    papermill.execute_notebook(str(NOTEBOOK), str(copy), parameters=parameters, prepare_only=True, progress_bar=False)
    return copy


def _run_all(page):
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-item:visible", has_text="Run All Cells").first.click()


def _wait_for_run_all(page, panel, metrics: Path) -> None:
    """Until the last cell has written the metrics; fails with the last error shown when a cell fails."""
    deadline = time.monotonic() + RUN_SECONDS
    time.sleep(2)  # Run All has queued the cells
    while not metrics.exists():
        pending = panel.locator(".jp-InputPrompt", has_text="[*]").count()
        if not pending or time.monotonic() > deadline:
            time.sleep(2)  # the last cell may still be writing
            if metrics.exists():
                break
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "lab_failed.png"))
            shown = panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").all_inner_texts()
            pytest.fail(("Run All stopped before the last cell" if not pending else f"Run All took over {RUN_SECONDS} s")
                        + (":\n" + shown[-1][-2000:] if shown else ""))
        time.sleep(1)


def _settled_image(panel, cell) -> str:
    """The cell's image once the kernel is idle and it has stopped changing (a drag sends many values)."""
    deadline, last, stable_since = time.monotonic() + 60, None, time.monotonic()
    while time.monotonic() < deadline:
        current = _image_data(cell)
        if current != last:
            last, stable_since = current, time.monotonic()
        idle = panel.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").count()
        if idle and time.monotonic() - stable_since > 2:
            break
        time.sleep(0.3)
    return last


def _image_data(cell) -> str:
    images = cell.locator(".jp-OutputArea-output img")
    images.first.wait_for(timeout=60_000)
    return images.first.get_attribute("src")


def test_run_all_shows_every_figure_and_the_slider_redraws(page, lab, tmp_path):
    from playwright.sync_api import expect

    copy = _prepared_copy(tmp_path)
    relative = copy.relative_to(ROOT).as_posix()
    panel = _open(page, lab, relative)
    assert _kernel_of(lab, relative) == KERNEL_NAME
    _run_all(page)
    _wait_for_run_all(page, panel, tmp_path / "metrics.json")

    # every cell that draws shows an image in its output area (the parameters cell papermill injected draws nothing)
    code = ["".join(cell["source"]) for cell in json.loads(copy.read_text())["cells"] if cell["cell_type"] == "code"]
    cells = panel.locator(".jp-Notebook .jp-CodeCell")
    expect(cells).to_have_count(len(code), timeout=30_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    blank = []
    for position, source in enumerate(code):
        if draws(source):
            cell = cells.nth(position)
            cell.scroll_into_view_if_needed()
            if not cell.locator(".jp-OutputArea-output img").count():
                blank.append(source.splitlines()[0])
    assert not blank, f"cells that draw show no image in JupyterLab: {blank}"

    heatmap = cells.filter(has_text="similarity = image_features @ text_features.T")
    heatmap.scroll_into_view_if_needed()
    assert heatmap.locator(".jp-OutputArea-output img").first.is_visible()
    page.screenshot(path=str(SCREENSHOTS / "lab_04_heatmap.png"))

    # the temperature slider renders, and moving it redraws the bar chart
    interact = cells.filter(has_text="ipywidgets.interact(show_row_softmax")
    interact.scroll_into_view_if_needed()
    slider = interact.locator(".widget-slider, .widget-hslider").first
    slider.wait_for(timeout=30_000)
    readout = interact.locator(".widget-readout").first
    before, shown_before = _image_data(interact), readout.inner_text()
    interact.screenshot(path=str(SCREENSHOTS / "lab_04_slider_before.png"))
    handle = interact.locator(".noUi-handle").first
    box = handle.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 120, box["y"] + box["height"] / 2, steps=8)
    page.mouse.up()
    after = _settled_image(panel, interact)
    interact.screenshot(path=str(SCREENSHOTS / "lab_04_slider_after.png"))
    assert readout.inner_text() != shown_before, "the slider did not move"
    assert after != before, "moving the temperature slider did not redraw the bar chart"
    assert interact.locator(".jp-OutputArea-output img").count() == 1, "the redrawn chart replaces the old one"


def _kernel_language_info() -> dict:
    """What the `clipkit` kernel reports about its language; JupyterLab copies it into the notebook."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name=KERNEL_NAME)
    try:
        return client.kernel_info(reply=True, timeout=60)["content"]["language_info"]
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def _is_dirty(page, name: str) -> bool:
    tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", has_text=name)
    return "jp-mod-dirty" in (tab.get_attribute("class") or "")


def _save(page, path: Path) -> None:
    modified = path.stat().st_mtime_ns
    page.keyboard.press("Control+s")
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == modified and time.monotonic() < deadline:
        time.sleep(0.2)


def test_opening_an_unchanged_notebook_does_not_mark_it_modified(page, lab):
    """Opened, left alone and saved, a committed notebook stays byte for byte the same. The one thing
    Jupyter writes into it is the kernel's `language_info` (its Python version, by design), so the
    copy that must stay clean carries this kernel's; the committed file as is may differ only there."""
    from playwright.sync_api import expect

    COPIES.mkdir(parents=True, exist_ok=True)
    committed = json.loads(NOTEBOOK.read_text())
    same_python = COPIES / "unchanged_04.ipynb"
    with_kernel_info = {**committed, "metadata": {**committed["metadata"], "language_info": _kernel_language_info()}}
    same_python.write_text(notebook_text(with_kernel_info))
    written = same_python.read_bytes()

    panel = _open(page, lab, same_python.relative_to(ROOT).as_posix())
    expect(panel.locator(".jp-Cell")).to_have_count(len(committed["cells"]), timeout=30_000)  # Lab renders cells in batches
    page.wait_for_timeout(3000)  # whatever Lab merges into the model on opening has arrived
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "lab_04_opened.png"))
    assert not _is_dirty(page, same_python.name), f"JupyterLab marks an unchanged {NOTEBOOK.name} as modified"
    _save(page, same_python)
    assert same_python.read_bytes() == written, f"saving an unchanged {NOTEBOOK.name} from JupyterLab rewrites it"

    as_committed = COPIES / "committed_04.ipynb"
    shutil.copy(NOTEBOOK, as_committed)
    _open(page, lab, as_committed.relative_to(ROOT).as_posix())
    page.wait_for_timeout(3000)
    _save(page, as_committed)
    saved = json.loads(as_committed.read_text())
    assert saved["metadata"]["language_info"]["name"] == "python"
    saved["metadata"]["language_info"] = committed["metadata"]["language_info"]
    assert saved == committed, f"JupyterLab changes more than language_info when it saves {NOTEBOOK.name}"
