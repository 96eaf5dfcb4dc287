"""The fix protocol the engine runs: a :class:`Fix` is a list of :class:`Action` steps.

The concrete steps (run a command, write a file, patch an API object) live in ``fixes/``;
the engine (:mod:`doctor.core.fixengine`) only needs this interface.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from doctor.core.context import FixContext


class FixSafety(enum.StrEnum):
    """How much a fix may be trusted to run unattended (ruff's applicability)."""

    SAFE = "safe"  # idempotent, keeps meaning: applied with --yes
    UNSAFE = "unsafe"  # changes behaviour of the node/cluster: needs --unsafe too
    MANUAL = "manual"  # shown for a human to run, never applied by kdoctor


class Action(ABC):
    """One step of a fix. ``apply`` may only run after ``backup`` succeeded."""

    @abstractmethod
    def describe(self) -> list[str]:
        """The exact commands or file diff this step performs, for the plan."""

    def backup(self, ctx: FixContext, into: Path) -> None:  # noqa: B027 - optional hook
        """Save what ``apply`` will change under ``into`` (a fresh directory)."""

    @abstractmethod
    def apply(self, ctx: FixContext) -> None: ...

    def undo(self, ctx: FixContext, backup: Path) -> None:  # noqa: B027 - optional hook
        """Put back what ``backup`` saved. Default: nothing to undo."""

    def preflight(self, ctx: FixContext) -> list[str]:
        """What stops this step from running here (no root, no systemd, a missing tool, an
        object that changed); asked of every step before anything is backed up or run."""
        return []

    def restored(self, ctx: FixContext, backup: Path) -> list[Restored]:
        """After ``undo``: each thing put back and whether it is verified equal to its backup
        (the outcome names only what did not restore). Default: nothing to verify."""
        return []

    def undo_record(self, backup: Path) -> UndoRecord | None:
        """How ``kdoctor undo`` reverses this step later, in another process, from
        ``backup`` alone. None: it cannot (the step is named when an undo is refused)."""
        return None


@dataclass(frozen=True)
class Restored:
    """One thing a rollback put back: a file (or ruleset) and the backup it came from."""

    what: str  # the node path, or e.g. "iptables filter table"
    backup: str  # the backup file (or "absent": the file did not exist before)
    verified: bool
    problem: str = ""
    #: The command that restores it by hand (default: copy the backup file over it).
    by_hand: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.what,
            "backup": self.backup,
            "verified": self.verified,
            "problem": self.problem,
        }


@dataclass
class UndoRecord:
    """What reverses a step, in data (written as ``undo.json`` in the step's backup slot).

    ``files``: node path → the backup file's name in the slot, None when the file did not
    exist before (undo removes it). ``commands``: argv lists run after the files are back,
    each with the name of a slot file to feed on stdin (or None). ``snapshot``: the argv that
    saves the current state before an undo changes it (e.g. ``iptables-save -c``), so the
    undo itself can be rolled back.
    """

    files: dict[str, str | None] = field(default_factory=dict)
    commands: list[tuple[list[str], str | None]] = field(default_factory=list)
    snapshot: list[str] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "commands": [{"argv": argv, "stdin": stdin} for argv, stdin in self.commands],
            "snapshot": self.snapshot,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UndoRecord:
        return cls(
            files=dict(data.get("files") or {}),
            commands=[(list(c["argv"]), c.get("stdin")) for c in data.get("commands") or []],
            snapshot=data.get("snapshot"),
        )


@dataclass
class Fix:
    """A repair a check offers: identity, safety class and the steps."""

    id: str
    title: str
    safety: FixSafety
    actions: list[Action] = field(default_factory=list)
    #: For MANUAL fixes: the commands a human should run (never executed).
    manual_steps: list[str] = field(default_factory=list)

    def plan(self) -> list[str]:
        if self.safety is FixSafety.MANUAL:
            return list(self.manual_steps)
        lines: list[str] = []
        for action in self.actions:
            lines.extend(action.describe())
        return lines

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "safety": self.safety.value,
            "plan": self.plan(),
        }
