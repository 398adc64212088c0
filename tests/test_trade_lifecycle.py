"""A trade after approval, driven bar by bar on the golden example (LONG 50,000, ATR 1,500,
equity 10,000): quantity 0.0444, stop 47,750, +1 R 52,250, +2 R 54,500, target 55,625; 1 R = 99.9."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import DEFAULT_POLICY, golden, golden_short

from rulekit.decision.engine import Engine
from rulekit.model import Signal
from rulekit.policy.loader import load_policy
from rulekit.trading.lifecycle import Event, IllegalTransition, TradeState, open_trade

T0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()  # a Monday, 00:00 UTC
BAR = 300.0


@pytest.fixture(autouse=True)
def fee_free(monkeypatch):
    """RM_FEE_PCT=0: the golden trade's figures (the README's table) are worked before fees;
    the fee test sets its own."""
    monkeypatch.setenv("RM_FEE_PCT", "0")


def opened(engine, record=None, fill_price=None):
    signal = Signal.from_record(record or golden())
    decision = engine.decide(signal, equity=10_000)
    assert decision.approved
    units, scale, _, _ = engine.markets[signal.symbol]
    return open_trade("t1", signal.symbol, signal.side, decision, T0, (units, scale),
                      fill_price=fill_price)


def bar(trade, n, o, h, l, c):
    return trade.on_bar(T0 + n * BAR, o, h, l, c)


def test_straight_down_closes_at_the_stop_for_minus_one_r(engine):
    trade = opened(engine)
    events = bar(trade, 1, 50_000, 50_000, 47_000, 47_100)
    assert [e.event for e in events] == [Event.CLOSED]
    close = events[0]
    assert close.price == 47_750 and close.reason == "stop_loss" and close.quantity == 0.0444
    # 0.0444 * (47,750 - 50,000) = -99.9 = -1 R exactly
    assert close.pnl == pytest.approx(-99.9) and close.r_multiple == pytest.approx(-1.0)
    assert trade.state is TradeState.CLOSED and trade.mae_r == pytest.approx(-3_000 / 2_250)


def test_plus_one_r_moves_the_stop_to_breakeven_from_the_next_bar(engine):
    trade = opened(engine)
    events = bar(trade, 1, 50_000, 52_250, 49_900, 52_000)
    assert [(e.event, e.stop_loss) for e in events] == [(Event.BREAKEVEN, 50_000)]
    assert trade.state is TradeState.OPEN and trade.mfe_r == pytest.approx(1.0)
    events = bar(trade, 2, 51_000, 51_000, 49_000, 49_500)
    assert events[0].reason == "breakeven_stop" and events[0].price == 50_000
    assert events[0].pnl == 0 and events[0].r_multiple == 0


def test_plus_two_r_closes_half_then_trails_until_the_exit(engine):
    trade = opened(engine)
    bar(trade, 1, 50_000, 52_250, 49_900, 52_000)
    events = bar(trade, 2, 52_000, 54_500, 51_900, 54_000)
    # half of 0.0444 = 0.0222 at 54,500: 0.0222 * 4,500 = 99.9 (+1 R on the whole trade's risk)
    assert [e.event for e in events] == [Event.PARTIAL_TP, Event.TRAILING]
    assert events[0].price == 54_500 and events[0].quantity == 0.0222
    assert trade.realised_pnl == pytest.approx(99.9)
    assert trade.quantity == pytest.approx(0.0222)
    assert events[1].stop_loss == 52_250  # best 54,500 - 1.5 ATR (2,250)
    assert trade.state is TradeState.TRAILING
    events = bar(trade, 3, 54_000, 55_000, 53_500, 54_800)
    assert [(e.event, e.stop_loss) for e in events] == [(Event.TRAILING, 52_750)]
    assert bar(trade, 4, 54_800, 54_900, 53_000, 53_100) == []  # best still 55,000: stop stays
    events = bar(trade, 5, 53_100, 53_200, 52_000, 52_100)
    close = events[0]
    # the remaining 0.0222 at 52,750: 0.0222 * 2,750 = 61.05; whole trade 99.9 + 61.05 = 160.95
    assert close.reason == "trailing_stop" and close.price == 52_750 and close.quantity == 0.0222
    assert close.pnl == pytest.approx(160.95)
    assert close.r_multiple == pytest.approx(160.95 / 99.9)
    assert trade.mfe_r == pytest.approx(5_000 / 2_250)


def test_flat_for_25_hours_is_a_time_exit_at_the_first_bar_past_24h(engine):
    trade = opened(engine)
    bars = int(25 * 3600 / BAR)
    events = []
    for n in range(1, bars + 1):
        events += bar(trade, n, 50_000, 50_010, 49_990, 50_000)
    assert [e.event for e in events] == [Event.CLOSED]
    assert events[0].reason == "time_exit"
    assert events[0].timestamp == T0 + 24 * 3600 and events[0].price == 50_000
    assert events[0].r_multiple == 0


def test_a_trade_that_reached_plus_one_r_is_spared_the_time_exit(engine):
    trade = opened(engine)
    bar(trade, 1, 50_000, 52_300, 49_900, 51_000)
    for n in range(2, 300):
        assert bar(trade, n, 51_000, 51_010, 50_990, 51_000) == []
    assert trade.is_open


def test_a_bar_reaching_stop_and_target_assumes_the_stop_came_first(engine):
    trade = opened(engine)
    events = bar(trade, 1, 50_000, 56_000, 47_000, 55_000)
    assert [(e.event, e.reason, e.price) for e in events] == [
        (Event.CLOSED, "stop_loss", 47_750)]


def test_a_gap_through_the_stop_fills_at_the_open(engine):
    trade = opened(engine)
    events = bar(trade, 1, 47_000, 47_200, 46_500, 47_100)
    # 0.0444 * (47,000 - 50,000) = -133.2 = -1.333 R
    assert events[0].price == 47_000 and events[0].pnl == pytest.approx(-133.2)
    assert events[0].r_multiple == pytest.approx(-133.2 / 99.9)


def test_take_profit_after_the_partial_in_the_same_bar(engine):
    trade = opened(engine)
    events = bar(trade, 1, 50_000, 56_000, 49_900, 55_900)
    # partial 0.0222 at 54,500 (+99.9), the rest at 55,625: 0.0222 * 5,625 = 124.875
    assert [(e.event, e.price) for e in events] == [(Event.PARTIAL_TP, 54_500),
                                                    (Event.CLOSED, 55_625)]
    assert events[1].pnl == pytest.approx(224.775) and events[1].reason == "take_profit"


def test_the_short_mirrors_the_long(engine):
    trade = opened(engine, golden_short())
    assert (trade.initial_stop, trade.take_profit) == (52_250, 44_375)
    events = bar(trade, 1, 50_000, 50_100, 47_750, 48_000)
    assert [(e.event, e.stop_loss) for e in events] == [(Event.BREAKEVEN, 50_000)]
    events = bar(trade, 2, 48_000, 48_100, 45_500, 46_000)
    assert [(e.event, e.stop_loss) for e in events] == [(Event.PARTIAL_TP, 50_000),
                                                       (Event.TRAILING, 47_750)]
    assert trade.realised_pnl == pytest.approx(99.9)
    events = bar(trade, 3, 46_000, 48_000, 45_900, 47_900)
    assert events[0].reason == "trailing_stop" and events[0].price == 47_750
    # 99.9 + 0.0222 * 2,250 = 149.85
    assert events[0].pnl == pytest.approx(149.85)
    down = opened(engine, golden_short())
    assert bar(down, 1, 50_000, 53_000, 49_900, 52_900)[0].r_multiple == pytest.approx(-1.0)


def test_the_stop_never_moves_against_the_trade(engine):
    trade = opened(engine)
    bar(trade, 1, 50_000, 54_600, 49_900, 54_500)  # partial, trail to 52,350
    stop = trade.stop_loss
    for n in range(2, 10):
        bar(trade, n, 53_000, 53_500, 52_400, 53_000)
        assert trade.stop_loss == stop


def test_fees_come_off_the_pnl_and_the_r_multiple(monkeypatch):
    monkeypatch.setenv("RM_FEE_PCT", "0.1")
    engine = Engine(load_policy(DEFAULT_POLICY))
    trade = opened(engine)
    events = bar(trade, 1, 50_000, 50_000, 47_000, 47_100)
    # entry fee 2,220 * 0.1% = 2.22; exit fee 0.0444 * 47,750 * 0.1% = 2.1201
    assert trade.fees == pytest.approx(4.3401)
    assert events[0].pnl == pytest.approx(-99.9 - 4.3401)
    assert events[0].r_multiple == pytest.approx((-99.9 - 4.3401) / 99.9)


def test_a_fill_away_from_the_decision_price_keeps_the_distances(engine):
    trade = opened(engine, fill_price=50_100)
    assert (trade.initial_stop, trade.take_profit, trade.partial_tp_price) == (
        47_850, 55_725, 54_600)
    assert trade.initial_risk == pytest.approx(99.9)


def test_a_closed_trade_cannot_close_again(engine):
    trade = opened(engine)
    bar(trade, 1, 50_000, 50_000, 47_000, 47_100)
    with pytest.raises(IllegalTransition):
        trade.close(T0 + 900, 47_000, "manual")
    assert bar(trade, 3, 40_000, 40_000, 40_000, 40_000) == []


def test_bars_already_seen_are_ignored(engine):
    trade = opened(engine)
    bar(trade, 2, 50_000, 52_250, 49_900, 52_000)
    assert bar(trade, 1, 50_000, 50_000, 40_000, 40_000) == []
    assert bar(trade, 2, 50_000, 50_000, 40_000, 40_000) == []
    assert trade.is_open


def test_a_next_open_entry_fills_at_the_next_bar_with_slippage_and_moves_the_levels(engine):
    signal = Signal.from_record(golden())
    decision = engine.decide(signal, equity=10_000)
    units, scale, _, _ = engine.markets["BTCUSDT"]
    trade = open_trade("t1", "BTCUSDT", "LONG", decision, T0, (units, scale), next_open=True,
                       slippage_bps=10)
    assert trade.events == [] and trade.unrealised_pnl(40_000) == 0
    events = bar(trade, 1, 50_100, 50_200, 50_000, 50_150)
    # 50,100 + 10 bps = 50,150.1; every level 150.1 higher: stop 47,900.1, target 55,775.1
    assert [e.event for e in events] == [Event.OPEN] and events[0].price == pytest.approx(50_150.1)
    assert trade.initial_stop == pytest.approx(47_900.1)
    assert trade.take_profit == pytest.approx(55_775.1)
    assert trade.opened_at == T0 + BAR and trade.initial_risk == pytest.approx(99.9)


def test_an_entry_stopped_in_its_fill_bar_reports_both_the_open_and_the_close(engine):
    decision = engine.decide(Signal.from_record(golden()), equity=10_000)
    units, scale, _, _ = engine.markets["BTCUSDT"]
    trade = open_trade("t1", "BTCUSDT", "LONG", decision, T0, (units, scale), next_open=True)
    events = bar(trade, 1, 50_000, 50_100, 47_000, 47_500)
    assert [(e.event, e.price) for e in events] == [(Event.OPEN, 50_000), (Event.CLOSED, 47_750)]


def slipped(engine, bps=10):
    """The golden LONG sent at market with ``bps`` of slippage, filled by the bar at T0 + BAR
    (open 50,000): entry 50,050, every level 50 higher (stop 47,800, partial 54,550, target
    55,675)."""
    decision = engine.decide(Signal.from_record(golden()), equity=10_000)
    units, scale, _, _ = engine.markets["BTCUSDT"]
    trade = open_trade("t1", "BTCUSDT", "LONG", decision, T0, (units, scale), next_open=True,
                       slippage_bps=bps)
    assert [e.price for e in bar(trade, 1, 50_000, 50_100, 49_900, 50_000)] == [50_050]
    return trade


def test_a_stop_fill_carries_the_slippage(engine):
    trade = slipped(engine)
    events = bar(trade, 2, 49_000, 49_100, 47_000, 47_500)
    # a sell stop at 47,800 less 10 bps: 47,800 x 0.999 = 47,752.2
    # 0.0444 x (47,752.2 - 50,050) = -102.02232
    assert events[0].reason == "stop_loss" and events[0].price == pytest.approx(47_752.2)
    assert events[0].pnl == pytest.approx(-102.02232)
    assert events[0].r_multiple == pytest.approx(-102.02232 / 99.9)


def test_a_gapped_stop_fills_at_the_open_less_the_slippage(engine):
    trade = slipped(engine)
    events = bar(trade, 2, 47_000, 47_200, 46_500, 47_100)
    # 47,000 x 0.999 = 46,953; 0.0444 x (46,953 - 50,050) = -137.5068
    assert events[0].price == pytest.approx(46_953) and events[0].pnl == pytest.approx(-137.5068)


def test_a_time_exit_is_a_market_order_and_carries_the_slippage(engine):
    trade = slipped(engine)
    events = []
    for n in range(2, int(25 * 3600 / BAR) + 2):
        events += bar(trade, n, 50_000, 50_010, 49_990, 50_000)
    # the open 24h after the entry (T0 + BAR + 24h), 50,000 less 10 bps = 49,950:
    # 0.0444 x (49,950 - 50,050) = -4.44, the round trip's slippage
    assert [(e.reason, e.timestamp) for e in events] == [("time_exit", T0 + BAR + 24 * 3600)]
    assert events[0].price == pytest.approx(49_950) and events[0].pnl == pytest.approx(-4.44)


def test_a_close_at_market_carries_the_slippage_both_ways(engine):
    trade = slipped(engine)
    event = trade.close_at_market(T0 + 2 * BAR, 51_000, "end_of_data")
    assert event.price == pytest.approx(50_949)                       # 51,000 x 0.999
    short = opened(engine, golden_short())
    short.slippage_bps = 10
    assert short.close_at_market(T0 + BAR, 49_000, "end_of_data").price == pytest.approx(49_049)


def test_a_bar_opening_beyond_the_targets_fills_them_at_the_open_without_slippage(engine):
    trade = slipped(engine)
    events = bar(trade, 2, 56_000, 56_500, 55_900, 56_200)
    # both limits (partial 54,550, target 55,675) were passed before the bar opened: the first
    # trade, at 56,000, fills them (limits: no slippage). 0.0444 x (56,000 - 50,050) = 264.18
    assert [(e.event, e.price) for e in events] == [(Event.PARTIAL_TP, 56_000),
                                                    (Event.CLOSED, 56_000)]
    assert events[1].reason == "take_profit" and events[1].pnl == pytest.approx(264.18)


def test_a_short_whose_bar_opens_below_the_target_fills_at_the_open(engine):
    trade = opened(engine, golden_short())                            # target 44,375
    events = bar(trade, 1, 44_000, 44_300, 43_800, 44_100)
    # partial (45,500) and target both at 44,000: 0.0444 x 6,000 = 266.4
    assert [(e.event, e.price) for e in events] == [(Event.PARTIAL_TP, 44_000),
                                                    (Event.CLOSED, 44_000)]
    assert events[1].pnl == pytest.approx(266.4)
