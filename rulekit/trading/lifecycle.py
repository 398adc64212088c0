"""A trade after approval: OPEN -> PARTIAL_TP -> TRAILING -> CLOSED, driven bar by bar.

The levels come from the policy (computed once at entry by its ``exits`` formulas); this module only
applies them, with the bar conventions of ``rulekit.trading.fills``:

- Each bar is read in this order: time exit at the bar's open, then the stop in force when the bar
  opened, then the take profit, then the partial take profit. A bar that reaches both the stop and a
  target closes at the stop (we cannot see inside a bar, so we assume the worse). Targets are limits:
  their price, or the open when the bar opens beyond them. Stops and time exits are market orders:
  their price (a stop's, or the open on a gap or for a time exit) less ``slippage_bps``.
- Stops moved by a bar (breakeven at +1 R, trailing after the partial) take effect from the next bar:
  the bar that pushed the price up cannot also be assumed to have come back down afterwards.
- The stop only ever moves in the trade's favour; the trailing stop is measured from the best price
  seen (MFE), and after the partial it covers only the remaining quantity.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from rulekit.decision.quantity import floor_to_step
from rulekit.errors import RulekitError
from rulekit.model import Side
from rulekit.trading.fills import adverse as adverse_price
from rulekit.trading.fills import stop_fill, target_fill


class TradeState(StrEnum):
    """Where a trade is. A trade exists once its decision is approved (a rejection is a decision,
    not a trade): APPROVED while its entry is on its way, then OPEN; CANCELLED if it never fills."""

    APPROVED = "APPROVED"
    OPEN = "OPEN"
    PARTIAL_TP = "PARTIAL_TP"
    TRAILING = "TRAILING"
    CLOSED = "CLOSED"
    CANCELLED = "CANCELLED"


ALLOWED = {
    TradeState.APPROVED: {TradeState.OPEN, TradeState.CANCELLED},
    TradeState.OPEN: {TradeState.PARTIAL_TP, TradeState.CLOSED},
    TradeState.PARTIAL_TP: {TradeState.TRAILING, TradeState.CLOSED},
    TradeState.TRAILING: {TradeState.CLOSED},
}


class IllegalTransition(RulekitError):
    """A trade asked to move to a state its current state cannot reach (a bug or a corrupt store)."""


LIVE = frozenset({TradeState.APPROVED, TradeState.OPEN, TradeState.PARTIAL_TP, TradeState.TRAILING})


class ExitReason(StrEnum):
    """Why (part of) a position was closed; the audit's ``exit_reason``."""

    STOP_LOSS = "stop_loss"
    BREAKEVEN_STOP = "breakeven_stop"
    TRAILING_STOP = "trailing_stop"
    PARTIAL_TP = "partial_tp"
    TAKE_PROFIT = "take_profit"
    TIME_EXIT = "time_exit"
    END_OF_DATA = "end_of_data"
    CLOSED_ON_EXCHANGE = "closed_on_exchange"  # gone from the exchange, accepted by the operator


STOPS = frozenset({ExitReason.STOP_LOSS, ExitReason.BREAKEVEN_STOP, ExitReason.TRAILING_STOP})


class Event(StrEnum):
    """What happened to a trade; each is one audited row."""

    OPEN = "OPEN"
    BREAKEVEN = "BREAKEVEN"
    PARTIAL_TP = "PARTIAL_TP"
    TRAILING = "TRAILING"
    CLOSED = "CLOSED"


@dataclass(frozen=True, slots=True)
class TradeEvent:
    trade_id: str
    event: Event
    timestamp: float            # epoch seconds UTC
    price: float                # fill price, or the new stop's trigger for stop moves
    quantity: float             # quantity filled by this event (0 for stop moves)
    stop_loss: float            # the stop in force after the event
    state: TradeState
    reason: str | None = None   # exit reason on CLOSED, the move's cause otherwise
    pnl: float | None = None    # on CLOSED: the whole trade's realised PnL after fees
    r_multiple: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["event"] = self.event.value
        out["state"] = self.state.value
        return out


