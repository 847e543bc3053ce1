import json
import os
import re
import sys

import nbformat
import torch

from clipkit.notebook import (
    NBVAL_MARKER,
    _render_html,
    clean,
    drawing_cells_without_figures,
    execute,
    figures_missing_from_html,
    lab_command,
    lab_environment,
    record_metrics,
)


def test_record_metrics_writes_plain_json(tmp_path):
    path = tmp_path / "out" / "m.json"
    shown = record_metrics({"acc": torch.tensor(0.5), "bad": float("nan"), "n": 3}, path)
    assert json.loads(path.read_text()) == shown == {"acc": 0.5, "bad": None, "n": 3}


def test_record_metrics_without_path_only_shows(capsys):
    record_metrics({"loss": 1.25})
    assert "loss" in capsys.readouterr().out


def _notebook_with_outputs(path):
    notebook = nbformat.v4.new_notebook()
    checked = nbformat.v4.new_code_cell(f"# {NBVAL_MARKER}\nprint(1)", execution_count=3)
    checked.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    plain = nbformat.v4.new_code_cell("x = 2\nx", execution_count=4)
    plain.outputs = [nbformat.v4.new_output("execute_result", data={"text/plain": "2"}, execution_count=4)]
    notebook.cells = [checked, plain]
    nbformat.write(notebook, path)


def test_clean_keeps_only_marked_outputs_and_is_idempotent(tmp_path):
    path = tmp_path / "n.ipynb"
    _notebook_with_outputs(path)
    assert clean(path) is True
    cells = json.loads(path.read_text())["cells"]
    assert "".join(cells[0]["outputs"][0]["text"]) == "1\n"
    assert cells[1]["outputs"] == [] and cells[1]["execution_count"] is None
    assert cells[0]["execution_count"] == 1
    assert clean(path) is False
    nbformat.validate(nbformat.read(path, as_version=4))


def test_clean_writes_nbformat_45_keeping_ids_and_giving_stable_ones(tmp_path):
    path = tmp_path / "n.ipynb"
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Title"), nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("x = 1")]
    notebook.cells[0].id = "kept-id"
    data = json.loads(nbformat.writes(notebook))
    data["nbformat_minor"] = 4
    del data["cells"][1]["id"]  # an older tool dropped one
    data["cells"][2]["id"] = "kept-id"  # a cell copied by hand repeats another's id
    path.write_text(json.dumps(data))

    assert clean(path) is True
    written = json.loads(path.read_text())
    ids = [cell["id"] for cell in written["cells"]]
    assert (written["nbformat"], written["nbformat_minor"]) == (4, 5)
    assert ids[0] == "kept-id" and len(set(ids)) == 3
    nbformat.validate(nbformat.reads(path.read_text(), as_version=4))
    assert clean(path) is False and [c["id"] for c in json.loads(path.read_text())["cells"]] == ids

    again = tmp_path / "again.ipynb"  # the same notebook cleaned elsewhere gets the same ids
    again.write_text(json.dumps(data))
    clean(again)
    assert again.read_text() == path.read_text()


def _executed(cells):
    """A notebook as papermill leaves it: (source, outputs) per code cell, plus widget state."""
    notebook = nbformat.v4.new_notebook()
    for source, outputs in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.outputs = [nbformat.from_dict(output) for output in outputs]
        notebook.cells.append(cell)
    return json.loads(nbformat.writes(notebook))


