"""Backtests in the audit database: what a run was given, what it decided and traded, and running
it again from what it was given (``rulekit replay`` of a backtest run)."""
from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from audit.log import AuditLog, _numbers, _times
from audit.risk_store import RiskStore, backtest_account
from rulekit.backtest.run import BacktestResult, run_backtest
from rulekit.decision.engine import BatchDecisions, Engine
from rulekit.decision.explain import failed_json
from rulekit.market.candles import Candles
from rulekit.model import LEVEL_FIELDS, Signal
from rulekit.policy.vocabulary import size_cap_name
from rulekit.trading.account import RiskEvent
from rulekit.trading.lifecycle import Trade, TradeEvent

MODE = "backtest"
BATCH_ROWS = 131_072  # at least a DuckDB row group (122,880): written out, not held
# DuckDB while a backtest's audit is written: the run's rows go to the file as row groups within
# the one transaction, and the buffer pool need not keep them (by default it may grow to 80% of
# the machine's memory and keeps every block it wrote); one thread, as each thread's allocations
# stay with it (about 100 MB less at 1M bars, no slower: the inserts are not parallel work).
WRITE_SETTINGS = {"memory_limit": "'256MB'", "threads": "1"}


@dataclass(frozen=True)
class BacktestInputs:
    """What a backtest is given besides its policy: enough to run it again. Files are kept as
    absolute paths, so the run can be repeated from another directory."""

    data: tuple[str, ...]
    signals: str | None          # None: the built-in reference ensemble over the candles
    equity: float
    slippage_bps: float = 0.0

    @classmethod
    def of(cls, data: Sequence[str], signals: str | None, equity: float,
           slippage_bps: float = 0.0) -> BacktestInputs:
        return cls(tuple(_where(d) for d in data), _where(signals) if signals else None,
                   float(equity), float(slippage_bps))

    def as_record(self) -> dict[str, Any]:
        record = asdict(self)
        record["data"] = list(self.data)
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> BacktestInputs:
        return cls(tuple(record["data"]), record.get("signals"), float(record["equity"]),
                   float(record.get("slippage_bps", 0.0)))


def _where(source: str) -> str:
    """A file's absolute path; a source that is not a file here (a plugin's name) as given."""
    path = Path(source)
    return str(path.resolve()) if path.exists() else source


def run_and_record(audit: AuditLog, engine: Engine, candles: Sequence[Candles],
                   signals: Sequence[Signal], inputs: BacktestInputs, command: str,
                   progress=None) -> tuple[str, BacktestResult]:
    """Register the run, run the backtest, then write its decisions and trades in one transaction.

    Nothing real acts on a backtest's decisions, so they are written once it has ended, not one
    commit each: a killed backtest leaves only its ``runs`` row and is simply run again. Its
    trades go to its own account (``backtest:<run id>``).
    """
    run_id = audit.start_run(engine, MODE, command, inputs.as_record())
    result = run_backtest(engine, candles, signals, inputs.equity, inputs.slippage_bps, run_id,
                          progress)
    record_backtest(audit, engine, run_id, result)
    return run_id, result


def record_backtest(audit: AuditLog, engine: Engine, run_id: str, result: BacktestResult) -> None:
    """A finished backtest's decisions, trades, trade and risk events and final account, in one
    transaction, each table as Arrow columns: the rows ``AuditLog.write_batch`` and
    ``RiskStore.save`` write (tested), built without their per-row Python work."""
    decisions = result.journal.decisions
    pool = pa.default_memory_pool()
    with audit.transaction() as db:
        for name, value in WRITE_SETTINGS.items():
            db.execute(f"SET {name} = {value}")
        try:
            for start in range(0, len(decisions), BATCH_ROWS):
                chunk = decisions[start:start + BATCH_ROWS]
                batch = BatchDecisions.of(engine, *(list(column) for column in zip(
                    *chunk, strict=False)))
                insert_decisions(audit, db, run_id, batch, 0, len(batch))
                del batch
                pool.release_unused()  # pyarrow's pool would keep what each batch freed
            if result.deferred is not None:
                for batch in result.deferred.batches(BATCH_ROWS):
                    insert_decisions(audit, db, run_id, batch, 0, len(batch))
                    del batch
                    pool.release_unused()
            account = backtest_account(run_id)
            insert_trades(db, account, run_id, result.trades + result.cancelled,
                          result.journal.events, result.journal.risk_events)
            RiskStore(audit, account).save(run_id, result.account)
        finally:
            for name in WRITE_SETTINGS:
                with contextlib.suppress(duckdb.Error):  # the write's own error is the one to see
                    db.execute(f"RESET {name}")
    pool.release_unused()


