"""cluster.kube-system.pods and doctor.analysis.podcause: the diagnosis, the bundles, the live API.

Unit tests feed ``diagnose`` pods as the kubelet reports them (1.6 and modern shapes); bundle
tests run the check on the seed lab fixtures, in-process and through the CLI; end-to-end tests
run the CLI against the test API server loaded from the same bundles and compare verdicts,
apply the fix and read the server's state and request log.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from checks.cluster_kube_system_pods import KubeSystemPods
from doctor.analysis.podcause import (
    CNI,
    CONTAINER_CONFIG,
    CRASH_LOOP,
    FAILED,
    IMAGE_PULL,
    NOT_READY,
    SANDBOX,
    TERMINATING,
    UNSCHEDULABLE,
    VOLUME,
    diagnose,
    events_by_pod,
    events_for,
    is_static_pod,
    pod_is_ready,
)
from doctor.core.context import CheckContext
from doctor.core.model import CheckResult, Status
from doctor.core.runner import run_one
from doctor.facts.kube import BundleCluster
from doctor.facts.node import BundleNodeFacts
from tests.conftest import BUNDLES, check_json, kdoctor, result_of

BROKEN = BUNDLES / "seed-lab-broken"
HEALTHY = BUNDLES / "seed-lab-healthy"
MODERN = BUNDLES / "modern-coredns"
MINE = ("cluster.nodes", "cluster.kube-system.pods", "cluster.network.cni")
CNI_NODE_MSG = (
    "runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady "
    "message:docker: network plugin is not ready: cni config uninitialized"
)


# ---------------------------------------------------------------- helpers


def items(bundle: Path, name: str) -> list[dict[str, Any]]:
    doc = json.loads((bundle / "cluster" / name).read_text())
    return doc["items"]  # type: ignore[no-any-return]


def pod_from(bundle: Path, name: str) -> dict[str, Any]:
    return next(p for p in items(bundle, "pods.json") if p["metadata"]["name"] == name)


def run_bundle(check: Any, bundle: Path) -> CheckResult:
    ctx = CheckContext(node=BundleNodeFacts(bundle), cluster=BundleCluster(bundle))
    return run_one(check, ctx)


def copy_bundle(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def edit_items(bundle: Path, name: str, change: Any) -> None:
    path = bundle / "cluster" / name
    doc = json.loads(path.read_text())
    doc["items"] = change(doc["items"])
    path.write_text(json.dumps(doc))


def waiting_pod(reason: str, message: str = "", **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
        ],
        "containerStatuses": [
            {
                "name": "app",
                "image": "nexus.lab:5000/team/app:1.0",
                "ready": False,
                "restartCount": 0,
                "lastState": {},
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ],
    }
    status.update(extra)
    return {
        "metadata": {"name": "p", "namespace": "kube-system", "uid": "u-1"},
        "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "x"}]},
        "status": status,
    }


def event(reason: str, message: str, etype: str = "Warning", **extra: Any) -> dict[str, Any]:
    data = {
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "kube-system", "uid": "u-1"},
        "reason": reason,
        "message": message,
        "type": etype,
        "count": 3,
        "lastTimestamp": "2024-01-01T00:00:00Z",
        "metadata": {"name": f"p.{reason}", "namespace": "kube-system"},
    }
    data.update(extra)
    return data


# ---------------------------------------------------------------- diagnose (pure)

SANDBOX_18 = (
    "Failed create pod sandbox: rpc error: code = Unknown desc = NetworkPlugin cni failed to set "
    'up pod "kube-dns-598d7bf7d4-2f5hd_kube-system" network: open /run/flannel/subnet.env: no '
    "such file or directory"
)


def test_container_creating_with_failed_create_pod_sandbox_is_cni() -> None:
    cause = diagnose(
        waiting_pod("ContainerCreating"), [event("FailedCreatePodSandBox", SANDBOX_18)]
    )
    assert cause.category == CNI and cause.is_network
    assert "network plugin (CNI)" in cause.message
    assert "open /run/flannel/subnet.env: no such file or directory" in cause.message
    assert cause.evidence["event"]["reason"] == "FailedCreatePodSandBox"
    assert cause.evidence["event"]["message"] == SANDBOX_18


def test_kubelet_16_failed_sync_create_pod_sandbox_is_cni() -> None:
    pod = pod_from(BROKEN, "kube-dns-2924299975-66p06")
    events = [
        e
        for e in items(BROKEN, "events.json")
        if e["involvedObject"]["name"] == pod["metadata"]["name"]
    ]
    cause = diagnose(pod, events_for(pod, events_by_pod(events)))
    assert cause.category == CNI
    assert cause.evidence["waiting_containers"] == ["dnsmasq", "kubedns", "sidecar"]
    assert cause.evidence["event"]["reason"] == "FailedSync"
    assert (
        'NetworkPlugin cni failed to set up pod "kube-dns-2924299975-66p06_kube-system"'
        in cause.message
    )
    assert cause.evidence["owner"] == "ReplicaSet/kube-dns-2924299975"


def test_kubelet_15_setup_network_error_with_its_typo_is_cni() -> None:
    msg = (
        'Error syncing pod, skipping: failed to "SetupNetwork" for "kube-dns-2924299975-pg7p8_kube'
        '-system" with SetupNetworkError: "Failed to setup network for pod \\"kube-dns-2924299975-'
        'pg7p8_kube-system(d3e52b68-fc28-11e6-b98a-1a8821bd5ed6)\\" using network plugins '
        '\\"cni\\": cni config unintialized; Skipping pod"'
    )
    cause = diagnose(waiting_pod("ContainerCreating"), [event("FailedSync", msg)])
    assert cause.category == CNI
    assert "cni config unintialized" in cause.message


def test_sandbox_failure_without_network_words_is_not_blamed_on_cni() -> None:
    msg = (
        "Failed create pod sandbox: rpc error: code = Unknown desc = failed pulling image "
        '"k8s.gcr.io/pause:3.1"'
    )
    cause = diagnose(waiting_pod("ContainerCreating"), [event("FailedCreatePodSandBox", msg)])
    assert cause.category == SANDBOX
    assert "pause:3.1" in cause.message


def test_container_creating_with_failed_mount() -> None:
    msg = 'MountVolume.SetUp failed for volume "config" : configmap "kube-dns" not found'
    cause = diagnose(waiting_pod("ContainerCreating"), [event("FailedMount", msg)])
    assert cause.category == VOLUME and msg in cause.message


def test_image_pull_back_off_names_image_and_registry_message() -> None:
    pod = pod_from(BROKEN, "app")
    events = events_for(pod, events_by_pod(items(BROKEN, "events.json")))
    cause = diagnose(pod, events)
    assert cause.category == IMAGE_PULL
    assert cause.evidence["image"] == "nexus.lab:5000/team/app:1.0"
    assert "unauthorized: authentication required" in cause.message
    assert cause.container == "app"


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_every_pull_reason_is_image_pull(reason: str) -> None:
    assert diagnose(waiting_pod(reason, "x")).category == IMAGE_PULL


def test_crash_loop_reports_last_termination() -> None:
    pod = pod_from(BROKEN, "weave-net-xpdvj")
    cause = diagnose(pod)
    assert cause.category == CRASH_LOOP and cause.container == "weave"
    term = cause.evidence["last_termination"]
    assert term["reason"] == "Error" and term["exit_code"] == 1
    assert "no route to host" in term["message"]
    assert "last exit: Error, exit code 1: Could not get peers" in cause.message
    assert cause.evidence["restart_count"] == 7


def test_create_container_config_error() -> None:
    cause = diagnose(waiting_pod("CreateContainerConfigError", 'secret "nexus" not found'))
    assert cause.category == CONTAINER_CONFIG
    assert 'secret "nexus" not found' in cause.message


def test_unschedulable_quotes_the_scheduler() -> None:
    msg = (
        "0/3 nodes are available: 1 node(s) had taint {node-role.kubernetes.io/master: }, "
        "2 node(s) were not ready."
    )
    pod = waiting_pod("ContainerCreating")
    pod["status"] = {
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": msg}
        ],
    }
    cause = diagnose(pod)
    assert cause.category == UNSCHEDULABLE and msg in cause.message
    assert cause.evidence["reason"] == "Unschedulable"


def test_running_not_ready_reports_unhealthy_event() -> None:
    pod = waiting_pod("x")
    pod["status"] = {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "False", "message": "containers with unready status: [app]"}
        ],
        "containerStatuses": [
            {"name": "app", "ready": False, "restartCount": 0, "state": {"running": {}}}
        ],
    }
    unhealthy = event("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503")
    cause = diagnose(pod, [unhealthy])
    assert cause.category == NOT_READY
    assert "Readiness probe failed" in cause.message
    assert cause.evidence["unready_containers"] == ["app"]


def test_failed_and_terminating_pods() -> None:
    pod = waiting_pod("x")
    pod["status"] = {
        "phase": "Failed",
        "reason": "Evicted",
        "message": "The node was low on resource: memory.",
    }
    assert diagnose(pod).category == FAILED
    pod = waiting_pod("x")
    pod["metadata"]["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    assert diagnose(pod).category == TERMINATING


def test_crash_loop_wins_over_a_container_still_creating() -> None:
    pod = waiting_pod("ContainerCreating")
    pod["status"]["containerStatuses"].append(
        {
            "name": "b",
            "ready": False,
            "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"reason": "OOMKilled", "exitCode": 137}},
        }
    )
    cause = diagnose(pod)
    assert cause.category == CRASH_LOOP and "OOMKilled, exit code 137" in cause.message


def test_events_of_an_earlier_pod_with_the_same_name_are_ignored() -> None:
    pod = waiting_pod("ContainerCreating")
    old = event("FailedCreatePodSandBox", SANDBOX_18)
    old["involvedObject"]["uid"] = "u-0"
    grouped = events_by_pod([old, event("Pulling", "pulling image", "Normal")])
    assert [e["reason"] for e in events_for(pod, grouped)] == ["Pulling"]
    assert diagnose(pod, events_for(pod, grouped)).category != CNI


def test_readiness_and_static_detection() -> None:
    assert pod_is_ready(pod_from(HEALTHY, "kube-dns-2924299975-66p06"))
    assert not pod_is_ready(pod_from(BROKEN, "kube-dns-2924299975-66p06"))
    assert not pod_is_ready(pod_from(BROKEN, "weave-net-xpdvj"))  # Running but not Ready
    assert is_static_pod(pod_from(BROKEN, "etcd-kubernetes-0"))  # config.mirror annotation
    assert is_static_pod(pod_from(MODERN, "etcd-cp-0"))  # ownerReference kind Node
    assert not is_static_pod(pod_from(BROKEN, "kube-proxy-2jzmm"))


# ---------------------------------------------------------------- bundle (in-process)


def test_broken_lab_reports_root_cause_first() -> None:
    result = run_bundle(KubeSystemPods, BROKEN)
    assert result.status is Status.FAIL
    assert result.summary.startswith("2 kube-system pods not Running/Ready")
    assert result.summary.endswith(
        "root cause: overlay network (weave-net not ready on kubernetes-2)"
    )
    assert result.summary.count("root cause") == 1
    weave, dns = result.findings
    assert weave.resource == "pod/kube-system/weave-net-xpdvj" and weave.caused_by is None
    assert weave.evidence["cause"] == CRASH_LOOP
    assert "this is the overlay network itself" in weave.message
    assert dns.resource == "pod/kube-system/kube-dns-2924299975-66p06"
    assert dns.caused_by == "cluster.network.cni"
    assert dns.evidence["cause"] == CNI
    assert (
        "consequence of the overlay network being down (weave-net not ready on kubernetes-2)"
        in dns.message
    )
    assert "getsockopt: connection refused" in dns.evidence["event"]["message"]
    assert result.fix is not None
    assert result.fix.plan() == [
        "kubectl -n kube-system delete pod weave-net-xpdvj  # DaemonSet/weave-net recreates it",
        "kubectl -n kube-system delete pod kube-dns-2924299975-66p06"
        "  # ReplicaSet/kube-dns-2924299975 recreates it",
    ]


@pytest.mark.parametrize("bundle", [HEALTHY, MODERN])
def test_healthy_bundles_are_ok(bundle: Path) -> None:
    result = run_bundle(KubeSystemPods, bundle)
    assert result.status is Status.OK, result
    assert result.summary.startswith("all ") and result.fix is None


def _stuck_bare_and_static(items_: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add a bare stuck pod and make the static scheduler crash."""
    bare = copy.deepcopy(next(p for p in items_ if p["metadata"]["name"] == "app"))
    bare["metadata"].update(name="debug-tools", namespace="kube-system", uid="bare-uid")
    bare["metadata"].pop("ownerReferences", None)
    sched = next(p for p in items_ if p["metadata"]["name"] == "kube-scheduler-kubernetes-0")
    sched["status"]["conditions"][1] = {"type": "Ready", "status": "False"}
    sched["status"]["containerStatuses"][0].update(
        ready=False,
        restartCount=4,
        state={"waiting": {"reason": "CrashLoopBackOff"}},
        lastState={
            "terminated": {
                "reason": "Error",
                "exitCode": 255,
                "message": "failed to bind 127.0.0.1:10251",
            }
        },
    )
    return [*items_, bare]


