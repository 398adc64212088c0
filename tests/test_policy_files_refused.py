"""A policy file of any content is refused safely: one line naming the file (and the line where
there is one), no traceback, bounded time and memory; the running policy watcher refuses it too.

Each file is validated in a child process that reports its peak memory; the subprocess timeout is
the bound on time (no timing assertion).
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import DEFAULT_POLICY, ROOT

from rulekit.decision.engine import Engine
from rulekit.inputs.feeds import PolicyWatcher
from rulekit.policy.loader import load_policy

DEFAULT_TEXT = DEFAULT_POLICY.read_text()
MEMORY_LIMIT_MB = 200

# Runs `rulekit validate FILE` in this process under a 2 GB address-space cap (so a file that does
# blow up cannot take the machine with it) and prints the peak resident memory last.
CHILD = f"""
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
sys.path.insert(0, {str(ROOT)!r})
import cli
code = 0
try:
    cli.main(["validate", sys.argv[1]])
except SystemExit as exc:
    code = exc.code
# VmHWM starts afresh at exec; ru_maxrss would keep the forking pytest process's peak
status = open("/proc/self/status").read() if sys.platform == "linux" else ""
peak_kb = (int(status.split("VmHWM:")[1].split()[0]) if "VmHWM:" in status
           else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
print(f"peak_mb={{peak_kb / 1024:.0f}}")
sys.exit(code)
"""


def validate_in_child(path):
    result = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                            timeout=20, cwd=path.parent)
    stdout = result.stdout.decode("utf-8", "replace").splitlines()
    peak = int(stdout[-1].removeprefix("peak_mb=")) if stdout else None
    return result.returncode, result.stderr.decode("utf-8", "replace"), peak


def billion_laughs() -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def merge_bomb() -> str:
    lines = ["m0: &m0 {a: 1, b: 2, c: 3}"]
    for level in range(1, 30):
        lines.append(f"m{level}: &m{level} {{<<: [*m{level - 1}, *m{level - 1}]}}")
    return "\n".join(lines) + "\n"


def line_of(text: str, fragment: str) -> int:
    return text[:text.index(fragment)].count("\n") + 1


LATIN1 = DEFAULT_TEXT.replace("Reference design:", "Référence design:").encode("latin-1")
CASES = {
    "billion_laughs": (billion_laughs().encode(), "aliases", None),
    "merge_key_bomb": (merge_bomb().encode(), "aliases", None),
    "recursive_alias": (b"policy: &a [*a]\n", "refers to itself", 1),
    "binary": (bytes(range(256)) * 64, "binary", 1),
    "not_utf8": (LATIN1, "not UTF-8", line_of(DEFAULT_TEXT, "Reference design:")),
    "control_character": (DEFAULT_TEXT.replace("policy: default", "policy: def\x07ault").encode(),
                          "not valid YAML", line_of(DEFAULT_TEXT, "policy: default")),
    "too_large": (DEFAULT_TEXT.encode() + (b"#" * 99 + b"\n") * 11_000, "larger than", None),
    "deep_flow_nesting": (b"policy: " + b"[" * 200_000 + b"]" * 200_000 + b"\n", "nest", 1),
    "deep_block_nesting": (b"policy: \n  " + b"- " * 3000 + b"x\n", "nest", 2),
    "many_values": (b"policy: [" + b"1, " * 300_000 + b"1]\n", "values", None),
    "list_as_key": (b"? [a, b]\n: 1\n", "keys must be text", 1),
    "number_as_market": (DEFAULT_TEXT.replace("  BTCUSDT:", "  1:").encode(), "keys must be text",
                         line_of(DEFAULT_TEXT, "  BTCUSDT:")),
    "huge_expression": (DEFAULT_TEXT.replace("rule: atr_pct <= max_atr_pct",
                                             "rule: " + "1+" * 990 + "atr > 0").encode(),
                        "nested", line_of(DEFAULT_TEXT, "rule: atr_pct <= max_atr_pct")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_damaged_policy_file_is_refused_in_one_line_with_bounded_memory(tmp_path, case):
    content, complaint, line = CASES[case]
    path = tmp_path / "damaged.yaml"
    path.write_bytes(content)
    code, stderr, peak = validate_in_child(path)
    assert "Traceback" not in stderr, stderr[-2000:]
    assert code == 1
    [message] = stderr.splitlines()
    where = f"{path}:{line}:" if line else f"{path}:"
    assert message.startswith(where), message
    assert complaint in message, message
    assert peak is not None and peak < MEMORY_LIMIT_MB


def test_policy_file_over_one_megabyte_is_refused_unread(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(DEFAULT_TEXT.encode() + b"#" * 1_000_001)
    with pytest.raises(Exception, match=r"larger than 1,000,000 bytes"):
        load_policy(path)


def swapped(path, content: bytes) -> None:
    path.write_bytes(content)
    os.utime(path, ns=(1, 10**18))


# In this process, so no file that could exhaust memory if the bounds broke (the child above
# covers those with the same loader).
@pytest.mark.parametrize("content", [bytes(range(256)) * 64, LATIN1, b"", b"policy: [1, 2"],
                         ids=["binary", "latin1", "empty", "half_written"])
def test_watcher_refuses_a_damaged_file_and_keeps_the_running_policy(tmp_path, content):
    path = tmp_path / "policy.yaml"
    path.write_text(DEFAULT_TEXT)
    running = Engine(load_policy(path))
    changes = []
    watcher = PolicyWatcher(path, running, changes.append)
    swapped(path, content)
    change = watcher.poll()
    assert change is not None and change.engine is None and watcher.engine is running
    assert change.problem.startswith(f"{path}:") and changes == [change]
    newer = running.policy.version + 1
    path.write_text(DEFAULT_TEXT.replace(f"version: {newer - 1}\n", f"version: {newer}\n", 1))
    os.utime(path, ns=(2, 2 * 10**18))
    assert watcher.poll().engine.policy.version == newer
