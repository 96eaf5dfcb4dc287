"""``kdoctor undo``: reverse an applied fix from its backup, in a later process.

Every step of a fix wrote ``undo.json`` into its backup slot when it was applied
(:class:`doctor.core.fix.UndoRecord`: files to put back, commands to run). The undo is itself
a :class:`Fix` of :class:`RestoreStep` actions, newest step first, so it goes through the same
engine: plan, confirmation, preflight, a backup of the state it replaces (so a failed undo
rolls back), apply, verify, re-check, journal.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doctor.core.context import FixContext
from doctor.core.fix import Action, Fix, FixSafety, Restored, UndoRecord
from fixes.base import restore_file, verify_file
from fixes.preflight import command_problems, write_problems

UNDO_RECORD = "undo.json"
SNAPSHOT_FILE = "before-undo.snapshot"


class CannotUndo(Exception):
    """The journal entry cannot be reversed by kdoctor (the message says why and what to do)."""


@dataclass
class RestoreStep(Action):
    """Puts back what one step of an applied fix changed, from that step's backup SLOT."""

    slot: Path
    record: UndoRecord
    #: What the original step did, for the plan ("write /etc/…", "iptables -D …").
    original: str

    def describe(self) -> list[str]:
        lines = [f"# undo: {self.original}"]
        for path, saved in self.record.files.items():
            if saved is None:
                lines.append(f"rm {shlex.quote(path)}   # it did not exist before the fix")
            else:
                lines.append(f"cp -p {shlex.quote(str(self.slot / saved))} {shlex.quote(path)}")
        for argv, stdin in self.record.commands:
            feed = f" < {shlex.quote(str(self.slot / stdin))}" if stdin else ""
            lines.append(shlex.join(argv) + feed)
        return lines

    def preflight(self, ctx: FixContext) -> list[str]:
        problems: list[str] = []
        for path, saved in self.record.files.items():
            if saved is not None and not (self.slot / saved).is_file():
                problems.append(f"the backup of {path} is missing: {self.slot / saved}")
            problems.extend(write_problems(ctx, path))
        argvs = [argv for argv, _ in self.record.commands]
        if self.record.snapshot:
            argvs.append(self.record.snapshot)
        for argv in argvs:
            problems.extend(command_problems(ctx, argv))
        for _argv, stdin in self.record.commands:
            if stdin and not (self.slot / stdin).is_file():
                problems.append(f"the backup {self.slot / stdin} is missing")
        return list(dict.fromkeys(problems))

    def backup(self, ctx: FixContext, into: Path) -> None:
        """Save what this undo replaces, so a failed undo goes back to the fixed state."""
        into.mkdir(parents=True, exist_ok=True)
        for index, path in enumerate(self.record.files):
            target = ctx.host_path(path)
            if target.exists():
                shutil.copy2(target, into / f"current-{index}")
        if self.record.snapshot:
            saved = ctx.runner.run(self.record.snapshot)
            (into / SNAPSHOT_FILE).write_text(saved, encoding="utf-8")

    def apply(self, ctx: FixContext) -> None:
        for path, saved in self.record.files.items():
            restore_file(ctx, path, None if saved is None else self.slot / saved)
        for argv, stdin in self.record.commands:
            feed = (self.slot / stdin).read_text(encoding="utf-8") if stdin else None
            ctx.runner.run(argv, stdin=feed)
        problems = [r for r in self.verify(ctx) if not r.verified]
        if problems:
            raise CannotUndo(
                "; ".join(f"{r.what} is not equal to its backup ({r.problem})" for r in problems)
            )

    def verify(self, ctx: FixContext) -> list[Restored]:
        """Each file this step put back, compared with the fix's backup."""
        return [
            verify_file(ctx, path, None if saved is None else self.slot / saved)
            for path, saved in self.record.files.items()
        ]

    def undo(self, ctx: FixContext, backup: Path) -> None:
        """Roll back a failed undo: the state the fix had left comes back."""
        for index, path in enumerate(self.record.files):
            current = backup / f"current-{index}"
            restore_file(ctx, path, current if current.exists() else None)
        snapshot = backup / SNAPSHOT_FILE
        for argv, stdin in self.record.commands:
            if stdin and snapshot.exists():  # a restore fed from a file: feed it the snapshot
                ctx.runner.run(argv, stdin=snapshot.read_text(encoding="utf-8"))

    def restored(self, ctx: FixContext, backup: Path) -> list[Restored]:
        out: list[Restored] = []
        for index, path in enumerate(self.record.files):
            current = backup / f"current-{index}"
            out.append(verify_file(ctx, path, current if current.exists() else None))
        return out

    def undo_record(self, backup: Path) -> UndoRecord | None:
        return None  # an undo is not undone in turn: run kdoctor fix again


def undo_fix(entry: dict[str, Any]) -> Fix:
    """The fix that reverses journal ENTRY (an applied fix), from its backup directory."""
    backup = Path(str(entry.get("backup") or ""))
    name = entry.get("id") or backup.name
    if not entry.get("backup") or not backup.is_dir():
        raise CannotUndo(f"entry {name}: its backup directory {backup} is missing")
    steps: list[Action] = []
    not_undoable: list[str] = []
    for slot in sorted((p for p in backup.iterdir() if p.is_dir()), reverse=True):
        path = slot / UNDO_RECORD
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CannotUndo(
                f"entry {name} was backed up by an older kdoctor (no {UNDO_RECORD}): restore "
                f"by hand from {backup}"
            ) from None
        except (OSError, ValueError) as exc:
            raise CannotUndo(f"{path}: cannot be read: {exc}") from exc
        describe = data.get("describe") or [data.get("action", slot.name)]
        original = str(describe[0])
        if data.get("undo") is None:
            not_undoable.append(f"{original} (backup: {slot})")
            continue
        record = UndoRecord.from_json(data["undo"])
        if record.files or record.commands:
            steps.append(RestoreStep(slot, record, original))
    if not_undoable:
        raise CannotUndo(
            f"entry {name}: kdoctor cannot undo these steps by itself: " + "; ".join(not_undoable)
        )
    if not steps:
        raise CannotUndo(f"entry {name}: its steps changed nothing kdoctor could put back")
    return Fix(
        id=f"undo:{entry.get('fix')}",
        title=f"Undo {entry.get('fix')} (applied {entry.get('time', '?')}) from {backup}",
        safety=FixSafety(entry.get("safety") or "unsafe"),
        actions=steps,
    )
