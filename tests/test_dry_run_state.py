"""A dry run against the database's account decides each signal against the account as it would
be at the signal's time (new day, new week, breaker pause over), by the rule every mode uses
(`Account.advance`), and writes no account state."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb
from conftest import DEFAULT_POLICY, golden
from test_cli import rulekit

from audit import AuditLog
from audit.risk_store import RiskStore
from rulekit.trading.account import Account, day_start, week_start

# The account's last change: Tuesday 2026-11-24 15:00 UTC, 4% down on the day (limit 3%).
LAST_CHANGE = datetime(2026, 11, 24, 15, tzinfo=UTC).timestamp()


def account_database(tmp_path, engine, **changes):
    account = Account.new(10_000.0)
    account.closed_pnl = -400.0
    account.day_started_at, account.day_start_equity = day_start(LAST_CHANGE), 10_000.0
    account.week_started_at, account.week_start_equity = week_start(LAST_CHANGE), 10_000.0
    account.as_of = account.last_equity = LAST_CHANGE
    for name, value in changes.items():
        setattr(account, name, value)
    path = tmp_path / "audit.duckdb"
    with AuditLog(path) as audit:
        RiskStore(audit).save(audit.start_run(engine, "simulate"), account)
    return path


def dry_run(tmp_path, database, *signals):
    path = tmp_path / "signals.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for s in signals))
    done = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--json", "--audit", database, path,
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def account_rows(database):
    with duckdb.connect(str(database), read_only=True) as db:
        return db.execute("SELECT * FROM account_state").fetchall()


def test_a_dry_run_on_a_later_day_is_not_rejected_for_the_old_days_drawdown(tmp_path, engine):
    database = account_database(tmp_path, engine)
    same_day, next_day = dry_run(tmp_path, database,
                                 golden(signal_id="same", timestamp="2026-11-24T16:00:00Z"),
                                 golden(signal_id="next", timestamp="2026-11-25T09:00:00Z"))
    assert (same_day["approved"], same_day["reason"]) == (False, "daily_drawdown")
    assert next_day["approved"], next_day  # the new day starts at 9,600


def test_a_dry_run_in_a_later_week_measures_the_week_from_its_start(tmp_path, engine):
    # 11% down on the week (limit 10%); the day's start and the breaker's reference already at
    # today's equity (a trip reset it)
    database = account_database(tmp_path, engine, closed_pnl=-1_100.0, day_start_equity=8_900.0,
                                breaker_reference_equity=8_900.0)
    this_week, next_week = dry_run(tmp_path, database,
                                   golden(signal_id="this", timestamp="2026-11-27T09:00:00Z"),
                                   golden(signal_id="next", timestamp="2026-11-30T09:00:00Z"))
    assert this_week["reason"] == "weekly_drawdown"
    assert next_week["reason"] != "weekly_drawdown"


def test_a_dry_run_sees_a_due_breaker_trip_at_the_signals_time(tmp_path, engine):
    # 6% below the breaker's reference while a pause ran (which holds the trip back), pause over
    # at 16:00: the first advance after it trips the breaker again
    database = account_database(tmp_path, engine, closed_pnl=-600.0, day_start_equity=9_400.0,
                                week_start_equity=9_400.0,
                                circuit_breaker_until=LAST_CHANGE + 3600)
    (later,) = dry_run(tmp_path, database,
                       golden(signal_id="later", timestamp="2026-11-24T17:00:00Z"))
    assert later["reason"] == "circuit_breaker"


def test_a_dry_run_writes_no_account_state(tmp_path, engine):
    database = account_database(tmp_path, engine)
    before = account_rows(database)
    dry_run(tmp_path, database, golden(signal_id="next", timestamp="2026-11-25T09:00:00Z"))
    assert account_rows(database) == before
