"""What a check reads: the node (:class:`NodeFacts`) and the cluster (:class:`ClusterFacts`).

These are the interfaces; :mod:`doctor.facts.node` implements them for the live host, a bundle and
the API. Both are read-only by design: there is no method that writes.
"""

from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doctor.core.errors import FactError, FactMissing


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


@dataclass(frozen=True)
class ClusterTarget:
    """What the report's ``target.cluster`` says."""

    context: str | None
    server: str | None
    version: str | None

    def to_json(self) -> dict[str, Any]:
        return {"context": self.context, "server": self.server, "version": self.version}


class ClusterFacts:
    """Read-only access to the cluster. This base is the "no cluster" case."""

    def __init__(self, unavailable: str | None = None) -> None:
        self.unavailable = unavailable

    @property
    def target(self) -> ClusterTarget | None:
        return None

    @property
    def is_bundle(self) -> bool:
        return False

    def expect(self, reads: Iterable[str]) -> None:
        """Hint: the run will read these whole lists ("<plural>" or "<namespace>/<plural>",
        from each check's ``reads``), so narrower asks can be answered from them."""


@dataclass(frozen=True)
class FleetFacts:
    """What every node's agent reported in a ``kdoctor fleet`` run (or a fleet bundle holds).

    ``reachability``: node -> the entries of its ``reachability.json`` (bundle-v1.md) that
    are not ``open``, for the nodes whose agent reported (at 500 nodes a full mesh is 500,000
    entries: only the ones that matter are kept); ``measured``: node -> how many pairs it
    measured; ``unreported``: node -> why its agent did not; ``node_results``:
    node -> the results of its node checks (run before the cluster checks, so a cluster check
    can name a node's own rule, e.g. cluster.node-ports citing node.iptables.reject).
    """

    nodes: tuple[str, ...]
    reachability: Mapping[str, Sequence[Mapping[str, Any]]]
    measured: Mapping[str, int]
    unreported: Mapping[str, str]
    #: doctor.core.model.CheckResult items (typed Any: the model stands above this module).
    node_results: Mapping[str, Sequence[Any]]
