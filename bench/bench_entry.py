"""Entry-decision speed: rulekit's compiled policy against a hand-written plain-Python baseline.

Run: .venv/bin/python bench/bench_entry.py [--signals 100000]
The baseline does the default policy's checks and sizing by hand; every decision is compared with
the engine's first (a baseline that disagrees would measure nothing). Ratios > 1 mean rulekit is
faster than the baseline.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np

from audit import AuditLog
from rulekit.engine import Engine, SignalColumns
from rulekit.model import Signal
from rulekit.policy import load_policy

ROOT = Path(__file__).resolve().parents[1]
EQUITY = 10_000.0
STEPS = {"BTCUSDT": (0.0001, 10.0), "ETHUSDT": (0.001, 10.0), "SOLUSDT": (0.01, 10.0)}


def make_records(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    base = {"BTCUSDT": 50_000.0, "ETHUSDT": 3_000.0, "SOLUSDT": 200.0}
    records = []
    for _ in range(count):
        symbol = str(rng.choice(list(base)))
        price = base[symbol] * float(rng.uniform(0.9, 1.1))
        side = str(rng.choice(["LONG", "SHORT"]))
        aligned = rng.random() < 0.8
        above = (side == "LONG") == aligned
        records.append({
            "symbol": symbol, "side": side,
            "consensus": str(rng.choice(["UNANIMOUS", "STRONG", "WEAK", "SPLIT"], p=[.3, .4, .2, .1])),
            "confidence": float(rng.uniform(0.6, 1.0)), "price": price,
            "atr": price * float(rng.uniform(0.005, 0.06)),
            "ema_200": price * (0.97 if above else 1.03),
            "volume_24h": float(rng.choice([5e5, 5e8])), "spread_bps": float(rng.uniform(0, 12))})
    return records


def floor_step(quantity: float, step: float) -> float:
    steps = math.floor(quantity / step + 1e-9)
    return round(steps * step, 10)


def baseline_decide(r: dict, equity: float) -> tuple:
    """The default policy written out by hand for a fresh account."""
    price, atr, ema = r["price"], r["atr"], r["ema_200"]
    if r["symbol"] not in STEPS:
        return (False, "unknown_symbol", None, None)
    if not (0 < price < math.inf and 0 < atr < math.inf and 0 < ema < math.inf):
        return (False, "invalid_input", None, None)
    long = r["side"] == "LONG"
    atr_pct = atr / price * 100
    confidence = r["confidence"]
    if r["consensus"] not in ("UNANIMOUS", "STRONG"):
        return (False, "min_consensus", None, None)
    if confidence < (0.80 if atr_pct > 4.0 else 0.70):
        return (False, "min_confidence", None, None)
    if not (price > ema if long else price < ema):
        return (False, "trend_alignment", None, None)
    if atr_pct > 5.0:
        return (False, "max_volatility", None, None)
    if r["volume_24h"] < 1_000_000:
        return (False, "min_volume", None, None)
    if r["spread_bps"] > 10:
        return (False, "max_spread", None, None)
    quality = 1.5 if (r["consensus"] == "UNANIMOUS" and confidence >= 0.85) else (
        0.5 if confidence < 0.75 else 1.0)
    risk_amount = equity * 1.0 * quality / 100
    stop_distance = atr * 1.5
    max_notional = min(equity * 1.0, 250_000.0, equity * 0.8)
    step, min_notional = STEPS[r["symbol"]]
    quantity = floor_step(min(risk_amount / stop_distance, max_notional / price), step)
    if quantity <= 0:
        return (False, "below_min_amount", None, None)
    if quantity * price < min_notional:
        return (False, "below_min_notional", None, None)
    direction = 1 if long else -1
    return (True, None, quantity, price - direction * stop_distance)


def best_of(runs: int, work) -> float:
    best = math.inf
    for _ in range(runs):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--signals", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    engine = Engine(load_policy(ROOT / "policies" / "default.yaml"))
    records = make_records(args.signals, args.seed)
    signals = [Signal.from_record(r) for r in records]

    mismatches = 0
    batch = engine.decide_batch(SignalColumns.from_signals(signals), equity=EQUITY)
    for row, record in enumerate(records):
        approved, reason, quantity, stop = baseline_decide(record, EQUITY)
        got = batch.decision(row)
        if got.approved != approved or (approved and (abs(got.quantity - quantity) > 1e-12
                                                      or abs(got.stop_loss - stop) > 1e-6)):
            mismatches += 1
    approved = int(batch.approved.sum())
    print(f"{len(records):,} signals, {approved:,} approved; baseline disagreements: {mismatches}")
    if mismatches:
        raise SystemExit("the baseline disagrees with the engine: fix it before timing")

    n = len(records)
    timings = {
        "hand-written baseline (dicts)": best_of(3, lambda: [baseline_decide(r, EQUITY)
                                                             for r in records]),
        "engine.decide, one at a time (Signals)": best_of(3, lambda: [
            engine.decide(s, equity=EQUITY) for s in signals]),
        "engine.decide incl. parsing the dict": best_of(3, lambda: [
            engine.decide(Signal.from_record(r), equity=EQUITY) for r in records]),
    }
    columns = SignalColumns.from_signals(signals)
    timings["engine.decide_batch (columns ready)"] = best_of(
        3, lambda: engine.decide_batch(columns, equity=EQUITY))
    timings["columns from Signals + decide_batch"] = best_of(
        3, lambda: engine.decide_batch(SignalColumns.from_signals(signals), equity=EQUITY))
    with tempfile.TemporaryDirectory() as folder:
        with AuditLog(Path(folder) / "bench.duckdb") as log:
            run = log.start_run(engine, "dry-run", "bench")
            timings["decide_batch + DuckDB audit write"] = best_of(3, lambda: log.write_batch(
                run, "dry-run", engine.decide_batch(columns, equity=EQUITY)))
    baseline = timings["hand-written baseline (dicts)"]
    print(f"{'path':42} {'us/decision':>12} {'decisions/s':>14} {'vs baseline':>12}")
    for name, seconds in timings.items():
        print(f"{name:42} {seconds / n * 1e6:12.3f} {n / seconds:14,.0f} {baseline / seconds:11.2f}x")


if __name__ == "__main__":
    main()
