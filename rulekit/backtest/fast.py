"""The event-driven backtest loop: the per-bar engine's trades and decisions, with the Python work
spent only where something can happen.

``run_backtest`` (``fast=True``, the default) runs here; ``fast=False`` runs the plain per-bar loop
of ``rulekit.backtest.run``, and the tests require both to give the same trades, the same equity
curve and the same decisions. These things make the difference:

- **Quiet bars.** On a bar where no open trade of its symbol can reach its stop, take profit,
  partial, breakeven trigger, trailing move or time exit (each read against the trigger levels
  only, never a fill price), and no day or week starts, the bar does only what the lifecycle would
  do on it: note the bar, extend the excursions, mark the account and move its clock
  (``Account.advance``: peaks, breaker). Any other bar goes through ``TradeManager.on_bar``.
- **Signals known to be rejected.** A signal that fails a check reading nothing of the account,
  or whose symbol already has a trade (``symbol_position_open``), is rejected whatever the rest of
  the state: its account row is noted and it is decided with the others in one batch at the end
  (``Engine.decide_rows``), as the plain loop already does for the first kind. The account row is
  reused from the previous such signal while nothing moved the account.
- **Batches while flat.** With no trade open the account row is constant but for the clock;
  after a run of one-by-one rejections the next signals are decided as one batch, up to the
  first approval (``flat_batch`` in ``run_events``).
- **Signals and market fields as columns.** Signals may come as ``SignalColumns`` (no object per
  signal); their price, ATR, EMA and volume are looked up for all of them at once, and a
  ``Signal`` is built only for the signals decided one by one. Bars are read as lists a chunk at
  a time, the equity curve and the deferred rows kept as arrays.
"""
from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import numpy as np

from rulekit.decision.engine import ACCOUNT_COLUMNS, Engine, SignalColumns
from rulekit.market.candles import Candles
from rulekit.market.conditions import MarketFields, merged
from rulekit.model import Side, Signal
from rulekit.trading.account import DAY, WEEK, Account, RiskEventKind, day_start, week_start
from rulekit.trading.lifecycle import Trade, TradeState
from rulekit.trading.timeline import Timeline
from rulekit.trading.trade_manager import MemoryJournal, TradeManager

OPEN, APPROVED = TradeState.OPEN, TradeState.APPROVED
LONG = Side.LONG
FLAT_BATCH, MAX_FLAT_BATCH = 32, 4096  # signals decided at once while no trade is open
FLAT_AFTER = 8  # one-by-one rejections in a row, with no trade open, before batching
MARKET_FIELDS = ("price", "atr", "ema_200", "volume_24h", "spread_bps")


class FilledSignals:
    """The signals' missing market fields from the timeline's bars, by ``MarketFields``' rules,
    computed as columns; ``signal(i)`` builds the one ``Signal`` that ``MarketFields.fill`` would.

    ``raw``: the signals as given, when they came as objects (else they are read from the
    columns, and no object is built but for the signals decided one by one)."""

    def __init__(self, columns: SignalColumns, released: np.ndarray, fields: MarketFields,
                 raw: Sequence[Signal] | None = None):
        self.raw = raw
        rows = columns.rows
        self.changed = np.zeros(rows, dtype=bool)
        found = {name: np.full(rows, np.nan) for name in (*MARKET_FIELDS, "history_bars",
                                                          "market_timestamp")}
        for symbol in fields.candles:
            index = np.flatnonzero(columns.well_formed & (columns.symbol == symbol))
            if not len(index):
                continue
            at = fields.series(symbol).at(released[index])
            found["price"][index], found["atr"][index] = at.price, at.atr
            found["ema_200"][index], found["volume_24h"][index] = at.ema_200, at.volume_24h
            found["spread_bps"][index] = fields.assumed_spread
            found["history_bars"][index] = at.bars
            found["market_timestamp"][index] = at.market_timestamp
            own_all = np.ones(len(index), dtype=bool)
            for name in MARKET_FIELDS:
                own_all &= np.isfinite(getattr(columns, name)[index])
            self.changed[index[~own_all]] = True
        patched = {}
        for name in MARKET_FIELDS:
            own = getattr(columns, name)
            patched[name] = np.where(self.changed & ~np.isfinite(own), found[name], own)
        patched["history_bars"] = np.where(self.changed, found["history_bars"],
                                           columns.history_bars)
        own_stamp = columns.market_timestamp
        patched["market_timestamp"] = np.where(self.changed & np.isnan(own_stamp),
                                               found["market_timestamp"], own_stamp)
        self.columns = SignalColumns(**{**{name: getattr(columns, name)
                                           for name in SignalColumns.__dataclass_fields__},
                                        **patched})
        self._found = found if raw is not None else {}

    def signal(self, i: int) -> Signal:
        if self.raw is None:
            return signal_at(self.columns, i)
        signal = self.raw[i]
        if not self.changed[i]:
            return signal
        return merged(signal, *(float(self._found[name][i]) for name in (
            *MARKET_FIELDS, "history_bars", "market_timestamp")))


