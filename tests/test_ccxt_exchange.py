"""The ccxt adapter: the real ccxt client against a Binance double on 127.0.0.1 (no internet)."""
from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import ccxt
import pytest
from binance_double import ccxt_exchange_for
from conftest import golden

from plugins import ccxt_exchange
from plugins.ccxt_exchange import ExchangeError, rulekit_exchange, rules_of
from rulekit.errors import RulekitError
from rulekit.model import MarketRules, Signal
from rulekit.trading.orders import OrderRequest, OrderSide, OrderStatus, OrderType

ROOT = Path(__file__).resolve().parents[1]
BTC_RULES = MarketRules(amount_step=0.00001, min_notional=5.0, min_amount=0.00001, price_tick=0.01)


@pytest.fixture(autouse=True)
def no_internet(localhost_only):
    """Every test here: name lookups other than 127.0.0.1 fail (see binance_double)."""


@pytest.fixture
def exchange(binance_double):
    return ccxt_exchange_for(binance_double)


def request(amount, cid="c1", side=OrderSide.BUY, kind=OrderType.MARKET, price=None,
            reduce_only=False, symbol="BTCUSDT"):
    return OrderRequest(cid, symbol, side, kind, amount, price, reduce_only)


def posts(double) -> list[dict]:
    return [params for method, path, params in double.requests
            if (method, path) == ("POST", "/api/v3/order")]


# --- market rules ---------------------------------------------------------------------------
def test_btc_usdt_rules_come_from_binance_filters_by_either_name(exchange):
    assert exchange.market_rules("BTCUSDT") == BTC_RULES
    assert exchange.market_rules("BTC/USDT") == BTC_RULES
    assert exchange.market_rules("ETHUSDT").amount_step == 0.0001


def test_an_unknown_symbol_has_no_rules_and_no_orders(exchange, binance_double):
    assert exchange.market_rules("NOPEUSDT") is None
    assert exchange.place_order(request(1, symbol="NOPEUSDT")).reason == "unknown_symbol"
    assert exchange.fetch_order("c1", "NOPEUSDT") is None
    assert exchange.open_orders("NOPEUSDT") == []
    assert posts(binance_double) == []


def test_the_golden_decision_with_the_real_btc_usdt_rules(exchange, engine):
    engine.set_market_rules({"BTCUSDT": exchange.market_rules("BTCUSDT")})
    decision = engine.decide(Signal.from_record(golden()), equity=10_000)
    # 100 / 2,250 = 0.0444444... rounded down to the 0.00001 step: 0.04444 (not 0.0444 as with
    # the policy's own 0.0001 step); notional 2,222; loss at the stop 0.04444 x 2,250 = 99.99
    assert decision.approved and decision.quantity == 0.04444
    assert decision.notional == pytest.approx(2_222.0)
    assert decision.risk_at_stop == pytest.approx(99.99)


def test_decimal_places_precision_becomes_a_step():
    market = {"symbol": "X/USDT", "precision": {"amount": 5, "price": 2},
              "limits": {"amount": {"min": 0.001}, "cost": {"min": None}}}
    assert rules_of(market, ccxt.DECIMAL_PLACES, ccxt) == MarketRules(
        amount_step=0.00001, min_notional=0.0, min_amount=0.001, price_tick=0.01)
    assert rules_of({"precision": {"amount": 0}}, ccxt.DECIMAL_PLACES, ccxt).amount_step == 1.0
    assert rules_of({"precision": {"amount": 0.025}}, ccxt.TICK_SIZE, ccxt).amount_step == 0.025


def test_significant_digits_precision_is_refused():
    with pytest.raises(ExchangeError, match="significant digits"):
        rules_of({"symbol": "X/USDT", "precision": {"amount": 4}}, ccxt.SIGNIFICANT_DIGITS, ccxt)


