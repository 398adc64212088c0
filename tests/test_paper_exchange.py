"""The paper exchange's fills, worked by hand; they follow rulekit.fills like the lifecycle."""
from __future__ import annotations

import pytest

from plugins.paper_exchange import PaperExchange
from rulekit.orders import OrderRequest, OrderSide, OrderStatus, OrderType

T0 = 1_704_067_200.0


def order(cid, side, kind, amount, price=None, reduce_only=False):
    return OrderRequest(cid, "BTCUSDT", side, kind, amount, price, reduce_only)


def long_position(exchange, amount=0.0444):
    exchange.on_bar("BTCUSDT", T0, 50_000, 50_000, 50_000, 50_000)
    exchange.place_order(order("in", OrderSide.BUY, OrderType.MARKET, amount))
    exchange.on_bar("BTCUSDT", T0 + 300, 50_000, 50_100, 49_900, 50_000)


def test_a_market_order_fills_at_the_next_open_plus_slippage():
    exchange = PaperExchange(slippage_bps=10)
    exchange.on_bar("BTCUSDT", T0, 49_000, 49_500, 48_900, 49_400)
    exchange.place_order(order("in", OrderSide.BUY, OrderType.MARKET, 0.0444))
    assert exchange.fetch_order("in", "BTCUSDT").status is OrderStatus.OPEN
    exchange.on_bar("BTCUSDT", T0 + 300, 50_000, 50_500, 49_800, 50_200)
    # 50,000 + 10 bps = 50,050
    assert exchange.fetch_order("in", "BTCUSDT").average_price == pytest.approx(50_050)


def test_a_stop_fills_at_its_price_or_at_the_open_on_a_gap():
    exchange = PaperExchange()
    long_position(exchange)
    exchange.place_order(order("stop", OrderSide.SELL, OrderType.STOP, 0.0444, 47_750, True))
    exchange.on_bar("BTCUSDT", T0 + 600, 49_000, 49_100, 47_000, 47_500)
    assert exchange.fetch_order("stop", "BTCUSDT").average_price == 47_750
    gapped = PaperExchange()
    long_position(gapped)
    gapped.place_order(order("stop", OrderSide.SELL, OrderType.STOP, 0.0444, 47_750, True))
    gapped.on_bar("BTCUSDT", T0 + 600, 46_000, 46_500, 45_000, 46_200)
    assert gapped.fetch_order("stop", "BTCUSDT").average_price == 46_000


def test_a_bar_through_stop_and_target_fills_the_stop_and_cancels_the_target():
    exchange = PaperExchange()
    long_position(exchange)
    exchange.place_order(order("stop", OrderSide.SELL, OrderType.STOP, 0.0444, 47_750, True))
    exchange.place_order(order("tp", OrderSide.SELL, OrderType.LIMIT, 0.0444, 55_625, True))
    exchange.on_bar("BTCUSDT", T0 + 600, 50_000, 56_000, 47_000, 52_000)
    assert exchange.fetch_order("stop", "BTCUSDT").status is OrderStatus.FILLED
    target = exchange.fetch_order("tp", "BTCUSDT")
    assert target.status is OrderStatus.CANCELLED and target.reason == "position_closed"
    # 0.0444 * (47,750 - 50,000) = -99.9
    assert exchange.equity() == pytest.approx(10_000 - 99.9)


def test_fees_come_out_of_cash_on_every_fill():
    exchange = PaperExchange(fee_pct=0.1)
    long_position(exchange)
    # buy 0.0444 at 50,000 = 2,220; fee 2.22
    assert exchange.cash == pytest.approx(10_000 - 2_220 - 2.22)
    exchange.place_order(order("out", OrderSide.SELL, OrderType.MARKET, 0.0444, reduce_only=True))
    exchange.on_bar("BTCUSDT", T0 + 600, 51_000, 51_000, 51_000, 51_000)
    # sell at 51,000 = 2,264.40, fee 2.2644: net +44.40 - 4.4844
    assert exchange.cash == pytest.approx(10_000 + 44.4 - 2.22 - 2.2644)
    assert exchange.positions == {}


def test_a_short_gains_when_the_price_falls():
    exchange = PaperExchange()
    exchange.on_bar("BTCUSDT", T0, 50_000, 50_000, 50_000, 50_000)
    exchange.place_order(order("in", OrderSide.SELL, OrderType.MARKET, 0.0444))
    exchange.on_bar("BTCUSDT", T0 + 300, 50_000, 50_000, 49_000, 49_000)
    assert exchange.positions["BTCUSDT"] == pytest.approx(-0.0444)
    assert exchange.equity() == pytest.approx(10_000 + 0.0444 * 1_000)


def test_the_same_orders_and_bars_give_the_same_fills():
    def run():
        exchange = PaperExchange(fee_pct=0.05, slippage_bps=3)
        long_position(exchange)
        exchange.place_order(order("stop", OrderSide.SELL, OrderType.STOP, 0.0444, 49_500, True))
        exchange.on_bar("BTCUSDT", T0 + 600, 49_900, 50_000, 49_000, 49_200)
        return exchange.cash, exchange.fetch_order("stop", "BTCUSDT")
    assert run() == run()


def test_an_amount_off_the_step_is_an_invalid_order():
    exchange = PaperExchange()
    exchange.on_bar("BTCUSDT", T0, 50_000, 50_000, 50_000, 50_000)
    rejected = exchange.place_order(order("x", OrderSide.BUY, OrderType.MARKET, 0.000015))
    assert rejected.status is OrderStatus.REJECTED and rejected.reason == "invalid_order"


def test_a_saved_paper_exchange_comes_back_with_its_positions_and_orders():
    import json

    exchange = PaperExchange(fee_pct=0.1, slippage_bps=2)
    long_position(exchange)
    exchange.place_order(order("stop", OrderSide.SELL, OrderType.STOP, 0.0444, 47_750, True))
    copy = PaperExchange.from_record(json.loads(json.dumps(exchange.as_record())))
    assert copy.as_record() == exchange.as_record()
    for venue in (exchange, copy):
        venue.on_bar("BTCUSDT", T0 + 600, 49_000, 49_100, 47_000, 47_500)
    assert copy.cash == exchange.cash and copy.positions == exchange.positions == {}
    assert copy.fetch_order("stop", "BTCUSDT") == exchange.fetch_order("stop", "BTCUSDT")
