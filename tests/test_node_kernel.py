"""node.kernel on bundles, and its fix for real: ip_forward is per network namespace, so the
fix runs inside a throwaway one (``ip netns exec``) with its files under a temp ``--root``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from checks.node_kernel import NodeKernel
from doctor.core.model import Status
from tests.conftest import (
    BUNDLES,
    check_json,
    copy_bundle,
    kdoctor,
    read_journal,
    require_root_tools,
    result_of,
    run_on_bundle,
)

CHECK = "node.kernel"
HEALTHY = BUNDLES / "containerd-node-healthy"


def bundle_with(tmp_path: Path, files: dict[str, str | None]) -> Path:
    """The healthy containerd node with some host files replaced (None: removed)."""
    bundle = copy_bundle(HEALTHY, tmp_path)
    for path, text in files.items():
        target = bundle / "host" / path.lstrip("/")
        if text is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    return bundle


def messages(result: Any) -> list[str]:
    return [f.message for f in result.findings]


def test_healthy_containerd_node_is_ok() -> None:
    result = run_on_bundle(NodeKernel, HEALTHY)
    assert result.status is Status.OK, result.summary
    assert "cgroup v2" in result.summary and "swap off" in result.summary


def test_bundle_without_proc_is_skipped() -> None:
    result = run_on_bundle(NodeKernel, BUNDLES / "healthy-node")
    assert result.status is Status.SKIP
    assert "/proc/sys/net/ipv4/ip_forward is not there" in result.summary


def test_ip_forward_off_now_and_at_boot(tmp_path: Path) -> None:
    bundle = bundle_with(
        tmp_path,
        {"/proc/sys/net/ipv4/ip_forward": "0\n", "/etc/sysctl.d/k8s.conf": None},
    )
    result = run_on_bundle(NodeKernel, bundle)
    assert result.status is Status.FAIL
    assert messages(result)[0].startswith("net.ipv4.ip_forward = 0: the node does not route")
    assert "not set by any sysctl file: the kernel starts with 0" in messages(result)[1]
    assert result.fix is not None and result.fix.safety.value == "safe"
    plan = result.fix.plan()
    assert "sysctl -w net.ipv4.ip_forward=1" in plan
    assert "+net.ipv4.ip_forward = 1" in plan


def test_a_later_sysctl_file_wins_and_is_named(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, {"/etc/sysctl.conf": "# local\nnet.ipv4.ip_forward=0\n"})
    result = run_on_bundle(NodeKernel, bundle)
    assert result.status is Status.WARN
    (finding,) = result.findings
    assert finding.message == (
        "net.ipv4.ip_forward is set to 0 at boot by /etc/sysctl.conf:2; "
        "after a reboot pod traffic is not routed"
    )
    assert finding.evidence["set_at_boot_by"] == [
        "/etc/sysctl.d/k8s.conf:1 (net.ipv4.ip_forward = 1)",
        "/etc/sysctl.conf:2 (net.ipv4.ip_forward = 0)",
    ]
    assert finding.evidence["wins"] == "/etc/sysctl.conf:2"
    # kdoctor's 90-kdoctor.conf would lose against sysctl.conf: no fix for it, and it says why
    assert result.fix is None
    assert "/etc/sysctl.conf:2 is applied after /etc/sysctl.d/90-kdoctor.conf" in result.summary


def test_br_netfilter_missing_and_not_persisted(tmp_path: Path) -> None:
    bundle = bundle_with(
        tmp_path,
        {
            "/proc/sys/net/bridge/bridge-nf-call-iptables": None,
            "/proc/sys/net/bridge/bridge-nf-call-ip6tables": None,
            "/proc/modules": "overlay 151552 12 - Live 0x0000000000000000\n",
            "/etc/modules-load.d/k8s.conf": "overlay\n",
        },
    )
    result = run_on_bundle(NodeKernel, bundle)
    assert result.status is Status.FAIL
    assert messages(result)[0].startswith("br_netfilter is not loaded")
    assert result.fix is not None
    plan = result.fix.plan()
    assert plan[0] == "modprobe br_netfilter"
    assert "+br_netfilter" in plan


def test_br_netfilter_loaded_by_hand_only(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, {"/etc/modules-load.d/k8s.conf": "overlay\n"})
    result = run_on_bundle(NodeKernel, bundle)
    assert result.status is Status.WARN
    assert messages(result) == [
        "br_netfilter is loaded now, but no modules-load.d file (nor /etc/modules) loads it at "
        "boot: after a reboot it is missing until something loads it"
    ]


SWAPS = (
    "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
    "/swap.img                               file\t\t4194300\t\t0\t\t-2\n"
)
FSTAB_SWAP = "UUID=2f6b / ext4 errors=remount-ro 0 1\n/swap.img none swap sw 0 0\n"


def test_swap_on_with_kubelet_defaults_fails_and_the_fix_is_unsafe(tmp_path: Path) -> None:
    bundle = bundle_with(tmp_path, {"/proc/swaps": SWAPS, "/etc/fstab": FSTAB_SWAP})
    result = run_on_bundle(NodeKernel, bundle)
    assert result.status is Status.FAIL
    assert messages(result)[0] == (
        "swap is on (/swap.img) and the kubelet refuses to start with swap (failSwapOn: true, "
        "kubelet default (failSwapOn: true))"
    )
    assert messages(result)[1].startswith("/etc/fstab:2 turns swap on at boot")
    assert result.fix is not None and result.fix.safety.value == "unsafe"
    plan = result.fix.plan()
    assert "swapoff -a" in plan
    assert "+# disabled by kdoctor (kubelet failSwapOn): /swap.img none swap sw 0 0" in plan


def test_swap_allowed_by_the_kubelet(tmp_path: Path) -> None:
    config = (HEALTHY / "host/var/lib/kubelet/config.yaml").read_text()
    config = config.replace("memorySwap: {}\n", "memorySwap:\n  swapBehavior: LimitedSwap\n")
    config += "failSwapOn: false\n"
    bundle = bundle_with(
        tmp_path,
        {"/proc/swaps": SWAPS, "/etc/fstab": FSTAB_SWAP, "/var/lib/kubelet/config.yaml": config},
    )
    result = run_on_bundle(NodeKernel, bundle)
    assert result.status is Status.OK, result.summary
    assert "swap on, allowed: failSwapOn false (/var/lib/kubelet/config.yaml:48)" in result.summary
    assert "swapBehavior LimitedSwap (/var/lib/kubelet/config.yaml:36)" in result.summary


@pytest.mark.parametrize(
    ("kubelet", "extra", "status", "start"),
    [
        ("v1.35.0", "", Status.FAIL, "cgroup v1 host and kubelet v1.35.0: the kubelet refuses"),
        ("v1.35.0", "failCgroupV1: false\n", Status.WARN, "cgroup v1 host and kubelet v1.35.0: "
         "allowed only because failCgroupV1: false (/var/lib/kubelet/config.yaml:47)"),
        ("v1.32.3", "", Status.WARN, "cgroup v1 host and kubelet v1.32.3: cgroup v1 is in "
         "maintenance mode"),
        ("v1.30.4", "", Status.OK, ""),
    ],
)  # fmt: skip
def test_cgroup_v1_against_the_kubelet_version(
    tmp_path: Path, kubelet: str, extra: str, status: Status, start: str
) -> None:
    config = (HEALTHY / "host/var/lib/kubelet/config.yaml").read_text() + extra
    bundle = bundle_with(
        tmp_path,
        {"/sys/fs/cgroup/cgroup.controllers": None, "/var/lib/kubelet/config.yaml": config},
    )
    (bundle / "commands/kubelet-version.txt").write_text(f"Kubernetes {kubelet}\n")
    result = run_on_bundle(NodeKernel, bundle)
    assert result.status is status, result.summary
    if start:
        assert messages(result)[0].startswith(start)
    else:
        assert "cgroup v1" in result.summary


def test_broken_kubelet_config_is_an_error_naming_file_and_line(tmp_path: Path) -> None:
    bundle = bundle_with(
        tmp_path,
        {"/var/lib/kubelet/config.yaml": "kind: KubeletConfiguration\ncgroupDriver: [systemd\n"},
    )
    result = run_on_bundle(NodeKernel, bundle)
    assert result.status is Status.ERROR
    assert result.summary.startswith("/var/lib/kubelet/config.yaml:3: invalid YAML: ")


# -- the fix, for real in a network namespace -------------------------------------------------

FAIL_SHIM = '#!/bin/sh\necho "$0 $*: refused by the test" >&2\nexit 1\n'


def netns_root(tmp_path: Path, bridge: bool) -> Path:
    """A --root whose /proc/sys/net/ipv4 is the namespace's own (a link to /proc, read from
    inside ``ip netns exec``); this host has no br_netfilter, so the bridge sysctl is a file
    standing in for it (or absent, for the rollback case)."""
    root = tmp_path / "root"
    shutil.copytree(HEALTHY / "host", root, symlinks=True)
    (root / "etc/sysctl.d/k8s.conf").unlink()
    ipv4 = root / "proc/sys/net/ipv4"
    shutil.rmtree(ipv4)
    ipv4.symlink_to("/proc/sys/net/ipv4")
    if not bridge:
        shutil.rmtree(root / "proc/sys/net/bridge")
    return root


def ns_value(ns: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, "cat", "/proc/sys/net/ipv4/ip_forward"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


@pytest.fixture
def fresh_netns() -> Any:
    require_root_tools("ip")
    name = f"kdk-{os.getpid()}-{os.urandom(3).hex()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(
            ["ip", "netns", "exec", name, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"],
            check=True,
        )
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_fix_sets_ip_forward_in_the_namespace_and_persists_it(
    tmp_path: Path, fresh_netns: str
) -> None:
    host_before = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    root = netns_root(tmp_path, bridge=True)
    state = tmp_path / "state"
    _code, report = check_json("--root", str(root), "--only", CHECK, netns=fresh_netns)
    before = result_of(report, CHECK)
    assert before["status"] == "fail", before
    proc = kdoctor(
        "fix", CHECK, "--root", str(root), "--state-dir", str(state), "--yes", netns=fresh_netns
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ns_value(fresh_netns) == "1"
    assert (root / "etc/sysctl.d/90-kdoctor.conf").read_text().endswith("net.ipv4.ip_forward = 1\n")
    (entry,) = read_journal(state)
    assert entry["outcome"] == "applied" and entry["recheck_status"] == "ok"
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == host_before  # host untouched


def test_fix_rolled_back_when_a_step_fails(tmp_path: Path, fresh_netns: str) -> None:
    """br_netfilter missing: the plan starts with modprobe; a modprobe that fails (a shim:
    the test never loads a module into this host's kernel) rolls everything back."""
    root = netns_root(tmp_path, bridge=False)
    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "modprobe").write_text(FAIL_SHIM)
    (shims / "modprobe").chmod(0o755)
    state = tmp_path / "state"
    env = {"PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"}
    before = {p: p.read_bytes() for p in (root / "etc").rglob("*") if p.is_file()}
    proc = kdoctor(
        "fix", CHECK, "--root", str(root), "--state-dir", str(state), "--yes",
        env=env, netns=fresh_netns,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    (entry,) = read_journal(state)
    assert entry["outcome"] == "rolled-back"
    assert ns_value(fresh_netns) == "0"
    after = {p: p.read_bytes() for p in (root / "etc").rglob("*") if p.is_file()}
    assert after == before
    assert not (root / "etc/sysctl.d/90-kdoctor.conf").exists()


def test_on_a_docker_node_dockerd_sets_forwarding_and_br_netfilter(tmp_path: Path) -> None:
    docker_flags = (
        'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/cri-dockerd.sock"\n'
    )
    bundle = bundle_with(
        tmp_path,
        {
            "/var/lib/kubelet/kubeadm-flags.env": docker_flags,
            "/etc/sysctl.d/k8s.conf": None,
            "/etc/modules-load.d/k8s.conf": None,
        },
    )
    result = run_on_bundle(NodeKernel, bundle)
    assert result.status is Status.OK, result.summary
    assert result.evidence["dockerd"].startswith("the kubelet uses Docker: dockerd loads")
    # ... unless daemon.json turns it off
    (bundle / "host/etc/docker").mkdir(parents=True)
    (bundle / "host/etc/docker/daemon.json").write_text('{"ip-forward": false}\n')
    assert run_on_bundle(NodeKernel, bundle).status is Status.WARN
