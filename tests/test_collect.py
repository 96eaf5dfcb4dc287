"""``kdoctor collect``, cluster part, against the test API server (HTTPS + token).

The collected bundle must hold every cluster/ file of bundle-v1.md as a ``kind: List``
document, never a secret value, and make ``kdoctor check --bundle`` decide what the live run
decides.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doctor.facts.collect_cluster import collect_cluster
from tests.apiserver import ApiServer
from tests.conftest import BUNDLES, check_json, kdoctor
from tests.test_cluster_registry import secret_needles

LIST_FILES = [
    "nodes.json",
    "pods.json",
    "services.json",
    "endpoints.json",
    "endpointslices.json",
    "daemonsets.json",
    "deployments.json",
    "replicasets.json",
    "configmaps.json",
    "secrets.json",
    "events.json",
]
PULL_SECRET = "cluster.registry.pull-secret"


@pytest.fixture(scope="module")
def seed_server() -> Iterator[ApiServer]:
    with ApiServer(BUNDLES / "seed-lab-broken", tls=True) as server:
        yield server


@pytest.fixture(scope="module")
def collected(
    seed_server: ApiServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, Any]:
    """One `kdoctor collect` of the seed lab; (bundle, kubeconfig, CompletedProcess)."""
    tmp = tmp_path_factory.mktemp("collect")
    kubeconfig = seed_server.write_kubeconfig(tmp / "kubeconfig")
    root = tmp / "root"
    root.mkdir()
    bundle = tmp / "bundle"
    proc = kdoctor("collect", str(bundle), "--kubeconfig", str(kubeconfig), "--root", str(root))
    return bundle, kubeconfig, proc


def test_collect_writes_every_cluster_file_as_a_list(collected: tuple[Path, Path, Any]) -> None:
    bundle, _kubeconfig, proc = collected
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((bundle / "kdoctor-bundle.json").read_text())
    assert (manifest["format"], manifest["version"]) == ("kdoctor-bundle", 1)
    assert manifest["cluster"]["server"].startswith("https://127.0.0.1:")
    assert not [m for m in manifest["missing"] if m.startswith("cluster/") and ".json" in m]
    version = json.loads((bundle / "cluster" / "version.json").read_text())
    assert version["serverVersion"]["gitVersion"] == "v1.6.0"
    source = BUNDLES / "seed-lab-broken" / "cluster"
    for name in LIST_FILES:
        doc = json.loads((bundle / "cluster" / name).read_text())
        assert doc["kind"] == "List" and doc["apiVersion"] == "v1", name
        assert isinstance(doc["items"], list), name
        for item in doc["items"]:
            assert item["kind"] and item["apiVersion"] and item["metadata"]["name"], name
        if (source / name).is_file():
            expected = {
                (i["metadata"].get("namespace"), i["metadata"]["name"])
                for i in json.loads((source / name).read_text())["items"]
                if name != "configmaps.json" or i["metadata"].get("namespace") == "kube-system"
            }
            got = {(i["metadata"].get("namespace"), i["metadata"]["name"]) for i in doc["items"]}
            assert got == expected, name
    configmaps = json.loads((bundle / "cluster" / "configmaps.json").read_text())["items"]
    assert {c["metadata"]["namespace"] for c in configmaps} <= {"kube-system"}
    assert not list(bundle.rglob("*.part"))
    # kube-dns is stuck in ContainerCreating: its logs cannot be read, and the manifest says so
    waiting = [m for m in manifest["missing"] if m.startswith("cluster/logs/kube-system/kube-dns")]
    assert waiting and all("waiting to start" in m for m in waiting)


def test_no_secret_value_survives_anywhere_in_the_bundle(
    collected: tuple[Path, Path, Any],
) -> None:
    bundle, _kubeconfig, _proc = collected
    source = json.loads((BUNDLES / "seed-lab-broken" / "cluster" / "secrets.json").read_text())
    needles = secret_needles(source)
    assert "Nexus#2017pw" in needles and "Sup3r-DB-pass" in needles  # the scan is meaningful
    assert len(needles) > 20
    files = [p for p in bundle.rglob("*") if p.is_file()]
    assert len(files) > len(LIST_FILES)
    for path in files:
        data = path.read_bytes()
        leaked = [n for n in needles if n.encode() in data]
        assert not leaked, (path, leaked)
    # Hosts, user names and the structure survive, so the check still works.
    items = json.loads((bundle / "cluster" / "secrets.json").read_text())["items"]
    by_name = {s["metadata"]["name"]: s for s in items}
    assert by_name["default-token-1l9pq"]["data"] == {"ca.crt": "", "namespace": "", "token": ""}
    assert "kubectl.kubernetes.io/last-applied-configuration" not in json.dumps(by_name["app-db"])
    from doctor.parse.registry_auth import decode_pull_secret

    nexus = decode_pull_secret(by_name["nexus"], "default", "nexus")
    assert nexus.hosts == ["https://index.docker.io/v1/"]
    assert [e.username for e in nexus.entries] == ["jdupont"]
    assert nexus.entries[0].redacted


def _by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in report["checks"]}


def test_bundle_check_decides_like_the_live_check(collected: tuple[Path, Path, Any]) -> None:
    bundle, kubeconfig, _proc = collected
    _code, live = check_json("--kubeconfig", str(kubeconfig), "--scope", "cluster")
    _code, offline = check_json("--bundle", str(bundle), "--scope", "cluster")
    live_checks, bundle_checks = _by_id(live), _by_id(offline)
    assert set(live_checks) == set(bundle_checks)
    assert PULL_SECRET in live_checks
    compared = []
    for check_id, on_bundle in bundle_checks.items():
        on_live = live_checks[check_id]
        if on_bundle["status"] == "skip" and "bundle has no" not in on_bundle["summary"]:
            continue  # live-only (DNS queries, probe pods): skip on any bundle by design
        assert on_bundle["status"] == on_live["status"], (check_id, on_live, on_bundle)
        assert [f["message"] for f in on_bundle["findings"]] == [
            f["message"] for f in on_live["findings"]
        ], check_id
        compared.append(check_id)
    assert PULL_SECRET in compared
    assert bundle_checks[PULL_SECRET]["status"] == "fail"
    assert bundle_checks[PULL_SECRET]["fix"] == live_checks[PULL_SECRET]["fix"]
    assert (
        bundle_checks[PULL_SECRET]["findings"][0]["evidence"]
        == (live_checks[PULL_SECRET]["findings"][0]["evidence"])
    )


# -- in-process collects: logs, pagination, API errors, no cluster -----------------------


def _collect(out: Path, kubeconfig: Path | None) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    args = argparse.Namespace(
        kubeconfig=str(kubeconfig) if kubeconfig else None, context=None, timeout=10.0
    )
    return collect_cluster(out, args, {"format": "kdoctor-bundle", "version": 1, "missing": []})


def test_dns_logs_and_paginated_lists(tmp_path: Path) -> None:
    with ApiServer(BUNDLES / "modern-coredns", tls=True) as server:
        for i in range(1100):  # more than two pages of 500
            server.put_object(
                "v1",
                "configmaps",
                {"metadata": {"name": f"cm-{i:04d}", "namespace": "kube-system"}, "data": {}},
            )
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        manifest = _collect(tmp_path / "b", kubeconfig)
        lists = server.requests_matching(
            verb="list", path="/api/v1/namespaces/kube-system/configmaps"
        )
    assert [r.query.get("limit") for r in lists] == ["500", "500", "500"]
    assert [bool(r.query.get("continue")) for r in lists] == [False, True, True]
    names = [
        c["metadata"]["name"]
        for c in json.loads((tmp_path / "b/cluster/configmaps.json").read_text())["items"]
    ]
    assert len([n for n in names if n.startswith("cm-")]) == 1100
    assert len(names) == len(set(names))
    source_logs = BUNDLES / "modern-coredns" / "cluster" / "logs" / "kube-system"
    for source in source_logs.glob("coredns-*/coredns.log"):
        copied = tmp_path / "b/cluster/logs/kube-system" / source.parent.name / "coredns.log"
        assert copied.read_bytes() == source.read_bytes()
    assert not [m for m in manifest["missing"] if "coredns" in m]
    # the bundle reader sees them
    from doctor.facts.kube import BundleCluster

    cluster = BundleCluster(tmp_path / "b")
    pod = next(source_logs.glob("coredns-*")).name
    assert cluster.pod_log("kube-system", pod, "coredns")


def test_api_errors_are_listed_and_collect_goes_on(tmp_path: Path) -> None:
    with ApiServer(BUNDLES / "seed-lab-broken", tls=True) as server:
        server.faults.add(status=403, verb="list", resource="secrets")
        server.faults.add(status=500, verb="list", resource="events")
        server.faults.add(status=404, path="^/apis/[^/]+/[^/]+/daemonsets")
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        manifest = _collect(tmp_path / "b", kubeconfig)
        tried = {r.path for r in server.requests if r.path.endswith("/daemonsets")}
    missing = manifest["missing"]
    assert any(m.startswith("cluster/secrets.json: 403 Forbidden") for m in missing), missing
    assert any(m.startswith("cluster/events.json: API server error 500") for m in missing)
    assert any(
        m.startswith("cluster/daemonsets.json: not served by this API server (404 for apps/v1, "
                     "apps/v1beta2, extensions/v1beta1)")
        for m in missing
    ), missing  # fmt: skip
    assert tried == {
        "/apis/apps/v1/daemonsets",
        "/apis/apps/v1beta2/daemonsets",
        "/apis/extensions/v1beta1/daemonsets",
    }
    cluster = tmp_path / "b" / "cluster"
    for name in ("secrets.json", "events.json", "daemonsets.json"):
        assert not (cluster / name).exists()
    for name in ("pods.json", "nodes.json", "version.json", "deployments.json"):
        assert (cluster / name).is_file()
    written = json.loads((tmp_path / "b" / "kdoctor-bundle.json").read_text())
    assert written["missing"] == missing
    # the check on that bundle skips, naming the file, instead of deciding without secrets
    _code, report = check_json("--bundle", str(tmp_path / "b"), "--only", PULL_SECRET)
    assert report["checks"][0]["status"] == "skip"
    assert "cluster/secrets.json" in report["checks"][0]["summary"]


def test_rejected_credentials_stop_the_cluster_part_only(tmp_path: Path) -> None:
    with ApiServer(BUNDLES / "seed-lab-broken", tls=True) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        text = kubeconfig.read_text().replace(str(server.token), "wrong-token")
        kubeconfig.write_text(text)
        manifest = _collect(tmp_path / "b", kubeconfig)
        lists = server.requests_matching(verb="list")
    assert [m for m in manifest["missing"] if m.startswith("cluster/")] == [
        m for m in manifest["missing"] if "401 Unauthorized" in m
    ]
    assert len(manifest["missing"]) == 1 and manifest["missing"][0].startswith("cluster/: ")
    assert not lists
    assert not list((tmp_path / "b" / "cluster").glob("*.json"))


def test_no_cluster_configuration_leaves_the_node_bundle_alone(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "KUBECONFIG": "", "KUBERNETES_SERVICE_HOST": ""}
    proc = kdoctor("collect", str(tmp_path / "b"), "--root", str(root), env=env)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "b" / "kdoctor-bundle.json").read_text())
    [line] = [m for m in manifest["missing"] if m.startswith("cluster/")]
    assert "no cluster configuration found" in line
    assert not (tmp_path / "b" / "cluster").exists()
    assert "not collected: cluster/: no cluster configuration found" in proc.stdout


def test_kubeadm_config_bootstrap_tokens_are_redacted() -> None:
    from doctor.facts.collect_cluster import redact_configmap

    master = (
        "api:\n  advertiseAddress: 10.0.0.1\ntoken: 8a2b0c.1f3e5d7a9b2c4e6f\ntokenTTL: 24h0m0s\n"
        "bootstrapTokens:\n- token: abcdef.0123456789abcdef\n  ttl: 24h\n"
    )
    cm = {"metadata": {"name": "kubeadm-config"}, "data": {"MasterConfiguration": master}}
    out = redact_configmap(cm)["data"]["MasterConfiguration"]
    assert "8a2b0c.1f3e5d7a9b2c4e6f" not in out and "abcdef.0123456789abcdef" not in out
    assert "token: REDACTED\ntokenTTL: 24h0m0s" in out and "- token: REDACTED" in out
    assert cm["data"]["MasterConfiguration"] == master  # the input is not changed
    other = {"metadata": {"name": "coredns"}, "data": {"Corefile": "token: x"}}
    assert redact_configmap(other) is other
