"""Replaying a backtest under a stricter policy flips exactly the decisions the change targets."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import duckdb
import pytest
from conftest import DEFAULT_POLICY, EXAMPLE_CANDLES, ROOT


def rulekit(*args, cwd, env=None):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_a_stricter_confidence_gate_flips_exactly_the_approvals_between_the_thresholds(tmp_path):
    db = tmp_path / "audit.duckdb"
    done = rulekit("backtest", "--policy", DEFAULT_POLICY, "--data", EXAMPLE_CANDLES, "--json",
                   "--audit", db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    with duckdb.connect(str(db), read_only=True) as con:
        between = {seq for (seq,) in con.execute(
            "SELECT seq FROM decisions WHERE run_id = ? AND approved "
            "AND confidence >= 0.70 AND confidence < 0.80", [run_id]).fetchall()}
    assert len(between) > 100

    replayed = rulekit("replay", "--policy", DEFAULT_POLICY, "--run", run_id, "--audit", db,
                       "--json", cwd=tmp_path, env={"RM_MIN_CONFIDENCE": "0.80"})
    assert replayed.returncode == 0, replayed.stderr
    out = json.loads(replayed.stdout)
    assert set(out["flipped_seqs"]) == between
    assert out["became_rejected"] == {"min_confidence": len(between)}
    assert out["became_approved"] == {} and out["size_changes"] == 0
    new = out["backtest"]["new"]
    assert new["trades"] < out["backtest"]["old"]["trades"]
    with duckdb.connect(str(db), read_only=True) as con:
        mode, rows = con.execute("SELECT any_value(mode), count(*) FROM decisions WHERE run_id = ?",
                                 [out["replay_run_id"]]).fetchone()
    assert (mode, rows) == ("replay", out["decisions"])


def test_replaying_under_the_same_policy_changes_nothing(tmp_path):
    signals = ROOT / "examples" / "signals.jsonl"
    db = tmp_path / "audit.duckdb"
    done = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--audit", db,
                   signals, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        run_id = con.execute("SELECT run_id FROM runs").fetchone()[0]
    replayed = rulekit("replay", "--policy", DEFAULT_POLICY, "--run", run_id, "--audit", db,
                       "--json", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    out = json.loads(replayed.stdout)
    assert out["flipped_seqs"] == [] and out["reason_changed"] == 0 and out["decisions"] == 11
    assert "backtest" not in out


def test_an_unknown_run_is_a_user_error(tmp_path):
    db = tmp_path / "audit.duckdb"
    rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--audit", db,
            ROOT / "examples" / "signals.jsonl", cwd=tmp_path)
    result = rulekit("replay", "--policy", DEFAULT_POLICY, "--run", "nope", "--audit", db,
                     cwd=tmp_path)
    assert result.returncode == 2 and "no run 'nope'" in result.stderr


def test_a_backtest_is_run_again_from_its_recorded_inputs_wherever_replay_runs(tmp_path):
    """The inputs are stored with the run (``runs.inputs``), not re-read from its command line:
    relative paths given to the backtest still name the same files from another directory."""
    import shutil

    where = tmp_path / "research"
    where.mkdir()
    shutil.copy(ROOT / "examples" / "data" / "crypto_BTC-USDT-PERP_5m.csv", where / "btc.csv")
    db = tmp_path / "audit.duckdb"
    done = rulekit("backtest", "--policy", DEFAULT_POLICY, "--data", "BTCUSDT=btc.csv", "--equity",
                   5_000, "--slippage-bps", 2, "--json", "--audit", db, cwd=where)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["trades"] > 0  # btc.csv alone named no market: every signal was rejected
    with duckdb.connect(str(db), read_only=True) as con:
        inputs = json.loads(con.execute("SELECT inputs FROM runs WHERE run_id = ?",
                                        [figures["run_id"]]).fetchone()[0])
    assert inputs == {"data": [f"BTCUSDT={where / 'btc.csv'}"], "signals": None, "equity": 5_000,
                      "slippage_bps": 2}
    replayed = rulekit("replay", "--policy", DEFAULT_POLICY, "--run", figures["run_id"],
                       "--audit", db, "--json", cwd=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    backtest = json.loads(replayed.stdout)["backtest"]
    assert isinstance(backtest["new"], dict), backtest["new"]
    assert backtest["new"]["trades"] == backtest["old"]["trades"] == figures["trades"]
    assert backtest["new"]["final_equity"] == pytest.approx(figures["final_equity"])
