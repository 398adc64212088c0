"""Write decisions to DuckDB in batches, committed before anyone acts on them.

One ``INSERT ... SELECT`` of an Arrow table per batch: per-row INSERTs run at hundreds of rows per
second, Arrow batches at well over a hundred thousand.
"""
from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from rulekit.decision.engine import BatchDecisions, Engine
from rulekit.errors import StateError
from rulekit.model import LEVEL_FIELDS

SCHEMA_VERSION = 2
# What turns a database of version N-1 into version N (new tables come from schema.sql itself).
MIGRATIONS = {
    2: ["ALTER TABLE decisions ADD COLUMN IF NOT EXISTS breaker_reference_equity DOUBLE",
        "ALTER TABLE decisions ADD COLUMN IF NOT EXISTS history_bars DOUBLE",
        "ALTER TABLE decisions ADD COLUMN IF NOT EXISTS decide_us DOUBLE",
        "ALTER TABLE decisions ADD COLUMN IF NOT EXISTS symbol_trade_open BOOLEAN"],
}
UTC_MICROS = pa.timestamp("us", tz="UTC")


def schema_sql() -> str:
    return resources.files("audit").joinpath("schema.sql").read_text()


LOCK_WAIT_SECONDS = 10.0


def connect(path: str, read_only: bool = False,
            wait_seconds: float = LOCK_WAIT_SECONDS) -> duckdb.DuckDBPyConnection:
    """Open ``path``, waiting (bounded, with backoff) while another process holds it.

    DuckDB lets one process hold a database file at a time, even for reading. Writers that hold
    it only for their short transactions (``AuditLog(hold=False)``) and readers that wait a
    moment let a risk manager query while the engine runs.
    """
    deadline = time.monotonic() + wait_seconds
    delay = 0.005
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise StateError(f"cannot open audit database: {str(exc).splitlines()[0]}",
                                 path) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        except duckdb.Error as exc:
            raise StateError(f"cannot open audit database: {str(exc).splitlines()[0]}",
                             path) from None


