"""pods/exec over WebSocket and the real data plane behind the test API server.

The exec protocol tests run anywhere (a custom executor stands in for containers). The data
plane tests need root, ip, busybox, dnsmasq and iptables: pods are network namespaces on a
bridge that lives in its own namespace, cluster DNS is dnsmasq, and kdoctor's side runs in a
"node" namespace. Teardown must leave nothing behind.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.exception
import dns.resolver
import pytest
import websocket
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from tests.apiserver import ApiServer
from tests.apiserver.dataplane import DataPlane
from tests.apiserver.execws import ExecRequest, ExecResult
from tests.conftest import KUBECTL, KUBECTL_MISSING

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "fixtures" / "bundles" / "apiserver-sample"
MISSING = DataPlane.missing_tools()


def needs_dataplane(fn: Any) -> Any:
    """Marked `root`; skipped with the reason when root or a tool is missing."""
    skip = pytest.mark.skipif(bool(MISSING), reason=f"data plane needs {', '.join(MISSING)}")
    return pytest.mark.root(skip(fn))


needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason=KUBECTL_MISSING)


def core_api(kubeconfig: Path) -> client.CoreV1Api:
    cfg = client.Configuration()
    config.load_kube_config(str(kubeconfig), client_configuration=cfg)  # type: ignore[no-untyped-call]
    return client.CoreV1Api(client.ApiClient(cfg))


def py_exec(
    api: client.CoreV1Api, ns: str, name: str, command: list[str], **kwargs: Any
) -> tuple[int | None, str, str]:
    """Exec as kdoctor's checks do: stream(..., _preload_content=False), run_forever."""
    resp = stream(
        api.connect_get_namespaced_pod_exec,
        name,
        ns,
        command=command,
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
        **kwargs,
    )
    resp.run_forever(timeout=30)
    out, err = resp.read_channel(1), resp.read_channel(2)
    code = resp.returncode
    resp.close()
    return code, out, err


def kubectl(kubeconfig: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert KUBECTL is not None
    return subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def body(manifest: dict[str, Any]) -> Any:
    """A plain dict as a request body (the typed client accepts dicts as they are)."""
    return manifest


def obj(server: ApiServer, resource: str, ns: str, name: str) -> dict[str, Any]:
    found = server.get_object("v1", resource, ns, name)
    assert found is not None, f"{resource} {ns}/{name} is missing"
    return found


def running_pod(server: ApiServer) -> tuple[str, str]:
    for pod in server.list_objects("v1", "pods"):
        if pod["status"].get("phase") == "Running" and len(pod["spec"]["containers"]) == 1:
            return pod["metadata"]["namespace"], pod["metadata"]["name"]
    raise AssertionError("the sample bundle has no single-container Running pod")


# ---------------------------------------------------------------------------- exec protocol


@pytest.fixture(scope="module")
def exec_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiServer, Path]]:
    with ApiServer(SAMPLE) as server:
        yield server, server.write_kubeconfig(tmp_path_factory.mktemp("exec") / "kubeconfig")


def echo_executor(req: ExecRequest) -> ExecResult:
    """Streams a line, then reports the command; `stdin` echoes stdin; `exit N` exits N."""
    req.write_stdout(b"streamed\n")
    if req.command[0] == "stdin":
        assert req.stdin is not None
        data = req.stdin.read()  # ends when the client closes stdin (v5) or goes away
        return ExecResult(0, stdout=b"got:" + data)
    if req.command[0] == "wait":  # runs until the client goes away or 3 s pass
        req.cancelled.wait(3)
        return ExecResult(0)
    if req.command[0] == "exit":
        return ExecResult(int(req.command[1]), stderr=b"failing\n")
    return ExecResult(0, stdout=f"{req.container}:{' '.join(req.command)}\n".encode())


def test_exec_without_data_plane_is_exit_126(exec_server: tuple[ApiServer, Path]) -> None:
    server, kubeconfig = exec_server
    ns, name = running_pod(server)
    code, out, err = py_exec(core_api(kubeconfig), ns, name, ["hostname"])
    assert (code, out, err) == (126, "", "no data plane\n")
    record = server.requests_matching(verb="get")[-1]
    assert (record.subresource, record.status) == ("exec", 101)
    assert record.query["command"] == "hostname"


