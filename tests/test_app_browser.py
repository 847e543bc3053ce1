"""The app in a real browser: Debian's headless Chromium driven by Playwright (no browser download).

Loads the page, uploads a red circle, types labels, clicks Classify and reads the answer from the
page, and waits for the saliency map of the top label; then clicks an example, which classifies it
at once. Then what a person sees when things go wrong: a warning shown once and whole (with its
"<unk>"), an error toast read back whole, an error that clears the previous answer. Screenshots of
each tab with a warning and an error go to build/screenshots/ for a look.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import free_port
from test_app import RED_CIRCLE_LABELS, trained_test_model

BUILD = Path(__file__).resolve().parents[1] / "build"
SCREENSHOTS = BUILD / "screenshots"
# The browser is conftest's `chromium` fixture (Debian's, which skips where it is missing).
pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def model():
    return trained_test_model()


@pytest.fixture(scope="module")
def page_url(model):
    pytest.importorskip("playwright.sync_api")
    from clipkit.app import Collection, build_app, launch
    from clipkit.data import ShapesConfig, ShapesWorld

    shapes = ShapesWorld(ShapesConfig(image_size=64)).sample(200, seed=0, split="all")
    app = build_app(model, [Collection.from_images("shapes world", shapes.images, shapes.captions)])
    url = launch(app, port=free_port(), prevent_thread_lock=True, quiet=True)
    try:
        yield url
    finally:
        app.close()


@pytest.fixture
def page(chromium, page_url):
    page = chromium.new_page(viewport={"width": 1280, "height": 1000})
    try:
        page.goto(page_url, wait_until="networkidle", timeout=60_000)
        yield page
    finally:
        page.close()


@pytest.fixture(scope="module")
def red_circle():
    from clipkit.app import default_examples

    return default_examples(BUILD / "app-browser-examples")[0]


def _top_label(page) -> str:
    answer = page.get_by_test_id("label-output-value")
    answer.wait_for(timeout=60_000)
    return answer.inner_text().strip()


def _classify(page, picture, labels: str) -> None:
    page.locator("input[type=file]").first.set_input_files(str(picture))
    page.locator("#zero-shot-labels textarea").fill(labels)
    page.get_by_role("button", name="Classify", exact=True).click()


def _warning(page, box: str) -> str:
    return page.locator(f"#{box} textarea").input_value()


def _toasts(page) -> list[str]:
    return [toast.inner_text() for toast in page.get_by_test_id("toast-text").all()]


def _screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(500)  # toasts fade in
    page.screenshot(path=str(SCREENSHOTS / f"app_{name}.png"), full_page=True)


def test_zero_shot_by_clicking(page, red_circle):
    _classify(page, red_circle, RED_CIRCLE_LABELS)
    assert _top_label(page) == "red circle"
    page.get_by_text("red circle", exact=True).last.wait_for()  # the bar chart lists the labels too
    # the saliency map of the top label follows the answer, titled with that label
    page.locator("#zero-shot-saliency img").wait_for(timeout=60_000)
    assert "red circle" in page.locator("#zero-shot-saliency").inner_text()
    assert _warning(page, "zero-shot-warning") == ""
    _screenshot(page, "zero_shot")


def test_clicking_an_example_classifies_it(page):
    page.locator("#zero-shot-labels textarea").fill(RED_CIRCLE_LABELS)
    page.locator(".gallery-item").first.click()  # the first example thumbnail: a red circle
    assert _top_label(page) == "red circle"


def test_a_sketched_red_disc_is_a_red_circle(page):
    import math

    page.locator("#zero-shot-labels textarea").fill(RED_CIRCLE_LABELS)
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
    _screenshot(page, "sketch")


def test_unknown_words_give_one_whole_warning_beside_the_scores(page, red_circle, model):
    from clipkit.tokenizer import unknown_words_message

    _classify(page, red_circle, "cat, dog")
    assert _top_label(page) in ("cat", "dog")
    expected = unknown_words_message(model.tokenizer, ["cat", "dog"])
    assert "<unk>" in expected
    page.wait_for_function("document.querySelector('#zero-shot-warning textarea').value.length > 0", timeout=60_000)
    assert _warning(page, "zero-shot-warning") == expected  # whole, "<unk>" and all
    page.locator("#zero-shot-saliency img").wait_for(timeout=60_000)  # the click's last event has run
    page.wait_for_timeout(500)
    # one click, one warning: no toast repeats it
    assert not [toast for toast in _toasts(page) if "does not know" in toast]
    assert page.get_by_text("Warning (").count() == 0
    _screenshot(page, "zero_shot_warning")


def test_an_error_clears_the_previous_answer(page, red_circle):
    _classify(page, red_circle, RED_CIRCLE_LABELS)
    assert _top_label(page) == "red circle"
    page.locator("#zero-shot-saliency img").wait_for(timeout=60_000)
    page.locator("#zero-shot-labels textarea").fill(" , ")
    page.get_by_role("button", name="Classify", exact=True).click()
    page.get_by_test_id("toast-text").first.wait_for(timeout=30_000)
    assert any(toast.startswith("no labels:") for toast in _toasts(page))
    assert page.get_by_test_id("label-output-value").count() == 0  # the old "red circle" is gone
    assert page.locator("#zero-shot-saliency img").count() == 0
    assert "red circle" not in page.locator("#zero-shot-saliency").inner_text()  # nor its title
    _screenshot(page, "zero_shot_error")


def test_a_bad_request_shows_its_message_in_the_page(page):
    page.get_by_role("button", name="Classify", exact=True).click()  # no image uploaded
    page.get_by_text("no image: upload one", exact=False).first.wait_for(timeout=30_000)


def test_an_error_with_angle_brackets_reaches_the_page_whole(page, model):
    from clipkit.tokenizer import unknown_words_message

    page.get_by_role("tab", name="Steer").click()
    page.locator("#steer-prompts textarea").fill("a zebra")
    page.get_by_role("button", name="Steer", exact=True).click()
    page.get_by_test_id("toast-text").first.wait_for(timeout=30_000)
    assert unknown_words_message(model.tokenizer, ["zebra"]) in _toasts(page)
    _screenshot(page, "steer_error")


def test_a_five_thousand_word_prompt_is_refused_with_a_message(page):
    page.get_by_role("tab", name="Steer").click()
    page.locator("#steer-prompts textarea").fill(" ".join(["circle"] * 5000))
    page.get_by_role("button", name="Steer", exact=True).click()
    page.get_by_test_id("toast-text").first.wait_for(timeout=30_000)
    assert any("characters long, more than this app takes" in toast for toast in _toasts(page))


def test_search_shows_a_warning_and_an_error(page, model):
    from clipkit.tokenizer import unknown_words_message

    page.get_by_role("tab", name="Search").click()
    query = page.locator("#search-query textarea")
    assert model.tokenizer.unknown_words([query.get_attribute("placeholder").removeprefix("e.g. ")]) == []
    query.fill("a red apple")
    page.get_by_role("button", name="Search by text").click()
    page.wait_for_function("document.querySelector('#search-warning textarea').value.length > 0", timeout=60_000)
    assert _warning(page, "search-warning") == unknown_words_message(model.tokenizer, ["apple"])
    _screenshot(page, "search_warning")
    query.fill("   ")
    page.get_by_role("button", name="Search by text").click()
    page.get_by_test_id("toast-text").first.wait_for(timeout=30_000)
    assert any(toast.startswith("empty query") for toast in _toasts(page))
    assert _warning(page, "search-warning") == ""  # the error cleared the old answer
    _screenshot(page, "search_error")


def test_the_about_tab_shows_the_card(page):
    page.get_by_role("tab", name="About").click()
    page.get_by_text("Model card").first.wait_for(timeout=30_000)
    _screenshot(page, "about")
