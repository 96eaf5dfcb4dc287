"""What systemd says about a unit: ``systemctl show`` output, or the unit files when it is down.

Two sources, one answer (:class:`UnitStatus`):

- systemd is running (live: ``/run/systemd/system`` exists under ``--root``; bundle: it has
  ``commands/systemctl-show-*.txt``): ``systemctl show UNIT --no-pager`` is parsed. Every
  line is ``Property=value`` (systemd 219 and later print nothing else); anything else, control
  characters, or a missing ``LoadState``/``ActiveState`` is a :class:`~doctor.core.errors.FactError`
  naming the file and the line.
- systemd is not running (a chroot, a container, a bundle without ``systemctl show`` output):
  enablement is worked out the way ``systemctl is-enabled`` does it offline, from the unit file
  (``/etc/systemd/system`` over ``/usr/local/lib``, ``/usr/lib`` and ``/lib``), a mask
  (a link to ``/dev/null`` or an empty file) and the ``*.wants``/``*.requires`` links. Whether
  the unit runs is then unknown (``active_state`` is None) and the reason says why.

Only simple facts are needed here (is there an ``[Install]`` section); full unit-file parsing
lives in :mod:`doctor.parse.systemd`.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Any

from doctor.core.errors import FactError, FactMissing
from doctor.core.sources import NodeFacts

#: Where unit files are looked up when systemd is not running, highest precedence first.
UNIT_DIRS = (
    "/etc/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
)
#: Where ``*.wants``/``*.requires`` links that start a unit at boot live.
LINK_DIRS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system")

LOAD_STATES = frozenset({"loaded", "not-found", "bad-setting", "error", "masked", "stub", "merged"})
ACTIVE_STATES = frozenset(
    {
        "active",
        "reloading",
        "inactive",
        "failed",
        "activating",
        "deactivating",
        "maintenance",
        "refreshing",
    }
)
#: UnitFileState values under which systemd starts the unit at boot (or when pulled in).
ENABLED_STATES = frozenset({"enabled", "enabled-runtime", "static", "alias", "generated"})
#: ActiveState values meaning "up" (a reload keeps the service running).
UP_STATES = frozenset({"active", "reloading", "refreshing"})
#: ActiveState values meaning a process of the unit exists or is being started.
RUNNING_STATES = UP_STATES | {"activating", "deactivating"}

#: ``ExecMainCode`` holds a ``CLD_*`` code from waitid(2).
CLD_CODES = {"1": "exited", "2": "killed", "3": "dumped core", "4": "trapped"}

_PROPERTY = re.compile(r"([A-Za-z][A-Za-z0-9]*)=(.*)")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_INSTALL_KEYS = re.compile(r"^\s*(WantedBy|RequiredBy|UpheldBy|Alias|Also)\s*=\s*\S", re.M)


def unit_name(unit: str) -> str:
    """``kubelet`` → ``kubelet.service``; names with a type suffix are kept."""
    return unit if "." in unit else f"{unit}.service"


def show_bundle_name(unit: str) -> str:
    """The file a bundle keeps ``systemctl show UNIT`` in (bundle-v1.md)."""
    return f"systemctl-show-{unit}.txt"


def show_argv(unit: str) -> list[str]:
    return ["systemctl", "show", unit, "--no-pager"]


def parse_show(text: str, source: str) -> dict[str, str]:
    """Parse ``systemctl show`` output into properties (the first value of a repeated one).

    Raises :class:`FactError` naming ``source`` for anything systemctl does not print.
    """
    properties: dict[str, str] = {}
    # Lines end at "\n" only: a CR or form feed inside a Description is part of its text.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        # A unit's Description is free text its author chose; any other property with
        # control characters is not what systemctl prints.
        if _CONTROL.search(line) and not line.startswith("Description="):
            raise FactError(f"{source}: line {number}: binary data (control characters)")
        if not line.strip():
            continue
        match = _PROPERTY.fullmatch(line)
        if match is None:
            raise FactError(
                f"{source}: line {number}: not a Property=value line from systemctl show: "
                f"{line[:60]!r}"
            )
        properties.setdefault(match.group(1), match.group(2))
    if not properties:
        raise FactError(f"{source}: empty output, no Property=value lines")
    for required, allowed in (("LoadState", LOAD_STATES), ("ActiveState", ACTIVE_STATES)):
        value = properties.get(required)
        if value is None:
            raise FactError(f"{source}: no {required}= property (not systemctl show output?)")
        if value not in allowed:
            raise FactError(f"{source}: {required}={value!r} is not a systemd {required}")
    return properties


@dataclass(frozen=True)
class UnitStatus:
    """One unit as systemd (or, offline, its unit files) describes it."""

    name: str  # kubelet.service
    source: str  # the file or command the facts come from
    #: None when it cannot be told (no unit directories at all in a bundle or root).
    installed: bool | None
    load_state: str | None
    #: None when unknown: systemd is not running, see ``unknown_reason``.
    active_state: str | None
    sub_state: str | None
    #: "" when systemd printed none (not-found units); None when unknown.
    unit_file_state: str | None
    properties: dict[str, str] = field(default_factory=dict)
    unknown_reason: str | None = None
    #: Offline only: the unit file and the links that enable it, as node paths.
    unit_file: str | None = None
    links: tuple[str, ...] = ()

    @property
    def short(self) -> str:
        return self.name.removesuffix(".service")

    @property
    def from_systemctl(self) -> bool:
        return self.active_state is not None

    @property
    def masked(self) -> bool:
        return self.load_state == "masked" or (self.unit_file_state or "").startswith("masked")

    @property
    def enabled(self) -> bool | None:
        """Started at boot or when pulled in (enabled, enabled-runtime, static, alias, …)."""
        if self.unit_file_state is None:
            return None
        return self.unit_file_state in ENABLED_STATES

    @property
    def up(self) -> bool | None:
        """ActiveState is active (or reloading)."""
        if self.active_state is None:
            return None
        return self.active_state in UP_STATES

    @property
    def running(self) -> bool | None:
        """A process of the unit runs or is being started (active, activating, …)."""
        if self.active_state is None:
            return None
        return self.active_state in RUNNING_STATES

    @property
    def state_text(self) -> str:
        """``activating (auto-restart)``, like the Active: line of ``systemctl status``."""
        if self.active_state is None:
            return f"unknown ({self.unknown_reason})"
        return f"{self.active_state} ({self.sub_state})" if self.sub_state else self.active_state

    def last_failure(self) -> str | None:
        """Why the unit last stopped, when ``Result`` is not ``success``."""
        result = self.properties.get("Result")
        if not result or result == "success":
            return None
        code = CLD_CODES.get(self.properties.get("ExecMainCode", ""), "")
        status = self.properties.get("ExecMainStatus", "")
        when = self.properties.get("ExecMainExitTimestamp") or self.properties.get(
            "InactiveEnterTimestamp"
        )
        text = f"Result={result}"
        if code:
            text += f": main process {code}, status={status}"
        elif status:
            text += f", ExecMainStatus={status}"
        if when:
            text += f" at {when}"
        restarts = self.properties.get("NRestarts")
        if restarts:
            text += f" ({restarts} restarts)"
        return text

    def evidence(self) -> dict[str, Any]:
        """The properties read and where from, for a finding."""
        data: dict[str, Any] = {"source": self.source}
        if self.from_systemctl:
            for key in (
                "LoadState",
                "ActiveState",
                "SubState",
                "UnitFileState",
                "Result",
                "ExecMainStatus",
            ):
                if key in self.properties:
                    data[key] = self.properties[key]
            for key in (
                "FragmentPath",
                "LoadError",
                "ActiveEnterTimestamp",
                "ExecMainExitTimestamp",
            ):
                if self.properties.get(key):
                    data[key] = self.properties[key]
            failure = self.last_failure()
            if failure:
                data["last_failure"] = failure
        else:
            data["LoadState"] = self.load_state if self.load_state else "unknown"
            data["UnitFileState"] = self.unit_file_state if self.unit_file_state else "unknown"
            data["ActiveState"] = f"unknown ({self.unknown_reason})"
            if self.unit_file:
                data["unit_file"] = self.unit_file
            if self.links:
                data["links"] = list(self.links)
        return data


def from_show(text: str, source: str, unit: str) -> UnitStatus:
    """A :class:`UnitStatus` from ``systemctl show`` output."""
    properties = parse_show(text, source)
    name = unit_name(unit)
    unit_id = properties.get("Id")
    names = properties.get("Names", "").split()
    if unit_id and unit_id != name and name not in names:
        raise FactError(f"{source}: describes {unit_id}, not {name}")
    load_state = properties["LoadState"]
    return UnitStatus(
        name=name,
        source=source,
        installed=load_state != "not-found",
        load_state=load_state,
        active_state=properties["ActiveState"],
        sub_state=properties.get("SubState"),
        unit_file_state=properties.get("UnitFileState", ""),
        properties=properties,
    )


def not_running_reason(node: NodeFacts) -> str:
    """Why ``systemctl`` cannot be asked, in the words of a skip reason."""
    if node.is_bundle:
        return "systemd not running: the bundle has no commands/systemctl-show-*.txt"
    return f"systemd not running: no {node.display_path('/run/systemd/system')}"


def unit_status(node: NodeFacts, unit: str) -> UnitStatus:
    """The unit's state: ``systemctl show`` when systemd runs, else its unit files."""
    if not node.systemd_running():
        return from_unit_files(node, unit, not_running_reason(node))
    try:
        output = node.command(show_bundle_name(unit), show_argv(unit))
    except FactMissing as exc:
        return from_unit_files(node, unit, str(exc))
    return from_show(output.stdout, output.source, unit)


