"""The account a dry run decides each signal against: the database's, as it would be at the
signal's own time.

A signal stamped on a later UTC day than the account's last change must not be rejected for the
old day's drawdown: every mode moves the account's clock to the decision's time first (a new day
or week starts from today's equity, the peaks rise, a breaker pause that has ended is over, one
that is due trips). A dry run applies the same rule, ``Account.advance``, to a copy, and writes
nothing back: what it decides changes no account.
"""
from __future__ import annotations

import copy
import math
from datetime import datetime

import numpy as np

from rulekit.decision.engine import ACCOUNT_COLUMNS, BatchDecisions, Engine, SignalColumns, risk_columns
from rulekit.model import RiskState
from rulekit.trading.account import DAY, Account, BreakerLimits, RiskEventKind


def state_at(account: Account, limits: BreakerLimits, at: float) -> tuple[RiskState, bool]:
    """The account's row at ``at`` (epoch seconds) and whether its breaker trips then; the
    account itself is left as it was."""
    moved = copy.copy(account)  # advance changes only the copy's own figures, never its trades
    events = moved.advance(at, limits)
    return moved.snapshot(), any(e.kind is RiskEventKind.CIRCUIT_BREAKER for e in events)


def decide_against_account(engine: Engine, signals: SignalColumns, account: Account,
                           now: datetime) -> BatchDecisions:
    """Decide ``signals`` each against ``account`` moved to its decision time (its timestamp,
    else ``now``). Signals that meet the same state (one UTC day, one side of the account's
    clock and of its pause) share one ``advance``; where the breaker trips, each time has its own
    (the pause runs from it)."""
    limits = BreakerLimits.from_policy(engine.policy)
    when = np.where(np.isnan(signals.timestamp), now.timestamp(), signals.timestamp)
    until = math.nan if account.circuit_breaker_until is None else account.circuit_breaker_until
    key = np.column_stack((np.floor(when / DAY), when >= account.as_of, when >= until))
    _, first, group = np.unique(key, axis=0, return_index=True, return_inverse=True)
    group = group.reshape(-1)
    symbols = signals.symbol.tolist()
    states, tripped = zip(*(state_at(account, limits, float(when[row])) for row in first),
                          strict=True) if len(first) else ((), ())
    if len(states) == 1 and not tripped[0]:
        columns = risk_columns(when, states[0], symbols)
    else:
        columns = {name: np.empty(len(when)) for name in ACCOUNT_COLUMNS}
        for index, state in enumerate(states):
            rows = np.flatnonzero(group == index)
            if tripped[index]:
                for row in rows.tolist():
                    _assign(columns, [row], risk_columns(
                        when[[row]], state_at(account, limits, float(when[row]))[0],
                        [symbols[row]]))
            else:
                _assign(columns, rows, risk_columns(when[rows], state,
                                                    [symbols[row] for row in rows.tolist()]))
    # as a dry run against one state decides (``Engine.decide_batch``): a signal's own equity
    columns["equity"] = np.where(np.isnan(signals.equity), columns["equity"], signals.equity)
    return engine.decide_rows(signals, columns)


def _assign(columns: dict[str, np.ndarray], rows, part: dict[str, np.ndarray]) -> None:
    for name, values in part.items():
        columns[name][rows] = values
