"""rulekit's fills against an independent backtester: backtesting.py, given rulekit's entries (bar,
side, size) with the same absolute stop and target, on the real candles of examples/data and
tests/data, must close every trade in the same bar at the same price for the same PnL.

The policy (tests/policies/stop_and_target_only.yaml) makes breakeven, partial, trailing and time
exit neutral, no fees, no slippage. backtesting.py's documented conventions, which rulekit's
(``rulekit.trading.fills``) must equal: a market order placed in ``next()`` at a bar's close fills
at the next bar's open; a stop-loss fills at its price, or at the open on a gap; a take-profit
limit fills at its price, or at the open when the bar opens beyond it; a stop-loss and a
take-profit hit in the same bar: the stop-loss first (its orders queue puts SL orders first); SL/TP
can fill in the entry's own bar. One difference, at the end of the data: ``finalize_trades=True``
closes what is still open at the last bar's OPEN (its close order goes through the last bar once
more), rulekit at its close (``end_of_data``, the last price known); those trades are compared by
bar only.
backtesting.py sizes in whole units, so it trades ``quantity / amount_step`` units and its PnL is
divided back by that factor.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from conftest import EXAMPLE_CANDLES, TEST_DATA

from plugins.candle_files import read_candles
from plugins.reference_signals import ensemble_signals
from rulekit.backtest.run import run_backtest
from rulekit.decision.engine import Engine
from rulekit.policy.loader import load_policy
from rulekit.trading.fills import target_fill

backtesting = pytest.importorskip("backtesting", reason="backtesting (backtesting.py) is not "
                                  "installed: pip install -e '.[test]'")

POLICY = Path(__file__).parent / "policies" / "stop_and_target_only.yaml"
FILES = [EXAMPLE_CANDLES, *sorted(TEST_DATA.glob("*.csv"))]


def reference_trades(candles, trades, step: float):
    """backtesting.py's trades for rulekit's entries: (entry bar, exit bar, exit price, PnL)."""
    import pandas as pd
    from backtesting import Backtest, Strategy

    frame = pd.DataFrame({"Open": candles.open, "High": candles.high, "Low": candles.low,
                          "Close": candles.close, "Volume": candles.volume},
                         index=pd.to_datetime(candles.timestamp, unit="s"))
    bar_of = {t: i for i, t in enumerate(candles.timestamp.tolist())}
    orders = {bar_of[t.opened_at] - 1: t for t in trades}  # placed at the close before the fill

    class RulekitEntries(Strategy):
        def init(self):
            pass

        def next(self):
            trade = orders.get(len(self.data) - 1)
            if trade is None:
                return
            assert not self.position, "rulekit holds one trade per symbol at a time"
            units = round(trade.initial_quantity / step)
            if trade.is_long:
                self.buy(size=units, sl=trade.initial_stop, tp=trade.take_profit)
            else:
                self.sell(size=units, sl=trade.initial_stop, tp=trade.take_profit)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stats = Backtest(frame, RulekitEntries, cash=1e15, commission=0.0,
                         finalize_trades=True).run()
    return [(int(r.EntryBar), int(r.ExitBar), float(r.ExitPrice), float(r.PnL) * step)
            for r in stats._trades.itertuples()]


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_stops_targets_and_gaps_fill_as_backtesting_py_fills_them(path):
    engine = Engine(load_policy(POLICY))
    candles = read_candles(path)
    result = run_backtest(engine, [candles], ensemble_signals(candles), 10_000)
    trades = result.trades
    if not trades:
        pytest.skip(f"{path.name}: no trade approved")
    bar_of = {t: i for i, t in enumerate(candles.timestamp.tolist())}
    ours = [(bar_of[t.opened_at], bar_of[t.closed_at], t.exit_price, t.realised_pnl)
            for t in trades]
    step = engine.policy.markets[candles.symbol].amount_step
    theirs = reference_trades(candles, trades, step)
    assert [(entry, exit) for entry, exit, _, _ in theirs] == [(e, x) for e, x, _, _ in ours]
    for (_, _, price, pnl), (_, _, ref_price, ref_pnl), trade in zip(ours, theirs, trades,
                                                                    strict=True):
        if trade.exit_reason == "end_of_data":
            assert (price, ref_price) == (candles.close[-1], candles.open[-1])
            continue
        assert price == pytest.approx(ref_price, rel=1e-12), trade.trade_id
        assert pnl == pytest.approx(ref_pnl, rel=1e-9, abs=1e-9 * trade.initial_risk)
    assert {t.exit_reason for t in trades} <= {"stop_loss", "take_profit", "end_of_data"}


def test_the_reference_sees_a_gap_through_a_target_fill_at_the_open():
    """A take profit the next bar opens beyond: both fill at that open (the better price)."""
    import pandas as pd
    from backtesting import Backtest, Strategy

    frame = pd.DataFrame({"Open": [100.0, 100, 100, 112, 112], "High": [100.0, 101, 101, 113, 113],
                          "Low": [100.0, 99, 99, 111, 111], "Close": [100.0, 100, 100, 112, 112],
                          "Volume": [1.0] * 5}, index=pd.date_range("2024-01-01", periods=5,
                                                                   freq="5min"))

    class Once(Strategy):
        def init(self):
            pass

        def next(self):
            if len(self.data) == 2:  # its first call: fills at bar 2's open, 100
                self.buy(size=1, sl=95, tp=110)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trades = Backtest(frame, Once, cash=1_000, commission=0.0).run()._trades
    assert (int(trades.EntryBar.iloc[0]), int(trades.ExitBar.iloc[0])) == (2, 3)
    assert (float(trades.ExitPrice.iloc[0]), float(trades.PnL.iloc[0])) == (112, 12)
    assert target_fill(True, 110, 112, 113, 111) == 112     # rulekit: the open, 112, too
    assert target_fill(False, 90, 88, 89, 87) == 88         # and a short's, mirrored
