"""Honest verdicts (contract: checks-and-report-v1.md, "Added in 2026-12"): `ok` only on
evidence, usage errors exit 3 with one line and a hint, a run that decided nothing exits 3,
no traceback ever reaches a user. Everything runs through the CLI, as a user would."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.apiserver import ApiServer
from tests.conftest import BUNDLES, check_json, kdoctor, result_of
from tests.shims.fakesystemd import FakeSystemd

NO_CLUSTER_ENV = {"KUBECONFIG": ""}  # HOME is set per test: no ~/.kube/config is found
NODE_CHECKS = ("node.iptables.reject", "node.firewalld", "node.docker.drift", "node.services")


def no_cluster(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {**NO_CLUSTER_ENV, "HOME": str(home)}


def copy_bundle(src: Path, tmp_path: Path) -> Path:
    """A private copy of a fixture bundle (its absolute unit links kept as links)."""
    dst = tmp_path / "b"
    shutil.copytree(src, dst, symlinks=True)
    return dst


def usage_error(proc: Any) -> list[str]:
    """Exit 3, nothing on stdout, ``kdoctor: error: …`` and a hint on stderr; the lines."""
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert lines[0].startswith("kdoctor: error: "), proc.stderr
    assert len(lines) == 2 and lines[1].startswith("kdoctor: hint: "), proc.stderr
    return lines


# -- cluster access ------------------------------------------------------------------------


def test_a_kubeconfig_given_but_missing_is_a_usage_error(tmp_path: Path) -> None:
    proc = kdoctor("check", "--kubeconfig", str(tmp_path / "nonexistent"), env=no_cluster(tmp_path))
    error, hint = usage_error(proc)
    assert str(tmp_path / "nonexistent") in error and "no such file" in error
    assert "--kubeconfig" in hint
    assert proc.stdout == ""


def test_a_kubeconfig_that_is_a_directory_is_a_usage_error(tmp_path: Path) -> None:
    proc = kdoctor("check", "--kubeconfig", str(tmp_path), env=no_cluster(tmp_path))
    error, _hint = usage_error(proc)
    assert "not a file" in error


def test_kubeadm_admin_conf_is_found_under_the_root(tmp_path: Path) -> None:
    """No flag, no $KUBECONFIG, no ~/.kube/config: a control-plane node's
    /etc/kubernetes/admin.conf (read under --root) is the kubeconfig."""
    root = tmp_path / "root"
    (root / "etc/kubernetes").mkdir(parents=True)
    with ApiServer(BUNDLES / "seed-lab-healthy") as server:
        server.write_kubeconfig(root / "etc/kubernetes/admin.conf", context_name="kubeadm")
        _code, report = check_json(
            "--root", str(root), "--scope", "cluster", "--only", "cluster.nodes",
            env=no_cluster(tmp_path),
        )  # fmt: skip
        assert report["target"]["cluster"]["server"] == server.url
    assert result_of(report, "cluster.nodes")["status"] == "ok"


def test_no_kubeconfig_anywhere_skips_naming_admin_conf(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _code, report = check_json(
        "--root", str(root), "--only", "cluster.nodes", env=no_cluster(tmp_path)
    )
    result = result_of(report, "cluster.nodes")
    assert result["status"] == "skip"
    assert "/etc/kubernetes/admin.conf" in result["summary"]


# -- bundles -------------------------------------------------------------------------------


def test_bundle_on_a_directory_that_is_no_bundle_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a bundle\n")
    error, hint = usage_error(kdoctor("check", "--bundle", str(tmp_path)))
    assert "not a kdoctor bundle" in error and "kdoctor-bundle.json" in error
    assert "kdoctor collect" in hint


def test_bundle_on_a_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    path.write_text("x")
    error, _hint = usage_error(kdoctor("check", "--bundle", str(path)))
    assert "not a directory" in error


def test_an_empty_bundle_decides_nothing_and_exits_3(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "kdoctor-bundle.json").write_text(
        '{"format": "kdoctor-bundle", "version": 1, "node": "n"}'
    )
    code, report = check_json("--bundle", str(bundle))
    assert {c["status"] for c in report["checks"]} == {"skip"}
    assert code == 3
    assert report["status"] == "error"  # nothing was decided: UNKNOWN, never a green
    text = kdoctor("check", "--bundle", str(bundle))
    assert text.returncode == 3
    assert "No issues found" not in text.stdout
    assert "nothing was decided" in text.stdout.lower()


# -- node.docker.drift: absent is skip, silent is error ------------------------------------


def _node_root(tmp_path: Path, bundle: str = "healthy-node") -> Path:
    root = tmp_path / "root"
    shutil.copytree(BUNDLES / bundle / "host", root, symlinks=True)
    return root


def test_docker_installed_but_its_daemon_not_answering_is_an_error(tmp_path: Path) -> None:
    root = _node_root(tmp_path)
    env = {"DOCKER_HOST": f"unix://{tmp_path}/nobody-listens.sock"}
    code, report = check_json("--root", str(root), "--only", "node.docker.drift", env=env)
    result = result_of(report, "node.docker.drift")
    assert result["status"] == "error", result
    assert "daemon not answering" in result["summary"]
    assert code == 3


def test_docker_daemon_down_in_a_bundle_is_an_error(tmp_path: Path) -> None:
    bundle = copy_bundle(BUNDLES / "healthy-node", tmp_path)
    # What `docker info --format '{{json .}}'` prints when the client cannot reach dockerd.
    (bundle / "commands/docker-info.json").write_text(
        json.dumps(
            {
                "ID": "",
                "ServerVersion": "",
                "ServerErrors": [
                    "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. "
                    "Is the docker daemon running?"
                ],
            }
        )
    )
    code, report = check_json("--bundle", str(bundle), "--only", "node.docker.drift")
    result = result_of(report, "node.docker.drift")
    assert result["status"] == "error"
    assert "Cannot connect to the Docker daemon" in result["summary"]
    assert code == 3


def test_docker_not_installed_is_a_skip_on_a_live_root(tmp_path: Path) -> None:
    root = _node_root(tmp_path)
    for path in sorted(root.rglob("docker*"), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    env = {"DOCKER_HOST": f"unix://{tmp_path}/nobody-listens.sock", "PATH": str(tmp_path)}
    _code, report = check_json("--root", str(root), "--only", "node.docker.drift", env=env)
    result = result_of(report, "node.docker.drift")
    assert result["status"] == "skip", result
    assert result["summary"].startswith("Docker is not installed")


# -- a host that is no Kubernetes node ------------------------------------------------------


def test_a_workstation_without_kubelet_skips_every_node_check(tmp_path: Path) -> None:
    """systemd runs docker but knows no kubelet: the node checks have no subject."""
    docker = {"ActiveState": "active", "UnitFileState": "enabled"}
    node = FakeSystemd(tmp_path, {"docker": docker}, node=False)
    env = {**node.env(), **no_cluster(tmp_path)}
    code, report = check_json("--root", str(node.root), "--scope", "node", env=env)
    statuses = {c["id"]: (c["status"], c["summary"]) for c in report["checks"]}
    for check_id in NODE_CHECKS:
        status, summary = statuses[check_id]
        assert status == "skip", statuses
        assert summary.startswith("not a Kubernetes node: kubelet is not installed"), summary
    assert code == 3  # nothing decided
    text = kdoctor("check", "--root", str(node.root), "--scope", "node", env=env)
    assert text.returncode == 3 and "No issues found" not in text.stdout


def test_a_bundle_of_a_workstation_skips_the_node_checks(tmp_path: Path) -> None:
    bundle = copy_bundle(BUNDLES / "centos7-iptables-services", tmp_path)
    (bundle / "commands/systemctl-show-kubelet.txt").write_text(
        "Id=kubelet.service\nNames=kubelet.service\nLoadState=not-found\nActiveState=inactive\n"
        "SubState=dead\nUnitFileState=\n"
    )
    for path in bundle.glob("host/**/kubelet.service"):
        path.unlink()
    code, report = check_json("--bundle", str(bundle), "--scope", "node")
    assert {c["status"] for c in report["checks"]} == {"skip"}, report["checks"]
    assert code == 3


def test_a_node_with_kubelet_state_but_no_kubelet_unit_still_fails_node_services(
    tmp_path: Path,
) -> None:
    """/var/lib/kubelet says this machine is (was made) a node: kubelet missing is a fail."""
    node = FakeSystemd(tmp_path, {"docker": {"ActiveState": "active", "UnitFileState": "enabled"}})
    code, report = check_json("--root", str(node.root), "--only", "node.services", env=node.env())
    result = result_of(report, "node.services")
    assert result["status"] == "fail" and "kubelet is not installed" in result["summary"]
    assert code == 2


# -- cluster.dns.kube-dns on a server without discovery.k8s.io/v1 ---------------------------


def test_dns_reads_core_endpoints_when_endpointslices_are_not_served(tmp_path: Path) -> None:
    """A server that reports a recent version but serves no discovery.k8s.io (404): the check
    reads the core Endpoints object instead of failing."""
    with ApiServer(BUNDLES / "modern-coredns") as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        server.faults.set(status=404, path="^/apis/discovery.k8s.io")
        _code, report = check_json(
            "--kubeconfig", str(kcfg), "--only", "cluster.dns.kube-dns", "--no-live"
        )
        asked = [r.path for r in server.requests]
    result = result_of(report, "cluster.dns.kube-dns")
    assert result["status"] == "ok", result
    assert "/api/v1/namespaces/kube-system/endpoints/kube-dns" in asked
    assert any(p.startswith("/apis/discovery.k8s.io") for p in asked)


# -- usage errors ----------------------------------------------------------------------------


def test_an_unknown_check_id_lists_the_known_ones() -> None:
    error, hint = usage_error(kdoctor("check", "--only", "node.nope"))
    assert "node.nope" in error
    for known in NODE_CHECKS:
        assert known in hint


def test_an_unknown_id_given_to_fix_lists_the_known_ones() -> None:
    _error, hint = usage_error(kdoctor("fix", "node.nope", "--dry-run"))
    assert "node.iptables.reject" in hint


def test_an_empty_selection_is_a_usage_error() -> None:
    error, _hint = usage_error(
        kdoctor("check", "--scope", "cluster", "--only", "node.services", "--bundle",
                str(BUNDLES / "healthy-node"))
    )  # fmt: skip
    assert "no check" in error


@pytest.mark.parametrize("where", ["missing/dir/report.json", "a-file/report.json"])
def test_output_into_a_missing_directory_is_a_usage_error(tmp_path: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("x")
    out = tmp_path / where
    proc = kdoctor(
        "check", "--bundle", str(BUNDLES / "healthy-node"), "--json", "--output", str(out)
    )
    error, _hint = usage_error(proc)
    assert str(out.parent) in error
    assert not out.exists()


def test_collect_onto_an_existing_file_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "bundle.txt"
    target.write_text("keep me\n")
    error, _hint = usage_error(kdoctor("collect", str(target), "--scope", "node"))
    assert "not a directory" in error
    assert target.read_text() == "keep me\n"


def test_collect_into_a_non_empty_directory_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    usage_error(kdoctor("collect", str(tmp_path), "--scope", "node"))


# -- fix with no id ---------------------------------------------------------------------------


def test_fix_without_an_id_applies_the_fix_of_the_failing_check(tmp_path: Path) -> None:
    node = FakeSystemd(
        tmp_path,
        {
            "docker": {"ActiveState": "active", "UnitFileState": "enabled"},
            "kubelet": {"ActiveState": "inactive", "UnitFileState": "disabled"},
        },
    )
    proc = kdoctor(
        "fix", "--yes", "--scope", "node", "--only", "node.services", "--root", str(node.root),
        "--state-dir", str(node.state_dir), env=node.env(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Nothing to fix" not in proc.stdout
    assert ["systemctl", "enable", "--now", "kubelet"] in node.changes()
    assert node.check("node.services")[1]["status"] == "ok"


def test_fix_without_an_id_says_which_failing_check_it_cannot_fix(tmp_path: Path) -> None:
    """kubelet masked: node.services fails and kdoctor leaves the unmask to a human. `fix`
    must say so and exit non-zero, never "Nothing to fix" with exit 0."""
    node = FakeSystemd(
        tmp_path,
        {
            "docker": {"ActiveState": "active", "UnitFileState": "enabled"},
            "kubelet": {
                "LoadState": "masked",
                "ActiveState": "inactive",
                "UnitFileState": "masked",
            },
        },
    )
    proc = kdoctor(
        "fix", "--yes", "--only", "node.services", "--root", str(node.root),
        "--state-dir", str(node.state_dir), env=node.env(),
    )  # fmt: skip
    assert "Nothing to fix" not in proc.stdout
    assert "node.services" in proc.stdout and "no fix" in proc.stdout
    assert proc.returncode == 1, proc.stdout
    assert node.changes() == []


# -- unexpected exceptions outside checks ------------------------------------------------------


def _broken_plugin(tmp_path: Path) -> dict[str, str]:
    """A third-party plugin (a dist-info on PYTHONPATH) whose documentation raises: kdoctor's
    own code (``explain``) then meets an exception it did not expect."""
    site = tmp_path / "site"
    (site / "kdt_bad_plugin").mkdir(parents=True)
    (site / "kdt_bad_plugin" / "__init__.py").write_text(
        "from doctor.core.model import Scope, Verdict\n"
        "from doctor.core.registry import Check\n\n\n"
        "class Odd(Check):\n"
        '    """A check whose documentation cannot be built."""\n\n'
        '    id = "node.example.odd"\n'
        '    title = "An odd plugin check"\n'
        "    scope = Scope.NODE\n\n"
        "    def run(self, ctx):\n"
        "        return Verdict.ok('fine')\n\n"
        "    @classmethod\n"
        "    def documentation(cls):\n"
        "        raise RuntimeError('the plugin broke its documentation')\n"
    )
    info = site / "kdt_bad_plugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: kdt-bad-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[kdoctor.checks]\nodd = kdt_bad_plugin\n")
    from tests.conftest import REPO

    return {"PYTHONPATH": f"{REPO}:{site}"}


def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, **_broken_plugin(tmp_path), "HOME": str(tmp_path), "KUBECONFIG": ""}
    argv = [sys.executable, "-m", "doctor", "explain", "node.example.odd"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert "the plugin broke its documentation" in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("kdoctor: error: ")]
    assert len(lines) == 1, proc.stderr
    debug = subprocess.run(
        [*argv[:3], "--debug", *argv[3:]], capture_output=True, text=True, env=env, cwd=REPO,
        timeout=60,
    )  # fmt: skip
    assert debug.returncode == 3
    assert "Traceback (most recent call last)" in debug.stderr
