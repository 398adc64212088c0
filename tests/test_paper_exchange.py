"""The paper exchange's fills, worked by hand; they follow rulekit.trading.fills like the lifecycle."""
from __future__ import annotations

import pytest

from plugins.paper_exchange import PaperExchange
from rulekit.trading.orders import OrderRequest, OrderSide, OrderStatus, OrderType

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


# --- opening, placing ------------------------------------------------------------------------
def test_the_hook_serves_paper_with_its_options():
    from rulekit.app.plugin_manager import open_exchange, plugin_manager
    from rulekit.model import MarketRules

    manager = plugin_manager(extra=["plugins.paper_exchange", "plugins.ccxt_exchange"])
    rules = MarketRules(amount_step=0.01, min_notional=1.0, min_amount=0.01, price_tick=0.001)
    exchange = open_exchange(manager, "paper", {"equity": 500, "quote": "USDC",
                                                "markets": {"ABCUSDC": rules}})
    assert isinstance(exchange, PaperExchange)
    assert exchange.balances() == {"USDC": 500} and exchange.equity() == 500
    assert exchange.market_rules("ABCUSDC") == rules and exchange.market_rules("BTCUSDT") is None
    default = open_exchange(manager, "paper", {})
    assert default.equity() == 10_000 and default.market_rules("BTCUSDT").amount_step == 0.00001


def test_orders_are_numbered_and_a_client_order_id_is_placed_once():
    exchange = PaperExchange()
    long_position(exchange)                                       # order "in" is paper-1
    again = exchange.place_order(order("in", OrderSide.BUY, OrderType.MARKET, 0.0444))
    assert (again.status, again.exchange_order_id) == (OrderStatus.FILLED, "paper-1")
    exchange.on_bar("BTCUSDT", T0 + 600, 50_000, 50_000, 50_000, 50_000)
    assert exchange.positions == {"BTCUSDT": pytest.approx(0.0444)}   # not bought twice
    stop = exchange.place_order(order("stop", OrderSide.SELL, OrderType.STOP, 0.0444, 47_750, True))
    assert stop.exchange_order_id == "paper-2"


def test_what_cannot_be_placed_is_rejected_with_a_reason():
    exchange = PaperExchange()
    assert exchange.place_order(order("early", OrderSide.BUY, OrderType.MARKET, 0.01)).reason \
        == "no_price"                                              # no bar seen yet
    exchange.on_bar("BTCUSDT", T0, 50_000, 50_000, 50_000, 50_000)
    cases = {
        "unknown_symbol": OrderRequest("a", "NOPEUSDT", OrderSide.BUY, OrderType.MARKET, 1.0),
        "invalid_order": order("b", OrderSide.BUY, OrderType.MARKET, 0),
        "below_min_notional": order("c", OrderSide.BUY, OrderType.MARKET, 0.00009),  # 4.50 < 5
        "insufficient_funds": order("d", OrderSide.BUY, OrderType.MARKET, 0.2001),   # 10,005
    }
    for reason, request in cases.items():
        placed = exchange.place_order(request)
        assert (placed.status, placed.reason) == (OrderStatus.REJECTED, reason), reason
    stop_without_price = order("e", OrderSide.SELL, OrderType.STOP, 0.01)
    assert exchange.place_order(stop_without_price).reason == "invalid_order"
    assert exchange.open_orders() == []


def test_entries_waiting_for_their_fill_and_fees_count_against_the_cash():
    exchange = PaperExchange()
    exchange.on_bar("BTCUSDT", T0, 50_000, 50_000, 50_000, 50_000)
    assert exchange.place_order(order("a", OrderSide.BUY, OrderType.MARKET, 0.15)).status \
        is OrderStatus.OPEN                                        # 7,500
    # 7,500 waiting + 3,000 = 10,500 > 10,000
    assert exchange.place_order(order("b", OrderSide.BUY, OrderType.MARKET, 0.06)).reason \
        == "insufficient_funds"
    # all of it: 0.2 x 50,000 = 10,000 fits without a fee, not with 0.1 % (10,010)
    assert PaperExchange().place_order(order("c", OrderSide.BUY, OrderType.LIMIT, 0.2, 50_000)) \
        .status is OrderStatus.OPEN
    assert PaperExchange(fee_pct=0.1).place_order(
        order("c", OrderSide.BUY, OrderType.LIMIT, 0.2, 50_000)).reason == "insufficient_funds"


def test_a_reduce_only_order_needs_a_position_and_is_clipped_to_it():
    exchange = PaperExchange()
    exchange.on_bar("BTCUSDT", T0, 50_000, 50_000, 50_000, 50_000)
    nothing = exchange.place_order(order("x", OrderSide.SELL, OrderType.MARKET, 0.01, None, True))
    assert (nothing.status, nothing.reason) == (OrderStatus.REJECTED, "invalid_order")
    long_position(exchange, 0.0444)
    grows = exchange.place_order(order("y", OrderSide.BUY, OrderType.MARKET, 0.01, None, True))
    assert grows.reason == "invalid_order"                         # a buy cannot reduce a long
    dust = exchange.place_order(order("z", OrderSide.SELL, OrderType.MARKET, 0.00001, None, True))
    assert dust.status is OrderStatus.OPEN                         # 0.50 USDT: never blocked
    too_much = exchange.place_order(order("w", OrderSide.SELL, OrderType.STOP, 1.0, 47_750, True))
    assert too_much.status is OrderStatus.OPEN and too_much.amount == pytest.approx(0.0444)
    exchange.on_bar("BTCUSDT", T0 + 600, 48_000, 48_000, 47_000, 47_500)
    # the dust close fills at the open (48,000), the stop takes the other 0.04439 at 47,750
    assert exchange.fetch_order("z", "BTCUSDT").average_price == 48_000
    assert exchange.fetch_order("w", "BTCUSDT").filled == pytest.approx(0.04439)
    assert exchange.positions == {}


