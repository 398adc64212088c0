"""The event-driven backtest (``run_backtest``'s default) against the plain per-bar loop
(``fast=False``): the same trades, trade events, risk events, equity curve, final account and
decisions, on every committed real candle file, one symbol and several, with the default policy's
whole lifecycle and with global limits (and the time exit) tight enough to fire often."""
from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime

import numpy as np
import pytest
from conftest import DEFAULT_POLICY, EXAMPLE_CANDLES, TEST_DATA

from plugins.candle_files import read_candles
from plugins.reference_signals import ensemble_columns, ensemble_signals
from rulekit.backtest.fast import signals_of
from rulekit.backtest.run import run_backtest
from rulekit.decision.engine import BatchDecisions, Engine, SignalColumns
from rulekit.model import Signal
from rulekit.policy.loader import load_policy

FILES = sorted(TEST_DATA.glob("*.csv")) + [EXAMPLE_CANDLES]
EXTRA_MARKETS = ("ALTBTC", "ETHBTC", "XMRBTC", "BTCUSD", "EURUSD", "GOOG")
TIGHT_LIMITS = {"RM_CIRCUIT_BREAKER_LOSS_PCT": "0.6", "RM_CIRCUIT_BREAKER_PAUSE_HOURS": "1",
                "RM_MAX_DAILY_DD_PCT": "1.0", "RM_MAX_WEEKLY_DD_PCT": "2.0",
                "RM_RISK_PER_TRADE_PCT": "3.0", "RM_MAX_EXPOSURE_PCT": "500",
                "RM_MAX_LEVERAGE": "5", "RM_TIME_EXIT_HOURS": "2",
                "RM_FEE_PCT": "0"}  # fee-free, so the limits fire often enough to be exercised


def make_engine(tmp_path, monkeypatch, **env) -> Engine:
    """The default policy with a market for every committed file's symbol and no volume floor
    (the slices' quote volumes are in BTC, USD or shares, not USDT)."""
    markets = "".join(f"  {s}: {{amount_step: 0.000001, min_notional: 0.0000001}}\n"
                      for s in EXTRA_MARKETS)
    text = DEFAULT_POLICY.read_text().replace(
        "  XRPUSDT: {amount_step: 0.1, min_notional: 5}\n",
        "  XRPUSDT: {amount_step: 0.1, min_notional: 5}\n" + markets)
    (tmp_path / "policy.yaml").write_text(text)
    monkeypatch.setenv("RM_MIN_VOLUME_24H", "0")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Engine(load_policy(tmp_path / "policy.yaml"))


def decisions(engine: Engine, result) -> list[tuple]:
    """Every decision (scalar or batch) as a row: signal, decision time, verdict, every rule's
    outcome and the account row it was decided against, in decision-time order."""
    batches = []
    if result.journal.decisions:
        batches.append(BatchDecisions.of(engine, *(list(c) for c in zip(
            *result.journal.decisions, strict=True))))
    if result.rejected is not None:
        batches.append(result.rejected)
    rows = []
    for batch in batches:
        signals, account = batch.signals, batch.account
        numbers = np.column_stack([batch.checks.astype(float), *batch.values.values(),
                                   *(np.asarray(account[n], dtype=float) for n in account),
                                   signals.price, signals.atr, signals.ema_200,
                                   signals.volume_24h, signals.spread_bps, signals.history_bars,
                                   signals.market_timestamp])
        for i in range(len(batch)):
            rows.append((float(account["decided_at"][i]), str(signals.signal_id[i]),
                         str(signals.symbol[i]), str(signals.side[i]), bool(batch.approved[i]),
                         batch.reason[i], tuple(_same(v) for v in numbers[i].tolist())))
    return sorted(rows, key=lambda r: r[:4])


def _same(value: float) -> float | str:
    return "nan" if math.isnan(value) else value


