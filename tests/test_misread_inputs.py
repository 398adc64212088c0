"""Inputs that used to be misread in silence are read as meant, or refused with their line and
what to do: in both signal readers alike (`read_signals` and the dry run's column reader), and in
candle files."""
from __future__ import annotations

import json

import pytest
from conftest import golden
from test_signal_columns import assert_same_decisions, both_paths

from rulekit.errors import SignalError
from rulekit.inputs.signal_columns import read_signal_columns
from rulekit.inputs.signal_files import read_signal_file, summarise

FIELDS = ("signal_id", "timestamp", "symbol", "side", "consensus", "confidence", "price", "atr",
          "ema_200", "volume_24h", "spread_bps")


def csv_text(rows, delimiter=","):
    lines = [delimiter.join(FIELDS)]
    lines += [delimiter.join(str(row.get(name, "")) for name in FIELDS) for row in rows]
    return "\n".join(lines) + "\n"


def jsonl(path, *records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_semicolon_delimited_signals_csv_is_read_as_signals(engine, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(csv_text([golden(signal_id="a", timestamp="2026-11-24T12:00:00Z")], ";"))
    reference, columns = both_paths(engine, path)
    assert_same_decisions(reference, columns)
    assert reference.approved.tolist() == [True]
    assert reference.signals.symbol.tolist() == ["BTCUSDT"]


def test_tab_delimited_signals_csv_is_read_as_signals(engine, tmp_path):
    path = tmp_path / "s.csv"
    path.write_text(csv_text([golden(signal_id="a")], "\t"))
    reference, columns = both_paths(engine, path)
    assert_same_decisions(reference, columns)
    assert reference.approved.tolist() == [True]


@pytest.mark.parametrize("spelling", ["BTC/USDT", "BTC/USDT:USDT", "BTC-USDT", "btcusdt",
                                      "BTC_USDT", " BTCUSDT "])
def test_symbol_spellings_are_read_as_one_market(engine, tmp_path, spelling):
    path = jsonl(tmp_path / "s.jsonl", golden(symbol=spelling))
    reference, columns = both_paths(engine, path)
    assert_same_decisions(reference, columns)
    assert reference.signals.symbol.tolist() == ["BTCUSDT"]
    assert reference.approved.tolist() == [True]
    csv_path = tmp_path / "s.csv"
    csv_path.write_text(csv_text([golden(symbol=spelling)]))
    reference, columns = both_paths(engine, csv_path)
    assert_same_decisions(reference, columns)
    assert reference.approved.tolist() == [True]


@pytest.mark.parametrize("stamp", ["24/11/2026 12:00", "Nov 24 2026 12:00", "1732449600000000",
                                   "2026-13-40T00:00:00Z"])
def test_a_timestamp_in_another_format_is_malformed_with_its_line(engine, tmp_path, stamp):
    path = jsonl(tmp_path / "s.jsonl", golden(signal_id="ok"), golden(timestamp=stamp))
    reference, columns = both_paths(engine, path)
    assert_same_decisions(reference, columns)
    assert reference.reason.tolist() == [None, "malformed_signal"]
    for problems in (read_signal_file(str(path)).problems, read_signal_columns(str(path)).problems):
        assert [p.line for p in problems] == [2]
        assert "is not a time rulekit reads: write ISO 8601" in problems[0].message


def test_an_unreadable_market_timestamp_is_not_read_as_fresh(engine, tmp_path):
    path = jsonl(tmp_path / "s.jsonl", golden(market_timestamp="yesterday noon"))
    reference, columns = both_paths(engine, path)
    assert_same_decisions(reference, columns)
    assert reference.reason.tolist() == ["malformed_signal"]


def test_an_unknown_field_is_malformed_and_named_with_the_field_it_resembles(engine, tmp_path):
    record = golden()
    record["confidnce"] = record.pop("confidence")
    path = jsonl(tmp_path / "s.jsonl", golden(), record, record)
    reference, columns = both_paths(engine, path)
    assert_same_decisions(reference, columns)
    assert reference.reason.tolist() == [None, "malformed_signal", "malformed_signal"]
    assert columns.signals.raw[1] == record  # the audit keeps what was sent
    problems = read_signal_file(str(path)).problems
    assert problems == read_signal_columns(str(path)).problems
    assert summarise(problems, "s.jsonl", shown=1) == [
        "s.jsonl:2: unknown field 'confidnce' (did you mean 'confidence'?): rejected as "
        "malformed_signal", "s.jsonl: 1 more line(s) like line 2"]


def test_an_unknown_csv_column_refuses_the_file_with_its_line(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("symbol,side,consensus,confidnce\nBTCUSDT,LONG,STRONG,0.8\n")
    for read in (read_signal_file, read_signal_columns):
        with pytest.raises(SignalError) as caught:
            read(str(path))
        assert str(caught.value).startswith(f"{path}:1: unknown column 'confidnce' in the header "
                                            "(did you mean 'confidence'?)")


def test_a_headerless_signals_csv_is_refused(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("BTCUSDT,LONG,STRONG,0.8\n")
    for read in (read_signal_file, read_signal_columns):
        with pytest.raises(SignalError, match="no signal field in the CSV header"):
            read(str(path))
