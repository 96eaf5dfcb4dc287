"""TOML text -> values (stdlib ``tomllib``) and the line each key is set on.

``tomllib`` gives no positions, and a finding must name the file and line a value comes from,
so :func:`key_lines` walks the text with a small key-path locator: table headers, dotted and
quoted keys, and the values that span lines (arrays, inline tables, multi-line strings) so
that their inner lines are not taken for keys. Keys inside an inline table are located at the
line of the table's own key (see :func:`line_of`).
"""

from __future__ import annotations

import contextlib
import re
import tomllib
from typing import Any

KeyPath = tuple[str, ...]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


class TomlSyntaxError(ValueError):
    """A file that is not valid TOML, with the line the parser stopped at."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: invalid TOML: {reason}")


def load_toml(text: str, path: str) -> dict[str, Any]:
    """The document's values; :class:`TomlSyntaxError` naming file and line when invalid."""
    try:
        return tomllib.loads(text.removeprefix("\ufeff"))
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = _POSITION.search(message)
        line = int(match.group(1)) if match else None
        if "end of document" in message:
            line = text.count("\n") + 1
        reason = _POSITION.sub("", message).strip()
        raise TomlSyntaxError(path, line, reason) from exc


def _parse_key(text: str, index: int) -> tuple[list[str], int] | None:
    """A (dotted, maybe quoted) key starting at ``index``: its parts and where it ends."""
    parts: list[str] = []
    length = len(text)
    while True:
        while index < length and text[index] in " \t":
            index += 1
        if index >= length:
            return None
        char = text[index]
        if char in "\"'":
            end = index + 1
            value: list[str] = []
            while end < length and text[end] != char:
                if char == '"' and text[end] == "\\" and end + 1 < length:
                    value.append(text[end : end + 2])
                    end += 2
                    continue
                value.append(text[end])
                end += 1
            if end >= length:
                return None
            raw = "".join(value)
            if char == '"':
                with contextlib.suppress(tomllib.TOMLDecodeError):
                    raw = tomllib.loads(f'k = "{raw}"')["k"]
            parts.append(raw)
            index = end + 1
        else:
            match = _BARE_KEY.match(text, index)
            if not match:
                return None
            parts.append(match.group(0))
            index = match.end()
        while index < length and text[index] in " \t":
            index += 1
        if index < length and text[index] == ".":
            index += 1
            continue
        return parts, index


class _ValueScanner:
    """Follows a value across lines: brackets, braces and strings (one and three quotes)."""

    def __init__(self) -> None:
        self.depth = 0
        self.multiline: str | None = None  # '"""' or "'''" while inside one

    @property
    def open(self) -> bool:
        return self.depth > 0 or self.multiline is not None

    def feed(self, text: str) -> None:
        index = 0
        length = len(text)
        while index < length:
            if self.multiline:
                end = text.find(self.multiline, index)
                if end < 0:
                    return
                index = end + 3
                self.multiline = None
                continue
            char = text[index]
            if char == "#":
                return
            if text.startswith('"""', index) or text.startswith("'''", index):
                self.multiline = text[index : index + 3]
                index += 3
                continue
            if char in "\"'":
                end = index + 1
                while end < length and text[end] != char:
                    end += 2 if char == '"' and text[end] == "\\" else 1
                index = end + 1
                continue
            if char in "[{":
                self.depth += 1
            elif char in "]}":
                self.depth = max(0, self.depth - 1)
            index += 1


def key_lines(text: str) -> dict[KeyPath, int]:
    """Every table header and key of the document with the (1-based) line it is on."""
    lines: dict[KeyPath, int] = {}
    table: KeyPath = ()
    scanner = _ValueScanner()
    for number, line in enumerate(text.splitlines(), start=1):
        if scanner.open:
            scanner.feed(line)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            double = stripped.startswith("[[")
            parsed = _parse_key(stripped, 2 if double else 1)
            if parsed:
                table = tuple(parsed[0])
                lines.setdefault(table, number)
            continue
        parsed = _parse_key(line, 0)
        if not parsed:
            continue
        parts, end = parsed
        if end >= len(line) or line[end] != "=":
            continue
        path = table + tuple(parts)
        lines.setdefault(path, number)
        for depth in range(len(table) + 1, len(path)):
            lines.setdefault(path[:depth], number)  # dotted keys define their tables here
        scanner.feed(line[end + 1 :])
    return lines


def line_of(lines: dict[KeyPath, int], path: KeyPath) -> int | None:
    """The line of ``path``, or of its nearest enclosing key that has one."""
    for depth in range(len(path), 0, -1):
        found = lines.get(path[:depth])
        if found is not None:
            return found
    return None


def flatten(data: dict[str, Any], prefix: KeyPath = ()) -> dict[KeyPath, Any]:
    """Leaves of a decoded document by key path; an empty table is a leaf ``{}``."""
    out: dict[KeyPath, Any] = {}
    for key, value in data.items():
        path = (*prefix, key)
        if isinstance(value, dict) and value:
            out.update(flatten(value, path))
        else:
            out[path] = value
    return out


def unflatten(leaves: dict[KeyPath, Any]) -> dict[str, Any]:
    """The nested document of :func:`flatten`'s leaves."""
    out: dict[str, Any] = {}
    for path, value in leaves.items():
        node = out
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        if isinstance(value, dict) and isinstance(node.get(path[-1]), dict):
            continue
        node[path[-1]] = value
    return out