@dataclass(frozen=True)
class MarketData:
    """How a re-run gets its candles and its default signals: through the plugins, which the
    caller holds (the audit layer does not load plugins)."""

    candles: Callable[[tuple[str, ...]], list[Candles]]
    reference_signals: Callable[[list[Candles]], list[Signal]]


def rerun_backtest(engine: Engine, inputs: dict[str, Any] | None,
                   market: MarketData) -> dict[str, Any] | str:
    """A logged backtest run again under ``engine``'s policy from its recorded inputs: its
    figures, or why it cannot be."""
    from rulekit.errors import RulekitError
    from rulekit.inputs.signal_files import read_signals

    if inputs is None:
        return "its inputs were not recorded (a run logged before schema version 3)"
    try:
        given = BacktestInputs.from_record(inputs)
    except (KeyError, TypeError, ValueError) as exc:
        return f"its recorded inputs cannot be read ({exc})"
    try:
        candles = market.candles(given.data)
    except RulekitError as exc:
        return f"its data is not here any more ({exc})"
    try:
        signals = (read_signals(given.signals) if given.signals
                   else market.reference_signals(candles))
    except RulekitError as exc:
        return f"its signals are not here any more ({exc})"
    return run_backtest(engine, candles, signals, given.equity, given.slippage_bps).metrics()


def logged_backtest_figures(audit: AuditLog, run_id: str) -> dict[str, Any]:
    """A backtest's headline figures from what it logged (its trades and decisions)."""
    account = backtest_account(run_id)
    trades, wins, avg_r, gains, losses, pnl = audit.db.execute(
        "SELECT count(*), count(*) FILTER (WHERE realised_pnl > 0), avg(r_multiple), "
        "sum(realised_pnl) FILTER (WHERE realised_pnl > 0), "
        "-sum(realised_pnl) FILTER (WHERE realised_pnl < 0), sum(realised_pnl) "
        "FROM trades WHERE account_id = ?", [account]).fetchone()
    decided, approved = audit.db.execute(
        "SELECT count(*), count(*) FILTER (WHERE approved) FROM decisions WHERE run_id = ?",
        [run_id]).fetchone()
    start = audit.db.execute("SELECT start_equity FROM account_state WHERE account_id = ?",
                             [account]).fetchall()
    return {"approval_rate": approved / decided if decided else None, "trades": trades,
            "win_rate": wins / trades if trades else None, "avg_r": avg_r,
            "profit_factor": (gains or 0.0) / losses if losses else None,
            "final_equity": (start[0][0] + (pnl or 0.0)) if start else None}


# --- the audit rows as Arrow columns ------------------------------------------------------------

