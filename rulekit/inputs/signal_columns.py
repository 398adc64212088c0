"""Read a signals file straight into ``SignalColumns``, with no ``Signal`` object per line.

The same decisions as ``read_signals`` + ``SignalColumns.from_signals`` (tests hold the two paths
to equal decisions and equal audit rows), at a fraction of the cost: JSON Lines go through
pyarrow's reader block by block, and a block it cannot be trusted with (a line that is not one
object, duplicate keys, mixed types, nested votes) is read line by line with ``json.loads`` into
column lists instead, so a malformed line is still decided as ``malformed_signal`` with its line
number. CSV is read by the ``csv`` module into column lists.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from rulekit.decision.engine import SignalColumns
from rulekit.errors import SignalError
from rulekit.inputs.signal_files import Problem, Row, csv_records, is_csv, json_record
from rulekit.model import NAN, SIGNAL_RECORD_FIELDS, as_number, as_text, normalise_symbol, parse_timestamp

TEXTS = ("symbol", "side", "consensus")
NUMBERS = ("confidence", "strength", "price", "atr", "ema_200", "volume_24h", "spread_bps",
           "equity")
MOMENTS = ("timestamp", "market_timestamp")
BLOCK_LINES = 32_768
# Line breaks str.splitlines() knows besides "\n" (and "\r", which universal newlines turn into
# "\n"): a file holding any of them is read line by line, to split exactly where read_signals does.
OTHER_BREAKS = (b"\r", b"\x0b", b"\x0c", b"\x1c", b"\x1d", b"\x1e", b"\xc2\x85", b"\xe2\x80\xa8",
                b"\xe2\x80\xa9")
ISO_UTC = (r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[T ]([01]\d|2[0-3]):[0-5]\d:[0-5]\d"
           r"(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$")


@dataclass
class SignalTable:
    """Signals as columns, and where each row came from (to give the audit its original record)."""

    columns: SignalColumns
    data: bytes = b""
    spans: np.ndarray | None = None  # (start, stop) in ``data`` of rows read without a record
    problems: list[Problem] = dataclasses.field(default_factory=list)  # of the lines rejected as malformed

    def keep_input_records(self, batch) -> None:
        """Give the rows of ``batch`` rejected by an input check their original record, parsed
        again from their line: the audit keeps those signals' raw input, and rows read as columns
        only have none yet."""
        steps = batch.engine.program.check_steps
        inputs = sum(1 for step in steps if step.section == "inputs")
        rejected = np.flatnonzero(~batch.checks[:, :inputs].all(axis=1))
        raw = self.columns.raw
        for row in rejected.tolist():
            if raw[row] is None and self.spans is not None and self.spans[row, 1] >= 0:
                start, stop = self.spans[row].tolist()
                raw[row] = json.loads(self.data[start:stop])


def read_signal_columns(source: str) -> SignalTable:
    """Signals from a JSON Lines or CSV file, or ``-`` for standard input, as columns."""
    if source == "-":
        text, name = sys.stdin.read(), "<stdin>"
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes kept as surrogates: line by line
            data = OTHER_BREAKS[0]
    else:
        try:
            data, name = Path(source).read_bytes(), source
            text = data.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SignalError(f"cannot read signals: {getattr(exc, 'strerror', None) or exc}",
                              source) from None
    if is_csv(name, text):
        return _table(csv_records(_universal(text), name))
    if any(mark in data for mark in OTHER_BREAKS[:6]) or (
            not data.isascii() and any(mark in data for mark in OTHER_BREAKS[6:])):
        return _table(_json_records(_universal(text).splitlines(), 1))
    return _json_lines(data)


def _universal(text: str) -> str:
    """The text as ``Path.read_text`` gives it: every "\\r\\n" and "\\r" read as "\\n"."""
    return text.replace("\r\n", "\n").replace("\r", "\n") if "\r" in text else text


def _json_lines(data: bytes) -> SignalTable:
    """JSON Lines with only "\\n" breaks, in blocks of lines: pyarrow where every line is one
    object, ``json.loads`` line by line elsewhere."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    breaks = np.flatnonzero(buffer == 10)
    starts = np.concatenate(([0], breaks + 1))
    stops = np.concatenate((breaks, [len(data)]))
    parts, spans, problems = [], [], []
    for first in range(0, len(starts), BLOCK_LINES):
        begin, end = starts[first:first + BLOCK_LINES], stops[first:first + BLOCK_LINES]
        filled = end > begin
        begin, end, line_numbers = begin[filled], end[filled], np.flatnonzero(filled) + first + 1
        if not len(begin):
            continue
        columns = None
        if bool(np.all((buffer[begin] == ord("{")) & (buffer[end - 1] == ord("}")))):
            columns = _arrow_columns(data[begin[0]:end[-1]], len(begin))
        if columns is None:
            lines = data[begin[0]:end[-1]].decode("utf-8").split("\n")
            table = _table(_json_records(lines, int(line_numbers[0])))
            part = table.columns
            problems += table.problems
            parts.append(part)
            spans.append(np.full((part.rows, 2), -1, dtype=np.int64))
        else:
            parts.append(columns)
            spans.append(np.column_stack((begin, end)))
    if not parts:
        return _table(iter(()))
    return SignalTable(_concatenate(parts), data, np.concatenate(spans), problems)


