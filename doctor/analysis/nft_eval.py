"""Walk one probe packet through native nftables base chains the way the kernel does.

Every base chain registered on a hook sees the packet, in priority order (lowest first):
an ``accept`` ends only that chain, the next base chain still sees the packet; a ``drop``
or ``reject`` anywhere is final. Inside a chain: rules in order, ``jump`` and ``goto``
into regular chains and ``return`` back, verdict maps, anonymous and named sets, down to
the base chain's policy.

Matching is three-valued like :mod:`doctor.iptables_eval` (whose :class:`Probe`,
:class:`Tri` and address/interface semantics it shares, so the same packet is judged the
same way on every backend). A MAYBE comes in two kinds: state a static ruleset does not
show (a mark, an address that may be the node's own), which the walk carries on past as
iptables' does; and an expression this module cannot evaluate (an unknown expression, a
set or map the listing does not hold, an ``xt`` match iptables-nft left behind). The
second kind is recorded as an :class:`Uncertain` on the outcome, so the caller can say
which rule it could not judge instead of calling the path clean.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from doctor.analysis.iptables_eval import Fate, Probe, Tri, address_matches, interface_matches
from doctor.parse.nft import NftChain, NftRule, NftRuleset, NftTable, render_value

#: nft families whose base chains an IPv4 packet traverses on the input/forward hooks.
IPV4_FAMILIES = ("ip", "inet")
_MAX_DEPTH = 64
_MAX_STEPS = 2_000_000

#: Statements that change nothing about the verdict (and always "match").
_SIDE_EFFECTS = frozenset(
    {
        "counter",
        "log",
        "mangle",
        "notrack",
        "set",
        "map",
        "dup",
        "fwd",
        "secmark",
        "ct helper",
        "ct timeout",
        "ct expectation",
        "meter",
        "flow",
        "last",
        "tproxy",
    }
)
#: Statements that match depending on rate or history: state we cannot see.
_STATEFUL_MATCHES = frozenset({"limit", "quota", "ct count", "connlimit"})
_NAT = frozenset({"snat", "dnat", "masquerade", "redirect"})
_PROTOCOL_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp", "132": "sctp"}
_TRANSPORT = ("tcp", "udp", "th", "sctp", "dccp", "udplite")
_STATE_KEYS_META = frozenset(
    {
        "mark",
        "skuid",
        "skgid",
        "cgroup",
        "cpu",
        "priority",
        "length",
        "random",
        "secmark",
        "rtclassid",
        "iiftype",
        "oiftype",
        "iifkind",
        "oifkind",
        "iifgroup",
        "oifgroup",
        "time",
        "day",
        "hour",
        "sdif",
        "sdifname",
        "ibrname",
        "obrname",
        "ipsec",
        "broute",
    }
)


# --------------------------------------------------------------------------------------
# Three-valued results that remember why they are MAYBE
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Match:
    """A match result; ``reason`` is set when MAYBE because an expression was not evaluable."""

    tri: Tri
    reason: str | None = None
    #: For a MAYBE that depends on which host interface the packet uses ("oifname eth0").
    hint: str | None = None

    def negated(self) -> Match:
        return Match(self.tri.negated(True), self.reason, self.hint)


YES = Match(Tri.YES)
NO = Match(Tri.NO)
MAYBE = Match(Tri.MAYBE)


def both(first: Match, second: Match) -> Match:
    if Tri.NO in (first.tri, second.tri):
        return NO
    if Tri.MAYBE in (first.tri, second.tri):
        return Match(Tri.MAYBE, first.reason or second.reason, first.hint or second.hint)
    return YES


def any_of(results: Iterable[Match]) -> Match:
    """Membership: YES if one element matches, NO if none can, else MAYBE."""
    outcome = NO
    for result in results:
        if result.tri is Tri.YES:
            return YES
        if result.tri is Tri.MAYBE and (outcome.tri is Tri.NO or outcome.reason is None):
            outcome = result
    return outcome


# --------------------------------------------------------------------------------------
# What the probe packet carries, per expression on the left of a match
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Value:
    """What an expression yields for the probe.

    ``kind``: "exact" (a port, a protocol name), "flags" (ct state, tcp flags: a set of
    names), "addr" (an address inside or outside the pod network), "iface" (an interface
    name, None = an unknown host interface, "" = none), "absent" (the packet has no such
    header, so every comparison is false), "state" (not visible in a ruleset),
    "unknown" (an expression this module does not know; ``reason`` says which), "concat".
    """

    kind: str
    value: Any = None
    reason: str | None = None


@dataclass(frozen=True)
class EvalContext:
    """What evaluating expressions needs besides the packet: the table's sets, the pods."""

    table: NftTable
    pod_cidr: ipaddress.IPv4Network


