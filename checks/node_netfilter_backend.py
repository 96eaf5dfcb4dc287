"""node.netfilter.backend: iptables rules split between iptables-legacy and iptables-nft.

Both backends filter every packet (legacy x_tables and nf_tables hook in side by side), but
each tool lists only its own half, so neither ``iptables-legacy-save`` nor
``iptables-nft-save`` shows the order a packet really meets the rules in: a REJECT in one
is final whatever Kubernetes' KUBE-* chains accept in the other. And ``iptables-nft`` cannot
list a table that nft wrote natively: it prints "Table `filter' is incompatible" and the
iptables view of that table is empty.
"""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from doctor.core.context import CheckContext
from doctor.core.errors import FactMissing
from doctor.core.fix import Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.core.sources import CommandOutput, NodeFacts
from doctor.parse.iptables import Ruleset, parse_ruleset
from fixes.iptables import LEGACY_BACKEND, NFT_BACKEND, IptablesBackend

_INCOMPATIBLE = re.compile(r"^# Table `([^']+)' is incompatible, use 'nft' tool\.", re.MULTILINE)
BACKUP_DIR = "/root"


@dataclass(frozen=True)
class BackendView:
    """What one backend's save tool printed, parsed."""

    backend: IptablesBackend
    output: CommandOutput
    ruleset: Ruleset

    @property
    def label(self) -> str:
        return f"iptables-{self.backend.name}"

    def kube_chains(self) -> list[str]:
        return sorted(
            {
                f"{table.name} {chain.name}"
                for table in self.ruleset.tables.values()
                for chain in table.chains.values()
                if chain.name.startswith("KUBE-")
            }
        )

    def other_rules(self) -> list[str]:
        """Rules (and non-ACCEPT policies) that are not Kubernetes' own."""
        found: list[str] = []
        for table in self.ruleset.tables.values():
            for chain in table.chains.values():
                if chain.name.startswith("KUBE-"):
                    continue
                if chain.policy not in (None, "ACCEPT"):
                    found.append(f"*{table.name} :{chain.name} {chain.policy}")
                for rule in chain.rules:
                    if (rule.target or "").startswith("KUBE-") or "kubernetes" in rule.comment():
                        continue
                    found.append(f"*{table.name} {rule.text}")
        return found

    def blocking_rules(self) -> list[str]:
        """Its REJECT/DROP rules and DROP policies in filter INPUT/FORWARD."""
        table = self.ruleset.filter
        if table is None:
            return []
        found: list[str] = []
        for name in ("INPUT", "FORWARD"):
            chain = table.chains.get(name)
            if chain is None:
                continue
            if chain.policy == "DROP":
                found.append(f":{name} DROP")
            found.extend(r.text for r in chain.rules if r.target in ("REJECT", "DROP"))
        return found


def read_backend(node: NodeFacts, backend: IptablesBackend) -> BackendView | None:
    try:
        output = node.command(f"{backend.save}.txt", [backend.save])
    except FactMissing:
        return None
    return BackendView(backend, output, parse_ruleset(output.stdout, output.source))


def incompatible_tables(outputs: Sequence[CommandOutput]) -> list[tuple[str, str]]:
    """(table, source) for each table an iptables tool said only nft can list."""
    found: list[tuple[str, str]] = []
    for output in outputs:
        for name in _INCOMPATIBLE.findall(output.stdout):
            if (name, output.source) not in found:
                found.append((name, output.source))
    return found


