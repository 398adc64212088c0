"""The layout keeps itself: ruff clean, the layer contracts of pyproject.toml kept, and mypy with no
error in the decision and trading layers and no more than the recorded baseline elsewhere (the
baseline in tests/mypy_baseline.txt only shrinks: lower it when you fix some)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

BIN = Path(sys.executable).parent
STRICT = ("rulekit/decision/", "rulekit/trading/")


def run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    done = run(sys.executable, "-m", "ruff", "check", ".")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_core_never_imports_the_edges_and_layers_follow_the_data_path():
    done = run(str(BIN / "lint-imports"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr


def test_mypy_finds_no_error_in_decision_and_trading_and_no_new_one_elsewhere():
    done = run(sys.executable, "-m", "mypy", "rulekit", "audit", "plugins", "cli.py")
    errors = [line for line in done.stdout.splitlines() if re.match(r"^[^:]+:\d+: error:", line)]
    strict = [line for line in errors if line.startswith(STRICT)]
    assert not strict, "\n".join(strict)
    baseline = int((ROOT / "tests" / "mypy_baseline.txt").read_text().split()[0])
    assert len(errors) <= baseline, "\n".join(errors)
