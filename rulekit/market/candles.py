"""Market data as adapters hand it to the engine: candles (numpy columns) and a top-of-book ticker.

A candle's ``timestamp`` is its OPEN time (epoch seconds, UTC), as in the files of ../shared/data and
as exchanges publish it; the bar's values are known only at its close, ``timestamp + timeframe``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rulekit.market.indicators import spread_bps


@dataclass(frozen=True)
class Candles:
    """OHLCV bars of one symbol, oldest first, as float64 columns (timestamps int64 epoch seconds).

    ``volume`` is in base units (BTC for BTC/USDT); quote volume is derived where needed.
    ``problems`` lists what the reader noticed and kept (gaps, duplicates dropped), for a person.
    """

    symbol: str
    timeframe_seconds: int
    timestamp: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    source: str = ""
    problems: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.timestamp)

    def close_time(self) -> np.ndarray:
        """When each bar's values became known: its open time plus one timeframe."""
        return self.timestamp + self.timeframe_seconds


@dataclass(frozen=True, slots=True)
class Ticker:
    """The best bid and ask (and last trade) of a symbol at one moment, epoch seconds UTC."""

    symbol: str
    timestamp: float
    bid: float
    ask: float
    last: float = float("nan")

    @property
    def spread_bps(self) -> float:
        """Spread in basis points of the mid price; NaN when the book is crossed, empty or absent
        (the one formula, ``indicators.spread_bps``, also serves columns of quotes)."""
        return float(spread_bps(self.bid, self.ask))
