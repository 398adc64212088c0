"""Every saved query on a database filled by a real backtest, cross-checked with its figures."""
from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import DEFAULT_POLICY, EXAMPLE_CANDLES, ROOT

from audit.queries import QueryError, run_query, saved_queries, saved_query


def rulekit(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def backtested(tmp_path_factory):
    where = tmp_path_factory.mktemp("audit")
    db = where / "audit.duckdb"
    result = rulekit("backtest", "--policy", DEFAULT_POLICY, "--data", EXAMPLE_CANDLES, "--json",
                     "--audit", db, cwd=where)
    assert result.returncode == 0, result.stderr
    return db, json.loads(result.stdout)


def rows_of(db, name, **params):
    columns, rows = run_query(db, saved_query(name).sql, {k: str(v) for k, v in params.items()})
    return [dict(zip(columns, row, strict=False)) for row in rows]


def test_every_saved_query_says_what_it_answers():
    queries = saved_queries()
    assert {"rejections_by_reason", "approval_rate_per_day", "r_by_consensus_and_confidence",
            "daily_pnl_and_drawdown", "circuit_breaker_trips", "slowest_decisions",
            "training_set"} <= set(queries)
    assert all(len(q.description) > 30 for q in queries.values())


def test_rejections_by_reason_match_the_backtest(backtested):
    db, figures = backtested
    rows = rows_of(db, "rejections_by_reason")
    assert {r["reason"]: r["rejected"] for r in rows} == figures["rejections"]
    assert sum(r["share"] for r in rows) == pytest.approx(1, abs=1e-3)
    assert {(r["policy"], r["version"]) for r in rows} == {("default", 3)}


def test_approval_rate_per_day_adds_up_to_the_run(backtested):
    db, figures = backtested
    rows = rows_of(db, "approval_rate_per_day")
    assert sum(r["decisions"] for r in rows) == figures["signals"]
    assert sum(r["approved"] for r in rows) == figures["approved"]


def test_r_by_consensus_covers_every_trade(backtested):
    db, figures = backtested
    rows = rows_of(db, "r_by_consensus_and_confidence")
    assert sum(r["trades"] for r in rows) == figures["trades"]
    average = sum(r["avg_r"] * r["trades"] for r in rows) / figures["trades"]
    assert average == pytest.approx(figures["avg_r"], abs=1e-3)


def test_daily_pnl_ends_at_the_final_equity(backtested):
    db, figures = backtested
    rows = rows_of(db, "daily_pnl_and_drawdown")
    assert rows[-1]["equity"] == pytest.approx(figures["final_equity"], rel=1e-9)
    assert all(r["drawdown_pct"] >= 0 for r in rows)


def test_circuit_breaker_trips_are_the_runs_trips(backtested):
    db, figures = backtested
    rows = rows_of(db, "circuit_breaker_trips")
    assert len(rows) == figures["circuit_breaker_trips"] > 0
    assert all("entries paused until" in r["detail"] for r in rows)


def test_slowest_decisions_honours_its_parameter(backtested):
    db, _ = backtested
    rows = rows_of(db, "slowest_decisions", top=5)
    assert len(rows) == 5
    assert [r["decide_us"] for r in rows] == sorted((r["decide_us"] for r in rows), reverse=True)


def test_the_training_export_has_one_row_per_trade_with_features_and_outcome(backtested,
                                                                           tmp_path):
    db, figures = backtested
    out = tmp_path / "train.parquet"
    result = rulekit("audit", "export", out, "--audit", db, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert table.num_rows == figures["trades"]
    for column in ("confidence", "consensus", "atr_pct", "consecutive_losses", "r_multiple",
                   "mfe_r", "mae_r", "exit_reason", "holding_seconds"):
        assert column in table.column_names
    assert sum(table.column("r_multiple").to_pylist()) / table.num_rows == pytest.approx(
        figures["avg_r"])


def test_sql_from_the_command_line_as_json_and_csv(backtested, tmp_path):
    db, figures = backtested
    result = rulekit("audit", "sql", "SELECT count(*) AS n FROM decisions", "--audit", db,
                     "--json", cwd=tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout) == {"n": figures["signals"]}
    result = rulekit("audit", "query", "rejections_by_reason", "--audit", db, "--csv",
                     cwd=tmp_path)
    assert result.stdout.splitlines()[0] == "policy,version,mode,reason,rejected,share"


def test_bad_sql_and_unknown_queries_are_user_errors(backtested, tmp_path):
    db, _ = backtested
    with pytest.raises(QueryError, match="no saved query"):
        saved_query("nope")
    result = rulekit("audit", "sql", "SELEC 1", "--audit", db, cwd=tmp_path)
    assert result.returncode == 2 and "query failed" in result.stderr
    assert "Traceback" not in result.stderr
    result = rulekit("audit", "sql", "DELETE FROM decisions", "--audit", db, cwd=tmp_path)
    assert result.returncode == 2  # read-only: the log cannot be edited from here


def test_an_unwritable_export_or_report_is_a_user_error(backtested, tmp_path):
    db, _ = backtested
    result = rulekit("audit", "export", "/nonexistent/out.parquet", "--audit", db, cwd=tmp_path)
    assert result.returncode == 2 and "cannot write the export" in result.stderr
    assert "Traceback" not in result.stderr
    result = rulekit("backtest", "--policy", DEFAULT_POLICY, "--data", EXAMPLE_CANDLES,
                     "--report", "/nonexistent/r.html", "--audit", tmp_path / "b.duckdb",
                     cwd=tmp_path)
    assert result.returncode == 2 and "no such directory" in result.stderr
    assert "Traceback" not in result.stderr
