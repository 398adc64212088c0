"""What `evaluate --bars` prints is what it committed: when its last bars bring no event, the
account's clock, equity and peak printed at the end are the ones `rulekit state` reads back."""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import scenario
from conftest import DEFAULT_POLICY, ROOT
from scenario import fee_free  # noqa: F401  (autouse: the scenario is worked before fees)


def rulekit(*args, cwd):
    done = subprocess.run([sys.executable, str(ROOT / "cli.py"), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_summary_evaluate_bars_prints_is_the_state_it_committed(tmp_path):
    signals = scenario.write_signals(tmp_path / "signals.jsonl", "AB")
    # two quiet days of bars after the last event: the clock and the marks move, nothing happens
    bars = scenario.write_bars(tmp_path / "BTCUSDT.csv", scenario.START,
                               scenario.START + timedelta(days=3))
    db = tmp_path / "a.duckdb"
    printed = rulekit("evaluate", "--policy", DEFAULT_POLICY, "--equity", 10_000, "--bars", bars,
                      "--audit", db, signals, cwd=tmp_path)
    state = json.loads(rulekit("state", "--audit", db, "--json", cwd=tmp_path))
    assert f"as of {state['as_of']}" in printed
    assert f"equity {state['equity']:,.2f}" in printed
    assert state["as_of"] > (scenario.START + timedelta(days=2, hours=23)).isoformat()
