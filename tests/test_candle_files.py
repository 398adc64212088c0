"""Candle files: every committed candle file (tests/data's slices, examples/data) and every whole
shared file where present read as its README describes it; bad files refused by line."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet
import pytest
from conftest import EXAMPLE_CANDLES, SHARED_DATA, TEST_DATA, needs_shared

from plugins import candle_files
from plugins.candle_files import CandleFiles, read_candles, symbol_from_name
from rulekit.app.plugin_manager import PluginError, open_market_data, plugin_manager
from rulekit.errors import DataError
from rulekit.hookspecs import MarketData

HEADER = "timestamp,open,high,low,close,volume\n"
BAR = "2024-01-01T00:{:02d}:00Z,100,101,99,100.5,3"  # a good 5m bar opening at minute {}


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


def iso(epoch) -> str:
    return datetime.fromtimestamp(int(epoch), UTC).strftime("%Y-%m-%dT%H:%M")


def write(tmp_path, *rows, name="BTCUSDT.csv", header=HEADER):
    path = tmp_path / name
    path.write_text(header + "".join(row + "\n" for row in rows))
    return path


def refusal(path, **options) -> DataError:
    with pytest.raises(DataError) as caught:
        read_candles(path, **options)
    assert caught.value.path == str(path)
    return caught.value


# --- the committed and the shared files, as their READMEs describe them -------------------------

# (file, symbol, timeframe, rows, first, last) as ../shared/data/README.md gives the whole files
WHOLE_FILES = [
    ("crypto_BTC-USDT-PERP_5m.csv", "BTCUSDT", 300, 10_999, "2023-01-02T16:45", "2023-02-09T21:15"),
    ("coinbase_BTC-USD_1h.csv", "BTCUSD", 3600, 20_111, "2017-07-01T11:00", "2019-10-17T09:00"),
    ("binance_ALT-BTC_1m.csv", "ALTBTC", 60, 13_681, "2017-11-04T23:02", "2017-11-14T22:59"),
    ("binance_ETH-BTC_5m.csv", "ETHBTC", 300, 5_760, "2018-01-10T04:55", "2018-01-30T04:50"),
    ("binance_ETH-BTC_30m.csv", "ETHBTC", 1800, 1_920, "2017-12-03T13:00", "2018-01-12T12:30"),
    ("binance_XMR-BTC_5m.csv", "XMRBTC", 300, 5_758, "2018-01-10T04:55", "2018-01-30T04:50"),
    ("binance_XRP-USDT-PERP_5m.csv", "XRPUSDT", 300, 1_999, "2021-11-15T00:00", "2021-11-21T22:30"),
    ("fx_EUR-USD_1h.csv", "EURUSD", 3600, 5_000, "2017-04-19T09:00", "2018-02-07T15:00"),
    ("stock_GOOG_1d.csv", "GOOG", 86400, 2_148, "2004-08-19T00:00", "2013-03-01T00:00"),
]


def reads_as_described(path, symbol, timeframe, rows, first, last):
    c = read_candles(path)
    assert (c.symbol, c.timeframe_seconds, len(c)) == (symbol, timeframe, rows)
    assert (iso(c.timestamp[0]), iso(c.timestamp[-1])) == (first, last)
    assert c.timestamp.dtype == np.int64 and c.close.dtype == np.float64
    assert np.all(np.diff(c.timestamp) > 0) and c.source == str(path)


@pytest.mark.parametrize("path, symbol, timeframe, rows, first, last", [  # tests/data/README.md
    (EXAMPLE_CANDLES, "BTCUSDT", 300, 10_999, "2023-01-02T16:45", "2023-02-09T21:15"),
    (TEST_DATA / "coinbase_BTC-USD_1h.csv", "BTCUSD", 3600, 1_008, "2018-07-20T00:00",
     "2018-08-30T23:00"),
    (TEST_DATA / "binance_ALT-BTC_1m.csv", "ALTBTC", 60, 2_088, "2017-11-06T00:00",
     "2017-11-07T11:59"),
    (TEST_DATA / "binance_ETH-BTC_5m.csv", "ETHBTC", 300, 3_456, "2018-01-16T00:00",
     "2018-01-27T23:55"),
    (TEST_DATA / "binance_ETH-BTC_30m.csv", "ETHBTC", 1800, 672, "2017-12-20T00:00",
     "2018-01-02T23:30"),
    (TEST_DATA / "binance_XMR-BTC_5m.csv", "XMRBTC", 300, 3_454, "2018-01-16T00:00",
     "2018-01-27T23:55"),
    (TEST_DATA / "binance_XRP-USDT-PERP_5m.csv", "XRPUSDT", 300, 576, "2021-11-17T00:00",
     "2021-11-18T23:55"),
    (TEST_DATA / "fx_EUR-USD_1h.csv", "EURUSD", 3600, 721, "2017-10-02T00:00", "2017-11-12T23:00"),
    (TEST_DATA / "stock_GOOG_1d.csv", "GOOG", 86400, 629, "2010-01-04T00:00", "2012-06-29T00:00"),
], ids=lambda v: v.name if isinstance(v, Path) else None)
def test_every_committed_file_has_the_rows_and_range_of_its_readme(path, symbol, timeframe, rows,
                                                                   first, last):
    reads_as_described(path, symbol, timeframe, rows, first, last)


@needs_shared(*(name for name, *_ in WHOLE_FILES))
def test_every_whole_shared_file_has_the_rows_and_range_of_its_readme():
    for name, *described in WHOLE_FILES:
        reads_as_described(SHARED_DATA / name, *described)


def test_first_bar_of_the_example_file_is_read_exactly():
    c = read_candles(EXAMPLE_CANDLES)
    assert c.timestamp[0] == int(utc(2023, 1, 2, 16, 45).timestamp())
    bar = [c.open[0], c.high[0], c.low[0], c.close[0], c.volume[0]]
    assert bar == [16727.3, 16728.8, 16726, 16726.1, 691.508]


def test_gaps_are_counted_as_the_readme_counts_them():
    alt = read_candles(TEST_DATA / "binance_ALT-BTC_1m.csv").problems
    assert alt == ("64 gap(s), 72 bar(s) missing (after 2017-11-06T00:08:00Z, "
                   "2017-11-06T00:12:00Z, 2017-11-06T00:43:00Z, ...)",)
    xmr = read_candles(TEST_DATA / "binance_XMR-BTC_5m.csv").problems
    assert xmr == ("2 gap(s), 2 bar(s) missing (after 2018-01-27T14:35:00Z, 2018-01-27T22:45:00Z)",)
    fx = read_candles(TEST_DATA / "fx_EUR-USD_1h.csv").problems
    assert fx[0].startswith("6 gap(s), 287 bar(s) missing (after 2017-10-06T21:00:00Z, ")
    assert read_candles(EXAMPLE_CANDLES).problems == ()
    for gapless in ("coinbase_BTC-USD_1h.csv", "binance_ETH-BTC_5m.csv", "binance_ETH-BTC_30m.csv"):
        assert read_candles(TEST_DATA / gapless).problems == ()


@needs_shared("binance_ALT-BTC_1m.csv", "binance_XMR-BTC_5m.csv", "fx_EUR-USD_1h.csv",
              "coinbase_BTC-USD_1h.csv", "binance_ETH-BTC_5m.csv", "binance_ETH-BTC_30m.csv")
def test_gaps_in_the_whole_shared_files_are_counted_as_their_readme_counts_them():
    alt = read_candles(SHARED_DATA / "binance_ALT-BTC_1m.csv").problems
    assert len(alt) == 1 and alt[0].startswith("538 gap(s), 717 bar(s) missing")
    xmr = read_candles(SHARED_DATA / "binance_XMR-BTC_5m.csv").problems
    assert xmr == ("2 gap(s), 2 bar(s) missing (after 2018-01-27T14:35:00Z, 2018-01-27T22:45:00Z)",)
    assert read_candles(SHARED_DATA / "fx_EUR-USD_1h.csv").problems[0].startswith("42 gap(s)")
    for gapless in ("coinbase_BTC-USD_1h.csv", "binance_ETH-BTC_5m.csv", "binance_ETH-BTC_30m.csv"):
        assert read_candles(SHARED_DATA / gapless).problems == ()


def test_parquet_round_trip_reads_the_same_bars_as_the_csv(tmp_path):
    source = TEST_DATA / "binance_ETH-BTC_5m.csv"
    parquet = tmp_path / "binance_ETH-BTC_5m.parquet"
    pyarrow.parquet.write_table(pyarrow.csv.read_csv(source), parquet)
    a, b = read_candles(source), read_candles(parquet)
    for column in ("timestamp", "open", "high", "low", "close", "volume"):
        assert np.array_equal(getattr(a, column), getattr(b, column)), column
    assert (b.symbol, b.timeframe_seconds, b.problems) == ("ETHBTC", 300, ())


# --- symbols -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, symbol", [
    ("crypto_BTC-USDT-PERP_5m.csv", "BTCUSDT"),
    ("binance_ETH-BTC_5m.csv", "ETHBTC"),
    ("binance_XRP-USDT-PERP_5m.parquet", "XRPUSDT"),
    ("fx_EUR-USD_1h.csv", "EURUSD"),
    ("stock_GOOG_1d.csv", "GOOG"),
    ("kraken_eth-usd_15m.CSV", "ETHUSD"),
    ("BTCUSDT.csv", "BTCUSDT"),
    ("my-prices.csv", "MYPRICES"),  # spelt as a signal's symbol is read
])
def test_symbol_comes_from_the_file_name(name, symbol):
    assert symbol_from_name(Path("/any/dir") / name) == symbol


def test_symbol_option_overrides_the_file_name_and_other_symbols_are_refused(tmp_path):
    path = write(tmp_path, BAR.format(0), BAR.format(5), name="binance_ETH-BTC_5m.csv")
    source = open_market_data(plugin_manager(), str(path), {"symbol": "ETHBTC.X"})
    assert source.symbols() == ["ETHBTC.X"] and source.candles("ETHBTC.X").symbol == "ETHBTC.X"
    plain = open_market_data(plugin_manager(), str(path))
    assert len(plain.candles("ETH/BTC")) == 2  # the same market, written with a slash
    with pytest.raises(DataError, match="holds ETHBTC, not XMRBTC"):
        plain.candles("XMRBTC")


# --- bad files are refused, by line --------------------------------------------------------------

@pytest.mark.parametrize("row, what", [
    ("2024-01-01T00:10:00Z,100,99,101,100,3", "high below low"),
    ("2024-01-01T00:10:00Z,100,101,99,,3", "missing"),
    ("2024-01-01T00:10:00Z,100,101,99,NaN,3", "missing"),
    ("2024-01-01T00:10:00Z,100,inf,99,100,3", "infinite"),
    ("2024-01-01T00:10:00Z,0,101,0,100,3", "at or below zero"),
    ("2024-01-01T00:10:00Z,-100,-99,-101,-100,3", "at or below zero"),
    ("2024-01-01T00:10:00Z,100,101,99,102,3", "outside [low, high]"),
    ("2024-01-01T00:10:00Z,98,101,99,100,3", "outside [low, high]"),
    ("2024-01-01T00:10:00Z,100,101,99,100,-3", "negative volume"),
    ("2024-01-01T00:10:00Z,100,101,99,abc,3", "close 'abc' is not a number"),
    ("2024-01-01T00:10:00Z,100,101,99,100", "5 values where the header has 6"),
    ("2024-01-01T00:10:00Z,100,101,99,100,3,7", "7 values where the header has 6"),
    ("yesterday,100,101,99,100,3", "'yesterday' is neither ISO 8601 nor epoch ms"),
    (",100,101,99,100,3", "without a timestamp"),
])
def test_a_bad_bar_refuses_the_file_with_its_line(tmp_path, row, what):
    error = refusal(write(tmp_path, BAR.format(0), BAR.format(5), row, BAR.format(15)))
    assert error.line == 4 and what in error.message


def test_the_first_bad_row_is_named_whatever_is_wrong_with_later_ones(tmp_path):
    path = write(tmp_path, BAR.format(0), "2024-01-01T00:05:00Z,100,101,99,100,-1",
                 "2024-01-01T00:10:00Z,100,99,101,100,3", "2024-01-01T00:15:00Z,x,101,99,100,3")
    error = refusal(path)
    assert error.line == 3 and "x" not in error.message
    error = refusal(write(tmp_path, BAR.format(0), "2024-01-01T00:05:00Z,100,101,99,,3",
                          "2024-01-01T00:10:00Z,abc,101,99,100,3"))
    assert error.line == 3 and "missing" in error.message and "abc" not in error.message


def test_line_numbers_count_blank_lines(tmp_path):
    path = write(tmp_path, BAR.format(0), "", BAR.format(5), "2024-01-01T00:10:00Z,100,99,101,100,3")
    assert refusal(path).line == 5
    path = write(tmp_path, BAR.format(0), "", "2024-01-01T00:05:00Z,1,1,1,bad,3")
    assert refusal(path).line == 4


def test_a_bad_row_in_a_parquet_file_is_named_by_its_row(tmp_path):
    table = pa.table({"timestamp": [1_700_000_000_000, 1_700_000_300_000],
                      "open": [1.0, 1.0], "high": [1.0, 1.0], "low": [1.0, 2.0],
                      "close": [1.0, 1.0], "volume": [1.0, 1.0]})
    pyarrow.parquet.write_table(table, tmp_path / "x.parquet")
    error = refusal(tmp_path / "x.parquet")
    assert error.line == 2 and "high below low" in error.message


def test_a_missing_column_is_named_with_the_file(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("timestamp,open,high,low,close\n2024-01-01T00:00:00Z,1,1,1,1\n")
    error = refusal(path)
    assert "no volume column in x.csv" in error.message and error.line == 1


def test_a_file_without_bars_or_unreadable_is_refused(tmp_path):
    assert "no bars" in refusal(write(tmp_path)).message
    (tmp_path / "empty.csv").write_text("")
    assert "cannot read" in refusal(tmp_path / "empty.csv").message
    (tmp_path / "junk.parquet").write_text("not parquet")
    assert "cannot read" in refusal(tmp_path / "junk.parquet").message


# --- what is repaired and reported ---------------------------------------------------------------

def test_identical_duplicate_rows_are_dropped_and_reported(tmp_path):
    c = read_candles(write(tmp_path, BAR.format(0), BAR.format(5), BAR.format(5), BAR.format(10)))
    assert len(c) == 3 and np.all(np.diff(c.timestamp) == 300)
    assert c.problems == ("1 exact duplicate row(s) dropped (at 2024-01-01T00:05:00Z)",)


def test_duplicate_timestamp_with_different_prices_is_refused(tmp_path):
    path = write(tmp_path, BAR.format(0), BAR.format(5), BAR.format(10),
                 "2024-01-01T00:05:00Z,100,102,99,101,3")
    error = refusal(path)
    assert "two different bars for 2024-01-01T00:05:00Z (lines 3 and 5)" in error.message
    assert error.line == 5


def test_rows_out_of_order_are_sorted_and_reported(tmp_path):
    c = read_candles(write(tmp_path, BAR.format(10), BAR.format(0), BAR.format(5), BAR.format(15)))
    assert np.all(np.diff(c.timestamp) == 300) and len(c) == 4
    assert c.problems == ("1 row(s) out of time order, sorted (at 2024-01-01T00:00:00Z)",)


def test_misaligned_bars_and_gaps_are_reported(tmp_path):
    c = read_candles(write(tmp_path, *(BAR.format(m) for m in (0, 5, 10, 12, 17, 32, 37))))
    assert c.timeframe_seconds == 300 and len(c) == 7
    assert c.problems == (
        "1 gap(s), 2 bar(s) missing (after 2024-01-01T00:17:00Z)",
        "1 misaligned bar(s), not a whole 300s timeframe after the bar before "
        "(at 2024-01-01T00:12:00Z)")


def test_timeframe_is_the_most_common_spacing_unless_given(tmp_path):
    path = write(tmp_path, *(BAR.format(m) for m in (0, 5, 10, 20, 25)))
    assert read_candles(path).timeframe_seconds == 300
    given = read_candles(path, timeframe_seconds=60)
    assert given.timeframe_seconds == 60 and given.problems[0].startswith("4 gap(s), 21 bar(s)")
    assert "not a number of seconds" in refusal(path, timeframe_seconds=-5).message
    one = write(tmp_path, BAR.format(0))
    assert "pass timeframe_seconds" in refusal(one).message
    assert read_candles(one, timeframe_seconds=300).timeframe_seconds == 300


# --- timestamps ----------------------------------------------------------------------------------

def test_epoch_millisecond_timestamps_are_read_as_seconds(tmp_path):
    start = int(utc(2024, 1, 1).timestamp())
    rows = [f"{(start + 300 * i) * 1000},100,101,99,100.5,3" for i in range(3)]
    c = read_candles(write(tmp_path, *rows))
    assert c.timestamp.tolist() == [start, start + 300, start + 600]


def test_iso_timestamps_with_offsets_or_without_zone_are_utc(tmp_path):
    c = read_candles(write(tmp_path, "2024-01-01T02:00:00+02:00,100,101,99,100.5,3",
                           "2024-01-01T00:05:00,100,101,99,100.5,3",
                           "2024-01-01 00:10:00Z,100,101,99,100.5,3"))
    start = int(utc(2024, 1, 1).timestamp())
    assert c.timestamp.tolist() == [start, start + 300, start + 600]


# --- the MarketData plugin -----------------------------------------------------------------------

def test_start_and_end_select_bars_by_open_time(tmp_path):
    path = write(tmp_path, *(BAR.format(m) for m in range(0, 30, 5)))
    source = open_market_data(plugin_manager(), str(path))
    bars = source.candles("BTCUSDT", utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 0, 20))
    assert [iso(t)[-5:] for t in bars.timestamp] == ["00:05", "00:10", "00:15"]
    assert len(source.candles("BTCUSDT", start=utc(2024, 1, 1, 0, 6))) == 4
    assert len(source.candles("BTCUSDT", end=datetime(2024, 1, 1, 0, 5))) == 1  # naive = UTC
    assert len(source.candles("BTCUSDT", utc(2025, 1, 1), utc(2024, 1, 1))) == 0


def test_the_plugin_serves_candle_files_through_the_plugin_manager(tmp_path):
    path = write(tmp_path, BAR.format(0), BAR.format(5), name="binance_SOL-USDT-PERP_5m.CSV")
    source = open_market_data(plugin_manager(), str(path))
    assert isinstance(source, CandleFiles) and isinstance(source, MarketData)
    assert source.symbols() == ["SOLUSDT"] and source.ticker("SOLUSDT") is None
    assert len(source.candles("SOLUSDT")) == 2


def test_a_source_that_is_not_a_candle_file_is_declined(tmp_path):
    assert candle_files.rulekit_market_data(source="ccxt:binance", options={}) is None
    for name in ("kafka://prices", "https://example.com/prices.csv", "ccxt:binance",
                 str(tmp_path)):
        with pytest.raises(PluginError, match="no plugin serves"):
            open_market_data(plugin_manager(), name)


def test_a_candle_file_that_does_not_exist_is_named(tmp_path):
    with pytest.raises(DataError, match="absent.parquet does not exist") as caught:
        open_market_data(plugin_manager(), str(tmp_path / "absent.parquet"))
    assert caught.value.path == str(tmp_path / "absent.parquet")


def test_the_file_is_read_once(tmp_path, monkeypatch):
    path = write(tmp_path, BAR.format(0), BAR.format(5))
    source = open_market_data(plugin_manager(), str(path))
    reads = []
    real = candle_files.read_candles
    monkeypatch.setattr(candle_files, "read_candles", lambda *a: reads.append(a) or real(*a))
    first = source.candles("BTCUSDT")
    path.write_text(HEADER)  # changed on disk after the first read: the cached bars stand
    assert len(source.candles("BTCUSDT", end=utc(2030, 1, 1))) == 2 and len(reads) == 1
    assert np.shares_memory(source.candles("BTCUSDT").close, first.close)


def test_cached_prices_cannot_be_changed_by_a_caller(tmp_path):
    c = read_candles(write(tmp_path, BAR.format(0), BAR.format(5)))
    with pytest.raises(ValueError):
        c.close[0] = 1e9


def test_evaluate_with_data_fills_market_fields_from_the_candles(tmp_path):
    import json
    import subprocess
    import sys

    import talib
    from conftest import DEFAULT_POLICY, ROOT
    path = EXAMPLE_CANDLES
    c = read_candles(path)
    stamp = lambda t: datetime.fromtimestamp(int(t), UTC).isoformat()  # noqa: E731
    base = {"symbol": "BTCUSDT", "consensus": "STRONG", "confidence": 0.8}
    signals = [
        {**base, "signal_id": "late", "side": "LONG", "timestamp": stamp(c.timestamp[5000] + 300)},
        {**base, "signal_id": "early", "side": "LONG", "timestamp": stamp(c.timestamp[100] + 300)},
        {**base, "signal_id": "midbar", "side": "LONG", "timestamp": stamp(c.timestamp[5000] + 420)},
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


def test_line_numbers_hold_deep_in_a_large_file(tmp_path):
    start = int(utc(2024, 1, 1).timestamp())
    rows = [f"{iso(start + 60 * i)}:00Z,100,101,99,100.5,3" for i in range(30_000)]
    assert len(read_candles(write(tmp_path, *rows))) == 30_000
    bad = rows.copy()
    bad[28_000] = bad[28_000].replace("100.5", "1OO.5")
    assert refusal(write(tmp_path, *bad)).line == 28_002
    bad[27_000] += ",extra"
    error = refusal(write(tmp_path, *bad))
    assert error.line == 27_002 and "7 values" in error.message


@pytest.mark.parametrize("stamp", ["inf", "-inf", "1e20", "nan"])
def test_a_timestamp_that_is_not_a_plausible_time_refuses_the_file_with_its_line(tmp_path,
                                                                                stamp):
    path = tmp_path / "BTCUSDT.csv"
    path.write_text("timestamp,open,high,low,close,volume\n"
                    "1672531200,100,101,99,100,1\n"
                    f"{stamp},100,101,99,100,1\n")
    with pytest.raises(DataError) as caught:
        read_candles(path)
    assert caught.value.line == 3