@pytest.fixture
def bare_bundle(tmp_path: Path) -> Path:
    bundle = copy_bundle(BROKEN, tmp_path / "lab")
    edit_items(bundle, "pods.json", _stuck_bare_and_static)
    return bundle


def test_bare_and_static_pods_get_no_fix_and_say_why(bare_bundle: Path) -> None:
    result = run_bundle(KubeSystemPods, bare_bundle)
    by_pod = {f.resource: f for f in result.findings}
    bare = by_pod["pod/kube-system/debug-tools"]
    static = by_pod["pod/kube-system/kube-scheduler-kubernetes-0"]
    assert bare.evidence["cause"] == IMAGE_PULL and bare.caused_by is None
    assert "a bare pod (no controller)" in bare.evidence["fix"]
    assert "a bare pod" in (bare.hint or "")
    assert "static (mirror) pod" in static.evidence["fix"]
    assert "failed to bind 127.0.0.1:10251" in static.message
    assert result.fix is not None
    plan = "\n".join(result.fix.plan())
    assert "debug-tools" not in plan and "kube-scheduler" not in plan
    assert "weave-net-xpdvj" in plan and "kube-dns-2924299975-66p06" in plan


def test_missing_events_still_diagnoses_from_status(tmp_path: Path) -> None:
    bundle = copy_bundle(BROKEN, tmp_path / "lab")
    (bundle / "cluster" / "events.json").unlink()
    result = run_bundle(KubeSystemPods, bundle)
    assert result.status is Status.FAIL
    weave = result.findings[0]
    assert weave.evidence["cause"] == CRASH_LOOP
    assert "the bundle has no cluster/events.json" in weave.evidence["events"]


