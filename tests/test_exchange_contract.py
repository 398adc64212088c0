"""One contract every exchange adapter passes: the paper exchange and the ccxt adapter alike.

Each venue starts with 10,000 USDT, no position, BTCUSDT at 50,000; ``settle()`` lets a market
order fill (the paper exchange fills at the next bar's open, an exchange at once). The ccxt venue is
the real ccxt client against the Binance double on 127.0.0.1.
"""
from __future__ import annotations

import pytest

from rulekit.app.plugin_manager import open_exchange, plugin_manager
from rulekit.hookspecs import Exchange
from rulekit.trading.orders import OrderRequest, OrderSide, OrderStatus, OrderType

T0 = 1_704_067_200.0
PLUGINS = ["plugins.paper_exchange", "plugins.ccxt_exchange"]


class PaperVenue:
    def __init__(self):
        self.exchange = open_exchange(plugin_manager(extra=PLUGINS), "paper", {"equity": 10_000})
        self.at = T0
        self.settle()

    def settle(self):
        self.at += 300
        self.exchange.on_bar("BTCUSDT", self.at, 50_000, 50_000, 50_000, 50_000)

    def close(self):
        pass


class CcxtVenue:
    def __init__(self):
        from binance_double import BinanceDouble, ccxt_exchange_for

        self.double = BinanceDouble()
        self.double.set_price("BTCUSDT", 50_000)
        self.double.set_balance("USDT", 10_000)
        self.exchange = ccxt_exchange_for(self.double)

    def settle(self):
        pass

    def close(self):
        self.double.close()


VENUES = {"paper": PaperVenue, "ccxt": CcxtVenue}


@pytest.fixture(params=sorted(VENUES))
def venue(request, localhost_only):
    made = VENUES[request.param]()
    yield made
    made.close()


def buy(amount, cid="entry-1", kind=OrderType.MARKET, price=None, reduce_only=False,
        side=OrderSide.BUY):
    return OrderRequest(cid, "BTCUSDT", side, kind, amount, price, reduce_only)


def test_the_adapter_is_an_exchange(venue):
    assert isinstance(venue.exchange, Exchange)


def test_btcusdt_rules_are_the_real_markets(venue):
    rules = venue.exchange.market_rules("BTCUSDT")
    assert rules.amount_step == 0.00001 and rules.min_notional == 5.0
    assert venue.exchange.market_rules("NOPEUSDT") is None


def test_placing_the_same_client_order_id_twice_places_one_order(venue):
    first = venue.exchange.place_order(buy(0.0444))
    again = venue.exchange.place_order(buy(0.0444))
    venue.settle()
    assert again.client_order_id == first.client_order_id
    assert again.exchange_order_id == first.exchange_order_id
    assert venue.exchange.fetch_order("entry-1", "BTCUSDT").status is OrderStatus.FILLED
    assert venue.exchange.balances()["USDT"] == pytest.approx(10_000 - 0.0444 * 50_000)


def test_fetch_order_finds_a_placed_order_and_not_an_unknown_one(venue):
    placed = venue.exchange.place_order(buy(0.0444))
    venue.settle()
    found = venue.exchange.fetch_order("entry-1", "BTCUSDT")
    assert (found.client_order_id, found.exchange_order_id) == ("entry-1", placed.exchange_order_id)
    assert (found.symbol, found.side, found.type) == ("BTCUSDT", OrderSide.BUY, OrderType.MARKET)
    # filled at 50,000 (the next open for paper, at once on the exchange)
    assert (found.filled, found.average_price) == (0.0444, 50_000)
    assert venue.exchange.fetch_order("never-placed", "BTCUSDT") is None


def test_a_stop_rests_until_cancelled(venue):
    venue.exchange.place_order(buy(0.0444))
    venue.settle()
    stop = venue.exchange.place_order(buy(0.0444, "stop-1", OrderType.STOP, 47_750,
                                          reduce_only=True, side=OrderSide.SELL))
    assert stop.status is OrderStatus.OPEN
    assert [o.client_order_id for o in venue.exchange.open_orders("BTCUSDT")] == ["stop-1"]
    assert [(o.type, o.price) for o in venue.exchange.open_orders()] == [(OrderType.STOP, 47_750)]
    assert venue.exchange.cancel_order("stop-1", "BTCUSDT").status is OrderStatus.CANCELLED
    assert venue.exchange.open_orders("BTCUSDT") == []


def test_an_entry_below_min_notional_is_rejected_but_a_small_close_is_not(venue):
    tiny = venue.exchange.place_order(buy(0.00009, "tiny"))      # 4.50 USDT < 5
    assert tiny.status is OrderStatus.REJECTED and tiny.reason == "below_min_notional"
    venue.exchange.place_order(buy(0.0002, "entry-2"))          # 10 USDT
    venue.settle()
    close = venue.exchange.place_order(buy(0.00009, "close-1", reduce_only=True,
                                           side=OrderSide.SELL))
    venue.settle()
    assert close.status is not OrderStatus.REJECTED
    assert venue.exchange.fetch_order("close-1", "BTCUSDT").status is OrderStatus.FILLED


def test_an_entry_the_account_cannot_pay_for_is_rejected(venue):
    order = venue.exchange.place_order(buy(0.3))                 # 15,000 USDT > 10,000
    assert order.status is OrderStatus.REJECTED and order.reason == "insufficient_funds"
    venue.settle()
    assert venue.exchange.balances()["USDT"] == pytest.approx(10_000)
    assert venue.exchange.open_orders() == []


def test_equity_is_unchanged_by_a_fill_at_the_mark(venue):
    venue.exchange.place_order(buy(0.0444))
    venue.settle()
    # 0.0444 x 50,000 = 2,220 out of cash, 0.0444 BTC worth 2,220 in: equity still 10,000
    assert venue.exchange.equity() == pytest.approx(10_000)
    assert venue.exchange.balances()["USDT"] == pytest.approx(7_780)


def test_positions_held_are_the_signed_base_quantity_resting_orders_included(venue):
    assert venue.exchange.positions_held(["BTCUSDT", "ETHUSDT"]) == {"BTCUSDT": 0.0,
                                                                     "ETHUSDT": 0.0}
    venue.exchange.place_order(buy(0.0444))
    venue.settle()
    venue.exchange.place_order(buy(0.0444, "stop-1", OrderType.STOP, 47_750, reduce_only=True,
                                   side=OrderSide.SELL))   # a spot stop locks the coins it covers
    held = venue.exchange.positions_held(["BTCUSDT", "ETHUSDT"])
    assert held == {"BTCUSDT": pytest.approx(0.0444), "ETHUSDT": 0.0}
