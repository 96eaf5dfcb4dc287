"""Applies a fix the only way kdoctor ever changes anything.

plan (shown) → confirmation → backup of everything it will change → apply, step by step →
re-run the check → automatic rollback when a step fails or the check still fails → journal
entry (JSON lines) naming the backup. Nothing the user had is lost: backups are never deleted.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from doctor.core.context import FixContext
from doctor.core.fix import Action, Fix
from doctor.core.model import CheckResult, Status

DEFAULT_STATE_DIR = Path("/var/lib/kdoctor")


class Outcome(enum.StrEnum):
    APPLIED = "applied"  # applied and the check passes
    ROLLED_BACK = "rolled-back"  # a step failed or the check still failed; state restored
    ROLLBACK_FAILED = "rollback-failed"  # restoring failed too: the backup is the way back
    DRY_RUN = "dry-run"
    DECLINED = "declined"
    REFUSED = "refused"  # not allowed (bundle, unsafe without --unsafe, manual)


@dataclass
class FixReport:
    check_id: str
    fix: Fix
    outcome: Outcome
    reason: str = ""
    backup_dir: Path | None = None
    recheck: CheckResult | None = None
    steps: list[str] = field(default_factory=list)


class Journal:
    """Append-only JSON lines under the state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "journal.jsonl"

    def record(self, report: FixReport) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {
            "time": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "check": report.check_id,
            "fix": report.fix.id,
            "title": report.fix.title,
            "safety": report.fix.safety.value,
            "outcome": report.outcome.value,
            "reason": report.reason,
            "plan": report.fix.plan(),
            "steps": report.steps,
            "backup": str(report.backup_dir) if report.backup_dir else None,
            "recheck_status": report.recheck.status.value if report.recheck else None,
        }
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def _new_backup_dir(state_dir: Path, check_id: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = state_dir / "backups" / f"{stamp}-{check_id}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def apply_fix(
    check_id: str,
    fix: Fix,
    ctx: FixContext,
    state_dir: Path,
    recheck: Callable[[], CheckResult],
) -> FixReport:
    """Back up, apply, re-check, roll back if needed, journal. Never raises for step errors."""
    steps: list[str] = []
    previous_on_step = ctx.runner.on_step

    def on_step(line: str) -> None:
        steps.append(line)
        previous_on_step(line)

    ctx.runner.on_step = on_step
    journal = Journal(state_dir)
    backup_root = _new_backup_dir(state_dir, check_id)
    report = FixReport(check_id, fix, Outcome.APPLIED, backup_dir=backup_root, steps=steps)
    try:
        slots: list[tuple[Action, Path]] = []
        try:
            for index, action in enumerate(fix.actions):
                slot = backup_root / f"{index:02d}-{type(action).__name__}"
                slot.mkdir()
                action.backup(ctx, slot)
                slots.append((action, slot))
        except Exception as exc:
            # Nothing was changed yet: a fix we cannot back up is not applied at all.
            report.outcome = Outcome.ROLLED_BACK
            report.reason = f"backup failed, nothing changed: {exc}"
            return report

        applied: list[tuple[Action, Path]] = []
        failure: str | None = None
        for action, slot in slots:
            applied.append((action, slot))  # a failing step may have half-applied
            try:
                action.apply(ctx)
            except Exception as exc:
                failure = f"step failed: {exc}"
                break

        if failure is None:
            try:
                report.recheck = recheck()
            except Exception as exc:
                failure = f"re-check crashed: {exc}"
            else:
                if report.recheck.status not in (Status.OK, Status.WARN):
                    failure = (
                        f"the check still reports {report.recheck.status.value} after the fix: "
                        f"{report.recheck.summary}"
                    )
        if failure is None:
            return report

        report.reason = failure
        on_step(f"rolling back: {failure}")
        undo_errors = []
        for action, slot in reversed(applied):
            try:
                action.undo(ctx, slot)
            except Exception as exc:
                undo_errors.append(f"{type(action).__name__}: {exc}")
        if undo_errors:
            report.outcome = Outcome.ROLLBACK_FAILED
            report.reason += "; rollback failed: " + "; ".join(undo_errors)
            report.reason += f"; restore by hand from {backup_root}"
        else:
            report.outcome = Outcome.ROLLED_BACK
        return report
    finally:
        ctx.runner.on_step = previous_on_step
        journal.record(report)


def record_without_applying(
    state_dir: Path, check_id: str, fix: Fix, outcome: Outcome, reason: str
) -> FixReport:
    """Journal a fix that was shown but not applied (dry run, declined, refused)."""
    report = FixReport(check_id, fix, outcome, reason)
    if outcome is not Outcome.DRY_RUN:
        Journal(state_dir).record(report)
    return report
