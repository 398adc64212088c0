"""One timeline for every mode: the order in which bars and signals reach the account.

``evaluate --bars``, backtests, paper and live runs all take their order from here, so these rules
are written once:

- **Bars** come in open-time order. Bars of different symbols with the same open time come in the
  order their files were given (the order of ``candles``).
- **A signal is released** at its timestamp or, without one, at the moment it arrived: for signals
  known before the run (a file read up front), the start of the timeline (the first bar's open);
  for a followed file, standard input or a live feed, the clock when it was read.
- A signal is decided **before the first bar whose open time is at or after its release**: a
  signal stamped at a bar's open (or earlier) is decided before that bar, so a signal stamped at a
  bar's close (the next bar's open time) trades from the next bar. Signals released together keep
  the order they came in. Signals released after the last bar are decided after it.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np

from rulekit.decision.engine import SignalColumns
from rulekit.market.candles import Candles
from rulekit.market.conditions import MarketFields
from rulekit.model import Signal
from rulekit.policy.loader import Policy


def release_time(signal: Signal, arrived_at: float) -> float:
    """When ``signal`` joins the timeline (epoch seconds): its timestamp, else its arrival."""
    return signal.timestamp.timestamp() if signal.timestamp else arrived_at


class Bar(NamedTuple):
    """One bar of one symbol; ``at`` is its open time (epoch seconds)."""

    symbol: str
    at: float
    open: float
    high: float
    low: float
    close: float


class Release(NamedTuple):
    """A signal reaching the account, with the moment it is decided at."""

    signal: Signal
    at: float


@dataclass(frozen=True)
class Timeline:
    """Bars and signals known before the run, merged by the rules above.

    Arrays for loops that need speed (a backtest walks ``times``/``which``/``rows`` and releases
    signal ``i`` before bar ``before_bar[i]``), ``events()`` for the others."""

    candles: tuple[Candles, ...]
    times: np.ndarray        # open time of every bar, in timeline order (int64 epoch seconds)
    which: np.ndarray        # index into ``candles`` of every bar
    rows: np.ndarray         # row of every bar in its candles
    signals: tuple[Signal, ...]   # in release order
    released: np.ndarray     # release time of every signal (float epoch seconds)
    before_bar: np.ndarray   # the bar each signal is decided before; len(times): after the last
    last_bar: np.ndarray     # per candles, the timeline index of its last bar (-1: no bars)

    @classmethod
    def of(cls, candles: Sequence[Candles], signals: Iterable[Signal] = ()) -> Timeline:
        candles = tuple(candles)
        times, which, rows, last_bar = _bars(candles)
        start = float(times[0]) if len(times) else -math.inf
        signals = list(signals)
        released = np.array([release_time(s, start) for s in signals], dtype=float)
        order, released, before_bar = _releases(times, released)
        return cls(candles, times, which, rows, tuple(signals[i] for i in order.tolist()),
                   released, before_bar, last_bar)

    @classmethod
    def of_columns(cls, candles: Sequence[Candles],
                   signals: SignalColumns) -> tuple[Timeline, SignalColumns]:
        """The same order for signals given as columns (no object per signal, as a long backtest
        reads them): a timestamp is the release, NaN (none) the timeline's start. Returns the
        timeline, whose ``signals`` is empty, and the columns in release order."""
        candles = tuple(candles)
        times, which, rows, last_bar = _bars(candles)
        start = float(times[0]) if len(times) else -math.inf
        released = np.where(np.isnan(signals.timestamp), start, signals.timestamp)
        order, released, before_bar = _releases(times, released)
        in_order = bool(np.all(order[1:] > order[:-1]))  # no copy of columns already in order
        return (cls(candles, times, which, rows, (), released, before_bar, last_bar),
                signals if in_order else signals.take(order))

    @property
    def start(self) -> float:
        """The first bar's open time (-inf without bars): when signals known up front arrive."""
        return float(self.times[0]) if len(self.times) else -math.inf

    def with_market_fields(self, policy: Policy) -> Timeline:
        """The signals with their missing market fields from this timeline's own bars, as of the
        moment each is released (what a paper run does as it goes, see ``MarketFields``)."""
        fields = MarketFields({c.symbol: c for c in self.candles}, policy)
        return replace(self, signals=tuple(fields.fill(self.signals, self.released.tolist())))

    def bar(self, k: int) -> Bar:
        c = self.candles[int(self.which[k])]
        row = int(self.rows[k])
        return Bar(c.symbol, float(self.times[k]), float(c.open[row]), float(c.high[row]),
                   float(c.low[row]), float(c.close[row]))

    def events(self) -> Iterator[Bar | Release]:
        """Everything in order: each signal (with its decision time) before its bar."""
        signals, released, before = self.signals, self.released.tolist(), self.before_bar.tolist()
        s = 0
        for k in range(len(self.times)):
            while s < len(signals) and before[s] <= k:
                yield Release(signals[s], released[s])
                s += 1
            yield self.bar(k)
        for i in range(s, len(signals)):
            yield Release(signals[i], released[i])

    def ended(self, k: int) -> bool:
        """Bar ``k`` is the last bar of its symbol's data."""
        return bool(self.last_bar[self.which[k]] == k)


def _bars(candles: tuple[Candles, ...]):
    """Every bar by open time, then file order: open times, file, row; each file's last bar."""
    if candles:
        times = np.concatenate([np.asarray(c.timestamp, dtype=np.int64) for c in candles])
        which = np.concatenate([np.full(len(c), k, dtype=np.int64)
                                for k, c in enumerate(candles)])
        rows = np.concatenate([np.arange(len(c), dtype=np.int64) for c in candles])
        order = np.lexsort((which, times))  # by open time, then by file order
        times, which, rows = times[order], which[order], rows[order]
    else:
        times = which = rows = np.empty(0, dtype=np.int64)
    last_bar = np.full(len(candles), -1, dtype=np.int64)
    last_bar[which] = np.arange(len(which))  # later bars overwrite earlier ones
    return times, which, rows, last_bar


def _releases(times: np.ndarray, released: np.ndarray):
    """Signals by release time (ties in their order): the order, the times, the bar before."""
    order = np.argsort(released, kind="stable")
    released = released[order]
    return order, released, np.searchsorted(times, released, side="left")


class SignalQueue:
    """Signals learnt of while running (a followed file, standard input, a live feed), released
    by the same rule as ``Timeline``: ``due(at)`` gives those released at or before ``at``."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Signal]] = []
        self._count = 0

    def add(self, signals: Iterable[Signal], arrived_at: float) -> None:
        for signal in signals:
            heapq.heappush(self._heap, (release_time(signal, arrived_at), self._count, signal))
            self._count += 1

    def due(self, at: float) -> list[Release]:
        out = []
        while self._heap and self._heap[0][0] <= at:
            released, _, signal = heapq.heappop(self._heap)
            out.append(Release(signal, released))
        return out

    def __len__(self) -> int:
        return len(self._heap)
