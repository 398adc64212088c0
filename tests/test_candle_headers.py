"""Candle files as exchanges and tools export them: headers in any case, a date or epoch-ms time
column, Binance's headerless klines, file names spelt as signals' symbols are; what cannot be read
as meant is refused with what to add."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from plugins.candle_files import read_candles, symbol_from_name
from rulekit.errors import DataError

BARS = [(datetime(2024, 1, 1, 0, 5 * i, tzinfo=UTC), 100 + i, 101 + i, 99 + i, 100.5 + i, 3)
        for i in range(4)]


def write_bars(path, header, time=lambda t: t.isoformat(), delimiter=","):
    rows = [delimiter.join(map(str, (time(t), *values))) for t, *values in BARS]
    path.write_text((header + "\n" if header else "") + "\n".join(rows) + "\n")
    return path


def assert_the_bars(candles):
    assert candles.timestamp.tolist() == [int(t.timestamp()) for t, *_ in BARS]
    assert candles.close.tolist() == [c for *_, c, _ in BARS]
    assert candles.timeframe_seconds == 300


@pytest.mark.parametrize("header", ["Timestamp,Open,High,Low,Close,Volume",
                                    "TIMESTAMP,OPEN,HIGH,LOW,CLOSE,VOLUME",
                                    "date,open,high,low,close,volume",
                                    "Datetime,Open,High,Low,Close,Volume"])
def test_candle_headers_are_read_in_any_case_and_with_a_date_column(tmp_path, header):
    assert_the_bars(read_candles(write_bars(tmp_path / "BTCUSDT.csv", header)))


def test_an_epoch_ms_time_column_is_the_open_time(tmp_path):
    path = write_bars(tmp_path / "BTCUSDT.csv", "time,open,high,low,close,volume",
                      lambda t: int(t.timestamp() * 1000))
    assert_the_bars(read_candles(path))


def test_a_headerless_binance_kline_export_is_read(tmp_path):
    path = tmp_path / "BTCUSDT-5m-2024-01.csv"
    path.write_text("".join(
        f"{int(t.timestamp() * 1000)},{o},{h},{lo},{c},{v},{int(t.timestamp() * 1000) + 299999},"
        f"1000.0,12,1.5,150.0,0\n" for t, o, h, lo, c, v in BARS))
    assert_the_bars(read_candles(path))


def test_binance_epoch_microseconds_are_read(tmp_path):
    path = tmp_path / "BTCUSDT.csv"
    path.write_text("".join(f"{int(t.timestamp() * 10**6)},{o},{h},{lo},{c},{v},0,0,0,0,0,0\n"
                            for t, o, h, lo, c, v in BARS))
    assert_the_bars(read_candles(path))


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_candles_saved_with_semicolons_tabs_or_bars_are_read(tmp_path, delimiter):
    header = delimiter.join(["timestamp", "open", "high", "low", "close", "volume"])
    assert_the_bars(read_candles(write_bars(tmp_path / "BTCUSDT.csv", header,
                                            delimiter=delimiter)))


def test_a_semicolon_file_with_decimal_commas_is_refused_at_its_line(tmp_path):
    path = tmp_path / "BTCUSDT.csv"
    path.write_text("timestamp;open;high;low;close;volume\n"
                    "2024-01-01T00:00:00+00:00;100,5;101;99;100;3\n")
    with pytest.raises(DataError) as caught:
        read_candles(path)
    assert caught.value.line == 2


def test_other_headerless_candles_are_refused_with_the_header_to_add(tmp_path):
    path = write_bars(tmp_path / "BTCUSDT.csv", None)
    with pytest.raises(DataError) as caught:
        read_candles(path)
    assert caught.value.line == 1
    assert "no header line" in caught.value.message
    assert "add timestamp,open,high,low,close,volume as its first line" in caught.value.message


def test_two_columns_that_could_be_the_open_time_are_refused(tmp_path):
    path = tmp_path / "BTCUSDT.csv"
    path.write_text("date,time,open,high,low,close,volume\n2024-01-01,00:00,1,1,1,1,1\n")
    with pytest.raises(DataError, match="2 columns that could be the bar's open time"):
        read_candles(path)


@pytest.mark.parametrize("name", ["BTC-USDT.csv", "btcusdt.csv", "binance_BTC-USDT_5m.csv",
                                  "BTC_USDT.csv"])
def test_candle_file_names_are_read_as_signal_symbols_are(name):
    assert symbol_from_name(name) == "BTCUSDT"
