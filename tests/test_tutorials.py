"""tutorials/: the exercise notebooks are what `make tutorials` generates from notebooks/, and the labs are complete.

Executing them under CI parameters is tests/test_notebooks.py's job (it runs every tutorials/*.ipynb).
"""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipkit.exercises.spec import EXERCISES
from clipkit.exercises.generate import (
    BEGIN,
    END,
    HEADER_TAG,
    ExerciseMarkupError,
    generate,
    is_generated,
    out_of_date,
    planned,
    tutorial_from_notebook,
)

ROOT = Path(__file__).resolve().parents[1]
LABS = ["lab_why_it_fails", "lab_bias", "lab_interpretability", "lab_distribution_shift"]


def _code(notebook: dict) -> list[str]:
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


def test_tutorials_are_in_sync_with_the_notebooks():
    problems = out_of_date(ROOT)
    assert not problems, "\n".join(problems) + "\nrun `make tutorials`"


def test_command_line_check_fails_when_a_notebook_changed(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copytree(ROOT / "tutorials", tmp_path / "tutorials")
    command = [sys.executable, "-m", "clipkit.exercises", "generate", "--root", str(tmp_path)]
    assert subprocess.run([*command, "--check"], capture_output=True, text=True).returncode == 0

    source = tmp_path / "notebooks" / "04_contrastive_loss.ipynb"
    text = source.read_text()
    assert "loss by hand {loss_inline" in text
    source.write_text(text.replace("loss by hand {loss_inline", "loss computed by hand {loss_inline"))
    checked = subprocess.run([*command, "--check"], capture_output=True, text=True)
    assert checked.returncode == 1 and "tutorials/04_contrastive_loss.ipynb differs" in checked.stdout
    assert "make tutorials" in checked.stderr

    written = subprocess.run(command, capture_output=True, text=True)
    assert written.returncode == 0 and "wrote tutorials/04_contrastive_loss.ipynb" in written.stdout
    assert subprocess.run([*command, "--check"], capture_output=True, text=True).returncode == 0


def test_every_exercise_notebook_02_to_08_has_a_tutorial_and_every_check_an_exercise():
    plan = planned(ROOT)
    assert {path.name[:2] for path in plan} == {"02", "03", "04", "05", "06", "07", "08"}
    stubbed = set()
    for text in plan.values():
        code = "\n".join(_code(json.loads(text)))
        stubbed |= set(re.findall(r'NotImplementedError\("write the body of (\w+)"\)', code))
    assert stubbed == set(EXERCISES)


@pytest.mark.parametrize("path", sorted(planned(ROOT)), ids=lambda path: path.stem)
def test_a_tutorial_hides_its_solutions_and_checks_every_exercise(path):
    tutorial = json.loads(path.read_text())
    source = json.loads((ROOT / "notebooks" / path.name).read_text())
    assert is_generated(path)
    assert tutorial["cells"][1]["metadata"]["tags"] == [HEADER_TAG]
    text = "\n".join(_code(tutorial))
    assert BEGIN not in text and END not in text
    for cell in _code(source):
        for solution in re.findall(rf"{BEGIN}\n(.*?)\n\s*{END}", cell, re.S):
            for line in solution.splitlines():
                if line.strip():
                    assert line not in text, f"{path.name} shows a line of the solution: {line.strip()!r}"
    code = _code(tutorial)
    for position, cell in enumerate(code):
        if "# YOUR CODE HERE" in cell:
            assert "exercises.check_" in code[position + 1], f"{path.name}: no check cell after an exercise"
    # everything outside the solutions is the notebook's own: same cells, same parameters
    assert len(tutorial["cells"]) == len(source["cells"]) + 1
    assert _code(tutorial)[0] == _code(source)[0]


def test_the_generator_stubs_a_marked_function_body():
    notebook = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Title"]},
            {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "outputs": [], "execution_count": None, "source": ["seed = 0"]},
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": [
                "def patchify(pixels, patch_size):\n", '    """Docstring stays."""\n', f"    {BEGIN}\n",
                "    return secret(pixels)\n", f"    {END}\n",
            ]},
            {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
             "source": ["patchify = exercises.check_patchify(patchify)"]},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    tutorial = tutorial_from_notebook(notebook, "03_x.ipynb")
    stub = "".join(tutorial["cells"][3]["source"])
    assert stub == ('def patchify(pixels, patch_size):\n    """Docstring stays."""\n    # YOUR CODE HERE\n'
                    '    raise NotImplementedError("write the body of patchify")\n')
    assert "`patchify`" in "".join(tutorial["cells"][1]["source"])
    with pytest.raises(NotImplementedError):
        exec(stub + "patchify(None, 1)", {})


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ([f"{BEGIN}\n", "x = 1\n", f"{END}\n"], "inside a function"),
        (["def patchify(a):\n", f"    {BEGIN}\n", "    return a\n"], "never closed"),
        (["def patchify(a):\n", "    return a\n", f"    {END}\n"], "without a"),
        (["def unknown_exercise(a):\n", f"    {BEGIN}\n", "    return a\n", f"    {END}\n"], "have no check"),
    ],
)
def test_bad_markers_are_refused_with_the_reason(body, complaint):
    cells = [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": body},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": ["x = exercises.check_patchify(x)"]},
    ]
    with pytest.raises(ExerciseMarkupError, match=complaint):
        tutorial_from_notebook({"cells": cells, "metadata": {}}, "nb.ipynb")


