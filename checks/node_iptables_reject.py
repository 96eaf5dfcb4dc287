"""node.iptables.reject: a REJECT/DROP in the filter table that Kubernetes traffic hits first.

The netfilter part is generic and lives in libraries: :mod:`doctor.parse.iptables` parses
``iptables-save`` / ``/etc/sysconfig/iptables`` text into tables, chains and ordered rules,
and :mod:`doctor.analysis.iptables_eval` walks one probe packet through the filter table with
three-valued matching (yes, no, or "cannot tell": marks, ipsets, physdev...). This module
is the Kubernetes part, each piece usable alone (the tests drive them directly):

* who owns a rule (Kubernetes, a CNI, Docker, or the administrator), and so whose
  decision a possibly-matching ACCEPT is;
* which kinds of traffic a node needs (the probes), which rule decides each of them, and
  what the fix has to remove or append so that every probe gets through;
* the findings and the fix plan.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from doctor.analysis.iptables_eval import (
    Fate,
    FilterView,
    Outcome,
    Probe,
    Tri,
    rule_matches,
    view_of,
    walk_chains,
)
from doctor.core.context import CheckContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Action, Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.core.sources import CommandOutput, NodeFacts
from doctor.parse.iptables import Rule, Ruleset, Token, parse_rule, parse_ruleset
from fixes.base import WriteFile
from fixes.iptables import (
    DEFAULT_BACKEND,
    LEGACY_BACKEND,
    NFT_BACKEND,
    AppendRule,
    DeleteRule,
    IptablesBackend,
    KeepRule,
    SnapshotRuleset,
)

SYSCONFIG_IPTABLES = "/etc/sysconfig/iptables"

#: Weave Net's default IPALLOC_RANGE; used when the rules do not name the pod network.
DEFAULT_POD_CIDR = "10.32.0.0/12"


# --------------------------------------------------------------------------------------
# Who owns a rule
# --------------------------------------------------------------------------------------

_MANAGED_CHAIN_PREFIXES = (
    ("KUBE-", "Kubernetes (kube-proxy/kubelet)"),
    ("WEAVE", "Weave Net"),
    ("DOCKER", "Docker"),
    ("cali-", "Calico"),
    ("cilium", "Cilium"),
    ("CILIUM", "Cilium"),
    ("FLANNEL", "flannel"),
    ("flannel", "flannel"),
    ("CNI-", "CNI plugins"),
    ("ANTREA", "Antrea"),
)
_MANAGED_INTERFACES = (
    ("weave", "Weave Net"),
    ("vethwe", "Weave Net"),
    ("cali", "Calico"),
    ("flannel", "flannel"),
    ("cni", "CNI plugins"),
    ("cilium", "Cilium"),
    ("docker", "Docker"),
)
_FIREWALLD_CHAINS = ("INPUT_ZONES", "INPUT_direct", "FORWARD_IN_ZONES", "FORWARD_direct")


def managed_chain_owner(chain: str) -> str | None:
    """Who writes a chain, when it is Kubernetes, a CNI or Docker.

    DOCKER-USER is the exception: Docker creates it empty for the administrator's own rules.
    """
    if chain == "DOCKER-USER":
        return None
    return next(
        (owner for prefix, owner in _MANAGED_CHAIN_PREFIXES if chain.startswith(prefix)), None
    )


def managed_owner(rule: Rule) -> str | None:
    """The component that manages ``rule``, or None for distro/administrator rules.

    In built-in chains the managed rules are told apart by the interfaces they name
    (weave's ``-o weave -j DROP``, ``-i docker0 -o weave -j DROP``) or by their comment
    (kube-proxy's and kubelet's comments all say "kubernetes").
    """
    owner = managed_chain_owner(rule.chain)
    if owner:
        return owner
    interfaces = [o.args[0] for o in rule.basics if o.name in ("-i", "-o") and o.args]
    for prefix, name in _MANAGED_INTERFACES:
        if any(iface.startswith(prefix) for iface in interfaces):
            return name
    comment = rule.comment().lower()
    if "kubernetes" in comment:
        return "Kubernetes (kube-proxy/kubelet)"
    if comment.startswith("cali:"):
        return "Calico"
    return None


def is_targeted(rule: Rule) -> bool:
    """A rule that singles out traffic by address or port was written on purpose."""
    if any(o.name in ("-s", "-d") for o in rule.basics):
        return True
    port_options = {"--dport", "--sport", "--dports", "--sports", "--ports"}
    port_options |= {"--destination-port", "--source-port", "--destination-ports"}
    return any(
        module.name in ("set", "iprange")
        or any(option.name in port_options for option in module.options)
        for module in rule.modules
    )


def walk(view: FilterView, probe: Probe, pod_cidr: ipaddress.IPv4Network, source: str) -> Outcome:
    """:func:`~doctor.analysis.iptables_eval.walk_chains` with Kubernetes' notion of ownership.

    An ACCEPT that may match (by mark, ipset...) in a rule Kubernetes, the CNI or Docker
    manages is their decision, so the walk stops there (DEFERRED) instead of blaming a
    REJECT further down; the same rule in an administrator's chain is "may not match".
    """
    return walk_chains(view, probe, pod_cidr, source, defers=managed_owner)


# --------------------------------------------------------------------------------------
# Analysis
# --------------------------------------------------------------------------------------


@dataclass
class Blocker:
    """A rule (or a DROP policy) that stops Kubernetes traffic."""

    chain: str
    rule: Rule | None
    via: tuple[Rule, ...]
    probes: list[Probe] = field(default_factory=list)
    #: 1 when it is hit today; n when it is hit once the blockers of round n-1 are removed.
    round: int = 1
    hidden_behind: list[Blocker] = field(default_factory=list)
    shadows: list[Rule] = field(default_factory=list)

    @property
    def policy(self) -> bool:
        return self.rule is None

    @property
    def removable(self) -> bool:
        """Blanket rules are deleted, DROP policies get ACCEPTs; targeted rules stay."""
        return self.rule is None or not is_targeted(self.rule)

    def describe(self) -> str:
        if self.rule is None:
            return f":{self.chain} DROP"
        return self.rule.text


@dataclass(frozen=True)
class PodNetwork:
    cidr: ipaddress.IPv4Network
    origin: str
    bridges: tuple[str, ...]


def detect_pod_network(rulesets: Sequence[Ruleset]) -> PodNetwork:
    """The pod CIDR and the overlay bridges, from what kube-proxy and Weave wrote."""
    cidr: str | None = None
    origin = "default: Weave Net's IPALLOC_RANGE"
    bridges: list[str] = []
    for ruleset in rulesets:
        for table in ruleset.tables.values():
            for chain in table.chains.values():
                for rule in chain.rules:
                    for option in rule.basics:
                        name = option.args[0] if option.name in ("-i", "-o") else ""
                        if name in ("weave", "cni0", "cbr0") and name not in bridges:
                            bridges.append(name)
                    if cidr is not None:
                        continue
                    source = rule.basic("-s")
                    if source is None or source.negated:
                        continue
                    if chain.name == "KUBE-FORWARD" and "pod source rule" in rule.comment():
                        cidr, origin = source.args[0], f"KUBE-FORWARD: {rule.text}"
                    elif table.name == "nat" and chain.name == "WEAVE" and rule.target == "RETURN":
                        cidr, origin = source.args[0], f"nat WEAVE: {rule.text}"
    network = ipaddress.ip_network(DEFAULT_POD_CIDR)
    if cidr is not None:
        try:
            parsed = ipaddress.ip_network(cidr, strict=False)
            if isinstance(parsed, ipaddress.IPv4Network):
                network = parsed
            else:
                origin = f"default: Weave Net's IPALLOC_RANGE ({cidr} is not IPv4)"
        except ValueError:
            origin = f"default: Weave Net's IPALLOC_RANGE ({cidr!r} is not a network)"
    assert isinstance(network, ipaddress.IPv4Network)
    return PodNetwork(network, origin, tuple(sorted(bridges)) or ("weave",))


def build_probes(pods: PodNetwork) -> list[Probe]:
    """The traffic a Kubernetes node must let in and forward."""

    def port(label: str, proto: str, number: int) -> Probe:
        spec = ("-p", proto, "-m", proto, "--dport", str(number), "-j", "ACCEPT")
        return Probe(label, "INPUT", proto, number, accept_spec=spec)

    probes = [
        port("tcp/6443 API server", "tcp", 6443),
        port("tcp/10250 kubelet", "tcp", 10250),
        port("tcp/2379 etcd clients", "tcp", 2379),
        port("tcp/2380 etcd peers", "tcp", 2380),
    ]
    if "weave" in pods.bridges:
        probes += [
            port("tcp/6783 Weave Net control", "tcp", 6783),
            port("udp/6783 Weave Net data (sleeve)", "udp", 6783),
            port("udp/6784 Weave Net data (fastdp)", "udp", 6784),
        ]
    cidr = str(pods.cidr)
    for bridge in pods.bridges:
        probes += [
            Probe(
                f"traffic from pods to the node -i {bridge} (tcp/6443)",
                "INPUT",
                "tcp",
                6443,
                in_iface=bridge,
                src_in_pods=True,
                accept_spec=("-i", bridge, "-j", "ACCEPT"),
            ),
            Probe(
                f"forwarded pod traffic -i {bridge}",
                "FORWARD",
                "tcp",
                80,
                in_iface=bridge,
                src_in_pods=True,
                accept_spec=("-s", cidr, "-j", "ACCEPT"),
            ),
            Probe(
                f"forwarded pod traffic -o {bridge}",
                "FORWARD",
                "tcp",
                80,
                out_iface=bridge,
                dst_in_pods=True,
                accept_spec=("-d", cidr, "-j", "ACCEPT"),
            ),
        ]
    return probes


_MAX_ROUNDS = 64


def _accept_rule(chain: str, spec: tuple[str, ...]) -> Rule:
    tokens = [Token(word) for word in spec]
    text = "-A " + chain + " " + " ".join(spec)
    return parse_rule("filter", chain, tokens, 0, text)


def find_blockers(ruleset: Ruleset, probes: Sequence[Probe], pods: PodNetwork) -> list[Blocker]:
    """Every rule or policy that stops a probe, now or once the ones before it are gone.

    Round 1 is today's ruleset. Each later round takes out the previous round's rules
    (and appends ACCEPTs where a policy dropped), so the fix the plan shows is the whole
    fix: a second REJECT waiting behind the first is found before anything is changed.
    """
    table = ruleset.filter
    if table is None:
        return []
    removed: set[tuple[str, int]] = set()
    appended: dict[str, list[Rule]] = {}
    last_blocker: dict[str, Blocker] = {}
    blockers: list[Blocker] = []
    for round_number in range(1, _MAX_ROUNDS + 1):
        view = view_of(table, frozenset(removed), appended)
        found: dict[tuple[str, int], Blocker] = {}
        for probe in probes:
            outcome = walk(view, probe, pods.cidr, ruleset.source)
            if outcome.fate is not Fate.BLOCKED:
                continue
            if outcome.rule is not None and managed_owner(outcome.rule):
                continue  # Kubernetes, the CNI or Docker decided: their call
            key = outcome.rule.key if outcome.rule else (outcome.chain, 0)
            blocker = found.get(key)
            if blocker is None:
                blocker = Blocker(outcome.chain, outcome.rule, outcome.via, round=round_number)
                found[key] = blocker
            blocker.probes.append(probe)
            earlier = last_blocker.get(probe.label)
            if earlier is not None and earlier not in blocker.hidden_behind:
                blocker.hidden_behind.append(earlier)
        if not found:
            break
        for key, blocker in found.items():
            if blocker.rule is not None:
                blocker.shadows = _shadowed(view, blocker, pods)
                removed.add(key)
            else:
                specs = appended.setdefault(blocker.chain, [])
                for probe in blocker.probes:
                    rule = _accept_rule(blocker.chain, probe.accept_spec)
                    if all(r.spec != rule.spec for r in specs):
                        specs.append(rule)
            for probe in blocker.probes:
                last_blocker[probe.label] = blocker
        blockers.extend(sorted(found.values(), key=_chain_order))
    return blockers


def _chain_order(blocker: Blocker) -> tuple[int, str, int]:
    """INPUT before FORWARD, then by position: the order ``iptables -L`` lists them."""
    hooks = {"INPUT": 0, "FORWARD": 1}
    position = blocker.rule.position if blocker.rule else 1 << 30
    return (hooks.get(blocker.chain, 2), blocker.chain, position)


def policy_accepts(blocker: Blocker) -> list[tuple[str, ...]]:
    """The ACCEPT specs a DROP-policy blocker needs appended, without repeats."""
    specs: list[tuple[str, ...]] = []
    for probe in blocker.probes:
        if probe.accept_spec not in specs:
            specs.append(probe.accept_spec)
    return specs


def _shadowed(view: FilterView, blocker: Blocker, pods: PodNetwork) -> list[Rule]:
    """Later rules of the same chain that would accept (or hand to Kubernetes/CNI) the traffic."""
    assert blocker.rule is not None
    rules = view[blocker.chain].rules
    start = next(i for i, r in enumerate(rules) if r.key == blocker.rule.key) + 1
    shadowed: list[Rule] = []
    for rule in rules[start:]:
        target = rule.target or ""
        if target != "ACCEPT" and not (target in view and managed_chain_owner(target)):
            continue
        if any(rule_matches(rule, probe, pods.cidr) is Tri.YES for probe in blocker.probes):
            shadowed.append(rule)
    return shadowed


# --------------------------------------------------------------------------------------
# Reading the facts
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RulesetSource:
    """One backend's rules and the binaries that change them."""

    backend: IptablesBackend
    output: CommandOutput
    ruleset: Ruleset

    @property
    def backend_label(self) -> str:
        if self.backend is DEFAULT_BACKEND:
            variant = self.ruleset.variant()
            return f"iptables ({variant})" if variant else "iptables"
        return f"iptables-{self.backend.name}"


def read_rulesets(node: NodeFacts) -> tuple[list[RulesetSource], list[str]]:
    """The rulesets to analyse, plus notes on backends that could not be read.

    ``iptables-save`` is the primary fact. When the node has both ``iptables-legacy-save``
    and ``iptables-nft-save`` (or a bundle has both outputs), a rule in either backend
    filters packets, so both are read and every one holding rules is analysed; the fix then
    uses that backend's own binaries.
    """
    primary = node.command("iptables-save.txt", ["iptables-save"])
    variants: list[tuple[IptablesBackend, CommandOutput]] = []
    notes: list[str] = []
    errors: list[FactError] = []
    for backend in (LEGACY_BACKEND, NFT_BACKEND):
        try:
            output = node.command(f"{backend.save}.txt", [backend.save])
        except FactMissing:
            continue
        except FactError as exc:
            notes.append(str(exc))
            errors.append(exc)
            continue
        variants.append((backend, output))
    if len(variants) + len(errors) < 2:
        sources = [
            RulesetSource(DEFAULT_BACKEND, primary, parse_ruleset(primary.stdout, primary.source))
        ]
        return sources, []
    if not variants:
        raise errors[0]
    parsed = [
        RulesetSource(backend, output, parse_ruleset(output.stdout, output.source))
        for backend, output in variants
    ]
    with_rules = [source for source in parsed if source.ruleset.has_rules()]
    return (with_rules or parsed), notes


@dataclass(frozen=True)
class SysconfigFile:
    path: str
    text: str
    ruleset: Ruleset
    mode: int


def read_sysconfig(node: NodeFacts) -> SysconfigFile | None:
    text = node.read_text(SYSCONFIG_IPTABLES)
    if text is None:
        return None
    display = node.display_path(SYSCONFIG_IPTABLES)
    try:
        mode = os.stat(node.host_path(SYSCONFIG_IPTABLES)).st_mode & 0o7777
    except OSError:
        mode = 0o600
    return SysconfigFile(SYSCONFIG_IPTABLES, text, parse_ruleset(text, display), mode)


# --------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------


class IptablesReject(Check):
    """A REJECT/DROP in the filter table that Kubernetes traffic reaches before any ACCEPT.

    Reads `iptables-save` (both the nft and the legacy backend when a node has both) and
    `/etc/sysconfig/iptables`. For each kind of traffic a node needs — API server tcp/6443,
    kubelet tcp/10250, etcd tcp/2379-2380, Weave Net tcp/6783 and udp/6783-6784, traffic
    from the pod interface (`-i weave`) to the node, and forwarded pod traffic in and out of
    the overlay bridge (pod CIDR from kube-proxy's KUBE-FORWARD rules or Weave's NAT rules,
    else 10.32.0.0/12) — it walks the filter table the way netfilter does: INPUT or FORWARD
    in order, into user chains and back (RETURN, `-g`), down to the chain policy, and finds
    the rule that decides the first (NEW) packet. Matches it cannot evaluate (marks, ipsets,
    physdev, recent...) are taken as "may not match" — except an ACCEPT of this kind in a
    chain Kubernetes or the CNI manages: that component decides, nothing after it is blamed.

    A REJECT/DROP, or a DROP policy, that decides such a packet is a finding, with the exact
    rule, its table, chain and position (`iptables -L --line-numbers`), the traffic it
    blocks, the ACCEPT rules it shadows, its owner and the backend. Rules that Kubernetes,
    Weave, Docker or a CNI manage (chains KUBE-*, WEAVE-*, DOCKER*, cali-*, cilium*,
    flannel*, CNI-*; weave's `-o weave -j DROP`; kube-proxy's "has no endpoints" REJECT)
    are their owner's decision and never reported (DOCKER-USER is the administrator's
    chain, so it is judged like INPUT). A REJECT that comes after an ACCEPT for the same
    traffic blocks nothing we need and is not reported either. A blanket rule in
    `/etc/sysconfig/iptables` that is not live now but would block once iptables.service
    loads the file at boot is a warning.

    ## Why it matters
    CentOS/RHEL 7 ship `-A INPUT -j REJECT --reject-with icmp-host-prohibited` and the same
    in FORWARD (iptables-services, or firewalld). Docker, kubeadm and Weave 1.x *append*
    their rules, which land after the REJECT and never match: pods cannot reach each other
    or the API ("dial tcp 10.96.0.1:443: getsockopt: no route to host"), kube-dns never
    becomes ready, nodes cannot join. Docker ≥ 1.13 also sets `:FORWARD DROP`, which drops
    pod traffic unless kube-proxy or the CNI accepts it.

    ## How to fix
    Delete the blanket rules (`iptables -t filter -D FORWARD -j REJECT --reject-with
    icmp-host-prohibited`) and remove the same lines from `/etc/sysconfig/iptables` so they
    do not come back at boot; or add ACCEPT rules for the Kubernetes ports and the pod
    network above them. With firewalld, open the ports with `firewall-cmd` or disable it
    (see node.firewalld). For a DROP policy on FORWARD, accept the pod network.

    ## Fix safety
    unsafe: it changes what the node's firewall lets through. The fix first saves
    `iptables-save -c` into the backup directory (rollback restores the filter table from
    it with `iptables-restore -c -T filter`), then deletes each offending blanket rule by its
    exact specification (never a flush, never by number), using the binaries of the backend
    the rule lives in (`iptables-nft`/`iptables-legacy` when a node has both). For a DROP
    policy it appends `-A FORWARD -s <pod CIDR> -j ACCEPT` and `-d <pod CIDR> -j ACCEPT`
    (and on INPUT an ACCEPT per blocked port) instead of `iptables -P FORWARD ACCEPT`:
    appended rules only see packets nothing else decided, so network policy (weave-npc)
    keeps working, and Docker's reason for the DROP policy — not routing the LAN into
    containers — still holds for everything that is not pod traffic. Where
    `/etc/sysconfig/iptables` exists it is rewritten with the same rules removed (every
    other byte and the file mode unchanged), so they do not come back at boot. Rules that
    target Kubernetes traffic by port or address were written on purpose and are left for a
    human (the plan says so): while one remains the re-check fails and the fix is rolled
    back. With firewalld or ufw, their next reload puts their rules back.
    """

    id = "node.iptables.reject"
    title = "No blanket iptables REJECT/DROP ahead of Kubernetes traffic"
    scope = Scope.NODE
    fix_safety = FixSafety.UNSAFE

    def run(self, ctx: CheckContext) -> Verdict:
        sources, notes = read_rulesets(ctx.node)
        sysconfig = read_sysconfig(ctx.node)
        pods = detect_pod_network(
            [s.ruleset for s in sources] + ([sysconfig.ruleset] if sysconfig else [])
        )
        probes = build_probes(pods)
        firewalld = any(
            name in source.ruleset.filter.chains
            for source in sources
            if source.ruleset.filter is not None
            for name in _FIREWALLD_CHAINS
        )

        live: list[tuple[RulesetSource, list[Blocker]]] = [
            (source, find_blockers(source.ruleset, probes, pods)) for source in sources
        ]
        boot: list[Blocker] = (
            find_blockers(sysconfig.ruleset, probes, pods) if sysconfig is not None else []
        )

        findings: list[Finding] = []
        for source, blockers in live:
            for blocker in blockers:
                findings.append(
                    _live_finding(blocker, source, sources, sysconfig, pods, firewalld, notes)
                )
        # The live ruleset is the evidence: a file rule that is live too is judged there
        # (where Kubernetes' and the CNI's rules sit around it). Only rules missing live
        # are judged on the file alone; DROP policies get their ACCEPTs from Kubernetes
        # and the CNI at runtime, so those are left to the live evaluation as well.
        live_rules = {
            (chain.name, rule.spec)
            for source in sources
            if source.ruleset.filter is not None
            for chain in source.ruleset.filter.chains.values()
            for rule in chain.rules
        }
        boot_only = [
            b for b in boot if b.rule is not None and (b.chain, b.rule.spec) not in live_rules
        ]
        if sysconfig is not None:
            findings.extend(_boot_finding(b, sysconfig, pods) for b in boot_only)

        fix = _build_fix(live, boot_only, sysconfig)
        return Verdict.from_findings(
            findings,
            summary=_summary(live, boot_only, sysconfig),
            ok_summary=_ok_summary(sources, probes, sysconfig),
            fix=fix,
        )


# --------------------------------------------------------------------------------------
# Findings, summary, fix
# --------------------------------------------------------------------------------------


def _where(blocker: Blocker) -> str:
    if blocker.rule is None:
        return f"filter {blocker.chain} policy DROP"
    return f"filter {blocker.chain} #{blocker.rule.position}"


def _labels(blocker: Blocker) -> str:
    return ", ".join(probe.label for probe in blocker.probes)


def _owner(
    blocker: Blocker,
    sources: Sequence[RulesetSource],
    sysconfig: SysconfigFile | None,
    firewalld: bool,
) -> str:
    if blocker.rule is None:
        docker = any(
            source.ruleset.filter is not None and "DOCKER" in source.ruleset.filter.chains
            for source in sources
        )
        if docker and blocker.chain == "FORWARD":
            return "Docker ≥ 1.13 sets this policy when it enables ip_forward (moby/moby#28257)"
        return "the chain's policy"
    rule = blocker.rule
    if rule.chain.startswith("ufw-"):
        return "ufw"
    if firewalld:
        return "firewalld"
    if sysconfig is not None:
        line = _sysconfig_line(sysconfig, rule)
        if line is not None:
            return f"iptables-services ({sysconfig.path} line {line})"
    return "local firewall rules (not Kubernetes, a CNI or Docker)"


def _sysconfig_line(sysconfig: SysconfigFile, rule: Rule) -> int | None:
    table = sysconfig.ruleset.filter
    if table is None or rule.chain not in table.chains:
        return None
    return next((r.line for r in table.chains[rule.chain].rules if r.spec == rule.spec), None)


def _hint(blocker: Blocker, backend: IptablesBackend, owner: str, pods: PodNetwork) -> str:
    if blocker.rule is None:
        cidr = pods.cidr
        if blocker.chain == "FORWARD":
            return (
                f"Accept the pod network after the existing rules: `{backend.iptables} -A FORWARD "
                f"-s {cidr} -j ACCEPT` and `-d {cidr} -j ACCEPT` (kdoctor fix does this); "
                "kube-proxy ≥ 1.8 with --cluster-cidr also accepts it in KUBE-FORWARD."
            )
        return (
            f"Append ACCEPT rules for the blocked traffic to {blocker.chain} "
            "(kdoctor fix does this), or open the ports in your firewall tool."
        )
    delete = shlex.join([backend.iptables, "-t", "filter", "-D", blocker.chain, *blocker.rule.spec])
    if not blocker.removable:
        return (
            "This rule singles out this traffic (by port or address), so kdoctor will not "
            f"remove it: delete it by hand if it is not wanted (`{delete}`), "
            "or add an ACCEPT above it."
        )
    hint = (
        f"Delete it (`{delete}`) and remove it from where it is persisted, or add ACCEPT rules "
        "for the Kubernetes ports and the pod network above it; "
        "`kdoctor fix node.iptables.reject --unsafe` deletes it with a backup."
    )
    if owner == "firewalld":
        hint += (
            " firewalld puts this rule back on reload: open the ports with firewall-cmd "
            "or stop and disable firewalld (see node.firewalld)."
        )
    elif owner == "ufw":
        hint += " ufw puts it back on reload: allow the ports with `ufw allow`."
    return hint


def _evidence(blocker: Blocker, pods: PodNetwork) -> dict[str, Any]:
    evidence: dict[str, Any] = {"table": "filter", "chain": blocker.chain}
    if blocker.rule is not None:
        evidence.update(
            position=blocker.rule.position,
            rule=blocker.rule.text,
            line=blocker.rule.line,
            target=blocker.rule.target,
        )
    else:
        evidence.update(policy="DROP", rule=f":{blocker.chain} DROP")
    evidence["blocks"] = [probe.label for probe in blocker.probes]
    evidence["shadows"] = [rule.text for rule in blocker.shadows]
    if blocker.via:
        evidence["reached_via"] = [f"{r.chain} #{r.position}: {r.text}" for r in blocker.via]
    if blocker.hidden_behind:
        evidence["hidden_behind"] = [b.describe() for b in blocker.hidden_behind]
    evidence["pod_cidr"] = f"{pods.cidr} ({pods.origin})"
    evidence["fixable"] = blocker.removable
    return evidence


def _verb(blocker: Blocker) -> str:
    return "rejects" if blocker.rule is not None and blocker.rule.target == "REJECT" else "drops"


def _live_finding(
    blocker: Blocker,
    source: RulesetSource,
    sources: Sequence[RulesetSource],
    sysconfig: SysconfigFile | None,
    pods: PodNetwork,
    firewalld: bool,
    notes: Sequence[str],
) -> Finding:
    owner = _owner(blocker, sources, sysconfig, firewalld)
    evidence = _evidence(blocker, pods)
    evidence.update(owner=owner, backend=source.backend_label, source=source.output.source)
    if notes:
        evidence["unreadable_backends"] = list(notes)
    if sysconfig is not None and blocker.rule is not None:
        line = _sysconfig_line(sysconfig, blocker.rule)
        if line is not None:
            evidence["persisted_in"] = f"{sysconfig.path}:{line}"
    if blocker.rule is None:
        message = (
            f"{_where(blocker)} {_verb(blocker)} {_labels(blocker)}: nothing in "
            f"{blocker.chain} accepts it first"
        )
        resource = f"filter/{blocker.chain} policy DROP"
    else:
        message = f"`{blocker.rule.text}` ({_where(blocker)}) {_verb(blocker)} {_labels(blocker)}"
        if blocker.hidden_behind:
            message += (
                " once `"
                + "`, `".join(b.describe() for b in blocker.hidden_behind)
                + "` is removed"
            )
        else:
            message += " before anything accepts it"
        resource = blocker.rule.text
    return Finding(
        severity=Severity.FAIL,
        message=message,
        resource=resource,
        evidence=evidence,
        hint=_hint(blocker, source.backend, owner, pods),
    )


def _boot_finding(blocker: Blocker, sysconfig: SysconfigFile, pods: PodNetwork) -> Finding:
    evidence = _evidence(blocker, pods)
    evidence.update(source=sysconfig.ruleset.source, owner="iptables-services")
    where = f"{sysconfig.path} line {blocker.rule.line}" if blocker.rule else sysconfig.path
    what = f"`{blocker.describe()}`"
    return Finding(
        severity=Severity.WARN,
        message=(
            f"{where}: {what} is not live now but {_verb(blocker)} {_labels(blocker)} "
            "after the next boot (iptables.service loads this file)"
        ),
        resource=f"{sysconfig.path}:{blocker.rule.line}" if blocker.rule else sysconfig.path,
        evidence=evidence,
        hint=f"Remove the line from {sysconfig.path} (kdoctor fix does this).",
    )


def _summary(
    live: Sequence[tuple[RulesetSource, list[Blocker]]],
    boot_only: Sequence[Blocker],
    sysconfig: SysconfigFile | None,
) -> str:
    parts: list[str] = []
    live_blockers = [(source, b) for source, blockers in live for b in blockers]
    if live_blockers:
        rules = sum(1 for _, b in live_blockers if b.rule is not None)
        policies = len(live_blockers) - rules
        counted = []
        if rules:
            counted.append(f"{rules} iptables rule{'s' if rules != 1 else ''}")
        if policies:
            counted.append(f"{policies} DROP polic{'ies' if policies != 1 else 'y'}")
        backends = {source.backend_label for source, _ in live_blockers}
        where = ", ".join(_where(b) for _, b in live_blockers)
        verb = "blocks" if len(live_blockers) == 1 else "block"
        parts.append(
            f"{' and '.join(counted)} {verb} Kubernetes traffic ({where}; "
            f"{', '.join(sorted(backends))})"
        )
    if boot_only and sysconfig is not None:
        count = len(boot_only)
        parts.append(
            f"{count} rule{'s' if count != 1 else ''} in {sysconfig.path} would block "
            "Kubernetes traffic after the next boot"
        )
    return "; ".join(parts)


def _ok_summary(
    sources: Sequence[RulesetSource], probes: Sequence[Probe], sysconfig: SysconfigFile | None
) -> str:
    backends = ", ".join(source.backend_label for source in sources)
    if not any(source.ruleset.has_rules() for source in sources):
        return f"no iptables rules ({backends}): nothing blocks Kubernetes traffic"
    text = (
        f"nothing in filter INPUT/FORWARD blocks the {len(probes)} kinds of "
        f"Kubernetes traffic ({backends})"
    )
    if sysconfig is not None:
        text += f"; {sysconfig.path} neither"
    return text


def _build_fix(
    live: Sequence[tuple[RulesetSource, list[Blocker]]],
    boot_only: Sequence[Blocker],
    sysconfig: SysconfigFile | None,
) -> Fix | None:
    actions: list[Action] = []
    removed_specs: set[tuple[str, tuple[str, ...]]] = set()
    for source, blockers in live:
        steps: list[Action] = []
        for blocker in blockers:
            if blocker.rule is None:
                steps.extend(
                    AppendRule(source.backend, blocker.chain, spec)
                    for spec in policy_accepts(blocker)
                )
            elif blocker.removable:
                steps.append(DeleteRule(source.backend, blocker.chain, blocker.rule.spec))
                removed_specs.add((blocker.chain, blocker.rule.spec))
            else:
                steps.append(KeepRule(blocker.rule.text, "it targets this traffic on purpose"))
        if any(not isinstance(step, KeepRule) for step in steps):
            actions.append(SnapshotRuleset(source.backend))
        actions.extend(steps)
    if sysconfig is not None:
        rewrite = _rewrite_sysconfig(sysconfig, boot_only, removed_specs)
        if rewrite is not None:
            actions.append(
                WriteFile(sysconfig.path, rewrite, old_content=sysconfig.text, mode=sysconfig.mode)
            )
    if not any(not isinstance(action, KeepRule) for action in actions):
        return None
    return Fix(
        id="node.iptables.reject",
        title="Remove the blanket REJECT/DROP rules (ruleset backed up first), persist the change",
        safety=FixSafety.UNSAFE,
        actions=actions,
    )


def _rewrite_sysconfig(
    sysconfig: SysconfigFile,
    boot_only: Sequence[Blocker],
    removed_specs: set[tuple[str, tuple[str, ...]]],
) -> str | None:
    """The file without the offending lines, every other byte as it was; None if unchanged.

    A line goes when it is a rule the fix deletes from the live ruleset, or a blanket rule
    that is not live but would block Kubernetes traffic once the file is loaded at boot.
    """
    table = sysconfig.ruleset.filter
    if table is None:
        return None
    drop_lines = {b.rule.line for b in boot_only if b.rule is not None and b.removable}
    for chain in table.chains.values():
        for rule in chain.rules:
            if (chain.name, rule.spec) in removed_specs:
                drop_lines.add(rule.line)
    if not drop_lines:
        return None
    lines = sysconfig.text.split("\n")
    return "\n".join(line for number, line in enumerate(lines, start=1) if number not in drop_lines)
