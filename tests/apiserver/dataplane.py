"""A real (tiny) data plane behind the test API server: pods are network namespaces on a
bridge, cluster DNS is dnsmasq, pods/exec runs busybox inside the pod's namespace.

Root only. Nothing touches the host's interfaces or iptables: the bridge lives in its own
namespace (`kdnet-<id>`), each pod is a namespace (`kdp-<id>-<n>`) with a veth to the bridge,
and the "node" kdoctor runs on is `kdnode-<id>`. The API server also listens on its
127.0.0.1:PORT inside the node namespace, so one kubeconfig works from both sides.

    server = ApiServer(bundle)
    with DataPlane(server) as dp:
        kubeconfig = server.write_kubeconfig(tmp / "kubeconfig")
        dp.create_pod("default", "a")
        dp.run_in_node([sys.executable, "-m", "doctor", "check", ...], env=...)

See tests/apiserver/README.md for the whole API.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import netns as _netns
from . import resources
from .execws import ExecRequest, ExecResult, Executor
from .store import Obj, meta

if TYPE_CHECKING:
    from .server import ApiServer

__all__ = ["DataPlane", "DataPlaneError"]

PODS = resources.lookup("v1", "pods")
SERVICES = resources.lookup("v1", "services")
TOOLS = ("ip", "busybox", "dnsmasq", "iptables")
ETC_NETNS = Path("/etc/netns")
# Left in /etc/netns when a data plane creates it: the last data plane to close (several may
# run at once, e.g. in parallel test sessions) removes the directory it finds holding only this.
ETC_MARKER = ETC_NETNS / ".kdoctor-dataplane-created"
DNS_LABEL = ("k8s-app", "kube-dns")
# A record whose address encodes the hosts file's generation: querying it proves that a
# dnsmasq has (re)loaded the current records and is answering.
MARKER = "generation.kdoctor-dataplane.invalid"
T = TypeVar("T")

_HOSTS_HEADER = """# Kubernetes-managed hosts file.
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost ip6-loopback
fe00::0\tip6-localnet
fe00::0\tip6-mcastprefix
fe00::1\tip6-allnodes
fe00::2\tip6-allrouters
"""


class DataPlaneError(RuntimeError):
    """A namespace, link or dnsmasq could not be set up."""


@dataclass
class _PodNet:
    namespace: str
    name: str
    uid: str
    netns: str
    veth: str
    ip: str
    hostname: str
    dns: subprocess.Popen[bytes] | None = None
    is_dns: bool = False


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise DataPlaneError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _proc_udp_hex(ip: str, port: int) -> str:
    """How /proc/net/udp writes IP:PORT (the address as a host-order 32-bit number)."""
    (num,) = struct.unpack("=I", socket.inet_aton(ip))
    return f"{num:08X}:{port:04X}"


class DataPlane:
    """Network namespaces, a bridge and dnsmasq following the pods and Services of SERVER."""

    def __init__(
        self,
        server: ApiServer,
        *,
        pod_cidr: str = "10.44.0.0/16",
        service_ip: str = "10.96.0.10",
        service_cidr: str = "10.96.0.0/12",
        kubernetes_ip: str = "10.96.0.1",
        domain: str = "cluster.local",
        exec_timeout: float = 30.0,
        dns_namespace: str = "kube-system",
        dns_service: str = "kube-dns",
    ) -> None:
        self.server = server
        self.network = ipaddress.ip_network(pod_cidr)
        self.prefix = self.network.prefixlen
        self.gateway = str(self.network[1])
        self.node_ip = str(self.network[2])
        self.service_ip = service_ip
        self.service_cidr = service_cidr
        self.kubernetes_ip = kubernetes_ip
        self.domain = domain.strip(".")
        self.exec_timeout = exec_timeout
        self.dns_namespace = dns_namespace
        self.dns_service = dns_service
        self.id = secrets.token_hex(3)
        self.bridge_netns = f"kdnet-{self.id}"
        self.node_netns = f"kdnode-{self.id}"
        self.bridge = f"kdbr{self.id}"
        self.errors: list[str] = []  # problems met by the background watcher
        self._lock = threading.RLock()
        self._pods: dict[tuple[str, str], _PodNet] = {}
        self._used_ips: set[str] = {self.gateway, self.node_ip}
        self._next_ip = 10
        self._next_index = 0
        self._namespaces: list[str] = []
        self._etc_dirs: list[Path] = []
        self._made_etc_netns = False
        self._tmp: Path | None = None
        self._bindir: Path | None = None
        self._applets: set[str] = set()
        self._ip = "ip"
        self._service_dns: subprocess.Popen[bytes] | None = None
        self._dns_running = False
        self._service_broken: str | None = None
        self._dropped: set[str] = set()
        self._blocks: set[tuple[str, str]] = set()
        self._records_text = ""
        self._generation = 0
        self._dns_pids: set[int] = set()
        self._execs: set[subprocess.Popen[bytes]] = set()
        self._saved_executor: Executor | None = None
        self._started_server = False
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._processed = threading.Condition()
        self._processed_rv = 0
        self._open = False

    # ------------------------------------------------------------------ availability

    @staticmethod
    def missing_tools() -> list[str]:
        """What this machine lacks for a data plane ("root" when not running as root)."""
        missing = [] if os.geteuid() == 0 else ["root"]
        return missing + [t for t in TOOLS if shutil.which(t) is None]

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> DataPlane:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> DataPlane:
        """Build the bridge, the node, the DNS service and pods; start following the API."""
        if self._open:
            return self
        missing = self.missing_tools()
        if missing:
            raise DataPlaneError(f"data plane needs {', '.join(missing)}")
        self._open = True
        atexit.register(self.close)  # a test that dies with it open still cleans up
        try:
            self._setup()
        except BaseException:
            self.close()
            raise
        return self

    def _setup(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix=f"kdoctor-dataplane-{self.id}-"))
        self._bindir = self._tmp / "bin"
        self._bindir.mkdir()
        busybox = shutil.which("busybox")
        self._ip = shutil.which("ip") or "ip"  # the pods' PATH holds busybox's ip
        assert busybox is not None
        listing = _run(busybox, "--list").stdout.split()
        self._applets = {a for a in listing if "/" not in a and a not in ("[", "[[")}
        for applet in self._applets:
            (self._bindir / applet).symlink_to(busybox)
        (self._tmp / "hosts").write_text("")

        br, node = self.bridge_netns, self.node_netns
        self._add_netns(br)
        self._add_netns(node)
        _run("ip", "-n", br, "link", "set", "lo", "up")
        # A fixed MAC: otherwise the bridge takes its lowest port MAC, which changes as pod
        # veths come and go and leaves stale gateway ARP entries in the node and the pods.
        mac = "02:" + ":".join(f"{b:02x}" for b in secrets.token_bytes(5))
        _run("ip", "-n", br, "link", "add", self.bridge, "address", mac, "type", "bridge")
        _run("ip", "-n", br, "addr", "add", f"{self.gateway}/{self.prefix}", "dev", self.bridge)
        _run("ip", "-n", br, "addr", "add", f"{self.service_ip}/32", "dev", self.bridge)
        _run("ip", "-n", br, "link", "set", self.bridge, "up")
        _run(
            "ip",
            "-n",
            br,
            "link",
            "add",
            "vnode",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            node,
        )
        _run("ip", "-n", br, "link", "set", "vnode", "master", self.bridge, "up")
        _run("ip", "-n", node, "link", "set", "lo", "up")
        _run("ip", "-n", node, "addr", "add", f"{self.node_ip}/{self.prefix}", "dev", "eth0")
        _run("ip", "-n", node, "link", "set", "eth0", "up")
        _run("ip", "-n", node, "route", "add", self.service_cidr, "via", self.gateway)

        if self.server._httpd is None:
            self.server.start()
            self._started_server = True
        self.server.listen_in_netns(node)
        self._saved_executor = self.server.executor
        self.server.executor = self.execute

        self._ensure_dns_service()
        dns_pods = [
            p
            for p in self.server.store.list("v1", "pods", self.dns_namespace)
            if (meta(p).get("labels") or {}).get(DNS_LABEL[0]) == DNS_LABEL[1]
            and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        if not dns_pods:
            dns_pods = [self.server.store.put("v1", "pods", self._dns_pod_manifest())]
        self._write_records()
        self._dns_running = True
        for pod in dns_pods:
            self._attach(pod)
        self._start_service_dns()
        self._sync_dns()
        with self._processed:
            self._processed_rv = self.server.store.resource_version
        self._watcher = threading.Thread(
            target=self._watch,
            args=(self._processed_rv,),
            name=f"dataplane-{self.id}",
            daemon=True,
        )
        self._watcher.start()

    def close(self) -> None:
        """Remove everything this data plane made (namespaces, links, dnsmasq, /etc/netns
        entries, files), give the server its executor back and stop its node listener."""
        if not self._open:
            return
        self._open = False
        atexit.unregister(self.close)
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(10)
            self._watcher = None
        if self._saved_executor is not None:
            self.server.executor = self._saved_executor
            self._saved_executor = None
        with contextlib.suppress(Exception):
            self.server.stop_listening_in_netns(self.node_netns)
        if self._started_server:
            self.server.stop()
            self._started_server = False
        with self._lock:
            for proc in list(self._execs):
                self._kill(proc)
            self._dns_running = False
            self._stop_all_dns()
            for name in reversed(self._namespaces):
                _run("ip", "netns", "del", name, check=False)
            self._namespaces.clear()
            self._pods.clear()
            with _etc_lock():
                for path in self._etc_dirs:
                    shutil.rmtree(path, ignore_errors=True)
                self._etc_dirs.clear()
                # Remove /etc/netns when a data plane made it and nothing else is left in it.
                with contextlib.suppress(OSError):
                    if {p.name for p in ETC_NETNS.iterdir()} == {ETC_MARKER.name}:
                        ETC_MARKER.unlink()
                        ETC_NETNS.rmdir()
                self._made_etc_netns = False
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """Whatever of this data plane still exists (empty after close())."""
        out = []
        listing = _run("ip", "netns", "list", check=False).stdout.split("\n")
        out += [f"netns {line.split()[0]}" for line in listing if self.id in line]
        links = _run("ip", "-o", "link", "show", check=False).stdout
        if self.bridge in links:
            out.append(f"link {self.bridge} in the host namespace")
        for pid in sorted(self._dns_pids):
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    out.append(f"process {pid}")
        if ETC_NETNS.is_dir():
            out += [f"{p}" for p in ETC_NETNS.iterdir() if self.id in p.name]
        if self._tmp is not None and self._tmp.exists():
            out.append(str(self._tmp))
        return out

    # ------------------------------------------------------------------ public helpers

    @property
    def dns_pod_ips(self) -> list[str]:
        with self._lock:
            return sorted((p.ip for p in self._pods.values() if p.is_dns), key=_ip_key)

    def netns_of(self, namespace: str, name: str) -> str:
        """The network namespace of an attached pod (KeyError when it has none)."""
        with self._lock:
            return self._pods[(namespace, name)].netns

    def ip_of(self, namespace: str, name: str) -> str:
        with self._lock:
            return self._pods[(namespace, name)].ip

    def node_cmd(self, argv: Iterable[str]) -> list[str]:
        """ARGV wrapped to run inside the node namespace."""
        return ["ip", "netns", "exec", self.node_netns, *argv]

    def run_in_node(self, argv: Iterable[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """subprocess.run of ARGV inside the node namespace (capture_output and text default
        to True; any subprocess.run argument may be given)."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(self.node_cmd(argv), **kwargs)

    def call_in_netns(self, netns: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """FN(*ARGS) in a thread inside NETNS (e.g. dp.node_netns), for dnspython and sockets."""
        return _netns.call_in_netns(netns, fn, *args, **kwargs)

    def sync(self, timeout: float = 10.0) -> None:
        """Wait until every API change made so far is applied (netns, pod status, DNS)."""
        target = self.server.store.resource_version
        deadline = time.monotonic() + timeout
        with self._processed:
            while self._processed_rv < target:
                left = deadline - time.monotonic()
                if left <= 0 or self._watcher is None:
                    raise TimeoutError(f"data plane did not catch up with revision {target}")
                self._processed.wait(min(left, 0.2))

    def wait_running(self, namespace: str, name: str, timeout: float = 15.0) -> Obj:
        """The pod once it is Running on the data plane (with its netns and podIP)."""
        deadline = time.monotonic() + timeout
        while True:
            self.sync(max(0.1, deadline - time.monotonic()))
            pod = self.server.store.get("v1", "pods", namespace, name)
            with self._lock:
                pn = self._pods.get((namespace, name))
            status = (pod or {}).get("status") or {}
            if (
                pod is not None
                and pn is not None
                and pn.uid == meta(pod).get("uid")
                and status.get("phase") == "Running"
                and status.get("podIP") == pn.ip
            ):
                return pod
            if time.monotonic() > deadline:
                raise TimeoutError(f"pod {namespace}/{name} did not start on the data plane")
            time.sleep(0.05)

    def create_pod(
        self,
        namespace: str,
        name: str,
        *,
        node: str | None = None,
        labels: Mapping[str, str] | None = None,
        hostname: str | None = None,
        subdomain: str | None = None,
        image: str = "busybox:1.36",
        container: str = "busybox",
        wait: bool = True,
    ) -> Obj:
        """Create a pod as `kubectl run` would (through the registry, like a POST) and, with
        WAIT, return it once Running with its podIP."""
        spec: dict[str, Any] = {
            "containers": [{"name": container, "image": image, "command": ["sleep", "3600"]}],
            "restartPolicy": "Always",
            "dnsPolicy": "ClusterFirst",
        }
        if node:
            spec["nodeName"] = node
        if hostname:
            spec["hostname"] = hostname
        if subdomain:
            spec["subdomain"] = subdomain
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
            "spec": spec,
        }
        created = self.server.registry.create(
            PODS, namespace, json.dumps(body).encode(), dry_run=False
        )
        if not wait:
            return copy.deepcopy(created)
        return self.wait_running(namespace, name)

    def attach(self, namespace: str, name: str) -> Obj:
        """Give an existing pod (e.g. from the bundle) a netns; its podIP becomes the netns
        address (kept when already inside pod_cidr). Returns the updated pod."""
        pod = self.server.store.get("v1", "pods", namespace, name)
        if pod is None:
            raise KeyError(f"pod {namespace}/{name} not found")
        self._attach(pod)
        self._sync_dns()
        result = self.server.store.get("v1", "pods", namespace, name)
        assert result is not None
        return result

    def exec(
        self, namespace: str, name: str, command: list[str], *, timeout: float | None = None
    ) -> ExecResult:
        """Run COMMAND in a pod the way pods/exec does, without the WebSocket."""
        pod = self.server.store.get("v1", "pods", namespace, name)
        if pod is None:
            raise KeyError(f"pod {namespace}/{name} not found")
        out: list[bytes] = []
        err: list[bytes] = []
        containers = (pod.get("spec") or {}).get("containers") or [{}]
        req = ExecRequest(
            pod=pod,
            namespace=namespace,
            name=name,
            container=str(containers[0].get("name", "")),
            command=list(command),
            write_stdout=out.append,
            write_stderr=err.append,
        )
        result = self._execute(req, timeout)
        return ExecResult(
            result.exit_code,
            b"".join(out) + result.stdout,
            b"".join(err) + result.stderr,
            result.message,
        )

    # ------------------------------------------------------------------ faults

    def drop_dns_record(self, fqdn: str) -> None:
        """Every DNS server stops answering FQDN (NXDOMAIN), until restore_dns_record."""
        with self._lock:
            self._dropped.add(fqdn.strip(".").lower())
            self._sync_dns()

    def restore_dns_record(self, fqdn: str) -> None:
        with self._lock:
            self._dropped.discard(fqdn.strip(".").lower())
            self._sync_dns()

    def stop_dns(self) -> None:
        """Stop every dnsmasq (Service IP and DNS pods): queries get ICMP port unreachable."""
        with self._lock:
            self._dns_running = False
            self._stop_all_dns()

    def start_dns(self) -> None:
        with self._lock:
            self._dns_running = True
            self._start_service_dns()
            for pn in self._pods.values():
                if pn.is_dns:
                    self._start_pod_dns(pn)

    def break_service_ip(self, mode: str = "drop") -> None:
        """The DNS Service IP stops answering while the DNS pods' own IPs still do.
        mode "drop": packets to it are dropped (clients time out, as with missing kube-proxy
        rules); "refuse": its dnsmasq is stopped, so it answers ICMP port unreachable
        (busybox nslookup fails at once with "Connection refused"; dnspython, whose UDP socket
        is unconnected, still times out)."""
        if mode not in ("drop", "refuse"):
            raise ValueError(f"mode must be 'drop' or 'refuse', not {mode!r}")
        with self._lock:
            self.restore_service_ip()
            if mode == "drop":
                _run(
                    "ip",
                    "netns",
                    "exec",
                    self.bridge_netns,
                    "iptables",
                    "-I",
                    "INPUT",
                    "!",
                    "-i",
                    "lo",
                    "-d",
                    self.service_ip,
                    "-j",
                    "DROP",
                )
            else:
                self._stop_dns_proc(self._service_dns)
                self._service_dns = None
            self._service_broken = mode

    def restore_service_ip(self) -> None:
        with self._lock:
            if self._service_broken == "drop":
                _run(
                    "ip",
                    "netns",
                    "exec",
                    self.bridge_netns,
                    "iptables",
                    "-D",
                    "INPUT",
                    "!",
                    "-i",
                    "lo",
                    "-d",
                    self.service_ip,
                    "-j",
                    "DROP",
                )
            self._service_broken = None
            self._start_service_dns()

    def block_icmp(self, pod_a: str | tuple[str, str], pod_b: str | tuple[str, str]) -> None:
        """POD_B drops ICMP from POD_A (iptables in POD_B's own netns); pods as "ns/name"."""
        with self._lock:
            a, b = self._pods[_key(pod_a)], self._pods[_key(pod_b)]
            _run(
                "ip",
                "netns",
                "exec",
                b.netns,
                "iptables",
                "-I",
                "INPUT",
                "-s",
                a.ip,
                "-p",
                "icmp",
                "-j",
                "DROP",
            )
            self._blocks.add((b.netns, a.ip))

    def unblock_icmp(self, pod_a: str | tuple[str, str], pod_b: str | tuple[str, str]) -> None:
        with self._lock:
            a, b = self._pods[_key(pod_a)], self._pods[_key(pod_b)]
            if (b.netns, a.ip) in self._blocks:
                _run(
                    "ip",
                    "netns",
                    "exec",
                    b.netns,
                    "iptables",
                    "-D",
                    "INPUT",
                    "-s",
                    a.ip,
                    "-p",
                    "icmp",
                    "-j",
                    "DROP",
                )
                self._blocks.discard((b.netns, a.ip))

    # ------------------------------------------------------------------ exec

    def execute(self, req: ExecRequest) -> ExecResult:
        """The server's executor while this data plane is open."""
        return self._execute(req, None)

    def _execute(self, req: ExecRequest, timeout: float | None) -> ExecResult:
        with self._lock:
            pn = self._pods.get((req.namespace, req.name))
            if pn is None or pn.uid != meta(req.pod).get("uid") or self._bindir is None:
                return ExecResult(
                    126,
                    stderr=(
                        f"kdoctor data plane: pod {req.namespace}/{req.name} has no network "
                        "namespace (DataPlane.attach gives it one)\n"
                    ).encode(),
                )
            bindir = self._bindir
        command = list(req.command)
        program = os.path.basename(command[0]) if command else ""
        if program not in self._applets:
            return ExecResult(
                126,
                stdout=(
                    "OCI runtime exec failed: exec failed: unable to start container process: "
                    f'exec: "{command[0] if command else ""}": executable file not found in '
                    "$PATH: unknown\r\n"
                ).encode(),
            )
        command[0] = program
        env = {
            "PATH": str(bindir),
            "HOSTNAME": pn.hostname,
            "HOME": "/root",
            "KUBERNETES_SERVICE_HOST": self.kubernetes_ip,
            "KUBERNETES_SERVICE_PORT": "443",
            "KUBERNETES_SERVICE_PORT_HTTPS": "443",
        }
        for c in (req.pod.get("spec") or {}).get("containers") or []:
            if isinstance(c, dict) and c.get("name") == req.container:
                for e in c.get("env") or []:
                    if isinstance(e, dict) and isinstance(e.get("value"), str):
                        env[str(e.get("name"))] = e["value"]
        if req.tty:
            env["TERM"] = "xterm"
        argv = [
            self._ip, "netns", "exec", pn.netns,
            str(bindir / "unshare"), "-u", "--",
            str(bindir / "sh"), "-c", 'hostname "$0" && exec "$@"', pn.hostname, *command,
        ]  # fmt: skip
        proc = subprocess.Popen(
            argv,
            stdin=req.stdin if req.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT if req.tty else subprocess.PIPE,
            env=env,
            cwd="/",
            start_new_session=True,
        )
        with self._lock:
            self._execs.add(proc)
        pumps = [threading.Thread(target=_pump, args=(proc.stdout, req.write_stdout), daemon=True)]
        if proc.stderr is not None:
            pumps.append(
                threading.Thread(target=_pump, args=(proc.stderr, req.write_stderr), daemon=True)
            )
        for t in pumps:
            t.start()
        deadline = time.monotonic() + (timeout or self.exec_timeout)
        timed_out = False
        try:
            while proc.poll() is None:
                if req.cancelled.is_set() or self._stop.is_set():
                    self._kill(proc)
                    break
                if time.monotonic() > deadline:
                    timed_out = True
                    self._kill(proc)
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.05)
            for t in pumps:
                t.join(5)
        finally:
            with self._lock:
                self._execs.discard(proc)
        code = proc.returncode if proc.returncode is not None else 137
        if code < 0:
            code = 128 - code
        note = b""
        if timed_out:
            note = f"kdoctor data plane: killed after {timeout or self.exec_timeout}s\n".encode()
        return ExecResult(code, stderr=note)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)

    # ------------------------------------------------------------------ pods

    def _add_netns(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._namespaces.append(name)

    def _node_ips(self) -> dict[str, str]:
        out = {}
        for node in self.server.store.rlist(resources.lookup("v1", "nodes")):
            for a in (node.get("status") or {}).get("addresses") or []:
                if isinstance(a, dict) and a.get("type") == "InternalIP":
                    out[str(meta(node)["name"])] = str(a.get("address"))
                    break
            else:
                out[str(meta(node)["name"])] = ""
        return out

    def _allocate(self, wanted: str | None) -> str:
        if wanted:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(wanted) in self.network and wanted not in self._used_ips:
                    self._used_ips.add(wanted)
                    return wanted
        while True:
            if self._next_ip >= self.network.num_addresses - 1:
                raise DataPlaneError(f"pod CIDR {self.network} is exhausted")
            ip = str(self.network[self._next_ip])
            self._next_ip += 1
            if ip not in self._used_ips:
                self._used_ips.add(ip)
                return ip

    def _attach(self, pod: Obj) -> None:
        """Create POD's netns and veth, and make the stored pod Running with that IP."""
        m = meta(pod)
        ns, name, uid = str(m.get("namespace", "")), str(m["name"]), str(m.get("uid", ""))
        with self._lock:
            old = self._pods.get((ns, name))
            if old is not None:
                if old.uid == uid:
                    return
                self._detach(old)
            spec = pod.get("spec") or {}
            status = pod.get("status") or {}
            ip = self._allocate(status.get("podIP"))
            index = self._next_index
            self._next_index += 1
            netns = f"kdp-{self.id}-{index}"
            veth = f"v{index}"
            hostname = str(spec.get("hostname") or name)[:63]
            labels = m.get("labels") or {}
            pn = _PodNet(
                ns, name, uid, netns, veth, ip, hostname,
                is_dns=ns == self.dns_namespace and labels.get(DNS_LABEL[0]) == DNS_LABEL[1],
            )  # fmt: skip
            try:
                self._add_netns(netns)
                br = self.bridge_netns
                _run(
                    "ip",
                    "-n",
                    br,
                    "link",
                    "add",
                    veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    netns,
                )
                _run("ip", "-n", br, "link", "set", veth, "master", self.bridge, "up")
                _run("ip", "-n", netns, "link", "set", "lo", "up")
                _run("ip", "-n", netns, "addr", "add", f"{ip}/{self.prefix}", "dev", "eth0")
                _run("ip", "-n", netns, "link", "set", "eth0", "up")
                _run("ip", "-n", netns, "route", "add", "default", "via", self.gateway)
                self._write_etc(pn, spec)
            except BaseException:
                self._used_ips.discard(ip)
                _run("ip", "netns", "del", netns, check=False)
                with contextlib.suppress(ValueError):
                    self._namespaces.remove(netns)
                raise
            self._pods[(ns, name)] = pn
            self._mark_running(pn)
            if pn.is_dns:
                self._update_dns_endpoints()
                if self._dns_running:
                    self._start_pod_dns(pn)

    def _write_etc(self, pn: _PodNet, spec: Mapping[str, Any]) -> None:
        """Per-pod /etc files that `ip netns exec` bind-mounts over /etc."""
        d = ETC_NETNS / pn.netns
        with _etc_lock():
            if not ETC_NETNS.exists():
                ETC_NETNS.mkdir(mode=0o755)
                ETC_MARKER.touch()
                self._made_etc_netns = True
            d.mkdir(mode=0o755)
        self._etc_dirs.append(d)
        d.joinpath("resolv.conf").write_text(
            f"search {pn.namespace}.svc.{self.domain} svc.{self.domain} {self.domain}\n"
            f"nameserver {self.service_ip}\n"
            "options ndots:5\n"
        )
        names = pn.hostname
        if spec.get("subdomain"):
            names = f"{pn.hostname}.{spec['subdomain']}.{pn.namespace}.svc.{self.domain}\t{names}"
        d.joinpath("hosts").write_text(_HOSTS_HEADER + f"{pn.ip}\t{names}\n")
        d.joinpath("hostname").write_text(pn.hostname + "\n")

    def _mark_running(self, pn: _PodNet) -> None:
        nodes = self._node_ips()
        names = sorted(nodes)

        def change(pod: Obj) -> None:
            spec = pod.setdefault("spec", {})
            if not spec.get("nodeName"):
                index = int(pn.netns.rsplit("-", 1)[1])
                spec["nodeName"] = names[index % len(names)] if names else "node-0"
            status = pod.get("status") or {}
            host_ip = status.get("hostIP") or nodes.get(spec["nodeName"]) or self.node_ip
            if status.get("phase") != "Running":
                seed = {"status": dict(status, hostIP=host_ip)}
                status = self.server.registry._running_status(seed, spec)
            status["podIP"] = pn.ip
            status["podIPs"] = [{"ip": pn.ip}]
            status["hostIP"] = host_ip
            status.setdefault("hostIPs", [{"ip": host_ip}])
            pod["status"] = status

        with contextlib.suppress(KeyError):
            self.server.store.mutate("v1", "pods", pn.namespace, pn.name, change)

    def _detach(self, pn: _PodNet) -> None:
        with self._lock:
            self._stop_dns_proc(pn.dns)
            pn.dns = None
            _run("ip", "netns", "del", pn.netns, check=False)
            with contextlib.suppress(ValueError):
                self._namespaces.remove(pn.netns)
            d = ETC_NETNS / pn.netns
            shutil.rmtree(d, ignore_errors=True)
            with contextlib.suppress(ValueError):
                self._etc_dirs.remove(d)
            self._used_ips.discard(pn.ip)
            self._blocks = {b for b in self._blocks if b[0] != pn.netns}
            if self._pods.get((pn.namespace, pn.name)) is pn:
                del self._pods[(pn.namespace, pn.name)]
            if pn.is_dns:
                self._update_dns_endpoints()

    # ------------------------------------------------------------------ following the API

    def _watch(self, rv: int) -> None:
        store = self.server.store
        while not self._stop.is_set():
            with store.changed:
                events = store.events_after(rv)
                if not events:
                    if store.resource_version > rv:  # history compacted: resynchronise
                        rv = store.resource_version
                        events = []
                        resync = True
                    else:
                        resync = False
                        store.changed.wait(0.2)
                    if not resync:
                        continue
            relevant = not events
            for ev in events:
                rv = ev.rv
                if ev.key == PODS.key:
                    relevant = True
                    try:
                        self._on_pod(ev.type, ev.obj)
                    except Exception as exc:
                        self.errors.append(f"pod {meta(ev.obj).get('name')}: {exc}")
                elif ev.key == SERVICES.key:
                    relevant = True
            if relevant:
                try:
                    self._sync_dns()
                except Exception as exc:
                    self.errors.append(f"dns: {exc}")
            with self._processed:
                self._processed_rv = rv
                self._processed.notify_all()

    def _on_pod(self, kind: str, pod: Obj) -> None:
        m = meta(pod)
        key = (str(m.get("namespace", "")), str(m["name"]))
        with self._lock:
            pn = self._pods.get(key)
            if kind == "DELETED":
                if pn is not None and pn.uid == m.get("uid"):
                    self._detach(pn)
                return
            if kind == "ADDED":
                spec = pod.get("spec") or {}
                phase = (pod.get("status") or {}).get("phase")
                if spec.get("hostNetwork") or phase in ("Succeeded", "Failed"):
                    return
                self._attach(self.server.store.get("v1", "pods", *key) or pod)
            elif (
                pn is not None
                and pn.uid == m.get("uid")
                and (pod.get("status") or {}).get("podIP") != pn.ip
            ):
                self._mark_running(pn)  # e.g. a delayed start copied an old podIP

    # ------------------------------------------------------------------ DNS

    def _dns_pod_manifest(self) -> Obj:
        nodes = sorted(self._node_ips())
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "coredns-dp",
                "namespace": self.dns_namespace,
                "labels": {DNS_LABEL[0]: DNS_LABEL[1]},
            },
            "spec": {
                "nodeName": nodes[0] if nodes else "node-0",
                "containers": [
                    {
                        "name": "coredns",
                        "image": "registry.k8s.io/coredns/coredns:v1.11.1",
                        "args": ["-conf", "/etc/coredns/Corefile"],
                        "ports": [
                            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                            {"name": "metrics", "containerPort": 9153, "protocol": "TCP"},
                        ],
                    }
                ],
                "dnsPolicy": "Default",
            },
            "status": {"phase": "Pending"},
        }

    def _ensure_dns_service(self) -> None:
        store = self.server.store
        svc = store.get("v1", "services", self.dns_namespace, self.dns_service)
        if svc is None:
            store.put(
                "v1",
                "services",
                {
                    "metadata": {
                        "name": self.dns_service,
                        "namespace": self.dns_namespace,
                        "labels": {DNS_LABEL[0]: DNS_LABEL[1], "kubernetes.io/name": "CoreDNS"},
                    },
                    "spec": {
                        "type": "ClusterIP",
                        "clusterIP": self.service_ip,
                        "clusterIPs": [self.service_ip],
                        "selector": {DNS_LABEL[0]: DNS_LABEL[1]},
                        "ports": [
                            {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                            {
                                "name": "metrics",
                                "port": 9153,
                                "protocol": "TCP",
                                "targetPort": 9153,
                            },
                        ],
                    },
                },
            )
        elif (svc.get("spec") or {}).get("clusterIP") != self.service_ip:

            def change(obj: Obj) -> None:
                obj.setdefault("spec", {})["clusterIP"] = self.service_ip
                obj["spec"]["clusterIPs"] = [self.service_ip]

            store.mutate("v1", "services", self.dns_namespace, self.dns_service, change)

    def _update_dns_endpoints(self) -> None:
        store = self.server.store
        addresses = []
        for pn in sorted(self._pods.values(), key=lambda p: _ip_key(p.ip)):
            if not pn.is_dns:
                continue
            pod = store.get("v1", "pods", pn.namespace, pn.name) or {}
            addresses.append(
                {
                    "ip": pn.ip,
                    "nodeName": (pod.get("spec") or {}).get("nodeName"),
                    "targetRef": {
                        "kind": "Pod",
                        "namespace": pn.namespace,
                        "name": pn.name,
                        "uid": pn.uid,
                    },
                }
            )
        old = store.get("v1", "endpoints", self.dns_namespace, self.dns_service) or {}
        ports = [
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "metrics", "port": 9153, "protocol": "TCP"},
        ]
        for subset in old.get("subsets") or []:
            if isinstance(subset, dict) and subset.get("ports"):
                ports = subset["ports"]
                break
        ep_meta: dict[str, Any] = dict(meta(old)) if old else {}
        ep_meta.pop("resourceVersion", None)
        ep_meta.update(name=self.dns_service, namespace=self.dns_namespace)
        endpoints: Obj = {
            "metadata": ep_meta,
            "subsets": [{"addresses": addresses, "ports": ports}] if addresses else [],
        }
        store.put("v1", "endpoints", endpoints)
        slices = [
            s
            for s in store.list("discovery.k8s.io/v1", "endpointslices", self.dns_namespace)
            if (meta(s).get("labels") or {}).get("kubernetes.io/service-name") == self.dns_service
        ]
        for i, s in enumerate(slices):
            s["endpoints"] = (
                [
                    {
                        "addresses": [a["ip"]],
                        "conditions": {"ready": True, "serving": True, "terminating": False},
                        "nodeName": a["nodeName"],
                        "targetRef": a["targetRef"],
                    }
                    for a in addresses
                ]
                if i == 0
                else []
            )
            meta(s).pop("resourceVersion", None)
            store.put("discovery.k8s.io/v1", "endpointslices", s)

    def records(self) -> list[tuple[str, str]]:
        """(fqdn, ip) the cluster DNS serves now, as kube-dns/CoreDNS would build them."""
        store = self.server.store
        pods = store.rlist(PODS)
        services = store.rlist(SERVICES)
        by_ns: dict[str, list[Obj]] = {}
        for p in pods:
            by_ns.setdefault(str(meta(p).get("namespace", "")), []).append(p)
        out: set[tuple[str, str]] = set()
        have_kubernetes = False
        for svc in services:
            m = meta(svc)
            ns, name = str(m.get("namespace", "")), str(m["name"])
            spec = svc.get("spec") or {}
            if spec.get("type") == "ExternalName":
                continue
            fqdn = f"{name}.{ns}.svc.{self.domain}"
            if (ns, name) == ("default", "kubernetes"):
                have_kubernetes = True
            cluster_ip = spec.get("clusterIP")
            if cluster_ip and cluster_ip != "None":
                out.add((fqdn, str(cluster_ip)))
                continue
            selector = spec.get("selector") or {}
            if not selector:
                continue
            for p in by_ns.get(ns, []):
                labels = meta(p).get("labels") or {}
                if any(labels.get(k) != v for k, v in selector.items()):
                    continue
                ip = (p.get("status") or {}).get("podIP")
                if not ip or not (_ready(p) or spec.get("publishNotReadyAddresses")):
                    continue
                out.add((fqdn, str(ip)))
                pspec = p.get("spec") or {}
                if pspec.get("hostname") and pspec.get("subdomain") == name:
                    out.add((f"{pspec['hostname']}.{name}.{ns}.svc.{self.domain}", str(ip)))
        if not have_kubernetes:
            out.add((f"kubernetes.default.svc.{self.domain}", self.kubernetes_ip))
        return sorted((f, ip) for f, ip in out if f.lower() not in self._dropped)

    def _write_records(self) -> bool:
        """Rewrite the hosts file dnsmasq serves; True when it changed."""
        assert self._tmp is not None
        text = "".join(f"{ip} {fqdn}\n" for fqdn, ip in self.records())
        if text == self._records_text:
            return False
        self._generation += 1
        path = self._tmp / "hosts"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{self._marker_ip()} {MARKER}\n" + text)
        tmp.replace(path)
        self._records_text = text
        return True

    def _sync_dns(self) -> None:
        with self._lock:
            if self._tmp is None or not self._write_records():
                return
            targets = [(self._service_dns, self.service_ip)]
            targets += [(p.dns, p.ip) for p in self._pods.values()]
            live = [(proc, ip) for proc, ip in targets if proc is not None]
            for proc, ip in live:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGHUP)
                else:
                    self.errors.append(f"dnsmasq on {ip} exited with {proc.returncode}")
            self._await_generation([ip for proc, ip in live if proc.poll() is None])

    def _marker_ip(self) -> str:
        g = self._generation
        return f"127.{(g >> 16) & 255}.{(g >> 8) & 255}.{g & 255}"

    def _await_generation(self, servers: list[str], timeout: float = 10.0) -> None:
        """Wait until every dnsmasq at SERVERS answers with the current records (queried from
        the bridge namespace, which reaches the Service IP and every pod)."""
        if not servers:
            return
        import dns.message
        import dns.query
        import dns.rdatatype

        want = self._marker_ip()

        def probe() -> list[str]:
            pending = list(servers)
            deadline = time.monotonic() + timeout
            while pending and time.monotonic() < deadline:
                for server in list(pending):
                    query = dns.message.make_query(MARKER, dns.rdatatype.A)
                    with contextlib.suppress(Exception):
                        answer = dns.query.udp(query, server, timeout=0.2)
                        got = [r.to_text() for rrset in answer.answer for r in rrset]
                        if got == [want]:
                            pending.remove(server)
                if pending:
                    time.sleep(0.01)
            return pending

        late = _netns.call_in_netns(self.bridge_netns, probe)
        if late:
            raise DataPlaneError(f"dnsmasq on {', '.join(late)} did not load generation {want}")

    def _start_dnsmasq(self, netns: str, ip: str, label: str) -> subprocess.Popen[bytes]:
        assert self._tmp is not None
        log = (self._tmp / f"dnsmasq-{label}.log").open("ab")
        argv = [
            "ip", "netns", "exec", netns, "dnsmasq",
            "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--addn-hosts={self._tmp / 'hosts'}", f"--listen-address={ip}", "--bind-interfaces",
            f"--local=/{self.domain}/", "--user=root", "--group=root", "--pid-file=",
            "--log-facility=-", "--cache-size=0",
        ]  # fmt: skip
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        self._dns_pids.add(proc.pid)
        want = _proc_udp_hex(ip, 53)
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                text = (self._tmp / f"dnsmasq-{label}.log").read_text(errors="replace")
                raise DataPlaneError(f"dnsmasq for {label} exited: {text[-500:]}")
            with contextlib.suppress(OSError):
                if want in Path(f"/proc/{proc.pid}/net/udp").read_text():
                    break
            if time.monotonic() > deadline:
                self._stop_dns_proc(proc)
                raise DataPlaneError(f"dnsmasq for {label} did not start listening on {ip}")
            time.sleep(0.01)
        try:
            self._await_generation([ip])  # bound is not enough: it must be answering
        except DataPlaneError:
            self._stop_dns_proc(proc)
            raise
        return proc

    def _start_service_dns(self) -> None:
        if not self._dns_running or self._service_broken == "refuse":
            return
        if self._service_dns is None or self._service_dns.poll() is not None:
            self._service_dns = self._start_dnsmasq(self.bridge_netns, self.service_ip, "service")

    def _start_pod_dns(self, pn: _PodNet) -> None:
        if pn.dns is None or pn.dns.poll() is not None:
            pn.dns = self._start_dnsmasq(pn.netns, pn.ip, f"{pn.namespace}-{pn.name}")

    @staticmethod
    def _stop_dns_proc(proc: subprocess.Popen[bytes] | None) -> None:
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def _stop_all_dns(self) -> None:
        self._stop_dns_proc(self._service_dns)
        self._service_dns = None
        for pn in self._pods.values():
            self._stop_dns_proc(pn.dns)
            pn.dns = None


@contextlib.contextmanager
def _etc_lock() -> Iterator[None]:
    """Serialise /etc/netns creation and removal between data planes (flock on /etc itself,
    so no lock file is left behind)."""
    fd = os.open("/etc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _pump(stream: Any, write: Callable[[bytes], None]) -> None:
    try:
        while True:
            chunk = os.read(stream.fileno(), 65536)
            if not chunk:
                return
            write(chunk)
    except OSError:
        return
    finally:
        with contextlib.suppress(OSError):
            stream.close()


def _ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    conditions = status.get("conditions")
    if not conditions:
        return True
    return any(
        isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
        for c in conditions
    )


def _ip_key(ip: str) -> tuple[int, ...]:
    return tuple(int(x) for x in ip.split("."))


def _key(ref: str | tuple[str, str]) -> tuple[str, str]:
    if isinstance(ref, tuple):
        return ref
    ns, _, name = ref.partition("/")
    return (ns, name) if name else ("default", ns)
