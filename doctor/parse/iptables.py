"""Parse ``iptables-save`` text into tables, chains and ordered rules.

A library, not a check: ``node.iptables.reject`` reads the live rules and
``/etc/sysconfig/iptables`` with it, and anything else that needs to look at a node's
ruleset can do the same. The text is tokenised exactly as ``iptables-restore`` does
(:func:`split_arguments`), so a rule's :attr:`Rule.spec` is what ``iptables -D CHAIN`` takes
back. Garbled input is never guessed at: :func:`parse_ruleset` raises
:class:`~doctor.core.errors.FactError` naming the source and the line, which the check runner
reports as ``error`` (CONTRIBUTING: parsers name the file and line themselves).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from doctor.core.errors import FactError

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
#: A comment's text is whatever bytes whoever added the rule chose: iptables-save prints them
#: as they are (quoting only ``"`` and ``\``), so control characters there are not binary junk.
_QUOTED_COMMENT = re.compile(r'--comment\s+"(?:[^"\\]|\\.)*"')

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
        bad = _CONTROL_CHAR.search(_QUOTED_COMMENT.sub("", line))
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
