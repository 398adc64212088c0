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

from typing import Any

from rulekit.model import Decision, Signal
from rulekit.trading.lifecycle import Trade, TradeEvent
from rulekit.trading.orders import Order, OrderRequest, OrderSide, OrderStatus, OrderType
from rulekit.trading.trade_manager import TradeManager

STOP_REASONS = ("stop_loss", "breakeven_stop", "trailing_stop")


class Executor:
    def __init__(self, manager: TradeManager, exchange: Any):
        self.manager = manager
        self.exchange = exchange

    # --- signals ----------------------------------------------------------------------------
    def on_signal(self, signal: Signal, now: float) -> Decision:
        """Decide; an approval sends its entry. The decision, the trade and the exchange's state
        commit together: after a crash either all are there or the signal is decided again, and
        the entry's client order id makes sending it again harmless."""
        with self.manager.journal.transaction():
            decision, trade = self.manager.on_signal(signal, now=now)
            if trade is not None:
                self._ensure_entry(trade, now)
                self._save([trade], [])
        return decision

    # --- bars -------------------------------------------------------------------------------
    def on_bar(self, symbol: str, at: float, bar_open: float, high: float, low: float,
               close: float) -> list[TradeEvent]:
        """One bar: due time exits out, the exchange fills, the trades book them and move their
        stops; all of it one commit, and none when nothing happened."""
        trades = [t for t in self.manager.account.trades.values() if t.symbol == symbol]
        for trade in trades:
            if trade.time_exit_due(at) and "exit" not in trade.order_ids:
                self._at_market(trade, "exit", trade.quantity)
            for role in list(trade.market_targets):
                level = trade.partial_tp_price if role == "partial" else trade.take_profit
                reached = high >= level if trade.is_long else low <= level
                if reached and trade.is_open and (role == "target" or trade.state.value == "OPEN"):
                    partial = trade.partial_quantity() if trade.state.value == "OPEN" else 0.0
                    amount = partial if role == "partial" else trade.quantity - partial
                    trade.market_targets.remove(role)
                    self._at_market(trade, role, amount, generation=1)
        events: list[TradeEvent] = []
        changed: dict[str, Trade] = {}
        fills = self.exchange.on_bar(symbol, at, bar_open, high, low, close)
        entries = self._book_all(fills, at, bar_open, high, low, events, changed)
        if entries and getattr(self.exchange, "replays_bars", False):
            # Protection placed in the bar its entry filled in acts in that bar too, as the
            # lifecycle's own reading of the bar does: the paper exchange reads it once more.
            more = self.exchange.on_bar(symbol, at, bar_open, high, low, close)
            self._book_all(more, at, bar_open, high, low, events, changed)
            fills = fills + more
        moves, risk_events = self.manager.on_bar(symbol, at, bar_open, high, low, close,
                                                 record=False)
        for event in moves:
            trade = self.manager.account.trades.get(event.trade_id)
            if trade is not None:
                if event.event.value in ("BREAKEVEN", "TRAILING"):
                    self._replace_stop(trade)
                changed[trade.trade_id] = trade
        events += moves
        if events or risk_events or fills:
            self._save(list(changed.values()), events, risk_events)
        return events

    # --- after a restart ------------------------------------------------------------------------
    def reconcile(self, now: float) -> list[str]:
        """Make the exchange hold every order the open trades should have; say what was found.
        Placing is idempotent by client order id, so an order that exists is only confirmed."""
        found = []
        for trade in list(self.manager.account.trades.values()):
            if trade.awaiting_fill:
                order = self._ensure_entry(trade, now)
                found.append(f"{trade.trade_id}: entry {order.status.value.lower()}")
                continue
            missing = [role for role in ("stop", "partial", "target")
                       if role in trade.order_ids and self.exchange.fetch_order(
                           trade.order_ids[role], trade.symbol) is None]
            for role in missing:
                self._protect(trade, only=role)
            found.append(f"{trade.trade_id}: {trade.state.value.lower()}, stop "
                         f"{trade.stop_loss:,.8g}" + (f", re-placed {', '.join(missing)}"
                                                      if missing else ", orders in place"))
        self._save(list(self.manager.account.trades.values()), [])
        return found

    # --- inside -----------------------------------------------------------------------------
    def _ensure_entry(self, trade: Trade, now: float) -> Order:
        order = self._place(trade, "entry", OrderType.MARKET, trade.quantity, None, closing=False)
        if order.status is OrderStatus.REJECTED:
            trade.cancel(now, f"entry_{order.reason}")
            self.manager.account.trades.pop(trade.trade_id, None)
        return order

    def _place(self, trade: Trade, role: str, kind: OrderType, amount: float,
               price: float | None, closing: bool, generation: int = 0) -> Order:
        buy = trade.is_long != closing
        client_id = f"{trade.trade_id}:{role}:{generation}"
        trade.order_ids[role] = client_id
        return self.exchange.place_order(OrderRequest(
            client_id, trade.symbol, OrderSide.BUY if buy else OrderSide.SELL, kind, amount,
            price, reduce_only=closing))

    def _protect(self, trade: Trade, only: str | None = None) -> None:
        """The protective orders of a trade that has just filled (or lost one)."""
        partial = trade.partial_quantity() if trade.state.value == "OPEN" else 0.0
        if only in (None, "stop"):
            stop = self._place(trade, "stop", OrderType.STOP, trade.quantity, trade.stop_loss,
                               True, self._generation(trade, "stop"))
            if stop.status is OrderStatus.REJECTED:  # fail closed: no stop, no position
                self._place(trade, "exit", OrderType.MARKET, trade.quantity, None, closing=True)
                return
        rest = trade.quantity - partial
        for role, amount, price in (("partial", partial, trade.partial_tp_price),
                                    ("target", rest, trade.take_profit)):
            if only in (None, role) and amount > 0:
                placed = self._place(trade, role, OrderType.LIMIT, amount, price, True)
                if placed.status is OrderStatus.REJECTED:
                    # e.g. a spot exchange that will not lock the same coins for a stop and a
                    # limit: the target is then watched here and taken at market
                    del trade.order_ids[role]
                    trade.market_targets.append(role)

    def _at_market(self, trade: Trade, role: str, amount: float, generation: int = 0) -> None:
        """Close ``amount`` at market. The stop is cancelled first (a spot exchange locks the coins
        it covers); if the close is refused, the stop goes back on at once."""
        current = trade.order_ids.get("stop")
        if current is not None:
            self.exchange.cancel_order(current, trade.symbol)
        order = self._place(trade, role, OrderType.MARKET, amount, None, True, generation)
        if order.status is OrderStatus.REJECTED:
            self._replace_stop(trade)
        # after a partial, the stop for the rest is placed when its fill is booked (this bar)

    def _replace_stop(self, trade: Trade) -> None:
        """Cancel the stop in force and place the new one; if the exchange refuses the new one,
        the position goes out at market rather than run unprotected."""
        current = trade.order_ids.get("stop")
        if current is not None:
            self.exchange.cancel_order(current, trade.symbol)
        stop = self._place(trade, "stop", OrderType.STOP, trade.quantity, trade.stop_loss, True,
                           self._generation(trade, "stop") + 1)
        if stop.status is OrderStatus.REJECTED and "exit" not in trade.order_ids:
            self._place(trade, "exit", OrderType.MARKET, trade.quantity, None, closing=True)

    @staticmethod
    def _generation(trade: Trade, role: str) -> int:
        current = trade.order_ids.get(role)
        return int(current.rsplit(":", 1)[1]) if current else 0

    def _trade_of(self, order: Order) -> Trade | None:
        trade_id, _, _ = order.client_order_id.rpartition(":")[0].rpartition(":")
        return self.manager.account.trades.get(trade_id)

    def _book_all(self, fills: list[Order], at: float, bar_open: float, high: float, low: float,
                  events: list[TradeEvent], changed: dict[str, Trade]) -> int:
        """Book a bar's fills; then the stop of a trade reduced by its partial covers what is
        left (after all fills: the target may have taken the rest in the same bar). Returns how
        many entries filled."""
        entries = 0
        reduced: dict[str, Trade] = {}
        for order in fills:
            trade = self._trade_of(order)
            if trade is None or order.client_order_id in trade.booked_orders:
                continue  # not ours, or reported again after a restart
            trade.booked_orders.append(order.client_order_id)
            role = order.client_order_id.rsplit(":", 2)[1]
            entries += role == "entry"
            events += self._book(trade, order, at, bar_open, high, low)
            changed[trade.trade_id] = trade
            if role == "partial":
                reduced[trade.trade_id] = trade
        for trade in reduced.values():
            if trade.is_open:
                self._replace_stop(trade)
        return entries

    def _book(self, trade: Trade, order: Order, at: float, bar_open: float, high: float,
              low: float) -> list[TradeEvent]:
        role = order.client_order_id.rsplit(":", 2)[1]
        if role == "entry":
            event = trade.fill_entry(at, order.average_price)
            self._protect(trade)
            return [event]
        reason = {"stop": trade.stop_reason(), "partial": "partial_tp", "target": "take_profit",
                  "exit": "time_exit"}[role]
        event = trade.book_exit(at, order.average_price, order.filled, reason, bar_open, high, low)
        if not trade.is_open:
            for other in ("stop", "partial", "target", "exit"):
                if other != role and other in trade.order_ids:
                    self.exchange.cancel_order(trade.order_ids[other], trade.symbol)
            self.manager.finished(trade)
        return [event]

    def _save(self, trades: list[Trade], events: list[TradeEvent],
              risk_events: list | None = None) -> None:
        extra = {}
        if hasattr(self.exchange, "as_record"):
            extra["paper_exchange"] = self.exchange.as_record()
        self.manager.journal.record_state(self.manager.account, trades, events, risk_events or [],
                                          extra)
