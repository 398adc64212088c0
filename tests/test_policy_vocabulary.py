"""Enumerated values (consensus types, sides, symbols, atr_method, ...) are checked against their
vocabulary at load, in params, overrides and rule literals; RM_ lists take YAML/JSON flow lists and
comma lists; unknown names get a did-you-mean; "off" is spelt `off` (or null), never 0.
"""
from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest
from conftest import DEFAULT_POLICY, golden

from rulekit.decision.engine import Engine
from rulekit.errors import PolicyError
from rulekit.model import Signal
from rulekit.policy.loader import load_policy
from rulekit.trading.lifecycle import open_trade

DEFAULT_TEXT = DEFAULT_POLICY.read_text()
T0 = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


def edited(old: str, new: str) -> str:
    assert old in DEFAULT_TEXT, old
    return DEFAULT_TEXT.replace(old, new, 1)


def line_of(text: str, fragment: str) -> int:
    return text[:text.index(fragment)].count("\n") + 1


def load(tmp_path, text: str = DEFAULT_TEXT, environ=None):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return load_policy(path, environ or {})


def problems(tmp_path, text: str = DEFAULT_TEXT, environ=None) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load(tmp_path, text, environ)
    return str(caught.value).splitlines()


@pytest.mark.parametrize("value", ["[UNANIMOUS, STRONG]", '["UNANIMOUS", "STRONG"]',
                                   "UNANIMOUS,STRONG", " UNANIMOUS , STRONG "])
def test_list_override_accepts_flow_lists_and_comma_lists(tmp_path, value):
    policy = load(tmp_path, environ={"RM_MIN_CONSENSUS_TYPES": value})
    assert policy.params["min_consensus_types"].value == ("UNANIMOUS", "STRONG")


@pytest.mark.parametrize("value", ["[UNANIMOUS, STRONG", "[UNANIMOUS, [STRONG]]", "[1, 2]",
                                   "UNANIMOUS,,STRONG"])
def test_malformed_list_override_is_refused(tmp_path, value):
    [message] = problems(tmp_path, environ={"RM_MIN_CONSENSUS_TYPES": value})
    assert "RM_MIN_CONSENSUS_TYPES=" in message and "[UNANIMOUS, STRONG]" in message


def test_misspelt_consensus_in_a_list_default_is_refused_at_its_line(tmp_path):
    text = edited("default: [UNANIMOUS, STRONG]", "default: [UNANIMOUS, STORNG]")
    [message] = problems(tmp_path, text)
    assert f"policy.yaml:{line_of(text, 'default: [UNANIMOUS, STORNG]')}:" in message
    assert "'STORNG' is not a consensus" in message and "did you mean 'STRONG'" in message


def test_lower_case_consensus_in_a_param_is_refused(tmp_path):
    text = edited("default: [UNANIMOUS, STRONG]", "default: [unanimous, STRONG]")
    [message] = problems(tmp_path, text)
    assert "'unanimous' is not a consensus" in message and "did you mean 'UNANIMOUS'" in message


def test_misspelt_consensus_in_an_override_list_is_refused(tmp_path):
    [message] = problems(tmp_path, environ={"RM_MIN_CONSENSUS_TYPES": "[UNANIMOUS, STORNG]"})
    assert "RM_MIN_CONSENSUS_TYPES" in message and "'STORNG' is not a consensus" in message


@pytest.mark.parametrize("old, new, complaint", [
    ("consensus == 'UNANIMOUS'", "consensus == 'STORNG'", "'STORNG' is not a consensus"),
    ("consensus == 'UNANIMOUS'", "consensus == 'unanimous'", "did you mean 'UNANIMOUS'"),
    ("consensus == 'UNANIMOUS'", "side != 'LONGG'", "'LONGG' is not a side"),
    ("consensus == 'UNANIMOUS'", "symbol == 'BTCUSD'", "'BTCUSD' is not a symbol"),
])
def test_misspelt_word_compared_with_an_enumerated_input_is_refused(tmp_path, old, new,
                                                                    complaint):
    text = edited(old, new)
    [message] = problems(tmp_path, text)
    assert complaint in message
    assert f"policy.yaml:{line_of(text, new)}:" in message and "high_quality" in message


def test_enumerated_engine_param_override_is_checked(tmp_path):
    [message] = problems(tmp_path, environ={"RM_ATR_METHOD": "Wilder"})
    assert "RM_ATR_METHOD" in message and "'Wilder' is not one of ['wilder', 'sma']" in message


def test_misspelt_environment_override_suggests_the_param(tmp_path):
    [message] = problems(tmp_path, environ={"RM_RISK_PER_TRADE": "0.5"})
    assert "did you mean RM_RISK_PER_TRADE_PCT?" in message


def test_unknown_name_in_a_rule_suggests_the_closest(tmp_path):
    text = edited("rule: confidence >= (volatile", "rule: confidance >= (volatile")
    [message] = problems(tmp_path, text)
    assert "unknown name 'confidance' (did you mean 'confidence'?)" in message


def test_unknown_key_suggests_the_closest(tmp_path):
    text = edited("    default: 0.70\n", "    defualt: 0.70\n")
    assert any("unknown key 'defualt' (did you mean 'default'?)" in m
               for m in problems(tmp_path, text))


def test_time_exit_hours_zero_is_refused_pointing_at_off(tmp_path):
    text = edited("    default: 24\n", "    default: 0\n")
    [message] = problems(tmp_path, text)
    assert f"policy.yaml:{line_of(text, '    default: 0' + chr(10))}:" in message
    assert "or off for no time exit (0 would close every trade at its first bar)" in message
    [message] = problems(tmp_path, environ={"RM_TIME_EXIT_HOURS": "0"})
    assert "RM_TIME_EXIT_HOURS 0.0" in message


@pytest.mark.parametrize("spelling", ["off", "null", "~", "OFF"])
def test_time_exit_off_never_closes_a_flat_trade(tmp_path, spelling):
    policy = load(tmp_path, edited("    default: 24\n", f"    default: {spelling}\n"))
    assert policy.params["time_exit_hours"].value is None
    assert policy.constants()["time_exit_hours"] == math.inf
    engine = Engine(policy)
    decision = engine.decide(Signal.from_record(golden()), equity=10_000)
    assert decision.approved and decision.value("time_exit_seconds") == math.inf
    units, scale, _, _ = engine.markets["BTCUSDT"]
    trade = open_trade("t1", "BTCUSDT", "LONG", decision, T0, (units, scale))
    for n in range(1, 48 * 12):  # two days of flat 5-minute bars
        assert trade.on_bar(T0 + n * 300, 50_000, 50_100, 49_900, 50_000) == []
    assert trade.is_open


def test_time_exit_off_from_the_environment(tmp_path):
    policy = load(tmp_path, environ={"RM_TIME_EXIT_HOURS": "off"})
    assert policy.params["time_exit_hours"].value is None
    assert policy.params["time_exit_hours"].source == "RM_TIME_EXIT_HOURS"


def test_a_param_that_cannot_be_switched_off_refuses_off(tmp_path):
    text = edited("    default: 0.70\n", "    default: off\n")
    [message] = problems(tmp_path, text)
    assert "param 'min_confidence': off is not a value of this param" in message
    [message] = problems(tmp_path, environ={"RM_FEE_PCT": "off"})
    assert "RM_FEE_PCT='off'" in message
