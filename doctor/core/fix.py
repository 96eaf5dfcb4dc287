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
