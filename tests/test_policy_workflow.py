"""The risk manager's workflow around a policy: unit tests beside it, and a diff of two versions."""
from __future__ import annotations

import json
import subprocess
import sys

from conftest import DEFAULT_POLICY, ROOT


def rulekit(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_the_default_policy_ships_with_passing_unit_tests(tmp_path):
    result = rulekit("test", ROOT / "policies", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(cases) >= 15 and all(case["passed"] for case in cases)


def write_case(tmp_path, expect: str) -> None:
    (tmp_path / "policy.yaml").write_text(DEFAULT_POLICY.read_text())
    (tmp_path / "policy.tests.yaml").write_text(
        "policy: policy.yaml\n"
        "signal: {symbol: BTCUSDT, side: LONG, consensus: STRONG, confidence: 0.75,\n"
        "         price: 50000, atr: 1500, ema_200: 48000, volume_24h: 2.5e9, spread_bps: 1}\n"
        "cases:\n"
        "  - name: golden\n"
        "    signal: {}\n"
        f"    expect: {expect}\n")


def test_a_failing_case_names_its_line_and_what_differs(tmp_path):
    write_case(tmp_path, "{approved: true, stop_loss: 48500}")
    result = rulekit("test", tmp_path, cwd=tmp_path)
    assert result.returncode == 1
    assert "policy.tests.yaml:5: golden" in result.stdout
    assert "stop_loss: expected 48500, got 47750.0" in result.stdout


def test_a_malformed_tests_file_is_a_user_error_with_its_place(tmp_path):
    write_case(tmp_path, "{no_such_figure: 1}")
    result = rulekit("test", tmp_path, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "policy.tests.yaml:7" in result.stderr and "not a decision figure" in result.stderr


def test_an_expected_reason_the_policy_cannot_give_is_refused_with_a_did_you_mean(tmp_path):
    write_case(tmp_path, "{approved: false, reason: min_confidance}")
    result = rulekit("test", tmp_path, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "policy.tests.yaml:7" in result.stderr
    assert "`min_confidance` is not a reason this policy can give" in result.stderr
    assert "did you mean 'min_confidence'" in result.stderr


def test_diff_lists_params_rules_and_markets_and_a_forgotten_version(tmp_path):
    text = DEFAULT_POLICY.read_text()
    changed = (text.replace("    default: 0.70\n", "    default: 0.75\n", 1)
               .replace("    rule: trend_aligned\n", "    rule: trend_aligned and atr_pct > 0.1\n")
               .replace("  XRPUSDT: {amount_step: 0.1, min_notional: 5}\n", ""))
    (tmp_path / "new.yaml").write_text(changed)
    result = rulekit("diff", DEFAULT_POLICY, tmp_path / "new.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "~ param min_confidence: 0.7 -> 0.75" in lines
    assert "~ gate trend_alignment: trend_aligned -> trend_aligned and atr_pct > 0.1" in lines
    assert any(line.startswith("- market XRPUSDT") for line in lines)
    assert lines[-1] == "warning: the content changed but the version was not raised"
    same = rulekit("diff", DEFAULT_POLICY, DEFAULT_POLICY, "--json", cwd=tmp_path)
    assert json.loads(same.stdout)["changes"] == []
