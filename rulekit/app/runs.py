"""`rulekit run --exchange paper`: the long-running loop over replayed candles.

Each open time: a changed policy file is swapped in (or refused, the running one staying), new
lines of the signals file are read, signals stamped up to the bar's open are decided and their
entries sent, then every symbol's bar goes to the paper exchange and the trades. Everything is
committed in the audit database, whole open times per transaction and none for quiet ones, with
the paper exchange's state (the file kept open while no reader waits, so `rulekit state` and
`rulekit audit` work from another terminal meanwhile; the account's writer lock,
``<database>.lock``, is held for the whole run, so a second writer is refused), so a restart, even
after SIGKILL, resumes from the last commit: bars and signals already handled are skipped (signals
by their signal_id: a signal without one cannot be told apart and would be decided again), and
every order the open trades should have is confirmed by its client order id.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from audit import AuditLog
from audit.risk_store import AuditJournal, RiskStore
from rulekit.decision.engine import Engine
from rulekit.errors import RulekitError
from rulekit.inputs.feeds import PolicyChange, PolicyWatcher, SignalFollower, signals_of
from rulekit.market.candles import Candles
from rulekit.market.conditions import MarketFields
from rulekit.model import Decision, Signal, format_timestamp
from rulekit.trading.account import Account, BreakerLimits, RiskEvent, RiskEventKind
from rulekit.trading.executor import ExchangeUnavailable, Executor
from rulekit.trading.lifecycle import TradeEvent
from rulekit.trading.orders import Order
from rulekit.trading.reconcile import PositionWatch, balance_shortfall
from rulekit.trading.timeline import SignalQueue, Timeline
from rulekit.trading.trade_manager import TradeManager

MODE = "paper"
# How long a paper replay running flat out (--speed 0) gathers steps into one transaction: each
# commit costs milliseconds (DuckDB's statements and its fsync), a step's work a fraction of one.
GROUP_SECONDS = 0.2


@dataclass
class Printer:
    """Where the loop reports: decisions, trade events, policy changes, status lines."""

    decision: Callable[[Signal, Decision], None] = lambda signal, decision: None
    events: Callable[[list[TradeEvent]], None] = lambda events: None
    note: Callable[[str], None] = lambda text: None
    status: Callable[[str], None] = lambda text: None
    refusal: Callable[[Order, float], None] = lambda order, at: None


@dataclass
class StopFlag:
    """Set by SIGINT/SIGTERM: the loop finishes the bar in hand and stops."""

    stop: bool = False
    reason: str = field(default="")


@dataclass
class Session:
    """What both loops share: the engine (swappable), the account, the executor, the audit."""

    audit: AuditLog
    account: Account
    manager: TradeManager
    executor: Executor
    watcher: PolicyWatcher
    decided: set[str]
    queue: SignalQueue = field(default_factory=SignalQueue)
    market: MarketFields | None = None
    refusals: int = 0  # orders the exchange refused in this run (the status line counts them)
    positions: PositionWatch | None = None  # the exchange's positions against the books

    def report_refused(self, at: float, printer: Printer) -> None:
        """Every order the exchange refused, with its own words, as soon as it happened; and
        every order that ended on the exchange's side and what was put back for it."""
        for order in self.executor.take_refused():
            self.refusals += 1
            printer.refusal(order, at)
        for text in self.executor.take_notices():
            printer.note(text)

    def decide_due(self, feed, now: float, printer: Printer) -> None:
        """Poll the policy and the signals; decide those the timeline releases by ``now``."""
        self.watcher.poll()
        self.queue.add([s for s in feed.poll() if not (s.signal_id and s.signal_id in self.decided)],
                       arrived_at=now)
        for signal, at in self.queue.due(now):
            if self.market is not None:  # a replay: missing market fields from its bars
                signal = self.market.fill([signal], [at])[0]
            if signal.signal_id:
                self.decided.add(signal.signal_id)
            printer.decision(signal, self.executor.on_signal(signal, now=at))
            self.report_refused(at, printer)

    def check_positions(self, now: float, printer: Printer, settle: bool = False) -> None:
        """The exchange's positions against the books (``trading/reconcile.py``): one line per
        symbol that differs or agrees again. ``settle`` (live): the fills of a symbol that
        differs are booked first and it is looked at once more."""
        if self.positions is None or self.executor.unreachable is not None:
            return
        exchange = self.executor.exchange

        def book_fills(symbols) -> None:
            for symbol in symbols:
                last = exchange.last_price(symbol)
                if last is not None:
                    self.on_bar(symbol, now, last, last, last, last, printer)
        try:
            for line in self.positions.check(now, book_fills if settle else None):
                printer.note(line)
        except ExchangeUnavailable as exc:
            self.executor.lost_contact(now, exc)

    def on_bar(self, symbol: str, at: float, bar_open: float, high: float, low: float,
               close: float, printer: Printer) -> None:
        """One bar (live: the last price) through the executor; what happened, printed."""
        events = self.executor.on_bar(symbol, at, bar_open, high, low, close)
        if events:
            printer.events(events)
        self.report_refused(at, printer)


