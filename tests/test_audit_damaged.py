"""A damaged database is refused before anything writes to it: every command says so in one line
and leaves the file byte for byte as it was; a fresh account is never started over a file."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from datetime import timedelta

import duckdb
import pytest
import scenario
from conftest import DEFAULT_POLICY, ROOT
from scenario import fee_free  # noqa: F401  (autouse: the scenario is worked before fees)


@pytest.fixture(scope="module")
def traded(tmp_path_factory):
    """A database filled by a real paper run (the scenario: trades, an open one, paper orders)."""
    where = tmp_path_factory.mktemp("damaged")
    scenario.write_signals(where / "signals.jsonl")
    scenario.write_bars(where / "BTCUSDT.csv", scenario.START, scenario.START + timedelta(days=3))
    done = subprocess.run(run_command(where, where / "traded.duckdb"), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return where


def run_command(where, db):
    return [sys.executable, str(ROOT / "cli.py"), "run", "--policy", str(DEFAULT_POLICY),
            "--replay", str(where / "BTCUSDT.csv"), "--signals-from",
            str(where / "signals.jsonl"), "--equity", "10000", "--audit", str(db), "--json"]


def rulekit(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def every_command(where, db):
    return {
        "evaluate": ["evaluate", "--policy", DEFAULT_POLICY, "--audit", db,
                     ROOT / "examples" / "signals.jsonl"],
        "evaluate --bars": ["evaluate", "--policy", DEFAULT_POLICY, "--bars",
                            where / "BTCUSDT.csv", "--audit", db, where / "signals.jsonl"],
        "state": ["state", "--audit", db],
        "run": run_command(where, db)[2:],
        "audit sql": ["audit", "sql", "SELECT count(*) FROM decisions", "--audit", db],
        "replay": ["replay", "--policy", DEFAULT_POLICY, "--run", "any", "--audit", db],
        "backtest": ["backtest", "--policy", DEFAULT_POLICY, "--data", where / "BTCUSDT.csv",
                     "--signals", where / "signals.jsonl", "--audit", db],
    }


def test_a_truncated_database_is_refused_by_every_command_without_a_byte_written(traded):
    db = traded / "half.duckdb"
    whole = (traded / "traded.duckdb").read_bytes()
    db.write_bytes(whole[:len(whole) // 2])
    before = digest(db)
    for name, args in every_command(traded, db).items():
        result = rulekit(*args, cwd=traded)
        assert result.returncode == 2, (name, result.stderr)
        assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, name
        assert result.stderr.startswith(f"error: database damaged: {db}: the file is truncated")
        assert result.stderr.rstrip().endswith("(restore from backup or start a new file)")
        assert digest(db) == before, f"{name} wrote to the damaged file"


@pytest.mark.parametrize("content", [b"", b"not a database\n", b"DUCK" * 5000])
def test_a_file_that_is_not_an_audit_database_never_gets_a_fresh_account(traded, content):
    db = traded / "other.duckdb"
    db.write_bytes(content)
    result = subprocess.run(run_command(traded, db), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "database damaged:" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert db.read_bytes() == content


def test_a_duckdb_file_of_something_else_is_not_taken_for_an_audit_database(traded):
    db = traded / "elsewhere.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE prices (symbol VARCHAR, price DOUBLE)")
    before = digest(db)
    result = rulekit("state", "--audit", db, cwd=traded)
    run = subprocess.run(run_command(traded, db), capture_output=True, text=True, timeout=120)
    for refused in (result, run):
        assert refused.returncode == 2 and "no schema_info table" in refused.stderr
    assert digest(db) == before


def test_an_account_whose_state_row_is_gone_is_not_started_afresh(traded):
    db = traded / "lost.duckdb"
    db.write_bytes((traded / "traded.duckdb").read_bytes())
    with duckdb.connect(str(db)) as con:
        con.execute("DELETE FROM account_state")
    result = subprocess.run(run_command(traded, db), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "database damaged:" in result.stderr and "no account_state row" in result.stderr
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM account_state").fetchone()[0] == 0