# --- more fills ------------------------------------------------------------------------------
def test_a_stop_fill_carries_the_slippage():
    exchange = PaperExchange(slippage_bps=10)
    long_position(exchange)                                         # bought at 50,050
    exchange.place_order(order("stop", OrderSide.SELL, OrderType.STOP, 0.0444, 47_750, True))
    exchange.on_bar("BTCUSDT", T0 + 600, 49_000, 49_100, 47_000, 47_500)
    # a sell stop at 47,750 less 10 bps: 47,750 x 0.999 = 47,702.25
    assert exchange.fetch_order("stop", "BTCUSDT").average_price == pytest.approx(47_702.25)
    # 0.0444 x (47,702.25 - 50,050) = -104.2401
    assert exchange.equity() == pytest.approx(10_000 - 104.2401)


def test_a_short_stop_gapped_through_fills_at_the_open():
    exchange = PaperExchange()
    exchange.on_bar("BTCUSDT", T0, 50_000, 50_000, 50_000, 50_000)
    exchange.place_order(order("in", OrderSide.SELL, OrderType.MARKET, 0.0444))
    exchange.on_bar("BTCUSDT", T0 + 300, 50_000, 50_000, 50_000, 50_000)
    exchange.place_order(order("stop", OrderSide.BUY, OrderType.STOP, 0.0444, 52_250, True))
    exchange.on_bar("BTCUSDT", T0 + 600, 53_000, 53_500, 52_800, 53_200)
    # the buy stop at 52,250 is gapped: the market opened at 53,000 and never traded lower
    assert exchange.fetch_order("stop", "BTCUSDT").average_price == 53_000
    # 0.0444 x (50,000 - 53,000) = -133.20
    assert exchange.equity() == pytest.approx(10_000 - 133.2) and exchange.positions == {}


def test_a_limit_fills_at_its_price_without_slippage():
    exchange = PaperExchange(slippage_bps=10)                       # no slippage on a limit
    long_position(exchange)                                         # bought at 50,050
    exchange.place_order(order("tp", OrderSide.SELL, OrderType.LIMIT, 0.0444, 55_625, True))
    exchange.on_bar("BTCUSDT", T0 + 600, 55_000, 55_700, 54_900, 55_600)
    assert exchange.fetch_order("tp", "BTCUSDT").average_price == 55_625
    # 0.0444 x (55,625 - 50,050) = 247.53
    assert exchange.equity() == pytest.approx(10_000 + 247.53)


def test_a_limit_gapped_through_fills_at_the_open_without_slippage():
    exchange = PaperExchange(slippage_bps=10)
    long_position(exchange)                                         # bought at 50,050
    exchange.place_order(order("tp", OrderSide.SELL, OrderType.LIMIT, 0.0444, 55_625, True))
    exchange.on_bar("BTCUSDT", T0 + 600, 56_000, 56_500, 55_900, 56_200)
    # the first trade after the gap, at 56,000, is better than the limit: it fills there
    assert exchange.fetch_order("tp", "BTCUSDT").average_price == 56_000
    # 0.0444 x (56,000 - 50,050) = 264.18
    assert exchange.equity() == pytest.approx(10_000 + 264.18)


def test_a_buy_limit_gapped_through_fills_at_the_open():
    exchange = PaperExchange()
    exchange.on_bar("BTCUSDT", T0, 50_000, 50_000, 50_000, 50_000)
    exchange.place_order(order("in", OrderSide.SELL, OrderType.MARKET, 0.0444))
    exchange.on_bar("BTCUSDT", T0 + 300, 50_000, 50_000, 50_000, 50_000)
    exchange.place_order(order("tp", OrderSide.BUY, OrderType.LIMIT, 0.0444, 44_375, True))
    exchange.on_bar("BTCUSDT", T0 + 600, 44_000, 44_300, 43_800, 44_100)
    assert exchange.fetch_order("tp", "BTCUSDT").average_price == 44_000
    assert exchange.equity() == pytest.approx(10_000 + 266.4)       # 0.0444 x 6,000


def test_a_bar_that_reaches_neither_leaves_the_orders_open_and_marks_at_the_close():
    exchange = PaperExchange()
    long_position(exchange)
    exchange.place_order(order("stop", OrderSide.SELL, OrderType.STOP, 0.0444, 47_750, True))
    exchange.place_order(order("tp", OrderSide.SELL, OrderType.LIMIT, 0.0444, 55_625, True))
    assert exchange.on_bar("BTCUSDT", T0 + 600, 50_000, 51_000, 49_000, 50_500) == []
    assert {o.client_order_id for o in exchange.open_orders("BTCUSDT")} == {"stop", "tp"}
    # marked at the close: 0.0444 x 500 = 22.20
    assert exchange.last_price("BTCUSDT") == 50_500
    assert exchange.equity() == pytest.approx(10_022.2)