def evaluate(expression: Any, probe: Probe, ctx: EvalContext) -> Value:
    """The probe's value for the left-hand side of a match."""
    if not isinstance(expression, dict) or len(expression) != 1:
        return Value("unknown", reason=f"expression {render_value(expression)}")
    ((key, body),) = expression.items()
    if key == "payload" and isinstance(body, dict):
        return _payload(body, probe)
    if key == "meta" and isinstance(body, dict):
        return _meta(str(body.get("key")), probe)
    if key == "ct" and isinstance(body, dict):
        return _conntrack(body, probe)
    if key == "fib" and isinstance(body, dict):
        return _fib(body, probe)
    if key == "concat" and isinstance(body, list):
        return Value("concat", tuple(evaluate(part, probe, ctx) for part in body))
    if key == "&" and isinstance(body, list) and len(body) == 2:
        inner = evaluate(body[0], probe, ctx)
        if inner.kind == "flags":
            return Value("flags", frozenset(inner.value) & _names(body[1]))
        if inner.kind in ("absent", "unknown"):
            return inner
        return Value("state")
    if key in ("|", "^", ">>", "<<"):
        return Value("state")
    if key in ("socket", "osf", "rt", "exthdr", "tcp option", "ipsec", "numgen", "jhash"):
        return Value("state")
    if key in ("symhash", "sctp chunk", "dccp option", "ip option"):
        return Value("state")
    return Value("unknown", reason=f"unknown expression {key!r}")


def _payload(body: dict[str, Any], probe: Probe) -> Value:
    protocol, name = body.get("protocol"), body.get("field")
    if protocol is None:
        return Value("unknown", reason="raw payload expression")
    if protocol in _TRANSPORT:
        if protocol != "th" and protocol != probe.proto:
            return Value("absent")
        if protocol == "th" and probe.proto not in ("tcp", "udp"):
            return Value("absent")
        if name == "dport":
            return Value("exact", probe.dport)
        if name == "flags" and probe.proto == "tcp":
            return Value("flags", frozenset({"syn"}))
        return Value("state")
    if protocol == "ip":
        if name == "saddr":
            return Value("addr", probe.src_in_pods)
        if name == "daddr":
            return Value("addr", probe.dst_in_pods)
        if name == "protocol":
            return Value("exact", probe.proto)
        return Value("state")
    if protocol in ("ip6", "icmpv6", "icmp", "igmp", "arp"):
        return Value("absent")
    return Value("state")


def _meta(key: str, probe: Probe) -> Value:
    if key == "l4proto":
        return Value("exact", probe.proto)
    if key == "nfproto":
        return Value("exact", "ipv4")
    if key == "protocol":
        return Value("exact", "ip")
    if key in ("iifname", "iif"):
        return Value("iface", (probe.in_iface, key))
    if key in ("oifname", "oif"):
        return Value("iface", ("" if probe.hook == "INPUT" else probe.out_iface, key))
    if key == "pkttype":
        return Value("exact", "host")
    if key in _STATE_KEYS_META:
        return Value("state")
    return Value("unknown", reason=f"meta {key}")


def _conntrack(body: dict[str, Any], probe: Probe) -> Value:
    key = body.get("key")
    if key == "state":
        return Value("flags", frozenset({"new"}))
    if key == "status":
        return Value("flags", frozenset())
    if key == "direction":
        return Value("exact", "original")
    if key in ("l3proto",):
        return Value("exact", "ipv4")
    if key in ("protocol", "proto"):
        return Value("exact", probe.proto)
    return Value("state")


def _fib(body: dict[str, Any], probe: Probe) -> Value:
    flags = body.get("flags", [])
    flags = [flags] if isinstance(flags, str) else flags
    if body.get("result") == "type":
        if "daddr" in flags:
            return Value("exact", "local" if probe.hook == "INPUT" else "unicast")
        return Value("exact", "unicast")
    return Value("state")


