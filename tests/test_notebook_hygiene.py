"""Committed notebooks stay small, clean and portable (the house rules in DEVELOPERS.md)."""

import json
import re
import shutil
from pathlib import Path

import pytest

from clipkit.notebook import clean

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "tutorials").glob("*.ipynb"))


def _code(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "code"]


def test_there_are_notebooks():
    assert (ROOT / "notebooks" / "00_welcome.ipynb") in NOTEBOOKS


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_committed_clean(notebook: Path, tmp_path):
    copy = tmp_path / notebook.name
    shutil.copy(notebook, copy)
    assert not clean(copy), f"{notebook.name} has outputs or run metadata: run `make clean-notebooks`"
    assert notebook.stat().st_size < 400_000, f"{notebook.name} is {notebook.stat().st_size} bytes"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_has_parameters_cell_with_metrics_path(notebook: Path):
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert tagged, f"{notebook.name} has no cell tagged `parameters`"
    assert cells[0] is tagged[0], f"{notebook.name}: the parameters cell must be the first code cell"
    assert re.search(r"^metrics_path\s*=", "".join(tagged[0]["source"]), re.M), "parameters must set metrics_path"
    assert "record_metrics(" in "".join(cells[-1]["source"]), f"{notebook.name}: the last cell must call record_metrics"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_code_is_portable(notebook: Path):
    for source in _code(notebook):
        assert not re.search(r"^\s*[!%]\s*pip\b", source, re.M), "install dependencies via pyproject.toml, not in notebooks"
        assert not re.search(r"""["']cuda(:\d+)?["']""", source), "use clipkit.get_device(), not a hard-coded cuda"
        assert not re.search(r"^\s*from\s+\S+\s+import\s+\*", source, re.M), "no star imports"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebook_is_nbformat_45_and_every_cell_has_an_id(notebook: Path):
    """Jupyter gives random ids to cells that lack them whenever it saves: committed notebooks carry their own."""
    import nbformat

    parsed = nbformat.reads(notebook.read_text(), as_version=nbformat.NO_CONVERT)
    assert (parsed.nbformat, parsed.nbformat_minor) == (4, 5), f"{notebook.name}: run `make clean-notebooks`"
    nbformat.validate(parsed)
    ids = [cell.get("id") for cell in parsed.cells]
    assert all(ids) and len(set(ids)) == len(ids), f"{notebook.name}: cells without an id or with a repeated one"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_opening_and_saving_a_notebook_changes_nothing(notebook: Path, tmp_path):
    """Jupyter saves with nbformat.write: what it writes back must be the committed file, byte for byte."""
    import nbformat

    saved = tmp_path / notebook.name
    nbformat.write(nbformat.read(notebook, as_version=4), saved)
    assert saved.read_text() == notebook.read_text(), f"{notebook.name}: saving it unchanged rewrites it; run `make clean-notebooks`"
