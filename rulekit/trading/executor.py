"""Live and paper trading: the trade manager's approvals become orders, the exchange's fills drive
the trades, and the lifecycle's stop moves become order changes.

For every trade the exchange holds (client order ids ``<trade id>:<role>:<n>``, so a retry or a
restart finds what it placed instead of placing it again):
- ``entry``: a market order sent when the signal is approved;
- ``stop``: a protective stop for the whole open quantity, replaced (n + 1) when the lifecycle
  moves it (breakeven, trailing) or the partial take-profit has reduced the position;
- ``partial`` and ``target``: resting limits at the partial take-profit and the target;
- ``exit``: a market close when the time exit is due, sent before the bar reaches the exchange so
  it fills at that bar's open, as in a backtest; and at once when the exchange refuses a stop
  (fail closed: a position never runs without one).
A fill is booked on the trade at the exchange's price. With the paper exchange, whose fills follow
``rulekit.trading.fills`` like the lifecycle's, a paper run gives the trades a backtest gives.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rulekit.errors import RulekitError
from rulekit.model import Decision, Signal
from rulekit.trading.account import RiskEvent, RiskEventKind
from rulekit.trading.lifecycle import Event as TradeEventKind
from rulekit.trading.lifecycle import ExitReason, Trade, TradeEvent, TradeState
from rulekit.trading.orders import (
    Order,
    OrderRequest,
    OrderRole,
    OrderSide,
    OrderStatus,
    OrderType,
    client_order_id,
    parse_client_order_id,
)
from rulekit.trading.reconcile import POSITIONS_DIFFER, PositionGap
from rulekit.trading.trade_manager import TradeManager

if TYPE_CHECKING:
    from rulekit.hookspecs import Exchange

class ExchangeUnavailable(RulekitError):
    """The exchange does not answer for now (network errors, rate limits, 5xx) after the adapter's
    own quick retries: what retrying later can fix. An adapter raises it (see the ``Exchange``
    port); the executor records it instead of passing it on, and refuses entries until
    ``recover`` has reached the exchange again. Any other error is one retrying cannot fix."""


UNREACHABLE = "exchange_unreachable"  # the refusal reason of entries while it does not answer
ENTRY_ENDED = "entry_cancelled_on_exchange"  # an entry the exchange ended with nothing filled

EXIT_REASONS = {OrderRole.PARTIAL: ExitReason.PARTIAL_TP, OrderRole.TARGET: ExitReason.TAKE_PROFIT,
                OrderRole.EXIT: ExitReason.TIME_EXIT}
PROTECTION = (OrderRole.STOP, OrderRole.PARTIAL, OrderRole.TARGET)


@dataclass
class TradeOrders:
    """The executor's books for one trade: its orders by role, the fills already booked, and the
    targets the exchange would not hold (watched here and taken at market)."""

    ids: dict[OrderRole, str] = field(default_factory=dict)
    booked: set[str] = field(default_factory=set)
    market_targets: list[OrderRole] = field(default_factory=list)
    # orders still open and filled in part: client id -> [quantity, cost] booked so far
    part_filled: dict[str, list[float]] = field(default_factory=dict)
    lapsed: set[OrderRole] = field(default_factory=set)  # ended after a part fill (this bar)

    def new_fill(self, order: Order) -> tuple[float, float] | None:
        """What ``order`` (its cumulative fill) adds to what was booked: (quantity, average price
        of that quantity), or None when nothing new filled."""
        price = order.average_price if order.average_price is not None else order.price
        if price is None:
            raise ValueError(f"{order.client_order_id}: a fill without a price")
        quantity, cost = self.part_filled.get(order.client_order_id, (0.0, 0.0))
        more = order.filled - quantity
        if order.status is OrderStatus.OPEN:
            self.part_filled[order.client_order_id] = [order.filled, order.filled * price]
        if more <= 1e-12 * max(order.filled, 1.0):
            return None
        return more, price if not quantity else (order.filled * price - cost) / more

    def ended_unfilled(self, order: Order) -> bool:
        """Whether ``order`` has filled nothing beyond what was booked of it (an order that then
        ended left only its protection to put back, or its entry to cancel)."""
        booked = self.part_filled.get(order.client_order_id, [0.0])[0]
        return order.filled - booked <= 1e-12 * max(order.filled, 1.0)

    def as_record(self) -> dict[str, Any]:
        return {"ids": {role.value: cid for role, cid in self.ids.items()},
                "booked": sorted(self.booked), "market_targets": [r.value for r in self.market_targets],
                "part_filled": dict(self.part_filled)}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TradeOrders:
        return cls({OrderRole(role): cid for role, cid in record["ids"].items()},
                   set(record["booked"]), [OrderRole(r) for r in record["market_targets"]],
                   {cid: list(done) for cid, done in record.get("part_filled", {}).items()})


class Executor:
    """Approvals to orders, fills to trades. ``orders`` are the books of the open trades, saved
    with every commit (``as_record``) and handed back after a restart."""

    def __init__(self, manager: TradeManager, exchange: Exchange,
                 orders: dict[str, Any] | None = None):
        self.manager = manager
        self.exchange = exchange
        self.orders: dict[str, TradeOrders] = {
            trade_id: TradeOrders.from_record(record) for trade_id, record in (orders or {}).items()}
        self.refused: list[Order] = []  # orders the exchange refused, until ``take_refused``
        self.unreachable: str | None = None  # why the exchange is not answering; None: it is
        self._pending_risk: list[RiskEvent] = []  # risk events for the next commit
        self.notices: list[str] = []  # what the person watching should read, until taken
        # symbols whose exchange position differs from the books' (trading/reconcile.py):
        # while there is one, every new entry is refused before it leaves
        self.position_gaps: dict[str, PositionGap] = {}
        self._gathered: _Gathered | None = None  # inside ``one_commit``

    def books(self, trade: Trade) -> TradeOrders:
        return self.orders.setdefault(trade.trade_id, TradeOrders())

    def as_record(self) -> dict[str, Any]:
        return {trade_id: books.as_record() for trade_id, books in self.orders.items()}

    def take_notices(self) -> list[str]:
        """What happened to orders on the exchange's own initiative (an order ended there and
        put back), for the person watching; the audit has it as ``order_ended`` risk events."""
        out, self.notices = self.notices, []
        return out

    def take_refused(self) -> list[Order]:
        """The orders refused since the last call, for the person watching (the audit already
        has their consequence: a cancelled trade, a stop put back, a target watched here)."""
        out, self.refused = self.refused, []
        return out

    # --- signals ----------------------------------------------------------------------------
    def on_signal(self, signal: Signal, now: float) -> Decision:
        """Decide; an approval sends its entry. The decision, the trade and the exchange's state
        commit together: after a crash either all are there or the signal is decided again, and
        the entry's client order id makes sending it again harmless."""
        with self.manager.journal.transaction():
            decision, trade = self.manager.on_signal(signal, now=now)
            if trade is not None:
                if self.unreachable is not None:  # no entry while the exchange does not answer
                    self._entry_refused(trade, now, self.unreachable)
                elif self.position_gaps:  # nor while its positions and the books differ
                    self._entry_refused(trade, now, "; ".join(
                        gap.describe() for gap in self.position_gaps.values()), POSITIONS_DIFFER)
                else:
                    try:
                        self._ensure_entry(trade, now)
                    except ExchangeUnavailable as exc:
                        # it may have got through: ``recover`` looks it up before anything else
                        self.lost_contact(now, exc)
                self._save([trade], [])
        return decision

    # --- when the exchange does not answer ----------------------------------------------------
    def lost_contact(self, at: float, exc: Exception) -> None:
        """The exchange stopped answering (``exc`` says how): audited once, entries refused."""
        if self.unreachable is None:
            self.unreachable = str(exc)
            self._pending_risk.append(RiskEvent(
                RiskEventKind.EXCHANGE_UNREACHABLE, at, self.manager.account.equity,
                f"entries refused until it answers: {exc}"))

    def recover(self, now: float) -> list[str] | None:
        """Try the exchange again after it stopped answering: entries sent just before are
        looked up (found: kept; absent: the trade is cancelled, ``entry_exchange_unreachable``),
        and every protective order of the open trades is confirmed or placed again. Returns what
        was found, or None when it still does not answer."""
        try:
            found = self.reconcile(now, resend_entries=False)
        except ExchangeUnavailable as exc:
            self.unreachable = str(exc)
            return None
        self.unreachable = None
        self._save([], [], [RiskEvent(RiskEventKind.EXCHANGE_RECONNECTED, now,
                                      self.manager.account.equity,
                                      "answering again; orders reconciled")])
        return found

    def _entry_refused(self, trade: Trade, now: float, message: str,
                       reason: str = UNREACHABLE) -> None:
        """An entry not sent (or not found): the exchange did not answer, or its positions
        differ from the books (``reason``)."""
        order = Order(client_order_id(trade.trade_id, OrderRole.ENTRY, 0), trade.symbol,
                      OrderSide.BUY if trade.is_long else OrderSide.SELL, OrderType.MARKET,
                      trade.quantity, OrderStatus.REJECTED, reason=reason, message=message)
        self.refused.append(order)
        trade.cancel(now, f"entry_{reason}")
        self.manager.account.trades.pop(trade.trade_id, None)
        self.orders.pop(trade.trade_id, None)

    # --- bars -------------------------------------------------------------------------------
    def on_bar(self, symbol: str, at: float, bar_open: float, high: float, low: float,
               close: float) -> list[TradeEvent]:
        """One bar: due time exits out, the exchange fills, the trades book them and move their
        stops; all of it one commit, and none when nothing happened."""
        events: list[TradeEvent] = []
        changed: dict[str, Trade] = {}
        fills: list[Order] = []
        risk_events: list[RiskEvent] = []
        if self.unreachable is not None:
            return events  # ``recover`` first
        try:
            fills, risk_events = self._on_bar(symbol, at, bar_open, high, low, close, events,
                                              changed)
        except ExchangeUnavailable as exc:
            # what happened before it stopped answering is booked and kept; the rest on recovery
            self.lost_contact(at, exc)
        if events or risk_events or fills or self._pending_risk:
            self._save(list(changed.values()), events, risk_events)
        return events

    def _on_bar(self, symbol: str, at: float, bar_open: float, high: float, low: float,
                close: float, events: list[TradeEvent], changed: dict[str, Trade]
                ) -> tuple[list[Order], list[RiskEvent]]:
        trades = [t for t in self.manager.account.trades.values() if t.symbol == symbol]
        for trade in trades:
            books = self.books(trade)
            if trade.time_exit_due(at) and OrderRole.EXIT not in books.ids:
                self._at_market(trade, OrderRole.EXIT, trade.quantity)
            for role in list(books.market_targets):
                level = trade.partial_tp_price if role is OrderRole.PARTIAL else trade.take_profit
                reached = high >= level if trade.is_long else low <= level
                untouched = trade.state is TradeState.OPEN
                if reached and trade.is_open and (role is OrderRole.TARGET or untouched):
                    partial = trade.partial_quantity() if untouched else 0.0
                    amount = partial if role is OrderRole.PARTIAL else trade.quantity - partial
                    books.market_targets.remove(role)
                    self._at_market(trade, role, amount, generation=1)
        fills = self.exchange.on_bar(symbol, at, bar_open, high, low, close)
        entries = self._book_all(fills, at, bar_open, high, low, events, changed)
        if entries and self.exchange.replays_bars:
            # Protection placed in the bar its entry filled in acts in that bar too, as the
            # lifecycle's own reading of the bar does: the paper exchange reads it once more.
            more = self.exchange.on_bar(symbol, at, bar_open, high, low, close)
            self._book_all(more, at, bar_open, high, low, events, changed)
            fills = fills + more
        moves, risk_events = self.manager.on_bar(symbol, at, bar_open, high, low, close,
                                                 record=False)
        for event in moves:
            moved = self.manager.account.trades.get(event.trade_id)
            if moved is not None:
                if event.event in (TradeEventKind.BREAKEVEN, TradeEventKind.TRAILING):
                    self._replace_stop(moved)
                changed[moved.trade_id] = moved
        events += moves
        return fills, risk_events

    def save_risk(self, risk_events: list[RiskEvent], trades: list[Trade] | None = None,
                  events: list[TradeEvent] | None = None) -> None:
        """Commit risk events (and the trades they changed) with the books."""
        self._save(trades or [], events or [], risk_events)

    def reprotect(self, trade: Trade) -> None:
        """Cancel a trade's protective orders and place them again (the next generation) for
        its quantity now: after the quantity was changed to the exchange's."""
        books = self.books(trade)
        generation = 1 + max((self._generation(trade, role) for role in PROTECTION
                              if role in books.ids), default=0)
        for role in PROTECTION:
            current = books.ids.pop(role, None)
            if current is not None:
                self.exchange.cancel_order(current, trade.symbol)
        stop = self._place(trade, OrderRole.STOP, OrderType.STOP, trade.quantity,
                           trade.stop_loss, True, generation)
        if stop.status is OrderStatus.REJECTED:  # fail closed: no stop, no position
            self._place(trade, OrderRole.EXIT, OrderType.MARKET, trade.quantity, None, True)
            return
        partial = trade.partial_quantity() if trade.state is TradeState.OPEN else 0.0
        partial = partial if partial < trade.quantity else 0.0
        for role, amount, price in (
                (OrderRole.PARTIAL, partial, trade.partial_tp_price),
                (OrderRole.TARGET, trade.round_to_step(trade.quantity - partial),
                 trade.take_profit)):
            if amount > 0 and role not in books.market_targets:
                self._place_limit(trade, role, amount, price, generation)
    @contextmanager
    def one_commit(self, wrote: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """The executor's commits inside gathered into one, written at the end when anything
        happened (or ``wrote()``: something else was written in the caller's transaction), with
        the state as it is then: the paper loop's one transaction for all bars of an open time,
        so what a restart finds is the state after a whole step, never between two symbols'
        bars of one time."""
        gathered = self._gathered = _Gathered()
        try:
            yield
        finally:
            self._gathered = None
        if gathered.saves or wrote():
            self._write(list(gathered.trades.values()), gathered.events, gathered.risk_events)

    def checkpoint(self) -> None:
        """Commit the books as they are (after quiet bars, which commit nothing), so what a run
        prints when it stops is what a restart finds."""
        self._save([], [])

    # --- after a restart ------------------------------------------------------------------------
    def reconcile(self, now: float, resend_entries: bool = True) -> list[str]:
        """Make the exchange hold every order the open trades should have; say what was found.
        Placing is idempotent by client order id, so an order that exists is only confirmed.
        ``resend_entries=False`` (after an outage): an entry the exchange does not have is not
        sent late but its trade cancelled."""
        found = []
        for trade in list(self.manager.account.trades.values()):
            if trade.awaiting_fill:
                if not resend_entries and self.exchange.fetch_order(
                        client_order_id(trade.trade_id, OrderRole.ENTRY, 0), trade.symbol) is None:
                    self._entry_refused(trade, now, "not sent: the exchange stopped answering")
                    self._save([trade], [])
                    found.append(f"{trade.trade_id}: entry never reached the exchange, cancelled")
                    continue
                order = self._ensure_entry(trade, now)
                found.append(f"{trade.trade_id}: entry {order.status.value.lower()}")
                continue
            books = self.books(trade)
            missing, ended = [], []
            for role in self._expected(trade):
                cid = books.ids.get(role)
                seen = self.exchange.fetch_order(cid, trade.symbol) if cid else None
                if seen is None:
                    missing.append(role)
                elif seen.status in (OrderStatus.CANCELLED, OrderStatus.REJECTED) and (
                        books.ended_unfilled(seen)):
                    ended.append(role)  # ended while the run was down (a stop cancelled by hand)
                    books.booked.add(seen.client_order_id)
            for role in missing:
                self._protect(trade, only=role)
            if ended and not self._still_held(trade):
                ended = []  # sold by hand: the positions check says so, nothing put back
            for role in ended:
                self._put_back(trade, role)
            again = missing + ended
            found.append(f"{trade.trade_id}: {trade.state.value.lower()}, stop "
                         f"{trade.stop_loss:,.8g}" + (f", re-placed {', '.join(again)}"
                                                      if again else ", orders in place"))
        self._save(list(self.manager.account.trades.values()), [])
        return found

    # --- inside -----------------------------------------------------------------------------
    def _expected(self, trade: Trade) -> list[OrderRole]:
        """The protective orders an open trade should have on the exchange now."""
        books = self.books(trade)
        roles = [OrderRole.STOP]
        if trade.state is TradeState.OPEN and trade.partial_quantity() > 0:
            roles.append(OrderRole.PARTIAL)
        roles.append(OrderRole.TARGET)
        return [r for r in roles if r not in books.market_targets]

    def _ensure_entry(self, trade: Trade, now: float) -> Order:
        order = self._place(trade, OrderRole.ENTRY, OrderType.MARKET, trade.quantity, None,
                            closing=False)
        if order.status is OrderStatus.REJECTED:
            trade.cancel(now, f"entry_{order.reason}")
            self.manager.account.trades.pop(trade.trade_id, None)
            self.orders.pop(trade.trade_id, None)
        return order

    def _place(self, trade: Trade, role: OrderRole, kind: OrderType, amount: float,
               price: float | None, closing: bool, generation: int = 0) -> Order:
        buy = trade.is_long != closing
        client_id = client_order_id(trade.trade_id, role, generation)
        self.books(trade).ids[role] = client_id
        order = self.exchange.place_order(OrderRequest(
            client_id, trade.symbol, OrderSide.BUY if buy else OrderSide.SELL, kind, amount,
            price, reduce_only=closing))
        if order.status is OrderStatus.REJECTED:
            self.refused.append(order)
        return order

    def _protect(self, trade: Trade, only: OrderRole | None = None) -> None:
        """The protective orders of a trade that has just filled (or lost one)."""
        partial = trade.partial_quantity() if trade.state is TradeState.OPEN else 0.0
        if only in (None, OrderRole.STOP):
            stop = self._place(trade, OrderRole.STOP, OrderType.STOP, trade.quantity,
                               trade.stop_loss, True, self._generation(trade, OrderRole.STOP))
            if stop.status is OrderStatus.REJECTED:  # fail closed: no stop, no position
                self._place(trade, OrderRole.EXIT, OrderType.MARKET, trade.quantity, None,
                            closing=True)
                return
        rest = trade.quantity - partial
        for role, amount, price in ((OrderRole.PARTIAL, partial, trade.partial_tp_price),
                                    (OrderRole.TARGET, rest, trade.take_profit)):
            if only in (None, role) and amount > 0:
                self._place_limit(trade, role, amount, price)

    def _place_limit(self, trade: Trade, role: OrderRole, amount: float, price: float,
                     generation: int = 0) -> None:
        """A take-profit limit (``role``) closing ``amount`` at ``price``. Refused (e.g. a spot
        exchange that will not lock the same coins for a stop and a limit), the level is watched
        here instead and taken at market when reached."""
        placed = self._place(trade, role, OrderType.LIMIT, amount, price, True, generation)
        if placed.status is OrderStatus.REJECTED:
            del self.books(trade).ids[role]
            self.books(trade).market_targets.append(role)

    def _at_market(self, trade: Trade, role: OrderRole, amount: float, generation: int = 0) -> None:
        """Close ``amount`` at market. The stop is cancelled first (a spot exchange locks the coins
        it covers); if the close is refused, the stop goes back on at once."""
        current = self.books(trade).ids.get(OrderRole.STOP)
        if current is not None:
            self.exchange.cancel_order(current, trade.symbol)
        order = self._place(trade, role, OrderType.MARKET, amount, None, True, generation)
        if order.status is OrderStatus.REJECTED:
            self._replace_stop(trade)
        # after a partial, the stop for the rest is placed when its fill is booked (this bar)

    def _replace_stop(self, trade: Trade) -> None:
        """Cancel the stop in force and place the new one; if the exchange refuses the new one,
        the position goes out at market rather than run unprotected."""
        books = self.books(trade)
        current = books.ids.get(OrderRole.STOP)
        if current is not None:
            self.exchange.cancel_order(current, trade.symbol)
        stop = self._place(trade, OrderRole.STOP, OrderType.STOP, trade.quantity, trade.stop_loss,
                           True, self._generation(trade, OrderRole.STOP) + 1)
        if stop.status is OrderStatus.REJECTED and OrderRole.EXIT not in books.ids:
            self._place(trade, OrderRole.EXIT, OrderType.MARKET, trade.quantity, None, closing=True)

    def _generation(self, trade: Trade, role: OrderRole) -> int:
        current = self.books(trade).ids.get(role)
        parsed = parse_client_order_id(current) if current else None
        return parsed[2] if parsed else 0

    def _book_all(self, fills: list[Order], at: float, bar_open: float, high: float, low: float,
                  events: list[TradeEvent], changed: dict[str, Trade]) -> int:
        """Book a bar's fills, part fills included (only what was not booked before); then the
        stop of a trade reduced by a fill covers what is left (after all fills: the target may
        have taken the rest in the same bar). Returns how many entries filled."""
        entries = 0
        reduced: dict[str, Trade] = {}
        for order in fills:
            parsed = parse_client_order_id(order.client_order_id)
            trade = self.manager.account.trades.get(parsed[0]) if parsed else None
            if parsed is None or trade is None:
                continue  # not ours
            books = self.books(trade)
            cid = order.client_order_id
            if cid in books.booked:
                continue  # reported again after a restart
            role = parsed[1]
            done = order.status is not OrderStatus.OPEN
            if role is OrderRole.ENTRY and not done:
                continue  # an entry opens the trade once, with all it got
            if done and order.status is not OrderStatus.FILLED and books.ended_unfilled(order):
                books.booked.add(cid)
                books.part_filled.pop(cid, None)
                if books.ids.get(role) == cid:  # not one this executor replaced or cancelled
                    self._ended(trade, role, order, at, changed)
                continue
            increment = books.new_fill(order)
            if done:
                books.booked.add(cid)
                books.part_filled.pop(cid, None)
            if increment is None:
                continue
            quantity, price = increment
            entries += role is OrderRole.ENTRY
            changed[trade.trade_id] = trade
            before = len(trade.events)
            complete = order.status is OrderStatus.FILLED
            try:
                events += self._book(trade, role, quantity, price, complete, at, bar_open, high,
                                     low)
            except ExchangeUnavailable:  # booked, its protection not all placed: keep the event
                events += trade.events[before:]
                raise
            if trade.is_open and role is not OrderRole.ENTRY and (
                    role is OrderRole.PARTIAL or not complete):
                reduced[trade.trade_id] = trade
                if done and not complete and role in (OrderRole.PARTIAL, OrderRole.TARGET):
                    books.lapsed.add(role)
        for trade in reduced.values():
            if trade.is_open:
                self._replace_stop(trade)
                self._replace_lapsed_target(trade)
        return entries

    def _ended(self, trade: Trade, role: OrderRole, order: Order, at: float,
               changed: dict[str, Trade]) -> None:
        """An order the trade still counts on ended on the exchange with nothing more filled
        (cancelled by hand, expired): an entry's trade is cancelled (nothing was bought, its
        exposure is freed); anything protecting a position is put back at once. Said out loud
        and audited (``order_ended``)."""
        changed[trade.trade_id] = trade
        if role is OrderRole.ENTRY:
            trade.cancel(at, ENTRY_ENDED)
            self.manager.account.trades.pop(trade.trade_id, None)
            self.orders.pop(trade.trade_id, None)
            done = "its trade cancelled, nothing bought"
        elif not self._still_held(trade):
            done = ("not put back: the exchange no longer holds the position "
                    "(see the positions check)")
        else:
            self._put_back(trade, role)
            current = self.books(trade).ids.get(role)
            done = f"put back as {current}" if current and current != order.client_order_id \
                else "taken at market when reached" if role in self.books(trade).market_targets \
                else "not put back: the position is closed at market"
        text = f"{order.client_order_id} {order.status.value.lower()} on the exchange: {done}"
        self.notices.append(text)
        self._pending_risk.append(RiskEvent(RiskEventKind.ORDER_ENDED, at,
                                            self.manager.account.equity, text))

    def _still_held(self, trade: Trade) -> bool:
        """Whether the exchange still holds the trade's position (to half an amount step): an
        order protecting a position sold by hand is not put back; the positions check refuses
        entries and the operator's acceptance closes the trade."""
        held = self.exchange.positions_held([trade.symbol]).get(trade.symbol, 0.0)
        half_step = trade.amount_step_units / trade.amount_step_scale / 2
        return (held if trade.is_long else -held) >= trade.quantity - half_step

    def _put_back(self, trade: Trade, role: OrderRole) -> None:
        """Place ``role`` of an open trade again, as the next generation of its client id (the
        ended one keeps its id on the exchange)."""
        books = self.books(trade)
        if role is OrderRole.STOP:
            self._replace_stop(trade)
        elif role is OrderRole.TARGET:
            books.lapsed.add(role)
            self._replace_lapsed_target(trade)
        elif role is OrderRole.EXIT:
            self._at_market(trade, OrderRole.EXIT, trade.quantity,
                            self._generation(trade, OrderRole.EXIT) + 1)
        elif trade.state is TradeState.OPEN and (amount := trade.partial_quantity()) > 0:
            self._place_limit(trade, OrderRole.PARTIAL, amount, trade.partial_tp_price,
                              self._generation(trade, OrderRole.PARTIAL) + 1)

    def _book(self, trade: Trade, role: OrderRole, quantity: float, price: float, complete: bool,
              at: float, bar_open: float, high: float, low: float) -> list[TradeEvent]:
        """Book ``quantity`` filled at ``price``. An entry opens the trade with what it got; an
        exit order filled in full closes what is left (the partial take-profit moves the trade
        to PARTIAL_TP); an exit filled in part only reduces the position."""
        if role is OrderRole.ENTRY:
            if quantity < trade.quantity:  # a part fill: the trade is what the exchange gave
                trade.quantity = trade.initial_quantity = quantity
            event = trade.fill_entry(at, price)
            self._protect(trade)
            return [event]
        reason = trade.stop_reason() if role is OrderRole.STOP else EXIT_REASONS[role]
        closes = quantity >= trade.quantity * (1 - 1e-9) or (complete and role is not
                                                             OrderRole.PARTIAL)
        if closes or (role is OrderRole.PARTIAL and trade.state is TradeState.OPEN):
            event = trade.book_exit(at, price, quantity, reason, bar_open, high, low)
        else:
            event = self._reduce(trade, at, price, quantity, reason)
        if not trade.is_open:
            books = self.books(trade)
            for other, cid in books.ids.items():
                if other is not role:
                    self.exchange.cancel_order(cid, trade.symbol)
            self.manager.finished(trade)
        return [event]

    def _reduce(self, trade: Trade, at: float, price: float, quantity: float,
                reason: ExitReason) -> TradeEvent:
        """Part of the position closed by an exit order filled in part: PnL and fee booked on
        that quantity by the lifecycle's own arithmetic, the state kept, the fill audited as a
        PARTIAL_TP event whose reason names the order (``take_profit_part_fill``, ...)."""
        trade._fill(price, quantity)
        return trade._emit(TradeEventKind.PARTIAL_TP, at, price, quantity,
                           f"{reason.value}_part_fill")

    def _replace_lapsed_target(self, trade: Trade) -> None:
        """A target limit the exchange ended after a part fill (cancelled, expired): the rest of
        the position gets a new one (next generation) at the target."""
        books = self.books(trade)
        if OrderRole.TARGET in books.market_targets or not books.lapsed:
            books.lapsed.clear()
            return
        current = books.ids.get(OrderRole.TARGET)
        if current is not None:
            self.exchange.cancel_order(current, trade.symbol)
        resting = (trade.partial_quantity() if trade.state is TradeState.OPEN
                   and OrderRole.PARTIAL in books.ids and OrderRole.PARTIAL not in books.lapsed
                   else 0.0)
        books.lapsed.clear()
        units, scale = trade.amount_step_units, trade.amount_step_scale
        rest = round((trade.quantity - resting) * scale / units) * units / scale  # both on step
        self._place_limit(trade, OrderRole.TARGET, rest, trade.take_profit,
                          self._generation(trade, OrderRole.TARGET) + 1)

    def _save(self, trades: list[Trade], events: list[TradeEvent],
              risk_events: list | None = None) -> None:
        """One commit: the books, and the exchange's own state when it keeps it here (paper);
        inside ``one_commit``, gathered for its end."""
        gathered = self._gathered
        if gathered is not None:
            gathered.saves += 1
            gathered.trades.update((t.trade_id, t) for t in trades)
            gathered.events += events
            gathered.risk_events += risk_events or []
            return
        self._write(trades, events, risk_events)

    def _write(self, trades: list[Trade], events: list[TradeEvent],
               risk_events: list | None = None) -> None:
        live = self.manager.account.trades
        for trade_id in [t for t in self.orders if t not in live]:
            del self.orders[trade_id]
        # Every open trade, changed here or not: a quiet bar moves its best price (MFE, what a
        # trail is measured from), and a restart resumes after this commit's bars.
        trades = list({**{t.trade_id: t for t in trades}, **live}.values())
        extra: dict[str, Any] = {"orders": self.as_record()}
        exchange_state = self.exchange.as_record()
        if exchange_state is not None:
            extra["exchange"] = exchange_state
        risk_events = self._pending_risk + (risk_events or [])
        self._pending_risk = []
        self.manager.journal.record_state(self.manager.account, trades, events, risk_events,
                                          extra)


@dataclass
class _Gathered:
    """What ``one_commit`` writes at its end: the trades that changed (their latest state), the
    events and risk events in order."""

    saves: int = 0
    trades: dict[str, Trade] = field(default_factory=dict)
    events: list[TradeEvent] = field(default_factory=list)
    risk_events: list[RiskEvent] = field(default_factory=list)
