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


CHUNK_ROWS = 100_000  # lines assembled at once (an Arrow string array holds at most 2 GB)


def decision_lines(batch) -> list[str]:
    """The JSON line of every decision in ``batch``, newline included (``write_decision_lines``)."""
    out: list[str] = []
    for chunk in _line_chunks(batch):
        out += chunk.to_pylist()
    return out


def write_decision_lines(batch, out) -> None:
    """Write every decision's JSON line to the text stream ``out`` (through its byte buffer when it
    has one: the lines are assembled as UTF-8 already)."""
    raw = getattr(out, "buffer", None)
    if raw is not None:
        out.flush()
    for chunk in _line_chunks(batch):
        if raw is None:
            out.write("".join(chunk.to_pylist()))
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int32)[
            chunk.offset:chunk.offset + len(chunk) + 1]
        raw.write(memoryview(chunk.buffers()[2])[int(offsets[0]):int(offsets[-1])])
    if raw is not None:
        raw.flush()


def _line_chunks(batch):
    """The lines as Arrow string arrays of at most ``CHUNK_ROWS`` rows each, assembled column by
    column with Arrow's string kernels: the signal (id, symbol, side, market fields), the verdict,
    the levels, the policy and, for a rejection, ``failed``; an approval names its cap."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from rulekit.policy.vocabulary import SIZE_CAPS

    signals, rows = batch.signals, len(batch)
    policy = batch.engine.policy
    tail = (f', "policy_name": {quote(policy.name)}, "policy_version": {int(policy.version)}, '
            f'"policy_hash": {quote(policy.hash)}')
    compared = failed_texts(batch)
    cap_codes = batch.output("size_capped_by")
    caps = pa.array([f'{tail}, "size_capped_by": {quote(name)}}}\n' for name in SIZE_CAPS]
                    + [tail + "}\n"])
    for first in range(0, rows, CHUNK_ROWS):
        part = slice(first, min(rows, first + CHUNK_ROWS))
        approved = batch.approved[part]
        codes = cap_codes[part]
        cap = caps.take(pa.array(np.where(np.isfinite(codes), np.nan_to_num(codes),
                                          len(SIZE_CAPS)).astype(np.int64)))
        failed = compared[part]
        end = pc.if_else(pa.array(approved), cap, pc.binary_join_element_wise(
            tail + ', "failed": ', failed.fill_null("null"), "}\n", ""))
        pieces: list = ['{"signal_id": ', json_texts(signals.signal_id[part]), ', "symbol": ',
                        json_texts(signals.symbol[part]), ', "side": ',
                        json_texts(signals.side[part])]
        for name in MARKET_FIELDS:
            pieces += [f', "{name}": ', json_numbers(getattr(signals, name)[part])]
        pieces += [', "approved": ', _verdicts(batch, part, approved), end]
        yield pc.binary_join_element_wise(*pieces, "")


def _verdicts(batch, part: slice, approved: np.ndarray):
    """``true, "reason": null, "quantity": ...`` for an approval (its levels formatted for the
    approvals only), ``false, "reason": "...", "quantity": null, ...`` for a rejection."""
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = np.flatnonzero(approved)
    levels = ['true, "reason": null']
    for name in LEVEL_FIELDS:
        levels += [f', "{name}": ', json_numbers(batch.values[name][part][rows])]
    approvals = pc.binary_join_element_wise(*levels, "") if len(rows) else pa.array([], pa.string())
    reasons = np.asarray(batch.reason[part], dtype=object)
    names = sorted({reason for reason in reasons[~approved].tolist()})
    rejections = pa.array(['false, "reason": ' + quote(name) + "".join(
        f', "{level}": null' for level in LEVEL_FIELDS) for name in names], pa.string())
    index = np.empty(len(approved), dtype=np.int64)
    index[rows] = np.arange(len(rows))
    if names:
        where = {name: i for i, name in enumerate(names)}
        rejected = np.flatnonzero(~approved)
        index[rejected] = len(rows) + np.array([where[r] for r in reasons[rejected].tolist()],
                                               dtype=np.int64)
    return pa.concat_arrays([approvals, rejections]).take(pa.array(index))


PLAIN_TEXT = r"^[ !#-\[\]-~]*$"  # printable ASCII but '"' and '\\': JSON writes it as it is


def json_texts(values: np.ndarray):
    """JSON strings as an Arrow string array, ``null`` for an empty one or None (as the Signal's
    None): plain ASCII quoted as it is, anything else by the JSON encoder's own quoting."""
    import pyarrow as pa
    import pyarrow.compute as pc

    given = pa.array(values.tolist() if values.dtype == object else values, pa.string())
    given = pc.if_else(pc.equal(given, ""), pa.scalar(None, pa.string()), given)
    quoted = pc.binary_join_element_wise('"', given, '"', "")
    plain = pc.match_substring_regex(given, PLAIN_TEXT).fill_null(True)
    odd = np.flatnonzero(~plain.to_numpy(zero_copy_only=False))
    if len(odd):
        mask = np.zeros(len(given), dtype=bool)
        mask[odd] = True
        quoted = pc.replace_with_mask(quoted, pa.array(mask), pa.array(
            [quote(text) for text in given.take(pa.array(odd)).to_pylist()], pa.string()))
    return quoted.fill_null("null")


