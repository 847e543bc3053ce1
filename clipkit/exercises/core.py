"""The machinery behind every exercise check: run the student's function on crafted inputs, compare
with the reference and with each typical mistake, and say in one or two sentences what is wrong.

A mistake is recognised by what the code *does*, never by reading its source: each `Mistake` holds
the wrong code written out, and the student's function is run beside it on the same inputs. Inputs
are made with local random generators, so a check never moves the notebook's global random state
(the solution notebooks run every check too, and their later cells must not notice).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

# Where an exercise's worked solution lives, for the messages: notebook stem -> path in the repository.
SOLUTIONS_FOLDER = "notebooks"


@dataclass
class Case:
    """One set of crafted inputs: keyword arguments for the student's function and a few words on them."""

    description: str  # e.g. "3 captions padded to 7 tokens"; shown when the student's code fails on it
    inputs: dict[str, Any]  # keyword arguments of the exercise function, copied afresh for every call
    shared: dict[str, Any] = field(default_factory=dict)  # keyword arguments passed as they are (a model: too big to copy)


@dataclass
class Mistake:
    """A typical wrong answer, written out, and what to tell the student who made it."""

    name: str  # short id, used by the tests: "no_exp"
    wrong: Callable  # the mistake as code: same signature as the solution
    message: str  # what is wrong and how to fix it; may hold {fields} filled from `details`
    details: Callable[[Case], dict[str, Any]] | None = None  # measured facts for the message (largest logit, ...)


@dataclass
class Exercise:
    """A function the student writes, its reference solution, the inputs it is checked on, and its mistakes."""

    notebook: str  # stem of the solution notebook, e.g. "04_contrastive_loss"
    reference: Callable  # the worked solution, named as the function the student writes
    cases: Callable[..., list[Case]]  # context (what the check cell passes besides the function) -> inputs
    mistakes: list[Mistake]  # typical wrong answers, each with its own message
    verifies: str  # what a pass proves, said after "Correct!"
    hints: list[str]  # given one at a time by hint(name)
    atol: float = 1e-5  # outputs closer than this (and rtol 1e-4) count as equal
    validate: Callable[[Any, Case], str | None] | None = None  # extra demands on a right-valued output (a gradient, a dtype)
    apply: Callable[[Callable, dict[str, Any]], Any] | None = None  # how a case calls `call(inputs)`; None: call it once

    @property
    def name(self) -> str:
        return self.reference.__name__

    @property
    def solution_path(self) -> str:
        return f"{SOLUTIONS_FOLDER}/{self.notebook}.ipynb"


@dataclass
class Verdict:
    """What a check found. `kind` is one of "correct", "not_done", "mistake", "error", "wrong"."""

    kind: str
    message: str
    mistake: str | None = None  # the Mistake.name recognised, for kind "mistake"

    @property
    def passed(self) -> bool:
        return self.kind == "correct"


EXERCISES: dict[str, Exercise] = {}


def hint_call(name: str) -> str:
    """How a notebook asks for a hint: its check cells import `from clipkit import exercises`."""
    return f"exercises.hint({name!r})"


def register(exercise: Exercise) -> Exercise:
    if exercise.name in EXERCISES:
        raise ValueError(f"two exercises are called {exercise.name!r}: give each function its own name")
    EXERCISES[exercise.name] = exercise
    return exercise


def exercise(name: str) -> Exercise:
    if name not in EXERCISES:
        raise KeyError(f"no exercise called {name!r}; the exercises are {sorted(EXERCISES)}")
    return EXERCISES[name]


# ---------------------------------------------------------------------------------------------
# Comparing outputs


def _as_tensor(value: Any) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (int, float)) for v in value):
        return torch.tensor([float(v) for v in value])
    return None


def _parts(value: Any) -> list[Any]:
    """A tuple output (mixed, weights) compares part by part; anything else is one part."""
    return list(value) if isinstance(value, tuple) else [value]


def describe_shape(value: Any) -> str:
    parts = [_as_tensor(p) for p in _parts(value)]
    shown = [f"shape {list(p.shape)}" if p is not None else type(v).__name__ for p, v in zip(parts, _parts(value))]
    return shown[0] if len(shown) == 1 else "(" + ", ".join(shown) + ")"


def same_shape(a: Any, b: Any) -> bool:
    left, right = _parts(a), _parts(b)
    if len(left) != len(right):
        return False
    for x, y in zip(left, right):
        tx, ty = _as_tensor(x), _as_tensor(y)
        if tx is None or ty is None or tx.shape != ty.shape:
            return False
    return True


def largest_difference(a: Any, b: Any) -> float:
    """Largest absolute difference between two outputs of the same shape (NaN and inf count as far)."""
    worst = 0.0
    for x, y in zip(_parts(a), _parts(b)):
        tx, ty = _as_tensor(x).double(), _as_tensor(y).double()
        both_inf = torch.isinf(tx) & torch.isinf(ty) & (torch.sign(tx) == torch.sign(ty))
        gap = torch.where(both_inf, torch.zeros_like(tx), (tx - ty).abs())
        gap = torch.nan_to_num(gap, nan=float("inf"))
        worst = max(worst, float(gap.max()) if gap.numel() else 0.0)
    return worst


def norm_range(vectors: torch.Tensor) -> dict[str, float]:
    """{"low", "high"}: the shortest and longest row of [N, D], for messages about unnormalised vectors."""
    norms = vectors.norm(dim=-1)
    return {"low": float(norms.min()), "high": float(norms.max())}