def _resolve(node: NodeFacts, path: str) -> str:
    """Follow symbolic links inside the node's tree (a bundle's absolute links stay inside)."""
    for _ in range(40):
        target = node.readlink(path)
        if target is None:
            return path
        base = posixpath.dirname(path)
        path = posixpath.normpath(
            target if target.startswith("/") else posixpath.join(base, target)
        )
    raise FactError(f"{path}: too many levels of symbolic links")


def _links_to(node: NodeFacts, name: str) -> tuple[str, ...]:
    """``*.wants``/``*.requires`` entries named ``name`` (what ``systemctl enable`` creates)."""
    found: list[str] = []
    for base in LINK_DIRS:
        for entry in node.listdir(base):
            if not entry.endswith((".wants", ".requires")):
                continue
            if name in node.listdir(f"{base}/{entry}"):
                found.append(f"{base}/{entry}/{name}")
    return tuple(found)


def from_unit_files(node: NodeFacts, unit: str, reason: str) -> UnitStatus:
    """Enablement from the unit files; the active state is unknown for ``reason``."""
    name = unit_name(unit)
    source = "unit files under " + ", ".join(node.display_path(d) for d in UNIT_DIRS)
    fragment = next((f"{d}/{name}" for d in UNIT_DIRS if node.exists(f"{d}/{name}")), None)
    if fragment is None:
        if not any(node.listdir(d) for d in UNIT_DIRS):
            return UnitStatus(
                name=name,
                source=source,
                installed=None,
                load_state=None,
                active_state=None,
                sub_state=None,
                unit_file_state=None,
                unknown_reason=f"{reason}; and no systemd unit directories to read",
            )
        return UnitStatus(
            name=name,
            source=source,
            installed=False,
            load_state="not-found",
            active_state=None,
            sub_state=None,
            unit_file_state="",
            unknown_reason=reason,
        )
    resolved = _resolve(node, fragment)
    text = None if resolved == "/dev/null" else node.read_text(resolved)
    links = _links_to(node, name)
    if resolved == "/dev/null" or text == "":
        load_state, state = "masked", "masked"
    elif any(link.startswith("/etc/") for link in links):
        load_state, state = "loaded", "enabled"
    elif text is not None and not _INSTALL_KEYS.search(_install_section(text)):
        # No [Install] section: systemctl calls it static (vendor *.wants links start it).
        load_state, state = "loaded", "static"
    elif links:
        load_state, state = "loaded", "enabled"
    else:
        load_state, state = "loaded", "disabled"
    return UnitStatus(
        name=name,
        source=source,
        installed=True,
        load_state=load_state,
        active_state=None,
        sub_state=None,
        unit_file_state=state,
        unknown_reason=reason,
        unit_file=node.display_path(fragment),
        links=tuple(node.display_path(link) for link in links),
    )


