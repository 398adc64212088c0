"""A whole dry run against a hand-written script: is rulekit, audit on, as fast as plain Python?

    .venv/bin/python bench/bench_dry_run.py [--signals 100000] [--seed 1] [--runs 5]

Builds N signals from the real candles in ``examples/data`` (the generator of
``bench_evaluate.py``), writes them as JSON Lines, and runs as whole processes, alternately:

- ``python bench/handwritten_evaluate.py signals.jsonl`` (the default policy by hand, stdlib only,
  one JSON line out per decision, no audit), and
- ``rulekit evaluate --policy policies/default.yaml --equity 10000 --json --audit fresh.duckdb
  signals.jsonl`` (every decision written to a new DuckDB audit database before it is printed).

Both outputs are read back and must agree on every decision (approved, reason, quantity, stop loss,
take profit), else it exits 1 before printing a time. The best of ``--runs`` is kept for each, and
the ratio rulekit / hand-written (below 1: rulekit is faster) is printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_evaluate

ROOT = Path(__file__).resolve().parents[1]
CANDLES = ROOT / "examples" / "data" / "crypto_BTC-USDT-PERP_5m.csv"
POLICY = ROOT / "policies" / "default.yaml"
COMPARED = ("approved", "reason", "quantity", "stop_loss", "take_profit")


def write_signals(path: Path, n: int, seed: int) -> str:
    bench_evaluate.CANDLES = CANDLES
    records, source = bench_evaluate.make_signals(n, seed)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return source


def timed(command: list[str], out: Path, cwd: Path) -> float:
    with out.open("wb") as sink:
        start = time.perf_counter()
        subprocess.run(command, stdout=sink, check=True, cwd=cwd)
        return time.perf_counter() - start


def decisions(path: Path) -> list[tuple]:
    with path.open() as lines:
        return [tuple(record[k] for k in COMPARED) for record in map(json.loads, lines)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    script = Path(sys.executable).with_name("rulekit")
    rulekit = [str(script)] if script.exists() else [sys.executable, str(ROOT / "cli.py")]
    print(f"python {platform.python_version()}  {platform.machine()}  cpus {os.cpu_count()}  "
          f"load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        signals = folder / "signals.jsonl"
        source = write_signals(signals, args.signals, args.seed)
        print(f"{args.signals:,} signals ({signals.stat().st_size / 1e6:.1f} MB), seed "
              f"{args.seed}, from {source}")
        hand_out, rk_out = folder / "hand.jsonl", folder / "rulekit.jsonl"
        hand = [sys.executable, str(ROOT / "bench" / "handwritten_evaluate.py"), str(signals)]
        hand_times, rk_times = [], []
        for run in range(args.runs):
            hand_times.append(timed(hand, hand_out, folder))
            audit = folder / f"audit-{run}.duckdb"
            rk_times.append(timed(rulekit + ["evaluate", "--policy", str(POLICY), "--equity",
                                             "10000", "--json", "--audit", str(audit),
                                             str(signals)], rk_out, folder))
            audit.unlink()
        expected, got = decisions(hand_out), decisions(rk_out)
        wrong = [i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b]
        if len(expected) != len(got) or wrong:
            print(f"FAIL: {len(expected)} hand-written vs {len(got)} rulekit decisions, "
                  f"{len(wrong)} disagree")
            for i in wrong[:5]:
                print(f"  line {i + 1}: hand-written {expected[i]}\n  {'':>{len(str(i)) + 7}}"
                      f"rulekit      {got[i]}")
            return 1
        approved = sum(d[0] for d in got)
        print(f"{len(got):,} decisions agree (approved {approved:,}); output "
              f"{rk_out.stat().st_size / 1e6:.1f} MB rulekit, {hand_out.stat().st_size / 1e6:.1f} "
              "MB hand-written")
    best_hand, best_rk = min(hand_times), min(rk_times)
    print(f"\n{'whole process':<44}{'best s':>8}{'median s':>10}{'vs hand-written':>17}")
    for name, times in (("hand-written script (no audit)", hand_times),
                        ("rulekit evaluate --json --audit", rk_times)):
        middle = sorted(times)[len(times) // 2]
        print(f"{name:<44}{min(times):>8.3f}{middle:>10.3f}{min(times) / best_hand:>16.2f}x")
    print(f"\nratio (best of {args.runs}): {best_rk / best_hand:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
