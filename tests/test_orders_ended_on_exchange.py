"""Orders that end on the exchange's side with nothing filled (cancelled by hand, expired), on the
Binance double: what they protected is put back at once, an entry that bought nothing cancels its
trade, and a restart notices a stop cancelled while the run was down."""
from __future__ import annotations

import pytest
from binance_double import BinanceDouble, ccxt_exchange_for
from conftest import golden

from rulekit.model import Signal
from rulekit.trading.account import Account, RiskEventKind
from rulekit.trading.executor import ENTRY_ENDED, Executor
from rulekit.trading.trade_manager import TradeManager


@pytest.fixture(autouse=True)
def fee_free(monkeypatch):
    """The levels below are worked before fees (the default policy charges 0.05%)."""
    monkeypatch.setenv("RM_FEE_PCT", "0")


@pytest.fixture
def double():
    double = BinanceDouble()
    double.set_balance("BTC", 1.0)  # coins of its own: the stop and both limits all rest
    yield double
    double.close()


def opened(engine, double, signal_id="E1"):
    """The golden long opened and protected: 0.04444 BTC (the double's step is 0.00001) at
    50,000, stop 47,750, target 55,625."""
    exchange = ccxt_exchange_for(double)
    engine.set_market_rules({"BTCUSDT": exchange.market_rules("BTCUSDT")})
    manager = TradeManager(engine, Account.new(10_000), fills_from_exchange=True)
    executor = Executor(manager, exchange)
    executor.on_signal(Signal.from_record(golden(signal_id=signal_id)), now=1.0)
    executor.on_bar("BTCUSDT", 2.0, 50_000, 50_000, 50_000, 50_000)
    return manager, executor, exchange


def test_a_stop_cancelled_by_hand_is_put_back_for_the_whole_position(engine, double):
    manager, executor, _ = opened(engine, double)
    assert double.orders["T-E1:stop:0"]["status"] == "NEW"
    double.cancel_by_hand("T-E1:stop:0")
    executor.on_bar("BTCUSDT", 3.0, 50_100, 50_100, 50_100, 50_100)
    stop = double.orders["T-E1:stop:1"]
    assert stop["status"] == "NEW" and stop["side"] == "SELL"
    assert float(stop["origQty"]) == pytest.approx(0.04444)
    assert float(stop["stopPrice"]) == pytest.approx(47_750)
    assert executor.take_notices() == [
        "T-E1:stop:0 cancelled on the exchange: put back as T-E1:stop:1"]
    # and it protects: the price falls through it, the trade closes at the stop
    double.set_price("BTCUSDT", 47_700)
    executor.on_bar("BTCUSDT", 4.0, 47_700, 47_700, 47_700, 47_700)
    assert [t.exit_reason for t in manager.closed] == ["stop_loss"]


def test_a_target_cancelled_by_hand_goes_back_for_the_rest(engine, double):
    _, executor, _ = opened(engine, double, "E2")
    partial = float(double.orders["T-E2:partial:0"]["origQty"])
    double.cancel_by_hand("T-E2:target:0")
    executor.on_bar("BTCUSDT", 3.0, 50_100, 50_100, 50_100, 50_100)
    target = double.orders["T-E2:target:1"]
    assert target["status"] == "NEW"
    assert float(target["origQty"]) == pytest.approx(0.04444 - partial)   # the partial still rests
    assert float(target["price"]) == pytest.approx(55_625)
    assert double.orders["T-E2:stop:0"]["status"] == "NEW"   # nothing else touched