def move_commands(source: BackendView, target: BackendView) -> list[str]:
    """The exact commands that move ``source``'s rules into ``target`` and empty ``source``."""
    src, dst = source.backend, target.backend
    backup = f"{BACKUP_DIR}/kdoctor-{src.save}.rules"
    steps = [
        f"{src.save} > {backup}   # keep a copy of everything {src.iptables} holds",
    ]
    for name, table in source.ruleset.tables.items():
        if not table.rule_count() and all(
            chain.policy in (None, "ACCEPT") for chain in table.chains.values()
        ):
            continue
        steps.append(
            f"{src.save} -t {name} | {dst.restore} --noflush   "
            f"# append its {name} rules to {dst.iptables}"
        )
    for name, table in source.ruleset.tables.items():
        steps.append(f"{src.iptables} -t {name} -F && {src.iptables} -t {name} -X")
        steps.extend(
            f"{src.iptables} -t {name} -P {chain.name} ACCEPT"
            for chain in table.chains.values()
            if chain.policy not in (None, "ACCEPT")
        )
    steps += [
        f"# make the firewall service and every tool use {dst.iptables} from now on "
        f"(Debian/Ubuntu: `update-alternatives --set iptables /usr/sbin/{dst.iptables}`; "
        "RHEL/CentOS ≥ 8 have iptables-nft only), and save the merged rules where the "
        f"distro loads them at boot (`{dst.save} > /etc/sysconfig/iptables` or "
        "/etc/iptables/rules.v4)",
        "# then re-run `kdoctor check --only node.netfilter.backend,node.iptables.reject`: "
        "the rules are now in one listing, in the order packets meet them",
    ]
    return steps