@dataclass(slots=True)
class Trade:
    """One position and its exit plan. Mutable: the lifecycle advances it in place, and the state
    store persists it whole after every event, so a restart resumes from exactly here."""

    trade_id: str
    symbol: str
    side: str
    entry_price: float
    opened_at: float
    initial_quantity: float
    quantity: float
    initial_stop: float
    stop_loss: float
    take_profit: float
    breakeven_trigger: float
    breakeven_stop: float
    partial_tp_price: float
    partial_tp_fraction: float
    trailing_distance: float
    progress_price: float
    time_exit_seconds: float
    fee_rate: float
    amount_step_units: float
    amount_step_scale: float
    state: TradeState = TradeState.APPROVED
    best_price: float = math.nan
    worst_price: float = math.nan
    realised_pnl: float = 0.0
    fees: float = 0.0
    breakeven_done: bool = False
    last_bar_at: float = -math.inf
    closed_at: float | None = None
    exit_price: float | None = None
    exit_reason: str | None = None
    decision_ref: str | None = None
    slippage_bps: float = 0.0        # against every market fill: entry, stop, time exit, end
    external_fills: bool = False     # live: an exchange fills; the lifecycle moves the stops
    events: list[TradeEvent] = field(default_factory=list, repr=False)

    # --- figures ----------------------------------------------------------------------------
    @property
    def is_long(self) -> bool:
        return self.side is Side.LONG

    @property
    def awaiting_fill(self) -> bool:
        """Approved, its entry not filled yet (a market order waiting for the next bar's open)."""
        return self.state is TradeState.APPROVED

    @property
    def direction(self) -> float:
        return 1.0 if self.is_long else -1.0

    @property
    def stop_distance(self) -> float:
        """One R in price: the distance from entry to the initial stop."""
        return abs(self.entry_price - self.initial_stop)

    @property
    def initial_risk(self) -> float:
        """Money lost if the whole initial quantity had stopped out at the initial stop: 1 R."""
        return self.initial_quantity * self.stop_distance

    @property
    def is_open(self) -> bool:
        """Not finished: a position, or an entry on its way (it counts against the limits)."""
        return self.state in LIVE

    def in_r(self, price: float) -> float:
        return self.direction * (price - self.entry_price) / self.stop_distance

    @property
    def mfe_r(self) -> float:
        """Maximum favourable excursion in R (best price seen)."""
        return self.in_r(self.best_price)

    @property
    def mae_r(self) -> float:
        """Maximum adverse excursion in R (worst price seen)."""
        return self.in_r(self.worst_price)

    def unrealised_pnl(self, mark: float) -> float:
        if self.awaiting_fill:
            return 0.0
        return self.direction * (mark - self.entry_price) * self.quantity

    def notional(self, mark: float | None = None) -> float:
        return self.quantity * (self.entry_price if mark is None else mark)

    @property
    def r_multiple(self) -> float:
        """The whole trade's R: realised PnL after fees over the initial risk (partial included)."""
        return self.realised_pnl / self.initial_risk

    # --- transitions ------------------------------------------------------------------------
    def _move(self, target: TradeState) -> None:
        if target not in ALLOWED.get(self.state, ()):
            raise IllegalTransition(f"trade {self.trade_id}: {self.state.value} -> {target.value} "
                                    "is not a lifecycle transition")
        self.state = target

    def _emit(self, event: Event, at: float, price: float, quantity: float,
              reason: str | None = None) -> TradeEvent:
        closed = event is Event.CLOSED
        record = TradeEvent(self.trade_id, event, at, price, quantity, self.stop_loss, self.state,
                            reason, self.realised_pnl if closed else None,
                            self.r_multiple if closed else None)
        self.events.append(record)
        return record

    def _fill(self, price: float, quantity: float) -> None:
        """Book a (partial) exit: PnL on the quantity, and the exit's fee."""
        fee = abs(price * quantity) * self.fee_rate
        self.realised_pnl += self.direction * (price - self.entry_price) * quantity - fee
        self.fees += fee
        self.quantity = max(0.0, self.quantity - quantity)

    def book_entry(self) -> TradeEvent:
        """The entry fill: its fee, and the OPEN event."""
        fee = abs(self.entry_price * self.quantity) * self.fee_rate
        self.realised_pnl -= fee
        self.fees += fee
        return self._emit(Event.OPEN, self.opened_at, self.entry_price, self.quantity, "entry")

    def close(self, at: float, price: float, reason: ExitReason) -> TradeEvent:
        """Close what is left at ``price`` (a stop, a target, a time exit, or by hand)."""
        quantity = self.quantity
        self._fill(price, quantity)
        self._move(TradeState.CLOSED)
        self.closed_at, self.exit_price, self.exit_reason = at, price, reason
        return self._emit(Event.CLOSED, at, price, quantity, reason)

    def close_at_market(self, at: float, price: float, reason: ExitReason) -> TradeEvent:
        """Close what is left with a market order (a triggered stop, a time exit, the end of the
        data) priced at ``price`` before slippage: it fills ``slippage_bps`` against the trade."""
        return self.close(at, self._taking(price, not self.is_long), reason)

    def _taking(self, price: float, is_buy: bool) -> float:
        """A market order's fill: ``price`` moved ``slippage_bps`` against it."""
        return adverse_price(price, is_buy, self.slippage_bps) if self.slippage_bps else price

    # --- one bar ----------------------------------------------------------------------------
    def on_bar(self, at: float, bar_open: float, high: float, low: float,
               close: float) -> list[TradeEvent]:
        """Advance the trade through one bar (``at`` = the bar's open time); return its events.

        A bar at or before the last one seen is ignored, so replaying bars after a restart is safe.
        """
        if not self.is_open or at <= self.last_bar_at or at < self.opened_at:
            return []
        events: list[TradeEvent] = []
        if self.awaiting_fill:
            if self.external_fills:
                return events  # the exchange will say when and where it filled
            self._fill_at(at, self._taking(bar_open, self.is_long))
            events.append(self.book_entry())
        self.last_bar_at = at
        favourable, adverse = (high, low) if self.is_long else (low, high)
        if self.external_fills:
            self._extend_excursions(favourable, adverse)
            return events + self._move_stops(at, favourable)

        if (at - self.opened_at >= self.time_exit_seconds
                and self.direction * (self.best_price - self.progress_price) < 0):
            events.append(self.close_at_market(at, bar_open, ExitReason.TIME_EXIT))
            return events

        stop_price = stop_fill(self.is_long, self.stop_loss, bar_open, high, low)
        if stop_price is not None:  # stop first: the best price before it is only the open
            self._extend_excursions(bar_open, adverse)
            events.append(self.close_at_market(at, stop_price, self._stop_reason()))
            return events
        self._extend_excursions(favourable, adverse)

        target = target_fill(self.is_long, self.take_profit, bar_open, high, low)
        partial = (target_fill(self.is_long, self.partial_tp_price, bar_open, high, low)
                   if self.state is TradeState.OPEN else None)
        if partial is not None:
            events.append(self._take_partial(at, partial))
        if target is not None:
            events.append(self.close(at, target, ExitReason.TAKE_PROFIT))
            return events

        return events + self._move_stops(at, favourable)

    def _move_stops(self, at: float, favourable: float) -> list[TradeEvent]:
        """Breakeven at its trigger; after the partial, the trail behind the best price."""
        events = []
        if not self.breakeven_done and self.direction * (favourable - self.breakeven_trigger) >= 0:
            self.breakeven_done = True
            if self._tighten(self.breakeven_stop):
                events.append(self._emit(Event.BREAKEVEN, at, self.stop_loss, 0.0, "breakeven"))
        if self.state in (TradeState.PARTIAL_TP, TradeState.TRAILING):
            if self._tighten(self.best_price - self.direction * self.trailing_distance):
                if self.state is TradeState.PARTIAL_TP:
                    self._move(TradeState.TRAILING)
                events.append(self._emit(Event.TRAILING, at, self.stop_loss, 0.0, "trailing"))
        return events

    # --- fills reported by an exchange (external_fills) -------------------------------------
    def time_exit_due(self, at: float) -> bool:
        """The time exit applies at a bar opening at ``at`` (the close goes out at that open)."""
        return (self.is_open and not self.awaiting_fill
                and at - self.opened_at >= self.time_exit_seconds
                and self.direction * (self.best_price - self.progress_price) < 0)

    def round_to_step(self, quantity: float) -> float:
        """``quantity`` as the nearest whole number of the market's amount steps."""
        units, scale = self.amount_step_units, self.amount_step_scale
        return round(quantity * scale / units) * units / scale

    def partial_quantity(self) -> float:
        return floor_to_step(self.initial_quantity * self.partial_tp_fraction,
                             self.amount_step_units, self.amount_step_scale)

    def fill_entry(self, at: float, price: float) -> TradeEvent:
        """The exchange filled the entry at ``price`` during the bar opening at ``at``."""
        self._fill_at(at, price)
        return self.book_entry()

    def book_exit(self, at: float, price: float, quantity: float, reason: ExitReason, bar_open: float,
                  high: float, low: float) -> TradeEvent:
        """The exchange filled an exit in the bar (``at``, open, high, low): a partial take-profit
        or the close of what is left. Excursions are extended as the simulation would: up to the
        open only when a stop filled (stop first)."""
        favourable, adverse = (high, low) if self.is_long else (low, high)
        self._extend_excursions(bar_open if reason in STOPS else favourable, adverse)
        if reason is ExitReason.PARTIAL_TP and quantity < self.quantity:
            self._fill(price, quantity)
            self._move(TradeState.PARTIAL_TP)
            return self._emit(Event.PARTIAL_TP, at, price, quantity, ExitReason.PARTIAL_TP)
        return self.close(at, price, reason)

    def stop_reason(self) -> ExitReason:
        return self._stop_reason()

    def cancel(self, at: float, reason: str) -> None:
        """An entry the exchange refused: the trade never opened."""
        self._move(TradeState.CANCELLED)
        self.quantity = 0.0
        self.closed_at, self.exit_reason = at, reason

    def _fill_at(self, at: float, price: float) -> None:
        """The entry filled at ``price``: every level moves with it (the distances are kept)."""
        shift = price - self.entry_price
        for name in ("initial_stop", "stop_loss", "take_profit", "breakeven_trigger",
                     "breakeven_stop", "partial_tp_price", "progress_price"):
            setattr(self, name, getattr(self, name) + shift)
        self.entry_price = self.best_price = self.worst_price = price
        self.opened_at = at
        self._move(TradeState.OPEN)

    def _take_partial(self, at: float, price: float) -> TradeEvent:
        part = floor_to_step(self.quantity * self.partial_tp_fraction, self.amount_step_units,
                             self.amount_step_scale)
        self._fill(price, part)
        self._move(TradeState.PARTIAL_TP)
        return self._emit(Event.PARTIAL_TP, at, price, part, ExitReason.PARTIAL_TP)

    def _extend_excursions(self, favourable: float, adverse: float) -> None:
        if self.is_long:
            self.best_price = max(self.best_price, favourable)
            self.worst_price = min(self.worst_price, adverse)
        else:
            self.best_price = min(self.best_price, favourable)
            self.worst_price = max(self.worst_price, adverse)

    def _tighten(self, stop: float) -> bool:
        """Move the stop to ``stop`` if that is in the trade's favour; never loosen it."""
        if math.isfinite(stop) and self.direction * (stop - self.stop_loss) > 0:
            self.stop_loss = stop
            return True
        return False

    def _stop_reason(self) -> ExitReason:
        if self.state is TradeState.TRAILING:
            return ExitReason.TRAILING_STOP
        if self.breakeven_done and self.stop_loss == self.breakeven_stop:
            return ExitReason.BREAKEVEN_STOP
        return ExitReason.STOP_LOSS

    def as_record(self) -> dict[str, Any]:
        """Every field as plain values (for the state store); events are stored on their own."""
        record = {name: getattr(self, name) for name in self.__slots__ if name != "events"}
        record["state"] = self.state.value
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Trade:
        fields = dict(record)
        # records written before APPROVED was a state, and before the executor kept the orders
        if fields.pop("awaiting_fill", False) and fields["state"] == "OPEN":
            fields["state"] = "APPROVED"
        for moved in ("order_ids", "booked_orders", "market_targets"):
            fields.pop(moved, None)
        if "entry_slippage_bps" in fields:  # records from when slippage applied to entries only
            fields["slippage_bps"] = fields.pop("entry_slippage_bps")
        fields["state"] = TradeState(fields["state"])
        fields["side"] = Side(fields["side"])
        if fields.get("exit_reason") in ExitReason.__members__.values():
            fields["exit_reason"] = ExitReason(fields["exit_reason"])
        return cls(**fields)


