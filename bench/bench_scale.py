"""Backtest scale: time and peak memory from 50,000 to 5,000,000 bars, one fresh process each.

Each size runs in its own child process (so one size's memory never counts for the next): the
series ``bench_backtest.stitched`` builds (the real candles of ../shared/data end to end, each file
scaled to open at 20,000), the reference ensemble's signals, and ``audit.backtests.run_and_record``
(the default policy's whole lifecycle, the global limits, the audit written to a fresh DuckDB
file). The child reports the seconds of ``run_and_record`` (wall and CPU), bars/s, µs per bar and
its peak resident memory (``resource.getrusage``: everything the process held at its peak, the
candles and signals included); the parent prints a markdown table.

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


def child(bars: int, objects: bool) -> dict:
    from bench_backtest import reference_signals, stitched

    from audit import AuditLog
    from audit.backtests import BacktestInputs, run_and_record
    from rulekit.decision.engine import Engine
    from rulekit.policy.loader import load_policy

    c = stitched(bars)
    engine = Engine(load_policy(ROOT / "policies" / "default.yaml"))
    signals = reference_signals(c, objects)
    with tempfile.TemporaryDirectory() as where, AuditLog(Path(where) / "scale.duckdb") as audit:
        wall, cpu = time.perf_counter(), time.process_time()
        _, result = run_and_record(audit, engine, [c], signals,
                                   BacktestInputs.of(["stitched"], None, 10_000.0), "bench_scale")
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"bars": len(c), "signals": len(signals.price) if hasattr(signals, "price")
            else len(signals), "trades": len(result.trades), "seconds": wall, "cpu": cpu,
            "peak_mb": peak_kb / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--signal-objects", action="store_true",
                        help="give the backtest Signal objects instead of columns")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.signal_objects)))
        return
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        command = [sys.executable, __file__, "--child", str(size)]
        if args.signal_objects:
            command.append("--signal-objects")
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{size:,} bars done", file=sys.stderr, flush=True)
    print("| bars | signals | trades | seconds | CPU s | bars/s | µs/bar | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['bars']:,} | {r['signals']:,} | {r['trades']:,} | {r['seconds']:.2f} | "
              f"{r['cpu']:.2f} | {r['bars'] / r['seconds']:,.0f} | "
              f"{r['seconds'] / r['bars'] * 1e6:.2f} | {r['peak_mb']:,.0f} MB |")


if __name__ == "__main__":
    main()
