"""Built-in plugin: candles from CSV and Parquet files (the format of ``../shared/data``).

Columns ``timestamp`` (the bar's OPEN time: ISO 8601, UTC unless it says otherwise, or epoch
seconds, ms or us), ``open``, ``high``, ``low``, ``close``, ``volume``, in any case; ``time``,
``date``, ``datetime`` or ``open_time`` may name the open time. A headerless file of 12 columns is
read as a Binance kline export (open time, open, high, low, close, volume, close time, ...); any
other headerless file is refused. A bad bar refuses the whole file, naming its
line: a wrong price must never reach a decision, and a bar skipped in silence would shift every
indicator after it. Rows out of order and exact duplicates are repaired (no guess needed) and noted
in ``Candles.problems`` with gaps and misaligned bars; two different bars for one time are refused.
"""
from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pa_parquet

from rulekit.errors import DataError
from rulekit.hookspecs import hookimpl
from rulekit.inputs.signal_files import DELIMITERS  # one set of delimiters for every CSV read
from rulekit.market.candles import Candles, Ticker
from rulekit.model import format_timestamp, normalise_symbol

COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
VALUES = COLUMNS[1:]
SUFFIXES = (".csv", ".parquet")
# <venue>_<BASE-QUOTE[-PERP]>_<timeframe>, e.g. crypto_BTC-USDT-PERP_5m
NAME = re.compile(r"^[A-Za-z0-9]+_(?P<pair>[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)_\d+[smhdwM]$")
EPOCH_MS_FROM = 10**11  # an integer this large is epoch ms (as seconds it would be the year 5138)
EPOCH_US_FROM = 10**14  # and this large epoch us (Binance's spot exports since 2025)
TIME_NAMES = ("timestamp", "time", "date", "datetime", "open_time")  # the bar's open time
BINANCE_KLINE = ("timestamp", "open", "high", "low", "close", "volume", "close_time",
                 "quote_volume", "trades", "taker_buy_volume", "taker_buy_quote_volume", "ignore")
LATEST_EPOCH = 4_102_444_800  # 2100-01-01 UTC


@hookimpl
def rulekit_market_data(source: str, options: Mapping[str, Any]):
    """Serve a local path ending in .csv or .parquet; decline the rest so another plugin may."""
    if "://" in source or not source.lower().endswith(SUFFIXES):
        return None
    if not Path(source).is_file():
        raise DataError(f"candle file {source} does not exist", source)
    return CandleFiles(source, options.get("symbol"), options.get("timeframe_seconds"))


class CandleFiles:
    """The ``MarketData`` of one file: one symbol, read and checked once, on first use."""

    def __init__(self, path: str | Path, symbol: str | None = None,
                 timeframe_seconds: int | None = None):
        self.path = Path(path)
        self.symbol = normalise_symbol(symbol) or symbol_from_name(self.path)
        self.timeframe_seconds = timeframe_seconds
        self._candles: Candles | None = None

    def symbols(self) -> list[str]:
        return [self.symbol]

    def candles(self, symbol: str, start: datetime | None = None,
                end: datetime | None = None) -> Candles:
        """Bars opened in [start, end); another symbol is an error, never another's prices."""
        if re.sub(r"[/_-]", "", symbol).upper() != re.sub(r"[/_-]", "", self.symbol).upper():
            raise DataError(f"{self.path.name} holds {self.symbol}, not {symbol}", str(self.path))
        if self._candles is None:
            self._candles = read_candles(self.path, self.symbol, self.timeframe_seconds)
        return between(self._candles, start, end)

    def ticker(self, symbol: str) -> Ticker | None:
        return None  # a candle file has no order book


def symbol_from_name(path: str | Path) -> str:
    """``crypto_BTC-USDT-PERP_5m.csv`` -> BTCUSDT; a name not in that pattern -> its stem, as a
    signal's symbol is read (``BTC-USDT.csv`` -> BTCUSDT, ``bars.csv`` -> BARS)."""
    match = NAME.match(Path(path).stem)
    return normalise_symbol(match["pair"] if match else Path(path).stem) or Path(path).stem


