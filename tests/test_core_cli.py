"""The command line contract: list, explain, usage errors, exit codes, formats, plugins."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BUNDLES, FIXTURES, REPO, check_json, kdoctor, validate_report

CONTRACT_NODE_IDS = {"node.iptables.reject", "node.firewalld", "node.docker.drift", "node.services"}


def test_list_names_every_contract_node_check_with_scope_and_fix_safety() -> None:
    proc = kdoctor("list", "--format", "json")
    assert proc.returncode == 0
    rows = {row["id"]: row for row in json.loads(proc.stdout)["checks"]}
    assert set(rows) >= CONTRACT_NODE_IDS
    assert rows["node.services"]["fix"] == "safe"
    assert rows["node.iptables.reject"]["fix"] == "unsafe"
    assert all(rows[i]["scope"] == "node" for i in CONTRACT_NODE_IDS)


def test_explain_prints_the_docstring_and_unknown_id_is_a_usage_error() -> None:
    proc = kdoctor("explain", "node.iptables.reject")
    assert proc.returncode == 0
    assert "node.iptables.reject" in proc.stdout and "fix: unsafe" in proc.stdout
    assert len(proc.stdout.splitlines()) > 5
    bad = kdoctor("explain", "node.no-such-check")
    assert bad.returncode == 3 and "unknown check id" in bad.stderr


@pytest.mark.parametrize(
    "args",
    [["check", "--format", "yaml"], ["check", "--only", "node.nope"], ["frobnicate"]],
)
def test_usage_errors_exit_3(args: list[str]) -> None:
    assert kdoctor(*args).returncode == 3


def test_fix_refuses_a_bundle() -> None:
    proc = kdoctor("fix", "--bundle", str(BUNDLES / "healthy-node"), "--yes")
    assert proc.returncode == 3
    assert "bundle" in proc.stderr


def test_healthy_bundle_is_ok_and_exit_0() -> None:
    code, report = check_json("--bundle", str(BUNDLES / "healthy-node"), "--scope", "node")
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert statuses, report
    assert set(statuses.values()) <= {"ok", "skip"}, statuses
    assert code == 0
    assert report["target"]["bundle"].endswith("healthy-node")


def test_exit_code_follows_worst_status_fail_over_error() -> None:
    code, report = check_json("--bundle", str(BUNDLES / "centos7-iptables-services"))
    statuses = [c["status"] for c in report["checks"]]
    assert "fail" in statuses
    assert code == 2 and report["status"] == "fail"


def test_cluster_checks_skip_naming_where_the_kubeconfig_was_looked_for(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "KUBECONFIG": ""}
    _code, report = check_json("--scope", "node", env=env)
    assert all(c["scope"] == "node" for c in report["checks"])
    # With every scope, the cluster checks (if any are registered) skip with the places tried.
    _code, report = check_json("--root", str(tmp_path), env=env)
    for check in report["checks"]:
        if check["scope"] == "cluster":
            assert check["status"] == "skip"
            assert str(tmp_path / ".kube" / "config") in check["summary"]
            assert "KUBECONFIG" in check["summary"]


def test_prometheus_output_parses_and_is_a_state_set(tmp_path: Path) -> None:
    out = tmp_path / "textfile" / "kdoctor.prom"
    out.parent.mkdir()  # --output writes into an existing directory
    proc = kdoctor(
        "check",
        "--bundle",
        str(BUNDLES / "centos7-iptables-services"),
        "--scope",
        "node",
        "--format",
        "prometheus",
        "--output",
        str(out),
    )
    assert proc.returncode == 2 and proc.stdout == ""
    families = {f.name: f for f in text_string_to_metric_families(out.read_text())}
    status = families["kdoctor_check_status"]
    per_check: dict[str, int] = {}
    for sample in status.samples:
        per_check[sample.labels["check"]] = per_check.get(sample.labels["check"], 0) + int(
            sample.value
        )
        assert sample.labels["status"] in {"ok", "warn", "fail", "skip", "error"}
    assert per_check and all(v == 1 for v in per_check.values())
    run = {s.labels["status"]: s.value for s in families["kdoctor_run_status"].samples}
    assert run["fail"] == 1 and sum(run.values()) == 1
    assert families["kdoctor_run_timestamp_seconds"].samples[0].value > 1.7e9
    assert not list(tmp_path.joinpath("textfile").glob(".*.tmp"))


def test_json_output_file_is_written_atomically_and_validates(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    proc = kdoctor(
        "check", "--bundle", str(BUNDLES / "healthy-node"), "--json", "--output", str(out)
    )
    assert proc.returncode == 0 and proc.stdout == ""
    validate_report(out.read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_text_output_is_plain_when_not_a_terminal() -> None:
    proc = kdoctor(
        "check", "--bundle", str(BUNDLES / "centos7-iptables-services"), "--scope", "node"
    )
    assert "\x1b[" not in proc.stdout
    assert "[✗] node.iptables.reject" in proc.stdout
    assert "kdoctor found issues" in proc.stdout


def test_node_only_run_does_not_import_kubernetes_or_textual() -> None:
    code = (
        "import sys\n"
        "from doctor.ui.cli import main\n"
        "rc = main(['check', '--scope', 'node', '--format', 'json', '--bundle', sys.argv[1]])\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'textual'))\n"
        "print('HEAVY=' + ','.join(heavy), file=sys.stderr)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(BUNDLES / "healthy-node")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert "HEAVY=\n" in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["checks"]


def test_example_plugin_is_listed_and_run_and_a_broken_one_is_reported(tmp_path: Path) -> None:
    target = tmp_path / "site"
    source = tmp_path / "example_plugin"  # build in a copy: setuptools writes build/ in-tree
    shutil.copytree(FIXTURES / "example_plugin", source)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    env = {"PYTHONPATH": f"{REPO}:{target}"}
    listing = kdoctor("list", "--format", "json", env=env)
    doc = json.loads(listing.stdout)
    ids = {row["id"] for row in doc["checks"]}
    assert {"node.example.hostname", "cluster.example.ping"} <= ids
    assert ids >= CONTRACT_NODE_IDS
    assert any("kdoctor_example_broken" in f["source"] for f in doc["load_failures"])
    assert "failed to load" in listing.stderr

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("kubernetes-1\n")
    code, report = check_json(
        "--root",
        str(root),
        "--only",
        "node.example.hostname,cluster.example.ping",
        env={**env, "HOME": str(tmp_path), "KUBECONFIG": ""},
    )
    assert [c["id"] for c in report["checks"]] == ["node.example.hostname", "cluster.example.ping"]
    assert report["checks"][0]["status"] == "ok"
    assert report["checks"][0]["summary"] == "hostname kubernetes-1"
    assert report["checks"][1]["status"] == "skip"
    assert "no cluster configuration found" in report["checks"][1]["summary"]
    assert code == 0
