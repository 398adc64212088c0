"""`rulekit run --exchange ccxt:binance` under exchange faults, against the Binance double: refusals
said out loud, rate limits and outages ridden out, errors retrying cannot fix named."""
from __future__ import annotations

import json
import os
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
