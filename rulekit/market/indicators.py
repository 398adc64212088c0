"""Indicators over a whole series at once (numpy, O(n)), and market conditions at given times.

ATR and EMA follow TA-Lib by default (tests compare every file in ../shared/data with TA-Lib to
1e-9 relative); the design's simpler variants are options. Every value that needs more history than
exists is NaN, never a guess: the engine turns a NaN into a rejection.
"""
from __future__ import annotations

import math

import numpy as np

ATR_METHODS = ("wilder", "sma")
EMA_SEEDINGS = ("talib", "first")


def true_range(high, low, close) -> np.ndarray:
    """max(high - low, |high - previous close|, |low - previous close|): a gap between bars counts
    as range. Bar 0 has no previous close, so its true range is high - low (TA-Lib leaves it NaN;
    no average here uses it, see ``atr``)."""
    high, low, close = (np.asarray(a, dtype=float) for a in (high, low, close))
    tr = high - low
    if len(tr) > 1:
        previous = close[:-1]
        tr[1:] = np.maximum(tr[1:], np.maximum(np.abs(high[1:] - previous),
                                               np.abs(low[1:] - previous)))
    return tr


def atr(high, low, close, period: int = 14, method: str = "wilder") -> np.ndarray:
    """Average true range, NaN before index ``period`` (``period + 1`` bars) with either method, so
    the history a policy needs does not depend on the method.

    ``wilder`` (TA-Lib's ATR, the default): at index ``period`` the mean of the true ranges
    1..period (bar 0's is only high - low), then ``atr = (previous * (period - 1) + tr) / period``.
    ``sma`` (the design's option): the plain mean of the last ``period`` true ranges; it is exactly
    0 after ``period`` flat bars (exchange outages filled with open = high = low = close).
    """
    if method not in ATR_METHODS:
        raise ValueError(f"unknown ATR method {method!r} (one of {', '.join(ATR_METHODS)})")
    period = _check_period(period)
    tr = true_range(high, low, close)
    out = np.full(len(tr), np.nan)
    if len(tr) <= period:
        return out
    if method == "sma":
        ends = np.arange(len(tr) - period)
        out[period:] = _trailing_sums(tr[1:], ends, ends + period) / period
        return out
    out[period:] = _linear_recursion(tr[1:period + 1].mean(), tr[period + 1:],
                                     (period - 1) / period, 1 / period)
    return out


def ema(values, period: int = 200, seeding: str = "talib") -> np.ndarray:
    """Exponential moving average, ``k = 2 / (period + 1)``, NaN before index ``period - 1``.

    ``talib`` (TA-Lib's EMA): seeded at index ``period - 1`` with the mean of the first ``period``
    values. ``first`` (pandas ``ewm(adjust=False)``, the design's convention): seeded with the
    first value at index 0, but reported only from index ``period - 1`` as well, so that too few
    bars is never a guess. The two converge as the seed's weight ``(1 - k) ** n`` fades.
    """
    if seeding not in EMA_SEEDINGS:
        raise ValueError(f"unknown EMA seeding {seeding!r} (one of {', '.join(EMA_SEEDINGS)})")
    period = _check_period(period)
    values = np.asarray(values, dtype=float)
    out = np.full(len(values), np.nan)
    if len(values) < period:
        return out
    k = 2.0 / (period + 1)
    if seeding == "talib":
        out[period - 1:] = _linear_recursion(values[:period].mean(), values[period:], 1 - k, k)
    else:
        out[period - 1:] = _linear_recursion(values[0], values[1:], 1 - k, k)[period - 1:]
    return out


def _check_period(period) -> int:
    if isinstance(period, bool) or int(period) != period or period < 1:
        raise ValueError(f"period must be a whole number >= 1, not {period!r}")
    return int(period)


