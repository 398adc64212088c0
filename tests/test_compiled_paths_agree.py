"""The generated scalar function, the numpy batch form and simpleeval itself give the same answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import golden

from rulekit.decision.engine import SignalColumns
from rulekit.decision.quantity import floor_to_step
from rulekit.model import RiskState, Signal
from rulekit.policy.expressions import reference_evaluate

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", ""]
SIDES = ["LONG", "SHORT", "BUY", ""]
CONSENSUS = ["UNANIMOUS", "STRONG", "WEAK", "SPLIT", "NONE"]


def random_records(count: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    records = []
    for _ in range(count):
        price = float(rng.choice([50_000.0, 3_000.0, 200.0, 2.0])) * float(rng.uniform(0.8, 1.2))
        side = str(rng.choice(SIDES, p=[0.45, 0.45, 0.05, 0.05]))
        trend = (1 if side == "LONG" else -1) * (-1 if rng.random() < 0.1 else 1)
        record = golden(
            symbol=str(rng.choice(SYMBOLS, p=[0.3, 0.3, 0.2, 0.1, 0.05, 0.05])), side=side,
            consensus=str(rng.choice(CONSENSUS, p=[0.4, 0.4, 0.1, 0.05, 0.05])),
            confidence=float(rng.uniform(0.6, 1.02)),
            price=price, atr=price * float(rng.uniform(0.001, 0.055)),
            ema_200=price * (1 - trend * float(rng.uniform(0.001, 0.1))),
            volume_24h=float(rng.choice([5e5, 5e6, 5e9], p=[0.1, 0.3, 0.6])),
            spread_bps=float(rng.uniform(0, 11)),
            equity=float(rng.choice([40.0, 1_000.0, 10_000.0, 1e6])))
        if rng.random() < 0.1:
            record[str(rng.choice(["price", "atr", "ema_200", "equity"]))] = float(
                rng.choice([0.0, -1.0, math.nan, math.inf]))
        records.append(record)
    return records


def same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12, abs=1e-12)
    return a == b


@pytest.mark.parametrize("state", [None, RiskState(equity=9_750, day_start_equity=10_000,
                                                   week_start_equity=10_500, peak_equity=10_600,
                                                   breaker_reference_equity=10_600,
                                                   consecutive_losses=3, open_trades=2,
                                                   open_exposure=3_000)])
def test_scalar_and_batch_decisions_are_identical(engine, state):
    signals = [Signal.from_record(r) for r in random_records(2_000, seed=7)]
    batch = engine.decide_batch(SignalColumns.from_signals(signals), state=state, equity=10_000)
    approved = 0
    for row, signal in enumerate(signals):
        one = engine.decide(signal, state=state, equity=10_000)
        other = batch.decision(row)
        assert one.approved == other.approved and one.reason == other.reason, row
        assert all(same(x, y) for x, y in zip(one.outcomes, other.outcomes, strict=False)), row
        approved += one.approved
    assert 100 < approved < 1_800  # the sample exercises both outcomes


def test_compiled_rules_equal_simpleeval_reference(engine):
    """Every step's compiled value equals simpleeval evaluating the policy text on the same names."""
    program = engine.program
    for record in random_records(300, seed=11):
        decision = engine.decide(Signal.from_record(record), equity=10_000)
        names = dict(engine.policy.constants())
        names.update(_inputs(engine, record))
        checks = iter(decision.outcomes[:len(program.check_steps)])
        values = iter(decision.outcomes[len(program.check_steps):])
        for step in engine.policy.steps:
            expected = reference_evaluate(step.expression, names, {"floor_to_step": floor_to_step})
            got = next(checks) if step.is_check else next(values)
            if not step.is_check:
                names[step.name] = got
            assert same(got, expected) if not isinstance(expected, bool) else bool(got) == expected, (
                step.name, got, expected)


def _inputs(engine, record) -> dict:
    signal = Signal.from_record(record)
    equity = signal.equity if signal.equity == signal.equity else 10_000.0
    units, scale, min_notional, min_amount = engine.markets.get(
        signal.symbol, (math.nan,) * 4)
    return dict(well_formed=True, symbol=signal.symbol, side=signal.side,
                consensus=signal.consensus, confidence=signal.confidence,
                strength=signal.strength, price=signal.price, atr=signal.atr,
                ema_200=signal.ema_200, volume_24h=signal.volume_24h,
                spread_bps=signal.spread_bps, market_data_age_seconds=0.0,
                history_bars=math.nan, equity=equity,
                day_start_equity=equity, week_start_equity=equity, peak_equity=equity,
                breaker_reference_equity=equity,
                consecutive_losses=0.0, open_trades=0.0, open_exposure=0.0,
                circuit_breaker_active=False, symbol_trade_open=False,
                amount_step_units=units, amount_step_scale=scale,
                min_notional=min_notional, min_amount=min_amount)
