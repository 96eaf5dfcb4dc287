"""Fix steps for kernel settings: a sysctl value set now (``/proc/sys``), restorable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from doctor.core.context import FixContext
from doctor.core.fix import Action


def sysctl_path(key: str) -> str:
    """``net.ipv4.ip_forward`` -> ``/proc/sys/net/ipv4/ip_forward``."""
    return "/proc/sys/" + key.replace(".", "/")


@dataclass
class SetSysctl(Action):
    """``sysctl -w KEY=VALUE``, written to /proc/sys under ``--root`` (so a test root can
    point /proc at a network namespace's); undo writes back the value it found."""

    key: str
    value: str

    def describe(self) -> list[str]:
        return [f"sysctl -w {self.key}={self.value}"]

    def backup(self, ctx: FixContext, into: Path) -> None:
        into.mkdir(parents=True, exist_ok=True)
        target = ctx.host_path(sysctl_path(self.key))
        try:
            (into / "value").write_text(target.read_text())
        except FileNotFoundError:
            (into / "absent").touch()

    def apply(self, ctx: FixContext) -> None:
        ctx.runner.on_step(f"sysctl -w {self.key}={self.value}")
        target = ctx.host_path(sysctl_path(self.key))
        if not target.exists():
            raise OSError(f"{sysctl_path(self.key)} does not exist (module not loaded?)")
        target.write_text(self.value + "\n")
        now = target.read_text().strip()
        if now != self.value:
            raise OSError(f"{self.key} is {now} after writing {self.value}")

    def undo(self, ctx: FixContext, backup: Path) -> None:
        saved = backup / "value"
        if not saved.exists():
            return
        ctx.runner.on_step(f"sysctl -w {self.key}={saved.read_text().strip()} (restore)")
        ctx.host_path(sysctl_path(self.key)).write_text(saved.read_text())