def _names(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        return frozenset({value})
    if isinstance(value, list):
        return frozenset(str(v) for v in value)
    if isinstance(value, dict) and isinstance(value.get("|"), list):
        return frozenset(name for part in value["|"] for name in _names(part))
    return frozenset()


# --------------------------------------------------------------------------------------
# Comparing a value with the right-hand side
# --------------------------------------------------------------------------------------


def _elements(right: Any, ctx: EvalContext) -> list[Any] | Match:
    """The elements a right-hand side stands for, or a MAYBE when they cannot be known."""
    if isinstance(right, str) and right.startswith("@"):
        found = ctx.table.sets.get(right[1:])
        if found is None:
            return Match(Tri.MAYBE, f"set {right} is not in table {ctx.table.name}")
        if "dynamic" in found.flags:
            return MAYBE  # filled by packets at runtime
        return list(found.elements or [])
    if isinstance(right, dict) and set(right) == {"set"} and isinstance(right["set"], list):
        return list(right["set"])
    return [right]


def _element_value(element: Any) -> Any:
    if isinstance(element, dict) and set(element) == {"elem"} and isinstance(element["elem"], dict):
        return element["elem"].get("val")
    return element


def member(value: Value, element: Any, ctx: EvalContext) -> Match:
    """Does ``value`` equal (or fall inside) one set element?"""
    element = _element_value(element)
    kind = value.kind
    if kind == "absent":
        return NO
    if kind == "unknown":
        return Match(Tri.MAYBE, value.reason)
    if kind == "state":
        return MAYBE
    if kind == "concat":
        parts = element.get("concat") if isinstance(element, dict) else None
        if not isinstance(parts, list) or len(parts) != len(value.value):
            return Match(Tri.MAYBE, f"concatenation {render_value(element)}")
        result = YES
        for part_value, part in zip(value.value, parts, strict=True):
            result = both(result, member(part_value, part, ctx))
            if result.tri is Tri.NO:
                return NO
        return result
    if kind == "addr":
        return _address_member(element, bool(value.value), ctx.pod_cidr)
    if kind == "iface":
        if not isinstance(element, str):
            return Match(Tri.MAYBE, f"interface {render_value(element)}")
        actual, key = value.value
        pattern = element[:-1] + "+" if element.endswith("*") else element
        tri = interface_matches(pattern, actual)
        if tri is Tri.MAYBE:
            # An unknown host interface: it matches if the packet uses that one.
            return Match(Tri.MAYBE, hint=f'{key} "{element}"')
        return Match(tri)
    if kind == "flags":
        if isinstance(element, list):
            return YES if frozenset(str(e) for e in element) == value.value else NO
        return YES if value.value == frozenset({str(element)}) else NO
    return _exact_member(value.value, element)


def _address_member(element: Any, in_pods: bool, pod_cidr: ipaddress.IPv4Network) -> Match:
    if isinstance(element, str):
        return Match(address_matches(element, in_pods, pod_cidr))
    if isinstance(element, dict) and isinstance(element.get("prefix"), dict):
        prefix = element["prefix"]
        return Match(
            address_matches(f"{prefix.get('addr')}/{prefix.get('len')}", in_pods, pod_cidr)
        )
    if isinstance(element, dict) and isinstance(element.get("range"), list):
        low, high = element["range"]
        try:
            first, last = ipaddress.ip_address(low), ipaddress.ip_address(high)
        except ValueError:
            return Match(Tri.MAYBE, f"address range {render_value(element)}")
        if first.version != 4 or last.version != 4:
            return NO
        span = list(ipaddress.summarize_address_range(first, last))
        return any_of(Match(address_matches(str(net), in_pods, pod_cidr)) for net in span)
    return Match(Tri.MAYBE, f"address {render_value(element)}")


def _normal(value: Any) -> Any:
    if isinstance(value, str):
        lowered = value.lower()
        return _PROTOCOL_NUMBERS.get(lowered, lowered)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return value


def _exact_member(actual: Any, element: Any) -> Match:
    if isinstance(element, dict) and isinstance(element.get("range"), list):
        low, high = element["range"]
        if isinstance(actual, int) and isinstance(low, int) and isinstance(high, int):
            return YES if low <= actual <= high else NO
        return Match(Tri.MAYBE, f"range {render_value(element)}")
    if isinstance(element, dict):
        return Match(Tri.MAYBE, f"value {render_value(element)}")
    if isinstance(actual, str) and isinstance(element, int):
        names = {v: int(k) for k, v in _PROTOCOL_NUMBERS.items()}
        return YES if names.get(actual) == element else NO
    if isinstance(actual, int) and isinstance(element, str):
        return YES if element.isdigit() and int(element) == actual else NO
    return YES if _normal(actual) == _normal(element) else NO


def compare(op: str, value: Value, right: Any, ctx: EvalContext) -> Match:
    """``left OP right`` for the probe."""
    if value.kind == "absent":
        return NO
    if value.kind == "unknown":
        return Match(Tri.MAYBE, value.reason)
    if value.kind == "state":
        return MAYBE
    if value.kind == "flags" and op == "in" and not isinstance(right, dict):
        # `ct state new`, `tcp flags syn`: a bit test, true when any named flag is set.
        return YES if value.value & _names(right) else NO
    if op in ("<", ">", "<=", ">="):
        if value.kind == "exact" and isinstance(value.value, int) and isinstance(right, int):
            results = {
                "<": value.value < right,
                ">": value.value > right,
                "<=": value.value <= right,
                ">=": value.value >= right,
            }
            return YES if results[op] else NO
        return Match(Tri.MAYBE, f"comparison {op} {render_value(right)}")
    elements = _elements(right, ctx)
    if isinstance(elements, Match):
        result = elements
    else:
        result = any_of(member(value, element, ctx) for element in elements)
    if op == "!=":
        return result.negated()
    if op in ("==", "in"):
        return result
    return Match(Tri.MAYBE, f"operator {op!r}")


# --------------------------------------------------------------------------------------
# A rule: its conditions and what it decides
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NftVerdict:
    """accept, drop, reject, jump, goto, return, continue, queue, nat, or unknown."""

    kind: str
    target: str | None = None
    #: For reject: how (``icmpx admin-prohibited``, ``tcp reset``); for unknown: why.
    detail: str | None = None

    @property
    def blocks(self) -> bool:
        return self.kind in ("drop", "reject")

    def describe(self) -> str:
        if self.kind in ("jump", "goto"):
            return f"{self.kind} {self.target}"
        if self.kind == "reject" and self.detail:
            return f"reject with {self.detail}"
        return self.kind


def parse_verdict(statement: dict[str, Any]) -> NftVerdict | None:
    """The verdict a statement (or a map element's value) gives; None if it gives none."""
    if len(statement) != 1:
        return NftVerdict("unknown", detail=render_value(statement))
    ((key, body),) = statement.items()
    if key in ("accept", "drop", "return", "continue"):
        return NftVerdict(key)
    if key in ("jump", "goto") and isinstance(body, dict) and isinstance(body.get("target"), str):
        return NftVerdict(key, body["target"])
    if key == "reject":
        detail = None
        if isinstance(body, dict) and body:
            kind = body.get("type", "")
            detail = f"{kind} {body['expr']}" if body.get("expr") else str(kind)
        return NftVerdict("reject", detail=detail)
    if key == "queue":
        return NftVerdict("queue")
    if key in _NAT:
        return NftVerdict("nat", detail=key)
    if key == "xt" and isinstance(body, dict) and body.get("type") == "target":
        name = str(body.get("name", ""))
        if name == "REJECT":
            return NftVerdict("reject", detail="xt REJECT")
        if name in ("NFQUEUE", "QUEUE"):
            return NftVerdict("queue")
        return None  # LOG, MARK, CT, TCPMSS...: the packet carries on
    return None


@dataclass(frozen=True)
class Alternative:
    """One way a rule can end: under ``condition``, this verdict (None: the rule continues)."""

    condition: Match
    verdict: NftVerdict | None


def rule_alternatives(rule: NftRule, probe: Probe, ctx: EvalContext) -> list[Alternative]:
    """What ``rule`` may do to the probe: a list of (condition, verdict), first YES decides.

    An empty list means the rule certainly does not apply (a condition is NO, or a verdict
    map has no element for the packet).
    """
    condition = YES
    for statement in rule.expr:
        if not isinstance(statement, dict) or len(statement) != 1:
            condition = both(condition, Match(Tri.MAYBE, "malformed statement"))
            continue
        ((key, body),) = statement.items()
        if key == "match" and isinstance(body, dict):
            value = evaluate(body.get("left"), probe, ctx)
            condition = both(
                condition, compare(str(body.get("op", "==")), value, body.get("right"), ctx)
            )
            if condition.tri is Tri.NO:
                return []
            continue
        if key == "vmap" and isinstance(body, dict):
            return _vmap(condition, body, probe, ctx)
        if key == "xt" and isinstance(body, dict) and body.get("type") != "target":
            name = body.get("name", "?")
            condition = both(condition, Match(Tri.MAYBE, f"xt match {name} (iptables-nft)"))
            continue
        verdict = parse_verdict(statement)
        if verdict is not None:
            return [Alternative(condition, verdict)]
        if key in _SIDE_EFFECTS or (key == "xt"):
            continue
        if key in _STATEFUL_MATCHES:
            condition = both(condition, MAYBE)
            continue
        # Unknown: it may be a match, a verdict, or neither.
        return [Alternative(condition, NftVerdict("unknown", detail=f"unknown expression {key!r}"))]
    return [Alternative(condition, None)]


def _vmap(
    condition: Match, body: dict[str, Any], probe: Probe, ctx: EvalContext
) -> list[Alternative]:
    key = evaluate(body.get("key"), probe, ctx)
    data = body.get("data")
    if isinstance(data, str) and data.startswith("@"):
        found = ctx.table.sets.get(data[1:])
        if found is None:
            reason = f"verdict map {data} is not in table {ctx.table.name}"
            return [Alternative(Match(Tri.MAYBE, reason), NftVerdict("unknown", detail=reason))]
        pairs: list[Any] = list(found.elements or [])
    elif isinstance(data, dict) and isinstance(data.get("set"), list):
        pairs = list(data["set"])
    else:
        reason = f"verdict map {render_value(data)}"
        return [Alternative(Match(Tri.MAYBE, reason), NftVerdict("unknown", detail=reason))]
    alternatives: list[Alternative] = []
    for pair in pairs:
        if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], dict):
            reason = f"verdict map element {render_value(pair)}"
            alternatives.append(
                Alternative(Match(Tri.MAYBE, reason), NftVerdict("unknown", detail=reason))
            )
            continue
        hit = both(condition, member(key, pair[0], ctx))
        if hit.tri is Tri.NO:
            continue
        verdict = parse_verdict(pair[1]) or NftVerdict("unknown", detail=render_value(pair[1]))
        alternatives.append(Alternative(hit, verdict))
    return alternatives