class NetfilterBackend(Check):
    """iptables rules live in one backend, and iptables can list every table nft holds.

    Reads `iptables-legacy-save` and `iptables-nft-save` (a bundle's
    `commands/iptables-legacy-save.txt` and `commands/iptables-nft-save.txt`) and, for the
    incompatible-table notice, `iptables-save` too. When Kubernetes' `KUBE-*` chains sit in
    one backend and other rules in the other, the packet meets both — legacy and nf_tables
    hook in side by side — but each listing shows only half, so the order between them is
    what neither shows: `fail` when the other half holds a REJECT/DROP (or a DROP policy) in
    filter INPUT/FORWARD, which no ACCEPT in the KUBE-* half can override; `warn` otherwise,
    and when `KUBE-*` chains are in both (kubelet and kube-proxy disagree). A table that an
    iptables tool reports as "incompatible, use 'nft' tool" (nft wrote it natively) is a
    `warn`: iptables-based tools (kube-proxy in iptables mode, CNI plugins, `iptables-save`
    backups) see it as empty. Neither tool there: `skip`.

    ## Why it matters
    kube-proxy images pick a backend by counting rules; the host's firewall (iptables-services
    on RHEL 8+, Debian's alternatives) may use the other. A node can then show a clean
    `iptables-save` while its kubelet port is rejected by the other backend's rule.

    ## How to fix
    Keep the backend that holds `KUBE-*` (kube-proxy's choice) and move the other rules into
    it with that backend's restore tool, then empty the other backend. The plan lists the
    exact commands for this node; kdoctor never runs them (manual).

    ## Fix safety
    manual: moving a firewall between backends changes the order rules apply in; a human
    decides, with the commands shown.
    """

    id = "node.netfilter.backend"
    title = "iptables rules in one backend, every nft table visible to iptables"
    scope = Scope.NODE
    fix_safety = FixSafety.MANUAL

    def run(self, ctx: CheckContext) -> Verdict:
        legacy = read_backend(ctx.node, LEGACY_BACKEND)
        nft = read_backend(ctx.node, NFT_BACKEND)
        outputs = [view.output for view in (legacy, nft) if view is not None]
        with contextlib.suppress(FactMissing):
            outputs.append(ctx.node.command("iptables-save.txt", ["iptables-save"]))
        if legacy is None and nft is None:
            raise FactMissing(
                "neither iptables-legacy-save nor iptables-nft-save is there to read "
                "(not installed, or the bundle has no commands/iptables-legacy-save.txt "
                "and commands/iptables-nft-save.txt)"
            )
        findings: list[Finding] = []
        manual: list[str] = []
        for name, source in incompatible_tables(outputs):
            findings.append(
                Finding(
                    Severity.WARN,
                    f"`{source}` cannot list table ip {name}: nft wrote it natively, so "
                    "iptables-based tools (kube-proxy in iptables mode, CNI plugins, "
                    "iptables-save backups) see it as empty",
                    f"nft ip {name}",
                    {"backend": "iptables-nft", "family": "ip", "table": name, "source": source},
                    hint=f"See it with `nft list table ip {name}`; node.iptables.reject judges "
                    "it natively. Keep native rules in a table of their own name "
                    "(e.g. `table inet filter`), not in iptables' table names.",
                )
            )
        if legacy is not None and nft is not None:
            split = self._split(legacy, nft)
            if split is not None:
                finding, steps = split
                findings.append(finding)
                manual.extend(steps)
        fix = None
        if manual:
            fix = Fix(
                id=self.id,
                title="Move the rules into the backend that holds Kubernetes' chains",
                safety=FixSafety.MANUAL,
                manual_steps=manual,
            )
        present = ", ".join(view.label for view in (legacy, nft) if view is not None)
        return Verdict.from_findings(
            findings,
            summary="; ".join(f.message.split(":")[0] for f in findings),
            ok_summary=self._ok_summary(legacy, nft, present),
            fix=fix,
        )

    @staticmethod
    def _ok_summary(legacy: BackendView | None, nft: BackendView | None, present: str) -> str:
        holding = [v.label for v in (legacy, nft) if v is not None and v.ruleset.has_rules()]
        if not holding:
            return f"no iptables rules in any backend ({present})"
        return f"every iptables rule is in {holding[0]} (read: {present})"

    def _split(self, legacy: BackendView, nft: BackendView) -> tuple[Finding, list[str]] | None:
        views = (legacy, nft)
        kube = {view.label: view.kube_chains() for view in views}
        other = {view.label: view.other_rules() for view in views}
        if kube[legacy.label] and kube[nft.label]:
            evidence: dict[str, Any] = {
                "backend": "iptables-legacy and iptables-nft",
                "kube_chains": kube,
                "sources": [legacy.output.source, nft.output.source],
            }
            return (
                Finding(
                    Severity.WARN,
                    "Kubernetes' KUBE-* chains are in both iptables-legacy and iptables-nft: "
                    "the kubelet and kube-proxy (or two kube-proxy versions) use different "
                    "backends",
                    "iptables-legacy/iptables-nft",
                    evidence,
                    hint="Make every component use the host's backend (kube-proxy images "
                    "≥ 1.17 detect it; the kubelet uses the host's `iptables`), then empty "
                    "the other backend.",
                ),
                [],
            )
        holder = next((v for v in views if kube[v.label]), None)
        if holder is None:
            with_rules = [v for v in views if other[v.label]]
            if len(with_rules) < 2:
                return None
            return (
                Finding(
                    Severity.WARN,
                    "both iptables-legacy and iptables-nft hold rules: the order between them "
                    "is what neither listing shows",
                    "iptables-legacy/iptables-nft",
                    {"backend": "iptables-legacy and iptables-nft", "rules": other},
                    hint="Keep one backend (the distro's default) and move the other's rules.",
                ),
                move_commands(legacy, nft),
            )
        stray = nft if holder is legacy else legacy
        if not other[stray.label]:
            return None
        blocking = stray.blocking_rules()
        severity = Severity.FAIL if blocking else Severity.WARN
        shown = blocking or other[stray.label]
        message = (
            f"Kubernetes' KUBE-* chains are in {holder.label}, other rules in {stray.label}: "
            f"{'; '.join(f'`{r}`' for r in shown[:3])}"
            f"{' …' if len(shown) > 3 else ''} "
            + (
                "blocks traffic whatever the KUBE-* chains accept, and "
                f"`{holder.backend.save}` does not show it"
                if blocking
                else "apply beside them, in an order neither listing shows"
            )
        )
        evidence = {
            "backend": stray.label,
            "family": "ip",
            "table": "filter" if blocking else None,
            "kube_backend": holder.label,
            "kube_chains": kube[holder.label],
            "other_rules": other[stray.label],
            "blocking": blocking,
            "sources": [legacy.output.source, nft.output.source],
        }
        hint = (
            f"Keep {holder.label} (kube-proxy's choice) and move the rules of {stray.label} "
            "into it (the plan lists the commands); node.iptables.reject then judges them in "
            "one listing. Shown with " + shlex.join([stray.backend.save]) + "."
        )
        return (
            Finding(severity, message, f"{stray.label} filter", evidence, hint=hint),
            move_commands(stray, holder),
        )
