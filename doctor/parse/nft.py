"""Parse ``nft -j list ruleset`` (the nft tool's own JSON) into tables, chains, sets, rules.

Pure: text in, data out. The rules keep their expressions as the JSON the nft tool printed
(``libnftables-json(5)``): :mod:`doctor.analysis.nft_eval` interprets them, and anything it
does not know stays visible instead of being dropped here. Garbled input is never guessed
at: :func:`parse_nft_ruleset` raises :class:`NftParseError` naming the source and the
position (line and column for JSON syntax, the index in the ``nftables`` array otherwise).
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from doctor.core.errors import FactError

#: Standard priority names (``nft(8)``, "PRIORITY"), for the families that take them.
PRIORITY_NAMES: dict[str, int] = {
    "raw": -300,
    "mangle": -150,
    "dstnat": -100,
    "filter": 0,
    "security": 50,
    "srcnat": 100,
}
#: The bridge family has its own names.
BRIDGE_PRIORITY_NAMES: dict[str, int] = {"dstnat": -300, "filter": -200, "out": 100, "srcnat": 300}

_PRIORITY_TEXT = re.compile(r"^\s*([a-z]+)\s*(?:([+-])\s*(\d+))?\s*$")


class NftParseError(FactError):
    """The text is not what ``nft -j list ruleset`` prints (a :class:`FactError`: ``error``)."""


@dataclass(frozen=True, eq=False)
class NftRule:
    """One rule, as it sits in its chain (compared by identity: the expressions are JSON)."""

    family: str
    table: str
    chain: str
    #: The kernel's handle: what ``nft delete rule FAMILY TABLE CHAIN handle N`` takes.
    handle: int
    #: 1-based position in the chain, as ``nft -a list chain`` shows the rules.
    position: int
    #: The statements and expressions, exactly as nft printed them.
    expr: tuple[Any, ...]
    comment: str | None = None

    @property
    def where(self) -> str:
        return f"{self.family} {self.table} {self.chain} handle {self.handle}"

    def text(self) -> str:
        """The rule in nft's own syntax, as far as :func:`render_statement` knows it."""
        words = [render_statement(statement) for statement in self.expr]
        if self.comment:
            words.append(f'comment "{self.comment}"')
        return " ".join(word for word in words if word)


@dataclass
class NftChain:
    family: str
    table: str
    name: str
    handle: int
    #: Base chains only: filter/nat/route, the hook, its numeric priority and the policy.
    type: str | None = None
    hook: str | None = None
    priority: int | None = None
    policy: str | None = None
    rules: list[NftRule] = field(default_factory=list)

    @property
    def is_base(self) -> bool:
        return self.hook is not None


@dataclass
class NftSet:
    """A named set or map. ``elements`` None means the listing did not include them."""

    family: str
    table: str
    name: str
    handle: int
    type: Any
    is_map: bool
    #: For maps: what the elements map to ("verdict", "ipv4_addr", ...).
    map_type: Any = None
    flags: tuple[str, ...] = ()
    elements: list[Any] | None = None


@dataclass
class NftTable:
    family: str
    name: str
    handle: int
    comment: str | None = None
    flags: tuple[str, ...] = ()
    chains: dict[str, NftChain] = field(default_factory=dict)
    sets: dict[str, NftSet] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str]:
        return (self.family, self.name)

    def rule_count(self) -> int:
        return sum(len(chain.rules) for chain in self.chains.values())


@dataclass
class NftRuleset:
    source: str
    tables: dict[tuple[str, str], NftTable]
    #: nft's version from the ``metainfo`` object, when it printed one.
    version: str | None = None

    def rule_count(self) -> int:
        return sum(table.rule_count() for table in self.tables.values())

    def base_chains(self) -> list[NftChain]:
        return [c for t in self.tables.values() for c in t.chains.values() if c.is_base]


