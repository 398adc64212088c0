"""Backtests: historical candles and signals through the same trade manager a live run uses.

Bar by bar, in time order across symbols (one account, one global risk state for all of them):
signals stamped at or before a bar's open are decided first (a signal is stamped at a bar's close,
which is the next bar's open time); an approved trade fills at that next bar's open plus slippage;
then the bar drives the open trades of its symbol (stops, targets, partials, trailing, time exits
by the lifecycle's conventions, which the paper exchange shares: ``rulekit.trading.fills``).
Trades still open after the last bar are closed at its close (``end_of_data``).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from rulekit.backtest.metrics import decision_figures, equity_figures, trade_figures
from rulekit.decision.engine import ACCOUNT_COLUMNS, BatchDecisions, Engine, SignalColumns
from rulekit.market.candles import Candles
from rulekit.market.conditions import with_market_fields
from rulekit.model import Signal
from rulekit.trading.account import Account
from rulekit.trading.lifecycle import Trade
from rulekit.trading.trade_manager import MemoryJournal, TradeManager


@dataclass
class BacktestResult:
    account: Account
    journal: MemoryJournal
    rejected: BatchDecisions | None     # signals rejected whatever the state, decided as a batch
    trades: list[Trade]
    bars: int
    symbols: list[str]
    equity_times: np.ndarray     # close time of each bar that moved equity (epoch s)
    equity: np.ndarray
    first_time: float
    last_time: float
    breaker_trips: int = 0
    notes: list[str] = field(default_factory=list)

    def metrics(self) -> dict:
        figures = {"bars": self.bars, "symbols": self.symbols,
                   "start_equity": self.account.start_equity}
        reasons = [d.reason for _, d, _, _ in self.journal.decisions]
        if self.rejected is not None:
            reasons += self.rejected.reason.tolist()
        figures.update(decision_figures(reasons))
        figures.update(trade_figures(self.trades))
        figures.update(equity_figures(self.equity_times, self.equity, self.account.start_equity,
                                      self.first_time, self.last_time))
        figures["circuit_breaker_trips"] = self.breaker_trips
        return figures


def run_backtest(engine: Engine, candles: Sequence[Candles], signals: Sequence[Signal],
                 equity: float, slippage_bps: float = 0.0, run_id: str = "backtest",
                 progress: Callable[[int, int], None] | None = None) -> BacktestResult:
    """Replay ``candles`` with ``signals`` (their market fields are taken from the candles)."""
    by_symbol = {c.symbol: c for c in candles}
    signals = sorted(with_market_fields(signals, by_symbol, engine.policy),
                     key=lambda s: s.timestamp.timestamp() if s.timestamp else np.inf)
    journal = MemoryJournal(run_id=run_id)
    account = Account.new(equity)
    manager = TradeManager(engine, account, journal, fill_at_next_open=True,
                           slippage_bps=slippage_bps)

    symbols = [c.symbol for c in candles]
    times = np.concatenate([c.timestamp for c in candles]) if candles else np.empty(0, np.int64)
    which = np.concatenate([np.full(len(c), k) for k, c in enumerate(candles)]) if candles else times
    rows = np.concatenate([np.arange(len(c)) for c in candles]) if candles else times
    order = np.lexsort((which, times))
    times, which, rows = times[order].tolist(), which[order].tolist(), rows[order].tolist()
    columns = [(c.open.tolist(), c.high.tolist(), c.low.tolist(), c.close.tolist(),
                c.timeframe_seconds) for c in candles]
    signal_times = [s.timestamp.timestamp() if s.timestamp else np.inf for s in signals]
    # Signals that fail a check reading nothing of the account are rejected whatever happens to
    # it: find them in one vectorised pass, decide them as a batch at the end (against the state
    # each one met, so the audit holds exactly what a scalar decision would have), and spend the
    # per-signal work on the rest only.
    columns_in = SignalColumns.from_signals(signals)
    neutral = engine.decide_batch(columns_in, equity=equity)
    surely_rejected = ((~neutral.checks[:, engine.state_free_checks()]).any(axis=1)
                       & ~np.isnan(columns_in.timestamp)).tolist()
    rejected_rows: list[int] = []
    rejected_states: list[tuple] = []

    curve_times: list[float] = []
    curve: list[float] = []
    closed = manager.closed
    trips = 0
    next_signal, total = 0, len(times)
    on_bar, trades = manager.on_bar, account.trades
    for k in range(total):
        at = times[k]
        while next_signal < len(signals) and signal_times[next_signal] <= at:
            if surely_rejected[next_signal]:
                rejected_rows.append(next_signal)
                rejected_states.append(manager.pass_over(signal_times[next_signal],
                                                         signals[next_signal]))
            else:
                manager.on_signal(signals[next_signal])
            next_signal += 1
        if not trades:
            continue
        symbol_index, row = which[k], rows[k]
        o, h, l, c, step = columns[symbol_index]
        events, risk_events = on_bar(symbols[symbol_index], float(at), o[row], h[row], l[row], c[row])
        trips += sum(1 for r in risk_events if r.kind == "circuit_breaker")
        curve_times.append(at + step)
        curve.append(account.last_equity)
        if progress is not None and k % 50_000 == 0:
            progress(k, total)
    for signal in signals[next_signal:]:  # signals after the last bar: decided, never filled
        manager.on_signal(signal)
    rejected = None
    if rejected_rows:
        states = np.array(rejected_states, dtype=float)
        rejected = engine.decide_rows(columns_in.take(rejected_rows),
                                      dict(zip(ACCOUNT_COLUMNS, states.T, strict=False)))
        if rejected.approved.any():
            raise AssertionError("a signal failing a state-free check was approved: a bug")
    last = times[-1] if times else 0
    for trade in list(trades.values()):
        if trade.awaiting_fill:
            del trades[trade.trade_id]
            continue
        c = by_symbol[trade.symbol]
        journal.events.append(trade.close(float(last), float(c.close[-1]), "end_of_data"))
        account.trade_closed(trade)
        closed.append(trade)
        curve_times.append(last + c.timeframe_seconds)
        curve.append(account.equity)
    if progress is not None:
        progress(total, total)
    return BacktestResult(account, journal, rejected, closed, total, symbols,
                          np.array(curve_times, dtype=float), np.array(curve, dtype=float),
                          float(times[0]) if times else 0.0,
                          float(last + (columns[which[-1]][4] if times else 0)), trips)

