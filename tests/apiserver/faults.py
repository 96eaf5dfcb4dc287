"""Injected failures: error statuses, slow or hanging responses and truncated bodies.

A client's failure handling is only testable against a server that fails on demand, in the
ways real API servers and the networks in front of them fail.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class RequestInfo:
    """What a request addresses, in the API server's own terms (for matching and logging)."""

    method: str
    path: str
    verb: str = ""
    resource: str = ""
    subresource: str = ""
    group: str = ""
    namespace: str = ""
    name: str = ""

    @property
    def resource_path(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass
class Fault:
    """One fault rule. Empty matchers match every request.

    status: answer with this HTTP status and the matching Status body (401, 403, 500, ...).
    delay: seconds to wait before answering. hang: never answer (until the server stops).
    truncate: send half of the body, with a Content-Length that matches the cut body.
    retry_after: the seconds a 429/503 answer asks the client to wait (``Retry-After``, 1 by
    default), as API Priority and Fairness does when it sheds load.
    path: regex searched in the URL path; verb: a Kubernetes verb (get, list, watch, create,
    update, patch, delete, deletecollection) or an HTTP method in capitals; resource: "pods",
    "daemonsets" or "pods/log"; namespace: exact namespace. times: expire after N matches.
    """

    status: int | None = None
    delay: float = 0.0
    hang: bool = False
    truncate: bool = False
    path: str | None = None
    verb: str | None = None
    resource: str | None = None
    namespace: str | None = None
    times: int | None = None
    message: str | None = None
    user: str = "system:anonymous"
    retry_after: int | None = None
    hits: int = field(default=0, compare=False)

    def matches(self, info: RequestInfo) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.path is not None and not re.search(self.path, info.path):
            return False
        if self.verb is not None:
            if self.verb.isupper():
                if self.verb != info.method:
                    return False
            elif self.verb != info.verb:
                return False
        if self.resource is not None and self.resource not in (info.resource, info.resource_path):
            return False
        return self.namespace is None or self.namespace == info.namespace

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_FIELDS: dict[str, Callable[[Any], Any]] = {
    "status": int,
    "delay": float,
    "hang": lambda v: str(v).lower() in ("1", "true", "yes", "on"),
    "truncate": lambda v: str(v).lower() in ("1", "true", "yes", "on"),
    "path": str,
    "verb": str,
    "resource": str,
    "namespace": str,
    "times": int,
    "message": str,
    "user": str,
    "retry_after": int,
}


def fault_from_mapping(values: dict[str, Any]) -> Fault:
    """Build a Fault from loosely typed values (CLI strings or JSON)."""
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in _FIELDS:
            raise ValueError(f"unknown fault field {key!r} (known: {', '.join(_FIELDS)})")
        kwargs[key] = None if value is None else _FIELDS[key](value)
    return Fault(**kwargs)


def parse_fault_spec(spec: str) -> Fault:
    """Parse `status=403,verb=list,resource=pods`; a bare word like `hang` means `hang=true`.

    The path regex goes last and may contain commas: `status=500,path=^/api/v1/(a,b)`.
    """
    values: dict[str, Any] = {}
    rest = spec
    if "path=" in spec:
        head, _, path = spec.partition("path=")
        values["path"] = path
        rest = head.rstrip(",")
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        values[key.strip()] = value.strip() if sep else "true"
    return fault_from_mapping(values)


class FaultSet:
    """The active fault rules; safe to change while requests are being served."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        """Add a rule (a Fault or its fields as keywords) and return it."""
        rule = fault if fault is not None else Fault(**kwargs)
        with self._lock:
            self._faults.append(rule)
        return rule

    def set(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        """Replace all rules by one."""
        rule = fault if fault is not None else Fault(**kwargs)
        with self._lock:
            self._faults = [rule]
        return rule

    def remove(self, fault: Fault) -> None:
        with self._lock:
            self._faults = [f for f in self._faults if f is not fault]

    def clear(self) -> None:
        with self._lock:
            self._faults = []

    @property
    def rules(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    def match(self, info: RequestInfo) -> list[Fault]:
        """The rules that apply to INFO, counting the hit for `times`."""
        with self._lock:
            hit = [f for f in self._faults if f.matches(info)]
            for f in hit:
                f.hits += 1
            return hit
