"""A tutorial with a wrong answer still runs to its end, and its check cell says what is wrong.

Each test fills an exercise of a generated tutorial with an answer of the wrong kind (a Python float
where the loss tensor is due, one tensor where a pair is due, a function that raises), executes the
tutorial as `make run` does (`clipkit.notebook.execute`) under the CI parameters, and reads the check
cell's output: the specific message, no traceback, and every later cell executed (they go on with the
reference solution).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from clipkit.notebook import execute

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "test-exercise-notebooks"
CI_PARAMETERS = json.loads((ROOT / "tests" / "notebook_params.json").read_text())

# tutorial -> {exercise: (the body a student wrote, what its check cell must print)}
WRONG_ANSWERS = {
    "04_contrastive_loss": {
        # the right loss, turned into a Python float at the end: the example
        "clip_loss_by_hand": (
            [
                "image_features, text_features = F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1)",
                "logits = logit_scale.exp() * image_features @ text_features.T  # [B images, B captions]",
                "targets = torch.arange(len(logits))",
                "return ((F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2).item()",
            ],
            r"Not yet: clip_loss_by_hand returned a Python float \([\d.]+\), not a torch\.Tensor: drop the \.item\(\)",
        ),
    },
    "02_text_encoder": {
        # the mixed values only: the weights are forgotten
        "masked_attention": (
            [
                "scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, heads, L, L]",
                "future = torch.ones(q.shape[-2], q.shape[-2], dtype=torch.bool).triu(1)",
                'return scores.masked_fill(future, float("-inf")).softmax(dim=-1) @ v',
            ],
            r"Not yet: masked_attention returned one Tensor but must return 2 values, `return mixed, weights`\.",
        ),
        # a list search over the whole batch (a list of rows): raises inside the student's code
        "pool_at_eot": (
            ["positions = tokens.tolist().index(eot_token_id)", "return hidden[torch.arange(len(tokens)), positions]"],
            r"Not yet: pool_at_eot raised ValueError: 9 is not in list "
            r"at `positions = tokens\.tolist\(\)\.index\(eot_token_id\)`",
        ),
    },
}


def _with_answers(tutorial: dict, answers: dict[str, tuple[list[str], str]]) -> dict:
    """The tutorial with each exercise's stub (the `raise NotImplementedError` line) replaced by the answer."""
    for name, (body, _) in answers.items():
        cell = next(c for c in tutorial["cells"] if c["cell_type"] == "code" and f"def {name}(" in "".join(c["source"]))
        lines = "".join(cell["source"]).split("\n")
        stub = next(i for i, line in enumerate(lines) if "raise NotImplementedError" in line)
        indent = lines[stub][: len(lines[stub]) - len(lines[stub].lstrip())]
        lines[stub : stub + 1] = [indent + line for line in body]
        cell["source"] = "\n".join(lines).splitlines(keepends=True)
    return tutorial


def _printed(cell: dict) -> str:
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("output_type") == "stream")


@pytest.mark.notebooks
@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(WRONG_ANSWERS))
def test_a_wrong_answer_is_named_and_the_tutorial_runs_to_its_end(stem, tmp_path, monkeypatch):
    # kernels inherit the environment: a throwaway clipkit home, no network (execute keeps MPLBACKEND from them)
    monkeypatch.setenv("CLIPKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLIPKIT_CACHE_DIR", str(ROOT / ".clipkit" / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
    source = ROOT / "tutorials" / f"{stem}.ipynb"
    answered = tmp_path / source.name
    answered.write_text(json.dumps(_with_answers(json.loads(source.read_text()), WRONG_ANSWERS[stem]), indent=1))
    executed = BUILD / source.name
    metrics_path = BUILD / f"{stem}.metrics.json"

    # raises PapermillExecutionError, naming the cell, if any cell fails
    execute(answered, BUILD, CI_PARAMETERS[f"tutorials/{source.name}"])

    cells = [cell for cell in json.loads(executed.read_text())["cells"] if cell["cell_type"] == "code"]
    assert all(cell.get("execution_count") for cell in cells), "a cell did not run"
    assert metrics_path.exists(), "the last cell (record_metrics) did not run"
    for name, (_, expected) in WRONG_ANSWERS[stem].items():
        check_cell = next(cell for cell in cells if f"exercises.check_{name}(" in "".join(cell["source"]))
        printed = _printed(check_cell)
        assert re.search(expected, printed), printed
        assert "Traceback" not in printed and "(The cells below use the reference solution until this check passes.)" in printed
        assert not any(o.get("output_type") == "error" for o in check_cell.get("outputs", []))