def test_missing_or_broken_pods_file(tmp_path: Path) -> None:
    bundle = copy_bundle(BROKEN, tmp_path / "lab")
    (bundle / "cluster" / "pods.json").unlink()
    result = run_bundle(KubeSystemPods, bundle)
    assert result.status is Status.SKIP and "cluster/pods.json" in result.summary
    (bundle / "cluster" / "pods.json").write_text("{not json")
    result = run_bundle(KubeSystemPods, bundle)
    assert result.status is Status.ERROR and "cluster/pods.json" in result.summary


def test_without_daemonsets_no_root_cause_is_claimed(tmp_path: Path) -> None:
    bundle = copy_bundle(BROKEN, tmp_path / "lab")
    (bundle / "cluster" / "daemonsets.json").unlink()
    result = run_bundle(KubeSystemPods, bundle)
    assert result.status is Status.FAIL
    assert "root cause" not in result.summary
    assert all(f.caused_by is None for f in result.findings)
    assert "daemonsets.json" in result.findings[0].evidence["overlay"]


def test_no_overlay_at_all_is_the_root_cause(tmp_path: Path) -> None:
    bundle = copy_bundle(BROKEN, tmp_path / "lab")
    edit_items(
        bundle,
        "daemonsets.json",
        lambda ds: [d for d in ds if d["metadata"]["name"] != "weave-net"],
    )
    edit_items(
        bundle,
        "pods.json",
        lambda ps: [p for p in ps if not p["metadata"]["name"].startswith("weave-net")],
    )
    result = run_bundle(KubeSystemPods, bundle)
    (dns,) = result.findings
    assert dns.caused_by == "cluster.network.cni"
    assert "no CNI overlay DaemonSet found" in result.summary


