"""The exchange's positions against the books: trading refused while they differ.

``Executor.reconcile`` confirms the orders the books expect; this confirms the positions. A trade
closed by hand on the exchange, a position changed or opened there, an entry that filled while the
books were not looking: each leaves the books trading on a position that is not there (or not
seeing one that is), so their exposure, equity and stops no longer describe the account.

Per traded symbol (the policy's markets and any symbol with an open trade) the books' position is
the signed remaining quantity of its open trades (an entry still on its way counts as what the
exchange has filled of it so far) plus a position accepted as not ours; it differs from the
exchange's when they are a whole amount step or more apart. While any symbol differs the account
is REDUCING (NautilusTrader's word): every new entry is refused before it leaves (the trade
cancelled, ``entry_exchange_positions_differ``), while open trades whose positions agree keep
being managed and keep their protective orders. Each difference is one printed line and a
``positions_mismatch`` risk event; a later check that finds them agreeing (the operator put it
right by hand) says so (``positions_agree``) and entries resume.

``--accept-exchange-positions`` takes the exchange's view instead (``positions_adopted``):
- the exchange flat (or on the other side) where the books hold a trade: the trade is closed in
  the books at the exchange's last price (``closed_on_exchange``), its orders cancelled;
- a different quantity on the same side: the trade's quantity becomes the exchange's (a smaller
  one booked as ``closed_on_exchange_part_fill`` at the last price) and its stop and targets are
  placed again for it;
- a position the books never opened: recorded as not ours (``Account.unmanaged``); it is never
  managed, and its symbol takes no new trade while it is there (``symbol_position_open``: one
  position per symbol). When the exchange's position of such a symbol changes, the books follow
  it (it is not ours either way); once it is flat the symbol trades again.
- an entry still on its way on such a symbol is cancelled on the exchange and in the books.

Balances are compared once at start-up: the exchange's equity below the books' by more than the
fees of closing what is open (plus 0.1%) is said in one line and a ``balance_differs`` risk event,
but does not stop trading: an account usually holds more than the budget given to rulekit, and
funding, interest and fee rebates move it; the risk is that sizes are worked from more equity
than the account has, which the operator is told, and an entry the account cannot pay for is
refused by the exchange anyway (said out loud).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from rulekit.trading.account import RiskEvent, RiskEventKind
from rulekit.trading.lifecycle import Event as TradeEventKind
from rulekit.trading.lifecycle import ExitReason, Trade, TradeEvent
from rulekit.trading.orders import OrderRole, client_order_id

if TYPE_CHECKING:
    from rulekit.trading.executor import Executor

POSITIONS_DIFFER = "exchange_positions_differ"  # the refusal reason of entries while they differ
ACCEPT_FLAG = "--accept-exchange-positions"


def held(quantity: float, step: float) -> str:
    """``long 0.0120``, ``short 0.5000`` or ``flat``, to the step's decimals."""
    if abs(quantity) < step / 2:
        return "flat"
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{'long' if quantity > 0 else 'short'} {abs(quantity):.{digits}f}"


@dataclass(frozen=True, slots=True)
class PositionGap:
    """One symbol whose position the books and the exchange see differently (signed quantities)."""

    symbol: str
    books: float
    exchange: float
    step: float

    def describe(self) -> str:
        return (f"{self.symbol}: books {held(self.books, self.step)}, "
                f"exchange {held(self.exchange, self.step)}")

    def line(self) -> str:
        return (f"{self.describe()}: new entries refused until they agree or you restart with "
                f"{ACCEPT_FLAG}")

    def same_as(self, other: PositionGap | None) -> bool:
        return other is not None and abs(other.books - self.books) < self.step / 2 and abs(
            other.exchange - self.exchange) < self.step / 2


def differ(books: Mapping[str, float], exchange: Mapping[str, float],
           steps: Mapping[str, float]) -> dict[str, PositionGap]:
    """The symbols of ``steps`` whose positions are a whole step or more apart."""
    gaps = {}
    for symbol in sorted(steps):
        ours, theirs = books.get(symbol, 0.0), float(exchange.get(symbol, 0.0))
        if abs(ours - theirs) >= steps[symbol] * (1 - 1e-9):
            gaps[symbol] = PositionGap(symbol, ours, theirs, steps[symbol])
    return gaps


