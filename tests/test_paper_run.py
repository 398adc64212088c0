"""`rulekit run` on the paper exchange over replayed candles (the scenario of tests/scenario.py):
the same outcome as the trade manager alone, a SIGKILL mid-trade survived, a broken policy refused."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import scenario
from conftest import DEFAULT_POLICY, ROOT
from scenario import fee_free  # noqa: F401  (autouse: the scenario is worked before fees)

from audit import AuditLog
from audit.risk_store import RiskStore


@pytest.fixture
def market(tmp_path):
    scenario.write_signals(tmp_path / "signals.jsonl")
    scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                        scenario.START + timedelta(days=3))
    return tmp_path


def command(where, db, policy=DEFAULT_POLICY, speed=0):
    return [sys.executable, str(ROOT / "cli.py"), "run", "--policy", str(policy), "--replay",
            str(where / "BTCUSDT.csv"), "--signals-from", str(where / "signals.jsonl"),
            "--equity", "10000", "--audit", str(db), "--speed", str(speed), "--json"]


def outcome(db):
    with AuditLog(db) as audit:
        decisions = audit.db.execute(
            "SELECT signal_id, reason FROM decisions WHERE mode = 'paper' ORDER BY signal_id"
        ).fetchall()
        trades = audit.db.execute("SELECT trade_id, state, round(realised_pnl, 6), exit_reason "
                                  "FROM trades ORDER BY trade_id").fetchall()
        exchange = RiskStore(audit).load_extra("exchange")
        account = RiskStore(audit).load()
    return {"decisions": decisions, "trades": trades,
            "orders": sorted((o["client_order_id"], o["status"], o["filled"])
                             for o in exchange["orders"]),
            "cash": round(exchange["cash"], 6), "equity": round(account.cash_equity, 6)}


def test_a_paper_run_gives_what_the_trade_manager_gives(market):
    db = market / "run.duckdb"
    done = subprocess.run(command(market, db), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result = outcome(db)
    assert dict(result["decisions"]) == scenario.EXPECTED
    assert result["equity"] == pytest.approx(scenario.FINAL_EQUITY)
    # the paper exchange's cash agrees with the account: 10,000 - 501.525 realised, and H's
    # entry (0.0158 at 50,000 = 790) still held
    assert result["cash"] == pytest.approx(scenario.FINAL_EQUITY - 790)
    closes = [o for o in result["orders"] if ":stop:" in o[0] and o[1] == "FILLED"]
    assert len(closes) == 5                      # every loss went out through its stop order
    open_h = [o for o in result["orders"] if o[0].startswith("T-H:") and o[1] == "OPEN"]
    assert {o[0].split(":")[1] for o in open_h} == {"stop", "partial", "target"}


def test_a_run_killed_mid_trade_resumes_with_the_same_trades_and_no_order_twice(market):
    whole = market / "whole.duckdb"
    assert subprocess.run(command(market, whole), capture_output=True, timeout=120).returncode == 0

    killed = market / "killed.duckdb"
    process = subprocess.Popen(command(market, killed, speed=400), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    while True:  # wait for trade C's entry: three trades into the run, one open
        line = process.stdout.readline()
        assert line, process.stderr.read()
        record = json.loads(line)
        if record["event"] == "OPEN" and record["trade_id"] == "T-C":
            break
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    resumed = subprocess.run(command(market, killed), capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "reconciled T-C" in resumed.stderr
    assert outcome(killed) == outcome(whole)
    with AuditLog(killed) as audit:
        assert audit.db.execute("SELECT count(*), count(DISTINCT signal_id) FROM decisions"
                                ).fetchone() == (8, 8)


def test_a_broken_policy_is_refused_while_running_and_the_run_goes_on(market):
    policy = market / "policy.yaml"
    policy.write_text(DEFAULT_POLICY.read_text())
    process = subprocess.Popen(command(market, market / "run.duckdb", policy, speed=250),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline()
    policy.write_text(DEFAULT_POLICY.read_text().replace("rule: trend_aligned\n",
                                                         "rule: trend_aligned ** 2\n"))
    future = time.time() + 5
    os.utime(policy, (future, future))
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "policy refused" in err and "policy.yaml:" in err and "'**' is refused" in err
    assert dict(outcome(market / "run.duckdb")["decisions"]) == scenario.EXPECTED


def test_sigterm_stops_cleanly_and_a_restart_finishes_the_run(market):
    db = market / "run.duckdb"
    process = subprocess.Popen(command(market, db, speed=200), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0 and "stopping (SIGTERM)" in err
    again = subprocess.run(command(market, db), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert dict(outcome(db)["decisions"]) == scenario.EXPECTED


def test_paper_trading_on_real_bars_gives_the_backtests_trades(engine):
    """One code path: the executor on the paper exchange (orders, fills, protective orders moved
    with the stops) and the backtest (the lifecycle's own fills) agree trade for trade."""
    from conftest import EXAMPLE_CANDLES

    from plugins.candle_files import read_candles
    from plugins.paper_exchange import PaperExchange
    from rulekit.app.runs import signal_feed
    from rulekit.backtest.run import run_backtest
    from rulekit.market.conditions import with_market_fields
    from rulekit.trading.account import Account
    from rulekit.trading.executor import Executor
    from rulekit.trading.timeline import Release, Timeline
    from rulekit.trading.trade_manager import TradeManager

    c = read_candles(EXAMPLE_CANDLES)
    signals = with_market_fields(signal_feed("plugin:reference", [c]).poll(), {c.symbol: c},
                                 engine.policy)
    manager = TradeManager(engine, Account.new(10_000), fills_from_exchange=True)
    exchange = PaperExchange(equity=10_000, fee_pct=engine.policy.constants()["fee_pct"])
    executor = Executor(manager, exchange)
    for item in Timeline.of([c], signals).events():
        if isinstance(item, Release):
            executor.on_signal(item.signal, now=item.at)
        else:
            executor.on_bar(*item)
    backtest = run_backtest(engine, [c], signals, 10_000)
    paper = [(t.trade_id, t.exit_reason, round(t.realised_pnl, 9)) for t in manager.closed]
    simulated = [(t.trade_id, t.exit_reason, round(t.realised_pnl, 9)) for t in backtest.trades
                 if t.exit_reason != "end_of_data"]
    assert len(paper) > 500 and paper == simulated
    assert not [o for o in exchange.orders.values() if o.status.value == "REJECTED"]
    assert exchange.equity() == pytest.approx(manager.account.equity, rel=1e-12)


def test_rulekit_state_answers_from_another_process_while_the_run_trades(market):
    db = market / "run.duckdb"
    process = subprocess.Popen(command(market, db, speed=150), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    while True:  # until the run is inside its first day of trades
        record = json.loads(process.stdout.readline())
        if record["event"] == "CLOSED":
            break
    state = subprocess.run([sys.executable, str(ROOT / "cli.py"), "state", "--audit", str(db),
                            "--json"], capture_output=True, text=True, timeout=60)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert state.returncode == 0, state.stderr
    assert json.loads(state.stdout)["closed_trades"] >= 1