# ---------------------------------------------------------------- bundle (CLI)


def test_cli_bundle_json_and_exit_code() -> None:
    code, report = check_json("--bundle", str(BROKEN), "--scope", "cluster")
    assert code == 2
    pods = result_of(report, "cluster.kube-system.pods")
    assert pods["status"] == "fail"
    assert pods["fix"]["safety"] == "unsafe"
    assert pods["findings"][1]["caused_by"] == "cluster.network.cni"
    assert result_of(report, "cluster.network.cni")["status"] == "fail"
    assert result_of(report, "cluster.nodes")["status"] == "fail"


def test_cli_bundle_text_shows_cause_and_root() -> None:
    proc = kdoctor("check", "--bundle", str(BROKEN), "--only", "cluster.kube-system.pods")
    assert proc.returncode == 2
    out = proc.stdout
    assert "root cause: overlay network (weave-net not ready on kubernetes-2)" in out
    assert "CrashLoopBackOff" in out and "NetworkPlugin cni failed" in out
    # On a bundle the report offers only what fix accepts there: the dry run of the plan.
    assert f"kdoctor fix cluster.kube-system.pods --dry-run --bundle {BROKEN}" in out


@pytest.mark.parametrize("bundle", [HEALTHY, MODERN])
def test_cli_healthy_bundles_exit_0(bundle: Path) -> None:
    code, report = check_json("--bundle", str(bundle), "--only", ",".join(MINE))
    assert code == 0, [(c["id"], c["status"], c["summary"]) for c in report["checks"]]
    assert {c["status"] for c in report["checks"]} == {"ok"}


