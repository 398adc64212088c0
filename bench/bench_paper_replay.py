"""A paper replay against a backtest of the same bars: issue 15's aim 5, within 5x.

    .venv/bin/python bench/bench_paper_replay.py [--runs 3] [--data CANDLES]

On the README's bars (``examples/data/crypto_BTC-USDT-PERP_5m.csv``, 10,999 five-minute BTC/USDT
bars) with the reference ensemble's signals and the default policy, runs as whole processes,
alternately, ``--runs`` times each (best kept):

- ``rulekit run --exchange paper --replay CANDLES --signals-from plugin:reference --speed 0
  --equity 10000 --audit fresh.duckdb`` (every decision, order, fill and the account committed as
  it trades, resumable after ``kill -9``);
- ``rulekit backtest --data CANDLES --audit fresh.duckdb`` (the audit written once at the end);
- the same backtest in one process without the audit (``run_backtest`` alone).

Both audited runs must end with the same trades (id, exit reason, PnL; the paper run's trade still
open at the end is the backtest's ``end_of_data``), else it exits 1 without a time. Prints the
seconds and the ratio paper / backtest.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CANDLES = ROOT / "examples" / "data" / "crypto_BTC-USDT-PERP_5m.csv"
POLICY = ROOT / "policies" / "default.yaml"
CLI = [sys.executable, str(ROOT / "cli.py")]
NO_AUDIT = """
import sys
from plugins.candle_files import read_candles
from rulekit.app.plugin_manager import plugin_manager
from rulekit.app.sessions import reference_signals
from rulekit.backtest.run import run_backtest
from rulekit.decision.engine import Engine
from rulekit.policy.loader import load_policy
engine = Engine(load_policy(sys.argv[1]))
candles = [read_candles(sys.argv[2])]
result = run_backtest(engine, candles, reference_signals(plugin_manager(), candles), 10_000)
print(len(result.trades))
"""


def timed(command: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True)
    took = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return took


def trades(db: Path, backtest: bool) -> list[tuple]:
    """Closed trades (id, exit reason, PnL to 1e-9); the backtest's end-of-data closes left out,
    since the paper run keeps that trade open."""
    import duckdb

    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT trade_id, exit_reason, round(realised_pnl, 9) FROM trades "
            "WHERE state = 'CLOSED' AND account_id " + ("LIKE 'backtest:%'" if backtest else
                                                        "= 'default'") + " ORDER BY trade_id"
        ).fetchall()
    return [row for row in rows if row[1] != "end_of_data"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=CANDLES)
    parser.add_argument("--policy", type=Path, default=POLICY)
    args = parser.parse_args()
    data, policy = args.data.resolve(), args.policy.resolve()
    times: dict[str, list[float]] = {"paper": [], "backtest": [], "no_audit": []}
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        for n in range(args.runs):
            paper_db, backtest_db = where / f"paper{n}.duckdb", where / f"backtest{n}.duckdb"
            times["paper"].append(timed(
                [*CLI, "run", "--policy", str(policy), "--exchange", "paper", "--replay",
                 str(data), "--signals-from", "plugin:reference", "--speed", "0", "--equity",
                 "10000", "--audit", str(paper_db)], where))
            times["backtest"].append(timed(
                [*CLI, "backtest", "--policy", str(policy), "--data", str(data), "--audit",
                 str(backtest_db)], where))
            times["no_audit"].append(timed([sys.executable, "-c", NO_AUDIT, str(policy),
                                            str(data)], ROOT))
            paper, backtest = trades(paper_db, False), trades(backtest_db, True)
            if paper != backtest:
                first = next((pair for pair in zip(paper, backtest, strict=False)
                              if pair[0] != pair[1]), None)
                print(f"the paper run and the backtest differ: {len(paper)} and {len(backtest)} "
                      f"closed trades, the first that differ: {first}", file=sys.stderr)
                return 1
            print(f"run {n + 1}: paper {times['paper'][-1]:.2f} s, backtest "
                  f"{times['backtest'][-1]:.2f} s, backtest without audit "
                  f"{times['no_audit'][-1]:.2f} s ({len(paper)} closed trades agree)", flush=True)
    best = {name: min(values) for name, values in times.items()}
    print(f"{platform.python_implementation()} {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; {data.name}, "
          f"best of {args.runs}")
    print(f"paper replay --speed 0 --audit    {best['paper']:8.2f} s")
    print(f"backtest --audit                  {best['backtest']:8.2f} s")
    print(f"backtest, no audit (in process)   {best['no_audit']:8.2f} s")
    print(f"paper / backtest: {best['paper'] / best['backtest']:.1f}x "
          f"(aim: at most 5x); paper / backtest without audit: "
          f"{best['paper'] / best['no_audit']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