# --------------------------------------------------------------------------------------
# Walking one base chain
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uncertain:
    """A rule on the probe's path this module could not judge, and what it might do."""

    rule: NftRule
    reason: str
    could: NftVerdict

    @property
    def could_block(self) -> bool:
        return self.could.kind not in ("accept", "nat", "return", "continue")


@dataclass(frozen=True)
class NftOutcome:
    """How one base chain decided the probe."""

    fate: Fate
    base: NftChain
    #: The deciding rule; None when the base chain's policy (or its end) decided.
    rule: NftRule | None
    #: The chain the deciding rule is in.
    chain: str
    verdict: NftVerdict | None = None
    via: tuple[NftRule, ...] = ()
    uncertain: tuple[Uncertain, ...] = ()
    #: Accepts met before the decision that apply on some host interface only: a block
    #: after one of them stops the packet only when it uses another interface.
    conditional: tuple[tuple[NftRule, str], ...] = ()


class WalkError(Exception):
    """The chains loop or nest deeper than the kernel allows."""


@dataclass
class _Walk:
    table: NftTable
    probe: Probe
    ctx: EvalContext
    removed: frozenset[int]
    defers: bool
    uncertain: list[Uncertain] = field(default_factory=list)
    #: Accepts that apply when the packet uses a named host interface (rule, "oifname eth0").
    conditional: list[tuple[NftRule, str]] = field(default_factory=list)
    steps: int = 0
    guards: GuardCache = field(default_factory=dict)


