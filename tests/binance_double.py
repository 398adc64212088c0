"""A small HTTP double of Binance's spot REST API (v3) on 127.0.0.1, so the ccxt adapter is tested
with the real ccxt client over a real socket and never touches the internet.

It serves what ccxt 4.5's binance class calls for spot trading with the adapter's options
(``fetchMarkets`` spot only, no currencies, no margin pairs, no time sync): exchangeInfo (BTCUSDT
and ETHUSDT with Binance's real filters), order (POST/GET/DELETE), openOrders, account, ticker/24hr,
ticker/price, ticker/bookTicker, ping and time. Market orders fill at once at the double's price;
STOP_LOSS and LIMIT orders rest (their balance locked) until ``set_price`` reaches them. Signatures
are not checked.

Like Binance it refuses a client order id already used by an OPEN order (-2010 "Duplicate order
sent."; a filled order's id may be used again, which is why the adapter looks an id up before
sending), a short balance (-2010 "Account has insufficient balance for requested action.") and a
stop the price is already through (-2010 "Stop price would trigger immediately.").
With ``enforce_filters=True`` it also applies LOT_SIZE and NOTIONAL (-1013 "Filter failure: ...").
``fail_next`` makes order placements fail after or before being recorded, to test retries;
``fail_requests`` makes any other call fail (reads, cancels) the same ways; ``rate_limit``
answers every call 429 for a while; ``fill_partly`` fills part of a resting order (then working
on, expired or cancelled).
"""
from __future__ import annotations

import json
import socket
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

MARKETS = {
    "BTCUSDT": {"base": "BTC", "quote": "USDT", "step": "0.00001000", "min_qty": "0.00001000",
                "tick": "0.01000000", "min_notional": "5.00000000"},
    "ETHUSDT": {"base": "ETH", "quote": "USDT", "step": "0.00010000", "min_qty": "0.00010000",
                "tick": "0.01000000", "min_notional": "5.00000000"},
}
DUPLICATE = {"code": -2010, "msg": "Duplicate order sent."}
INSUFFICIENT = {"code": -2010, "msg": "Account has insufficient balance for requested action."}
UNKNOWN_ORDER = {"code": -2011, "msg": "Unknown order sent."}
PRIVATE = ("/api/v3/account", "/api/v3/order", "/api/v3/openOrders")
NO_ORDER = {"code": -2013, "msg": "Order does not exist."}
# how a failed placement looks to the client: ccxt turns each into a NetworkError/OperationFailed
FAILURES = {
    "drop": None,  # the connection closes without an answer: requests ConnectionError
    "timeout": (503, {"code": -1007, "msg": "Timeout waiting for response from backend server. "
                                            "Send status unknown; execution status unknown."}),
    "unknown": (500, {"code": -1006, "msg": "An unexpected response was received from the "
                                            "message bus. Execution status unknown."}),
    "unavailable": (503, None),  # no JSON body: ccxt's httpExceptions -> ExchangeNotAvailable
    "gateway_timeout": (504, None),  # no JSON body: ccxt's httpExceptions -> RequestTimeout
}
OPEN = ("NEW", "PARTIALLY_FILLED")  # Binance's statuses of an order still working
STOP_WOULD_TRIGGER = {"code": -2010, "msg": "Stop price would trigger immediately."}
TOO_MANY_REQUESTS = {"code": -1003, "msg": "Too many requests; current limit of IP(127.0.0.1) "
                                           "request weight per minute is 6000. Please use "
                                           "WebSocket Streams for live updates to avoid polling "
                                           "the API."}


def _symbol_info(symbol: str, m: dict) -> dict:
    return {
        "symbol": symbol, "status": "TRADING", "baseAsset": m["base"], "baseAssetPrecision": 8,
        "quoteAsset": m["quote"], "quotePrecision": 8, "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS", "STOP_LOSS_LIMIT",
                       "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True, "ocoAllowed": True, "quoteOrderQtyMarketAllowed": True,
        "isSpotTradingAllowed": True, "isMarginTradingAllowed": False,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": m["tick"], "maxPrice": "1000000.00000000",
             "tickSize": m["tick"]},
            {"filterType": "LOT_SIZE", "minQty": m["min_qty"], "maxQty": "9000.00000000",
             "stepSize": m["step"]},
            {"filterType": "NOTIONAL", "minNotional": m["min_notional"], "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [], "permissionSets": [["SPOT"]],
    }


