"""The machinery behind every exercise check: run the student's function on crafted inputs, make sure
what it returns is what the notebook's later cells can use, compare it with the reference and with
each typical mistake, and say in one sentence what is wrong.

A mistake is recognised by what the code *does*, never by reading its source: each `Mistake` holds
the wrong code written out, and the student's function is run beside it on the same inputs. Before
any value is compared, the generic demands of the cells after the check are verified here, once for
every exercise: a value is returned (not None), a tensor where a tensor is expected (not a Python
number, not a numpy array), as many values as the reference returns, on the inputs' device, of the
right shape and dtype, finite, and, where later cells backpropagate, with a gradient that reaches the
inputs. Inputs are made with local random generators, so a check never moves the notebook's global
random state (the solution notebooks run every check too, and their later cells must not notice).
"""

from __future__ import annotations

import copy
import inspect
import linecache
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clipkit.exercises.spec import Case, CheckBug, Exercise, Mistake, Verdict, exercise, hint_call

# ---------------------------------------------------------------------------------------------
# Comparing outputs (of the right types: `_type_problem` has passed)


def _as_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    return torch.tensor(float(value))


def _parts(value: Any) -> list[Any]:
    """A tuple output (mixed, weights) compares part by part; anything else is one part."""
    return list(value) if isinstance(value, (tuple, list)) else [value]


def close(a: Any, b: Any, atol: float = 1e-5) -> bool:
    left, right = _parts(a), _parts(b)
    if len(left) != len(right):
        return False
    for x, y in zip(left, right):
        tx, ty = _as_tensor(x).double(), _as_tensor(y).double()
        if tx.shape != ty.shape or not torch.allclose(tx, ty, rtol=1e-4, atol=atol, equal_nan=True):
            return False
    return True


def largest_difference(a: Any, b: Any) -> float:
    """Largest absolute difference between two outputs of the same shape (NaN and inf count as far)."""
    worst = 0.0
    for x, y in zip(_parts(a), _parts(b)):
        tx, ty = _as_tensor(x).double(), _as_tensor(y).double()
        both_inf = torch.isinf(tx) & torch.isinf(ty) & (torch.sign(tx) == torch.sign(ty))
        gap = torch.nan_to_num(torch.where(both_inf, torch.zeros_like(tx), (tx - ty).abs()), nan=float("inf"))
        worst = max(worst, float(gap.max()) if gap.numel() else 0.0)
    return worst


def norm_range(vectors: torch.Tensor) -> dict[str, float]:
    """{"low", "high"}: the shortest and longest row of [N, D], for messages about unnormalised vectors."""
    norms = vectors.norm(dim=-1)
    return {"low": float(norms.min()), "high": float(norms.max())}


# ---------------------------------------------------------------------------------------------
# Running a function on the cases


@dataclass
class _Run:
    outputs: list[list[Any]] = field(default_factory=list)  # per case, what each call returned
    inputs: list[dict[str, Any]] = field(default_factory=list)  # per case, the arguments as passed
    error: BaseException | None = None  # the first exception raised
    failed_case: Case | None = None


def _prepared(case: Case, ex: Exercise, device: torch.device | None) -> dict[str, Any]:
    # a copy per run: a function that edits its input in place must not spoil the next run
    inputs = copy.deepcopy(case.inputs)
    for name in ex.on_device:
        inputs[name] = inputs[name].to(device)
    for name in ex.differentiable:  # as in training: the check can then follow the gradient back to them
        inputs[name] = inputs[name].detach().requires_grad_(True)
    return {**inputs, **case.shared}


def _run(function: Callable, cases: Sequence[Case], ex: Exercise, device: torch.device | None = None) -> _Run:
    order = list(inspect.signature(ex.reference).parameters)

    def call(values: dict[str, Any]) -> Any:
        # positionally, in the reference's order: a student may well rename the parameters
        return function(*[values[name] for name in order])

    if device is None and ex.on_device:
        from clipkit.env import get_device

        device = get_device()
    run = _Run()
    for case in cases:
        inputs = _prepared(case, ex, device)
        try:
            run.outputs.append(list(ex.apply(call, inputs)) if ex.apply else [call(inputs)])
        except (Exception, SystemExit) as error:  # the student's code may raise anything; the check reports it
            run.error, run.failed_case = error, case
            return run
        run.inputs.append(inputs)
    return run


def _same_error(a: BaseException | None, b: BaseException | None) -> bool:
    return a is not None and b is not None and type(a) is type(b) and str(a) == str(b)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text else type(error).__name__


def _where(error: BaseException, function: Callable) -> str:
    """' at `line`': the last line of the student's own code the exception passed through."""
    code = getattr(function, "__code__", None)
    line, traceback = "", error.__traceback__
    while traceback is not None:
        if code is not None and traceback.tb_frame.f_code.co_filename == code.co_filename:
            line = linecache.getline(code.co_filename, traceback.tb_lineno).strip()
        traceback = traceback.tb_next
    return f" at `{line[:120]}`" if line else ""


# Advice for exceptions whose cause is one typical slip, by a phrase of their message.
_ERROR_ADVICE = {
    "same device": "create every new tensor on the inputs' device (device=x.device)",
    "in-place operation": "leave the inputs unchanged: write x = x / n, not x /= n",
    "Can't call numpy() on Tensor that requires grad": "stay in torch, since numpy cuts the gradient",
}


def _raised_message(ex: Exercise, run: _Run, function: Callable) -> str:
    advice = next((text for phrase, text in _ERROR_ADVICE.items() if phrase in str(run.error)), "fix the cell above")
    return (f"{ex.name} raised {_first_line(run.error)}{_where(run.error, function)} on {run.failed_case.description}: "
            f"{advice}, then run that cell and this one again.")


def _mistake_message(mistake: Mistake, cases: Sequence[Case]) -> str:
    facts = mistake.details(cases[0]) if mistake.details else {}
    return mistake.message.format(**facts)


# ---------------------------------------------------------------------------------------------
# What the cells after the check rely on, verified the same way for every exercise


def _shape(value: torch.Tensor | np.ndarray) -> str:
    return str(list(value.shape))


def _who(ex: Exercise, index: int) -> str:
    """The subject of a message: "clip_loss_by_hand returned" or "masked_attention's weights (value 2 of 2) is"."""
    if len(ex.returns) == 1:
        return f"{ex.name} returned"
    return f"{ex.name}'s {ex.returns[index].name} (value {index + 1} of {len(ex.returns)}) is"


def _type_problem(ex: Exercise, got: Any, want: Any) -> tuple[str, str] | None:
    """(problem, message) when `got` is not the kind of thing `want` (the reference's output) is."""
    if got is None:
        return "none", f"{ex.name} returned None: end the function with `{ex.return_line}`."
    if isinstance(want, tuple):
        if not isinstance(got, (tuple, list)):
            return "count", (f"{ex.name} returned one {type(got).__name__} but must return {len(want)} values, "
                             f"`{ex.return_line}`.")
        if len(got) != len(want):
            return "count", f"{ex.name} returned {len(got)} values but must return {len(want)}: `{ex.return_line}`."
    parts = list(got) if isinstance(want, tuple) else [got]  # a list where one tensor is expected is one (wrong) value
    for index, (part, expected) in enumerate(zip(parts, _parts(want))):
        who, name = _who(ex, index), ex.returns[index].name
        if part is None:
            return "none", f"{who} None: `{ex.return_line}`."
        if isinstance(expected, torch.Tensor) and isinstance(part, (np.ndarray, np.generic)):
            kind = f"array of shape {_shape(part)}" if isinstance(part, np.ndarray) else type(part).__name__
            return "numpy", (f"{who} a numpy {kind}, not a torch.Tensor: stay in torch (no .numpy(), no np. functions), "
                             "since the cells below need a tensor on the inputs' device.")
        if isinstance(part, np.ndarray):  # a numpy scalar is a number; an array is not
            return "numpy", f"{who} a numpy array of shape {_shape(part)}, not a Python number: return float(...)."
        if isinstance(expected, torch.Tensor):
            if isinstance(part, numbers.Number) and not isinstance(part, bool):
                uses = " (.item(), .backward())" if expected.ndim == 0 else ""
                return "number", (f"{who} a Python {type(part).__name__} ({part:.4g}), not a torch.Tensor: drop the "
                                  f".item() or float(...) that made it a number, because the cells below use {name} "
                                  f"as a tensor{uses}.")
            if not isinstance(part, torch.Tensor):
                build = " (torch.stack or torch.cat joins tensors)" if isinstance(part, (list, tuple)) else ""
                return "type", f"{who} a {type(part).__name__}, not a torch.Tensor: return {name} as one tensor{build}."
            if part.device != expected.device:
                return "device", (f"{who} a tensor on {part.device}, but the inputs are on {expected.device}: create every new "
                                  "tensor with device=x.device and drop any .cpu() or .to(...) at the end.")
            if part.layout != torch.strided or part.is_complex():
                return "type", f"{who} a {part.layout} {part.dtype} tensor: return an ordinary real (dense) tensor."
        elif isinstance(part, torch.Tensor):
            return "tensor", (f"{who} a torch.Tensor, not a Python number: the cells below use {name} as a plain "
                              "number, so compute it with math (math.cos, not torch.cos) or return float(...).")
        elif not isinstance(part, numbers.Real) or isinstance(part, bool):
            return "type", f"{who} a {type(part).__name__}, not a Python number: return {name} as a float."
    return None