def walk_base_chain(
    base: NftChain,
    table: NftTable,
    probe: Probe,
    pod_cidr: ipaddress.IPv4Network,
    removed: frozenset[int] = frozenset(),
    defers: bool = False,
    guards: GuardCache | None = None,
) -> NftOutcome:
    """Follow ``probe`` through ``base`` (and the chains it jumps to) until something decides.

    ``removed`` holds handles of rules to leave out (how a fix is tried first). ``defers``
    is True for tables Kubernetes or a CNI manage: there an accept that may match is the
    owner's decision and ends the walk (:attr:`Fate.DEFERRED`); elsewhere it "may not
    match" and the walk carries on, as :func:`doctor.iptables_eval.walk_chains` does.
    """
    state = _Walk(table, probe, EvalContext(table, pod_cidr), removed, defers)
    if guards is not None:
        state.guards = guards
    result = _run(state, base, (), 0)
    uncertain, conditional = tuple(state.uncertain), tuple(state.conditional)
    if result is None:
        fate = Fate.BLOCKED if base.policy == "drop" else Fate.ACCEPTED
        verdict = NftVerdict(base.policy or "accept")
        return NftOutcome(fate, base, None, base.name, verdict, (), uncertain, conditional)
    fate, rule, chain, verdict, via = result
    return NftOutcome(fate, base, rule, chain, verdict, via, uncertain, conditional)


