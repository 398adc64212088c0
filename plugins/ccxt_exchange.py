"""Built-in plugin: real exchanges through ccxt (``ccxt:<exchange id>``, e.g. ``ccxt:binance``).

- Market rules come from ccxt's unified markets: the amount step from ``precision.amount`` (the step
  itself under TICK_SIZE precision mode, a number of decimals under DECIMAL_PLACES), the minimum
  amount and notional from ``limits``.
- Amounts are rounded DOWN to the step (toward less risk), never up. An entry below the minimum
  amount or notional is rejected before anything is sent; a reduce-only close is never blocked by
  them (reducing risk is always allowed; the exchange may still refuse it).
- Every order carries its client order id, and the exchange is asked for that id before an order is
  sent (Binance accepts a reused id once the first order is filled) and before each retry after an
  error that leaves the outcome unknown: an order that got through is returned, never placed twice.
- ccxt's errors become what the risk layer understands: refusals are REJECTED orders with a reason;
  an exchange that stays unreachable through the quick retries (network errors, rate limits, 5xx)
  is ``ExchangeUnreachable`` (the port's ``ExchangeUnavailable``: the run backs off and retries);
  a refused API key or an unknown symbol is ``ExchangeError`` (a user error, the run stops).

ccxt is imported when an exchange is opened, not when the plugin is loaded (``rulekit plugins``
stays fast).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from rulekit.decision.quantity import floor_to_step, step_units
from rulekit.errors import RulekitError
from rulekit.hookspecs import hookimpl
from rulekit.model import MarketRules
from rulekit.trading.executor import ExchangeUnavailable
from rulekit.trading.orders import Order, OrderRequest, OrderSide, OrderStatus, OrderType

PREFIX = "ccxt:"
MAX_BACKOFF_SECONDS = 8.0
TOLERANCE = 1e-9  # relative: 0.0001 x 50,000 must meet a 5.0 minimum even if the float lands below
STATUS = {"open": OrderStatus.OPEN, "closed": OrderStatus.FILLED,
          "canceled": OrderStatus.CANCELLED, "cancelled": OrderStatus.CANCELLED,
          "expired": OrderStatus.CANCELLED, "rejected": OrderStatus.REJECTED}
DEFAULT_CCXT_OPTIONS = {
    # spot markets only: one exchangeInfo call instead of three (+fapi, dapi), no sapi margin calls
    "fetchMarkets": {"types": ["spot"]}, "fetchMargins": False,
    "fetchCurrencies": False,  # a private sapi call rulekit does not need
    "adjustForTimeDifference": False,
    "warnOnFetchOpenOrdersWithoutSymbol": False,  # open_orders() without a symbol is allowed
}
log = logging.getLogger(__name__)
UNKNOWN = object()  # a lookup that could not tell whether an order exists


class ExchangeError(RulekitError):
    """The exchange refused the account or the request in a way retrying cannot fix (a refused
    API key, an unknown symbol); the message says what is known."""


class ExchangeUnreachable(ExchangeError, ExchangeUnavailable):
    """No answer after the quick retries (network errors, rate limits, 5xx): the run backs off
    and tries again (``ExchangeUnavailable`` of the Exchange port)."""


@hookimpl
def rulekit_exchange(name: str, options: Mapping[str, Any]):
    """Serve ``ccxt:<id>`` for any exchange id ccxt knows; decline every other name."""
    if not name.startswith(PREFIX):
        return None
    return CcxtExchange(name[len(PREFIX):], options)


class CcxtExchange:
    """The ``Exchange`` protocol over one ccxt client. Symbols may be exchange ids (BTCUSDT) or
    unified (BTC/USDT); orders come back with the exchange id."""

    replays_bars = False  # the exchange fills on its own

    def __init__(self, exchange_id: str, options: Mapping[str, Any]):
        import ccxt

        self.ccxt = ccxt
        if exchange_id not in ccxt.exchanges:
            raise ExchangeError(f"ccxt has no exchange {exchange_id!r}")
        extra = options.get("ccxt_options") or {}
        urls = options.get("urls") or {}
        if not isinstance(extra, Mapping) or not isinstance(urls, Mapping):
            raise ExchangeError("exchange options ccxt_options and urls must be mappings")
        config: dict[str, Any] = {"enableRateLimit": bool(options.get("enableRateLimit", True)),
                                  "options": {**DEFAULT_CCXT_OPTIONS, **dict(extra)}}
        for key in ("apiKey", "secret", "password"):
            if options.get(key):
                config[key] = options[key]
        self.client = getattr(ccxt, exchange_id)(config)
        if options.get("sandbox"):
            try:
                self.client.set_sandbox_mode(True)
            except ccxt.NotSupported:
                raise ExchangeError(f"ccxt:{exchange_id} has no sandbox") from None
        if urls:  # after the sandbox switch, so tests can point a sandboxed client at a double
            self.client.urls["api"] = {**self.client.urls["api"], **dict(urls)}
        self.quote = str(options.get("quote", "USDT"))
        self._watched: dict[str, tuple[str, Order]] = {}  # client id -> (symbol, last seen)
        self._reported: dict[str, float] = {}  # client id -> part fill already reported
        try:
            self.retries = int(options.get("retries", 3))
            self.backoff_seconds = float(options.get("backoff_seconds", 0.5))
        except (TypeError, ValueError):
            raise ExchangeError("exchange options retries and backoff_seconds must be numbers") \
                from None
        if self.retries < 0 or not self.backoff_seconds >= 0:
            raise ExchangeError("exchange options retries and backoff_seconds must not be negative")
        self._markets: dict[str, dict] | None = None

    # --- market rules -----------------------------------------------------------------------
    def market(self, symbol: str | None) -> dict | None:
        """ccxt's market for an exchange id (BTCUSDT) or a unified symbol (BTC/USDT), or None."""
        if symbol is None:
            return None
        if self._markets is None:
            self._markets = self._read(self.client.load_markets)
        found = self._markets.get(symbol)
        if found is None:
            found = (self.client.markets_by_id or {}).get(symbol, [None])[0]
        return found

    def market_rules(self, symbol: str) -> MarketRules | None:
        market = self.market(symbol)
        return None if market is None else rules_of(market, self.client.precisionMode, self.ccxt)

    # --- account ----------------------------------------------------------------------------
    def balances(self) -> Mapping[str, float]:
        free = self._read(self.client.fetch_balance).get("free") or {}
        return {asset: float(amount) for asset, amount in free.items() if amount}

    def positions_held(self, symbols: Sequence[str]) -> Mapping[str, float]:
        """Derivatives markets: ``fetch_positions`` (contracts x contract size, short negative;
        a hedge-mode account's long and short legs summed). Spot markets: the base currency's
        total balance (free plus locked in orders), so coins held before the run are counted;
        two spot markets of one base coin cannot be told apart (trade one market per coin). A
        symbol the exchange does not list holds nothing."""
        held = {symbol: 0.0 for symbol in symbols}
        markets = {symbol: market for symbol in symbols if (market := self.market(symbol))}
        spot = {symbol: m for symbol, m in markets.items() if not m.get("contract")}
        if spot:
            totals = self._read(self.client.fetch_balance).get("total") or {}
            for symbol, market in spot.items():
                held[symbol] = float(totals.get(market["base"]) or 0.0)
        contracts = {m["symbol"]: symbol for symbol, m in markets.items() if m.get("contract")}
        if contracts:
            for raw in self._read(self.client.fetch_positions, list(contracts)) or []:
                ours = contracts.get(raw.get("symbol") or "")
                if ours is None:
                    continue
                size = float(raw.get("contracts") or 0.0) * float(
                    raw.get("contractSize") or markets[ours].get("contractSize") or 1.0)
                held[ours] += -size if raw.get("side") == "short" else size
        return held

    def equity(self) -> float:
        """Quote cash plus every other asset marked at its last price against the quote (assets
        without an ASSET/QUOTE market are left out: they cannot be valued here)."""
        totals = self._read(self.client.fetch_balance).get("total") or {}
        equity = float(totals.get(self.quote) or 0.0)
        held = {f"{asset}/{self.quote}": float(amount) for asset, amount in totals.items()
                if asset != self.quote and amount and self.market(f"{asset}/{self.quote}")}
        if held:
            tickers = self._read(self.client.fetch_tickers, list(held))
            for symbol, amount in held.items():
                equity += amount * _last_price(tickers.get(symbol), symbol)
        return equity

    # --- orders -----------------------------------------------------------------------------
    def place_order(self, request: OrderRequest) -> Order:
        market = self.market(request.symbol)
        if market is None:
            return _refused(request, "unknown_symbol")
        if request.type is not OrderType.MARKET and not (request.price and request.price > 0):
            return _refused(request, "invalid_order")  # a stop or limit needs its price
        rules = rules_of(market, self.client.precisionMode, self.ccxt)
        amount = floor_to_step(request.amount, *step_units(rules.amount_step))
        if not amount > 0:
            return _refused(request, "invalid_order" if request.reduce_only
                            else "below_min_notional")
        if not request.reduce_only:
            price = request.price or _last_price(
                self._read(self.client.fetch_ticker, market["symbol"]), market["symbol"])
            if (amount < rules.min_amount * (1 - TOLERANCE)
                    or amount * price < rules.min_notional * (1 - TOLERANCE)):
                return _refused(request, "below_min_notional")
        existing = self.fetch_order(request.client_order_id, request.symbol)
        if existing is not None:
            return self._watch(existing, request.symbol)
        return self._watch(self._submit(request, market, amount), request.symbol)

    def fetch_order(self, client_order_id: str, symbol: str) -> Order | None:
        market = self.market(symbol)
        if market is None:
            return None
        try:
            raw = self._read(self.client.fetch_order, None, market["symbol"],
                             {"clientOrderId": client_order_id}, expect=(self.ccxt.OrderNotFound,))
        except self.ccxt.OrderNotFound:
            return None
        # watched from here on: after a restart, the orders reconcile finds report their fills
        return self._watch(self._order(raw, client_order_id=client_order_id), symbol)

    def cancel_order(self, client_order_id: str, symbol: str) -> Order:
        """Cancel; an order already filled, cancelled or unknown comes back as fetch sees it."""
        market = self.market(symbol)
        if market is None:
            return None  # type: ignore[return-value]  # unknown, as the paper exchange answers
        refusals = (self.ccxt.InvalidOrder, self.ccxt.OperationRejected)  # OrderNotFound included
        self._watched.pop(client_order_id, None)
        try:
            raw = self._read(self.client.cancel_order, None, market["symbol"],
                             {"clientOrderId": client_order_id}, expect=refusals)
        except refusals:
            return self.fetch_order(client_order_id, symbol)  # type: ignore[return-value]
        # Binance answers a cancel with the CANCEL's own clientOrderId: keep the order's
        return self._order(raw, client_order_id=client_order_id)

    def on_bar(self, symbol: str, at: float, bar_open: float, high: float, low: float,
               close: float) -> list[Order]:
        """Live, the exchange fills on its own: the orders of ``symbol`` that this adapter placed
        or looked up and that have filled more since the last call (the bar's prices are not
        used): filled in full, still open with a part filled, or ended (cancelled, expired)
        with or without a part fill, e.g. a stop cancelled by hand; each with its cumulative
        ``filled`` and average price. The orders this adapter cancelled are not watched."""
        filled = []
        for client_id, (order_symbol, known) in list(self._watched.items()):
            if order_symbol != symbol:
                continue
            order = known if known.status is not OrderStatus.OPEN else self.fetch_order(
                client_id, symbol)
            if order is None:
                continue
            reported = self._reported.get(client_id, 0.0)
            if order.status is OrderStatus.OPEN:
                if order.filled > reported:
                    self._reported[client_id] = order.filled
                    filled.append(order)
                continue
            del self._watched[client_id]
            self._reported.pop(client_id, None)
            filled.append(order)  # filled, or ended on the exchange (with or without a fill)
        return filled

    def last_price(self, symbol: str) -> float:
        """The last traded price of ``symbol``."""
        market = self.market(symbol)
        if market is None:
            raise ExchangeError(f"{self.client.id} has no symbol {symbol}")
        return _last_price(self._read(self.client.fetch_ticker, market["symbol"]), market["symbol"])

    @property
    def clock(self) -> float | None:
        """A live exchange runs on the wall clock: there is no replay to resume."""
        return None

    def as_record(self) -> dict[str, Any] | None:
        """Nothing to commit: the exchange keeps its own state (orders are found by client id)."""
        return None

    def restore(self, record: Mapping[str, Any]) -> None:
        """Nothing was saved (see ``as_record``)."""

    def _watch(self, order: Order | None, symbol: str) -> Order | None:
        """Remember an order until ``on_bar`` has reported it: its fill, or its end (a market
        order that expired at once, unfilled or part filled, is reported like any other end)."""
        if order is not None and order.status is not OrderStatus.REJECTED:
            self._watched.setdefault(order.client_order_id, (symbol, order))
        return order

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        market = self.market(symbol)
        if symbol is not None and market is None:
            return []
        unified = market["symbol"] if market else None
        return [self._order(raw) for raw in self._read(self.client.fetch_open_orders, unified)]

    # --- inside -----------------------------------------------------------------------------
    def _submit(self, request: OrderRequest, market: dict, amount: float) -> Order:
        """Send, and after an error that leaves the outcome unknown look the order up before
        sending again: bounded attempts, exponential backoff, never a second order."""
        ccxt = self.ccxt
        kind, price = "market", None
        params: dict[str, Any] = {"clientOrderId": request.client_order_id}
        if request.type is OrderType.STOP:
            params["stopLossPrice"] = request.price  # spot: STOP_LOSS; contracts: STOP_MARKET
        elif request.type is OrderType.LIMIT:
            kind, price = "limit", request.price
        if request.reduce_only and market.get("contract"):
            params["reduceOnly"] = True  # spot has no such flag (Binance refuses the parameter)
        side = "buy" if request.side is OrderSide.BUY else "sell"
        last_error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self._pause(attempt)
                found = self._lookup(request, market)
                if found is UNKNOWN:
                    continue  # cannot tell whether the last one got through: do not send blind
                if found is not None:
                    return found  # type: ignore[return-value]
            try:
                raw = self.client.create_order(market["symbol"], kind, side, amount, price,
                                               dict(params))
                return self._order(raw, request)
            except ccxt.InsufficientFunds as exc:
                return _refused(request, "insufficient_funds", str(exc))
            except ccxt.InvalidOrder as exc:
                if isinstance(exc, ccxt.DuplicateOrderId) or "duplicate order" in str(exc).lower():
                    found = self._lookup(request, market)
                    if isinstance(found, Order):
                        return found
                    raise ExchangeError(f"order {request.client_order_id} is already on "
                                        f"{self.client.id} but cannot be read: {exc}") from None
                log.warning("%s refused order %s: %s", self.client.id, request.client_order_id, exc)
                return _refused(request, "invalid_order", str(exc))
            except ccxt.BadRequest as exc:  # Binance -1013 "Filter failure: NOTIONAL" and kin
                log.warning("%s refused order %s: %s", self.client.id, request.client_order_id, exc)
                return _refused(request, "invalid_order", str(exc))
            except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
                raise ExchangeError(f"exchange refused the API key: {exc}") from None
            except ccxt.OperationFailed as exc:  # network errors and "execution status unknown"
                last_error = exc
                log.warning("%s order %s, attempt %d: %s", self.client.id, request.client_order_id,
                            attempt + 1, exc)
            except ccxt.BaseError as exc:
                log.warning("%s refused order %s: %s", self.client.id, request.client_order_id, exc)
                return _refused(request, "exchange_rejected", str(exc))
        self._pause(self.retries + 1)
        found = self._lookup(request, market)
        if isinstance(found, Order):
            return found
        outcome = ("it was not placed" if found is None else
                   "whether it was placed is unknown: check with fetch_order before placing again")
        raise ExchangeUnreachable(f"order {request.client_order_id} on {market['symbol']}: no answer "
                            f"from {self.client.id} after {self.retries + 1} attempts "
                            f"({last_error}); {outcome}")

    def _lookup(self, request: OrderRequest, market: dict) -> Order | None | object:
        """One look for the order: the Order, None (the exchange does not have it) or UNKNOWN."""
        ccxt = self.ccxt
        try:
            raw = self.client.fetch_order(None, market["symbol"],
                                          {"clientOrderId": request.client_order_id})
        except ccxt.OrderNotFound:
            return None
        except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
            raise ExchangeError(f"exchange refused the API key: {exc}") from None
        except ccxt.BaseError:
            return UNKNOWN
        return self._order(raw, request)

    def _pause(self, attempt: int) -> None:
        time.sleep(min(self.backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))

    def _read(self, method, *args, expect: tuple = ()):
        """A read (or an idempotent cancel), retried on network errors with bounded backoff.
        The ccxt errors in ``expect`` pass through to the caller; other refusals are errors."""
        ccxt = self.ccxt
        for attempt in range(self.retries + 1):
            try:
                return method(*args)
            except expect:
                raise
            except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
                raise ExchangeError(f"exchange refused the API key: {exc}") from None
            except ccxt.OperationFailed as exc:
                if attempt == self.retries:
                    raise ExchangeUnreachable(f"{self.client.id} {method.__name__}: no answer after "
                                        f"{attempt + 1} attempts ({exc})") from None
                self._pause(attempt + 1)
            except ccxt.BaseError as exc:
                raise ExchangeError(f"{self.client.id} {method.__name__} refused: {exc}") from None

    def _order(self, raw: dict, request: OrderRequest | None = None,
               client_order_id: str | None = None) -> Order:
        """ccxt's unified order as rulekit's ``Order`` (symbol as the exchange id)."""
        market = self.client.markets.get(raw.get("symbol")) or {}
        side = OrderSide.BUY if raw.get("side") == "buy" else OrderSide.SELL
        trigger = raw.get("triggerPrice") or raw.get("stopPrice") or raw.get("stopLossPrice")
        if request is not None:
            kind = request.type
        else:
            kind = (OrderType.STOP if trigger else
                    OrderType.LIMIT if raw.get("type") == "limit" else OrderType.MARKET)
        timestamp = raw.get("timestamp")
        average = raw.get("average")
        return Order(
            client_order_id=(client_order_id or raw.get("clientOrderId")
                             or (request.client_order_id if request else "")),
            symbol=market.get("id") or raw.get("symbol") or (request.symbol if request else ""),
            side=side, type=kind, amount=float(raw.get("amount") or 0.0),
            status=STATUS.get(raw.get("status"), OrderStatus.OPEN),
            filled=float(raw.get("filled") or 0.0),
            average_price=float(average) if average else None,
            fee=_fee_in_quote(raw, market, average),
            price=float(trigger or raw.get("price") or 0.0) or None,
            exchange_order_id=str(raw["id"]) if raw.get("id") is not None else None,
            timestamp=timestamp / 1000 if timestamp else None)


