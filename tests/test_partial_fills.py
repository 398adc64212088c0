"""Orders that fill only in part, on the Binance double and on the paper exchange: every fill is
booked, the position shrinks by it, and the stop covers what is left."""
from __future__ import annotations

import pytest
from binance_double import BinanceDouble, ccxt_exchange_for
from conftest import golden

from plugins.paper_exchange import PaperExchange
from rulekit.model import Signal
from rulekit.trading.account import Account
from rulekit.trading.executor import Executor
from rulekit.trading.orders import OrderRequest, OrderSide, OrderStatus, OrderType
from rulekit.trading.trade_manager import TradeManager


@pytest.fixture(autouse=True)
def fee_free(monkeypatch):
    """The figures below are worked before fees (the default policy charges 0.05%)."""
    monkeypatch.setenv("RM_FEE_PCT", "0")


def live_trade(engine, double, signal_id="P1"):
    exchange = ccxt_exchange_for(double)
    engine.set_market_rules({"BTCUSDT": exchange.market_rules("BTCUSDT")})
    manager = TradeManager(engine, Account.new(10_000), fills_from_exchange=True)
    executor = Executor(manager, exchange)
    executor.on_signal(Signal.from_record(golden(signal_id=signal_id)), now=1.0)
    executor.on_bar("BTCUSDT", 2.0, 50_000, 50_000, 50_000, 50_000)   # entry booked
    return manager, executor, manager.account.trades[f"T-{signal_id}"]


def test_a_target_filled_in_part_then_expired_is_booked_and_the_stop_covers_the_rest(engine):
    double = BinanceDouble()
    try:
        double.set_balance("BTC", 1.0)   # coins of its own: the stop and both limits all rest
        manager, executor, trade = live_trade(engine, double)
        assert {cid: o["status"] for cid, o in double.orders.items()} == {
            "T-P1:entry:0": "FILLED", "T-P1:stop:0": "NEW", "T-P1:partial:0": "NEW",
            "T-P1:target:0": "NEW"}
        # 0.01 of the 0.02222 target trades at 55,625, then the exchange expires the rest
        double.fill_partly("T-P1:target:0", 0.01, then="EXPIRED")
        events = executor.on_bar("BTCUSDT", 3.0, 51_000, 51_000, 51_000, 51_000)
        assert [(e.event.value, e.quantity, e.price, e.reason) for e in events] == [
            ("PARTIAL_TP", 0.01, 55_625, "take_profit_part_fill")]
        assert trade.quantity == pytest.approx(0.03444) and trade.state.value == "OPEN"
        assert trade.realised_pnl == pytest.approx(0.01 * 5_625)   # 56.25
        stop = double.orders["T-P1:stop:1"]
        assert stop["status"] == "NEW" and float(stop["origQty"]) == pytest.approx(0.03444)
        assert double.orders["T-P1:stop:0"]["status"] == "CANCELED"
        # the rest of the target goes back on: 0.03444 less the 0.02222 partial still resting
        target = double.orders["T-P1:target:1"]
        assert target["status"] == "NEW" and float(target["origQty"]) == pytest.approx(0.01222)
        double.set_price("BTCUSDT", 47_000)
        executor.on_bar("BTCUSDT", 4.0, 47_000, 47_000, 47_000, 47_000)
        closed = manager.closed[0]
        # 56.25 from the part fill, then 0.03444 x -3,000 = -103.32 at the stop
        assert closed.exit_reason == "stop_loss"
        assert closed.realised_pnl == pytest.approx(56.25 - 103.32)
        assert double.balances["BTC"] == pytest.approx(1.0)
    finally:
        double.close()


def test_a_stop_filling_in_steps_is_booked_fill_by_fill_and_closes_with_the_last(engine):
    double = BinanceDouble()
    try:
        manager, executor, trade = live_trade(engine, double, "P2")
        double.fill_partly("T-P2:stop:0", 0.02, price=47_750)   # still working
        executor.on_bar("BTCUSDT", 3.0, 47_800, 47_800, 47_800, 47_800)
        assert trade.quantity == pytest.approx(0.02444) and trade.is_open
        replaced = [cid for cid in double.orders if cid.startswith("T-P2:stop:")]
        assert replaced == ["T-P2:stop:0", "T-P2:stop:1"]   # the stop covers what is left
        double.set_price("BTCUSDT", 47_700)
        executor.on_bar("BTCUSDT", 4.0, 47_700, 47_700, 47_700, 47_700)
        closed = manager.closed[0]
        assert closed.exit_reason == "stop_loss"
        assert closed.realised_pnl == pytest.approx(0.02 * -2_250 + 0.02444 * -2_300)
    finally:
        double.close()


def test_the_paper_exchange_fills_limits_in_part_when_asked_and_not_by_default():
    request = OrderRequest("t:target:0", "BTCUSDT", OrderSide.SELL, OrderType.LIMIT, 0.04,
                           55_000, reduce_only=True)
    whole, parts = PaperExchange(), PaperExchange(partial_fill_fraction=0.25)
    for exchange in (whole, parts):
        exchange.on_bar("BTCUSDT", 0, 50_000, 50_000, 50_000, 50_000)
        exchange.place_order(OrderRequest("t:entry:0", "BTCUSDT", OrderSide.BUY, OrderType.MARKET,
                                          0.04))
        exchange.on_bar("BTCUSDT", 300, 50_000, 50_000, 50_000, 50_000)
        exchange.place_order(request)
    assert [o.filled for o in whole.on_bar("BTCUSDT", 600, 55_000, 55_100, 54_900, 55_000)] == [
        0.04]
    fills = [parts.on_bar("BTCUSDT", 600 + 300 * k, 55_000, 55_100, 54_900, 55_000)[0]
             for k in range(4)]
    assert [(pytest.approx(o.filled), o.status) for o in fills] == [
        (0.01, OrderStatus.OPEN), (0.02, OrderStatus.OPEN), (0.03, OrderStatus.OPEN),
        (0.04, OrderStatus.FILLED)]
    assert parts.positions == {} and parts.cash == pytest.approx(whole.cash)
    restored = PaperExchange.from_record(parts.as_record())
    assert restored.partial_fill_fraction == 0.25
