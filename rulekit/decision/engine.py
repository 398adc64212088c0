"""The entry decision: signal + market + account + risk state -> approved with a size, or rejected.

``Engine`` is the one code path for dry-run, backtest, paper and live: ``decide`` for one signal at a
time, ``decide_batch`` for many (numpy over columns). Both run the same compiled program.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter_ns
from typing import Any

import numpy as np

from rulekit.decision.compiler import Program, broadcast, compile_policy
from rulekit.decision.quantity import step_units
from rulekit.model import NAN, Decision, MarketRules, RiskState, Signal, TraceLayout
from rulekit.policy.loader import Policy

UNKNOWN_MARKET = (NAN, NAN, NAN, NAN)


class Engine:
    """A policy compiled once, ready to decide."""

    def __init__(self, policy: Policy, markets: Mapping[str, MarketRules] | None = None):
        self.policy = policy
        self.program: Program = compile_policy(policy)
        self.layout = TraceLayout.of(
            tuple((s.name, s.section) for s in self.program.check_steps),
            tuple((s.name, s.section) for s in self.program.value_steps))
        self._check_count = len(self.program.check_steps)
        self._check_names = self.program.check_names
        self._identity = (policy.name, policy.version, policy.hash)
        # a decision's head: (approved, reason, name, version, hash, layout), one per outcome
        self._approved = (True, None, *self._identity, self.layout)
        self._rejected = tuple((False, name, *self._identity, self.layout)
                               for name in self._check_names)
        self._first, self._first_ieee = self.program.first, self.program.first_ieee
        self._fresh_accounts: dict[float, tuple] = {}
        self._rerun = self._full  # a rejection's full trace, when read (Decision.outcomes)
        self._last_state: tuple[RiskState | None, tuple] = (None, ())
        self.markets: dict[str, tuple[float, float, float, float]] = {}
        self.set_market_rules({**policy.markets, **(markets or {})})

    def set_market_rules(self, markets: Mapping[str, MarketRules]) -> None:
        """Use an exchange's order rules for symbols the policy allows (others stay unknown)."""
        for symbol, rules in markets.items():
            if symbol in self.policy.markets:
                units, scale = step_units(rules.amount_step)
                self.markets[symbol] = (float(units), float(scale), rules.min_notional,
                                        rules.min_amount)

    def decide(self, signal: Signal, state: RiskState | None = None, equity: float | None = None,
               now: datetime | None = None, account_equity_only: bool = False) -> Decision:
        """Decide one signal. Never raises on bad data: that is a rejection with a named reason.

        ``account_equity_only`` ignores an ``equity`` field on the signal (a managed account's own
        equity is the one that counts).

        The program stops at the first check that fails (``Program.first``); a rejection's full
        trace is computed from the same inputs when it is read (``Decision.outcomes``)."""
        own = NAN if account_equity_only else signal.equity
        if own == own:
            equity_now = own
        elif equity is not None:
            equity_now = float(equity)
        else:
            equity_now = state.equity if state is not None else NAN
        when = signal.timestamp or now or datetime.now(UTC)
        seen = signal.market_timestamp
        symbol = signal.symbol
        inputs = (signal.well_formed, symbol, signal.side, signal.consensus, signal.confidence,
                  signal.strength, signal.price, signal.atr, signal.ema_200, signal.volume_24h,
                  signal.spread_bps, (when - seen).total_seconds() if seen else 0.0,
                  signal.history_bars, equity_now) + (
            (self._fresh_accounts.get(equity_now) or self._fresh_account(equity_now))
            if state is None else self._account(state, when, symbol)) + self.markets.get(
                symbol or "", UNKNOWN_MARKET)
        started = perf_counter_ns()
        try:
            result = self._first(*inputs)
        except ZeroDivisionError:
            result = self._first_ieee(*inputs)
        elapsed = (perf_counter_ns() - started) / 1000
        if result.__class__ is int:
            # Decision.deferred, written out: this is the one hot path
            return tuple.__new__(Decision, self._rejected[result] + ([None, self._rerun, inputs],
                                                                     elapsed))
        return tuple.__new__(Decision, self._approved + (result, elapsed))

    def _full(self, inputs: tuple) -> tuple:
        """Every step of the program on one decision's inputs: its full trace."""
        try:
            return self.program.scalar(*inputs)
        except ZeroDivisionError:
            return self.program.scalar_ieee(*inputs)

    def _fresh_account(self, equity: float) -> tuple:
        """The account inputs after ``equity`` of a fresh account (every reference equity is
        today's, nothing open), built once per equity."""
        found = self._fresh_accounts.get(equity)
        if found is None:
            found = RiskState.fresh(equity).inputs(NAN, None)[1:]
            if equity == equity:  # NaN is never found again: not kept
                if len(self._fresh_accounts) >= 256:
                    self._fresh_accounts.clear()
                self._fresh_accounts[equity] = found
        return found

    def _account(self, state: RiskState, when: datetime, symbol: str | None) -> tuple:
        """``state.inputs(when, symbol)`` after its equity; the figures that do not depend on the
        time or the symbol are built once per state."""
        last = self._last_state  # (state, figures), replaced whole: safe across threads
        if last[0] is not state:
            last = self._last_state = (state, state.inputs(NAN, None)[1:-2])
        until = state.circuit_breaker_until
        return last[1] + (until == until and when.timestamp() < until,
                          symbol in state.open_symbols)

    def decide_batch(self, signals: SignalColumns, state: RiskState | None = None,
                     equity: float | None = None, now: datetime | None = None) -> BatchDecisions:
        """Decide many signals at once against the same risk state, vectorised over columns."""
        default_equity = _resolve_equity(NAN, equity, state)
        equity_now = np.where(np.isnan(signals.equity), default_equity, signals.equity)
        when = np.where(np.isnan(signals.timestamp), _epoch(now), signals.timestamp)
        account = risk_columns(when, state or RiskState(), signals.symbol.tolist())
        account["equity"] = equity_now
        if state is None:  # a fresh account for each signal: every reference equity is its equity
            for name in ("day_start_equity", "week_start_equity", "peak_equity",
                         "breaker_reference_equity"):
                account[name] = equity_now
        return self.decide_rows(signals, account)

    def decide_rows(self, signals: SignalColumns,
                    account: dict[str, np.ndarray]) -> BatchDecisions:
        """Decide many signals, each against its own risk state and time: ``account`` holds one
        value per row for ``ACCOUNT_COLUMNS`` (the breaker's end as epoch seconds, NaN for none)."""
        rows = signals.rows
        when = account["decided_at"]
        age = np.where(np.isnan(signals.market_timestamp), 0.0, when - signals.market_timestamp)
        market = np.array([self.markets.get(s, UNKNOWN_MARKET) for s in signals.symbol.tolist()],
                          dtype=float).reshape(rows, 4)
        started = perf_counter_ns()
        with np.errstate(all="ignore"):
            outcomes = self.program.vector(
                signals.well_formed, signals.symbol, signals.side, signals.consensus, signals.confidence,
                signals.strength, signals.price, signals.atr, signals.ema_200, signals.volume_24h,
                signals.spread_bps, age, signals.history_bars, account["equity"],
                account["day_start_equity"], account["week_start_equity"], account["peak_equity"],
                account["breaker_reference_equity"], account["consecutive_losses"],
                account["open_trades"], account["open_exposure"],
                when < account["circuit_breaker_until"],
                account["symbol_trade_open"].astype(bool),
                market[:, 0], market[:, 1], market[:, 2], market[:, 3])
        elapsed = (perf_counter_ns() - started) / 1000 / max(rows, 1)
        columns = broadcast(outcomes, rows)
        checks = np.column_stack(columns[:self._check_count]).astype(bool)
        values = {name: np.asarray(column, dtype=float) for name, column
                  in zip(self.program.value_names, columns[self._check_count:], strict=False)}
        return BatchDecisions(self, signals, checks, values, account, np.full(rows, elapsed))

    def state_free_checks(self) -> np.ndarray:
        """Which checks read nothing of the account (directly or through a formula): a signal that
        fails one of them is rejected whatever the account's state."""
        stateful = set(ACCOUNT_INPUTS)
        mask = []
        for step in self.policy.steps:
            reads_state = bool(step.expression.names & stateful)
            if step.is_check:
                mask.append(not reads_state)
            elif reads_state:
                stateful.add(step.name)
        return np.array(mask, dtype=bool)


