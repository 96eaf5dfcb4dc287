"""cluster.dns.pod-to-pod: parsers and verdicts, the probe lifecycle against the test API
server (a fake kubelet, no root), and the real data plane (root: namespaces, busybox, dnsmasq).
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from checks.cluster_dns_pod_to_pod import (
    PairResult,
    matrix,
    pair_findings,
    parse_nslookup,
    parse_ping,
)
from doctor.core.model import CheckResult, Scope, Status
from doctor.live.probes import ProbePod, choose_nodes
from doctor.ui.text import make_console, print_result
from tests.apiserver import ApiServer
from tests.conftest import REPO, check_json, kdoctor, result_of
from tests.live_probe_support import (
    PROBE_NS,
    SAMPLE,
    FakeKubelet,
    add_node,
    data_plane_missing,
    live_cluster,
    probe_objects,
)

CHECK = "cluster.dns.pod-to-pod"
FQDN1 = "probe-kubernetes-1.kdoctor-probe.kdoctor-probe.svc.cluster.local"
FQDN2 = "probe-kubernetes-2.kdoctor-probe.kdoctor-probe.svc.cluster.local"

# -- what busybox prints -------------------------------------------------------------------------

NEW_OK = """Server:\t\t10.96.0.10
Address:\t10.96.0.10:53

Name:\tbusybox-2.default-subdomain.default.svc.cluster.local
Address: 10.36.0.1

"""
OLD_OK = """Server:    10.96.0.10
Address 1: 10.96.0.10 kube-dns.kube-system.svc.cluster.local

Name:      busybox-2.default-subdomain.default.svc.cluster.local
Address 1: 10.36.0.1 busybox-2.default-subdomain.default.svc.cluster.local
"""
NEW_NX = """Server:\t\t10.96.0.10
Address:\t10.96.0.10:53

** server can't find busybox-2.default-subdomain.default.svc.cluster.local: NXDOMAIN
"""
OLD_FAIL = """Server:    10.96.0.10
Address 1: 10.96.0.10

nslookup: can't resolve 'busybox-2.default-subdomain.default.svc.cluster.local'
"""
TIMEOUT = ";; connection timed out; no servers could be reached\n"
PING_OK = """PING 10.36.0.1 (10.36.0.1): 56 data bytes
64 bytes from 10.36.0.1: seq=0 ttl=64 time=5.298 ms
64 bytes from 10.36.0.1: seq=1 ttl=64 time=1.555 ms

--- 10.36.0.1 ping statistics ---
2 packets transmitted, 2 packets received, 0% packet loss
round-trip min/avg/max = 1.555/3.426/5.298 ms
"""
PING_LOST = """PING 10.36.0.1 (10.36.0.1): 56 data bytes