def test_an_exercise_without_a_check_cell_is_refused():
    cells = [
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
         "source": ["def patchify(a):\n", f"    {BEGIN}\n", "    return a\n", f"    {END}\n"]},
        {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None, "source": ["patchify(1)"]},
    ]
    with pytest.raises(ExerciseMarkupError, match="must check it"):
        tutorial_from_notebook({"cells": cells, "metadata": {}}, "nb.ipynb")


def test_generate_removes_a_tutorial_whose_notebook_lost_its_markers(tmp_path):
    shutil.copytree(ROOT / "notebooks", tmp_path / "notebooks")
    shutil.copytree(ROOT / "tutorials", tmp_path / "tutorials")
    source = tmp_path / "notebooks" / "07_search.ipynb"
    notebook = json.loads(source.read_text())
    for cell in notebook["cells"]:
        cell["source"] = [line for line in cell["source"] if line.strip() not in (BEGIN, END)]
    source.write_text(json.dumps(notebook))
    assert any("07_search.ipynb is generated but its notebook marks no solution" in p for p in out_of_date(tmp_path))
    generate(tmp_path)
    assert not (tmp_path / "tutorials" / "07_search.ipynb").exists()
    assert (tmp_path / "tutorials" / "lab_bias.ipynb").exists()  # hand-written labs are left alone


@pytest.mark.parametrize("lab", LABS)
def test_labs_are_hand_written_reproduce_then_fix_notebooks(lab):
    path = ROOT / "tutorials" / f"{lab}.ipynb"
    assert path.exists() and not is_generated(path)
    text = path.read_text()
    assert "record_metrics(" in text and "plt." in text and "get_device()" in text


def test_the_readme_tutorial_path_names_every_tutorial_in_order():
    readme = (ROOT / "README.md").read_text()
    path = readme.split("## Tutorial path", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| `(\w+)` \|", path, re.M)
    stems = [stem for _, stem in rows]
    assert sorted(stems) == sorted(p.stem for p in (ROOT / "tutorials").glob("*.ipynb"))
    exercises = [stem for stem in stems if not stem.startswith("lab_")]
    assert stems[: len(exercises)] == sorted(exercises), "the exercise notebooks come first, in the course's order"
    assert [int(number) for number, _ in rows] == list(range(1, len(rows) + 1))