def insert_decisions(audit: AuditLog, db, run_id: str, batch: BatchDecisions, start: int,
                     stop: int) -> None:
    """Rows ``start:stop`` of ``batch`` into ``decisions``, numbered on from the run's last seq:
    the columns of ``AuditLog.write_batch``, with each distinct vote set and text encoded once."""
    signals, account = batch.signals, batch.account
    stop = min(stop, len(batch))
    rows = stop - start
    if rows <= 0:
        return
    part = slice(start, stop)
    seq = np.arange(audit._seq, audit._seq + rows, dtype=np.int64)
    audit._seq += rows
    checks = batch.checks[part]
    input_checks = sum(1 for s in batch.engine.program.check_steps if s.section == "inputs")
    rejected_on_input: list[bool] = np.asarray(~checks[:, :input_checks].all(axis=1)).tolist()
    approved = batch.approved[part]
    raw = signals.raw[start:stop]
    columns: dict[str, Any] = {
        "run_id": _repeated(run_id, rows), "seq": seq, "mode": _repeated(MODE, rows),
        "decided_at": _times(account["decided_at"][part]),
        "signal_id": _texts(signals.signal_id[part]),
        "signal_time": _times(signals.timestamp[part]),
        "symbol": _texts(signals.symbol[part]), "side": _texts(signals.side[part]),
        "consensus": _texts(signals.consensus[part]),
        "confidence": _numbers(signals.confidence[part]),
        "strength": _numbers(signals.strength[part]),
        "model_votes": _votes(signals.model_votes[start:stop]),
        "price": _numbers(signals.price[part]), "atr": _numbers(signals.atr[part]),
        "ema_200": _numbers(signals.ema_200[part]),
        "volume_24h": _numbers(signals.volume_24h[part]),
        "spread_bps": _numbers(signals.spread_bps[part]),
        "history_bars": _numbers(signals.history_bars[part]),
        "market_time": _times(signals.market_timestamp[part]),
        "raw_input": pa.array([json.dumps(r, default=str) if bad else None
                               for r, bad in zip(raw, rejected_on_input, strict=True)]
                              if any(rejected_on_input) else pa.nulls(rows), pa.string()),
        "approved": pa.array(approved),
        "reason": pa.array(batch.reason[part].tolist(), pa.string()),
        "decide_us": _numbers(batch.elapsed_us[part] if batch.elapsed_us is not None
                              else np.full(rows, np.nan)),
        "checks_passed": pa.FixedSizeListArray.from_arrays(pa.array(checks.reshape(-1)),
                                                           checks.shape[1]),
    }
    for name in ("equity", "day_start_equity", "week_start_equity", "peak_equity",
                 "breaker_reference_equity", "open_exposure"):
        columns[name] = _numbers(account[name][part])
    for name in ("consecutive_losses", "open_trades"):
        columns[name] = pa.array(account[name][part].astype(np.int32))
    columns["circuit_breaker_until"] = _times(account["circuit_breaker_until"][part])
    columns["symbol_trade_open"] = pa.array(
        np.asarray(account["symbol_trade_open"][part], dtype=float) > 0)
    for name in LEVEL_FIELDS:
        columns[name] = _numbers(np.where(approved, batch.values[name][part], np.nan))
    caps = batch.values["size_capped_by"][part]
    columns["size_capped_by"] = _encoded([code if ok else None for code, ok in zip(
        caps.tolist(), approved.tolist(), strict=True)],
        lambda code: size_cap_name(np.nan if code is None else code))
    columns["failed"] = pa.array(failed_json(batch)[start:stop], pa.string())
    policy = batch.engine.policy
    columns["policy_name"] = _repeated(policy.name, rows)
    columns["policy_version"] = pa.array(np.full(rows, policy.version, dtype=np.int32))
    columns["policy_hash"] = _repeated(policy.hash, rows)
    _insert_table(db, "INSERT INTO decisions", pa.table(columns))


