"""node.iptables.reject: a REJECT/DROP in the filter table that Kubernetes traffic hits first.

Three parts, each usable alone (the tests drive them directly):

* a parser of ``iptables-save`` / ``/etc/sysconfig/iptables`` text into tables, chains and
  ordered rules, tokenised exactly as ``iptables-restore`` does;
* an evaluator that walks one probe packet through the filter table the way netfilter does
  (in order, into user chains and back, ``-g`` gotos, RETURN, the chain policy) with
  three-valued matching: yes, no, or "cannot tell" (marks, ipsets, physdev...);
* the analysis: which rule decides each kind of traffic Kubernetes needs, who owns it, and
  what the fix has to remove so that every probe gets through.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from doctor.context import CheckContext
from doctor.facts import CommandOutput, FactError, FactMissing, NodeFacts
from doctor.model import Finding, FixSafety, Scope, Severity, Verdict
from doctor.registry import Check
from fixes.base import Action, Fix, WriteFile
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
# Parsing
# --------------------------------------------------------------------------------------

BUILTIN_CHAINS: dict[str, tuple[str, ...]] = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "raw": ("PREROUTING", "OUTPUT"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
}
BUILTIN_POLICIES = ("ACCEPT", "DROP")

_COUNTERS = re.compile(r"^\[\d+:\d+\]$")
_TABLE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_RULE_COUNTERS_PREFIX = re.compile(r"^\[(\d+):(\d+)\]\s+")
_CONTROL_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ufffd]")

#: Long and short spellings of the options every rule may carry, mapped to the short one.
_BASIC_OPTIONS = {
    "-s": "-s",
    "--source": "-s",
    "--src": "-s",
    "-d": "-d",
    "--destination": "-d",
    "--dst": "-d",
    "-i": "-i",
    "--in-interface": "-i",
    "-o": "-o",
    "--out-interface": "-o",
    "-p": "-p",
    "--protocol": "-p",
    "-f": "-f",
    "--fragment": "-f",
    "-c": "-c",
    "--set-counters": "-c",
}
_BASIC_ARGUMENT_COUNT = {"-s": 1, "-d": 1, "-i": 1, "-o": 1, "-p": 1, "-f": 0, "-c": 2}


class ParseError(Exception):
    """One line of a ruleset is not valid ``iptables-save`` output."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class Token:
    text: str
    quoted: bool = False


def split_arguments(text: str, line: int = 0) -> list[Token]:
    """Split a rule line the way ``iptables-restore`` does (``add_param_to_argv``).

    Only double quotes group; inside them a backslash escapes the next character (so
    ``\\'`` and ``\\"`` in weave's comments come out as ``'`` and ``"``); a closing quote ends
    the argument. Everything else is literal, which is why ipset names full of ``;|$(){}~``
    need no quoting.
    """
    tokens: list[Token] = []
    buffer: list[str] = []
    in_quote = escaped = False
    for char in text:
        if in_quote:
            if escaped:
                buffer.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_quote = False
                tokens.append(Token("".join(buffer), quoted=True))
                buffer = []
            else:
                buffer.append(char)
            continue
        if char == '"':
            in_quote = True
            continue
        if char in " \t":
            if buffer:
                tokens.append(Token("".join(buffer)))
                buffer = []
            continue
        buffer.append(char)
    if in_quote:
        raise ParseError(line, "unterminated quote")
    if buffer:
        tokens.append(Token("".join(buffer)))
    return tokens


@dataclass(frozen=True)
class Option:
    """One option of a rule: ``! --dport 22`` is Option("--dport", ("22",), negated=True)."""

    name: str
    args: tuple[str, ...]
    negated: bool = False


@dataclass(frozen=True)
class MatchModule:
    """``-m NAME`` and its options."""

    name: str
    options: tuple[Option, ...]


@dataclass(frozen=True)
class Rule:
    """One rule, as it sits in its chain."""

    table: str
    chain: str
    #: 1-based, as ``iptables -L CHAIN --line-numbers`` shows it.
    position: int
    #: Line in the source text (0 for rules the analysis made up).
    line: int
    #: The rule as written, e.g. ``-A FORWARD -j REJECT --reject-with icmp-host-prohibited``.
    text: str
    #: The arguments after ``-A CHAIN``, unquoted: exactly what ``iptables -D CHAIN`` takes.
    spec: tuple[str, ...]
    basics: tuple[Option, ...]
    modules: tuple[MatchModule, ...]
    target: str | None
    target_args: tuple[str, ...]
    goto: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.chain, self.position)

    def comment(self) -> str:
        return " ".join(
            " ".join(option.args)
            for module in self.modules
            if module.name == "comment"
            for option in module.options
        )

    def basic(self, name: str) -> Option | None:
        return next((option for option in self.basics if option.name == name), None)


