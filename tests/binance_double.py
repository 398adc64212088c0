"""A small HTTP double of Binance's spot REST API (v3), served on 127.0.0.1 by the tests themselves,
so the ccxt adapter is tested with the real ccxt client over a real socket.

It serves what ccxt's binance class calls for spot trading: exchangeInfo (BTCUSDT and ETHUSDT with
Binance's real filters), order (POST/GET/DELETE), openOrders, account, ticker. Market orders fill at
once at the double's price; stops and limits rest. Signatures are not checked. It can refuse a
duplicate client order id (Binance: -2010 "Duplicate order sent."), a short balance (-2010
"Account has insufficient balance for requested action."), and fail the next requests after or
before accepting them, to test retries.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

MARKETS = {
    "BTCUSDT": {"base": "BTC", "quote": "USDT", "step": "0.00001000", "min_qty": "0.00001000",
                "tick": "0.01000000", "min_notional": "5.00000000"},
    "ETHUSDT": {"base": "ETH", "quote": "USDT", "step": "0.00010000", "min_qty": "0.00010000",
                "tick": "0.01000000", "min_notional": "5.00000000"},
}


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
    """Start with ``BinanceDouble()``; point ccxt at ``.url``; ``close()`` when done."""

    def __init__(self):
        self.prices = {"BTCUSDT": 50_000.0, "ETHUSDT": 3_000.0}
        self.balances = {"USDT": 10_000.0, "BTC": 0.0, "ETH": 0.0}
        self.orders: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []
        self._fail = 0
        self._fail_after_accept = True
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
                status, payload = double.handle(method, parsed.path, params)
                if status is None:  # drop the connection: the client sees a network error
                    self.close_connection = True
                    self.connection.close()
                    return
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
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
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    # --- test controls ----------------------------------------------------------------------
    def set_price(self, symbol: str, price: float) -> None:
        self.prices[symbol] = float(price)

    def set_balance(self, asset: str, free: float) -> None:
        self.balances[asset] = float(free)

    def fail_next(self, count: int, after_accept: bool = True) -> None:
        """The next ``count`` order placements fail as a dropped connection; ``after_accept``: the
        order was recorded (and filled) first, as when a response is lost on the way back."""
        self._fail, self._fail_after_accept = count, after_accept

    def order_posts(self) -> int:
        return sum(1 for method, path, _ in self.requests if (method, path) == ("POST", "/api/v3/order"))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # --- the API ----------------------------------------------------------------------------
    def handle(self, method: str, path: str, params: dict) -> tuple[int | None, object]:
        with self._lock:
            self.requests.append((method, path, params))
            now = int(time.time() * 1000)
            if path in ("/api/v3/ping",):
                return 200, {}
            if path == "/api/v3/time":
                return 200, {"serverTime": now}
            if path == "/api/v3/exchangeInfo":
                return 200, {"timezone": "UTC", "serverTime": now, "rateLimits": [],
                             "exchangeFilters": [],
                             "symbols": [_symbol_info(s, m) for s, m in MARKETS.items()]}
            if path in ("/api/v3/ticker/24hr", "/api/v3/ticker/price", "/api/v3/ticker/bookTicker"):
                return 200, self._ticker(params.get("symbol"))
            if path == "/api/v3/account":
                return 200, {"canTrade": True, "canWithdraw": True, "canDeposit": True,
                             "updateTime": now, "accountType": "SPOT", "permissions": ["SPOT"],
                             "balances": [{"asset": a, "free": f"{v:.8f}", "locked": "0.00000000"}
                                          for a, v in self.balances.items()]}
            if path == "/api/v3/openOrders":
                symbol = params.get("symbol")
                return 200, [o for o in self.orders.values() if o["status"] == "NEW"
                             and (symbol is None or o["symbol"] == symbol)]
            if path == "/api/v3/order":
                return self._order(method, params, now)
            return 404, {"code": -1, "msg": f"the double does not serve {method} {path}"}

    def _ticker(self, symbol: str | None):
        def one(s: str) -> dict:
            p = self.prices[s]
            return {"symbol": s, "price": f"{p:.2f}", "lastPrice": f"{p:.2f}",
                    "bidPrice": f"{p - 0.01:.2f}", "askPrice": f"{p + 0.01:.2f}",
                    "bidQty": "1.0", "askQty": "1.0", "openPrice": f"{p:.2f}",
                    "highPrice": f"{p:.2f}", "lowPrice": f"{p:.2f}", "volume": "1000",
                    "quoteVolume": f"{1000 * p:.2f}", "openTime": 0, "closeTime": 0,
                    "priceChange": "0", "priceChangePercent": "0", "weightedAvgPrice": f"{p:.2f}",
                    "count": 1}
        return one(symbol) if symbol else [one(s) for s in self.prices]

    def _order(self, method: str, params: dict, now: int):
        if method == "GET" or method == "DELETE":
            order = self._find(params)
            if order is None:
                return 400, {"code": -2013, "msg": "Order does not exist."}
            if method == "DELETE":
                if order["status"] != "NEW":
                    return 400, {"code": -2011, "msg": "Unknown order sent."}
                order["status"] = "CANCELED"
            return 200, order
        fail = self._fail > 0
        if fail:
            self._fail -= 1
            if not self._fail_after_accept:
                return None, None
        cid = params.get("newClientOrderId")
        if cid in self.orders:
            return 400, {"code": -2010, "msg": "Duplicate order sent."}
        symbol, side, kind = params["symbol"], params["side"], params["type"]
        quantity = float(params["quantity"])
        market = MARKETS[symbol]
        price = self.prices[symbol]
        if kind == "MARKET":
            cost = quantity * price
            if side == "BUY" and cost > self.balances[market["quote"]] + 1e-9:
                return 400, {"code": -2010,
                             "msg": "Account has insufficient balance for requested action."}
            if side == "SELL" and quantity > self.balances[market["base"]] + 1e-12:
                return 400, {"code": -2010,
                             "msg": "Account has insufficient balance for requested action."}
        self._next_id += 1
        order = {"symbol": symbol, "orderId": self._next_id, "orderListId": -1,
                 "clientOrderId": cid, "transactTime": now, "time": now, "updateTime": now,
                 "price": params.get("price", "0.00000000"), "origQty": params["quantity"],
                 "executedQty": "0.00000000", "cummulativeQuoteQty": "0.00000000",
                 "status": "NEW", "timeInForce": params.get("timeInForce", "GTC"), "type": kind,
                 "side": side, "stopPrice": params.get("stopPrice", "0.00000000"),
                 "isWorking": True, "workingTime": now, "fills": []}
        if kind == "MARKET":
            sign = 1 if side == "BUY" else -1
            self.balances[market["quote"]] -= sign * quantity * price
            self.balances[market["base"]] += sign * quantity
            order.update(status="FILLED", executedQty=params["quantity"],
                         cummulativeQuoteQty=f"{quantity * price:.8f}",
                         fills=[{"price": f"{price:.2f}", "qty": params["quantity"],
                                 "commission": "0.00000000", "commissionAsset": market["quote"]}])
        self.orders[cid] = order
        if fail:  # accepted, but the answer is lost
            return None, None
        return 200, order

    def _find(self, params: dict) -> dict | None:
        cid = params.get("origClientOrderId")
        if cid is not None:
            return self.orders.get(cid)
        order_id = params.get("orderId")
        return next((o for o in self.orders.values() if str(o["orderId"]) == order_id), None)


def ccxt_exchange_for(double: BinanceDouble, **options):
    """The built-in ccxt adapter, opened through the plugin hook, talking to ``double``."""
    from rulekit.plugin_manager import open_exchange, plugin_manager

    base = double.url + "/api/v3"
    settings = {"apiKey": "test-key", "secret": "test-secret", "backoff_seconds": 0.001,
                "urls": {"public": base, "private": base}}
    settings.update(options)
    return open_exchange(plugin_manager(), "ccxt:binance", settings)
