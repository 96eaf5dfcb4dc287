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
from doctor.analysis.nft_eval import NftBlocker, NftUnjudged, WalkError, find_nft_blockers
from doctor.core.context import CheckContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Action, Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.core.sources import CommandOutput, NodeFacts
from doctor.parse.iptables import Rule, Ruleset, Token, parse_rule, parse_ruleset
from doctor.parse.nft import (
    NftRuleset,
    NftTable,
    parse_nft_ruleset,
    script_chain_rules,
    script_tables,
)
from fixes.base import Command, WriteFile
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
from fixes.nft import DeleteNftRule, SnapshotNftTable

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
    try:
        primary: CommandOutput | None = node.command("iptables-save.txt", ["iptables-save"])
    except FactMissing:
        primary = None
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
    if len(variants) + len(errors) < 2 and primary is not None:
        sources = [
            RulesetSource(DEFAULT_BACKEND, primary, parse_ruleset(primary.stdout, primary.source))
        ]
        return sources, []
    if not variants and not errors:
        return [], []
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

    Native nftables (`nft -j list ruleset`: firewalld's `table inet firewalld`, Debian's
    `/etc/nftables.conf`, kube-proxy's nftables mode, Calico, Cilium) is judged as the kernel
    runs it: every base chain on the input or forward hook, lowest priority first; an accept
    ends only that chain, a drop or reject in any of them is final. iptables-nft's own tables
    are judged from `iptables-nft-save` (once, not twice); a table iptables calls
    "incompatible" is judged natively. Tables Kubernetes or a CNI write are their own
    decision. A rule kdoctor cannot evaluate (an unknown expression, a set or verdict map it
    cannot resolve, an `xt` match) that may drop the traffic is a warning naming the rule,
    never an ok. Each finding names the backend, family, table, chain, handle and owner.

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

    A native nft rule is deleted by handle (`nft delete rule FAMILY TABLE CHAIN handle N`,
    after checking the handle still names that rule) once its table is saved; rollback
    restores the table exactly from that save in one nft transaction. The deletion is
    persisted where the owner keeps it: the same line removed from `/etc/nftables.conf`
    (everything else and the mode unchanged). A firewalld table is never edited behind
    firewalld's back: the fix opens the ports with `firewall-cmd --permanent --add-port=…`,
    puts the overlay interface in zone trusted and reloads (undo removes them again).
    """

    id = "node.iptables.reject"
    title = "No blanket iptables REJECT/DROP ahead of Kubernetes traffic"
    scope = Scope.NODE
    fix_safety = FixSafety.UNSAFE

    def run(self, ctx: CheckContext) -> Verdict:
        sources, notes = read_rulesets(ctx.node)
        nft = read_nft(ctx.node)
        if not sources and nft is None:
            raise FactMissing(
                "neither iptables-save nor nft is there to read (not installed, or the "
                "bundle has no commands/iptables-save.txt or commands/nft-ruleset.json)"
            )
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

        _add_nft_handles(findings, nft)
        native = analyse_nft(nft, sources, probes, pods) if nft is not None else None
        if native is not None:
            findings.extend(native.findings())

        fix = _build_fix(live, boot_only, sysconfig, native)
        summary = "; ".join(
            part
            for part in (
                _summary(live, boot_only, sysconfig),
                native.summary() if native is not None else "",
            )
            if part
        )
        ok_summary = _ok_summary(sources, probes, sysconfig) if sources else ""
        if native is not None:
            ok_summary = "; ".join(p for p in (ok_summary, native.ok_summary(probes)) if p)
        return Verdict.from_findings(findings, summary=summary, ok_summary=ok_summary, fix=fix)


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
    native: NftAnalysis | None = None,
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
    if native is not None:
        actions.extend(native.fix_actions())
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


# --------------------------------------------------------------------------------------
# Native nftables: firewalld, nftables.conf, kube-proxy's nftables mode, CNIs
# --------------------------------------------------------------------------------------

#: Where distros persist a native ruleset: Debian/Ubuntu load the first, RHEL the second.
NFTABLES_SCRIPTS = ("/etc/nftables.conf", "/etc/sysconfig/nftables.conf")
_IPTABLES_TABLES = ("filter", "nat", "mangle", "raw", "security")

#: Native tables that Kubernetes, a CNI or Docker write, by name prefix.
_MANAGED_TABLES = (
    ("kube-proxy", "kube-proxy (nftables mode)"),
    ("calico", "Calico"),
    ("cilium", "Cilium"),
    ("antrea", "Antrea"),
    ("flannel", "flannel"),
    ("docker", "Docker"),
    ("kube-", "Kubernetes"),
)


@dataclass(frozen=True)
class NftScript:
    """An nft script the distro loads at boot, and the tables it declares."""

    path: str
    text: str
    mode: int
    tables: frozenset[tuple[str, str]]


@dataclass(frozen=True)
class NftFacts:
    output: CommandOutput
    ruleset: NftRuleset
    scripts: tuple[NftScript, ...]


def read_nft(node: NodeFacts) -> NftFacts | None:
    """``nft -j list ruleset`` and the boot scripts; None when nft is not there."""
    try:
        output = node.command("nft-ruleset.json", ["nft", "-j", "list", "ruleset"])
    except FactMissing:
        return None
    ruleset = parse_nft_ruleset(output.stdout, output.source)
    scripts: list[NftScript] = []
    for path in NFTABLES_SCRIPTS:
        text = node.read_text(path)
        if text is None:
            continue
        try:
            mode = os.stat(node.host_path(path)).st_mode & 0o7777
        except OSError:
            mode = 0o644
        scripts.append(NftScript(path, text, mode, frozenset(script_tables(text))))
    return NftFacts(output, ruleset, tuple(scripts))


def nft_owner(table: NftTable, scripts: Sequence[NftScript]) -> tuple[str, bool]:
    """Who writes a native table, and whether it is Kubernetes', a CNI's or Docker's."""
    if table.name == "firewalld":
        return "firewalld", False
    for prefix, owner in _MANAGED_TABLES:
        if table.name.startswith(prefix):
            return owner, True
    if any(chain.startswith("cali-") for chain in table.chains):
        return "Calico", True
    for script in scripts:
        if table.key in script.tables:
            return f"the distro's nftables.conf ({script.path})", False
    if table.family in ("ip", "ip6") and table.name in _IPTABLES_TABLES:
        return "iptables-nft (iptables rules the listing could not show as iptables)", False
    return "local nftables rules (not Kubernetes, a CNI, Docker or a file loaded at boot)", False


def iptables_covered_tables(
    sources: Sequence[RulesetSource], nft: NftRuleset
) -> set[tuple[str, str]]:
    """The ``ip`` tables iptables-nft wrote and the iptables listing already showed.

    Those are judged by the iptables evaluation (which knows their matches), so the native
    walk leaves them out instead of judging the same rules twice. A table iptables-nft-save
    called incompatible is not in its listing, so it is judged natively.
    """
    covered: set[tuple[str, str]] = set()
    for source in sources:
        if source.backend is LEGACY_BACKEND or source.ruleset.variant() == "legacy":
            continue
        for name in source.ruleset.tables:
            table = nft.tables.get(("ip", name))
            if table is not None and any(c.isupper() for c in "".join(table.chains)):
                covered.add(("ip", name))
    return covered


@dataclass
class NftAnalysis:
    facts: NftFacts
    blockers: list[NftBlocker]
    unjudged: list[NftUnjudged]
    pods: PodNetwork
    skipped: set[tuple[str, str]]

    def owner(self, table: NftTable) -> str:
        return nft_owner(table, self.facts.scripts)[0]

    def findings(self) -> list[Finding]:
        found = [self._blocker_finding(b) for b in self.blockers]
        found.extend(self._unjudged_finding(u) for u in self.unjudged)
        return found

    def _evidence(self, table: NftTable, chain: str, base: Any) -> dict[str, Any]:
        return {
            "backend": "nftables",
            "family": table.family,
            "table": table.name,
            "chain": chain,
            "base_chain": base.name,
            "hook": base.hook,
            "priority": base.priority,
            "owner": self.owner(table),
            "source": self.facts.output.source,
        }

    def _blocker_finding(self, blocker: NftBlocker) -> Finding:
        evidence = self._evidence(blocker.table, blocker.chain, blocker.base)
        verdict = blocker.verdict.describe() if blocker.verdict else "drop"
        verb = "rejects" if verdict.startswith("reject") else "drops"
        labels = ", ".join(p.label for p in blocker.probes)
        evidence.update(
            handle=blocker.rule.handle if blocker.rule else None,
            rule=blocker.rule.text() if blocker.rule else f"policy {verdict}",
            verdict=verdict,
            blocks=[p.label for p in blocker.probes],
            pod_cidr=f"{self.pods.cidr} ({self.pods.origin})",
        )
        if blocker.via:
            evidence["reached_via"] = [
                f"{r.chain} handle {r.handle}: {r.text()}" for r in blocker.via
            ]
        if blocker.hidden_behind:
            evidence["hidden_behind"] = [b.describe() for b in blocker.hidden_behind]
        where = (
            f"nftables {blocker.table.family} {blocker.table.name} {blocker.chain}"
            + (f" handle {blocker.rule.handle}" if blocker.rule else " policy")
            + f", hook {blocker.base.hook} priority {blocker.base.priority}"
        )
        if blocker.rule is None:
            message = (
                f"{where}: the policy {verb} {labels}: nothing in {blocker.chain} accepts it first"
            )
            resource = f"nft {blocker.table.family} {blocker.table.name} {blocker.chain} policy"
        else:
            message = f"`{blocker.rule.text()}` ({where}) {verb} {labels}"
            if blocker.hidden_behind:
                message += (
                    " once `"
                    + "`, `".join(b.describe() for b in blocker.hidden_behind)
                    + "` is gone"
                )
            resource = f"nft {blocker.rule.where}"
        severity = Severity.FAIL
        if blocker.unless:
            severity = Severity.WARN
            accepts = "; ".join(
                f"`{rule.text()}` (handle {rule.handle})" for rule, _ in blocker.unless
            )
            message += f" unless it uses the interface those accept: {accepts}"
            evidence["unless_accepted_by"] = [
                f"{r.chain} handle {r.handle}: {r.text()}" for r, _ in blocker.unless
            ]
        return Finding(severity, message, resource, evidence, hint=self._hint(blocker))

    def _hint(self, blocker: NftBlocker) -> str:
        owner = self.owner(blocker.table)
        if owner == "firewalld":
            return (
                "firewalld owns this table and rewrites it on every reload: open the ports with "
                "`firewall-cmd --permanent --add-port=…` and put the overlay interface in zone "
                "trusted (kdoctor fix does this), or stop and disable firewalld "
                "(see node.firewalld)."
            )
        if blocker.rule is None:
            return (
                f"Add accept rules for the Kubernetes ports and the pod network to "
                f"{blocker.table.family} {blocker.table.name} {blocker.chain}, where the table is "
                "persisted, or make its policy accept."
            )
        delete = shlex.join(
            ["nft", "delete", "rule", blocker.table.family, blocker.table.name, blocker.chain,
             "handle", str(blocker.rule.handle)]
        )  # fmt: skip
        return (
            f"Delete it (`{delete}`) and remove it from where it is persisted ({owner}); "
            "`kdoctor fix node.iptables.reject --unsafe` does both with a backup."
        )

    def _unjudged_finding(self, item: NftUnjudged) -> Finding:
        entry = item.uncertain
        evidence = self._evidence(item.table, entry.rule.chain, item.base)
        evidence.update(
            handle=entry.rule.handle,
            rule=entry.rule.text(),
            could=entry.could.describe(),
            reason=entry.reason,
            blocks=[p.label for p in item.probes],
            expr=list(entry.rule.expr),
        )
        labels = ", ".join(p.label for p in item.probes)
        return Finding(
            Severity.WARN,
            f"kdoctor cannot evaluate `{entry.rule.text()}` (nftables {entry.rule.where}: "
            f"{entry.reason}); it may {entry.could.describe()} {labels}",
            f"nft {entry.rule.where}",
            evidence,
            hint="Read the rule and decide whether it can match Kubernetes traffic; "
            "`nft -a list chain "
            + f"{item.table.family} {item.table.name} {entry.rule.chain}` shows it.",
        )

    def summary(self) -> str:
        certain = [b for b in self.blockers if b.certain]
        parts = []
        if certain:
            where = ", ".join(
                f"{b.table.family} {b.table.name} {b.chain}"
                + (f" handle {b.rule.handle}" if b.rule else " policy")
                for b in certain
            )
            count = len(certain)
            parts.append(
                f"{count} nftables rule{'s' if count != 1 else ''} block"
                f"{'s' if count == 1 else ''} Kubernetes traffic ({where})"
            )
        conditional = len(self.blockers) - len(certain)
        if conditional:
            parts.append(
                f"{conditional} nftables rule{'s' if conditional != 1 else ''} "
                "block it on some interfaces"
            )
        if self.unjudged:
            count = len(self.unjudged)
            parts.append(
                f"{count} nftables rule{'s' if count != 1 else ''} "
                "kdoctor cannot evaluate may block it"
            )
        return "; ".join(parts)

    def ok_summary(self, probes: Sequence[Probe]) -> str:
        judged = [t for t in self.facts.ruleset.tables.values() if t.key not in self.skipped]
        if not judged:
            return "no native nftables tables"
        names = ", ".join(f"{t.family} {t.name} ({self.owner(t)})" for t in judged)
        return (
            f"nothing in the native nftables tables blocks the {len(probes)} kinds of "
            f"Kubernetes traffic: {names}"
        )

    def fix_actions(self) -> list[Action]:
        """Per table: snapshot, delete each blocker by handle, persist where its owner does."""
        actions: list[Action] = []
        firewalld_probes: list[Probe] = []
        by_table: dict[tuple[str, str], list[NftBlocker]] = {}
        for blocker in self.blockers:
            if not blocker.certain:
                continue
            if self.owner(blocker.table) == "firewalld":
                firewalld_probes.extend(p for p in blocker.probes if p not in firewalld_probes)
                continue
            by_table.setdefault(blocker.table.key, []).append(blocker)
        for blockers in by_table.values():
            table = blockers[0].table
            steps: list[Action] = []
            deleted: list[NftBlocker] = []
            for blocker in blockers:
                if blocker.rule is None:
                    steps.append(
                        KeepRule(
                            blocker.describe(),
                            "a chain policy: accept the traffic where the table is persisted",
                        )
                    )
                    continue
                if any(
                    d.rule is not None and d.rule.handle == blocker.rule.handle for d in deleted
                ):
                    continue
                deleted.append(blocker)
                steps.append(
                    DeleteNftRule(table.family, table.name, blocker.chain, blocker.rule.handle,
                                  blocker.rule.expr, blocker.rule.text())
                )  # fmt: skip
            if deleted:
                actions.append(SnapshotNftTable(table.family, table.name))
            actions.extend(steps)
            if deleted:
                actions.extend(self._persist(table, deleted))
        if firewalld_probes:
            actions.extend(_firewalld_actions(firewalld_probes))
        return actions

    def _persist(self, table: NftTable, deleted: Sequence[NftBlocker]) -> list[Action]:
        script = next((s for s in self.facts.scripts if table.key in s.tables), None)
        if script is None:
            return [
                KeepRule(
                    f"table {table.family} {table.name}",
                    "no file kdoctor knows loads it at boot: the deletion is not persisted",
                )
            ]
        drop: set[int] = set()
        for blocker in deleted:
            assert blocker.rule is not None
            spans = script_chain_rules(script.text, table.family, table.name, blocker.chain)
            live = table.chains[blocker.chain].rules
            if spans is None or len(spans) != len(live):
                return [
                    KeepRule(
                        blocker.describe(),
                        f"{script.path} does not hold chain {blocker.chain} as the kernel "
                        "does: remove the rule there by hand",
                    )
                ]
            first, last = spans[blocker.rule.position - 1]
            drop.update(range(first, last + 1))
        lines = script.text.split("\n")
        content = "\n".join(
            line for number, line in enumerate(lines, start=1) if number not in drop
        )
        return [WriteFile(script.path, content, old_content=script.text, mode=script.mode)]


def _firewalld_actions(probes: Sequence[Probe]) -> list[Action]:
    """Open what firewalld rejects through firewalld itself, never behind its back."""
    ports = sorted(
        {f"{p.dport}/{p.proto}" for p in probes if p.in_iface is None and p.out_iface is None}
    )
    bridges = sorted({p.in_iface or p.out_iface or "" for p in probes} - {""})
    actions: list[Action] = []
    if ports:
        add = ["firewall-cmd", "--permanent", *(f"--add-port={port}" for port in ports)]
        remove = ["firewall-cmd", "--permanent", *(f"--remove-port={port}" for port in ports)]
        actions.append(Command(add, undo_argvs=[remove, ["firewall-cmd", "--reload"]]))
    for bridge in bridges:
        add = ["firewall-cmd", "--permanent", "--zone=trusted", f"--add-interface={bridge}"]
        remove = ["firewall-cmd", "--permanent", "--zone=trusted", f"--remove-interface={bridge}"]
        actions.append(Command(add, undo_argvs=[remove, ["firewall-cmd", "--reload"]]))
    actions.append(Command(["firewall-cmd", "--reload"]))
    return actions


def _add_nft_handles(findings: Sequence[Finding], nft: NftFacts | None) -> None:
    """Every iptables finding names its family, and (iptables-nft) the nft rule handle.

    iptables-nft keeps each chain's rules in order in ``table ip filter``, so position N of
    ``iptables -L CHAIN --line-numbers`` is the Nth rule nft lists for that chain.
    """
    table = nft.ruleset.tables.get(("ip", "filter")) if nft is not None else None
    for finding in findings:
        evidence = finding.evidence
        evidence.setdefault("family", "ip")
        handle = None
        position = evidence.get("position")
        backend = evidence.get("backend")  # live findings only: a file has no handles
        live_nft = isinstance(backend, str) and "legacy" not in backend
        if table is not None and isinstance(position, int) and live_nft:
            chain = table.chains.get(str(evidence.get("chain")))
            if chain is not None and 0 < position <= len(chain.rules):
                handle = chain.rules[position - 1].handle
        if handle is not None:
            evidence.setdefault("handle", handle)


def analyse_nft(
    facts: NftFacts, sources: Sequence[RulesetSource], probes: Sequence[Probe], pods: PodNetwork
) -> NftAnalysis:
    skipped = iptables_covered_tables(sources, facts.ruleset)
    try:
        blockers, unjudged = find_nft_blockers(
            facts.ruleset,
            probes,
            pods.cidr,
            managed=lambda table: nft_owner(table, facts.scripts)[1],
            skip_tables=skipped,
        )
    except WalkError as exc:
        raise FactError(f"{facts.output.source}: {exc}") from exc
    return NftAnalysis(facts, blockers, unjudged, pods, skipped)
