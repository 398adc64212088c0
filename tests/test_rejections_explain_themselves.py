"""A rejection says what its rule compared, in the numbers it compared: in `evaluate --json`, in
the table with --explain, and in the audit (`decisions.failed`); a malformed line says its line."""
from __future__ import annotations

import json
import subprocess
import sys

import duckdb
from conftest import DEFAULT_POLICY, ROOT, golden

LINES = [json.dumps(golden(signal_id="low", confidence=0.68)),
         json.dumps(golden(signal_id="stale", timestamp="2026-01-05T12:03:00Z",
                           market_timestamp="2026-01-05T12:00:00Z")),
         "{not json",
         json.dumps(golden(signal_id="fine"))]


def evaluate(tmp_path, *extra):
    (tmp_path / "signals.jsonl").write_text("\n".join(LINES) + "\n")
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), "evaluate", "--policy",
                           str(DEFAULT_POLICY), "--equity", "10000", "--audit",
                           str(tmp_path / "a.duckdb"), *extra, str(tmp_path / "signals.jsonl")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_a_rejection_carries_the_numbers_its_rule_compared_in_json_and_the_audit(tmp_path):
    lines = [json.loads(line) for line in evaluate(tmp_path, "--json").splitlines()]
    by_id = {line["signal_id"]: line for line in lines}
    low = by_id["low"]
    assert low["reason"] == "min_confidence"
    assert low["failed"]["confidence"] == 0.68 and low["failed"]["min_confidence"] == 0.7
    stale = by_id["stale"]
    assert stale["reason"] == "stale_market_data"
    assert stale["failed"] == {"market_data_age_seconds": 180.0, "max_market_data_age_seconds": 60.0}
    malformed = next(line for line in lines if line["reason"] == "malformed_signal")
    assert malformed["failed"] == {"line": 3}
    assert "failed" not in by_id["fine"]
    with duckdb.connect(str(tmp_path / "a.duckdb"), read_only=True) as con:
        logged = dict(con.execute("SELECT coalesce(signal_id, reason), failed FROM decisions"
                                  ).fetchall())
    assert json.loads(logged["low"]) == low["failed"]
    assert json.loads(logged["stale"]) == stale["failed"]
    assert json.loads(logged["malformed_signal"]) == {"line": 3}
    assert logged["fine"] is None


def test_the_table_with_explain_shows_what_a_rejection_compared(tmp_path):
    table = evaluate(tmp_path, "--explain")
    assert "#1 min_confidence: confidence 0.68, is_volatile false, min_confidence 0.7" in table
    assert ("#2 stale_market_data: market_data_age_seconds 180.0, max_market_data_age_seconds "
            "60.0") in table
    assert "#3 malformed_signal: line 3" in table
    assert "#1 min_confidence:" not in evaluate(tmp_path)   # without --explain, the table only
