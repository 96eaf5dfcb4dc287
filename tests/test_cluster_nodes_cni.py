"""cluster.nodes and cluster.network.cni: node conditions, the overlay per node, the fix."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checks.cluster_network_cni import NetworkCni
from checks.cluster_nodes import ClusterNodes, node_findings
from doctor.analysis.podcause import cni_short_reason, compute_overlay
from doctor.core.model import Severity, Status
from tests.conftest import BUNDLES, check_json, kdoctor, result_of
from tests.test_cluster_pods import (
    BROKEN,
    CNI_NODE_MSG,
    HEALTHY,
    MODERN,
    copy_bundle,
    edit_items,
    items,
    run_bundle,
)


def node(
    name: str, *conditions: dict[str, Any], taints: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": taints} if taints else {}
    return {
        "metadata": {
            "name": name,
            "resourceVersion": "7",
            "labels": {"kubernetes.io/hostname": name},
        },
        "spec": spec,
        "status": {"conditions": list(conditions)},
    }


READY = {
    "type": "Ready",
    "status": "True",
    "reason": "KubeletReady",
    "message": "kubelet is posting ready status",
}


# ---------------------------------------------------------------- cluster.nodes (pure)


def test_ready_node_has_no_finding() -> None:
    assert node_findings(node("a", READY)) == []


def test_not_ready_quotes_the_kubelet_verbatim() -> None:
    cond = {
        "type": "Ready",
        "status": "False",
        "reason": "KubeletNotReady",
        "message": CNI_NODE_MSG,
    }
    (finding,) = node_findings(node("kubernetes-2", cond))
    assert finding.severity is Severity.FAIL
    assert finding.evidence["message"] == CNI_NODE_MSG
    assert CNI_NODE_MSG in finding.message
    assert "cluster.network.cni" in (finding.hint or "")
    assert cni_short_reason(CNI_NODE_MSG) == "network plugin is not ready: cni config uninitialized"


def test_containerd_cni_message_is_recognised() -> None:
    msg = (
        "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
        "message:Network plugin returns error: cni plugin not initialized"
    )
    cond = {"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": msg}
    (finding,) = node_findings(node("w1", cond))
    assert "cluster.network.cni" in (finding.hint or "")
    assert cni_short_reason(msg) == "Network plugin returns error: cni plugin not initialized"


def test_no_ready_condition_is_warn_unknown() -> None:
    (finding,) = node_findings(node("a"))
    assert finding.severity is Severity.WARN and "state is unknown" in finding.message


def test_ready_unknown_is_fail() -> None:
    cond = {
        "type": "Ready",
        "status": "Unknown",
        "reason": "NodeStatusUnknown",
        "message": "Kubelet stopped posting node status.",
    }
    (finding,) = node_findings(node("a", cond))
    assert (
        finding.severity is Severity.FAIL
        and "Kubelet stopped posting node status." in finding.message
    )


def test_network_unavailable_and_pressure() -> None:
    net = {
        "type": "NetworkUnavailable",
        "status": "True",
        "reason": "NoRouteCreated",
        "message": "Node created without a route",
    }
    disk = {
        "type": "DiskPressure",
        "status": "True",
        "reason": "KubeletHasDiskPressure",
        "message": "kubelet has disk pressure",
    }
    findings = node_findings(node("a", READY, net, disk))
    assert [f.severity for f in findings] == [Severity.FAIL, Severity.WARN]
    assert (
        "NetworkUnavailable=True (NoRouteCreated): Node created without a route"
        in findings[0].message
    )
    assert findings[1].evidence["condition"] == "DiskPressure"
    ok_net = dict(net, status="False", reason="WeaveIsUp", message="Weave pod has set this")
    assert node_findings(node("a", READY, ok_net)) == []


# ---------------------------------------------------------------- cluster.nodes (bundles)


def test_nodes_on_the_bundles() -> None:
    broken = run_bundle(ClusterNodes, BROKEN)
    assert broken.status is Status.FAIL
    assert broken.summary == (
        "1 of 3 nodes NotReady: kubernetes-2 "
        "(network plugin is not ready: cni config uninitialized)"
    )
    (finding,) = broken.findings
    assert finding.resource == "node/kubernetes-2" and finding.evidence["message"] == CNI_NODE_MSG
    assert broken.fix is None
    for bundle in (HEALTHY, MODERN):
        result = run_bundle(ClusterNodes, bundle)
        assert result.status is Status.OK and result.summary == "all 3 nodes Ready"


def test_nodes_missing_file_skips_naming_it(tmp_path: Path) -> None:
    bundle = copy_bundle(BROKEN, tmp_path / "lab")
    (bundle / "cluster" / "nodes.json").unlink()
    result = run_bundle(ClusterNodes, bundle)
    assert result.status is Status.SKIP and "cluster/nodes.json" in result.summary


def test_no_nodes_is_fail(tmp_path: Path) -> None:
    bundle = copy_bundle(HEALTHY, tmp_path / "lab")
    edit_items(bundle, "nodes.json", lambda _items: [])
    assert run_bundle(ClusterNodes, bundle).status is Status.FAIL


# ---------------------------------------------------------------- the overlay (pure)


def _lab() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    return items(BROKEN, "daemonsets.json"), items(BROKEN, "pods.json"), items(BROKEN, "nodes.json")


def test_overlay_names_the_node_without_a_ready_pod() -> None:
    daemonsets, pods, nodes = _lab()
    state = compute_overlay(daemonsets, pods, nodes)
    (weave,) = state.daemonsets  # kube-proxy is not an overlay
    assert weave.name == "weave-net" and weave.kind.title == "Weave Net"
    assert [(n.node, n.pod_name) for n in weave.not_ready_nodes] == [
        ("kubernetes-2", "weave-net-xpdvj")
    ]
    assert (weave.desired, weave.ready, weave.available) == (3, 2, 2)
    assert state.down and state.root_cause() == "weave-net not ready on kubernetes-2"
    assert state.cni_not_ready_nodes == {"kubernetes-2": CNI_NODE_MSG}


def test_overlay_node_without_any_pod() -> None:
    daemonsets, pods, nodes = _lab()
    pods = [p for p in pods if p["metadata"]["name"] != "weave-net-xpdvj"]
    (weave,) = compute_overlay(daemonsets, pods, nodes).daemonsets
    (missing,) = weave.not_ready_nodes
    assert missing.node == "kubernetes-2" and missing.pod is None


def test_overlay_respects_taints_and_node_selector() -> None:
    daemonsets, pods, nodes = _lab()
    nodes = copy.deepcopy(nodes)
    nodes.append(
        node("gpu-1", READY, taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}])
    )
    nodes.append(node("win-1", READY))
    nodes[-1]["metadata"]["labels"]["kubernetes.io/os"] = "windows"
    daemonsets = copy.deepcopy(daemonsets)
    weave = next(d for d in daemonsets if d["metadata"]["name"] == "weave-net")
    weave["spec"]["template"]["spec"]["nodeSelector"] = {"beta.kubernetes.io/os": "linux"}
    for n in nodes[:3]:
        n["metadata"]["labels"]["beta.kubernetes.io/os"] = "linux"
    nodes[-2]["metadata"]["labels"]["beta.kubernetes.io/os"] = "linux"
    (state,) = compute_overlay(daemonsets, pods, nodes).daemonsets
    # gpu-1: tainted and not tolerated; win-1: not selected. Neither is expected to run weave.
    assert sorted(n.node for n in state.nodes) == ["kubernetes-0", "kubernetes-1", "kubernetes-2"]


def test_modern_multi_cni_is_healthy() -> None:
    state = compute_overlay(
        items(MODERN, "daemonsets.json"), items(MODERN, "pods.json"), items(MODERN, "nodes.json")
    )
    assert sorted(ds.name for ds in state.daemonsets) == ["calico-node", "weave-net"]
    assert all(ds.healthy and len(ds.nodes) == 3 for ds in state.daemonsets)
    assert not state.down


# ---------------------------------------------------------------- cluster.network.cni (bundles)


def test_cni_on_the_broken_lab() -> None:
    result = run_bundle(NetworkCni, BROKEN)
    assert result.status is Status.FAIL
    assert result.summary == "weave-net not ready on kubernetes-2 (1 of 3 nodes)"
    (finding,) = result.findings
    assert finding.resource == "pod/kube-system/weave-net-xpdvj"
    assert finding.evidence["node"] == "kubernetes-2"
    assert finding.evidence["daemonset_status"]["numberReady"] == 2
    assert finding.evidence["last_termination"]["exit_code"] == 1
    assert "CrashLoopBackOff" in finding.message and "no route to host" in finding.message
    assert result.fix is not None
    assert result.fix.plan() == [
        "kubectl -n kube-system delete pod weave-net-xpdvj  # DaemonSet/weave-net recreates it"
    ]


@pytest.mark.parametrize("bundle", [HEALTHY, MODERN], ids=lambda b: b.name)
def test_cni_ok_on_healthy_bundles(bundle: Path) -> None:
    result = run_bundle(NetworkCni, bundle)
    assert result.status is Status.OK and result.fix is None
    assert "Weave Net (weave-net) ready on all 3 nodes" in result.summary
    if bundle == MODERN:
        assert "Calico (calico-node) ready on all 3 nodes" in result.summary


def test_no_overlay_is_fail_with_what_was_looked_for(tmp_path: Path) -> None:
    bundle = copy_bundle(BROKEN, tmp_path / "lab")
    edit_items(
        bundle,
        "daemonsets.json",
        lambda ds: [d for d in ds if d["metadata"]["name"] != "weave-net"],
    )
    result = run_bundle(NetworkCni, bundle)
    assert result.status is Status.FAIL and result.summary == "no CNI overlay DaemonSet found"
    (finding,) = result.findings
    assert any("weave-net" in x for x in finding.evidence["looked_for"])
    assert any("calico-node" in x for x in finding.evidence["looked_for"])
    assert finding.evidence["daemonsets_seen"] == ["kube-system/kube-proxy"]
    assert result.fix is None


def test_flannel_found_by_label_in_its_own_namespace(tmp_path: Path) -> None:
    bundle = copy_bundle(HEALTHY, tmp_path / "lab")

    def rename(daemonsets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for d in daemonsets:
            if d["metadata"]["name"] == "weave-net":
                d["metadata"]["name"] = "my-overlay"
                d["metadata"]["namespace"] = "kube-flannel"
                d["metadata"]["labels"] = {"app": "flannel"}
                d["spec"]["template"]["metadata"]["labels"] = {"app": "flannel"}
        return daemonsets

    def move(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for p in pods:
            if p["metadata"]["name"].startswith("weave-net"):
                p["metadata"]["namespace"] = "kube-flannel"
                p["metadata"]["labels"] = {"app": "flannel"}
                p["metadata"]["ownerReferences"][0]["name"] = "my-overlay"
        return pods

    edit_items(bundle, "daemonsets.json", rename)
    edit_items(bundle, "pods.json", move)
    result = run_bundle(NetworkCni, bundle)
    assert result.status is Status.OK, result.findings
    assert result.summary == "Flannel (my-overlay) ready on all 3 nodes"


def test_status_counters_lagging_is_warn(tmp_path: Path) -> None:
    bundle = copy_bundle(HEALTHY, tmp_path / "lab")

    def lag(daemonsets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for d in daemonsets:
            if d["metadata"]["name"] == "weave-net":
                d["status"]["numberReady"] = 2
        return daemonsets

    edit_items(bundle, "daemonsets.json", lag)
    result = run_bundle(NetworkCni, bundle)
    assert result.status is Status.WARN and "status may lag" in result.findings[0].message


def test_cni_missing_daemonsets_file_skips(tmp_path: Path) -> None:
    bundle = copy_bundle(BROKEN, tmp_path / "lab")
    (bundle / "cluster" / "daemonsets.json").unlink()
    result = run_bundle(NetworkCni, bundle)
    assert result.status is Status.SKIP and "cluster/daemonsets.json" in result.summary


def test_cli_text_and_explain() -> None:
    proc = kdoctor("check", "--bundle", str(BROKEN), "--only", "cluster.network.cni,cluster.nodes")
    assert proc.returncode == 2
    assert "weave-net not ready on kubernetes-2" in proc.stdout
    assert "cni config uninitialized" in proc.stdout
    doc = kdoctor("explain", "cluster.network.cni")
    assert doc.returncode == 0 and "## Fix safety" in doc.stdout


# ---------------------------------------------------------------- live fix

apiserver = pytest.importorskip("tests.apiserver")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    with apiserver.ApiServer(BROKEN) as server:
        yield server, server.write_kubeconfig(tmp_path / "kubeconfig")


def test_live_cni_fix_deletes_exactly_the_not_ready_overlay_pod(
    live: tuple[Any, Path], tmp_path: Path
) -> None:
    server, kcfg = live
    proc = kdoctor(
        "fix", "cluster.network.cni", "--kubeconfig", str(kcfg), "--yes", "--unsafe",
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    deletes = [r for r in server.requests if r.method == "DELETE"]
    assert [r.name for r in deletes] == ["weave-net-xpdvj"]
    assert json.loads(deletes[0].body)["preconditions"]["uid"]  # preconditioned on the uid
    weave = [
        p
        for p in server.list_objects("v1", "pods", "kube-system")
        if p["metadata"]["name"].startswith("weave-net-")
    ]
    assert len(weave) == 3 and "weave-net-xpdvj" not in {p["metadata"]["name"] for p in weave}
    new = next(p for p in weave if p["spec"]["nodeName"] == "kubernetes-2")
    assert new["status"]["phase"] == "Running"
    # A fresh run: every node has a ready weave pod. The test server does not recompute the
    # DaemonSet's status counters and kubernetes-2 keeps its NotReady condition: both warn.
    _code, after = check_json("--kubeconfig", str(kcfg), "--only", "cluster.network.cni")
    cni = result_of(after, "cluster.network.cni")
    assert cni["status"] == "warn", cni
    assert all(f["severity"] == "warn" for f in cni["findings"])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_live_cni_dry_run_and_refusal_without_unsafe(
    live: tuple[Any, Path], tmp_path: Path
) -> None:
    server, kcfg = live
    dry = kdoctor(
        "fix",
        "cluster.network.cni",
        "--kubeconfig",
        str(kcfg),
        "--dry-run",
        "--state-dir",
        str(tmp_path / "s"),
    )
    assert dry.returncode == 0 and "kubectl -n kube-system delete pod weave-net-xpdvj" in dry.stdout
    refused = kdoctor(
        "fix",
        "cluster.network.cni",
        "--kubeconfig",
        str(kcfg),
        "--yes",
        "--state-dir",
        str(tmp_path / "s"),
    )
    assert refused.returncode == 1 and "add --unsafe" in refused.stdout
    assert [r for r in server.requests if r.method == "DELETE"] == []


def test_bundle_fixtures_are_kubectl_shaped() -> None:
    for bundle in (BROKEN, HEALTHY, MODERN):
        manifest = json.loads((bundle / "kdoctor-bundle.json").read_text())
        assert manifest["format"] == "kdoctor-bundle" and manifest["version"] == 1
        version = json.loads((bundle / "cluster" / "version.json").read_text())
        assert version["serverVersion"]["gitVersion"].startswith("v1.")
        for name in ("nodes", "pods", "events", "daemonsets", "replicasets"):
            doc = json.loads((bundle / "cluster" / f"{name}.json").read_text())
            assert doc["kind"] == "List" and doc["apiVersion"] == "v1"
            for item in doc["items"]:
                meta = item["metadata"]
                assert (
                    item["kind"] and item["apiVersion"] and meta["uid"] and meta["resourceVersion"]
                )
                assert meta["creationTimestamp"]
                for ref in meta.get("ownerReferences", []):
                    assert ref["controller"] is True and ref["uid"]
    assert BUNDLES.is_dir()
