"""The fake API server behaves like kube-apiserver for kubectl and the kubernetes client.

Other tests trust this server to stand in for a cluster, so these tests pin the protocol
details those clients depend on: discovery, pagination, selectors, patch dialects,
preconditions, Status errors, controller-like pod replacement and injected faults.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import ApiServer
from tests.apiserver.faults import parse_fault_spec
from tests.apiserver.patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from tests.apiserver.resources import lookup
from tests.apiserver.selectors import SelectorError, parse_field_selector, parse_label_selector
from tests.conftest import KUBECTL, KUBECTL_MISSING

REPO = Path(__file__).resolve().parent.parent
BUNDLE = REPO / "fixtures" / "bundles" / "apiserver-sample"
TOKEN = "kdoctor-test-token"
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason=KUBECTL_MISSING)

KUBE_SYSTEM_PODS = [
    "etcd-kubernetes-0",
    "kube-apiserver-kubernetes-0",
    "kube-dns-3913472980-x7b4w",
    "kube-proxy-2jzmm",
    "kube-proxy-t2z0r",
    "weave-net-0lrg1",
    "weave-net-qrl14",
]


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def server() -> Iterator[ApiServer]:
    """A fresh server for tests that change the cluster."""
    with ApiServer(BUNDLE) as srv:
        yield srv
    assert srv.errors == []  # no request crashed the fake server


@pytest.fixture(scope="module")
def module_server() -> Iterator[ApiServer]:
    with ApiServer(BUNDLE) as srv:
        yield srv
    assert srv.errors == []


@pytest.fixture
def ro_server(module_server: ApiServer) -> ApiServer:
    """The module's shared server, for tests that only read (its request log is cleared)."""
    module_server.clear_requests()
    module_server.faults.clear()
    return module_server


