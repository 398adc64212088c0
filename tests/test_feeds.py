"""A signals file followed as it grows; a policy file whose new versions are checked before use."""
from __future__ import annotations

import json
import os

from conftest import DEFAULT_POLICY, golden

from rulekit.decision.engine import Engine
from rulekit.inputs.feeds import PolicyWatcher, SignalFollower
from rulekit.policy.loader import load_policy


def test_a_followed_file_yields_each_complete_line_once(tmp_path):
    path = tmp_path / "signals.jsonl"
    follower = SignalFollower(path)
    assert follower.poll() == []                      # not there yet
    path.write_text(json.dumps(golden(signal_id="a")) + "\n" + '{"signal_id": "b", "sym')
    assert [s.signal_id for s in follower.poll()] == ["a"]   # b is still being written
    with path.open("a") as handle:
        handle.write('bol": "BTCUSDT"}\nnot json\n')
    second = follower.poll()
    assert second[0].signal_id == "b" and second[0].symbol == "BTCUSDT"
    assert not second[1].well_formed                  # kept, to be rejected and audited
    assert follower.poll() == []
    resumed = SignalFollower(path, start_at=follower.offset)
    with path.open("a") as handle:
        handle.write(json.dumps(golden(signal_id="c")) + "\n")
    assert [s.signal_id for s in resumed.poll()] == ["c"]


def test_a_valid_new_policy_version_replaces_the_running_one(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(DEFAULT_POLICY.read_text())
    changes = []
    watcher = PolicyWatcher(path, Engine(load_policy(path)), changes.append)
    assert watcher.poll() is None
    path.write_text(DEFAULT_POLICY.read_text().replace("version: 3", "version: 4")
                    .replace("    default: 0.70\n", "    default: 0.80\n", 1))
    os.utime(path, ns=(1, 10**18))
    change = watcher.poll()
    assert change.problem is None and watcher.engine.policy.version == 4
    assert watcher.engine.policy.params["min_confidence"].value == 0.80 and changes == [change]


def test_a_broken_policy_is_refused_and_the_running_one_stays(tmp_path):
    path = tmp_path / "policy.yaml"
    path.write_text(DEFAULT_POLICY.read_text())
    running = Engine(load_policy(path))
    watcher = PolicyWatcher(path, running)
    path.write_text(DEFAULT_POLICY.read_text().replace("rule: trend_aligned\n",
                                                       "rule: trend_aligned ** 2\n"))
    os.utime(path, ns=(1, 10**18))
    change = watcher.poll()
    assert change.engine is None and watcher.engine is running
    assert "policy.yaml:" in change.problem and "'**' is refused" in change.problem
