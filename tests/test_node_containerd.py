"""node.containerd.drift on bundles built from the package-shipped fixture configs, with the
dump the real containerd (Debian's) makes of each; its fix edits in place, verified by the
real ``containerd config dump`` inside a private mount namespace."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from checks.node_containerd_drift import ContainerdDrift, expected_pause
from checks.node_docker_drift import DockerDrift
from doctor.core.commands import CommandFailed, CommandRunner
from doctor.core.context import FixContext
from doctor.core.model import Severity, Status
from doctor.facts.kube import BundleCluster
from doctor.facts.node import LiveNodeFacts
from fixes.containerd import Expect, VerifyContainerdConfig
from tests.conftest import (
    BUNDLES,
    FIXTURES,
    REPO,
    check_json,
    copy_bundle,
    read_journal,
    result_of,
    run_on_bundle,
)

CHECK = "node.containerd.drift"
HEALTHY = BUNDLES / "containerd-node-healthy"
CONFIGS = FIXTURES / "containerd"
CRI = ("plugins", "io.containerd.grpc.v1.cri")


def can_dump() -> bool:
    return shutil.which("containerd") is not None and os.geteuid() == 0


def real_dump(etc_containerd: Path) -> str:
    """``containerd config dump`` of a tree's /etc/containerd, bind-mounted in a private mount
    namespace so its absolute imports resolve inside it."""
    script = f"mount --bind '{etc_containerd}' /etc/containerd && cd / && containerd config dump"
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def bundle_for(
    tmp_path: Path, case: str, containerd: str | None = None, kubelet: str | None = None
) -> Path:
    """The healthy containerd node with ``fixtures/containerd/CASE`` as its /etc/containerd
    and the dump containerd itself makes of it (or none, without root or containerd)."""
    bundle = copy_bundle(HEALTHY, tmp_path)
    etc = bundle / "host/etc/containerd"
    shutil.rmtree(etc)
    shutil.copytree(CONFIGS / case / "etc/containerd", etc)
    dump = bundle / "commands/containerd-config-dump.toml"
    if containerd is None and can_dump():
        dump.write_text(real_dump(etc))
    else:
        dump.unlink()
    if containerd is not None:
        (bundle / "commands/containerd-version.txt").write_text(containerd + "\n")
    if kubelet is not None:
        (bundle / "commands/kubelet-version.txt").write_text(f"Kubernetes {kubelet}\n")
    return bundle


def findings(result: Any) -> list[tuple[str, str]]:
    return [(f.severity.value, f.message) for f in result.findings]


def test_healthy_containerd_node_is_ok_and_docker_drift_skips() -> None:
    result = run_on_bundle(ContainerdDrift, HEALTHY)
    assert result.status is Status.OK, result.summary
    assert "SystemdCgroup true (/etc/containerd/config.toml:125)" in result.summary
    assert "registry.k8s.io/pause:3.9 (/etc/containerd/config.toml:61)" in result.summary
    docker = run_on_bundle(DockerDrift, HEALTHY)
    assert docker.status is Status.SKIP
    assert docker.summary.startswith(
        "the kubelet uses containerd (containerRuntimeEndpoint "
        "unix:///var/run/containerd/containerd.sock, /var/lib/kubelet/kubeadm-flags.env:1"
    )


def test_containerd_only_node_has_no_false_warn_or_fail_in_any_node_check() -> None:
    code, report = check_json("--bundle", str(HEALTHY), "--scope", "node")
    statuses = {c["id"]: c["status"] for c in report["checks"]}
    assert code == 0, statuses
    assert not [i for i, s in statuses.items() if s in ("warn", "fail", "error")], statuses
    assert statuses[CHECK] == "ok" and statuses["node.kernel"] == "ok"


def test_containerd_io_default_disables_cri(tmp_path: Path) -> None:
    bundle = bundle_for(tmp_path, "containerd.io")
    result = run_on_bundle(ContainerdDrift, bundle)
    assert result.status is Status.FAIL
    messages = findings(result)
    assert messages[0] == (
        "fail",
        'disabled_plugins holds "cri" (/etc/containerd/config.toml:15): containerd\'s CRI '
        "plugin is off and the kubelet cannot use containerd (kubeadm: container runtime is "
        "not running … CRI v1 runtime API is not implemented for endpoint)",
    )
    # the kubelet says systemd, containerd's default (from its own dump) is cgroupfs
    assert messages[1][0] == "fail"
    assert "cgroupDriver is systemd (/var/lib/kubelet/config.yaml:15)" in messages[1][1]
    assert result.fix is not None and result.fix.safety.value == "unsafe"
    plan = result.fix.plan()
    assert '-disabled_plugins = ["cri"]' in plan and "+disabled_plugins = []" in plan
    assert "+SystemdCgroup = true" in plan
    assert plan[-1] == "systemctl restart containerd"


def test_an_import_that_replaces_the_cri_section_is_named_with_what_it_loses(
    tmp_path: Path,
) -> None:
    bundle = bundle_for(tmp_path, "dropin-replaces-cri")
    result = run_on_bundle(ContainerdDrift, bundle)
    replaced = [f for f in result.findings if "replaces the whole section" in f.message]
    (finding,) = replaced
    assert finding.severity is Severity.WARN
    assert finding.message.startswith(
        '/etc/containerd/conf.d/10-systemd-cgroup.toml configures [plugins."io.containerd.grpc.'
        'v1.cri"] too, and containerd v1.6.20 replaces the whole section from '
        "/etc/containerd/config.toml with it"
    )
    assert "sandbox_image (/etc/containerd/config.toml:6)" in finding.message
    assert "registry.config_path (/etc/containerd/config.toml:9)" in finding.message
    assert finding.evidence["winner"] == "/etc/containerd/conf.d/10-systemd-cgroup.toml:4"
    if can_dump():
        # what containerd really uses: its default pause, not config.toml's 3.9
        sandbox = [f for f in result.findings if f.message.startswith("sandbox image")]
        assert sandbox and "containerd's default (commands/containerd-config-dump.toml)" in (
            sandbox[0].message
        )


def test_relative_imports_glob(tmp_path: Path) -> None:
    bundle = bundle_for(tmp_path, "relative-glob")
    result = run_on_bundle(ContainerdDrift, bundle)
    messages = [m for _, m in findings(result)]
    assert any(
        m.startswith('imports = ["conf.d/*.toml"] (/etc/containerd/config.toml:2) is a relative')
        for m in messages
    ), messages
    # and so the SystemdCgroup = true of conf.d/ is not what containerd runs with
    assert any("SystemdCgroup = false" in m for m in messages), messages


@pytest.mark.parametrize(
    ("containerd", "severity"),
    [("containerd containerd.io 1.7.25 bcc810d6", "warn"),
     ("containerd github.com/containerd/containerd/v2 v2.2.0 1c4457e0", "fail")],
)  # fmt: skip
def test_legacy_registry_mirrors(tmp_path: Path, containerd: str, severity: str) -> None:
    bundle = bundle_for(tmp_path, "legacy-mirrors", containerd=containerd)
    result = run_on_bundle(ContainerdDrift, bundle)
    (finding,) = [f for f in result.findings if "registry" in f.message]
    assert finding.severity.value == severity
    assert finding.message.startswith(
        "registry mirrors for docker.io; configs for nexus.lab:5000 set in the CRI registry "
        "section (/etc/containerd/config.toml:"
    )
    assert finding.evidence["hosts"] == {"mirrors": ["docker.io"], "configs": ["nexus.lab:5000"]}
    assert result.fix is None  # mirrors are moved to hosts.toml by a person


def test_mirrors_next_to_config_path_fail(tmp_path: Path) -> None:
    bundle = bundle_for(tmp_path, "mirrors-and-config-path")
    result = run_on_bundle(ContainerdDrift, bundle)
    (finding,) = [f for f in result.findings if "registry" in f.message]
    assert finding.severity is Severity.FAIL
    assert "`mirrors` cannot be set when `config_path` is provided" in finding.message


def test_version_2_keys_in_a_version_3_file(tmp_path: Path) -> None:
    bundle = bundle_for(
        tmp_path, "v2-keys-in-v3", containerd="containerd github.com/containerd/containerd/v2 "
        "v2.1.4 75cb2b71", kubelet="v1.33.1",
    )  # fmt: skip
    result = run_on_bundle(ContainerdDrift, bundle)
    messages = findings(result)
    assert (
        "warn",
        "/etc/containerd/config.toml is config version 3 but sets keys of version 2, which "
        "containerd ignores without an error: plugins.io.containerd.grpc.v1.cri.sandbox_image "
        "(line 5), plugins.io.containerd.grpc.v1.cri.containerd (line 7)",
    ) in messages
    # ignored, so containerd runs with SystemdCgroup false against the kubelet's systemd
    assert any(
        s == "fail" and "SystemdCgroup = false (containerd's default)" in m for s, m in messages
    )


def test_version_3_file_on_containerd_1(tmp_path: Path) -> None:
    bundle = bundle_for(tmp_path, "kubeadm-2.1", containerd="containerd containerd.io 1.7.25 x")
    result = run_on_bundle(ContainerdDrift, bundle)
    assert result.findings[0].message.startswith(
        "/etc/containerd/config.toml is config version 3 (line 1) but containerd is v1.7.25"
    )
    assert result.fix is None


def test_kubelet_1_34_with_containerd_2_takes_the_driver_from_containerd(tmp_path: Path) -> None:
    v2 = "containerd github.com/containerd/containerd/v2 v2.1.4 75cb2b71"
    bundle = bundle_for(tmp_path / "a", "kubeadm-2.1", containerd=v2, kubelet="v1.34.1")
    config = bundle / "host/etc/containerd/config.toml"
    config.write_text(config.read_text().replace("pause:3.10'", "pause:3.10.1'"))
    good = run_on_bundle(ContainerdDrift, bundle)
    assert good.status is Status.OK, good.summary
    bad = run_on_bundle(
        ContainerdDrift, bundle_for(tmp_path / "b", "default-2.1", containerd=v2, kubelet="v1.34.1")
    )
    assert bad.status is Status.WARN
    (finding,) = [f for f in bad.findings if "SystemdCgroup" in f.message]
    assert finding.message.startswith(
        "SystemdCgroup = false (containerd's default) on a systemd host with cgroup v2: kubelet "
        "v1.34.1 takes its cgroup driver from containerd v2.1.4"
    )
    # kubeadm 1.34 expects pause 3.10.1; containerd 2.1's default file pins 3.10
    assert any("expects pause:3.10.1" in f.message for f in bad.findings)


def test_pause_tags() -> None:
    assert expected_pause((1, 27, 0)) == "3.9"
    assert expected_pause((1, 30, 9)) == "3.9"
    assert expected_pause((1, 31, 0)) == "3.10"
    assert expected_pause((1, 33, 4)) == "3.10"
    assert expected_pause((1, 34, 0)) == "3.10.1"
    assert expected_pause((1, 36, 0)) == "3.10.1"


def test_kubelet_on_docker_skips(tmp_path: Path) -> None:
    bundle = copy_bundle(HEALTHY, tmp_path)
    flags = bundle / "host/var/lib/kubelet/kubeadm-flags.env"
    flags.write_text(
        'KUBELET_KUBEADM_ARGS="--container-runtime-endpoint=unix:///var/run/cri-dockerd.sock"\n'
    )
    result = run_on_bundle(ContainerdDrift, bundle)
    assert result.status is Status.SKIP
    assert result.summary.startswith("the kubelet uses docker, not containerd")


def test_old_docker_bundle_skips() -> None:
    result = run_on_bundle(ContainerdDrift, BUNDLES / "healthy-node")
    assert result.status is Status.SKIP


@pytest.mark.parametrize(
    ("path", "text", "start"),
    [
        ("etc/containerd/config.toml", 'version = 2\n[plugins."io.containerd.grpc.v1.cri"\n',
         "/etc/containerd/config.toml:2: invalid TOML: "),
        ("etc/containerd/certs.d/docker.io/hosts.toml", 'server = "https://x\n',
         "/etc/containerd/certs.d/docker.io/hosts.toml:1: invalid TOML: "),
        ("var/lib/kubelet/config.yaml", "kind: KubeletConfiguration\n  cgroupDriver: x: y\n",
         "/var/lib/kubelet/config.yaml:2: invalid YAML: "),
    ],
)  # fmt: skip
def test_broken_files_are_an_error_naming_file_and_line(
    tmp_path: Path, path: str, text: str, start: str
) -> None:
    bundle = copy_bundle(HEALTHY, tmp_path)
    (bundle / "host" / path).write_text(text)
    result = run_on_bundle(ContainerdDrift, bundle)
    assert result.status is Status.ERROR
    assert result.summary.startswith(start), result.summary


# -- the fix, verified by the real containerd ------------------------------------------------

SHIM = """#!/bin/sh
printf '%s\\n' "$*" >> "$SHIM_LOG"
if [ -n "$SHIM_FAIL" ] && [ "$*" = "$SHIM_FAIL" ]; then
    echo "systemctl shim: $* failed as asked" >&2
    exit 1