@pytest.fixture
def kubeconfig(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    name = "ro_server" if "ro_server" in request.fixturenames else "server"
    srv: ApiServer = request.getfixturevalue(name)
    return srv.write_kubeconfig(tmp_path / "kubeconfig")


class Kubectl:
    """Runs the real kubectl against the test server with an isolated cache."""

    def __init__(self, kubeconfig: Path, cache: Path) -> None:
        self.base = [str(KUBECTL), f"--kubeconfig={kubeconfig}", f"--cache-dir={cache}"]

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            env={**os.environ, "HOME": str(Path(self.base[2].split("=", 1)[1]).parent)},
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        proc = self(*args, stdin=stdin)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-o", "json"))


@pytest.fixture
def kubectl(kubeconfig: Path, tmp_path: Path) -> Kubectl:
    if KUBECTL is None:
        pytest.skip(KUBECTL_MISSING)
    return Kubectl(kubeconfig, tmp_path / "kube-cache")


@pytest.fixture
def k8s(kubeconfig: Path) -> Iterator[Any]:
    """A kubernetes.client.ApiClient configured from the written kubeconfig."""
    from kubernetes import config

    new_client: Any = config.new_client_from_config
    api = new_client(config_file=str(kubeconfig))
    try:
        yield api
    finally:
        api.close()


def raw(
    server: ApiServer,
    method: str,
    path: str,
    body: Any = None,
    *,
    content_type: str = "application/json",
    token: str | None = TOKEN,
    accept: str = "application/json",
) -> tuple[int, Any]:
    """One HTTP request; returns the status and the decoded JSON (or text) body."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Accept": accept, "Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    ctx = ssl.create_default_context(cafile=str(server.ca_file)) if server.tls else None
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def names(body: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in body["items"]]


# ---------------------------------------------------------------------------- kubectl


@needs_kubectl
def test_kubectl_version_reports_the_bundle_server_version(
    kubectl: Kubectl, ro_server: ApiServer
) -> None:
    out = json.loads(kubectl.ok("version", "-o", "json"))
    assert out["serverVersion"]["gitVersion"] == "v1.6.1"
    assert out["serverVersion"]["minor"] == "6"


@needs_kubectl
def test_kubectl_get_nodes_prints_server_side_table(kubectl: Kubectl, ro_server: ApiServer) -> None:
    out = kubectl.ok("get", "nodes")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    assert lines[1].split()[:3] == ["kubernetes-0", "Ready", "master"]
    assert lines[2].split()[:3] == ["kubernetes-1", "Ready", "<none>"]


@needs_kubectl
def test_kubectl_get_pods_all_namespaces_json(kubectl: Kubectl, ro_server: ApiServer) -> None:
    out = kubectl.json("get", "pods", "-A")
    assert out["kind"] == "List"
    assert len(out["items"]) == 8
    assert {i["kind"] for i in out["items"]} == {"Pod"}
    assert any(r.path == "/api/v1/pods" for r in ro_server.requests)


@needs_kubectl
def test_kubectl_chunked_list_uses_limit_and_continue(
    kubectl: Kubectl, ro_server: ApiServer
) -> None:
    out = kubectl.json("get", "pods", "-n", "kube-system", "--chunk-size=2")
    assert names(out) == KUBE_SYSTEM_PODS
    lists = ro_server.requests_matching(path="/api/v1/namespaces/kube-system/pods", verb="list")
    assert [r.query.get("limit") for r in lists] == ["2"] * 4
    assert "continue" not in lists[0].query
    assert all("continue" in r.query for r in lists[1:])


@needs_kubectl
def test_kubectl_field_and_label_selectors(kubectl: Kubectl, ro_server: ApiServer) -> None:
    on_node = kubectl.json("get", "pods", "-A", "--field-selector", "spec.nodeName=kubernetes-1")
    assert sorted(names(on_node)) == ["busybox", "kube-proxy-t2z0r", "weave-net-0lrg1"]
    proxies = kubectl.json("get", "pods", "-n", "kube-system", "-l", "component=kube-proxy")
    assert names(proxies) == ["kube-proxy-2jzmm", "kube-proxy-t2z0r"]
    queries = [r.query for r in ro_server.requests]
    assert {"fieldSelector": "spec.nodeName=kubernetes-1", "limit": "500"} in queries
    assert {"labelSelector": "component=kube-proxy", "limit": "500"} in queries


@needs_kubectl
def test_kubectl_reports_unsupported_field_label(kubectl: Kubectl, ro_server: ApiServer) -> None:
    proc = kubectl("get", "pods", "-A", "--field-selector", "spec.foo=bar")
    assert proc.returncode != 0
    assert "field label not supported: spec.foo" in proc.stderr


@needs_kubectl
def test_kubectl_patch_types(kubectl: Kubectl, server: ApiServer) -> None:
    command = [
        "/usr/local/bin/kube-proxy",
        "--kubeconfig=/var/lib/kube-proxy/kubeconfig.conf",
        "--proxy-mode=userspace",
    ]
    spec = {
        "spec": {"template": {"spec": {"containers": [{"name": "kube-proxy", "command": command}]}}}
    }
    before = server.get_object("apps/v1", "daemonsets", "kube-system", "kube-proxy")
    assert before is not None
    out = kubectl.ok(
        "patch", "ds", "kube-proxy", "-n", "kube-system", "--type=strategic", "-p", json.dumps(spec)
    )
    assert out.strip() == "daemonset.apps/kube-proxy patched"
    ds = server.get_object("apps/v1", "daemonsets", "kube-system", "kube-proxy")
    assert ds is not None
    container = ds["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == command
    assert (
        container["image"] == "gcr.io/google_containers/kube-proxy-amd64:v1.6.1"
    )  # merged by name
    assert ds["metadata"]["generation"] == 2
    assert int(ds["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])

    again = kubectl.ok(
        "patch", "ds", "kube-proxy", "-n", "kube-system", "--type=strategic", "-p", json.dumps(spec)
    )
    assert "(no change)" in again

    kubectl.ok(
        "patch",
        "ds",
        "kube-proxy",
        "-n",
        "kube-system",
        "--type=merge",
        "-p",
        '{"metadata":{"labels":{"fixed":"yes"}}}',
    )
    ops = '[{"op":"add","path":"/metadata/annotations/kdoctor","value":"repaired"}]'
    kubectl.ok("patch", "ds", "kube-proxy", "-n", "kube-system", "--type=json", "-p", ops)
    ds = server.get_object("apps/v1", "daemonsets", "kube-system", "kube-proxy")
    assert ds is not None
    assert ds["metadata"]["labels"]["fixed"] == "yes"
    assert ds["metadata"]["annotations"]["kdoctor"] == "repaired"
    patches = server.requests_matching(method="PATCH")
    assert [r.headers["content-type"] for r in patches] == [
        "application/strategic-merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/merge-patch+json",
        "application/json-patch+json",
    ]

    failed = kubectl(
        "patch",
        "ds",
        "kube-proxy",
        "-n",
        "kube-system",
        "--type=json",
        "-p",
        '[{"op":"test","path":"/metadata/name","value":"x"}]',
    )
    assert failed.returncode != 0
    assert "the server rejected our request due to an error in our request" in failed.stderr
    assert server.requests[-1].status == 422


@needs_kubectl
def test_kubectl_delete_daemonset_pod_is_replaced_from_the_patched_template(
    kubectl: Kubectl, server: ApiServer
) -> None:
    def add_flag(ds: dict[str, Any]) -> None:
        ds["spec"]["template"]["spec"]["containers"][0]["command"].append("--v=4")

    server.mutate_object("apps/v1", "daemonsets", "kube-system", "kube-proxy", add_flag)
    old = server.get_object("v1", "pods", "kube-system", "kube-proxy-2jzmm")
    assert old is not None
    out = kubectl.ok("delete", "pod", "-n", "kube-system", "kube-proxy-2jzmm")
    assert out.strip() == 'pod "kube-proxy-2jzmm" deleted from kube-system namespace'
    assert server.get_object("v1", "pods", "kube-system", "kube-proxy-2jzmm") is None
    pods = server.list_objects("v1", "pods", "kube-system")
    fresh = [
        p
        for p in pods
        if p["metadata"]["name"].startswith("kube-proxy-")
        and p["spec"]["nodeName"] == "kubernetes-0"
    ]
    assert len(fresh) == 1
    new = fresh[0]
    assert new["metadata"]["name"] != "kube-proxy-2jzmm"
    assert len(new["metadata"]["name"]) == len("kube-proxy-") + 5
    assert new["metadata"]["generateName"] == "kube-proxy-"
    assert new["metadata"]["uid"] != old["metadata"]["uid"]
    assert new["metadata"]["ownerReferences"] == old["metadata"]["ownerReferences"]
    assert new["spec"]["containers"][0]["command"][-1] == "--v=4"
    assert new["status"]["phase"] == "Running"
    assert all(c["ready"] and c["restartCount"] == 0 for c in new["status"]["containerStatuses"])
    assert {c["type"]: c["status"] for c in new["status"]["conditions"]}["Ready"] == "True"


@needs_kubectl
def test_kubectl_delete_bare_pod_is_gone(kubectl: Kubectl, server: ApiServer) -> None:
    kubectl.ok("delete", "pod", "busybox")
    assert server.list_objects("v1", "pods", "default") == []
    assert "busybox" not in kubectl.ok("get", "pods", "-A", "-o", "name")


@needs_kubectl
def test_kubectl_apply_then_delete_by_label_rolls_kube_proxy(
    kubectl: Kubectl, server: ApiServer
) -> None:
    """The classic manual fix: edit the DaemonSet's command, then delete its pods."""
    doc = kubectl.json("get", "ds", "-n", "kube-system", "-l", "component=kube-proxy")
    doc["items"][0]["spec"]["template"]["spec"]["containers"][0]["command"].append(
        "--proxy-mode=userspace"
    )
    assert "configured" in kubectl.ok("apply", "-f", "-", stdin=json.dumps(doc))
    kubectl.ok("delete", "pods", "-n", "kube-system", "-l", "component=kube-proxy")
    pods = kubectl.json("get", "pods", "-n", "kube-system", "-l", "component=kube-proxy")
    assert len(pods["items"]) == 2
    assert not set(names(pods)) & {"kube-proxy-2jzmm", "kube-proxy-t2z0r"}
    assert {p["spec"]["nodeName"] for p in pods["items"]} == {"kubernetes-0", "kubernetes-1"}
    for pod in pods["items"]:
        assert pod["spec"]["containers"][0]["command"][-1] == "--proxy-mode=userspace"


@needs_kubectl
def test_kubectl_logs(kubectl: Kubectl, ro_server: ApiServer) -> None:
    out = kubectl.ok("logs", "-n", "kube-system", "kube-proxy-2jzmm", "--tail=1")
    assert out.startswith("I0410 08:51:28.202702       1 conntrack.go:81] Set sysctl")
    assert out.endswith("nf_conntrack_tcp_timeout_close_wait' to 3600\n") and out.count("\n") == 1
    dns = kubectl.ok("logs", "-n", "kube-system", "kube-dns-3913472980-x7b4w", "-c", "dnsmasq")
    assert "started, version 2.76" in dns


# ---------------------------------------------------------------------------- python client


def test_python_client_version(k8s: Any, ro_server: ApiServer) -> None:
    from kubernetes import client

    info = client.VersionApi(k8s).get_code()
    assert info.git_version == "v1.6.1"
    assert info.platform == "linux/amd64"


def test_python_client_paginates_with_limit_and_continue(k8s: Any, ro_server: ApiServer) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(k8s)
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        resp = core.list_namespaced_pod(
            "kube-system", limit=3, _continue=token, _preload_content=False
        )
        body = json.loads(resp.data)
        pages += 1
        seen += names(body)
        token = body["metadata"].get("continue")
        if not token:
            assert "remainingItemCount" not in body["metadata"]
            break
        assert body["metadata"]["remainingItemCount"] == len(KUBE_SYSTEM_PODS) - len(seen)
    assert seen == KUBE_SYSTEM_PODS
    assert pages == 3
    lists = ro_server.requests_matching(verb="list")
    assert [("continue" in r.query, r.query["limit"]) for r in lists] == [
        (False, "3"),
        (True, "3"),
        (True, "3"),
    ]


def test_python_client_typed_list_and_get(k8s: Any, ro_server: ApiServer) -> None:
    from kubernetes import client

    core: Any = client.CoreV1Api(k8s)
    pods = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=kubernetes-0")
    assert {p.metadata.name for p in pods.items} >= {"kube-proxy-2jzmm", "etcd-kubernetes-0"}
    apps: Any = client.AppsV1Api(k8s)
    ds = apps.read_namespaced_daemon_set("kube-proxy", "kube-system")
    assert ds.spec.template.spec.containers[0].command[0] == "/usr/local/bin/kube-proxy"


def test_python_client_stale_resource_version_conflicts(k8s: Any, server: ApiServer) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    apps: Any = client.AppsV1Api(k8s)
    ds = apps.read_namespaced_daemon_set("kube-proxy", "kube-system")
    stale = ds.metadata.resource_version
    apps.patch_namespaced_daemon_set(
        "kube-proxy", "kube-system", {"metadata": {"labels": {"a": "1"}}}
    )
    with pytest.raises(ApiException) as err:
        apps.patch_namespaced_daemon_set(
            "kube-proxy",
            "kube-system",
            {"metadata": {"resourceVersion": stale, "labels": {"a": "2"}}},
        )
    assert err.value.status == 409
    status = json.loads(str(err.value.body))
    assert status["reason"] == "Conflict"
    assert status["message"] == (
        'Operation cannot be fulfilled on daemonsets.apps "kube-proxy": the object has been '
        "modified; please apply your changes to the latest version and try again"
    )
    assert status["details"] == {"name": "kube-proxy", "group": "apps", "kind": "daemonsets"}
    current = server.get_object("apps/v1", "daemonsets", "kube-system", "kube-proxy")
    assert current is not None and current["metadata"]["labels"]["a"] == "1"


@pytest.mark.parametrize("code", [401, 403, 500])
def test_python_client_sees_injected_status(k8s: Any, server: ApiServer, code: int) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    server.faults.set(status=code)
    with pytest.raises(ApiException) as err:
        client.CoreV1Api(k8s).list_namespaced_pod("kube-system")
    assert err.value.status == code
    status = json.loads(str(err.value.body))
    assert status["kind"] == "Status" and status["code"] == code
    if code == 403:
        assert status["message"] == (
            'pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group '
            '"" in the namespace "kube-system"'
        )
        assert status["reason"] == "Forbidden"
    if code == 401:
        assert status["reason"] == "Unauthorized"
    if code == 500:
        assert status["reason"] == "InternalError"


def test_python_client_timeout_on_delay_fault(k8s: Any, server: ApiServer) -> None:
    from kubernetes import client

    server.faults.set(delay=3.0)
    start = time.monotonic()
    with pytest.raises(Exception, match=r"(?i)timed? ?out"):
        client.CoreV1Api(k8s).list_namespaced_pod("kube-system", _request_timeout=0.2)
    assert time.monotonic() - start < 2.5
    server.faults.clear()
    assert client.CoreV1Api(k8s).list_namespaced_pod("kube-system").items


def test_python_client_truncated_json(k8s: Any, server: ApiServer) -> None:
    from kubernetes import client

    server.faults.set(truncate=True, resource="pods")
    core: Any = client.CoreV1Api(k8s)
    resp = core.list_namespaced_pod("kube-system", _preload_content=False)
    data = resp.data
    assert int(resp.headers["Content-Length"]) == len(data)
    with pytest.raises(ValueError):
        json.loads(data)


def test_python_client_watch_sees_changes(k8s: Any, server: ApiServer) -> None:
    from kubernetes import client, watch

    core: Any = client.CoreV1Api(k8s)
    pods = core.list_namespaced_pod("default")
    rv = pods.metadata.resource_version

    def change() -> None:
        time.sleep(0.3)
        server.mutate_object(
            "v1",
            "pods",
            "default",
            "busybox",
            lambda p: p["metadata"].setdefault("labels", {}).update(seen="1"),
        )

    threading.Thread(target=change).start()
    make_watch: Any = watch.Watch
    w = make_watch()
    events = []
    for event in w.stream(
        core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=3
    ):
        events.append(
            (event["type"], event["object"].metadata.name, event["object"].metadata.labels)
        )
        w.stop()
    assert events == [("MODIFIED", "busybox", {"run": "busybox", "seen": "1"})]


# ---------------------------------------------------------------------------- faults


def test_fault_scoping_by_verb_resource_path_and_times(server: ApiServer) -> None:
    server.faults.set(status=403, verb="list", resource="pods")
    status, body = raw(server, "GET", "/api/v1/pods")
    assert status == 403
    assert body["message"] == (
        'pods is forbidden: User "system:anonymous" cannot list resource "pods" in API group "" '
        "at the cluster scope"
    )
    assert raw(server, "GET", "/api/v1/namespaces/kube-system/pods/kube-proxy-2jzmm")[0] == 200
    assert raw(server, "GET", "/api/v1/nodes")[0] == 200

    server.faults.set(status=403, resource="daemonsets")
    status, body = raw(server, "GET", "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy")
    assert body["message"] == (
        'daemonsets.apps "kube-proxy" is forbidden: User "system:anonymous" cannot get resource '
        '"daemonsets" in API group "apps" in the namespace "kube-system"'
    )
    assert body["details"] == {"name": "kube-proxy", "group": "apps", "kind": "daemonsets"}

    server.faults.set(status=500, path=r"^/api/v1/nodes", times=1)
    assert raw(server, "GET", "/api/v1/nodes")[0] == 500
    assert raw(server, "GET", "/api/v1/nodes")[0] == 200
    server.faults.clear()
    assert raw(server, "GET", "/api/v1/pods")[0] == 200


def test_fault_spec_parsing() -> None:
    fault = parse_fault_spec("status=403,verb=list,resource=pods")
    assert (fault.status, fault.verb, fault.resource) == (403, "list", "pods")
    assert parse_fault_spec("hang").hang is True
    assert parse_fault_spec("delay=1.5,truncate").delay == 1.5
    assert parse_fault_spec("status=500,path=^/api/v1/(pods,nodes)").path == "^/api/v1/(pods,nodes)"
    with pytest.raises(ValueError):
        parse_fault_spec("bogus=1")


def test_hang_fault_does_not_block_stop() -> None:
    server = ApiServer(BUNDLE, tls=False).start()
    baseline = {t.ident for t in threading.enumerate()}
    server.faults.set(hang=True)
    outcome: list[str] = []

    def call() -> None:
        try:
            raw(server, "GET", "/api/v1/nodes")
            outcome.append("answered")
        except Exception as exc:
            outcome.append(type(exc).__name__)

    caller = threading.Thread(target=call)
    caller.start()
    time.sleep(0.3)
    assert outcome == []  # still hanging
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 2
    caller.join(5)
    assert outcome and outcome[0] != "answered"
    leftover = [t for t in threading.enumerate() if t.ident not in baseline and t.is_alive()]
    assert leftover == []


def test_stop_closes_idle_keepalive_connections_and_threads() -> None:
    before = set(threading.enumerate())
    server = ApiServer(BUNDLE).start()
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", server.port)), server_hostname="127.0.0.1"
    )
    sock.sendall(
        f"GET /version HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    silent = socket.create_connection(("127.0.0.1", server.port))  # never sends a ClientHello
    time.sleep(0.2)
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 2
    sock.close()
    silent.close()
    assert set(threading.enumerate()) <= before
    assert server.errors == []


# ---------------------------------------------------------------------------- protocol


def test_auth_and_discovery(ro_server: ApiServer) -> None:
    status, body = raw(ro_server, "GET", "/api/v1/pods", token=None)
    assert (status, body["reason"], body["message"]) == (401, "Unauthorized", "Unauthorized")
    assert raw(ro_server, "GET", "/api/v1/pods", token="wrong")[0] == 401
    assert raw(ro_server, "GET", "/api")[1]["versions"] == ["v1"]
    groups = raw(
        ro_server,
        "GET",
        "/apis",
        accept="application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
    )[1]
    assert groups["kind"] == "APIGroupList"
    assert [g["name"] for g in groups["groups"]] [:2] == ["apps", "discovery.k8s.io"]
    core = {r["name"]: r for r in raw(ro_server, "GET", "/api/v1")[1]["resources"]}
    for name in (
        "pods",
        "pods/log",
        "pods/exec",
        "services",
        "endpoints",
        "nodes",
        "namespaces",
        "configmaps",
        "secrets",
        "events",
    ):
        assert name in core
    assert core["pods"]["shortNames"] == ["po"] and core["nodes"]["namespaced"] is False
    assert core["pods"]["singularName"] == "pod" and "watch" in core["pods"]["verbs"]
    apps = {r["name"] for r in raw(ro_server, "GET", "/apis/apps/v1")[1]["resources"]}
    assert {"daemonsets", "deployments", "replicasets", "statefulsets"} <= apps
    assert (
        raw(ro_server, "GET", "/apis/discovery.k8s.io/v1")[1]["resources"][0]["name"]
        == "endpointslices"
    )
    version = raw(ro_server, "GET", "/version")[1]
    assert set(version) >= {
        "gitVersion",
        "gitCommit",
        "gitTreeState",
        "buildDate",
        "goVersion",
        "compiler",
        "platform",
        "major",
        "minor",
    }
    status, body = raw(ro_server, "GET", "/apis/nope.io/v1")
    assert (status, body["message"]) == (404, "the server could not find the requested resource")


def test_list_shape_and_items_without_type(ro_server: ApiServer) -> None:
    status, body = raw(ro_server, "GET", "/api/v1/nodes")
    assert status == 200
    assert (body["kind"], body["apiVersion"]) == ("NodeList", "v1")
    assert body["metadata"]["resourceVersion"] == str(ro_server.store.resource_version)
    assert "kind" not in body["items"][0] and "apiVersion" not in body["items"][0]
    obj = raw(ro_server, "GET", "/api/v1/nodes/kubernetes-0")[1]
    assert (obj["kind"], obj["apiVersion"]) == ("Node", "v1")
    ds = raw(ro_server, "GET", "/apis/apps/v1/daemonsets")[1]
    assert (ds["kind"], ds["apiVersion"], names(ds)) == (
        "DaemonSetList",
        "apps/v1",
        ["kube-proxy", "weave-net"],
    )


def test_pagination_edge_cases(server: ApiServer) -> None:
    base = "/api/v1/namespaces/kube-system/pods"
    body = raw(server, "GET", f"{base}?limit=100")[1]
    assert names(body) == KUBE_SYSTEM_PODS and "continue" not in body["metadata"]
    empty = raw(server, "GET", "/api/v1/namespaces/kube-public/pods?limit=2")[1]
    assert empty["items"] == [] and "continue" not in empty["metadata"]

    status, err = raw(server, "GET", f"{base}?limit=2&continue=not-a-token")
    assert (status, err["reason"]) == (400, "BadRequest")
    assert err["message"].startswith("continue key is not valid")

    first = raw(server, "GET", f"{base}?limit=2")[1]
    token = first["metadata"]["continue"]
    status, err = raw(server, "GET", f"{base}?limit=2&continue={token}&resourceVersion=5")
    assert (status, err["message"]) == (
        400,
        "specifying resource version is not allowed when using continue",
    )

    # The page after a change still comes from the snapshot of the first page.
    server.delete_object("v1", "pods", "kube-system", "kube-proxy-2jzmm")
    second = raw(server, "GET", f"{base}?limit=10&continue={token}")[1]
    assert names(second) == KUBE_SYSTEM_PODS[2:]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]

    server.compact()
    status, err = raw(server, "GET", f"{base}?limit=10&continue={token}")
    assert (status, err["reason"], err["code"]) == (410, "Expired", 410)
    assert err["message"].startswith("The provided continue parameter is too old")
    assert err["metadata"]["continue"]

    filtered = raw(server, "GET", f"{base}?limit=1&labelSelector=component%3Dkube-proxy")[1]
    assert names(filtered) == ["kube-proxy-t2z0r"]
    assert "continue" not in filtered["metadata"]
    weave = raw(server, "GET", f"{base}?limit=1&labelSelector=name%3Dweave-net")[1]
    assert weave["metadata"]["continue"] and "remainingItemCount" not in weave["metadata"]


