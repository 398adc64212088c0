"""Built-in plugin: candles from CSV and Parquet files (the format of ``../shared/data``).

Columns ``timestamp`` (ISO 8601 UTC or epoch milliseconds; the bar's OPEN time), ``open``, ``high``,
``low``, ``close``, ``volume`` (base units). A bad bar (missing value, non-positive price, high below
low, open/close outside the range, negative volume) refuses the whole file with its line: a wrong
price must never reach a decision. Gaps, out-of-order rows and exact duplicates are kept as notes
(``Candles.problems``); two different bars for the same time are refused (we cannot know which is
true).
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rulekit.errors import DataError
from rulekit.hookspecs import hookimpl
from rulekit.market_data import Candles, Ticker
from rulekit.model import format_timestamp

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
SUFFIXES = (".csv", ".parquet")
NAME = re.compile(r"^[A-Za-z0-9]+_(?P<pair>[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)_\d+[smhdwM]$")


@hookimpl
def rulekit_market_data(source: str, options: Mapping[str, Any]):
    """Serve a path ending in .csv or .parquet; decline anything else."""
    if not source.lower().endswith(SUFFIXES):
        return None
    path = Path(source)
    if not path.is_file():
        raise DataError("no such candle file", source)
    return CandleFile(path, options.get("symbol"), options.get("timeframe_seconds"))


class CandleFile:
    """One file, one symbol; parsed once, on first use."""

    def __init__(self, path: Path, symbol: str | None = None,
                 timeframe_seconds: int | None = None):
        self.path = path
        self.symbol = symbol or symbol_from_name(path)
        self.timeframe_seconds = timeframe_seconds
        self._candles: Candles | None = None

    def symbols(self) -> list[str]:
        return [self.symbol]

    def candles(self, symbol: str, start: datetime | None = None,
                end: datetime | None = None) -> Candles:
        if symbol != self.symbol:
            raise DataError(f"this file holds {self.symbol}, not {symbol}", str(self.path))
        if self._candles is None:
            self._candles = read_candles(self.path, self.symbol, self.timeframe_seconds)
        return between(self._candles, start, end)

    def ticker(self, symbol: str) -> Ticker | None:
        return None  # a candle file has no order book


def symbol_from_name(path: Path) -> str:
    """``crypto_BTC-USDT-PERP_5m.csv`` -> BTCUSDT; a name not in that pattern -> its stem, upper."""
    match = NAME.match(path.stem)
    if not match:
        return path.stem.upper()
    parts = [p for p in match.group("pair").split("-") if p.upper() != "PERP"]
    return "".join(parts).upper()


def between(candles: Candles, start: datetime | None, end: datetime | None) -> Candles:
    """The bars whose open time lies in [start, end)."""
    if start is None and end is None:
        return candles
    times = candles.timestamp
    lo = 0 if start is None else int(np.searchsorted(times, start.timestamp(), side="left"))
    hi = len(times) if end is None else int(np.searchsorted(times, end.timestamp(), side="left"))
    cut = slice(lo, hi)
    return Candles(candles.symbol, candles.timeframe_seconds, times[cut], candles.open[cut],
                   candles.high[cut], candles.low[cut], candles.close[cut], candles.volume[cut],
                   candles.source, candles.problems)


def read_candles(path: str | Path, symbol: str | None = None,
                 timeframe_seconds: int | None = None) -> Candles:
    """Read, check and order one candle file."""
    path = Path(path)
    table = _read_table(path)
    missing = [name for name in COLUMNS if name not in table.column_names]
    if missing:
        raise DataError(f"missing column(s): {', '.join(missing)}", str(path), 1)
    first_line = 2 if path.suffix.lower() == ".csv" else 1  # CSV: line 1 is the header
    times = _epoch_seconds(table.column("timestamp"), path)
    values = {}
    for name in COLUMNS[1:]:
        try:
            values[name] = table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            row = next(i for i, text in enumerate(table.column(name).to_pylist())
                       if not _is_number(text))
            raise DataError(f"{name} {table.column(name)[row].as_py()!r} is not a number",
                            str(path), row + first_line) from None
    _refuse_bad_bars(times, values, path, first_line)
    problems: list[str] = []
    order = np.argsort(times, kind="stable")
    if np.any(order != np.arange(len(times))):
        problems.append(f"{int(np.count_nonzero(np.diff(times) < 0))} row(s) out of time order: "
                        "sorted")
        times = times[order]
        values = {name: column[order] for name, column in values.items()}
    times, values = _drop_duplicates(times, values, path, problems)
    step = timeframe_seconds or _timeframe(times)
    if len(times) > 1:
        gaps = np.diff(times)
        wide = gaps > step
        if wide.any():
            missing_bars = int(np.sum(gaps[wide] // step - 1))
            firsts = ", ".join(format_timestamp(t) for t in times[:-1][wide][:3])
            problems.append(f"{int(wide.sum())} gap(s), {missing_bars} bar(s) missing "
                            f"(first after {firsts})")
        narrow = gaps < step
        if narrow.any():
            problems.append(f"{int(narrow.sum())} bar(s) closer than the {step}s timeframe")
    return Candles(symbol or symbol_from_name(path), int(step), times, values["open"],
                   values["high"], values["low"], values["close"], values["volume"],
                   source=str(path), problems=tuple(problems))


def _read_table(path: Path) -> pa.Table:
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq
            return pq.read_table(path)
        from pyarrow import csv
        return csv.read_csv(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DataError(f"cannot read candles: {str(exc).splitlines()[0]}", str(path)) from None


def _epoch_seconds(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    """ISO 8601 text (UTC when no zone) or epoch milliseconds, as int64 epoch seconds."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        seconds = pc.cast(column, pa.timestamp("s", tz=kind.tz)).cast(pa.int64())
        return seconds.to_numpy(zero_copy_only=False)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return (column.cast(pa.float64()).to_numpy(zero_copy_only=False) // 1000).astype(np.int64)
    text = column.cast(pa.string()).to_pylist()
    if text and text[0] is not None and text[0].strip().isdigit():
        try:
            return np.array([int(t) // 1000 for t in text], dtype=np.int64)
        except (TypeError, ValueError):
            pass
    out = np.empty(len(text), dtype=np.int64)
    for row, value in enumerate(text):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except (AttributeError, ValueError):
            raise DataError(f"timestamp {value!r} is not ISO 8601", str(path), row + 2) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        out[row] = int(moment.timestamp())
    return out


def _refuse_bad_bars(times: np.ndarray, v: dict[str, np.ndarray], path: Path,
                     first_line: int) -> None:
    o, h, l, c, vol = v["open"], v["high"], v["low"], v["close"], v["volume"]
    with np.errstate(invalid="ignore"):
        checks = (
            (~np.isfinite(np.stack([o, h, l, c, vol])).all(axis=0), "a missing or non-numeric value"),
            ((o <= 0) | (h <= 0) | (l <= 0) | (c <= 0), "a price at or below zero"),
            (h < l, "high below low"),
            ((o < l) | (o > h) | (c < l) | (c > h), "open or close outside the bar's range"),
            (vol < 0, "negative volume"),
        )
    for bad, what in checks:
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"bar at {format_timestamp(times[row])} has {what}; the file is refused",
                            str(path), row + first_line)


def _drop_duplicates(times: np.ndarray, values: dict[str, np.ndarray], path: Path,
                     problems: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    same = np.flatnonzero(np.diff(times) == 0) + 1
    if not len(same):
        return times, values
    stacked = np.stack([values[name] for name in COLUMNS[1:]])
    conflicting = ~(stacked[:, same] == stacked[:, same - 1]).all(axis=0)
    if conflicting.any():
        at = format_timestamp(times[same[int(np.argmax(conflicting))]])
        raise DataError(f"two different bars for {at}; refusing to guess which is true", str(path))
    keep = np.ones(len(times), dtype=bool)
    keep[same] = False
    problems.append(f"{len(same)} duplicate row(s) dropped (first at {format_timestamp(times[same[0]])})")
    return times[keep], {name: column[keep] for name, column in values.items()}


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return text is None
    return True


def _timeframe(times: np.ndarray) -> int:
    """The most common spacing between bars."""
    gaps = np.diff(times)
    gaps = gaps[gaps > 0]
    if not len(gaps):
        return 60
    spacing, counts = np.unique(gaps, return_counts=True)
    return int(spacing[np.argmax(counts)])

