"""What an exercise is, as plain data: the crafted inputs (`Case`), the typical wrong answers
(`Mistake`), what the function returns (`Output`), the exercise itself (`Exercise`), a check's
finding (`Verdict`), and the registry every exercise module adds itself to.

`clipkit.exercises.core` runs them; each notebook's module (`contrastive_loss`, `training`, ...)
declares its exercises with these classes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
class Output:
    """One value an exercise function returns, named as in the notebook's docstring."""

    name: str  # the variable a solution would return: "loss", "weights"
    shape: str  # in the docstring's words, "[B, heads, L, L]"; "[]" for a 0-d tensor, "" for a Python number


@dataclass
class Exercise:
    """A function the student writes, its reference solution, the inputs it is checked on, and its mistakes."""

    notebook: str  # stem of the solution notebook, e.g. "04_contrastive_loss"
    reference: Callable  # the worked solution, named as the function the student writes
    cases: Callable[..., list[Case]]  # context (what the check cell passes besides the function) -> inputs
    mistakes: list[Mistake]  # typical wrong answers, each with its own message
    verifies: str  # what a pass proves, said after "Correct!"
    hints: list[str]  # given one at a time by hint(name)
    returns: tuple[Output, ...]  # what the function returns, in order (a tuple when more than one)
    differentiable: tuple[str, ...] = ()  # inputs the gradient must reach: later cells (or training) backpropagate
    on_device: tuple[str, ...] = ()  # inputs the notebook keeps on its device (get_device()): the check does too
    atol: float = 1e-5  # outputs closer than this (and rtol 1e-4) count as equal
    apply: Callable[[Callable, dict[str, Any]], list[Any]] | None = None  # a case's calls `call(inputs)`; None: one call

    @property
    def name(self) -> str:
        return self.reference.__name__

    @property
    def solution_path(self) -> str:
        return f"{SOLUTIONS_FOLDER}/{self.notebook}.ipynb"

    @property
    def return_line(self) -> str:
        return "return " + ", ".join(output.name for output in self.returns)


@dataclass
class Verdict:
    """What a check found. `kind` is one of "correct", "not_done", "mistake", "error", "wrong"."""

    kind: str
    message: str
    mistake: str | None = None  # the Mistake.name recognised, for kind "mistake"
    problem: str | None = None  # the generic problem found: "none", "number", "numpy", "shape", "no_gradient", ...

    @property
    def passed(self) -> bool:
        return self.kind == "correct"


class CheckBug(RuntimeError):
    """The reference failed on its own inputs: a bug of the check, not of the student."""


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