def parse_priority(value: Any, family: str) -> int:
    """A base chain's priority: nft -j prints a number; hand-written JSON may say "filter + 10"."""
    if isinstance(value, bool):
        raise NftParseError(f"priority {value!r} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _PRIORITY_TEXT.match(value)
        names = BRIDGE_PRIORITY_NAMES if family == "bridge" else PRIORITY_NAMES
        if match and match.group(1) in names:
            base = names[match.group(1)]
            offset = int(match.group(3) or 0)
            return base - offset if match.group(2) == "-" else base + offset
        try:
            return int(value)
        except ValueError:
            pass
    raise NftParseError(f"priority {value!r} is neither a number nor a standard name")


def parse_nft_ruleset(text: str, source: str) -> NftRuleset:
    """Parse ``nft -j list ruleset``; raise :class:`NftParseError` naming ``source``.

    Empty output (``nft`` prints nothing for an empty ruleset on some versions) is an empty
    ruleset. Objects nft may list but nothing here evaluates (flowtables, counters,
    quotas, ct helpers...) are skipped.
    """
    if not text.strip():
        return NftRuleset(source, {})
    with _collector_paused():
        return _parse_document(text, source)


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Building a large ruleset allocates hundreds of thousands of containers, none of them
    garbage; Python's cyclic collector would walk the growing heap again and again (half
    the parse time of a 50,000-rule ruleset). Reference counting still frees everything."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse_document(text: str, source: str) -> NftRuleset:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise NftParseError(
            f"{source}: not JSON (expected `nft -j list ruleset` output): {exc.msg} "
            f"(line {exc.lineno} column {exc.colno})"
        ) from exc
    except RecursionError as exc:
        raise NftParseError(f"{source}: JSON nested too deeply") from exc
    if not isinstance(document, dict) or not isinstance(document.get("nftables"), list):
        raise NftParseError(
            f'{source}: JSON without a top-level "nftables" list: not `nft -j` output'
        )
    try:
        return _build(document["nftables"], source)
    except NftParseError as exc:
        raise NftParseError(f"{source}: {exc}") from exc


def _build(items: list[Any], source: str) -> NftRuleset:
    ruleset = NftRuleset(source, {})
    pending_rules: list[tuple[int, dict[str, Any]]] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            raise NftParseError(f"nftables[{index}] is not an object with one key")
        ((kind, body),) = item.items()
        if kind == "metainfo":
            if isinstance(body, dict) and isinstance(body.get("version"), str):
                ruleset.version = body["version"]
            continue
        if kind not in ("table", "chain", "rule", "set", "map"):
            continue
        if not isinstance(body, dict):
            raise NftParseError(f"nftables[{index}] ({kind}) is not an object")
        if kind == "table":
            table = NftTable(
                family=_string(body, "family", index, kind),
                name=_string(body, "name", index, kind),
                handle=_integer(body, "handle", index, kind),
                comment=body.get("comment") if isinstance(body.get("comment"), str) else None,
                flags=_flags(body.get("flags")),
            )
            if table.key in ruleset.tables:
                raise NftParseError(f"nftables[{index}]: table {table.family} {table.name} twice")
            ruleset.tables[table.key] = table
        elif kind == "chain":
            _add_chain(ruleset, body, index)
        elif kind in ("set", "map"):
            _add_set(ruleset, body, index, kind)
        else:
            pending_rules.append((index, body))
    # nft lists every rule after its chain, but a hand-assembled bundle may not: attach last.
    for index, body in pending_rules:
        _add_rule(ruleset, body, index)
    return ruleset


def _table_of(ruleset: NftRuleset, body: dict[str, Any], index: int, kind: str) -> NftTable:
    family = _string(body, "family", index, kind)
    name = _string(body, "table", index, kind)
    table = ruleset.tables.get((family, name))
    if table is None:
        raise NftParseError(f"nftables[{index}] ({kind}) names table {family} {name}, not listed")
    return table


def _add_chain(ruleset: NftRuleset, body: dict[str, Any], index: int) -> None:
    table = _table_of(ruleset, body, index, "chain")
    name = _string(body, "name", index, "chain")
    if name in table.chains:
        raise NftParseError(f"nftables[{index}]: chain {name!r} twice in {table.name}")
    chain = NftChain(table.family, table.name, name, _integer(body, "handle", index, "chain"))
    if "hook" in body:
        chain.hook = _string(body, "hook", index, "chain")
        chain.type = body.get("type") if isinstance(body.get("type"), str) else "filter"
        try:
            chain.priority = parse_priority(body.get("prio", 0), table.family)
        except NftParseError as exc:
            raise NftParseError(f"nftables[{index}] chain {name}: {exc}") from exc
        policy = body.get("policy", "accept")
        if policy not in ("accept", "drop"):
            raise NftParseError(f"nftables[{index}] chain {name}: bad policy {policy!r}")
        chain.policy = policy
    table.chains[name] = chain


def _add_set(ruleset: NftRuleset, body: dict[str, Any], index: int, kind: str) -> None:
    table = _table_of(ruleset, body, index, kind)
    name = _string(body, "name", index, kind)
    elements = body.get("elem")
    if elements is not None and not isinstance(elements, list):
        raise NftParseError(f"nftables[{index}] {kind} {name}: elem is not a list")
    table.sets[name] = NftSet(
        family=table.family,
        table=table.name,
        name=name,
        handle=_integer(body, "handle", index, kind),
        type=body.get("type"),
        is_map=kind == "map",
        map_type=body.get("map"),
        flags=_flags(body.get("flags")),
        elements=list(elements) if elements is not None else [],
    )


