"""One decision stops at its first failed check (``Program.first``); its full trace is the full
program run again when read. Both must give what the full program gives: the same verdict,
reason, size, levels, trace, audit row and failed-rule numbers, on the benchmark's mix of signals
(malformed, NaN, unknown symbols, stale data, tiny accounts), on signals from real candles, and
against accounts that are not fresh."""
from __future__ import annotations

import math
import sys
from datetime import UTC, datetime

import numpy as np
import pytest
from conftest import EXAMPLE_CANDLES, ROOT
from test_compiled_paths_agree import random_records

from plugins.candle_files import read_candles
from plugins.reference_signals import ensemble_signals
from rulekit.decision.engine import BatchDecisions, SignalColumns
from rulekit.decision.explain import failed_json
from rulekit.market.conditions import with_market_fields
from rulekit.model import LEVEL_FIELDS, RiskState, Signal

sys.path.insert(0, str(ROOT / "bench"))
import bench_evaluate  # noqa: E402  (the benchmark's own generator)

STATES = {
    "fresh": None,
    "worn": RiskState(equity=9_750, day_start_equity=10_000, week_start_equity=10_500,
                      peak_equity=10_600, breaker_reference_equity=9_900, consecutive_losses=3,
                      open_trades=2, open_exposure=3_000, open_symbols=("ETHUSDT",)),
    "paused": RiskState(equity=9_000, day_start_equity=9_500, week_start_equity=9_500,
                        peak_equity=10_000, breaker_reference_equity=10_000,
                        circuit_breaker_until=4e9),
    "broken": RiskState(equity=10_000, day_start_equity=0.0, week_start_equity=10_000,
                        peak_equity=10_000, breaker_reference_equity=10_000),
}


def bench_signals(count: int) -> list[Signal]:
    bench_evaluate.CANDLES = EXAMPLE_CANDLES  # real candles in the repository, as bench_dry_run
    records, _ = bench_evaluate.make_signals(count, seed=3)
    junk = [Signal.malformed({"line": 1}), Signal.from_record({"symbol": "BTCUSDT", "pirce": 1}),
            Signal.from_record({**records[0], "timestamp": "soon"})]
    return [Signal.from_record(r) for r in records] + junk + [
        Signal.from_record(r) for r in random_records(1_000, seed=5)]


def candle_signals() -> list[Signal]:
    candles = read_candles(EXAMPLE_CANDLES)
    signals = ensemble_signals(candles)
    return with_market_fields(signals, {candles.symbol: candles}, _policy())


def _policy():
    from conftest import DEFAULT_POLICY

    from rulekit.policy.loader import load_policy
    return load_policy(DEFAULT_POLICY)