# ---------------------------------------------------------------- live (test API server)

apiserver = pytest.importorskip("tests.apiserver")


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[Any, Path]]:
    with apiserver.ApiServer(BROKEN) as server:
        yield server, server.write_kubeconfig(tmp_path / "kubeconfig")


def _verdicts(report: dict[str, Any]) -> dict[str, tuple[str, str, list[tuple[str, str | None]]]]:
    return {
        c["id"]: (
            c["status"],
            c["summary"],
            [(f["message"], f.get("caused_by")) for f in c["findings"]],
        )
        for c in report["checks"]
        if c["id"] in MINE
    }


@pytest.mark.parametrize("bundle", [BROKEN, HEALTHY, MODERN], ids=lambda b: b.name)
def test_live_gives_the_same_verdicts_as_the_bundle(bundle: Path, tmp_path: Path) -> None:
    _code, from_bundle = check_json("--bundle", str(bundle), "--only", ",".join(MINE))
    with apiserver.ApiServer(bundle) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        code, from_live = check_json("--kubeconfig", str(kcfg), "--only", ",".join(MINE))
    assert _verdicts(from_live) == _verdicts(from_bundle)
    assert code == _code
    assert from_live["target"]["cluster"]["version"] == from_bundle["target"]["cluster"]["version"]


