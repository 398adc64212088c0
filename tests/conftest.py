from __future__ import annotations

from pathlib import Path

import pytest
from binance_double import binance_double, localhost_only  # noqa: F401 (fixtures for every test file)

from rulekit.decision.engine import Engine
from rulekit.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def no_rm_overrides(monkeypatch):
    """Tests start without RM_ variables from the developer's shell."""
    import os
    for name in list(os.environ):
        if name.startswith("RM_"):
            monkeypatch.delenv(name)


@pytest.fixture
def engine() -> Engine:
    return Engine(load_policy(DEFAULT_POLICY))


def golden(**changes) -> dict:
    """The reference design's example: LONG BTCUSDT at 50,000, ATR 1,500, above the EMA-200."""
    record = {"symbol": "BTCUSDT", "side": "LONG", "consensus": "STRONG", "confidence": 0.75,
              "price": 50_000, "atr": 1_500, "ema_200": 48_000, "volume_24h": 2_500_000_000,
              "spread_bps": 1.2}
    record.update(changes)
    return record


def golden_short(**changes) -> dict:
    return golden(**{"side": "SHORT", "ema_200": 52_000, **changes})
