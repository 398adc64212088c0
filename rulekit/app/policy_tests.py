"""Policy unit tests: YAML cases beside the policies, run like ``opa test``.

A file ``<name>.tests.yaml`` in a policy directory holds::

    policy: default.yaml          # relative to the tests file
    signal: {symbol: BTCUSDT, side: LONG, consensus: STRONG, confidence: 0.75, price: 50000,
             atr: 1500, ema_200: 48000, volume_24h: 2.5e9, spread_bps: 1.2}   # every case's base
    cases:
      - name: the golden long is approved with the formula levels
        signal: {}                # changes to the base signal
        state: {equity: 10000}    # the risk state (as for evaluate --state); default: 10,000 fresh
        expect: {approved: true, quantity: 0.0444, stop_loss: 47750}

``expect`` may name ``approved``, ``reason`` and any decision figure; numbers must agree to 1e-9
relative. An expected ``reason`` the policy cannot give (a misspelt check name) is refused with the
case's file:line rather than reported as a failing case. RM_ overrides in the environment apply,
as everywhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rulekit.decision.engine import Engine
from rulekit.errors import RulekitError, StateError
from rulekit.model import RiskState, Signal, parse_timestamp
from rulekit.policy.expressions import did_you_mean
from rulekit.policy.loader import load_policy
from rulekit.policy.yaml_source import load_yaml


@dataclass(frozen=True)
class CaseResult:
    file: str
    line: int
    name: str
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def run_policy_tests(directory: str | Path) -> list[CaseResult]:
    """Run every ``*.tests.yaml`` under ``directory``; a malformed file is a user error."""
    files = sorted(Path(directory).rglob("*.tests.yaml"))
    if not files:
        raise RulekitError(f"no *.tests.yaml files in {directory}")
    results: list[CaseResult] = []
    for path in files:
        document = load_yaml(path)
        data = document.data
        if not isinstance(data, dict) or not isinstance(data.get("policy"), str) or not (
                isinstance(data.get("cases"), list) and data["cases"]):
            raise document.error((), "a tests file needs `policy:` (a path) and a list `cases:`")
        engine = Engine(load_policy(path.parent / data["policy"]))
        for index, case in enumerate(data["cases"]):
            line = document.position(("cases", index))[0]
            results.append(_run_case(engine, document, index, case, data.get("signal") or {},
                                     str(path), line))
    return results


def _run_case(engine: Engine, document, index: int, case: Any, base: dict, path: str,
              line: int) -> CaseResult:
    where = ("cases", index)
    if not isinstance(case, dict) or not isinstance(case.get("signal"), dict) or not isinstance(
            case.get("expect"), dict):
        raise document.error(where, "a case needs `name`, a mapping `signal` and `expect`")
    state = _state(case.get("state") or {"equity": 10_000}, document, where)
    decision = engine.decide(Signal.from_record({**base, **case["signal"]}), state=state,
                             now=parse_timestamp(case.get("now")))
    failures = []
    expected_reason = case["expect"].get("reason")
    reasons = engine.program.check_names
    if expected_reason is not None and expected_reason not in reasons:
        raise document.error(where + ("expect", "reason"),
                             f"`{expected_reason}` is not a reason this policy can give"
                             f"{did_you_mean(str(expected_reason), reasons)}")
    for key, expected in case["expect"].items():
        if key == "approved":
            got: Any = decision.approved
        elif key == "reason":
            got = decision.reason
        else:
            try:
                got = decision.value(key)
            except KeyError:
                raise document.error(where + ("expect", key),
                                     f"`{key}` is not a decision figure") from None
        if not _same(got, expected):
            failures.append(f"{key}: expected {expected!r}, got {got!r}")
    return CaseResult(path, line, str(case.get("name", f"case {index + 1}")), tuple(failures))


def _state(record: Any, document, where) -> RiskState:
    try:
        return RiskState.from_record(record)
    except StateError as exc:
        raise document.error(where + ("state",), exc.message) from None


def _same(got: Any, expected: Any) -> bool:
    if isinstance(expected, bool) or expected is None or isinstance(expected, str):
        return got == expected
    if isinstance(expected, (int, float)):
        try:
            number = float(got)
        except (TypeError, ValueError):
            return False
        return math.isclose(number, float(expected), rel_tol=1e-9, abs_tol=1e-12)
    return got == expected