ACCOUNT_INPUTS = ("equity", "day_start_equity", "week_start_equity", "peak_equity",
                  "breaker_reference_equity", "consecutive_losses", "open_trades", "open_exposure",
                  "circuit_breaker_active", "symbol_trade_open")
ACCOUNT_COLUMNS = ("decided_at", "equity", "day_start_equity", "week_start_equity", "peak_equity",
                   "breaker_reference_equity", "consecutive_losses", "open_trades",
                   "open_exposure", "circuit_breaker_until", "symbol_trade_open")


assert RiskState._fields[:9] == ACCOUNT_COLUMNS[1:-1], "the account row and its columns disagree"


def risk_columns(decided_at: Sequence[float] | np.ndarray, states: RiskState | Sequence[RiskState],
                 symbols: Sequence[str | None]) -> dict[str, np.ndarray]:
    """The account row of each decision as columns (``ACCOUNT_COLUMNS``): the one builder the
    batch decision, scalar decisions gathered for the audit, backtests and replay all use. One
    ``RiskState`` is broadcast to every row; ``symbols`` give each row's ``symbol_trade_open``."""
    when = np.asarray(decided_at, dtype=float).reshape(-1)
    rows = len(when)
    names = ACCOUNT_COLUMNS[1:-1]  # the RiskState fields from equity to circuit_breaker_until
    if isinstance(states, RiskState):
        columns = {name: np.full(rows, value, dtype=float)
                   for name, value in zip(names, states, strict=False)}
        held = states.open_symbols
        same = ([symbol in held for symbol in symbols] if held else np.zeros(rows))
    else:
        matrix = np.array([state[:len(names)] for state in states], dtype=float).reshape(rows, len(names))
        columns = dict(zip(names, matrix.T, strict=True))
        same = [symbol in state.open_symbols for state, symbol in zip(states, symbols, strict=True)]
    return {"decided_at": when, **columns, "symbol_trade_open": np.asarray(same, dtype=float)}


