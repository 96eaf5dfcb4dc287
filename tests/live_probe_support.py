"""Test support for the live probes (cluster.dns.kube-dns live part, cluster.dns.pod-to-pod).

* :class:`FakeKubelet` — no root needed: a thread that makes probe pods POSTed to the test API
  server Running with an IP (or leaves them stuck with a cause), and an exec executor that
  answers ``nslookup``/``ping``/``cat /etc/resolv.conf`` from a table.
* :class:`DnsServer` — a small UDP+TCP DNS server on 127.0.0.1 (dnspython), no root needed.
* :func:`live_cluster` — the real data plane (root, busybox, dnsmasq): the test API server
  with pods as network namespaces, a second schedulable node, and a node root tree with the
  kubelet's configuration (so kdoctor knows it runs on a node and reads the cluster domain).
"""

from __future__ import annotations

import contextlib
import copy
import os
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.apiserver import ApiServer
from tests.apiserver.execws import ExecRequest, ExecResult
from tests.conftest import BUNDLES, REPO, is_root, validate_report

PROBE_NS = "kdoctor-probe"
PROBE_LABEL = "kdoctor.io/probe"
SAMPLE = BUNDLES / "apiserver-sample"
RESOLV = (
    "search kdoctor-probe.svc.cluster.local svc.cluster.local cluster.local\n"
    "nameserver 10.96.0.10\noptions ndots:5\n"
)


def probe_objects(server: ApiServer) -> list[str]:
    """Every object a probe run could leave behind (labelled pods/services, the namespace)."""
    left = []
    for resource in ("pods", "services", "secrets"):
        for obj in server.list_objects("v1", resource):
            if PROBE_LABEL in (obj["metadata"].get("labels") or {}):
                left.append(
                    f"{resource}/{obj['metadata'].get('namespace')}/{obj['metadata']['name']}"
                )
    for ns in server.list_objects("v1", "namespaces"):
        if ns["metadata"]["name"] == PROBE_NS:
            left.append(f"namespaces/{PROBE_NS}")
    return left


def add_node(server: ApiServer, name: str, like: str = "kubernetes-1") -> None:
    """Another schedulable node like LIKE (the sample bundle has one worker and a tainted
    master), with copies of LIKE's DaemonSet pods (kube-proxy, weave-net) so the cluster
    stays healthy; the DaemonSets' counts follow."""
    node = server.get_object("v1", "nodes", None, like)
    assert node is not None
    node = copy.deepcopy(node)
    node["metadata"]["name"] = name
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        node["metadata"].pop(key, None)
    server.put_object("v1", "nodes", node)
    for pod in server.list_objects("v1", "pods", "kube-system"):
        owners = pod["metadata"].get("ownerReferences") or []
        if pod["spec"].get("nodeName") != like or not any(
            o.get("kind") == "DaemonSet" for o in owners
        ):
            continue
        clone = copy.deepcopy(pod)
        clone["metadata"]["name"] = pod["metadata"]["name"][:-5] + name[-5:].replace(".", "-")
        for key in ("uid", "resourceVersion", "creationTimestamp"):
            clone["metadata"].pop(key, None)
        clone["spec"]["nodeName"] = name
        server.put_object("v1", "pods", clone)
    for ds in server.list_objects("apps/v1", "daemonsets", "kube-system"):
        status = ds.get("status") or {}
        for key in (
            "desiredNumberScheduled", "currentNumberScheduled", "numberReady",
            "numberAvailable", "updatedNumberScheduled",
        ):  # fmt: skip
            if isinstance(status.get(key), int):
                status[key] += 1
        ds["metadata"].pop("resourceVersion", None)
        server.put_object("apps/v1", "daemonsets", ds)


# -- no root: a fake kubelet and exec ------------------------------------------------------------


