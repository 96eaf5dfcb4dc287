"""TCP reachability between nodes, told apart the way the kernel tells them apart.

A non-blocking ``connect()`` ends in one of four ways, and each points at a different cause:

``open``        the handshake completed: something listens and nothing filters.
``refused``     ECONNREFUSED: a TCP reset (nothing listens on the port, or a ``REJECT
                --reject-with tcp-reset``) or an ICMP port-unreachable (``REJECT``'s default).
``prohibited``  EHOSTUNREACH / ENETUNREACH / EACCES after an ICMP unreachable answer: a
                ``REJECT --reject-with icmp-host-prohibited`` (what the lab's firewall did, and
                what ``kubeadm join`` printed as "no route to host").
``timeout``     no answer at all within the timeout: a ``DROP``.

Which ports a node must reach on another is decided by their roles (:func:`ports_for`); the
list of targets comes from ``kdoctor fleet`` (agents read no API).
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

API_PORT = 6443
KUBELET_PORT = 10250
ETCD_PORTS = (2379, 2380)
#: TCP ports of overlays, by the DaemonSet that runs them (UDP ones cannot be told by connect).
OVERLAY_PORTS: dict[str, tuple[int, ...]] = {
    "weave-net": (6783,),
    "calico-node": (179,),
    "cilium": (4240,),
}
CONTROL_PLANE_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
RESULTS = ("open", "refused", "prohibited", "timeout")
DEFAULT_TIMEOUT = 2.0
PARALLEL = 32

_PROHIBITED = {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM}


@dataclass(frozen=True)
class Target:
    """One node to probe: its name, InternalIP and the ports its role needs from the caller."""

    node: str
    ip: str
    ports: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "ip": self.ip, "ports": list(self.ports)}

    @staticmethod
    def from_json(doc: dict[str, Any]) -> Target:
        return Target(str(doc["node"]), str(doc["ip"]), tuple(int(p) for p in doc["ports"]))


def is_control_plane(node: dict[str, Any]) -> bool:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return any(label in labels for label in CONTROL_PLANE_LABELS)


def internal_ip(node: dict[str, Any]) -> str | None:
    for address in (node.get("status") or {}).get("addresses") or []:
        if isinstance(address, dict) and address.get("type") == "InternalIP":
            return str(address.get("address") or "") or None
    return None


def ports_for(source_cp: bool, target_cp: bool, overlay: Sequence[int] = ()) -> tuple[int, ...]:
    """What SOURCE must reach on TARGET: the kubelet everywhere, the API server on a control
    plane node, etcd between control plane nodes, the overlay's TCP ports between all."""
    ports = [KUBELET_PORT, *overlay]
    if target_cp:
        ports.insert(0, API_PORT)
        if source_cp:
            ports[1:1] = ETCD_PORTS
    return tuple(dict.fromkeys(ports))


def targets_for(
    source: str, nodes: Iterable[dict[str, Any]], overlay: Sequence[int] = ()
) -> list[Target]:
    """Every other node with an InternalIP, with the ports SOURCE needs on it."""
    nodes = list(nodes)
    by_name = {str(n["metadata"]["name"]): n for n in nodes}
    source_cp = source in by_name and is_control_plane(by_name[source])
    out = []
    for name, node in sorted(by_name.items()):
        ip = internal_ip(node)
        if name == source or ip is None:
            continue
        out.append(Target(name, ip, ports_for(source_cp, is_control_plane(node), overlay)))
    return out


def connect(ip: str, port: int, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
    """One TCP connect to IP:PORT, classified (the ``reachability.json`` entry, without "to")."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    started = time.monotonic()
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    code: int | None
    try:
        code = sock.connect_ex((ip, port))
        if code in (errno.EINPROGRESS, errno.EAGAIN):
            with selectors.DefaultSelector() as selector:
                selector.register(sock, selectors.EVENT_WRITE)
                ready = selector.select(timeout)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if ready else None
    except OSError as exc:
        code = exc.errno
    finally:
        sock.close()
    ms = round((time.monotonic() - started) * 1000, 1)
    entry: dict[str, Any] = {"ip": ip, "port": port, "proto": "tcp", "ms": ms}
    if code is None:
        entry["result"] = "timeout"
    elif code == 0:
        entry["result"] = "open"
    elif code == errno.ECONNREFUSED:
        entry["result"] = "refused"
    elif code in _PROHIBITED:
        entry["result"] = "prohibited"
    elif code == errno.ETIMEDOUT:
        entry["result"] = "timeout"
    else:  # anything else the kernel says: closest of the four, with its name kept
        entry["result"] = "prohibited"
    if code:
        entry["errno"] = errno.errorcode.get(code, str(code))
        entry["error"] = os.strerror(code)
    return entry


def measure(
    targets: Sequence[Target], timeout: float = DEFAULT_TIMEOUT, parallel: int = PARALLEL
) -> list[dict[str, Any]]:
    """Every (target, port) once, in parallel; ``reachability.json`` in target order."""
    pairs = [(t, port) for t in targets for port in t.ports]
    if not pairs:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(pairs)))) as pool:
        results = list(pool.map(lambda pair: connect(pair[0].ip, pair[1], timeout), pairs))
    return [{"to": t.node, **entry} for (t, _port), entry in zip(pairs, results, strict=True)]
