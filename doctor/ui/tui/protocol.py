"""What the screens need from the app, as a Protocol.

Screens are pushed by :class:`doctor.ui.tui.app.KdoctorApp`, so importing the app back from a
screen would close an import circle; they see the app through this interface instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from textual.signal import Signal

from doctor.core.fix import Fix
from doctor.core.model import CheckResult, Scope, Status
from doctor.ui.tui.backend import Backend
from doctor.ui.tui.logic import RowView


class AppActions(Protocol):
    """The part of KdoctorApp that screens call."""

    backend: Backend
    show_durations: bool
    part_state: dict[Scope, str]
    result_changed: Signal[str]

    def row(self, check_id: str) -> RowView: ...
    def rows(self) -> list[RowView]: ...
    def counts(self) -> dict[Status, int]: ...
    def busy(self) -> int: ...
    def fix_blocked(self, check_id: str, result: CheckResult | None = None) -> str | None: ...
    def start_run(self, ids: Sequence[str]) -> None: ...
    def open_check(self, check_id: str) -> None: ...
    def open_plan(self, check_id: str) -> None: ...
    def start_fix(self, check_id: str, fix: Fix, screen: Any) -> None: ...  # a PlanScreen
    def decline_fix(self, check_id: str, fix: Fix) -> None: ...
    def ask_save_report(self) -> None: ...