@dataclass
class FakeKubelet:
    """Makes probe pods Running (10.44.1.N) unless their node is in ``stuck``; answers exec.

    ``stuck`` maps a node to a waiting reason (e.g. "ImagePullBackOff") and its message;
    ``unresolvable`` holds FQDNs nslookup does not find; ``unreachable`` holds (source node,
    destination node) pairs whose ping is lost; ``exec_calls`` records every command run.
    """

    server: ApiServer
    stuck: dict[str, tuple[str, str]] = field(default_factory=dict)
    unresolvable: set[str] = field(default_factory=set)
    unreachable: set[tuple[str, str]] = field(default_factory=set)
    dns_down: bool = False
    exec_calls: list[list[str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _next: int = 10

    def __enter__(self) -> FakeKubelet:
        self.server.executor = self.execute
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pod in self.server.list_objects("v1", "pods", PROBE_NS):
                if (pod.get("status") or {}).get("phase") or pod["metadata"].get(
                    "deletionTimestamp"
                ):
                    continue
                with contextlib.suppress(KeyError):
                    self.server.store.mutate(
                        "v1", "pods", PROBE_NS, pod["metadata"]["name"], self._start
                    )
            time.sleep(0.05)

    def _start(self, pod: dict[str, Any]) -> None:
        node = pod["spec"].get("nodeName", "")
        container = pod["spec"]["containers"][0]
        if node in self.stuck:
            reason, message = self.stuck[node]
            pod["status"] = {
                "phase": "Pending",
                "conditions": [
                    {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}
                ],
                "containerStatuses": [
                    {
                        "name": container["name"],
                        "image": container["image"],
                        "imageID": "",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": reason, "message": message}},
                        "lastState": {},
                    }
                ],
            }
            return
        self._next += 1
        ip = f"10.44.1.{self._next}"
        pod["status"] = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "192.168.56.10",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "ready": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": "2017-04-10T10:00:00Z"}},
                }
            ],
        }

    def _records(self) -> dict[str, str]:
        out = {}
        for pod in self.server.list_objects("v1", "pods", PROBE_NS):
            spec, ip = pod["spec"], (pod.get("status") or {}).get("podIP")
            if ip and spec.get("hostname") and spec.get("subdomain"):
                out[f"{spec['hostname']}.{spec['subdomain']}.{PROBE_NS}.svc.cluster.local"] = ip
        return out

    def execute(self, req: ExecRequest) -> ExecResult:
        command = list(req.command)
        self.exec_calls.append(command)
        src = (req.pod.get("spec") or {}).get("nodeName", "")
        if command[:1] == ["cat"]:
            return ExecResult(0, RESOLV.encode())
        if command[:1] == ["nslookup"]:
            name = command[1]
            head = "Server:\t\t10.96.0.10\nAddress:\t10.96.0.10:53\n\n"
            if self.dns_down:
                return ExecResult(1, b";; connection timed out; no servers could be reached\n\n")
            ip = self._records().get(name)
            if ip is None or name in self.unresolvable:
                return ExecResult(1, (head + f"** server can't find {name}: NXDOMAIN\n").encode())
            return ExecResult(0, (head + f"Name:\t{name}\nAddress: {ip}\n\n").encode())
        if command[:1] == ["ping"]:
            dst = command[-1]
            dst_node = next(
                (
                    p["spec"].get("nodeName")
                    for p in self.server.list_objects("v1", "pods", PROBE_NS)
                    if (p.get("status") or {}).get("podIP") == dst
                ),
                None,
            )
            if (src, dst_node) in self.unreachable:
                text = (
                    f"PING {dst} ({dst}): 56 data bytes\n\n--- {dst} ping statistics ---\n"
                    "2 packets transmitted, 0 packets received, 100% packet loss\n"
                )
                return ExecResult(1, text.encode())
            text = (
                f"PING {dst} ({dst}): 56 data bytes\n64 bytes from {dst}: seq=0 ttl=64 "
                f"time=0.101 ms\n\n--- {dst} ping statistics ---\n2 packets transmitted, 2 "
                "packets received, 0% packet loss\nround-trip min/avg/max = 0.080/0.090/0.101 ms\n"
            )
            return ExecResult(0, text.encode())
        return ExecResult(127, stderr=f"{command[0]}: not found\n".encode())


# -- no root: a DNS server on 127.0.0.1 ------------------------------------------------------