def open_session(policy_path: str, audit_path: str, mode: str, equity: float | None,
                 make_exchange: Callable, printer: Printer,
                 exchange_label: str = MODE, accept_positions: bool = False
                 ) -> tuple[Session, Any]:
    """Take the account's writer lock, load the policy and the account, open (or restore) the
    exchange, reconcile its orders and positions (``accept_positions``: take the exchange's
    positions into the books), watch."""
    from rulekit.policy.loader import load_policy

    engine = Engine(load_policy(policy_path))
    # held until the run returns; the kernel releases it if the process dies first
    audit = AuditLog(audit_path, hold=False, writer=f"rulekit run --exchange {exchange_label}")
    try:
        session, exchange = _open_session(engine, audit, policy_path, mode, equity,
                                          make_exchange, printer)
        _positions_at_start(session, exchange, printer, accept_positions)
        return session, exchange
    except BaseException:
        audit.close()
        raise


def _open_session(engine: Engine, audit: AuditLog, policy_path: str, mode: str,
                  equity: float | None, make_exchange: Callable,
                  printer: Printer) -> tuple[Session, Any]:
    store = RiskStore(audit)  # one audit database, one account
    account = store.load()
    if account is None:
        if equity is None:
            raise RulekitError("a new audit database needs --equity (the account's starting equity)")
        account = Account.new(equity)
    exchange, restored = make_exchange(store, account, engine)
    engine.set_market_rules({symbol: rules for symbol in engine.policy.markets
                             if (rules := exchange.market_rules(symbol)) is not None})
    run_id = audit.start_run(engine, mode, f"run {policy_path}")
    journal = AuditJournal(audit, store, engine, run_id, mode)
    manager = TradeManager(engine, account, journal, fills_from_exchange=True)
    executor = Executor(manager, exchange, store.load_extra("orders"))
    if restored:
        for line in executor.reconcile(max(account.as_of, 0.0)):
            printer.note(f"reconciled {line}")
    else:
        state = exchange.as_record()
        store.save(run_id, account, extra={} if state is None else {"exchange": state})

    def swapped(change) -> None:
        """Between decisions: a checked new version replaces the engine; either way, audited."""
        if change.engine is None:
            kind = RiskEventKind.POLICY_REFUSED
            text = (f"policy refused, {watcher.engine.policy.name} "
                    f"v{watcher.engine.policy.version} keeps running: {change.problem}")
        else:
            change.engine.set_market_rules({symbol: rules for symbol, rules in (
                (s, exchange.market_rules(s)) for s in change.engine.policy.markets) if rules})
            manager.engine = journal.engine = change.engine
            manager.limits = BreakerLimits.from_policy(change.engine.policy)
            journal.run_id = audit.start_run(change.engine, mode, f"reload {policy_path}")
            kind = RiskEventKind.POLICY_SWAPPED
            text = (f"policy {change.engine.policy.name} v{change.engine.policy.version} "
                    f"(sha256 {change.engine.policy.hash[:12]}) swapped in")
        journal.record_state(account, [], [], [RiskEvent(kind, max(account.as_of, 0.0),
                                                         account.equity, text)])
        printer.note(text)

    watcher = PolicyWatcher(policy_path, engine, swapped)
    session = Session(audit, account, manager, executor, watcher,
                      store.decided_signal_ids((mode,)))
    return session, exchange


