"""Write decisions to DuckDB in batches, committed before anyone acts on them.

One ``INSERT ... SELECT`` of an Arrow table per batch: per-row INSERTs run at hundreds of rows per
second, Arrow batches at well over a hundred thousand.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from audit.lock import ReaderTurn, ReaderWatch, WriterLock
from rulekit.decision.engine import BatchDecisions, Engine
from rulekit.decision.explain import failed_texts
from rulekit.errors import StateError
from rulekit.model import LEVEL_FIELDS
from rulekit.policy.vocabulary import SIZE_CAPS

SCHEMA_VERSION = 5
# What turns a database of version N-1 into version N (new tables come from schema.sql itself).
MIGRATIONS = {
    2: ["ALTER TABLE decisions ADD COLUMN IF NOT EXISTS breaker_reference_equity DOUBLE",
        "ALTER TABLE decisions ADD COLUMN IF NOT EXISTS history_bars DOUBLE",
        "ALTER TABLE decisions ADD COLUMN IF NOT EXISTS decide_us DOUBLE",
        "ALTER TABLE decisions ADD COLUMN IF NOT EXISTS symbol_trade_open BOOLEAN"],
    3: ["ALTER TABLE runs ADD COLUMN IF NOT EXISTS inputs JSON"],
    4: ["ALTER TABLE decisions ADD COLUMN IF NOT EXISTS size_capped_by VARCHAR"],
    5: ["ALTER TABLE decisions ADD COLUMN IF NOT EXISTS failed JSON"],
}
# The tables a database of each version has (a version has its own and every earlier one's).
TABLES = {
    1: {"schema_info", "policies", "runs", "decisions"},
    2: {"account_state", "trades", "trade_events", "risk_events", "run_state"},
    3: set(),
    4: set(),
    5: set(),
}
# DuckDB's file header and its two database headers, before block 0.
FILE_HEADER_BYTES = 3 * 4096
UTC_MICROS = pa.timestamp("us", tz="UTC")


def schema_sql() -> str:
    return resources.files("audit").joinpath("schema.sql").read_text()


LOCK_WAIT_SECONDS = 10.0


def connect(path: str, read_only: bool = False, wait_seconds: float = LOCK_WAIT_SECONDS,
            on_wait=None) -> duckdb.DuckDBPyConnection:
    """Open ``path``, waiting (bounded, with backoff) while another process holds it.

    DuckDB lets one process hold a database file at a time, even for reading. Writers that hold
    it only for their short transactions (``AuditLog(hold=False)``) and readers that wait a
    moment let a risk manager query while the engine runs.
    """
    try:
        return _open(path, read_only, wait_seconds, on_wait)
    except duckdb.Error as exc:
        raise StateError(f"cannot open audit database: {first_line(exc)}", path) from None


def _open(path: str, read_only: bool, wait_seconds: float,
          on_wait=None) -> duckdb.DuckDBPyConnection:
    """``duckdb.connect``, waiting out another process's hold; other errors as DuckDB's.
    ``on_wait`` is called while it waits (a reader says so to a writer holding the file)."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.005
    while True:
        try:
            return duckdb.connect(path, read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() > deadline:
                raise StateError(f"cannot open audit database: {first_line(exc)}",
                                 path) from None
            if on_wait is not None:
                on_wait()
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def damaged(path: str, what: str) -> StateError:
    return StateError(f"database damaged: {path}: {what} (restore from backup or start a new file)")


@dataclass(frozen=True)
class Inspection:
    """What an existing database was found to hold: its schema version and its tables."""

    version: int
    tables: frozenset[str]


def inspect(path: str, on_wait=None) -> Inspection:
    """Check an existing database on a read-only connection before anything writes to it.

    DuckDB opened for writing on a damaged file rewrites it (a truncated file grows back to its
    old size, the missing blocks zeroed), and a file that is not an audit database would get a
    fresh, empty account. So: the file opens, ``schema_info`` reads, the version's tables are all
    there, and the file is as long as the blocks its tables and catalog use.
    """
    if os.path.getsize(path) == 0:
        raise damaged(path, "the file is empty")
    try:
        db = _open(path, read_only=True, wait_seconds=LOCK_WAIT_SECONDS, on_wait=on_wait)
    except duckdb.Error as exc:
        if "permission denied" in str(exc).lower():
            raise StateError(f"cannot open audit database: {first_line(exc)}", path) from None
        raise damaged(path, first_line(exc)) from None
    try:
        tables = frozenset(row[0] for row in db.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall())
        if "schema_info" not in tables:
            raise damaged(path, "it has no schema_info table (not a rulekit audit database?)")
        version = db.execute("SELECT max(version) FROM schema_info").fetchone()[0]
        if version is None:
            raise damaged(path, "schema_info holds no version")
        if version > SCHEMA_VERSION:
            raise StateError(f"audit database has schema version {version}; this rulekit knows "
                             f"{SCHEMA_VERSION}: upgrade rulekit", path)
        missing = sorted(set().union(*(TABLES[v] for v in range(1, version + 1))) - tables)
        if missing:
            raise damaged(path, f"table(s) missing: {', '.join(missing)}")
        needed = _bytes_in_use(db, tables)
        size = os.path.getsize(path)  # now: no writer can change it while this connection is open
        if size < needed:
            raise damaged(path, f"the file is truncated: {size:,} bytes, its blocks reach "
                                f"{needed:,}")
        return Inspection(int(version), tables)
    except duckdb.Error as exc:
        raise damaged(path, first_line(exc)) from None
    finally:
        db.close()


def _bytes_in_use(db: duckdb.DuckDBPyConnection, tables: frozenset[str]) -> int:
    """How long the file must be: up to the end of the last block a table or the catalog uses."""
    block_size = db.execute("SELECT block_size FROM pragma_database_size() "
                            "WHERE database_name = current_database()").fetchone()[0]
    last = db.execute("SELECT max(block_id) FROM pragma_metadata_info()").fetchone()[0]
    last = -1 if last is None else last
    for table in sorted(tables):
        found = db.execute(
            "SELECT max(greatest(block_id, coalesce(list_max(additional_block_ids), -1))) "
            "FROM pragma_storage_info(?) WHERE persistent AND block_id >= 0", [table]).fetchone()[0]
        if found is not None:
            last = max(last, found)
    return FILE_HEADER_BYTES + (last + 1) * block_size


@dataclass
class Deferred:
    """A ``deferred`` transaction: ``begun`` once something has been written in it."""

    begun: bool = False


def new_run_id() -> str:
    return uuid.uuid4().hex[:16]


class AuditLog:
    """An audit database. Use as a context manager; every write is its own transaction.

    ``hold=False`` releases the file after every transaction (a long-running writer that others
    must be able to query meanwhile); ``hold=True`` keeps it for the writer's lifetime (a short
    command, or a backtest writing many batches). ``read_only=True`` is for readers: nothing is
    migrated or written, and the file is left exactly as it was. ``writer`` (what is writing, for
    the error another writer gets) takes the account's writer lock (``audit/lock.py``) until
    ``close``: one writer per account.

    An existing file is checked on a read-only connection first (``inspect``): a damaged one is
    refused without a byte written.
    """

    def __init__(self, path: str | Path, hold: bool = True, read_only: bool = False,
                 writer: str | None = None):
        self.path = str(path)
        self.hold = hold
        self.read_only = read_only
        self._db: duckdb.DuckDBPyConnection | None = None
        self._in_transaction = False
        self._seq = 0
        self._deferred: Deferred | None = None
        self.readers: ReaderWatch | None = None  # set by ``yield_to_readers``
        self.lock = WriterLock(self.path, writer) if writer else None
        self._turn = ReaderTurn(self.path) if read_only else None
        try:
            if self.lock is not None:
                self.lock.acquire()
            if self._turn is not None:
                self._turn.announce()  # a writer keeping the file open lets go of it
            exists = Path(self.path).exists()
            found = inspect(self.path, self._on_wait) if exists else None
            if found is None and read_only:
                raise StateError(f"no audit database at {self.path}")
            if found is not None and (read_only or found.version == SCHEMA_VERSION):
                self.version, self.tables = found.version, found.tables
            else:
                self._migrate(found)
            if not hold:
                self.release()
        except BaseException:
            self.close()
            raise

    @property
    def db(self) -> duckdb.DuckDBPyConnection:
        if self._db is None:
            if self.readers is not None:
                self.readers.wait_out()  # readers waiting now get the file first
            self._db = connect(self.path, read_only=self.read_only, on_wait=self._on_wait)
        return self._db

    def _on_wait(self) -> None:
        if self._turn is not None:
            self._turn.announce()

    def yield_to_readers(self) -> None:
        """Keep the file open between transactions from now on (a long-running writer that
        commits often), letting go of it whenever a reader waits (``audit/lock.py``)."""
        if self.readers is None:
            self.readers = ReaderWatch(self.path)
        self.hold = True

    def let_readers_in(self) -> None:
        """Between transactions: close the file if a reader is waiting for it (cheap: one
        ``flock`` test; a writer that yields calls it on every bar and while it sleeps)."""
        if (self._db is not None and not self._in_transaction and self.readers is not None
                and self.readers.waiting()):
            self.release()

    def _after_transaction(self) -> None:
        if not self.hold:
            self.release()
        else:
            self.let_readers_in()

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
        """Let go of the file and of the writer lock."""
        self.release()
        if self.lock is not None:
            self.lock.release()
        if self._turn is not None:
            self._turn.withdraw()
        if self.readers is not None:
            self.readers.close()
            self.readers = None

    def _migrate(self, found: Inspection | None) -> None:
        """Create a new database, or bring one of an older version up to this one."""
        self.db.execute("BEGIN")
        self.db.execute(schema_sql())
        for version in range((found.version if found else SCHEMA_VERSION) + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version]:
                self.db.execute(statement)
        self.db.execute("DELETE FROM schema_info")
        self.db.execute("INSERT INTO schema_info VALUES (?)", [SCHEMA_VERSION])
        self.db.execute("COMMIT")
        self.version = SCHEMA_VERSION
        self.tables = frozenset(row[0] for row in self.db.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        ).fetchall())

    @contextmanager
    def transaction(self):
        """Everything written inside commits together, or not at all; nesting joins the outer one."""
        if self._in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN")
        self._in_transaction = True
        if self._deferred is not None:  # it commits (or rolls back) at the end of ``deferred``
            self._deferred.begun = True
            yield self.db
            return
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")
        finally:
            self._in_transaction = False
            self._after_transaction()

    @contextmanager
    def deferred(self):
        """One transaction for everything written inside, begun at the first write: when nothing
        is written, nothing happens (no transaction, the file not even opened). Yields a
        ``Deferred`` whose ``begun`` says whether anything was written so far."""
        if self._deferred is not None or self._in_transaction:
            yield self._deferred or Deferred(begun=True)
            return
        state = self._deferred = Deferred()
        try:
            yield state
        except BaseException:
            self._deferred = None
            if state.begun:
                self._in_transaction = False
                self.db.execute("ROLLBACK")
                self._after_transaction()
            raise
        self._deferred = None
        if state.begun:
            self.db.execute("COMMIT")
            self._in_transaction = False
            self._after_transaction()

    @property
    def next_seq(self) -> int:
        """The sequence number the next decision written in this run gets."""
        return self._seq

    def start_run(self, engine: Engine, mode: str, command: str = "",
                  inputs: dict[str, Any] | None = None) -> str:
        """Register the policy (once per hash) and a new run; return the run id.

        ``inputs`` is what the run was given (files, equity, options) as JSON, for whoever runs it
        again (``rulekit replay`` re-runs a backtest from it); ``command`` is the command line, for
        a person.
        """
        policy = engine.policy
        run_id = new_run_id()
        now = datetime.now(UTC)
        params = {name: list(p.value) if isinstance(p.value, tuple) else p.value
                  for name, p in policy.params.items()}
        with self.transaction() as db:
            db.execute("INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                       [policy.hash, policy.name, policy.version, policy.path, json.dumps(params),
                        list(engine.program.check_names), now])
            db.execute("INSERT INTO runs (run_id, mode, command, policy_hash, started_at, inputs) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       [run_id, mode, command, policy.hash, now,
                        None if inputs is None else json.dumps(inputs)])
        self._seq = 0
        return run_id

    def run_of(self, run_id: str) -> dict[str, Any] | None:
        """A logged run: its mode, command and inputs (None when not recorded), or None."""
        inputs = "inputs" if self.version >= 3 else "NULL"
        rows = self.db.execute(f"SELECT mode, command, {inputs} FROM runs WHERE run_id = ?",
                               [run_id]).fetchall()
        if not rows:
            return None
        row = rows[0]
        return {"run_id": run_id, "mode": row[0], "command": row[1],
                "inputs": None if row[2] is None else json.loads(row[2])}

    def write_batch(self, run_id: str, mode: str, batch: BatchDecisions) -> int:
        """Append one batch of decisions in a single transaction; return the first row's seq."""
        signals, account = batch.signals, batch.account
        rows = len(batch)
        seq = np.arange(self._seq, self._seq + rows, dtype=np.int64)
        self._seq += rows
        input_checks = sum(1 for s in batch.engine.program.check_steps if s.section == "inputs")
        rejected_on_input = ~batch.checks[:, :input_checks].all(axis=1)
        columns: dict[str, Any] = {
            "run_id": _same(run_id, rows),
            "seq": seq,
            "mode": _same(mode, rows),
            "decided_at": _times(account["decided_at"]),
            "signal_id": _texts(signals.signal_id),
            "signal_time": _times(signals.timestamp),
            "symbol": _texts(signals.symbol), "side": _texts(signals.side),
            "consensus": _texts(signals.consensus),
            "confidence": _numbers(signals.confidence), "strength": _numbers(signals.strength),
            "model_votes": _json_or_null(signals.model_votes, None),
            "price": _numbers(signals.price), "atr": _numbers(signals.atr),
            "ema_200": _numbers(signals.ema_200), "volume_24h": _numbers(signals.volume_24h),
            "spread_bps": _numbers(signals.spread_bps),
            "history_bars": _numbers(signals.history_bars),
            "market_time": _times(signals.market_timestamp),
            "raw_input": _json_or_null(signals.raw, np.flatnonzero(rejected_on_input)),
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
        caps = batch.output("size_capped_by")
        known = np.isfinite(caps)
        columns["size_capped_by"] = pa.array(list(SIZE_CAPS), pa.string()).take(
            pa.array(np.where(known, caps, 0).astype(np.int64), mask=~known))
        columns["failed"] = failed_texts(batch)
        policy = batch.engine.policy
        columns["policy_name"] = _same(policy.name, rows)
        columns["policy_version"] = pa.array(np.full(rows, policy.version, dtype=np.int32))
        columns["policy_hash"] = _same(policy.hash, rows)
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
    """Text, null for an empty one."""
    given = pa.array(values.tolist() if values.dtype == object else values, pa.string())
    return pc.if_else(pc.equal(given, ""), pa.scalar(None, pa.string()), given)


def _same(text: str, rows: int) -> pa.Array:
    return pa.repeat(pa.scalar(text, pa.string()), rows)


def _json_or_null(values, rows: np.ndarray | None) -> pa.Array:
    """Each value as JSON (null for None); with ``rows``, only those rows' values."""
    count = len(values)
    if rows is None:
        if isinstance(values, list) and values.count(None) == count:
            return pa.nulls(count, pa.string())
        return pa.array([None if v is None else json.dumps(v, default=str) for v in values],
                        pa.string())
    out: list[str | None] = [None] * count
    for row in rows.tolist():
        out[row] = json.dumps(values[row], default=str)
    return pa.array(out, pa.string())


def _times(seconds: np.ndarray) -> pa.Array:
    seconds = np.asarray(seconds, dtype=float)
    missing = ~np.isfinite(seconds)
    micros = np.where(missing, 0, np.round(seconds * 1e6)).astype(np.int64)
    return pa.array(micros, pa.int64(), mask=missing).cast(UTC_MICROS)