class AuditLog:
    """An audit database. Use as a context manager; every write is its own transaction.

    ``hold=False`` releases the file after every transaction (a long-running writer that others
    must be able to query meanwhile); ``hold=True`` keeps it for the writer's lifetime (a short
    command, or a backtest writing many batches).
    """

    def __init__(self, path: str | Path, hold: bool = True):
        self.path = str(path)
        self.hold = hold
        self._db: duckdb.DuckDBPyConnection | None = None
        self._in_transaction = False
        self._seq = 0
        self._migrate()
        if not hold:
            self.release()

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            self._db = connect(self.path)
        return self._db

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def release(self) -> None:
        """Let go of the file (it is opened again on the next use)."""
        if self._db is not None:
            self._db.close()
            self._db = None

    def close(self) -> None:
        self.release()

    def _migrate(self) -> None:
        tables = {row[0] for row in self.db.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "schema_info" in tables:
            found = self.db.execute("SELECT max(version) FROM schema_info").fetchone()[0]
            if found is not None and found > SCHEMA_VERSION:
                raise StateError(f"audit database has schema version {found}; this rulekit knows "
                                 f"{SCHEMA_VERSION}: upgrade rulekit", self.path)
        self.db.execute("BEGIN")
        self.db.execute(schema_sql())
        found = self.db.execute("SELECT max(version) FROM schema_info").fetchone()[0]
        for version in range((found or SCHEMA_VERSION) + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                self.db.execute(statement)
        if found != SCHEMA_VERSION:
            self.db.execute("DELETE FROM schema_info")
            self.db.execute("INSERT INTO schema_info VALUES (?)", [SCHEMA_VERSION])
        self.db.execute("COMMIT")

    @contextmanager
    def transaction(self):
        """Everything written inside commits together, or not at all; nesting joins the outer one."""
        if self._in_transaction:
            yield self.db
            return
        self._in_transaction = True
        self.db.execute("BEGIN")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._in_transaction = False
            if not self.hold:
                self.release()

    def start_run(self, engine: Engine, mode: str, command: str = "") -> str:
        """Register the policy (once per hash) and a new run; return the run id."""
        policy = engine.policy
        run_id = uuid.uuid4().hex[:16]
        now = datetime.now(UTC)
        params = {name: list(p.value) if isinstance(p.value, tuple) else p.value
                  for name, p in policy.params.items()}
        with self.transaction() as db:
            db.execute("INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       [policy.hash, policy.name, policy.version, policy.path, json.dumps(params),
                        list(engine.program.check_names), now])
            db.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?)",
                       [run_id, mode, command, policy.hash, now])
        self._seq = 0
        return run_id

    def write_batch(self, run_id: str, mode: str, batch: BatchDecisions) -> int:
        """Append one batch of decisions in a single transaction; return the first row's seq."""
        signals, account = batch.signals, batch.account
        rows = len(batch)
        seq = np.arange(self._seq, self._seq + rows, dtype=np.int64)
        self._seq += rows
        input_checks = sum(1 for s in batch.engine.program.check_steps if s.section == "inputs")
        rejected_on_input = ~batch.checks[:, :input_checks].all(axis=1)
        columns: dict[str, Any] = {
            "run_id": pa.array([run_id] * rows, pa.string()),
            "seq": seq,
            "mode": pa.array([mode] * rows, pa.string()),
            "decided_at": _times(account["decided_at"]),
            "signal_id": _texts(signals.signal_id),
            "signal_time": _times(signals.timestamp),
            "symbol": _texts(signals.symbol), "side": _texts(signals.side),
            "consensus": _texts(signals.consensus),
            "confidence": _numbers(signals.confidence), "strength": _numbers(signals.strength),
            "model_votes": pa.array([None if v is None else json.dumps(v, default=str)
                                     for v in signals.model_votes], pa.string()),
            "price": _numbers(signals.price), "atr": _numbers(signals.atr),
            "ema_200": _numbers(signals.ema_200), "volume_24h": _numbers(signals.volume_24h),
            "spread_bps": _numbers(signals.spread_bps),
            "history_bars": _numbers(signals.history_bars),
            "market_time": _times(signals.market_timestamp),
            "raw_input": pa.array([json.dumps(raw, default=str) if bad else None
                                   for raw, bad in zip(signals.raw, rejected_on_input, strict=False)]
                                  if rejected_on_input.any() else [None] * rows, pa.string()),
            "approved": pa.array(batch.approved),
            "reason": pa.array(batch.reason.tolist(), pa.string()),
            "decide_us": _numbers(batch.elapsed_us if batch.elapsed_us is not None
                                  else np.full(rows, np.nan)),
            "checks_passed": pa.FixedSizeListArray.from_arrays(
                pa.array(batch.checks.reshape(-1)), batch.checks.shape[1]),
        }
        for name in ("equity", "day_start_equity", "week_start_equity", "peak_equity",
                     "breaker_reference_equity", "open_exposure"):
            columns[name] = _numbers(account[name])
        for name in ("consecutive_losses", "open_trades"):
            columns[name] = pa.array(account[name].astype(np.int32))
        columns["circuit_breaker_until"] = _times(account["circuit_breaker_until"])
        columns["symbol_trade_open"] = pa.array(
            np.asarray(account["symbol_trade_open"], dtype=float) > 0)
        for name in LEVEL_FIELDS:
            columns[name] = _numbers(batch.output(name))
        policy = batch.engine.policy
        columns["policy_name"] = pa.array([policy.name] * rows, pa.string())
        columns["policy_version"] = pa.array(np.full(rows, policy.version, dtype=np.int32))
        columns["policy_hash"] = pa.array([policy.hash] * rows, pa.string())
        table = pa.table(columns)
        with self.transaction() as db:
            db.register("incoming_decisions", table)
            db.execute("INSERT INTO decisions BY NAME SELECT * FROM incoming_decisions")
            db.unregister("incoming_decisions")
        return int(seq[0]) if rows else self._seq


def _numbers(values: np.ndarray) -> pa.Array:
    values = np.asarray(values, dtype=float)
    return pa.array(values, pa.float64(), mask=~np.isfinite(values))


def _texts(values: np.ndarray) -> pa.Array:
    return pa.array([value or None for value in values.tolist()], pa.string())


def _times(seconds: np.ndarray) -> pa.Array:
    seconds = np.asarray(seconds, dtype=float)
    missing = ~np.isfinite(seconds)
    micros = np.where(missing, 0, np.round(seconds * 1e6)).astype(np.int64)
    return pa.array(micros, pa.int64(), mask=missing).cast(UTC_MICROS)