def between(candles: Candles, start: datetime | None = None,
            end: datetime | None = None) -> Candles:
    """The bars whose open time lies in [start, end), naive datetimes as UTC; views, not copies."""
    times = candles.timestamp
    lo = 0 if start is None else int(np.searchsorted(times, _epoch(start), side="left"))
    hi = len(times) if end is None else int(np.searchsorted(times, _epoch(end), side="left"))
    cut = slice(lo, max(lo, hi))
    return Candles(candles.symbol, candles.timeframe_seconds, times[cut], candles.open[cut],
                   candles.high[cut], candles.low[cut], candles.close[cut], candles.volume[cut],
                   candles.source, candles.problems)


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def read_candles(path: str | Path, symbol: str | None = None,
                 timeframe_seconds: int | None = None) -> Candles:
    """Read one candle file: refuse bad bars, sort, drop exact duplicates, note gaps (no pluggy)."""
    path = Path(path)
    is_csv = path.suffix.lower() == ".csv"
    names = _csv_names(path) if is_csv else None
    table = _read_table(path, is_csv, names)
    line = _line_numbers(path, is_csv, names is None or names[0] is None)
    given = table.column_names
    table = table.rename_columns(_canonical_names(given, path, is_csv))
    missing = [name for name in COLUMNS if name not in table.column_names]
    if missing:
        raise DataError(f"no {', '.join(missing)} column in {path.name} (it has: "
                        f"{', '.join(given)})", str(path), 1 if is_csv else None)
    if table.num_rows == 0:
        raise DataError(f"no bars in {path.name}", str(path))
    bad: dict[int, str] = {}  # row -> what is wrong, from every check: the first row is named
    times = _epoch_seconds(table.column("timestamp"), bad)
    values = _value_columns(table, bad)
    _refuse_bad_bars(times, values, bad, path, line)
    rows = np.arange(len(times))  # each bar's row in the file, for line numbers after sorting
    problems: list[str] = []
    back = np.flatnonzero(np.diff(times) < 0) + 1
    if len(back):
        problems.append(f"{len(back)} row(s) out of time order, sorted (at {_few(times[back])})")
        rows = np.argsort(times, kind="stable")
        times, values = times[rows], {name: column[rows] for name, column in values.items()}
    times, rows, values = _drop_duplicates(times, rows, values, path, line, problems)
    step = _timeframe(times, timeframe_seconds, path)
    problems += _spacing_problems(times, step)
    columns = [np.array(times, dtype=np.int64)] + [np.array(values[name]) for name in VALUES]
    for column in columns:  # the cache is shared by every caller: nobody may change a price
        column.flags.writeable = False
    return Candles(normalise_symbol(symbol) or symbol_from_name(path), step, *columns,
                   source=str(path),
                   problems=tuple(problems))


def _csv_names(path: Path) -> tuple[list[str] | None, list[str], str]:
    """(names to give a headerless file, or None when it has a header; its value columns as
    they are spelt; the delimiter). A first line that names no column and holds only numbers
    after its first field is a bar, not a header. The delimiter is the one of ``DELIMITERS``
    that splits the first line into the most fields (a comma on a tie), so a file saved with
    semicolons or tabs is read, not refused as one column."""
    with path.open("rb") as file:
        first = next((line for line in file if line.strip()), b"").decode("utf-8", "replace")
    if not first:
        return None, list(VALUES), ","  # empty: pyarrow says it cannot be read
    delimiter = max(DELIMITERS, key=lambda d: (first.count(d), d == ","))
    fields = [field.strip().strip('"') for field in first.strip().split(delimiter)]
    if any(f.lower() in (*COLUMNS, *TIME_NAMES) for f in fields) or not all(
            _number(f) == _number(f) for f in fields[1:]):
        return None, [f for f in fields if f.lower() in VALUES], delimiter
    if len(fields) == len(BINANCE_KLINE) and _number(fields[0]) == _number(fields[0]):
        return list(BINANCE_KLINE), list(VALUES), delimiter
    raise DataError(f"{path.name} has no header line (its first line is a bar); add "
                    f"{delimiter.join(COLUMNS)} as its first line, in its columns' order",
                    str(path), 1)


def _canonical_names(names: list[str], path: Path, is_csv: bool) -> list[str]:
    """Column names in lower case, the open time under any of ``TIME_NAMES`` as ``timestamp``;
    two columns that could be the open time are refused (which one is it?)."""
    lower = [name.strip().lower() for name in names]
    times = [name for name, low in zip(names, lower, strict=True) if low in TIME_NAMES]
    if len(times) > 1:
        raise DataError(f"{path.name} has {len(times)} columns that could be the bar's open time "
                        f"({', '.join(times)}); keep one, named timestamp", str(path),
                        1 if is_csv else None)
    return ["timestamp" if low in TIME_NAMES else low for low in lower]


