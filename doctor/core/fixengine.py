"""Applies a fix the only way kdoctor ever changes anything.

plan (shown) → confirmation → backup of everything it will change → apply, step by step →
re-run the check → automatic rollback when a step fails or the check still fails → journal
entry (JSON lines) naming the backup. Nothing the user had is lost: backups are never deleted.
"""

from __future__ import annotations

import contextlib
import enum
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from doctor.core.context import FixContext
from doctor.core.fix import Action, Fix, Restored
from doctor.core.model import CheckResult, Status

DEFAULT_STATE_DIR = Path("/var/lib/kdoctor")


class Outcome(enum.StrEnum):
    APPLIED = "applied"  # applied and the check passes
    ROLLED_BACK = "rolled-back"  # a step failed or the check still failed; state restored
    ROLLBACK_FAILED = "rollback-failed"  # restoring failed too: the backup is the way back
    DRY_RUN = "dry-run"
    DECLINED = "declined"
    REFUSED = "refused"  # not allowed (unsafe without --unsafe, manual, preflight)
    UNDONE = "undone"  # `kdoctor undo` put back what an applied fix had changed


@dataclass
class FixReport:
    check_id: str
    fix: Fix
    outcome: Outcome
    reason: str = ""
    backup_dir: Path | None = None
    recheck: CheckResult | None = None
    steps: list[str] = field(default_factory=list)
    #: What a rollback put back, each verified against its backup (or not).
    rollback: list[Restored] = field(default_factory=list)
    #: For an undo: the journal entry (its id) whose changes were put back.
    undoes: str | None = None

    @property
    def entry_id(self) -> str | None:
        """The journal entry's id: the name of its backup directory."""
        return self.backup_dir.name if self.backup_dir else None


class Journal:
    """Append-only JSON lines under the state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / "journal.jsonl"

    def record(self, report: FixReport) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        entry: dict[str, Any] = {
            "id": report.entry_id,
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
        if report.rollback:
            entry["rollback"] = [r.to_json() for r in report.rollback]
        if report.undoes:
            entry["undoes"] = report.undoes
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")

    def entries(self) -> list[dict[str, Any]]:
        """Every entry, oldest first; lines that are not JSON objects are left out."""
        entries: list[dict[str, Any]] = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries


def _new_backup_dir(state_dir: Path, check_id: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    path = state_dir / "backups" / f"{stamp}-{check_id}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def preflight(fix: Fix, ctx: FixContext) -> list[str]:
    """Every reason, from every step, why FIX cannot run here (empty: it can)."""
    problems: list[str] = []
    for action in fix.actions:
        try:
            found = action.preflight(ctx)
        except Exception as exc:  # a step that cannot even tell: refuse, say why
            found = [f"{type(action).__name__}: preflight failed: {exc}"]
        problems.extend(p for p in found if p not in problems)
    return problems


UNDO_RECORD = "undo.json"


def apply_fix(
    check_id: str,
    fix: Fix,
    ctx: FixContext,
    state_dir: Path,
    recheck: Callable[[], CheckResult],
    *,
    undoes: str | None = None,
) -> FixReport:
    """Preflight, back up, apply, re-check, roll back if needed, journal. Never raises for
    step errors.

    UNDOES names the journal entry an undo reverses: then the re-check is shown, not
    required to pass (the node goes back to what it was, failing check included), and
    success is :attr:`Outcome.UNDONE`.
    """
    steps: list[str] = []
    previous_on_step = ctx.runner.on_step

    def on_step(line: str) -> None:
        steps.append(line)
        previous_on_step(line)

    problems = preflight(fix, ctx)
    if problems:
        report = FixReport(check_id, fix, Outcome.REFUSED, "; ".join(problems), undoes=undoes)
        # Refusing changed nothing; a journal that cannot be written changes nothing either.
        with contextlib.suppress(OSError):
            Journal(state_dir).record(report)
        return report

    try:
        backup_root = _new_backup_dir(state_dir, check_id)
    except OSError as exc:
        reason = (
            f"cannot create a backup under {state_dir}: {exc.strerror or exc} "
            "(run as root, or give --state-dir DIR); nothing changed"
        )
        return FixReport(check_id, fix, Outcome.REFUSED, reason, undoes=undoes)
    ctx.runner.on_step = on_step
    journal = Journal(state_dir)
    success = Outcome.UNDONE if undoes else Outcome.APPLIED
    report = FixReport(check_id, fix, success, backup_dir=backup_root, steps=steps, undoes=undoes)
    try:
        slots: list[tuple[Action, Path]] = []
        try:
            for index, action in enumerate(fix.actions):
                slot = backup_root / f"{index:02d}-{type(action).__name__}"
                slot.mkdir()
                action.backup(ctx, slot)
                _write_undo_record(action, slot)
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
                if not undoes and report.recheck.status not in (Status.OK, Status.WARN):
                    failure = (
                        f"the check still reports {report.recheck.status.value} after the fix: "
                        f"{report.recheck.summary}"
                    )
        if failure is None:
            return report

        report.reason = failure
        on_step(f"rolling back: {failure}")
        by_hand = _roll_back(ctx, applied, report)
        if by_hand:
            report.outcome = Outcome.ROLLBACK_FAILED
            report.reason += "; restore by hand: " + "; ".join(by_hand)
        else:
            report.outcome = Outcome.ROLLED_BACK
            if report.rollback:
                report.reason += "; rolled back, each restored file verified equal to its backup"
        return report
    finally:
        ctx.runner.on_step = previous_on_step
        journal.record(report)


def _roll_back(ctx: FixContext, applied: list[tuple[Action, Path]], report: FixReport) -> list[str]:
    """Undo the applied steps, newest first, and verify what each put back; return what is
    left to do by hand (only the steps that did not restore, each naming file and backup)."""
    by_hand: list[str] = []
    for action, slot in reversed(applied):
        error = ""
        try:
            action.undo(ctx, slot)
        except Exception as exc:
            error = str(exc)
        try:
            restored = action.restored(ctx, slot)
        except Exception as exc:
            restored = []
            error = error or f"cannot verify: {exc}"
        report.rollback.extend(restored)
        for item in restored:
            if not item.verified:
                action_text = item.by_hand or (
                    f"rm {item.what}"
                    if item.backup == "absent"
                    else f"cp -p {item.backup} {item.what}"
                )
                by_hand.append(f"{item.what} is not restored ({item.problem}): {action_text}")
        if error and not any(not item.verified for item in restored):
            step = " / ".join(action.describe()[:1]) or type(action).__name__
            by_hand.append(f"undoing `{step}` failed: {error} (backup: {slot})")
    return by_hand


def _write_undo_record(action: Action, slot: Path) -> None:
    record = action.undo_record(slot)
    data: dict[str, Any] = {"action": type(action).__name__, "describe": action.describe()}
    if record is None:
        data["undo"] = None
    else:
        data["undo"] = record.to_json()
    (slot / UNDO_RECORD).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def record_without_applying(
    state_dir: Path, check_id: str, fix: Fix, outcome: Outcome, reason: str
) -> FixReport:
    """Journal a fix that was shown but not applied (dry run, declined, refused)."""
    report = FixReport(check_id, fix, outcome, reason)
    if outcome is not Outcome.DRY_RUN:
        Journal(state_dir).record(report)
    return report
