"""The rulekit command as a user runs it: real processes, real files, the real audit database."""
from __future__ import annotations

import json
import subprocess
import sys

import duckdb
import pytest
from conftest import DEFAULT_POLICY, ROOT, golden, golden_short

EXAMPLE = ROOT / "examples" / "signals.jsonl"
DECISION_KEYS = {"approved", "reason", "trace", "quantity", "notional", "leverage", "risk_amount",
                 "stop_loss", "take_profit", "breakeven_trigger", "partial_tp_price",
                 "policy_name", "policy_version", "policy_hash"}


def rulekit(*args, cwd, stdin=None, env=None):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          input=stdin, capture_output=True, text=True, env=env, timeout=120)


def test_validate_accepts_the_default_policy(tmp_path):
    result = rulekit("validate", DEFAULT_POLICY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK  default v3" in result.stdout


def test_broken_policy_gives_file_line_and_no_traceback(tmp_path):
    broken = tmp_path / "broken.yaml"
    text = DEFAULT_POLICY.read_text().replace("rule: trend_aligned", "rule: trend_aligned ** 2")
    broken.write_text(text)
    line = text[:text.index("trend_aligned ** 2")].count("\n") + 1
    for args in (("validate", broken), ("evaluate", "--policy", broken, EXAMPLE)):
        result = rulekit(*args, cwd=tmp_path)
        assert result.returncode != 0
        assert f"broken.yaml:{line}:" in result.stderr
        assert "'**' is refused" in result.stderr
        assert "Traceback" not in result.stderr


def test_evaluate_json_prints_every_decision_field_and_audits_first(tmp_path):
    audit = tmp_path / "audit.duckdb"
    result = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", "10000", "--json",
                     "--explain", "--audit", audit, EXAMPLE, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 11
    assert all(DECISION_KEYS <= set(line) for line in lines)
    by_id = {line["signal_id"]: line for line in lines}
    assert by_id["golden-long"]["approved"] and by_id["golden-long"]["quantity"] == 0.0444
    assert by_id["golden-long"]["stop_loss"] == 47_750
    assert by_id["golden-short"]["take_profit"] == 44_375
    assert by_id["nan-atr"]["reason"] == "invalid_atr"
    assert by_id["weak-consensus"]["reason"] == "min_consensus"
    assert lines[-1]["reason"] == "malformed_signal"
    with duckdb.connect(str(audit), read_only=True) as db:
        rows = db.execute("SELECT signal_id, approved, reason, quantity, policy_hash, "
                          "len(checks_passed) FROM decisions ORDER BY seq").fetchall()
        checks = db.execute("SELECT count(*) FROM decision_checks WHERE NOT passed AND "
                            "rule = 'invalid_atr'").fetchone()[0]
    assert len(rows) == 11
    assert rows[0][:4] == ("golden-long", True, None, 0.0444)
    assert rows[0][4] == lines[0]["policy_hash"]
    assert rows[-1][2] == "malformed_signal"
    assert checks == 2  # nan-atr, and the malformed line (which has no ATR either)


def test_evaluate_json_is_compact_without_explain(tmp_path):
    explained = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", "10000", "--json",
                        "--explain", "--audit", tmp_path / "a.duckdb", EXAMPLE, cwd=tmp_path)
    compact = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", "10000", "--json",
                      "--audit", tmp_path / "b.duckdb", EXAMPLE, cwd=tmp_path)
    assert compact.returncode == 0, compact.stderr
    full = [json.loads(line) for line in explained.stdout.splitlines()]
    lines = [json.loads(line) for line in compact.stdout.splitlines()]
    assert len(lines) == len(full) == 11
    for short, long in zip(lines, full, strict=True):
        assert "trace" not in short
        assert {k: v for k, v in short.items() if k != "failed"} == {
            k: v for k, v in long.items() if k != "trace"}
    by_id = {line["signal_id"]: line for line in lines}
    assert "failed" not in by_id["golden-long"]
    assert by_id["volatile-079"]["failed"] == {"confidence": 0.79, "is_volatile": True,
                                               "min_confidence": 0.7,
                                               "volatile_min_confidence": 0.8}
    assert by_id["wide-spread"]["failed"] == {"spread_bps": 25.0, "max_spread_bps": 10.0}
    assert lines[-1]["reason"] == "malformed_signal" and lines[-1]["failed"] == {"line": 11}


def test_table_of_a_large_input_shows_the_first_rows_and_the_summary(tmp_path):
    signals = tmp_path / "many.jsonl"
    signals.write_text("".join(json.dumps(golden(signal_id=f"s-{i}")) + "\n" for i in range(120)))
    result = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", "10000", signals,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "s-49 " in result.stdout and "s-50 " not in result.stdout
    assert "... 70 more; use --json" in result.stdout
    assert "120 signals: 120 approved, 0 rejected" in result.stdout


def test_evaluate_reads_csv_from_stdin_with_a_state_file(tmp_path):
    header = "symbol,side,consensus,confidence,price,atr,ema_200,volume_24h,spread_bps"
    row = lambda r: ",".join(str(r[k]) for k in header.split(","))  # noqa: E731
    text = "\n".join([header, row(golden()), row(golden_short())]) + "\n"
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"equity": 9_700, "day_start_equity": 10_000}))
    result = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--state", state, "--json",
                     "--audit", tmp_path / "a.duckdb", "-", cwd=tmp_path, stdin=text)
    assert result.returncode == 0, result.stderr
    reasons = [json.loads(line)["reason"] for line in result.stdout.splitlines()]
    assert reasons == ["daily_drawdown", "daily_drawdown"]


def test_bad_state_file_is_refused_without_traceback(tmp_path):
    state = tmp_path / "state.json"
    state.write_text('{"equity": "lots"}')
    result = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--state", state,
                     "--audit", tmp_path / "a.duckdb", EXAMPLE, cwd=tmp_path)
    assert result.returncode == 2
    assert "state.json: equity must be a finite number" in result.stderr
    assert "Traceback" not in result.stderr


def test_table_output_names_the_reasons(tmp_path):
    result = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", "10000", EXAMPLE,
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "REJECTED invalid_atr" in result.stdout
    assert "11 signals: 3 approved, 8 rejected" in result.stdout
    assert (tmp_path / "rulekit-audit.duckdb").exists()


@pytest.mark.parametrize("value", ["0", "-5", "nan"])
def test_nonsense_equity_option_is_refused(tmp_path, value):
    result = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", value, EXAMPLE,
                     cwd=tmp_path)
    assert result.returncode == 2 and "--equity must be a positive number" in result.stderr