def _add_rule(ruleset: NftRuleset, body: dict[str, Any], index: int) -> None:
    # The hot path of a large ruleset: plain lookups, the slow checks only on a miss.
    family, table_name, chain_name = body.get("family"), body.get("table"), body.get("chain")
    table = ruleset.tables.get((family, table_name))  # type: ignore[arg-type]
    if table is None:
        table = _table_of(ruleset, body, index, "rule")
    chain = table.chains.get(chain_name) if isinstance(chain_name, str) else None
    if chain is None:
        _string(body, "chain", index, "rule")
        raise NftParseError(f"nftables[{index}] (rule) is in chain {chain_name!r}, not listed")
    expr, handle = body.get("expr"), body.get("handle")
    if not isinstance(expr, list):
        raise NftParseError(f"nftables[{index}] (rule in {chain_name}) has no expr list")
    if type(handle) is not int:
        handle = _integer(body, "handle", index, "rule")
    comment = body.get("comment")
    rules = chain.rules
    rules.append(
        NftRule(
            table.family,
            table.name,
            chain.name,
            handle,
            len(rules) + 1,
            tuple(expr),
            comment if isinstance(comment, str) else None,
        )
    )


def _string(body: dict[str, Any], key: str, index: int, kind: str) -> str:
    value = body.get(key)
    if not isinstance(value, str) or not value:
        raise NftParseError(f"nftables[{index}] ({kind}) has no {key!r} string")
    return value


def _integer(body: dict[str, Any], key: str, index: int, kind: str) -> int:
    value = body.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise NftParseError(f"nftables[{index}] ({kind}) has no {key!r} number")
    return value


