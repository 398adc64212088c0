"""`rulekit run --exchange paper`: the long-running loop over replayed candles.

Each bar: a changed policy file is swapped in (or refused, the running one staying), new lines of
the signals file are read, signals stamped up to the bar's open are decided and their entries
sent, then the bar goes to the paper exchange and the trades. Everything is committed in the audit
database (opened only for each transaction, so `rulekit state` and `rulekit audit` work from
another terminal meanwhile) together with the paper exchange's state and the file offset, so a
restart, even after SIGKILL, resumes from the last commit: bars and signals already handled are
skipped (signals by their signal_id: a signal without one cannot be told apart and would be decided
again), and every order the open trades should have is confirmed by its client order id.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from audit import AuditLog
from audit.risk_store import AuditJournal, RiskStore
from rulekit.account import Account
from rulekit.engine import Engine
from rulekit.errors import RulekitError
from rulekit.executor import Executor
from rulekit.feeds import PolicyWatcher, SignalFollower
from rulekit.lifecycle import TradeEvent
from rulekit.market_data import Candles
from rulekit.model import Decision, Signal
from rulekit.trade_manager import TradeManager

MODE = "paper"


@dataclass
class Printer:
    """Where the loop reports: decisions, trade events, policy changes, status lines."""

    decision: Callable[[Signal, Decision], None] = lambda signal, decision: None
    events: Callable[[list[TradeEvent]], None] = lambda events: None
    note: Callable[[str], None] = lambda text: None


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes the bar in hand and stops."""

    stop: bool = False
    reason: str = field(default="")


def run_paper(policy_path: str, audit_path: str, candles: Sequence[Candles], signals_path: str,
              equity: float | None, bars_per_second: float, printer: Printer,
              flag: StopFlag) -> Account:
    from plugins.paper_exchange import PaperExchange
    from rulekit.policy import load_policy

    engine = Engine(load_policy(policy_path))
    audit = AuditLog(audit_path, hold=False)
    store = RiskStore(audit)
    account = store.load()
    if account is None:
        if equity is None:
            raise RulekitError("a new audit database needs --equity (the account's starting equity)")
        account = Account.new(equity)
    saved_exchange = store.load_extra("paper_exchange")
    fee_pct = float(engine.policy.constants()["fee_pct"])
    exchange = (PaperExchange.from_record(saved_exchange) if saved_exchange
                else PaperExchange(equity=account.cash_equity, fee_pct=fee_pct))
    exchange.markets.update({s: r for s, r in engine.policy.markets.items()
                             if s not in exchange.markets})
    follower = SignalFollower(signals_path)  # from the start: decided signal ids are skipped
    run_id = audit.start_run(engine, MODE, f"run {policy_path}")
    journal = AuditJournal(audit, store, engine, run_id, MODE)
    manager = TradeManager(engine, account, journal, fills_from_exchange=True)
    executor = Executor(manager, exchange)
    if saved_exchange:
        for line in executor.reconcile(account.as_of):
            printer.note(f"reconciled {line}")
    else:
        store.save(run_id, account, extra={"paper_exchange": exchange.as_record()})

    def swapped(change) -> None:
        if change.engine is None:
            printer.note(f"policy refused, {engine_now().policy.name} "
                         f"v{engine_now().policy.version} keeps running: {change.problem}")
        else:
            manager.engine = change.engine
            journal.engine = change.engine
            journal.run_id = audit.start_run(change.engine, MODE, f"reload {policy_path}")
            printer.note(f"policy {change.engine.policy.name} v{change.engine.policy.version} "
                         f"(sha256 {change.engine.policy.hash[:12]}) swapped in")

    watcher = PolicyWatcher(policy_path, engine, swapped)
    engine_now = lambda: watcher.engine  # noqa: E731
    decided = store.decided_signal_ids((MODE,))
    pending: list[Signal] = []
    done_until = exchange.clock if exchange.clock is not None else -math.inf
    bars = sorted(((int(t), k, i) for k, c in enumerate(candles) for i, t in enumerate(c.timestamp)),
                  key=lambda row: (row[0], row[1]))
    pause = 1.0 / bars_per_second if bars_per_second > 0 else 0.0
    for at, k, i in bars:
        if flag.stop:
            printer.note(f"stopping ({flag.reason}): no new entries; open trades keep their stops")
            break
        if at <= done_until:
            continue
        watcher.poll()
        pending += [s for s in follower.poll() if not (s.signal_id and s.signal_id in decided)]
        pending.sort(key=lambda s: s.timestamp.timestamp() if s.timestamp else -math.inf)
        while pending and (pending[0].timestamp is None or pending[0].timestamp.timestamp() <= at):
            signal = pending.pop(0)
            printer.decision(signal, executor.on_signal(signal, now=float(at)))
        c = candles[k]
        events = executor.on_bar(c.symbol, float(at), float(c.open[i]), float(c.high[i]),
                                 float(c.low[i]), float(c.close[i]))
        if events:
            printer.events(events)
        if pause:
            time.sleep(pause)
    audit.close()
    return account
