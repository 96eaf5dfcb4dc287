"""Drive the fake ``systemctl`` (``tests/shims/systemctl``) from tests.

systemd cannot run as PID 1 in the test environment, so the fix tests record the commands at
the process boundary instead: the shim keeps unit state in a JSON file and logs every argv.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SHIMS = Path(__file__).resolve().parent
#: Verbs that only read; everything else changes the (fake) node.
READ_ONLY = {"show", "is-active", "is-enabled", "status", "cat"}


class FakeSystemd:
    """A test node: ``root`` (with ``run/systemd/system`` so systemd looks alive) + shim state."""

    def __init__(
        self,
        base: Path,
        units: dict[str, dict[str, Any]],
        running: bool = True,
        node: bool = True,
    ) -> None:
        """NODE: leave the trace kubeadm leaves (``/var/lib/kubelet``), so the host counts as
        a Kubernetes node even when ``units`` has no kubelet; False for a workstation."""
        self.base = base
        self.root = base / "root"
        self.state_dir = base / "state"
        self.state_file = base / "systemd-state.json"
        self.log_file = base / "systemctl.log"
        self.root.mkdir(parents=True, exist_ok=True)
        if running:
            (self.root / "run" / "systemd" / "system").mkdir(parents=True, exist_ok=True)
        if node:
            (self.root / "var" / "lib" / "kubelet").mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps({"units": units}, indent=2))
        self.log_file.touch()

    def env(self, fail: str | None = None) -> dict[str, str]:
        env = {
            "PATH": f"{SHIMS}{os.pathsep}{os.environ.get('PATH', '')}",
            "KDOCTOR_SHIM_STATE": str(self.state_file),
            "KDOCTOR_SHIM_LOG": str(self.log_file),
        }
        if fail:
            env["KDOCTOR_SHIM_FAIL"] = fail
        return env

    def units(self) -> dict[str, dict[str, Any]]:
        data: dict[str, dict[str, Any]] = json.loads(self.state_file.read_text())["units"]
        return data

    def states(self) -> dict[str, tuple[str, str]]:
        """unit → (ActiveState, UnitFileState), what a rollback must restore."""
        return {
            name: (unit.get("ActiveState", "inactive"), unit.get("UnitFileState", "disabled"))
            for name, unit in self.units().items()
        }

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line]

    def changes(self) -> list[list[str]]:
        """The state-changing systemctl invocations, in order."""
        return [argv for argv in self.calls() if len(argv) > 1 and argv[1] not in READ_ONLY]

    def check(self, check_id: str, fail: str | None = None) -> tuple[int, dict[str, Any]]:
        """``kdoctor check --only CHECK_ID`` against this node: (exit code, the check's result)."""
        from tests.conftest import check_json, result_of

        code, report = check_json("--root", str(self.root), "--only", check_id, env=self.env(fail))
        return code, result_of(report, check_id)

    def fix(self, check_id: str, *extra: str, fail: str | None = None) -> int:
        """``kdoctor fix CHECK_ID --yes EXTRA`` against this node; its exit code."""
        from tests.conftest import kdoctor

        proc = kdoctor(
            "fix", check_id, "--yes", "--root", str(self.root),
            "--state-dir", str(self.state_dir), *extra, env=self.env(fail),
        )  # fmt: skip
        return proc.returncode

    def journal(self) -> list[dict[str, Any]]:
        """The fix journal entries written under this node's state directory."""
        path = self.state_dir / "journal.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()]