class DnsServer:
    """Answers A queries from ``records`` over UDP and TCP on 127.0.0.1:PORT; names in
    ``nxdomain`` (or not in records) get NXDOMAIN; ``silent`` drops every query."""

    def __init__(self, records: dict[str, str]) -> None:
        self.records = records
        self.silent = False
        outer = self

        def answer(data: bytes) -> bytes | None:
            import dns.message
            import dns.rcode
            import dns.rrset

            if outer.silent:
                return None
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            name = str(query.question[0].name).rstrip(".")
            if name in outer.records:
                response.answer.append(
                    dns.rrset.from_text(name + ".", 5, "IN", "A", outer.records[name])
                )
            else:
                response.set_rcode(dns.rcode.NXDOMAIN)
            return response.to_wire()

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                reply = answer(data)
                if reply is not None:
                    sock.sendto(reply, self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = self.request.recv(2)
                if len(head) < 2:
                    return
                data = self.request.recv(int.from_bytes(head, "big"))
                reply = answer(data)
                if reply is None:
                    time.sleep(3)
                    return
                self.request.sendall(len(reply).to_bytes(2, "big") + reply)

        socketserver.ThreadingUDPServer.allow_reuse_address = True
        self.udp = socketserver.ThreadingUDPServer(("127.0.0.1", 0), Udp)
        self.port = self.udp.server_address[1]
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
        self.tcp.daemon_threads = True
        self.udp.daemon_threads = True

    def __enter__(self) -> DnsServer:
        for srv in (self.udp, self.tcp):
            threading.Thread(
                target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            ).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for srv in (self.udp, self.tcp):
            srv.shutdown()
            srv.server_close()


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (UDP and TCP)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- root: the real data plane ---------------------------------------------------------------


def data_plane_missing() -> str | None:
    """Why the data-plane tests cannot run here, or None."""
    if not is_root():
        return "needs root (network namespaces)"
    try:
        from tests.apiserver.dataplane import DataPlane
    except ImportError as exc:  # pragma: no cover - the module is part of the repo
        return f"tests/apiserver/dataplane.py unavailable: {exc}"
    missing = DataPlane.missing_tools()
    return f"data plane needs {', '.join(missing)}" if missing else None


@dataclass
class LiveCluster:
    server: ApiServer
    dp: Any
    kubeconfig: Path
    root: Path

    def kdoctor(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        """``python -m doctor ARGS`` inside the node's network namespace."""
        env = dict(os.environ)
        env.pop("NO_COLOR", None)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        proc: subprocess.CompletedProcess[str] = self.dp.run_in_node(
            [sys.executable, "-m", "doctor", *args],
            env=env, capture_output=True, text=True, cwd=REPO, timeout=timeout,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc

    def check_json(self, *args: str) -> tuple[int, dict[str, Any], str]:
        proc = self.kdoctor(
            "check", "--kubeconfig", str(self.kubeconfig), "--root", str(self.root),
            "--scope", "cluster", "--format", "json", *args,
        )  # fmt: skip
        assert proc.stdout, proc.stderr
        return proc.returncode, validate_report(proc.stdout), proc.stderr


def node_root(path: Path, domain: str = "cluster.local") -> Path:
    """A node tree: kubelet configuration and the node's resolv.conf."""
    (path / "var/lib/kubelet").mkdir(parents=True)
    (path / "var/lib/kubelet/config.yaml").write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        f"clusterDomain: {domain}\nclusterDNS:\n- 10.96.0.10\n"
    )
    (path / "etc").mkdir()
    (path / "etc/resolv.conf").write_text("nameserver 192.0.2.53\nsearch lab.example\n")
    return path


@contextlib.contextmanager
def live_cluster(
    tmp: Path, prepare: Callable[[ApiServer], None] | None = None
) -> Iterator[LiveCluster]:
    """The test API server with the real data plane, two schedulable nodes, a node tree."""
    from tests.apiserver.dataplane import DataPlane

    server = ApiServer(SAMPLE)
    with server:
        add_node(server, "kubernetes-2")
        if prepare is not None:
            prepare(server)
        with DataPlane(server) as dp:
            kubeconfig = server.write_kubeconfig(tmp / "kubeconfig")
            yield LiveCluster(server, dp, kubeconfig, node_root(tmp / "root"))
            assert dp.errors == []
            assert probe_objects(server) == []
        # No network namespace, link, dnsmasq or /etc/netns entry left behind.
        assert dp.leftovers() == []
