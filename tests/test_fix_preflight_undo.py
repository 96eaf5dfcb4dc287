"""Fixes: preflight before any plan runs, outcomes that say what really happened, and
``kdoctor undo`` (contract: checks-and-report-v1.md, "Fixes: preflight and undo").

Against real components: netfilter in a throwaway namespace, a real dockerd, the fake
``systemctl`` shim at the process boundary (systemd cannot be PID 1 here)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import (
    BUNDLES,
    kdoctor,
    load_rules,
    read_journal,
    saved_ruleset,
)
from tests.shims.fakesystemd import FakeSystemd

DOCKER = "node.docker.drift"
IPTABLES = "node.iptables.reject"
INPUT_REJECT = "-A INPUT -j REJECT --reject-with icmp-host-prohibited"
UP = {"ActiveState": "active", "UnitFileState": "enabled"}
DROPIN = "etc/systemd/system/docker.service.d/kdoctor.conf"


def snapshot(root: Path) -> dict[str, bytes]:
    """Every regular file under ROOT and its bytes (links and directories left out)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def docker_node(tmp_path: Path, running: bool = True) -> FakeSystemd:
    """docker-ce-dropins: sysconfig sets INSECURE_REGISTRY, the unit never passes it."""
    node = FakeSystemd(tmp_path, {"docker": UP, "kubelet": UP}, running=running)
    shutil.copytree(BUNDLES / "docker-ce-dropins" / "host", node.root, symlinks=True,
                    dirs_exist_ok=True)  # fmt: skip
    return node


def docker_env(node: FakeSystemd, fail: str | None = None) -> dict[str, str]:
    return {**node.env(fail), "DOCKER_HOST": f"unix://{node.base}/nobody-listens.sock"}


def fix(node: FakeSystemd, check: str, *extra: str, env: dict[str, str] | None = None) -> Any:
    return kdoctor(
        "fix", check, "--yes", "--unsafe", "--root", str(node.root),
        "--state-dir", str(node.state_dir), *extra, env=env or node.env(),
    )  # fmt: skip


# -- preflight ---------------------------------------------------------------------------


def test_a_unit_change_without_systemd_is_refused_before_anything_changes(tmp_path: Path) -> None:
    node = docker_node(tmp_path, running=False)
    before = snapshot(node.root)
    proc = fix(node, DOCKER, env=docker_env(node))
    assert "refused" in proc.stdout and "systemd is not running" in proc.stdout, proc.stdout
    assert proc.returncode == 1
    assert snapshot(node.root) == before
    assert node.changes() == []
    assert not (node.state_dir / "backups").exists() or not any(
        (node.state_dir / "backups").iterdir()
    )


def test_a_missing_tool_is_refused_before_anything_changes(tmp_path: Path) -> None:
    """systemd runs, but the fix's systemctl is not on PATH."""
    node = docker_node(tmp_path)
    before = snapshot(node.root)
    env = {**docker_env(node), "PATH": "/nonexistent"}
    proc = kdoctor(
        "fix", DOCKER, "--yes", "--unsafe", "--root", str(node.root),
        "--state-dir", str(node.state_dir), env=env,
    )  # fmt: skip
    assert "refused" in proc.stdout and "systemctl" in proc.stdout, proc.stdout
    assert proc.returncode == 1
    assert snapshot(node.root) == before


# -- outcomes ------------------------------------------------------------------------------


