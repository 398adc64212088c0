"""Which candles a command was given, and whether they fit the signals and the policy.

A candle file's symbol comes from its name (``crypto_BTC-USDT-PERP_5m.csv`` -> BTCUSDT) unless the
source names it (``BTCUSDT=bars.csv``). Before anything is decided, every file must be of a market
the policy lists, no two files may hold one symbol, every symbol a signal trades must have bars
(where trades are driven by them), and what would be ignored is said: a file no signal trades,
signals outside their candles' time. A trade on a symbol without bars would stay open for ever,
and a backtest on an unlisted market would report "approved 0" as if that were a result.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rulekit.market.candles import Candles
from rulekit.model import Signal, format_timestamp, normalise_symbol

NAMED = re.compile(r"^(?P<symbol>[A-Za-z0-9][A-Za-z0-9/:_.-]*)=(?P<path>.+)$")


@dataclass(frozen=True)
class CandleSource:
    """A candle source as given on the command line: ``PATH`` or ``SYMBOL=PATH``."""

    given: str
    path: str
    symbol: str | None = None  # named by the user; None: the file name (or the plugin) says

    @classmethod
    def parse(cls, given: str) -> CandleSource:
        match = NAMED.match(given)
        if match is None or Path(given).exists():
            return cls(given, given)
        return cls(given, match["path"], normalise_symbol(match["symbol"]))

    def absolute(self) -> str:
        """As given, the path made absolute where it is a file (for a run's recorded inputs)."""
        path = Path(self.path)
        where = str(path.resolve()) if path.exists() else self.path
        return f"{self.symbol}={where}" if self.symbol else where

    def origin(self) -> str:
        if self.symbol:
            return f"named in {self.given}"
        if self.path.lower().endswith((".csv", ".parquet")):
            return "from the file name"
        return "as its source names it"


@dataclass(frozen=True)
class LoadedCandles:
    source: CandleSource
    candles: Candles


def market_problems(loaded: Sequence[LoadedCandles], policy) -> list[str]:
    """One line per file of a market the policy does not list, and per symbol given twice."""
    problems = []
    seen: dict[str, CandleSource] = {}
    for item in loaded:
        symbol, source = item.candles.symbol, item.source
        if symbol in seen:
            problems.append(f"{seen[symbol].given} and {source.given} both hold {symbol}: give "
                            "one file per symbol")
        seen[symbol] = source
        if symbol not in policy.markets:
            problems.append(
                f"{source.given}: its symbol {symbol} ({source.origin()}) is not in the markets "
                f"of {policy.path}: add `markets: {{{symbol}: {{amount_step: ..., min_notional: "
                f"...}}}}` there, or name the file's symbol as SYMBOL={source.path}")
    return problems


@dataclass
class Coverage:
    """What ``coverage`` found: errors refuse the command, notes are said and it goes on."""

    errors: list[str]
    notes: list[str]


def coverage(loaded: Sequence[LoadedCandles], signals: Sequence[Signal], policy,
             bars_drive_trades: bool) -> Coverage:
    """Do the candles serve the signals? ``bars_drive_trades``: the candles are the market
    trades fill and exit on (``--bars``, backtests), not only where market fields come from."""
    out = Coverage([], [])
    traded: dict[str, list[Signal]] = {}
    for signal in signals:
        if signal.well_formed and signal.symbol is not None and signal.symbol in policy.markets:
            traded.setdefault(signal.symbol, []).append(signal)
    held = {item.candles.symbol: item for item in loaded}
    unused = [item for item in loaded if item.candles.symbol not in traded
              and item.candles.symbol in policy.markets]  # (an unlisted one is said already)
    hint = ""
    if len(unused) == 1:
        hint = f" (name a file's symbol as SYMBOL=PATH, e.g. SYMBOL={unused[0].source.path})"
    for symbol, its in traded.items():
        if symbol in held:
            continue
        what = (f"no bars for {symbol}, which {len(its):,} signal(s) trade: an approved trade "
                "would never see a price" if bars_drive_trades else
                f"no candles for {symbol}, which {len(its):,} signal(s) trade: they keep only "
                "the market fields they carry")
        (out.errors if bars_drive_trades else out.notes).append(what + hint)
    for item in unused:
        out.notes.append(f"{item.source.given}: no signal trades {item.candles.symbol} "
                         f"({item.source.origin()}): its bars are not used")
    for symbol, its in traded.items():
        if symbol in held:
            note = _outside(held[symbol], its, bars_drive_trades)
            if note:
                out.notes.append(note)
    return out


def _outside(item: LoadedCandles, signals: Sequence[Signal], bars_drive_trades: bool) -> str | None:
    """One line for the signals stamped before the first bar closes or after the last one."""
    candles = item.candles
    if not len(candles):
        return None
    first_close = float(candles.timestamp[0]) + candles.timeframe_seconds
    last_close = float(candles.timestamp[-1]) + candles.timeframe_seconds
    times = [s.timestamp.timestamp() for s in signals if s.timestamp is not None]
    early = [t for t in times if t < first_close]
    late = [t for t in times if t > last_close]
    if not early and not late:
        return None
    parts = []
    if early:
        parts.append(f"{len(early):,} before its first bar closes ({format_timestamp(first_close)}"
                     f"; the first at {format_timestamp(min(early))}): no market data yet")
    if late:
        after = "never filled" if bars_drive_trades else "decided on stale market data"
        parts.append(f"{len(late):,} after its last bar closes ({format_timestamp(last_close)}; "
                     f"the last at {format_timestamp(max(late))}): {after}")
    return f"{item.source.given}: {candles.symbol} signals outside its candles: " + "; ".join(parts)