def test_field_selectors_per_resource(ro_server: ApiServer) -> None:
    def listed(path: str) -> list[str]:
        status, body = raw(ro_server, "GET", path)
        assert status == 200, body
        return names(body)

    assert listed(
        "/api/v1/pods?fieldSelector=status.phase%3DRunning,metadata.namespace%3Ddefault"
    ) == ["busybox"]
    assert listed("/api/v1/pods?fieldSelector=status.podIP%3D10.32.0.2") == [
        "kube-dns-3913472980-x7b4w"
    ]
    assert listed("/api/v1/namespaces/default/pods?fieldSelector=metadata.name!%3Dbusybox") == []
    assert listed("/api/v1/events?fieldSelector=involvedObject.kind%3DNode") == [
        "kubernetes-1.14b3f2a1c0d9e8f7"
    ]
    assert len(listed("/api/v1/events?fieldSelector=type%3DWarning,reason%3DFailedScheduling")) == 1
    assert listed("/api/v1/secrets?fieldSelector=type%3Dkubernetes.io%2Fdockerconfigjson") == [
        "regcred"
    ]
    status, body = raw(ro_server, "GET", "/api/v1/nodes?fieldSelector=metadata.namespace%3Dx")
    assert (status, body["message"]) == (400, "field label not supported: metadata.namespace")
    status, body = raw(ro_server, "GET", "/api/v1/configmaps?fieldSelector=data.x%3D1")
    assert (status, body["reason"]) == (400, "BadRequest")


