"""cluster.node-ports' measurement against real netfilter: two network namespaces joined by a
veth, the target's INPUT chain holding the rules each result stands for."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator

import pytest

from doctor.fleet import reachability
from tests.apiserver.netns import call_in_netns

needs_netns = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("iptables"),
    reason="needs root, ip and iptables (network namespaces, real netfilter)",
)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


class Pair:
    """Namespaces SRC (10.251.0.1) and DST (10.251.0.2); DST listens on some ports."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.src, self.dst = f"kdrs-{tag}", f"kdrd-{tag}"
        self.src_ip, self.dst_ip = "10.251.0.1", "10.251.0.2"
        self.listeners: list[socket.socket] = []

    def open(self) -> Pair:
        _ip("netns", "add", self.src)
        _ip("netns", "add", self.dst)
        _ip(
            "-n", self.src, "link", "add", "eth0", "type", "veth", "peer", "eth0", "netns", self.dst
        )
        for ns, ip in ((self.src, self.src_ip), (self.dst, self.dst_ip)):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        return self

    def listen(self, port: int) -> None:
        def make() -> socket.socket:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.dst_ip, port))
            sock.listen(16)
            return sock

        self.listeners.append(call_in_netns(self.dst, make))

    def iptables(self, *rule: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.dst, "iptables", *rule],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def close(self) -> None:
        for sock in self.listeners:
            sock.close()
        for ns in (self.src, self.dst):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)


@pytest.fixture
def pair() -> Iterator[Pair]:
    p = Pair().open()
    try:
        yield p
    finally:
        p.close()


@needs_netns
def test_the_four_outcomes_from_real_rules(pair: Pair) -> None:
    for port in (10250, 6443, 2379, 2380):
        pair.listen(port)
    # The lab's firewall on the control plane: the API port rejected with host-prohibited.
    pair.iptables("-A", "INPUT", "-p", "tcp", "--dport", "6443", "-j", "REJECT",
                  "--reject-with", "icmp-host-prohibited")  # fmt: skip
    pair.iptables("-A", "INPUT", "-p", "tcp", "--dport", "2379", "-j", "DROP")
    pair.iptables("-A", "INPUT", "-p", "tcp", "--dport", "2380", "-j", "REJECT",
                  "--reject-with", "tcp-reset")  # fmt: skip
    target = reachability.Target("cp", pair.dst_ip, (6443, 10250, 2379, 2380, 6783))
    entries = call_in_netns(pair.src, reachability.measure, [target], 1.0)
    by_port = {e["port"]: e for e in entries}
    assert {p: e["result"] for p, e in by_port.items()} == {
        6443: "prohibited",  # REJECT icmp-host-prohibited: "no route to host"
        10250: "open",
        2379: "timeout",  # DROP
        2380: "refused",  # REJECT tcp-reset
        6783: "refused",  # nothing listens: the kernel's own reset
    }
    assert by_port[6443]["errno"] == "EHOSTUNREACH"
    assert by_port[2379]["ms"] >= 900
    assert all(e["to"] == "cp" and e["ip"] == pair.dst_ip and e["proto"] == "tcp" for e in entries)


@needs_netns
def test_removing_the_rule_opens_the_port(pair: Pair) -> None:
    """The measurement follows the kernel, not a table: same port, rule gone -> open."""
    pair.listen(6443)
    rule = ["INPUT", "-p", "tcp", "--dport", "6443", "-j", "REJECT",
            "--reject-with", "icmp-host-prohibited"]  # fmt: skip
    pair.iptables("-A", *rule)
    assert call_in_netns(pair.src, reachability.connect, pair.dst_ip, 6443, 1.0)["result"] == (
        "prohibited"
    )
    pair.iptables("-D", *rule)
    assert call_in_netns(pair.src, reachability.connect, pair.dst_ip, 6443, 1.0)["result"] == "open"


def _node(name: str, ip: str | None, cp: bool = False) -> dict[str, object]:
    labels = {"node-role.kubernetes.io/control-plane": ""} if cp else {}
    addresses = [{"type": "InternalIP", "address": ip}] if ip else []
    return {"metadata": {"name": name, "labels": labels}, "status": {"addresses": addresses}}


def test_ports_follow_the_roles() -> None:
    nodes = [_node("cp-0", "10.0.0.1", cp=True), _node("cp-1", "10.0.0.2", cp=True),
             _node("w-0", "10.0.0.3"), _node("w-1", None)]  # fmt: skip
    from_worker = {t.node: t.ports for t in reachability.targets_for("w-0", nodes, (6783,))}
    assert from_worker == {"cp-0": (6443, 10250, 6783), "cp-1": (6443, 10250, 6783)}
    from_cp = {t.node: t.ports for t in reachability.targets_for("cp-0", nodes)}
    assert from_cp == {"cp-1": (6443, 2379, 2380, 10250), "w-0": (10250,)}
