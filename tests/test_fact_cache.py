"""The run's fact cache against the test API server: each list read once, narrower asks answered
from lists already held, and a client that honours 429/Retry-After, a rate limit and the deadline.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from checks.cluster_registry_pull_secret import FULL_SCAN_PODS, RegistryPullSecret
from doctor.core.context import CheckContext
from doctor.core.model import Status
from doctor.core.runner import run_one
from doctor.facts.cluster import ClusterConfig
from doctor.facts.kube import NODES, PODS, ApiError, BundleCluster, LiveCluster
from doctor.facts.node import BundleNodeFacts
from tests.apiserver import ApiServer
from tests.apiserver.server import RequestRecord
from tests.conftest import BUNDLES, REPO, check_json

sys.path.insert(0, str(REPO / "bench"))
from scalegen import Cluster, load_into

MODERN = BUNDLES / "modern-coredns"
BROKEN = BUNDLES / "seed-lab-broken"


def live(server: ApiServer, tmp_path: Path, **kwargs: Any) -> LiveCluster:
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    return LiveCluster(ClusterConfig(kubeconfig, None), timeout=10, **kwargs)


def list_pages(server: ApiServer) -> list[RequestRecord]:
    return [r for r in server.requests if r.verb == "list"]


def first_pages(records: list[RequestRecord]) -> Counter[str]:
    """How often each distinct list (path + selectors) was started (a first page)."""
    return Counter(
        f"{r.path}?{r.query.get('labelSelector', '')}&{r.query.get('fieldSelector', '')}"
        for r in records
        if "continue" not in r.query
    )


def cluster_verdicts(report: dict[str, Any]) -> dict[str, Any]:
    return {
        c["id"]: (c["status"], [f["message"] for f in c["findings"]])
        for c in report["checks"]
        if c["id"] != "cluster.dns.pod-to-pod"
    }


@pytest.mark.parametrize("bundle", [MODERN, BROKEN], ids=lambda b: b.name)
def test_a_whole_run_reads_each_list_once_and_names_the_check(tmp_path: Path, bundle: Path) -> None:
    with ApiServer(bundle) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        _code, report = check_json(
            "--scope", "cluster", "--no-probes", "--kubeconfig", str(kubeconfig)
        )
        lists = list_pages(server)
        everything = server.requests
    started = first_pages(lists)
    assert started and all(n == 1 for n in started.values()), started
    # kube-dns and kube-proxy pods come from the kube-system list every run reads whole.
    system_pods = [r for r in lists if r.path == "/api/v1/namespaces/kube-system/pods"]
    assert system_pods and not any("labelSelector" in r.query for r in system_pods)
    assert all(r.user_agent.startswith("kdoctor/") for r in everything)
    named = {r.user_agent.split("(check ", 1)[1].rstrip(")") for r in lists}
    assert named <= {c["id"] for c in report["checks"]}, named
    assert all(isinstance(c["duration_ms"], int) for c in report["checks"])
    # The bundle reader gives the same answers from the same objects.
    _code, offline = check_json("--scope", "cluster", "--no-probes", "--bundle", str(bundle))
    assert cluster_verdicts(report) == cluster_verdicts(offline)


def test_a_narrower_ask_is_selected_from_the_held_list_as_the_server_would(
    tmp_path: Path,
) -> None:
    asks: list[tuple[str | None, str | None, str | None]] = [
        ("kube-system", "k8s-app=kube-dns", None),
        ("kube-system", "k8s-app in (kube-proxy,calico-node)", None),
        ("kube-system", None, "status.phase=Running"),
        ("kube-system", "k8s-app!=kube-dns", "spec.nodeName=worker-1"),
    ]
    with ApiServer(MODERN) as server:
        narrow = live(server, tmp_path)
        from_server = [narrow.list_objects(PODS, *ask) for ask in asks]
        server.clear_requests()
        shared = live(server, tmp_path)
        shared.expect(["kube-system/pods"])
        from_cache = [shared.list_objects(PODS, *ask) for ask in asks]
        pods_requests = [r for r in list_pages(server) if r.resource == "pods"]
    assert [len(x) for x in from_server] == [len(x) for x in from_cache]
    assert all(len(x) > 0 for x in from_server)
    assert from_server == from_cache
    assert [r.path for r in pods_requests] == ["/api/v1/namespaces/kube-system/pods"]
    assert "labelSelector" not in pods_requests[0].query
    offline = BundleCluster(MODERN)
    assert [offline.list_objects(PODS, *ask) for ask in asks] == from_cache


def test_listed_objects_are_slimmed_the_same_live_and_from_a_bundle(tmp_path: Path) -> None:
    generated = Cluster(nodes=6, pods=30)
    server = ApiServer(None)
    load_into(server, generated)
    bundle = write_bundle(tmp_path / "bundle", generated)
    with server:
        nodes = live(server, tmp_path).list_objects(NODES)
    assert generated.objects[("v1", "nodes")][0]["status"]["images"]  # the server has them
    assert all("images" not in n["status"] for n in nodes)
    assert all("managedFields" not in n["metadata"] for n in nodes)
    assert nodes == BundleCluster(bundle).list_objects(NODES)


def test_count_is_one_small_request_and_agrees_with_the_bundle(tmp_path: Path) -> None:
    with ApiServer(MODERN) as server:
        cluster = live(server, tmp_path)
        server.clear_requests()
        total = cluster.count(PODS)
        in_system = cluster.count(PODS, "kube-system")
        queries = [r.query for r in server.requests]
    assert queries == [{"limit": "1"}, {"limit": "1"}]
    offline = BundleCluster(MODERN)
    assert total == offline.count(PODS) == len(offline.list_objects(PODS)) > 1
    assert in_system == offline.count(PODS, "kube-system")


def test_small_lists_are_watch_cache_reads_and_pods_and_nodes_page(tmp_path: Path) -> None:
    with ApiServer(MODERN) as server:
        cluster = live(server, tmp_path)
        server.clear_requests()
        from doctor.facts.kube import DAEMONSETS

        cluster.list_objects(DAEMONSETS)
        cluster.list_objects(NODES)
        cluster.list_objects(PODS, field_selector="status.phase=Pending")
        by_path = {(r.path, r.query.get("fieldSelector")): r.query for r in server.requests}
    assert by_path[("/apis/apps/v1/daemonsets", None)]["resourceVersion"] == "0"
    assert "resourceVersion" not in by_path[("/api/v1/nodes", None)]
    assert by_path[("/api/v1/pods", "status.phase=Pending")]["resourceVersion"] == "0"


# -- a good API citizen -----------------------------------------------------------------------


def test_429_is_retried_after_its_retry_after(tmp_path: Path) -> None:
    with ApiServer(MODERN) as server:
        cluster = live(server, tmp_path)
        server.faults.set(status=429, retry_after=1, verb="list", resource="nodes", times=2)
        started = time.monotonic()
        nodes = cluster.list_objects(NODES)
        elapsed = time.monotonic() - started
        tries = [r for r in server.requests if r.path == "/api/v1/nodes"]
    assert len(nodes) == 3
    assert [r.status for r in tries] == [429, 429, 200]
    assert tries[1].time - tries[0].time >= 0.9 and tries[2].time - tries[1].time >= 0.9
    assert elapsed < 5


def test_a_retry_after_past_the_deadline_is_an_error_at_once(tmp_path: Path) -> None:
    with ApiServer(MODERN) as server:
        cluster = live(server, tmp_path, deadline=time.monotonic() + 3)
        server.faults.set(status=429, retry_after=10, verb="list", resource="nodes")
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            cluster.list_objects(NODES)
        assert time.monotonic() - started < 1.5
        assert len([r for r in server.requests if r.path == "/api/v1/nodes"]) == 1
    assert "429" in str(caught.value) and "deadline" in str(caught.value)


def test_the_cli_reports_a_server_that_keeps_refusing_as_error(tmp_path: Path) -> None:
    with ApiServer(MODERN) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        server.faults.set(status=429, retry_after=60, verb="list", resource="nodes")
        code, report = check_json("--only", "cluster.nodes", "--kubeconfig", str(kubeconfig))
        tries = [r for r in server.requests if r.path == "/api/v1/nodes"]
    result = report["checks"][0]
    assert code == 3 and result["status"] == "error"
    assert "429" in result["summary"], result["summary"]
    assert len(tries) == 1  # Retry-After 60 s is past what kdoctor waits for: no hammering


def test_the_deadline_bounds_every_request_together(tmp_path: Path) -> None:
    with ApiServer(MODERN) as server:
        cluster = live(server, tmp_path, deadline=time.monotonic() + 1.5)
        server.faults.set(delay=5, verb="list", resource="nodes")
        started = time.monotonic()
        with pytest.raises(ApiError) as caught:
            cluster.list_objects(NODES)
        assert time.monotonic() - started < 2.5
        assert "deadline" in str(caught.value)
        sent = len(server.requests)
        with pytest.raises(ApiError, match="deadline"):
            cluster.list_objects(PODS, "kube-system")
        assert len(server.requests) == sent  # past the deadline nothing is sent


def test_the_run_timeout_ends_a_check_run_on_a_slow_server(tmp_path: Path) -> None:
    with ApiServer(MODERN) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        server.faults.set(delay=30, verb="list")
        started = time.monotonic()
        code, report = check_json(
            "--scope", "cluster", "--no-probes", "--timeout", "3", "--kubeconfig", str(kubeconfig)
        )
        elapsed = time.monotonic() - started
    assert elapsed < 10
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert statuses["cluster.nodes"] == "error" and code == 3


def test_the_rate_limit_spaces_requests_beyond_the_burst(tmp_path: Path) -> None:
    with ApiServer(MODERN) as server:
        cluster = live(server, tmp_path, qps=10, burst=2)
        server.clear_requests()
        started = time.monotonic()
        for _ in range(8):
            cluster.request("GET", "/version")
        elapsed = time.monotonic() - started
        stamps = [r.time for r in server.requests]
    assert len(stamps) == 8
    assert elapsed >= 0.55  # 2 at once, then 6 at 10 per second
    assert stamps[-1] - stamps[1] >= 0.5


def test_the_default_rate_limit_does_not_slow_a_run(tmp_path: Path) -> None:
    with ApiServer(MODERN) as server:
        cluster = live(server, tmp_path)
        started = time.monotonic()
        for _ in range(40):
            cluster.request("GET", "/version")
    assert time.monotonic() - started < 2


# -- a large cluster: the pull-secret check reads what can be failing -------------------------


def write_bundle(out: Path, generated: Cluster) -> Path:
    """The generated cluster as a bundle (what `kdoctor collect` writes)."""
    cluster = out / "cluster"
    cluster.mkdir(parents=True)
    (out / "kdoctor-bundle.json").write_text(
        json.dumps({"format": "kdoctor-bundle", "version": 1, "node": "node-0000"})
    )
    (cluster / "version.json").write_text(json.dumps({"serverVersion": {"gitVersion": "v1.29.4"}}))
    for (_api, resource), objs in generated.objects.items():
        if resource != "namespaces":
            (cluster / f"{resource}.json").write_text(json.dumps({"kind": "List", "items": objs}))
    return out


def test_in_a_large_cluster_pull_secret_reads_pending_and_kube_system_pods(
    tmp_path: Path,
) -> None:
    generated = Cluster(nodes=8, pods=FULL_SCAN_PODS + 200)
    server = ApiServer(None)
    load_into(server, generated)
    bundle = write_bundle(tmp_path / "bundle", generated)
    with server:
        cluster = live(server, tmp_path)
        server.clear_requests()
        result = run_one(
            RegistryPullSecret, CheckContext(node=BundleNodeFacts(bundle), cluster=cluster)
        )
        pods = [r for r in server.requests if r.resource == "pods"]
    assert result.status is Status.FAIL
    assert "billing" in result.findings[0].message
    assert "names only Docker Hub" in result.findings[0].message
    assert [(r.path, r.query.get("fieldSelector"), r.query.get("limit")) for r in pods] == [
        ("/api/v1/pods", None, "1"),
        ("/api/v1/pods", "status.phase=Pending", "500"),
        ("/api/v1/namespaces/kube-system/pods", None, "500"),
    ]
    assert result.evidence["pods_read"]["pods_in_cluster"] == FULL_SCAN_PODS + 200
    offline = run_one(
        RegistryPullSecret,
        CheckContext(node=BundleNodeFacts(bundle), cluster=BundleCluster(bundle)),
    )
    assert [f.to_json() for f in offline.findings] == [f.to_json() for f in result.findings]
    assert offline.evidence == result.evidence and offline.summary == result.summary


def test_equal_template_parts_are_held_once_and_unequal_ones_apart(tmp_path: Path) -> None:
    import gc

    with ApiServer(MODERN) as server:
        server.store.mutate(
            "v1", "pods", "kube-system", "kube-proxy-c2v7m",
            lambda pod: pod["spec"]["containers"][0]["command"].append("--v=4"),
        )  # fmt: skip
        pods = live(server, tmp_path).list_objects(PODS, "kube-system")
    assert gc.isenabled()  # paused while pages are parsed, never left off
    proxies = {
        p["metadata"]["name"]: p for p in pods if p["metadata"]["name"].startswith("kube-proxy")
    }
    a, b, c = (proxies[n]["spec"]["containers"] for n in sorted(proxies))
    assert a is c and a == c  # kube-proxy-8xkqz and -tq5wn: the DaemonSet's template, once
    assert b is not a and b[0]["command"][-1] == "--v=4"
    assert all("readinessProbe" not in c for p in pods for c in p["spec"]["containers"])