def trades(result) -> list[tuple]:
    """Every trade with all its fields and events; the decision it came from by its signal (a
    decision ref counts rows within ``journal.decisions``, which the two loops fill differently)."""
    journal = result.journal.decisions
    out = []
    for trade in result.trades + result.cancelled:
        record = trade.as_record()
        ref = record.pop("decision_ref")
        signal, decision, _, at = journal[int(ref.rpartition(":")[2])]
        assert decision.approved
        if not signal.signal_id:
            record.pop("trade_id")
        out.append((tuple((k, _same(v) if isinstance(v, float) else v)
                          for k, v in sorted(record.items())),
                    signal.signal_id, at, tuple(e.as_dict().items() for e in trade.events)))
    return out


def assert_same_backtest(engine, candles, signals, equity=10_000.0, slippage_bps=0.0):
    """The event loop, given the signals as objects and as columns, against the per-bar loop."""
    plain = run_backtest(engine, candles, signals, equity, slippage_bps, fast=False)
    for given in (signals, SignalColumns.from_signals(signals)):
        figures = assert_same_run(engine, plain, run_backtest(engine, candles, given, equity,
                                                              slippage_bps))
    return plain, figures


def assert_same_run(engine, plain, fast):
    assert trades(fast) == trades(plain)
    assert [e.as_dict() for e in fast.journal.events] == \
        [e.as_dict() for e in plain.journal.events]
    assert fast.journal.risk_events == plain.journal.risk_events
    assert np.array_equal(fast.equity_times, plain.equity_times)
    assert np.array_equal(fast.equity, plain.equity)
    assert fast.account.as_record() == plain.account.as_record()
    assert fast.breaker_trips == plain.breaker_trips
    assert decisions(engine, fast) == decisions(engine, plain)
    figures = fast.metrics()
    assert {k: _same(v) if isinstance(v, float) else v for k, v in figures.items()} == \
        {k: _same(v) if isinstance(v, float) else v for k, v in plain.metrics().items()}
    return figures


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("limits", ["default", "tight"])
def test_the_event_loop_trades_and_decides_as_the_per_bar_loop_on_each_real_file(
        path, limits, tmp_path, monkeypatch):
    engine = make_engine(tmp_path, monkeypatch, **(TIGHT_LIMITS if limits == "tight" else {}))
    c = read_candles(path)
    plain, figures = assert_same_backtest(engine, [c], ensemble_signals(c))
    if path == EXAMPLE_CANDLES:
        assert figures["trades"] > 20
        events = {e.event.value for e in plain.journal.events}
        assert {"OPEN", "BREAKEVEN", "PARTIAL_TP", "TRAILING", "CLOSED"} <= events
        assert {t.exit_reason for t in plain.trades} >= {"stop_loss", "take_profit",
                                                         "trailing_stop", "breakeven_stop"}
        if limits == "tight":
            assert "time_exit" in {t.exit_reason for t in plain.trades}
            assert plain.breaker_trips > 0
            assert {"daily_drawdown", "symbol_position_open"} <= set(figures["rejections"])


def as_symbol(c, symbol: str, scale: float = 1.0):
    return replace(c, symbol=symbol, open=c.open / scale, high=c.high / scale, low=c.low / scale,
                   close=c.close / scale, volume=c.volume * scale)


@pytest.mark.parametrize("limits", ["default", "tight"])
def test_the_event_loop_equals_the_per_bar_loop_with_several_symbols(limits, tmp_path,
                                                                    monkeypatch):
    engine = make_engine(tmp_path, monkeypatch, **(TIGHT_LIMITS if limits == "tight" else {}))
    btc = read_candles(EXAMPLE_CANDLES)
    # the same open times (bars of one moment in file order), and files that overlap in part
    groups = [[btc, as_symbol(btc, "ETHUSDT", 16.0)],
              [read_candles(TEST_DATA / "binance_ETH-BTC_5m.csv"),
               read_candles(TEST_DATA / "binance_XMR-BTC_5m.csv"),
               read_candles(TEST_DATA / "binance_ALT-BTC_1m.csv")],
              [read_candles(p) for p in FILES if p.stem not in ("binance_ETH-BTC_30m",)]]
    for candles in groups:
        signals = [s for c in candles for s in ensemble_signals(c)]
        _, figures = assert_same_backtest(engine, candles, signals, slippage_bps=3.0)
        assert figures["trades"] > 10