def test_exec_python_client_streams_and_exit_codes(exec_server: tuple[ApiServer, Path]) -> None:
    server, kubeconfig = exec_server
    ns, name = running_pod(server)
    api = core_api(kubeconfig)
    server.executor = echo_executor
    try:
        code, out, err = py_exec(api, ns, name, ["sh", "-c", "echo hi"])
        container = obj(server, "pods", ns, name)["spec"]["containers"][0]["name"]
        assert (code, out, err) == (0, f"streamed\n{container}:sh -c echo hi\n", "")
        assert py_exec(api, ns, name, ["exit", "3"]) == (3, "streamed\n", "failing\n")
        # stdin with the v5 close signal: the command sees EOF
        resp = stream(
            api.connect_get_namespaced_pod_exec, name, ns, command=["stdin"],
            stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False,
        )  # fmt: skip
        assert resp.subprotocol == "v5.channel.k8s.io"
        resp.write_stdin("hello ")
        resp.write_stdin("world")
        resp.close_channel(0)
        resp.run_forever(timeout=10)
        assert resp.read_channel(1) == "streamed\ngot:hello world"
        assert resp.returncode == 0
    finally:
        server.executor = __import__("tests.apiserver.execws", fromlist=["x"]).no_data_plane


def ws_connect(server: ApiServer, path: str, protocols: str | None) -> websocket.WebSocket:
    ws = websocket.WebSocket(
        sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": str(server.ca_file)}
    )
    header = [f"Authorization: Bearer {server.token}"]
    if protocols is not None:
        header.append(f"Sec-WebSocket-Protocol: {protocols}")
    ws.connect(server.url.replace("https://", "wss://") + path, header=header)  # type: ignore[no-untyped-call]
    return ws


def ws_frames(ws: websocket.WebSocket) -> list[tuple[int, bytes]]:
    frames: list[tuple[int, bytes]] = []
    while True:
        op, frame = ws.recv_data_frame(True)
        if op == websocket.ABNF.OPCODE_CLOSE:
            return frames
        frames.append((op, frame.data))


def test_exec_protocol_versions_on_the_wire(exec_server: tuple[ApiServer, Path]) -> None:
    server, _ = exec_server
    ns, name = running_pod(server)
    server.executor = echo_executor
    base = (
        f"/api/v1/namespaces/{ns}/pods/{name}/exec?command=exit&command=2&stdout=true&stderr=true"
    )
    try:
        # pings are answered while the command runs; closing ends the command
        ws = ws_connect(server, base.replace("command=exit&command=2", "command=wait"), None)
        assert ws.recv_data_frame(True)[1].data == b"\x01streamed\n"
        ws.ping(b"are-you-there")
        op, frame = ws.recv_data_frame(True)
        assert (op, frame.data) == (websocket.ABNF.OPCODE_PONG, b"are-you-there")
        started = time.monotonic()
        ws.close()
        ws = ws_connect(server, base, "v4.channel.k8s.io")
        assert time.monotonic() - started < 2
        assert (ws.getheaders() or {})["sec-websocket-protocol"] == "v4.channel.k8s.io"
        data = [d for o, d in ws_frames(ws) if o == websocket.ABNF.OPCODE_BINARY]
        assert data[:2] == [b"\x01streamed\n", b"\x02failing\n"]
        assert json.loads(data[2][1:]) == {
            "metadata": {},
            "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command "
            "[exit 2], exit code 2",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "2"}]},
        }
        assert data[2][0] == 3
        ws = ws_connect(
            server, base.replace("command=exit&command=2", "command=ok"), "v4.channel.k8s.io"
        )
        assert ws_frames(ws)[-1][1] == b'\x03{"metadata":{},"status":"Success"}'
        # channel.k8s.io: the error channel carries the text only
        ws = ws_connect(server, base, "channel.k8s.io")
        assert ws_frames(ws)[-1][1].startswith(b"\x03command terminated with non-zero exit code")
        # base64.channel.k8s.io: text frames, "<channel digit><base64>"
        ws = ws_connect(server, base, "base64.channel.k8s.io")
        frames = ws_frames(ws)
        assert frames[0] == (websocket.ABNF.OPCODE_TEXT, b"1" + base64.b64encode(b"streamed\n"))
    finally:
        server.executor = __import__("tests.apiserver.execws", fromlist=["x"]).no_data_plane


