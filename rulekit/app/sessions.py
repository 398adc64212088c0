"""What the commands do between parsing their options and rendering: open the candles and check
them against the policy and the signals, find the database's account, simulate signals over bars.

``say`` is where a one-line note for the person goes (stderr in the CLI); user errors are raised
as ``RulekitError``, one line each.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from rulekit.errors import RulekitError

SIMULATION_MODE = "simulate"
Say = Callable[[str], None]


def load_candles(manager, sources: Sequence[str], say: Say) -> list:
    """Every symbol's candles from the market-data sources named (``[SYMBOL=]SOURCE``), through
    the plugins, each with the source it came from; a file's own problems are said."""
    from rulekit.app.plugin_manager import open_market_data
    from rulekit.inputs.candle_sources import CandleSource, LoadedCandles

    found = []
    for given in sources:
        source = CandleSource.parse(given)
        market = open_market_data(manager, source.path,
                                  {"symbol": source.symbol} if source.symbol else None)
        for symbol in market.symbols():
            candles = market.candles(symbol)
            for problem in candles.problems:
                say(f"note: {given}: {problem}")
            found.append(LoadedCandles(source, candles))
    return found


def check_candles(loaded: list, policy, signals, bars_drive_trades: bool, say: Say) -> None:
    """Refuse candles that cannot serve the run (a market the policy does not list, a symbol
    given twice, a traded symbol without bars), all at once; say what would be ignored."""
    from rulekit.inputs.candle_sources import coverage, market_problems

    markets = market_problems(loaded, policy)
    found = coverage(loaded, signals, policy, bars_drive_trades) if signals is not None else None
    errors = (markets if bars_drive_trades else []) + (found.errors if found else [])
    notes = ([] if bars_drive_trades else markets) + (found.notes if found else [])
    for note in notes:
        say(f"note: {note}")
    if errors:
        raise RulekitError("\n".join(errors))


def reference_signals(manager, candles: list) -> list:
    """The built-in reference ensemble's signals over ``candles`` (a signal-source plugin)."""
    from rulekit.app.plugin_manager import open_signal_source

    return list(open_signal_source(manager, "reference", {"candles": candles}).signals())


def stored_account(audit, equity: float | None, say: Say):
    """The database's account for a dry run, or None (a fresh account of --equity); its equity
    counts, --equity is only warned about."""
    from audit.risk_store import RiskStore

    account = RiskStore(audit).load()
    if account is not None:
        warn_if_equity_differs(account, equity, say)
    return account


def warn_if_equity_differs(account, equity: float | None, say: Say) -> None:
    if equity is not None and not math.isclose(equity, account.cash_equity):
        say(f"warning: --equity {equity:,.2f} ignored: the database's account has "
            f"{account.cash_equity:,.2f} (start {account.start_equity:,.2f} plus realised PnL)")


def simulate(engine, audit, signals: list, candles: list, equity: float | None, command: str,
             on_step: Callable[[Any], None], say: Say):
    """Signals and bars through the trade manager on the one timeline (`evaluate --bars`), the
    account persisted in the audit database; signals already decided there are skipped. Returns
    the account and the run id."""
    from audit.risk_store import AuditJournal, RiskStore
    from rulekit.trading.account import Account
    from rulekit.trading.timeline import Timeline
    from rulekit.trading.trade_manager import TradeManager, drive

    store = RiskStore(audit)
    account = store.load()
    run_id = audit.start_run(engine, SIMULATION_MODE, command)
    if account is None:
        if equity is None:
            raise RulekitError("a new audit database needs --equity (the account's starting equity)")
        account = Account.new(equity)
        store.save(run_id, account)
    else:
        warn_if_equity_differs(account, equity, say)
    decided = store.decided_signal_ids((SIMULATION_MODE,))
    fresh = [s for s in signals if not (s.signal_id and s.signal_id in decided)]
    if len(fresh) < len(signals):
        say(f"resuming: {len(signals) - len(fresh)} signal(s) already decided in this database "
            "are skipped")
    trades = TradeManager(engine, account, AuditJournal(audit, store, engine, run_id,
                                                        SIMULATION_MODE))
    drive(trades, Timeline.of(list(candles), fresh).with_market_fields(engine.policy), on_step)
    # quiet bars moved the clock, the marks and the peak without a commit: what is printed next
    # is committed first
    with trades.journal.transaction():
        trades.journal.record_state(trades.account, [], [], [])
    return trades.account, run_id
