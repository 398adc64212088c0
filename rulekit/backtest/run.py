"""Backtests: historical candles and signals through the same trade manager a live run uses.

Bar by bar, in time order across symbols (one account, one global risk state for all of them):
signals stamped at or before a bar's open are decided first (a signal is stamped at a bar's close,
which is the next bar's open time); an approved trade fills at that next bar's open plus slippage;
then the bar drives the open trades of its symbol (stops, targets, partials, trailing, time exits
by the lifecycle's conventions, which the paper exchange shares: ``rulekit.trading.fills``).
A symbol's trades still open after its last bar are closed at that bar's close less slippage
(``end_of_data``, a market order);
an entry approved with no bar of its symbol left to fill it is cancelled (``no_bar_to_fill``) and
frees its exposure.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from rulekit.backtest.metrics import decision_figures, equity_figures, trade_figures
from rulekit.decision.engine import BatchDecisions, Engine, SignalColumns, risk_columns
from rulekit.market.candles import Candles
from rulekit.model import RiskState, Signal
from rulekit.policy.vocabulary import SIZE_CAPS, size_cap_name
from rulekit.trading.account import Account, RiskEventKind
from rulekit.trading.lifecycle import ExitReason, Trade, TradeEvent
from rulekit.trading.timeline import Timeline
from rulekit.trading.trade_manager import MemoryJournal, TradeManager


@dataclass
class Deferred:
    """The signals known to be rejected whatever the state, with the account row each met, kept
    as columns and decided in batches when read (one batch of all of them would hold every
    rule's outcome of every row at once: some 600 bytes a signal)."""

    engine: Engine
    signals: SignalColumns            # every signal of the run; ``rows`` the deferred ones
    rows: np.ndarray
    account: dict[str, np.ndarray]    # ACCOUNT_COLUMNS, one value per deferred row
    _reasons: list[str] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def batches(self, size: int = 50_000) -> Iterator[BatchDecisions]:
        """The decisions, ``size`` rows at a time, in order."""
        reasons: list[str] = []
        for start in range(0, len(self.rows), size):
            part = slice(start, start + size)
            batch = self.engine.decide_rows(self.signals.take(cast(Sequence[int], self.rows[part])),
                                            {name: column[part]
                                             for name, column in self.account.items()})
            if batch.approved.any():
                raise AssertionError("a signal known to be rejected was approved: a bug")
            reasons += batch.reason.tolist()
            yield batch
        self._reasons = reasons

    def reasons(self) -> list[str]:
        """Each one's rejection reason (kept from the last walk through ``batches``)."""
        if self._reasons is None:
            for _ in self.batches():
                pass
        assert self._reasons is not None
        return self._reasons

    def decided(self) -> BatchDecisions:
        """All of them as one batch (tests, small runs)."""
        return self.engine.decide_rows(self.signals.take(cast(Sequence[int], self.rows)),
                                        self.account)


@dataclass
class BacktestResult:
    account: Account
    journal: MemoryJournal
    deferred: Deferred | None     # signals rejected whatever the state, decided as batches
    trades: list[Trade]
    bars: int
    symbols: list[str]
    equity_times: np.ndarray     # close time of each bar that moved equity (epoch s)
    equity: np.ndarray
    first_time: float
    last_time: float
    breaker_trips: int = 0
    cancelled: list[Trade] = field(default_factory=list)  # approved entries that never filled
    notes: list[str] = field(default_factory=list)
    fee_pct: float = 0.0          # the policy's, per fill
    slippage_bps: float = 0.0     # against every market fill

    @property
    def rejected(self) -> BatchDecisions | None:
        """The deferred signals' decisions as one batch."""
        return None if self.deferred is None else self.deferred.decided()

    def metrics(self) -> dict:
        figures = {"bars": self.bars, "symbols": self.symbols,
                   "start_equity": self.account.start_equity}
        reasons = [d.reason for _, d, _, _ in self.journal.decisions]
        if self.deferred is not None:
            reasons += self.deferred.reasons()
        figures.update(decision_figures(reasons))
        figures.update(trade_figures(self.trades))
        figures.update(equity_figures(self.equity_times, self.equity, self.account.start_equity,
                                      self.first_time, self.last_time))
        figures["circuit_breaker_trips"] = self.breaker_trips
        figures.update(fee_pct=self.fee_pct, slippage_bps=self.slippage_bps)
        figures.update(size_figures(self.trades, self.journal))
        return figures


def state_free_rejections(engine: Engine, columns: SignalColumns, released: np.ndarray,
                          equity: float, chunk: int = 50_000) -> list[bool]:
    """Which signals fail a check reading nothing of the account: rejected whatever happens to
    it, so they can be decided as a batch at the end against the state each one met. Decided
    ``chunk`` rows at a time (every rule's outcome of every signal at once is large)."""
    mask = engine.state_free_checks()
    failed: list[bool] = []
    for start in range(0, columns.rows, chunk):
        part = columns if columns.rows <= chunk else columns.take(
            cast(Sequence[int], np.arange(start, min(start + chunk, columns.rows))))
        neutral = engine.decide_rows(part, risk_columns(
            released[start:start + chunk], RiskState.fresh(equity), part.symbol.tolist()))
        failed += np.asarray((~neutral.checks[:, mask]).any(axis=1), dtype=bool).tolist()
    return failed


def size_figures(trades: Sequence[Trade], journal: MemoryJournal) -> dict:
    """How the trades were sized: how many a cap cut below the risk budget (by the cap, from each
    approving decision's ``size_capped_by``), and the risk at the stop as a share of the budget."""
    decisions = [journal.decisions[int(t.decision_ref.rsplit(":", 1)[1])][1] for t in trades
                 if t.decision_ref]
    caps = Counter(size_cap_name(d.value("size_capped_by")) for d in decisions)
    shares = [d.value("risk_at_stop") / d.value("risk_amount") for d in decisions]
    return {"capped_trades": sum(n for cap, n in caps.items() if cap != "none"),
            "size_capped_by": {cap: caps.get(cap, 0) for cap in SIZE_CAPS},
            "avg_risk_at_stop_of_budget": float(np.mean(shares)) if shares else None}


def end_of_data(account: Account, symbol: str, at: float, close: float,
                cancel: Callable[[Trade, float], None]) -> Iterator[tuple[Trade, TradeEvent]]:
    """``symbol``'s data ended with the bar opening at ``at``: an entry still waiting is cancelled
    (no bar is left to fill it), an open trade is closed at that bar's close, at market
    (``end_of_data``), and booked on the account. Yields each closed trade and its event."""
    for trade in [t for t in account.trades.values() if t.symbol == symbol]:
        if trade.awaiting_fill:
            cancel(trade, at)
            continue
        event = trade.close_at_market(at, close, ExitReason.END_OF_DATA)
        account.trade_closed(trade)
        yield trade, event


def run_backtest(engine: Engine, candles: Sequence[Candles],
                 signals: Sequence[Signal] | SignalColumns, equity: float,
                 slippage_bps: float = 0.0, run_id: str = "backtest",
                 progress: Callable[[int, int], None] | None = None,
                 fast: bool = True) -> BacktestResult:
    """Replay ``candles`` with ``signals`` (their market fields are taken from the candles) in the
    order of the one ``Timeline``. Each symbol's trades close when its own data ends.

    ``fast`` runs the event-driven loop of ``rulekit.backtest.fast``; False runs every bar through
    ``TradeManager.on_bar`` here. Both give the same trades, equity curve and decisions (tested);
    the fast one batches more of the decisions known to be rejected, so ``journal.decisions``
    holds fewer rows and ``rejected`` more, and decision refs count within each.

    ``signals`` may come as ``SignalColumns`` (a long backtest: no object per signal), which the
    event loop reads as they are and the per-bar loop turns into ``Signal``s first."""
    if fast:
        from rulekit.backtest.fast import run_events

        result = run_events(engine, candles, signals, equity, slippage_bps, run_id, progress)
        result.fee_pct = float(engine.policy.constants()["fee_pct"])
        result.slippage_bps = slippage_bps
        return result
    if isinstance(signals, SignalColumns):
        from rulekit.backtest.fast import signals_of

        signals = signals_of(signals)
    timeline = Timeline.of(candles, signals).with_market_fields(engine.policy)
    signals = timeline.signals
    journal = MemoryJournal(run_id=run_id)
    account = Account.new(equity)
    manager = TradeManager(engine, account, journal, fill_at_next_open=True,
                           slippage_bps=slippage_bps)

    symbols = [c.symbol for c in candles]
    times, which, rows = timeline.times.tolist(), timeline.which.tolist(), timeline.rows.tolist()
    columns = [(c.open.tolist(), c.high.tolist(), c.low.tolist(), c.close.tolist(),
                c.timeframe_seconds) for c in candles]
    released, before_bar = timeline.released.tolist(), timeline.before_bar.tolist()
    ends = {int(k) for k in timeline.last_bar.tolist() if k >= 0}
    ended: set[str] = set()
    # Signals that fail a check reading nothing of the account are rejected whatever happens to
    # it: find them in one vectorised pass, decide them as a batch at the end (against the state
    # each one met, so the audit holds exactly what a scalar decision would have), and spend the
    # per-signal work on the rest only.
    columns_in = SignalColumns.from_signals(signals)
    surely_rejected = state_free_rejections(engine, columns_in, timeline.released, equity)
    rejected_rows: list[int] = []
    rejected_times: list[float] = []
    rejected_states: list[RiskState] = []
    cancelled: list[Trade] = []

    def decide(i: int) -> None:
        if surely_rejected[i]:
            rejected_rows.append(i)
            rejected_times.append(released[i])
            rejected_states.append(manager.pass_over(released[i]))
            return
        _, trade = manager.on_signal(signals[i], now=released[i])
        if trade is not None and trade.symbol in ended:  # no bar left to fill it
            cancel(trade, released[i])

    def cancel(trade: Trade, at: float) -> None:
        trade.cancel(at, "no_bar_to_fill")
        del account.trades[trade.trade_id]
        cancelled.append(trade)

    curve_times: list[float] = []
    curve: list[float] = []
    closed = manager.closed
    trips = 0
    next_signal, total, count = 0, len(times), len(signals)
    on_bar, trades = manager.on_bar, account.trades
    for k in range(total):
        while next_signal < count and before_bar[next_signal] <= k:
            decide(next_signal)
            next_signal += 1
        if trades:
            at = times[k]
            symbol_index, row = which[k], rows[k]
            o, h, l, c, step = columns[symbol_index]
            events, risk_events = on_bar(symbols[symbol_index], float(at), o[row], h[row], l[row],
                                         c[row])
            trips += sum(1 for r in risk_events if r.kind is RiskEventKind.CIRCUIT_BREAKER)
            curve_times.append(at + step)
            curve.append(account.last_equity)
        if k in ends:
            symbol_index = which[k]
            symbol = symbols[symbol_index]
            ended.add(symbol)
            _, _, _, close, step = columns[symbol_index]
            for trade, event in end_of_data(account, symbol, float(times[k]), float(close[-1]),
                                            cancel):
                journal.events.append(event)
                closed.append(trade)
                curve_times.append(times[k] + step)
                curve.append(account.equity)
        if progress is not None and k % 50_000 == 0:
            progress(k, total)
    for i in range(next_signal, count):  # signals after the last bar: decided, never filled
        decide(i)
    rejected = None
    if rejected_rows:
        rejected = Deferred(engine, columns_in, np.array(rejected_rows, dtype=np.int64),
                            risk_columns(rejected_times, rejected_states,
                                         columns_in.symbol[rejected_rows].tolist()))
    if progress is not None:
        progress(total, total)
    last = times[-1] if times else 0
    return BacktestResult(account, journal, rejected, closed, total, symbols,
                          np.array(curve_times, dtype=float), np.array(curve, dtype=float),
                          float(times[0]) if times else 0.0,
                          float(last + (columns[which[-1]][4] if times else 0)), trips,
                          cancelled=cancelled, fee_pct=float(engine.policy.constants()["fee_pct"]),
                          slippage_bps=slippage_bps)
