"""Fix steps for containerd: edit config.toml in place (``tomlkit`` keeps comments, order and
every other setting) and verify what containerd itself reads (``containerd config dump``)."""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import tomlkit
from tomlkit.container import Container
from tomlkit.items import Table

from doctor.core.commands import CommandFailed
from doctor.core.context import FixContext
from doctor.core.fix import Action
from doctor.parse.toml_lines import KeyPath


def set_value(text: str, path: KeyPath, value: Any) -> str:
    """``text`` with ``path`` set to ``value``; missing tables are added as
    ``[a."b".c]`` headers (intermediate ones as super tables, so no empty headers appear)."""
    doc = tomlkit.parse(text)
    node: Container | Table = doc
    for depth, key in enumerate(path[:-1]):
        child = node.get(key)
        if child is None:
            is_last_table = depth == len(path) - 2
            child = tomlkit.table(is_super_table=not is_last_table)
            node.append(key, child)
            child = node[key]
        if not isinstance(child, Table | Container | dict):
            raise ValueError(f"{'.'.join(path[: depth + 1])} is not a table")
        node = child  # type: ignore[assignment]
    node[path[-1]] = value
    return tomlkit.dumps(doc)


def remove_from_list(text: str, key: str, values: Sequence[str]) -> str:
    """``text`` with ``values`` taken out of the top-level list ``key`` (the rest kept)."""
    doc = tomlkit.parse(text)
    items = doc.get(key)
    if items is None:
        return text
    keep = [item for item in items if str(item) not in values]
    array = tomlkit.array()
    array.extend(keep)
    doc[key] = array
    return tomlkit.dumps(doc)


def dig(doc: dict[str, Any], path: KeyPath) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise KeyError(".".join(path))
        node = node[key]
    return node


@dataclass(frozen=True)
class Expect:
    """A value the merged configuration must hold after the fix, at any of ``paths`` (the
    version 2 and the version 3 place: the dump uses the installed containerd's)."""

    name: str
    paths: tuple[KeyPath, ...]
    value: Any = None
    absent_from_list: str | None = None  # for disabled_plugins: this entry must be gone


@dataclass
class VerifyContainerdConfig(Action):
    """``containerd --config FILE config dump``: containerd merges the edited files itself
    (no daemon needed) and must show the expected values, else the fix is rolled back."""

    config_path: str
    expects: list[Expect] = field(default_factory=list)

    def describe(self) -> list[str]:
        wanted = ", ".join(
            f"{e.name} = {_toml_text(e.value)}" if e.absent_from_list is None else
            f"{e.name} without {e.absent_from_list}"
            for e in self.expects
        )  # fmt: skip
        return [f"containerd --config {self.config_path} config dump   (verify: {wanted})"]

    def apply(self, ctx: FixContext) -> None:
        argv = ["containerd", "--config", str(ctx.host_path(self.config_path)), "config", "dump"]
        out = ctx.runner.run(argv)
        try:
            doc = tomllib.loads(out)
        except tomllib.TOMLDecodeError as exc:
            raise CommandFailed(f"containerd config dump printed invalid TOML: {exc}") from exc
        for expect in self.expects:
            found: list[Any] = []
            for path in expect.paths:
                try:
                    found.append(dig(doc, path))
                except KeyError:
                    continue
            if expect.absent_from_list is not None:
                if any(expect.absent_from_list in (v or []) for v in found):
                    raise CommandFailed(
                        f"containerd config dump still lists {expect.absent_from_list} "
                        f"in {expect.name}"
                    )
                continue
            if expect.value not in found:
                raise CommandFailed(
                    f"containerd config dump: {expect.name} is "
                    f"{', '.join(_toml_text(v) for v in found) or 'not set'}, "
                    f"expected {_toml_text(expect.value)}"
                )


def _toml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