@dataclass
class Chain:
    name: str
    builtin: bool
    #: "ACCEPT"/"DROP" for built-in chains, None for user chains.
    policy: str | None
    line: int
    rules: list[Rule] = field(default_factory=list)


@dataclass
class Table:
    name: str
    line: int
    chains: dict[str, Chain] = field(default_factory=dict)

    def rule_count(self) -> int:
        return sum(len(chain.rules) for chain in self.chains.values())


@dataclass
class Ruleset:
    """A parsed ``iptables-save`` dump or ``/etc/sysconfig/iptables``."""

    source: str
    tables: dict[str, Table]
    #: The ``# Generated by iptables-save v1.8.9 (nf_tables)`` comment, when there is one.
    generator: str | None = None

    @property
    def filter(self) -> Table | None:
        return self.tables.get("filter")

    def has_rules(self) -> bool:
        """True when anything could affect a packet: a rule, or a non-ACCEPT policy."""
        for table in self.tables.values():
            if table.rule_count():
                return True
            if any(chain.policy not in (None, "ACCEPT") for chain in table.chains.values()):
                return True
        return False

    def variant(self) -> str | None:
        """ "nft" or "legacy" from the generator comment; None when it does not say."""
        if not self.generator:
            return None
        # iptables ≥ 1.8 tags nft output "(nf_tables)"; legacy output is untagged or "(legacy)".
        return "nft" if "(nf_tables)" in self.generator else "legacy"


def parse_rule(table: str, chain: str, tokens: Sequence[Token], line: int, text: str) -> Rule:
    """Structure the arguments of one rule (everything after ``-A CHAIN``)."""
    basics: list[Option] = []
    modules: list[MatchModule] = []
    module_name: str | None = None
    module_options: list[Option] = []
    target: str | None = None
    target_args: tuple[str, ...] = ()
    goto = False
    negate = False

    def close_module() -> None:
        nonlocal module_name, module_options
        if module_name is not None:
            modules.append(MatchModule(module_name, tuple(module_options)))
        module_name, module_options = None, []

    index = 0
    while index < len(tokens):
        token = tokens[index]
        word = token.text
        if not token.quoted and word == "!":
            if negate:
                raise ParseError(line, "two '!' in a row")
            negate = True
            index += 1
            continue
        if not token.quoted and word in ("-j", "--jump", "-g", "--goto"):
            if negate:
                raise ParseError(line, f"'!' cannot negate {word}")
            if index + 1 >= len(tokens) or not tokens[index + 1].text:
                raise ParseError(line, f"{word} without a target")
            close_module()
            target = tokens[index + 1].text
            goto = word in ("-g", "--goto")
            target_args = tuple(t.text for t in tokens[index + 2 :])
            break
        if not token.quoted and word in ("-m", "--match"):
            if negate:
                raise ParseError(line, "'!' cannot negate -m")
            if index + 1 >= len(tokens) or not tokens[index + 1].text:
                raise ParseError(line, f"{word} without a match name")
            close_module()
            module_name = tokens[index + 1].text
            index += 2
            continue
        if not token.quoted and word in _BASIC_OPTIONS:
            short = _BASIC_OPTIONS[word]
            count = _BASIC_ARGUMENT_COUNT[short]
            args = tuple(t.text for t in tokens[index + 1 : index + 1 + count])
            if len(args) < count or any(not a for a in args):
                raise ParseError(line, f"{word} without a value")
            basics.append(Option(short, args, negate))
            negate = False
            index += 1 + count
            continue
        if not token.quoted and word.startswith("--") and len(word) > 2:
            if module_name is None:
                protocol = next((o.args[0] for o in basics if o.name == "-p"), None)
                if protocol is None:
                    raise ParseError(line, f"option {word} outside a match (-m)")
                # `-p tcp --dport 22`: iptables loads the protocol's match implicitly.
                module_name = protocol
            args_list: list[str] = []
            index += 1
            option_negated = negate
            # Old syntax `--dport ! 22` negates after the option name.
            if index < len(tokens) and not tokens[index].quoted and tokens[index].text == "!":
                option_negated = True
                index += 1
            while index < len(tokens) and (
                tokens[index].quoted
                or not (tokens[index].text.startswith("-") or tokens[index].text == "!")
            ):
                args_list.append(tokens[index].text)
                index += 1
            module_options.append(Option(word, tuple(args_list), option_negated))
            negate = False
            continue
        raise ParseError(line, f"unexpected {word!r} in the rule")
    if negate:
        raise ParseError(line, "'!' at the end of the rule")
    close_module()
    return Rule(
        table=table,
        chain=chain,
        position=0,
        line=line,
        text=text,
        spec=tuple(t.text for t in tokens),
        basics=tuple(basics),
        modules=tuple(modules),
        target=target,
        target_args=target_args,
        goto=goto,
    )


