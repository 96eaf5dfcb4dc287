"""Which package tool the node's distribution uses, so hints and plans name the right one.

Read from ``/etc/os-release`` (``ID``, ``ID_LIKE``, ``VERSION_ID``), falling back on
``/etc/redhat-release`` / ``/etc/debian_version`` / ``/etc/SuSE-release`` for old bundles.
A node whose distribution cannot be told gets a neutral wording instead of a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

from doctor.core.errors import FactError
from doctor.core.sources import NodeFacts
from doctor.parse.os_release import parse_os_release


@dataclass(frozen=True)
class PackageTool:
    """The distribution's package tool (``apt-get``, ``dnf``, ``yum``, ``zypper``) or None."""

    command: str | None
    #: The distribution's name as os-release says it (PRETTY_NAME), for messages.
    distro: str | None = None

    def install(self, *packages: str) -> str:
        """``apt-get install -y kubelet`` (in backquotes), or a neutral phrase."""
        names = " ".join(packages)
        if self.command is None:
            return f"{names} (with the distribution's package manager)"
        return f"`{self.command} install -y {names}`"

    @property
    def is_debian_like(self) -> bool:
        return self.command == "apt-get"

    @property
    def is_redhat_like(self) -> bool:
        return self.command in ("dnf", "yum")


def _major(version: str) -> int | None:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def tool_for(os_release: dict[str, str]) -> PackageTool:
    """The package tool for a parsed os-release (pure: the tests feed real files)."""
    ids = [os_release.get("ID", "").lower(), *os_release.get("ID_LIKE", "").lower().split()]
    name = os_release.get("PRETTY_NAME") or os_release.get("NAME") or None
    major = _major(os_release.get("VERSION_ID", ""))
    if any(i in ("debian", "ubuntu") for i in ids):
        return PackageTool("apt-get", name)
    if any(i.startswith(("suse", "opensuse", "sles")) for i in ids):
        return PackageTool("zypper", name)
    if "fedora" in ids[:1]:
        return PackageTool("dnf" if major is None or major >= 22 else "yum", name)
    if any(i in ("rhel", "centos", "fedora", "rocky", "almalinux", "ol", "amzn") for i in ids):
        if ids[0] == "amzn":
            return PackageTool("dnf" if major is not None and major >= 2022 else "yum", name)
        return PackageTool("yum" if major is not None and major < 8 else "dnf", name)
    return PackageTool(None, name)


def package_tool(node: NodeFacts) -> PackageTool:
    """The node's package tool (never raises: an unreadable file means "cannot tell")."""
    try:
        text = node.read_text("/etc/os-release") or node.read_text("/usr/lib/os-release")
        if text:
            return tool_for(parse_os_release(text))
        if node.exists("/etc/redhat-release"):
            release = node.read_text("/etc/redhat-release") or ""
            old = any(f"release {n}" in release for n in ("5", "6", "7"))
            return PackageTool("yum" if old else "dnf", release.strip() or None)
        if node.exists("/etc/debian_version"):
            return PackageTool("apt-get", "Debian")
        if node.exists("/etc/SuSE-release"):
            return PackageTool("zypper", "SUSE")
    except FactError:
        pass
    return PackageTool(None)
