"""A paper run killed between two symbols' bars of one open time resumes that whole open time.

Bars of several symbols share open times; a restart resumes after the last open time committed.
Were the first symbol's bar committed on its own, a run killed before the second symbol's bar of
that time would skip it on restart (a lost bar and its fills). The run below is killed (os._exit,
no clean-up, as SIGKILL) exactly there, at the first open time where both symbols' bars have a
trade event, and restarted: its books must be those of a run left alone.
"""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT
from test_soak import books, policy_text, run_alone, run_command

from audit import AuditLog

CRASHING = """
import os, sys
sys.path.insert(0, {root!r})
from rulekit.app import runs

at_time, symbol = float(sys.argv[1]), sys.argv[2]
on_bar = runs.Session.on_bar

def crash_there(self, bar_symbol, at, *rest):
    if bar_symbol == symbol and at == at_time:
        os._exit(9)  # killed: nothing flushed, nothing closed
    return on_bar(self, bar_symbol, at, *rest)

runs.Session.on_bar = crash_there
import cli
sys.argv = ["rulekit", *sys.argv[3:]]
cli.main()
"""


def test_a_run_killed_between_two_symbols_bars_of_one_time_resumes_that_whole_time(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(policy_text(3))
    data, alone = run_alone(tmp_path, policy)
    with AuditLog(alone, read_only=True) as audit:
        # the first open time at which both symbols have a trade event: ETHBTC's bar (the
        # first file's) comes first and has something to commit, XMRBTC's has its own event
        (at,) = audit.db.execute(
            "SELECT min(t) FROM (SELECT epoch(e.occurred_at) AS t FROM trade_events e "
            "JOIN trades USING (trade_id) WHERE symbol = 'ETHBTC' INTERSECT "
            "SELECT epoch(e.occurred_at) FROM trade_events e JOIN trades USING (trade_id) "
            "WHERE symbol = 'XMRBTC')").fetchone()
    assert at is not None

    db = tmp_path / "killed.duckdb"
    command = run_command(policy, db, data, 1000)  # paced: a transaction per open time
    killed = subprocess.run([sys.executable, "-c", CRASHING.format(root=str(ROOT)), str(at),
                             "XMRBTC", *command[2:]], capture_output=True, text=True, timeout=600)
    assert killed.returncode == 9, killed.stderr[-3000:]
    with AuditLog(db, read_only=True) as audit:
        done = audit.db.execute("SELECT count(*) FROM trade_events").fetchone()[0]
    assert done > 0, "the kill came before anything was committed: not the case meant here"

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, got = books(alone), books(db)
    for part in expected:
        assert got[part] == expected[part], f"{part} differ"
