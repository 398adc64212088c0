"""A policy requires only the inputs its rules and the engine's figures read: a policy without a
volume gate is not refused for a short 24h window, one without the trend gate not for a short EMA
history. The default policy, which reads both, still is (the real BTC/USDT bars of examples/data)."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from conftest import DEFAULT_POLICY, EXAMPLE_CANDLES

from plugins.candle_files import read_candles
from rulekit.decision.engine import Engine
from rulekit.market.conditions import with_market_fields
from rulekit.model import Signal
from rulekit.policy.loader import load_policy

VOLUME_GATE = """  - id: min_volume
    rule: volume_24h >= min_volume_24h
    description: Enough 24h volume to get in and out.
"""
TREND_GATE = """  - id: trend_alignment
    rule: trend_aligned
    description: LONG only above the 200 EMA, SHORT only below it.
"""


def policy_without(tmp_path, *gates: str) -> Engine:
    text = DEFAULT_POLICY.read_text()
    for gate in gates:
        assert gate in text
        text = text.replace(gate, "")
    (tmp_path / "policy.yaml").write_text(text)
    return Engine(load_policy(tmp_path / "policy.yaml"))


def reason_at_bar(engine: Engine, bar: int) -> str | None:
    """The decision on a LONG signal stamped at the close of bar ``bar`` of the example file."""
    candles = read_candles(EXAMPLE_CANDLES)
    at = datetime.fromtimestamp(int(candles.timestamp[bar]) + candles.timeframe_seconds, UTC)
    signal = Signal.from_record({"symbol": "BTCUSDT", "side": "LONG", "consensus": "UNANIMOUS",
                                 "confidence": 0.9, "timestamp": at.isoformat()})
    filled = with_market_fields([signal], {candles.symbol: candles}, engine.policy)[0]
    return engine.decide(filled, equity=10_000, now=at).reason


@pytest.fixture
def default_engine():
    return Engine(load_policy(DEFAULT_POLICY))


def test_the_default_policy_wants_a_full_24h_window_and_the_ema_history(default_engine):
    assert reason_at_bar(default_engine, 250) == "insufficient_history"   # 251 bars < 288 (24h)
    assert reason_at_bar(default_engine, 100) == "insufficient_history"   # < 200 for the EMA


def test_a_policy_that_never_reads_the_volume_does_not_wait_for_a_24h_window(tmp_path):
    engine = policy_without(tmp_path, VOLUME_GATE)
    assert reason_at_bar(engine, 250) != "insufficient_history"
    assert reason_at_bar(engine, 100) == "insufficient_history"           # it reads the EMA


def test_a_policy_that_reads_neither_waits_only_for_the_atr(tmp_path):
    engine = policy_without(tmp_path, VOLUME_GATE, TREND_GATE)
    assert reason_at_bar(engine, 100) != "insufficient_history"
    assert reason_at_bar(engine, 10) == "insufficient_history"            # 11 bars < 15 for ATR(14)
    names = engine.program.check_names
    assert "invalid_ema_200" in names and "invalid_volume_24h" in names   # still in the trace
