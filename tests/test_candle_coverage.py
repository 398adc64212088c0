"""Candles given to `evaluate`, `backtest` and `run` serve the signals and the policy, or the
command says why not before anything is decided: a file of a market the policy does not list, a
traded symbol without bars, two files of one symbol are refused; a file no signal trades and
signals outside their candles are said in a line each. `SYMBOL=FILE` names a file's symbol."""
from __future__ import annotations

import json

import duckdb
import pytest
from conftest import DEFAULT_POLICY, EXAMPLE_CANDLES, TEST_DATA, golden
from test_cli import rulekit

INSIDE = "2023-01-03T12:00:00Z"  # within the first 400 bars of the example candles


@pytest.fixture
def bars(tmp_path):
    """400 real BTC/USDT bars under a name that does not say their symbol."""
    path = tmp_path / "bars.csv"
    path.write_text("".join(EXAMPLE_CANDLES.read_text().splitlines(keepends=True)[:401]))
    return path


def signals(tmp_path, *records, name="signals.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def runs(database):
    if not database.exists():
        return 0
    with duckdb.connect(str(database), read_only=True) as db:
        return db.execute("SELECT count(*) FROM runs").fetchone()[0]


def test_bars_of_a_file_whose_name_is_no_market_are_refused_with_each_problem(tmp_path, bars):
    path = signals(tmp_path, golden(signal_id="a", timestamp=INSIDE))
    done = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--bars", bars, "--equity", 10_000,
                   "--audit", tmp_path / "a.duckdb", path, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert (f"error: {bars}: its symbol BARS (from the file name) is not in the markets of "
            f"{DEFAULT_POLICY}: add `markets: {{BARS: {{amount_step: ..., min_notional: ...}}}}` "
            f"there, or name the file's symbol as SYMBOL={bars}") in lines
    assert any(line.startswith("error: no bars for BTCUSDT, which 1 signal(s) trade")
               for line in lines), lines
    assert "Traceback" not in done.stderr
    assert runs(tmp_path / "a.duckdb") == 0  # refused before anything is written


def test_symbol_equals_file_names_the_symbol_of_a_bars_file(tmp_path, bars):
    path = signals(tmp_path, golden(signal_id="a", timestamp=INSIDE))
    done = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--bars", f"BTC/USDT={bars}",
                   "--equity", 10_000, "--json", "--audit", tmp_path / "a.duckdb", path,
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in done.stdout.splitlines()]
    assert events[0] == "DECISION" and "OPEN" in events  # the trade saw the bars


def test_a_traded_symbol_without_bars_is_refused(tmp_path, bars):
    path = signals(tmp_path, golden(signal_id="a", timestamp=INSIDE),
                   golden(signal_id="b", symbol="ETHUSDT", timestamp=INSIDE))
    done = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--bars", f"BTCUSDT={bars}",
                   "--equity", 10_000, "--audit", tmp_path / "a.duckdb", path, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: no bars for ETHUSDT, which 1 signal(s) trade: an approved trade would never see "
        "a price"]


def test_a_bars_file_no_signal_trades_is_said(tmp_path, bars):
    path = signals(tmp_path, golden(signal_id="a", timestamp=INSIDE))
    eth = tmp_path / "ETHUSDT.csv"
    eth.write_text(bars.read_text())
    done = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--bars", f"BTCUSDT={bars}",
                   "--bars", eth, "--equity", 10_000, "--audit", tmp_path / "a.duckdb", path,
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (f"note: {eth}: no signal trades ETHUSDT (from the file name): its bars are not used"
            in done.stderr.splitlines())


def test_two_files_of_one_symbol_are_refused(tmp_path, bars):
    path = signals(tmp_path, golden(signal_id="a", timestamp=INSIDE))
    done = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--bars", f"BTCUSDT={bars}",
                   "--bars", EXAMPLE_CANDLES, "--equity", 10_000, "--audit",
                   tmp_path / "a.duckdb", path, cwd=tmp_path)
    assert done.returncode == 2
    assert f"error: BTCUSDT={bars} and {EXAMPLE_CANDLES} both hold BTCUSDT" in done.stderr


def test_signals_outside_the_candles_are_said(tmp_path, bars):
    path = signals(tmp_path, golden(signal_id="a", timestamp=INSIDE),
                   golden(signal_id="late", timestamp="2026-11-24T12:00:00Z"),
                   golden(signal_id="early", timestamp="2020-01-01T00:00:00Z"))
    done = rulekit("backtest", "--policy", DEFAULT_POLICY, "--data", f"BTCUSDT={bars}",
                   "--signals", path, "--json", "--audit", tmp_path / "a.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "outside its candles" in line]
    assert line.startswith(f"note: BTCUSDT={bars}: BTCUSDT signals outside its candles: 1 before "
                           "its first bar closes")
    assert "1 after its last bar closes" in line and "never filled" in line


def test_a_backtest_on_a_market_the_policy_does_not_list_is_refused_up_front(tmp_path):
    goog = TEST_DATA / "stock_GOOG_1d.csv"
    done = rulekit("backtest", "--policy", DEFAULT_POLICY, "--data", goog, "--audit",
                   tmp_path / "a.duckdb", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""  # no "approved 0"
    assert [line for line in done.stderr.splitlines() if line.startswith("error")] == [
        f"error: {goog}: its symbol GOOG (from the file name) is not in the markets of "
        f"{DEFAULT_POLICY}: add `markets: {{GOOG: {{amount_step: ..., min_notional: ...}}}}` "
        f"there, or name the file's symbol as SYMBOL={goog}"]
    assert runs(tmp_path / "a.duckdb") == 0


def test_a_paper_run_on_a_market_the_policy_does_not_list_is_refused(tmp_path, bars):
    path = signals(tmp_path, golden(signal_id="a", timestamp=INSIDE))
    done = rulekit("run", "--policy", DEFAULT_POLICY, "--exchange", "paper", "--replay", bars,
                   "--signals-from", path, "--equity", 10_000, "--audit", tmp_path / "a.duckdb",
                   cwd=tmp_path)
    assert done.returncode == 2
    assert "its symbol BARS (from the file name) is not in the markets" in done.stderr


def test_a_backtest_with_a_named_symbol_is_recorded_and_replayed_from_anywhere(tmp_path, bars):
    database = tmp_path / "a.duckdb"
    done = rulekit("backtest", "--policy", DEFAULT_POLICY, "--data", "BTCUSDT=bars.csv",
                   "--json", "--audit", database, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    figures = json.loads(done.stdout)
    assert figures["trades"] > 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    replayed = rulekit("replay", "--policy", DEFAULT_POLICY, "--run", figures["run_id"],
                       "--audit", database, "--json", cwd=elsewhere)
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout)["backtest"]["new"]["trades"] == figures["trades"]