def test_label_selector_grammar() -> None:
    labels = {"app": "web", "tier": "front", "version": "3"}

    def sel(text: str) -> bool:
        return parse_label_selector(text)(labels)

    assert sel("app=web") and sel("app==web") and sel("app!=db") and sel("missing!=x")
    assert sel("app in (web, api),tier notin (back)") and sel("app") and sel("!missing")
    assert not sel("app=web,tier=back") and not sel("!app") and not sel("app notin (web)")
    assert sel("version>2") and not sel("version<2")
    assert sel("") and sel("  ")
    for bad in ("app in ()", "=web", "app=web,", "a b"):
        with pytest.raises(SelectorError):
            parse_label_selector(bad)
    pods = lookup("v1", "pods")
    assert parse_field_selector(pods, "spec.host=n1")({"spec": {"nodeName": "n1"}})
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.x"):
        parse_field_selector(pods, "spec.x=1")


def test_status_errors_and_create(server: ApiServer) -> None:
    status, body = raw(server, "GET", "/api/v1/namespaces/default/pods/nope")
    assert status == 404
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kdoctor"},
        "data": {"a": "b"},
    }
    status, created = raw(server, "POST", "/api/v1/namespaces/default/configmaps", cm)
    assert status == 201
    assert created["metadata"]["uid"] and created["metadata"]["creationTimestamp"]
    assert created["metadata"]["resourceVersion"] == str(server.store.resource_version)
    status, body = raw(server, "POST", "/api/v1/namespaces/default/configmaps", cm)
    assert (status, body["reason"], body["message"]) == (
        409,
        "AlreadyExists",
        'configmaps "kdoctor" already exists',
    )
    status, body = raw(server, "POST", "/api/v1/namespaces/missing/configmaps", cm)
    assert (status, body["message"]) == (404, 'namespaces "missing" not found')
    gen = {"metadata": {"generateName": "probe-"}, "data": {}}
    status, body = raw(server, "POST", "/api/v1/namespaces/default/configmaps", gen)
    assert (
        status == 201
        and body["metadata"]["name"].startswith("probe-")
        and len(body["metadata"]["name"]) == 11
    )
    status, body = raw(server, "POST", "/api/v1/namespaces/default/configmaps", {"metadata": {}})
    assert (status, body["reason"]) == (422, "Invalid")
    status, body = raw(
        server,
        "POST",
        "/api/v1/namespaces/default/configmaps?dryRun=All",
        {"metadata": {"name": "dry"}},
    )
    assert status == 201 and server.get_object("v1", "configmaps", "default", "dry") is None


