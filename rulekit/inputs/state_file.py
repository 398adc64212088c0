"""The risk state as a JSON file: how ``rulekit evaluate --state`` takes the account's situation."""
from __future__ import annotations

import json
import math
from pathlib import Path

from rulekit.errors import StateError
from rulekit.model import RiskState, parse_timestamp

NUMBERS = ("equity", "day_start_equity", "week_start_equity", "peak_equity",
           "breaker_reference_equity", "open_exposure")
COUNTS = ("consecutive_losses", "open_trades")


def load_state(path: str) -> RiskState:
    """Read a state file; anything missing or malformed is an error, never a silent default.

    Only the reference equities may be left out: they then equal ``equity`` (a fresh day).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise StateError(f"cannot read risk state: {exc.strerror}", path) from None
    except json.JSONDecodeError as exc:
        raise StateError(f"not valid JSON: {exc.msg}", path, exc.lineno, exc.colno) from None
    if not isinstance(data, dict):
        raise StateError("the risk state must be a JSON object", path)
    unknown = set(data) - set(NUMBERS) - set(COUNTS) - {"circuit_breaker_until"}
    if unknown:
        raise StateError(f"unknown field(s): {', '.join(sorted(unknown))}", path)
    if "equity" not in data:
        raise StateError("missing field: equity", path)
    values: dict[str, object] = {}
    for name in NUMBERS:
        value = data.get(name, data.get("peak_equity", data["equity"])
                         if name == "breaker_reference_equity" else data["equity"])
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise StateError(f"{name} must be a finite number, not {value!r}", path)
        values[name] = float(value)
    for name in COUNTS:
        value = data.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise StateError(f"{name} must be a whole number >= 0, not {value!r}", path)
        values[name] = value
    until = data.get("circuit_breaker_until")
    if until is not None:
        values["circuit_breaker_until"] = parse_timestamp(until)
        if values["circuit_breaker_until"] is None:
            raise StateError(f"circuit_breaker_until is not a timestamp: {until!r}", path)
    return RiskState(**values)