fi
exit 0
"""


class Node:
    """A --root from the healthy bundle with a fixture /etc/containerd; kdoctor runs in a
    private mount namespace where that /etc/containerd is bind-mounted on the real one, so the
    real ``containerd config dump`` reads the same files (imports included)."""

    def __init__(self, tmp_path: Path, case: str) -> None:
        if not can_dump():
            pytest.skip("needs root and Debian's containerd (the fix verifies with its dump)")
        self.root = tmp_path / "root"
        shutil.copytree(HEALTHY / "host", self.root, symlinks=True)
        shutil.rmtree(self.root / "etc/containerd")
        shutil.copytree(CONFIGS / case / "etc/containerd", self.root / "etc/containerd")
        # systemd "running" (the fix's preflight asks); the shim below answers systemctl
        (self.root / "run/systemd/system").mkdir(parents=True, exist_ok=True)
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        (self.bin / "systemctl").write_text(SHIM)
        (self.bin / "systemctl").chmod(0o755)
        # the kubelet's version, as `kubelet --version` would say it
        (self.bin / "kubelet").write_text("#!/bin/sh\necho Kubernetes v1.30.4\n")
        (self.bin / "kubelet").chmod(0o755)
        self.log = tmp_path / "systemctl.log"
        self.state = tmp_path / "state"

    def kdoctor(self, *args: str, fail: str = "") -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env.update(
            PATH=f"{self.bin}{os.pathsep}{env['PATH']}",
            SHIM_LOG=str(self.log),
            SHIM_FAIL=fail,
            PYTHONPATH=str(REPO),
        )
        etc = self.root / "etc/containerd"
        inner = " ".join(f"'{a}'" for a in [sys.executable, "-m", "doctor", *args])
        script = f"mount --bind '{etc}' /etc/containerd && exec {inner}"
        proc = subprocess.run(
            ["unshare", "-m", "sh", "-c", script],
            capture_output=True, text=True, env=env, cwd=REPO, timeout=120,
        )  # fmt: skip
        assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
        return proc

    def fix(self, fail: str = "") -> subprocess.CompletedProcess[str]:
        return self.kdoctor(
            "fix", CHECK, "--root", str(self.root), "--state-dir", str(self.state),
            "--yes", "--unsafe", fail=fail,
        )  # fmt: skip

    def check(self) -> dict[str, Any]:
        proc = self.kdoctor("check", "--root", str(self.root), "--only", CHECK, "--json")
        return result_of(json.loads(proc.stdout), CHECK)

    def calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def files(self) -> dict[str, bytes]:
        etc = self.root / "etc/containerd"
        return {str(p.relative_to(etc)): p.read_bytes() for p in etc.rglob("*") if p.is_file()}


def test_fix_edits_containerd_io_default_in_place_and_containerd_agrees(tmp_path: Path) -> None:
    node = Node(tmp_path, "containerd.io")
    assert node.check()["status"] == "fail"
    before = (node.root / "etc/containerd/config.toml").read_text()
    proc = node.fix()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert node.calls() == ["restart containerd"]
    after = (node.root / "etc/containerd/config.toml").read_text()
    # comments and every other line kept; only the two settings changed
    assert after.startswith(before.split("disabled_plugins")[0])
    assert '#[grpc]\n#  address = "/run/containerd/containerd.sock"' in after
    assert "disabled_plugins = []" in after
    doc = tomllib.loads(after)
    # a version 1 file names the plugin by its short id (containerd 1.x reads only that)
    assert doc["plugins"]["cri"]["containerd"]["runtimes"]["runc"]["options"] == {
        "SystemdCgroup": True
    }
    # the real containerd reads it so
    dump = tomllib.loads(real_dump(node.root / "etc/containerd"))
    assert dump["disabled_plugins"] == []
    options = dump["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]
    assert options["options"]["SystemdCgroup"] is True
    (entry,) = read_journal(node.state)
    assert entry["outcome"] == "applied" and entry["recheck_status"] == "ok"
    assert node.check()["status"] == "ok"


def test_fix_writes_into_the_import_that_wins(tmp_path: Path) -> None:
    node = Node(tmp_path, "dropin-replaces-cri")
    proc = node.fix()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    dropin = (node.root / "etc/containerd/conf.d/10-systemd-cgroup.toml").read_text()
    assert 'sandbox_image = "registry.k8s.io/pause:3.9"' in dropin
    assert "# the cgroup driver the kubelet uses" in dropin
    dump = tomllib.loads(real_dump(node.root / "etc/containerd"))
    assert dump["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] == (
        "registry.k8s.io/pause:3.9"
    )


def test_fix_rolled_back_when_the_restart_fails(tmp_path: Path) -> None:
    node = Node(tmp_path, "containerd.io")
    before = node.files()
    proc = node.fix(fail="restart containerd")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert node.calls() == [
        "restart containerd",
        "daemon-reload",
        "try-restart containerd",
    ]
    assert node.files() == before
    (entry,) = read_journal(node.state)
    assert entry["outcome"] == "rolled-back"


def test_verify_step_fails_when_containerd_reads_otherwise(tmp_path: Path) -> None:
    """The verify step against the real binary: an expectation containerd's own merge does
    not meet is a failed step (the engine then rolls back)."""
    if shutil.which("containerd") is None:
        pytest.skip("containerd is not installed (Debian package containerd)")
    root = tmp_path / "root"
    shutil.copytree(CONFIGS / "kubeadm-1.7", root)
    ctx = FixContext(
        node=LiveNodeFacts(root), cluster=BundleCluster(tmp_path), runner=CommandRunner(), root=root
    )
    systemd = (*CRI, "containerd", "runtimes", "runc", "options", "SystemdCgroup")
    VerifyContainerdConfig(
        "/etc/containerd/config.toml", [Expect("SystemdCgroup", (systemd,), True)]
    ).apply(ctx)
    with pytest.raises(CommandFailed, match="SystemdCgroup is true, expected false"):
        VerifyContainerdConfig(
            "/etc/containerd/config.toml", [Expect("SystemdCgroup", (systemd,), False)]
        ).apply(ctx)