def test_update_and_patch_preconditions(server: ApiServer) -> None:
    path = "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy"
    ds = raw(server, "GET", path)[1]
    rv = ds["metadata"]["resourceVersion"]
    ds["metadata"]["labels"]["x"] = "1"
    ds["status"]["numberReady"] = 0  # status changes through the main resource are ignored
    status, updated = raw(server, "PUT", path, ds)
    assert status == 200 and updated["metadata"]["labels"]["x"] == "1"
    assert updated["status"]["numberReady"] == 2
    assert int(updated["metadata"]["resourceVersion"]) > int(rv)
    status, body = raw(server, "PUT", path, ds)  # still carries the old resourceVersion
    assert (status, body["reason"]) == (409, "Conflict")
    ds["metadata"]["name"] = "other"
    status, body = raw(server, "PUT", path, ds)
    assert (status, body["message"]) == (
        400,
        "the name of the object (other) does not match the name on the URL (kube-proxy)",
    )

    status_path = path + "/status"
    status, body = raw(
        server,
        "PATCH",
        status_path,
        {"status": {"numberReady": 1}},
        content_type="application/merge-patch+json",
    )
    assert status == 200 and body["status"]["numberReady"] == 1

    current_rv = server.store.resource_version
    noop = raw(
        server,
        "PATCH",
        path,
        {"metadata": {"labels": {"x": "1"}}},
        content_type="application/merge-patch+json",
    )[1]
    assert server.store.resource_version == current_rv and noop["metadata"][
        "resourceVersion"
    ] == str(current_rv)
    status, body = raw(server, "PATCH", path, {"a": 1}, content_type="application/apply-patch+cbor")
    assert status == 415
    status, body = raw(
        server,
        "PATCH",
        path,
        [{"op": "remove", "path": "/spec/nope"}],
        content_type="application/json-patch+json",
    )
    assert (status, body["reason"], body["details"]) == (422, "Invalid", {})


