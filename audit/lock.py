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
import time
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


# --- readers and a writer that keeps the file open ----------------------------------------------
# DuckDB lets one process hold the file. A writer that keeps it open between its commits (the paper
# replay: opening and closing it costs some 30 ms a commit) lets go whenever a reader says it is
# waiting: the reader holds a shared ``flock`` on ``<database>.readers`` from before it opens the
# database until it has closed it; the writer tests for one (a non-blocking exclusive lock, taken
# and dropped at once) after each commit and on every bar, closes the file between transactions
# when one waits, and does not open it again while readers hold theirs (for at most
# ``READER_GRACE_SECONDS``, so a stream of readers cannot stop the run). A reader thus gets the
# file within a bar or a commit and never between the halves of a transaction. The writer makes the
# file; a reader only opens one that is there, and writes nothing.

READER_GRACE_SECONDS = 2.0


def readers_path(database: str | Path) -> Path:
    return Path(f"{database}.readers")


class ReaderTurn:
    """A reader's side: "a reader waits or reads", held from ``announce`` to ``withdraw``."""

    def __init__(self, database: str | Path):
        self.path = readers_path(database)
        self._fd: int | None = None

    def announce(self) -> None:
        """Say a reader is waiting, if a writer that keeps the file open listens (else nothing)."""
        if self._fd is not None:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return  # no writer has made it: none keeps the file from readers
        deadline = time.monotonic() + 1.0
        while True:  # the writer holds it exclusively only for the moment of its test
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    return
                time.sleep(0.001)
        self._fd = fd

    def withdraw(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


class ReaderWatch:
    """The writer's side: is a reader waiting for the file?"""

    def __init__(self, database: str | Path):
        self.path = readers_path(database)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def waiting(self) -> bool:
        if self._fd is None:
            return False
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return False

    def wait_out(self, seconds: float = READER_GRACE_SECONDS) -> None:
        """Before opening the file again: let the readers waiting now have it (bounded)."""
        deadline = time.monotonic() + seconds
        while self.waiting() and time.monotonic() < deadline:
            time.sleep(0.002)

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
