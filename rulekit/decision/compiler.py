"""Turn a checked Policy into two Python functions generated once: one decision, and a numpy batch.

Both come from the same checked expression trees, so the scalar and batch paths cannot disagree on
what a rule means; a test runs them (and simpleeval) side by side on the same inputs.
"""
from __future__ import annotations

import ast
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rulekit.decision.quantity import floor_to_step, floor_to_step_vector
from rulekit.policy import vocabulary
from rulekit.policy.expressions import SCALAR_RUNTIME, VECTOR_RUNTIME, Expression, Type, to_source
from rulekit.policy.loader import Policy, Step

INPUT_NAMES = tuple(vocabulary.INPUTS)


@dataclass(frozen=True)
class Program:
    """The compiled decision: ``scalar(*inputs)`` and ``vector(*input_arrays)`` both return the
    outcome of every check (in ``check_names`` order) followed by every value (``value_names``).

    ``scalar`` divides with Python's ``/`` (fast, raises ZeroDivisionError); ``scalar_ieee`` gives
    inf/NaN there as numpy does. Callers run ``scalar`` and fall back to ``scalar_ieee`` on the error.

    ``first`` (and ``first_ieee``) is the same program stopping at the first check that fails, in
    the policy's order: it returns that check's index (an ``int``), or, when every check passes,
    the same tuple as ``scalar`` (every step ran). One decision needs no more than that; the full
    trace of a rejection is ``scalar`` run again on the same inputs, when someone reads it.
    """

    scalar: Callable[..., tuple]
    scalar_ieee: Callable[..., tuple]
    vector: Callable[..., tuple]
    check_steps: tuple[Step, ...]
    value_steps: tuple[Step, ...]
    scalar_source: str
    vector_source: str
    first: Callable[..., int | tuple]
    first_ieee: Callable[..., int | tuple]
    first_source: str

    @property
    def check_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.check_steps)

    @property
    def value_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.value_steps)


def compile_policy(policy: Policy) -> Program:
    constants = policy.constants()
    steps = policy.steps + ((size_cap_step(policy.steps),) if policy.steps else ())
    checks = tuple(step for step in steps if step.is_check)
    values = tuple(step for step in steps if not step.is_check)
    scalar_source = _source(steps, constants, vector=False, ieee_division=False)
    ieee_source = _source(steps, constants, vector=False, ieee_division=True)
    vector_source = _source(steps, constants, vector=True, ieee_division=True)
    first_source = _source(steps, constants, vector=False, ieee_division=False, first=True)
    first_ieee_source = _source(steps, constants, vector=False, ieee_division=True, first=True)
    lists = {f"_list_{name}": value for name, value in constants.items() if isinstance(value, tuple)}
    scalar_globals: dict[str, Any] = {"__builtins__": {}, **SCALAR_RUNTIME,
                                      "_floor_to_step": floor_to_step}
    scalar_globals.update({name: frozenset(value) for name, value in lists.items()})
    vector_globals: dict[str, Any] = {"__builtins__": {}, **VECTOR_RUNTIME,
                                      "_floor_to_step": floor_to_step_vector}
    vector_globals.update(lists)
    return Program(_define(scalar_source, dict(scalar_globals)),
                   _define(ieee_source, dict(scalar_globals)),
                   _define(vector_source, vector_globals), checks, values, scalar_source,
                   vector_source, _define(first_source, dict(scalar_globals)),
                   _define(first_ieee_source, dict(scalar_globals)), first_source)


def size_cap_step(steps: tuple[Step, ...]) -> Step:
    """The figure ``size_capped_by`` (``vocabulary.SIZE_CAPS``, as its index): what bound the size.

    ``none`` when the risk-based quantity (risk_amount / stop_distance) fits under max_notional;
    otherwise ``exposure_headroom`` when a term of the policy's ``max_notional = min(...)`` that
    reads ``open_exposure`` is the smallest (the account's room for one more position), else
    ``max_notional`` (a per-position cap: leverage, a notional limit). Built from the policy's own
    ``max_notional`` formula, so it names the term that bound, whatever the policy's params.
    """
    sizing = {step.name: step for step in steps if not step.is_check}
    tree = sizing["max_notional"].expression.tree if "max_notional" in sizing else None
    terms = (tree.args if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)
             and tree.func.id == "min" else [tree] if tree is not None else [])
    exposure = [ast.unparse(term) for term in terms
                if "open_exposure" in {n.id for n in ast.walk(term) if isinstance(n, ast.Name)}]
    capped = ("1" if not exposure else
              f"(2 if {exposure[0] if len(exposure) == 1 else 'min(' + ', '.join(exposure) + ')'}"
              " <= max_notional else 1)")
    text = f"0 if risk_amount / stop_distance <= max_notional / price else {capped}"
    tree = ast.parse(text, mode="eval").body
    names = frozenset(n.id for n in ast.walk(tree) if isinstance(n, ast.Name))
    return Step("outputs", "size_capped_by", Expression(text, tree, Type.NUMBER, names),
                is_check=False, builtin=True)


def _source(steps: tuple[Step, ...], constants: dict[str, Any], vector: bool,
            ieee_division: bool, first: bool = False) -> str:
    """The program's text, every step in the policy's order.

    With ``first``: each check returns its index when it fails, each formula is computed just
    before the first step that reads it (so a rejection computes only what its checks read), and
    a full pass returns ``True`` for every check and every value, as the full program does.
    Formulas are pure: moving one only decides whether a division by zero raises, and then the
    IEEE form is run, which gives the same values."""
    temporaries = None if vector else itertools.count()
    lines = [f"def decide({', '.join(INPUT_NAMES)}):"]
    check_vars: list[str] = []
    pending: list[tuple[Step, str]] = []  # first: formulas not yet needed, in order

    def emit_needed(names: frozenset[str]) -> None:
        wanted, needed = set(names), []
        for step, code in reversed(pending):
            if step.name in wanted:
                needed.append((step, code))
                wanted |= step.expression.names
        for found in reversed(needed):
            pending.remove(found)
            lines.append(f"    {found[0].name} = {found[1]}")

    for index, step in enumerate(steps):
        code = to_source(step.expression, constants, vector=vector, ieee_division=ieee_division,
                         temporaries=temporaries)
        if not step.is_check:
            if first:
                pending.append((step, code))
            else:
                lines.append(f"    {step.name} = {code}")
            continue
        if first:
            emit_needed(step.expression.names)
            lines.append(f"    if not ({code}):")
            lines.append(f"        return {len(check_vars)}")
            check_vars.append("True")
        else:
            check_vars.append(f"_check_{index}")
            lines.append(f"    _check_{index} = {code}")
    lines += [f"    {step.name} = {code}" for step, code in pending]
    outputs = check_vars + [step.name for step in steps if not step.is_check]
    lines.append(f"    return ({', '.join(outputs)},)")
    return "\n".join(lines) + "\n"


def _define(source: str, namespace: dict[str, Any]) -> Callable[..., tuple]:
    code = compile(source, "<rulekit policy>", "exec")
    exec(code, namespace)  # the source is generated from checked expression trees only
    return namespace["decide"]


def broadcast(outputs: tuple, rows: int) -> list[np.ndarray]:
    """Vector outputs may be scalars where a rule reads only params; give every one ``rows`` rows."""
    return [np.broadcast_to(np.asarray(value), (rows,)) for value in outputs]
