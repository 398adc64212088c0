"""The global risk state and open trades in DuckDB, beside the decisions that depend on them.

Written inside the caller's transaction (``AuditLog.transaction``), so a decision, the trade it opens
and the account it changes commit together or not at all. The ``record`` columns hold the whole
state as JSON (floats round-trip exactly); the typed columns beside them are for SQL.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from audit.log import AuditLog, damaged
from rulekit.errors import StateError
from rulekit.trading.account import Account, RiskEvent
from rulekit.trading.lifecycle import Trade, TradeEvent

DEFAULT_ACCOUNT = "default"
# Saved values with parts that grow without end, kept one row per item (``run_state`` keys
# ``<key>/<part>/<item>``) and written only when an item changed: the paper exchange's every
# order and its reduce-only flags, thousands after a long replay, of which a commit changes a few.
PARTS = {"exchange": ("orders", "reduce_only")}


def backtest_account(run_id: str) -> str:
    """A backtest's own account: it never touches the live account or another run's trades."""
    return f"backtest:{run_id}"


def read_account(database: str, account_id: str = DEFAULT_ACCOUNT) -> Account:
    """The account as last committed, read without writing a byte (``rulekit state``)."""
    with AuditLog(database, read_only=True) as audit:
        account = RiskStore(audit, account_id).load()
    if account is None:
        raise StateError("this audit database holds no account yet (run evaluate --bars)",
                         database)
    return account


class RiskStore:
    """Load and save one account (its risk state and open trades) in an audit database."""

    def __init__(self, audit: AuditLog, account_id: str = DEFAULT_ACCOUNT):
        self.audit = audit
        self.account_id = account_id
        # run_state rows as this store last wrote them (key -> the value written), to skip the
        # unchanged; a rolled-back transaction ends the writer, whose store goes with it
        self._written: dict[Any, Any] = {}

    def load(self) -> Account | None:
        """The account as last committed, or None for a database that has never held one."""
        if "account_state" not in self.audit.tables:
            return None  # a version-1 database, read as it is
        db = self.audit.db
        found = db.execute("SELECT record FROM account_state WHERE account_id = ?",
                           [self.account_id]).fetchall()
        row = found[0] if found else None
        if row is None:
            traces = db.execute(
                "SELECT (SELECT count(*) FROM trades WHERE account_id = $1) "
                "+ (SELECT count(*) FROM run_state WHERE account_id = $1)",
                [self.account_id]).fetchone()[0]
            if traces:  # never a fresh account over one whose state row is gone
                raise damaged(self.audit.path, f"account {self.account_id!r} has trades or run "
                                               "state but no account_state row")
            return None
        try:
            record = json.loads(row[0])
            trades = [Trade.from_record(json.loads(text)) for (text,) in db.execute(
                "SELECT record FROM trades WHERE account_id = ? AND state NOT IN "
                "('CLOSED', 'CANCELLED', 'REJECTED') ORDER BY opened_at, trade_id",
                [self.account_id]).fetchall()]
            return Account.from_record(record, trades)
        except (ValueError, TypeError, KeyError) as exc:
            raise StateError(f"the stored risk state cannot be read ({exc}); it was written by "
                             "another rulekit version or edited by hand", self.audit.path) from None

    def save(self, run_id: str, account: Account, trades: Iterable[Trade] = (),
             events: Iterable[TradeEvent] = (), risk_events: Iterable[RiskEvent] = (),
             extra: dict[str, Any] | None = None) -> None:
        """Write the account, the trades that changed and what happened, in one transaction."""
        now = datetime.now(UTC)
        with self.audit.transaction() as db:
            _insert(db, "INSERT OR REPLACE INTO trades", TRADE_COLUMNS,
                    [_trade_row(self.account_id, trade) for trade in trades])
            _insert(db, "INSERT INTO trade_events", EVENT_COLUMNS, [
                [run_id, e.trade_id, e.event.value, _time(e.timestamp), e.price, e.quantity,
                 e.stop_loss, e.state.value, e.reason, e.pnl, e.r_multiple] for e in events])
            _insert(db, "INSERT INTO risk_events", RISK_EVENT_COLUMNS, [
                [run_id, self.account_id, e.kind, _time(e.at), e.equity, e.detail]
                for e in risk_events])
            for key, value in (extra or {}).items():
                self._save_extra(db, key, value, now)
            db.execute("INSERT OR REPLACE INTO account_state VALUES "
                       "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                           self.account_id, now, _time(account.as_of), account.start_equity,
                           account.equity, account.realised_pnl, _number(account.day_start_equity),
                           _number(account.week_start_equity), _number(account.peak_equity),
                           account.consecutive_losses, _time(account.circuit_breaker_until),
                           len(account.trades), json.dumps(account.as_record())])

    def load_extra(self, key: str) -> Any:
        """A value saved with the account (``save(extra=...)``), or None."""
        row = self.audit.db.execute("SELECT value FROM run_state WHERE account_id = ? AND key = ?",
                                    [self.account_id, key]).fetchall()
        if not row:
            return None
        value = json.loads(row[0][0])
        parts = value.pop("$parts", None) if isinstance(value, dict) else None
        for part, kind in (parts or {}).items():
            items = self.audit.db.execute(
                "SELECT key, value FROM run_state WHERE account_id = ? AND starts_with(key, ?) "
                "ORDER BY key", [self.account_id, f"{key}/{part}/"]).fetchall()
            prefix = len(key) + len(part) + 2
            value[part] = ([json.loads(v) for _, v in items] if kind == "list"
                           else {k[prefix:]: json.loads(v) for k, v in items})
        return value

    def _save_extra(self, db, key: str, value: Any, now: datetime) -> None:
        """One ``run_state`` row, or (``PARTS``) a head row and a row per item, each written only
        when it differs from what this store last wrote (items are compared by identity first:
        an unchanged item is the same object, ``PaperExchange._record_of``)."""
        changed: list[list] = []
        split = PARTS.get(key, ()) if isinstance(value, dict) else ()
        if split:
            head = {name: item for name, item in value.items() if name not in split}
            head["$parts"] = {}
            for part in split:
                items = value.get(part) or {}
                kind = "list" if isinstance(items, list) else "dict"
                head["$parts"][part] = kind
                before = self._written.get((key, part))
                if kind == "list":
                    before = before if isinstance(before, list) else []
                    for i, item in enumerate(items):
                        if i >= len(before) or (before[i] is not item and before[i] != item):
                            changed.append([self.account_id, f"{key}/{part}/{i:09d}",
                                            json.dumps(item), now])
                    gone = [f"{key}/{part}/{i:09d}" for i in range(len(items), len(before))]
                    self._written[(key, part)] = list(items)
                else:
                    before = before if isinstance(before, dict) else {}
                    for name, item in items.items():
                        old = before.get(name, _NOTHING)
                        if old is not item and old != item:
                            changed.append([self.account_id, f"{key}/{part}/{name}",
                                            json.dumps(item), now])
                    gone = [f"{key}/{part}/{name}" for name in before if name not in items]
                    self._written[(key, part)] = dict(items)
                for row_key in gone:
                    db.execute("DELETE FROM run_state WHERE account_id = ? AND key = ?",
                               [self.account_id, row_key])
            value = head
        if self._written.get(key, _NOTHING) != value:
            changed.append([self.account_id, key, json.dumps(value), now])
            self._written[key] = value
        _insert(db, "INSERT OR REPLACE INTO run_state", RUN_STATE_COLUMNS, changed)

    def decided_signal_ids(self, modes: tuple[str, ...]) -> set[str]:
        """Signal ids already decided in runs of ``modes`` (a resumed run skips them)."""
        marks = ", ".join("?" for _ in modes)
        rows = self.audit.db.execute(
            f"SELECT DISTINCT signal_id FROM decisions WHERE signal_id IS NOT NULL "
            f"AND mode IN ({marks})", list(modes)).fetchall()
        return {row[0] for row in rows}


TRADE_COLUMNS = ("trade_id", "account_id", "run_id", "decision_seq", "symbol", "side", "state",
                 "opened_at", "entry_price", "initial_quantity", "quantity", "initial_stop",
                 "stop_loss", "take_profit", "initial_risk", "realised_pnl", "fees", "r_multiple",
                 "mfe_r", "mae_r", "closed_at", "exit_price", "exit_reason", "holding_seconds",
                 "record")
EVENT_COLUMNS = ("run_id", "trade_id", "event", "occurred_at", "price", "quantity", "stop_loss",
                 "state", "reason", "pnl", "r_multiple")
RISK_EVENT_COLUMNS = ("run_id", "account_id", "kind", "occurred_at", "equity", "detail")
RUN_STATE_COLUMNS = ("account_id", "key", "value", "updated_at")
_NOTHING = object()


def _insert(db, statement: str, columns: tuple[str, ...], rows: list[list]) -> None:
    """A few rows as parameters; many as one Arrow table (DuckDB's executemany manages hundreds
    of rows a second, an Arrow insert hundreds of thousands)."""
    if not rows:
        return
    if len(rows) <= 8:  # one statement: each costs DuckDB a millisecond or more
        marks = "(" + ", ".join("?" for _ in columns) + ")"
        db.execute(f"{statement} VALUES {', '.join(marks for _ in rows)}",
                   [value for row in rows for value in row])
        return
    import pyarrow as pa

    table = pa.table({name: [row[i] for row in rows] for i, name in enumerate(columns)})
    db.register("incoming_rows", table)
    db.execute(f"{statement} BY NAME SELECT * FROM incoming_rows")
    db.unregister("incoming_rows")


def _trade_row(account_id: str, trade: Trade) -> list:
    """``decision_ref`` is ``run_id:seq`` of the approving decision."""
    closed = trade.closed_at is not None
    run_id, _, seq = (trade.decision_ref or "").rpartition(":")
    return [trade.trade_id, account_id, run_id or None, int(seq) if seq.isdigit() else None,
            trade.symbol, trade.side, trade.state.value, _time(trade.opened_at), trade.entry_price,
            trade.initial_quantity, trade.quantity, trade.initial_stop, trade.stop_loss,
            trade.take_profit, trade.initial_risk, trade.realised_pnl, trade.fees,
            trade.r_multiple if closed else None, _number(trade.mfe_r), _number(trade.mae_r),
            _time(trade.closed_at), trade.exit_price, trade.exit_reason,
            trade.closed_at - trade.opened_at if closed else None,
            json.dumps(trade.as_record())]


def _time(seconds: float | None) -> datetime | None:
    if seconds is None or not math.isfinite(seconds):
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


class AuditJournal:
    """The trade manager's journal in DuckDB: decisions in ``decisions``, the rest via RiskStore."""

    def __init__(self, audit: AuditLog, store: RiskStore, engine, run_id: str, mode: str):
        self.audit, self.store, self.engine = audit, store, engine
        self.run_id, self.mode = run_id, mode
        self._gathered: list[tuple] | None = None  # inside ``gathered``: decisions
        self._gathered_for: tuple = ()
        self._state: _State | None = None  # inside ``gathered``: what record_state was given

    def transaction(self):
        return self.audit.transaction()

    @contextmanager
    def gathered(self):
        """Decisions recorded inside are written as one batch at its end (``flush``; before the
        engine or the run changes too), in the caller's transaction: a paper replay's steps
        gathered into one commit write one Arrow batch, not one per decision."""
        self._gathered, self._state = [], None
        try:
            yield
        except BaseException:
            self._gathered = self._state = None
            raise
        self.flush()
        self._gathered = None

    def flush(self) -> None:
        """Write the decisions gathered so far."""
        from rulekit.decision.engine import BatchDecisions

        pending = self._gathered
        if pending:
            self._gathered = []
            self.audit.write_batch(self.run_id, self.mode, BatchDecisions.of(
                self.engine, *map(list, zip(*pending, strict=True))))
        state, self._state = self._state, None
        if state is not None:  # the account as it is now, the trades as they are now
            self.store.save(self.run_id, state.account, list(state.trades.values()),
                            state.events, state.risk_events, state.extra)

    def record_decision(self, signal, decision, state, decided_at: float) -> str:
        from rulekit.decision.engine import BatchDecisions

        if self._gathered is not None:
            if self._gathered and (self.engine, self.run_id) != self._gathered_for:
                self.flush()
            self._gathered_for = (self.engine, self.run_id)
            seq = self.audit.next_seq + len(self._gathered)  # what write_batch will give it
            self._gathered.append((signal, decision, state, decided_at))
            return f"{self.run_id}:{seq}"
        batch = BatchDecisions.single(self.engine, signal, decision, state, decided_at)
        seq = self.audit.write_batch(self.run_id, self.mode, batch)
        return f"{self.run_id}:{seq}"

    def record_state(self, account, trades, events, risk_events, extra=None) -> None:
        if self._gathered is not None:
            if self._state is not None and self._state.run_id != self.run_id:
                self.flush()
            state = self._state = self._state or _State(self.run_id, account)
            state.account = account
            state.trades.update((t.trade_id, t) for t in trades)
            state.events += events
            state.risk_events += risk_events
            state.extra.update(extra or {})
            return
        self.store.save(self.run_id, account, trades, events, risk_events, extra)


@dataclass
class _State:
    """``record_state`` calls gathered for one write: the trades' latest states, every event."""

    run_id: str
    account: Account
    trades: dict[str, Trade] = field(default_factory=dict)
    events: list[TradeEvent] = field(default_factory=list)
    risk_events: list[RiskEvent] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