def _check_target(table: Table, rule: Rule, line: int) -> None:
    """A jump to a chain the table does not declare is as invalid as iptables finds it."""
    target = rule.target
    if target is None or target in table.chains:
        return
    # Extension targets (ACCEPT, LOG, MASQUERADE, NFQUEUE...) are upper case without "-";
    # anything else is a user chain name.
    if not re.fullmatch(r"[A-Z][A-Z0-9_]*", target):
        raise ParseError(line, f"jump to undeclared chain {target!r}")
    if rule.goto:
        raise ParseError(line, f"goto to undeclared chain {target!r}")


def parse_ruleset(text: str, source: str) -> Ruleset:
    """Parse ``iptables-save`` output; raise :class:`FactError` naming ``source`` and line.

    Empty text (no tables at all) is valid: a node without rules. Accepted commands are
    those ``iptables-save`` writes (``*table``, ``:chain``, ``-A``, ``COMMIT``) plus the
    ``-I``, ``-N`` and ``-P`` people put into hand-written ``/etc/sysconfig/iptables``.
    """
    try:
        return _parse(text, source)
    except ParseError as exc:
        raise FactError(f"{source}: {exc}") from exc


def _parse(text: str, source: str) -> Ruleset:
    tables: dict[str, Table] = {}
    generator: str | None = None
    current: Table | None = None
    # Per chain: (rule, insert position or None for append), in file order.
    pending: dict[str, list[tuple[Rule, int | None]]] = {}
    last_line = 0

    def finish(table: Table) -> None:
        for chain_name, entries in pending.items():
            rules: list[Rule] = []
            for rule, insert_at in entries:
                if insert_at is None:
                    rules.append(rule)
                else:
                    if insert_at > len(rules) + 1:
                        raise ParseError(rule.line, f"-I {chain_name} {insert_at}: index too big")
                    rules.insert(insert_at - 1, rule)
            table.chains[chain_name].rules = [
                replace(rule, position=number) for number, rule in enumerate(rules, start=1)
            ]
        pending.clear()

    lines = text.split("\n")
    # Output that stops without a final newline was cut off (a timeout, a full disk).
    cut_off = bool(lines) and lines[-1].strip() != ""
    for number, raw in enumerate(lines, start=1):
        if raw.strip():
            last_line = number
        if cut_off and number == len(lines) and current is not None:
            raise ParseError(
                number,
                f"input ends mid-line inside table {current.name!r} (opened at line "
                f"{current.line}) without COMMIT: truncated output?",
            )
        line = raw.rstrip("\r")
        bad = _CONTROL_CHAR.search(line)
        if bad:
            what = "undecodable bytes" if bad.group() == "\ufffd" else f"0x{ord(bad.group()):02x}"
            raise ParseError(number, f"control character {what}: binary data, not iptables-save")
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if generator is None and stripped.startswith("# Generated by"):
                generator = stripped
            continue
        if stripped.startswith("*"):
            name = stripped[1:].strip()
            if current is not None:
                raise ParseError(
                    number,
                    f"table {name!r} starts before COMMIT of table {current.name!r} "
                    f"(opened at line {current.line})",
                )
            if not _TABLE_NAME.match(name):
                raise ParseError(number, f"bad table name {name!r}")
            if name in tables:
                raise ParseError(number, f"table {name!r} appears twice")
            current = Table(name, number)
            for builtin in BUILTIN_CHAINS.get(name, ()):
                current.chains[builtin] = Chain(builtin, True, "ACCEPT", number)
            continue
        if current is None:
            raise ParseError(number, f"expected a table line such as '*filter', got {stripped!r}")
        if stripped == "COMMIT":
            finish(current)
            tables[current.name] = current
            current = None
            continue
        if stripped.startswith(":"):
            _declare_chain(current, stripped, number)
            continue
        match = _RULE_COUNTERS_PREFIX.match(stripped)
        command_text = stripped[match.end() :] if match else stripped
        tokens = split_arguments(command_text, number)
        if not tokens or tokens[0].quoted:
            raise ParseError(number, f"expected a rule (-A CHAIN ...), got {stripped!r}")
        command = tokens[0].text
        if not command.startswith("-"):
            raise ParseError(number, f"expected a rule (-A CHAIN ...), got {stripped!r}")
        if command in ("-A", "--append", "-I", "--insert"):
            if len(tokens) < 2 or not tokens[1].text:
                raise ParseError(number, f"{command} without a chain name")
            chain_name = tokens[1].text
            if chain_name not in current.chains:
                raise ParseError(number, f"rule for undeclared chain {chain_name!r}")
            rest = tokens[2:]
            insert_at: int | None = None
            if command in ("-I", "--insert"):
                insert_at = 1
                if rest and not rest[0].quoted and rest[0].text.isdigit():
                    insert_at = int(rest[0].text)
                    rest = rest[1:]
                if insert_at < 1:
                    raise ParseError(number, f"-I {chain_name} {insert_at}: bad index")
            rule = parse_rule(current.name, chain_name, rest, number, command_text)
            _check_target(current, rule, number)
            pending.setdefault(chain_name, []).append((rule, insert_at))
            continue
        if command in ("-N", "--new-chain"):
            if len(tokens) != 2:
                raise ParseError(number, f"{command} takes exactly one chain name")
            _add_chain(current, tokens[1].text, None, number)
            continue
        if command in ("-P", "--policy"):
            if len(tokens) != 3:
                raise ParseError(number, f"{command} takes a chain and a policy")
            chain = current.chains.get(tokens[1].text)
            if chain is None or not chain.builtin:
                raise ParseError(number, f"-P for {tokens[1].text!r}, not a built-in chain")
            if tokens[2].text not in BUILTIN_POLICIES:
                raise ParseError(number, f"bad policy {tokens[2].text!r}")
            chain.policy = tokens[2].text
            continue
        raise ParseError(number, f"unsupported command {command!r} (iptables-save writes -A)")
    if current is not None:
        raise ParseError(
            last_line,
            f"input ends inside table {current.name!r} (opened at line {current.line}) "
            "without COMMIT: truncated output?",
        )
    return Ruleset(source=source, tables=tables, generator=generator)