PNG = {"output_type": "display_data", "metadata": {}, "data": {"image/png": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==\n", "text/plain": "<Figure>"}}
TEXT = {"output_type": "stream", "name": "stdout", "text": "range [0, 1]\n"}


def test_drawing_cells_without_figures_names_each_blank_drawing_cell():
    notebook = _executed([
        ("x = 1\nprint(x)", [TEXT]),                                      # draws nothing, shows nothing
        ("fig, ax = plt.subplots()\nax.imshow(x)\nplt.show()", [PNG]),    # draws and shows
        ("fig, ax = plt.subplots()\nax.imshow(x)\nprint('range')", [TEXT]),  # the heatmap: drawn, not shown
        ("image_grid(images, captions)", []),
        ("for name in names:\n    plot_history(history)", []),
        ("# NO_FIGURE: only draws on a GPU\nif gpu:\n    plt.plot(x)", []),
        ("# plt.plot(x) is commented out\ny = 2", []),
        ("from clipkit.viz import image_grid", []),
        ("plt.close('all')", []),
    ])
    notebook["cells"].insert(0, {"cell_type": "markdown", "id": "m", "metadata": {}, "source": "# Title"})
    assert drawing_cells_without_figures(notebook) == [
        (3, "fig, ax = plt.subplots()"), (4, "image_grid(images, captions)"), (5, "for name in names:")]


def test_a_figure_inside_an_interact_widget_counts_and_the_page_shows_it_statically(tmp_path):
    view = {"output_type": "display_data", "metadata": {}, "data": {
        "application/vnd.jupyter.widget-view+json": {"model_id": "box", "version_major": 2, "version_minor": 0},
        "text/plain": "interactive(...)"}}
    notebook = _executed([("def show_row(t):\n    plt.bar(x, y)\n\ninteract(show_row, t=slider)", [view])])
    assert drawing_cells_without_figures(notebook) == [(0, "def show_row(t):")]  # no widget state: nothing shows

    notebook["metadata"]["widgets"] = {"application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0, "state": {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_slider", "IPY_MODEL_out"]}},
        "slider": {"model_name": "FloatSliderModel", "state": {"value": 0.07}},
        "out": {"model_name": "OutputModel", "state": {"outputs": [PNG]}},
    }}}
    assert drawing_cells_without_figures(notebook) == []

    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(notebook))
    html = _render_html(path).read_text()
    assert figures_missing_from_html(notebook, html) == []
    assert html.count("<img") == 1  # the snapshot of the figure, once


def test_figures_missing_from_html_finds_an_image_the_page_lacks(tmp_path):
    gif = {"output_type": "display_data", "metadata": {}, "data": {"image/gif": "R0lGODlhAQABAAAAACw=\n", "text/plain": "<Image>"}}
    notebook = _executed([("plt.plot(x)", [PNG]), ("display(Image(filename='a.gif'))", [gif])])
    path = tmp_path / "n.ipynb"
    path.write_text(json.dumps(notebook))
    html = _render_html(path).read_text()
    assert figures_missing_from_html(notebook, html) == []  # nbconvert skips GIFs; the page gets an <img> anyway
    without_images = re.sub(r"<img[^>]*>", "", html)
    assert figures_missing_from_html(notebook, without_images) == [(0, "plt.plot(x)"), (1, "display(Image(filename='a.gif'))")]


def test_lab_command_serves_the_checkout_on_localhost_with_the_kernel_environment(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "agg")
    command = lab_command(9999, ".", ["--no-browser"])
    assert command[:4] == [sys.executable, "-m", "jupyter", "lab"] and command[-1] == "--no-browser"
    assert "--ServerApp.ip=127.0.0.1" in command and "--port=9999" in command
    assert ("--allow-root" in command) == (os.geteuid() == 0)
    environment = lab_environment()
    assert environment["JUPYTER_PREFER_ENV_PATH"] == "1" and "MPLBACKEND" not in environment


def test_execute_starts_its_kernel_without_mplbackend_and_leaves_the_callers_environment(tmp_path, monkeypatch):
    import types

    seen = []
    papermill = types.SimpleNamespace(execute_notebook=lambda *args, **kwargs: seen.append(os.environ.get("MPLBACKEND")))
    monkeypatch.setitem(sys.modules, "papermill", papermill)
    monkeypatch.setenv("MPLBACKEND", "agg")
    execute(tmp_path / "a.ipynb", tmp_path / "out")
    assert seen == [None] and os.environ["MPLBACKEND"] == "agg"


def test_a_damaged_notebook_or_parameters_file_is_one_message_and_exit_2(tmp_path, capsys):
    from clipkit.notebook import main

    notebook = tmp_path / "broken.ipynb"
    notebook.write_text('{"cells": [')
    assert main(["clean", str(notebook)]) == 2
    err = capsys.readouterr().err
    assert str(notebook) in err and "not valid JSON" in err and "Traceback" not in err
    parameters = tmp_path / "parameters.json"
    parameters.write_bytes("[1, 2]".encode("utf-16"))
    assert main(["run", str(notebook), "--parameters", str(parameters)]) == 2
    err = capsys.readouterr().err
    assert str(parameters) in err and "UTF-16" in err
