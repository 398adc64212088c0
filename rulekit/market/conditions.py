"""Fill each signal's market fields from candles at the signal's time (``evaluate --data``, backtests).

A signal then needs only symbol, side, consensus and confidence. The fields come from the last bar
CLOSED at or before the signal's timestamp (a bar still forming is not known yet): price = its close,
ATR and EMA as the policy's params say, 24h volume in quote currency; ``market_timestamp`` = that
bar's close time, so the policy's staleness rule applies (a signal stamped mid-bar is as old as the
bar's close). Candles have no order book: the spread is the signal's own, else the policy's
``assumed_spread_bps``. Too few bars leaves the indicator NaN and ``history_bars`` short, which the
engine rejects as ``insufficient_history``.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from rulekit.market.candles import Candles
from rulekit.market.indicators import atr, ema, rolling_quote_volume
from rulekit.model import NAN, Signal
from rulekit.policy.loader import Policy


def with_market_fields(signals: Sequence[Signal], candles: Mapping[str, Candles],
                       policy: Policy) -> list[Signal]:
    """``signals`` with price, atr, ema_200, volume_24h, spread_bps and market_timestamp from
    ``candles`` (by symbol). A signal for a symbol without candles keeps NaN fields (rejected)."""
    constants = policy.constants()
    settings = dict(atr_period=int(constants["atr_period"]), ema_period=int(constants["ema_period"]),
                    atr_method=str(constants["atr_method"]),
                    ema_seeding=str(constants["ema_seeding"]))
    assumed_spread = float(constants["assumed_spread_bps"])
    out = list(signals)
    rows_by_symbol: dict[str, list[int]] = {}
    for row, signal in enumerate(signals):
        if signal.well_formed and signal.symbol in candles:
            rows_by_symbol.setdefault(signal.symbol, []).append(row)
    for symbol, rows in rows_by_symbol.items():
        at = np.array([signals[r].timestamp.timestamp() if signals[r].timestamp else NAN
                       for r in rows], dtype=float)
        found = market_conditions(candles[symbol], at, **settings)
        price, atr, ema_200 = found.price.tolist(), found.atr.tolist(), found.ema_200.tolist()
        volume, bars = found.volume_24h.tolist(), found.bars.tolist()
        stamps = found.market_timestamp.tolist()
        known = np.isfinite(found.market_timestamp).tolist()
        for i, row in enumerate(rows):
            signal = signals[row]
            out[row] = _with(
                signal, price=price[i], atr=atr[i], ema_200=ema_200[i], volume_24h=volume[i],
                spread_bps=signal.spread_bps if math.isfinite(signal.spread_bps) else assumed_spread,
                history_bars=bars[i],
                market_timestamp=(datetime.fromtimestamp(stamps[i], UTC) if known[i]
                                  else None))
    return out


def _with(signal: Signal, **fields) -> Signal:
    """A copy of a frozen signal with ``fields`` changed, built positionally (``replace`` and
    ``copy.copy`` cost several times more, and this runs once per signal of a backtest)."""
    return Signal(*[fields[name] if name in fields else getattr(signal, name)
                    for name in SIGNAL_FIELDS])


SIGNAL_FIELDS = tuple(Signal.__dataclass_fields__)


@dataclass(frozen=True)
class MarketConditions:
    """The market fields of a decision at each requested time; NaN where unknown (no bar closed
    yet, or too few bars for the indicator)."""

    price: np.ndarray
    atr: np.ndarray
    ema_200: np.ndarray           # the EMA of ``ema_period`` (200 in the design)
    volume_24h: np.ndarray        # quote currency, see ``rolling_quote_volume``
    market_timestamp: np.ndarray  # close time (epoch seconds) of the bar the fields come from
    bars: np.ndarray              # bars closed by then (0 when none), float as engine columns are


def market_conditions(candles: Candles, at, atr_period: int = 14, atr_method: str = "wilder",
                      ema_period: int = 200, ema_seeding: str = "talib") -> MarketConditions:
    """For each decision time in ``at`` (epoch seconds; NaN = unknown), the fields of the LAST bar
    whose close time (open + timeframe) is <= that time: a bar still forming is not known yet, so a
    signal stamped at a bar's open sees the previous bar. Each indicator is computed once over the
    whole series and then looked up with a binary search: O(n + m log n).
    """
    at = np.asarray(at, dtype=float)
    close_time = np.asarray(candles.timestamp, dtype=np.int64) + candles.timeframe_seconds
    valid = ~np.isnan(at)
    known = np.where(valid, np.searchsorted(close_time, np.where(valid, at, 0.0), side="right"), 0)
    has = known > 0
    row = np.where(has, known - 1, 0)

    def take(series: np.ndarray) -> np.ndarray:
        if not len(series):
            return np.full(len(at), np.nan)
        return np.where(has, series[row], np.nan)

    return MarketConditions(
        price=take(np.asarray(candles.close, dtype=float)),
        atr=take(atr(candles.high, candles.low, candles.close, atr_period, atr_method)),
        ema_200=take(ema(candles.close, ema_period, ema_seeding)),
        volume_24h=take(rolling_quote_volume(candles.timestamp, candles.close, candles.volume,
                                             candles.timeframe_seconds)),
        market_timestamp=take(close_time.astype(float)),
        bars=known.astype(float))