def _arrow_columns(block: bytes, lines: int) -> SignalColumns | None:
    """One block through pyarrow, or None where its reading could differ from ``json.loads``."""
    import pyarrow as pa
    import pyarrow.json as pa_json

    # text fields declared as text: pyarrow would read "2026-11-24T12:00:00Z" as a timestamp[s]
    text = pa.schema([(name, pa.string()) for name in (*TEXTS, "signal_id", *MOMENTS)])
    options = pa_json.ParseOptions(explicit_schema=text, unexpected_field_behavior="infer")
    try:
        table = pa_json.read_json(pa.py_buffer(block), parse_options=options)
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows != lines:  # two objects on one line, which json.loads refuses
        return None
    present = set(table.column_names)
    if not present <= set(SIGNAL_RECORD_FIELDS):
        return None  # an unknown field makes its lines malformed: say which, line by line
    if "model_votes" in present and table["model_votes"].null_count < table.num_rows:
        return None  # nested votes come back as structs padded with nulls: keep them as written
    rows = table.num_rows

    def column(name: str):
        return table[name].combine_chunks() if name in present else None

    texts, numbers, moments = {}, {}, {}
    for name in TEXTS:
        texts[name] = _arrow_texts(column(name), rows, name)
    for name in NUMBERS:
        numbers[name] = _arrow_numbers(column(name), rows)
    for name in MOMENTS:
        moments[name] = _arrow_moments(column(name), rows)
        if moments[name] is not None and _unreadable(column(name), moments[name]):
            return None  # a time that cannot be read makes its line malformed: say which
    if any(value is None for value in (*texts.values(), *numbers.values(), *moments.values())):
        return None
    signal_id = _arrow_ids(column("signal_id"), rows)
    if signal_id is None:
        return None
    return SignalColumns(well_formed=np.ones(rows, dtype=bool), **texts, **numbers, **moments,
                         history_bars=np.full(rows, NAN), signal_id=signal_id,
                         model_votes=[None] * rows, raw=[None] * rows)


def _kind(column) -> str:
    import pyarrow.types as t

    if column is None or t.is_null(column.type):
        return "missing"
    if t.is_string(column.type) or t.is_large_string(column.type):
        return "text"
    if t.is_floating(column.type) or t.is_integer(column.type):
        return "number"
    if t.is_boolean(column.type):
        return "bool"
    return "other"


def _unreadable(column, moments: np.ndarray) -> bool:
    """A time was given (not null, not blank) that did not read as one."""
    if column is None or not np.isnan(moments).any():
        return False
    import pyarrow.compute as pc

    given = column.is_valid()
    if _kind(column) == "text":
        given = pc.and_(given, pc.not_equal(pc.utf8_trim_whitespace(column), ""))
    return bool(np.any(np.isnan(moments) & given.fill_null(False).to_numpy(zero_copy_only=False)))


def _arrow_texts(column, rows: int, name: str) -> np.ndarray | None:
    kind = _kind(column)
    if kind in ("missing", "number", "bool"):  # as_text of a non-string is None
        return np.full(rows, "", dtype=str)
    if kind != "text":
        return None
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(column)
    words = [_text(word, name) for word in encoded.dictionary.to_pylist()] + [""]
    index = encoded.indices.fill_null(len(words) - 1).to_numpy(zero_copy_only=False)
    return np.array(words, dtype=str)[index].reshape(-1)


def _arrow_numbers(column, rows: int) -> np.ndarray | None:
    kind = _kind(column)
    if kind in ("missing", "bool"):  # as_number of a bool is NaN
        return np.full(rows, NAN)
    if kind == "number":
        return np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)
    if kind == "text":
        return np.array([as_number(value) for value in column.to_pylist()], dtype=float)
    return None