def _flags(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return ()


# --------------------------------------------------------------------------------------
# Rendering, for findings: the rule as `nft list ruleset` would show it (best effort)
# --------------------------------------------------------------------------------------

_VERDICTS = ("accept", "drop", "continue", "return")


def render_value(value: Any) -> str:
    """One expression in nft syntax; JSON for anything unknown (never fails)."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, str):
        return value if re.fullmatch(r"[@\w./:*-]+", value) else json.dumps(value)
    if isinstance(value, list):
        return ",".join(render_value(v) for v in value)
    if not isinstance(value, dict) or len(value) != 1:
        return json.dumps(value, sort_keys=True)
    ((key, body),) = value.items()
    if key == "payload" and isinstance(body, dict):
        return f"{body.get('protocol', '?')} {body.get('field', '?')}"
    if key in ("meta", "ct", "socket", "osf", "rt", "exthdr") and isinstance(body, dict):
        return f"{key} {body.get('key', body.get('name', '?'))}"
    if key == "fib" and isinstance(body, dict):
        flags = body.get("flags", [])
        flags = flags if isinstance(flags, list) else [flags]
        return f"fib {' . '.join(str(f) for f in flags)} {body.get('result', '?')}"
    if key == "set" and isinstance(body, list):
        return "{ " + ", ".join(_render_element(v) for v in body) + " }"
    if key == "range" and isinstance(body, list) and len(body) == 2:
        return f"{render_value(body[0])}-{render_value(body[1])}"
    if key == "prefix" and isinstance(body, dict):
        return f"{body.get('addr')}/{body.get('len')}"
    if key == "concat" and isinstance(body, list):
        return " . ".join(render_value(v) for v in body)
    if key == "elem" and isinstance(body, dict):
        return render_value(body.get("val"))
    if key in ("&", "|", "^") and isinstance(body, list) and len(body) == 2:
        return f"{render_value(body[0])} {key} {render_value(body[1])}"
    if key in _VERDICTS:
        return str(key)
    if key in ("jump", "goto") and isinstance(body, dict):
        return f"{key} {body.get('target')}"
    return json.dumps(value, sort_keys=True)


def _render_element(element: Any) -> str:
    """A set element, or a map element ``[key, value]`` as ``key : value``."""
    if isinstance(element, list) and len(element) == 2:
        return f"{render_value(element[0])} : {render_value(element[1])}"
    return render_value(element)


def render_statement(statement: Any) -> str:
    """One statement of a rule in nft syntax (``tcp dport 10250 reject``)."""
    if not isinstance(statement, dict) or len(statement) != 1:
        return json.dumps(statement, sort_keys=True)
    ((key, body),) = statement.items()
    if key == "match" and isinstance(body, dict):
        op = body.get("op", "==")
        left, right = render_value(body.get("left")), render_value(body.get("right"))
        return f"{left} {right}" if op in ("==", "in") else f"{left} {op} {right}"
    if key in _VERDICTS:
        return str(key)
    if key in ("jump", "goto") and isinstance(body, dict):
        return f"{key} {body.get('target')}"
    if key == "reject":
        if isinstance(body, dict) and body:
            kind, what = body.get("type"), body.get("expr")
            if kind == "tcp reset" or kind == "tcp-reset":
                return "reject with tcp reset"
            return f"reject with {kind} {what}" if what else f"reject with {kind}"
        return "reject"
    if key == "counter":
        return "counter"
    if key == "log":
        return "log"
    if key == "vmap" and isinstance(body, dict):
        return f"{render_value(body.get('key'))} vmap {render_value(body.get('data'))}"
    if key == "xt" and isinstance(body, dict):
        return f"xt {body.get('type', '?')} {body.get('name', '?')}"
    if key == "queue":
        return "queue"
    return json.dumps(statement, sort_keys=True)


# --------------------------------------------------------------------------------------
# nft scripts (/etc/nftables.conf): which tables a file declares, where a chain's rules are
# --------------------------------------------------------------------------------------

_FAMILIES = ("ip", "ip6", "inet", "arp", "bridge", "netdev")
_TABLE_LINE = re.compile(
    r"^\s*(?:add\s+|create\s+)?table\s+(?:(ip|ip6|inet|arp|bridge|netdev)\s+)?([\w.-]+)\s*(\{)?"
)
_CHAIN_LINE = re.compile(r"^\s*(?:add\s+)?chain\s+([\w./-]+|\"[^\"]+\")\s*\{")
_CHAIN_PROPERTY = re.compile(r"^\s*(type|policy|comment|devices|flags|priority)\b")


def _code(line: str) -> str:
    """A script line without its comment (``#`` outside double quotes)."""
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == "#" and not quoted:
            return line[:index]
    return line


def _depth_change(code: str) -> int:
    quoted, change = False, 0
    for char in code:
        if char == '"':
            quoted = not quoted
        elif not quoted:
            change += (char == "{") - (char == "}")
    return change


def script_tables(text: str) -> set[tuple[str, str]]:
    """(family, name) of every table an nft script declares (family ``ip`` when omitted)."""
    found: set[tuple[str, str]] = set()
    for line in text.splitlines():
        match = _TABLE_LINE.match(_code(line))
        if match:
            found.add((match.group(1) or "ip", match.group(2)))
    return found


def script_chain_rules(
    text: str, family: str, table: str, chain: str
) -> list[tuple[int, int]] | None:
    """The (first, last) line numbers of each rule of CHAIN in ``table FAMILY TABLE { … }``.

    None when the script does not hold that chain in that nested form, or writes it in a
    way this reader does not take apart (several statements on one line, a chain declared
    twice): the caller then leaves the file to a human instead of guessing.
    """
    spans: list[tuple[int, int]] = []
    depth = 0
    in_table = in_chain = seen = False
    rule_start: int | None = None
    continued = False
    for number, line in enumerate(text.splitlines(), start=1):
        code = _code(line)
        stripped = code.strip()
        if depth == 0:
            match = _TABLE_LINE.match(code)
            in_table = bool(
                match
                and match.group(3)
                and (match.group(1) or "ip", match.group(2)) == (family, table)
            )
        elif depth == 1 and in_table:
            match = _CHAIN_LINE.match(code)
            name = match.group(1).strip('"') if match else None
            if name == chain:
                if seen or _depth_change(code) != 1:
                    return None  # declared twice, or a one-line chain with rules in it
                in_chain = seen = True
                depth += 1
                continue
        elif depth >= 2 and in_chain:
            if rule_start is None and depth == 2:
                if not stripped or (stripped == "}" and not continued):
                    pass
                elif _CHAIN_PROPERTY.match(code):
                    pass  # type … hook … priority …; policy …;
                else:
                    if ";" in stripped:
                        return None
                    rule_start = number
            change = _depth_change(code)
            if rule_start is not None:
                ends = depth + change == 2 and not stripped.endswith("\\")
                if ends:
                    spans.append((rule_start, number))
                    rule_start = None
            continued = stripped.endswith("\\")
        change = _depth_change(code)
        depth += change
        if depth < 0:
            return None
        if in_chain and depth < 2:
            in_chain = False
        if depth == 0:
            in_table = False
    if rule_start is not None or not seen:
        return None
    return spans