def test_the_event_loop_equals_the_per_bar_loop_for_signals_off_the_bar_grid(tmp_path,
                                                                             monkeypatch):
    """Signals stamped mid-bar, on a bar's open, without a timestamp, after the last bar, with
    their own market fields, and for an unknown symbol."""
    engine = make_engine(tmp_path, monkeypatch)
    c = read_candles(EXAMPLE_CANDLES)
    signals = list(ensemble_signals(c))
    for n, k in enumerate(range(400, len(c) - 1, 37)):
        at = float(c.timestamp[k]) + (150 if n % 2 else 0)
        signals.append(Signal.from_record({
            "signal_id": f"extra-{k}", "symbol": "BTCUSDT" if n % 7 else "DOGEUSDT",
            "side": "LONG" if n % 3 else "SHORT", "consensus": "UNANIMOUS", "confidence": 0.9,
            "timestamp": datetime.fromtimestamp(at, UTC).isoformat(),
            **({"price": float(c.close[k - 1]), "atr": float(c.close[k - 1]) * 0.004,
                "ema_200": float(c.close[k - 1]), "volume_24h": 1e9, "spread_bps": 1.0}
               if n % 5 == 0 else {})}))
    signals += [Signal.from_record({"signal_id": f"untimed-{i}", "symbol": "BTCUSDT",
                                    "side": "LONG", "consensus": "STRONG", "confidence": 0.8})
                for i in range(3)]
    signals.append(Signal.from_record({
        "signal_id": "late", "symbol": "BTCUSDT", "side": "LONG", "consensus": "STRONG",
        "confidence": 0.8, "timestamp": float(c.timestamp[-1]) + 3_600}))
    assert_same_backtest(engine, [c], signals)


def test_the_reference_signals_as_columns_are_the_signals_as_objects():
    """``ensemble_columns`` (no object per signal) holds what ``from_signals`` makes of
    ``ensemble_signals``, and a row read back as a ``Signal`` (what the per-bar loop is given
    for columns) is the signal it was."""
    for path in FILES:
        c = read_candles(path)
        columns, objects = ensemble_columns(c), SignalColumns.from_signals(ensemble_signals(c))
        for name in SignalColumns.__dataclass_fields__:
            mine, theirs = getattr(columns, name), getattr(objects, name)
            if isinstance(theirs, np.ndarray):
                assert mine.dtype == theirs.dtype, name
                assert np.array_equal(mine, theirs, equal_nan=theirs.dtype.kind == "f"), name
            else:
                assert list(mine) == list(theirs), name
        assert [repr(s) for s in signals_of(columns)] == [repr(s) for s in ensemble_signals(c)]


@pytest.mark.parametrize("equity", [10_000.0, 500.0])
@pytest.mark.parametrize("limits", ["default", "tight"])
def test_signals_decided_in_batches_while_flat_equal_the_one_by_one_decisions(
        limits, equity, tmp_path, monkeypatch):
    """While no trade is open, runs of rejections (the drawdown limits, the breaker's pause, the
    exposure cap) are decided as batches: across new days and weeks, breaker trips and pauses
    ending, they give the per-bar loop's one-by-one decisions, trades and risk events."""
    engine = make_engine(tmp_path, monkeypatch, **(TIGHT_LIMITS if limits == "tight" else {}))
    c = read_candles(EXAMPLE_CANDLES)
    signals = ensemble_signals(c)
    plain = run_backtest(engine, [c], signals, equity, fast=False)
    fast = run_backtest(engine, [c], signals, equity)
    figures = assert_same_run(engine, plain, fast)
    assert len(fast.journal.decisions) < len(plain.journal.decisions) / 2  # batches did the rest
    assert {"weekly_drawdown", "daily_drawdown", "circuit_breaker", "max_exposure"} <= set(
        figures["rejections"])
    assert plain.breaker_trips > 0 and figures["trades"] > 50
    kinds = {e.kind.value for e in plain.journal.risk_events}
    assert {"new_day", "new_week", "circuit_breaker"} <= kinds