def test_delete_preconditions_collection_and_cascade(server: ApiServer) -> None:
    path = "/api/v1/namespaces/default/pods/busybox"
    pod = raw(server, "GET", path)[1]
    status, body = raw(server, "DELETE", path, {"preconditions": {"uid": "wrong"}})
    assert (status, body["reason"]) == (409, "Conflict")
    assert (
        "Precondition failed: UID in precondition: wrong, UID in object meta: " in body["message"]
    )
    status, body = raw(server, "DELETE", path, {"preconditions": {"resourceVersion": "1"}})
    assert status == 409 and "ResourceVersion in precondition: 1" in body["message"]
    status, body = raw(server, "DELETE", path, {"preconditions": {"uid": pod["metadata"]["uid"]}})
    assert status == 200 and body["kind"] == "Pod" and body["metadata"]["deletionTimestamp"]
    assert raw(server, "GET", path)[0] == 404

    status, body = raw(
        server, "DELETE", "/api/v1/namespaces/kube-system/pods?labelSelector=name%3Dweave-net"
    )
    assert status == 200 and sorted(names(body)) == ["weave-net-0lrg1", "weave-net-qrl14"]
    weave = [
        p["metadata"]["name"]
        for p in server.list_objects("v1", "pods", "kube-system")
        if p["metadata"]["name"].startswith("weave-net-")
    ]
    assert len(weave) == 2 and not set(weave) & {"weave-net-0lrg1", "weave-net-qrl14"}

    status, body = raw(
        server, "DELETE", "/apis/apps/v1/namespaces/kube-system/deployments/kube-dns"
    )
    assert (status, body["status"], body["details"]["kind"]) == (200, "Success", "deployments")
    assert server.list_objects("apps/v1", "replicasets") == []  # garbage collected
    assert not [
        p for p in server.list_objects("v1", "pods") if p["metadata"]["name"].startswith("kube-dns")
    ]


def test_rolling_update_daemonset_replaces_its_pods(server: ApiServer) -> None:
    def rolling(ds: dict[str, Any]) -> None:
        ds["spec"]["updateStrategy"] = {"type": "RollingUpdate"}

    server.mutate_object("apps/v1", "daemonsets", "kube-system", "weave-net", rolling)
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "weave", "image": "weaveworks/weave-kube:2.0.1"}]}
            }
        }
    }
    path = "/apis/apps/v1/namespaces/kube-system/daemonsets/weave-net"
    status, _ = raw(
        server, "PATCH", path, patch, content_type="application/strategic-merge-patch+json"
    )
    assert status == 200
    weave = [
        p
        for p in server.list_objects("v1", "pods", "kube-system")
        if p["metadata"]["name"].startswith("weave-net-")
    ]
    assert len(weave) == 2
    assert not {p["metadata"]["name"] for p in weave} & {"weave-net-0lrg1", "weave-net-qrl14"}
    assert {p["spec"]["containers"][0]["image"] for p in weave} == {"weaveworks/weave-kube:2.0.1"}
    assert {p["metadata"]["labels"]["pod-template-generation"] for p in weave} == {"2"}
    # kube-proxy uses OnDelete: a template change leaves its pods alone.
    status, _ = raw(
        server,
        "PATCH",
        path.replace("weave-net", "kube-proxy"),
        {"spec": {"template": {"metadata": {"labels": {"x": "1"}}}}},
        content_type="application/merge-patch+json",
    )
    assert status == 200
    assert server.get_object("v1", "pods", "kube-system", "kube-proxy-2jzmm") is not None