def _install_section(text: str) -> str:
    """The text of the ``[Install]`` section ("" when there is none)."""
    section: list[str] = []
    inside = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            inside = stripped == "[Install]"
            continue
        if inside:
            section.append(line)
    return "\n".join(section)


#: UnitFileState values ``systemctl enable`` cannot change: such units are only started.
NOT_ENABLEABLE = frozenset({"static", "generated", "alias", "transient"})


def start_command(unit: UnitStatus) -> tuple[list[str], list[list[str]]] | None:
    """The command that makes ``unit`` enabled and up, and the commands that undo exactly it.

    ``systemctl enable --now UNIT``; its undo puts back only what it changed:
    ``disable --now`` when the unit was neither enabled nor up, ``disable`` when it was only
    up, ``stop`` when it was only enabled; a runtime-only enablement is put back as it was.
    Units that cannot be enabled (static, generated, …) get ``systemctl start`` / ``stop``.
    None when there is nothing to do.
    """
    name = unit.short
    was_up = bool(unit.up)
    state = unit.unit_file_state or ""
    if state in NOT_ENABLEABLE:
        return None if was_up else (["systemctl", "start", name], [["systemctl", "stop", name]])
    persistent = state == "enabled"
    if persistent and was_up:
        return None
    undo: list[list[str]] = []
    if state == "enabled-runtime":
        # `enable` makes it persistent: drop that, put the runtime enablement back.
        undo = [["systemctl", "disable", name], ["systemctl", "enable", "--runtime", name]]
        if not was_up:
            undo.append(["systemctl", "stop", name])
    elif not persistent and not was_up:
        undo = [["systemctl", "disable", "--now", name]]
    elif not persistent:
        undo = [["systemctl", "disable", name]]
    else:
        undo = [["systemctl", "stop", name]]
    return ["systemctl", "enable", "--now", name], undo
