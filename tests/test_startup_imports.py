"""Short commands start fast: `rulekit --help` and `rulekit validate` load none of the heavy
modules only other commands need (checked in a fresh interpreter, not timed)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import DEFAULT_POLICY, ROOT

HEAVY = ("ccxt", "duckdb", "rich", "pyarrow")
PROBE = """
import json, sys
sys.argv = ["rulekit", *sys.argv[1:]]
import cli
try:
    cli.main()
except SystemExit:
    pass
print(json.dumps(sorted(m.split(".")[0] for m in sys.modules)), file=sys.stderr)
"""


def loaded_modules(*args) -> set[str]:
    result = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    return set(json.loads(result.stderr.strip().splitlines()[-1]))


@pytest.mark.parametrize("args", [("--help",), ("validate", DEFAULT_POLICY), ("evaluate", "--help")])
def test_short_commands_import_no_heavy_module(args):
    loaded = loaded_modules(*args)
    assert "click" in loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


def test_help_does_not_even_import_numpy():
    assert "numpy" not in loaded_modules("--help")
