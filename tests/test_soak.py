"""Issue 14's soak test: a paper run killed at random, read from outside and given new policy
files while it trades ends with the books of a run left alone.

`rulekit run --exchange paper` replays real candles of two symbols with bars at the same open times
(ETH/BTC and XMR/BTC five-minute bars of tests/data, the reference ensemble's signals), paced so
the run spans many seconds. A seeded schedule SIGKILLs it several times, each kill followed by a
restart, until the replay is done; meanwhile a reader thread runs `rulekit state --json` and
`rulekit audit ... --json` in a loop (every answer must come, exit 0 and be strict JSON: readers
are served while a run writes), and another thread swaps the policy file (atomic rename) every
few seconds between versions that decide alike (version, name, a param that never binds here),
now and then a broken one, which must be refused with the running version kept. At the end the
books must be those of one uninterrupted run on a fresh database: the same trades, their events,
every signal decided exactly once and alike, the same account and the same paper exchange.

The schedule comes from ``RULEKIT_SOAK_SEED`` (default below) and is printed, so a failure can be
run again: ``RULEKIT_SOAK_SEED=N pytest tests/test_soak.py``.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from conftest import DEFAULT_POLICY, ROOT, TEST_DATA

from audit import AuditLog
from audit.risk_store import RiskStore

SEED = int(os.environ.get("RULEKIT_SOAK_SEED", "14"))
FILES = ("binance_ETH-BTC_5m.csv", "binance_XMR-BTC_5m.csv")  # the same open times, 5 minutes
UNTIL = "2018-01-22"  # 6 days of each (warm-up included): 3,456 bars in all
SPEED = 100  # --speed of the paced runs: the whole replay would take 17 s and more, kills land first
FLAT_OUT = (1,)  # this run goes at --speed 0 (steps gathered into one commit), killed soon
START_TIMEOUT = 60.0

MARKETS = ("  ETHBTC: {amount_step: 0.001, min_notional: 0.0001}\n"
           "  XMRBTC: {amount_step: 0.001, min_notional: 0.0001}\n")


def policy_text(version: int, name: str = "default", max_position_notional: int = 250_000,
                broken: bool = False) -> str:
    """The default policy with the two BTC-quoted markets and a 24h-volume floor in BTC (these
    pairs trade thousands of BTC a day, not millions). ``max_position_notional`` never binds on
    an account of 1 BTC, so every version decides alike; ``broken`` adds an expression the loader
    refuses."""
    text = DEFAULT_POLICY.read_text()
    text = text.replace("  XRPUSDT: {amount_step: 0.1, min_notional: 5}\n",
                        "  XRPUSDT: {amount_step: 0.1, min_notional: 5}\n" + MARKETS)
    text = text.replace("policy: default\n", f"policy: {name}\n", 1)
    text = _replace_once(text, "\nversion: 3\n", f"\nversion: {version}\n")
    text = _replace_once(text, "    default: 1000000\n", "    default: 100\n")  # min_volume_24h
    text = _replace_once(text, "    default: 250000\n", f"    default: {max_position_notional}\n")
    if broken:
        text = _replace_once(text, "rule: trend_aligned\n", "rule: trend_aligned ** 2\n")
    return text


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the default policy no longer has {old!r} once"
    return text.replace(old, new)


def write_atomically(path: Path, text: str) -> None:
    """As an editor or a deploy does: a new file renamed over the old one."""
    staged = path.with_name(path.name + ".new")
    staged.write_text(text)
    os.replace(staged, path)


@dataclass
class Schedule:
    """What the seed decides: when each run is killed, how the policy file changes."""

    seed: int
    # seconds after each (re)start: up to 1 s kills it while it starts (loading, reconciling),
    # more kills it that much less 1 s after it has begun trading (a twentieth of that at --speed 0)
    kills: list[float]
    swaps: list[tuple[float, str]]          # (seconds before it, which version)

    @classmethod
    def of(cls, seed: int) -> Schedule:
        rng = random.Random(seed)
        kills = [round(rng.uniform(0.3, 4.0), 2) for _ in range(rng.randint(5, 8))]
        swaps = [(round(rng.uniform(1.5, 3.0), 2),
                  "broken" if rng.random() < 0.25 else rng.choice(("version", "name", "param")))
                 for _ in range(40)]
        swaps[2] = (swaps[2][0], "broken")  # at least one, early, whatever the seed
        return cls(seed, kills, swaps)

    def __str__(self) -> str:
        return (f"soak schedule (RULEKIT_SOAK_SEED={self.seed}): SIGKILL {len(self.kills)} times, "
                f"at {self.kills} s after each start; policy swaps {self.swaps}")


def run_command(policy: Path, db: Path, data: list[Path], speed: float) -> list[str]:
    replay = [arg for path in data for arg in ("--replay", str(path))]
    return [sys.executable, str(ROOT / "cli.py"), "run", "--policy", str(policy),
            "--exchange", "paper", *replay, "--signals-from", "plugin:reference",
            "--equity", "1", "--speed", str(speed), "--status-every", "1", "--json",
            "--audit", str(db)]


def strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


@dataclass
class Reader:
    """Reads the account and the audit from other processes, in a loop, while the run writes."""

    db: Path
    stop: threading.Event = field(default_factory=threading.Event)
    served: int = 0
    failures: list[str] = field(default_factory=list)

    QUERIES = (("state", "--json"),
               ("audit", "sql", "SELECT count(*) AS decisions, count(DISTINCT signal_id) AS ids, "
                                "max(decided_at) AS last FROM decisions", "--json"),
               ("audit", "query", "rejections_by_reason", "--json"))

    def loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            args = self.QUERIES[n % len(self.QUERIES)]
            n += 1
            done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *args, "--audit",
                                   str(self.db)], capture_output=True, text=True, timeout=120)
            if done.returncode != 0:
                self.failures.append(f"{' '.join(args[:3])}: exit {done.returncode}: "
                                     f"{done.stderr.strip()[-500:]}")
                continue
            try:
                rows = [strict_json(line) for line in done.stdout.splitlines()]
                assert rows or args[0] == "audit", "no output"  # a query may find no rows
            except (ValueError, AssertionError) as exc:
                self.failures.append(f"{' '.join(args[:3])}: not strict JSON ({exc}): "
                                     f"{done.stdout[:300]!r}")
                continue
            self.served += 1


@dataclass
class Swapper:
    """Renames new versions of the policy over the running one, now and then a broken one; never
    while a run is starting (a run refuses to start on a broken policy: the operator's fix)."""

    path: Path
    schedule: Schedule
    starting: threading.Lock
    stop: threading.Event = field(default_factory=threading.Event)
    written: list[str] = field(default_factory=list)

    def loop(self) -> None:
        version = 3
        for pause, kind in self.schedule.swaps:
            if self.stop.wait(pause):
                return
            version += 1
            if kind == "broken":
                with self.starting:
                    write_atomically(self.path, policy_text(version, broken=True))
                    self.written.append(f"v{version} broken")
                    if self.stop.wait(0.8):
                        return
                    version += 1
                    write_atomically(self.path, policy_text(version))
                    self.written.append(f"v{version}")
                continue
            write_atomically(self.path, policy_text(
                version, name="default-soak" if kind == "name" else "default",
                max_position_notional=200_000 if kind == "param" else 250_000))
            self.written.append(f"v{version} {kind}")


def books(db: Path) -> dict:
    """What must not depend on how often the run was killed: trades, their events, decisions by
    signal id, the account's risk events, the account and the paper exchange as committed."""
    with AuditLog(db, read_only=True) as audit:
        q = audit.db.execute
        store = RiskStore(audit)
        account = store.load()
        return {
            "trades": q("SELECT trade_id, symbol, side, state, opened_at, entry_price, "
                        "initial_quantity, quantity, initial_stop, stop_loss, take_profit, "
                        "initial_risk, realised_pnl, fees, r_multiple, mfe_r, mae_r, closed_at, "
                        "exit_price, exit_reason FROM trades ORDER BY trade_id").fetchall(),
            "trade_events": q("SELECT trade_id, event, occurred_at, price, quantity, stop_loss, "
                              "state, reason, pnl, r_multiple FROM trade_events "
                              "ORDER BY ALL").fetchall(),
            "decisions": q("SELECT signal_id, decided_at, symbol, side, approved, reason, "
                           "quantity, stop_loss, take_profit, equity, day_start_equity, "
                           "week_start_equity, peak_equity, consecutive_losses, open_trades, "
                           "open_exposure, circuit_breaker_until FROM decisions "
                           "ORDER BY signal_id").fetchall(),
            "risk_events": q("SELECT kind, occurred_at, equity, detail FROM risk_events "
                             "WHERE kind NOT IN ('policy_swapped', 'policy_refused') "
                             "ORDER BY ALL").fetchall(),
            "account": account.as_record() if account else None,
            "open_trades": sorted(account.trades) if account else None,
            "exchange": store.load_extra("exchange"),
            "orders": store.load_extra("orders"),
        }


def slice_of(source: Path, until: str, where: Path) -> Path:
    """The bars of ``source`` opening before ``until``, rows unchanged, under the same name."""
    lines = source.read_text().splitlines(keepends=True)
    out = where / source.name
    out.write_text(lines[0] + "".join(line for line in lines[1:] if line[:10] < until))
    return out


def run_alone(where: Path, policy: Path) -> tuple[list[Path], Path]:
    """The two slices under ``where`` and an uninterrupted flat-out run of them on a fresh
    database (``alone.duckdb``), whose books the interrupted runs must end with."""
    data = [slice_of(TEST_DATA / name, UNTIL, where) for name in FILES]
    db = where / "alone.duckdb"
    alone = subprocess.run(run_command(policy, db, data, 0), capture_output=True, text=True,
                           timeout=600)
    assert alone.returncode == 0, alone.stderr[-3000:]
    return data, db


def test_a_paper_run_killed_read_and_reloaded_at_random_ends_with_the_books_of_one_left_alone(
        tmp_path):
    schedule = Schedule.of(SEED)
    print(schedule)
    alone_policy = tmp_path / "alone.yaml"
    alone_policy.write_text(policy_text(3))
    data, alone = run_alone(tmp_path, alone_policy)
    expected = books(alone)
    assert len(expected["trades"]) >= 20 and expected["risk_events"], "too little happens here"

    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(3))
    db = tmp_path / "soak.duckdb"
    starting = threading.Lock()
    swapper = Swapper(policy, schedule, starting)
    reader = Reader(db)
    threads = [threading.Thread(target=swapper.loop, daemon=True),
               threading.Thread(target=reader.loop, daemon=True)]
    runs: list[str] = []
    began = time.monotonic()
    try:
        for n in range(len(schedule.kills) + 1):
            err = tmp_path / f"run{n}.err"
            with starting, (tmp_path / f"run{n}.out").open("w") as out, err.open("w") as errors:
                speed = 0 if n in FLAT_OUT else SPEED
                process = subprocess.Popen(run_command(policy, db, data, speed), stdout=out,
                                           stderr=errors)
                started = time.monotonic()
                kill_at = started + schedule.kills[n] if n < len(schedule.kills) else None
                # the policy stays good until the run has loaded it and is trading (or is gone)
                while_starting = kill_at is not None and schedule.kills[n] <= 1.0
                while (process.poll() is None and "status:" not in err.read_text()
                       and time.monotonic() < started + START_TIMEOUT
                       and not (while_starting and time.monotonic() >= kill_at)):
                    time.sleep(0.02)
                if kill_at is not None and not while_starting:
                    trading = (schedule.kills[n] - 1.0) / (20 if speed == 0 else 1)
                    kill_at = time.monotonic() + trading
            if n == 0:
                for thread in threads:
                    thread.start()
            if kill_at is None:
                code = process.wait(timeout=600)
                runs.append(f"run {n}: finished, exit {code}")
                assert code == 0, f"{schedule}\n{err.read_text()[-3000:]}"
                break
            while process.poll() is None and time.monotonic() < kill_at:
                time.sleep(0.01)
            if process.poll() is not None:  # done before its kill: nothing left to kill
                runs.append(f"run {n}: finished before its kill, exit {process.returncode}")
                assert process.returncode == 0, f"{schedule}\n{err.read_text()[-3000:]}"
                break
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=60)
            runs.append(f"run {n}: killed {time.monotonic() - started:.2f} s after its start")
    finally:
        swapper.stop.set()
        reader.stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=120)
    took = time.monotonic() - began
    print("\n".join(runs), f"\n{took:.1f} s; reads served {reader.served}; policy files "
                           f"{swapper.written}")

    assert not reader.failures, f"{schedule}\n" + "\n".join(reader.failures[:10])
    assert reader.served >= 10, f"{schedule}: only {reader.served} reads in {took:.0f} s"
    kills = sum("killed" in line for line in runs)
    assert kills >= 5, f"{schedule}: the run finished after {kills} kills: {runs}"

    got = books(db)
    for part in expected:
        assert got[part] == expected[part], f"{schedule}: {part} differ ({runs})"
    with AuditLog(db, read_only=True) as audit:
        doubles = audit.db.execute("SELECT signal_id, count(*) FROM decisions GROUP BY ALL "
                                   "HAVING count(*) > 1").fetchall()
        policies = dict(audit.db.execute("SELECT kind, count(*) FROM risk_events WHERE kind "
                                         "LIKE 'policy_%' GROUP BY ALL").fetchall())
        versions = audit.db.execute("SELECT count(DISTINCT policy_version) FROM decisions"
                                    ).fetchone()[0]
    assert not doubles, f"{schedule}: decided twice: {doubles[:10]}"
    # how many swaps a running process sees depends on when it was up: one at least, and its
    # decisions under at least two versions
    assert policies.get("policy_swapped", 0) >= 1 and versions >= 2, (schedule, policies)
    refusals = [line for n in range(len(runs))
                for line in (tmp_path / f"run{n}.err").read_text().splitlines()
                if "policy refused" in line]
    if any("broken" in written for written in swapper.written):
        assert policies.get("policy_refused", 0) >= 1 and refusals, (schedule, policies)
        assert all("keeps running" in line and "'**' is refused" in line for line in refusals)