def _resolve_equity(signal_equity: float, equity: float | None, state: RiskState | None) -> float:
    """Equity for a decision: the signal's own, else the caller's, else the risk state's."""
    if signal_equity == signal_equity:
        return signal_equity
    if equity is not None:
        return float(equity)
    return state.equity if state is not None else NAN


def _epoch(moment: datetime | None) -> float:
    return (moment or datetime.now(UTC)).timestamp()


@dataclass(frozen=True)
class SignalColumns:
    """Signals as columns (text as numpy unicode, numbers as float64 with NaN for bad or missing,
    timestamps as epoch seconds). ``records`` keeps each signal's original fields for the audit."""

    well_formed: np.ndarray
    symbol: np.ndarray
    side: np.ndarray
    consensus: np.ndarray
    confidence: np.ndarray
    strength: np.ndarray
    price: np.ndarray
    atr: np.ndarray
    ema_200: np.ndarray
    volume_24h: np.ndarray
    spread_bps: np.ndarray
    history_bars: np.ndarray
    equity: np.ndarray
    timestamp: np.ndarray
    market_timestamp: np.ndarray
    signal_id: np.ndarray
    model_votes: Sequence[object]
    raw: Sequence[object]

    @property
    def rows(self) -> int:
        return len(self.price)

    def take(self, rows: Sequence[int]) -> SignalColumns:
        """The signals at ``rows``, in that order."""
        index = np.asarray(rows, dtype=np.int64)
        fields: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            column = getattr(self, name)
            fields[name] = (column[index] if isinstance(column, np.ndarray)
                            else [column[i] for i in index.tolist()])
        return SignalColumns(**fields)

    @classmethod
    def from_signals(cls, signals: Sequence[Signal]) -> SignalColumns:
        def text(name: str) -> np.ndarray:
            return np.array([getattr(s, name) or "" for s in signals], dtype=str).reshape(-1)

        def number(name: str) -> np.ndarray:
            return np.array([getattr(s, name) for s in signals], dtype=float).reshape(-1)

        def moment(name: str) -> np.ndarray:
            return np.array([getattr(s, name).timestamp() if getattr(s, name) else NAN
                             for s in signals], dtype=float).reshape(-1)

        return cls(well_formed=np.array([s.well_formed for s in signals], dtype=bool),
                   symbol=text("symbol"), side=text("side"), consensus=text("consensus"),
                   confidence=number("confidence"), strength=number("strength"),
                   price=number("price"), atr=number("atr"), ema_200=number("ema_200"),
                   volume_24h=number("volume_24h"), spread_bps=number("spread_bps"),
                   history_bars=number("history_bars"),
                   equity=number("equity"), timestamp=moment("timestamp"),
                   market_timestamp=moment("market_timestamp"),
                   signal_id=np.array([s.signal_id or "" for s in signals], dtype=object),
                   model_votes=[s.model_votes for s in signals], raw=[s.raw for s in signals])