def test_exec_errors_before_the_upgrade(exec_server: tuple[ApiServer, Path]) -> None:
    server, kubeconfig = exec_server
    ns, name = running_pod(server)
    pending = obj(server, "pods", ns, name)
    pending["metadata"] = {"name": "pending-exec", "namespace": ns}
    pending["status"] = {"phase": "Pending"}
    server.put_object("v1", "pods", pending)
    exec_path = f"/api/v1/namespaces/{ns}/pods/%s/exec?command=true&stdout=true"

    def handshake(
        pod: str, token: str | None = server.token, protocols: str = "v4.channel.k8s.io"
    ) -> tuple[int, dict[str, Any]]:
        ws = websocket.WebSocket(sslopt={"ca_certs": str(server.ca_file)})
        header = [f"Sec-WebSocket-Protocol: {protocols}"]
        if token:
            header.append(f"Authorization: Bearer {token}")
        with pytest.raises(websocket.WebSocketBadStatusException) as info:
            ws.connect(server.url.replace("https", "wss") + exec_path % pod, header=header)  # type: ignore[no-untyped-call]
        return info.value.status_code, json.loads(info.value.resp_body or b"{}")

    code, body = handshake("missing")
    assert (code, body["reason"], body["message"]) == (404, "NotFound", 'pods "missing" not found')
    code, body = handshake("pending-exec")
    assert code == 400 and body["reason"] == "BadRequest"
    assert "container not found" in body["message"]
    assert handshake(name, token="wrong")[0] == 401
    assert handshake(name, protocols="v9.channel.k8s.io")[0] == 400
    # without the WebSocket headers (e.g. a SPDY POST): "Upgrade request required"
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.port, context=ssl.create_default_context(cafile=str(server.ca_file))
    )
    conn.request("POST", exec_path % name, headers={"Authorization": f"Bearer {server.token}"})
    reply = conn.getresponse()
    body = json.loads(reply.read())
    conn.close()
    assert (reply.status, body["message"]) == (400, "Upgrade request required")
    api = core_api(kubeconfig)
    # the Python client turns a failed handshake into an ApiException
    with pytest.raises(ApiException):
        py_exec(api, ns, "missing", ["true"])


@needs_kubectl
def test_kubectl_exec_over_websocket(exec_server: tuple[ApiServer, Path]) -> None:
    server, kubeconfig = exec_server
    ns, name = running_pod(server)
    server.executor = echo_executor
    try:
        proc = kubectl(kubeconfig, "exec", "-n", ns, name, "--", "sh", "-c", "echo hi")
        assert (proc.returncode, proc.stdout) == (0, proc.stdout), proc.stderr
        assert proc.stdout.endswith(":sh -c echo hi\n") and proc.stdout.startswith("streamed\n")
        proc = kubectl(kubeconfig, "exec", "-n", ns, name, "--", "exit", "4")
        assert proc.returncode == 4
        assert "failing\n" in proc.stderr and "command terminated with exit code 4" in proc.stderr
    finally:
        server.executor = __import__("tests.apiserver.execws", fromlist=["x"]).no_data_plane
    protocols = [
        r.headers.get("sec-websocket-protocol")
        for r in server.requests
        if r.subresource == "exec" and r.user_agent.startswith("kubectl")
    ]
    assert protocols and all(p and p.startswith("v5.channel.k8s.io") for p in protocols)


# ---------------------------------------------------------------------------- data plane