def json_numbers(values: np.ndarray):
    """JSON numbers as an Arrow string array, each as ``json.dumps`` writes a float (its
    ``repr``), ``null`` for NaN and infinities.

    Arrow's cast writes the same shortest digits as ``repr``; its text is ``repr``'s wherever it
    is positional with a point (checked against ``repr`` in the tests). Whole numbers below 1e16
    are their integer and ``.0``; the rest (below 1e-4, 1e16 and above, or where Arrow wrote an
    exponent) go through ``repr`` itself."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    size = np.abs(np.where(finite, values, 0.0))
    whole = finite & (np.floor(size) == size) & (size < 1e16)
    plain = finite & ~whole
    text = pc.cast(pa.array(values, mask=~plain), pa.string())  # null where not plain
    if whole.any():
        own = pc.binary_join_element_wise(pc.cast(pa.array(
            np.where(whole, values, 0.0).astype(np.int64), mask=~whole), pa.string()), ".0", "")
        text = pc.coalesce(text, own)
        negative_zero = whole & (values == 0) & np.signbit(values)
        if negative_zero.any():
            text = pc.if_else(pa.array(negative_zero), "-0.0", text)
    exponent = pc.match_substring(text, "e").fill_null(False).to_numpy(zero_copy_only=False)
    odd = plain & ((size < 1e-4) | (size >= 1e16) | exponent)
    if odd.any():
        text = pc.replace_with_mask(text, pa.array(odd), pa.array(
            list(map(float.__repr__, values[odd].tolist())), pa.string()))
    return text.fill_null("null")


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
    return failed_texts(batch).to_pylist()


def failed_texts(batch):
    """``failed_json`` as an Arrow string array (null for an approval), computed once per batch
    and kept on it: the audit's ``decisions.failed`` and the JSON lines read the same texts."""
    if batch.failed_json is None:
        import pyarrow as pa

        reasons = batch.reason
        parts, index = [], np.full(len(batch), -1, dtype=np.int64)
        done = 0
        for reason in sorted({r for r in reasons.tolist() if r}):
            where = np.flatnonzero(reasons == reason)
            parts.append(_failed(batch, reason, where))
            index[where] = np.arange(done, done + len(where))
            done += len(where)
        index[index < 0] = done  # approvals: the null after the rejections
        parts.append(pa.nulls(1, pa.string()))
        batch.failed_json = pa.concat_arrays(parts).take(pa.array(index))
    return batch.failed_json


def _failed(batch, reason: str, rows: np.ndarray):
    """``{...}`` for each of ``rows``, all rejected by ``reason``: every value the rule reads, by
    name (a malformed line gives its line number instead), as an Arrow string array."""
    import pyarrow as pa
    import pyarrow.compute as pc

    signals = batch.signals
    if reason == "malformed_signal":
        return pa.array([f'{{"line": {_line(signals.raw[row])}}}' for row in rows.tolist()],
                        pa.string())
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
            text = pc.if_else(pa.array(column.astype(bool)), "true", "false")
        elif kind == Type.TEXT:
            text = json_texts(np.asarray(column))
        else:
            text = json_numbers(column)
        varying.append((name, text))
    fixed_text = ", ".join(fixed)
    if not varying:
        return pa.array(["{" + fixed_text + "}"] * len(rows), pa.string())
    pieces: list = []
    for name, text in varying:
        pieces += [(", " if pieces else "{") + f'"{name}": ', text]
    pieces.append((", " + fixed_text if fixed else "") + "}")
    return pc.binary_join_element_wise(*pieces, "")


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
