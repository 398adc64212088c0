"""The ccxt adapter with the real ccxt client against a Binance double on 127.0.0.1."""
from __future__ import annotations

import ccxt
import pytest

from binance_double import BinanceDouble, ccxt_exchange_for
from conftest import golden
from plugins.ccxt_exchange import ExchangeError, rules_of, rulekit_exchange
from rulekit.errors import RulekitError
from rulekit.model import MarketRules, Signal
from rulekit.orders import OrderRequest, OrderSide, OrderStatus, OrderType


@pytest.fixture
def double():
    made = BinanceDouble()
    yield made
    made.close()


def market_buy(amount, cid="c1"):
    return OrderRequest(cid, "BTCUSDT", OrderSide.BUY, OrderType.MARKET, amount)


def test_btc_usdt_rules_come_from_binance_filters_by_either_name(double):
    exchange = ccxt_exchange_for(double)
    expected = MarketRules(amount_step=0.00001, min_notional=5.0, min_amount=0.00001,
                           price_tick=0.01)
    assert exchange.market_rules("BTCUSDT") == expected
    assert exchange.market_rules("BTC/USDT") == expected


def test_the_golden_decision_with_the_real_btc_usdt_rules(double, engine):
    engine.set_market_rules({"BTCUSDT": ccxt_exchange_for(double).market_rules("BTCUSDT")})
    decision = engine.decide(Signal.from_record(golden()), equity=10_000)
    # 100 / 2,250 = 0.0444444... rounded down to the 0.00001 step: 0.04444 (not 0.0444 as with
    # the policy's own 0.0001 step); notional 2,222; loss at the stop 0.04444 x 2,250 = 99.99
    assert decision.approved and decision.quantity == 0.04444
    assert decision.notional == pytest.approx(2_222.0)
    assert decision.risk_at_stop == pytest.approx(99.99)


def test_amounts_are_rounded_down_to_the_step_never_up(double):
    exchange = ccxt_exchange_for(double)
    placed = exchange.place_order(market_buy(0.000199))       # 9.95 USDT
    assert placed.status is OrderStatus.FILLED and placed.amount == 0.00019
    assert double.orders["c1"]["origQty"] in ("0.00019", "0.00019000")


def test_an_entry_rounded_below_the_minimum_never_reaches_the_exchange(double):
    exchange = ccxt_exchange_for(double)
    tiny = exchange.place_order(market_buy(0.0000099))        # rounds to 0
    small = exchange.place_order(market_buy(0.00009, "c2"))   # 4.50 USDT < 5
    assert (tiny.reason, small.reason) == ("below_min_notional", "below_min_notional")
    assert double.order_posts() == 0


def test_a_lost_answer_is_retried_without_a_second_order(double):
    exchange = ccxt_exchange_for(double)
    double.fail_next(1, after_accept=True)
    placed = exchange.place_order(market_buy(0.0444))
    assert placed.status is OrderStatus.FILLED and placed.filled == 0.0444
    assert double.order_posts() == 1 and len(double.orders) == 1
    assert double.balances["BTC"] == pytest.approx(0.0444)


def test_a_request_lost_before_the_exchange_is_sent_again(double):
    exchange = ccxt_exchange_for(double)
    double.fail_next(2, after_accept=False)
    placed = exchange.place_order(market_buy(0.0444))
    assert placed.status is OrderStatus.FILLED
    assert double.order_posts() == 3 and len(double.orders) == 1


def test_retries_are_bounded_and_end_in_a_user_error(double):
    exchange = ccxt_exchange_for(double, retries=2)
    double.fail_next(10, after_accept=False)
    with pytest.raises(ExchangeError, match="not placed after 3 attempts"):
        exchange.place_order(market_buy(0.0444))
    assert double.order_posts() == 3 and double.orders == {}
    assert issubclass(ExchangeError, RulekitError)


def test_a_short_balance_is_a_rejection_with_a_reason(double):
    double.set_balance("USDT", 100)
    order = ccxt_exchange_for(double).place_order(market_buy(0.0444))   # 2,220 USDT
    assert order.status is OrderStatus.REJECTED and order.reason == "insufficient_funds"


def test_a_stop_is_a_binance_stop_loss_order_with_its_trigger(double):
    exchange = ccxt_exchange_for(double)
    exchange.place_order(market_buy(0.0444))
    stop = exchange.place_order(OrderRequest("s1", "BTCUSDT", OrderSide.SELL, OrderType.STOP,
                                             0.0444, 47_750, reduce_only=True))
    assert stop.status is OrderStatus.OPEN and stop.type is OrderType.STOP
    sent = double.orders["s1"]
    assert (sent["type"], float(sent["stopPrice"])) == ("STOP_LOSS", 47_750)


def test_sandbox_switches_ccxt_to_the_testnet(double):
    exchange = ccxt_exchange_for(double, urls={}, sandbox=True)
    assert "testnet" in exchange.client.urls["api"]["public"]


def test_decimal_places_precision_becomes_a_step():
    market = {"symbol": "X/USDT", "precision": {"amount": 5, "price": 2},
              "limits": {"amount": {"min": 0.001}, "cost": {"min": 10}}}
    assert rules_of(market, ccxt.DECIMAL_PLACES, ccxt) == MarketRules(
        amount_step=0.00001, min_notional=10.0, min_amount=0.001, price_tick=0.01)
    with pytest.raises(ExchangeError):
        rules_of(market, ccxt.SIGNIFICANT_DIGITS, ccxt)


def test_the_plugin_serves_only_ccxt_names():
    assert rulekit_exchange(name="paper", options={}) is None
    with pytest.raises(ExchangeError, match="no exchange"):
        rulekit_exchange(name="ccxt:nosuchexchange", options={})
