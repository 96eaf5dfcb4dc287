"""The exceptions that carry a verdict: missing facts skip, broken facts error, bad usage
exits 3."""

from __future__ import annotations


class FactMissing(Exception):
    """A fact the check needs is not there: the check is ``skip`` with this reason."""


class FactError(Exception):
    """A fact exists but could not be read or parsed: the check is ``error``."""


class UsageError(Exception):
    """Bad command-line usage or target: one line on stderr and a hint, exit 3."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint
