"""Read signals from JSON Lines or CSV (a path or ``-`` for standard input).

A line that cannot be read becomes a malformed signal, rejected and audited like any other, and
what was wrong with it is kept as a ``Problem`` (its line, what to do) for the command to say; only
a file that cannot be opened, or a CSV whose header is not one of signals, is an error. The column
reader (``signal_columns``) reads lines and headers through the functions here, so both readers
decide every line alike.
"""
from __future__ import annotations

import csv
import difflib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from rulekit.errors import SignalError
from rulekit.model import SIGNAL_RECORD_FIELDS, Signal, record_problems

DELIMITERS = (",", ";", "\t", "|")
MALFORMED = "rejected as malformed_signal"


class Problem(NamedTuple):
    """Why one line was rejected as malformed: ``kind`` groups lines wrong in the same way."""

    line: int
    kind: str
    message: str


@dataclass
class SignalFile:
    signals: list[Signal]
    problems: list[Problem] = field(default_factory=list)


def read_signals(source: str) -> list[Signal]:
    return read_signal_file(source).signals


def read_signal_file(source: str) -> SignalFile:
    """The signals of ``source`` and the problems of the lines rejected as malformed."""
    if source == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, name = Path(source).read_text(encoding="utf-8"), source
        except (OSError, UnicodeDecodeError) as exc:
            raise SignalError(f"cannot read signals: {getattr(exc, 'strerror', None) or exc}",
                              source) from None
    out = SignalFile([])
    if is_csv(name, text):
        rows = csv_records(text, name)
    else:
        rows = (json_record(line, number) for number, line in enumerate(text.splitlines(), 1)
                if line.strip())
    for record, raw, problems in rows:
        out.signals.append(Signal.malformed(raw) if record is None else Signal.from_record(record))
        out.problems += problems
    return out


def is_csv(name: str, text: str) -> bool:
    """CSV by its name, else by content: JSON Lines start with an object."""
    if name.lower().endswith(".csv"):
        return True
    if name.lower().endswith((".jsonl", ".ndjson", ".json")):
        return False
    return not text.lstrip().startswith("{")


Row = tuple[dict | None, Any, list[Problem]]  # the record (None: not one), what the audit keeps


def json_record(line: str, number: int) -> Row:
    """One JSON line: its record, or None when it is not one object."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        return None, {"line": number, "text": line[:1000]}, [Problem(
            number, "not an object", f"not a JSON object: {MALFORMED} (one signal per line, "
                                     "{\"symbol\": ..., \"side\": ..., ...})")]
    return record, record, _problems(record, number)


def _problems(record: dict, number: int) -> list[Problem]:
    return [Problem(number, kind, f"{message}: {MALFORMED}")
            for kind, message in record_problems(record)]


def csv_records(text: str, name: str) -> Iterator[Row]:
    """Each row of a signals CSV as a record (``model_votes`` parsed from JSON when it is). The
    delimiter is the one that splits the header into signal fields (``,``, ``;``, tab or ``|``);
    a header with no signal field or with an unknown one refuses the file (every row would
    otherwise be misread)."""
    delimiter, header, header_line = csv_header(text, name)
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    for row in reader:
        if reader.line_num <= header_line or not row:
            continue
        if len(row) != len(header):
            yield None, {"line": reader.line_num, "fields": row[len(header):] or None}, [Problem(
                reader.line_num, "field count",
                f"{len(row)} values where the header has {len(header)}: {MALFORMED}")]
            continue
        record = dict(zip(header, row, strict=True))
        votes = record.get("model_votes")
        if votes:
            try:
                record["model_votes"] = json.loads(votes)
            except json.JSONDecodeError:
                pass
        yield record, record, _problems(record, reader.line_num)


def csv_header(text: str, name: str) -> tuple[str, list[str], int]:
    """The delimiter, the header's field names and its line, or a ``SignalError`` saying what to
    write instead."""
    lines = text.splitlines()
    number = next((n for n, line in enumerate(lines, 1) if line.strip()), 0)
    if not number:
        return ",", [], 0
    first = lines[number - 1]

    def known(delimiter: str) -> int:
        return sum(f.strip() in SIGNAL_RECORD_FIELDS for f in first.split(delimiter))

    delimiter = max(DELIMITERS, key=lambda d: (known(d), d == ","))
    header = [f.strip() for f in next(csv.reader([first], delimiter=delimiter))]
    if not known(delimiter):
        raise SignalError("no signal field in the CSV header (a signals CSV starts with a header "
                          "line such as symbol,side,consensus,confidence,timestamp)", name, number)
    for column in header:
        if column not in SIGNAL_RECORD_FIELDS:
            near = difflib.get_close_matches(column.lower(), SIGNAL_RECORD_FIELDS, n=1)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(SIGNAL_RECORD_FIELDS)}"
            raise SignalError(f"unknown column {column!r} in the header ({hint}); rename or "
                              "remove it", name, number)
    return delimiter, header, number


def summarise(problems: list[Problem], source: str, shown: int = 3) -> list[str]:
    """``source:line: message`` for the first lines of each kind of problem, and how many more
    lines share it: a file wrong on every line is a few lines to read, not thousands."""
    by_kind: dict[str, list[Problem]] = {}
    for problem in problems:
        by_kind.setdefault(problem.kind, []).append(problem)
    out = []
    for same in by_kind.values():
        out += [f"{source}:{p.line}: {p.message}" for p in same[:shown]]
        if len(same) > shown:
            out.append(f"{source}: {len(same) - shown:,} more line(s) like line {same[0].line}")
    return out
