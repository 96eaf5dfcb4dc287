"""The node fact layer checks read from: files and command output, live or from a bundle.

Checks never open files or run programs themselves; they ask :class:`NodeFacts`. The live
backend reads files under ``--root`` and runs read-only commands with a timeout; the bundle
backend reads ``host/`` and ``commands/`` of a bundle (``shared/spec/bundle-v1.md``). Both
cache what they produced, so a fact several checks need is read once per run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath

from doctor.core.errors import FactError, FactMissing
from doctor.core.sources import CommandOutput, NodeFacts

COMMAND_TIMEOUT = 10.0


class LiveNodeFacts(NodeFacts):
    """The machine kdoctor runs on; files may be read under another root (``--root``)."""

    def __init__(self, root: Path = Path("/"), timeout: float = COMMAND_TIMEOUT) -> None:
        super().__init__()
        self.root = root
        self.timeout = timeout
        self.origin = str(root)

    @property
    def is_bundle(self) -> bool:
        return False

    def host_path(self, path: str) -> Path:
        return self.root / PurePosixPath(path).relative_to("/")

    def display_path(self, path: str) -> str:
        return path if self.root == Path("/") else str(self.host_path(path))

    def systemd_running(self) -> bool:
        # sd_booted(): systemd creates this directory when it is the init system.
        return self.host_path("/run/systemd/system").is_dir()

    def _command(self, bundle_name: str, argv: list[str]) -> CommandOutput:
        if shutil.which(argv[0]) is None:
            raise FactMissing(f"{argv[0]} is not installed (not on PATH)")
        display = " ".join(argv)
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                timeout=self.timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise FactError(f"`{display}` did not finish within {self.timeout:g}s") from exc
        except OSError as exc:
            raise FactError(f"`{display}` could not run: {exc.strerror or exc}") from exc
        stdout = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            detail = stderr[-1] if stderr else f"exit status {proc.returncode}"
            raise FactError(f"`{display}` failed: {detail}")
        return CommandOutput(stdout=stdout, source=display)


class BundleNodeFacts(NodeFacts):
    """A bundle directory: ``host/`` mirrors the node's files, ``commands/`` the outputs."""

    def __init__(self, bundle: Path) -> None:
        super().__init__()
        self.bundle = bundle
        self.origin = f"bundle {bundle}"

    @property
    def is_bundle(self) -> bool:
        return True

    def host_path(self, path: str) -> Path:
        return self.bundle / "host" / PurePosixPath(path).relative_to("/")

    def display_path(self, path: str) -> str:
        return path

    def systemd_running(self) -> bool:
        return any(name.startswith("systemctl-show-") for name in self._command_files())

    def _command_files(self) -> list[str]:
        try:
            return sorted(os.listdir(self.bundle / "commands"))
        except OSError:
            return []

    def _command(self, bundle_name: str, argv: list[str]) -> CommandOutput:
        path = self.bundle / "commands" / bundle_name
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise FactMissing(f"the bundle has no commands/{bundle_name}") from exc
        except OSError as exc:
            raise FactError(f"commands/{bundle_name}: {exc.strerror or exc}") from exc
        if b"\x00" in data:
            raise FactError(f"commands/{bundle_name}: binary data (NUL bytes), not command output")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FactError(f"commands/{bundle_name}: not UTF-8 text ({exc.reason})") from exc
        return CommandOutput(stdout=text, source=f"commands/{bundle_name}")
