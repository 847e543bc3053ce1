"""The house's floors: every clipkit module imports only from its own floor or the ones below.

basics -> data -> network parts -> models -> evaluation -> training and steering -> app -> course.
Function-level imports count too (a lazy import is still a dependency), and no set of modules may
import each other in a circle. A new module must be given a floor here, or this test fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clipkit"

# Floor of each module, by longest dotted prefix. Lower numbers sit lower in the house.
FLOORS: dict[str, int] = {
    # basics: no model, no data set
    "clipkit": 0,
    "clipkit.env": 0,
    "clipkit.io": 0,
    "clipkit.tokenizer": 0,
    "clipkit.loss": 0,
    "clipkit.schedule": 0,
    "clipkit.viz": 0,
    "clipkit.notebook": 0,
    # data: images and captions, knowing nothing of models
    "clipkit.data": 1,
    # the network parts
    "clipkit.config": 2,
    "clipkit.transformer": 2,
    "clipkit.text_encoder": 2,
    "clipkit.image_encoder": 2,
    # models and their checkpoints
    "clipkit.interface": 3,
    "clipkit.model": 3,
    "clipkit.checkpoint": 3,
    "clipkit.interop": 3,
    "clipkit.pretrained": 3,
    "clipkit.lit": 3,
    "clipkit.hf": 3,
    # evaluation
    "clipkit.prompts": 4,
    "clipkit.zeroshot": 4,
    "clipkit.search": 4,
    "clipkit.evaluate": 4,
    "clipkit.open_vocab": 4,
    "clipkit.saliency": 4,
    "clipkit.robustness": 4,
    "clipkit.moderation": 4,
    # training and steering
    "clipkit.train": 5,
    "clipkit.steer": 5,
    # the app
    "clipkit.app": 6,
    # the course: checks of what the notebooks build may use anything
    "clipkit.exercises": 7,
}
FLOOR_NAMES = ["basics", "data", "network parts", "models", "evaluation", "training and steering", "app", "course"]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def floor_of(module: str) -> int | None:
    best = None
    for prefix, floor in FLOORS.items():
        # The package itself ("clipkit") sits in the basics; its modules each have their own floor.
        if module == prefix or (prefix != "clipkit" and module.startswith(prefix + ".")):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, floor)
    return None if best is None else best[1]


def clipkit_imports(path: Path) -> set[str]:
    """Every clipkit module `path` imports, at any depth of the file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "clipkit")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target.split(".")[0] != "clipkit":
                continue
            # `from clipkit import model` imports the module clipkit.model, not just the package.
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _is_module(candidate) else target)
    return found


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (ROOT / relative).with_suffix(".py").exists() or (ROOT / relative / "__init__.py").exists()


def all_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_floor():
    homeless = [name for name in all_modules() if floor_of(name) is None]
    assert not homeless, f"give these modules a floor in tests/test_layering.py FLOORS: {homeless}"


def test_imports_only_point_down_or_sideways():
    upward = []
    for name, path in all_modules().items():
        mine = floor_of(name)
        for target in sorted(clipkit_imports(path)):
            theirs = floor_of(target)
            if mine is not None and theirs is not None and theirs > mine:
                upward.append(f"{name} ({FLOOR_NAMES[mine]}) imports {target} ({FLOOR_NAMES[theirs]})")
    assert not upward, "imports that point up a floor:\n" + "\n".join(upward)


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for target in clipkit_imports(path):
            # Resolve a name to the module that defines it (a package's __init__ counts as the package).
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != name and target in modules:
                targets.add(target)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first == last), or None; depth-first search."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if state.get(nxt) is None:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if state.get(node) is None:
            found = visit(node)
            if found:
                return found
    return None


def test_no_import_cycles():
    graph = import_graph()
    # A package's __init__ re-exporting its own modules is not a cycle of ideas; leave those edges out.
    for name in graph:
        graph[name] = {t for t in graph[name] if not (t.startswith(name + ".") and (PACKAGE.parent / Path(*name.split("."))).is_dir())}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ({"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ({"a": {"b"}, "b": {"c"}, "c": {"b"}}, ["b", "c", "b"]),
    ],
)
def test_the_cycle_finder_finds_what_a_person_would(graph, expected):
    assert find_cycle(graph) == expected


def test_modules_stay_readable_in_one_sitting():
    long = {name: n for name, path in all_modules().items() if (n := len(path.read_text().splitlines())) > 450}
    assert not long, f"split these modules along their seams (about 400 lines at most): {long}"