def test_a_rollback_verifies_each_restored_file(tmp_path: Path) -> None:
    node = docker_node(tmp_path)
    before = snapshot(node.root)
    proc = fix(node, DOCKER, env=docker_env(node, fail="restart docker"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert snapshot(node.root) == before
    (entry,) = read_journal(node.state_dir)
    assert entry["outcome"] == "rolled-back"
    assert "restore by hand" not in entry["reason"] and "restore by hand" not in proc.stdout
    restored = {r["path"]: r for r in entry["rollback"]}
    assert restored[f"/{DROPIN}"]["verified"] is True
    assert "verified" in proc.stdout


def test_restore_by_hand_names_only_the_step_that_did_not_restore(tmp_path: Path) -> None:
    """daemon-reload fails when applied and again when rolled back: the files are back
    (verified), only the reload is left to do by hand."""
    node = docker_node(tmp_path)
    before = snapshot(node.root)
    proc = fix(node, DOCKER, env=docker_env(node, fail="daemon-reload"))
    assert proc.returncode == 2
    assert snapshot(node.root) == before
    (entry,) = read_journal(node.state_dir)
    assert entry["outcome"] == "rollback-failed"
    by_hand = entry["reason"].split("restore by hand:", 1)[1]
    assert "systemctl daemon-reload" in by_hand
    assert DROPIN not in by_hand and "daemon.json" not in by_hand


# -- fix --dry-run on a bundle ----------------------------------------------------------------


def test_dry_run_on_a_bundle_prints_the_plans_and_changes_nothing(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(BUNDLES / "centos7-iptables-services", bundle, symlinks=True)
    before = snapshot(bundle)
    state = tmp_path / "state"
    proc = kdoctor("fix", "--dry-run", "--bundle", str(bundle), "--state-dir", str(state))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Plan for node.iptables.reject" in proc.stdout
    assert "-D INPUT -j REJECT --reject-with icmp-host-prohibited" in proc.stdout
    assert "dry run" in proc.stdout
    assert snapshot(bundle) == before
    assert not state.exists()


def test_fix_on_a_bundle_without_dry_run_is_still_refused() -> None:
    proc = kdoctor("fix", "--yes", "--bundle", str(BUNDLES / "centos7-iptables-services"))
    assert proc.returncode == 3
    assert "--dry-run" in proc.stderr


def test_what_the_text_report_recommends_for_a_bundle_fix_accepts(tmp_path: Path) -> None:
    bundle = str(BUNDLES / "centos7-iptables-services")
    text = kdoctor("check", "--bundle", bundle).stdout
    recommended = [
        line[line.index("kdoctor fix") :].strip().strip("`").split("`")[0].split(";")[0]
        for line in text.splitlines()
        if "kdoctor fix" in line and line.lstrip().startswith(("fix (", "manual fix"))
    ]
    assert recommended
    for command in recommended:
        argv = command.split()[1:]
        if "--bundle" not in argv:
            argv += ["--bundle", bundle]
        proc = kdoctor(*argv, "--state-dir", str(tmp_path / "state"))
        assert proc.returncode != 3, (command, proc.stderr)


# -- undo ------------------------------------------------------------------------------------


def test_undo_with_nothing_applied_is_a_usage_error(tmp_path: Path) -> None:
    proc = kdoctor("undo", "--yes", "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 3
    assert proc.stderr.startswith("kdoctor: error: ")
    assert "nothing to undo" in proc.stderr


def test_undo_of_an_unknown_entry_is_a_usage_error(tmp_path: Path) -> None:
    node = FakeSystemd(tmp_path, {"docker": UP, "kubelet": {"ActiveState": "inactive",
                                                         "UnitFileState": "disabled"}})  # fmt: skip
    assert fix(node, "node.services").returncode == 0
    proc = kdoctor("undo", "no-such-entry", "--yes", "--state-dir", str(node.state_dir),
                   "--root", str(node.root), env=node.env())  # fmt: skip
    assert proc.returncode == 3 and "no-such-entry" in proc.stderr


def test_undo_reverses_enable_now_and_rechecks(tmp_path: Path) -> None:
    node = FakeSystemd(
        tmp_path,
        {"docker": UP, "kubelet": {"ActiveState": "inactive", "UnitFileState": "disabled"}},
    )
    before = node.states()
    assert fix(node, "node.services").returncode == 0
    assert node.states()["kubelet"] == ("active", "enabled")

    proc = kdoctor("undo", "--yes", "--root", str(node.root), "--state-dir", str(node.state_dir),
                   env=node.env())  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert node.states() == before
    assert "Plan for undo" in proc.stdout
    assert "node.services now reports fail" in proc.stdout
    entries = read_journal(node.state_dir)
    assert [e["outcome"] for e in entries] == ["applied", "undone"]
    assert entries[1]["undoes"] == entries[0]["id"]

    again = kdoctor("undo", "--yes", "--root", str(node.root), "--state-dir",
                    str(node.state_dir), env=node.env())  # fmt: skip
    assert again.returncode == 3 and "nothing to undo" in again.stderr


def test_undo_without_yes_and_no_terminal_changes_nothing(tmp_path: Path) -> None:
    node = FakeSystemd(
        tmp_path,
        {"docker": UP, "kubelet": {"ActiveState": "inactive", "UnitFileState": "disabled"}},
    )
    assert fix(node, "node.services").returncode == 0
    applied = node.states()
    proc = kdoctor("undo", "--root", str(node.root), "--state-dir", str(node.state_dir),
                   env=node.env())  # fmt: skip
    assert proc.returncode == 1 and "not confirmed" in proc.stderr
    assert node.states() == applied


@pytest.mark.root
def test_undo_restores_real_netfilter_and_the_persisted_file(
    netns: str, iptables_root: Path, tmp_path: Path
) -> None:
    load_rules(netns, "centos7-kube-weave-broken.rules")
    before = saved_ruleset(netns)
    sysconfig = iptables_root / "etc/sysconfig/iptables"
    original = sysconfig.read_bytes()
    state = tmp_path / "state"
    common = ("--root", str(iptables_root), "--state-dir", str(state))

    applied = kdoctor("fix", IPTABLES, "--yes", "--unsafe", *common, netns=netns)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert saved_ruleset(netns) != before and INPUT_REJECT not in saved_ruleset(netns)["filter"]
    assert sysconfig.read_bytes() != original
    (entry,) = read_journal(state)

    undone = kdoctor("undo", entry["id"], "--yes", *common, netns=netns)
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert saved_ruleset(netns) == before
    assert sysconfig.read_bytes() == original
    assert sysconfig.stat().st_mode & 0o777 == 0o600
    assert f"{IPTABLES} now reports fail" in undone.stdout
    assert [e["outcome"] for e in read_journal(state)] == ["applied", "undone"]


@pytest.mark.root
def test_undo_of_a_unit_file_fix_under_a_temp_root(tmp_path: Path) -> None:
    """node.docker.drift writes a drop-in and restarts docker (a real dockerd answers
    `docker info`); undo removes the drop-in, reloads systemd and restarts docker."""
    from tests.test_node_docker import dockerd, require_dockerd, wait_ready

    require_dockerd()
    node = FakeSystemd(tmp_path, {"docker": UP, "kubelet": UP})
    files = {
        "etc/sysconfig/docker": "OPTIONS='--log-driver=json-file'\n"
        "INSECURE_REGISTRY='--insecure-registry nexus.lab:5000'\n",
        "etc/docker/daemon.json": "{}\n",
        "usr/lib/systemd/system/docker.service": "[Unit]\nDescription=Docker (test)\n\n"
        "[Service]\nType=notify\nEnvironmentFile=-/etc/sysconfig/docker\n"
        "ExecStart=/usr/sbin/dockerd $OPTIONS\n",
    }
    for rel, text in files.items():
        (node.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (node.root / rel).write_text(text)
    before = snapshot(node.root)
    flags = ["--log-driver=json-file", "--insecure-registry", "nexus.lab:5000"]
    with dockerd(node.root / "etc/docker/daemon.json", flags) as (sock, proc):
        wait_ready(sock, proc)
        env = {**node.env(), "DOCKER_HOST": f"unix://{sock}"}
        applied = fix(node, DOCKER, env=env)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert (node.root / DROPIN).exists()
        undone = kdoctor("undo", "--yes", "--root", str(node.root), "--state-dir",
                         str(node.state_dir), env=env)  # fmt: skip
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert not (node.root / DROPIN).exists()
    assert snapshot(node.root) == before
    assert node.changes()[-2:] == [
        ["systemctl", "daemon-reload"],
        ["systemctl", "try-restart", "docker"],
    ]
    assert [e["outcome"] for e in read_journal(node.state_dir)] == ["applied", "undone"]


# -- preflight: the object a cluster fix will patch -------------------------------------------


def _kube_proxy_fix(server: Any, tmp_path: Path) -> tuple[Any, Any]:
    """The kube-proxy proxy-mode fix as the check plans it, and a context to run it in."""
    from checks.cluster_kube_proxy import KubeProxy
    from doctor.core.context import CheckContext, FixContext
    from doctor.core.runner import run_one
    from doctor.facts.cluster import ClusterConfig
    from doctor.facts.kube import LiveCluster
    from doctor.facts.node import LiveNodeFacts
    from fixes.kube import KubeWriter

    kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
    cluster = LiveCluster(ClusterConfig(kcfg, None), timeout=15)
    node = LiveNodeFacts(tmp_path)
    result = run_one(KubeProxy, CheckContext(node=node, cluster=cluster))
    assert result.fix is not None, result.summary
    ctx = FixContext(node=node, cluster=cluster, root=tmp_path, kube=KubeWriter(cluster))
    return result.fix, ctx


@pytest.mark.parametrize("change", ["modified", "deleted"])
def test_a_patch_of_an_object_that_changed_since_the_plan_is_refused(
    tmp_path: Path, change: str
) -> None:
    from doctor.core.fixengine import Outcome, apply_fix, preflight
    from tests.apiserver import ApiServer

    ds = ("apps/v1", "daemonsets", "kube-system", "kube-proxy")
    with ApiServer(BUNDLES / "kube-proxy-seed-routing") as server:
        fix, ctx = _kube_proxy_fix(server, tmp_path)
        assert preflight(fix, ctx) == []
        if change == "modified":

            def annotate(obj: dict[str, Any]) -> None:
                obj["metadata"].setdefault("annotations", {})["owner"] = "someone else"

            server.mutate_object(*ds, annotate)
        else:
            server.delete_object(*ds)
        problems = preflight(fix, ctx)
        expected = "changed since the plan was made" if change == "modified" else "no longer"
        assert any(expected in p for p in problems), problems

        def recheck() -> Any:
            raise AssertionError("a refused fix is never re-checked")

        report = apply_fix("cluster.kube-proxy", fix, ctx, tmp_path / "state", recheck)
        assert report.outcome is Outcome.REFUSED and report.backup_dir is None
        assert [r for r in server.requests if r.method in ("PATCH", "PUT", "DELETE")] == []