def _value_problem(ex: Exercise, got: Any, want: Any, case: Case) -> tuple[str, str] | None:
    """(problem, message) when a value of the right kind has the wrong shape or dtype, or is not finite."""
    pairs = list(zip(_parts(got), _parts(want)))
    kinds = [(_signature(g), _signature(w)) for g, w in pairs]
    if any(g != w for g, w in kinds) and sorted(g for g, _ in kinds) == sorted(w for _, w in kinds):
        return "order", f"{ex.name} returns the right kinds of values in the wrong order: `{ex.return_line}`."
    for index, (part, expected) in enumerate(pairs):
        who = _who(ex, index)
        if isinstance(expected, torch.Tensor):
            if part.shape != expected.shape:
                output = ex.returns[index]
                if part.ndim and expected.ndim == 0:
                    fix = f"the {output.name} must be one number, a 0-d tensor (shape []), so reduce it with .mean()"
                else:
                    fix = (f"expected shape {_shape(expected)} ({output.shape}); print the shape after each line to see "
                           "where it goes astray")
                return "shape", f"{who} a tensor of shape {_shape(part)} on {case.description}: {fix}."
            if part.dtype != expected.dtype:
                both_float = part.is_floating_point() and expected.is_floating_point()
                cause = ("drop the conversion (.double(), .half(), dtype=...)" if both_float
                         else f"convert it with .to({expected.dtype}) or create it with dtype={expected.dtype}")
                return "dtype", f"{who} a {part.dtype} tensor, but the cells below expect {expected.dtype}: {cause}."
        finite = bool(torch.isfinite(_as_tensor(part)).all())
        if not finite and bool(torch.isfinite(_as_tensor(expected)).all()):
            return "not_finite", (f"{who} NaN or infinite values on {case.description}: look for a division by zero, "
                                  "the log of 0, or a softmax over a row that is all -inf.")
    return None


def _signature(value: Any) -> str:
    tensor = _as_tensor(value)
    return f"{list(tensor.shape)} {tensor.dtype}"


def _gradient_problem(ex: Exercise, got: Any, inputs: dict[str, Any]) -> tuple[str, str] | None:
    """(problem, message) when the gradient of the output does not reach every input in `ex.differentiable`."""
    if not ex.differentiable:
        return None
    targets = ", ".join(ex.differentiable)
    parts = [part for part in _parts(got) if part.is_floating_point()]
    for index, part in enumerate(_parts(got)):
        if part.is_floating_point() and not part.requires_grad:
            return "no_gradient", (f"{_who(ex, index)} a tensor without gradient, so a backward pass cannot reach "
                                   f"{targets}: keep every step in torch, without .detach(), .item(), .numpy(), "
                                   "torch.tensor(...) of a result, or torch.no_grad().")
    leaves = [inputs[name] for name in ex.differentiable]
    try:
        grads = torch.autograd.grad(sum(part.sum() for part in parts), leaves, allow_unused=True)
    except Exception as error:  # noqa: BLE001 - the student's graph may fail backward in any way
        return "backward", (f"a backward pass through {ex.name}'s result raised {_first_line(error)}: leave the "
                            "inputs and intermediate results unchanged (no in-place edits such as x /= n).")
    missing = [name for name, grad in zip(ex.differentiable, grads) if grad is None]
    if missing:
        return "blocked_gradient", (f"the gradient of {ex.name}'s result does not reach {', '.join(missing)}: "
                                    "something cuts it off there (.detach(), .data, .item(), math.* or numpy on a "
                                    "tensor, torch.tensor(...) of a tensor).")
    return None


