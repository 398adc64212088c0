"""Inputs of a long-running process: a signals file followed as it grows, and a policy file watched
for new versions.

Both are polled (``poll()``), not threaded: the caller's loop decides when, so a signal is never
decided under half a policy and a swap happens only between decisions.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rulekit.decision.engine import Engine
from rulekit.errors import RulekitError
from rulekit.model import Signal
from rulekit.policy.loader import load_policy


class SignalFollower:
    """New complete lines of a JSON Lines file since the last poll, as signals.

    A line still being written (no newline yet) waits for the next poll; a malformed line becomes a
    malformed signal (rejected and audited), never a crash. The byte offset is the position to
    resume from after a restart (``start_at``).
    """

    def __init__(self, path: str | Path, start_at: int = 0):
        self.path = Path(path)
        self.offset = start_at

    def poll(self) -> list[Signal]:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        if size < self.offset:  # truncated or replaced: start again from its beginning
            self.offset = 0
        if size == self.offset:
            return []
        with self.path.open("rb") as handle:
            handle.seek(self.offset)
            chunk = handle.read(size - self.offset)
        complete = chunk[:chunk.rfind(b"\n") + 1]
        self.offset += len(complete)
        return signals_of(complete.decode("utf-8", errors="replace").splitlines())


def signals_of(lines: Iterable[str]) -> list[Signal]:
    """JSON Lines as signals; a line that is not a JSON object is a malformed signal, kept."""
    signals = []
    for raw in lines:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            signals.append(Signal.malformed(raw))
            continue
        signals.append(Signal.from_record(record) if isinstance(record, dict)
                       else Signal.malformed(raw))
    return signals


@dataclass(frozen=True)
class PolicyChange:
    """What a poll of the policy file found: a new engine, or the problem that kept the old one."""

    engine: Engine | None
    problem: str | None


class PolicyWatcher:
    """The policy file's new versions, each checked in full before it replaces the running one.

    A file that fails to load (schema, expression, bounds, a damaged or binary file: every problem
    with ``file:line``, by the same loader as ``rulekit validate``) is refused and the running
    engine stays; ``on_change`` hears of both outcomes, for the audit.
    """

    def __init__(self, path: str | Path, engine: Engine,
                 on_change: Callable[[PolicyChange], None] = lambda change: None):
        self.path = Path(path)
        self.engine = engine
        self.on_change = on_change
        self._seen = self._stamp()

    def _stamp(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path)
        except FileNotFoundError:
            return None
        return stat.st_mtime_ns, stat.st_size

    def poll(self) -> PolicyChange | None:
        """None when the file has not changed; else what happened to the new version."""
        stamp = self._stamp()
        if stamp == self._seen:
            return None
        self._seen = stamp
        try:
            candidate = Engine(load_policy(self.path))
        except RulekitError as exc:
            change = PolicyChange(None, str(exc))
        except Exception as exc:  # a bug in loading must not stop a run with open trades
            change = PolicyChange(None, f"{self.path}: refused, loading it failed with "
                                        f"{type(exc).__name__}: {exc} (a bug: please report it)")
        else:
            if candidate.policy.hash == self.engine.policy.hash:
                return None  # touched, not changed
            self.engine = candidate
            change = PolicyChange(candidate, None)
        self.on_change(change)
        return change
