"""Counterfactual replay: a run's logged inputs decided again under another policy.

Every decision row holds what the engine read (signal, market fields, the account's state, the
decision time), so a run can be decided again, row by row, against the same states: which
decisions flip (approved <-> rejected, and by which rule) and how sizes change. This is how a risk
manager tests a YAML change on real traffic before it goes live.

What it cannot show on logged inputs alone: the path. A different decision changes the account's
later state; a backtest run is therefore also run again under the new policy, from the inputs its
run recorded (``runs.inputs``).

The logged run is read on a read-only connection; only the replay's own run is written.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audit.backtests import MarketData, logged_backtest_figures, rerun_backtest
from audit.log import AuditLog
from audit.queries import LAST, resolve_run
from rulekit.decision.engine import BatchDecisions, Engine, SignalColumns, risk_columns
from rulekit.errors import RulekitError
from rulekit.model import RiskState

MODE = "replay"
TEXT = ("symbol", "side", "consensus")
NUMBERS = ("confidence", "strength", "price", "atr", "ema_200", "volume_24h", "spread_bps",
           "history_bars")


@dataclass
class Replay:
    run_id: str
    mode: str
    decisions: int
    old_approved: int
    new_approved: int
    became_rejected: Counter = field(default_factory=Counter)   # by the new reason
    became_approved: Counter = field(default_factory=Counter)   # by the old reason
    reason_changed: int = 0
    size_changes: int = 0
    size_change_total: float = 0.0
    flipped_seqs: list[int] = field(default_factory=list)
    batch: BatchDecisions | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "mode": self.mode, "decisions": self.decisions,
                "old_approved": self.old_approved, "new_approved": self.new_approved,
                "became_rejected": dict(self.became_rejected),
                "became_approved": dict(self.became_approved),
                "reason_changed": self.reason_changed, "size_changes": self.size_changes,
                "notional_change": self.size_change_total, "flipped_seqs": self.flipped_seqs}


def replay_logged_run(database: str, run_id: str, engine: Engine, command: str,
                      market: MarketData) -> dict[str, Any]:
    """``rulekit replay``: the run (an id, or ``last``: the latest that is not a replay) decided
    again, the replay audited (mode ``replay``) under a new run, and for a backtest its logged
    figures beside a re-run's. Returns the comparison."""
    with AuditLog(database, read_only=True) as audit:
        if run_id == LAST:  # the latest run that is not itself a replay
            run_id = resolve_run(audit.db, LAST, skip_modes=(MODE,))
        result = replay_run(audit, run_id, engine)
        run = audit.run_of(run_id)
        old_figures = logged_backtest_figures(audit, run_id) if result.mode == "backtest" else None
    with AuditLog(database) as audit:
        replay_id = audit.start_run(engine, MODE, command,
                                    {"run": run_id, "policy": engine.policy.path})
        assert result.batch is not None
        audit.write_batch(replay_id, MODE, result.batch)
    out = result.as_dict()
    out["replay_run_id"] = replay_id
    if old_figures is not None:
        out["backtest"] = {"old": old_figures,
                           "new": rerun_backtest(engine, run and run["inputs"], market)}
    return out


def replay_run(audit: AuditLog, run_id: str, engine: Engine) -> Replay:
    """Decide every logged decision of ``run_id`` again with ``engine``; compare."""
    run = audit.run_of(run_id)
    if run is None:
        raise RulekitError(f"no run {run_id!r} in this audit database", audit.path)
    frame = audit.db.sql(
        "SELECT *, epoch(decided_at) AS decided_s, epoch(signal_time) AS signal_s, "
        "epoch(market_time) AS market_s, epoch(circuit_breaker_until) AS until_s "
        "FROM decisions WHERE run_id = ? ORDER BY seq", params=[run_id]).to_arrow_table()
    rows = frame.num_rows
    if rows == 0:
        raise RulekitError(f"run {run_id!r} has no decisions to replay", audit.path)
    column = lambda name: frame.column(name).to_numpy(zero_copy_only=False)  # noqa: E731
    number = lambda name: np.array(frame.column(name).to_pylist(), dtype=float)  # noqa: E731
    text = lambda name: np.array([v or "" for v in frame.column(name).to_pylist()], dtype=str)  # noqa
    reasons = frame.column("reason").to_pylist()
    signals = SignalColumns(
        well_formed=np.array([r != "malformed_signal" for r in reasons], dtype=bool),
        **{name: text(name) for name in TEXT}, **{name: number(name) for name in NUMBERS},
        equity=np.full(rows, np.nan), timestamp=number("signal_s"),
        market_timestamp=number("market_s"),
        signal_id=np.array(frame.column("signal_id").to_pylist(), dtype=object),
        model_votes=frame.column("model_votes").to_pylist(),
        raw=frame.column("raw_input").to_pylist())
    # the logged account rows, read back as RiskStates (rows written before schema v2 lack the
    # breaker's reference: the peak, as RiskState.from_record reads a state left without it)
    peak, reference = number("peak_equity"), number("breaker_reference_equity")
    logged = zip(number("equity"), number("day_start_equity"), number("week_start_equity"), peak,
                 np.where(np.isnan(reference), peak, reference), number("consecutive_losses"),
                 number("open_trades"), number("open_exposure"), number("until_s"), strict=True)
    symbols = signals.symbol.tolist()
    same = [bool(v) for v in frame.column("symbol_trade_open").to_pylist()]
    states = [RiskState(e, d, w, p, b, int(losses), int(trades), x, until, (symbol,) if held else ())
              for (e, d, w, p, b, losses, trades, x, until), symbol, held
              in zip(logged, symbols, same, strict=True)]
    account = risk_columns(number("decided_s"), states, symbols)
    batch = engine.decide_rows(signals, account)

    old_approved = column("approved").astype(bool)
    old_quantity = number("quantity")
    seqs = column("seq")
    result = Replay(run_id, run["mode"], rows, int(old_approved.sum()), int(batch.approved.sum()),
                    batch=batch)
    new_quantity = batch.output("quantity")
    price = number("price")
    for row in range(rows):
        before, after = bool(old_approved[row]), bool(batch.approved[row])
        if before and not after:
            result.became_rejected[batch.reason[row]] += 1
            result.flipped_seqs.append(int(seqs[row]))
        elif after and not before:
            result.became_approved[reasons[row]] += 1
            result.flipped_seqs.append(int(seqs[row]))
        elif not before and reasons[row] != batch.reason[row]:
            result.reason_changed += 1
        elif before and new_quantity[row] != old_quantity[row]:
            result.size_changes += 1
            result.size_change_total += (new_quantity[row] - old_quantity[row]) * price[row]
    return result
