"""The live part of cluster.dns.kube-dns: the kubelet's DNS settings, real DNS queries (a
local DNS server, no root), the verdict matrix, resolv.conf comparisons, and the whole check
against the real data plane (root: namespaces, busybox, dnsmasq).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doctor.core.context import CheckContext, Options
from doctor.facts.kube import BundleCluster
from doctor.facts.node import LiveNodeFacts
from doctor.live import dnsprobe
from doctor.live.dnsprobe import (
    ANSWER,
    NXDOMAIN,
    REFUSED,
    TIMEOUT,
    QueryResult,
    Target,
    assess,
    kubelet_dns,
    parse_resolv_conf,
)
from tests.conftest import BUNDLES, result_of
from tests.live_probe_support import (
    DnsServer,
    LiveCluster,
    data_plane_missing,
    free_port,
    live_cluster,
    probe_objects,
)

DNS = "cluster.dns.kube-dns"
P2P = "cluster.dns.pod-to-pod"
QNAME = "kubernetes.default.svc.cluster.local"


def _tree(tmp_path: Path, files: dict[str, str]) -> LiveNodeFacts:
    for path, text in files.items():
        target = tmp_path / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return LiveNodeFacts(tmp_path)


# -- the kubelet's settings ------------------------------------------------------------------


def test_kubelet_dns_from_config_file(tmp_path: Path) -> None:
    node = _tree(
        tmp_path,
        {
            "/var/lib/kubelet/config.yaml": "kind: KubeletConfiguration\n"
            "clusterDomain: corp.local\nclusterDNS:\n- 10.96.0.10\n"
            "resolvConf: /run/systemd/resolve/resolv.conf\n"
        },
    )
    got = kubelet_dns(node)
    assert (got.domain, got.domain_source) == (
        "corp.local",
        "/var/lib/kubelet/config.yaml clusterDomain",
    )
    assert got.cluster_dns == ("10.96.0.10",)
    assert got.resolv_conf == "/run/systemd/resolve/resolv.conf"
    assert kubelet_dns(node, "override.local").domain == "override.local"


def test_kubelet_flags_win_over_the_file(tmp_path: Path) -> None:
    # kubeadm 1.6's drop-in (KUBELET_DNS_ARGS), the seed's setup.
    dropin = (
        "[Service]\n"
        'Environment="KUBELET_DNS_ARGS=--cluster-dns=10.96.0.10 --cluster-domain=cluster.local"\n'
        "ExecStart=\nExecStart=/usr/bin/kubelet $KUBELET_DNS_ARGS\n"
    )
    node = _tree(
        tmp_path,
        {
            "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf": dropin,
            "/var/lib/kubelet/config.yaml": "clusterDomain: other.local\n",
        },
    )
    got = kubelet_dns(node)
    assert got.domain == "cluster.local"
    assert got.domain_source.endswith("10-kubeadm.conf --cluster-domain")
    assert got.cluster_dns == ("10.96.0.10",)


def test_kubelet_dns_defaults_and_bad_yaml(tmp_path: Path) -> None:
    assert kubelet_dns(_tree(tmp_path / "a", {})).domain == "cluster.local"
    got = kubelet_dns(_tree(tmp_path / "b", {"/var/lib/kubelet/config.yaml": "a: [\n"}))
    assert got.domain == "cluster.local" and got.notes[0].startswith(
        "/var/lib/kubelet/config.yaml: not YAML"
    )


def test_parse_resolv_conf() -> None:
    conf = parse_resolv_conf(
        "# generated\nnameserver 10.96.0.10\nsearch a b c\nsearch ns.svc.cluster.local "
        "svc.cluster.local cluster.local lab\noptions ndots:5 timeout:2 rotate\n"
    )
    assert conf.nameservers == ("10.96.0.10",)
    assert conf.search == ("ns.svc.cluster.local", "svc.cluster.local", "cluster.local", "lab")
    assert conf.ndots == 5 and conf.options["rotate"] is None


def test_pod_resolv_conf_comparison() -> None:
    good = (
        "nameserver 10.96.0.10\nsearch kdoctor-probe.svc.cluster.local svc.cluster.local "
        "cluster.local lab\noptions ndots:5\n"
    )
    assert (
        dnsprobe.pod_resolv_findings(good, "p", "kdoctor-probe", "cluster.local", ["10.96.0.10"])
        == []
    )
    bad = "nameserver 192.0.2.53\nsearch lab\n"
    findings = dnsprobe.pod_resolv_findings(
        bad, "p", "kdoctor-probe", "cluster.local", ["10.96.0.10"]
    )
    assert [f.severity.value for f in findings] == ["fail", "warn", "warn"]
    assert findings[0].message.startswith("pods get nameserver 192.0.2.53, not the cluster DNS")


def test_node_resolv_conf_comparison() -> None:
    assert (
        dnsprobe.node_resolv_findings(
            "nameserver 192.0.2.1\n", "/etc/resolv.conf", "10.96.0.10", "x"
        )
        == []
    )
    stub = dnsprobe.node_resolv_findings("nameserver 127.0.0.53\n", "/etc/resolv.conf", None, "x")
    assert "local stub (127.0.0.53)" in stub[0].message
    loop = dnsprobe.node_resolv_findings(
        "nameserver 10.96.0.10\n", "/etc/resolv.conf", "10.96.0.10", "x"
    )
    assert "cluster DNS 10.96.0.10 itself" in loop[0].message
    many = dnsprobe.node_resolv_findings(
        "nameserver 1.1.1.1\nsearch a b c d\n", "/etc/resolv.conf", None, "x"
    )
    assert "4 search domains" in many[0].message
    assert "does not exist" in dnsprobe.node_resolv_findings(None, "/x", None, "x")[0].message


def test_cluster_dns_must_be_the_service(tmp_path: Path) -> None:
    got = kubelet_dns(
        _tree(tmp_path, {"/var/lib/kubelet/config.yaml": "clusterDNS: [10.3.0.10]\n"})
    )
    (finding,) = dnsprobe.cluster_dns_findings(got, "10.96.0.10")
    assert "nameserver 10.3.0.10 but the kube-dns Service is 10.96.0.10" in finding.message
    assert dnsprobe.cluster_dns_findings(got, "10.3.0.10") == []


# -- real queries, no root --------------------------------------------------------------------


def test_queries_answer_nxdomain_timeout_refused() -> None:
    with DnsServer({QNAME: "10.96.0.1"}) as server:
        up = Target("Service kube-dns", "127.0.0.1", "service", port=server.port)
        down = Target("pod dead", "127.0.0.1", "pod", port=free_port())
        started = time.monotonic()
        results = dnsprobe.run_queries([up, down], QNAME + ".", timeout=0.5, budget=3)
        assert time.monotonic() - started < 2
        by = {(r.target.label, r.proto): r for r in results}
        assert by[("Service kube-dns", "udp")].outcome == ANSWER
        assert by[("Service kube-dns", "udp")].addresses == ("10.96.0.1",)
        assert by[("Service kube-dns", "tcp")].outcome == ANSWER
        # Nothing on the port: ICMP port unreachable on a connected socket, RST for TCP.
        assert by[("pod dead", "udp")].outcome == REFUSED
        assert by[("pod dead", "tcp")].outcome == REFUSED
        nx = dnsprobe.query(up, "udp", "nope.cluster.local.", 0.5)
        assert nx.outcome == NXDOMAIN
        server.silent = True
        quiet = dnsprobe.run_queries([up], QNAME + ".", timeout=0.3, budget=2)
        assert [r.outcome for r in quiet] == [TIMEOUT, TIMEOUT]


def test_probe_budget_bounds_the_whole_probe() -> None:
    with DnsServer({}) as server:
        server.silent = True
        targets = [Target(f"pod {i}", "127.0.0.1", "pod", port=server.port) for i in range(6)]
        started = time.monotonic()
        results = dnsprobe.run_queries(targets, QNAME + ".", timeout=5, budget=0.5)
        assert time.monotonic() - started < 1.5
        assert {r.outcome for r in results} == {TIMEOUT}


# -- the verdict --------------------------------------------------------------------------------

SVC = Target("Service kube-dns", "10.96.0.10", "service")
POD1 = Target("pod coredns-a", "10.44.0.10", "pod", "n1")
POD2 = Target("pod coredns-b", "10.44.0.11", "pod", "n2")


def _results(**outcomes: str) -> list[QueryResult]:
    targets = {"svc": SVC, "pod1": POD1, "pod2": POD2}
    out = []
    for key, outcome in outcomes.items():
        for proto in ("udp", "tcp"):
            addresses = ("10.96.0.1",) if outcome == ANSWER else ()
            out.append(QueryResult(targets[key], proto, outcome, addresses, 2))
    return out


def test_assess_healthy() -> None:
    got = assess(_results(svc=ANSWER, pod1=ANSWER, pod2=ANSWER), QNAME, "cluster.local", {},
                 expected_ip="10.96.0.1")  # fmt: skip
    assert got.findings == [] and not got.service_routing_broken
    assert got.summary == f"{QNAME} answered at the Service and 2 DNS pod(s)"


def test_assess_service_routing_broken() -> None:
    got = assess(_results(svc=TIMEOUT, pod1=ANSWER, pod2=ANSWER), QNAME, "cluster.local", {})
    assert got.service_routing_broken
    (finding,) = got.findings
    assert finding.caused_by == "cluster.kube-proxy"
    assert "Service routing (kube-proxy) is broken" in finding.message


def test_assess_pods_broken() -> None:
    got = assess(_results(svc=TIMEOUT, pod1=REFUSED, pod2=TIMEOUT), QNAME, "cluster.local", {},
                 pods_root="cluster.network.cni", pods_not_ready=["coredns-b"])  # fmt: skip
    assert not got.service_routing_broken
    (finding,) = got.findings
    assert finding.message.startswith(f"no DNS pod answers for {QNAME}, nor does the Service")
    assert finding.caused_by == "cluster.network.cni"
    assert finding.evidence["answers"]["pod coredns-a 10.44.0.10 on n1"] == (
        "UDP refused (2 ms), TCP refused (2 ms)"
    )


def test_assess_nxdomain_and_partial() -> None:
    got = assess(_results(svc=NXDOMAIN, pod1=NXDOMAIN), QNAME, "cluster.local", {})
    assert "does not serve the cluster zone cluster.local" in got.findings[0].message
    got = assess(_results(svc=ANSWER, pod1=ANSWER, pod2=TIMEOUT), QNAME, "cluster.local", {})
    (finding,) = got.findings
    assert finding.severity.value == "warn" and finding.resource == "pod/kube-system/coredns-b"
    got = assess(_results(svc=ANSWER, pod1=TIMEOUT, pod2=TIMEOUT), QNAME, "cluster.local", {})
    assert "cannot reach pod IPs" in got.findings[0].message
    got = assess(_results(svc=ANSWER, pod1=ANSWER), QNAME, "cluster.local", {},
                 expected_ip="10.96.0.99")  # fmt: skip
    assert "not to the kubernetes Service ClusterIP 10.96.0.99" in got.findings[0].message


def test_matrix_shape() -> None:
    m = dnsprobe.matrix("t", _results(svc=ANSWER, pod1=TIMEOUT))
    assert m["columns"] == ["UDP", "TCP"]
    assert m["rows"][0] == {
        "name": "Service kube-dns 10.96.0.10",
        "cells": ["10.96.0.1 (2 ms)", "10.96.0.1 (2 ms)"],
        "status": ["ok", "ok"],
    }
    assert m["rows"][1]["name"] == "pod coredns-a 10.44.0.10 on n1"
    assert m["rows"][1]["cells"] == ["timeout (2 ms)", "timeout (2 ms)"]


def test_live_part_skips_on_a_bundle(tmp_path: Path) -> None:
    bundle = BUNDLES / "seed-lab-healthy"
    cluster = BundleCluster(bundle)
    ctx = CheckContext(LiveNodeFacts(tmp_path), cluster, Options())
    got = dnsprobe.live_dns(ctx, cluster, None, [])
    assert (got.ran, got.note) == (False, "live DNS queries not run (bundle)")


# -- the real data plane (root) ------------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LiveCluster]:
    why = data_plane_missing()
    if why:
        pytest.skip(why)
    with live_cluster(tmp_path) as live:
        yield live
        assert probe_objects(live.server) == []


def _matrix(result: dict[str, Any]) -> dict[str, list[str]]:
    return {
        row["name"].split(" ")[0]: row["status"] for row in result["evidence"]["matrix"]["rows"]
    }


def test_whole_check_healthy_both_checks_for_real(cluster: LiveCluster) -> None:
    started = time.monotonic()
    proc = cluster.kdoctor(
        "check", "--kubeconfig", str(cluster.kubeconfig), "--root", str(cluster.root),
        "--scope", "cluster", "-v",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert elapsed < 30, elapsed  # the default deadline is 60 s
    # -v: every check has its own line and its measured matrix
    assert "[✓] cluster.dns.kube-dns" in proc.stdout and "[✓] cluster.dns.pod-to-pod" in proc.stdout
    assert "┃ target" in proc.stdout and "┃ from \\ to" in proc.stdout  # both matrices drawn
    assert probe_objects(cluster.server) == []
    code, report, _err = cluster.check_json()
    assert code == 0
    dns = result_of(report, DNS)
    assert dns["status"] == "ok"
    assert dns["summary"].endswith(
        f"live: {QNAME} answered at the Service and 1 DNS pod(s); pod resolv.conf as expected"
    )
    assert _matrix(dns) == {"Service": ["ok", "ok"], "pod": ["ok", "ok"]}
    assert dns["evidence"]["cluster_domain"] == (
        "cluster.local (/var/lib/kubelet/config.yaml clusterDomain)"
    )
    assert result_of(report, P2P)["status"] == "ok"
    assert "matrix" in result_of(report, P2P)["evidence"]


def test_dns_server_stopped(cluster: LiveCluster) -> None:
    cluster.dp.stop_dns()
    code, report, _err = cluster.check_json("--only", f"{DNS},{P2P}")
    assert code == 2
    dns = result_of(report, DNS)
    (finding,) = [f for f in dns["findings"] if f["message"].startswith("no DNS pod answers")]
    assert finding["message"] == (
        f"no DNS pod answers for {QNAME}, nor does the Service: the DNS pods are broken"
    )
    assert dns["fix"] is None
    rows = {r["name"].split(" ")[0]: r["cells"] for r in dns["evidence"]["matrix"]["rows"]}
    assert all(cell.startswith("refused") for cell in rows["pod"])  # nothing on port 53
    assert all(not cell[0].isdigit() for cell in rows["Service"])
    p2p = result_of(report, P2P)
    (finding,) = p2p["findings"]
    assert finding["caused_by"] == DNS


def test_service_ip_unreachable_offers_the_kube_proxy_fix(cluster: LiveCluster) -> None:
    cluster.dp.break_service_ip()
    code, report, _err = cluster.check_json("--only", DNS)
    assert code == 2
    dns = result_of(report, DNS)
    assert dns["status"] == "fail"
    (finding,) = dns["findings"]
    assert finding["caused_by"] == "cluster.kube-proxy"
    assert "Service routing (kube-proxy) is broken" in finding["message"]
    assert _matrix(dns) == {"Service": ["fail", "fail"], "pod": ["ok", "ok"]}
    assert dns["fix"] is not None and dns["fix"]["safety"] == "unsafe"
    assert any("--proxy-mode=userspace" in line for line in dns["fix"]["plan"])


def test_nxdomain_means_the_zone_is_not_served(cluster: LiveCluster) -> None:
    cluster.dp.drop_dns_record(QNAME)
    _code, report, _err = cluster.check_json("--only", DNS)
    dns = result_of(report, DNS)
    (finding,) = dns["findings"]
    assert "does not serve the cluster zone cluster.local" in finding["message"]
    assert "NXDOMAIN" in json.dumps(dns["evidence"]["matrix"])


def test_no_live_and_not_on_a_node(cluster: LiveCluster, tmp_path: Path) -> None:
    _code, report, _err = cluster.check_json("--only", f"{DNS},{P2P}", "--no-live")
    assert result_of(report, DNS)["summary"].endswith("; live DNS queries not run (--no-live)")
    assert result_of(report, P2P)["status"] == "skip"
    assert [r for r in cluster.server.requests if r.method == "POST"] == []
    # Without a kubelet configuration (and not a Node's hostname or address): not a node.
    elsewhere = tmp_path / "laptop"
    elsewhere.mkdir()
    proc = cluster.kdoctor(
        "check", "--kubeconfig", str(cluster.kubeconfig), "--root", str(elsewhere),
        "--only", DNS, "--format", "json", "--no-probes",
    )  # fmt: skip
    dns = result_of(json.loads(proc.stdout), DNS)
    assert "live DNS queries not run: this host is not a cluster node" in dns["summary"]
    assert dns["status"] == "ok"


def test_assess_pods_without_ip_point_at_their_cause() -> None:
    pending = Target("pod kube-dns-1", None, "pod", "n1", "no pod IP (Pending)")
    results = [
        *_results(svc=TIMEOUT),
        *(dnsprobe.query(pending, proto, QNAME + ".") for proto in ("udp", "tcp")),
    ]
    assert results[-1].cell() == "no pod IP (Pending)"
    got = assess(results, QNAME, "cluster.local", {}, pods_root="cluster.network.cni")
    (finding,) = got.findings
    assert "no DNS pod has an IP to ask directly" in finding.message
    assert finding.caused_by == "cluster.network.cni"
    rows = dnsprobe.matrix("t", results)["rows"]
    assert rows[1] == {
        "name": "pod kube-dns-1 on n1",
        "cells": ["no pod IP (Pending)", "no pod IP (Pending)"],
        "status": ["skip", "skip"],
    }
