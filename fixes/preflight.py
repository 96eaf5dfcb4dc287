"""What a fix step needs before anything runs (contract: "Fixes: preflight and undo").

The engine asks every action of a plan first; one problem and the whole fix is refused with
the reasons, before a backup directory exists or a command ran. A half-applied fix on a host
that could never have taken it (no systemd, no root, no iptables) is exactly what the
rollback would then have to clean up.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

from doctor.core.context import FixContext

#: Where systemd reads units and drop-ins: changing them means nothing without systemd.
SYSTEMD_DIRS = (
    "/etc/systemd/",
    "/run/systemd/",
    "/usr/lib/systemd/",
    "/usr/local/lib/systemd/",
    "/lib/systemd/",
)


#: Programs whose changes need root (the fix steps kdoctor's fixes run on a node).
PRIVILEGED_TOOLS = frozenset(
    {
        "systemctl", "iptables", "iptables-restore", "iptables-save", "ip6tables",
        "iptables-legacy", "iptables-legacy-restore", "iptables-legacy-save",
        "iptables-nft", "iptables-nft-restore", "iptables-nft-save", "nft",
        "modprobe", "sysctl", "swapoff", "mount", "firewall-cmd",
    }
)  # fmt: skip


def is_root() -> bool:
    return os.geteuid() == 0


def systemd_problem(ctx: FixContext, what: str) -> str | None:
    """Why WHAT cannot work without systemd as PID 1, or None when systemd runs."""
    if ctx.node.systemd_running():
        return None
    marker = ctx.node.display_path("/run/systemd/system")
    return f"systemd is not running (no {marker}): {what} needs it"


def command_problems(ctx: FixContext, argv: list[str]) -> list[str]:
    """A command step: its program is installed, kdoctor is root, systemctl has systemd."""
    shown = shlex.join(argv)
    problems: list[str] = []
    if shutil.which(argv[0]) is None:
        problems.append(f"{argv[0]} is not installed (not on PATH), needed for `{shown}`")
    if argv[0] == "systemctl":
        problem = systemd_problem(ctx, f"`{shown}`")
        if problem:
            problems.append(problem)
    if not is_root() and argv[0] in PRIVILEGED_TOOLS:
        problems.append(f"`{shown}` needs root: run kdoctor fix as root (sudo)")
    return problems


def write_problems(ctx: FixContext, path: str) -> list[str]:
    """A file step: the file (or the directory it goes in) can be written; unit files and
    drop-ins only where systemd runs."""
    problems: list[str] = []
    # Files are replaced atomically (a temporary file in the same directory, then rename):
    # the directory must be writable, also when the file already exists.
    directory = _nearest_existing(ctx.host_path(path).parent)
    if not directory.is_dir():
        problems.append(f"cannot write {path}: {directory} is not a directory")
    elif not os.access(directory, os.W_OK):
        who = "" if is_root() else ": run kdoctor fix as root (sudo)"
        problems.append(f"cannot write {path} (permission denied on {directory}){who}")
    if path.startswith(SYSTEMD_DIRS):
        problem = systemd_problem(ctx, f"a change to {path}")
        if problem:
            problems.append(problem)
    return problems


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