def _first_problem(check: Callable[..., tuple[str, str] | None], calls: Sequence[tuple]) -> tuple[str, str] | None:
    for arguments in calls:
        if found := check(*arguments):
            return found
    return None


# ---------------------------------------------------------------------------------------------
# The verdict


def judge(ex: Exercise, function: Callable, **context: Any) -> Verdict:
    """Run `function` where the exercise's reference runs and name what differs; prints nothing."""
    if not callable(function):
        return Verdict("error", f"expected the function {ex.name} itself, got {type(function).__name__}: pass "
                                f"{ex.name} without calling it, e.g. check_{ex.name}({ex.name})", problem="not_callable")
    try:
        cases = ex.cases(**context)
    except Exception as error:
        raise CheckBug(f"the test inputs of {ex.name} could not be made from {sorted(context)}") from error
    student = _run(function, cases, ex)
    if isinstance(student.error, NotImplementedError):
        return Verdict("not_done", f"{ex.name} is still the stub: write its body where it says `# YOUR CODE HERE`, "
                                   f"run that cell, then this one. {hint_call(ex.name)} gives a first hint.")
    expected = _run(ex.reference, cases, ex)
    if expected.error is not None:  # the reference cannot fail on its own cases: that is a bug of ours
        raise CheckBug(f"the reference solution of {ex.name} failed on {expected.failed_case.description}") from expected.error
    mistakes = [(mistake, _run(mistake.wrong, cases, ex)) for mistake in ex.mistakes]
    if student.error is not None:
        for mistake, wrong in mistakes:
            if _same_error(student.error, wrong.error):
                return Verdict("mistake", _mistake_message(mistake, cases), mistake.name)
        return Verdict("error", _raised_message(ex, student, function), problem="raised")

    calls = [(got, want, case) for outputs, wanted, case in zip(student.outputs, expected.outputs, cases)
             for got, want in zip(outputs, wanted)]
    if found := _first_problem(lambda got, want, _: _type_problem(ex, got, want), calls):
        return Verdict("error" if found[0] == "none" else "wrong", found[1], problem=found[0])
    for mistake, wrong in mistakes:
        if wrong.error is None and all(close(s, w, ex.atol) for s, w in zip(_flat(student), _flat(wrong))):
            if not all(close(s, e, ex.atol) for s, e in zip(_flat(student), _flat(expected))):
                return Verdict("mistake", _mistake_message(mistake, cases), mistake.name)
    if found := _first_problem(lambda got, want, case: _value_problem(ex, got, want, case), calls):
        return Verdict("wrong", found[1], problem=found[0])
    for got, want, case in calls:
        if not close(got, want, ex.atol):
            return Verdict("wrong", f"{ex.name} returns the right shape but different values on {case.description} "
                                    f"(largest difference {largest_difference(got, want):.3g}), and no typical mistake "
                                    f"explains it: {hint_call(ex.name)} may help, and the solution is in {ex.solution_path}.",
                           problem="values")
    outputs = [(outputs[0], inputs) for outputs, inputs in zip(student.outputs, student.inputs)]
    if found := _first_problem(lambda got, inputs: _gradient_problem(ex, got, inputs), outputs):
        return Verdict("wrong", found[1], problem=found[0])
    return Verdict("correct", f"Correct! {ex.name} matches the reference on {len(cases)} test inputs: {ex.verifies}.")


def _flat(run: _Run) -> list[Any]:
    return [output for outputs in run.outputs for output in outputs]


def check(name: str, function: Callable, **context: Any) -> Callable:
    """Print what the check found; return the function the notebook should go on with: yours when it is
    right, else the reference solution, so that the cells after an unfinished exercise still run."""
    ex = exercise(name)
    try:
        verdict = judge(ex, function, **context)
    except CheckBug:
        raise
    except Exception as error:  # noqa: BLE001 - whatever the student returns, the check cell must not raise
        verdict = Verdict("wrong", f"the check could not examine what {name} returned ({_first_line(error)}): "
                                   f"return ordinary torch tensors, `{ex.return_line}`.", problem="unexaminable")
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
