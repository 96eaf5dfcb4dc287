"""A three-namespace lab where the kernel says what a ruleset does to Kubernetes traffic.

``node`` is the Kubernetes node whose ruleset is under test; ``peer`` is another node on
the node network (``eth0``, 192.168.50.0/24); ``pod`` is a pod behind the overlay interface
``weave`` (10.32.0.0/12). Listeners run on every port a probe connects to, so a refused
connection can only come from the ruleset. Connections come from the peer or the pod, so
the packets traverse the node's INPUT and FORWARD hooks as real traffic does.

The result of each TCP connect is what ``cluster.node-ports`` calls it (bundle-v1.md):
``open``, ``refused`` (a TCP reset or ICMP port unreachable), ``prohibited`` (an ICMP
unreachable answer such as admin-prohibited: "no route to host"), ``timeout`` (a drop).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

NODE_IP = "192.168.50.1"
PEER_IP = "192.168.50.2"
NODE_POD_IP = "10.32.0.1"
POD_IP = "10.32.0.2"

#: The kdoctor probe label -> (from which namespace, to which address, port).
KERNEL_PROBES: dict[str, tuple[str, str, int]] = {
    "tcp/6443 API server": ("peer", NODE_IP, 6443),
    "tcp/10250 kubelet": ("peer", NODE_IP, 10250),
    "tcp/2379 etcd clients": ("peer", NODE_IP, 2379),
    "tcp/2380 etcd peers": ("peer", NODE_IP, 2380),
    "tcp/6783 Weave Net control": ("peer", NODE_IP, 6783),
    "traffic from pods to the node -i weave (tcp/6443)": ("pod", NODE_POD_IP, 6443),
    "forwarded pod traffic -i weave": ("pod", PEER_IP, 80),
    "forwarded pod traffic -o weave": ("peer", POD_IP, 80),
}

_LISTENER = """
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1:]):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64); s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        try:
            conn, _ = key.fileobj.accept(); conn.close()
        except OSError:
            pass
"""

_CONNECT = """
import errno, json, socket, sys, concurrent.futures as cf
def probe(target):
    ip, port = target
    s = socket.socket(); s.settimeout(float(sys.argv[1]))
    try:
        s.connect((ip, port)); return "open"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as exc:
        if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM):
            return "prohibited"
        return "error " + str(exc)
    finally:
        s.close()
targets = json.loads(sys.argv[2])
with cf.ThreadPoolExecutor(len(targets) or 1) as pool:
    print(json.dumps(list(pool.map(probe, [tuple(t) for t in targets]))))
"""


def sh(*argv: str, stdin: str | None = None) -> str:
    proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True)
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


@dataclass
class Lab:
    node: str
    peer: str
    pod: str
    listeners: list[subprocess.Popen[str]] = field(default_factory=list)

    def on_node(self, *argv: str, stdin: str | None = None) -> str:
        return sh("ip", "netns", "exec", self.node, *argv, stdin=stdin)

    def listen(self, ns: str, *ports: int) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", _LISTENER, *map(str, ports)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.listeners.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def connect_all(self, timeout: float = 1.5) -> dict[str, str]:
        """What the kernel does to each probe's first connection: label -> result."""
        results: dict[str, str] = {}
        for source in ("peer", "pod"):
            labels = [label for label, (ns, _, _) in KERNEL_PROBES.items() if ns == source]
            targets = [[KERNEL_PROBES[label][1], KERNEL_PROBES[label][2]] for label in labels]
            ns = self.peer if source == "peer" else self.pod
            out = sh(
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-c",
                _CONNECT,
                str(timeout),
                json.dumps(targets),
            )
            results.update(zip(labels, json.loads(out), strict=True))
        return results


