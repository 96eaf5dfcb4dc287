"""Actions for fixes that change Docker's configuration."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from doctor.core.context import FixContext
from doctor.core.fix import Action, UndoRecord
from fixes.preflight import command_problems


@dataclass
class ReloadOnRollback(Action):
    """Does nothing when applied; on rollback reloads systemd and restarts a restarted service.

    Put it first in a fix: the engine undoes actions in reverse order, so this runs after the
    unit files and daemon.json were put back, and the daemon then reads the restored files.
    ``try-restart`` only restarts a service that is running: when the fix's own restart
    failed, the service stays down instead of being started with a configuration that was
    just seen to fail (the backup and the journal say what was there).
    """

    unit: str
    argvs: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.argvs:
            self.argvs = [["systemctl", "daemon-reload"], ["systemctl", "try-restart", self.unit]]

    def describe(self) -> list[str]:
        joined = " && ".join(shlex.join(argv) for argv in self.argvs)
        return [f"(only on rollback, after the files are restored: {joined})"]

    def apply(self, ctx: FixContext) -> None:
        return None

    def undo(self, ctx: FixContext, backup: Path) -> None:
        if not ctx.node.systemd_running():
            # Nothing loaded the changed units, so there is nothing to reload or restart.
            ctx.runner.on_step("systemd is not running: no reload or restart needed")
            return
        for argv in self.argvs:
            ctx.runner.run(argv)

    def preflight(self, ctx: FixContext) -> list[str]:
        problems: list[str] = []
        for argv in self.argvs:
            problems.extend(p for p in command_problems(ctx, argv) if p not in problems)
        return problems

    def undo_record(self, backup: Path) -> UndoRecord:
        return UndoRecord(commands=[(argv, None) for argv in self.argvs])
