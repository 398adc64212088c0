"""Backtest speed: 500,000 real bars through rulekit, a plain-Python loop and backtesting.py.

The bars are the real candles of ../shared/data stitched end to end: each file's prices are scaled
so that it opens at 20,000 (relative moves kept; the seams are gaps, as after a weekend), and the
timestamps re-spaced to 5 minutes. (Chaining each file onto the previous one's last close compounds
to prices of 1e19 over 500,000 bars.) Signals come from the reference ensemble (plugins/reference_signals.py).

- rulekit: ``run_backtest`` (market fields from the candles, every decision, fills at the next
  open, the whole lifecycle and the global limits): the event-driven loop (the default, given the
  signals as columns, ``ensemble_columns``) and the per-bar loop (``fast=False``, given them as
  ``Signal`` objects), each ``--repeat`` times alternately, median kept; and once
  ``audit.backtests.run_and_record`` (the event loop plus the audit written to a fresh DuckDB file).
- plain loop: one position at a time, a fixed 1.5 ATR stop and 3.75 ATR target checked on every bar
  in a Python ``for`` loop over lists: the floor any per-bar Python engine pays.
- backtesting.py (only in this script's own environment, never a rulekit dependency): the same
  entries as rulekit's trades (bar, side) with the same ATR stop and target, fills at the next open.

Run: .venv/bin/pip install -e '.[test]' (the test extras include backtesting.py), then
     .venv/bin/python bench/bench_backtest.py [--bars 500000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from plugins.candle_files import read_candles  # noqa: E402
from plugins.reference_signals import ensemble_signals  # noqa: E402
from rulekit.backtest.run import run_backtest  # noqa: E402
from rulekit.decision.engine import Engine  # noqa: E402
from rulekit.market.candles import Candles  # noqa: E402
from rulekit.market.indicators import atr as average_true_range  # noqa: E402
from rulekit.policy.loader import load_policy  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def stitched(bars: int) -> Candles:
    """Real candles end to end, each file scaled to open at 20,000: every file read once, the
    sequence of files repeated into preallocated columns until ``bars`` are filled."""
    files = []
    for path in sorted(SHARED.glob("*.csv")):
        c = read_candles(path)
        scale = 20_000.0 / c.open[0]
        files.append((c.open * scale, c.high * scale, c.low * scale, c.close * scale,
                      c.volume * c.close / c.close.mean() * 50))  # volume of a liquid market
    columns = [np.empty(bars) for _ in range(5)]
    at = 0
    while at < bars:
        for part in files:
            take = min(len(part[0]), bars - at)
            for out, values in zip(columns, part, strict=True):
                out[at:at + take] = values[:take]
            at += take
            if at == bars:
                break
    times = 1_577_836_800 + np.arange(bars, dtype=np.int64) * 300  # from 2020-01-01, 5 minutes
    return Candles("BTCUSDT", 300, times, *columns, "stitched ../shared/data")


def reference_signals(c: Candles, objects: bool = False):
    """The reference ensemble's signals: as columns (what a backtest needs), or as ``Signal``
    objects (``objects``)."""
    from plugins.reference_signals import ensemble_columns

    return ensemble_signals(c) if objects else ensemble_columns(c)


def plain_loop(c: Candles, entries: list[tuple[int, int]], atr: np.ndarray) -> tuple[int, float]:
    """One position at a time, fixed stop and target, every bar visited: the baseline."""
    opens, highs, lows = c.open.tolist(), c.high.tolist(), c.low.tolist()
    wanted = dict(entries)
    position = 0
    stop = target = 0.0
    trades = 0
    for i in range(len(opens)):
        if position == 0:
            side = wanted.get(i)
            if side:
                entry = opens[i]
                distance = 1.5 * atr[i - 1]
                position, stop, target = side, entry - side * distance, entry + side * 2.5 * distance
                trades += 1
            continue
        if (position > 0 and lows[i] <= stop) or (position < 0 and highs[i] >= stop):
            position = 0
        elif (position > 0 and highs[i] >= target) or (position < 0 and lows[i] <= target):
            position = 0
    return trades, 0.0


def backtesting_py(c: Candles, entries: list[tuple[int, int]], atr: np.ndarray):
    import pandas as pd
    from peer_backtesting import run

    frame = pd.DataFrame({"Open": c.open, "High": c.high, "Low": c.low, "Close": c.close,
                          "Volume": c.volume}, index=pd.to_datetime(c.timestamp, unit="s"))
    return run(frame, entries, atr.tolist())


def audited(engine: Engine, c: Candles, signals) -> float:
    """``run_and_record`` into a fresh audit file: the backtest and its audit write."""
    from audit import AuditLog
    from audit.backtests import BacktestInputs, run_and_record

    with tempfile.TemporaryDirectory() as where, AuditLog(Path(where) / "bench.duckdb") as audit:
        started = time.perf_counter()
        run_and_record(audit, engine, [c], signals,
                       BacktestInputs.of(["stitched"], None, 10_000.0), "bench_backtest")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=500_000)
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    c = stitched(args.bars)
    engine = Engine(load_policy(ROOT / "policies" / "default.yaml"))
    started = time.perf_counter()
    signals = reference_signals(c)  # columns, what the event loop reads
    signal_seconds = time.perf_counter() - started
    objects = reference_signals(c, objects=True)  # the per-bar loop's input
    runs: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(args.repeat):
        for fast in (True, False):
            started = time.perf_counter()
            result = run_backtest(engine, [c], signals if fast else objects, 10_000.0, fast=fast)
            runs[fast].append(time.perf_counter() - started)
    rulekit_seconds = statistics.median(runs[True])
    plain_engine_seconds = statistics.median(runs[False])
    audit_seconds = audited(engine, c, signals)
    figures = result.metrics()
    entries = [(int(np.searchsorted(c.timestamp, t.opened_at)), 1 if t.side == "LONG" else -1)
               for t in result.trades]
    atr = average_true_range(c.high, c.low, c.close, 14)

    started = time.perf_counter()
    plain_loop(c, entries, atr)
    plain_seconds = time.perf_counter() - started

    rows = [("rulekit run_backtest (decisions, fills, lifecycle, limits)", rulekit_seconds),
            ("plain-Python loop, one position, fixed stop/target", plain_seconds),
            ("rulekit run_backtest(fast=False), the per-bar loop", plain_engine_seconds),
            ("rulekit run_and_record (run_backtest + audit to DuckDB)", audit_seconds)]
    peer = None
    if not args.skip_peer:
        started = time.perf_counter()
        peer = backtesting_py(c, entries, atr)
        rows.append(("backtesting.py 0.6.6, the same entries, ATR stop/target",
                     time.perf_counter() - started))

    print(f"{len(c):,} bars (stitched real candles), {len(objects):,} reference signals "
          f"({signal_seconds:.2f} s to compute), {figures['trades']:,} rulekit trades")
    print(f"{'path':62} {'seconds':>8} {'bars/s':>12}")
    for name, seconds in rows:
        print(f"{name:62} {seconds:8.2f} {len(c) / seconds:12,.0f}")
    print(f"medians of {args.repeat}: event loop {', '.join(f'{x:.2f}' for x in runs[True])} s, "
          f"per-bar loop {', '.join(f'{x:.2f}' for x in runs[False])} s: the event loop is "
          f"{statistics.median(b / a for a, b in zip(runs[True], runs[False], strict=True)):.2f}x "
          "the per-bar loop's bars/s (median of the paired runs)")
    if peer is not None:
        print(f"rulekit is {rows[-1][1] / rows[0][1]:.2f}x backtesting.py's bars/s "
              f"(aim: at least 10x), {rows[-1][1] / audit_seconds:.2f}x with the audit written; "
              f"the plain loop is {rows[0][1] / rows[1][1]:.1f}x rulekit's")
        print(f"backtesting.py took {peer['# Trades']} trades of the {len(entries)} entries "
              "(it skips entries while its own, simpler position is open)")


if __name__ == "__main__":
    main()
