from __future__ import annotations

import os
from pathlib import Path

import pytest
from binance_double import binance_double, localhost_only  # noqa: F401 (fixtures for every test file)

from rulekit.decision.engine import Engine
from rulekit.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_POLICY = ROOT / "policies" / "default.yaml"
EXAMPLE_CANDLES = ROOT / "examples" / "data" / "crypto_BTC-USDT-PERP_5m.csv"  # the whole file
TEST_DATA = ROOT / "tests" / "data"  # slices of the shared files, committed (tests/data/README.md)
# The whole shared files, beside the clone on a developer's machine, absent in CI's fresh clone.
# RULEKIT_SHARED_DATA moves it (relative to the repository root, as the default is), e.g. to an
# empty directory to see what a fresh clone runs.
SHARED_DATA = (ROOT / os.environ.get("RULEKIT_SHARED_DATA", "../shared/data")).resolve()
SHARED_FILES = (  # as ../shared/data/README.md lists them
    "crypto_BTC-USDT-PERP_5m.csv", "coinbase_BTC-USD_1h.csv", "binance_ALT-BTC_1m.csv",
    "binance_ETH-BTC_5m.csv", "binance_ETH-BTC_30m.csv", "binance_XMR-BTC_5m.csv",
    "binance_XRP-USDT-PERP_5m.csv", "fx_EUR-USD_1h.csv", "stock_GOOG_1d.csv")


def needs_shared(*names: str) -> pytest.MarkDecorator:
    """For the few tests that compare over whole shared files: where one is absent (a fresh
    clone) the test skips, naming the files it needs."""
    missing = [name for name in names if not (SHARED_DATA / name).is_file()]
    return pytest.mark.skipif(bool(missing), reason=(
        f"needs the whole shared file(s) {', '.join(missing)} in {SHARED_DATA} (not present)"))


@pytest.fixture(autouse=True)
def no_rm_overrides(monkeypatch):
    """Tests start without RM_ variables from the developer's shell."""
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