def _trailing_sums(x: np.ndarray, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """``x[first[i]:stop[i]].sum()`` for every i in O(n) by a running sum, and exactly 0 where the
    slice holds only zeros: the difference of two running sums otherwise leaves rounding residue
    (TA-Lib's SMA of TRANGE gives 2.6e-13, not 0, on Coinbase's filled outage hours), and an ATR of
    1e-13 instead of 0 would size a position as if the stop were nearly at the entry."""
    sums = np.concatenate([[0.0], np.cumsum(x)])
    nonzero = np.concatenate([[0], np.cumsum(x != 0)])
    return np.where(nonzero[stop] == nonzero[first], 0.0, sums[stop] - sums[first])


def _linear_recursion(seed: float, x: np.ndarray, a: float, b: float) -> np.ndarray:
    """``y[0] = seed, y[i] = a * y[i-1] + b * x[i-1]`` (Wilder and EMA smoothing), vectorised.

    Why not one closed form over the whole series: it divides by ``a ** i``, which overflows or
    loses every digit within a few thousand bars. Instead x is cut into blocks short enough that
    ``a ** -block <= e ** 7``; inside a block
    ``y_j = a ** (j + 1) * y_in + b * a ** j * cumsum(x_i * a ** -i)``, and the blocks' start
    values are the same recursion over the block ends with ``a ** block``. Measured: ~1e-15
    relative to TA-Lib on every shared file (terms share the sign of prices and true ranges: no
    cancellation; a signed random walk stays within 1e-13 of its scale), ~15x faster than a
    Python loop over floats (2.5 ms for 20k bars), ~3.5x TA-Lib's C.
    """
    x = np.asarray(x, dtype=float)
    m = len(x)
    if a == 0:
        return np.concatenate([[seed], b * x])
    block = min(m, int(7.0 / -math.log(a)))
    if block < 4:  # short series, or the carries of a higher level: a loop is cheapest
        out = [float(seed)]
        for value in x.tolist():
            out.append(a * out[-1] + b * value)
        return np.array(out)
    rows = -(-m // block)
    padded = np.zeros(rows * block)
    padded[:m] = x
    j = np.arange(block)
    local = np.cumsum(padded.reshape(rows, block) * a ** -j, axis=1) * (b * a ** j)
    starts = _linear_recursion(seed, local[:, -1], a ** block, 1.0)[:-1]
    y = local + np.multiply.outer(starts, a ** (j + 1))
    return np.concatenate([[seed], y.ravel()[:m]])


def quote_volume(close, volume) -> np.ndarray:
    """Per-bar volume in quote currency, ``volume * close``: the files hold base volume only, and
    the close stands in for the bar's average price (exact quote volume is not in the data)."""
    return np.asarray(volume, dtype=float) * np.asarray(close, dtype=float)


def rolling_quote_volume(timestamp, close, volume, timeframe_seconds: int,
                         window_seconds: int = 86_400) -> np.ndarray:
    """Quote volume of the bars whose OPEN time lies in the ``window_seconds`` ending at each bar's
    close time (timestamps oldest first). The window is measured in time, so a gap (minutes without
    trades, weekends) shortens the sum instead of reaching further back. NaN while the series
    does not yet cover a full window (the first bar opened after ``close - window``)."""
    timestamp = np.asarray(timestamp, dtype=np.int64)
    quote = quote_volume(close, volume)
    start = timestamp + timeframe_seconds - window_seconds
    first = np.searchsorted(timestamp, start, side="left")
    out = _trailing_sums(quote, first, np.arange(1, len(quote) + 1))
    if len(timestamp):
        out[start < timestamp[0]] = np.nan
    return out


def spread_bps(bid, ask) -> np.ndarray:
    """(ask - bid) / mid in basis points; NaN for an empty (bid <= 0), crossed (ask < bid) or
    missing book, which the engine rejects rather than trade on an unknown cost."""
    bid, ask = np.asarray(bid, dtype=float), np.asarray(ask, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (ask - bid) / ((ask + bid) / 2) * 10_000
    return np.where((bid > 0) & (ask >= bid), out, np.nan)