# --- orders, balances, equity ---------------------------------------------------------------
def test_a_market_buy_fills_at_the_price_and_moves_balances_and_equity(exchange, binance_double):
    order = exchange.place_order(request(0.0444))
    assert order.status is OrderStatus.FILLED and order.type is OrderType.MARKET
    assert (order.client_order_id, order.symbol, order.side) == ("c1", "BTCUSDT", OrderSide.BUY)
    assert (order.amount, order.filled, order.average_price) == (0.0444, 0.0444, 50_000)
    assert order.exchange_order_id == str(binance_double.orders["c1"]["orderId"])
    assert order.timestamp == pytest.approx(binance_double.orders["c1"]["time"] / 1000)
    assert posts(binance_double)[0]["newClientOrderId"] == "c1"
    balances = exchange.balances()
    assert balances["USDT"] == pytest.approx(10_000 - 0.0444 * 50_000)     # 7,780
    assert balances["BTC"] == pytest.approx(0.0444)
    assert exchange.equity() == pytest.approx(10_000)                         # price unchanged
    binance_double.set_price("BTCUSDT", 51_000)
    assert exchange.equity() == pytest.approx(7_780 + 0.0444 * 51_000)        # 10,044.40


def test_equity_marks_every_asset_that_has_a_quote_market(exchange, binance_double):
    binance_double.set_balance("ETH", 2)
    binance_double.set_balance("XYZ", 5)   # no XYZ/USDT market: cannot be valued, left out
    assert exchange.equity() == pytest.approx(10_000 + 2 * 3_000)
    assert exchange.balances() == {"USDT": 10_000, "ETH": 2, "XYZ": 5}   # free, non-zero only


def test_amounts_are_rounded_down_to_the_step_never_up(exchange, binance_double):
    placed = exchange.place_order(request(0.000199))                    # 9.95 USDT
    assert placed.status is OrderStatus.FILLED and placed.amount == 0.00019
    close = exchange.place_order(request(0.000019, "c2", OrderSide.SELL, reduce_only=True))
    assert close.status is OrderStatus.FILLED and close.amount == 0.00001
    assert [p["quantity"] for p in posts(binance_double)] == ["0.00019", "0.00001"]


def test_an_entry_below_the_minimum_never_reaches_the_exchange(exchange, binance_double):
    tiny = exchange.place_order(request(0.0000099))              # rounds down to 0
    small = exchange.place_order(request(0.00009, "c2"))         # 4.50 USDT < 5
    assert tiny.status is small.status is OrderStatus.REJECTED
    assert (tiny.reason, small.reason) == ("below_min_notional", "below_min_notional")
    assert posts(binance_double) == []
    exactly = exchange.place_order(request(0.0001, "c3"))        # 5.00 USDT: the minimum itself
    assert exactly.status is OrderStatus.FILLED


def test_a_reduce_only_close_below_min_notional_is_still_placed(exchange, binance_double):
    exchange.place_order(request(0.0002))                                    # 10 USDT
    close = exchange.place_order(request(0.00009, "close", OrderSide.SELL, reduce_only=True))
    assert close.status is OrderStatus.FILLED and close.amount == 0.00009   # 4.50 USDT
    assert "reduceOnly" not in posts(binance_double)[-1]                    # spot has no such flag
    nothing = exchange.place_order(request(0.000009, "zero", OrderSide.SELL, reduce_only=True))
    assert (nothing.status, nothing.reason) == (OrderStatus.REJECTED, "invalid_order")


def test_binance_refusing_a_dust_close_is_a_rejection_not_an_exception(binance_double):
    binance_double.enforce_filters = True       # real Binance applies NOTIONAL to market orders
    exchange = ccxt_exchange_for(binance_double)
    exchange.place_order(request(0.0002))
    close = exchange.place_order(request(0.00009, "close", OrderSide.SELL, reduce_only=True))
    assert (close.status, close.reason) == (OrderStatus.REJECTED, "invalid_order")


