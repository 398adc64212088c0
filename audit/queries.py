"""The saved SQL queries risk managers run (``audit/queries/*.sql``), and running any SQL read-only.

Each saved query starts with ``--`` comment lines saying what it answers; those lines are its
description in ``rulekit audit queries``. Parameters (``--param k=v``) become DuckDB variables, read
in a query as ``getvariable('k')`` (text: cast where a number is meant).
"""
from __future__ import annotations

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


def run_query(database: str | Path, sql: str, params: Mapping[str, str] | None = None
              ) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run ``sql`` on a read-only connection; return column names and rows."""
    try:
        audit = AuditLog(database, read_only=True)
    except RulekitError as exc:
        raise QueryError(exc.message, exc.path) from None
    try:
        db = audit.db
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


def export_training_set(database: str | Path, out: str | Path, file_format: str) -> int:
    """Write the ``training_set`` query's rows to ``out`` (parquet or csv); return the row count."""
    if file_format not in ("parquet", "csv"):
        raise QueryError(f"unknown export format {file_format!r} (parquet or csv)")
    columns, rows = run_query(database, saved_query("training_set").sql)
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
