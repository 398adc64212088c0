"""What a decision compared, and ``evaluate --json``'s compact line per decision, from columns.

``failed_json`` gives, for each rejection, the values its failing rule compared (its inputs,
formulas and params; a malformed line's number): the audit's ``decisions.failed``, the table's
``--explain`` and the JSON lines' ``failed`` all read it, computed once per batch.

Each line holds the signal (id, symbol, side, market fields), the verdict, the size and levels, the
policy's identity and, for a rejection, ``failed``: the values the failing rule compared (its
inputs, formulas and params). The full per-rule trace is ``--explain``. The lines are formatted
from columns with the JSON encoder's own string quoting and ``float.__repr__``, as ``json.dumps``
would write them, but without a dict and a trace of some 60 rules per decision.
"""
from __future__ import annotations

from json.encoder import encode_basestring_ascii as quote

import numpy as np

from rulekit.model import LEVEL_FIELDS
from rulekit.policy import vocabulary
from rulekit.policy.expressions import Type

MARKET_FIELDS = ("price", "atr", "ema_200", "volume_24h", "spread_bps")
MARKET_RULES = ("amount_step_units", "amount_step_scale", "min_notional", "min_amount")


def decision_lines(batch) -> list[str]:
    """The JSON line of every decision in ``batch``, newline included."""
    signals, rows = batch.signals, len(batch)
    policy = batch.engine.policy
    tail = (f', "policy_name": {quote(policy.name)}, "policy_version": {int(policy.version)}, '
            f'"policy_hash": {quote(policy.hash)}')
    market = [numbers(getattr(signals, name)) for name in MARKET_FIELDS]
    verdicts: list[str | None] = [None] * rows
    approved = np.flatnonzero(batch.approved)
    if len(approved):
        levels = [numbers(batch.values[name][approved]) for name in LEVEL_FIELDS]
        fill = "true, \"reason\": null" + "".join(f', "{name}": %s' for name in LEVEL_FIELDS)
        for row, values in zip(approved.tolist(), zip(*levels, strict=True), strict=True):
            verdicts[row] = fill % values
    ends = [tail + "}\n"] * rows
    reasons = batch.reason
    compared = failed_json(batch)
    for reason in sorted({r for r in reasons.tolist() if r}):
        where = np.flatnonzero(reasons == reason)
        rejected = "false, \"reason\": " + quote(reason) + "".join(
            f', "{name}": null' for name in LEVEL_FIELDS)
        for row in where.tolist():
            verdicts[row] = rejected
            ends[row] = tail + ', "failed": ' + str(compared[row]) + "}\n"
    template = ('{"signal_id": %s, "symbol": %s, "side": %s, "price": %s, "atr": %s, '
                '"ema_200": %s, "volume_24h": %s, "spread_bps": %s, "approved": %s%s')
    return [template % fields for fields in zip(
        texts(signals.signal_id), texts(signals.symbol), texts(signals.side), *market, verdicts,
        ends, strict=True)]


def texts(values: np.ndarray) -> list[str]:
    """JSON strings, ``null`` for an empty one (as the Signal's None)."""
    quoted: dict[str, str] = {}
    out = []
    for value in values.tolist():
        text = quoted.get(value)
        if text is None:
            text = quoted[value] = quote(value) if value else "null"
        out.append(text)
    return out


def numbers(values: np.ndarray) -> list[str]:
    """JSON numbers as ``json.dumps`` writes a float, ``null`` for NaN and infinities."""
    values = np.asarray(values, dtype=float)
    out = ["null"] * len(values)
    finite = np.flatnonzero(np.isfinite(values))
    for row, text in zip(finite.tolist(), map(float.__repr__, values[finite].tolist()),
                         strict=True):
        out[row] = text
    return out


def failed_json(batch) -> list[str | None]:
    """For each decision of ``batch``, the JSON object of the values its failing rule compared
    (None for an approval), e.g. ``{"confidence": 0.68, "min_confidence": 0.7}``."""
    if batch.failed_json is None:
        out: list[str | None] = [None] * len(batch)
        reasons = batch.reason
        for reason in sorted({r for r in reasons.tolist() if r}):
            where = np.flatnonzero(reasons == reason)
            for row, text in zip(where.tolist(), _failed(batch, reason, where), strict=True):
                out[row] = text
        batch.failed_json = out
    return batch.failed_json


def _failed(batch, reason: str, rows: np.ndarray) -> list[str]:
    """``{...}`` for each of ``rows``, all rejected by ``reason``: every value the rule reads, by
    name (a malformed line gives its line number instead)."""
    signals = batch.signals
    if reason == "malformed_signal":
        return [f'{{"line": {_line(signals.raw[row])}}}' for row in rows.tolist()]
    step = next(s for s in batch.engine.policy.steps if s.is_check and s.name == reason)
    constants = {name: value for name, value in batch.engine.policy.constants().items()
                 if name not in vocabulary.CONSTANTS}  # infinity, the consensus types
    kinds = {s.name: s.expression.type for s in batch.engine.policy.steps if not s.is_check}
    fixed, varying = [], []
    for name in sorted(step.expression.names):
        if name in vocabulary.CONSTANTS:
            continue
        if name in constants:
            value = constants[name]
            if not isinstance(value, tuple):
                fixed.append(f'"{name}": {_scalar(value)}')
            continue
        column = _column(batch, name, rows)
        if column is None:
            continue
        kind = kinds.get(name) or vocabulary.INPUTS.get(name, (Type.NUMBER,))[0]
        if kind == Type.BOOL:
            varying.append((name, ["true" if v else "false" for v in column.astype(bool).tolist()]))
        elif kind == Type.TEXT:
            varying.append((name, texts(column)))
        else:
            varying.append((name, numbers(column)))
    fixed_text = ", ".join(fixed)
    if not varying:
        return ["{" + fixed_text + "}"] * len(rows)
    pattern = "{" + ", ".join(
        [f'"{name}": %s' for name, _ in varying] + ([fixed_text.replace("%", "%%")] if fixed
                                                      else [])) + "}"
    return [pattern % values for values in zip(*(v for _, v in varying), strict=True)]


def _column(batch, name: str, rows: np.ndarray) -> np.ndarray | None:
    """The value of input or formula ``name`` at ``rows``, or None where it is not kept."""
    signals, account = batch.signals, batch.account
    if name in batch.values:
        return batch.values[name][rows]
    if name in account:
        return np.asarray(account[name])[rows]
    if name == "market_data_age_seconds":
        seen = signals.market_timestamp[rows]
        return np.where(np.isnan(seen), 0.0, np.asarray(account["decided_at"])[rows] - seen)
    if name == "circuit_breaker_active":
        return (np.asarray(account["decided_at"])[rows]
                < np.asarray(account["circuit_breaker_until"])[rows])
    if name in MARKET_RULES:
        unknown = (np.nan,) * 4
        index = MARKET_RULES.index(name)
        return np.array([batch.engine.markets.get(symbol, unknown)[index]
                         for symbol in signals.symbol[rows].tolist()], dtype=float)
    column = getattr(signals, name, None)
    return column[rows] if isinstance(column, np.ndarray) else None


def _scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quote(value)
    return numbers(np.array([value], dtype=float))[0]


def _line(raw) -> str:
    line = raw.get("line") if isinstance(raw, dict) else None
    return str(int(line)) if isinstance(line, int) else "null"
