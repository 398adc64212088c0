"""The audit database over time and between processes: migrations, and reading while writing."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest
from conftest import DEFAULT_POLICY, ROOT

from audit import AuditLog
from audit.log import SCHEMA_VERSION
from audit.queries import run_query
from rulekit.errors import StateError

WRITER = f'''
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from audit import AuditLog
from rulekit.decision.engine import Engine, SignalColumns
from rulekit.policy.loader import load_policy
from rulekit.inputs.signal_files import read_signals
engine = Engine(load_policy({str(DEFAULT_POLICY)!r}))
batch = engine.decide_batch(SignalColumns.from_signals(
    read_signals({str(ROOT / "examples" / "signals.jsonl")!r})), equity=10_000)
audit = AuditLog(sys.argv[1], hold=False)
run_id = audit.start_run(engine, "live")
for n in range(int(sys.argv[2])):
    audit.write_batch(run_id, "live", batch)
    print(n, flush=True)
    time.sleep(0.01)
audit.close()
'''


def test_a_version_1_database_is_upgraded_and_keeps_its_rows(tmp_path):
    db = tmp_path / "old.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute((Path(__file__).parent / "schema_v1.sql").read_text())
        con.execute("INSERT INTO schema_info VALUES (1)")
        con.execute("INSERT INTO runs VALUES ('r1', 'dry-run', '', 'h', now())")
    with AuditLog(db) as audit:
        assert audit.db.execute("SELECT max(version) FROM schema_info").fetchone()[0] == (
            SCHEMA_VERSION)
        columns = {row[0] for row in audit.db.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'decisions'").fetchall()}
        assert {"breaker_reference_equity", "history_bars", "decide_us"} <= columns
        assert "inputs" in {row[0] for row in audit.db.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'runs'").fetchall()}
        assert audit.db.execute("SELECT count(*) FROM runs").fetchone()[0] == 1
        tables = {row[0] for row in audit.db.execute("SELECT table_name FROM duckdb_tables()")
                  .fetchall()}
        assert {"account_state", "trades", "trade_events", "risk_events"} <= tables


def test_a_database_from_a_newer_rulekit_is_refused(tmp_path):
    db = tmp_path / "new.duckdb"
    AuditLog(db).close()
    with duckdb.connect(str(db)) as con:
        con.execute("UPDATE schema_info SET version = 99")
    with pytest.raises(StateError, match="schema version 99.*upgrade rulekit"):
        AuditLog(db)


def test_a_risk_manager_can_query_while_another_process_writes(tmp_path):
    db = tmp_path / "live.duckdb"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db), "150"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "0"
    counts = []
    for _ in range(15):
        _, rows = run_query(db, "SELECT count(*) FROM decisions")
        counts.append(rows[0][0])
        time.sleep(0.02)
    cli = subprocess.run([sys.executable, str(ROOT / "cli.py"), "audit", "sql",
                          "SELECT count(*) AS n FROM decisions", "--audit", str(db), "--csv"],
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 0, cli.stderr
    writer.wait(timeout=60)
    assert writer.returncode == 0, writer.stderr.read()
    assert counts == sorted(counts) and counts[0] >= 11 and counts[-1] < 150 * 11
    _, rows = run_query(db, "SELECT count(*) FROM decisions")
    assert rows[0][0] == 150 * 11   # every batch the writer committed is there
