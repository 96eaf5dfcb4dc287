"""The primitive actions fixes are built from: run a command, write a file.

``Fix`` and ``Action`` (the protocol) live in :mod:`doctor.core.fix`."""

from __future__ import annotations

import difflib
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from doctor.core.context import FixContext
from doctor.core.files import atomic_write
from doctor.core.fix import Action


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
        target = ctx.host_path(self.path)
        if (backup / "absent").exists():
            target.unlink(missing_ok=True)
        elif (backup / "original").exists():
            ctx.runner.on_step(f"restore {self.path} from {backup / 'original'}")
            shutil.copy2(backup / "original", target)
