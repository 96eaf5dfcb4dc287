"""Label and field selectors with the real API server's grammar and error texts.

Clients under test build selectors as strings; parsing them here the way apimachinery does
catches a client that sends a selector the real server would reject.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .resources import ResourceType

Matcher = Callable[[Mapping[str, Any]], bool]

_KEY_RE = re.compile(
    r"^([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)


class SelectorError(ValueError):
    """A selector the real server answers with 400 BadRequest."""


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside a `(...)` value set."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _check_key(key: str) -> None:
    if not key or not _KEY_RE.match(key):
        raise SelectorError(
            f"unable to parse requirement: <nil>: Invalid value: {key!r}: name part must consist "
            "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character"
        )


def _parse_requirement(term: str) -> Matcher:
    term = term.strip()
    if not term:
        raise SelectorError("found '', expected: !, identifier, or 'end of string'")
    if term.startswith("!"):
        key = term[1:].strip()
        _check_key(key)
        return lambda labels: key not in labels
    m = re.match(r"^([^\s=!<>()]+)\s+(in|notin)\s*\((.*)\)\s*$", term)
    if m:
        key, op, raw = m.group(1), m.group(2), m.group(3)
        _check_key(key)
        values = frozenset(v.strip() for v in raw.split(",") if v.strip())
        if not values:
            raise SelectorError(
                f"for 'in', 'notin' operators, values set can't be empty (key {key!r})"
            )
        if op == "in":
            return lambda labels: key in labels and labels[key] in values
        return lambda labels: key not in labels or labels[key] not in values
    m = re.match(r"^([^\s=!<>()]+)\s*(==|=|!=|>|<)\s*([^\s=!<>(),]*)\s*$", term)
    if m:
        key, op, value = m.group(1), m.group(2), m.group(3)
        _check_key(key)
        if op in ("=", "=="):
            return lambda labels: key in labels and labels[key] == value
        if op == "!=":
            return lambda labels: key not in labels or labels[key] != value
        try:
            number = int(value)
        except ValueError as exc:
            raise SelectorError(
                f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an "
                f"integer: {value!r}"
            ) from exc

        def compare(labels: Mapping[str, Any]) -> bool:
            try:
                have = int(labels[key])
            except (KeyError, ValueError):
                return False
            return have > number if op == ">" else have < number

        return compare
    if re.match(r"^[^\s=!<>(),]+$", term):
        _check_key(term)
        return lambda labels: term in labels
    raise SelectorError(
        f"unable to parse requirement: found {term!r}, expected: in, notin, =, ==, !=, gt, lt"
    )


def parse_label_selector(text: str | None) -> Matcher:
    """Return a predicate over an object's labels; empty selects everything."""
    if not text or not text.strip():
        return lambda labels: True
    matchers = [_parse_requirement(t) for t in _split_top_level(text)]
    return lambda labels: all(m(labels) for m in matchers)


def _split_escaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def _get_path(obj: Mapping[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def field_value(rt: ResourceType, obj: Mapping[str, Any], label: str) -> str:
    """The string a field selector compares against, as the registry's field set has it."""
    if label == "source" and rt.kind == "Event":
        value = _get_path(obj, "source.component")
    elif label == "status.podIPs":
        ips = _get_path(obj, "status.podIPs") or []
        value = ips[0].get("ip") if ips else _get_path(obj, "status.podIP")
    else:
        value = _get_path(obj, label)
    if value is None:
        if label in ("spec.hostNetwork", "spec.unschedulable"):
            return "false"
        if label == "status.replicas":
            return "0"
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_field_selector(rt: ResourceType, text: str | None) -> Callable[[Mapping[str, Any]], bool]:
    """Return a predicate over whole objects; unsupported labels raise like the real server."""
    if not text or not text.strip():
        return lambda obj: True
    supported = rt.supported_field_labels()
    tests: list[tuple[str, bool, str]] = []
    for term in _split_escaped(text, ","):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^(.*?)(!=|==|=)(.*)$", term)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        label, op, value = m.group(1).strip(), m.group(2), _unescape(m.group(3))
        if rt.kind == "Pod" and label == "spec.host":
            label = "spec.nodeName"
        if label not in supported:
            raise SelectorError(f"field label not supported: {label}")
        tests.append((label, op == "!=", value))

    def match(obj: Mapping[str, Any]) -> bool:
        return all(
            (field_value(rt, obj, label) == value) != negated for label, negated, value in tests
        )

    return match