def rules_of(market: Mapping[str, Any], precision_mode: int, ccxt) -> MarketRules:
    """MarketRules from a ccxt market in the exchange's precision mode (TICK_SIZE: the step itself;
    DECIMAL_PLACES: d digits is a step of 10**-d; SIGNIFICANT_DIGITS has no fixed step: refused)."""
    precision = market.get("precision") or {}
    limits = market.get("limits") or {}

    def step(value: Any) -> float | None:
        if value is None:
            return None
        if precision_mode == ccxt.DECIMAL_PLACES:
            return float(Decimal(1).scaleb(-int(value)))
        if precision_mode == ccxt.SIGNIFICANT_DIGITS:
            raise ExchangeError(f"{market.get('symbol')}: the exchange counts significant digits, "
                                "which give no fixed amount step")
        return float(value)

    amount_step = step(precision.get("amount"))
    if not amount_step or amount_step <= 0:
        raise ExchangeError(f"{market.get('symbol')}: the exchange gives no amount step")
    return MarketRules(amount_step=amount_step,
                       min_notional=float((limits.get("cost") or {}).get("min") or 0.0),
                       min_amount=float((limits.get("amount") or {}).get("min") or 0.0),
                       price_tick=step(precision.get("price")))


def _last_price(ticker: Mapping[str, Any] | None, symbol: str) -> float:
    """The last trade, else the bid/ask middle; no price is an error (never value at zero)."""
    ticker = ticker or {}
    last = ticker.get("last") or ticker.get("close")
    if not last and ticker.get("bid") and ticker.get("ask"):
        last = (ticker["bid"] + ticker["ask"]) / 2
    if not last:
        raise ExchangeError(f"no price for {symbol}")
    return float(last)


def _fee_in_quote(raw: Mapping[str, Any], market: Mapping[str, Any], average: Any) -> float:
    """Fees charged in the quote, plus those in the base at the average price; others (BNB) are
    left out, as a plain order query (Binance GET /order) reports no fee at all."""
    fees = raw.get("fees") or ([raw["fee"]] if raw.get("fee") else [])
    total = 0.0
    for fee in fees:
        cost = float((fee or {}).get("cost") or 0.0)
        currency = (fee or {}).get("currency")
        if currency == market.get("quote"):
            total += cost
        elif currency == market.get("base") and average:
            total += cost * float(average)
    return total


def _refused(request: OrderRequest, reason: str, message: str | None = None) -> Order:
    return Order(request.client_order_id, request.symbol, request.side, request.type,
                 request.amount, OrderStatus.REJECTED, price=request.price, reason=reason,
                 message=message)
