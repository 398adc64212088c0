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
                       policy: Policy, at: Sequence[float] | None = None) -> list[Signal]:
    """``signals`` with their missing market fields from ``candles`` (see ``MarketFields``)."""
    return MarketFields(candles, policy).fill(signals, at)


class MarketFields:
    """A signal's market fields from candles, each indicator computed once per symbol.

    Precedence: a field the signal carries (a finite price, atr, ema_200, volume_24h, spread_bps,
    or its market_timestamp) is its own view of the market and is kept; the candles fill in only
    what is missing. A signal for a symbol without candles keeps NaN fields (rejected)."""

    def __init__(self, candles: Mapping[str, Candles], policy: Policy):
        constants = policy.constants()
        self.candles = candles
        self.atr_period, self.ema_period = int(constants["atr_period"]), int(constants["ema_period"])
        self.atr_method, self.ema_seeding = str(constants["atr_method"]), str(constants["ema_seeding"])
        self.assumed_spread = float(constants["assumed_spread_bps"])
        self._series: dict[str, SymbolSeries] = {}

    def series(self, symbol: str) -> SymbolSeries:
        if symbol not in self._series:
            self._series[symbol] = SymbolSeries.of(self.candles[symbol], self.atr_period,
                                                   self.atr_method, self.ema_period,
                                                   self.ema_seeding)
        return self._series[symbol]

    def fill(self, signals: Sequence[Signal], at: Sequence[float] | None = None) -> list[Signal]:
        """At each signal's time (``at``, else its timestamp): the last bar CLOSED by then."""
        out = list(signals)
        rows_by_symbol: dict[str, list[int]] = {}
        for row, signal in enumerate(signals):
            if signal.well_formed and signal.symbol is not None and signal.symbol in self.candles:
                rows_by_symbol.setdefault(signal.symbol, []).append(row)
        for symbol, rows in rows_by_symbol.items():
            times = np.asarray([at[r] if at is not None else _epoch(signals[r].timestamp)
                                for r in rows], dtype=float)
            found = self.series(symbol).at(times)
            price, atr_, ema_200 = found.price.tolist(), found.atr.tolist(), found.ema_200.tolist()
            volume, bars = found.volume_24h.tolist(), found.bars.tolist()
            stamps = found.market_timestamp.tolist()
            for i, row in enumerate(rows):
                out[row] = merged(signals[row], price[i], atr_[i], ema_200[i], volume[i],
                                  self.assumed_spread, bars[i], stamps[i])
        return out


def merged(signal: Signal, price: float, atr: float, ema_200: float, volume_24h: float,
           spread_bps: float, history_bars: float, market_time: float) -> Signal:
    """``signal`` with the market fields the candles found where it brought none (the one
    precedence rule: a field the signal carries is kept); unchanged when it brought them all."""
    own = (signal.price, signal.atr, signal.ema_200, signal.volume_24h, signal.spread_bps)
    if all(math.isfinite(v) for v in own):
        return signal  # the signal brought its whole view of the market
    return _with(signal, price=_own_or(signal.price, price), atr=_own_or(signal.atr, atr),
                 ema_200=_own_or(signal.ema_200, ema_200),
                 volume_24h=_own_or(signal.volume_24h, volume_24h),
                 spread_bps=_own_or(signal.spread_bps, spread_bps), history_bars=history_bars,
                 market_timestamp=signal.market_timestamp or (
                     datetime.fromtimestamp(market_time, UTC) if math.isfinite(market_time)
                     else None))


def _epoch(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else NAN


def _own_or(own: float, found: float) -> float:
    return own if math.isfinite(own) else found


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


@dataclass(frozen=True)
class SymbolSeries:
    """One symbol's indicator series over its whole history, computed once."""

    close_time: np.ndarray
    close: np.ndarray
    atr: np.ndarray
    ema: np.ndarray
    volume_24h: np.ndarray

    @classmethod
    def of(cls, candles: Candles, atr_period: int = 14, atr_method: str = "wilder",
           ema_period: int = 200, ema_seeding: str = "talib") -> SymbolSeries:
        return cls(np.asarray(candles.close_time(), dtype=np.int64),
                   np.asarray(candles.close, dtype=float),
                   atr(candles.high, candles.low, candles.close, atr_period, atr_method),
                   ema(candles.close, ema_period, ema_seeding),
                   rolling_quote_volume(candles.timestamp, candles.close, candles.volume,
                                        candles.timeframe_seconds))

    def at(self, at) -> MarketConditions:
        """For each decision time in ``at`` (epoch seconds; NaN = unknown), the fields of the LAST
        bar whose close time (open + timeframe) is <= that time: a bar still forming is not known
        yet, so a signal stamped at a bar's open sees the previous bar. A binary search each."""
        at = np.asarray(at, dtype=float)
        valid = ~np.isnan(at)
        known = np.where(valid, np.searchsorted(self.close_time, np.where(valid, at, 0.0),
                                                side="right"), 0)
        has = known > 0
        row = np.where(has, known - 1, 0)

        def take(series: np.ndarray) -> np.ndarray:
            if not len(series):
                return np.full(len(at), np.nan)
            return np.where(has, series[row], np.nan)

        return MarketConditions(price=take(self.close), atr=take(self.atr), ema_200=take(self.ema),
                                volume_24h=take(self.volume_24h),
                                market_timestamp=take(self.close_time.astype(float)),
                                bars=known.astype(float))


def market_conditions(candles: Candles, at, atr_period: int = 14, atr_method: str = "wilder",
                      ema_period: int = 200, ema_seeding: str = "talib") -> MarketConditions:
    """The market fields at each time in ``at`` (see ``SymbolSeries.at``): O(n + m log n)."""
    return SymbolSeries.of(candles, atr_period, atr_method, ema_period, ema_seeding).at(at)