def open_trade(trade_id: str, symbol: str, side: str, decision, opened_at: float,
               amount_step: tuple[float, float], fill_price: float | None = None,
               decision_ref: str | None = None, next_open: bool = False,
               slippage_bps: float = 0.0, external_fills: bool = False) -> Trade:
    """A trade from an approved decision, filled at ``fill_price`` (default: the decision's entry),
    or, with ``next_open``, at the open of the next bar plus ``slippage_bps`` against it (a market
    order sent when the signal's bar closed). ``slippage_bps`` also moves the trade's market exits
    (stops, time exit, end of data) against it.

    When the fill differs from the price the decision saw, every level moves with it: the policy
    sized the trade on its stop DISTANCE, so the distances (and with them 1 R) are what we keep.
    """
    if not decision.approved:
        raise IllegalTransition(f"trade {trade_id}: a rejected decision cannot open a trade")
    entry = decision.value("entry")
    fill = entry if fill_price is None else fill_price
    shift = fill - entry
    value = decision.value
    trade = Trade(
        trade_id=trade_id, symbol=symbol, side=Side(side), entry_price=fill, opened_at=opened_at,
        initial_quantity=value("quantity"), quantity=value("quantity"),
        initial_stop=value("stop_loss") + shift, stop_loss=value("stop_loss") + shift,
        take_profit=value("take_profit") + shift,
        breakeven_trigger=value("breakeven_trigger") + shift,
        breakeven_stop=value("breakeven_stop") + shift,
        partial_tp_price=value("partial_tp_price") + shift,
        partial_tp_fraction=value("partial_fraction"),
        trailing_distance=value("trailing_distance"),
        progress_price=value("time_exit_progress_price") + shift,
        time_exit_seconds=value("time_exit_seconds"),
        fee_rate=value("fee_rate"),
        amount_step_units=amount_step[0], amount_step_scale=amount_step[1],
        best_price=fill, worst_price=fill, decision_ref=decision_ref,
        slippage_bps=slippage_bps, external_fills=external_fills)
    if not (next_open or external_fills):  # filled at once, at the decision's price
        trade._move(TradeState.OPEN)
        trade.book_entry()
    return trade
