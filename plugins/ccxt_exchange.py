"""Built-in plugin: real exchanges through ccxt (``ccxt:<exchange id>``, e.g. ``ccxt:binance``).

- Market rules come from ccxt's unified market structure: the amount step from
  ``precision.amount`` (a step under TICK_SIZE precision mode, a number of decimals under
  DECIMAL_PLACES), the minimum amount and notional from ``limits``.
- Amounts are rounded DOWN to the step (toward less risk), never up. An entry below the minimum
  amount or notional is a rejection before anything is sent; a reduce-only close is never blocked by
  the minimum notional (reducing risk is always allowed).
- Every order carries its client order id. A network error is retried with bounded exponential
  backoff, and before each retry the adapter asks the exchange for that client order id: an order
  that got through is returned, never placed twice.
- ccxt's errors map to what the risk layer understands: insufficient funds and invalid orders are
  REJECTED orders with a reason; bad API keys and exhausted retries are user errors.

ccxt is imported when an exchange is opened, not when the plugin is loaded (it takes ~1 s).
"""
from __future__ import annotations

import time
from typing import Any, Mapping

from rulekit.errors import RulekitError
from rulekit.hookspecs import hookimpl
from rulekit.model import MarketRules
from rulekit.orders import Order, OrderRequest, OrderSide, OrderStatus, OrderType
from rulekit.policy import step_units
from rulekit.quantity import floor_to_step

PREFIX = "ccxt:"
STATUS = {"open": OrderStatus.OPEN, "closed": OrderStatus.FILLED,
          "canceled": OrderStatus.CANCELLED, "cancelled": OrderStatus.CANCELLED,
          "expired": OrderStatus.CANCELLED, "rejected": OrderStatus.REJECTED}


class ExchangeError(RulekitError):
    """The exchange could not be reached or refused the account; nothing was left half done."""


@hookimpl
def rulekit_exchange(name: str, options: Mapping[str, Any]):
    """Serve ``ccxt:<id>`` for any exchange id ccxt knows."""
    if not name.startswith(PREFIX):
        return None
    return CcxtExchange(name[len(PREFIX):], options)