def same(a, b) -> bool:
    """Equal, NaN equal to NaN, and of the same kind (a check stays a bool)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def same_number(a, b) -> bool:
    """Equal as numbers (the batch holds every figure as a float), NaN equal to NaN."""
    a, b = float(a), float(b)
    return a == b or (math.isnan(a) and math.isnan(b))


def full_program(engine, inputs: tuple) -> tuple:
    try:
        return engine.program.scalar(*inputs)
    except ZeroDivisionError:
        return engine.program.scalar_ieee(*inputs)


def decide_capturing(engine, signal, state, equity=10_000.0):
    """The decision, and the inputs its program was given."""
    seen = []
    first, first_ieee = engine._first, engine._first_ieee
    engine._first = lambda *a: (seen.append(a), first(*a))[1]
    engine._first_ieee = lambda *a: (seen.append(a), first_ieee(*a))[1]
    try:
        decision = engine.decide(signal, state=state, equity=equity)
    finally:
        engine._first, engine._first_ieee = first, first_ieee
    return decision, seen[-1]


def assert_same_as_full(engine, signals, state):
    count = len(engine.program.check_steps)
    names = engine.program.check_names
    decisions = []
    verdicts = set()
    for signal in signals:
        decision, inputs = decide_capturing(engine, signal, state)
        full = full_program(engine, inputs)
        checks = full[:count]
        expected = None if all(checks) else names[list(checks).index(False)]
        assert decision.approved == (expected is None) and decision.reason == expected, signal
        # stopping early and the IEEE form agree with the fast form wherever it does not raise
        try:
            fast = engine.program.first(*inputs)
        except ZeroDivisionError:
            fast = None
        if fast is not None:
            ieee = engine.program.first_ieee(*inputs)
            assert fast == ieee if isinstance(fast, int) else all(map(same, fast, ieee))
        assert len(decision.outcomes) == len(full)
        assert all(map(same, decision.outcomes, full)), signal
        for name in LEVEL_FIELDS:
            value = getattr(decision, name)
            assert (value is None) == (expected is not None)
            assert value is None or same(value, full[engine.layout.positions[name]])
        decisions.append(decision)
        verdicts.add(decision.reason)
    return decisions, verdicts


@pytest.mark.parametrize("state", list(STATES), ids=list(STATES))
def test_stopping_at_the_first_failed_check_decides_as_the_full_program(engine, state):
    signals = bench_signals(3_000)
    decisions, verdicts = assert_same_as_full(engine, signals, STATES[state])
    if state == "fresh":  # the mix reaches the input checks, the gates, sizing and approval
        assert {None, "malformed_signal", "unknown_symbol", "invalid_price", "invalid_atr",
                "stale_market_data", "min_consensus", "min_confidence", "trend_alignment",
                "max_volatility", "min_volume", "max_spread", "below_min_notional"} <= verdicts
    # and as the batch program, row by row, field by field
    batch = engine.decide_batch(SignalColumns.from_signals(signals), state=STATES[state],
                                equity=10_000)
    for row, decision in enumerate(decisions):
        other = batch.decision(row)
        assert (decision.approved, decision.reason) == (other.approved, other.reason), row
        assert all(map(same_number, decision.outcomes, other.outcomes)), row


def test_signals_from_real_candles_decide_as_the_full_program(engine):
    signals = candle_signals()
    assert len(signals) > 1_000
    for state in STATES.values():
        decisions, verdicts = assert_same_as_full(engine, signals, state)
    assert None in assert_same_as_full(engine, signals, None)[1]


@pytest.mark.parametrize("state", ["fresh", "worn"])
def test_a_short_circuited_decision_is_audited_as_the_full_one(engine, state):
    """The audit's row (every check's outcome, the failed rule's numbers, the levels) from
    decisions made one at a time equals the batch program's."""
    signals = bench_signals(2_000)
    risk = STATES[state] or RiskState.fresh(10_000.0)
    now = datetime.fromtimestamp(1.7e9, UTC)
    decided_at = [(s.timestamp or now).timestamp() for s in signals]
    decided = [engine.decide(s, state=risk, now=now, account_equity_only=True) for s in signals]
    assert sum(d.approved for d in decided) > 100
    one_by_one = BatchDecisions.of(engine, signals, decided, [risk] * len(signals), decided_at)
    batch = engine.decide_rows(SignalColumns.from_signals(signals), one_by_one.account)
    assert np.array_equal(one_by_one.checks, batch.checks)
    assert one_by_one.reason.tolist() == batch.reason.tolist()
    assert failed_json(one_by_one) == failed_json(batch)
    for name in (*LEVEL_FIELDS, "size_capped_by"):
        assert np.array_equal(one_by_one.output(name), batch.output(name), equal_nan=True), name


def test_a_decision_is_immutable_and_equal_by_verdict(engine):
    import pickle
    from dataclasses import FrozenInstanceError

    signal = Signal.from_record(random_records(1, seed=1)[0])
    one, two = engine.decide(signal, equity=10_000), engine.decide(signal, equity=10_000)
    assert one == two and hash(one) == hash(two) and one.outcomes == two.outcomes
    with pytest.raises(FrozenInstanceError):
        one.approved = not one.approved  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(one))
    assert again == one and all(map(same, again.outcomes, one.outcomes))
    assert again.quantity == one.quantity and again.elapsed_us == one.elapsed_us
