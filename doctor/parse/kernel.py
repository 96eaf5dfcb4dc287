"""Kernel settings a node applies at boot: sysctl.d, modules-load.d, fstab; and what runs now
(/proc/sys, /proc/modules, /proc/swaps).

Boot order, as systemd applies it:
- ``systemd-sysctl`` (sysctl.d(5)): every ``*.conf`` of /etc/sysctl.d, /run/sysctl.d,
  /usr/local/lib/sysctl.d, /usr/lib/sysctl.d, /lib/sysctl.d; a file name in an earlier
  directory masks the same name in a later one; files are applied in lexical order of their
  names and a later assignment of a key wins. ``/etc/sysctl.conf`` is read last by procps'
  ``sysctl --system``, and Debian links it as /etc/sysctl.d/99-sysctl.conf for systemd.
- ``systemd-modules-load`` (modules-load.d(5)): the same directory rules for
  /etc/modules-load.d, /run/modules-load.d, /usr/local/lib/modules-load.d,
  /usr/lib/modules-load.d, /lib/modules-load.d; Debian's /etc/modules is read too.
- fstab(5): a ``swap`` entry without ``noauto`` is activated at boot.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Protocol

SYSCTL_DIRS = (
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
    "/lib/sysctl.d",
)
SYSCTL_CONF = "/etc/sysctl.conf"
MODULES_DIRS = (
    "/etc/modules-load.d",
    "/run/modules-load.d",
    "/usr/local/lib/modules-load.d",
    "/usr/lib/modules-load.d",
    "/lib/modules-load.d",
)
DEBIAN_MODULES = "/etc/modules"


class FileReader(Protocol):
    def read_text(self, path: str) -> str | None: ...

    def listdir(self, path: str) -> list[str]: ...

    def readlink(self, path: str) -> str | None: ...


@dataclass(frozen=True)
class Assignment:
    key: str  # dotted form: net.ipv4.ip_forward
    value: str
    file: str
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def normal_key(key: str) -> str:
    """sysctl keys may be written with ``/`` or ``.`` separators (sysctl.d(5))."""
    key = key.strip().lstrip("-")
    if "/" in key:
        first_dot = key.find(".")
        first_slash = key.find("/")
        if first_dot < 0 or first_slash < first_dot:
            key = key.replace(".", "\0").replace("/", ".").replace("\0", "/")
    return key


def parse_sysctl(text: str, path: str) -> list[Assignment]:
    found: list[Assignment] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;" or "=" not in stripped:
            continue
        key, _, value = stripped.partition("=")
        found.append(Assignment(normal_key(key), value.strip(), path, number))
    return found


def _config_files(reader: FileReader, dirs: tuple[str, ...]) -> list[str]:
    """``*.conf`` across the directories: first directory wins a name; lexical order."""
    chosen: dict[str, str] = {}
    for directory in dirs:
        for name in reader.listdir(directory):
            if name.endswith(".conf") and name not in chosen:
                chosen[name] = posixpath.join(directory, name)
    return [chosen[name] for name in sorted(chosen)]


def _same_file(reader: FileReader, path: str, target: str) -> bool:
    link = reader.readlink(path)
    if link is None:
        return False
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), link)) == target


def boot_sysctl(reader: FileReader) -> list[Assignment]:
    """Every assignment applied at boot, in the order applied (the last of a key wins)."""
    assignments: list[Assignment] = []
    includes_sysctl_conf = False
    for path in _config_files(reader, SYSCTL_DIRS):
        if _same_file(reader, path, SYSCTL_CONF):
            includes_sysctl_conf = True
        text = reader.read_text(path)
        if text is not None:
            assignments.extend(parse_sysctl(text, path))
    if not includes_sysctl_conf:
        text = reader.read_text(SYSCTL_CONF)
        if text is not None:
            assignments.extend(parse_sysctl(text, SYSCTL_CONF))
    return assignments


@dataclass(frozen=True)
class ModuleLine:
    module: str
    file: str
    line: int

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def boot_modules(reader: FileReader) -> list[ModuleLine]:
    found: list[ModuleLine] = []
    paths = _config_files(reader, MODULES_DIRS)
    paths.append(DEBIAN_MODULES)
    for path in paths:
        text = reader.read_text(path)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped[0] in "#;":
                continue
            found.append(ModuleLine(stripped.split()[0], path, number))
    return found


def loaded_modules(proc_modules: str) -> set[str]:
    return {line.split()[0] for line in proc_modules.splitlines() if line.strip()}


@dataclass(frozen=True)
class SwapEntry:
    device: str
    file: str
    line: int
    text: str
    auto: bool  # activated at boot (no noauto)

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def fstab_swaps(text: str, path: str = "/etc/fstab") -> list[SwapEntry]:
    found: list[SwapEntry] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#") or len(fields) < 3:
            continue
        if fields[2] != "swap":
            continue
        options = fields[3].split(",") if len(fields) > 3 else []
        found.append(SwapEntry(fields[0], path, number, line, "noauto" not in options))
    return found


def active_swaps(proc_swaps: str) -> list[str]:
    """Devices/files of /proc/swaps (first line is the header)."""
    lines = proc_swaps.splitlines()[1:]
    return [line.split()[0] for line in lines if line.strip()]
