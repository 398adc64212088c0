"""The saved SQL queries risk managers run (``audit/queries/*.sql``), and running any SQL read-only.

Each saved query starts with ``--`` comment lines saying what it answers; those lines are its
description in ``rulekit audit queries``. Parameters (``--param k=v``) become DuckDB variables, read
in a query as ``getvariable('k')`` (text: cast where a number is meant).

One database holds many runs (backtests, dry runs, replays, the live account's). ``RunFilter``
(``--run ID|last``, ``--mode``) narrows what any query sees: temporary views of the same names
over ``runs``, ``decisions``, ``trades``, ``trade_events`` and ``risk_events`` hold only the chosen
runs' rows, so every saved query, ``audit sql`` and the export read one run (or one mode) without
a line of their SQL changed.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from audit.log import AuditLog
from rulekit.errors import RulekitError


class QueryError(RulekitError):
    """A query that cannot run: unknown name, bad SQL, a database that cannot be opened."""


@dataclass(frozen=True)
class SavedQuery:
    name: str
    description: str
    sql: str


def saved_queries() -> dict[str, SavedQuery]:
    found = {}
    for entry in sorted(resources.files("audit").joinpath("queries").iterdir(), key=str):
        if not entry.name.endswith(".sql"):
            continue
        sql = entry.read_text()
        header = [line[2:].strip() for line in sql.splitlines() if line.startswith("--")]
        name = entry.name[:-4]
        found[name] = SavedQuery(name, " ".join(header), sql)
    return found


def saved_query(name: str) -> SavedQuery:
    queries = saved_queries()
    if name not in queries:
        raise QueryError(f"no saved query {name!r}; there are: {', '.join(queries)}")
    return queries[name]


RUN_TABLES = ("runs", "decisions", "trades", "trade_events", "risk_events")
LAST = "last"


@dataclass(frozen=True)
class RunFilter:
    """Which runs a query sees: one run (an id, or ``last``: the latest started, of ``mode``
    when given), every run of ``mode``, or (both None) all of them."""

    run: str | None = None
    mode: str | None = None

    @property
    def everything(self) -> bool:
        return self.run is None and self.mode is None


def resolve_run(db, run: str, mode: str | None = None, skip_modes: tuple[str, ...] = ()) -> str:
    """A run id as given, or the id ``last`` stands for; an unknown one is a ``QueryError``."""
    if run != LAST:
        if not db.execute("SELECT count(*) FROM runs WHERE run_id = ?", [run]).fetchone()[0]:
            raise QueryError(f"no run {run!r} in this audit database (`rulekit audit runs` lists "
                             "them)")
        return run
    skipped = list(skip_modes) or [""]
    found = db.execute(
        "SELECT run_id FROM runs WHERE ($mode IS NULL OR mode = $mode) "
        "AND NOT list_contains($skipped, mode) ORDER BY started_at DESC, run_id LIMIT 1",
        {"mode": mode, "skipped": skipped}).fetchall()
    if not found:
        kind = f"{mode} run" if mode else "run"
        raise QueryError(f"no {kind} in this audit database, so no last one")
    return found[0][0]


def _narrow(db, runs: RunFilter) -> None:
    """Shadow the run tables with views holding only the chosen runs' rows."""
    if runs.everything:
        return
    run = resolve_run(db, runs.run, runs.mode) if runs.run else None
    if run is not None and runs.mode is not None:
        mode = db.execute("SELECT mode FROM runs WHERE run_id = ?", [run]).fetchone()[0]
        if mode != runs.mode:
            raise QueryError(f"run {run} is a {mode} run, not {runs.mode}")
    catalog = db.execute("SELECT current_database()").fetchone()[0].replace('"', '""')
    chosen = (f"SELECT run_id FROM \"{catalog}\".main.runs WHERE "
              + ("run_id = getvariable('rulekit_run')" if run
                 else "mode = getvariable('rulekit_mode')"))
    db.execute("SET VARIABLE rulekit_run = ?", [run])
    db.execute("SET VARIABLE rulekit_mode = ?", [runs.mode])
    tables = {row[0] for row in db.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
    ).fetchall()}
    for table in RUN_TABLES:
        if table in tables:
            db.execute(f"CREATE TEMP VIEW {table} AS SELECT * FROM \"{catalog}\".main.{table} "
                       f"WHERE run_id IN ({chosen})")


