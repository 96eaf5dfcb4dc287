"""cluster.dns.kube-dns (API side): the DNS Deployment, Service, endpoints and logs.

Bundle tests for every verdict on the lab fixtures (kube-dns on v1.6, CoreDNS on v1.29) and
the dns-* bundles (forwarding loop, RBAC refusal, Service-IP timeouts); unit tests for the
log classification and dating; end-to-end runs against the test API server.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from checks import cluster_dns_kube_dns as dns
from checks.cluster_dns_kube_dns import KubeDns
from doctor.core.context import Options
from doctor.core.model import CheckResult, Severity, Status
from tests.conftest import BUNDLES, check_json, kdoctor, result_of, run_on_bundle
from tests.conftest import copy_bundle as variant
from tests.conftest import edit_bundle as edit

ID = "cluster.dns.kube-dns"
HEALTHY = BUNDLES / "seed-lab-healthy"
BROKEN = BUNDLES / "seed-lab-broken"
MODERN = BUNDLES / "modern-coredns"
ROUTING = BUNDLES / "kube-proxy-seed-routing"
LOOP = BUNDLES / "dns-coredns-loop"
FORBIDDEN = BUNDLES / "dns-coredns-forbidden"
TIMEOUT = BUNDLES / "dns-coredns-timeout"


def run_check(bundle: Path, proxy_mode: str | None = None) -> CheckResult:
    return run_on_bundle(KubeDns, bundle, Options(proxy_mode=proxy_mode))


def kube_dns_service(items: list[dict[str, Any]]) -> dict[str, Any]:
    return next(s for s in items if s["metadata"]["name"] == "kube-dns")


# ---------------------------------------------------------------- units


def test_klog_lines_are_dated_with_the_container_start_year() -> None:
    start = datetime(2017, 4, 10, 9, 41, tzinfo=UTC)
    line = "E0410 09:42:01.515790       1 reflector.go:199] … dial tcp 10.96.0.1:443: i/o timeout"
    assert dns.line_time(line, start) == datetime(2017, 4, 10, 9, 42, 1, 515790, tzinfo=UTC)
    # a container started on New Year's Eve logging on January 1st
    late = datetime(2016, 12, 31, 23, 0, tzinfo=UTC)
    assert dns.line_time("I0101 00:10:00.000000 1 x.go:1] y", late) == datetime(
        2017, 1, 1, 0, 10, tzinfo=UTC
    )
    assert dns.line_time("[ERROR] plugin/kubernetes: …", start) is None
    assert dns.line_time("2024-05-02T08:00:30.123456789Z [ERROR] x", None) is not None


@pytest.mark.parametrize(
    ("line", "kind", "target"),
    [
        ('[FATAL] plugin/loop: Loop (127.0.0.1:46743 -> :53) detected for zone ".", see …',
         dns.LOOP, None),
        ('… endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:kube-system:'
         'coredns" cannot list resource …', dns.FORBIDDEN, None),
        ("E0410 … Get https://10.96.0.1:443/api/v1/services?resourceVersion=0: dial tcp "
         "10.96.0.1:443: i/o timeout", dns.SERVICE_TIMEOUT, "10.96.0.1:443"),
        # an API URL on 443 is the kubernetes Service even when its IP is not known
        ("Get https://10.100.0.1:443/api/v1/namespaces: dial tcp 10.100.0.1:443: i/o timeout",
         dns.SERVICE_TIMEOUT, "10.100.0.1:443"),
        ("[ERROR] plugin/errors: 2 example.org. A: read udp 10.32.0.2:41863->8.8.8.8:53: "
         "i/o timeout", dns.UPSTREAM_TIMEOUT, None),
        ("dial tcp 100.64.0.1:443: getsockopt: no route to host. Sleeping 1s before retrying.",
         dns.NO_ROUTE, "100.64.0.1:443"),
        ("[INFO] plugin/reload: Running configuration SHA512 = 591cf3", None, None),
    ],
)  # fmt: skip
def test_log_lines_are_classified(line: str, kind: str | None, target: str | None) -> None:
    got = dns._classify(line, {"10.96.0.1", "10.96.0.10"})
    assert got == ((kind, target) if kind else None)


# ---------------------------------------------------------------- bundles


def test_seed_lab_broken_kube_dns_stuck_because_of_the_cni() -> None:
    result = run_check(BROKEN)
    assert result.status is Status.FAIL
    assert result.fix is None  # kube-proxy's mode does not help a pod without a sandbox
    pod, deployment, endpoints = result.findings
    assert pod.resource == "pod/kube-system/kube-dns-2924299975-66p06"
    assert pod.caused_by == "cluster.network.cni"
    assert "NetworkPlugin cni failed" in pod.message
    assert pod.evidence["overlay"] == "weave-net not ready on kubernetes-2"
    assert pod.evidence["state"].startswith("Pending (ContainerCreating), 0/3 ready")
    assert deployment.message == "Deployment kube-dns: 0/1 replicas ready and available"
    assert deployment.caused_by == "cluster.network.cni"
    assert endpoints.message == "Service kube-dns has no ready endpoint"
    assert endpoints.caused_by == "cluster.network.cni"
    assert result.summary.endswith("(+2 more); live DNS queries not run (bundle)")


def test_seed_lab_healthy_ok() -> None:
    result = run_check(HEALTHY)
    assert result.status is Status.OK, result
    assert result.summary == (
        "1 DNS pod(s) ready, Service kube-dns 10.96.0.10 53/UDP+TCP, 1 ready endpoint(s), no "
        "known error in 3 container log(s); live DNS queries not run (bundle)"
    )


def test_modern_coredns_ok_from_endpointslices(tmp_path: Path) -> None:
    result = run_check(MODERN)
    assert result.status is Status.OK, result
    assert "2 DNS pod(s) ready" in result.summary and "2 ready endpoint(s)" in result.summary
    # The slices are what counts from v1.21: a not-ready slice endpoint is not ready.
    bundle = variant(MODERN, tmp_path)

    def one_not_ready(items: list[dict[str, Any]]) -> None:
        sl = next(s for s in items if s["metadata"]["name"].startswith("kube-dns-"))
        sl["endpoints"][1]["conditions"]["ready"] = False

    edit(bundle, "endpointslices", one_not_ready)
    result = run_check(bundle)
    assert result.status is Status.WARN
    (finding,) = result.findings
    assert finding.evidence["source"] == "endpointslices -l kubernetes.io/service-name=kube-dns"
    assert finding.evidence["not_ready"] == ["coredns-76f75df574-qhx4c (10.36.0.2)"]


def test_coredns_loop_is_quoted() -> None:
    result = run_check(LOOP)
    assert result.status is Status.FAIL
    loops = [f for f in result.findings if "forwarding loop" in f.message]
    assert len(loops) == 2
    line = loops[0].evidence["log_line"]
    assert line.startswith(
        '[FATAL] plugin/loop: Loop (127.0.0.1:46743 -> :53) detected for zone "."'
    )
    assert "resolv-conf" in (loops[0].hint or "")
    assert result.fix is None
    crashing = [f for f in result.findings if "CrashLoopBackOff" in f.message]
    assert len(crashing) == 2


def test_coredns_forbidden_and_upstream_timeout() -> None:
    result = run_check(FORBIDDEN)
    assert result.status is Status.FAIL
    forbidden, upstream = result.findings
    assert forbidden.severity is Severity.FAIL and "refused by the API (RBAC)" in forbidden.message
    assert 'cannot list resource "endpointslices"' in forbidden.evidence["log_line"]
    assert forbidden.evidence["matching_lines"] == 2
    assert "system:coredns" in (forbidden.hint or "")
    assert (
        upstream.severity is Severity.WARN
        and "8.8.8.8:53: i/o timeout" in upstream.evidence["log_line"]
    )
    assert result.fix is None


def test_service_ip_timeouts_point_at_kube_proxy_and_offer_its_fix() -> None:
    result = run_check(TIMEOUT)
    assert result.status is Status.FAIL
    assert {f.caused_by for f in result.findings} == {"cluster.kube-proxy"}
    routing = [f for f in result.findings if "Service routing (kube-proxy) is broken" in f.message]
    assert len(routing) == 2 and routing[0].evidence["unreachable"] == "10.96.0.1:443"
    assert result.fix is not None and result.fix.id == "cluster.kube-proxy.proxy-mode"
    # v1.29, kube-proxy already in iptables mode: restart only
    assert result.fix.title.startswith("Restart the kube-proxy pods (mode is already iptables)")


def test_seed_routing_offers_the_seed_workaround_done_properly() -> None:
    result = run_check(ROUTING)
    assert result.status is Status.FAIL
    pod = result.findings[0]
    assert pod.caused_by == "cluster.kube-proxy" and "kubedns not ready" in pod.message
    endpoints = next(f for f in result.findings if f.resource == "endpoints/kube-system/kube-dns")
    assert endpoints.evidence["not_ready"] == ["kube-dns-2924299975-66p06 (10.32.0.2)"]
    assert result.fix is not None
    assert "append --proxy-mode=userspace in DaemonSet kube-proxy" in result.fix.title
    picked = run_check(ROUTING, proxy_mode="ipvs")
    assert picked.fix is not None and "ipvs" in picked.fix.title


def test_timeouts_older_than_the_kube_proxy_pods_are_stale(tmp_path: Path) -> None:
    bundle = variant(ROUTING, tmp_path)

    def restarted(items: list[dict[str, Any]]) -> None:
        for pod in items:
            if pod["metadata"]["name"].startswith("kube-proxy-"):
                pod["status"]["containerStatuses"][0]["state"] = {
                    "running": {"startedAt": "2017-04-10T09:50:00Z"}
                }

    edit(bundle, "pods", restarted)
    result = run_check(bundle)
    assert result.fix is None
    assert not [f for f in result.findings if "Service routing" in f.message]
    pod = result.findings[0]
    assert pod.caused_by is None  # not explained any more: the pod's own diagnosis stands
    assert "before kube-proxy restarted at 2017-04-10T09:50:00Z" in str(
        pod.evidence["stale_service_timeouts"]
    )


def test_service_problems(tmp_path: Path) -> None:
    bundle = variant(HEALTHY, tmp_path)

    def no_tcp(items: list[dict[str, Any]]) -> None:
        kube_dns_service(items)["spec"]["ports"] = [{"name": "dns", "port": 53, "protocol": "UDP"}]

    edit(bundle, "services", no_tcp)
    result = run_check(bundle)
    assert result.status is Status.WARN
    assert "does not serve 53/TCP" in result.findings[0].message

    def wrong_selector(items: list[dict[str, Any]]) -> None:
        kube_dns_service(items)["spec"]["selector"] = {"name": "kube-dns"}  # the kubeadm 1.4 one

    edit(bundle, "services", wrong_selector)
    result = run_check(bundle)
    assert result.status is Status.FAIL
    assert any("matches none of the DNS pods" in f.message for f in result.findings)

    edit(bundle, "services", lambda items: items.remove(kube_dns_service(items)))
    result = run_check(bundle)
    assert result.status is Status.FAIL
    assert result.findings[0].message.startswith("Service kube-system/kube-dns does not exist")


def test_no_dns_at_all(tmp_path: Path) -> None:
    bundle = variant(MODERN, tmp_path)
    edit(bundle, "deployments", lambda items: items.clear())
    edit(bundle, "pods", lambda items: items.clear())
    result = run_check(bundle)
    assert result.status is Status.FAIL
    assert "no cluster DNS" in result.summary


def test_missing_logs_are_noted_not_failed(tmp_path: Path) -> None:
    bundle = variant(MODERN, tmp_path)
    shutil.rmtree(bundle / "cluster" / "logs")
    result = run_check(bundle)
    assert result.status is Status.OK
    assert "no known error in 0 container log(s) (2 log(s) not available" in result.summary
    assert "the bundle has no cluster/logs/kube-system/coredns-76f75df574-9lmsx/coredns.log" in (
        result.summary
    )


def test_missing_facts_skip_and_broken_facts_error(tmp_path: Path) -> None:
    bundle = variant(HEALTHY, tmp_path)
    (bundle / "cluster" / "services.json").unlink()
    result = run_check(bundle)
    assert result.status is Status.SKIP and "cluster/services.json" in result.summary
    (bundle / "cluster" / "deployments.json").write_text("{not json")
    result = run_check(bundle)
    assert (
        result.status is Status.ERROR and "cluster/deployments.json: invalid JSON" in result.summary
    )
    # with facts missing, findings still decide; the missing facts are in their evidence
    broken = variant(BROKEN, tmp_path / "x")
    (broken / "cluster" / "endpoints.json").unlink()
    result = run_check(broken)
    assert result.status is Status.FAIL
    assert (
        "the bundle has no cluster/endpoints.json" in result.findings[0].evidence["facts_missing"]
    )


def test_cli_schema_and_exit_codes() -> None:
    code, report = check_json("--bundle", str(BROKEN), "--only", ID)
    assert code == 2
    result = result_of(report, ID)
    assert result["fix"] is None
    assert result["findings"][0]["caused_by"] == "cluster.network.cni"
    doc = kdoctor("explain", ID)
    assert doc.returncode == 0 and "## Fix safety" in doc.stdout
    assert "Live DNS queries" in doc.stdout


# ---------------------------------------------------------------- end to end

apiserver = pytest.importorskip("tests.apiserver")


@pytest.mark.parametrize("bundle", [BROKEN, MODERN, FORBIDDEN], ids=lambda b: b.name)
def test_live_same_verdict_as_bundle(bundle: Path, tmp_path: Path) -> None:
    _c, from_bundle = check_json("--bundle", str(bundle), "--only", ID)
    with apiserver.ApiServer(bundle) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        # No probe pods: this server has no kubelet to run them (tests/test_dns_live.py has).
        _c2, live = check_json("--kubeconfig", str(kcfg), "--only", ID, "--no-probes")
        logs = [r for r in server.requests if r.subresource == "log"]
    a, b = result_of(from_bundle, ID), result_of(live, ID)
    # The live part's note differs ("not run (bundle)" / not on a node here): compare the rest.
    api_part = [r["summary"].rsplit("; live DNS queries", 1)[0] for r in (a, b)]
    assert (a["status"], api_part[0]) == (b["status"], api_part[1])
    assert [f["message"] for f in a["findings"]] == [f["message"] for f in b["findings"]]
    assert all(r.query.get("tailLines") == "50" for r in logs)


def test_live_fix_dry_run_offers_the_kube_proxy_patch_for_service_routing(tmp_path: Path) -> None:
    with apiserver.ApiServer(ROUTING) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        proc = kdoctor(
            "fix", ID, "--kubeconfig", str(kcfg), "--dry-run", "--state-dir", str(tmp_path / "s")
        )
        writes = [r for r in server.requests if r.method in ("PATCH", "PUT", "POST", "DELETE")]
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Plan for cluster.kube-proxy.proxy-mode (unsafe)" in proc.stdout
    assert "wait up to 120s for a ready DNS pod on kubernetes-1" in proc.stdout
    assert "dry run: nothing changed" in proc.stdout
    assert writes == []