def test_a_short_balance_is_rejected_as_insufficient_funds(exchange, binance_double):
    binance_double.set_balance("USDT", 100)
    order = exchange.place_order(request(0.0444))                  # 2,220 USDT
    assert (order.status, order.reason) == (OrderStatus.REJECTED, "insufficient_funds")
    assert binance_double.placed == []


def test_a_stop_or_limit_without_a_price_is_an_invalid_order(exchange, binance_double):
    for kind in (OrderType.STOP, OrderType.LIMIT):
        order = exchange.place_order(request(0.0444, kind=kind))
        assert (order.status, order.reason) == (OrderStatus.REJECTED, "invalid_order")
    assert posts(binance_double) == []


# --- idempotence and retries ----------------------------------------------------------------
def test_the_same_client_order_id_twice_is_one_order_and_the_same_order_back(exchange,
                                                                             binance_double):
    first = exchange.place_order(request(0.0444))
    again = exchange.place_order(request(0.0444))
    assert again == first
    assert len(binance_double.placed) == 1 and len(posts(binance_double)) == 1
    assert exchange.balances()["USDT"] == pytest.approx(7_780)


def test_a_duplicate_refused_by_the_exchange_returns_the_existing_order(exchange, binance_double,
                                                                         monkeypatch):
    stop = exchange.place_order(request(0.0444, "s1", OrderSide.BUY, OrderType.STOP, 52_000))
    monkeypatch.setattr(exchange, "fetch_order", lambda cid, symbol: None)  # the look-up missed it
    again = exchange.place_order(request(0.0444, "s1", OrderSide.BUY, OrderType.STOP, 52_000))
    assert again == stop and again.status is OrderStatus.OPEN
    assert len(posts(binance_double)) == 2 and len(binance_double.placed) == 1   # -2010 Duplicate


@pytest.mark.parametrize("how", ["drop", "timeout", "unknown", "unavailable", "gateway_timeout"])
def test_a_lost_answer_is_looked_up_not_placed_again(exchange, binance_double, how):
    binance_double.fail_next(1, after_accept=True, how=how)
    placed = exchange.place_order(request(0.0444))
    assert placed.status is OrderStatus.FILLED and placed.filled == 0.0444
    assert len(posts(binance_double)) == 1 and len(binance_double.placed) == 1
    assert binance_double.balances["BTC"] == pytest.approx(0.0444)


def test_no_order_is_sent_again_while_the_look_up_cannot_answer(exchange, binance_double,
                                                                monkeypatch):
    real, calls = exchange.client.fetch_order, []

    def flaky(*args):
        calls.append(args)
        if len(calls) == 2:    # 1: the check before sending; 2: the look-up after the lost answer
            raise ccxt.RequestTimeout("binance GET /api/v3/order")
        return real(*args)
    monkeypatch.setattr(exchange.client, "fetch_order", flaky)
    binance_double.fail_next(1, after_accept=True)
    placed = exchange.place_order(request(0.0444))
    assert placed.status is OrderStatus.FILLED and len(calls) == 3
    assert len(posts(binance_double)) == 1 and len(binance_double.placed) == 1


def test_a_request_lost_on_the_way_in_is_sent_again(exchange, binance_double):
    binance_double.fail_next(2, after_accept=False)
    placed = exchange.place_order(request(0.0444))
    assert placed.status is OrderStatus.FILLED
    assert len(posts(binance_double)) == 3 and len(binance_double.placed) == 1


def test_exhausted_retries_are_a_user_error_and_no_order(binance_double):
    exchange = ccxt_exchange_for(binance_double, retries=2)
    binance_double.fail_next(10, after_accept=False)
    with pytest.raises(ExchangeError, match="after 3 attempts.*it was not placed"):
        exchange.place_order(request(0.0444))
    assert len(posts(binance_double)) == 3 and binance_double.placed == []
    assert issubclass(ExchangeError, RulekitError)