def run_query(database: str | Path, sql: str, params: Mapping[str, str] | None = None,
              runs: RunFilter = RunFilter()) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` on a read-only connection over the ``runs`` chosen; return column names and
    rows."""
    try:
        audit = AuditLog(database, read_only=True)
    except RulekitError as exc:
        raise QueryError(exc.message, exc.path) from None
    try:
        db = audit.db
        _narrow(db, runs)
        for key, value in (params or {}).items():
            if not key.isidentifier():
                raise QueryError(f"parameter name {key!r} is not an identifier")
            db.execute(f"SET VARIABLE \"{key}\" = ?", [value])
        result = db.execute(sql)
        columns = [d[0] for d in result.description or ()]
        return columns, result.fetchall()
    except duckdb.Error as exc:
        raise QueryError(f"query failed: {str(exc).splitlines()[0]}") from None
    finally:
        audit.close()


def export_training_set(database: str | Path, out: str | Path, file_format: str,
                        runs: RunFilter = RunFilter()) -> int:
    """Write the ``training_set`` query's rows (of the ``runs`` chosen) to ``out`` (parquet or
    csv); return the row count."""
    if file_format not in ("parquet", "csv"):
        raise QueryError(f"unknown export format {file_format!r} (parquet or csv)")
    columns, rows = run_query(database, saved_query("training_set").sql, runs=runs)
    import pyarrow as pa

    table = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})
    try:
        if file_format == "parquet":
            import pyarrow.parquet as pq
            pq.write_table(table, str(out))
        else:
            import pyarrow.csv as pcsv
            pcsv.write_csv(table, str(out))
    except (OSError, pa.ArrowException) as exc:
        raise QueryError(f"cannot write the export: {str(exc).splitlines()[0]}", str(out)) from None
    return len(rows)


def runs_by_mode(database: str | Path) -> tuple[Counter, dict[str, str]]:
    """How many runs of each mode the database holds, and the last run id of each mode."""
    columns, rows = run_query(database, "SELECT mode, count(*), arg_max(run_id, started_at) "
                                        "FROM runs GROUP BY mode ORDER BY mode")
    return Counter({mode: count for mode, count, _ in rows}), {mode: last for mode, _, last in rows}


def mixed_runs_note(database: str | Path, runs: RunFilter) -> str | None:
    """One line when a query over every run reads runs of more than one kind or several runs."""
    if not runs.everything:
        return None
    counts, _ = runs_by_mode(database)
    total = sum(counts.values())
    if total <= 1:
        return None
    kinds = ", ".join(f"{count} {mode}" for mode, count in sorted(counts.items()))
    return (f"{total} runs ({kinds}) are counted together; choose with --run ID|last or --mode "
            "MODE (`rulekit audit runs` lists them)")


def account_of(database: str | Path, run: str | None = None):
    """``rulekit state``: the database's account, or with ``run`` a backtest's own; where there
    is none, what the database holds instead and how to see it."""
    from audit.risk_store import DEFAULT_ACCOUNT, RiskStore, backtest_account
    from rulekit.errors import StateError

    with AuditLog(database, read_only=True) as audit:
        if run is not None:
            try:
                run_id = resolve_run(audit.db, run, "backtest" if run == LAST else None)
            except QueryError as exc:
                raise StateError(exc.message, str(database)) from None
            found = audit.run_of(run_id)
            mode = found["mode"] if found else None
            if mode != "backtest":
                raise StateError(f"run {run_id} is a {mode} run: it has no account of its own "
                                 "(`rulekit state` without --run shows the database's)",
                                 str(database))
            account = RiskStore(audit, backtest_account(run_id)).load()
            if account is None:
                raise StateError(f"backtest {run_id} recorded no account (it did not finish)",
                                 str(database))
            return account
        account = RiskStore(audit, DEFAULT_ACCOUNT).load()
        if account is not None:
            return account
        backtests = audit.db.execute(
            "SELECT count(*), arg_max(run_id, started_at) FROM runs WHERE mode = 'backtest'"
        ).fetchall()[0]
    if backtests[0]:
        raise StateError(f"this audit database holds no trading account (evaluate --bars, run), "
                         f"only {backtests[0]} backtest run(s), each with its own: `rulekit "
                         f"state --run last` shows the last one's ({backtests[1]}), `rulekit "
                         "audit runs` lists them", str(database))
    raise StateError("this audit database holds no account yet (run evaluate --bars)",
                     str(database))
