"""The account-wide risk state the global limits read, kept up to date as trades open and close.

Equity here is marked equity: starting equity plus realised PnL (fees included) plus the unrealised
PnL of open trades at their latest prices. Daily and weekly drawdowns are measured on it against the
equity at the start of the UTC day and of the UTC week (Monday 00:00), not by summing trade returns.

Protections only ever block new entries; nothing here closes a trade.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rulekit.model import RiskState, Side, format_timestamp
from rulekit.trading.lifecycle import Trade

DAY = 86_400.0
WEEK = 7 * DAY
LONG = Side.LONG
MONDAY_OFFSET = 4 * DAY  # 1970-01-01 was a Thursday: the first Monday 00:00 UTC is 4 days on


def day_start(at: float) -> float:
    return math.floor(at / DAY) * DAY


def week_start(at: float) -> float:
    return math.floor((at - MONDAY_OFFSET) / WEEK) * WEEK + MONDAY_OFFSET


@dataclass(frozen=True, slots=True)
class BreakerLimits:
    """The policy's params for the global risk state: when the breaker trips and how long it holds."""

    loss_pct: float
    pause_seconds: float

    @classmethod
    def from_policy(cls, policy) -> BreakerLimits:
        constants = policy.constants()
        return cls(float(constants["circuit_breaker_loss_pct"]),
                   float(constants["circuit_breaker_pause_hours"]) * 3600)


class RiskEventKind(StrEnum):
    """What changed in the account's global state (the audit's ``risk_events.kind``)."""

    NEW_DAY = "new_day"
    NEW_WEEK = "new_week"
    CIRCUIT_BREAKER = "circuit_breaker"
    POLICY_SWAPPED = "policy_swapped"
    POLICY_REFUSED = "policy_refused"
    EXCHANGE_UNREACHABLE = "exchange_unreachable"    # entries refused until it answers
    EXCHANGE_RECONNECTED = "exchange_reconnected"    # answering again, orders reconciled
    POSITIONS_MISMATCH = "positions_mismatch"        # books and exchange differ: entries refused
    POSITIONS_AGREE = "positions_agree"              # they agree again: entries allowed
    POSITIONS_ADOPTED = "positions_adopted"          # the exchange's view taken into the books
    BALANCE_DIFFERS = "balance_differs"              # the exchange's equity below the books'
    ORDER_ENDED = "order_ended"                      # an order ended on the exchange, put back


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """A change of the global state worth a row of its own: a breaker trip, a new day or week."""

    kind: RiskEventKind
    at: float
    equity: float
    detail: str


