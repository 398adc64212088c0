"""A policy is checked completely at load; every problem names file:line:column and the rule."""
from __future__ import annotations

import re

import pytest
from conftest import DEFAULT_POLICY

from rulekit.errors import PolicyError
from rulekit.policy.loader import load_policy

DEFAULT_TEXT = DEFAULT_POLICY.read_text()


def write_policy(tmp_path, text: str, name: str = "policy.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def edited(old: str, new: str) -> str:
    assert old in DEFAULT_TEXT, old
    return DEFAULT_TEXT.replace(old, new, 1)


def line_of(text: str, fragment: str) -> int:
    return text[:text.index(fragment)].count("\n") + 1


def problems(tmp_path, text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy(write_policy(tmp_path, text))
    return str(caught.value).splitlines()


def test_default_policy_loads_with_every_reference_number():
    policy = load_policy(DEFAULT_POLICY)
    values = {name: p.value for name, p in policy.params.items()}
    assert values["min_consensus_types"] == ("UNANIMOUS", "STRONG")
    assert values["min_confidence"] == 0.70 and values["volatile_min_confidence"] == 0.80
    assert values["max_atr_pct"] == 5.0
    assert values["risk_per_trade_pct"] == 1.0
    assert values["high_quality_multiplier"] == 1.5 and values["low_quality_multiplier"] == 0.5
    assert values["sl_multiplier"] == 1.5 and values["tp_multiplier"] == 3.75
    assert values["breakeven_at_r"] == 1.0 and values["partial_tp_at_r"] == 2.0
    assert values["partial_tp_fraction"] == 0.5 and values["time_exit_hours"] == 24
    assert values["max_daily_dd_pct"] == 3.0 and values["max_weekly_dd_pct"] == 10.0
    assert values["max_concurrent_trades"] == 4 and values["max_exposure_pct"] == 80.0
    assert values["losing_streak_length"] == 3 and values["losing_streak_multiplier"] == 0.5
    assert values["recovery_dd_pct"] == 2.0 and values["recovery_multiplier"] == 0.5
    assert values["circuit_breaker_loss_pct"] == 5.0
    assert values["circuit_breaker_pause_hours"] == 4


def test_unknown_name_points_at_its_line(tmp_path):
    text = edited("rule: confidence >= (volatile", "rule: confidance >= (volatile")
    [message] = problems(tmp_path, text)
    line = line_of(text, "confidance")
    assert re.match(rf".*policy\.yaml:{line}:\d+: gate 'min_confidence': unknown name 'confidance'",
                    message)


@pytest.mark.parametrize("expression, complaint", [
    ("atr ** 2 > 1", "'**' is refused"),
    ("atr.__class__ == 1", "attribute access is refused"),
    ("__import__('os') == 1", "unknown function '__import__'"),
    ("__builtins__ == 1", "names starting with '_' are refused"),
    ("(lambda: 1)() == 1", "lambda is refused"),
    ("[x for x in min_consensus_types] == 1", "comprehensions are refused"),
    ("symbol + side == 'x'", "text arithmetic is refused"),
    ("open('x') == 1", "unknown function 'open'"),
    ("import os", "not a single expression"),
    ("atr", "must be a bool"),
    ("symbol[0] == 'B'", "indexing is refused"),
])
def test_unsafe_or_ill_typed_expressions_are_refused_at_load(tmp_path, expression, complaint):
    text = edited("rule: atr_pct <= max_atr_pct", f'rule: "{expression}"')
    [message] = problems(tmp_path, text)
    assert complaint in message
    line = line_of(text, 'rule: "' + expression)
    assert f":{line}:" in message
    assert "gate 'max_volatility'" in message


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    text = edited("rule: spread_bps <= max_spread_bps", "rule: sprad_bps <= max_spread_bps")
    text = text.replace("rule: volume_24h >= min_volume_24h", "rule: volume >= min_volume_24h")
    assert len(problems(tmp_path, text)) == 2


def test_duplicate_rule_id_is_refused(tmp_path):
    text = edited("- id: max_spread", "- id: min_volume")
    [message] = problems(tmp_path, text)
    assert "duplicate rule id 'min_volume'" in message
    second = text.index("- id: min_volume", text.index("- id: min_volume") + 1)
    assert f":{text[:second].count(chr(10)) + 1}:" in message


def test_duplicate_yaml_key_is_refused(tmp_path):
    text = edited("derived:\n", "derived:\n  atr_pct: 1\n")
    assert any("duplicate key 'atr_pct'" in m for m in problems(tmp_path, text))


def test_default_outside_bounds_is_refused(tmp_path):
    text = edited("    default: 0.70\n", "    default: 1.70\n")
    [message] = problems(tmp_path, text)
    assert "param 'min_confidence': default 1.7 is above its max 1" in message


def test_schema_violation_names_the_key(tmp_path):
    text = edited("version: 3", "version: one")
    [message] = problems(tmp_path, text)
    assert message.startswith(f"{tmp_path / 'policy.yaml'}:{line_of(text, 'version: one')}:")
    assert "version" in message


def test_missing_required_exit_is_refused(tmp_path):
    text = edited("  take_profit: entry + direction * atr * tp_multiplier\n", "")
    assert any("take_profit" in m for m in problems(tmp_path, text))


def test_yaml_syntax_error_has_a_position(tmp_path):
    text = edited("gates:\n", "gates:\n  - id: [oops\n")
    [message] = problems(tmp_path, text)
    assert re.search(r"policy\.yaml:\d+:\d+: not valid YAML", message)


def test_formula_may_not_shadow_a_param(tmp_path):
    text = edited("  atr_pct: atr / price * 100", "  min_confidence: atr / price * 100")
    assert any("the name 'min_confidence' is a param" in m for m in problems(tmp_path, text))


def test_environment_override_of_wrong_type_is_an_error(monkeypatch):
    monkeypatch.setenv("RM_MAX_CONCURRENT_TRADES", "four")
    with pytest.raises(PolicyError, match="RM_MAX_CONCURRENT_TRADES='four': expected a whole number"):
        load_policy(DEFAULT_POLICY)


def test_environment_override_out_of_bounds_is_an_error(monkeypatch):
    monkeypatch.setenv("RM_RISK_PER_TRADE_PCT", "50")
    with pytest.raises(PolicyError, match="RM_RISK_PER_TRADE_PCT 50.0 is above its max 5"):
        load_policy(DEFAULT_POLICY)


def test_misspelt_environment_override_is_an_error(monkeypatch):
    monkeypatch.setenv("RM_RISK_PER_TRADE", "0.5")
    with pytest.raises(PolicyError, match="RM_RISK_PER_TRADE is set but the policy has no param"):
        load_policy(DEFAULT_POLICY)


def test_list_override_from_environment(monkeypatch):
    monkeypatch.setenv("RM_MIN_CONSENSUS_TYPES", "UNANIMOUS")
    policy = load_policy(DEFAULT_POLICY)
    assert policy.params["min_consensus_types"].value == ("UNANIMOUS",)
    assert policy.params["min_consensus_types"].source == "RM_MIN_CONSENSUS_TYPES"


def test_hash_ignores_comments_but_covers_overrides(tmp_path, monkeypatch):
    base = load_policy(DEFAULT_POLICY).hash
    commented = write_policy(tmp_path, "# a new comment\n" + DEFAULT_TEXT.replace(
        "Only UNANIMOUS or STRONG ensemble agreement.", "Reworded."))
    assert load_policy(commented).hash == base
    monkeypatch.setenv("RM_MAX_DAILY_DD_PCT", "2.5")
    assert load_policy(DEFAULT_POLICY).hash != base


def test_hash_changes_with_a_rule(tmp_path):
    changed = write_policy(tmp_path, edited("rule: atr_pct <= max_atr_pct",
                                            "rule: atr_pct < max_atr_pct"))
    assert load_policy(changed).hash != load_policy(DEFAULT_POLICY).hash


def test_a_market_written_as_the_exchange_writes_it_is_the_symbol_signals_trade(tmp_path):
    text = edited("  BTCUSDT: {amount_step", "  BTC/USDT: {amount_step")
    policy = load_policy(write_policy(tmp_path, text))
    assert "BTCUSDT" in policy.markets and "BTC/USDT" not in policy.markets
    assert policy.markets["BTCUSDT"].amount_step == 0.0001


def test_two_spellings_of_one_market_are_refused_at_the_second(tmp_path):
    text = edited("  ETHUSDT: {amount_step", "  BTC-USDT: {amount_step: 0.01}\n  ETHUSDT: {amount_step")
    [message] = problems(tmp_path, text)
    assert f":{line_of(text, '  BTC-USDT:')}:" in message
    assert "market 'BTC-USDT' is 'BTCUSDT' again (both are BTCUSDT)" in message