def test_replicaset_pod_replacement_and_pending_start(tmp_path: Path) -> None:
    with ApiServer(BUNDLE, pod_start_delay=0.3) as server:
        status, _ = raw(
            server, "DELETE", "/api/v1/namespaces/kube-system/pods/kube-dns-3913472980-x7b4w"
        )
        assert status == 200
        (new,) = [
            p
            for p in server.list_objects("v1", "pods", "kube-system")
            if p["metadata"]["name"].startswith("kube-dns-")
        ]
        assert new["metadata"]["name"].startswith("kube-dns-3913472980-")
        assert new["status"]["phase"] == "Pending"
        log = raw(
            server,
            "GET",
            f"/api/v1/namespaces/kube-system/pods/{new['metadata']['name']}/log?container=kubedns",
        )
        assert log[0] == 400 and "is waiting to start: ContainerCreating" in log[1]["message"]
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            pod = server.get_object("v1", "pods", "kube-system", new["metadata"]["name"])
            if pod and pod["status"]["phase"] == "Running":
                break
            time.sleep(0.05)
        assert pod and pod["status"]["phase"] == "Running"
        assert [c["name"] for c in pod["status"]["containerStatuses"]] == [
            "kubedns",
            "dnsmasq",
            "sidecar",
        ]


def test_pod_logs(ro_server: ApiServer) -> None:
    base = "/api/v1/namespaces/kube-system/pods"
    status, body = raw(ro_server, "GET", f"{base}/kube-dns-3913472980-x7b4w/log")
    assert status == 400
    assert body["message"] == (
        "a container name must be specified for pod kube-dns-3913472980-x7b4w, choose one of: "
        "[kubedns dnsmasq sidecar]"
    )
    status, text = raw(
        ro_server, "GET", f"{base}/kube-dns-3913472980-x7b4w/log?container=kubedns&tailLines=1"
    )
    assert (
        status == 200
        and text == "I0410 08:54:02.315745       1 dns.go:264] New service: kubernetes\n"
    )
    assert raw(ro_server, "GET", f"{base}/kube-dns-3913472980-x7b4w/log?container=nope")[0] == 400
    assert raw(ro_server, "GET", f"{base}/weave-net-qrl14/log?container=weave") == (200, "")
    assert raw(ro_server, "GET", f"{base}/missing/log")[1]["message"] == 'pods "missing" not found'


def test_store_accessors_bump_resource_version(server: ApiServer) -> None:
    start = server.store.resource_version
    ds = server.get_object("apps/v1", "daemonsets", "kube-system", "kube-proxy")
    assert ds is not None
    ds["metadata"]["labels"]["edited"] = "yes"
    stored = server.put_object("apps/v1", "daemonsets", ds)
    assert int(stored["metadata"]["resourceVersion"]) == start + 1
    fetched = raw(server, "GET", "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy")[1]
    assert fetched["metadata"]["labels"]["edited"] == "yes"
    new_ns = server.put_object("v1", "namespaces", {"metadata": {"name": "team"}})
    assert new_ns["metadata"]["uid"] and new_ns["metadata"]["resourceVersion"] == str(start + 2)


def test_bundle_loading_fills_missing_parts(tmp_path: Path) -> None:
    cluster = tmp_path / "cluster"
    cluster.mkdir()
    (cluster / "version.json").write_text(json.dumps({"serverVersion": {"gitVersion": "v1.9.3"}}))
    pods = {
        "kind": "PodList",
        "apiVersion": "v1",
        "items": [
            {
                "metadata": {"name": "p", "namespace": "team"},
                "spec": {"containers": [{"name": "c"}]},
            }
        ],
    }
    (cluster / "pods.json").write_text(json.dumps(pods))
    with ApiServer(tmp_path, tls=False, token=None) as server:
        version = raw(server, "GET", "/version", token=None)[1]
        assert (version["major"], version["minor"], version["gitVersion"]) == ("1", "9", "v1.9.3")
        assert all(
            version[k]
            for k in ("gitCommit", "gitTreeState", "buildDate", "goVersion", "compiler", "platform")
        )
        pod = raw(server, "GET", "/api/v1/namespaces/team/pods/p", token=None)[1]
        assert (
            pod["kind"] == "Pod" and pod["metadata"]["uid"] and pod["metadata"]["resourceVersion"]
        )
        assert pod["metadata"]["creationTimestamp"]
        assert names(raw(server, "GET", "/api/v1/namespaces", token=None)[1]) == [
            "default",
            "kube-public",
            "kube-system",
            "team",
        ]
        assert raw(server, "GET", "/apis/apps/v1/deployments", token=None)[1]["items"] == []
    (cluster / "nodes.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"nodes\.json"):
        ApiServer(tmp_path)
    assert ApiServer(tmp_path, strict=False).load_errors


def test_plain_http_kubeconfig_for_python_client(tmp_path: Path) -> None:
    from kubernetes import client, config

    with ApiServer(BUNDLE, tls=False) as server:
        assert server.url.startswith("http://127.0.0.1:") and server.ca_file is None
        path = server.write_kubeconfig(tmp_path / "kc", context_name="plain")
        text = path.read_text()
        assert 'current-context: "plain"' in text and "certificate-authority" not in text
        new_client: Any = config.new_client_from_config
        api = new_client(config_file=str(path))
        try:
            assert len(client.CoreV1Api(api).list_node().items) == 2
        finally:
            api.close()


def test_kubeconfig_embeds_ca_when_asked(server: ApiServer, tmp_path: Path) -> None:
    text = server.write_kubeconfig(tmp_path / "kc", embed_ca=True).read_text()
    assert server.ca_file is not None
    assert base64.b64encode(server.ca_file.read_bytes()).decode() in text
    assert f'token: "{TOKEN}"' in text


# ---------------------------------------------------------------------------- patch dialects


def test_merge_patch_rfc7386() -> None:
    target = {"a": "b", "c": {"d": "e", "f": "g"}}
    assert merge_patch(target, {"a": "z", "c": {"f": None}}) == {"a": "z", "c": {"d": "e"}}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert merge_patch({"a": "b"}, ["c"]) == ["c"]


def test_json_patch_rfc6902() -> None:
    doc = {"foo": ["bar", "baz"], "x": {"y": 1}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/foo/1", "value": "qux"},
            {"op": "remove", "path": "/foo/0"},
            {"op": "replace", "path": "/x/y", "value": 2},
            {"op": "copy", "from": "/x", "path": "/z"},
            {"op": "move", "from": "/z/y", "path": "/w"},
            {"op": "add", "path": "/foo/-", "value": "end"},
            {"op": "test", "path": "/w", "value": 2},
            {"op": "add", "path": "/a~1b", "value": True},
        ],
    )
    assert out == {"foo": ["qux", "baz", "end"], "x": {"y": 2}, "z": {}, "w": 2, "a/b": True}
    assert doc == {"foo": ["bar", "baz"], "x": {"y": 1}}
    for ops in (
        [{"op": "test", "path": "/x/y", "value": 5}],
        [{"op": "remove", "path": "/nope"}],
        [{"op": "bogus", "path": "/x"}],
    ):
        with pytest.raises(PatchError) as err:
            json_patch(doc, ops)
        assert err.value.code == 422


