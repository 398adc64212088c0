"""The policy file is the whole truth: every param the engine reads outside the policy's own
expressions is either required (missing = refused at load, with its line) or has its default in one
place, the schema; `rulekit validate --effective` shows every param in force and where it came from.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DEFAULT_POLICY, ROOT

import cli
from rulekit.errors import PolicyError
from rulekit.policy.loader import SCHEMA_DEFAULT, engine_params, load_policy

DEFAULT_TEXT = DEFAULT_POLICY.read_text()


def without_params(*names: str) -> str:
    """The default policy with the params ``names`` (and the rules reading them) taken out."""
    text = DEFAULT_TEXT
    for name in names:
        text = re.sub(rf"\n  {name}:\n(    .*\n|      .*\n)*", "\n", text)
    if "circuit_breaker_loss_pct" in names:
        text = text.replace("and breaker_drawdown_pct < circuit_breaker_loss_pct", "")
    return text


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def problems(path: Path, environ=None) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy(path, environ or {})
    return str(caught.value).splitlines()


def params_line(text: str) -> int:
    """The line a problem with the params mapping points at: where the mapping starts."""
    after = text.index("params:\n")
    first = min(text.index(f"\n  {c}", after) for c in "abcdefghijklmnopqrstuvwxyz"
                if f"\n  {c}" in text[after:])
    return text[:first].count("\n") + 2


DEFAULTED = sorted(name for name, entry in engine_params().items() if "default" in entry)
REQUIRED = sorted(name for name, entry in engine_params().items() if "default" not in entry)


def test_engine_reads_breaker_and_spread_params_that_are_required():
    assert REQUIRED == ["assumed_spread_bps", "circuit_breaker_loss_pct",
                        "circuit_breaker_pause_hours"]


@pytest.mark.parametrize("name", REQUIRED)
def test_policy_without_a_required_engine_param_is_refused_at_load_with_its_line(tmp_path, name):
    text = without_params(name)
    assert f"  {name}:" not in text
    [message] = problems(write(tmp_path, text))
    assert message.startswith(f"{tmp_path / 'policy.yaml'}:{params_line(text)}:")
    assert f"missing param '{name}', which the engine reads and which has no default" in message


def test_policy_without_circuit_breaker_params_fails_validate_not_backtest(tmp_path):
    path = write(tmp_path, without_params("circuit_breaker_loss_pct", "circuit_breaker_pause_hours"))
    result = CliRunner().invoke(cli.main, ["validate", str(path)])
    assert result.exit_code == 1 and result.exception is None or isinstance(result.exception,
                                                                             SystemExit)
    assert result.output.count("missing param 'circuit_breaker_") == 2


def test_engine_params_left_out_take_their_schema_default(tmp_path):
    policy = load_policy(write(tmp_path, without_params(*DEFAULTED)), {})
    for name in DEFAULTED:
        param = policy.params[name]
        assert param.source == SCHEMA_DEFAULT
        assert param.value == engine_params()[name]["default"]["default"]
    assert policy.params["time_exit_hours"].value == 24 and policy.params["fee_pct"].value == 0
    assert policy.params["atr_method"].value == "wilder"
    # every engine param is in force, so no engine code needs a fallback of its own
    assert set(engine_params()) <= set(policy.constants())


def test_no_engine_module_reads_a_param_with_a_default_of_its_own():
    names = "|".join(engine_params())
    fallback = re.compile(rf"""\.get\(\s*["']({names})["']\s*,""")
    offenders = [f"{path.relative_to(ROOT)}:{number}"
                 for path in (ROOT / "rulekit").rglob("*.py")
                 for number, line in enumerate(path.read_text().splitlines(), 1)
                 if fallback.search(line)]
    assert offenders == []
    vocabulary = (ROOT / "rulekit" / "policy" / "vocabulary.py").read_text()
    assert "DEFAULT_PARAMS" not in vocabulary


@pytest.mark.parametrize("name, spec, complaint", [
    ("fee_pct", "    type: float\n    default: 100\n", "fee_pct': default 100.0: 100.0 is greater "
                                                       "than or equal to the maximum of 100"),
    ("partial_tp_fraction", "    type: float\n    default: 1.5\n", "1.5 is greater than the maximum"),
    ("atr_period", "    type: float\n    default: 14\n", "atr_period.type: 'int' was expected"),
    ("atr_method", "    type: str\n    default: wildr\n", "'wildr' is not one of"),
])
def test_engine_param_outside_what_the_engine_takes_is_refused_at_load(tmp_path, name, spec,
                                                                       complaint):
    text = without_params(name).replace("params:\n", f"params:\n  {name}:\n{spec}", 1)
    [message] = problems(write(tmp_path, text))
    assert complaint in message, message
    assert f":{params_line(text) + 1}:" in message or f":{params_line(text) + 2}:" in message


def test_override_outside_what_the_engine_takes_is_refused(tmp_path):
    path = write(tmp_path, without_params("partial_tp_fraction"))
    [message] = problems(path, {"RM_PARTIAL_TP_FRACTION": "1.5"})
    assert "RM_PARTIAL_TP_FRACTION 1.5: 1.5 is greater than the maximum of 1" in message


def test_validate_effective_prints_every_param_its_value_and_where_it_came_from(tmp_path):
    text = without_params("fee_pct")
    path = write(tmp_path, text)
    result = CliRunner().invoke(cli.main, ["validate", "--effective", str(path)],
                                env={"RM_RISK_PER_TRADE_PCT": "0.5"})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[1:] for line in result.output.splitlines()[1:]
            if not line.startswith("  override")}
    policy = load_policy(path, {"RM_RISK_PER_TRADE_PCT": "0.5"})
    assert set(rows) == set(policy.params)
    leverage_line = text[:text.index("    default: 3.0", text.index("max_leverage:"))].count("\n")
    consensus_line = text[:text.index("    default: [UNANIMOUS, STRONG]")].count("\n")
    assert rows["risk_per_trade_pct"] == ["0.5", "RM_RISK_PER_TRADE_PCT"]
    assert rows["fee_pct"] == ["0.0", "schema", "default"]
    assert rows["max_leverage"] == ["3.0", f"{path}:{leverage_line + 1}"]
    assert rows["min_consensus_types"] == ["[UNANIMOUS,", "STRONG]", f"{path}:{consensus_line + 1}"]
    assert "  override RM_RISK_PER_TRADE_PCT: risk_per_trade_pct = 0.5 (instead of 1.0)" in (
        result.output.splitlines())
