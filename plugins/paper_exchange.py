"""Built-in plugin: a deterministic paper exchange, driven by bars.

The account is a USDT-margined derivatives account, the kind the reference design trades: quote
cash plus a signed position per symbol (LONG and SHORT both allowed), equity = cash + positions
marked at the last close, fees taken from cash (so a buy takes its notional from cash and a short
sale adds its proceeds). No leverage: an entry needs free equity (equity less the notional of open
positions and of entry orders not filled yet) for its notional and fee, else ``insufficient_funds``.

Placing: an unknown symbol is ``unknown_symbol``; an amount that is not a positive whole number of
steps, or a stop/limit without a price, is ``invalid_order``; an entry below the minimum amount or
notional is ``below_min_notional``, and a market entry before the symbol's first bar is
``no_price``. A reduce-only order is never held to the minimums (reducing risk is always allowed)
but must face a position: none (or one on the same side) is ``invalid_order``, and its amount is
clipped to the position. A client order id already used returns that order, unchanged.

Fills, with the conventions of ``rulekit.trading.fills`` (the same as the lifecycle's):
- a MARKET order fills at the open of the next bar of its symbol (it was placed after the previous
  bar closed), moved against it by ``slippage_bps``;
- a STOP order fills at its price, or at the open when the bar gaps through it, plus slippage;
- a LIMIT order fills at its price, or at the open when the bar opens beyond it (the first trade
  there is better than the limit), without slippage;
- in one bar: market orders, then stops, then limits; a reduce-only order whose position is gone
  is cancelled, so a bar that hits a stop and a target closes at the stop (stop first).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from rulekit.decision.quantity import floor_to_step, step_units
from rulekit.hookspecs import hookimpl
from rulekit.model import MarketRules
from rulekit.trading.fills import adverse, stop_fill, target_fill
from rulekit.trading.orders import Order, OrderRequest, OrderSide, OrderStatus, OrderType

DEFAULT_MARKETS = {
    "BTCUSDT": MarketRules(amount_step=0.00001, min_notional=5.0, min_amount=0.00001,
                           price_tick=0.01),
    "ETHUSDT": MarketRules(amount_step=0.0001, min_notional=5.0, min_amount=0.0001,
                           price_tick=0.01),
    "SOLUSDT": MarketRules(amount_step=0.001, min_notional=5.0, min_amount=0.001, price_tick=0.01),
    "XRPUSDT": MarketRules(amount_step=0.1, min_notional=5.0, min_amount=0.1, price_tick=0.0001),
}


@hookimpl
def rulekit_exchange(name: str, options: Mapping[str, Any]):
    """Serve ``paper``."""
    if name != "paper":
        return None
    return PaperExchange(equity=float(options.get("equity", 10_000)),
                         quote=str(options.get("quote", "USDT")),
                         fee_pct=float(options.get("fee_pct", 0.0)),
                         slippage_bps=float(options.get("slippage_bps", 0.0)),
                         markets=options.get("markets"),
                         partial_fill_fraction=options.get("partial_fill_fraction"))


class PaperExchange:
    """Orders in, fills out, one bar at a time; the same inputs always give the same fills."""

    replays_bars = True  # fills come from the bars: one may be read again (see the protocol)

    def __init__(self, equity: float = 10_000, quote: str = "USDT", fee_pct: float = 0.0,
                 slippage_bps: float = 0.0, markets: Mapping[str, MarketRules] | None = None,
                 partial_fill_fraction: float | None = None):
        """``partial_fill_fraction`` (off by default): a LIMIT order a bar reaches fills at most
        this fraction of its amount in that bar (rounded down to the step, at least one step),
        the rest staying open for the next bars, as a resting order at a thin price would."""
        if partial_fill_fraction is not None and not 0 < float(partial_fill_fraction) <= 1:
            raise ValueError("partial_fill_fraction must be in (0, 1]")
        self.partial_fill_fraction = (None if partial_fill_fraction is None
                                      else float(partial_fill_fraction))
        self.quote = quote
        self.cash = float(equity)
        self.fee_rate = fee_pct / 100
        self.slippage_bps = slippage_bps
        self.markets = dict(markets or DEFAULT_MARKETS)
        self.positions: dict[str, float] = {}
        self.marks: dict[str, float] = {}
        self.orders: dict[str, Order] = {}
        self._reduce_only: dict[str, bool] = {}  # by client order id
        self._sequence = 0
        self._now: float | None = None
        self._records: dict[str, tuple[Order, dict[str, Any]]] = {}  # see ``_record_of``
        self._open: dict[str, None] = {}  # client ids of the OPEN orders, in placing order

    # --- the Exchange protocol --------------------------------------------------------------
    def market_rules(self, symbol: str) -> MarketRules | None:
        return self.markets.get(symbol)

    def equity(self) -> float:
        return self.cash + sum(q * self.marks.get(s, 0.0) for s, q in self.positions.items())

    def balances(self) -> Mapping[str, float]:
        """Quote cash, and the signed position of each symbol held (negative: short)."""
        out = {self.quote: self.cash}
        out.update({symbol: quantity for symbol, quantity in self.positions.items() if quantity})
        return out

    def positions_held(self, symbols: Sequence[str]) -> Mapping[str, float]:
        """Its own signed positions (a derivatives account)."""
        return {symbol: self.positions.get(symbol, 0.0) for symbol in symbols}

    def place_order(self, request: OrderRequest) -> Order:
        existing = self.orders.get(request.client_order_id)
        if existing is not None:
            return existing
        self._sequence += 1
        order = Order(request.client_order_id, request.symbol, request.side, request.type,
                      request.amount, OrderStatus.OPEN, price=request.price,
                      exchange_order_id=f"paper-{self._sequence}", timestamp=self._now)
        refusal = self._refusal(request)
        if refusal:
            order = replace(order, status=OrderStatus.REJECTED, reason=refusal)
        elif request.reduce_only:  # never more than the position (clipped again when it fills)
            held = abs(self.positions[request.symbol])
            order = replace(order, amount=min(request.amount, held))
        self._keep(order)
        self._reduce_only[request.client_order_id] = request.reduce_only
        return order

    def cancel_order(self, client_order_id: str, symbol: str) -> Order:
        order = self.orders.get(client_order_id)
        if order is None or order.status is not OrderStatus.OPEN:
            return order  # type: ignore[return-value]
        order = replace(order, status=OrderStatus.CANCELLED, reason="cancelled")
        self._keep(order)
        return order

    def fetch_order(self, client_order_id: str, symbol: str) -> Order | None:
        return self.orders.get(client_order_id)

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        orders = (self.orders[cid] for cid in self._open)  # not every order ever placed
        return [o for o in orders if symbol is None or o.symbol == symbol]

    # --- the market moves -------------------------------------------------------------------
    def on_bar(self, symbol: str, timestamp: float, bar_open: float, high: float, low: float,
               close: float) -> list[Order]:
        """Fill what this bar reaches, mark the position at the close; return the fills."""
        self._now = timestamp
        fills: list[Order] = []
        waiting = self.open_orders(symbol)
        for kind in (OrderType.MARKET, OrderType.STOP, OrderType.LIMIT):
            for order in [o for o in waiting if o.type is kind]:
                price = self._fill_price(order, bar_open, high, low)
                if price is not None:
                    filled = self._fill(order, price)
                    if filled is not None:
                        fills.append(filled)
        self.marks[symbol] = close
        return fills

    @property
    def clock(self) -> float | None:
        """Open time of the last bar this exchange has seen."""
        return self._now

    def last_price(self, symbol: str) -> float | None:
        return self.marks.get(symbol)

    # --- persistence ------------------------------------------------------------------------
    def as_record(self) -> dict[str, Any]:
        """Everything the paper exchange holds, as plain values: saved with the account so a
        restarted run finds its positions and orders where it left them."""
        return {"quote": self.quote, "cash": self.cash, "fee_rate": self.fee_rate,
                "slippage_bps": self.slippage_bps, "positions": dict(self.positions),
                "marks": dict(self.marks), "sequence": self._sequence, "now": self._now,
                "reduce_only": dict(self._reduce_only),
                "partial_fill_fraction": self.partial_fill_fraction,
                "markets": {s: [r.amount_step, r.min_notional, r.min_amount, r.price_tick]
                            for s, r in self.markets.items()},
                "orders": [self._record_of(o) for o in self.orders.values()]}

    def _record_of(self, order: Order) -> dict[str, Any]:
        """An order's record, made again only when the order changed (orders are replaced, never
        changed in place): the same dict otherwise, so whoever saves the state (``RiskStore``)
        can tell the few orders that changed from the thousands that did not."""
        known = self._records.get(order.client_order_id)
        if known is not None and known[0] is order:
            return known[1]
        record = _order_record(order)
        self._records[order.client_order_id] = (order, record)
        return record

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> PaperExchange:
        exchange = cls()
        exchange.restore(record)
        return exchange

    def restore(self, record: Mapping[str, Any]) -> None:
        self.cash, self.quote = record["cash"], record["quote"]
        self.fee_rate, self.slippage_bps = record["fee_rate"], record["slippage_bps"]
        self.markets = {s: MarketRules(*r) for s, r in record["markets"].items()}
        self.positions = dict(record["positions"])
        self.marks = dict(record["marks"])
        self._sequence = record["sequence"]
        self._now = record["now"]
        self._reduce_only = dict(record["reduce_only"])
        self.partial_fill_fraction = record.get("partial_fill_fraction")
        self.orders, self._open = {}, {}
        for raw in record["orders"]:
            order = Order(**{**raw, "side": OrderSide(raw["side"]), "type": OrderType(raw["type"]),
                             "status": OrderStatus(raw["status"])})
            self._keep(order)

    # --- inside -----------------------------------------------------------------------------
    def _keep(self, order: Order) -> None:
        """Every order stored here, the open ones indexed (a bar looks only at those)."""
        self.orders[order.client_order_id] = order
        if order.status is OrderStatus.OPEN:
            self._open[order.client_order_id] = None
        else:
            self._open.pop(order.client_order_id, None)

    def _refusal(self, request: OrderRequest) -> str | None:
        rules = self.markets.get(request.symbol)
        if rules is None:
            return "unknown_symbol"
        if not request.amount > 0 or not _on_step(request.amount, rules.amount_step):
            return "invalid_order"
        if request.type is not OrderType.MARKET and not (request.price and request.price > 0):
            return "invalid_order"
        position = self.positions.get(request.symbol, 0.0)
        if request.reduce_only:
            closing = -position if request.side is OrderSide.BUY else position
            return None if closing > 0 else "invalid_order"
        price = request.price or self.marks.get(request.symbol)
        if price is None:
            return "no_price"
        notional = request.amount * price
        if request.amount < rules.min_amount or notional < rules.min_notional:
            return "below_min_notional"
        committed = sum(abs(q) * self.marks.get(s, 0.0) for s, q in self.positions.items())
        committed += sum(o.amount * (o.price or self.marks.get(o.symbol, 0.0))
                         for o in self.open_orders()
                         if not self._reduce_only.get(o.client_order_id))
        if notional * (1 + self.fee_rate) > self.equity() - committed:
            return "insufficient_funds"
        return None

    def _fill_price(self, order: Order, bar_open: float, high: float, low: float) -> float | None:
        buy = order.side is OrderSide.BUY
        if order.type is OrderType.MARKET:
            return adverse(bar_open, buy, self.slippage_bps)
        if order.type is OrderType.STOP:  # a sell stop protects a long, a buy stop a short
            price = stop_fill(not buy, order.price, bar_open, high, low)
            return None if price is None else adverse(price, buy, self.slippage_bps)
        return target_fill(not buy, order.price, bar_open, high, low)

    def _fill(self, order: Order, price: float) -> Order | None:
        amount = order.amount - order.filled  # what is left of it
        if self.partial_fill_fraction is not None and order.type is OrderType.LIMIT:
            units, scale = step_units(self.markets[order.symbol].amount_step)
            part = max(floor_to_step(order.amount * self.partial_fill_fraction, units, scale),
                       units / scale)
            amount = min(amount, part)
        position = self.positions.get(order.symbol, 0.0)
        sign = 1.0 if order.side is OrderSide.BUY else -1.0
        if self._reduce_only.get(order.client_order_id):
            amount = min(amount, max(0.0, -sign * position))
            if amount <= 0:
                self._keep(replace(order, status=OrderStatus.CANCELLED, reason="position_closed"))
                return None
        fee = amount * price * self.fee_rate
        self.cash -= sign * amount * price + fee
        self.positions[order.symbol] = position + sign * amount
        if abs(self.positions[order.symbol]) < 1e-12:
            del self.positions[order.symbol]
        total = order.filled + amount
        average = price if not order.filled else (
            (order.average_price or price) * order.filled + price * amount) / total
        whole = total >= order.amount * (1 - 1e-9) or self._reduce_only.get(
            order.client_order_id) and order.symbol not in self.positions
        filled = replace(order, status=OrderStatus.FILLED if whole else OrderStatus.OPEN,
                         filled=total, average_price=average, fee=order.fee + fee,
                         timestamp=self._now)
        self._keep(filled)
        return filled


def _on_step(amount: float, step: float) -> bool:
    """``amount`` is a whole number of ``step``s (within float representation)."""
    units, scale = step_units(step)
    steps = round(amount * scale / units)
    return abs(steps * units / scale - amount) <= 1e-9 * max(amount, step)


def _order_record(order: Order) -> dict[str, Any]:
    record = {name: getattr(order, name) for name in order.__slots__}
    record.update(side=order.side.value, type=order.type.value, status=order.status.value)
    return record