def _positions_at_start(session: Session, exchange, printer: Printer, accept: bool) -> None:
    """Start-up: the books' positions against the exchange's (a live run books the fills made
    while it was down first), adopted when the operator accepts the exchange's view; the
    balances compared once (said, not halting: see ``trading/reconcile.py``)."""
    account, executor = session.account, session.executor
    live = not exchange.replays_bars
    now = time.time() if live else max(account.as_of, 0.0)
    try:
        steps = {symbol: rules.amount_step for symbol in session.manager.engine.policy.markets
                 if (rules := exchange.market_rules(symbol)) is not None}
        session.positions = PositionWatch(executor, steps)
        session.check_positions(now, printer, settle=live)
    except RulekitError as exc:
        if not isinstance(exc, ExchangeUnavailable):  # a refused key, as in the loop
            _cannot_fix(exc, printer)
        raise
    if accept and executor.unreachable is None:
        adopted = session.positions.adopt(now)
        for text in adopted:
            printer.note(f"accepted {text}")
        if not adopted:
            printer.note("exchange positions agree with the books: nothing to accept")
        session.check_positions(now, printer)
    line: str | None = None
    try:
        fee_rate = float(session.manager.engine.policy.constants()["fee_pct"]) / 100
        line = balance_shortfall(account.equity, exchange.equity(), account.open_exposure,
                                 fee_rate)
    except ExchangeUnavailable:
        pass  # not answering: the first poll backs off and retries
    if line:
        executor.save_risk([RiskEvent(RiskEventKind.BALANCE_DIFFERS, now, account.equity, line)])
        printer.note(line)


def run_paper(policy_path: str, audit_path: str, candles: Sequence[Candles], signals_from: str,
              equity: float | None, bars_per_second: float, printer: Printer,
              flag: StopFlag, status_every: int = 0, accept_positions: bool = False) -> Account:
    """The paper exchange over replayed candles, one open time per step (every symbol's bar
    of it); a transaction per step when paced, per ``GROUP_SECONDS`` of steps flat out, none
    for quiet steps."""
    from plugins.paper_exchange import PaperExchange

    def make_exchange(store, account, engine):
        saved = store.load_extra("exchange")
        if saved:
            return PaperExchange.from_record(saved), True
        fee_pct = float(engine.policy.constants()["fee_pct"])
        exchange = PaperExchange(equity=account.cash_equity, fee_pct=fee_pct)
        exchange.markets.update(engine.policy.markets)  # it trades the policy's markets
        return exchange, False

    later = _Later(printer)  # printed once committed
    try:
        session, exchange = open_session(policy_path, audit_path, MODE, equity, make_exchange,
                                         later.printer, accept_positions=accept_positions)
    finally:
        later.flush()
    audit, executor = session.audit, session.executor
    audit.yield_to_readers()  # the file stays open between commits while no reader waits
    feed = signal_feed(signals_from, candles)
    session.market = MarketFields({c.symbol: c for c in candles}, session.watcher.engine.policy)
    done_until = exchange.clock if exchange.clock is not None else -math.inf
    timeline = Timeline.of(candles)
    steps = _steps(timeline.times.tolist(), done_until)  # what a restart has not done yet
    pause = 1.0 / bars_per_second if bars_per_second > 0 else 0.0
    journal = session.manager.journal
    assert isinstance(journal, AuditJournal)
    on_change = session.watcher.on_change

    def swapped(change: PolicyChange) -> None:
        journal.flush()  # what the running version decided goes under its run
        on_change(change)

    session.watcher.on_change = swapped

    def step(at: float, first: int, end: int) -> None:
        """The signals due by ``at``, then every symbol's bar of it."""
        session.decide_due(feed, at, later.printer)
        for j in range(first, end):
            session.on_bar(*timeline.bar(j), later.printer)
            if (status_every and timeline.which[j] == 0
                    and timeline.rows[j] % status_every == 0):
                later.printer.status(status_line(session.account, at, session.refusals))

    i = 0
    while i < len(steps) and not flag.stop:
        # One transaction for the steps of up to GROUP_SECONDS (one step when paced, or when a
        # reader waits), begun only if something is written: quiet steps write nothing. What
        # they print is printed once committed; killed before, a restart does them again.
        deadline = time.monotonic() + GROUP_SECONDS
        with audit.deferred() as written, executor.one_commit(lambda: written.begun), \
                journal.gathered():
            while True:
                step(*steps[i])
                i += 1
                if (pause or i >= len(steps) or flag.stop or time.monotonic() >= deadline
                        or (audit.readers is not None and audit.readers.waiting())):
                    break
        later.flush()
        audit.let_readers_in()
        if pause:
            _pace(pause * (steps[i - 1][2] - steps[i - 1][1]), audit, flag)
    if flag.stop and i < len(steps):
        printer.note(f"stopping ({flag.reason}): no new entries; open trades keep their stops")
    if len(session.queue):
        printer.note(f"{len(session.queue)} signal(s) released after the last bar wait for more bars")
    session.executor.checkpoint()  # quiet bars commit nothing: what is printed next is on record
    session.audit.close()  # the database and the writer lock (on an error: the process's exit)
    return session.account


