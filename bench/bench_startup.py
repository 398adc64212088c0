"""How long a short rulekit command takes as a whole process, against bare Python's start-up.

    .venv/bin/python bench/bench_startup.py [--runs 20] [--imports]

Runs ``python -c pass``, ``rulekit --help`` and ``rulekit validate policies/default.yaml``
alternately (like hyperfine: warm-up run first, then ``--runs`` each, interleaved so a busy
machine slows all three alike) and prints the best and median wall-clock seconds and the ratio of
each to ``python -c pass`` measured in the same run. The aim is under 0.3 s for both commands.
``--imports`` adds, for each command, the slowest imports by ``python -X importtime``
(cumulative), which is where start-up goes.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("ccxt", "duckdb", "pyarrow", "rich", "numpy")


def commands() -> dict[str, list[str]]:
    script = Path(sys.executable).with_name("rulekit")
    rulekit = [str(script)] if script.exists() else [sys.executable, str(ROOT / "cli.py")]
    return {"python -c pass": [sys.executable, "-c", "pass"],
            "rulekit --help": rulekit + ["--help"],
            "rulekit validate policies/default.yaml": rulekit + ["validate",
                                                                 "policies/default.yaml"]}


def once(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                   cwd=ROOT)
    return time.perf_counter() - start


def slowest_imports(args: list[str], top: int = 8) -> list[tuple[int, str]]:
    """(cumulative µs, module) of the top-level-most slow imports of ``rulekit ARGS``."""
    result = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "cli.py"), *args],
                            capture_output=True, text=True, cwd=ROOT)
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        rows.append((int(cumulative), name.rstrip()))
    return sorted(rows, reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--imports", action="store_true")
    args = parser.parse_args()
    print(f"python {platform.python_version()}  {platform.machine()}  cpus {os.cpu_count()}  "
          f"load {os.getloadavg()[0]:.2f}")
    runs = commands()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for command in runs.values():
        once(command)  # warm the file cache
    for _ in range(args.runs):
        for name, command in runs.items():
            times[name].append(once(command))
    base = min(times["python -c pass"])
    print(f"\n{'whole process':<42}{'best s':>8}{'median s':>10}{'vs python -c pass':>19}")
    for name, seconds in times.items():
        middle = sorted(seconds)[len(seconds) // 2]
        print(f"{name:<42}{min(seconds):>8.3f}{middle:>10.3f}{min(seconds) / base:>18.2f}x")
    if args.imports:
        for name, command_args in (("rulekit --help", ["--help"]),
                                   ("rulekit validate", ["validate", "policies/default.yaml"])):
            print(f"\n{name}: slowest imports (cumulative ms)")
            for micros, module in slowest_imports(command_args):
                print(f"  {micros / 1000:8.1f}  {module}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