def signal_at(columns: SignalColumns, i: int) -> Signal:
    """Row ``i`` of ``columns`` as the ``Signal`` it was read from (text "" and NaN times are
    None, as ``SignalColumns.from_signals`` writes them)."""
    def moment(value: float) -> datetime | None:
        return None if math.isnan(value) else datetime.fromtimestamp(value, UTC)

    return Signal(str(columns.symbol[i]) or None, str(columns.side[i]) or None,
                  str(columns.consensus[i]) or None, float(columns.confidence[i]),
                  float(columns.price[i]), float(columns.atr[i]), float(columns.ema_200[i]),
                  float(columns.volume_24h[i]), float(columns.spread_bps[i]),
                  float(columns.history_bars[i]), str(columns.signal_id[i]) or None,
                  moment(float(columns.timestamp[i])),
                  moment(float(columns.market_timestamp[i])), float(columns.strength[i]),
                  columns.model_votes[i], float(columns.equity[i]), bool(columns.well_formed[i]),
                  columns.raw[i])


def signals_of(columns: SignalColumns) -> list[Signal]:
    """Every row of ``columns`` as a ``Signal`` (the per-bar loop's input)."""
    return [signal_at(columns, i) for i in range(columns.rows)]


def quiet(trade: Trade, at: float, high: float, low: float) -> bool:
    """Nothing of the lifecycle happens to ``trade`` on this bar: no fill, no time exit, and no
    stop, take profit, partial, breakeven trigger or trailing move reached (trigger levels only;
    a comparison that might go either way counts as something happening)."""
    if trade.state is APPROVED or trade.external_fills or at <= trade.last_bar_at \
            or at < trade.opened_at:
        return False
    if (at - trade.opened_at >= trade.time_exit_seconds
            and trade.direction * (trade.best_price - trade.progress_price) < 0):
        return False
    if trade.side is LONG:
        if low <= trade.stop_loss or high >= trade.take_profit:
            return False
        if trade.state is OPEN:
            if high >= trade.partial_tp_price:
                return False
        elif high > trade.best_price:  # a new best price may pull the trailing stop up
            return False
        return trade.breakeven_done or high < trade.breakeven_trigger
    if high >= trade.stop_loss or low <= trade.take_profit:
        return False
    if trade.state is OPEN:
        if low <= trade.partial_tp_price:
            return False
    elif low < trade.best_price:
        return False
    return trade.breakeven_done or low > trade.breakeven_trigger


