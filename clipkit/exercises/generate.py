"""Write the exercise versions of the notebooks: `tutorials/NN_name.ipynb` from `notebooks/NN_name.ipynb`.

In a solution notebook, the lines a student should write are marked inside a function:

    def clip_loss_by_hand(image_features, text_features, logit_scale):
        \"\"\"What it computes.\"\"\"
        # BEGIN SOLUTION
        ...
        # END SOLUTION

The tutorial gets the same notebook with those lines replaced by `# YOUR CODE HERE` and
`raise NotImplementedError(...)`, plus a header cell on how the exercises work. The cell after each
exercise must be its check (`exercises.check_...`), which the solution notebook runs too. The
markers are comments, so the solution notebooks behave as if they were not there.

    python -m clipkit.exercises generate           # (re)write tutorials/
    python -m clipkit.exercises generate --check   # exit 1 when tutorials/ is out of date
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from clipkit.notebook import NBFORMAT_VERSION, assign_cell_ids, notebook_text

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
HEADER_TAG = "exercise-header"  # the tag of the generated header cell: it marks a tutorial as generated
CHECK_CALL = "exercises.check_"
ROOT = Path(__file__).resolve().parents[2]
_DEF = re.compile(r"^(\s*)def (\w+)\(")


class ExerciseMarkupError(ValueError):
    """Solution markers that cannot become an exercise (unbalanced, outside a function, no check after)."""


def _lines(cell: dict) -> list[str]:
    source = cell.get("source", [])
    return "".join(source).split("\n") if isinstance(source, list) else source.split("\n")


def _as_source(lines: list[str]) -> list[str]:
    text = "\n".join(lines)
    return text.splitlines(keepends=True)


def _stub_cell(lines: list[str], where: str) -> tuple[list[str], list[str]]:
    """The cell's lines with every marked block replaced by a stub; and the names of the functions stubbed."""
    out, names, inside = [], [], False
    for number, line in enumerate(lines):
        marker = line.strip()
        if marker == BEGIN:
            if inside:
                raise ExerciseMarkupError(f"{where}, line {number + 1}: {BEGIN} inside another solution; close it with {END} first")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            enclosing = [m for m in map(_DEF.match, out) if m and len(m.group(1)) < len(indent)]
            if not enclosing:
                raise ExerciseMarkupError(f"{where}, line {number + 1}: {BEGIN} must be inside a function body "
                                          "(the student writes the body; the signature and docstring stay)")
            names.append(enclosing[-1].group(2))
            out += [f"{indent}# YOUR CODE HERE", f'{indent}raise NotImplementedError("write the body of {names[-1]}")']
        elif marker == END:
            if not inside:
                raise ExerciseMarkupError(f"{where}, line {number + 1}: {END} without a {BEGIN} before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ExerciseMarkupError(f"{where}: {BEGIN} is never closed with {END}")
    return out, names


def _header_cell(source_name: str, names: list[str]) -> dict:
    listed = ", ".join(f"`{name}`" for name in names)
    text = f"""> **Exercise version** of `notebooks/{source_name}`, generated from it by `make tutorials`
> (edit the notebook, not this file).
>
> Write the code where a cell says `# YOUR CODE HERE`: {listed}. The cell after each exercise
> checks your function and prints **Correct!** with what it verified, **Not done yet**, or what is
> wrong and how to fix it. In any cell, `from clipkit import exercises; exercises.hint("{names[0]}")`
> prints a hint; call it again for the next.
> Until an exercise passes, the notebook goes on with the reference solution, so every cell after it
> still runs. The worked solutions are in `notebooks/{source_name}`."""
    return {"cell_type": "markdown", "id": HEADER_TAG, "metadata": {"tags": [HEADER_TAG]},
            "source": _as_source(text.split("\n"))}


def tutorial_from_notebook(notebook: dict, source_name: str) -> dict | None:
    """The exercise version of a solution notebook (parsed JSON), or None when it marks no solution."""
    notebook = {**notebook, "cells": [dict(cell) for cell in notebook["cells"]]}
    assign_cell_ids(notebook["cells"])  # the ids `clean` gives the notebook, so both files carry the same
    cells, names = [], []
    awaiting_check: list[str] = []  # exercises of the last marked cell: the next code cell must check them
    for index, cell in enumerate(notebook["cells"]):
        where = f"{source_name}, cell {index}"
        marked = cell["cell_type"] == "code" and any(BEGIN in line or END in line for line in _lines(cell))
        if not marked:
            if cell["cell_type"] == "code" and awaiting_check:
                if CHECK_CALL not in "".join(_lines(cell)):
                    raise ExerciseMarkupError(f"{where}: the cell after exercise {', '.join(awaiting_check)} must check it "
                                              f"(call {CHECK_CALL}<name>), so that the tutorial runs on")
                awaiting_check = []
            cells.append(dict(cell))
            continue
        lines, stubbed = _stub_cell(_lines(cell), where)
        names += stubbed
        awaiting_check += stubbed
        cells.append({**cell, "source": _as_source(lines), "outputs": [], "execution_count": None})
    if awaiting_check:
        raise ExerciseMarkupError(f"{source_name}: exercise {awaiting_check[0]} has no check cell after it")
    if not names:
        return None
    _check_registered(names, source_name)
    position = 1 if cells and cells[0]["cell_type"] == "markdown" else 0  # after the title
    cells.insert(position, _header_cell(source_name, names))
    assign_cell_ids(cells)  # a notebook cell already named like the header gets another id
    return {**notebook, "cells": cells, "nbformat": NBFORMAT_VERSION[0], "nbformat_minor": NBFORMAT_VERSION[1]}


def _check_registered(names: list[str], source_name: str) -> None:
    from clipkit.exercises.spec import EXERCISES

    unknown = [name for name in names if name not in EXERCISES]
    if unknown:
        raise ExerciseMarkupError(f"{source_name}: {unknown} have no check in clipkit.exercises; register an Exercise for each")


def is_generated(path: Path) -> bool:
    cells = json.loads(path.read_text())["cells"]
    return any(HEADER_TAG in cell.get("metadata", {}).get("tags", []) for cell in cells)


def planned(root: Path = ROOT) -> dict[Path, str]:
    """tutorials/<name> -> the text it should hold, for every notebook with solution markers."""
    plan = {}
    for source in sorted((root / "notebooks").glob("*.ipynb")):
        tutorial = tutorial_from_notebook(json.loads(source.read_text()), source.name)
        if tutorial is not None:
            plan[root / "tutorials" / source.name] = notebook_text(tutorial)  # as `clean` writes it, so clean leaves it alone
    return plan


def stale(root: Path = ROOT) -> list[Path]:
    """Generated tutorials whose notebook no longer marks any solution (or no longer exists)."""
    plan = planned(root)
    return [path for path in sorted((root / "tutorials").glob("*.ipynb")) if path not in plan and is_generated(path)]


def out_of_date(root: Path = ROOT) -> list[str]:
    """What `generate` would change, one line per tutorial; empty when tutorials/ is in sync."""
    problems = []
    for path, text in planned(root).items():
        if not path.exists():
            problems.append(f"{path.relative_to(root)} is missing")
        elif path.read_text() != text:
            problems.append(f"{path.relative_to(root)} differs from what notebooks/{path.name} generates")
    problems += [f"{path.relative_to(root)} is generated but its notebook marks no solution" for path in stale(root)]
    return problems


def generate(root: Path = ROOT) -> list[Path]:
    """Write every tutorial that differs from its notebook's exercise version and remove stale ones; returns what changed."""
    changed = []
    (root / "tutorials").mkdir(exist_ok=True)
    for path, text in planned(root).items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            changed.append(path)
    for path in stale(root):
        path.unlink()
        changed.append(path)
    return changed