class Lab:
    def __init__(self, server: ApiServer, dp: DataPlane, kubeconfig: Path) -> None:
        self.server = server
        self.dp = dp
        self.kubeconfig = kubeconfig
        self.api = core_api(kubeconfig)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    if MISSING:
        pytest.skip(f"data plane needs {', '.join(MISSING)}")
    server = ApiServer(SAMPLE)
    dp = DataPlane(server, exec_timeout=20)
    with dp:
        kubeconfig = server.write_kubeconfig(tmp_path_factory.mktemp("dp") / "kubeconfig")
        lab = Lab(server, dp, kubeconfig)
        # Two pods behind a headless Service "web", created through the API as users would.
        web = {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]}
        lab.api.create_namespaced_service(
            "default", body({"metadata": {"name": "web"}, "spec": web})
        )
        for name, node in (("a", "kubernetes-0"), ("b", "kubernetes-1")):
            spec = {
                "hostname": name,
                "subdomain": "web",
                "nodeName": node,
                "containers": [{"name": "box", "image": "busybox", "command": ["sleep", "3600"]}],
            }
            pod = {"metadata": {"name": name, "labels": {"app": "web"}}, "spec": spec}
            lab.api.create_namespaced_pod("default", body(pod))
        yield lab
        assert dp.errors == []
        assert server.errors == []
    assert dp.leftovers() == []


def nslookup(lab: Lab, pod: str, name: str, server: str | None = None) -> ExecResult:
    return lab.dp.exec("default", pod, ["nslookup", name] + ([server] if server else []))


def resolve(lab: Lab, name: str, server: str, lifetime: float = 2.0) -> list[str]:
    """dnspython from the node netns, as kdoctor's DNS checks query."""

    def query() -> list[str]:
        r = dns.resolver.Resolver(configure=False)
        r.nameservers = [server]
        r.lifetime = lifetime
        try:
            return sorted(a.to_text() for a in r.resolve(name, "A"))
        except dns.resolver.NXDOMAIN:
            return ["NXDOMAIN"]
        except dns.exception.Timeout:
            return ["TIMEOUT"]
        except dns.resolver.NoNameservers:
            return ["SERVFAIL/REFUSED"]

    return lab.dp.call_in_netns(lab.dp.node_netns, query)


