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
