"""Signals and risk-state files: a bad line is a rejected signal, a bad state file is an error."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from rulekit.errors import StateError
from rulekit.inputs.signal_files import read_signals
from rulekit.inputs.state_file import load_state


def test_json_lines_keep_bad_lines_as_malformed_signals(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"symbol": "BTCUSDT", "side": "long"}\n\n[1, 2]\n{broken\n')
    signals = read_signals(str(path))
    assert [s.well_formed for s in signals] == [True, False, False]
    assert signals[0].side == "LONG"
    assert signals[2].raw == {"line": 4, "text": "{broken"}


def test_csv_row_with_extra_fields_is_malformed(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("symbol,side,confidence\nBTCUSDT,LONG,0.8\nBTCUSDT,LONG,0.8,oops\n")
    signals = read_signals(str(path))
    assert [s.well_formed for s in signals] == [True, False]
    assert signals[0].confidence == 0.8


def test_missing_signals_file_is_an_error(tmp_path):
    from rulekit.errors import SignalError
    with pytest.raises(SignalError, match="cannot read signals"):
        read_signals(str(tmp_path / "nope.jsonl"))


def test_state_file_defaults_reference_equities_to_equity(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps({"equity": 9_500, "consecutive_losses": 2,
                                "circuit_breaker_until": "2026-01-05T16:00:00Z"}))
    state = load_state(str(path))
    assert state.day_start_equity == state.peak_equity == 9_500
    assert state.consecutive_losses == 2
    assert state.circuit_breaker_until == datetime(2026, 1, 5, 16, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("content, complaint", [
    ('{"equity": 1, "open_trades": -1}', "open_trades must be a whole number"),
    ('{"equity": 1, "streak": 3}', "unknown risk state field(s): streak"),
    ('{"open_trades": 1}', "missing field: equity"),
    ('{"equity": 1, "circuit_breaker_until": "soon"}', "not a timestamp"),
    ('{"equity": 1,', "not valid JSON"),
])
def test_bad_state_file_is_refused(tmp_path, content, complaint):
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(StateError, match=complaint.replace("(", r"\(").replace(")", r"\)")):
        load_state(str(path))