def run_events(engine: Engine, candles: Sequence[Candles],
               signals: Sequence[Signal] | SignalColumns, equity: float,
               slippage_bps: float = 0.0, run_id: str = "backtest",
               progress: Callable[[int, int], None] | None = None):
    """``run_backtest``'s contract (see ``rulekit.backtest.run``), event by event."""
    from rulekit.backtest.run import BacktestResult, Deferred, end_of_data, state_free_rejections

    if isinstance(signals, SignalColumns):
        timeline, ordered = Timeline.of_columns(candles, signals)
        raw = None
    else:
        timeline = Timeline.of(candles, signals)
        ordered, raw = SignalColumns.from_signals(timeline.signals), timeline.signals
    filled = FilledSignals(ordered, timeline.released,
                           MarketFields({c.symbol: c for c in candles}, engine.policy), raw)
    columns_in = filled.columns
    journal = MemoryJournal(run_id=run_id)
    account = Account.new(equity)
    manager = TradeManager(engine, account, journal, fill_at_next_open=True,
                           slippage_bps=slippage_bps)
    limits = manager.limits
    loss_pct = limits.loss_pct

    symbols = [c.symbol for c in candles]
    steps = [c.timeframe_seconds for c in candles]
    bars = BarChunks(timeline)
    released, before_bar = timeline.released.tolist(), timeline.before_bar.tolist()
    ends = sorted({int(k) for k in timeline.last_bar.tolist() if k >= 0})
    end_set = set(ends)
    ended: set[str] = set()
    surely_rejected = state_free_rejections(engine, columns_in, timeline.released, equity)
    defer_open = "symbol_position_open" in engine.program.check_names
    names, codes = np.unique(columns_in.symbol, return_inverse=True)
    signal_symbols = [names.tolist()[code] for code in codes.tolist()] if len(codes) else []
    deferred = array("q")
    deferred_rows = array("d")   # the account row (ACCOUNT_COLUMNS) of each deferred signal
    cancelled: list[Trade] = []
    trades, marks = account.trades, account.marks
    # What the quiet paths read of the open trades, rebuilt after anything changed a trade:
    # per symbol its trades, and per trade what marking it needs (Account.equity's terms).
    book: dict = {"stale": True, "clean": False, "by_symbol": {}, "legs": []}
    flat = {"rejections": 0, "size": FLAT_BATCH}  # one-by-one rejections in a row while flat

    def rebuild() -> None:
        by_symbol: dict[str, list[Trade]] = {}
        legs = []
        for t in trades.values():
            by_symbol.setdefault(t.symbol, []).append(t)
            legs.append((t.realised_pnl, t.state is APPROVED, 1.0 if t.side is LONG else -1.0,
                         t.symbol, t.entry_price, t.quantity))
        book["by_symbol"], book["legs"], book["stale"] = by_symbol, legs, False

    def changed() -> None:
        """A trade opened, moved, closed or was cancelled: equity is no longer the last one."""
        book["stale"], book["clean"] = True, False

    def marked_equity() -> float:
        """``Account.equity``, the same operations in the same order."""
        total = account.start_equity + account.closed_pnl
        for realised, waiting, direction, symbol, entry, quantity in book["legs"]:
            total += realised
            if not waiting:
                total += direction * (marks.get(symbol, entry) - entry) * quantity
        return total

    def defer(i: int, at: float) -> None:
        """Note the account row a signal known to be rejected meets; decide it at the end."""
        deferred.append(i)
        if (not book["clean"] or at >= account.day_started_at + DAY
                or at >= account.week_started_at + WEEK or breaker_due()):
            book["clean"] = at >= account.as_of  # else advance leaves the account as it was
            state = manager.pass_over(at)  # the clock moves and something may change
            deferred_rows.extend((at, *state[:9], signal_symbols[i] in state.open_symbols))
            return
        if at >= account.as_of:
            account.as_of = at  # all that advance would do: nothing else moves
        exposure = 0.0
        held = False
        symbol = signal_symbols[i]
        for t in trades.values():
            mark = marks.get(t.symbol)
            exposure += t.quantity * (t.entry_price if mark is None else mark)
            held = held or t.symbol == symbol
        until = account.circuit_breaker_until
        deferred_rows.extend((at, account.last_equity, account.day_start_equity,
                              account.week_start_equity, account.peak_equity,
                              account.breaker_reference_equity, account.consecutive_losses,
                              len(trades), exposure, math.nan if until is None else until, held))

    def breaker_due() -> bool:
        reference = account.breaker_reference_equity
        return (reference - account.last_equity) / reference * 100 >= loss_pct

    def decide(i: int) -> int:
        """Decide signal ``i`` (and, while flat after a run of rejections, the ones after it
        up to the next approval, see ``flat_batch``); return the next signal to decide."""
        at = released[i]
        if surely_rejected[i] or (defer_open and any(
                t.symbol == signal_symbols[i] for t in trades.values())):
            defer(i, at)
            return i + 1
        if not trades and flat["rejections"] >= FLAT_AFTER and at >= account.as_of:
            following = flat_batch(i)
            if following > i:
                return following
        advanced = at >= account.as_of
        decision, trade = manager.on_signal(filled.signal(i), now=at)
        if not trades or trade is not None:
            flat["rejections"] = 0 if decision.approved else flat["rejections"] + 1
        if trade is not None:
            changed()
            if trade.symbol in ended:  # no bar left to fill it
                cancel(trade, at)
        else:
            book["clean"] = advanced
        return i + 1

    def flat_batch(i: int) -> int:
        """No trade is open, so the account row stays as it is but for the clock (a new day or
        week starts from today's equity; a pending breaker trip ends the batch): decide the
        signals from ``i`` on as one batch against the rows they will meet, note those before
        the first approval as rejected (``defer``, which moves the account as one by one) and
        return the first approved one, to be decided one by one. A row predicted wrongly could
        only be one the final batch finds approved, which raises."""
        size = flat["size"]
        equity_now = account.start_equity + account.closed_pnl  # Account.equity with no trade
        peak = max(account.peak_equity, equity_now)
        reference = max(account.breaker_reference_equity, equity_now)
        trip_pending = (reference - equity_now) / reference * 100 >= loss_pct
        until = account.circuit_breaker_until
        day_at, day_equity = account.day_started_at, account.day_start_equity
        week_at, week_equity = account.week_started_at, account.week_start_equity
        picked: list[int] = []
        moments: list[float] = []
        days: list[float] = []
        weeks: list[float] = []
        end = i
        for j in range(i, min(count, i + size)):
            t = released[j]
            if trip_pending and (until is None or t >= until):
                break
            if t >= day_at + DAY:
                day_at, day_equity = day_start(t), equity_now
            if t >= week_at + WEEK:
                week_at, week_equity = week_start(t), equity_now
            end = j + 1
            if not surely_rejected[j]:
                picked.append(j)
                moments.append(t)
                days.append(day_equity)
                weeks.append(week_equity)
        if not picked:
            return i
        rows = len(picked)
        batch = engine.decide_rows(columns_in.take(picked), {
            "decided_at": np.array(moments), "equity": np.full(rows, equity_now),
            "day_start_equity": np.array(days), "week_start_equity": np.array(weeks),
            "peak_equity": np.full(rows, peak), "breaker_reference_equity": np.full(rows, reference),
            "consecutive_losses": np.full(rows, float(account.consecutive_losses)),
            "open_trades": np.zeros(rows), "open_exposure": np.zeros(rows),
            "circuit_breaker_until": np.full(rows, math.nan if until is None else until),
            "symbol_trade_open": np.zeros(rows)})
        approved = np.flatnonzero(batch.approved)
        following = picked[int(approved[0])] if len(approved) else end
        flat["size"] = FLAT_BATCH if len(approved) else min(2 * size, MAX_FLAT_BATCH)
        for j in range(i, following):
            defer(j, released[j])
        return following

    def cancel(trade: Trade, at: float) -> None:
        trade.cancel(at, "no_bar_to_fill")
        del account.trades[trade.trade_id]
        cancelled.append(trade)
        changed()

    def quiet_bar(symbol: str, at: float, high: float, low: float, close: float):
        """The bar if nothing happens on it (see ``quiet``): its risk events, or None if it has
        to go through ``TradeManager.on_bar``."""
        if (at < account.as_of or at >= account.day_started_at + DAY
                or at >= account.week_started_at + WEEK):
            return None
        if book["stale"]:
            rebuild()
        mine = book["by_symbol"].get(symbol, ())
        for t in mine:
            if not quiet(t, at, high, low):
                return None
        for t in mine:
            t.last_bar_at = at
            if t.side is LONG:
                t.best_price = max(t.best_price, high)
                t.worst_price = min(t.worst_price, low)
            else:
                t.best_price = min(t.best_price, low)
                t.worst_price = max(t.worst_price, high)
        marks[symbol] = close
        equity_now = marked_equity()
        reference = max(account.breaker_reference_equity, equity_now)
        if ((reference - equity_now) / reference * 100 >= loss_pct
                and not account.paused(at)):
            risk_events = advance(at, limits)  # the breaker trips: the account's own code
            journal.record_state(account, [], [], risk_events)
            return risk_events
        account.as_of = at
        account.last_equity = equity_now
        account.peak_equity = max(account.peak_equity, equity_now)
        account.breaker_reference_equity = reference
        return ()

    curve_times = array("d")
    curve = array("d")
    closed = manager.closed
    trips = 0
    next_signal, total, count = 0, len(timeline.times), len(released)
    next_end = 0
    on_bar, advance = manager.on_bar, account.advance
    k = base = top = 0
    times: list[int] = []
    which: list[int] = []
    o: list[float] = []
    h: list[float] = []
    l: list[float] = []
    c: list[float] = []
    while k < total:
        while next_signal < count and before_bar[next_signal] <= k:
            next_signal = decide(next_signal)
        if not trades:  # nothing to drive: on to the next signal or the end of a symbol's data
            while next_end < len(ends) and ends[next_end] < k:
                next_end += 1
            upcoming = min(before_bar[next_signal] if next_signal < count else total,
                           ends[next_end] if next_end < len(ends) else total)
            if upcoming > k and k not in end_set:
                if progress is not None and upcoming // 50_000 > k // 50_000:
                    progress(upcoming // 50_000 * 50_000, total)
                k = upcoming
                continue
        if k >= top:  # the bars' values as lists, a chunk at a time (not all of them at once)
            base, top, times, which, o, h, l, c = bars.chunk(k)
        j = k - base
        if trades:
            at = float(times[j])
            symbol_index = which[j]
            symbol = symbols[symbol_index]
            advanced = at >= account.as_of  # else advance leaves the account as it was
            risk_events = quiet_bar(symbol, at, h[j], l[j], c[j])
            if risk_events is None:
                events, risk_events = on_bar(symbol, at, o[j], h[j], l[j], c[j])
                if events:
                    changed()
            book["clean"] = advanced
            if risk_events:
                trips += sum(1 for r in risk_events if r.kind is RiskEventKind.CIRCUIT_BREAKER)
            curve_times.append(times[j] + steps[symbol_index])
            curve.append(account.last_equity)
        if k in end_set:
            symbol_index = which[j]
            symbol = symbols[symbol_index]
            ended.add(symbol)
            for trade, event in end_of_data(account, symbol, float(times[j]),
                                            float(candles[symbol_index].close[-1]), cancel):
                journal.events.append(event)
                closed.append(trade)
                changed()
                curve_times.append(times[j] + steps[symbol_index])
                curve.append(account.equity)
        if progress is not None and k % 50_000 == 0:
            progress(k, total)
        k += 1
    while next_signal < count:  # signals after the last bar: decided, never filled
        next_signal = decide(next_signal)
    rejected = None
    if deferred:
        matrix = np.frombuffer(deferred_rows, dtype=float).reshape(len(deferred),
                                                                   len(ACCOUNT_COLUMNS))
        rejected = Deferred(engine, columns_in, np.frombuffer(deferred, dtype=np.int64),
                            {name: np.ascontiguousarray(column)
                             for name, column in zip(ACCOUNT_COLUMNS, matrix.T, strict=True)})
    if progress is not None:
        progress(total, total)
    first = last = 0.0
    if total:
        first = float(timeline.times[0])
        last = float(timeline.times[-1] + steps[int(timeline.which[-1])])
    return BacktestResult(account, journal, rejected, closed, total, symbols,
                          np.frombuffer(curve_times, dtype=float),
                          np.frombuffer(curve, dtype=float), first, last, trips,
                          cancelled=cancelled)


class BarChunks:
    """The timeline's bars as Python lists (what a tight loop reads fastest), one chunk at a
    time: all of them at once would cost some 150 bytes a bar."""

    SIZE = 65_536

    def __init__(self, timeline: Timeline):
        self.timeline = timeline
        self.fields = [(c.open, c.high, c.low, c.close) for c in timeline.candles]

    def chunk(self, k: int) -> tuple:
        """The chunk holding bar ``k``: its first index, its end, then open times, file
        indices, opens, highs, lows and closes, as lists."""
        base = k - k % self.SIZE
        top = min(base + self.SIZE, len(self.timeline.times))
        which = self.timeline.which[base:top]
        rows = self.timeline.rows[base:top]
        if len(self.fields) == 1:
            values = [column[rows].tolist() for column in self.fields[0]]
        else:
            gathered = [np.empty(top - base) for _ in range(4)]
            for s, columns in enumerate(self.fields):
                mine = which == s
                for out, column in zip(gathered, columns, strict=True):
                    out[mine] = column[rows[mine]]
            values = [column.tolist() for column in gathered]
        return (base, top, self.timeline.times[base:top].tolist(), which.tolist(), *values)


