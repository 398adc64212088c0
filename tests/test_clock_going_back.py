"""A signal stamped before the account's clock is decided at the account's clock: its market data
is then stale, so it is rejected instead of opening a trade in the past (evaluate --bars and run)."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import duckdb
import scenario
from conftest import DEFAULT_POLICY, ROOT, golden

from rulekit.decision.engine import Engine
from rulekit.model import Signal
from rulekit.policy.loader import load_policy
from rulekit.trading.account import Account
from rulekit.trading.trade_manager import TradeManager

CLI = [sys.executable, str(ROOT / "cli.py")]
NOON_05 = scenario.START + timedelta(hours=12, minutes=5)
DAY_BEFORE = (scenario.START - timedelta(hours=12)).isoformat()   # 2024-01-01 12:00


def late_signal(signal_id: str = "LATE") -> dict:
    return golden(signal_id=signal_id, timestamp=DAY_BEFORE, consensus="UNANIMOUS",
                  confidence=0.9)


def test_a_signal_older_than_the_account_clock_is_decided_at_the_clock_and_rejected_as_stale():
    manager = TradeManager(Engine(load_policy(DEFAULT_POLICY)), Account.new(10_000))
    manager.account.advance(NOON_05.timestamp(), manager.limits)
    until = manager.account.circuit_breaker_until
    day = manager.account.day_started_at
    decision, trade = manager.on_signal(Signal.from_record(late_signal()))
    assert decision.reason == "stale_market_data" and trade is None
    _, _, _, decided_at = manager.journal.decisions[-1]
    assert decided_at == NOON_05.timestamp()          # the clock did not go back
    assert manager.account.as_of == NOON_05.timestamp()
    assert manager.account.day_started_at == day and manager.account.circuit_breaker_until == until


def test_evaluate_bars_rejects_a_signal_stamped_before_the_accounts_clock_as_stale(tmp_path):
    bars = scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                               NOON_05 + timedelta(minutes=5))     # last bar opens at 12:05
    db = tmp_path / "audit.duckdb"
    # A and B of the scenario; the run commits the account at its last bar, 12:05 (its clock)
    scenario.write_signals(tmp_path / "ab.jsonl", ids="AB")
    first = subprocess.run(CLI + ["evaluate", "--policy", str(DEFAULT_POLICY), "--bars", str(bars),
                                  "--equity", "10000", "--audit", str(db),
                                  str(tmp_path / "ab.jsonl")],
                           capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    (tmp_path / "late.jsonl").write_text(json.dumps(late_signal()) + "\n")
    late = subprocess.run(CLI + ["evaluate", "--policy", str(DEFAULT_POLICY), "--bars", str(bars),
                                 "--audit", str(db), "--json", str(tmp_path / "late.jsonl")],
                          capture_output=True, text=True, timeout=60)
    assert late.returncode == 0, late.stderr
    decision = json.loads(late.stdout.splitlines()[0])
    assert decision["event"] == "DECISION" and decision["reason"] == "stale_market_data"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM trades").fetchone() == (2,)   # A, B
        decided = con.execute("SELECT decided_at FROM decisions WHERE signal_id = 'LATE'"
                              ).fetchone()[0]
    assert decided.astimezone(UTC) == NOON_05                # the clock, not the signal's time


def test_run_rejects_a_signal_appended_late_to_the_followed_file_as_stale(tmp_path):
    bars = scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                               scenario.START + timedelta(days=1))
    signals = tmp_path / "signals.jsonl"
    signals.write_text("")
    db = tmp_path / "run.duckdb"
    process = subprocess.Popen(
        CLI + ["run", "--policy", str(DEFAULT_POLICY), "--replay", str(bars), "--signals-from",
               str(signals), "--equity", "10000", "--audit", str(db), "--speed", "100",
               "--status-every", "12", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while True:  # until the run's clock is past 10:00 on the first day
        line = process.stderr.readline()
        assert line, process.stdout.read()
        if line.startswith("status: ") and line[8:24] >= "2024-01-02T10:00":
            break
    with signals.open("a") as handle:
        handle.write(json.dumps(late_signal()) + "\n")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    decision = next(json.loads(line) for line in out.splitlines()
                    if json.loads(line)["event"] == "DECISION")
    assert decision["signal_id"] == "LATE" and decision["reason"] == "stale_market_data"
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM trades").fetchone() == (0,)
        decided = con.execute("SELECT decided_at FROM decisions").fetchone()[0]
    assert decided.astimezone(UTC) >= datetime(2024, 1, 2, 10, tzinfo=UTC)
