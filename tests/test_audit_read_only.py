"""Reading the audit log writes nothing: `rulekit state`, the `audit` commands and replay's reading
leave the database byte for byte as it was, its mtime too, and no file beside it."""
from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from datetime import timedelta

import duckdb
import scenario
from conftest import DEFAULT_POLICY, ROOT
from scenario import fee_free  # noqa: F401  (autouse: the scenario is worked before fees)

from audit.log import SCHEMA_VERSION


def rulekit(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def snapshot(db):
    """The database's bytes and mtime, and what lies beside it."""
    return (hashlib.sha256(db.read_bytes()).hexdigest(), db.stat().st_mtime_ns,
            sorted(p.name for p in db.parent.iterdir() if p.name.startswith(db.name)))


def test_read_commands_leave_the_database_unchanged(tmp_path):
    scenario.write_signals(tmp_path / "signals.jsonl")
    scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                        scenario.START + timedelta(days=3))
    db = tmp_path / "run.duckdb"
    done = rulekit("run", "--policy", DEFAULT_POLICY, "--replay", tmp_path / "BTCUSDT.csv",
                   "--signals-from", tmp_path / "signals.jsonl", "--equity", 10_000, "--audit",
                   db, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    before = snapshot(db)
    time.sleep(0.01)  # a write now would show in the mtime
    out = tmp_path / "exports"
    out.mkdir()
    for args in (["state"], ["state", "--json"], ["audit", "query", "rejections_by_reason"],
                 ["audit", "query", "daily_pnl_and_drawdown", "--json"],
                 ["audit", "sql", "SELECT count(*) FROM decisions", "--csv"],
                 ["audit", "export", out / "train.parquet"],
                 ["audit", "export", out / "train.csv", "--format", "csv"]):
        result = rulekit(*args, "--audit", db, cwd=tmp_path)
        assert result.returncode == 0, (args, result.stderr)
        assert snapshot(db) == before, f"rulekit {' '.join(map(str, args))} changed the database"
    # replay reads the run it is asked for before it writes anything: an unknown one writes nothing
    result = rulekit("replay", "--policy", DEFAULT_POLICY, "--run", "nope", "--audit", db,
                     cwd=tmp_path)
    assert result.returncode == 2 and "no run 'nope'" in result.stderr
    assert snapshot(db) == before


def test_a_reader_reads_an_older_database_as_it_is_and_a_writer_upgrades_it(tmp_path):
    db = tmp_path / "v2.duckdb"
    scenario.write_signals(tmp_path / "signals.jsonl", "A")
    scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                        scenario.START + timedelta(hours=11))
    done = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--bars",
                   tmp_path / "BTCUSDT.csv", "--audit", db, tmp_path / "signals.jsonl",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with duckdb.connect(str(db)) as con:  # as version 2 left it: runs without inputs
        con.execute("ALTER TABLE runs DROP COLUMN inputs")
        con.execute("UPDATE schema_info SET version = 2")
    before = snapshot(db)
    state = rulekit("state", "--audit", db, "--json", cwd=tmp_path)
    assert state.returncode == 0, state.stderr
    assert snapshot(db) == before
    again = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--bars", tmp_path / "BTCUSDT.csv",
                    "--audit", db, tmp_path / "signals.jsonl", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT max(version) FROM schema_info").fetchone()[0] == SCHEMA_VERSION
        assert "inputs" in {row[0] for row in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'runs'").fetchall()}
        assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == 2
