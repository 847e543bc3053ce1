"""The app in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

Loads the page, uploads a red circle, types labels, clicks Classify and reads the answer from the
page, and waits for the saliency map of the top label; then clicks an example, which classifies it at once. Screenshots go to build/ for a look.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from test_app import RED_CIRCLE_LABELS, free_port, trained_test_model

CHROMIUM = Path("/usr/bin/chromium")
BUILD = Path(__file__).resolve().parents[1] / "build"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists() and shutil.which("chromium") is None,
                       reason="needs Debian's chromium (apt install chromium, or `make system-test`)"),
]


@pytest.fixture(scope="module")
def page_url():
    pytest.importorskip("playwright.sync_api")
    from clipkit.app import build_app, launch

    app = build_app(trained_test_model())
    url = launch(app, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        app.close()


@pytest.fixture
def page(page_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM if CHROMIUM.exists() else shutil.which("chromium")),
                                             args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_url, wait_until="networkidle", timeout=60_000)
            yield page
        finally:
            browser.close()


def _top_label(page) -> str:
    answer = page.get_by_test_id("label-output-value")
    answer.wait_for(timeout=60_000)
    return answer.inner_text().strip()


def test_zero_shot_by_clicking(page):
    from clipkit.app import default_examples

    red_circle = default_examples(BUILD / "app-browser-examples")[0]
    page.locator("input[type=file]").first.set_input_files(str(red_circle))
    page.get_by_label("labels (comma-separated", exact=False).fill(RED_CIRCLE_LABELS)
    page.get_by_role("button", name="Classify", exact=True).click()
    assert _top_label(page) == "red circle"
    page.get_by_text("red circle", exact=True).last.wait_for()  # the bar chart lists the labels too
    # the saliency map of the top label follows the answer, titled with that label
    page.locator("#zero-shot-saliency img").wait_for(timeout=60_000)
    assert "red circle" in page.locator("#zero-shot-saliency").inner_text()
    BUILD.mkdir(exist_ok=True)
    page.screenshot(path=str(BUILD / "app-zero-shot.png"), full_page=True)


def test_clicking_an_example_classifies_it(page):
    page.get_by_label("labels (comma-separated", exact=False).fill(RED_CIRCLE_LABELS)
    page.locator(".gallery-item").first.click()  # the first example thumbnail: a red circle
    assert _top_label(page) == "red circle"


def test_a_sketched_red_disc_is_a_red_circle(page):
    import math

    page.get_by_label("labels (comma-separated", exact=False).fill(RED_CIRCLE_LABELS)
    page.get_by_role("tab", name="Sketch").click()
    canvas = page.locator("canvas").first
    canvas.wait_for()
    box = canvas.bounding_box()
    centre_x, centre_y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(centre_x, centre_y)
    page.mouse.down()  # the brush starts red, the palette's first colour: paint a spiral into a filled disc
    for radius in range(4, 60, 8):  # each move redraws the canvas, slow in software WebGL: keep them few
        for degrees in range(0, 360, 30):
            angle = math.radians(degrees)
            page.mouse.move(centre_x + radius * math.cos(angle), centre_y + radius * math.sin(angle))
    page.mouse.up()
    page.get_by_role("button", name="Classify sketch").click()
    assert _top_label(page) == "red circle"
    page.screenshot(path=str(BUILD / "app-sketch.png"))


def test_a_bad_request_shows_its_message_in_the_page(page):
    page.get_by_role("button", name="Classify", exact=True).click()  # no image uploaded
    page.get_by_text("no image: upload one", exact=False).first.wait_for(timeout=30_000)
    page.screenshot(path=str(BUILD / "app-error.png"))
