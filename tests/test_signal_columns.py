"""The column reader (what `evaluate` dry runs use) decides exactly as the per-record path
(`read_signals` -> `Signal` objects -> `SignalColumns.from_signals`), malformed lines included."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import duckdb
import numpy as np
import pytest
from conftest import ROOT, golden, golden_short

from audit import AuditLog
from rulekit.decision.engine import SignalColumns
from rulekit.inputs import signal_columns
from rulekit.inputs.signal_columns import read_signal_columns
from rulekit.inputs.signal_files import read_signals

EXAMPLE = ROOT / "examples" / "signals.jsonl"
NOW = datetime(2026, 11, 24, 12, 30, tzinfo=UTC)


def both_paths(engine, path, equity=10_000.0):
    reference = engine.decide_batch(SignalColumns.from_signals(read_signals(str(path))),
                                    equity=equity, now=NOW)
    table = read_signal_columns(str(path))
    columns = engine.decide_batch(table.columns, equity=equity, now=NOW)
    table.keep_input_records(columns)
    both_paths.last_table = table
    return reference, columns


def assert_same_decisions(reference, columns):
    assert len(columns) == len(reference)
    assert columns.approved.tolist() == reference.approved.tolist()
    assert columns.reason.tolist() == reference.reason.tolist()
    assert np.array_equal(columns.checks, reference.checks)
    for name, values in reference.values.items():
        assert np.array_equal(columns.values[name], values, equal_nan=True), name
    a, b = reference.signals, columns.signals
    for name in ("well_formed", "symbol", "side", "consensus", "signal_id"):
        assert getattr(b, name).tolist() == getattr(a, name).tolist(), name
    for name in ("confidence", "strength", "price", "atr", "ema_200", "volume_24h", "spread_bps",
                 "history_bars", "equity", "timestamp", "market_timestamp"):
        assert np.array_equal(getattr(b, name), getattr(a, name), equal_nan=True), name
    assert list(b.model_votes) == list(a.model_votes)


def audited_rows(engine, batch, path):
    with AuditLog(path) as audit:
        run = audit.start_run(engine, "dry-run", "test")
        audit.write_batch(run, "dry-run", batch)
    with duckdb.connect(str(path), read_only=True) as db:
        rows = db.execute("SELECT * EXCLUDE (run_id, decide_us) FROM decisions ORDER BY seq")
        return rows.fetchall()


def test_column_reader_decides_the_examples_as_the_per_record_path(engine, tmp_path):
    reference, columns = both_paths(engine, EXAMPLE)
    assert_same_decisions(reference, columns)
    assert columns.reason[-1] == "malformed_signal"
    assert audited_rows(engine, columns, tmp_path / "a.duckdb") == audited_rows(
        engine, reference, tmp_path / "b.duckdb")


ODD_LINES = [
    "{broken",
    "[1, 2]",
    "null",
    "5",
    '"text"',
    json.dumps(golden()) + " " + json.dumps(golden_short()),  # two objects on one line
    "   ",
    "",
    "  " + json.dumps(golden(signal_id="indented")),
    json.dumps(golden(signal_id="trailing-space")) + " ",
    '{"symbol": "BTCUSDT", "symbol": "ETHUSDT", "side": "LONG"}',  # duplicate key: the last wins
    json.dumps(golden(price="50000", atr=" 1500 ", signal_id=7)),
    json.dumps(golden(confidence=True, spread_bps=None, equity="lots")),
    json.dumps(golden(side=" short ", consensus="strong", symbol=" BTCUSDT ")),
    json.dumps(golden(price=float("nan"), atr=float("inf"))),
    json.dumps(golden(timestamp=1_795_526_400, market_timestamp=1_795_526_399_500)),
    json.dumps(golden(timestamp="2026-11-24T12:00:00", market_timestamp="2026-11-24")),
    json.dumps(golden(timestamp="2026-11-24T12:00:00.123456+05:30",
                      market_timestamp="2026-11-24T06:29:30.5Z")),
    json.dumps(golden(timestamp="2026-02-30T12:00:00Z", market_timestamp="soon")),
    json.dumps(golden(model_votes={"xgb": "LONG", "lstm": "SHORT"}, strength=0.4)),
    json.dumps(golden(symbol=["BTCUSDT"], price={"last": 1})),
]


def generated_file(path, rows=300, seed=3):
    """Ordinary signals with every kind of odd line sprinkled in, in blocks both readers see."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(rows):
        make = golden if rng.random() < 0.5 else golden_short
        lines.append(json.dumps(make(
            signal_id=f"s-{i}", confidence=round(float(rng.uniform(0.5, 1)), 3),
            atr=float(rng.uniform(200, 3000)), spread_bps=float(rng.exponential(4)),
            timestamp=f"2026-11-24T12:{i % 60:02d}:00Z",
            market_timestamp=f"2026-11-24T12:{i % 60:02d}:00.{i % 1000:03d}Z",
            **({"equity": float(rng.uniform(10, 500))} if i % 17 == 0 else {}))))
        if i % 23 == 0:
            lines.append(ODD_LINES[(i // 23) % len(ODD_LINES)])
    path.write_text("\n".join(lines) + "\n")
    return lines


@pytest.mark.parametrize("block_lines", [8, 64, 100_000])
def test_column_reader_with_malformed_lines_matches_the_per_record_path(
        engine, tmp_path, monkeypatch, block_lines):
    monkeypatch.setattr(signal_columns, "BLOCK_LINES", block_lines)
    path = tmp_path / "signals.jsonl"
    generated_file(path)
    reference, columns = both_paths(engine, path)
    assert_same_decisions(reference, columns)
    assert (columns.reason == "malformed_signal").sum() >= 5
    read_by_pyarrow = int((both_paths.last_table.spans[:, 1] >= 0).sum())
    if block_lines == 8:  # blocks without an odd line go through pyarrow, the others not
        assert 0 < read_by_pyarrow < len(columns)
    else:  # every block holds an odd line
        assert read_by_pyarrow == 0
    assert audited_rows(engine, columns, tmp_path / "a.duckdb") == audited_rows(
        engine, reference, tmp_path / "b.duckdb")


def test_every_odd_line_alone_matches_the_per_record_path(engine, tmp_path):
    for number, line in enumerate(ODD_LINES):
        path = tmp_path / f"odd-{number}.jsonl"
        path.write_text(json.dumps(golden(signal_id="before")) + "\n" + line + "\n")
        reference, columns = both_paths(engine, path)
        assert_same_decisions(reference, columns)


def test_malformed_lines_keep_their_line_numbers(engine, tmp_path):
    path = tmp_path / "signals.jsonl"
    path.write_text(json.dumps(golden()) + "\n\n{broken\n" + json.dumps(golden_short())
                    + "\nnull\n")
    table = read_signal_columns(str(path))
    batch = engine.decide_batch(table.columns, equity=10_000, now=NOW)
    table.keep_input_records(batch)
    assert batch.reason.tolist() == [None, "malformed_signal", None, "malformed_signal"]
    assert table.columns.raw[1] == {"line": 3, "text": "{broken"}
    assert table.columns.raw[3] == {"line": 5, "text": "null"}


def test_line_breaks_only_splitlines_knows_are_read_as_read_signals_does(engine, tmp_path):
    path = tmp_path / "signals.jsonl"
    text = (json.dumps(golden(signal_id="a\u2028b")) + "\r\n" + json.dumps(golden_short())
            + "\r" + json.dumps(golden()) + "\x0c\n")
    path.write_bytes(text.encode())
    reference, columns = both_paths(engine, path)
    assert_same_decisions(reference, columns)


def test_csv_columns_match_the_per_record_path(engine, tmp_path):
    header = "signal_id,symbol,side,consensus,confidence,price,atr,ema_200,volume_24h,spread_bps"
    row = lambda r: ",".join(str(r.get(k, "")) for k in header.split(","))  # noqa: E731
    path = tmp_path / "signals.csv"
    path.write_text("\n".join([header, row(golden(signal_id="a")), row(golden_short()),
                               "x,BTCUSDT,LONG,STRONG,0.8,oops", row(golden(price="abc")),
                               row(golden(side=" long ")), "", row(golden(atr=""))]) + "\n")
    reference, columns = both_paths(engine, path)
    assert_same_decisions(reference, columns)
    assert columns.reason.tolist().count("malformed_signal") == 1


def test_a_file_of_plain_objects_is_read_by_pyarrow(engine, tmp_path):
    path = tmp_path / "signals.jsonl"
    path.write_text("".join(json.dumps(golden(signal_id=f"s-{i}")) + "\n" for i in range(50)))
    reference, columns = both_paths(engine, path)
    assert_same_decisions(reference, columns)
    assert (both_paths.last_table.spans[:, 1] >= 0).all()
