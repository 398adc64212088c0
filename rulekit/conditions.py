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
from datetime import datetime, timezone
from typing import Mapping, Sequence

import numpy as np

from rulekit.indicators import market_conditions
from rulekit.market_data import Candles
from rulekit.model import NAN, Signal
from rulekit.policy import Policy


def with_market_fields(signals: Sequence[Signal], candles: Mapping[str, Candles],
                       policy: Policy) -> list[Signal]:
    """``signals`` with price, atr, ema_200, volume_24h, spread_bps and market_timestamp from
    ``candles`` (by symbol). A signal for a symbol without candles keeps NaN fields (rejected)."""
    constants = policy.constants()
    settings = dict(atr_period=int(constants["atr_period"]), ema_period=int(constants["ema_period"]),
                    atr_method=str(constants.get("atr_method", "wilder")),
                    ema_seeding=str(constants.get("ema_seeding", "talib")))
    assumed_spread = float(constants.get("assumed_spread_bps", NAN))
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
                market_timestamp=(datetime.fromtimestamp(stamps[i], timezone.utc) if known[i]
                                  else None))
    return out


def _with(signal: Signal, **fields) -> Signal:
    """A copy of a frozen signal with ``fields`` changed, built positionally (``replace`` and
    ``copy.copy`` cost several times more, and this runs once per signal of a backtest)."""
    return Signal(*[fields[name] if name in fields else getattr(signal, name)
                    for name in SIGNAL_FIELDS])


SIGNAL_FIELDS = tuple(Signal.__dataclass_fields__)
