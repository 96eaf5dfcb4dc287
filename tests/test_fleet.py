"""``kdoctor fleet`` on the test API server's node farm: each node a network + PID namespace
with its own address and host tree, the DaemonSet run as a kubelet would (the real
``kdoctor agent`` as a process there), the lab's REJECT rule in real netfilter."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.apiserver import ApiServer
from tests.apiserver.nodefarm import NodeFarm
from tests.conftest import BUNDLES, REPO, kdoctor, validate_report

pytestmark = pytest.mark.skipif(
    bool(NodeFarm.missing_tools()),
    reason=f"the node farm needs {', '.join(NodeFarm.missing_tools())}",
)

LAB = BUNDLES / "seed-lab-broken"
NODES = ["kubernetes-0", "kubernetes-1", "kubernetes-2"]
NAMESPACE = "kdoctor-fleet"
REJECT_6443 = ["INPUT", "-p", "tcp", "--dport", "6443", "-j", "REJECT",
               "--reject-with", "icmp-host-prohibited"]  # fmt: skip


class Lab:
    def __init__(self, server: ApiServer, farm: NodeFarm, kubeconfig: Path) -> None:
        self.server, self.farm, self.kubeconfig = server, farm, kubeconfig

    def fleet(self, *args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
        return kdoctor("fleet", "--kubeconfig", str(self.kubeconfig), *args, timeout=timeout)

    def fleet_json(self, *args: str) -> tuple[int, dict[str, Any]]:
        proc = self.fleet("--format", "json", *args)
        assert proc.stdout, proc.stderr
        return proc.returncode, validate_report(proc.stdout)

    def leftovers(self, namespace: str = NAMESPACE, namespace_ours: bool = True) -> list[str]:
        """What a fleet run left: its namespace, DaemonSet, pods, agent processes."""
        store = self.server.store
        out = []
        if namespace_ours and store.get("v1", "namespaces", None, namespace) is not None:
            out.append(f"namespace {namespace}")
        out += [
            f"daemonset {d['metadata']['name']}"
            for d in store.list("apps/v1", "daemonsets", namespace)
        ]
        out += [f"pod {p['metadata']['name']}" for p in store.list("v1", "pods", namespace)]
        out += [
            f"serviceaccount {s['metadata']['name']}"
            for s in store.list("v1", "serviceaccounts", namespace)
        ]
        deadline = time.monotonic() + 5  # the farm kills processes as it sees the deletes
        while self.farm.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        out += [f"process {ns}/{pod}" for ns, pod in self.farm.running()]
        return out


def _lab(tmp_path: Path, **farm_options: Any) -> Iterator[Lab]:
    with ApiServer(LAB) as server, NodeFarm(server, **farm_options) as farm:
        yield Lab(server, farm, server.write_kubeconfig(tmp_path / "kubeconfig"))
        assert farm.errors == []


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    yield from _lab(tmp_path)


def _by(report: dict[str, Any], check_id: str) -> dict[str | None, dict[str, Any]]:
    return {c.get("node"): c for c in report["checks"] if c["id"] == check_id}


def test_the_lab_join_failure_named_from_both_sides(lab: Lab) -> None:
    """The control plane's REJECT in real netfilter: its own node.iptables.reject finds the
    rule, and the workers' agents measure `prohibited` on 6443, which cluster.node-ports
    ties back to that rule."""
    lab.farm.iptables("kubernetes-0", "-A", *REJECT_6443)
    code, report = lab.fleet_json()
    assert code == 2
    assert report["target"]["fleet"] == {"nodes": NODES, "unreported": {}}
    node_checks = {c["id"] for c in report["checks"] if c["scope"] == "node"}
    for check_id in node_checks:  # every node check once per node, with its node
        assert sorted(_by(report, check_id)) == NODES
    iptables = _by(report, "node.iptables.reject")
    assert iptables["kubernetes-0"]["status"] == "fail"
    assert (
        "--dport 6443 -j REJECT --reject-with icmp-host-prohibited"
        in (iptables["kubernetes-0"]["findings"][0]["resource"])
    )
    assert iptables["kubernetes-1"]["status"] == iptables["kubernetes-2"]["status"] == "ok"
    (ports,) = _by(report, "cluster.node-ports").values()
    assert ports["status"] == "fail"
    (finding,) = ports["findings"]
    evidence = finding["evidence"]
    assert (evidence["to"], evidence["port"], evidence["result"]) == (
        "kubernetes-0",
        6443,
        "prohibited",
    )
    assert evidence["from"] == ["kubernetes-1", "kubernetes-2"]
    assert evidence["ip"] == lab.farm.node_ip("kubernetes-0")
    assert "no route to host" in finding["message"]
    assert "--reject-with icmp-host-prohibited` (node.iptables.reject)" in finding["message"]
    assert finding["caused_by"] == "node.iptables.reject"
    assert lab.leftovers() == []


def test_no_rule_no_finding_and_one_exec_per_node(lab: Lab) -> None:
    """Without the rule every measured port is open; fleet's API use: one exec per node, and
    the agents (no token) make no API call at all."""
    lab.server.requests.clear()
    code, report = lab.fleet_json()
    (ports,) = _by(report, "cluster.node-ports").values()
    assert ports["status"] == "ok", ports
    assert ports["evidence"]["pairs"] > 0
    requests = list(lab.server.requests)
    execs = [r for r in requests if r.path.endswith("/exec")]
    assert len(execs) == len(NODES)
    # The agent pods have no credentials: every request carried fleet's token.
    assert all(r.status != 401 for r in requests)
    node_lists = [r for r in requests if r.verb == "list" and r.path.endswith("/nodes")]
    assert len(node_lists) == 1  # the nodes are read once, for fleet and the cluster checks
    assert code in (2, 3)  # the lab's other faults (overlay, DNS) still fail
    assert lab.leftovers() == []


def test_text_and_prometheus_reports(lab: Lab) -> None:
    lab.farm.iptables("kubernetes-0", "-A", *REJECT_6443)
    proc = lab.fleet()
    assert proc.returncode == 2, proc.stderr
    lines = proc.stdout.splitlines()
    rows = [line for line in lines if line.startswith("kubernetes-")]
    assert rows[0].startswith("kubernetes-0") and "✗" in rows[0]  # fails first
    assert "cluster.node-ports" in proc.stdout
    proc = lab.fleet("--format", "prometheus")
    families = {f.name: f for f in text_string_to_metric_families(proc.stdout)}
    samples = [
        s.labels for s in families["kdoctor_check_status"].samples
        if s.labels.get("check") == "node.iptables.reject" and s.value == 1
    ]  # fmt: skip
    assert {(s["node"], s["status"]) for s in samples} == {
        ("kubernetes-0", "fail"), ("kubernetes-1", "ok"), ("kubernetes-2", "ok"),
    }  # fmt: skip
    cluster = [s for s in families["kdoctor_check_status"].samples
               if s.labels["check"] == "cluster.node-ports"]  # fmt: skip
    assert cluster and all("node" not in s.labels for s in cluster)


def test_fleet_bundle_round_trip(lab: Lab, tmp_path: Path) -> None:
    lab.farm.iptables("kubernetes-0", "-A", *REJECT_6443)
    out = tmp_path / "fleet-bundle"
    code, live = lab.fleet_json("--collect", str(out))
    manifest = json.loads((out / "kdoctor-bundle.json").read_text())
    assert manifest["fleet"] is True and manifest["nodes"] == NODES
    reach = json.loads((out / "nodes/kubernetes-1/commands/reachability.json").read_text())
    assert {"to": "kubernetes-0", "port": 6443, "result": "prohibited"}.items() <= next(
        e for e in reach if e["to"] == "kubernetes-0" and e["port"] == 6443
    ).items()
    # Each node's own host tree, read through its agent's /host.
    assert (
        'VARIANT_ID="kubernetes-0"' in (out / "nodes/kubernetes-0/host/etc/os-release").read_text()
    )
    assert (out / "cluster/nodes.json").is_file()
    proc = kdoctor("check", "--bundle", str(out), "--format", "json")
    offline = validate_report(proc.stdout)
    assert proc.returncode == code == 2
    for check_id in ("node.iptables.reject", "cluster.node-ports"):
        assert {n: c["status"] for n, c in _by(offline, check_id).items()} == {
            n: c["status"] for n, c in _by(live, check_id).items()
        }
    (ports,) = _by(offline, "cluster.node-ports").values()
    assert "kubernetes-0's own rule" in ports["findings"][0]["message"]


def _error_rows(report: dict[str, Any], node: str) -> list[str]:
    rows = [c for c in report["checks"] if c.get("node") == node]
    assert rows and all(c["status"] == "error" for c in rows), rows
    return [c["summary"] for c in rows]


@pytest.fixture
def stripped_lab(tmp_path: Path) -> Iterator[Lab]:
    def strip_tolerations(ds: dict[str, Any]) -> None:
        ds["spec"]["template"]["spec"].pop("tolerations", None)  # a policy that removes them

    yield from _lab(tmp_path, mutate_daemonset=strip_tolerations)


def test_a_taint_not_tolerated_is_an_error_row(stripped_lab: Lab) -> None:
    code, report = stripped_lab.fleet_json("--timeout", "40")
    summaries = _error_rows(report, "kubernetes-0")
    assert "taint node-role.kubernetes.io/master:NoSchedule is not tolerated" in summaries[0]
    assert report["target"]["fleet"]["unreported"].keys() == {"kubernetes-0"}
    assert all(c["status"] != "error" for c in report["checks"] if c.get("node") == "kubernetes-1")
    assert code == 2
    assert stripped_lab.leftovers() == []


def test_pod_security_restricted_namespace(lab: Lab) -> None:
    """A namespace that enforces `restricted` (not kdoctor's): the DaemonSet controller's
    FailedCreate event names what Pod Security refused, on every node's row."""
    lab.server.store.put("v1", "namespaces", {"metadata": {"name": "ops", "labels": {
        "pod-security.kubernetes.io/enforce": "restricted"}}})  # fmt: skip
    code, report = lab.fleet_json("--namespace", "ops", "--timeout", "40")
    for node in NODES:
        (first, *_rest) = _error_rows(report, node)
        assert 'violates PodSecurity "restricted:latest": host namespaces' in first
    (ports,) = _by(report, "cluster.node-ports").values()
    assert ports["status"] == "error"
    assert code == 2  # fail (the lab's overlay and DNS) outranks error
    assert lab.leftovers("ops", namespace_ours=False) == []
    assert lab.server.store.get("v1", "namespaces", None, "ops") is not None  # not ours: kept


@pytest.fixture
def unpullable_lab(tmp_path: Path) -> Iterator[Lab]:
    yield from _lab(tmp_path, pullable=lambda image: not image.startswith("kdoctor:"))


def test_image_pull_failure(unpullable_lab: Lab) -> None:
    code, report = unpullable_lab.fleet_json("--timeout", "40")
    for node in NODES:
        (first, *_rest) = _error_rows(report, node)
        assert "ErrImagePull" in first and 'Failed to pull image "kdoctor:' in first
    assert code == 2
    assert unpullable_lab.leftovers() == []


@pytest.fixture
def hanging_lab(tmp_path: Path) -> Iterator[Lab]:
    yield from _lab(tmp_path, hang_nodes={"kubernetes-2"})


def test_an_agent_that_hangs(hanging_lab: Lab) -> None:
    started = time.monotonic()
    code, report = hanging_lab.fleet_json("--timeout", "12")
    assert code == 2
    assert time.monotonic() - started < 60
    (first, *_rest) = _error_rows(report, "kubernetes-2")
    assert "did not answer" in first
    assert _by(report, "node.iptables.reject")["kubernetes-1"]["status"] == "ok"
    assert hanging_lab.leftovers() == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_interrupted_mid_run_leaves_nothing(hanging_lab: Lab, sig: signal.Signals) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "doctor", "fleet", "--kubeconfig", str(hanging_lab.kubeconfig),
         "--timeout", "120", "--format", "json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    try:
        _wait(lambda: len(hanging_lab.farm.running()) == len(NODES), 30)
        _wait(lambda: any(r.path.endswith("/exec") for r in hanging_lab.server.requests), 30)
        time.sleep(0.5)  # mid-run: kubernetes-2's exec hangs, the others are gathering
        proc.send_signal(sig)
        _stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert hanging_lab.leftovers() == []


def _wait(condition: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.1)