def balance_shortfall(books_equity: float, exchange_equity: float, open_notional: float,
                      fee_rate: float) -> str | None:
    """One line when the exchange's equity is below the books' by more than closing costs."""
    shortfall = books_equity - exchange_equity
    if shortfall <= 0.001 * books_equity + open_notional * fee_rate:
        return None
    return (f"the exchange's equity {exchange_equity:,.2f} is {shortfall:,.2f} below the books' "
            f"{books_equity:,.2f}: sizes are worked from the books' equity, so each trade risks "
            "more of the account than the policy says (trading goes on)")


class PositionWatch:
    """The comparison for one executor, and what it says and commits."""

    def __init__(self, executor: Executor, steps: Mapping[str, float]):
        self.executor = executor
        self.steps = dict(steps)  # amount step of every symbol compared

    def symbols(self) -> dict[str, float]:
        steps = dict(self.steps)
        for trade in self.executor.manager.account.trades.values():
            steps.setdefault(trade.symbol, trade.amount_step_units / trade.amount_step_scale)
        return steps

    def books(self) -> dict[str, float]:
        """The books' signed position per symbol (see the module's docstring)."""
        account = self.executor.manager.account
        out = dict(account.unmanaged)
        for trade in account.trades.values():
            quantity = self._entry_filled(trade) if trade.awaiting_fill else trade.quantity
            out[trade.symbol] = out.get(trade.symbol, 0.0) + trade.direction * quantity
        return out

    def _entry_filled(self, trade: Trade) -> float:
        order = self.executor.exchange.fetch_order(
            client_order_id(trade.trade_id, OrderRole.ENTRY, 0), trade.symbol)
        return order.filled if order is not None else 0.0

    def gaps(self) -> dict[str, PositionGap]:
        steps = self.symbols()
        exchange = self.executor.exchange.positions_held(sorted(steps))
        return differ(self.books(), exchange, steps)

    def check(self, now: float,
              settle: Callable[[Sequence[str]], None] | None = None) -> list[str]:
        """Compare, refuse or allow entries, commit what changed; return the lines to print.
        ``settle`` (live) books the fills of the symbols that differ before they are compared
        once more, so a stop that filled between two reads is not taken for a change by hand."""
        gaps = self.gaps()
        if gaps and settle is not None:
            settle(sorted(gaps))
            gaps = self.gaps()
        gaps = self._follow_unmanaged(gaps, now)
        executor, account = self.executor, self.executor.manager.account
        before = executor.position_gaps
        lines: list[str] = []
        events: list[RiskEvent] = []
        for symbol, gap in gaps.items():
            if not gap.same_as(before.get(symbol)):
                lines.append(gap.line())
                events.append(RiskEvent(RiskEventKind.POSITIONS_MISMATCH, now, account.equity,
                                        gap.line()))
        for symbol in [s for s in before if s not in gaps]:
            text = (f"{symbol}: books and exchange agree again" +
                    ("" if gaps else "; new entries allowed"))
            lines.append(text)
            events.append(RiskEvent(RiskEventKind.POSITIONS_AGREE, now, account.equity, text))
        executor.position_gaps = gaps
        if events:
            executor.save_risk(events)
        return lines

    def _follow_unmanaged(self, gaps: dict[str, PositionGap], now: float
                          ) -> dict[str, PositionGap]:
        """A position accepted as not ours moves with the exchange (it is not ours either way)."""
        account = self.executor.manager.account
        traded = {t.symbol for t in account.trades.values()}
        for symbol in [s for s in gaps if s in account.unmanaged and s not in traded]:
            gap = gaps.pop(symbol)
            flat = abs(gap.exchange) < gap.step / 2
            if flat:
                del account.unmanaged[symbol]
            else:
                account.unmanaged[symbol] = gap.exchange
            text = (f"{symbol}: the position not ours is now {held(gap.exchange, gap.step)}"
                    + ("; the symbol trades again" if flat else ""))
            self.executor.save_risk([RiskEvent(RiskEventKind.POSITIONS_ADOPTED, now,
                                               account.equity, text)])
        return gaps

    def adopt(self, now: float) -> list[str]:
        """The operator accepts the exchange's view (``--accept-exchange-positions``): the books
        are made to agree with it, each symbol one ``positions_adopted`` risk event; returns
        what was adopted, one line per symbol."""
        executor = self.executor
        account = executor.manager.account
        lines, events, changed = [], [], []
        trade_events: list[TradeEvent] = []
        for gap in self.gaps().values():
            trades = [t for t in account.trades.values() if t.symbol == gap.symbol]
            what = []
            for trade in [t for t in trades if t.awaiting_fill]:
                executor.exchange.cancel_order(
                    client_order_id(trade.trade_id, OrderRole.ENTRY, 0), trade.symbol)
                trade.cancel(now, "entry_cancelled_exchange_positions_accepted")
                account.trades.pop(trade.trade_id, None)
                changed.append(trade)
                what.append(f"{trade.trade_id}'s entry cancelled")
            position = executor.exchange.positions_held([gap.symbol]).get(gap.symbol, 0.0)
            flat = abs(position) < gap.step / 2
            price = self._price(gap.symbol)
            for trade in [t for t in trades if not t.awaiting_fill]:
                changed.append(trade)
                if flat or (position > 0) != trade.is_long:
                    trade_events.append(self._close_in_books(trade, now, price))
                    what.append(f"{trade.trade_id} closed in the books at {price:,.8g} "
                                f"({ExitReason.CLOSED_ON_EXCHANGE.value})")
                    continue
                quantity = trade.round_to_step(abs(position))
                if quantity < trade.quantity:  # the rest was closed by hand: booked at the last price
                    trade._fill(price, trade.quantity - quantity)
                    trade_events.append(trade._emit(
                        TradeEventKind.PARTIAL_TP, now, price, trade.quantity - quantity,
                        f"{ExitReason.CLOSED_ON_EXCHANGE.value}_part_fill"))
                else:
                    trade.quantity = quantity
                executor.reprotect(trade)
                position = 0.0
                what.append(f"{trade.trade_id} quantity {held(quantity, gap.step).split()[1]}, "
                            f"stop {trade.stop_loss:,.8g} placed again for it")
            if abs(position) >= gap.step / 2:
                account.unmanaged[gap.symbol] = position
                what.append(f"{held(position, gap.step)} recorded as not ours (never managed; "
                            f"no new {gap.symbol} trade while it is there)")
            elif gap.symbol in account.unmanaged:
                del account.unmanaged[gap.symbol]
            text = (f"{gap.symbol}: exchange {held(gap.exchange, gap.step)} adopted (books had "
                    f"{held(gap.books, gap.step)}): {'; '.join(what) or 'nothing to change'}")
            lines.append(text)
            events.append(RiskEvent(RiskEventKind.POSITIONS_ADOPTED, now, account.equity, text))
        executor.position_gaps = {}
        executor.save_risk(events, changed, trade_events)
        return lines

    def _close_in_books(self, trade: Trade, now: float, price: float) -> TradeEvent:
        """A trade whose position the exchange no longer holds: closed at ``price``, its orders
        cancelled (a reduce-only stop left behind would close whatever comes next)."""
        event = trade.close(now, price, ExitReason.CLOSED_ON_EXCHANGE)
        for cid in self.executor.books(trade).ids.values():
            self.executor.exchange.cancel_order(cid, trade.symbol)
        self.executor.manager.finished(trade)
        return event

    def _price(self, symbol: str) -> float:
        """The exchange's last price, else the books' last mark."""
        price = self.executor.exchange.last_price(symbol)
        if price is None:
            price = self.executor.manager.account.marks.get(symbol)
        if price is None:
            raise ValueError(f"{symbol}: no price to close at")
        return float(price)