def _read_table(path: Path, is_csv: bool, names=None) -> pa.Table:
    """Fast multi-threaded reading; if a CSV fails, a slow text reading that can tell the line."""
    column_names, values, delimiter = names or (None, list(VALUES), ",")
    read = pa_csv.ReadOptions(column_names=column_names)
    parse = pa_csv.ParseOptions(delimiter=delimiter)
    try:
        if not is_csv:
            return pa_parquet.read_table(path)
        return pa_csv.read_csv(path, read_options=read, parse_options=parse,
                               convert_options=pa_csv.ConvertOptions(
            column_types=dict.fromkeys(values, pa.float64())))
    except (OSError, pa.ArrowInvalid) as exc:
        if not is_csv or isinstance(exc, OSError):
            raise DataError(f"cannot read {path.name}: {str(exc).splitlines()[0]}",
                            str(path)) from None
    malformed: list[Any] = []
    try:  # without threads, pyarrow knows each malformed row's line
        table = pa_csv.read_csv(
            path, read_options=pa_csv.ReadOptions(use_threads=False, column_names=column_names),
            parse_options=pa_csv.ParseOptions(delimiter=delimiter,
                                              invalid_row_handler=lambda r: malformed.append(r)
                                              or "skip"),
            convert_options=pa_csv.ConvertOptions(column_types=dict.fromkeys(values, pa.string()),
                                                  strings_can_be_null=True))
    except pa.ArrowInvalid as exc:
        raise DataError(f"cannot read {path.name}: {str(exc).splitlines()[0]}", str(path)) from None
    if malformed:
        row = malformed[0]
        raise DataError(f"{row.actual_columns} values where the header has {row.expected_columns}",
                        str(path), row.number)
    return table  # values as text: _value_columns finds those that are not numbers


def _line_numbers(path: Path, is_csv: bool, header: bool = True) -> Callable[[int], int]:
    """Row -> line of the file (CSV: header = line 1, blank lines that pyarrow skips counted)."""
    if not is_csv:
        return lambda row: int(row) + 1
    lines = functools.cache(  # read only when an error needs a line
        lambda: [n for n, text in enumerate(path.read_bytes().splitlines(), 1) if text][
            1 if header else 0:])
    return lambda row: lines()[int(row)]


def _epoch_seconds(column: pa.ChunkedArray, bad: dict[int, str]) -> np.ndarray:
    """int64 epoch seconds from timestamps (naive = UTC), dates, epoch ms (or s) or ISO text."""
    nulls = column.is_null().to_numpy(zero_copy_only=False)
    if nulls.any():
        bad.setdefault(int(np.argmax(nulls)), "a bar without a timestamp")
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_date(kind):  # sub-seconds dropped; date: 00:00
        seconds = column.cast(pa.timestamp("s", getattr(kind, "tz", None)), safe=False)
        seconds = seconds.cast(pa.int64())
    elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
        number = column.cast(pa.float64())
        seconds = pc.if_else(pc.greater_equal(number, EPOCH_US_FROM), pc.floor(
            pc.divide(number, 1e6)), pc.if_else(pc.greater_equal(number, EPOCH_MS_FROM), pc.floor(
                pc.divide(number, 1000.0)), number))
    else:
        return _plausible(_text_seconds(column.cast(pa.string()).to_pylist(), bad), bad)
    values = seconds.to_numpy(zero_copy_only=False).astype(float)
    return _plausible(values, bad, nulls)


def _plausible(seconds: np.ndarray, bad: dict[int, str], missing=None) -> np.ndarray:
    """int64 epoch seconds; a time that is not finite or not between 1970 and 2100 is a bad row
    (an ``inf`` cast to int64 would otherwise sort first, a ``1e20`` overflow later)."""
    seconds = np.asarray(seconds, dtype=float)
    wrong = ~np.isfinite(seconds) | (seconds < 0) | (seconds > LATEST_EPOCH)
    if missing is not None:
        wrong &= ~missing  # already named as a bar without a timestamp
    if wrong.any():
        row = int(np.argmax(wrong))
        bad.setdefault(row, f"timestamp {seconds[row]!r} is not a time between 1970 and 2100")
    return np.where(wrong | ~np.isfinite(seconds), 0, seconds).astype(np.int64)