def test_the_backoff_doubles_per_retry_and_is_capped(binance_double, monkeypatch):
    pauses = []
    monkeypatch.setattr(ccxt_exchange.time, "sleep", pauses.append)
    exchange = ccxt_exchange_for(binance_double, retries=6, backoff_seconds=1)
    binance_double.fail_next(10, after_accept=False)
    with pytest.raises(ExchangeError):
        exchange.place_order(request(0.0444))
    assert pauses == [1, 2, 4, 8, 8, 8, 8]     # before each retry, and before the last look-up


def test_a_read_is_retried_through_a_transient_outage(exchange, binance_double):
    exchange.market_rules("BTCUSDT")
    binance_double.fail_requests(2, "/api/v3/account", how="gateway_timeout")   # 504 twice
    assert exchange.balances()["USDT"] == 10_000
    accounts = [p for m, p, _ in binance_double.requests if p == "/api/v3/account"]
    assert len(accounts) == 3


def test_a_read_that_stays_unanswered_is_a_user_error(binance_double):
    exchange = ccxt_exchange_for(binance_double, retries=2)
    exchange.market_rules("BTCUSDT")
    binance_double.fail_requests(10, "/api/v3/account", how="drop")
    with pytest.raises(RulekitError, match="no answer after 3 attempts"):
        exchange.equity()


def test_a_stop_binance_refuses_is_an_invalid_order_with_its_message_logged(exchange,
                                                                            binance_double,
                                                                            caplog):
    exchange.place_order(request(0.0444))
    with caplog.at_level(logging.WARNING, logger="plugins.ccxt_exchange"):
        # a sell stop above the price (50,000) would trigger at once: -2010, which ccxt 4.5
        # raises as OrderImmediatelyFillable, an InvalidOrder
        stop = exchange.place_order(request(0.0444, "s1", OrderSide.SELL, OrderType.STOP,
                                            50_500, reduce_only=True))
    assert (stop.status, stop.reason) == (OrderStatus.REJECTED, "invalid_order")
    assert "Stop price would trigger immediately" in caplog.text
    assert "Stop price would trigger immediately" in stop.message   # kept for a person
    assert "s1" not in binance_double.orders


def test_a_refused_api_key_is_a_user_error(binance_double):
    binance_double.refused_keys.add("revoked")
    exchange = ccxt_exchange_for(binance_double, apiKey="revoked")
    with pytest.raises(RulekitError, match="exchange refused the API key"):
        exchange.balances()
    with pytest.raises(RulekitError, match="exchange refused the API key"):
        exchange.place_order(request(0.0444))


# --- lookups, stops, cancels ----------------------------------------------------------------
def test_an_unknown_client_order_id_is_not_found(exchange):
    assert exchange.fetch_order("never-placed", "BTCUSDT") is None
    assert exchange.cancel_order("never-placed", "BTCUSDT") is None


def test_a_stop_rests_in_open_orders_until_cancelled(exchange, binance_double):
    exchange.place_order(request(0.0444))
    stop = exchange.place_order(request(0.0444, "s1", OrderSide.SELL, OrderType.STOP, 47_750,
                                        reduce_only=True))
    assert (stop.status, stop.type, stop.price) == (OrderStatus.OPEN, OrderType.STOP, 47_750)
    sent = binance_double.orders["s1"]
    assert (sent["type"], float(sent["stopPrice"])) == ("STOP_LOSS", 47_750)
    assert [o.client_order_id for o in exchange.open_orders("BTCUSDT")] == ["s1"]
    assert [o.type for o in exchange.open_orders()] == [OrderType.STOP]
    assert "BTC" not in exchange.balances()               # held by the stop: not free
    assert exchange.equity() == pytest.approx(10_000)     # but still owned
    cancelled = exchange.cancel_order("s1", "BTCUSDT")
    assert (cancelled.status, cancelled.client_order_id) == (OrderStatus.CANCELLED, "s1")
    assert exchange.open_orders("BTCUSDT") == []
    assert exchange.cancel_order("s1", "BTCUSDT").status is OrderStatus.CANCELLED   # no error
    assert exchange.balances()["BTC"] == pytest.approx(0.0444)


