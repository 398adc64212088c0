"""The account's risk state lives in the audit database: a new process, or one restarted after
SIGKILL, carries on exactly where the last commit left it (scenario in tests/scenario.py)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import scenario
from conftest import DEFAULT_POLICY, ROOT
from scenario import fee_free  # noqa: F401  (autouse: the scenario is worked before fees)

from audit import AuditLog
from audit.risk_store import AuditJournal, RiskStore
from rulekit.model import Signal
from rulekit.trading.account import Account
from rulekit.trading.timeline import Timeline
from rulekit.trading.trade_manager import TradeManager, drive

STEPS = (  # (signal ids, bars from, bars to): one UTC day each
    ("ABCD", datetime(2024, 1, 2, tzinfo=UTC), datetime(2024, 1, 3, tzinfo=UTC)),
    ("EF", datetime(2024, 1, 3, tzinfo=UTC), datetime(2024, 1, 4, tzinfo=UTC)),
    ("GH", datetime(2024, 1, 4, tzinfo=UTC), datetime(2024, 1, 4, 3, tzinfo=UTC)),
)


def rulekit(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def stored_outcome(db: Path) -> dict:
    with AuditLog(db) as audit:
        decisions = audit.db.execute(
            "SELECT signal_id, reason FROM decisions WHERE mode = 'simulate' ORDER BY signal_id"
        ).fetchall()
        trades = audit.db.execute(
            "SELECT trade_id, state, round(realised_pnl, 6), exit_reason FROM trades "
            "ORDER BY trade_id").fetchall()
        account = RiskStore(audit).load()
    return {"decisions": decisions, "trades": trades, "equity": round(account.cash_equity, 6),
            "streak": account.consecutive_losses, "until": account.circuit_breaker_until,
            "open": sorted(account.trades)}


def test_each_step_in_a_new_database_session_gives_the_single_run_result(engine, tmp_path):
    db = tmp_path / "audit.duckdb"
    for ids, start, end in STEPS:
        with AuditLog(db) as audit:
            store = RiskStore(audit)
            account = store.load() or Account.new(10_000)
            run_id = audit.start_run(engine, "simulate")
            manager = TradeManager(engine, account,
                                   AuditJournal(audit, store, engine, run_id, "simulate"))
            drive(manager, Timeline.of([scenario.candles(start, end)],
                                       [Signal.from_record(r) for r in scenario.signal_records(ids)]))
    outcome = stored_outcome(db)
    assert dict(outcome["decisions"]) == scenario.EXPECTED
    assert outcome["equity"] == pytest.approx(scenario.FINAL_EQUITY)
    assert outcome["streak"] == 5 and outcome["open"] == ["T-H"]
    assert outcome["until"] == datetime(2024, 1, 4, 2, tzinfo=UTC).timestamp()


def test_each_step_as_its_own_cli_process(tmp_path):
    db = tmp_path / "audit.duckdb"
    for n, (ids, start, end) in enumerate(STEPS):
        signals = scenario.write_signals(tmp_path / f"signals{n}.jsonl", ids)
        bars = scenario.write_bars(tmp_path / "BTCUSDT.csv", start, end)
        result = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--bars",
                         bars, "--audit", db, "--json", signals, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    outcome = stored_outcome(db)
    assert dict(outcome["decisions"]) == scenario.EXPECTED
    assert outcome["equity"] == pytest.approx(scenario.FINAL_EQUITY)
    state = rulekit("state", "--audit", db, "--json", cwd=tmp_path)
    assert state.returncode == 0, state.stderr
    record = json.loads(state.stdout)
    assert record["consecutive_losses"] == 5 and record["circuit_breaker_trips"] == 1
    assert record["circuit_breaker_until"] == "2024-01-04T02:00:00Z"
    assert [t["trade_id"] for t in record["open_trades"]] == ["T-H"]
    assert record["open_trades"][0]["stop_loss"] == 47_750


def test_a_run_killed_mid_way_resumes_to_the_same_state(tmp_path):
    signals = scenario.write_signals(tmp_path / "signals.jsonl")
    start = scenario.START
    bars = scenario.write_bars(tmp_path / "BTCUSDT.csv", start, start + timedelta(days=20))
    command = [sys.executable, str(ROOT / "cli.py"), "evaluate", "--policy", str(DEFAULT_POLICY),
               "--equity", "10000", "--bars", str(bars), "--json", "--audit"]

    whole = tmp_path / "whole.duckdb"
    done = subprocess.run([*command, str(whole), str(signals)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr

    killed = tmp_path / "killed.duckdb"
    process = subprocess.Popen([*command, str(killed), str(signals)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    seen = [process.stdout.readline() for _ in range(6)]  # decision A .. into trade B
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert all(seen) and json.loads(seen[0])["signal_id"] == "A"

    resumed = subprocess.run([*command, str(killed), str(signals)], capture_output=True,
                             text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert stored_outcome(killed) == stored_outcome(whole)
    with AuditLog(killed) as audit:  # every signal decided exactly once, every trade opened once
        assert audit.db.execute("SELECT count(*), count(DISTINCT signal_id) FROM decisions"
                                ).fetchone() == (8, 8)
        assert audit.db.execute("SELECT count(*) FROM trade_events WHERE event = 'OPEN'"
                                ).fetchone() == (6,)


def test_evaluate_with_bars_prints_the_lifecycle_events_as_json(tmp_path):
    signals = scenario.write_signals(tmp_path / "signals.jsonl", "A")
    bars = scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                               scenario.START + timedelta(hours=11))
    db = tmp_path / "audit.duckdb"
    result = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--bars", bars,
                     "--audit", db, "--json", signals, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["DECISION", "OPEN", "CLOSED"]
    assert lines[0]["approved"] and lines[0]["price"] == 50_000 and lines[0]["atr"] == 1_500
    closed = lines[2]
    assert closed["timestamp"] == "2024-01-02T10:05:00Z" and closed["price"] == 47_750
    assert closed["quantity"] == 0.0666 and closed["state"] == "CLOSED"
    assert closed["reason"] == "stop_loss" and closed["r_multiple"] == pytest.approx(-1.0)
    assert closed["pnl"] == pytest.approx(-149.85)
    again = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 20_000, "--bars", bars,
                    "--audit", db, signals, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "--equity 20,000.00 ignored" in again.stderr and "9,850.15" in again.stderr
    assert "resuming: 1 signal(s) already decided" in again.stderr
    assert "equity 9,850.15" in again.stdout


def test_a_new_database_needs_a_starting_equity(tmp_path):
    signals = scenario.write_signals(tmp_path / "signals.jsonl", "A")
    bars = scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                               scenario.START + timedelta(hours=1))
    result = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--bars", bars, "--audit",
                     tmp_path / "new.duckdb", signals, cwd=tmp_path)
    assert result.returncode == 2 and "needs --equity" in result.stderr


def test_a_dry_run_on_a_database_sizes_with_its_account_not_the_equity_option(tmp_path):
    signals = scenario.write_signals(tmp_path / "signals.jsonl", "A")
    bars = scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                               scenario.START + timedelta(hours=11))
    db = tmp_path / "audit.duckdb"
    assert rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--bars", bars,
                   "--audit", db, signals, cwd=tmp_path).returncode == 0
    (tmp_path / "one.jsonl").write_text(json.dumps(scenario.golden()) + "\n")
    dry = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 100_000, "--audit", db,
                  "--json", tmp_path / "one.jsonl", cwd=tmp_path)
    assert dry.returncode == 0 and "ignored" in dry.stderr
    # the account holds 10,000 - 149.85 = 9,850.15: 1% = 98.5015, not 1% of 100,000
    assert json.loads(dry.stdout)["risk_amount"] == pytest.approx(98.5015)