def test_collected_bundle_gives_the_live_verdicts(live: tuple[Any, Path], tmp_path: Path) -> None:
    _server, kcfg = live
    root = tmp_path / "root"
    root.mkdir()
    out = tmp_path / "collected"
    proc = kdoctor(
        "collect", str(out), "--kubeconfig", str(kcfg), "--scope", "cluster", "--root", str(root)
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    _code, from_live = check_json("--kubeconfig", str(kcfg), "--only", ",".join(MINE))
    _code, from_bundle = check_json("--bundle", str(out), "--only", ",".join(MINE))
    assert _verdicts(from_bundle) == _verdicts(from_live)
    assert {c["status"] for c in from_bundle["checks"]} == {"fail"}


def test_live_run_lists_each_thing_once_with_pagination(live: tuple[Any, Path]) -> None:
    server, kcfg = live
    # --no-probes: waiting for probe pods polls their list (and this server runs no pods).
    code, _report = check_json("--kubeconfig", str(kcfg), "--scope", "cluster", "--no-probes")
    assert code == 2
    gets = [r for r in server.requests if r.method == "GET" and r.verb == "list"]
    keys = Counter((r.path, r.raw_query) for r in gets)
    assert [k for k, n in keys.items() if n > 1] == [], "a list was fetched twice"
    # The whole kube-system pod list, read once for the three checks that need it (other
    # checks may narrow with a label selector: a different list).
    pod_lists = [
        r
        for r in gets
        if r.path == "/api/v1/namespaces/kube-system/pods"
        and not {"labelSelector", "fieldSelector"} & set(r.query)
    ]
    assert len(pod_lists) == 1 and pod_lists[0].query.get("limit") == "500"
    events = [r for r in gets if r.path == "/api/v1/namespaces/kube-system/events"]
    assert len(events) == 1 and events[0].query.get("fieldSelector") == "involvedObject.kind=Pod"
    assert all("limit" in r.query for r in gets)


def test_live_fix_deletes_only_controller_owned_stuck_pods(
    live: tuple[Any, Path], tmp_path: Path
) -> None:
    server, kcfg = live
    proc = kdoctor(
        "fix", "cluster.kube-system.pods", "--kubeconfig", str(kcfg), "--yes", "--unsafe",
        "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    deleted = [r.name for r in server.requests if r.method == "DELETE"]
    assert sorted(deleted) == ["kube-dns-2924299975-66p06", "weave-net-xpdvj"]
    names = {p["metadata"]["name"]: p for p in server.list_objects("v1", "pods", "kube-system")}
    assert "weave-net-xpdvj" not in names and "kube-dns-2924299975-66p06" not in names
    weave = [n for n in names if n.startswith("weave-net-")]
    dns = [n for n in names if n.startswith("kube-dns-2924299975-")]
    assert len(weave) == 3 and len(dns) == 1
    assert all(names[n]["status"]["phase"] == "Running" for n in weave + dns)
    # A fresh run sees the recreated pods: nothing stuck any more.
    _code, after = check_json("--kubeconfig", str(kcfg), "--only", "cluster.kube-system.pods")
    assert result_of(after, "cluster.kube-system.pods")["status"] == "ok"
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "now reports ok" in proc.stdout
    journal = (tmp_path / "state" / "journal.jsonl").read_text().splitlines()
    assert json.loads(journal[-1])["outcome"] == "applied"


def test_live_fix_never_deletes_a_bare_or_static_pod(bare_bundle: Path, tmp_path: Path) -> None:
    with apiserver.ApiServer(bare_bundle) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        proc = kdoctor(
            "fix", "cluster.kube-system.pods", "--kubeconfig", str(kcfg), "--yes", "--unsafe",
            "--state-dir", str(tmp_path / "state"),
        )  # fmt: skip
        deleted = {r.name for r in server.requests if r.method == "DELETE"}
        assert deleted == {"kube-dns-2924299975-66p06", "weave-net-xpdvj"}
        assert server.get_object("v1", "pods", "kube-system", "debug-tools") is not None
        assert (
            server.get_object("v1", "pods", "kube-system", "kube-scheduler-kubernetes-0")
            is not None
        )
    # The bare pod is still stuck, so the re-check fails and the fix is reported as such.
    assert proc.returncode == 2, proc.stdout
    assert "debug-tools" in proc.stdout


def test_live_dry_run_deletes_nothing(live: tuple[Any, Path], tmp_path: Path) -> None:
    server, kcfg = live
    proc = kdoctor(
        "fix", "cluster.kube-system.pods", "cluster.network.cni", "--kubeconfig", str(kcfg),
        "--dry-run", "--state-dir", str(tmp_path / "state"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "kubectl -n kube-system delete pod weave-net-xpdvj" in proc.stdout
    assert "dry run: nothing changed" in proc.stdout
    assert [r for r in server.requests if r.method != "GET"] == []


# ---------------------------------------------------------------- API faults


def _fault_run(server: Any, kcfg: Path, root: Path, *extra: str) -> dict[str, Any]:
    code, report = check_json(
        "--kubeconfig", str(kcfg), "--scope", "all", "--root", str(root), *extra
    )  # fmt: skip
    assert code in (2, 3)
    return report


@pytest.mark.parametrize(
    ("fault", "expect"),
    [
        ({"status": 401}, "401 Unauthorized"),
        (
            {"status": 403, "verb": "list", "resource": "pods"},
            "403 Forbidden: not allowed to list pods",
        ),
        ({"status": 500, "resource": "pods"}, "API server error 500 on list pods"),
    ],
    ids=["401", "403-list-pods", "500-pods"],
)
def test_api_faults_make_cluster_checks_error_node_checks_still_run(
    live: tuple[Any, Path], tmp_path: Path, fault: dict[str, Any], expect: str
) -> None:
    server, kcfg = live
    server.faults.set(**fault)
    root = tmp_path / "root"
    root.mkdir()
    report = _fault_run(server, kcfg, root)
    pods = result_of(report, "cluster.kube-system.pods")
    assert pods["status"] == "error" and expect in pods["summary"], pods["summary"]
    assert result_of(report, "cluster.network.cni")["status"] == "error"
    node_checks = [c for c in report["checks"] if c["scope"] == "node"]
    assert node_checks and all(
        c["status"] != "error" or "crash" not in c["summary"] for c in node_checks
    )
    if fault.get("resource") == "pods":
        # Nodes are still readable: cluster.nodes decides as usual.
        assert result_of(report, "cluster.nodes")["status"] == "fail"


def test_api_hang_with_short_timeout(live: tuple[Any, Path], tmp_path: Path) -> None:
    server, kcfg = live
    server.faults.set(hang=True, resource="pods")
    root = tmp_path / "root"
    root.mkdir()
    report = _fault_run(server, kcfg, root, "--timeout", "3")
    pods = result_of(report, "cluster.kube-system.pods")
    assert pods["status"] == "error"
    assert any(
        text in pods["summary"] for text in ("did not answer within", "timed out", "deadline")
    ), pods["summary"]
    assert result_of(report, "cluster.nodes")["status"] == "fail"
    assert [c for c in report["checks"] if c["scope"] == "node"]
