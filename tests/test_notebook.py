import json

import nbformat
import torch

from clipkit.notebook import NBVAL_MARKER, clean, record_metrics


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
