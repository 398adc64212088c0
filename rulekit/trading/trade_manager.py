"""Signals and prices in, decisions and trade events out, with the account's risk state kept current.

The one path every mode runs: a signal is decided against the account's state as of that moment;
an approval opens a trade; every bar drives the open trades of its symbol and moves the account's
clock (new day, new week, circuit breaker). Everything goes through a ``Journal`` BEFORE it is
returned, so what a caller acts on is already on record; the journal is DuckDB in the CLI
(``audit.risk_store.AuditJournal``) and in memory in tests and backtests.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager as ContextManager
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Protocol

from rulekit.decision.engine import Engine
from rulekit.model import Decision, RiskState, Signal
from rulekit.trading.account import Account, BreakerLimits, RiskEvent
from rulekit.trading.lifecycle import Trade, TradeEvent, open_trade
from rulekit.trading.timeline import Release, Timeline


class Journal(Protocol):
    """Where the trade manager puts everything before acting on it."""

    def transaction(self) -> ContextManager:
        """Group the writes inside into one commit."""

    def record_decision(self, signal: Signal, decision: Decision, state: RiskState,
                        decided_at: float) -> str:
        """Write a decision; return its reference (``run_id:seq``)."""

    def record_state(self, account: Account, trades: Iterable[Trade], events: Iterable[TradeEvent],
                     risk_events: Iterable[RiskEvent], extra: dict | None = None) -> None:
        """Write the account, the trades that changed, what happened, and ``extra`` state a
        long-running process resumes from (the paper exchange, a file offset)."""


@dataclass
class MemoryJournal:
    """Keeps everything in lists: for tests, and for backtests that write it all at the end."""

    decisions: list[tuple[Signal, Decision, RiskState, float]] = field(default_factory=list)
    events: list[TradeEvent] = field(default_factory=list)
    risk_events: list[RiskEvent] = field(default_factory=list)
    run_id: str = "memory"

    def transaction(self) -> ContextManager:
        return nullcontext()

    def record_decision(self, signal, decision, state, decided_at) -> str:
        self.decisions.append((signal, decision, state, decided_at))
        return f"{self.run_id}:{len(self.decisions) - 1}"

    def record_state(self, account, trades, events, risk_events, extra=None) -> None:
        self.events.extend(events)
        self.risk_events.extend(risk_events)


class TradeManager:
    """An engine, an account and a journal: decide signals and manage the trades they open."""

    def __init__(self, engine: Engine, account: Account, journal: Journal | None = None,
                 fill_at_next_open: bool = True, slippage_bps: float = 0.0,
                 fills_from_exchange: bool = False):
        """``fill_at_next_open``: an approved trade fills at the next bar's open plus
        ``slippage_bps`` (every mode: the first price anyone can trade at after a decision);
        False fills at the signal's price and time (tests of the lifecycle alone)."""
        self.engine = engine
        self.account = account
        self.journal = journal or MemoryJournal()
        self.limits = BreakerLimits.from_policy(engine.policy)
        self.fill_at_next_open = fill_at_next_open
        self.slippage_bps = slippage_bps
        self.fills_from_exchange = fills_from_exchange  # live and paper: see trading/executor.py
        self.closed: list[Trade] = []  # trades closed by this manager, in order

    def on_signal(self, signal: Signal, now: float | None = None) -> tuple[Decision, Trade | None]:
        """Decide ``signal`` against the account's current state, at its own time (else ``now``)
        or at the account's clock if that is later: a signal stamped before what the account has
        already seen (a late line, a file from yesterday) is decided then, so its market data is
        judged stale, and no trade opens in the past, no pause ends early, no day rolls back.

        The account's equity is the one that counts: an ``equity`` field on the signal is ignored.
        """
        own = signal.timestamp.timestamp() if signal.timestamp else (
            now if now is not None else datetime.now(UTC).timestamp())
        when = max(own, self.account.as_of)
        late = when > own
        if late and signal.timestamp is not None:
            # its market fields are as old as the signal itself when it names no other time
            signal = replace(signal, market_timestamp=signal.market_timestamp or signal.timestamp)
        risk_events = self.account.advance(when, self.limits)
        state = self.account.snapshot()
        decision = self.engine.decide(replace(signal, timestamp=None) if late else signal,
                                      state=state, account_equity_only=True,
                                      now=None if signal.timestamp and not late else
                                      datetime.fromtimestamp(when, UTC))
        trade = None
        with self.journal.transaction():
            ref = self.journal.record_decision(signal, decision, state, when)
            if decision.approved:
                # an approval passed the input checks: symbol and side are known
                assert signal.symbol is not None and signal.side is not None
                units, scale, _, _ = self.engine.markets[signal.symbol]
                trade_id = f"T-{signal.signal_id}" if signal.signal_id else f"T-{ref}"
                trade = open_trade(trade_id, signal.symbol, signal.side, decision, when,
                                   (units, scale), decision_ref=ref,
                                   next_open=self.fill_at_next_open, slippage_bps=self.slippage_bps,
                                   external_fills=self.fills_from_exchange)
                self.account.add_trade(trade)
            if trade is not None or risk_events:
                self.journal.record_state(self.account, [trade] if trade else [],
                                          list(trade.events) if trade else [], risk_events)
        return decision, trade

    def finished(self, trade: Trade) -> None:
        """Book a trade an exchange's fill has just closed."""
        self.account.trade_closed(trade)
        self.closed.append(trade)

    def pass_over(self, at: float) -> RiskState:
        """Move the clock to a signal already known to be rejected whatever the account's state
        (see ``Engine.state_free_checks``): the account row it is decided against."""
        risk_events = self.account.advance(at, self.limits)
        if risk_events:
            self.journal.record_state(self.account, [], [], risk_events)
        return self.account.snapshot()

    def on_bar(self, symbol: str, at: float, bar_open: float, high: float, low: float,
               close: float, record: bool = True) -> tuple[list[TradeEvent], list[RiskEvent]]:
        """Drive the open trades of ``symbol`` through one bar (``at`` = its open time).

        ``record=False`` leaves the writing to the caller, who commits more with it."""
        account = self.account
        risk_events = account.roll(at)
        events: list[TradeEvent] = []
        changed: list[Trade] = []
        for trade in [t for t in account.trades.values() if t.symbol == symbol]:
            happened = trade.on_bar(at, bar_open, high, low, close)
            if happened:
                events += happened
                changed.append(trade)
                if not trade.is_open:
                    account.trade_closed(trade)
                    self.closed.append(trade)
        account.mark(symbol, close)
        risk_events += account.advance(at, self.limits)
        if record and (events or risk_events):
            self.journal.record_state(account, changed, events, risk_events)
        return events, risk_events


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a simulation did, in time order, for printing."""

    decision: Decision | None = None
    signal: Signal | None = None
    trade: Trade | None = None
    events: tuple[TradeEvent, ...] = ()
    risk_events: tuple[RiskEvent, ...] = ()


def drive(manager: TradeManager, timeline: Timeline,
          on_step: Callable[[Step], None] = lambda step: None) -> None:
    """Everything on ``timeline`` through the manager, in the timeline's order (its rules: a
    signal released at or before a bar's open is decided first and trades from that bar)."""
    for item in timeline.events():
        if isinstance(item, Release):
            decision, trade = manager.on_signal(item.signal, now=item.at)
            on_step(Step(decision=decision, signal=item.signal, trade=trade,
                         events=tuple(trade.events) if trade else ()))
        else:
            events, risk_events = manager.on_bar(*item)
            if events or risk_events:
                on_step(Step(events=tuple(events), risk_events=tuple(risk_events)))