@dataclass(slots=True)
class Account:
    """Mutable and persisted whole (``as_record``) after every change, so a restart resumes here."""

    start_equity: float
    closed_pnl: float = 0.0
    day_started_at: float = -math.inf
    day_start_equity: float = math.nan
    week_started_at: float = -math.inf
    week_start_equity: float = math.nan
    peak_equity: float = math.nan
    breaker_reference_equity: float = math.nan
    consecutive_losses: int = 0
    circuit_breaker_until: float | None = None
    breaker_trips: int = 0
    closed_trades: int = 0
    as_of: float = -math.inf
    last_equity: float = math.nan    # equity at the last ``advance``
    marks: dict[str, float] = field(default_factory=dict)
    trades: dict[str, Trade] = field(default_factory=dict)
    # positions on the exchange accepted as not ours (``--accept-exchange-positions``): signed
    # quantity by symbol, never managed; their symbols take no new trade (one per symbol)
    unmanaged: dict[str, float] = field(default_factory=dict)

    @classmethod
    def new(cls, equity: float) -> Account:
        return cls(start_equity=equity, peak_equity=equity, breaker_reference_equity=equity)

    # --- figures ----------------------------------------------------------------------------
    @property
    def realised_pnl(self) -> float:
        """Closed trades' PnL plus what open trades have already realised (entry fees, partials)."""
        return self.closed_pnl + sum(t.realised_pnl for t in self.trades.values())

    @property
    def cash_equity(self) -> float:
        return self.start_equity + self.realised_pnl

    @property
    def unrealised_pnl(self) -> float:
        return sum(t.unrealised_pnl(self.marks.get(t.symbol, t.entry_price))
                   for t in self.trades.values())

    @property
    def equity(self) -> float:
        """Cash equity plus unrealised PnL, in one pass (it is read on every bar of a backtest)."""
        total = self.start_equity + self.closed_pnl
        marks = self.marks
        for t in self.trades.values():
            total += t.realised_pnl
            if not t.awaiting_fill:
                total += (1.0 if t.side is LONG else -1.0) * (
                    marks.get(t.symbol, t.entry_price) - t.entry_price) * t.quantity
        return total

    @property
    def open_exposure(self) -> float:
        return sum(t.notional(self.marks.get(t.symbol)) for t in self.trades.values())

    def paused(self, at: float) -> bool:
        return self.circuit_breaker_until is not None and at < self.circuit_breaker_until

    def snapshot(self) -> RiskState:
        """The account row the entry decision reads."""
        until = self.circuit_breaker_until
        trades = self.trades.values()
        return RiskState(self.equity, self.day_start_equity, self.week_start_equity,
                         self.peak_equity, self.breaker_reference_equity, self.consecutive_losses,
                         len(self.trades), self.open_exposure, math.nan if until is None else until,
                         tuple(t.symbol for t in trades) + tuple(self.unmanaged))

    # --- changes ----------------------------------------------------------------------------
    def roll(self, at: float) -> list[RiskEvent]:
        """Start a new UTC day or week if ``at`` is in one: its starting equity is today's."""
        if at < self.day_started_at + DAY and at < self.week_started_at + WEEK:
            return []
        events: list[RiskEvent] = []
        equity = self.equity
        if at >= self.day_started_at + DAY:
            self.day_started_at, self.day_start_equity = day_start(at), equity
            events.append(RiskEvent(RiskEventKind.NEW_DAY, at, equity, "daily drawdown measured from here"))
        if at >= self.week_started_at + WEEK:
            self.week_started_at, self.week_start_equity = week_start(at), equity
            events.append(RiskEvent(RiskEventKind.NEW_WEEK, at, equity, "weekly drawdown measured from here"))
        return events

    def advance(self, at: float, limits: BreakerLimits) -> list[RiskEvent]:
        """Move the clock to ``at``: roll the day and week, raise the peaks, trip the breaker."""
        if at < self.as_of:
            return []
        self.as_of = at
        events = self.roll(at)
        self.last_equity = equity = self.equity
        self.peak_equity = max(self.peak_equity, equity)
        self.breaker_reference_equity = max(self.breaker_reference_equity, equity)
        loss_pct = (self.breaker_reference_equity - equity) / self.breaker_reference_equity * 100
        if loss_pct >= limits.loss_pct and not self.paused(at):
            self.circuit_breaker_until = at + limits.pause_seconds
            self.breaker_reference_equity = equity
            self.breaker_trips += 1
            events.append(RiskEvent(RiskEventKind.CIRCUIT_BREAKER, at, equity,
                                    f"{loss_pct:.2f}% below the reference; entries paused until "
                                    f"{format_timestamp(self.circuit_breaker_until)}"))
        return events

    def add_trade(self, trade: Trade) -> None:
        """A new trade is marked at its entry price: an older mark of its symbol (from before a
        stretch of bars no open trade needed, which a backtest skips) would misstate its exposure."""
        self.trades[trade.trade_id] = trade
        self.marks[trade.symbol] = trade.entry_price

    def mark(self, symbol: str, price: float) -> None:
        self.marks[symbol] = price

    def trade_closed(self, trade: Trade) -> None:
        """Book a closed trade: its PnL, and the losing streak (a loss extends it, a win resets it,
        a trade closed at exactly zero leaves it as it was)."""
        self.trades.pop(trade.trade_id, None)
        self.closed_pnl += trade.realised_pnl
        self.closed_trades += 1
        if trade.realised_pnl < 0:
            self.consecutive_losses += 1
        elif trade.realised_pnl > 0:
            self.consecutive_losses = 0

    def as_record(self) -> dict[str, Any]:
        record = {name: getattr(self, name) for name in self.__slots__ if name != "trades"}
        record["marks"] = dict(self.marks)
        record["unmanaged"] = dict(self.unmanaged)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any], trades: list[Trade]) -> Account:
        account = cls(**record)
        account.trades = {t.trade_id: t for t in trades}
        return account

