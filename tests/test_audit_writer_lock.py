"""One writer per account: a second `rulekit run` (or `evaluate --bars`, or a backtest) on the
database of a running one is refused and told who holds it; readers keep working; the lock of a
writer killed with SIGKILL is free at once (the kernel drops it with the process)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from datetime import timedelta

import duckdb
import pytest
import scenario
from conftest import DEFAULT_POLICY, ROOT
from scenario import fee_free  # noqa: F401  (autouse: the scenario is worked before fees)


@pytest.fixture
def market(tmp_path):
    scenario.write_signals(tmp_path / "signals.jsonl")
    scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                        scenario.START + timedelta(days=3))
    return tmp_path


def run_command(where, db, speed=0):
    return [sys.executable, str(ROOT / "cli.py"), "run", "--policy", str(DEFAULT_POLICY),
            "--replay", str(where / "BTCUSDT.csv"), "--signals-from",
            str(where / "signals.jsonl"), "--equity", "10000", "--audit", str(db), "--speed",
            str(speed), "--json"]


def rulekit(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def decisions(db):
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT signal_id, reason FROM decisions WHERE mode = 'paper' "
                           "ORDER BY signal_id").fetchall()


def test_a_second_writer_is_refused_with_the_holder_named_while_readers_still_work(market):
    db = market / "run.duckdb"
    first = subprocess.Popen(run_command(market, db, speed=50), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline(), first.stderr.read()   # trading: it holds the account
        holder = f"pid {first.pid} on {socket.gethostname()} since "
        second = subprocess.run(run_command(market, db), capture_output=True, text=True,
                                timeout=120)
        simulate = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--bars",
                           market / "BTCUSDT.csv", "--audit", db, market / "signals.jsonl",
                           cwd=market)
        backtest = rulekit("backtest", "--policy", DEFAULT_POLICY, "--data",
                           market / "BTCUSDT.csv", "--signals", market / "signals.jsonl",
                           "--audit", db, cwd=market)
        for refused in (second, simulate, backtest):
            assert refused.returncode == 2, refused.stderr
            assert len(refused.stderr.splitlines()) == 1 and "Traceback" not in refused.stderr
            assert holder in refused.stderr and "(rulekit run --exchange paper)" in refused.stderr
            assert "one writer per account" in refused.stderr
        state = rulekit("state", "--audit", db, "--json", cwd=market)
        query = rulekit("audit", "sql", "SELECT count(*) AS n FROM decisions", "--audit", db,
                        "--json", cwd=market)
        assert state.returncode == 0, state.stderr
        assert query.returncode == 0, query.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    rows = decisions(db)
    assert len(rows) == len({signal_id for signal_id, _ in rows})  # nothing decided twice
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM trade_events WHERE event = 'OPEN'").fetchone()[0] \
            == con.execute("SELECT count(DISTINCT trade_id) FROM trade_events").fetchone()[0]


def test_the_lock_of_a_sigkilled_writer_is_free_for_the_next_one(market):
    db = market / "run.duckdb"
    killed = subprocess.Popen(run_command(market, db, speed=150), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    assert killed.stdout.readline(), killed.stderr.read()
    assert json.loads((market / "run.duckdb.lock").read_text())["pid"] == killed.pid
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait(timeout=30)
    assert killed.returncode == -signal.SIGKILL
    resumed = subprocess.run(run_command(market, db), capture_output=True, text=True,
                             timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert dict(decisions(db)) == scenario.EXPECTED
    assert (market / "run.duckdb.lock").read_text() == ""   # released at its exit
