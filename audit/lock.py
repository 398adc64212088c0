"""One writer per account: an OS lock on ``<database>.lock``, held from a writer's start to its exit.

DuckDB's own file lock cannot do this: a long-running writer lets go of the database between
commits (so ``rulekit state`` can read meanwhile), and a second writer would slip in between.
``fcntl.flock`` belongs to the open file, so the kernel releases it when the holder exits, however
it exits (``kill -9`` included): a stale lock file is never a held lock. The file itself is left in
place (deleting it would let two writers lock two different files of the same name); what it holds
is only who has it, for the error the next writer sees.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from rulekit.errors import StateError


def lock_path(database: str | Path) -> Path:
    return Path(f"{database}.lock")


class WriterLock:
    """The account's writer lock; ``acquire`` refuses at once (no waiting) if another holds it."""

    def __init__(self, database: str | Path, what: str):
        self.database = str(database)
        self.path = lock_path(database)
        self.what = what
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StateError(f"cannot create the writer lock {self.path}: {exc.strerror}",
                             self.database) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise StateError(f"the account is being written by {holder}; one writer per "
                             f"account (readers such as `rulekit state` still work)",
                             self.database) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(),
              "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "what": self.what}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # nobody holds it now; the next holder writes itself in
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _holder(fd: int) -> str:
    """Who holds the lock, as its holder wrote it into the lock file."""
    try:
        record = json.loads(os.pread(fd, 4096, 0).decode() or "null")
        return (f"pid {record['pid']} on {record['host']} since {record['since']} "
                f"({record['what']})")
    except (OSError, ValueError, TypeError, KeyError):
        return "another process (it has not written its name into the lock file yet)"
