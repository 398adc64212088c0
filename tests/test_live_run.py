"""`rulekit run --exchange ccxt:binance` against the Binance double: the real ccxt client, real
sockets, the same executor as paper trading."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime
from urllib.parse import urlparse

import ccxt
import duckdb
import pytest
from binance_double import BinanceDouble
from conftest import DEFAULT_POLICY, ROOT, golden


@pytest.fixture(autouse=True)
def fee_free(monkeypatch):
    """RM_FEE_PCT=0: the live trades' figures are worked before fees."""
    monkeypatch.setenv("RM_FEE_PCT", "0")


def test_a_live_trade_goes_in_is_protected_and_stops_out_on_the_exchange(tmp_path):
    double = BinanceDouble()
    try:
        now = datetime.now(UTC).isoformat()
        (tmp_path / "signals.jsonl").write_text(json.dumps(golden(
            signal_id="L1", timestamp=now, market_timestamp=now)) + "\n")
        urls = {key: double.url + urlparse(url).path
                for key, url in ccxt.binance().urls["api"].items() if isinstance(url, str)}
        env = {**os.environ, "RULEKIT_API_KEY": "k", "RULEKIT_API_SECRET": "s",
               "RULEKIT_EXCHANGE_OPTIONS": json.dumps({"urls": urls, "backoff_seconds": 0.001,
                                                       "enableRateLimit": False})}
        db = tmp_path / "live.duckdb"
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), "run", "--policy", str(DEFAULT_POLICY),
             "--exchange", "ccxt:binance", "--signals-from", str(tmp_path / "signals.jsonl"),
             "--equity", "10000", "--audit", str(db), "--poll-seconds", "0.05", "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        seen = []
        while not any(r.get("event") == "OPEN" for r in seen):
            line = process.stdout.readline()
            assert line, process.stderr.read()
            seen.append(json.loads(line))
        decision = next(r for r in seen if r["event"] == "DECISION")
        # the exchange's BTC/USDT step (0.00001), not the policy's: 100 / 2,250 -> 0.04444
        assert decision["approved"] and decision["quantity"] == 0.04444
        double.set_price("BTCUSDT", 47_000)       # through the 47,750 stop
        while True:
            line = process.stdout.readline()
            assert line, process.stderr.read()
            record = json.loads(line)
            if record["event"] == "CLOSED":
                break
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        # the stop filled at the price the market reached: 0.04444 x (47,000 - 50,000) = -133.32
        assert record["reason"] == "stop_loss" and record["price"] == 47_000
        assert record["pnl"] == pytest.approx(-133.32)
        # Binance spot locks the coins of a resting stop: the two take-profit limits are refused
        # and watched by the executor instead (taken at market when reached)
        orders = {cid: o["status"] for cid, o in double.orders.items()}
        assert orders == {"T-L1:entry:0": "FILLED", "T-L1:stop:0": "FILLED"}
        assert double.order_posts() == 4           # entry, stop, two refused limits: once each
        with duckdb.connect(str(db), read_only=True) as con:
            assert con.execute("SELECT state, exit_reason FROM trades").fetchall() == [
                ("CLOSED", "stop_loss")]
    finally:
        double.close()


def test_targets_the_exchange_would_not_hold_are_taken_at_market_when_reached(tmp_path):
    from binance_double import ccxt_exchange_for

    from rulekit.decision.engine import Engine
    from rulekit.model import Signal
    from rulekit.policy.loader import load_policy
    from rulekit.trading.account import Account
    from rulekit.trading.executor import Executor
    from rulekit.trading.trade_manager import TradeManager

    double = BinanceDouble()
    try:
        exchange = ccxt_exchange_for(double)
        engine = Engine(load_policy(DEFAULT_POLICY))
        engine.set_market_rules({"BTCUSDT": exchange.market_rules("BTCUSDT")})
        manager = TradeManager(engine, Account.new(10_000), fills_from_exchange=True)
        executor = Executor(manager, exchange)
        executor.on_signal(Signal.from_record(golden(signal_id="L2")), now=1.0)
        executor.on_bar("BTCUSDT", 2.0, 50_000, 50_000, 50_000, 50_000)   # entry booked
        trade = manager.account.trades["T-L2"]
        assert executor.books(trade).market_targets == ["partial", "target"]
        double.set_price("BTCUSDT", 55_700)
        executor.on_bar("BTCUSDT", 3.0, 55_700, 55_700, 55_700, 55_700)   # both sent at market
        executor.on_bar("BTCUSDT", 4.0, 55_700, 55_700, 55_700, 55_700)   # and their fills booked
        closed = manager.closed[0]
        # 0.02222 and 0.02222 both filled at 55,700: 0.04444 x 5,700 = 253.308
        assert closed.exit_reason == "take_profit" and closed.realised_pnl == pytest.approx(253.308)
        assert double.balances["BTC"] == pytest.approx(0.0, abs=1e-12)
    finally:
        double.close()


def test_after_a_restart_the_orders_found_on_the_exchange_report_their_fills():
    import json as json_module

    from binance_double import ccxt_exchange_for

    from rulekit.decision.engine import Engine
    from rulekit.model import Signal
    from rulekit.policy.loader import load_policy
    from rulekit.trading.account import Account
    from rulekit.trading.executor import Executor
    from rulekit.trading.lifecycle import Trade
    from rulekit.trading.trade_manager import TradeManager

    double = BinanceDouble()
    try:
        engine = Engine(load_policy(DEFAULT_POLICY))
        first = ccxt_exchange_for(double)
        engine.set_market_rules({"BTCUSDT": first.market_rules("BTCUSDT")})
        manager = TradeManager(engine, Account.new(10_000), fills_from_exchange=True)
        before = Executor(manager, first)
        before.on_signal(Signal.from_record(golden(signal_id="L3")), now=1.0)
        before.on_bar("BTCUSDT", 2.0, 50_000, 50_000, 50_000, 50_000)
        # the process dies; a new one loads the account and the books, opens a new adapter
        saved = json_module.loads(json_module.dumps(manager.account.trades["T-L3"].as_record()))
        books = json_module.loads(json_module.dumps(before.as_record()))
        account = Account.new(10_000)
        account.add_trade(Trade.from_record(saved))
        restarted = TradeManager(engine, account, fills_from_exchange=True)
        executor = Executor(restarted, ccxt_exchange_for(double), books)
        assert executor.reconcile(3.0) == ["T-L3: open, stop 47,750, orders in place"]
        double.set_price("BTCUSDT", 47_000)
        executor.on_bar("BTCUSDT", 4.0, 47_000, 47_000, 47_000, 47_000)
        assert restarted.closed[0].exit_reason == "stop_loss"
        assert double.order_posts() == 4      # entry, stop, two refused limits: nothing again
    finally:
        double.close()