def test_a_stop_fills_when_the_price_reaches_it(exchange, binance_double):
    exchange.place_order(request(0.0444))
    exchange.place_order(request(0.0444, "s1", OrderSide.SELL, OrderType.STOP, 47_750))
    binance_double.set_price("BTCUSDT", 47_700)
    filled = exchange.fetch_order("s1", "BTCUSDT")
    assert (filled.status, filled.filled, filled.type) == (OrderStatus.FILLED, 0.0444,
                                                           OrderType.STOP)
    assert exchange.cancel_order("s1", "BTCUSDT").status is OrderStatus.FILLED   # as it is


def test_a_limit_order_rests_at_its_price(exchange, binance_double):
    order = exchange.place_order(request(0.1, "l1", kind=OrderType.LIMIT, price=2_900,
                                         symbol="ETH/USDT"))
    assert (order.status, order.type, order.price, order.symbol) == (
        OrderStatus.OPEN, OrderType.LIMIT, 2_900, "ETHUSDT")
    assert posts(binance_double)[0]["type"] == "LIMIT"
    assert exchange.balances()["USDT"] == pytest.approx(10_000 - 290)


# --- opening the adapter --------------------------------------------------------------------
def test_sandbox_switches_ccxt_to_the_testnet(binance_double, monkeypatch):
    calls = []
    real = ccxt.binance.set_sandbox_mode
    monkeypatch.setattr(ccxt.binance, "set_sandbox_mode",
                        lambda self, on: (calls.append(on), real(self, on))[1])
    live = ccxt_exchange_for(binance_double)
    assert calls == [] and not live.client.options.get("sandboxMode")
    exchange = ccxt_exchange_for(binance_double, urls={}, sandbox=True)
    assert calls == [True]
    assert exchange.client.options["sandboxMode"] is True
    assert exchange.client.urls["api"]["public"].startswith("https://testnet.binance.vision")


def test_sandbox_urls_can_still_be_pointed_at_the_double(binance_double):
    exchange = ccxt_exchange_for(binance_double, sandbox=True)
    assert exchange.client.options["sandboxMode"] is True
    assert exchange.market_rules("BTCUSDT") == BTC_RULES


def test_the_plugin_serves_only_ccxt_names():
    for name in ("paper", "binance", "ccxtbinance", "candles.csv"):
        assert rulekit_exchange(name=name, options={}) is None
    with pytest.raises(ExchangeError, match="no exchange"):
        rulekit_exchange(name="ccxt:nosuchexchange", options={})


def test_loading_the_plugin_does_not_import_ccxt():
    code = "import sys, plugins.ccxt_exchange; sys.exit('ccxt' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_derivatives_positions_are_contracts_times_size_short_negative(binance_double,
                                                                       localhost_only):
    from binance_double import ccxt_exchange_for

    exchange = ccxt_exchange_for(binance_double)
    perpetual = {"symbol": "BTC/USDT:USDT", "id": "BTCUSDT", "base": "BTC", "contract": True,
                 "contractSize": 1.0}
    exchange.market = lambda symbol: perpetual if symbol == "BTCUSDT" else None
    asked = []

    def fetch_positions(symbols):
        asked.append(symbols)
        return [{"symbol": "BTC/USDT:USDT", "contracts": 0.02, "contractSize": 1.0,
                 "side": "short"},   # a hedge-mode account's two legs are summed
                {"symbol": "BTC/USDT:USDT", "contracts": 0.005, "contractSize": 1.0,
                 "side": "long"}]
    exchange.client.fetch_positions = fetch_positions
    assert exchange.positions_held(["BTCUSDT", "NOPEUSDT"]) == {
        "BTCUSDT": pytest.approx(-0.015), "NOPEUSDT": 0.0}
    assert asked == [["BTC/USDT:USDT"]]