@contextmanager
def netfilter_lab() -> Iterator[Lab]:
    """Create the three namespaces and their links; remove everything afterwards."""
    tag = uuid.uuid4().hex[:6]
    lab = Lab(f"kdt-node-{tag}", f"kdt-peer-{tag}", f"kdt-pod-{tag}")
    created: list[str] = []
    try:
        for ns in (lab.node, lab.peer, lab.pod):
            sh("ip", "netns", "add", ns)
            created.append(ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh(
            "ip",
            "-n",
            lab.node,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            lab.peer,
        )
        sh(
            "ip",
            "-n",
            lab.node,
            "link",
            "add",
            "weave",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            lab.pod,
        )
        for ns, dev, address in (
            (lab.node, "eth0", f"{NODE_IP}/24"),
            (lab.peer, "eth0", f"{PEER_IP}/24"),
            (lab.node, "weave", f"{NODE_POD_IP}/12"),
            (lab.pod, "eth0", f"{POD_IP}/12"),
        ):
            sh("ip", "-n", ns, "addr", "add", address, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", lab.pod, "route", "add", "default", "via", NODE_POD_IP)
        sh("ip", "-n", lab.peer, "route", "add", "10.32.0.0/12", "via", NODE_IP)
        lab.on_node("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        # The kernel rate-limits ICMP errors per destination (a burst of 6, then one a
        # second): a REJECT's "prohibited" answers to a second round of probes would be
        # dropped and look like a DROP's timeout. The lab wants every answer.
        lab.on_node("sysctl", "-q", "-w", "net.ipv4.icmp_ratelimit=0")
        lab.listen(lab.node, 6443, 10250, 2379, 2380, 6783)
        lab.listen(lab.peer, 80)
        lab.listen(lab.pod, 80)
        _wait_for_links(lab)
        yield lab
    finally:
        for proc in lab.listeners:
            proc.kill()
            proc.wait()
        for ns in created:
            subprocess.run(["ip", "netns", "del", ns], check=False)


def _wait_for_links(lab: Lab) -> None:
    """veth links take a moment to come up (IPv6 DAD does not matter, carrier does)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if set(lab.connect_all(timeout=0.5).values()) == {"open"}:
            return
        time.sleep(0.1)
    raise AssertionError(f"the lab's links never came up: {lab.connect_all(timeout=0.5)}")


def blocked_today(result: dict[str, Any]) -> dict[str, str]:
    """From a node.iptables.reject result: probe label -> "reject"/"drop" for what blocks it now.

    Only findings that decide today count (not those found behind another rule, which the
    kernel never reaches while the first one is there).
    """
    verdicts: dict[str, str] = {}
    for finding in result["findings"]:
        evidence = finding.get("evidence") or {}
        if finding["severity"] != "fail" or evidence.get("hidden_behind"):
            continue
        verdict = str(evidence.get("verdict") or evidence.get("target") or "drop").lower()
        kind = "reject" if verdict.startswith("reject") else "drop"
        for label in evidence.get("blocks", []):
            verdicts.setdefault(label, kind)
    return verdicts


def warned(result: dict[str, Any]) -> set[str]:
    """Probe labels a warning names (a rule kdoctor could not judge, or a conditional block)."""
    return {
        label
        for finding in result["findings"]
        if finding["severity"] == "warn"
        for label in (finding.get("evidence") or {}).get("blocks", [])
    }


def assert_agrees(
    kernel: dict[str, str],
    result: dict[str, Any],
    may_warn: set[str] | frozenset[str] = frozenset(),
) -> None:
    """kdoctor's verdict for each probe matches what the kernel did to a real connection.

    ``may_warn``: labels for which kdoctor honestly cannot be certain (a rule it cannot
    evaluate, an accept that depends on the interface): there a blocked connection must be
    named by a warning instead of a failure, never passed as ok.
    """
    blocked = blocked_today(result)
    warnings = warned(result)
    for label, outcome in kernel.items():
        said = blocked.get(label)
        if outcome == "open":
            assert said is None, f"{label}: the kernel let it through, kdoctor says {said}"
            continue
        if said is None and label in may_warn:
            assert label in warnings, f"{label}: the kernel answered {outcome}, kdoctor says ok"
        elif outcome in ("refused", "prohibited"):
            assert said == "reject", f"{label}: the kernel answered {outcome}, kdoctor says {said}"
        elif outcome == "timeout":
            assert said == "drop", f"{label}: the kernel dropped it, kdoctor says {said}"
        else:
            raise AssertionError(f"{label}: unexpected connect result {outcome}")