--- 10.36.0.1 ping statistics ---
2 packets transmitted, 0 packets received, 100% packet loss
"""
IPUTILS = """--- 10.0.0.1 ping statistics ---
2 packets transmitted, 2 received, 0% packet loss, time 1001ms
rtt min/avg/max/mdev = 0.040/0.050/0.060/0.010 ms
"""


@pytest.mark.parametrize(
    ("output", "addresses", "why"),
    [
        (NEW_OK, ("10.36.0.1",), ""),
        (OLD_OK, ("10.36.0.1",), ""),
        (NEW_NX, (), "NXDOMAIN"),
        (OLD_FAIL, (), "not resolved"),
        (TIMEOUT, (), "timeout"),
        (
            TIMEOUT + "nslookup: write to '10.96.0.10': Connection refused\n",
            (),
            "connection refused",
        ),
        ("** server can't find x: REFUSED\n", (), "REFUSED"),
        ("", (), "no address in the answer"),
    ],
)
def test_parse_nslookup(output: str, addresses: tuple[str, ...], why: str) -> None:
    assert parse_nslookup(output) == (addresses, why)


def test_parse_ping() -> None:
    assert parse_ping(PING_OK) == (2, 2, "3.426")
    assert parse_ping(PING_LOST) == (2, 0, None)
    assert parse_ping(IPUTILS) == (2, 2, "0.050")
    assert parse_ping("ping: bad address 'x'") == (0, 0, None)


def _node(name: str, **spec: Any) -> dict[str, Any]:
    ready = spec.pop("ready", True)
    return {
        "metadata": {"name": name},
        "spec": spec,
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_choose_nodes() -> None:
    nodes = [
        _node("w3"),
        _node("master", taints=[{"key": "node-role.kubernetes.io/master", "effect": "NoSchedule"}]),
        _node("w1"),
        _node("cordoned", unschedulable=True),
        _node("sick", ready=False),
        _node("w2", taints=[{"key": "x", "value": "y", "effect": "PreferNoSchedule"}]),
    ]
    usable, skipped = choose_nodes(nodes, None)
    assert usable == ["w1", "w2", "w3"]
    assert skipped == {
        "master": "taint node-role.kubernetes.io/master:NoSchedule",
        "cordoned": "cordoned (spec.unschedulable)",
        "sick": "not Ready",
    }
    usable, skipped = choose_nodes(nodes, 2)
    assert usable == ["w1", "w2"]
    assert skipped["w3"] == "over --probe-nodes 2"


def _pods(n: int) -> list[ProbePod]:
    return [
        ProbePod(f"probe-n{i}-abc", f"probe-n{i}", f"n{i}", f"10.44.0.{i}", True, "Running")
        for i in range(1, n + 1)
    ]


def _pair(src: ProbePod, dst: ProbePod, **kw: Any) -> PairResult:
    base: dict[str, Any] = {
        "addresses": (dst.ip,),
        "ping_sent": 2,
        "ping_received": 2,
        "rtt_ms": "0.1",
    }
    base.update(kw)
    return PairResult(src, dst, dst.fqdn("cluster.local"), **base)


def test_pair_findings_name_the_pair() -> None:
    a, b, c = _pods(3)
    results = [
        _pair(x, y) if (x, y) != (a, c) else _pair(x, y, ping_received=0, rtt_ms=None)
        for x in (a, b, c)
        for y in (a, b, c)
        if x != y
    ]
    findings = pair_findings(results, "cluster.local")
    assert len(findings) == 1
    assert findings[0].message.startswith("probe-n1 on n1 cannot ping probe-n3 on n3 (10.44.0.3)")
    assert "resolves, but" in findings[0].message
    assert findings[0].evidence["ping"] == "ping -c 2 -W 1 10.44.0.3"


def test_pair_findings_missing_record_and_all_failing() -> None:
    a, b, c = _pods(3)
    pairs = [(x, y) for x in (a, b, c) for y in (a, b, c) if x != y]
    missing = [
        _pair(x, y, addresses=(), resolve_why="NXDOMAIN") if y is b else _pair(x, y)
        for x, y in pairs
    ]
    findings = pair_findings(missing, "cluster.local")
    assert [f.resource for f in findings] == [f"pod/{PROBE_NS}/probe-n2-abc"]
    assert "does not resolve from any other probe (NXDOMAIN): its DNS record is missing" in (
        findings[0].message
    )
    down = [_pair(x, y, addresses=(), resolve_why="timeout") for x, y in pairs]
    findings = pair_findings(down, "cluster.local")
    assert len(findings) == 1 and findings[0].caused_by == "cluster.dns.kube-dns"
    stale = [_pair(x, y, addresses=("10.9.9.9",)) if y is c else _pair(x, y) for x, y in pairs]
    findings = pair_findings(stale, "cluster.local")
    assert {f.message.split(" resolves to ")[1].split(" ")[0] for f in findings} == {"10.9.9.9"}
    assert all("stale DNS record" in f.message for f in findings)


def test_matrix_is_drawn_as_a_table() -> None:
    a, b = _pods(2)
    results = [_pair(a, b), _pair(b, a, addresses=(), resolve_why="NXDOMAIN")]
    evidence: dict[str, Any] = {
        "matrix": matrix([a, b], results, "cluster.local"),
        "probes": ["x"],
    }
    assert evidence["matrix"]["columns"] == ["n1", "n2"]
    assert evidence["matrix"]["rows"][1]["cells"] == ["NXDOMAIN · 0.1 ms", ""]
    assert evidence["matrix"]["rows"][1]["status"] == ["fail", None]
    result = CheckResult(CHECK, "t", Scope.CLUSTER, Status.FAIL, "s", evidence=evidence)
    buffer = io.StringIO()
    print_result(make_console(buffer), result)
    text = buffer.getvalue()
    assert "from \\ to" in text and "✓ 0.1 ms" in text and "✗ NXDOMAIN · 0.1 ms" in text
    assert "probes:" not in text  # other check-level evidence only with -v
    assert json.loads(json.dumps(result.to_json()))["evidence"]["matrix"]["rows"][0]["name"] == (
        "n1 10.44.0.1"
    )


# -- the probe lifecycle against the test API server, with a fake kubelet (no root) ------------


def _server(tmp_path: Path, nodes: int = 2) -> tuple[ApiServer, str]:
    server = ApiServer(SAMPLE)
    server.start()
    if nodes > 1:
        add_node(server, "kubernetes-2")
    return server, str(server.write_kubeconfig(tmp_path / "kubeconfig"))


def _run(kcfg: str, *args: str) -> tuple[int, dict[str, Any]]:
    return check_json("--kubeconfig", kcfg, "--only", CHECK, *args)


def test_fake_cluster_ok_matrix_and_cleanup(tmp_path: Path) -> None:
    server, kcfg = _server(tmp_path)
    try:
        with FakeKubelet(server) as kubelet:
            code, report = _run(kcfg)
        result = result_of(report, CHECK)
        assert (code, result["status"]) == (0, "ok"), result
        assert "2 probes on 2 node(s) (kubernetes-1, kubernetes-2)" in result["summary"]
        rows = result["evidence"]["matrix"]["rows"]
        assert [r["status"] for r in rows] == [[None, "ok"], ["ok", None]]
        assert result["evidence"]["nodes_without_probe"] == {
            "kubernetes-0": "taint node-role.kubernetes.io/master:NoSchedule"
        }
        assert ["nslookup", FQDN2] in kubelet.exec_calls
        assert ["nslookup", FQDN1] in kubelet.exec_calls
        assert probe_objects(server) == []
        # The probes were what the contract says: labelled, on distinct nodes, headless.
        posts = [(r.path, json.loads(r.body)) for r in server.requests if r.method == "POST"]
        assert [path for path, _ in posts] == [
            "/api/v1/namespaces",
            f"/api/v1/namespaces/{PROBE_NS}/services",
            f"/api/v1/namespaces/{PROBE_NS}/pods",
            f"/api/v1/namespaces/{PROBE_NS}/pods",
        ]
        service, pods = posts[1][1], [body for _, body in posts[2:]]
        assert service["spec"]["clusterIP"] == "None"
        assert service["spec"]["selector"] == {
            "app.kubernetes.io/managed-by": "kdoctor",
            "kdoctor.io/probe": "pod-to-pod",
        }
        assert {p["spec"]["nodeName"] for p in pods} == {"kubernetes-1", "kubernetes-2"}
        for pod in pods:
            assert pod["metadata"]["labels"] == service["spec"]["selector"]
            assert pod["spec"]["subdomain"] == "kdoctor-probe"
            assert pod["spec"]["containers"][0]["image"] == "busybox"
            assert "imagePullSecrets" not in pod["spec"]
    finally:
        server.stop()


def test_single_node_two_probes_and_text_output(tmp_path: Path) -> None:
    server, kcfg = _server(tmp_path, nodes=1)
    try:
        with FakeKubelet(server):
            proc = kdoctor("check", "--kubeconfig", kcfg, "--only", CHECK)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "one node only: traffic between nodes not tested" in proc.stdout
        assert "probe-kubernetes-1 " in proc.stdout and "probe-kubernetes-1-2 " in proc.stdout
        assert "┃ from \\ to" in proc.stdout
        assert probe_objects(server) == []
    finally:
        server.stop()


def test_fake_cluster_failures_are_named(tmp_path: Path) -> None:
    server, kcfg = _server(tmp_path)
    try:
        with FakeKubelet(
            server, unresolvable={FQDN2}, unreachable={("kubernetes-2", "kubernetes-1")}
        ):
            code, report = _run(kcfg)
        result = result_of(report, CHECK)
        assert (code, result["status"]) == (2, "fail")
        messages = [f["message"] for f in result["findings"]]
        assert any(m.startswith(FQDN2) and "its DNS record is missing" in m for m in messages)
        assert any(
            m.startswith("probe-kubernetes-2 on kubernetes-2 cannot ping probe-kubernetes-1 on")
            for m in messages
        ), messages
        assert probe_objects(server) == []
    finally:
        server.stop()


def test_probe_that_cannot_pull_is_a_finding_with_its_cause(tmp_path: Path) -> None:
    server, kcfg = _server(tmp_path)
    secret = {
        "metadata": {"name": "regcred", "namespace": "default"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"},
    }
    server.put_object("v1", "secrets", secret)
    pull = (
        "ImagePullBackOff",
        'Back-off pulling image "registry.lab:5000/busybox"',
    )
    try:
        with FakeKubelet(server, stuck={"kubernetes-2": pull}):
            _code, report = _run(
                kcfg, "--timeout", "12", "--probe-image", "registry.lab:5000/busybox",
                "--probe-pull-secret", "default/regcred",
            )  # fmt: skip
        result = result_of(report, CHECK)
        assert result["status"] == "warn", result
        (finding,) = result["findings"]
        assert finding["message"].startswith("probe pod on node kubernetes-2 did not run")
        assert "ImagePullBackOff" in finding["message"]
        assert "--probe-pull-secret" in finding["hint"]
        assert "eyJhdXRocyI6e319" not in json.dumps(report)
        posted = [
            json.loads(r.body)
            for r in server.requests
            if r.method == "POST" and r.path.endswith("/pods")
        ]
        assert len(posted) == 2
        for pod in posted:
            assert pod["spec"]["containers"][0]["image"] == "registry.lab:5000/busybox"
            assert pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
        copied = [r for r in server.requests if r.method == "POST" and r.path.endswith("/secrets")]
        assert len(copied) == 1
        assert probe_objects(server) == []
        assert server.get_object("v1", "secrets", "default", "regcred") is not None
    finally:
        server.stop()


def test_leftovers_of_an_interrupted_run_are_removed(tmp_path: Path) -> None:
    server, kcfg = _server(tmp_path)
    server.put_object(
        "v1",
        "namespaces",
        {"metadata": {"name": PROBE_NS, "labels": {"app.kubernetes.io/managed-by": "kdoctor"}}},
    )
    server.put_object(
        "v1",
        "pods",
        {
            "metadata": {
                "name": "probe-kubernetes-1-old",
                "namespace": PROBE_NS,
                "labels": {
                    "app.kubernetes.io/managed-by": "kdoctor",
                    "kdoctor.io/probe": "pod-to-pod",
                },
            },
            "spec": {"nodeName": "kubernetes-1", "containers": [{"name": "probe", "image": "x"}]},
            "status": {"phase": "Running", "podIP": "10.44.9.9"},
        },
    )
    try:
        with FakeKubelet(server):
            _code, report = _run(kcfg, "-v")
        result = result_of(report, CHECK)
        assert result["status"] == "ok"
        assert result["evidence"]["notes"] == [
            "removed leftover probes of an earlier run: pod/probe-kubernetes-1-old"
        ]
        assert probe_objects(server) == []  # the namespace was kdoctor's: deleted too
    finally:
        server.stop()


def test_sigterm_removes_the_probes(tmp_path: Path) -> None:
    server, kcfg = _server(tmp_path)
    stuck = ("ContainerCreating", "")
    try:
        with FakeKubelet(server, stuck={"kubernetes-1": stuck, "kubernetes-2": stuck}):
            env = dict(os.environ, PYTHONPATH=str(REPO))
            proc = subprocess.Popen(
                [sys.executable, "-m", "doctor", "check", "--kubeconfig", kcfg, "--only", CHECK],
                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            deadline = time.monotonic() + 30
            while len(server.list_objects("v1", "pods", PROBE_NS)) < 2:
                assert time.monotonic() < deadline, "probes never created"
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            _out, err = proc.communicate(timeout=20)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err
        assert probe_objects(server) == []
    finally:
        server.stop()


def test_run_deadline_still_removes_the_probes(tmp_path: Path) -> None:
    server, kcfg = _server(tmp_path)
    stuck = ("ContainerCreating", "")
    try:
        with FakeKubelet(server, stuck={"kubernetes-1": stuck}):
            started = time.monotonic()
            code, report = _run(kcfg, "--timeout", "3")
            assert time.monotonic() - started < 10
        result = result_of(report, CHECK)
        assert (code, result["status"]) == (3, "error")
        # The runner says "timed out after 3s" or "did not finish before the run's deadline
        # (3s)", whichever it notices first.
        assert "3s" in result["summary"]
        assert probe_objects(server) == []
    finally:
        server.stop()


def test_exec_refused_is_an_error(tmp_path: Path) -> None:
    server, kcfg = _server(tmp_path)
    server.faults.set(status=403, path="/exec$")
    try:
        with FakeKubelet(server):
            code, report = _run(kcfg)
        result = result_of(report, CHECK)
        assert (code, result["status"]) == (3, "error"), result
        assert "403" in result["summary"]
        assert probe_objects(server) == []
    finally:
        server.stop()


def test_skips_on_a_bundle_and_without_probes(tmp_path: Path) -> None:
    _code, report = check_json("--bundle", str(SAMPLE), "--only", CHECK)
    assert result_of(report, CHECK)["status"] == "skip"
    assert "(bundle)" in result_of(report, CHECK)["summary"]
    server, kcfg = _server(tmp_path)
    try:
        _code, report = _run(kcfg, "--no-probes")
        assert result_of(report, CHECK)["summary"] == "probe pods disabled (--no-probes)"
        assert not [r for r in server.requests if r.method != "GET"]
    finally:
        server.stop()


# -- the real data plane (root) -------------------------------------------------------------


@pytest.fixture
def cluster(tmp_path: Path) -> Any:
    why = data_plane_missing()
    if why:
        pytest.skip(why)
    with live_cluster(tmp_path) as live:
        yield live
        assert probe_objects(live.server) == []


def test_data_plane_healthy(cluster: Any) -> None:
    code, report, _err = cluster.check_json("--only", CHECK)
    result = result_of(report, CHECK)
    assert (code, result["status"]) == (0, "ok"), result
    rows = result["evidence"]["matrix"]["rows"]
    assert [r["status"] for r in rows] == [[None, "ok"], ["ok", None]]
    assert all(" ms" in cell for r in rows for cell in r["cells"] if cell)
    proc = cluster.kdoctor(
        "check", "--kubeconfig", str(cluster.kubeconfig), "--root", str(cluster.root),
        "--only", CHECK,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "from \\ to" in proc.stdout and "kubernetes-2 10.44." in proc.stdout


def test_data_plane_missing_record(cluster: Any) -> None:
    cluster.dp.drop_dns_record(FQDN2)
    code, report, _err = cluster.check_json("--only", CHECK)
    result = result_of(report, CHECK)
    assert (code, result["status"]) == (2, "fail")
    (finding,) = result["findings"]
    assert finding["message"].startswith(f"{FQDN2} (probe on node kubernetes-2) does not resolve")
    assert "NXDOMAIN" in finding["message"]
    rows = result["evidence"]["matrix"]["rows"]
    assert rows[0]["status"] == [None, "fail"] and rows[1]["status"] == ["ok", None]


@pytest.fixture
def cluster3(tmp_path: Path) -> Any:
    why = data_plane_missing()
    if why:
        pytest.skip(why)
    with live_cluster(tmp_path, lambda server: add_node(server, "kubernetes-3")) as live:
        yield live
        assert probe_objects(live.server) == []


def test_data_plane_icmp_dropped(cluster3: Any) -> None:
    """kubernetes-2's probe drops ICMP from kubernetes-1's: both directions of that pair
    lose their pings (the replies too), the other four pairs work, every name resolves."""
    cluster = cluster3
    dp = cluster.dp
    blocked: list[str] = []

    def executor(req: Any) -> Any:
        # Block ICMP from the kubernetes-1 probe to the kubernetes-2 probe once both exist.
        if req.command[:1] == ["ping"] and not blocked:
            pods = {
                p["spec"]["nodeName"]: p["metadata"]["name"]
                for p in cluster.server.list_objects("v1", "pods", PROBE_NS)
            }
            dp.block_icmp(
                f"{PROBE_NS}/{pods['kubernetes-1']}", f"{PROBE_NS}/{pods['kubernetes-2']}"
            )
            blocked.append("yes")
        return dp.execute(req)

    cluster.server.executor = executor
    code, report, _err = cluster.check_json("--only", CHECK)
    result = result_of(report, CHECK)
    assert (code, result["status"]) == (2, "fail"), result
    messages = [f["message"] for f in result["findings"]]
    assert len(messages) == 2, messages
    assert messages[0].startswith(
        "probe-kubernetes-1 on kubernetes-1 cannot ping probe-kubernetes-2 on kubernetes-2"
    )
    assert messages[1].startswith(
        "probe-kubernetes-2 on kubernetes-2 cannot ping probe-kubernetes-1 on kubernetes-1"
    )
    assert all("the name resolves, but ICMP is lost (2 sent, 0 received)" in m for m in messages)
    rows = result["evidence"]["matrix"]["rows"]
    assert [r["status"] for r in rows] == [
        [None, "fail", "ok"],
        ["fail", None, "ok"],
        ["ok", "ok", None],
    ]


def test_data_plane_dns_stopped(cluster: Any) -> None:
    cluster.dp.stop_dns()
    _code, report, _err = cluster.check_json("--only", CHECK)
    result = result_of(report, CHECK)
    assert result["status"] == "fail"
    (finding,) = result["findings"]
    assert finding["message"].startswith("no probe resolves any other probe's name")
    assert finding["caused_by"] == "cluster.dns.kube-dns"
