"""The test API server's nodes made real enough to run a DaemonSet the way a kubelet would.

Root only. Every Node of the server's store becomes:

- a network namespace ``kdfn-<id>-<n>`` on one bridge (in its own namespace ``kdfb-<id>``),
  holding the node's InternalIP (the stored one; /32 plus on-link routes to the other nodes);
- a PID namespace whose PID 1 (``sleep``) is the node's "init": ``nsenter -t 1 -m -n`` from a
  ``hostPID`` pod reaches the node's mount and network namespaces, so ``iptables-save`` there
  lists the node's own (real) netfilter rules;
- a host tree (a temp dir, or a copy of a directory the test gives) that a ``hostPath: /``
  volume mounted at ``/host`` shows, bind-mounted read-only in the pod's own mount namespace;
- listeners for what its role serves: 10250 (kubelet) everywhere, 6443/2379/2380 on
  control-plane nodes (``node-role.kubernetes.io/control-plane`` or ``/master``), 6783 when a
  ``weave-net`` DaemonSet exists.

A DaemonSet controller and kubelet follow the API: for each DaemonSet and each node its
affinity selects, it applies the node's NoSchedule/NoExecute taints against the pod's
tolerations (no pod, and no event, as the real controller does), Pod Security admission of
the namespace's ``pod-security.kubernetes.io/enforce`` label (a ``FailedCreate`` event on the
DaemonSet with the real message), then creates the pod bound to the node. The kubelet pulls
(``pullable(image)`` says whether the registry has it; otherwise ``ErrImagePull`` + a ``Failed``
event) and runs the container's command as a process in the node's namespaces, with the
container's capabilities as the bounding set (``setpriv``) and its env (``fieldRef`` too);
``kdoctor`` in a command is this repository's ``python -m doctor`` (the image is this tree).
Its stdout/stderr are the pod's log (``pods/log``); pods/exec runs in the container's
namespaces. Deleting a pod (or its DaemonSet, or its namespace) kills its processes.

``light_agent`` (for the 500-node bench): no namespaces and no processes at all; pods go
Running at once and an exec answers with ``light_agent(node, command)``'s bytes (a fake
agent: the fleet side, the API traffic and the transport are real, the nodes are not).

Knobs for faults: ``hang_nodes`` (exec on those nodes' pods never answers: an agent that
hangs), ``mutate_daemonset`` (an admission policy rewriting DaemonSets as they are stored,
e.g. one that strips tolerations), ``pullable``.

    with NodeFarm(server, host_trees={"kubernetes-0": tree}) as farm:
        farm.iptables("kubernetes-0", "-A", "INPUT", ...)
        farm.node_ip("kubernetes-1"); farm.netns_of("kubernetes-1")
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import resources
from .execws import ExecRequest, ExecResult, Executor
from .netns import call_in_netns
from .store import Obj, meta, now_rfc3339

if TYPE_CHECKING:
    from .server import ApiServer

__all__ = ["NodeFarm"]

REPO = Path(__file__).resolve().parent.parent.parent
PODS = resources.lookup("v1", "pods")
NODES = resources.lookup("v1", "nodes")
DAEMONSETS = resources.lookup("apps/v1", "daemonsets")
NAMESPACES = resources.lookup("v1", "namespaces")
EVENTS = resources.lookup("v1", "events")
HOST_MOUNT = Path("/host")
TOOLS = ("ip", "iptables", "nsenter", "unshare", "setpriv", "mount")
CP_LABELS = ("node-role.kubernetes.io/control-plane", "node-role.kubernetes.io/master")
# What the DaemonSet controller adds to every DaemonSet pod (kubernetes/pkg/controller/daemon).
DEFAULT_TOLERATIONS = [
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists", "effect": "NoSchedule"},
]
# Pod Security "baseline": capabilities a container may add.
BASELINE_CAPS = {
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
    "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}  # fmt: skip


class NodeFarmError(RuntimeError):
    pass


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NodeFarmError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _children(pid: int, timeout: float = 5.0) -> list[int]:
    """The child processes of PID (waits until it has one)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            if text:
                return [int(x) for x in text]
        time.sleep(0.01)
    raise NodeFarmError(f"process {pid} started no child")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(OSError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


@dataclass
class _Node:
    name: str
    index: int
    netns: str
    ip: str
    tree: Path
    control_plane: bool
    init: subprocess.Popen[bytes] | None = None
    init_pid: int = 0
    listeners: list[socket.socket] = field(default_factory=list)


@dataclass
class _Container:
    namespace: str
    pod: str
    uid: str
    node: _Node
    caps: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    pid: int
    log: Path


def tolerates(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    """The scheduler's rule (k8s.io/api/core/v1 Toleration.ToleratesTaint)."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        op = t.get("operator") or "Equal"
        if op == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if (
            op == "Equal"
            and t.get("key") == taint.get("key")
            and (t.get("value") or "") == (taint.get("value") or "")
        ):
            return True
    return False


def _affinity_matches(spec: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = (
        ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"
        )
        or {}
    )
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    for term in terms:
        ok = True
        for e in term.get("matchExpressions") or []:
            key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
            present = key in labels
            if op == "In":
                ok = present and labels[key] in values
            elif op == "NotIn":
                ok = not present or labels[key] not in values
            elif op == "Exists":
                ok = present
            elif op == "DoesNotExist":
                ok = not present
            else:
                ok = False
            if not ok:
                break
        if ok:
            return True
    return False


def pod_security_violations(level: str, spec: Mapping[str, Any]) -> list[str]:
    """What Pod Security admission names for SPEC at LEVEL (baseline checks, and the
    restricted ones kdoctor's agent would meet), in its wording."""
    if level not in ("baseline", "restricted"):
        return []
    out: list[str] = []
    host = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    if host:
        out.append(f"host namespaces ({', '.join(host)})")
    volumes = [
        v.get("name") for v in spec.get("volumes") or [] if isinstance(v.get("hostPath"), dict)
    ]
    if volumes:
        out.append("hostPath volumes (" + ", ".join(f'volume "{n}"' for n in volumes) + ")")
    containers = spec.get("containers") or []
    for c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f'privileged (container "{c.get("name")}" must not set privileged=true)')
        added = [a for a in (sc.get("capabilities") or {}).get("add") or []]
        bad = sorted(a for a in added if a not in BASELINE_CAPS)
        if bad:
            names = ", ".join(f'"{a}"' for a in bad)
            out.append(
                f'non-default capabilities (container "{c.get("name")}" must not include '
                f"{names} in securityContext.capabilities.add)"
            )
    if level == "restricted":
        for c in containers:
            sc = c.get("securityContext") or {}
            name = c.get("name")
            if sc.get("allowPrivilegeEscalation") is not False:
                out.append(
                    f'allowPrivilegeEscalation != false (container "{name}" must set '
                    "securityContext.allowPrivilegeEscalation=false)"
                )
            if sc.get("runAsUser") == 0:
                out.append(f'runAsUser=0 (container "{name}" must not set runAsUser=0)')
        if volumes:
            out.append(
                "restricted volume types ("
                + ", ".join(f'volume "{n}" uses restricted volume type "hostPath"' for n in volumes)
                + ")"
            )
    return out


class NodeFarm:
    """Nodes as namespaces with a DaemonSet controller and a kubelet (see the module doc)."""

    def __init__(
        self,
        server: ApiServer,
        *,
        host_trees: Mapping[str, Path] | None = None,
        pullable: Callable[[str], bool] = lambda _image: True,
        hang_nodes: Iterable[str] = (),
        mutate_daemonset: Callable[[Obj], None] | None = None,
        subnet_prefix: str = "10.253",
        exec_timeout: float = 120.0,
        light_agent: Callable[[str, list[str]], bytes] | None = None,
    ) -> None:
        self.light_agent = light_agent
        self.server = server
        self.host_trees = dict(host_trees or {})
        self.pullable = pullable
        self.hang_nodes = set(hang_nodes)
        self.mutate_daemonset = mutate_daemonset
        self.subnet_prefix = subnet_prefix
        self.exec_timeout = exec_timeout
        self.id = secrets.token_hex(3)
        self.bridge_netns = f"kdfb-{self.id}"
        self.bridge = f"kdfbr{self.id}"
        self.errors: list[str] = []
        self.nodes: dict[str, _Node] = {}
        self.containers: dict[tuple[str, str], _Container] = {}
        self._lock = threading.RLock()
        self._tmp: Path | None = None
        self._namespaces: list[str] = []
        self._made_host_mount = False
        self._saved_executor: Executor | None = None
        self._started_server = False
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._selector = selectors.DefaultSelector()
        self._execs: set[subprocess.Popen[bytes]] = set()
        self._open = False

    @staticmethod
    def missing_tools() -> list[str]:
        missing = [] if os.geteuid() == 0 else ["root"]
        return missing + [t for t in TOOLS if shutil.which(t) is None]

    def __enter__(self) -> NodeFarm:
        return self.open()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        self.close()

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> NodeFarm:
        missing = self.missing_tools() if self.light_agent is None else []
        if missing:
            raise NodeFarmError(f"the node farm needs {', '.join(missing)}")
        self._open = True
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def _setup(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix=f"kdoctor-nodefarm-{self.id}-"))
        (self._tmp / "logs").mkdir()
        if self.light_agent is not None:
            self._setup_light()
            return
        if not HOST_MOUNT.exists():
            HOST_MOUNT.mkdir()  # the mount point of every pod's hostPath; removed at close
            self._made_host_mount = True
        br = self.bridge_netns
        self._add_netns(br)
        _run("ip", "-n", br, "link", "set", "lo", "up")
        _run("ip", "-n", br, "link", "add", self.bridge, "type", "bridge")
        _run("ip", "-n", br, "link", "set", self.bridge, "up")
        weave = any(
            meta(ds).get("name") == "weave-net" for ds in self.server.store.rlist(DAEMONSETS)
        )
        stored = sorted(self.server.store.rlist(NODES), key=lambda n: str(meta(n)["name"]))
        for index, node in enumerate(stored):
            self._add_node(index, node)
        for node in self.nodes.values():
            for other in self.nodes.values():
                if other is not node:
                    _run("ip", "-n", node.netns, "route", "add", f"{other.ip}/32", "dev", "eth0")
            ports = [10250] + ([6443, 2379, 2380] if node.control_plane else [])
            ports += [6783] if weave else []
            for port in ports:
                sock = call_in_netns(node.netns, self._listen, node.ip, port)
                node.listeners.append(sock)
                self._selector.register(sock, selectors.EVENT_READ)
        self.server.registry.log_dirs.append(self._tmp / "logs")
        if self.server._httpd is None:
            self.server.start()
            self._started_server = True
        self._saved_executor = self.server.executor
        self.server.executor = self.execute
        rv = self.server.store.resource_version
        for target, name in ((self._accept, "accept"), (self._watch, "watch")):
            thread = threading.Thread(
                target=target, args=(rv,) if name == "watch" else (), daemon=True,
                name=f"nodefarm-{self.id}-{name}",
            )  # fmt: skip
            thread.start()
            self._threads.append(thread)
        for ds in self.server.store.rlist(DAEMONSETS):
            self._reconcile(ds)

    def _setup_light(self) -> None:
        stored = sorted(self.server.store.rlist(NODES), key=lambda n: str(meta(n)["name"]))
        for index, node in enumerate(stored):
            name = str(meta(node)["name"])
            ip = ""
            for a in (node.get("status") or {}).get("addresses") or []:
                if isinstance(a, dict) and a.get("type") == "InternalIP":
                    ip = str(a.get("address") or "")
            labels = meta(node).get("labels") or {}
            self.nodes[name] = _Node(
                name, index, "", ip, Path("/nonexistent"), any(lb in labels for lb in CP_LABELS)
            )
        if self.server._httpd is None:
            self.server.start()
            self._started_server = True
        self._saved_executor = self.server.executor
        self.server.executor = self.execute
        rv = self.server.store.resource_version
        thread = threading.Thread(target=self._watch, args=(rv,), daemon=True)
        thread.start()
        self._threads.append(thread)
        for ds in self.server.store.rlist(DAEMONSETS):
            self._reconcile(ds)

    def _add_node(self, index: int, node: Obj) -> None:
        assert self._tmp is not None
        name = str(meta(node)["name"])
        ip = ""
        for a in (node.get("status") or {}).get("addresses") or []:
            if isinstance(a, dict) and a.get("type") == "InternalIP":
                ip = str(a.get("address") or "")
        if not ip:  # a kubelet reports its address: give the node one
            ip = f"{self.subnet_prefix}.{index // 250}.{index % 250 + 2}"

            def report(obj: Obj) -> None:
                status = obj.setdefault("status", {})
                status.setdefault("addresses", []).insert(0, {"type": "InternalIP", "address": ip})

            self.server.store.mutate("v1", "nodes", None, name, report)
        labels = meta(node).get("labels") or {}
        netns = f"kdfn-{self.id}-{index}"
        tree = self._tmp / "hosts" / name
        given = self.host_trees.get(name)
        if given is not None:
            shutil.copytree(given, tree, symlinks=True)
        else:
            (tree / "etc").mkdir(parents=True)
        (tree / "etc" / "hostname").write_text(name + "\n")
        release = tree / "etc" / "os-release"
        if not release.exists():
            release.write_text(f'NAME="kdoctor node farm"\nID=nodefarm\nVARIANT_ID="{name}"\n')
        n = _Node(name, index, netns, ip, tree, any(lb in labels for lb in CP_LABELS))
        self._add_netns(netns)
        veth = f"fv{self.id[:4]}{index}"
        _run("ip", "-n", self.bridge_netns, "link", "add", veth, "type", "veth",
             "peer", "name", "eth0", "netns", netns)  # fmt: skip
        _run("ip", "-n", self.bridge_netns, "link", "set", veth, "master", self.bridge, "up")
        _run("ip", "-n", netns, "link", "set", "lo", "up")
        _run("ip", "-n", netns, "addr", "add", f"{ip}/32", "dev", "eth0")
        _run("ip", "-n", netns, "link", "set", "eth0", "up")
        # The node's init: PID 1 of its own PID namespace, in its network namespace.
        n.init = subprocess.Popen(
            ["ip", "netns", "exec", netns, "unshare", "--pid", "--fork", "--mount-proc",
             "--", "sleep", "infinity"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        n.init_pid = _children(n.init.pid)[0]
        self.nodes[name] = n

    @staticmethod
    def _listen(ip: str, port: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, port))
        sock.listen(128)
        sock.setblocking(False)
        return sock

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._selector.select(0.2)
            except (OSError, ValueError):
                return
            for key, _mask in events:
                with contextlib.suppress(OSError):
                    conn, _addr = key.fileobj.accept()  # type: ignore[union-attr]
                    conn.close()

    def close(self) -> None:
        """Kill every process, remove namespaces, trees and the /host mount point it made."""
        if not self._open:
            return
        self._open = False
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        if self._saved_executor is not None:
            self.server.executor = self._saved_executor
            self._saved_executor = None
        with self._lock:
            for proc in list(self._execs):
                _kill(proc)
            for c in list(self.containers.values()):
                _kill(c.proc)
            self.containers.clear()
            for node in self.nodes.values():
                for sock in node.listeners:
                    with contextlib.suppress(Exception):
                        self._selector.unregister(sock)
                    sock.close()
                if node.init is not None:
                    _kill(node.init)
        self._selector.close()
        if self._tmp is not None:
            with contextlib.suppress(ValueError):
                self.server.registry.log_dirs.remove(self._tmp / "logs")
        if self._started_server:
            self.server.stop()
        for name in reversed(self._namespaces):
            _run("ip", "netns", "del", name, check=False)
        self._namespaces.clear()
        if self._made_host_mount:
            with contextlib.suppress(OSError):
                HOST_MOUNT.rmdir()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """Processes and namespaces of this farm still present (empty after close())."""
        out = []
        listing = _run("ip", "netns", "list", check=False).stdout.splitlines()
        out += [f"netns {line.split()[0]}" for line in listing if self.id in line]
        with self._lock:
            out += [f"container {c.namespace}/{c.pod}" for c in self.containers.values()]
        return out

    def _add_netns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._namespaces.append(name)

    # ------------------------------------------------------------------ test helpers

    def netns_of(self, node: str) -> str:
        return self.nodes[node].netns

    def node_ip(self, node: str) -> str:
        return self.nodes[node].ip

    def host_tree(self, node: str) -> Path:
        return self.nodes[node].tree

    def iptables(self, node: str, *args: str) -> None:
        """iptables in NODE's network namespace (its real netfilter)."""
        _run("ip", "netns", "exec", self.nodes[node].netns, "iptables", *args)

    def running(self) -> list[tuple[str, str]]:
        """(namespace, pod) of every container process still alive."""
        with self._lock:
            return [k for k, c in self.containers.items() if c.proc.poll() is None]

    # ------------------------------------------------------------------ controller

    def _watch(self, rv: int) -> None:
        store = self.server.store
        while not self._stop.is_set():
            with store.changed:
                events = store.events_after(rv)
                if not events:
                    if store.resource_version > rv:
                        rv = store.resource_version  # compacted: nothing to replay
                    else:
                        store.changed.wait(0.2)
                    continue
            for ev in events:
                rv = ev.rv
                try:
                    if ev.key == DAEMONSETS.key and ev.type != "DELETED":
                        self._reconcile(ev.obj)
                    elif ev.key == PODS.key and ev.type == "DELETED":
                        self._stop_container(ev.obj)
                except Exception as exc:
                    self.errors.append(f"{ev.key} {meta(ev.obj).get('name')}: {exc!r}")

    def _reconcile(self, ds: Obj) -> None:
        m = meta(ds)
        ns, name = str(m.get("namespace", "")), str(m["name"])
        if self.mutate_daemonset is not None and not (m.get("annotations") or {}).get(
            "nodefarm.kdoctor.io/admitted"
        ):

            def admit(obj: Obj) -> None:
                assert self.mutate_daemonset is not None
                self.mutate_daemonset(obj)
                meta(obj).setdefault("annotations", {})["nodefarm.kdoctor.io/admitted"] = "1"

            with contextlib.suppress(KeyError):
                self.server.store.mutate("apps/v1", "daemonsets", ns, name, admit)
            return  # the stored change comes back as an event
        template = (ds.get("spec") or {}).get("template") or {}
        spec = template.get("spec") or {}
        owned = {
            (p.get("spec") or {}).get("nodeName")
            for p in self.server.store.rlist(PODS, ns)
            if any(r.get("uid") == m.get("uid") for r in meta(p).get("ownerReferences") or [])
        }
        ns_obj = self.server.store.rget(NAMESPACES, "", ns) or {}
        level = (meta(ns_obj).get("labels") or {}).get("pod-security.kubernetes.io/enforce", "")
        for node_name, node in sorted(self.nodes.items()):
            if node_name in owned:
                continue
            stored = self.server.store.rget(NODES, "", node_name) or {}
            labels = meta(stored).get("labels") or {}
            if not _affinity_matches(spec, labels):
                continue
            tolerations = [*(spec.get("tolerations") or []), *DEFAULT_TOLERATIONS]
            taints = [
                t
                for t in (stored.get("spec") or {}).get("taints") or []
                if t.get("effect") in ("NoSchedule", "NoExecute")
            ]
            if not all(tolerates(tolerations, t) for t in taints):
                continue  # the controller places no pod and says nothing
            pod_name = f"{name}-{secrets.token_hex(3)[:5]}"
            violations = pod_security_violations(level, spec)
            if violations:
                self._event(
                    ds, "FailedCreate",
                    f'Error creating: pods "{pod_name}" is forbidden: violates PodSecurity '
                    f'"{level}:latest": ' + ", ".join(violations),
                    "daemonset-controller",
                )  # fmt: skip
                continue
            self._create_pod(ds, pod_name, node, template)

    def _event(self, obj: Obj, reason: str, message: str, component: str) -> None:
        m = meta(obj)
        now = now_rfc3339()
        self.server.store.put(
            "v1", "events",
            {
                "metadata": {
                    "name": f"{m['name']}.{uuid.uuid4().hex[:16]}",
                    "namespace": m.get("namespace", "default"),
                },
                "involvedObject": {
                    "kind": obj.get("kind") or ("Pod" if "containers" in (obj.get("spec") or {})
                                                else "DaemonSet"),
                    "namespace": m.get("namespace"), "name": m["name"], "uid": m.get("uid"),
                },
                "reason": reason, "message": message, "type": "Warning", "count": 1,
                "firstTimestamp": now, "lastTimestamp": now,
                "source": {"component": component},
            },
        )  # fmt: skip

    def _create_pod(self, ds: Obj, pod_name: str, node: _Node, template: Obj) -> None:
        m = meta(ds)
        spec = copy.deepcopy(template.get("spec") or {})
        spec["nodeName"] = node.name
        spec["tolerations"] = [*(spec.get("tolerations") or []), *DEFAULT_TOLERATIONS]
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": m.get("namespace"),
                "labels": dict((template.get("metadata") or {}).get("labels") or {}),
                "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": m["name"],
                     "uid": m.get("uid"), "controller": True, "blockOwnerDeletion": True}
                ],
            },
            "spec": spec,
            "status": {"phase": "Pending", "hostIP": node.ip, "qosClass": "Burstable"},
        }  # fmt: skip
        stored = self.server.store.put("v1", "pods", pod)
        image = str(((spec.get("containers") or [{}])[0]).get("image", ""))
        if not self.pullable(image):
            self._image_pull_failed(stored, image)
            return
        if self.light_agent is not None:
            self._mark_running(stored, node)
            return
        try:
            self._start_container(stored, node)
        except Exception as exc:
            self.errors.append(f"start {pod_name}: {exc!r}")
            raise

    def _image_pull_failed(self, pod: Obj, image: str) -> None:
        message = (
            f'Failed to pull image "{image}": rpc error: code = NotFound desc = failed to pull '
            f'and unpack image "{image}": not found'
        )

        def change(obj: Obj) -> None:
            containers = (obj.get("spec") or {}).get("containers") or []
            obj["status"] = {
                "phase": "Pending",
                "hostIP": (obj.get("status") or {}).get("hostIP"),
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [
                    {"name": c.get("name"), "image": c.get("image"), "imageID": "",
                     "ready": False, "restartCount": 0, "started": False,
                     "state": {"waiting": {"reason": "ErrImagePull", "message": message}}}
                    for c in containers
                ],
            }  # fmt: skip

        m = meta(pod)
        self.server.store.mutate("v1", "pods", m["namespace"], m["name"], change)
        self._event(pod, "Failed", message, "kubelet")

    # ------------------------------------------------------------------ kubelet

    def _command(self, argv: list[str]) -> list[str]:
        """`kdoctor …` is this repository's CLI (the image is this tree)."""
        if argv and argv[0] == "kdoctor":
            return [sys.executable, "-m", "doctor", *argv[1:]]
        return argv

    def _container_env(self, pod: Obj, container: Mapping[str, Any], node: _Node) -> dict[str, str]:
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "PYTHONPATH": str(REPO),
            "HOME": "/root",
            "HOSTNAME": node.name,
            "NO_COLOR": "1",
        }
        for e in container.get("env") or []:
            if "value" in e:
                env[str(e["name"])] = str(e["value"])
            ref = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
            if ref == "spec.nodeName":
                env[str(e["name"])] = node.name
            elif ref in ("status.hostIP", "status.podIP"):
                env[str(e["name"])] = node.ip
            elif ref == "metadata.name":
                env[str(e["name"])] = str(meta(pod)["name"])
        return env

    @staticmethod
    def _caps(container: Mapping[str, Any]) -> str:
        sc = (container.get("securityContext") or {}).get("capabilities") or {}
        if sc.get("drop") == ["ALL"] or "ALL" in (sc.get("drop") or []):
            keep: list[str] = []
        else:  # the runtime's default set (containerd/runc)
            keep = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
                    "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
                    "AUDIT_WRITE"]  # fmt: skip
        keep += [str(c) for c in sc.get("add") or []]
        return ",".join(["-all", *(f"+{c.lower()}" for c in dict.fromkeys(keep))])

    def _start_container(self, pod: Obj, node: _Node) -> None:
        assert self._tmp is not None
        m = meta(pod)
        spec = pod.get("spec") or {}
        container = (spec.get("containers") or [{}])[0]
        argv = self._command([*(container.get("command") or []), *(container.get("args") or [])])
        mounts_host = any(
            v.get("name") == vm.get("name") and (v.get("hostPath") or {}).get("path") == "/"
            for v in spec.get("volumes") or []
            for vm in container.get("volumeMounts") or []
        )
        env = self._container_env(pod, container, node)
        caps = self._caps(container)
        log_dir = self._tmp / "logs" / str(m["namespace"]) / str(m["name"])
        log_dir.mkdir(parents=True)
        log = log_dir / f"{container.get('name')}.log"
        proc = subprocess.Popen(
            self._enter(node.init_pid, node.tree if mounts_host else None, caps, argv),
            stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT,
            env=env, cwd="/", start_new_session=True,
        )  # fmt: skip
        pid = _children(proc.pid)[0]  # nsenter forks into the PID namespace
        with self._lock:
            self.containers[(str(m["namespace"]), str(m["name"]))] = _Container(
                str(m["namespace"]), str(m["name"]), str(m.get("uid")), node, caps, env, proc,
                pid, log,
            )  # fmt: skip
        self._mark_running(pod, node)

    def _mark_running(self, pod: Obj, node: _Node) -> None:
        m = meta(pod)

        def change(obj: Obj) -> None:
            seed = {"status": {"hostIP": node.ip, "podIP": node.ip, "podIPs": [{"ip": node.ip}]}}
            obj["status"] = self.server.registry._running_status(seed, obj.get("spec") or {})
            obj["status"]["hostIPs"] = [{"ip": node.ip}]

        self.server.store.mutate("v1", "pods", m["namespace"], m["name"], change)

    @staticmethod
    def _enter(target: int, tree: Path | None, caps: str, argv: list[str]) -> list[str]:
        """argv that runs ARGV in TARGET's PID/net/mount namespaces, in a mount namespace of
        its own with TREE read-only at /host, with only CAPS in its bounding set."""
        script = (
            '[ -z "$1" ] || { mount --bind "$1" /host && mount -o remount,bind,ro /host; } '
            '&& caps="$2" && shift 2 && exec setpriv --bounding-set "$caps" -- "$@"'
        )
        return [
            "nsenter", f"--target={target}", "--pid", "--net", "--mount", "--",
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", script, "sh", str(tree or ""), caps, *argv,
        ]  # fmt: skip

    def _stop_container(self, pod: Obj) -> None:
        m = meta(pod)
        key = (str(m.get("namespace", "")), str(m["name"]))
        with self._lock:
            c = self.containers.get(key)
            if c is None or c.uid != m.get("uid"):
                return
            del self.containers[key]
        _kill(c.proc)

    # ------------------------------------------------------------------ exec

    def execute(self, req: ExecRequest) -> ExecResult:
        if self.light_agent is not None:
            node = str((req.pod.get("spec") or {}).get("nodeName"))
            if node in self.nodes:
                return ExecResult(0, stdout=self.light_agent(node, list(req.command)))
        with self._lock:
            c = self.containers.get((req.namespace, req.name))
        if c is None or c.uid != meta(req.pod).get("uid"):
            if self._saved_executor is not None:
                return self._saved_executor(req)
            return ExecResult(126, stderr=b"node farm: no such container\n")
        if c.node.name in self.hang_nodes:
            argv = ["sleep", "3600"]  # an agent that never answers
        else:
            argv = self._command(list(req.command))
        full = [
            "nsenter", f"--target={c.pid}", "--pid", "--net", "--mount", "--",
            "setpriv", "--bounding-set", c.caps, "--", *argv,
        ]  # fmt: skip
        proc = subprocess.Popen(
            full,
            stdin=req.stdin if req.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=c.env, cwd="/",
            start_new_session=True,
        )  # fmt: skip
        with self._lock:
            self._execs.add(proc)
        pumps = [
            threading.Thread(target=_pump, args=(proc.stdout, req.write_stdout), daemon=True),
            threading.Thread(target=_pump, args=(proc.stderr, req.write_stderr), daemon=True),
        ]
        for t in pumps:
            t.start()
        deadline = time.monotonic() + self.exec_timeout
        try:
            while proc.poll() is None:
                if req.cancelled.is_set() or self._stop.is_set() or time.monotonic() > deadline:
                    _kill(proc)
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.05)
            for t in pumps:
                t.join(5)
        finally:
            with self._lock:
                self._execs.discard(proc)
        code = proc.returncode if proc.returncode is not None else 137
        return ExecResult(128 - code if code < 0 else code)


def _pump(stream: Any, write: Callable[[bytes], None]) -> None:
    with contextlib.suppress(Exception):
        while True:
            chunk = stream.read1(65536)
            if not chunk:
                return
            write(chunk)
