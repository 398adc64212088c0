"""The global-limits scenario, worked by hand, as signals and 5-minute BTCUSDT bars.

Equity 10,000; every signal is the golden market (50,000, ATR 1,500, 1 R = 2,250) with a
high-quality UNANIMOUS 0.9 confidence, so risk starts at 1.5%.

Tue 2024-01-02 (day 1)
  10:00 A: risk 1.5% of 10,000 = 150 -> 150 / 2,250 = 0.0666; stopped 10:05: -149.85 -> 9,850.15
  11:00 B: 1.5% of 9,850.15 = 147.75 -> 0.0656; stopped 11:05: -147.60 -> 9,702.55
           (drawdown from the peak now 2.97%: recovery mode, half risk)
  12:00 C: 0.75% of 9,702.55 = 72.77 -> 0.0323; stopped 12:05: -72.675 -> 9,629.875
           (daily drawdown 3.70%)
  13:00 D: rejected, daily_drawdown
Wed 2024-01-03 (day 2: the day starts at 9,629.875)
  09:00 E: approved at 1.5% x 0.5 (streak of 3) x 0.5 (recovery) = 0.375%: 36.11 -> 0.016;
           stopped 09:05: -36.00 -> 9,593.875
  21:00 F: 0.375% of 9,593.875 = 35.98 -> 0.0159; the 22:00 bar gaps down and opens at 44,000:
           the stop fills there, -95.40 -> 9,498.475, 5.015% below 10,000: the circuit breaker
           trips at 22:00 and pauses entries until Thu 02:00
Thu 2024-01-04
  01:55 G: rejected, circuit_breaker
  02:00 H: approved (the pause is over; the breaker's reference is now 9,498.475)

Every figure is before fees: a test module using the scenario imports ``fee_free``, which runs
the default policy (in process and in the commands it starts) with RM_FEE_PCT=0.
"""
from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import golden

from rulekit.market.candles import Candles


@pytest.fixture(autouse=True)
def fee_free(monkeypatch):
    """The scenario's figures are worked before fees (the default policy charges 0.05%)."""
    monkeypatch.setenv("RM_FEE_PCT", "0")


START = datetime(2024, 1, 2, tzinfo=UTC)
STOPPED_AT = ("2024-01-02T10:05", "2024-01-02T11:05", "2024-01-02T12:05", "2024-01-03T09:05")
GAP_AT = "2024-01-03T22:00"
SIGNALS = (("A", "2024-01-02T10:00"), ("B", "2024-01-02T11:00"), ("C", "2024-01-02T12:00"),
           ("D", "2024-01-02T13:00"), ("E", "2024-01-03T09:00"), ("F", "2024-01-03T21:00"),
           ("G", "2024-01-04T01:55"), ("H", "2024-01-04T02:00"))
EXPECTED = {"A": None, "B": None, "C": None, "D": "daily_drawdown", "E": None, "F": None,
            "G": "circuit_breaker", "H": None}
FINAL_EQUITY = 9_498.475


def signal_records(ids=None) -> list[dict]:
    return [golden(signal_id=sid, timestamp=f"{at}:00Z", consensus="UNANIMOUS", confidence=0.9)
            for sid, at in SIGNALS if ids is None or sid in ids]


def bar_rows(start: datetime = START, end: datetime = START + timedelta(days=2, hours=3)):
    """Flat 50,000 bars, except the stop-out dips and the gap."""
    rows = []
    at = start
    while at < end:
        stamp = at.strftime("%Y-%m-%dT%H:%M")
        if stamp in STOPPED_AT:
            rows.append((at, 50_000, 50_000, 47_000, 50_000))
        elif stamp == GAP_AT:
            rows.append((at, 44_000, 50_000, 44_000, 50_000))
        else:
            rows.append((at, 50_000, 50_010, 49_990, 50_000))
        at += timedelta(minutes=5)
    return rows


def candles(start: datetime = START, end: datetime = START + timedelta(days=2, hours=3)) -> Candles:
    rows = bar_rows(start, end)
    column = lambda i: np.array([r[i] for r in rows], dtype=float)  # noqa: E731
    return Candles("BTCUSDT", 300, np.array([int(r[0].timestamp()) for r in rows], dtype=np.int64),
                   column(1), column(2), column(3), column(4), np.full(len(rows), 10.0))


def write_bars(path: Path, start: datetime = START,
               end: datetime = START + timedelta(days=2, hours=3)) -> Path:
    with path.open("w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["timestamp", "open", "high", "low", "close", "volume"])
        for at, o, h, l, c in bar_rows(start, end):
            out.writerow([at.strftime("%Y-%m-%dT%H:%M:%SZ"), o, h, l, c, 10])
    return path


def write_signals(path: Path, ids=None) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in signal_records(ids)))
    return path
