"""Read signals from JSON Lines or CSV (a path or ``-`` for standard input).

A line that cannot be read becomes a malformed signal, rejected and audited like any other; only a
file that cannot be opened at all is an error.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from rulekit.errors import SignalError
from rulekit.model import Signal


def read_signals(source: str) -> list[Signal]:
    if source == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        try:
            text, name = Path(source).read_text(encoding="utf-8"), source
        except (OSError, UnicodeDecodeError) as exc:
            raise SignalError(f"cannot read signals: {getattr(exc, 'strerror', None) or exc}",
                              source) from None
    if is_csv(name, text):
        return _read_csv(text)
    return _read_json_lines(text)


def is_csv(name: str, text: str) -> bool:
    """CSV by its name, else by content: JSON Lines start with an object."""
    if name.lower().endswith(".csv"):
        return True
    if name.lower().endswith((".jsonl", ".ndjson", ".json")):
        return False
    return not text.lstrip().startswith("{")


def _read_json_lines(text: str) -> list[Signal]:
    signals = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            signals.append(Signal.malformed({"line": number, "text": line[:1000]}))
            continue
        if isinstance(record, dict):
            signals.append(Signal.from_record(record))
        else:
            signals.append(Signal.malformed({"line": number, "text": line[:1000]}))
    return signals


def _read_csv(text: str) -> list[Signal]:
    reader = csv.DictReader(io.StringIO(text))
    signals = []
    for row in reader:
        if None in row or any(value is None for value in row.values()):
            signals.append(Signal.malformed({"line": reader.line_num, "fields": row.get(None)}))
            continue
        votes = row.get("model_votes")
        if votes:
            try:
                row["model_votes"] = json.loads(votes)
            except json.JSONDecodeError:
                pass
        signals.append(Signal.from_record(row))
    return signals
