"""Whole processes on the stitched series of bench_backtest.py: `rulekit backtest --json --audit`
against backtesting.py in a process of its own, wall seconds and peak memory of each.

The series (``bench_backtest.stitched``, 500,000 bars by default) is written once as a candle CSV.
rulekit's command reads it, computes the reference ensemble's signals, decides and manages every
trade with the default policy and writes the audit to a fresh DuckDB file: what a user waits for.
backtesting.py's process reads the same CSV with pandas and trades rulekit's entries (bar and
side, found by one in-process backtest beforehand and handed over as a .npy file) with the same
1.5 ATR stop and 3.75 ATR target, one position at a time, as in bench_backtest.py. Both run
``--repeat`` times, alternately; the best wall time of each is kept and the peak resident memory
(``ru_maxrss`` of the child, from ``os.wait4``) is reported. The command's trade count must equal
the in-process backtest's, or the script exits 1 without a time.

Run: .venv/bin/python bench/bench_backtest_cli.py [--bars 500000] [--repeat 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from bench_backtest import reference_signals, stitched  # noqa: E402

from rulekit.backtest.run import run_backtest  # noqa: E402
from rulekit.decision.engine import Engine  # noqa: E402
from rulekit.market.indicators import atr as average_true_range  # noqa: E402
from rulekit.policy.loader import load_policy  # noqa: E402

POLICY = ROOT / "policies" / "default.yaml"

def timed_rss(command: list[str]) -> tuple[float, float, str]:
    """(wall seconds, peak resident MB, stdout) of one child process, reaped with ``os.wait4``
    so its own peak memory is known."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode:
            raise SystemExit(f"{' '.join(command[:3])} failed: {err.read().strip()[-500:]}")
        return seconds, usage.ru_maxrss / 1024, out.read()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=500_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    c = stitched(args.bars)
    engine = Engine(load_policy(POLICY))
    result = run_backtest(engine, [c], reference_signals(c), 10_000.0)
    entries = np.array([(int(np.searchsorted(c.timestamp, t.opened_at)),
                         1 if t.side == "LONG" else -1) for t in result.trades], dtype=np.int64)
    with tempfile.TemporaryDirectory() as where:
        csv = Path(where) / "BTCUSDT.csv"
        with csv.open("w") as out:
            out.write("timestamp,open,high,low,close,volume\n")
            np.savetxt(out, np.column_stack([c.timestamp, c.open, c.high, c.low, c.close,
                                             c.volume]),
                       fmt=["%d", "%.10g", "%.10g", "%.10g", "%.10g", "%.10g"], delimiter=",")
        given = Path(where) / "entries.npz"
        np.savez(given, entries=entries,
                 atr=average_true_range(c.high, c.low, c.close, 14))
        rulekit_runs, peer_runs = [], []
        for run in range(args.repeat):
            seconds, peak, out = timed_rss(
                [sys.executable, str(ROOT / "cli.py"), "backtest", "--policy", str(POLICY),
                 "--data", str(csv), "--json", "--audit", str(Path(where) / f"run{run}.duckdb")])
            trades = json.loads(out)["trades"]
            if trades != len(result.trades):
                print(f"rulekit backtest made {trades} trades, the in-process backtest "
                      f"{len(result.trades)}: not the same run", file=sys.stderr)
                raise SystemExit(1)
            rulekit_runs.append((seconds, peak))
            peer_runs.append(timed_rss([sys.executable, str(ROOT / "bench" / "peer_backtesting.py"),
                                         str(csv), str(given)])[:2])
    load = os.getloadavg()[0]
    best = min(rulekit_runs)
    peer = min(peer_runs)
    print(f"{len(c):,} bars, {len(result.trades):,} trades, load average {load:.2f}, "
          f"best of {args.repeat}")
    print(f"{'whole process':58} {'seconds':>8} {'bars/s':>10} {'peak RSS':>10}")
    print(f"{'rulekit backtest --json --audit (signals, audit)':58} {best[0]:8.2f} "
          f"{len(c) / best[0]:10,.0f} {max(p for _, p in rulekit_runs):8.0f} MB")
    print(f"{'backtesting.py, the same entries (read CSV, run)':58} {peer[0]:8.2f} "
          f"{len(c) / peer[0]:10,.0f} {max(p for _, p in peer_runs):8.0f} MB")
    print(f"rulekit is {peer[0] / best[0]:.2f}x backtesting.py's bars/s, whole process; "
          f"{max(p for _, p in rulekit_runs) * 1024 * 1024 / len(c):,.0f} bytes of peak memory "
          "per bar")


if __name__ == "__main__":
    main()
