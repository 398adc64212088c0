"""`rulekit run --exchange ccxt:binance` under exchange faults, against the Binance double: refusals
said out loud, rate limits and outages ridden out, errors retrying cannot fix named."""
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
from binance_double import BinanceDouble
from conftest import DEFAULT_POLICY, ROOT, golden


def live_command(tmp_path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "cli.py"), "run", "--policy", str(DEFAULT_POLICY),
            "--exchange", "ccxt:binance", "--signals-from", str(tmp_path / "signals.jsonl"),
            "--equity", "10000", "--audit", str(tmp_path / "live.duckdb"), "--poll-seconds",
            "0.05", *extra]


def live_env(double: BinanceDouble, **options) -> dict:
    urls = {key: double.url + urlparse(url).path
            for key, url in ccxt.binance().urls["api"].items() if isinstance(url, str)}
    settings = {"urls": urls, "backoff_seconds": 0.001, "enableRateLimit": False, **options}
    return {**os.environ, "RULEKIT_API_KEY": "k", "RULEKIT_API_SECRET": "s",
            "RULEKIT_EXCHANGE_OPTIONS": json.dumps(settings)}


def write_signal(tmp_path, signal_id: str, mode: str = "w") -> None:
    now = datetime.now(UTC).isoformat()
    with (tmp_path / "signals.jsonl").open(mode) as handle:
        handle.write(json.dumps(golden(signal_id=signal_id, timestamp=now,
                                       market_timestamp=now)) + "\n")


def test_an_entry_the_exchange_refuses_is_printed_with_its_message_and_counted(tmp_path):
    double = BinanceDouble()
    try:
        double.set_balance("USDT", 1_000)      # 0.04444 BTC at 50,000 needs 2,222
        write_signal(tmp_path, "R1")
        for as_json in (True, False):
            flags = ["--max-polls", "6", "--status-every", "3"] + (["--json"] if as_json else [])
            db = tmp_path / "live.duckdb"
            if db.exists():
                db.unlink()
            done = subprocess.run(live_command(tmp_path, *flags), capture_output=True, text=True,
                                  timeout=60, env=live_env(double))
            assert done.returncode == 0, done.stderr
            if as_json:
                records = [json.loads(line) for line in done.stdout.splitlines()]
                assert [r["event"] for r in records] == ["DECISION", "REFUSED"]
                refusal = records[1]
                assert refusal["trade_id"] == "T-R1" and refusal["role"] == "entry"
                assert refusal["reason"] == "insufficient_funds"
                assert "Account has insufficient balance" in refusal["message"]
            else:
                refused = [line for line in done.stdout.splitlines() if "REFUSED" in line]
                assert len(refused) == 1 and "T-R1" in refused[0]
                assert "insufficient_funds" in refused[0] and "insufficient balance" in refused[0]
                assert refused[0].endswith("trade cancelled")
            assert "refused orders 1" in done.stderr
            with duckdb.connect(str(db), read_only=True) as con:
                assert con.execute("SELECT state, exit_reason FROM trades").fetchall() == [
                    ("CANCELLED", "entry_insufficient_funds")]
    finally:
        double.close()


def read_until(process, wanted, seen: list) -> dict:
    """JSON lines from the run's stdout until one satisfies ``wanted``."""
    while True:
        line = process.stdout.readline()
        assert line, process.stderr.read()
        record = json.loads(line)
        seen.append(record)
        if wanted(record):
            return record


def write_eth_signal(tmp_path, signal_id: str) -> None:
    now = datetime.now(UTC).isoformat()
    with (tmp_path / "signals.jsonl").open("a") as handle:
        handle.write(json.dumps(golden(signal_id=signal_id, symbol="ETHUSDT", price=3_000, atr=90,
                                       ema_200=2_900, timestamp=now, market_timestamp=now))
                     + "\n")


def test_a_burst_of_rate_limits_is_ridden_out_and_the_open_trade_still_stops_out(tmp_path):
    double = BinanceDouble()
    try:
        write_signal(tmp_path, "L1")
        env = {**live_env(double), "RM_EXCHANGE_RETRY_CEILING_SECONDS": "1"}
        process = subprocess.Popen(live_command(tmp_path, "--json"), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, env=env)
        seen: list = []
        read_until(process, lambda r: r["event"] == "OPEN", seen)
        double.rate_limit(2.5)          # far longer than the adapter's 4 quick attempts
        write_eth_signal(tmp_path, "E1")   # approved while it does not answer: no entry
        refusal = read_until(process, lambda r: r["event"] == "REFUSED"
                             and r["trade_id"] == "T-E1", seen)
        assert refusal["role"] == "entry" and refusal["reason"] == "exchange_unreachable"
        double.set_price("BTCUSDT", 47_000)   # the stop fills on the exchange meanwhile
        closed = read_until(process, lambda r: r["event"] == "CLOSED", seen)
        assert closed["trade_id"] == "T-L1" and closed["reason"] == "stop_loss"
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert double.rate_limited_answers > 4
        assert "exchange unreachable" in err and "exchange answers again" in err
        with duckdb.connect(str(tmp_path / "live.duckdb"), read_only=True) as con:
            assert con.execute("SELECT trade_id, state, exit_reason FROM trades ORDER BY 1"
                               ).fetchall() == [("T-E1", "CANCELLED", "entry_exchange_unreachable"),
                                                ("T-L1", "CLOSED", "stop_loss")]
            kinds = [k for (k,) in con.execute("SELECT kind FROM risk_events ORDER BY occurred_at")
                     .fetchall() if k.startswith("exchange")]
        assert kinds == ["exchange_unreachable", "exchange_reconnected"]
        assert double.order_posts() == 4     # entry, stop, two refused limits: nothing twice
    finally:
        double.close()


def test_a_refused_api_key_stops_the_run_saying_which_error_retrying_cannot_fix(tmp_path):
    """(A key refused after it has worked is, to ccxt, Binance's IP ban: retried like a 429.)"""
    double = BinanceDouble()
    try:
        double.refused_keys.add("k")
        write_signal(tmp_path, "K1")
        done = subprocess.run(live_command(tmp_path, "--json"), capture_output=True, text=True,
                              timeout=60, env=live_env(double))
        assert done.returncode == 2, done.stderr
        assert "exchange refused the API key" in done.stderr
        assert "retrying cannot fix this" in done.stderr
        assert double.order_posts() == 0
    finally:
        double.close()
