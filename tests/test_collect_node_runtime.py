"""``kdoctor collect`` writes the containerd, kubelet and kernel files of bundle-v1.md
("Added in 2026-12"), the imports config.toml names included, and the bundle decides like
the live node. Run in a private mount namespace with the tree's /etc/containerd
bind-mounted on the real one, so the real ``containerd config dump`` reads the same files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUNDLES, FIXTURES, REPO, check_json, result_of

HEALTHY = BUNDLES / "containerd-node-healthy"
CHECKS = ("node.containerd.drift", "node.kernel")
EXPECTED = [
    "host/etc/containerd/config.toml",
    "host/etc/containerd/conf.d/10-systemd-cgroup.toml",
    "host/etc/containerd/certs.d/docker.io/hosts.toml",
    "host/var/lib/kubelet/config.yaml",
    "host/var/lib/kubelet/kubeadm-flags.env",
    "host/etc/sysctl.d/k8s.conf",
    "host/etc/modules-load.d/k8s.conf",
    "host/etc/fstab",
    "host/proc/modules",
    "host/proc/swaps",
    "host/proc/sys/net/ipv4/ip_forward",
    "host/proc/sys/net/bridge/bridge-nf-call-iptables",
    "host/proc/sys/net/bridge/bridge-nf-call-ip6tables",
    "host/sys/fs/cgroup/cgroup.controllers",
    "host/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "commands/containerd-config-dump.toml",
    "commands/containerd-version.txt",
    "commands/kubelet-version.txt",
]


def in_mount_namespace(etc: Path, argv: list[str], env: dict[str, str]) -> str:
    inner = " ".join(f"'{a}'" for a in argv)
    script = f"mount --bind '{etc}' /etc/containerd && exec {inner}"
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


@pytest.fixture
def collected(tmp_path: Path) -> tuple[Path, Path, dict[str, str]]:
    if shutil.which("containerd") is None or os.geteuid() != 0:
        pytest.skip("needs root and Debian's containerd")
    root = tmp_path / "root"
    shutil.copytree(HEALTHY / "host", root, symlinks=True)
    shutil.copytree(
        FIXTURES / "containerd/dropin-replaces-cri/etc/containerd",
        root / "etc/containerd",
        dirs_exist_ok=True,
    )
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "kubelet").write_text("#!/bin/sh\necho Kubernetes v1.30.4\n")
    (shims / "kubelet").chmod(0o755)
    env = dict(os.environ, PATH=f"{shims}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO))
    env.pop("KUBECONFIG", None)
    bundle = tmp_path / "bundle"
    in_mount_namespace(
        root / "etc/containerd",
        [sys.executable, "-m", "doctor", "collect", str(bundle), "--root", str(root)],
        env,
    )
    return root, bundle, env


def test_collect_writes_the_runtime_and_kernel_files(
    collected: tuple[Path, Path, dict[str, str]],
) -> None:
    _root, bundle, _env = collected
    missing = [path for path in EXPECTED if not (bundle / path).is_file()]
    assert not missing, missing
    dump = (bundle / "commands/containerd-config-dump.toml").read_text()
    assert "SystemdCgroup = true" in dump  # the import, as containerd merged it


def test_the_bundle_decides_like_the_node(collected: tuple[Path, Path, dict[str, str]]) -> None:
    root, bundle, env = collected
    live_text = in_mount_namespace(
        root / "etc/containerd",
        [sys.executable, "-m", "doctor", "check", "--root", str(root), "--json",
         "--only", ",".join(CHECKS)],
        env,
    )  # fmt: skip
    live: dict[str, Any] = json.loads(live_text)
    _code, offline = check_json("--bundle", str(bundle), "--only", ",".join(CHECKS))
    for check_id in CHECKS:
        on_live, on_bundle = result_of(live, check_id), result_of(offline, check_id)
        assert on_live["status"] == on_bundle["status"], (check_id, on_live, on_bundle)
        assert [f["severity"] for f in on_live["findings"]] == [
            f["severity"] for f in on_bundle["findings"]
        ], check_id
    drift = result_of(offline, "node.containerd.drift")
    assert drift["status"] == "warn"
    assert any("replaces the whole section" in f["message"] for f in drift["findings"])
