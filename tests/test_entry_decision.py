"""The entry decision on the default policy, with numbers worked out by hand."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from conftest import DEFAULT_POLICY, golden, golden_short

from rulekit.decision.engine import Engine
from rulekit.model import RiskState, Signal
from rulekit.policy.loader import load_policy

EQUITY = 10_000.0


def decide(engine, record, state=None, equity=EQUITY, now=None):
    return engine.decide(Signal.from_record(record), state=state, equity=equity, now=now)


def test_golden_long_is_approved_with_the_formula_levels(engine):
    # risk 1% of 10,000 = 100; stop distance 1.5 * 1,500 = 2,250; 100 / 2,250 = 0.04444...
    # rounded DOWN to the 0.0001 step = 0.0444. Stop 50,000 - 2,250 = 47,750 (the design's
    # example log says 48,500: the formula wins). Target 50,000 + 3.75 * 1,500 = 55,625.
    d = decide(engine, golden())
    assert d.approved and d.reason is None
    assert d.risk_amount == pytest.approx(100.0)
    assert d.quantity == 0.0444
    assert d.notional == pytest.approx(2_220.0)
    assert d.leverage == pytest.approx(0.222)
    assert d.risk_at_stop == pytest.approx(99.9)
    assert d.stop_loss == 47_750.0
    assert d.take_profit == 55_625.0
    assert d.breakeven_trigger == 52_250.0   # +1 R
    assert d.partial_tp_price == 54_500.0    # +2 R
    assert d.reward_risk == pytest.approx(2.5)


def test_golden_short_mirrors_the_long(engine):
    d = decide(engine, golden_short())
    assert d.approved
    assert d.quantity == 0.0444
    assert d.stop_loss == 52_250.0
    assert d.take_profit == 44_375.0
    assert d.breakeven_trigger == 47_750.0
    assert d.partial_tp_price == 45_500.0
    assert d.reward_risk == pytest.approx(2.5)


def test_decision_carries_policy_identity(engine):
    d = decide(engine, golden())
    assert (d.policy_name, d.policy_version) == ("default", 3)
    assert d.policy_hash == engine.policy.hash and len(d.policy_hash) == 64


def test_confidence_at_threshold_passes_and_just_below_rejects(engine):
    passed = decide(engine, golden(confidence=0.70))
    assert passed.approved
    # 0.70 < 0.75 is low quality: risk x0.5 = 50; 50 / 2,250 = 0.02222 -> 0.0222
    assert passed.risk_amount == pytest.approx(50.0)
    assert passed.quantity == 0.0222
    rejected = decide(engine, golden(confidence=0.69))
    assert not rejected.approved and rejected.reason == "min_confidence"


def test_volatile_market_needs_080_confidence(engine):
    # ATR 2,250 at 50,000 is 4.5% of price: above volatile_atr_pct 4%, below max_atr_pct 5%.
    assert decide(engine, golden(atr=2_250, confidence=0.79)).reason == "min_confidence"
    assert decide(engine, golden(atr=2_250, confidence=0.80)).approved


def test_golden_example_at_three_percent_atr_is_not_volatile(engine):
    assert decide(engine, golden(confidence=0.75)).approved


@pytest.mark.parametrize("consensus", ["WEAK", "SPLIT"])
def test_weak_and_split_consensus_reject(engine, consensus):
    d = decide(engine, golden(consensus=consensus, confidence=0.95))
    assert not d.approved and d.reason == "min_consensus"


def test_long_below_ema_rejects_and_short_above_ema_rejects(engine):
    assert decide(engine, golden(ema_200=51_000)).reason == "trend_alignment"
    assert decide(engine, golden_short(ema_200=49_000)).reason == "trend_alignment"


def test_atr_six_percent_of_price_rejects(engine):
    assert decide(engine, golden(atr=3_000, confidence=0.95)).reason == "max_volatility"


def test_low_volume_and_wide_spread_reject(engine):
    assert decide(engine, golden(volume_24h=999_999)).reason == "min_volume"
    assert decide(engine, golden(spread_bps=10.5)).reason == "max_spread"


def test_high_quality_signal_risks_one_and_a_half_percent(engine):
    # UNANIMOUS and 0.85: risk 150; 150 / 2,250 = 0.0666.. -> 0.0666
    d = decide(engine, golden(consensus="UNANIMOUS", confidence=0.85))
    assert d.risk_amount == pytest.approx(150.0)
    assert d.quantity == 0.0666


@pytest.mark.parametrize("field, value, reason", [
    ("atr", float("nan"), "invalid_atr"),
    ("atr", "NaN", "invalid_atr"),
    ("atr", None, "invalid_atr"),
    ("atr", 0, "invalid_atr"),
    ("atr", -5, "invalid_atr"),
    ("atr", float("inf"), "invalid_atr"),
    ("price", 0, "invalid_price"),
    ("price", -50_000, "invalid_price"),
    ("price", "fifty", "invalid_price"),
    ("ema_200", float("nan"), "invalid_ema_200"),
    ("volume_24h", -1, "invalid_volume_24h"),
    ("spread_bps", None, "invalid_spread_bps"),
    ("confidence", 1.5, "invalid_confidence"),
    ("confidence", "high", "invalid_confidence"),
    ("side", "BUY", "invalid_side"),
    ("consensus", "MAYBE", "invalid_consensus"),
    ("symbol", "DOGEUSDT", "unknown_symbol"),
    ("symbol", None, "unknown_symbol"),
])
def test_bad_input_is_a_named_rejection_never_an_approval(engine, field, value, reason):
    d = decide(engine, golden(**{field: value}))
    assert not d.approved
    assert d.reason == reason
    assert d.quantity is None and d.stop_loss is None


def test_missing_equity_rejects(engine):
    assert decide(engine, golden(), equity=None).reason == "invalid_equity"
    assert decide(engine, golden(equity=-1)).reason == "invalid_equity"


def test_signal_equity_overrides_the_default(engine):
    d = decide(engine, golden(equity=20_000))
    assert d.risk_amount == pytest.approx(200.0)
    assert d.quantity == 0.0888


def test_malformed_signal_rejects(engine):
    d = engine.decide(Signal.malformed({"line": 3, "text": "{not json"}), equity=EQUITY)
    assert d.reason == "malformed_signal"


def test_stale_market_data_rejects():
    engine = Engine(load_policy(DEFAULT_POLICY))
    t = datetime(2026, 1, 5, 12, tzinfo=UTC)
    fresh = golden(timestamp=t.isoformat(), market_timestamp=(t - timedelta(seconds=60)).isoformat())
    stale = golden(timestamp=t.isoformat(), market_timestamp=(t - timedelta(seconds=61)).isoformat())
    assert decide(engine, fresh).approved
    assert decide(engine, stale).reason == "stale_market_data"


def test_daily_drawdown_limit_rejects(engine):
    state = RiskState(equity=9_700, day_start_equity=10_000, week_start_equity=10_000,
                      peak_equity=10_000, breaker_reference_equity=10_000)
    assert decide(engine, golden(), state=state, equity=None).reason == "daily_drawdown"


def test_risk_state_without_a_breaker_reference_is_refused(engine):
    """A hand-built account row that leaves a reference equity unknown is not guessed at."""
    state = RiskState(equity=9_700, day_start_equity=10_000, week_start_equity=10_000,
                      peak_equity=10_000)
    assert decide(engine, golden(), state=state, equity=None).reason == "invalid_risk_state"


def test_weekly_drawdown_limit_rejects(engine):
    state = RiskState(equity=9_000, day_start_equity=9_000, week_start_equity=10_000,
                      peak_equity=9_000, breaker_reference_equity=9_000)
    assert decide(engine, golden(), state=state, equity=None).reason == "weekly_drawdown"


def test_max_concurrent_trades_rejects_the_fifth(engine):
    state = RiskState.fresh(EQUITY)
    four = RiskState(**{**_fields(state), "open_trades": 4})
    three = RiskState(**{**_fields(state), "open_trades": 3})
    assert decide(engine, golden(), state=four).reason == "max_concurrent_trades"
    assert decide(engine, golden(), state=three).approved


def test_exposure_cap_rejects_when_full_and_shrinks_when_nearly_full(engine):
    full = RiskState(**{**_fields(RiskState.fresh(EQUITY)), "open_exposure": 8_000})
    assert decide(engine, golden(), state=full).reason == "max_exposure"
    # 7,000 open: headroom 8,000 - 7,000 = 1,000 notional -> 1,000 / 50,000 = 0.02 BTC, not 0.0444
    nearly = RiskState(**{**_fields(RiskState.fresh(EQUITY)), "open_exposure": 7_000})
    d = decide(engine, golden(), state=nearly)
    assert d.approved and d.quantity == 0.02


def test_circuit_breaker_pause_rejects_until_it_ends(engine):
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    state = RiskState.fresh(EQUITY)._replace(
        circuit_breaker_until=(now + timedelta(hours=4)).timestamp())
    assert decide(engine, golden(), state=state, now=now).reason == "circuit_breaker"
    later = now + timedelta(hours=4)
    assert decide(engine, golden(), state=state, now=later).approved


def test_losing_streak_and_recovery_multiply(engine):
    # 3 losses: x0.5. 2% below peak (but inside the 3% daily limit): x0.5. Both: x0.25.
    base = _fields(RiskState.fresh(EQUITY))
    streak = RiskState(**{**base, "consecutive_losses": 3})
    assert decide(engine, golden(), state=streak).risk_amount == pytest.approx(50.0)
    recovery = RiskState(**{**base, "equity": 9_800, "day_start_equity": 9_800,
                            "week_start_equity": 9_800})
    d = decide(engine, golden(), state=recovery, equity=None)
    assert d.risk_amount == pytest.approx(9_800 * 0.01 * 0.5)
    both = RiskState(**{**_fields(recovery), "consecutive_losses": 3})
    assert decide(engine, golden(), state=both, equity=None).risk_amount == pytest.approx(
        9_800 * 0.01 * 0.25)


def test_quantity_below_min_notional_rejects(engine):
    # Equity 100: risk 1, 1 / 2,250 = 0.000444 -> 0.0004 BTC = 20 USDT notional, passes 10 min;
    # equity 40: 0.4 / 2,250 = 0.000177 -> 0.0001 BTC = 5 USDT < 10: rejected, never rounded up.
    assert decide(engine, golden(), equity=100).quantity == 0.0004
    assert decide(engine, golden(), equity=40).reason == "below_min_notional"
    assert decide(engine, golden(), equity=10).reason == "below_min_amount"


def test_trace_lists_every_rule_with_its_outcome(engine):
    d = decide(engine, golden(consensus="WEAK", ema_200=51_000))
    checks = {line.rule: line.passed for line in d.trace if line.passed is not None}
    assert checks["min_consensus"] is False
    assert checks["trend_alignment"] is False   # evaluated and recorded even after the first fail
    assert checks["min_confidence"] is True
    assert d.reason == "min_consensus"
    values = {line.rule: line.value for line in d.trace if line.passed is None}
    assert values["atr_pct"] == pytest.approx(3.0)


def test_environment_override_moves_the_stop(monkeypatch):
    monkeypatch.setenv("RM_SL_MULTIPLIER", "2")
    engine = Engine(load_policy(DEFAULT_POLICY))
    d = decide(engine, golden())
    # stop distance 2 * 1,500 = 3,000: stop 47,000; 100 / 3,000 = 0.0333..
    assert d.stop_loss == 47_000.0
    assert d.quantity == 0.0333
    assert d.take_profit == 55_625.0


def _fields(state: RiskState) -> dict:
    return state._asdict()