def close(a: Any, b: Any, atol: float = 1e-5) -> bool:
    if not same_shape(a, b):
        return False
    for x, y in zip(_parts(a), _parts(b)):
        tx, ty = _as_tensor(x).double(), _as_tensor(y).double()
        if not torch.allclose(tx, ty, rtol=1e-4, atol=atol, equal_nan=True):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Running a function on the cases


@dataclass
class _Run:
    outputs: list[Any] = field(default_factory=list)
    error: BaseException | None = None  # the first exception raised
    failed_case: Case | None = None


def _run(function: Callable, cases: Sequence[Case], ex: Exercise) -> _Run:
    order = list(inspect.signature(ex.reference).parameters)

    def call(values: dict[str, Any]) -> Any:
        # positionally, in the reference's order: a student may well rename the parameters
        return function(*[values[name] for name in order])

    run = _Run()
    for case in cases:
        # a function that edits its input in place must not spoil the next run
        inputs = {**copy.deepcopy(case.inputs), **case.shared}
        try:
            run.outputs.append(ex.apply(call, inputs) if ex.apply else call(inputs))
        except Exception as error:  # the student's code may raise anything; the check reports it
            run.error, run.failed_case = error, case
            return run
    return run


def _same_error(a: BaseException | None, b: BaseException | None) -> bool:
    return a is not None and b is not None and type(a) is type(b) and str(a) == str(b)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def _mistake_message(mistake: Mistake, cases: Sequence[Case]) -> str:
    facts = mistake.details(cases[0]) if mistake.details else {}
    return mistake.message.format(**facts)


def judge(ex: Exercise, function: Callable, **context: Any) -> Verdict:
    """Run `function` where the exercise's reference runs and name what differs; prints nothing."""
    if not callable(function):
        return Verdict("error", f"expected the function {ex.name} itself, got {type(function).__name__}: pass "
                                f"{ex.name} without calling it, e.g. check_{ex.name}({ex.name})")
    cases = ex.cases(**context)
    student = _run(function, cases, ex)
    if isinstance(student.error, NotImplementedError):
        return Verdict("not_done", f"{ex.name} is still the stub: write its body where it says `# YOUR CODE HERE`, "
                                   f"run that cell, then this one. {hint_call(ex.name)} gives a first hint.")
    expected = _run(ex.reference, cases, ex)
    if expected.error is not None:  # the reference cannot fail on its own cases: that is a bug of ours
        raise RuntimeError(f"the reference solution of {ex.name} failed on {expected.failed_case.description}") from expected.error
    for mistake in ex.mistakes:
        wrong = _run(mistake.wrong, cases, ex)
        if student.error is not None:
            if _same_error(student.error, wrong.error):
                return Verdict("mistake", _mistake_message(mistake, cases), mistake.name)
            continue
        if wrong.error is None and all(close(s, w, ex.atol) for s, w in zip(student.outputs, wrong.outputs)):
            if not all(close(s, e, ex.atol) for s, e in zip(student.outputs, expected.outputs)):
                return Verdict("mistake", _mistake_message(mistake, cases), mistake.name)
    if student.error is not None:
        return Verdict("error", f"{ex.name} raised {_first_line(student.error)} on {student.failed_case.description}. "
                                f"Read the message, fix the cell above and run both again.")
    for got, want, case in zip(student.outputs, expected.outputs, cases):
        if all(part is None for part in _parts(got)):
            return Verdict("error", f"{ex.name} returned None: end it with `return ...`.")
        if not same_shape(got, want):
            return Verdict("wrong", f"{ex.name} returned {describe_shape(got)} on {case.description}; expected "
                                    f"{describe_shape(want)}. Check the shape comment of every reshape.")
        if not close(got, want, ex.atol):
            return Verdict("wrong", f"{ex.name} returns the right shape but different values on {case.description} "
                                    f"(largest difference {largest_difference(got, want):.3g}), and no typical mistake "
                                    f"explains it. {hint_call(ex.name)} may help; the solution is in {ex.solution_path}.")
        if ex.validate is not None and (problem := ex.validate(got, case)):
            return Verdict("wrong", problem)
    return Verdict("correct", f"Correct! {ex.name} matches the reference on {len(cases)} test inputs: {ex.verifies}.")


def check(name: str, function: Callable, **context: Any) -> Callable:
    """Print what the check found; return the function the notebook should go on with: yours when it is
    right, else the reference solution, so that the cells after an unfinished exercise still run."""
    ex = exercise(name)
    verdict = judge(ex, function, **context)
    if verdict.passed:
        print(verdict.message)
        return function
    print(f"{'Not done yet' if verdict.kind == 'not_done' else 'Not yet'}: {verdict.message}")
    if verdict.kind != "not_done":
        print(f"Stuck? {hint_call(name)} gives a hint; call it again for the next.")
    print("(The cells below use the reference solution until this check passes.)")
    return ex.reference


_HINTS_GIVEN: dict[str, int] = {}


def hint(name: str, every: bool = False) -> None:
    """Print the next hint for exercise `name` (all of them with every=True)."""
    ex = exercise(name)
    given = 0 if every else _HINTS_GIVEN.get(name, 0)
    chosen = ex.hints[given:] if every else ex.hints[given : given + 1]
    for number, text in enumerate(chosen, start=given + 1):
        print(f"Hint {number}/{len(ex.hints)} for {name}: {text}")
    _HINTS_GIVEN[name] = min(given + len(chosen), len(ex.hints))
    if _HINTS_GIVEN[name] == len(ex.hints):
        print(f"That is every hint. The worked solution is in {ex.solution_path}.")