def test_an_entry_that_expires_unfilled_cancels_its_trade_and_frees_the_symbol(engine, double):
    exchange = ccxt_exchange_for(double)
    engine.set_market_rules({"BTCUSDT": exchange.market_rules("BTCUSDT")})
    manager = TradeManager(engine, Account.new(10_000), fills_from_exchange=True)
    executor = Executor(manager, exchange)
    written = []
    record_state = manager.journal.record_state
    manager.journal.record_state = lambda account, trades, *rest: (
        written.extend(trades), record_state(account, trades, *rest))
    double.expire_market_orders = True   # no liquidity: the market entry buys nothing
    assert executor.on_signal(Signal.from_record(golden(signal_id="E3")), now=1.0).approved
    assert "T-E3" in manager.account.trades   # on its way
    executor.on_bar("BTCUSDT", 2.0, 50_000, 50_000, 50_000, 50_000)
    assert manager.account.trades == {} and manager.account.open_exposure == 0
    cancelled = written[-1]
    assert cancelled.trade_id == "T-E3" and cancelled.state.value == "CANCELLED"
    assert cancelled.exit_reason == ENTRY_ENDED == "entry_cancelled_on_exchange"
    assert executor.take_notices() == [
        "T-E3:entry:0 cancelled on the exchange: its trade cancelled, nothing bought"]
    # the symbol takes a trade again
    double.expire_market_orders = False
    again = executor.on_signal(Signal.from_record(golden(signal_id="E4")), now=3.0)
    assert again.approved and "T-E4" in manager.account.trades


def test_a_restart_puts_back_a_stop_cancelled_while_the_run_was_down(engine, double):
    manager, executor, _ = opened(engine, double, "E5")
    books = executor.as_record()
    double.cancel_by_hand("T-E5:stop:0")   # while no rulekit runs
    restarted = Executor(manager, ccxt_exchange_for(double), books)
    [line] = restarted.reconcile(5.0)
    assert line == "T-E5: open, stop 47,750, re-placed stop"
    assert double.orders["T-E5:stop:1"]["status"] == "NEW"
    assert float(double.orders["T-E5:stop:1"]["origQty"]) == pytest.approx(0.04444)


def test_an_order_rulekit_replaced_itself_is_not_put_back_again(engine, double):
    manager, executor, _ = opened(engine, double, "E6")
    trade = manager.account.trades["T-E6"]
    # +1R: breakeven moves the stop, which cancels stop:0 and places stop:1
    double.set_price("BTCUSDT", 52_300)
    executor.on_bar("BTCUSDT", 3.0, 52_300, 52_300, 52_300, 52_300)
    assert trade.stop_loss == pytest.approx(50_000) or trade.stop_loss > 47_750
    stops = sorted(cid for cid in double.orders if cid.startswith("T-E6:stop:"))
    executor.on_bar("BTCUSDT", 4.0, 52_300, 52_300, 52_300, 52_300)
    assert sorted(cid for cid in double.orders if cid.startswith("T-E6:stop:")) == stops
    assert executor.take_notices() == []


def test_an_order_ended_on_the_exchange_is_a_risk_event_in_the_commit(engine, double):
    manager, executor, _ = opened(engine, double, "E7")
    double.cancel_by_hand("T-E7:stop:0")
    executor.on_bar("BTCUSDT", 3.0, 50_100, 50_100, 50_100, 50_100)
    assert [(r.kind, r.detail) for r in manager.journal.risk_events
            if r.kind is RiskEventKind.ORDER_ENDED] == [
        (RiskEventKind.ORDER_ENDED, "T-E7:stop:0 cancelled on the exchange: put back as "
                                    "T-E7:stop:1")]


def test_a_stop_cancelled_with_the_coins_sold_by_hand_is_not_put_back():
    from conftest import DEFAULT_POLICY

    from rulekit.decision.engine import Engine
    from rulekit.policy.loader import load_policy

    double = BinanceDouble()   # no coins of its own: the position is all the books' trade
    try:
        manager, executor, _ = opened(Engine(load_policy(DEFAULT_POLICY)), double, "E8")
        double.cancel_by_hand("T-E8:stop:0")
        double.handle("POST", "/api/v3/order", {"symbol": "BTCUSDT", "side": "SELL",
                                                "type": "MARKET", "quantity": "0.04444",
                                                "newClientOrderId": "by-hand"})
        posts = double.order_posts()
        executor.on_bar("BTCUSDT", 3.0, 50_100, 50_100, 50_100, 50_100)
        assert double.order_posts() == posts and "T-E8:stop:1" not in double.orders
        assert executor.take_notices() == [
            "T-E8:stop:0 cancelled on the exchange: not put back: the exchange no longer holds "
            "the position (see the positions check)"]
        assert manager.account.trades["T-E8"].is_open   # the books' view until it is accepted
    finally:
        double.close()