_Decision = tuple[Fate, NftRule, str, NftVerdict, tuple[NftRule, ...]]


def _run(state: _Walk, chain: NftChain, via: tuple[NftRule, ...], depth: int) -> _Decision | None:
    """Run one chain; a decision, or None when it returns (or falls off its end)."""
    if depth > _MAX_DEPTH:
        raise WalkError(f"chains in table {state.table.name} jump deeper than {_MAX_DEPTH} levels")
    removed = state.removed
    index = state.guards.get(id(chain))
    if index is None or index.size != len(chain.rules):
        index = state.guards[id(chain)] = ChainIndex.of(chain)
    rules = chain.rules
    for position in index.candidates(state.probe):
        rule = rules[position]
        if removed and rule.handle in removed:
            continue
        state.steps += 1
        if state.steps > _MAX_STEPS:
            raise WalkError(f"walking table {state.table.name} never ends (a chain loop?)")
        for alternative in rule_alternatives(rule, state.probe, state.ctx):
            verdict = alternative.verdict
            if alternative.condition.tri is Tri.MAYBE:
                decided = _maybe(state, rule, chain, alternative, via, depth)
                if decided is not None:
                    return decided
                continue
            if verdict is None or verdict.kind == "continue":
                break
            if verdict.kind == "return":
                return None
            if verdict.kind in ("jump", "goto"):
                target = state.table.chains.get(verdict.target or "")
                if target is None:
                    raise WalkError(
                        f"{rule.where} jumps to chain {verdict.target!r}, not in the table"
                    )
                decided = _run(state, target, (*via, rule), depth + 1)
                if decided is not None or verdict.kind == "goto":
                    return decided
                break
            if verdict.kind in ("accept", "nat"):
                return (Fate.ACCEPTED, rule, chain.name, verdict, via)
            if verdict.blocks:
                return (Fate.BLOCKED, rule, chain.name, verdict, via)
            if verdict.kind == "queue":
                return (Fate.OTHER, rule, chain.name, verdict, via)
            # unknown verdict under a certain condition: cannot tell what happens next
            state.uncertain.append(Uncertain(rule, verdict.detail or "unknown verdict", verdict))
            break
        else:
            continue
    return None


# A large ruleset is mostly `tcp dport N accept`. Its leading port match, read once per
# rule, settles most rules for most probes without evaluating any expression.
_PortGuard = tuple[str, frozenset[int], tuple[tuple[int, int], ...]]


@dataclass(frozen=True)
class ChainIndex:
    """A chain's rules by the destination port their leading match requires.

    Built once per chain and evaluation, so a probe visits only the rules that can match
    its port (and every rule without such a match), in chain order: a 50,000-rule allow
    list costs one dictionary lookup per probe, not 50,000 rule evaluations.
    """

    size: int
    unguarded: tuple[int, ...]
    by_port: dict[tuple[str, int], tuple[int, ...]]
    ranged: tuple[tuple[int, str, tuple[tuple[int, int], ...]], ...]

    @classmethod
    def of(cls, chain: NftChain) -> ChainIndex:
        unguarded: list[int] = []
        by_port: dict[tuple[str, int], list[int]] = {}
        ranged: list[tuple[int, str, tuple[tuple[int, int], ...]]] = []
        for position, rule in enumerate(chain.rules):
            guard = _port_guard(rule)
            if guard is None:
                unguarded.append(position)
                continue
            protocol, ports, ranges = guard
            for port in ports:
                by_port.setdefault((protocol, port), []).append(position)
            if ranges:
                ranged.append((position, protocol, ranges))
        return cls(
            len(chain.rules),
            tuple(unguarded),
            {key: tuple(value) for key, value in by_port.items()},
            tuple(ranged),
        )

    def candidates(self, probe: Probe) -> list[int]:
        """Positions of the rules that may match ``probe``, in chain order."""
        protocols = [probe.proto] + (["th"] if probe.proto in ("tcp", "udp") else [])
        found = list(self.unguarded)
        for protocol in protocols:
            found.extend(self.by_port.get((protocol, probe.dport), ()))
        found.extend(
            position
            for position, protocol, ranges in self.ranged
            if protocol in protocols and any(low <= probe.dport <= high for low, high in ranges)
        )
        return sorted(set(found))


