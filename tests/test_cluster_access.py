"""Cluster access failures: each makes the cluster checks `error` with a clear reason while
the node checks still run. Against the test API server over HTTPS, through the CLI."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.apiserver import ApiServer
from tests.conftest import BUNDLES, check_json

BUNDLE = BUNDLES / "seed-lab-healthy"
API_ONLY = "cluster.nodes,cluster.kube-system.pods,cluster.network.cni,cluster.kube-proxy"


@pytest.fixture
def server() -> Iterator[ApiServer]:
    with ApiServer(BUNDLE) as srv:
        yield srv


def _cluster_results(report: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {c["id"]: c for c in report["checks"] if c["scope"] == "cluster"}


def _node_statuses(report: dict) -> set[str]:  # type: ignore[type-arg]
    return {c["status"] for c in report["checks"] if c["scope"] == "node"}


def test_target_names_context_server_and_version(server: ApiServer, tmp_path: Path) -> None:
    kcfg = server.write_kubeconfig(tmp_path / "kubeconfig", context_name="lab")
    code, report = check_json("--kubeconfig", str(kcfg), "--only", API_ONLY, "--no-probes")
    cluster = report["target"]["cluster"]
    assert cluster == {"context": "lab", "server": server.url, "version": "v1.6.0"}
    assert code == 0, report


def test_unreachable_server_is_an_error_and_node_checks_still_run(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    kcfg = tmp_path / "kubeconfig"
    kcfg.write_text(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n"
        f"    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\n"
        "users:\n- name: u\n  user:\n    token: t\ncontexts:\n- name: c\n  context:\n"
        "    cluster: c\n    user: u\ncurrent-context: c\n"
    )
    root = tmp_path / "root"
    root.mkdir()
    code, report = check_json("--kubeconfig", str(kcfg), "--root", str(root), "--no-probes")
    cluster = _cluster_results(report)
    assert cluster.pop("cluster.dns.pod-to-pod")["status"] == "skip"  # --no-probes
    assert cluster.pop("cluster.node-ports")["status"] == "skip"  # measured by `kdoctor fleet`
    assert cluster and all(c["status"] == "error" for c in cluster.values()), cluster
    assert all("is unreachable" in c["summary"] for c in cluster.values())
    assert _node_statuses(report)  # the node checks ran and reported
    assert report["target"]["cluster"]["version"] is None
    assert code in (2, 3)


def test_tls_failure_names_tls(server: ApiServer, tmp_path: Path) -> None:
    """A kubeconfig trusting another CA: the server's certificate is refused."""
    with ApiServer(BUNDLE, fresh_certs=True) as other:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        assert other.ca_file is not None and server.ca_file is not None
        kcfg.write_text(kcfg.read_text().replace(str(server.ca_file), str(other.ca_file)))
        code, report = check_json("--kubeconfig", str(kcfg), "--only", API_ONLY, "--no-probes")
    for check in _cluster_results(report).values():
        assert check["status"] == "error"
        assert "TLS failure" in check["summary"], check["summary"]
    assert code == 3


def test_truncated_json_is_an_error_not_a_false_ok(server: ApiServer, tmp_path: Path) -> None:
    kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
    server.faults.set(truncate=True, resource="nodes")
    code, report = check_json(
        "--kubeconfig", str(kcfg), "--only", "cluster.nodes,cluster.kube-proxy", "--no-probes"
    )
    nodes = _cluster_results(report)["cluster.nodes"]
    assert nodes["status"] == "error" and "invalid JSON" in nodes["summary"], nodes
    assert code == 3


def test_unknown_context_is_an_error_naming_it(server: ApiServer, tmp_path: Path) -> None:
    kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
    code, report = check_json(
        "--kubeconfig", str(kcfg), "--context", "nope", "--only", API_ONLY, "--no-probes"
    )
    for check in _cluster_results(report).values():
        assert check["status"] == "error"
        assert "cannot load cluster configuration" in check["summary"]
        assert "nope" in check["summary"]
    assert code == 3
