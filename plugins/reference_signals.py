"""Built-in plugin: a reference signal source, so the whole system runs on raw candles.

An ensemble of four simple, documented indicator "models"; each votes at every bar close LONG (+1),
SHORT (-1) or abstains (0):

- ``trend``: close above the 50-bar EMA -> LONG, below -> SHORT;
- ``momentum``: close above the close 12 bars earlier -> LONG, below -> SHORT;
- ``macd``: 12-bar EMA above the 26-bar EMA -> LONG, below -> SHORT;
- ``breakout``: close above the highest high of the previous 20 bars -> LONG, below the lowest
  low -> SHORT, else abstain.

With ``m`` votes on the majority side and ``n`` on the other: consensus UNANIMOUS (m = 4), STRONG
(m = 3), WEAK (m = 2, n <= 1), SPLIT (m = n); confidence = (m - n / 2) / 4 (1.0 for 4-0, 0.75 for
3-0, 0.625 for 3-1, 0.5 for 2-0, 0.375 for 2-1); strength = |m - n| / 4. A signal is emitted at a bar's close
(its timestamp = the bar's close time) whenever the ensemble's side or consensus changes and is not
SPLIT. It is a reference to exercise the risk layer, not a strategy anyone should trade.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np

from rulekit.decision.engine import SignalColumns
from rulekit.hookspecs import hookimpl
from rulekit.market.candles import Candles
from rulekit.market.indicators import ema
from rulekit.model import Signal

MODELS = ("trend", "momentum", "macd", "breakout")
CONSENSUS = {4: "UNANIMOUS", 3: "STRONG", 2: "WEAK"}


@hookimpl
def rulekit_signal_source(name: str, options: Mapping[str, Any]):
    """Serve ``reference``; needs ``candles`` (a list of Candles) in ``options``."""
    if name != "reference":
        return None
    return ReferenceSignals(list(options.get("candles", ())))


class ReferenceSignals:
    def __init__(self, candles: list[Candles]):
        self.candles = candles

    def signals(self, start: datetime | None = None, end: datetime | None = None
                ) -> Iterable[Signal]:
        """Every symbol's signals stamped in [start, end), oldest first."""
        found = [s for c in self.candles for s in ensemble_signals(c)]
        lo = start.timestamp() if start else -np.inf
        hi = end.timestamp() if end else np.inf
        found = [s for s in found if lo <= s.timestamp.timestamp() < hi]
        return sorted(found, key=lambda s: (s.timestamp, s.symbol))


def votes(c: Candles) -> np.ndarray:
    """One row per bar, one column per model: +1, -1 or 0 (0 also while history is short)."""
    close = c.close
    n = len(close)
    out = np.zeros((n, len(MODELS)), dtype=np.int8)
    with np.errstate(invalid="ignore"):
        out[:, 0] = np.sign(close - ema(close, 50))
        momentum = np.zeros(n)
        momentum[12:] = close[12:] - close[:-12]
        out[:, 1] = np.sign(momentum)
        out[:, 2] = np.sign(ema(close, 12) - ema(close, 26))
        if n > 20:
            windows = np.lib.stride_tricks.sliding_window_view
            highest = np.full(n, np.inf)
            lowest = np.full(n, -np.inf)
            highest[20:] = windows(c.high, 20).max(axis=1)[:-1]
            lowest[20:] = windows(c.low, 20).min(axis=1)[:-1]
            out[:, 3] = np.where(close > highest, 1, np.where(close < lowest, -1, 0))
    out[np.isnan(ema(close, 50))] = 0  # no vote from any model before the slowest has history
    return out


def ensemble_signals(c: Candles) -> list[Signal]:
    rows, side, level, majority, minority, ballot = _ensemble(c)
    close_time = c.close_time()
    out = []
    for row in rows.tolist():
        m, n = int(majority[row]), int(minority[row])
        at = datetime.fromtimestamp(int(close_time[row]), UTC)
        out.append(Signal(
            symbol=c.symbol, side="LONG" if side[row] > 0 else "SHORT",
            consensus=CONSENSUS[int(level[row])], confidence=(m - n / 2) / 4,
            strength=abs(m - n) / 4, timestamp=at,
            signal_id=f"ref-{c.symbol}-{int(close_time[row])}",
            model_votes=dict(zip(MODELS, ballot[row].tolist(), strict=False))))
    return out


def _ensemble(c: Candles):
    """The bars a signal is emitted at, and each bar's side, level, vote counts and ballot."""
    ballot = votes(c)
    longs = (ballot == 1).sum(axis=1)
    shorts = (ballot == -1).sum(axis=1)
    majority = np.maximum(longs, shorts)
    minority = np.minimum(longs, shorts)
    side = np.where(longs > shorts, 1, np.where(shorts > longs, -1, 0))
    level = np.where(side == 0, 0, np.where(majority >= 3, majority,
                                             np.where((majority == 2) & (minority <= 1), 2, 0)))
    state = side * 10 + level
    changed = np.flatnonzero((state != np.concatenate([[0], state[:-1]])) & (level > 0))
    return changed, side, level, majority, minority, ballot


def ensemble_columns(c: Candles) -> SignalColumns:
    """``ensemble_signals`` as columns, never one object per signal (what a long backtest reads):
    the same fields ``SignalColumns.from_signals`` gives, the votes one shared dict per ballot."""
    rows, side, level, majority, minority, ballot = _ensemble(c)
    count = len(rows)
    m, n = majority[rows].astype(float), minority[rows].astype(float)
    close_time = np.asarray(c.close_time(), dtype=np.int64)[rows]
    ballots = ballot[rows]
    codes = ((ballots + 1) * np.array([27, 9, 3, 1], dtype=np.int64)).sum(axis=1)
    shared = {code: dict(zip(MODELS, ballots[i].tolist(), strict=False))
              for code, i in zip(*np.unique(codes, return_index=True), strict=True)}
    consensus = np.array(["", "", CONSENSUS[2], CONSENSUS[3], CONSENSUS[4]])
    missing = np.full(count, np.nan)
    missing.flags.writeable = False  # one read-only column for every field the ensemble leaves out
    symbol = np.broadcast_to(np.array(c.symbol), count)  # one value, no memory per signal
    return SignalColumns(
        well_formed=np.ones(count, dtype=bool), symbol=symbol,
        side=np.where(side[rows] > 0, "LONG", "SHORT"), consensus=consensus[level[rows]],
        confidence=(m - n / 2) / 4, strength=np.abs(m - n) / 4, price=missing, atr=missing,
        ema_200=missing, volume_24h=missing, spread_bps=missing, history_bars=missing,
        equity=missing, timestamp=close_time.astype(float), market_timestamp=missing,
        signal_id=np.array([f"ref-{c.symbol}-{t}" for t in close_time.tolist()], dtype=object),
        model_votes=[shared[code] for code in codes.tolist()], raw=[None] * count)
