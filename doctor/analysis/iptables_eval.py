"""Walk one probe packet through a parsed filter table the way netfilter does.

In order, into user chains and back, ``-g`` gotos, RETURN, down to the built-in chain's
policy. Matching is three-valued (:class:`Tri`): a rule that depends on state a static
ruleset does not show (marks, ipsets, physdev, recent...) neither matches nor misses, it
is MAYBE, and the walk carries on past it. What a MAYBE ACCEPT means is the caller's call
(the ``defers`` predicate of :func:`walk_chains`): it knows who owns which chain, this
module only knows netfilter.

Kept apart from the parser (:mod:`doctor.parse.iptables`) because it models packets, not text,
and apart from the check because nothing here is about which traffic Kubernetes needs.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from doctor.core.errors import FactError
from doctor.parse.iptables import MatchModule, Option, Rule, Table

# --------------------------------------------------------------------------------------
# Matching one rule
# --------------------------------------------------------------------------------------


class Tri(enum.Enum):
    """A match result: YES, NO, or MAYBE when the rule depends on state we cannot see."""

    YES = "yes"
    NO = "no"
    MAYBE = "maybe"

    def negated(self, negate: bool) -> Tri:
        if not negate or self is Tri.MAYBE:
            return self
        return Tri.NO if self is Tri.YES else Tri.YES


def all_of(results: Iterable[Tri]) -> Tri:
    outcome = Tri.YES
    for result in results:
        if result is Tri.NO:
            return Tri.NO
        if result is Tri.MAYBE:
            outcome = Tri.MAYBE
    return outcome


@dataclass(frozen=True)
class Probe:
    """One kind of packet (e.g. one Kubernetes needs), as netfilter sees its first (NEW) packet.

    Only the first packet is modelled because that is the one a REJECT/DROP stops; later
    ones ride on conntrack's ESTABLISHED. ``in_iface``/``out_iface`` None means "a host
    interface whose name we do not know" (eth0, ens3...): known to be none of the pod,
    Docker or loopback interfaces. ``src_in_pods``/``dst_in_pods`` place the address inside
    the ``pod_cidr`` the matchers are given, otherwise it is a unicast address outside it.
    """

    label: str
    hook: str
    proto: str
    dport: int
    in_iface: str | None = None
    out_iface: str | None = None
    src_in_pods: bool = False
    dst_in_pods: bool = False
    #: What to append to the chain when its DROP policy is what stops this packet.
    accept_spec: tuple[str, ...] = ()


#: Interfaces that are never the host's own network (pods, bridges, tunnels, loopback).
_INTERNAL_INTERFACES = frozenset(
    {
        "lo",
        "docker0",
        "weave",
        "cni0",
        "cbr0",
        "flannel.1",
        "vxlan.calico",
        "tunl0",
        "kube-ipvs0",
        "cilium_host",
        "cilium_net",
        "cilium_vxlan",
        "datapath",
        "vxlan-6784",
    }
)
_INTERNAL_PREFIXES = ("veth", "cali", "lxc", "docker", "br-", "weave", "cni", "flannel", "cilium")
_LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
_MULTICAST = ipaddress.IPv4Network("224.0.0.0/4")
_TCP_FLAGS = {"FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR"}
#: Targets that end the packet's walk through the table.
_TERMINAL_OTHER = frozenset({"QUEUE", "NFQUEUE", "TARPIT", "SYNPROXY"})


def interface_matches(pattern: str, actual: str | None) -> Tri:
    """``-i``/``-o`` semantics, with ``+`` as a prefix wildcard."""
    wildcard = pattern.endswith("+")
    stem = pattern[:-1] if wildcard else pattern
    if actual is None:
        if wildcard and stem == "":
            return Tri.YES
        internal = stem.startswith(_INTERNAL_PREFIXES) or (
            not wildcard and stem in _INTERNAL_INTERFACES
        )
        return Tri.NO if internal else Tri.MAYBE
    if actual == "":
        return Tri.NO
    if wildcard:
        return Tri.YES if actual.startswith(stem) else Tri.NO
    return Tri.YES if actual == pattern else Tri.NO


def address_matches(text: str, in_pods: bool, pod_cidr: ipaddress.IPv4Network) -> Tri:
    """Does ``-s``/``-d text`` cover the probe's address?

    The address is either somewhere in the pod network, or a unicast host address outside
    it (another node, the node itself): never loopback or multicast.
    """
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        return Tri.MAYBE
    if not isinstance(network, ipaddress.IPv4Network):
        return Tri.NO
    if in_pods:
        if pod_cidr.subnet_of(network):
            return Tri.YES
        return Tri.MAYBE if network.overlaps(pod_cidr) else Tri.NO
    if network.prefixlen == 0:
        return Tri.YES
    if any(network.subnet_of(other) for other in (pod_cidr, _LOOPBACK, _MULTICAST)):
        return Tri.NO
    return Tri.MAYBE


def _port_in(spec: str, port: int) -> bool:
    for part in spec.split(","):
        low, _, high = part.partition(":")
        try:
            first = int(low) if low else 0
            last = int(high) if high else (65535 if ":" in part else first)
        except ValueError:
            continue
        if first <= port <= last:
            return True
    return False


def _protocol_matches(value: str, proto: str) -> Tri:
    names = {"6": "tcp", "17": "udp", "1": "icmp", "all": "all", "0": "all"}
    value = names.get(value.lower(), value.lower())
    return Tri.YES if value in ("all", proto) else Tri.NO


def _option_matches(module: str, option: Option, probe: Probe) -> Tri:
    name, args = option.name, option.args
    first = args[0] if args else ""
    if module in ("tcp", "udp"):
        if name in ("--dport", "--destination-port"):
            return Tri.YES if _port_in(first, probe.dport) else Tri.NO
        if name == "--syn":
            return Tri.YES if probe.proto == "tcp" else Tri.NO
        if name == "--tcp-flags" and len(args) == 2:
            mask = set(args[0].upper().split(",")) - {"NONE"}
            want = set(args[1].upper().split(",")) - {"NONE"}
            mask = _TCP_FLAGS if "ALL" in mask else mask
            want = _TCP_FLAGS if "ALL" in want else want
            return Tri.YES if ({"SYN"} & mask) == want else Tri.NO
        return Tri.MAYBE  # source port, tcp options: not known for our probe
    if module == "multiport":
        if name in ("--dports", "--destination-ports"):
            return Tri.YES if _port_in(first, probe.dport) else Tri.NO
        if name == "--ports":
            return Tri.YES if _port_in(first, probe.dport) else Tri.MAYBE
        return Tri.MAYBE
    if module in ("state", "conntrack") and name in ("--state", "--ctstate"):
        states = {s.upper() for s in first.split(",")}
        if "NEW" in states:
            return Tri.YES
        return Tri.MAYBE if states & {"DNAT", "SNAT"} else Tri.NO
    if module == "conntrack" and name == "--ctproto":
        return _protocol_matches(first, probe.proto)
    if module == "addrtype" and name in ("--dst-type", "--src-type"):
        # INPUT packets are addressed to the node (LOCAL); forwarded ones are not; no
        # probe comes from the node itself. All probes are unicast.
        if name == "--dst-type":
            kinds = {"UNICAST", "LOCAL"} if probe.hook == "INPUT" else {"UNICAST"}
        else:
            kinds = {"UNICAST"}
        return Tri.YES if {t.upper() for t in first.split(",")} & kinds else Tri.NO
    if module == "pkttype" and name == "--pkt-type":
        return Tri.YES if first.lower() == "unicast" else Tri.NO
    return Tri.MAYBE


def module_matches(module: MatchModule, probe: Probe) -> Tri:
    if module.name == "comment":
        return Tri.YES
    if module.name in ("tcp", "udp", "icmp") and module.name != probe.proto:
        return Tri.NO
    if module.name == "icmp":
        return Tri.NO
    results = [
        _option_matches(module.name, option, probe).negated(option.negated)
        for option in module.options
    ]
    if not module.options and module.name not in ("tcp", "udp", "state", "conntrack"):
        return Tri.MAYBE
    return all_of(results)


def rule_matches(rule: Rule, probe: Probe, pod_cidr: ipaddress.IPv4Network) -> Tri:
    """Would ``rule`` match the first packet of ``probe``? Unknown state gives MAYBE."""
    results: list[Tri] = []
    for option in rule.basics:
        value = option.args[0] if option.args else ""
        if option.name == "-p":
            result = _protocol_matches(value, probe.proto)
        elif option.name == "-s":
            result = address_matches(value, probe.src_in_pods, pod_cidr)
        elif option.name == "-d":
            result = address_matches(value, probe.dst_in_pods, pod_cidr)
        elif option.name == "-i":
            result = interface_matches(value, probe.in_iface)
        elif option.name == "-o":
            out = "" if probe.hook == "INPUT" else probe.out_iface
            result = interface_matches(value, out)
        elif option.name == "-f":
            result = Tri.NO  # a first packet is never a non-first fragment
        else:
            continue
        results.append(result.negated(option.negated))
    results.extend(module_matches(module, probe) for module in rule.modules)
    return all_of(results)


# --------------------------------------------------------------------------------------
# Walking a probe through the filter table
# --------------------------------------------------------------------------------------


class Fate(enum.Enum):
    """How a walk ended."""

    ACCEPTED = "accepted"
    BLOCKED = "blocked"
    #: An ACCEPT that may match (by mark, ipset...) whose owner decides (``defers``).
    DEFERRED = "deferred"
    #: Handed to userspace (QUEUE...) or a terminal target we do not model.
    OTHER = "other"


@dataclass(frozen=True)
class Outcome:
    fate: Fate
    #: The deciding rule; None when the built-in chain's policy decided.
    rule: Rule | None
    chain: str
    #: The jumps (and gotos) that led to the deciding rule, outermost first.
    via: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class ChainView:
    """A chain as the walk sees it.

    Not the :class:`~doctor.parse.iptables.Chain` itself: that one holds the real rules, a view
    may hold a simulated list (see :func:`view_of`) without touching the parsed table.
    """

    name: str
    policy: str | None
    rules: tuple[Rule, ...]


#: The filter table with some rules taken out and some appended (the fix, simulated).
FilterView = dict[str, ChainView]

_MAX_STEPS = 100_000
_MAX_DEPTH = 64


def view_of(
    table: Table,
    removed: frozenset[tuple[str, int]] = frozenset(),
    appended: dict[str, list[Rule]] | None = None,
) -> FilterView:
    """The chains of ``table`` minus the ``removed`` rule keys, plus ``appended`` rules.

    This is how a fix is tried before it is applied: the table itself is never changed.
    """
    appended = appended or {}
    return {
        name: ChainView(
            name,
            chain.policy,
            tuple(r for r in chain.rules if r.key not in removed) + tuple(appended.get(name, [])),
        )
        for name, chain in table.chains.items()
    }


def walk_chains(
    view: FilterView,
    probe: Probe,
    pod_cidr: ipaddress.IPv4Network,
    source: str,
    defers: Callable[[Rule], object],
) -> Outcome:
    """Follow ``probe`` through the chains from its hook until a rule or policy decides.

    ``defers(rule)`` is asked only about an ACCEPT that MAYBE matches: truthy means the
    component that wrote the rule decides (the walk stops, :attr:`Fate.DEFERRED`); falsy
    means "may not match" and the walk carries on. It is a parameter because only the
    caller knows who owns which chain. ``source`` names the ruleset in the
    :class:`~doctor.core.errors.FactError` for a chain loop.
    """
    hook = view.get(probe.hook)
    if hook is None:
        return Outcome(Fate.ACCEPTED, None, probe.hook)
    # Each frame: (chain, index of the next rule, length of `via` when it was entered).
    stack: list[tuple[ChainView, int, int]] = []
    via: list[Rule] = []
    chain, index = hook, 0
    for _ in range(_MAX_STEPS):
        if index >= len(chain.rules):
            if not stack:
                return _policy(hook, via)
            chain, index, depth = stack.pop()
            del via[depth:]
            continue
        rule = chain.rules[index]
        index += 1
        result = rule_matches(rule, probe, pod_cidr)
        if result is Tri.NO:
            continue
        target = rule.target
        if result is Tri.MAYBE:
            if target == "ACCEPT" and defers(rule):
                return Outcome(Fate.DEFERRED, rule, chain.name, tuple(via))
            continue
        if target is None:
            continue
        if target == "ACCEPT":
            return Outcome(Fate.ACCEPTED, rule, chain.name, tuple(via))
        if target in ("DROP", "REJECT"):
            return Outcome(Fate.BLOCKED, rule, chain.name, tuple(via))
        if target == "RETURN":
            if not stack:
                return _policy(hook, via)
            chain, index, depth = stack.pop()
            del via[depth:]
            continue
        if target in view:
            if len(stack) >= _MAX_DEPTH:
                raise FactError(f"{source}: chains jump deeper than {_MAX_DEPTH} levels (a loop?)")
            if rule.goto:
                # The goto'd chain returns to whoever called the current chain.
                via.append(rule)
            else:
                stack.append((chain, index, len(via)))
                via.append(rule)
            chain, index = view[target], 0
            continue
        if target in _TERMINAL_OTHER:
            return Outcome(Fate.OTHER, rule, chain.name, tuple(via))
        # LOG, NFLOG, MARK...: the packet carries on.
    raise FactError(f"{source}: walking {probe.hook} never ends (a chain loop?)")


def _policy(hook: ChainView, via: list[Rule]) -> Outcome:
    fate = Fate.BLOCKED if hook.policy == "DROP" else Fate.ACCEPTED
    return Outcome(fate, None, hook.name, tuple(via))
