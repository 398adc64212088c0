"""One timeline for every mode: `evaluate --bars`, `backtest` and the paper run, fed the same bars
and signals, decide the same and trade the same.

The bars: the first 900 real BTC/USDT five-minute bars of examples/data, and the same bars as a
second symbol (ETHUSDT at 1/16 of the price), so the two symbols have bars at every open time. The
signals hit the timeline's awkward cases: stamped exactly on a bar's open, mid-bar, both symbols
at one moment, and without a timestamp (released at the timeline's start).
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from conftest import DEFAULT_POLICY, ROOT

from audit import AuditLog
from plugins.candle_files import read_candles
from rulekit.model import Signal
from rulekit.trading.timeline import Bar, Release, SignalQueue, Timeline

BARS = 900
EXAMPLE = ROOT / "examples" / "data" / "crypto_BTC-USDT-PERP_5m.csv"


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    where = tmp_path_factory.mktemp("timeline")
    with EXAMPLE.open() as handle:
        rows = list(csv.reader(handle))[1:BARS + 1]
    for symbol, scale in (("BTCUSDT", 1.0), ("ETHUSDT", 16.0)):
        with (where / f"{symbol}.csv").open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["timestamp", "open", "high", "low", "close", "volume"])
            for stamp, *prices, volume in rows:
                writer.writerow([stamp, *(f"{float(p) / scale:.6f}" for p in prices),
                                 f"{float(volume) * scale:.6f}"])
    opens = [datetime.fromisoformat(r[0].replace("Z", "+00:00")).timestamp() for r in rows]
    signals = []
    for n, k in enumerate(range(320, BARS - 12, 9)):
        for symbol in ("BTCUSDT", "ETHUSDT"):
            at = opens[k] + (0 if n % 3 else 150)  # on a bar's open, or mid-bar
            signals.append({"signal_id": f"{symbol}-{k}", "symbol": symbol,
                            "side": "LONG" if (n // 2) % 2 == 0 else "SHORT",
                            "consensus": "UNANIMOUS" if n % 4 == 0 else "STRONG",
                            "confidence": 0.9 if n % 5 else 0.72,
                            "timestamp": datetime.fromtimestamp(at, UTC).isoformat()})
    signals += [{"signal_id": f"untimed-{i}", "symbol": "BTCUSDT", "side": "LONG",
                 "consensus": "STRONG", "confidence": 0.8} for i in range(3)]
    (where / "signals.jsonl").write_text("".join(json.dumps(s) + "\n" for s in signals))
    return where


def rulekit(*args, cwd):
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def books(db, mode):
    with AuditLog(db) as audit:
        decisions = audit.db.execute(
            "SELECT signal_id, approved, reason, round(quantity, 9) FROM decisions "
            "WHERE mode = ? ORDER BY signal_id", [mode]).fetchall()
        trades = audit.db.execute(
            "SELECT trade_id, round(entry_price, 6), exit_reason, round(realised_pnl, 6) "
            "FROM trades WHERE state = 'CLOSED' AND exit_reason <> 'end_of_data' "
            "ORDER BY trade_id").fetchall()
        still_open = [r[0] for r in audit.db.execute(
            "SELECT trade_id FROM trades WHERE state NOT IN ('CLOSED', 'CANCELLED') "
            "OR exit_reason = 'end_of_data' ORDER BY trade_id").fetchall()]
    return decisions, trades, still_open


def test_evaluate_backtest_and_paper_run_decide_and_trade_the_same(market):
    files = [market / "BTCUSDT.csv", market / "ETHUSDT.csv"]
    rulekit("evaluate", "--policy", DEFAULT_POLICY, "--bars", files[0], "--bars", files[1],
            "--equity", 10_000, "--audit", market / "evaluate.duckdb", "--json",
            market / "signals.jsonl", cwd=market)
    rulekit("backtest", "--policy", DEFAULT_POLICY, "--data", files[0], "--data", files[1],
            "--signals", market / "signals.jsonl", "--equity", 10_000,
            "--audit", market / "backtest.duckdb", "--json", cwd=market)
    rulekit("run", "--policy", DEFAULT_POLICY, "--exchange", "paper", "--replay", files[0],
            "--replay", files[1], "--signals-from", market / "signals.jsonl", "--equity", 10_000,
            "--speed", 0, "--audit", market / "paper.duckdb", "--json", cwd=market)
    evaluated = books(market / "evaluate.duckdb", "simulate")
    backtested = books(market / "backtest.duckdb", "backtest")
    paper = books(market / "paper.duckdb", "paper")
    decisions, trades, still_open = backtested
    assert len(decisions) == 2 * len(range(320, BARS - 12, 9)) + 3
    assert sum(approved for _, approved, _, _ in decisions) >= 6 and len(trades) >= 4
    untimed = [d for d in decisions if d[0].startswith("untimed")]
    assert {reason for _, _, reason, _ in untimed} == {"insufficient_history"}  # at the start
    assert evaluated == backtested
    assert paper == backtested


def test_bars_of_one_open_time_come_in_file_order_and_signals_before_their_bar(market):
    btc = read_candles(market / "BTCUSDT.csv")
    eth = read_candles(market / "ETHUSDT.csv")
    first, second = float(btc.timestamp[0]), float(btc.timestamp[1])
    on_open = Signal.from_record({"signal_id": "on", "symbol": "ETHUSDT", "side": "LONG",
                                  "timestamp": second})
    mid_bar = Signal.from_record({"signal_id": "mid", "symbol": "ETHUSDT", "side": "LONG",
                                  "timestamp": first + 1})
    untimed = Signal.from_record({"signal_id": "none", "symbol": "BTCUSDT", "side": "LONG"})
    events = list(Timeline.of([eth, btc], [on_open, mid_bar, untimed]).events())[:7]
    shown = [(e.signal.signal_id, e.at) if isinstance(e, Release) else (e.symbol, e.at)
             for e in events]
    assert shown == [("none", first), ("ETHUSDT", first), ("BTCUSDT", first),
                     ("mid", first + 1), ("on", second), ("ETHUSDT", second),
                     ("BTCUSDT", second)]
    assert isinstance(events[1], Bar)


def test_a_signal_queue_releases_by_the_timelines_rule():
    queue = SignalQueue()
    later = Signal.from_record({"signal_id": "later", "timestamp": 1_000})
    now = Signal.from_record({"signal_id": "now"})
    queue.add([later, now], arrived_at=400)
    assert [(r.signal.signal_id, r.at) for r in queue.due(999)] == [("now", 400)]
    assert [(r.signal.signal_id, r.at) for r in queue.due(1_000)] == [("later", 1_000)]
    assert len(queue) == 0
