"""The primitive actions fixes are built from: run a command, write a file.

``Fix`` and ``Action`` (the protocol) live in :mod:`doctor.core.fix`."""

from __future__ import annotations

import contextlib
import difflib
import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from doctor.core.context import FixContext
from doctor.core.files import atomic_write
from doctor.core.fix import Action, Restored, UndoRecord
from fixes.preflight import command_problems, write_problems


@dataclass
class Command(Action):
    """Run a command; ``undo`` lists the commands that reverse it (if any)."""

    argv: list[str]
    undo_argvs: list[list[str]] = field(default_factory=list)
    stdin: str | None = None

    def describe(self) -> list[str]:
        return [shlex.join(self.argv)]

    def apply(self, ctx: FixContext) -> None:
        ctx.runner.run(self.argv, stdin=self.stdin)

    def undo(self, ctx: FixContext, backup: Path) -> None:
        for argv in self.undo_argvs:
            ctx.runner.run(argv)

    def preflight(self, ctx: FixContext) -> list[str]:
        return command_problems(ctx, self.argv)

    def undo_record(self, backup: Path) -> UndoRecord:
        return UndoRecord(commands=[(argv, None) for argv in self.undo_argvs])


@dataclass
class WriteFile(Action):
    """Write a whole file atomically; the plan shows it as a unified diff."""

    path: str  # the node's absolute path
    content: str
    old_content: str | None = None  # what the check read, for the diff
    mode: int | None = None  # None: keep the existing file's mode (0644 for a new file)

    def describe(self) -> list[str]:
        old = (self.old_content or "").splitlines(keepends=True)
        new = self.content.splitlines(keepends=True)
        fromfile = self.path if self.old_content is not None else "/dev/null"
        diff = difflib.unified_diff(old, new, fromfile=fromfile, tofile=self.path)
        lines = [f"write {self.path}:"]
        lines.extend(line.rstrip("\n") for line in diff)
        return lines

    def backup(self, ctx: FixContext, into: Path) -> None:
        target = ctx.host_path(self.path)
        into.mkdir(parents=True, exist_ok=True)
        (into / "path").write_text(self.path)
        if target.exists():
            shutil.copy2(target, into / "original")
        else:
            (into / "absent").touch()

    def apply(self, ctx: FixContext) -> None:
        target = ctx.host_path(self.path)
        ctx.runner.on_step(f"write {self.path}")
        target.parent.mkdir(parents=True, exist_ok=True)
        owner: tuple[int, int] | None = None
        mode = 0o644 if self.mode is None else self.mode
        if target.exists():
            # A replaced file keeps its owner and (unless told otherwise) its mode.
            st = target.stat()
            owner = (st.st_uid, st.st_gid)
            if self.mode is None:
                mode = st.st_mode & 0o7777
        atomic_write(target, self.content, mode, owner)

    def undo(self, ctx: FixContext, backup: Path) -> None:
        saved = None if (backup / "absent").exists() else backup / "original"
        if saved is not None and not saved.exists():
            raise FileNotFoundError(f"the backup of {self.path} is missing: {saved}")
        restore_file(ctx, self.path, saved)

    def restored(self, ctx: FixContext, backup: Path) -> list[Restored]:
        saved = None if (backup / "absent").exists() else backup / "original"
        return [verify_file(ctx, self.path, saved)]

    def preflight(self, ctx: FixContext) -> list[str]:
        return write_problems(ctx, self.path)

    def undo_record(self, backup: Path) -> UndoRecord:
        saved = None if (backup / "absent").exists() else "original"
        return UndoRecord(files={self.path: saved})


def restore_file(ctx: FixContext, path: str, saved: Path | None) -> None:
    """Put back node file PATH from SAVED (its mode and owner too), or remove it when SAVED
    is None (the file did not exist before). Atomic: a reader sees old or restored bytes."""
    target = ctx.host_path(path)
    if saved is None:
        if target.exists() or target.is_symlink():
            ctx.runner.on_step(f"remove {path} (it did not exist before)")
            target.unlink()
        return
    ctx.runner.on_step(f"restore {path} from {saved}")
    st = saved.stat()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.kdoctor-restore"
    shutil.copy2(saved, tmp)
    try:
        with contextlib.suppress(PermissionError):
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def verify_file(ctx: FixContext, path: str, saved: Path | None) -> Restored:
    """Is node file PATH equal (bytes and mode) to its backup SAVED (absent when None)?"""
    target = ctx.host_path(path)
    if saved is None:
        present = target.exists() or target.is_symlink()
        return Restored(path, "absent", not present, "it still exists" if present else "")
    try:
        if not target.exists():
            return Restored(path, str(saved), False, "it is missing")
        if target.read_bytes() != saved.read_bytes():
            return Restored(path, str(saved), False, "its content differs from the backup")
        if (target.stat().st_mode & 0o7777) != (saved.stat().st_mode & 0o7777):
            return Restored(path, str(saved), False, "its mode differs from the backup")
    except OSError as exc:
        return Restored(path, str(saved), False, f"cannot read it: {exc.strerror or exc}")
    return Restored(path, str(saved), True)