class BatchDecisions:
    """The decisions of one batch as columns, with a per-row ``Decision`` view for printing."""

    def __init__(self, engine: Engine, signals: SignalColumns, checks: np.ndarray,
                 values: dict[str, np.ndarray], account: dict[str, np.ndarray],
                 elapsed_us: np.ndarray | None = None):
        self.engine = engine
        self.elapsed_us = elapsed_us  # the engine's time per decision (a batch's average)
        self.signals = signals
        self.account = account  # the resolved equity, risk state and decision time of every row
        self.checks = checks
        self.values = values
        self.failed_json: Any = None  # an Arrow string array: see decision.explain.failed_texts
        failed = ~checks
        self.approved: np.ndarray = np.asarray(~failed.any(axis=1), dtype=bool)
        names = np.array(engine._check_names + ("",), dtype=object)
        first = np.where(self.approved, len(engine._check_names), failed.argmax(axis=1))
        self.reason = names[first]
        self.reason[self.approved] = None

    @classmethod
    def single(cls, engine: Engine, signal: Signal, decision: Decision, state: RiskState,
               decided_at: float) -> BatchDecisions:
        """One scalar decision as a one-row batch, so it is audited by the same writer."""
        return cls.of(engine, [signal], [decision], [state], [decided_at])

    @classmethod
    def of(cls, engine: Engine, signals: Sequence[Signal], decisions: Sequence[Decision],
           states: Sequence[RiskState], decided_at: Sequence[float]) -> BatchDecisions:
        """Scalar decisions (each against its own risk state) gathered into a batch for the audit."""
        count = engine._check_count
        outcomes = np.array([d.outcomes for d in decisions], dtype=float).reshape(
            len(decisions), count + len(engine.program.value_names))
        checks = outcomes[:, :count].astype(bool)
        values = {name: outcomes[:, count + i] for i, name in enumerate(engine.program.value_names)}
        account = risk_columns(decided_at, states, [s.symbol for s in signals])
        return cls(engine, SignalColumns.from_signals(signals), checks, values, account,
                   np.array([d.elapsed_us for d in decisions], dtype=float))

    def __len__(self) -> int:
        return len(self.approved)

    def output(self, name: str) -> np.ndarray:
        """A decision field for every row: the figure when approved, NaN when rejected."""
        return np.where(self.approved, self.values[name], np.nan)

    def decision(self, row: int) -> Decision:
        outcomes = tuple(bool(v) for v in self.checks[row]) + tuple(
            float(column[row]) for column in self.values.values())
        return Decision(bool(self.approved[row]), self.reason[row], *self.engine._identity,
                        self.engine.layout, outcomes)

