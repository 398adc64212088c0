"""Global limits over a sequence of trades (see tests/scenario.py for the hand-worked numbers)."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
import scenario
from scenario import fee_free  # noqa: F401  (autouse: the scenario is worked before fees)

from rulekit.model import Signal
from rulekit.trading.account import Account, day_start, week_start
from rulekit.trading.timeline import Timeline
from rulekit.trading.trade_manager import TradeManager, drive


def run_scenario(engine):
    manager = TradeManager(engine, Account.new(10_000))
    steps = []
    drive(manager, Timeline.of([scenario.candles()],
                               [Signal.from_record(r) for r in scenario.signal_records()]),
          steps.append)
    decisions = {s.signal.signal_id: s.decision for s in steps if s.decision is not None}
    return manager, steps, decisions


def test_three_losses_then_daily_limit_then_reduced_risk_then_a_4h_pause(engine):
    manager, steps, decisions = run_scenario(engine)
    assert {sid: d.reason for sid, d in decisions.items()} == scenario.EXPECTED
    assert [decisions[s].quantity for s in "ABCEF"] == [0.0666, 0.0656, 0.0323, 0.016, 0.0159]
    assert decisions["C"].value("risk_pct") == pytest.approx(0.75)       # recovery mode
    assert decisions["E"].value("risk_pct") == pytest.approx(0.375)      # streak x recovery
    assert decisions["D"].value("daily_drawdown_pct") == pytest.approx(
        (10_000 - 9_629.875) / 10_000 * 100)
    account = manager.account
    trips = [r for s in steps for r in s.risk_events if r.kind == "circuit_breaker"]
    assert len(trips) == 1 and trips[0].at == datetime(2024, 1, 3, 22, tzinfo=UTC).timestamp()
    assert account.circuit_breaker_until - trips[0].at == 4 * 3600
    closed = [e for s in steps for e in s.events if e.event.value == "CLOSED"]
    assert [round(e.pnl, 6) for e in closed] == [-149.85, -147.6, -72.675, -36.0, -95.4]
    assert account.consecutive_losses == 5
    assert account.cash_equity == pytest.approx(scenario.FINAL_EQUITY)
    assert list(account.trades) == ["T-H"]


def test_protections_never_close_open_trades(engine):
    manager, steps, _ = run_scenario(engine)
    closes = [e.reason for s in steps for e in s.events if e.event.value == "CLOSED"]
    assert set(closes) == {"stop_loss"}  # only the trades' own exits, nothing forced


def test_utc_day_and_monday_week_boundaries():
    wednesday_noon = datetime(2024, 1, 3, 12, tzinfo=UTC).timestamp()
    assert day_start(wednesday_noon) == datetime(2024, 1, 3, tzinfo=UTC).timestamp()
    assert week_start(wednesday_noon) == datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    sunday_late = datetime(2024, 1, 7, 23, 59, tzinfo=UTC).timestamp()
    assert week_start(sunday_late) == datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def test_unrealised_loss_counts_toward_the_daily_drawdown(engine):
    manager = TradeManager(engine, Account.new(10_000))
    t0 = datetime(2024, 1, 2, 10, tzinfo=UTC).timestamp()
    manager.on_signal(Signal.from_record(scenario.golden(timestamp=t0, signal_id="x")))
    manager.on_bar("BTCUSDT", t0 + 300, 50_000, 50_000, 48_000, 48_000)
    # open 0.0444 at 50,000 marked at 48,000: -88.8 unrealised
    assert manager.account.equity == pytest.approx(10_000 - 88.8)
    assert manager.account.snapshot().open_trades == 1
