"""Backtests in the audit database: what a run was given, what it decided and traded, and running
it again from what it was given (``rulekit replay`` of a backtest run)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from audit.log import AuditLog
from audit.risk_store import RiskStore, backtest_account
from rulekit.backtest.run import BacktestResult, run_backtest
from rulekit.decision.engine import BatchDecisions, Engine
from rulekit.market.candles import Candles
from rulekit.model import Signal

MODE = "backtest"
BATCH_ROWS = 50_000


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
    decisions = result.journal.decisions
    with audit.transaction():
        for start in range(0, len(decisions), BATCH_ROWS):
            chunk = decisions[start:start + BATCH_ROWS]
            audit.write_batch(run_id, MODE, BatchDecisions.of(
                engine, *(list(column) for column in zip(*chunk, strict=False))))
        if result.rejected is not None:
            audit.write_batch(run_id, MODE, result.rejected)
        RiskStore(audit, backtest_account(run_id)).save(
            run_id, result.account, result.trades + result.cancelled, result.journal.events,
            result.journal.risk_events)
    return run_id, result


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