class BinanceDouble:
    """Start with ``BinanceDouble()``; point ccxt at ``.url`` (or use ``ccxt_exchange_for``);
    ``close()`` when done. ``orders``: client order id -> Binance's order JSON (the latest with that
    id); ``placed``: every accepted order; ``requests``: (method, path, params) of every call."""

    def __init__(self, enforce_filters: bool = False):
        self.prices = {"BTCUSDT": 50_000.0, "ETHUSDT": 3_000.0}
        self.free = {"USDT": 10_000.0, "BTC": 0.0, "ETH": 0.0}
        self.locked = {"USDT": 0.0, "BTC": 0.0, "ETH": 0.0}
        self.enforce_filters = enforce_filters
        self.refused_keys: set[str] = set()  # API keys answered with -2015, as Binance does
        self.orders: dict[str, dict] = {}
        self.placed: list[dict] = []
        self.requests: list[tuple[str, str, dict]] = []
        self._failures: list[tuple[bool, str]] = []
        self._request_failures: list[tuple[str | None, str | None, str]] = []
        self.rate_limited_until = 0.0   # time.time() before which every call gets 429
        self.expire_market_orders = False  # True: no liquidity, market orders EXPIRE unfilled
        self.rate_limited_answers = 0
        self._next_id = 1000
        self._lock = threading.Lock()
        double = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _serve(self, method: str) -> None:
                parsed = urlparse(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                params = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
                params.update({k: v[-1] for k, v in parse_qs(body).items()})
                status, payload = double.handle(method, parsed.path, params,
                                                self.headers.get("X-MBX-APIKEY"))
                if status is None:  # drop the connection: the client sees a network error
                    self.close_connection = True
                    self.connection.close()
                    return
                data = b"Service Unavailable" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain" if payload is None
                                 else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self._serve("GET")

            def do_POST(self):
                self._serve("POST")

            def do_DELETE(self):
                self._serve("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,),
                                       daemon=True)  # a short poll: close() returns at once
        self.thread.start()

    # --- test controls ----------------------------------------------------------------------
    def set_price(self, symbol: str, price: float) -> None:
        """Move the market; resting stops and limits the new price reaches fill at it."""
        with self._lock:
            self.prices[symbol] = float(price)
            for order in list(self.orders.values()):
                if order["symbol"] == symbol and order["status"] in OPEN and self._reached(order):
                    self._release(order)
                    self._fill(order, float(price), int(time.time() * 1000))

    def fill_partly(self, client_order_id: str, quantity: float, then: str = "PARTIALLY_FILLED",
                    price: float | None = None) -> None:
        """Fill ``quantity`` more of a resting order at its price (or ``price``), as a market
        that trades only part of it; ``then`` is its status afterwards: PARTIALLY_FILLED (still
        working), EXPIRED or CANCELED (the rest given up, its balance released)."""
        with self._lock:
            order = self.orders[client_order_id]
            market = MARKETS[order["symbol"]]
            at = float(price if price is not None else order["price"] if float(order["price"])
                       else order["stopPrice"])
            done = float(order["executedQty"]) + quantity
            sign = 1 if order["side"] == "BUY" else -1
            held = quantity * float(order["price"]) if sign > 0 else quantity
            asset = market["quote"] if sign > 0 else market["base"]
            self.locked[asset] -= held   # the part filled no longer held, then paid from free
            self.free[asset] += held
            self.free[market["quote"]] -= sign * quantity * at
            self.free[market["base"]] = self.free.get(market["base"], 0.0) + sign * quantity
            order.update(status=then, executedQty=f"{done:.8f}", updateTime=int(time.time() * 1000),
                         cummulativeQuoteQty=f"{float(order['cummulativeQuoteQty']) + quantity * at:.8f}")
            if then != "PARTIALLY_FILLED":  # the rest is given up: what it held comes back
                rest = float(order["origQty"]) - done
                asset = market["quote"] if sign > 0 else market["base"]
                hold = rest * float(order["price"]) if sign > 0 else rest
                self.locked[asset] -= hold
                self.free[asset] += hold

    def cancel_by_hand(self, client_order_id: str) -> None:
        """Cancel a resting order from outside rulekit (the exchange's web page, an operator)."""
        with self._lock:
            order = self.orders[client_order_id]
            self._release(order)
            order.update(status="CANCELED", updateTime=int(time.time() * 1000))

    def set_balance(self, asset: str, free: float) -> None:
        with self._lock:
            self.free[asset] = float(free)
            self.locked.setdefault(asset, 0.0)

    @property
    def balances(self) -> dict[str, float]:
        """Free balances (what is locked in resting orders is not free)."""
        return dict(self.free)

    def fail_next(self, count: int, after_accept: bool = True, how: str = "drop") -> None:
        """The next ``count`` order placements fail. ``after_accept``: the order is recorded (and
        a market order filled) first, as when the answer is lost on the way back; otherwise it is
        lost on the way in. ``how`` is one of ``FAILURES``: a dropped connection, Binance's 503
        -1007 timeout, its -1006 "execution status unknown", or a bare 503."""
        if how not in FAILURES:
            raise ValueError(f"how must be one of {sorted(FAILURES)}")
        with self._lock:
            self._failures = [(after_accept, how)] * count

    def fail_requests(self, count: int, path: str | None = None, method: str | None = None,
                      how: str = "gateway_timeout") -> None:
        """The next ``count`` calls to ``path`` (any path when None) with ``method`` (any when
        None) fail as ``how`` (one of ``FAILURES``) before doing anything."""
        if how not in FAILURES:
            raise ValueError(f"how must be one of {sorted(FAILURES)}")
        with self._lock:
            self._request_failures = [(path, method, how)] * count

    def rate_limit(self, seconds: float) -> None:
        """For the next ``seconds`` every call is answered 429 -1003 "Too many requests", as
        Binance answers a client over its request weight (ccxt: RateLimitExceeded)."""
        with self._lock:
            self.rate_limited_until = time.time() + seconds

    def order_posts(self) -> int:
        return sum(1 for method, path, _ in self.requests
                   if (method, path) == ("POST", "/api/v3/order"))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the API ----------------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict,
               api_key: str | None = None) -> tuple[int | None, object]:
        with self._lock:
            self.requests.append((method, path, params))
            now = int(time.time() * 1000)
            if time.time() < self.rate_limited_until:
                self.rate_limited_answers += 1
                return 429, TOO_MANY_REQUESTS
            if self._request_failures:
                want_path, want_method, how = self._request_failures[0]
                if want_path in (None, path) and want_method in (None, method):
                    self._request_failures.pop(0)
                    return FAILURES[how] or (None, None)
            if api_key in self.refused_keys and path in PRIVATE:
                return 401, {"code": -2015, "msg": "Invalid API-key, IP, or permissions for "
                                                   "action."}
            if path == "/api/v3/ping":
                return 200, {}
            if path == "/api/v3/time":
                return 200, {"serverTime": now}
            if path == "/api/v3/exchangeInfo":
                return 200, {"timezone": "UTC", "serverTime": now, "rateLimits": [],
                             "exchangeFilters": [],
                             "symbols": [_symbol_info(s, m) for s, m in MARKETS.items()]}
            if path in ("/api/v3/ticker/24hr", "/api/v3/ticker/price",
                        "/api/v3/ticker/bookTicker"):
                return self._ticker(params)
            if path == "/api/v3/account":
                assets = sorted(set(self.free) | set(self.locked))
                return 200, {"makerCommission": 10, "takerCommission": 10, "canTrade": True,
                             "canWithdraw": True, "canDeposit": True, "updateTime": now,
                             "accountType": "SPOT", "permissions": ["SPOT"],
                             "balances": [{"asset": a, "free": f"{self.free.get(a, 0.0):.8f}",
                                           "locked": f"{self.locked.get(a, 0.0):.8f}"}
                                          for a in assets]}
            if path == "/api/v3/openOrders":
                symbol = params.get("symbol")
                return 200, [self._view(o) for o in self.orders.values() if o["status"] in OPEN
                             and (symbol is None or o["symbol"] == symbol)]
            if path == "/api/v3/order":
                if method == "POST":
                    return self._place(params, now)
                return self._query_or_cancel(method, params)
            return 404, {"code": -1, "msg": f"the double does not serve {method} {path}"}

    def _ticker(self, params: dict):
        names = json.loads(params["symbols"]) if "symbols" in params else None
        if params.get("symbol"):
            names = [params["symbol"]]
        if any(n not in self.prices for n in names or ()):
            return 400, {"code": -1121, "msg": "Invalid symbol."}

        def one(s: str) -> dict:
            p = self.prices[s]
            return {"symbol": s, "price": f"{p:.2f}", "lastPrice": f"{p:.2f}",
                    "bidPrice": f"{p - 0.01:.2f}", "askPrice": f"{p + 0.01:.2f}",
                    "bidQty": "1.0", "askQty": "1.0", "openPrice": f"{p:.2f}",
                    "highPrice": f"{p:.2f}", "lowPrice": f"{p:.2f}", "volume": "1000",
                    "quoteVolume": f"{1000 * p:.2f}", "openTime": 0, "closeTime": 0,
                    "priceChange": "0", "priceChangePercent": "0", "weightedAvgPrice": f"{p:.2f}",
                    "count": 1}
        if params.get("symbol"):
            return 200, one(params["symbol"])
        return 200, [one(s) for s in (names or self.prices)]

    def _place(self, params: dict, now: int):
        after_accept, how = self._failures.pop(0) if self._failures else (None, None)
        if after_accept is False:
            return FAILURES[how] or (None, None)
        cid = params.get("newClientOrderId")
        if cid in self.orders and self.orders[cid]["status"] in OPEN:
            return 400, DUPLICATE
        symbol, side, kind = params["symbol"], params["side"], params["type"]
        if symbol not in MARKETS:
            return 400, {"code": -1121, "msg": "Invalid symbol."}
        market, price = MARKETS[symbol], self.prices[symbol]
        quantity = Decimal(params["quantity"])
        if self.enforce_filters:
            refusal = self._filters(market, quantity, Decimal(str(price)))
            if refusal:
                return 400, refusal
        self._next_id += 1
        order = {"symbol": symbol, "orderId": self._next_id, "orderListId": -1,
                 "clientOrderId": cid, "transactTime": now, "time": now, "updateTime": now,
                 "price": params.get("price", "0.00000000"), "origQty": params["quantity"],
                 "executedQty": "0.00000000", "cummulativeQuoteQty": "0.00000000",
                 "status": "NEW", "timeInForce": params.get("timeInForce", "GTC"), "type": kind,
                 "side": side, "stopPrice": params.get("stopPrice", "0.00000000"),
                 "isWorking": kind != "STOP_LOSS", "workingTime": now, "fills": [],
                 "selfTradePreventionMode": "EXPIRE_MAKER"}
        if kind == "MARKET":
            if not self._can_pay(market, side, float(quantity), price):
                return 400, INSUFFICIENT
            if self.expire_market_orders:
                order["status"] = "EXPIRED"
            else:
                self._fill(order, price, now)
        else:
            if kind == "STOP_LOSS" and self._reached(order):
                return 400, STOP_WOULD_TRIGGER
            hold = float(quantity) * float(order["price"]) if side == "BUY" else float(quantity)
            asset = market["quote"] if side == "BUY" else market["base"]
            if hold > self.free.get(asset, 0.0) + 1e-12:
                return 400, INSUFFICIENT
            self.free[asset] -= hold
            self.locked[asset] = self.locked.get(asset, 0.0) + hold
        self.orders[cid] = order
        self.placed.append(order)
        if after_accept:  # accepted, but the answer is lost
            return FAILURES[how] or (None, None)
        return 200, order

    def _query_or_cancel(self, method: str, params: dict):
        cid = params.get("origClientOrderId")
        if cid is not None:
            order = self.orders.get(cid)
        else:
            order = next((o for o in self.placed if str(o["orderId"]) == params.get("orderId")),
                         None)
        if method == "GET":
            return (400, NO_ORDER) if order is None else (200, self._view(order))
        if order is None or order["status"] not in OPEN:
            return 400, UNKNOWN_ORDER
        self._release(order)
        order.update(status="CANCELED", updateTime=int(time.time() * 1000))
        answer = {k: order[k] for k in ("symbol", "orderId", "orderListId", "transactTime",
                                        "price", "origQty", "executedQty", "cummulativeQuoteQty",
                                        "status", "timeInForce", "type", "side", "stopPrice")}
        # Binance: clientOrderId is the cancel request's own id, the order's is origClientOrderId
        answer.update(origClientOrderId=order["clientOrderId"],
                      clientOrderId=f"cancel-{order['orderId']}",
                      transactTime=order["updateTime"])
        return 200, answer

    # --- inside -----------------------------------------------------------------------------
    @staticmethod
    def _view(order: dict) -> dict:
        """An order as GET /order and openOrders show it: no fills, no transactTime."""
        return {k: v for k, v in order.items() if k not in ("fills", "transactTime")}

    @staticmethod
    def _filters(market: dict, quantity: Decimal, price: Decimal) -> dict | None:
        step, min_qty = Decimal(market["step"]), Decimal(market["min_qty"])
        if quantity < min_qty or quantity % step:
            return {"code": -1013, "msg": "Filter failure: LOT_SIZE"}
        if quantity * price < Decimal(market["min_notional"]):
            return {"code": -1013, "msg": "Filter failure: NOTIONAL"}
        return None

    def _can_pay(self, market: dict, side: str, quantity: float, price: float) -> bool:
        if side == "BUY":
            return quantity * price <= self.free.get(market["quote"], 0.0) + 1e-9
        return quantity <= self.free.get(market["base"], 0.0) + 1e-12

    def _reached(self, order: dict) -> bool:
        price = self.prices[order["symbol"]]
        if order["type"] == "STOP_LOSS":
            stop = float(order["stopPrice"])
            return price <= stop if order["side"] == "SELL" else price >= stop
        if order["type"] == "LIMIT":
            limit = float(order["price"])
            return price <= limit if order["side"] == "BUY" else price >= limit
        return False

    def _release(self, order: dict) -> None:
        """Give back what a resting order held."""
        market = MARKETS[order["symbol"]]
        quantity = float(order["origQty"]) - float(order["executedQty"])
        if order["side"] == "BUY":
            asset, hold = market["quote"], quantity * float(order["price"])
        else:
            asset, hold = market["base"], quantity
        self.locked[asset] -= hold
        self.free[asset] += hold

    def _fill(self, order: dict, price: float, now: int) -> None:
        market = MARKETS[order["symbol"]]
        quantity = float(order["origQty"]) - float(order["executedQty"])  # what is left
        sign = 1 if order["side"] == "BUY" else -1
        self.free[market["quote"]] -= sign * quantity * price
        self.free[market["base"]] = self.free.get(market["base"], 0.0) + sign * quantity
        quote = float(order["cummulativeQuoteQty"]) + quantity * price
        order.update(status="FILLED", executedQty=order["origQty"], updateTime=now,
                     cummulativeQuoteQty=f"{quote:.8f}",
                     fills=[{"price": f"{price:.2f}", "qty": f"{quantity:.8f}",
                             "commission": "0.00000000", "commissionAsset": market["quote"]}])


def ccxt_exchange_for(double: BinanceDouble, **options):
    """The built-in ccxt adapter opened through the plugin hook, every Binance URL pointed at
    ``double`` (so nothing can reach the internet), no rate limiting, a 1 ms backoff."""
    import ccxt

    from rulekit.app.plugin_manager import open_exchange, plugin_manager

    urls = {key: double.url + urlparse(url).path
            for key, url in ccxt.binance().urls["api"].items() if isinstance(url, str)}
    settings = {"apiKey": "test-key", "secret": "test-secret", "backoff_seconds": 0.001,
                "enableRateLimit": False, "urls": urls}
    settings.update(options)
    manager = plugin_manager(extra=["plugins.ccxt_exchange"])
    return open_exchange(manager, "ccxt:binance", settings)


@pytest.fixture
def localhost_only(monkeypatch):
    """Any name lookup other than 127.0.0.1 fails the test: nothing may reach a real exchange."""
    real = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in ("127.0.0.1", "localhost"):
            raise OSError(f"a test tried to reach {host}")
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", local_only)


@pytest.fixture
def binance_double():
    """A started double: BTCUSDT at 50,000, ETHUSDT at 3,000; 10,000 USDT and no BTC."""
    double = BinanceDouble()
    yield double
    double.close()
