"""Indicators over a whole series at once (numpy, O(n)), and market conditions at given times.

ATR and EMA follow TA-Lib by default (tests compare every file in ../shared/data with TA-Lib to
1e-9); the design's simpler variants are options. Every value that needs more history than exists
is NaN, never a guess: the engine turns a NaN into a rejection.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rulekit.market_data import Candles


def true_range(high: np.ndarray, low: np.ndarray, close: np.ndarray) -> np.ndarray:
    """max(high - low, |high - previous close|, |low - previous close|); the first bar has no
    previous close, so its true range is high - low (TA-Lib leaves it undefined)."""
    high, low, close = (np.asarray(a, dtype=float) for a in (high, low, close))
    tr = high - low
    if len(tr) > 1:
        previous = close[:-1]
        tr[1:] = np.maximum(tr[1:], np.maximum(np.abs(high[1:] - previous),
                                               np.abs(low[1:] - previous)))
    return tr


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14,
        method: str = "wilder") -> np.ndarray:
    """Average true range.

    ``wilder`` (TA-Lib's ATR): the first value, at index ``period``, is the mean of the true ranges
    1..period (bar 0 has no previous close); then ``atr = (previous * (period - 1) + tr) / period``.
    ``sma``: the plain mean of the last ``period`` true ranges, from index ``period`` likewise.
    """
    if method not in ("wilder", "sma"):
        raise ValueError(f"unknown ATR method {method!r} (wilder or sma)")
    tr = true_range(high, low, close)
    out = np.full(len(tr), np.nan)
    if len(tr) <= period:
        return out
    if method == "sma":
        sums = np.cumsum(tr[1:])
        window = sums[period - 1:] - np.concatenate([[0.0], sums[:-period]])
        out[period:] = window / period
        return out
    seed = tr[1:period + 1].mean()
    out[period:] = _wilder(seed, tr[period + 1:], period)
    return out


def ema(values: np.ndarray, period: int = 200, seeding: str = "talib") -> np.ndarray:
    """Exponential moving average with ``k = 2 / (period + 1)``.

    ``talib``: seeded at index ``period - 1`` with the mean of the first ``period`` values.
    ``first``: seeded with the first value (pandas ``ewm(adjust=False)``), reported only from index
    ``period - 1`` too, so that too few bars is never a guess.
    """
    if seeding not in ("talib", "first"):
        raise ValueError(f"unknown EMA seeding {seeding!r} (talib or first)")
    values = np.asarray(values, dtype=float)
    out = np.full(len(values), np.nan)
    if len(values) < period:
        return out
    k = 2.0 / (period + 1)
    if seeding == "talib":
        out[period - 1:] = _exponential(values[:period].mean(), values[period:], k)
    else:
        full = _exponential(values[0], values[1:], k)
        out[period - 1:] = full[period - 1:]
    return out


def _wilder(seed: float, inputs: np.ndarray, period: int) -> np.ndarray:
    """``y[i] = (y[i-1] * (period - 1) + x) / period``, TA-Lib's own order of operations, as one
    tight loop over Python floats: a closed form with cumulative products drifts over long series,
    and a loop is O(n) at about 0.1 us a bar."""
    out = np.empty(len(inputs) + 1)
    out[0] = current = float(seed)
    keep = period - 1
    for i, x in enumerate(inputs.tolist(), start=1):
        current = (current * keep + x) / period
        out[i] = current
    return out


def _exponential(seed: float, inputs: np.ndarray, k: float) -> np.ndarray:
    """``y[i] = (x - y[i-1]) * k + y[i-1]``, TA-Lib's order of operations (see ``_wilder``)."""
    out = np.empty(len(inputs) + 1)
    out[0] = current = float(seed)
    for i, x in enumerate(inputs.tolist(), start=1):
        current = (x - current) * k + current
        out[i] = current
    return out


def rolling_quote_volume(timestamp: np.ndarray, close: np.ndarray, volume: np.ndarray,
                         timeframe_seconds: int, window_seconds: int = 86_400) -> np.ndarray:
    """Quote volume of the bars whose open time lies in the ``window_seconds`` ending at each bar's
    close. A bar's quote volume is volume x close (the files carry no exact quote volume; the close
    stands in for the bar's average price). NaN until a full window of history exists; gaps do not
    stretch the window, it is measured in time."""
    timestamp = np.asarray(timestamp, dtype=np.int64)
    if not len(timestamp):
        return np.empty(0)
    quote = np.asarray(volume, dtype=float) * np.asarray(close, dtype=float)
    sums = np.concatenate([[0.0], np.cumsum(quote)])
    close_time = timestamp + timeframe_seconds
    first = np.searchsorted(timestamp, close_time - window_seconds, side="left")
    out = sums[1:] - sums[first]
    out[close_time - window_seconds < timestamp[0]] = np.nan
    return out


def spread_bps(bid: np.ndarray, ask: np.ndarray) -> np.ndarray:
    """(ask - bid) / mid in basis points; NaN for an empty or crossed book."""
    bid, ask = np.asarray(bid, dtype=float), np.asarray(ask, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ask - bid) / ((ask + bid) / 2) * 10_000
    return np.where((bid > 0) & (ask >= bid), out, np.nan)


@dataclass(frozen=True)
class MarketConditions:
    """The market fields of a decision at each requested time (NaN where unknown)."""

    price: np.ndarray
    atr: np.ndarray
    ema_200: np.ndarray
    volume_24h: np.ndarray
    market_timestamp: np.ndarray   # close time of the bar the fields come from
    bars: np.ndarray               # bars known at that time (0 when none)


def market_conditions(candles: Candles, at: np.ndarray, atr_period: int = 14,
                      atr_method: str = "wilder", ema_period: int = 200,
                      ema_seeding: str = "talib") -> MarketConditions:
    """For each time in ``at`` (epoch seconds), the fields of the last bar CLOSED at or before it.

    A bar still forming is not known yet: a signal stamped at a bar's open time sees the previous
    bar. Indicators are computed once over the whole series, then looked up.
    """
    at = np.asarray(at, dtype=float)
    close_time = candles.timestamp + candles.timeframe_seconds
    known = np.searchsorted(close_time, np.where(np.isnan(at), -np.inf, at), side="right")
    known[np.isnan(at)] = 0
    row = known - 1
    has = row >= 0
    pick = np.where(has, row, 0)

    def take(series: np.ndarray) -> np.ndarray:
        if not len(series):
            return np.full(len(at), np.nan)
        return np.where(has, series[pick], np.nan)

    return MarketConditions(
        price=take(candles.close),
        atr=take(atr(candles.high, candles.low, candles.close, atr_period, atr_method)),
        ema_200=take(ema(candles.close, ema_period, ema_seeding)),
        volume_24h=take(rolling_quote_volume(candles.timestamp, candles.close, candles.volume,
                                             candles.timeframe_seconds)),
        market_timestamp=take(close_time.astype(float)),
        bars=known.astype(float))
