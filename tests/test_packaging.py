"""pyproject.toml and environment.yml describe the same environment."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from the PyPI ones
CONDA_TO_PYPI = {"pytorch": "torch"}


def _canonical(requirement: str) -> tuple[str, str]:
    """'open-clip-torch>=2.24' -> ('open-clip-torch', '>=2.24'), names normalised as PEP 503 does."""
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return CONDA_TO_PYPI.get(name, name), match.group(2).replace(" ", "")


def _pyproject() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    return dict(_canonical(r) for r in requirements)


def _environment() -> dict[str, str]:
    dependencies = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    conda = [d for d in dependencies if isinstance(d, str)]
    pip = next(d["pip"] for d in dependencies if isinstance(d, dict))
    entries = [d for d in conda + pip if not d.startswith(("-e", "python", "pip"))]
    return dict(_canonical(d) for d in entries)


def test_environment_yml_matches_pyproject():
    in_pyproject, in_environment = _pyproject(), _environment()
    assert set(in_pyproject) - set(in_environment) == set(), "add these to environment.yml"
    assert set(in_environment) - set(in_pyproject) == set(), "add these to pyproject.toml (or drop them)"
    differing = {n: (in_pyproject[n], in_environment[n]) for n in in_pyproject if in_pyproject[n] != in_environment[n]}
    assert differing == {}, f"version ranges differ (pyproject, environment.yml): {differing}"


def test_pyproject_uses_ranges_not_exact_pins():
    pinned = [name for name, spec in _pyproject().items() if spec.startswith("==")]
    assert pinned == [], f"users' machines get ranges, not exact pins: {pinned}"


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make test$", ci, re.M)
    assert "make test" in readme and "make lab" in readme and "make run" in readme
