"""Candle files: every shared file read as its README describes it; bad files refused by line."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pyarrow.csv
import pyarrow.parquet
import pytest

from conftest import SHARED_DATA
from plugins.candle_files import read_candles, symbol_from_name
from rulekit.errors import DataError
from rulekit.plugin_manager import PluginError, open_market_data, plugin_manager

needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data not present")
HEADER = "timestamp,open,high,low,close,volume\n"


@needs_shared
@pytest.mark.parametrize("name, rows, first, last", [
    ("crypto_BTC-USDT-PERP_5m.csv", 10_999, "2023-01-02T16:45", "2023-02-09T21:15"),
    ("binance_ETH-BTC_5m.csv", 5_760, "2018-01-10T04:55", "2018-01-30T04:50"),
    ("coinbase_BTC-USD_1h.csv", 20_111, "2017-07-01T11:00", "2019-10-17T09:00"),
    ("binance_ALT-BTC_1m.csv", 13_681, "2017-11-04T23:02", "2017-11-14T22:59"),
])
def test_shared_files_have_the_rows_and_range_of_their_readme(name, rows, first, last):
    c = read_candles(SHARED_DATA / name)
    assert len(c) == rows
    iso = lambda t: datetime.fromtimestamp(int(t), timezone.utc).strftime("%Y-%m-%dT%H:%M")  # noqa
    assert (iso(c.timestamp[0]), iso(c.timestamp[-1])) == (first, last)


@needs_shared
def test_gaps_are_reported_as_the_readme_counts_them():
    assert read_candles(SHARED_DATA / "binance_ALT-BTC_1m.csv").problems[0].startswith(
        "538 gap(s), 717 bar(s) missing")
    assert read_candles(SHARED_DATA / "binance_XMR-BTC_5m.csv").problems[0].startswith(
        "2 gap(s), 2 bar(s) missing")
    assert read_candles(SHARED_DATA / "crypto_BTC-USDT-PERP_5m.csv").problems == ()


@needs_shared
def test_parquet_reads_the_same_bars_as_csv(tmp_path):
    source = SHARED_DATA / "binance_ETH-BTC_5m.csv"
    pyarrow.parquet.write_table(pyarrow.csv.read_csv(source), tmp_path / "ETHBTC.parquet")
    a, b = read_candles(source), read_candles(tmp_path / "ETHBTC.parquet")
    assert np.array_equal(a.timestamp, b.timestamp) and np.array_equal(a.close, b.close)
    assert b.symbol == "ETHBTC" and b.timeframe_seconds == 300


def test_symbol_comes_from_the_file_name():
    from pathlib import Path
    assert symbol_from_name(Path("crypto_BTC-USDT-PERP_5m.csv")) == "BTCUSDT"
    assert symbol_from_name(Path("binance_ETH-BTC_5m.csv")) == "ETHBTC"
    assert symbol_from_name(Path("BTCUSDT.csv")) == "BTCUSDT"


def write(tmp_path, *rows, name="BTCUSDT.csv"):
    path = tmp_path / name
    path.write_text(HEADER + "".join(row + "\n" for row in rows))
    return path


BAR = "2024-01-01T00:{:02d}:00Z,100,101,99,100.5,3"


def test_a_bad_bar_refuses_the_file_with_its_line(tmp_path):
    path = write(tmp_path, BAR.format(0), BAR.format(5), "2024-01-01T00:10:00Z,100,99,101,100,3")
    with pytest.raises(DataError) as caught:
        read_candles(path)
    assert caught.value.line == 4 and "high below low" in caught.value.message
    path = write(tmp_path, BAR.format(0), "2024-01-01T00:05:00Z,100,101,99,abc,3")
    with pytest.raises(DataError) as caught:
        read_candles(path)
    assert caught.value.line == 3 and "'abc' is not a number" in caught.value.message
    path = write(tmp_path, BAR.format(0), "2024-01-01T00:05:00Z,100,101,99,,3")
    with pytest.raises(DataError, match="missing"):
        read_candles(path)


def test_a_missing_column_is_named(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("timestamp,open,high,low,close\n2024-01-01T00:00:00Z,1,1,1,1\n")
    with pytest.raises(DataError, match="missing column.*volume"):
        read_candles(path)


def test_identical_duplicates_are_dropped_and_conflicting_ones_refused(tmp_path):
    c = read_candles(write(tmp_path, BAR.format(0), BAR.format(5), BAR.format(5), BAR.format(10)))
    assert len(c) == 3 and "1 duplicate row(s) dropped" in c.problems[0]
    path = write(tmp_path, BAR.format(0), BAR.format(5), "2024-01-01T00:05:00Z,100,102,99,101,3")
    with pytest.raises(DataError, match="two different bars"):
        read_candles(path)


def test_rows_out_of_order_are_sorted_and_reported(tmp_path):
    c = read_candles(write(tmp_path, BAR.format(10), BAR.format(0), BAR.format(5)))
    assert np.all(np.diff(c.timestamp) == 300) and "out of time order" in c.problems[0]


def test_start_and_end_select_bars_by_open_time(tmp_path):
    source = open_market_data(plugin_manager(), str(write(tmp_path, *(BAR.format(m) for m in
                                                                     range(0, 30, 5)))))
    bars = source.candles("BTCUSDT", datetime(2024, 1, 1, 0, 5, tzinfo=timezone.utc),
                          datetime(2024, 1, 1, 0, 20, tzinfo=timezone.utc))
    assert len(bars) == 3 and source.ticker("BTCUSDT") is None
    with pytest.raises(DataError):
        source.candles("ETHUSDT")


def test_a_source_no_plugin_serves_is_a_user_error(tmp_path):
    with pytest.raises(PluginError, match="no plugin serves"):
        open_market_data(plugin_manager(), "kafka://prices")
    with pytest.raises(DataError, match="no such candle file"):
        open_market_data(plugin_manager(), str(tmp_path / "absent.csv"))


@needs_shared
def test_evaluate_with_data_fills_market_fields_from_the_candles(tmp_path):
    import json
    import subprocess
    import sys

    import talib

    from conftest import DEFAULT_POLICY, ROOT
    path = SHARED_DATA / "crypto_BTC-USDT-PERP_5m.csv"
    c = read_candles(path)
    iso = lambda t: datetime.fromtimestamp(int(t), timezone.utc).isoformat()  # noqa: E731
    base = {"symbol": "BTCUSDT", "consensus": "STRONG", "confidence": 0.8}
    signals = [
        {**base, "signal_id": "late", "side": "LONG", "timestamp": iso(c.timestamp[5000] + 300)},
        {**base, "signal_id": "early", "side": "LONG", "timestamp": iso(c.timestamp[100] + 300)},
        {**base, "signal_id": "midbar", "side": "LONG", "timestamp": iso(c.timestamp[5000] + 420)},
    ]
    (tmp_path / "s.jsonl").write_text("".join(json.dumps(s) + "\n" for s in signals))
    result = subprocess.run([sys.executable, str(ROOT / "cli.py"), "evaluate", "--policy",
                             str(DEFAULT_POLICY), "--equity", "10000", "--data", str(path),
                             "--json", "--audit", str(tmp_path / "a.duckdb"),
                             str(tmp_path / "s.jsonl")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    late, early, midbar = map(json.loads, result.stdout.splitlines())
    # the bar that opened at timestamp[5000] closed 300 s later, exactly at the signal's time
    assert late["price"] == c.close[5000]
    assert late["atr"] == pytest.approx(talib.ATR(c.high, c.low, c.close, 14)[5000], rel=1e-12)
    assert late["ema_200"] == pytest.approx(talib.EMA(c.close, 200)[5000], rel=1e-12)
    window = slice(5000 - 287, 5001)  # the 288 five-minute bars of the 24h ending at that close
    assert late["volume_24h"] == pytest.approx(float(np.sum(c.volume[window] * c.close[window])))
    assert late["spread_bps"] == 2.0  # the policy's assumed_spread_bps: candles have no book
    assert early["reason"] == "insufficient_history"          # 101 bars < the EMA's 200
    assert midbar["reason"] == "stale_market_data"            # 120 s after the last close