#: Per chain (by id, for the duration of one evaluation): its index.
GuardCache = dict[int, ChainIndex]


def _port_guard(rule: NftRule) -> _PortGuard | None:
    """(protocol, ports, ranges) of a ``dport ==`` match among the rule's leading matches."""
    for statement in rule.expr:
        body = statement.get("match") if type(statement) is dict and len(statement) == 1 else None
        if type(body) is not dict:
            return None
        if body.get("op") not in ("==", "in"):
            continue
        left = body.get("left")
        payload = left.get("payload") if type(left) is dict else None
        if type(payload) is not dict or payload.get("field") != "dport":
            continue
        protocol = payload.get("protocol")
        if protocol not in ("tcp", "udp", "th"):
            continue
        right = body.get("right")
        if type(right) is int:
            return (protocol, frozenset((right,)), ())
        items = right.get("set") if type(right) is dict else None
        if type(items) is not list:
            continue
        ports: set[int] = set()
        ranges: list[tuple[int, int]] = []
        for item in items:
            span = item.get("range") if type(item) is dict else None
            if type(item) is int:
                ports.add(item)
            elif type(span) is list and len(span) == 2 and all(type(v) is int for v in span):
                ranges.append((span[0], span[1]))
            else:
                break
        else:
            return (protocol, frozenset(ports), tuple(ranges))
    return None


def _maybe(
    state: _Walk,
    rule: NftRule,
    chain: NftChain,
    alternative: Alternative,
    via: tuple[NftRule, ...],
    depth: int,
) -> _Decision | None:
    verdict = alternative.verdict
    if verdict is None:
        return None
    if verdict.kind in ("accept", "nat") and state.defers:
        return (Fate.DEFERRED, rule, chain.name, verdict, via)
    reason = alternative.condition.reason
    hint = alternative.condition.hint
    if verdict.kind in ("accept", "nat") and hint is not None and reason is None:
        state.conditional.append((rule, hint))
        return None
    target = state.table.chains.get(verdict.target or "")
    if verdict.kind in ("jump", "goto") and hint is not None and reason is None and target:
        # `iifname "eth0" goto filter_IN_public`: a zone for one host interface. If that
        # zone accepts the packet, a block after it applies only on other interfaces.
        trial = _Walk(state.table, state.probe, state.ctx, state.removed, state.defers)
        trial.guards, trial.steps = state.guards, state.steps
        decided = _run(trial, target, (*via, rule), depth + 1)
        state.steps = trial.steps
        if decided is not None and decided[0] is Fate.ACCEPTED:
            state.conditional.append((rule, hint))
        return None
    if reason is not None and not state.defers and verdict.kind not in ("return", "continue"):
        state.uncertain.append(Uncertain(rule, reason, verdict))
    return None


# --------------------------------------------------------------------------------------
# A hook: every base chain on it, in priority order
# --------------------------------------------------------------------------------------


def hook_chains(
    ruleset: NftRuleset, hook: str, skip_tables: Iterable[tuple[str, str]] = ()
) -> list[tuple[NftTable, NftChain]]:
    """The base chains an IPv4 packet traverses on ``hook``, lowest priority first.

    Ties keep the listing's order (the kernel runs same-priority chains in registration
    order, which a listing does not show; for drop-is-final it does not change the result).
    """
    skipped = set(skip_tables)
    chains = [
        (table, chain)
        for table in ruleset.tables.values()
        if table.family in IPV4_FAMILIES and table.key not in skipped
        for chain in table.chains.values()
        if chain.hook == hook
    ]
    return sorted(chains, key=lambda pair: pair[1].priority or 0)


@dataclass
class NftBlocker:
    """A native nft rule (or a drop policy) that stops Kubernetes traffic."""

    table: NftTable
    base: NftChain
    chain: str
    rule: NftRule | None
    verdict: NftVerdict | None
    via: tuple[NftRule, ...]
    probes: list[Probe] = field(default_factory=list)
    round: int = 1
    hidden_behind: list[NftBlocker] = field(default_factory=list)
    #: Accepts before it that apply on some host interface: then it blocks only the
    #: traffic on other interfaces (a warning, not a certain block).
    unless: list[tuple[NftRule, str]] = field(default_factory=list)

    @property
    def certain(self) -> bool:
        return not self.unless

    @property
    def key(self) -> tuple[str, str, str, int, bool]:
        handle = self.rule.handle if self.rule else 0
        return (self.table.family, self.table.name, self.chain, handle, bool(self.unless))

    def describe(self) -> str:
        if self.rule is None:
            return f"{self.table.family} {self.table.name} {self.chain} policy drop"
        return f"{self.rule.text()} ({self.rule.where})"