def _declare_chain(table: Table, text: str, line: int) -> None:
    parts = text[1:].split()
    if not parts or len(parts) > 3:
        raise ParseError(line, f"bad chain declaration {text!r}")
    name, policy = parts[0], parts[1] if len(parts) > 1 else "-"
    if len(parts) == 3 and not _COUNTERS.match(parts[2]):
        raise ParseError(line, f"bad counters {parts[2]!r} in chain declaration")
    builtin = name in BUILTIN_CHAINS.get(table.name, ())
    if builtin:
        if policy not in BUILTIN_POLICIES:
            raise ParseError(line, f"bad policy {policy!r} for built-in chain {name}")
        if table.chains[name].line != table.line:
            raise ParseError(line, f"chain {name!r} declared twice")
        table.chains[name] = Chain(name, True, policy, line)
        return
    if policy != "-":
        raise ParseError(line, f"user chain {name!r} cannot have policy {policy!r}")
    _add_chain(table, name, None, line)


def _add_chain(table: Table, name: str, policy: str | None, line: int) -> None:
    if not name or name.startswith("-") or name == "!":
        raise ParseError(line, f"bad chain name {name!r}")
    if name in table.chains:
        raise ParseError(line, f"chain {name!r} declared twice")
    table.chains[name] = Chain(name, False, policy, line)


# --------------------------------------------------------------------------------------
# Evaluation
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
    """One kind of packet Kubernetes needs, as netfilter sees its first (NEW) packet.

    ``in_iface``/``out_iface`` None means "a host interface whose name we do not know"
    (eth0, ens3...): known to be none of the pod, Docker or loopback interfaces.
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


# --------------------------------------------------------------------------------------
# Walking a probe through the filter table
# --------------------------------------------------------------------------------------


class Fate(enum.Enum):
    ACCEPTED = "accepted"
    BLOCKED = "blocked"
    #: A managed chain's ACCEPT that may match (by mark, ipset...): the CNI decides.
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
    appended = appended or {}
    return {
        name: ChainView(
            name,
            chain.policy,
            tuple(r for r in chain.rules if r.key not in removed) + tuple(appended.get(name, [])),
        )
        for name, chain in table.chains.items()
    }


def walk(view: FilterView, probe: Probe, pod_cidr: ipaddress.IPv4Network, source: str) -> Outcome:
    """Follow ``probe`` through the chains from its hook until a rule or policy decides."""
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
            if target == "ACCEPT" and managed_owner(rule):
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