class CcxtExchange:
    def __init__(self, exchange_id: str, options: Mapping[str, Any]):
        import ccxt

        self.ccxt = ccxt
        if exchange_id not in ccxt.exchanges:
            raise ExchangeError(f"ccxt has no exchange {exchange_id!r}")
        settings: dict[str, Any] = {"enableRateLimit": False, "options": {
            "fetchMarkets": {"types": ["spot"]}, "fetchMargins": False, "fetchCurrencies": False,
            "adjustForTimeDifference": False, "warnOnFetchOpenOrdersWithoutSymbol": False,
            **dict(options.get("ccxt_options", {}))}}
        for key in ("apiKey", "secret", "password"):
            if options.get(key):
                settings[key] = options[key]
        self.client = getattr(ccxt, exchange_id)(settings)
        if options.get("sandbox"):
            self.client.set_sandbox_mode(True)
        if options.get("urls"):
            self.client.urls["api"] = {**self.client.urls["api"], **dict(options["urls"])}
        self.quote = str(options.get("quote", "USDT"))
        self.retries = int(options.get("retries", 3))
        self.backoff_seconds = float(options.get("backoff_seconds", 0.5))
        self._markets: dict[str, dict] | None = None

    # --- market rules -----------------------------------------------------------------------
    def market(self, symbol: str) -> dict | None:
        """ccxt's market for an exchange id (BTCUSDT) or a unified symbol (BTC/USDT)."""
        if self._markets is None:
            self._markets = self._call(self.client.load_markets)
        found = self._markets.get(symbol)
        if found is None:
            found = self.client.markets_by_id.get(symbol, [None])[0]
        return found

    def market_rules(self, symbol: str) -> MarketRules | None:
        market = self.market(symbol)
        return None if market is None else rules_of(market, self.client.precisionMode, self.ccxt)

    # --- account ----------------------------------------------------------------------------
    def balances(self) -> Mapping[str, float]:
        balance = self._call(self.client.fetch_balance)
        return {asset: float(free) for asset, free in balance.get("free", {}).items() if free}

    def equity(self) -> float:
        balance = self._call(self.client.fetch_balance)
        total = float(balance.get("total", {}).get(self.quote) or 0.0)
        for asset, amount in balance.get("total", {}).items():
            if asset == self.quote or not amount:
                continue
            symbol = f"{asset}/{self.quote}"
            if self.market(symbol) is not None:
                total += float(amount) * float(self._call(self.client.fetch_ticker, symbol)["last"])
        return total

    # --- orders -----------------------------------------------------------------------------
    def place_order(self, request: OrderRequest) -> Order:
        market = self.market(request.symbol)
        if market is None:
            return _refused(request, "unknown_symbol")
        rules = rules_of(market, self.client.precisionMode, self.ccxt)
        units, scale = step_units(rules.amount_step)
        amount = floor_to_step(request.amount, units, scale)
        if not amount > 0:
            return _refused(request, "below_min_notional" if not request.reduce_only
                            else "invalid_order")
        if not request.reduce_only:
            price = request.price or float(self._call(self.client.fetch_ticker,
                                                      market["symbol"])["last"])
            if amount < rules.min_amount or amount * price < rules.min_notional:
                return _refused(request, "below_min_notional")
        existing = self.fetch_order(request.client_order_id, request.symbol)
        if existing is not None:
            return existing
        kind, params = "market", {"clientOrderId": request.client_order_id}
        if request.type is OrderType.STOP:
            params["stopLossPrice"] = request.price
        elif request.type is OrderType.LIMIT:
            kind = "limit"
        side = "buy" if request.side is OrderSide.BUY else "sell"
        price = request.price if request.type is OrderType.LIMIT else None
        ccxt = self.ccxt
        delay = self.backoff_seconds
        for attempt in range(self.retries + 1):
            try:
                placed = self.client.create_order(market["symbol"], kind, side, amount, price,
                                                  params)
                return self._order(placed, request)
            except ccxt.InsufficientFunds:
                return _refused(request, "insufficient_funds")
            except ccxt.InvalidOrder as exc:
                if "Duplicate order" in str(exc):
                    found = self.fetch_order(request.client_order_id, request.symbol)
                    if found is not None:
                        return found
                return _refused(request, "invalid_order")
            except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
                raise ExchangeError(f"the exchange refused the API key: {exc}") from None
            except ccxt.NetworkError as exc:
                last_error = exc
            if attempt == self.retries:
                break
            time.sleep(delay)
            delay = min(delay * 2, 8.0)
            found = self._lookup(request)  # did the lost request get through?
            if found is not None:
                return found
        raise ExchangeError(f"order {request.client_order_id} not placed after "
                            f"{self.retries + 1} attempts: {last_error}")

    def fetch_order(self, client_order_id: str, symbol: str) -> Order | None:
        market = self.market(symbol)
        if market is None:
            return None
        try:
            raw = self._call(self.client.fetch_order, None, market["symbol"],
                             {"clientOrderId": client_order_id})
        except self.ccxt.OrderNotFound:
            return None
        return self._order(raw)

    def cancel_order(self, client_order_id: str, symbol: str) -> Order:
        market = self.market(symbol)
        try:
            self._call(self.client.cancel_order, None, market["symbol"],
                       {"clientOrderId": client_order_id})
        except (self.ccxt.OrderNotFound, self.ccxt.InvalidOrder):
            pass  # filled or unknown: report it as it is
        return self.fetch_order(client_order_id, symbol)  # type: ignore[return-value]

    def open_orders(self, symbol: str | None = None) -> list[Order]:
        unified = self.market(symbol)["symbol"] if symbol else None
        return [self._order(o) for o in self._call(self.client.fetch_open_orders, unified)]

    # --- inside -----------------------------------------------------------------------------
    def _lookup(self, request: OrderRequest) -> Order | None:
        try:
            return self.fetch_order(request.client_order_id, request.symbol)
        except ExchangeError:
            return None

    def _call(self, method, *args):
        """A read, retried on network errors with bounded backoff (reads are idempotent)."""
        ccxt = self.ccxt
        delay = self.backoff_seconds
        for attempt in range(self.retries + 1):
            try:
                return method(*args)
            except (ccxt.AuthenticationError, ccxt.PermissionDenied) as exc:
                raise ExchangeError(f"the exchange refused the API key: {exc}") from None
            except ccxt.NetworkError as exc:
                if attempt == self.retries:
                    raise ExchangeError(f"{method.__name__} failed after {attempt + 1} attempts: "
                                        f"{exc}") from None
                time.sleep(delay)
                delay = min(delay * 2, 8.0)

    def _order(self, raw: dict, request: OrderRequest | None = None) -> Order:
        market = self.client.markets.get(raw.get("symbol"), {})
        fee = raw.get("fee") or {}
        side = OrderSide.BUY if raw.get("side") == "buy" else OrderSide.SELL
        kind = (OrderType.STOP if raw.get("triggerPrice") or raw.get("stopPrice")
                else OrderType.LIMIT if raw.get("type") == "limit" else OrderType.MARKET)
        timestamp = raw.get("timestamp")
        return Order(
            client_order_id=raw.get("clientOrderId") or (request.client_order_id if request
                                                         else ""),
            symbol=market.get("id", raw.get("symbol")), side=side, type=kind,
            amount=float(raw.get("amount") or 0.0),
            status=STATUS.get(raw.get("status"), OrderStatus.OPEN),
            filled=float(raw.get("filled") or 0.0), average_price=raw.get("average"),
            fee=float(fee.get("cost") or 0.0),
            price=raw.get("triggerPrice") or raw.get("price"),
            exchange_order_id=str(raw.get("id")) if raw.get("id") is not None else None,
            timestamp=timestamp / 1000 if timestamp else None)


def rules_of(market: dict, precision_mode: int, ccxt) -> MarketRules:
    """MarketRules from a ccxt market, in whichever precision mode the exchange reports."""
    precision = market.get("precision", {})
    limits = market.get("limits", {})

    def step(value):
        if value is None:
            return None
        if precision_mode == ccxt.DECIMAL_PLACES:
            return 10.0 ** -int(value)
        if precision_mode == ccxt.SIGNIFICANT_DIGITS:
            raise ExchangeError(f"{market.get('symbol')}: significant-digit precision cannot be "
                                "turned into an amount step")
        return float(value)

    amount_step = step(precision.get("amount"))
    if amount_step is None:
        raise ExchangeError(f"{market.get('symbol')}: the exchange gives no amount precision")
    return MarketRules(amount_step=amount_step,
                       min_notional=float((limits.get("cost") or {}).get("min") or 0.0),
                       min_amount=float((limits.get("amount") or {}).get("min") or 0.0),
                       price_tick=step(precision.get("price")))


def _refused(request: OrderRequest, reason: str) -> Order:
    return Order(request.client_order_id, request.symbol, request.side, request.type,
                 request.amount, OrderStatus.REJECTED, price=request.price, reason=reason)