@dataclass
class NftUnjudged:
    """A rule that could block a probe but this module could not evaluate."""

    table: NftTable
    base: NftChain
    uncertain: Uncertain
    probes: list[Probe] = field(default_factory=list)


_MAX_ROUNDS = 64


def find_nft_blockers(
    ruleset: NftRuleset,
    probes: Sequence[Probe],
    pod_cidr: ipaddress.IPv4Network,
    managed: Callable[[NftTable], object],
    skip_tables: Iterable[tuple[str, str]] = (),
) -> tuple[list[NftBlocker], list[NftUnjudged]]:
    """Every native rule or drop policy that stops a probe, now or once those before it go.

    Every base chain on the probe's hook is walked (an accept ends only that chain), so a
    reject in firewalld's ``filter_INPUT`` is found even when kube-proxy's chain at a
    lower priority accepted first. Tables ``managed`` says Kubernetes or a CNI own decide
    for themselves: their drops are not blockers and their unevaluable rules not reported.
    Round 1 is today's ruleset; each later round leaves out the previous rounds' rules, so
    a second reject behind the first is found before anything changes.
    """
    skip = tuple(skip_tables)
    removed: set[tuple[str, str, int]] = set()
    blockers: list[NftBlocker] = []
    unjudged: dict[tuple[int, str], NftUnjudged] = {}
    policy_blocked: set[tuple[str, str, str]] = set()
    last: dict[str, NftBlocker] = {}
    by_hook: dict[str, list[tuple[NftTable, NftChain]]] = {}
    guards: GuardCache = {}
    #: (probe, base chain) -> the last outcome; only those a removed rule decided change.
    outcomes: dict[tuple[int, int], NftOutcome] = {}
    just_removed: set[tuple[str, str, int]] = set()
    for probe in probes:
        by_hook.setdefault(probe.hook, hook_chains(ruleset, probe.hook.lower(), skip))
    for round_number in range(1, _MAX_ROUNDS + 1):
        found: dict[tuple[str, str, str, int, bool], NftBlocker] = {}
        for number, probe in enumerate(probes):
            earlier: NftBlocker | None = last.get(probe.label)
            for table, base in by_hook[probe.hook]:
                is_managed = bool(managed(table))
                cached = outcomes.get((number, id(base)))
                if cached is not None and not (
                    cached.rule is not None
                    and (table.family, table.name, cached.rule.handle) in just_removed
                ):
                    continue  # unchanged: reported (or not) in an earlier round
                gone = frozenset(h for f, t, h in removed if (f, t) == table.key)
                outcome = walk_base_chain(base, table, probe, pod_cidr, gone, is_managed, guards)
                outcomes[(number, id(base))] = outcome
                if round_number == 1 and not is_managed:
                    for entry in outcome.uncertain:
                        if entry.could_block:
                            ukey = (entry.rule.handle, f"{table.family} {table.name}")
                            item = unjudged.setdefault(ukey, NftUnjudged(table, base, entry))
                            if probe not in item.probes:
                                item.probes.append(probe)
                if outcome.fate is not Fate.BLOCKED or is_managed:
                    continue
                if outcome.rule is None:
                    pkey = (table.family, table.name, base.name)
                    if round_number > 1 and pkey in policy_blocked:
                        continue  # a policy stays; reported once, in the round it shows
                    policy_blocked.add(pkey)
                blocker = NftBlocker(
                    table,
                    base,
                    outcome.chain,
                    outcome.rule,
                    outcome.verdict,
                    outcome.via,
                    round=round_number,
                    unless=list(dict.fromkeys(outcome.conditional)),
                )
                blocker = found.setdefault(blocker.key, blocker)
                if probe not in blocker.probes:
                    blocker.probes.append(probe)
                if (
                    earlier is not None
                    and earlier is not blocker
                    and earlier not in blocker.hidden_behind
                ):
                    blocker.hidden_behind.append(earlier)
                earlier = blocker
                last[probe.label] = blocker
        if not found:
            break
        blockers.extend(found.values())
        rules = [b.rule for b in found.values() if b.rule is not None]
        if not rules:
            break
        just_removed = {(r.family, r.table, r.handle) for r in rules}
        removed.update(just_removed)
    return blockers, list(unjudged.values())