def insert_trades(db, account_id: str, run_id: str, trades: Sequence[Trade],
                  events: Sequence[TradeEvent], risk_events: Sequence[RiskEvent]) -> None:
    """The trades, trade events and risk events as ``RiskStore.save`` writes them."""
    if trades:
        records = [t.as_record() for t in trades]
        refs = [(t.decision_ref or "").rpartition(":") for t in trades]
        closed = [t.closed_at is not None for t in trades]

        def field(name: str) -> list:
            return [r[name] for r in records]

        opened, closed_at = np.array(field("opened_at"), dtype=float), np.array(
            [np.nan if t is None else t for t in field("closed_at")], dtype=float)
        _insert_table(db, "INSERT OR REPLACE INTO trades", pa.table({
            "trade_id": pa.array(field("trade_id"), pa.string()),
            "account_id": _repeated(account_id, len(trades)),
            "run_id": pa.array([r[0] or None for r in refs], pa.string()),
            "decision_seq": pa.array([int(r[2]) if r[2].isdigit() else None for r in refs],
                                     pa.int64()),
            "symbol": pa.array(field("symbol"), pa.string()),
            "side": pa.array([str(v) for v in field("side")], pa.string()),
            "state": pa.array(field("state"), pa.string()),
            "opened_at": _times(opened),
            **{name: pa.array(field(name), pa.float64()) for name in (
                "entry_price", "initial_quantity", "quantity", "initial_stop", "stop_loss",
                "take_profit")},
            "initial_risk": pa.array([t.initial_risk for t in trades], pa.float64()),
            "realised_pnl": pa.array(field("realised_pnl"), pa.float64()),
            "fees": pa.array(field("fees"), pa.float64()),
            "r_multiple": pa.array([t.r_multiple if c else None
                                    for t, c in zip(trades, closed, strict=True)], pa.float64()),
            "mfe_r": _numbers(np.array([t.mfe_r for t in trades], dtype=float)),
            "mae_r": _numbers(np.array([t.mae_r for t in trades], dtype=float)),
            "closed_at": _times(closed_at),
            "exit_price": pa.array(field("exit_price"), pa.float64()),
            "exit_reason": pa.array([None if v is None else str(v) for v in field("exit_reason")],
                                    pa.string()),
            "holding_seconds": _numbers(closed_at - opened),
            "record": pa.array([json.dumps(r) for r in records], pa.string()),
        }))
    if events:
        _insert_table(db, "INSERT INTO trade_events", pa.table({
            "run_id": _repeated(run_id, len(events)),
            "trade_id": pa.array([e.trade_id for e in events], pa.string()),
            "event": _encoded([e.event for e in events], str),
            "occurred_at": _times(np.array([e.timestamp for e in events], dtype=float)),
            "price": pa.array([e.price for e in events], pa.float64()),
            "quantity": pa.array([e.quantity for e in events], pa.float64()),
            "stop_loss": pa.array([e.stop_loss for e in events], pa.float64()),
            "state": _encoded([e.state for e in events], str),
            "reason": _encoded([e.reason for e in events], lambda v: None if v is None else str(v)),
            "pnl": pa.array([e.pnl for e in events], pa.float64()),
            "r_multiple": pa.array([e.r_multiple for e in events], pa.float64()),
        }))
    if risk_events:
        _insert_table(db, "INSERT INTO risk_events", pa.table({
            "run_id": _repeated(run_id, len(risk_events)),
            "account_id": _repeated(account_id, len(risk_events)),
            "kind": pa.array([str(e.kind) for e in risk_events], pa.string()),
            "occurred_at": _times(np.array([e.at for e in risk_events], dtype=float)),
            "equity": pa.array([e.equity for e in risk_events], pa.float64()),
            "detail": pa.array([e.detail for e in risk_events], pa.string()),
        }))


def _insert_table(db, statement: str, table: pa.Table) -> None:
    db.register("incoming_backtest_rows", table)
    db.execute(f"{statement} BY NAME SELECT * FROM incoming_backtest_rows")
    db.unregister("incoming_backtest_rows")


def _repeated(text: str, rows: int) -> pa.Array:
    return pa.array([text] * rows, pa.string())


def _encoded(values: Sequence, encode: Callable[[Any], str | None]) -> pa.Array:
    """``encode`` of each value, called once per distinct value."""
    seen: dict[Any, str | None] = {}
    return pa.array([seen[v] if v in seen else seen.setdefault(v, encode(v)) for v in values],
                    pa.string())


def _votes(votes: Sequence[object]) -> pa.Array:
    """``json.dumps`` of each signal's votes (as ``write_batch``), once per distinct vote set."""
    seen: dict[Any, str] = {}
    out: list[str | None] = []
    for v in votes:
        if v is None:
            out.append(None)
            continue
        key = tuple(v.items()) if type(v) is dict else None
        try:
            text = seen.get(key) if key is not None else None
        except TypeError:  # unhashable vote values
            key, text = None, None
        if text is None:
            text = json.dumps(v, default=str)
            if key is not None:
                seen[key] = text
        out.append(text)
    return pa.array(out, pa.string())


def _texts(values: np.ndarray) -> pa.Array:
    return pa.array([value or None for value in values.tolist()], pa.string())