def run_live(policy_path: str, audit_path: str, exchange_name: str, options: dict,
             signals_from: str, equity: float | None, poll_seconds: float, printer: Printer,
             flag: StopFlag, status_every: int = 0, max_polls: int | None = None,
             accept_positions: bool = False) -> Account:
    """A real exchange (ccxt): every ``poll_seconds``, decide due signals, then let each symbol
    with an open trade report its fills at the last price (a one-price bar)."""
    from rulekit.app.plugin_manager import open_exchange, plugin_manager

    def make_exchange(store, account, engine):
        return open_exchange(plugin_manager(), exchange_name, options), bool(account.trades)

    session, exchange = open_session(policy_path, audit_path, "live", equity, make_exchange,
                                     printer, exchange_name, accept_positions)
    feed = signal_feed(signals_from, [])
    executor = session.executor
    polls = failures = 0
    try:
        while not flag.stop and (max_polls is None or polls < max_polls):
            now = time.time()
            session.manager.pass_over(now)  # the account's clock is the wall clock
            session.check_positions(now, printer, settle=True)  # changed by hand, or put right
            session.decide_due(feed, now, printer)  # entries refused while it does not answer
            if executor.unreachable is not None:
                found = executor.recover(now)
                if found is not None:
                    printer.note(f"exchange answers again after {failures} attempt(s)")
                    for line in found:
                        printer.note(f"reconciled {line}")
                session.report_refused(now, printer)
            if executor.unreachable is None:
                for symbol in sorted({t.symbol for t in session.account.trades.values()}):
                    try:
                        last = exchange.last_price(symbol)
                    except ExchangeUnavailable as exc:
                        executor.lost_contact(now, exc)
                        break
                    session.on_bar(symbol, now, last, last, last, last, printer)
            polls += 1
            if status_every and polls % status_every == 0:
                printer.status(status_line(session.account, now, session.refusals))
            if executor.unreachable is None:
                failures = 0
                pause = poll_seconds
            else:
                failures += 1
                ceiling = float(session.manager.engine.policy.constants()[
                    "exchange_retry_ceiling_seconds"])
                pause = backoff(failures, poll_seconds, ceiling)
                if failures == 1:
                    printer.note(f"exchange unreachable: {executor.unreachable}; entries refused, "
                                 f"open trades kept, retrying with backoff up to {ceiling:g}s")
            _sleep(pause, flag)
    except RulekitError as exc:  # what retrying cannot fix: a refused key, an unknown symbol
        _cannot_fix(exc, printer)
        raise
    if flag.stop:
        printer.note(f"stopping ({flag.reason}): no new entries; open trades keep their stops")
    session.executor.checkpoint()  # quiet bars commit nothing: what is printed next is on record
    session.audit.close()  # the database and the writer lock (on an error: the process's exit)
    return session.account