def _arrow_moments(column, rows: int) -> np.ndarray | None:
    """Epoch seconds: canonical ISO 8601 UTC-offset strings cast by pyarrow (to whole
    microseconds, as ``datetime`` keeps them), anything else through ``parse_timestamp``."""
    kind = _kind(column)
    if kind == "missing":
        return np.full(rows, NAN)
    if kind in ("number", "bool"):
        return _moments(column.to_pylist())
    if kind != "text":
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    if column.null_count == len(column):
        return np.full(rows, NAN)
    canonical = pc.match_substring_regex(column, ISO_UTC).fill_null(True)
    if not pc.all(canonical).as_py():
        return _moments(column.to_pylist())
    try:
        micros = pc.cast(column, pa.timestamp("us", tz="UTC")).cast(pa.int64())
    except pa.ArrowException:
        return _moments(column.to_pylist())
    return np.asarray(micros.to_numpy(zero_copy_only=False), dtype=float) / 1e6


def _arrow_ids(column, rows: int) -> np.ndarray | None:
    kind = _kind(column)
    if kind == "missing":
        return np.full(rows, "", dtype=object)
    if kind == "text":
        return np.asarray(column.fill_null("").to_numpy(zero_copy_only=False), dtype=object)
    return None  # str() of a JSON number depends on how it was written (1 or 1.0)


def _concatenate(parts: list[SignalColumns]) -> SignalColumns:
    if len(parts) == 1:
        return parts[0]
    joined: dict[str, Any] = {}
    for field in fields(SignalColumns):
        values = [getattr(part, field.name) for part in parts]
        joined[field.name] = (np.concatenate(values) if isinstance(values[0], np.ndarray)
                              else [value for part in values for value in part])
    return SignalColumns(**joined)


# --- line by line: json.loads (or csv) into column lists ----------------------------------------

def _json_records(lines: list[str], first_line: int) -> Iterator[Row]:
    """Each non-blank line as ``read_signals`` reads it (``json_record``)."""
    for number, line in enumerate(lines, start=first_line):
        if line.strip():
            yield json_record(line, number)


def _table(rows: Iterable[Row]) -> SignalTable:
    """Columns of the rows read line by line (``{}`` for a line that is not a record), and the
    problems of those rejected as malformed."""
    records, well_formed, raw, problems = [], [], [], []
    for record, kept, found in rows:
        records.append({} if record is None else record)
        well_formed.append(record is not None and not found)
        raw.append(kept)
        problems += found
    return SignalTable(_record_columns(records, well_formed, raw), problems=problems)


def _record_columns(records: list[dict], well_formed: list[bool], raw: list) -> SignalColumns:
    """Columns from records with ``Signal.from_record``'s reading of every field."""
    def values(name: str) -> list:
        return [record.get(name) for record in records]

    rows = len(records)
    return SignalColumns(
        well_formed=np.array(well_formed, dtype=bool).reshape(-1),
        **{name: _texts(values(name), name) for name in TEXTS},
        **{name: _numbers(values(name)) for name in NUMBERS},
        **{name: _moments(values(name)) for name in MOMENTS},
        history_bars=np.full(rows, NAN),
        signal_id=np.array(["" if value in (None, "") else str(value)
                            for value in values("signal_id")], dtype=object).reshape(-1),
        model_votes=values("model_votes"), raw=raw)


def _text(value: Any, name: str) -> str:
    """A text field as ``Signal.from_record`` reads it: the symbol normalised, others upper."""
    if name == "symbol":
        return normalise_symbol(value) or ""
    text = as_text(value)
    return "" if text is None else text.upper()


def _texts(values: list, name: str) -> np.ndarray:
    words = {value: _text(value, name) for value in values if type(value) is str}
    return np.array([words[value] if type(value) is str else "" for value in values],
                    dtype=str).reshape(-1)


def _numbers(values: list) -> np.ndarray:
    if all(type(value) is float for value in values):
        return np.array(values, dtype=float).reshape(-1)
    return np.array([as_number(value) for value in values], dtype=float).reshape(-1)


def _moments(values: list) -> np.ndarray:
    seen: dict[Any, float] = {}
    out = np.empty(len(values))
    for i, value in enumerate(values):
        key = (type(value), value) if isinstance(value, (str, int, float)) else None
        if key is not None and key in seen:
            out[i] = seen[key]
            continue
        moment = parse_timestamp(value)
        out[i] = moment.timestamp() if moment is not None else NAN
        if key is not None:
            seen[key] = out[i]
    return out

