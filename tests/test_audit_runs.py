"""One audit database holds many runs: queries, `audit sql` and the export read one run
(`--run ID|last`) or one mode (`--mode`), say so when they count several together, `audit runs`
lists them, `replay --run last` finds the latest, and `state` after backtests says where their
accounts are instead of "no account yet"."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from conftest import DEFAULT_POLICY, ROOT, TEST_DATA
from test_cli import rulekit

XRP = TEST_DATA / "binance_XRP-USDT-PERP_5m.csv"
NOTE = "note: 4 runs (2 backtest, 1 dry-run, 1 replay) are counted together"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two identical backtests, a dry run and a replay, in that order, in one database."""
    where = tmp_path_factory.mktemp("runs")
    db = where / "audit.duckdb"
    figures = []
    for _ in range(2):
        done = rulekit("backtest", "--policy", DEFAULT_POLICY, "--data", XRP, "--json",
                       "--audit", db, cwd=where)
        assert done.returncode == 0, done.stderr
        figures.append(json.loads(done.stdout))
    done = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--audit", db,
                   ROOT / "examples" / "signals.jsonl", cwd=where)
    assert done.returncode == 0, done.stderr
    done = rulekit("replay", "--policy", DEFAULT_POLICY, "--run", figures[0]["run_id"],
                   "--audit", db, cwd=where)
    assert done.returncode == 0, done.stderr
    assert figures[0]["trades"] > 0
    return where, db, figures


def query(runs, *args):
    where, db, _ = runs
    done = rulekit("audit", *args, "--audit", db, cwd=where)
    assert done.returncode == 0, done.stderr
    return done


def rows(done):
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_saved_queries_over_every_run_say_they_count_several_together(runs):
    done = query(runs, "query", "rejections_by_reason", "--json")
    assert done.stderr.startswith(NOTE)
    backtest = [r for r in rows(done) if r["mode"] == "backtest"]
    assert sum(r["rejected"] for r in backtest) == 2 * sum(runs[2][1]["rejections"].values())


def test_run_last_counts_the_last_runs_rejections_once(runs):
    _, _, figures = runs
    by_reason = {r["reason"]: r["rejected"] for r in rows(query(
        runs, "query", "rejections_by_reason", "--json", "--run", figures[1]["run_id"]))}
    assert by_reason == figures[1]["rejections"]
    last = query(runs, "query", "rejections_by_reason", "--json", "--run", "last",
                 "--mode", "backtest")
    assert {r["reason"]: r["rejected"] for r in rows(last)} == figures[1]["rejections"]
    assert last.stderr == ""


def test_mode_keeps_only_that_modes_decisions(runs):
    modes = {r["mode"] for r in rows(query(runs, "query", "approval_rate_per_day", "--json",
                                           "--mode", "dry-run"))}
    assert modes == {"dry-run"}


def test_export_of_one_run_holds_each_of_its_trades_once(runs, tmp_path):
    _, _, figures = runs
    out = tmp_path / "one.parquet"
    done = query(runs, "export", out, "--run", figures[0]["run_id"])
    table = pq.read_table(out).to_pylist()
    assert len(table) == len({r["trade_id"] for r in table}) == figures[0]["trades"]
    assert {r["mode"] for r in table} == {"backtest"} and done.stderr == ""
    every = tmp_path / "all.parquet"
    assert query(runs, "export", every).stderr.startswith(NOTE)
    assert pq.read_table(every).num_rows == 2 * figures[0]["trades"]


def test_audit_sql_with_run_sees_only_that_runs_rows(runs):
    _, _, figures = runs
    done = query(runs, "sql", "SELECT count(DISTINCT run_id) AS runs, count(*) AS n FROM "
                              "decisions", "--json", "--run", figures[0]["run_id"])
    assert rows(done) == [{"runs": 1, "n": figures[0]["signals"]}]


def test_audit_runs_lists_every_run_with_its_policy_and_figures(runs):
    _, _, figures = runs
    listed = rows(query(runs, "runs", "--json"))
    assert [r["mode"] for r in listed] == ["backtest", "backtest", "dry-run", "replay"]
    first = listed[0]
    assert first["run"] == figures[0]["run_id"]
    assert (first["policy"], first["version"]) == ("default", 3)
    assert first["decisions"] == figures[0]["signals"]
    assert first["approved"] == figures[0]["approved"]
    assert first["trades"] == figures[0]["trades"]
    assert first["pnl"] == pytest.approx(figures[0]["final_equity"] - 10_000, abs=0.01)
    assert first["first_decision"] < first["last_decision"]


def test_an_unknown_run_is_one_line(runs):
    where, db, _ = runs
    done = rulekit("audit", "query", "rejections_by_reason", "--run", "nope", "--audit", db,
                   cwd=where)
    assert done.returncode == 2
    assert done.stderr == ("error: no run 'nope' in this audit database (`rulekit audit runs` "
                           "lists them)\n")


def test_replay_run_last_replays_the_latest_run_that_is_not_a_replay(runs):
    where, db, _ = runs
    done = rulekit("replay", "--policy", DEFAULT_POLICY, "--run", "last", "--audit", db, "--json",
                   cwd=where)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    dry_run = rows(query(runs, "runs", "--json", "--mode", "dry-run"))[0]["run"]
    assert (out["run_id"], out["mode"]) == (dry_run, "dry-run")


def test_state_after_backtests_says_the_database_holds_backtest_runs(runs):
    where, db, figures = runs
    done = rulekit("state", "--audit", db, cwd=where)
    assert done.returncode == 2
    assert "no account yet" not in done.stderr
    assert "only 2 backtest run(s), each with its own: `rulekit state --run last`" in done.stderr
    assert figures[1]["run_id"] in done.stderr
    shown = rulekit("state", "--audit", db, "--run", "last", "--json", cwd=where)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["equity"] == pytest.approx(figures[1]["final_equity"])