@needs_dataplane
def test_pods_created_through_the_api_get_addresses(lab: Lab) -> None:
    a = lab.dp.wait_running("default", "a")
    b = lab.dp.wait_running("default", "b")
    ips = {a["status"]["podIP"], b["status"]["podIP"]}
    assert len(ips) == 2 and all(ip.startswith("10.44.") for ip in ips)
    assert a["status"]["phase"] == "Running" and a["spec"]["nodeName"] == "kubernetes-0"
    assert a["status"]["podIPs"] == [{"ip": a["status"]["podIP"]}]
    # the address is real: it is on eth0 of the pod's own namespace
    netns = lab.dp.netns_of("default", "a")
    shown = subprocess.run(["ip", "-n", netns, "-o", "-4", "addr", "show", "eth0"],
                           capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert f"{a['status']['podIP']}/16" in shown
    # what clients read agrees
    status = lab.api.read_namespaced_pod("a", "default").status
    assert status is not None and status.pod_ip == a["status"]["podIP"]


@needs_dataplane
def test_exec_runs_in_the_pod_through_python_client(lab: Lab) -> None:
    lab.dp.wait_running("default", "a")
    assert py_exec(lab.api, "default", "a", ["hostname"]) == (0, "a\n", "")
    code, out, _ = py_exec(lab.api, "default", "a", ["cat", "/etc/resolv.conf"])
    assert code == 0
    assert out == (
        "search default.svc.cluster.local svc.cluster.local cluster.local\n"
        "nameserver 10.96.0.10\noptions ndots:5\n"
    )
    assert py_exec(lab.api, "default", "a", ["sh", "-c", "echo oops >&2; exit 3"]) == (
        3, "", "oops\n",
    )  # fmt: skip
    code, out, _ = py_exec(lab.api, "default", "a", ["/bin/no-such-thing"])
    assert code == 126 and "executable file not found" in out
    # a pod with no netns (from the bundle, never attached) cannot run anything
    ns, name = running_pod(lab.server)
    if (ns, name) not in {("default", "a"), ("default", "b")}:
        code, _, err = py_exec(lab.api, ns, name, ["true"])
        assert code == 126 and "no network namespace" in err


@needs_dataplane
@needs_kubectl
def test_kubectl_exec_nslookup_in_a_pod(lab: Lab) -> None:
    lab.dp.wait_running("default", "b")
    proc = kubectl(lab.kubeconfig, "exec", "b", "--", "nslookup", "a.web.default.svc.cluster.local")
    assert proc.returncode == 0, proc.stderr
    assert lab.dp.ip_of("default", "a") in proc.stdout
    proc = kubectl(lab.kubeconfig, "exec", "b", "--", "sh", "-c", "hostname; exit 5")
    assert (proc.returncode, proc.stdout) == (5, "b\n")


@needs_dataplane
def test_ping_between_pods_and_block_icmp(lab: Lab) -> None:
    lab.dp.wait_running("default", "a")
    lab.dp.wait_running("default", "b")
    ip_b = lab.dp.ip_of("default", "b")
    ping = ["ping", "-c", "1", "-W", "1", ip_b]
    assert lab.dp.exec("default", "a", ping).exit_code == 0
    lab.dp.block_icmp("default/a", "default/b")
    try:
        result = lab.dp.exec("default", "a", ping)
        assert result.exit_code == 1 and b"100% packet loss" in result.stdout
        # only ICMP is dropped: DNS from a still works
        assert nslookup(lab, "a", "b.web.default.svc.cluster.local").exit_code == 0
    finally:
        lab.dp.unblock_icmp("default/a", "default/b")
    assert lab.dp.exec("default", "a", ping).exit_code == 0


@needs_dataplane
def test_nslookup_peers_via_service_ip_and_dns_pod_ip(lab: Lab) -> None:
    lab.dp.wait_running("default", "a")
    lab.dp.wait_running("default", "b")
    lab.dp.sync()
    assert len(lab.dp.dns_pod_ips) == 1
    dns_pod_ip = lab.dp.dns_pod_ips[0]
    for me, peer in (("a", "b"), ("b", "a")):
        fqdn = f"{peer}.web.default.svc.cluster.local"
        peer_ip = lab.dp.ip_of("default", peer)
        via_resolv = nslookup(lab, me, fqdn)  # the pod's /etc/resolv.conf -> Service IP
        assert via_resolv.exit_code == 0 and b"Server:\t\t10.96.0.10" in via_resolv.stdout
        assert f"Address: {peer_ip}".encode() in via_resolv.stdout
        via_pod = nslookup(lab, me, fqdn, dns_pod_ip)
        assert via_pod.exit_code == 0 and f"Address: {peer_ip}".encode() in via_pod.stdout
    # the headless Service name answers with both pods
    both = sorted([lab.dp.ip_of("default", "a"), lab.dp.ip_of("default", "b")])
    assert resolve(lab, "web.default.svc.cluster.local", "10.96.0.10") == sorted(both)
    # the kube-dns Endpoints point at the DNS pod, the Service at the Service IP
    ep = obj(lab.server, "endpoints", "kube-system", "kube-dns")
    assert [a["ip"] for a in ep["subsets"][0]["addresses"]] == [dns_pod_ip]
    svc = obj(lab.server, "services", "kube-system", "kube-dns")
    assert svc["spec"]["clusterIP"] == "10.96.0.10"


@needs_dataplane
def test_dnspython_from_the_node_netns(lab: Lab) -> None:
    assert resolve(lab, "kubernetes.default.svc.cluster.local", "10.96.0.10") == ["10.96.0.1"]
    assert resolve(lab, "kube-dns.kube-system.svc.cluster.local", lab.dp.dns_pod_ips[0]) == [
        "10.96.0.10"
    ]
    assert resolve(lab, "nope.default.svc.cluster.local", "10.96.0.10") == ["NXDOMAIN"]
    # a subprocess in the node netns (as kdoctor runs) reaches DNS and the API server
    code = (
        "import dns.resolver, sys\n"
        "from kubernetes import client, config\n"
        "r = dns.resolver.Resolver(configure=False); r.nameservers = ['10.96.0.10']\n"
        "print(r.resolve('kubernetes.default.svc.cluster.local', 'A')[0].to_text())\n"
        "config.load_kube_config(sys.argv[1])\n"
        "api = client.CoreV1Api()\n"
        "print(len(api.list_namespaced_pod('default').items))\n"
        "from kubernetes.stream import stream\n"
        "resp = stream(api.connect_get_namespaced_pod_exec, 'a', 'default', command=['hostname'],\n"
        "              stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)\n"
        "resp.run_forever(timeout=20)\n"
        "print(resp.read_channel(1).strip(), resp.returncode)\n"
    )
    proc = lab.dp.run_in_node([sys.executable, "-c", code, str(lab.kubeconfig)], timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == "10.96.0.1" and int(lines[1]) >= 2
    assert lines[2:] == ["a", "0"]  # exec through the API server's node-side listener


@needs_dataplane
def test_kdoctor_cli_runs_in_the_node_netns(lab: Lab) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = lab.dp.run_in_node(
        [sys.executable, "-m", "doctor", "check", "--scope", "cluster", "--only",
         "cluster.nodes", "--kubeconfig", str(lab.kubeconfig), "--format", "json"],
        env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    [check] = [c for c in report["checks"] if c["id"] == "cluster.nodes"]
    assert check["status"] not in ("error", "skipped"), check
    assert any(r.path == "/api/v1/nodes" for r in lab.server.requests)


@needs_dataplane
def test_fault_drop_dns_record(lab: Lab) -> None:
    fqdn = "a.web.default.svc.cluster.local"
    ip_a = lab.dp.ip_of("default", "a")
    assert resolve(lab, fqdn, "10.96.0.10") == [ip_a]
    lab.dp.drop_dns_record(fqdn)
    try:
        assert resolve(lab, fqdn, "10.96.0.10") == ["NXDOMAIN"]
        assert resolve(lab, fqdn, lab.dp.dns_pod_ips[0]) == ["NXDOMAIN"]
        result = nslookup(lab, "b", fqdn)
        assert result.exit_code == 1 and b"can't find" in result.stdout + result.stderr
    finally:
        lab.dp.restore_dns_record(fqdn)
    assert resolve(lab, fqdn, "10.96.0.10") == [ip_a]


@needs_dataplane
def test_fault_stop_and_start_dns(lab: Lab) -> None:
    name = "kubernetes.default.svc.cluster.local"
    lab.dp.stop_dns()
    try:
        assert resolve(lab, name, "10.96.0.10", lifetime=1) != ["10.96.0.1"]
        assert resolve(lab, name, lab.dp.dns_pod_ips[0], lifetime=1) != ["10.96.0.1"]
        assert nslookup(lab, "a", name).exit_code == 1
    finally:
        lab.dp.start_dns()
    assert resolve(lab, name, "10.96.0.10") == ["10.96.0.1"]
    assert nslookup(lab, "a", name).exit_code == 0


@needs_dataplane
@pytest.mark.parametrize("mode,symptom", [("drop", "timeout"), ("refuse", None)])
def test_fault_break_service_ip(lab: Lab, mode: str, symptom: str | None) -> None:
    name = "kubernetes.default.svc.cluster.local"
    dns_pod_ip = lab.dp.dns_pod_ips[0]
    lab.dp.break_service_ip(mode)
    try:
        # dnspython (unconnected UDP) times out either way
        assert resolve(lab, name, "10.96.0.10", lifetime=1) == ["TIMEOUT"]
        from_pod = nslookup(lab, "a", name)  # the pod's resolv.conf names the Service IP
        assert from_pod.exit_code == 1
        if symptom:
            assert b"timed out" in from_pod.stdout
        else:  # busybox's connected socket sees the ICMP port unreachable at once
            assert b"Connection refused" in from_pod.stderr
        assert resolve(lab, name, dns_pod_ip) == ["10.96.0.1"]
        assert nslookup(lab, "a", name, dns_pod_ip).exit_code == 0
    finally:
        lab.dp.restore_service_ip()
    assert resolve(lab, name, "10.96.0.10") == ["10.96.0.1"]


@needs_dataplane
def test_dns_follows_services_and_pod_deletion_removes_the_netns(lab: Lab) -> None:
    pod = lab.dp.create_pod("default", "tmp", labels={"app": "tmp"})
    ip = pod["status"]["podIP"]
    netns = lab.dp.netns_of("default", "tmp")
    spec = {"selector": {"app": "tmp"}, "clusterIP": "10.96.3.3", "ports": [{"port": 80}]}
    lab.api.create_namespaced_service("default", body({"metadata": {"name": "tmp"}, "spec": spec}))
    lab.dp.sync()
    assert resolve(lab, "tmp.default.svc.cluster.local", "10.96.0.10") == ["10.96.3.3"]
    lab.api.delete_namespaced_service("tmp", "default")
    lab.api.delete_namespaced_pod("tmp", "default")
    lab.dp.sync()
    assert resolve(lab, "tmp.default.svc.cluster.local", "10.96.0.10") == ["NXDOMAIN"]
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert netns not in listing
    assert not Path(f"/etc/netns/{netns}").exists()
    with pytest.raises(KeyError):
        lab.dp.netns_of("default", "tmp")
    # the address is free again and a new pod of the same name gets a fresh netns
    again = lab.dp.create_pod("default", "tmp")
    assert lab.dp.netns_of("default", "tmp") != netns
    assert again["status"]["podIP"].startswith("10.44.") and ip
    lab.api.delete_namespaced_pod("tmp", "default")
    lab.dp.sync()


@needs_dataplane
def test_teardown_leaves_nothing_behind(tmp_path: Path) -> None:
    """Other engineers' namespaces and dnsmasq may come and go meanwhile: compare only what
    this data plane made, and that the host gained no link."""

    def host_links() -> set[str]:
        out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
        return {line.split(":")[1].strip() for line in out.splitlines()}

    def netns() -> set[str]:
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        return {line.split()[0] for line in out.splitlines() if line.strip()}

    links_before = host_links()
    etc_netns_before = Path("/etc/netns").exists()
    with ApiServer(SAMPLE) as server:
        dp = DataPlane(server)
        with dp:
            dp.create_pod("default", "x")
            dp.create_pod("default", "y")
            dp.block_icmp("default/x", "default/y")
            dp.break_service_ip()
            mine = {n for n in netns() if dp.id in n}
            assert {dp.bridge_netns, dp.node_netns} <= mine and len(mine) == 5  # + x, y, DNS pod
            assert all(Path(f"/etc/netns/{dp.netns_of('default', p)}").is_dir() for p in "xy")
            pids = {str(pid) for pid in dp._dns_pids}
            assert len(pids) == 2  # Service IP and the DNS pod
            assert server.executor == dp.execute
            assert host_links() - links_before == set()  # nothing is made on the host
        assert dp.leftovers() == []
        assert not {n for n in netns() if dp.id in n}
        if not etc_netns_before:  # unless a parallel data plane is open meanwhile
            assert not Path("/etc/netns").exists() or any(
                "kdp-" in p.name for p in Path("/etc/netns").iterdir()
            )
        assert not any(dp.id in p.name for p in Path("/etc/netns").glob("*"))
        running = set(
            subprocess.run(["pidof", "dnsmasq"], capture_output=True, text=True).stdout.split()
        )
        assert not pids & running
        assert server.executor is not dp.execute
        # the host listener still serves; the node one is gone with its namespace
        assert core_api(server.write_kubeconfig(tmp_path / "kc")).list_namespace().items
    assert host_links() - links_before == set()


@needs_dataplane
def test_overlapping_data_planes_clean_up_etc_netns() -> None:
    """Two data planes at once, closed in creation order: the one that made /etc/netns
    closes first, and the last one out removes it."""
    etc = Path("/etc/netns")
    before = etc.exists()
    with ApiServer(SAMPLE, tls=False) as one, ApiServer(SAMPLE, tls=False) as two:
        first, second = DataPlane(one), DataPlane(two)
        try:
            first.open()
            second.open()
            assert first.dns_pod_ips == second.dns_pod_ips  # separate worlds, same addresses
            second.create_pod("default", "z")
            first.close()
            assert etc.is_dir() and any(second.id in p.name for p in etc.iterdir())
            assert second.exec("default", "z", ["hostname"]).stdout == b"z\n"
        finally:
            first.close()
            second.close()
        assert first.leftovers() == [] and second.leftovers() == []
    others = etc.exists() and any("kdp-" in p.name for p in etc.iterdir())
    if not before and not others:
        assert not etc.exists()
