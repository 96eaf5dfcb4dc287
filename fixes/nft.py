"""Fix primitives for native nftables: snapshot + exact restore of a table, delete one rule.

A native rule is deleted by its handle (``nft delete rule FAMILY TABLE CHAIN handle N``),
the only way nft names one rule. A handle stays with its rule for the table's lifetime,
but a table that was recreated (``firewall-cmd --reload``, ``systemctl restart nftables``)
hands the same numbers to other rules, so :class:`DeleteNftRule` first checks that the
rule at that handle is still the one the check judged, and refuses otherwise.

Rollback restores the touched table from ``nft list table`` saved before anything
changed, in one nft transaction (``delete table`` + the saved table), so the table comes
back exactly, counters included, and tables the fix never touched (kube-proxy's, which it
rewrites all the time) are left alone. The whole ruleset is saved beside it for the record.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doctor.core.commands import CommandFailed
from doctor.core.context import FixContext
from doctor.core.fix import Action


def _file_name(family: str, table: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in f"{family}-{table}")
    return f"nft-table-{safe}.nft"


@dataclass
class SnapshotNftTable(Action):
    """Save ``nft list table FAMILY TABLE`` (and the whole ruleset) before anything changes."""

    family: str
    table: str

    RULESET_NAME = "nft-ruleset.nft"

    @property
    def backup_name(self) -> str:
        return _file_name(self.family, self.table)

    def describe(self) -> list[str]:
        return [
            f"nft list ruleset > BACKUP/{self.RULESET_NAME}; "
            f"nft list table {self.family} {self.table} > BACKUP/{self.backup_name}"
            f"   # rollback: nft -f (delete table {self.family} {self.table} + that file)"
        ]

    def backup(self, ctx: FixContext, into: Path) -> None:
        into.mkdir(parents=True, exist_ok=True)
        (into / self.RULESET_NAME).write_text(ctx.runner.run(["nft", "list", "ruleset"]))
        saved = ctx.runner.run(["nft", "list", "table", self.family, self.table])
        if f"table {self.family} {self.table}" not in saved:
            raise CommandFailed(f"`nft list table {self.family} {self.table}` printed no table")
        (into / self.backup_name).write_text(saved, encoding="utf-8")

    def apply(self, ctx: FixContext) -> None:
        """Nothing to change: the snapshot was taken by ``backup``."""

    def undo(self, ctx: FixContext, backup: Path) -> None:
        saved = (backup / self.backup_name).read_text(encoding="utf-8")
        # `table` first creates it if it is gone, so `delete table` cannot fail; nft runs
        # the whole file as one transaction: nobody sees the table half restored.
        script = (
            f"table {self.family} {self.table}\ndelete table {self.family} {self.table}\n{saved}"
        )
        ctx.runner.run(["nft", "-f", "-"], stdin=script)


@dataclass
class DeleteNftRule(Action):
    """``nft delete rule FAMILY TABLE CHAIN handle N``, after checking it is the same rule."""

    family: str
    table: str
    chain: str
    handle: int
    #: The rule's expressions as ``nft -j`` printed them when the check judged it.
    expr: tuple[Any, ...]
    #: The rule in nft syntax, for the plan.
    text: str

    def argv(self) -> list[str]:
        where = [self.family, self.table, self.chain]
        return ["nft", "delete", "rule", *where, "handle", str(self.handle)]

    def describe(self) -> list[str]:
        return [f"{shlex.join(self.argv())}   # {self.text}"]

    def apply(self, ctx: FixContext) -> None:
        where = [self.family, self.table, self.chain]
        listing = ctx.runner.run(["nft", "-j", "list", "chain", *where])
        current = _rule_expr(listing, self.handle)
        if current is None:
            raise CommandFailed(
                f"no rule with handle {self.handle} in {self.family} {self.table} {self.chain} "
                "any more (the table was reloaded?): nothing deleted"
            )
        if _without_counters(current) != _without_counters(list(self.expr)):
            raise CommandFailed(
                f"handle {self.handle} in {self.family} {self.table} {self.chain} is now another "
                "rule (the table was reloaded?): nothing deleted"
            )
        ctx.runner.run(self.argv())


def _rule_expr(listing: str, handle: int) -> list[Any] | None:
    try:
        items = json.loads(listing).get("nftables", [])
    except (ValueError, AttributeError):
        return None
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if isinstance(rule, dict) and rule.get("handle") == handle:
            expr = rule.get("expr")
            return expr if isinstance(expr, list) else None
    return None


def _without_counters(expr: list[Any]) -> list[Any]:
    """A rule's expressions minus its counter values, which change with every packet."""
    return [{"counter": None} if isinstance(s, dict) and "counter" in s else s for s in expr]
