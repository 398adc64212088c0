"""Every `--json` output is strict JSON: where there is no value (an account that has seen no bar,
a figure that cannot be computed, NaN from SQL) it says null, never NaN or Infinity."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import click
import scenario
from conftest import DEFAULT_POLICY, ROOT
from scenario import fee_free  # noqa: F401  (autouse: the scenario is worked before fees)

import cli
from audit import AuditLog
from audit.risk_store import RiskStore
from rulekit.trading.account import Account


def rulekit(*args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def strict(text: str) -> list:
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines() if line]


def commands_with_json(group: click.Group, prefix: str = "") -> set[str]:
    found = set()
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= commands_with_json(command, f"{prefix}{name} ")
        elif any("--json" in getattr(p, "opts", ()) for p in command.params):
            found.add(f"{prefix}{name}")
    return found


def test_every_json_output_parses_strictly(tmp_path):
    signals = scenario.write_signals(tmp_path / "signals.jsonl")
    bars = scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                               scenario.START + timedelta(days=3))
    fresh = tmp_path / "fresh.duckdb"        # an account that has seen no bar yet
    with AuditLog(fresh) as audit:
        RiskStore(audit).save("setup", Account.new(10_000))
    db = tmp_path / "audit.duckdb"
    runs = {
        "plugins": ["plugins", "--json"],
        "evaluate": ["evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--json",
                     "--audit", tmp_path / "dry.duckdb", ROOT / "examples" / "signals.jsonl"],
        "state": ["state", "--audit", fresh, "--json"],
        "backtest": ["backtest", "--policy", DEFAULT_POLICY, "--data", bars, "--signals",
                     signals, "--audit", db, "--json"],
        "run": ["run", "--policy", DEFAULT_POLICY, "--replay", bars, "--signals-from", signals,
                "--equity", 10_000, "--audit", tmp_path / "run.duckdb", "--json"],
        "test": ["test", ROOT / "policies", "--json"],
        "diff": ["diff", DEFAULT_POLICY, DEFAULT_POLICY, "--json"],
        "audit sql": ["audit", "sql", "SELECT 'nan'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, "
                      "-'inf'::DOUBLE AS minus_inf, now() AS at, 1.5::DECIMAL(4, 2) AS d",
                      "--audit", db, "--json"],
        "audit query": ["audit", "query", "approval_rate_per_day", "--audit", db,
                        "--json"],
        "audit runs": ["audit", "runs", "--audit", db, "--json"],
    }
    outputs = {name: rulekit(*args, cwd=tmp_path) for name, args in runs.items()}
    evaluate_bars = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--bars",
                            bars, "--audit", tmp_path / "bars.duckdb", "--json", signals,
                            cwd=tmp_path)
    run_id = strict(outputs["backtest"].stdout)[0]["run_id"]
    outputs["replay"] = rulekit("replay", "--policy", DEFAULT_POLICY, "--run", run_id,
                                "--audit", db, "--json", cwd=tmp_path)
    assert set(outputs) == commands_with_json(cli.main)  # a new --json command belongs here
    for name, result in [*outputs.items(), ("evaluate --bars", evaluate_bars)]:
        assert result.returncode == 0, (name, result.stderr)
        assert strict(result.stdout), name
    state = strict(outputs["state"].stdout)[0]
    assert state["day_start_equity"] is None and state["week_start_equity"] is None
    assert strict(outputs["audit sql"].stdout)[0] == {
        "nan": None, "inf": None, "minus_inf": None, "d": "1.50",
        "at": strict(outputs["audit sql"].stdout)[0]["at"]}
