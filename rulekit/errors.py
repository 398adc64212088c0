"""User errors: one family, rendered by the CLI as ``file:line:column: message`` without a traceback.

Anything that is not a ``RulekitError`` is a bug and keeps its traceback.
"""
from __future__ import annotations


class RulekitError(Exception):
    """An error the user can fix (a bad file, option or value), with where it is."""

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 column: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line
        self.column = column

    def location(self) -> str:
        parts = [str(p) for p in (self.path, self.line, self.column) if p is not None]
        return ":".join(parts)

    def __str__(self) -> str:
        where = self.location()
        return f"{where}: {self.message}" if where else self.message


class PolicyError(RulekitError):
    """A policy file that must not be run: every problem found, each with its place."""

    def __init__(self, problems: list[RulekitError]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))

    def __str__(self) -> str:
        return self.message


class SignalError(RulekitError):
    """A signals file that cannot be read at all (a bad single signal is a rejection, not an error)."""


class StateError(RulekitError):
    """A risk-state file or database that cannot be trusted."""


class DataError(RulekitError):
    """A market-data file that cannot be read."""
