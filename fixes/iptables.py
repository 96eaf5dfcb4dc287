"""Fix primitives for iptables: snapshot + restore, delete or append one exact rule.

Every change goes through ``ctx.runner.run(argv)`` with the binaries of the backend the rules
were read from (``iptables-nft`` / ``iptables-legacy`` when a node has both), so the fix edits
the same ruleset the check analysed. Rules are deleted by their full specification
(``iptables -D CHAIN <spec>``), never by number: a number goes stale the moment kube-proxy or
the CNI rewrites the chain, a specification cannot delete the wrong rule.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from doctor.core.context import FixContext
from doctor.core.fix import Action, Restored, UndoRecord
from fixes.preflight import command_problems


class RestoreError(Exception):
    """The snapshot kept for rollback cannot be restored."""


@dataclass(frozen=True)
class IptablesBackend:
    """The three binaries that read and write one backend's ruleset."""

    name: str  # "iptables" (whatever the node's default is), "legacy" or "nft"
    iptables: str
    save: str
    restore: str


DEFAULT_BACKEND = IptablesBackend("iptables", "iptables", "iptables-save", "iptables-restore")
LEGACY_BACKEND = IptablesBackend(
    "legacy", "iptables-legacy", "iptables-legacy-save", "iptables-legacy-restore"
)
NFT_BACKEND = IptablesBackend("nft", "iptables-nft", "iptables-nft-save", "iptables-nft-restore")


@dataclass
class SnapshotRuleset(Action):
    """Save the whole ruleset before anything changes; rollback restores its filter table.

    The backup is ``<save> -c`` (rules and counters). Undo feeds it to ``<restore> -c -T
    filter``: the filter table comes back exactly as it was, and the nat table, which
    kube-proxy rewrites constantly and this fix never touches, is left alone.
    """

    backend: IptablesBackend
    table: str = "filter"

    BACKUP_NAME = "iptables-save.rules"

    def describe(self) -> list[str]:
        return [
            f"{self.backend.save} -c > BACKUP/{self.BACKUP_NAME}"
            f"   # rollback: {self.backend.restore} -c -T {self.table} < that file"
        ]

    def backup(self, ctx: FixContext, into: Path) -> None:
        saved = ctx.runner.run([self.backend.save, "-c"])
        if f"*{self.table}" not in saved.splitlines():
            raise RestoreError(f"`{self.backend.save} -c` printed no {self.table} table to back up")
        into.mkdir(parents=True, exist_ok=True)
        (into / self.BACKUP_NAME).write_text(saved, encoding="utf-8")

    def apply(self, ctx: FixContext) -> None:
        """Nothing to change: the snapshot was taken by ``backup``."""

    def undo(self, ctx: FixContext, backup: Path) -> None:
        saved = (backup / self.BACKUP_NAME).read_text(encoding="utf-8")
        ctx.runner.run([self.backend.restore, "-c", "-T", self.table], stdin=saved)

    def restored(self, ctx: FixContext, backup: Path) -> list[Restored]:
        """The table as saved now equals the backup's (rules and policies; counters and
        comments aside: they change with every packet)."""
        saved = backup / self.BACKUP_NAME
        what = f"{self.backend.name} {self.table} table"
        try:
            now = ctx.runner.run([self.backend.save, "-t", self.table])
        except Exception as exc:
            return [Restored(what, str(saved), False, f"cannot read it back: {exc}")]
        before = saved.read_text(encoding="utf-8")
        by_hand = f"{self.backend.restore} -c -T {self.table} < {saved}"
        if table_rules(now, self.table) != table_rules(before, self.table):
            return [Restored(what, str(saved), False, "its rules differ from the backup", by_hand)]
        return [Restored(what, str(saved), True, "", by_hand)]

    def preflight(self, ctx: FixContext) -> list[str]:
        problems = command_problems(ctx, [self.backend.save, "-c"])
        problems += [
            p
            for p in command_problems(ctx, [self.backend.restore, "-c", "-T", self.table])
            if p not in problems
        ]
        return problems

    def undo_record(self, backup: Path) -> UndoRecord:
        return UndoRecord(
            commands=[([self.backend.restore, "-c", "-T", self.table], self.BACKUP_NAME)],
            snapshot=[self.backend.save, "-c"],
        )


def table_rules(saved: str, table: str) -> list[str]:
    """One table of ``iptables-save`` output: chain policies and rules, counters zeroed."""
    lines: list[str] = []
    inside = False
    for line in saved.splitlines():
        if line.startswith("*"):
            inside = line[1:].strip() == table
            continue
        if not inside or not line.strip() or line.startswith("#") or line == "COMMIT":
            continue
        # `-c` prefixes rules with [packets:bytes]; chains carry counters either way.
        line = re.sub(r"^\[\d+:\d+\]\s*", "", line)
        lines.append(re.sub(r"\[\d+:\d+\]", "[0:0]", line))
    return lines


@dataclass
class RuleEdit(Action):
    """``iptables -t TABLE <OPERATION> CHAIN <spec>``: one exact rule added or removed.

    The shared part of :class:`DeleteRule` and :class:`AppendRule`, which differ only in
    the operation flag. Undo is left to :class:`SnapshotRuleset`, which the fix always runs
    first: restoring the saved table is exact, whereas an inverse command is not (a rule
    deleted by specification goes back at the end of the chain, not where it was).
    """

    backend: IptablesBackend
    chain: str
    spec: tuple[str, ...]
    table: str = "filter"

    #: The iptables command flag, ``-D`` or ``-A``; set by each subclass.
    OPERATION: ClassVar[str]

    def argv(self) -> list[str]:
        return [self.backend.iptables, "-t", self.table, self.OPERATION, self.chain, *self.spec]

    def describe(self) -> list[str]:
        return [shlex.join(self.argv())]

    def apply(self, ctx: FixContext) -> None:
        ctx.runner.run(self.argv())

    def preflight(self, ctx: FixContext) -> list[str]:
        return command_problems(ctx, self.argv())

    def undo_record(self, backup: Path) -> UndoRecord:
        return UndoRecord()  # the ruleset snapshot taken first puts the table back


@dataclass
class DeleteRule(RuleEdit):
    """``iptables -t TABLE -D CHAIN <spec>``: removes the first rule equal to ``spec``."""

    OPERATION = "-D"


@dataclass
class AppendRule(RuleEdit):
    """``iptables -t TABLE -A CHAIN <spec>``: a rule placed after everything already there."""

    OPERATION = "-A"


@dataclass
class KeepRule(Action):
    """A rule the fix deliberately leaves alone; shown in the plan so nobody is surprised.

    Used for rules that single out Kubernetes traffic (a port, an address): someone wrote
    them on purpose, so only a human should delete them. While one remains the re-check
    fails and the fix is rolled back.
    """

    rule_text: str
    reason: str

    def describe(self) -> list[str]:
        return [f"# left in place ({self.reason}): {self.rule_text}"]

    def apply(self, ctx: FixContext) -> None:
        ctx.runner.on_step(f"left in place: {self.rule_text}")

    def undo_record(self, backup: Path) -> UndoRecord:
        return UndoRecord()
