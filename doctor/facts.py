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
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

COMMAND_TIMEOUT = 10.0


class FactMissing(Exception):
    """A fact the check needs is not there: the check is ``skip`` with this reason."""


class FactError(Exception):
    """A fact exists but could not be read or parsed: the check is ``error``."""


@dataclass(frozen=True)
class CommandOutput:
    """What a read-only command printed, and where it came from (for evidence)."""

    stdout: str
    source: str  # "iptables-save" live, or "commands/iptables-save.txt" in a bundle


class NodeFacts(ABC):
    """Read-only view of one node. There is deliberately no method that writes."""

    #: Human name of where facts come from, used in reasons ("/", "bundle DIR").
    origin: str

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], CommandOutput | BaseException] = {}

    # -- files ---------------------------------------------------------------------
    @abstractmethod
    def host_path(self, path: str) -> Path:
        """Where the node's absolute ``path`` lives for this backend."""

    def display_path(self, path: str) -> str:
        """How a node path is named in findings: the node's own absolute path."""
        return path

    def read_text(self, path: str) -> str | None:
        """The file's text, or None when it does not exist. Undecodable bytes are an error."""
        real = self.host_path(path)
        try:
            data = real.read_bytes()
        except FileNotFoundError:
            return None
        except IsADirectoryError as exc:
            raise FactError(f"{path}: is a directory") from exc
        except OSError as exc:
            raise FactError(f"{path}: {exc.strerror or exc}") from exc
        if b"\x00" in data:
            raise FactError(f"{path}: binary data (NUL bytes), not a text file")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FactError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc

    def exists(self, path: str) -> bool:
        return self.host_path(path).exists() or self.host_path(path).is_symlink()

    def listdir(self, path: str) -> list[str]:
        """Sorted entry names of a directory; empty when it does not exist."""
        try:
            return sorted(os.listdir(self.host_path(path)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise FactError(f"{path}: {exc.strerror or exc}") from exc

    def readlink(self, path: str) -> str | None:
        try:
            return os.readlink(self.host_path(path))
        except OSError:
            return None

    # -- commands ------------------------------------------------------------------
    def command(self, bundle_name: str, argv: list[str]) -> CommandOutput:
        """Output of a read-only command, cached for the run.

        ``bundle_name`` is the file under ``commands/`` a bundle keeps it in;
        raises :class:`FactMissing` when it is not available, :class:`FactError` when it failed.
        """
        key = (bundle_name, *argv)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            try:
                cached = self._command(bundle_name, argv)
            except (FactMissing, FactError) as exc:
                cached = exc
            with self._lock:
                self._cache[key] = cached
        if isinstance(cached, BaseException):
            raise cached
        return cached

    @abstractmethod
    def _command(self, bundle_name: str, argv: list[str]) -> CommandOutput: ...

    @abstractmethod
    def systemd_running(self) -> bool:
        """True when systemd is PID 1 (so ``systemctl show`` answers)."""

    @property
    @abstractmethod
    def is_bundle(self) -> bool: ...


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
