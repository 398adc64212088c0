"""Backtest scale: time and peak memory from 50,000 to 5,000,000 bars, one fresh process each.

Each size runs in its own child process (so one size's memory never counts for the next): the
series ``bench_backtest.stitched`` builds (the real candles of ../shared/data end to end, each file
scaled to open at 20,000), the reference ensemble's signals, and ``audit.backtests.run_and_record``
(the default policy's whole lifecycle, the global limits, the audit written to a fresh DuckDB
file). The child reports the seconds of ``run_and_record``'s steps (wall and CPU), bars/s, µs per bar,
its resident memory after each stage (candles, signals, the backtest, the audit write) and its peak
(``resource.getrusage``: everything the process held at its peak, the candles and signals
included); the parent prints a markdown table.

The account starts with ``--equity`` (default 1e9): with the default policy every position is then
capped by ``max_position_notional`` (250,000), the losses never bring the account near the minimum
notional or the drawdown limits, and the series keeps trading at the same rate to its end, so the
time per bar of a 5M-bar run measures the same work as a 50k one. (With 10,000 the account falls
below the minimum order size after some 500,000 bars and the rest only idles.) One account over
the whole series rather than a fresh one per block: it is one run, as a user would make it.

Run: .venv/bin/python bench/bench_scale.py [--sizes 50000,200000,1000000,2000000,5000000]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SIZES = (50_000, 200_000, 1_000_000, 2_000_000, 5_000_000)


def resident_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def child(bars: int, objects: bool, equity: float) -> dict:
    from bench_backtest import reference_signals, stitched

    from audit import AuditLog
    from audit.backtests import MODE, BacktestInputs, record_backtest
    from rulekit.backtest.run import run_backtest
    from rulekit.decision.engine import Engine
    from rulekit.policy.loader import load_policy

    stages = {"imports": resident_mb()}
    c = stitched(bars)
    stages["candles"] = resident_mb()
    engine = Engine(load_policy(ROOT / "policies" / "default.yaml"))
    signals = reference_signals(c, objects)
    stages["signals"] = resident_mb()
    with tempfile.TemporaryDirectory() as where, AuditLog(Path(where) / "scale.duckdb") as audit:
        wall, cpu = time.perf_counter(), time.process_time()
        # run_and_record's three steps, to note the memory between the backtest and its audit
        inputs = BacktestInputs.of(["stitched"], None, equity)
        run_id = audit.start_run(engine, MODE, "bench_scale", inputs.as_record())
        result = run_backtest(engine, [c], signals, equity, 0.0, run_id)
        stages["backtest"] = resident_mb()
        record_backtest(audit, engine, run_id, result)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        stages["audit"] = resident_mb()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"bars": len(c), "signals": len(signals.price) if hasattr(signals, "price")
            else len(signals), "trades": len(result.trades), "seconds": wall, "cpu": cpu,
            "peak_mb": peak_kb / 1024, "stages": stages}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--signal-objects", action="store_true",
                        help="give the backtest Signal objects instead of columns")
    parser.add_argument("--equity", type=float, default=1e9,
                        help="the account's starting equity (see the module docstring)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.signal_objects, args.equity)))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, __file__, "--child", str(size), "--equity", str(args.equity)]
        if args.signal_objects:
            command.append("--signal-objects")
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{size:,} bars done", file=sys.stderr, flush=True)
    print(f"starting equity {args.equity:,.0f}")
    print("| bars | signals | trades | seconds | CPU s | bars/s | CPU µs/bar | RSS after candles, "
          "signals, backtest, audit (MB) | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        after = ", ".join(f"{r['stages'][s]:,.0f}" for s in ("candles", "signals", "backtest",
                                                               "audit"))
        print(f"| {r['bars']:,} | {r['signals']:,} | {r['trades']:,} | {r['seconds']:.2f} | "
              f"{r['cpu']:.2f} | {r['bars'] / r['seconds']:,.0f} | "
              f"{r['cpu'] / r['bars'] * 1e6:.2f} | {after} | {r['peak_mb']:,.0f} MB |")


if __name__ == "__main__":
    main()