def _cannot_fix(exc: RulekitError, printer: Printer) -> None:
    printer.note(f"stopping: {exc}; retrying cannot fix this, open trades keep the orders "
                 "already on the exchange")


def backoff(failures: int, base: float, ceiling: float) -> float:
    """The wait before attempt ``failures + 1`` at an exchange that does not answer: doubling
    from ``base``, at most ``ceiling``, with jitter (between half and all of it) so many clients
    rate-limited together do not all come back at the same moment."""
    return min(ceiling, max(base, 0.01) * 2.0 ** failures) * random.uniform(0.5, 1.0)


def _steps(times: list[int], done_until: float) -> list[tuple[float, int, int]]:
    """The replay's steps after ``done_until``: (open time, first bar, end) of every open time."""
    steps = []
    k = 0
    while k < len(times):
        at, first = times[k], k
        while k < len(times) and times[k] == at:  # every symbol's bar of this open time
            k += 1
        if at > done_until:
            steps.append((float(at), first, k))
    return steps


def _pace(seconds: float, audit: AuditLog, flag: StopFlag) -> None:
    """The replay's pause between bars: readers that come meanwhile get the file at once."""
    end = time.monotonic() + seconds
    while not flag.stop and (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.02))
        audit.let_readers_in()


class _Later:
    """Printer calls held until the step they report is committed: what is printed is on
    record (a run killed before the commit printed nothing of it)."""

    def __init__(self, printer: Printer):
        self.calls: list[tuple[Callable, tuple]] = []
        self.printer = Printer(*(self._held(getattr(printer, f.name)) for f in fields(Printer)))

    def _held(self, call: Callable) -> Callable:
        return lambda *args: self.calls.append((call, args))

    def flush(self) -> None:
        calls, self.calls = self.calls, []
        for call, args in calls:
            call(*args)


def _sleep(seconds: float, flag: StopFlag) -> None:
    """Sleep, but wake within a tenth of a second of SIGINT/SIGTERM."""
    end = time.monotonic() + seconds
    while not flag.stop and (left := end - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))


def status_line(account: Account, at: float, refusals: int = 0) -> str:
    """One line for a person watching: equity, today's drawdown, the breaker, the orders the
    exchange refused in this run, each open trade's R."""
    daily = max(0.0, (account.day_start_equity - account.equity) / account.day_start_equity * 100)
    trades = ", ".join(
        f"{t.trade_id} {t.side} {t.in_r(account.marks.get(t.symbol, t.entry_price)):+.2f}R"
        if not t.awaiting_fill else f"{t.trade_id} {t.side} (entry sent)"
        for t in account.trades.values()) or "none"
    breaker = (f"breaker until {format_timestamp(account.circuit_breaker_until)}"
               if account.paused(at) else "breaker clear")
    return (f"{format_timestamp(at)}  equity {account.equity:,.2f}  daily drawdown {daily:.2f}%  "
            f"streak {account.consecutive_losses}  {breaker}  refused orders {refusals}  "
            f"open: {trades}")


class _SourceSignals:
    """A signal-source plugin's signals, handed over once."""

    def __init__(self, signals: list[Signal]):
        self.pending = signals

    def poll(self) -> list[Signal]:
        out, self.pending = self.pending, []
        return out


class _StdinSignals:
    """Standard input read by a thread, so the loop never blocks on it."""

    def __init__(self):
        import queue
        import sys
        import threading

        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in sys.stdin],
                         daemon=True).start()

    def poll(self) -> list[Signal]:
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get_nowait())
        return signals_of(lines)


def signal_feed(spec: str, candles: Sequence[Candles]):
    """``-`` for standard input, ``plugin:NAME`` for a signal-source plugin (``plugin:reference``
    computes the reference ensemble from the replayed candles), else a JSON Lines file followed as
    it grows. In a replay, missing market fields come from the bars when a signal is released."""
    if spec == "-":
        return _StdinSignals()
    if spec.startswith("plugin:"):
        from rulekit.app.plugin_manager import open_signal_source, plugin_manager

        source = open_signal_source(plugin_manager(), spec[len("plugin:"):],
                                    {"candles": list(candles)})
        return _SourceSignals(list(source.signals()))
    return SignalFollower(spec)