def test_strategic_merge_patch_keys_and_directives() -> None:
    original = {
        "metadata": {"finalizers": ["a"]},
        "spec": {
            "containers": [
                {
                    "name": "one",
                    "image": "i1",
                    "env": [{"name": "A", "value": "1"}],
                    "ports": [{"containerPort": 80, "name": "http"}],
                    "args": ["x"],
                },
                {"name": "two", "image": "i2"},
            ],
            "volumes": [{"name": "v1", "emptyDir": {}}],
            "tolerations": [{"key": "k"}],
        },
    }
    patch = {
        "metadata": {"finalizers": ["b"]},
        "spec": {
            "containers": [
                {
                    "name": "one",
                    "env": [{"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "args": ["y"],
                },
                {"name": "two", "$patch": "delete"},
                {"name": "three", "image": "i3"},
            ],
            "$setElementOrder/containers": [{"name": "three"}, {"name": "one"}],
            "volumes": [{"name": "v1", "emptyDir": None, "hostPath": {"path": "/x"}}],
            "tolerations": [{"key": "other"}],
        },
    }
    out = strategic_merge_patch(original, patch)
    assert [c["name"] for c in out["spec"]["containers"]] == ["three", "one"]
    one = out["spec"]["containers"][1]
    assert one["image"] == "i1" and one["args"] == ["y"]
    assert one["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    assert one["ports"] == [{"containerPort": 80, "name": "http", "protocol": "TCP"}]
    assert out["spec"]["volumes"] == [{"name": "v1", "hostPath": {"path": "/x"}}]
    assert out["spec"]["tolerations"] == [{"key": "other"}]
    assert out["metadata"]["finalizers"] == ["a", "b"]
    replaced = strategic_merge_patch(original, {"spec": {"$patch": "replace", "volumes": []}})
    assert replaced["spec"] == {"volumes": []}
    svc = strategic_merge_patch(
        {"spec": {"ports": [{"port": 53, "protocol": "UDP"}]}},
        {"spec": {"ports": [{"port": 53, "name": "dns"}]}},
    )
    assert svc["spec"]["ports"] == [{"port": 53, "protocol": "UDP", "name": "dns"}]


# ---------------------------------------------------------------------------- CLI


def test_cli_runs_in_foreground_and_stops_on_sigterm(tmp_path: Path) -> None:
    kc = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.apiserver",
            "--bundle",
            str(BUNDLE),
            "--kubeconfig",
            str(kc),
            "--fault",
            "status=403,verb=list,resource=nodes",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("https://127.0.0.1:")
        from kubernetes import client, config
        from kubernetes.client.exceptions import ApiException

        new_client: Any = config.new_client_from_config
        api = new_client(config_file=str(kc))
        try:
            core: Any = client.CoreV1Api(api)
            with pytest.raises(ApiException) as err:
                core.list_node()
            assert err.value.status == 403
            assert len(core.list_namespaced_pod("kube-system").items) == 7
            # Faults of a CLI-run server can be changed over HTTP.
            cfg = api.configuration
            req = urllib.request.Request(
                url + "/_kdoctor/faults",
                method="DELETE",
                headers={"Authorization": cfg.api_key["BearerToken"]},
            )
            ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            with urllib.request.urlopen(req, context=ctx, timeout=5) as resp:
                assert json.loads(resp.read()) == []
            assert len(core.list_node().items) == 2
        finally:
            api.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------------------- protobuf bodies


@needs_kubectl
def test_kubectl_typed_create_and_drain_send_protobuf(kubectl: Kubectl, server: ApiServer) -> None:
    """kubectl's typed clients post protobuf; the kinds a doctor creates must still work."""
    kubectl.ok("create", "configmap", "kdoctor", "--from-literal=a=b", "-n", "default")
    assert server.requests[-1].headers["content-type"] == "application/vnd.kubernetes.protobuf"
    cm = server.get_object("v1", "configmaps", "default", "kdoctor")
    assert cm is not None and cm["data"] == {"a": "b"}
    kubectl.ok(
        "create", "secret", "docker-registry", "pull", "--docker-server=reg.example.com",
        "--docker-username=u", "--docker-password=p", "-n", "default",
    )  # fmt: skip
    secret = server.get_object("v1", "secrets", "default", "pull")
    assert secret is not None and secret["type"] == "kubernetes.io/dockerconfigjson"
    auths = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))["auths"]
    assert auths["reg.example.com"]["username"] == "u"
    failed = kubectl("create", "deployment", "web", "--image=nginx")
    assert failed.returncode != 0 and "not supported by this server" in failed.stderr

    out = kubectl.ok("drain", "kubernetes-1", "--ignore-daemonsets", "--force", "--timeout=10s")
    assert "node/kubernetes-1 drained" in out
    node = server.get_object("v1", "nodes", None, "kubernetes-1")
    assert node is not None and node["spec"]["unschedulable"] is True
    assert server.get_object("v1", "pods", "default", "busybox") is None
    evictions = [r for r in server.requests if r.subresource == "eviction"]
    assert [(r.method, r.name, r.status) for r in evictions] == [("POST", "busybox", 201)]