def _text_seconds(texts: list[str | None], bad: dict[int, str]) -> np.ndarray:
    """Timestamps pyarrow could not type: mixed zones, epoch ms beside ISO, or something wrong."""
    out = np.zeros(len(texts), dtype=np.int64)
    for row, value in enumerate(texts):
        text = (value or "").strip()
        try:
            if text.isdigit():
                out[row] = (int(text) // 10**6 if int(text) >= EPOCH_US_FROM else
                            int(text) // 1000 if int(text) >= EPOCH_MS_FROM else int(text))
            elif value is not None:
                out[row] = _epoch(datetime.fromisoformat(text))
        except ValueError:
            bad.setdefault(row, f"timestamp {value!r} is neither ISO 8601 nor epoch ms")
    return out


def _value_columns(table: pa.Table, bad: dict[int, str]) -> dict[str, np.ndarray]:
    """The value columns as float64: nulls and text that is not a number become NaN."""
    try:
        return {name: table.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
                for name in VALUES}
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        pass
    values = {}
    for name in VALUES:
        texts = table.column(name).to_pylist()
        values[name] = np.array([_number(text) for text in texts], dtype=np.float64)
        row = next((i for i, t in enumerate(texts) if t is not None and math.isnan(_number(t))), -1)
        if row >= 0:
            bad.setdefault(row, f"{name} {texts[row]!r} is not a number")
    return values


def _number(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _refuse_bad_bars(times: np.ndarray, v: dict[str, np.ndarray], bad: dict[int, str],
                     path: Path, line: Callable[[int], int]) -> None:
    """Fail closed on the first row (in file order) that cannot be a real bar."""
    op, hi, lo, cl, vol = (v[name] for name in VALUES)
    with np.errstate(invalid="ignore"):
        checks = (
            (~np.isfinite([op, hi, lo, cl, vol]).all(axis=0), "a missing or infinite value"),
            ((op <= 0) | (hi <= 0) | (lo <= 0) | (cl <= 0), "a price at or below zero"),
            (hi < lo, "high below low"),
            ((op < lo) | (op > hi) | (cl < lo) | (cl > hi), "open or close outside [low, high]"),
            (vol < 0, "negative volume"),
        )
    wrong = np.logical_or.reduce([mask for mask, _ in checks])
    if wrong.any():
        row = int(np.argmax(wrong))
        what = next(text for mask, text in checks if mask[row])
        shown = ", ".join(f"{name} {float(v[name][row])!r}" for name in VALUES)
        bad.setdefault(row, f"bar at {format_timestamp(times[row])} has {what} ({shown})")
    if bad:
        row = min(bad)
        raise DataError(f"{bad[row]}; the file is refused", str(path), line(row))


def _drop_duplicates(times, rows, values, path, line, problems):
    """Drop rows equal to the row before them in time; refuse two different bars for one time."""
    same = np.flatnonzero(np.diff(times) == 0) + 1
    if not len(same):
        return times, rows, values
    stacked = np.stack([values[name] for name in VALUES])
    conflicting = ~(stacked[:, same] == stacked[:, same - 1]).all(axis=0)
    if conflicting.any():
        at = same[int(np.argmax(conflicting))]
        first, second = sorted((line(rows[at - 1]), line(rows[at])))
        raise DataError(f"two different bars for {format_timestamp(times[at])} (lines {first} and "
                        f"{second}); refusing to guess which is true", str(path), second)
    problems.append(f"{len(same)} exact duplicate row(s) dropped (at {_few(times[same])})")
    return (np.delete(times, same), np.delete(rows, same),
            {name: np.delete(column, same) for name, column in values.items()})


def _timeframe(times: np.ndarray, override: Any, path: Path) -> int:
    """The override, else the most common spacing (a gap or an odd bar does not change it)."""
    if override is not None:
        if str(override).isdigit() and int(override) > 0:
            return int(override)
        raise DataError(f"timeframe_seconds {override!r} is not a number of seconds", str(path))
    spacing = np.diff(times)
    values, counts = np.unique(spacing[spacing > 0], return_counts=True)
    if len(values):
        return int(values[np.argmax(counts)])
    raise DataError("one bar does not tell its timeframe: pass timeframe_seconds", str(path))


def _spacing_problems(times: np.ndarray, step: int) -> list[str]:
    """Gaps (room for whole missing bars) and bars off the timeframe's grid."""
    spacing = np.diff(times)
    problems = []
    wide = spacing >= 2 * step
    if wide.any():
        missing = int(np.sum(spacing[wide] // step - 1))
        problems.append(f"{int(wide.sum())} gap(s), {missing} bar(s) missing (after "
                        f"{_few(times[:-1][wide])})")
    off = spacing % step != 0
    if off.any():
        problems.append(f"{int(off.sum())} misaligned bar(s), not a whole {step}s timeframe after "
                        f"the bar before (at {_few(times[1:][off])})")
    return problems


def _few(times: np.ndarray, shown: int = 3) -> str:
    """The first few timestamps, enough for a person to find the place."""
    return ", ".join(format_timestamp(int(t)) for t in times[:shown]) + (
        ", ..." if len(times) > shown else "")
