"""Turn a checked Policy into two Python functions generated once: one decision, and a numpy batch.

Both come from the same checked expression trees, so the scalar and batch paths cannot disagree on
what a rule means; a test runs them (and simpleeval) side by side on the same inputs.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rulekit.decision.quantity import floor_to_step, floor_to_step_vector
from rulekit.policy import vocabulary
from rulekit.policy.expressions import SCALAR_RUNTIME, VECTOR_RUNTIME, to_source
from rulekit.policy.loader import Policy, Step

INPUT_NAMES = tuple(vocabulary.INPUTS)


@dataclass(frozen=True)
class Program:
    """The compiled decision: ``scalar(*inputs)`` and ``vector(*input_arrays)`` both return the
    outcome of every check (in ``check_names`` order) followed by every value (``value_names``).

    ``scalar`` divides with Python's ``/`` (fast, raises ZeroDivisionError); ``scalar_ieee`` gives
    inf/NaN there as numpy does. Callers run ``scalar`` and fall back to ``scalar_ieee`` on the error.
    """

    scalar: Callable[..., tuple]
    scalar_ieee: Callable[..., tuple]
    vector: Callable[..., tuple]
    check_steps: tuple[Step, ...]
    value_steps: tuple[Step, ...]
    scalar_source: str
    vector_source: str

    @property
    def check_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.check_steps)

    @property
    def value_names(self) -> tuple[str, ...]:
        return tuple(step.name for step in self.value_steps)


def compile_policy(policy: Policy) -> Program:
    constants = policy.constants()
    checks = tuple(step for step in policy.steps if step.is_check)
    values = tuple(step for step in policy.steps if not step.is_check)
    scalar_source = _source(policy.steps, constants, vector=False, ieee_division=False)
    ieee_source = _source(policy.steps, constants, vector=False, ieee_division=True)
    vector_source = _source(policy.steps, constants, vector=True, ieee_division=True)
    lists = {f"_list_{name}": value for name, value in constants.items() if isinstance(value, tuple)}
    scalar_globals: dict[str, Any] = {"__builtins__": {}, **SCALAR_RUNTIME,
                                      "_floor_to_step": floor_to_step}
    scalar_globals.update({name: frozenset(value) for name, value in lists.items()})
    vector_globals: dict[str, Any] = {"__builtins__": {}, **VECTOR_RUNTIME,
                                      "_floor_to_step": floor_to_step_vector}
    vector_globals.update(lists)
    return Program(_define(scalar_source, dict(scalar_globals)), _define(ieee_source, scalar_globals),
                   _define(vector_source, vector_globals), checks, values, scalar_source,
                   vector_source)


def _source(steps: tuple[Step, ...], constants: dict[str, Any], vector: bool,
            ieee_division: bool) -> str:
    lines = [f"def decide({', '.join(INPUT_NAMES)}):"]
    check_vars = []
    for index, step in enumerate(steps):
        code = to_source(step.expression, constants, vector=vector, ieee_division=ieee_division)
        target = f"_check_{index}" if step.is_check else step.name
        if step.is_check:
            check_vars.append(target)
        lines.append(f"    {target} = {code}")
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
