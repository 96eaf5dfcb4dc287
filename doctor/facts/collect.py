"""``kdoctor collect DIR``: write a bundle (format 1) from the live node.

The bundle holds the same files and command outputs a check reads live, under the names
``shared/spec/bundle-v1.md`` fixes, so ``kdoctor check --bundle DIR`` decides the same way.
Collecting only reads; a fact that cannot be read is left out (the check will then ``skip``
naming the missing file) and listed in the manifest's ``missing``.
"""

from __future__ import annotations

import glob
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from doctor.core.errors import FactError, FactMissing
from doctor.core.report import live_node_name
from doctor.facts.node import LiveNodeFacts
from doctor.parse.containerd import CONFIG_PATH as CONTAINERD_CONFIG
from doctor.parse.containerd import load_config, parse_containerd_version
from doctor.parse.kernel import MODULES_DIRS, SYSCTL_DIRS
from doctor.parse.toml_lines import TomlSyntaxError

HOST_FILES = [
    "/etc/os-release",
    "/etc/nftables.conf",
    "/etc/sysconfig/nftables.conf",
    "/etc/sysconfig/docker",
    "/etc/sysconfig/docker-storage",
    "/etc/sysconfig/docker-storage-setup",
    "/etc/sysconfig/docker-network",
    "/etc/sysconfig/iptables",
    "/etc/docker/daemon.json",
    "/etc/default/docker",
    "/run/containers/registries.conf",
    "/run/systemd/system/docker.service",
    "/usr/local/lib/systemd/system/docker.service",
    "/usr/lib/systemd/system/docker.service",
    "/lib/systemd/system/docker.service",
    "/etc/systemd/system/docker.service",
    "/proc/swaps",
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/bridge/bridge-nf-call-iptables",
    # the containerd node (2026-12): runtime, kubelet and kernel prerequisites
    CONTAINERD_CONFIG,
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/default/kubelet",
    "/etc/sysconfig/kubelet",
    "/etc/sysctl.conf",
    "/etc/modules",
    "/etc/fstab",
    "/proc/modules",
    "/proc/sys/net/bridge/bridge-nf-call-ip6tables",
    "/sys/fs/cgroup/cgroup.controllers",
]
HOST_GLOBS = [
    "/etc/systemd/system/docker.service.d/*.conf",
    "/usr/local/lib/systemd/system/docker.service.d/*.conf",
    "/run/systemd/system/docker.service.d/*.conf",
    "/usr/lib/systemd/system/docker.service.d/*.conf",
    "/lib/systemd/system/docker.service.d/*.conf",
    "/usr/lib/systemd/system/firewalld.service",
    "/usr/lib/systemd/system/iptables.service",
    "/usr/lib/systemd/system/kubelet.service",
    "/usr/lib/systemd/system/containerd.service",
    "/lib/systemd/system/kubelet.service",
    "/lib/systemd/system/containerd.service",
    "/lib/systemd/system/firewalld.service",
    "/lib/systemd/system/iptables.service",
    # Masks (links to /dev/null) and full overrides of the units the service checks read.
    "/etc/systemd/system/firewalld.service",
    "/etc/systemd/system/iptables.service",
    "/etc/systemd/system/kubelet.service",
    "/etc/systemd/system/containerd.service",
    "/etc/systemd/system/*.wants/*",
    "/etc/containerd/certs.d/*/hosts.toml",
    *(f"{directory}/*.conf" for directory in (*SYSCTL_DIRS, *MODULES_DIRS)),
    "/etc/systemd/system/kubelet.service.d/*.conf",
    "/usr/lib/systemd/system/kubelet.service.d/*.conf",
    "/lib/systemd/system/kubelet.service.d/*.conf",
    "/etc/systemd/system/containerd.service.d/*.conf",
]
SYSTEMD_UNITS = ["docker", "kubelet", "firewalld", "iptables", "containerd"]
COMMANDS: list[tuple[str, list[str]]] = [
    ("iptables-save.txt", ["iptables-save"]),
    ("iptables-legacy-save.txt", ["iptables-legacy-save"]),
    ("iptables-nft-save.txt", ["iptables-nft-save"]),
    ("nft-ruleset.json", ["nft", "-j", "list", "ruleset"]),
    ("docker-info.json", ["docker", "info", "--format", "{{json .}}"]),
    ("containerd-version.txt", ["containerd", "--version"]),
    ("crictl-info.json", ["crictl", "info"]),
    ("kubelet-version.txt", ["kubelet", "--version"]),
]


def collect_node(
    out: Path,
    root: Path = Path("/"),
    facts: LiveNodeFacts | None = None,
    node: str | None = None,
) -> dict[str, Any]:
    """Copy the node's files and command outputs into ``out``; return the manifest.

    FACTS: how to read the node (the fleet agent's reads the host through /host and runs
    commands in the host's namespaces); NODE: its name (default: this host's).
    """
    facts = facts if facts is not None else LiveNodeFacts(root)
    host = out / "host"
    copied: list[str] = []
    missing: list[str] = []
    paths = list(HOST_FILES)
    for pattern in HOST_GLOBS:
        matches = glob.glob(str(facts.host_path(pattern)))
        paths.extend("/" + str(Path(m).relative_to(root)) for m in sorted(matches))
    paths.extend(p for p in containerd_imports(facts) if p not in paths)
    for path in paths:
        source = facts.host_path(path)
        if not (source.exists() or source.is_symlink()):
            continue
        target = host / PurePosixPath(path).relative_to("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            if source.is_symlink():
                target.unlink(missing_ok=True)
                target.symlink_to(source.readlink())
            else:
                shutil.copyfile(source, target)
            copied.append(path)
        except OSError as exc:
            missing.append(f"{path}: {exc.strerror or exc}")

    commands = out / "commands"
    commands.mkdir(parents=True, exist_ok=True)
    wanted = list(COMMANDS)
    # ``containerd config dump`` reads the node's config.toml (under --root when given).
    dump = ["containerd", "config", "dump"]
    if root != Path("/"):
        dump = ["containerd", "--config", str(facts.host_path(CONTAINERD_CONFIG)), "config", "dump"]
    wanted.append(("containerd-config-dump.toml", dump))
    if facts.systemd_running():
        for unit in SYSTEMD_UNITS:
            wanted.append((f"systemctl-show-{unit}.txt", ["systemctl", "show", unit, "--no-pager"]))
    for name, argv in wanted:
        try:
            output = facts.command(name, argv)
        except (FactMissing, FactError) as exc:
            missing.append(f"commands/{name}: {exc}")
            continue
        (commands / name).write_text(output.stdout)

    manifest: dict[str, Any] = {
        "format": "kdoctor-bundle",
        "version": 1,
        "node": node or live_node_name(),
        "collected_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "missing": missing,
    }
    (out / "kdoctor-bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def containerd_imports(facts: LiveNodeFacts) -> list[str]:
    """The files config.toml's ``imports`` name (as containerd resolves them), to copy too."""
    try:
        version_text = facts.command("containerd-version.txt", ["containerd", "--version"]).stdout
        version = parse_containerd_version(version_text)
    except (FactMissing, FactError):
        version = None
    try:
        config = load_config(facts, version)
    except (TomlSyntaxError, FactError):
        return []  # config.toml itself is copied; the check reports why it cannot be read
    return [f.path for f in config.files[1:]] if config is not None else []
