"""node.kernel: what the kubelet and the CNI need from the kernel, now and after a reboot."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from doctor.analysis.runtime import read_kubelet, version_text
from doctor.core.context import CheckContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Action, Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.core.sources import NodeFacts
from doctor.parse.kernel import (
    Assignment,
    active_swaps,
    boot_modules,
    boot_sysctl,
    fstab_swaps,
    loaded_modules,
    parse_sysctl,
)
from doctor.parse.kubelet import Kubelet
from fixes.base import Command, WriteFile
from fixes.kernel import SetSysctl, sysctl_path

IP_FORWARD = "net.ipv4.ip_forward"
BRIDGE_NF = "net.bridge.bridge-nf-call-iptables"
BR_NETFILTER = "br_netfilter"
SYSCTL_FILE = "/etc/sysctl.d/90-kdoctor.conf"
MODULES_FILE = "/etc/modules-load.d/kdoctor.conf"
FSTAB = "/etc/fstab"
CGROUP_V2_MARK = "/sys/fs/cgroup/cgroup.controllers"
#: The kernel's value of a key when no sysctl file sets it (bridge-nf-call-* start at 1 when
#: br_netfilter loads; ip_forward at 0).
KERNEL_DEFAULTS = {IP_FORWARD: "0", BRIDGE_NF: "1"}
#: cgroup v1 and the kubelet (KEP-4569 "Moving cgroup v1 support into maintenance mode",
#: Kubernetes 1.31; kubelet 1.35 refuses to start on cgroup v1 unless failCgroupV1: false,
#: CHANGELOG-1.35). Versions are (major, minor).
CGROUP_V1_WARN_FROM = (1, 31)
CGROUP_V1_FAIL_FROM = (1, 35)
HEADER = "# Written by kdoctor (node.kernel): what the kubelet and the CNI need, at every boot.\n"


@dataclass
class Plan:
    """What a fix would do, built while judging."""

    sysctls: dict[str, str] = field(default_factory=dict)  # set now
    persist: dict[str, str] = field(default_factory=dict)  # into 90-kdoctor.conf
    modprobe: bool = False
    persist_module: bool = False
    swapoff: bool = False
    fstab_lines: list[int] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)  # why a part cannot be fixed


def _value(node: NodeFacts, key: str) -> str | None:
    text = node.read_text(sysctl_path(key))
    return None if text is None else text.strip()


def _boot_value(assignments: list[Assignment], key: str) -> tuple[str, list[Assignment]]:
    """The value a key gets at boot and every file line that sets it (the last one wins)."""
    setting = [a for a in assignments if a.key == key]
    if setting:
        return setting[-1].value, setting
    return KERNEL_DEFAULTS[key], []


def _shadow_evidence(setting: list[Assignment]) -> dict[str, Any]:
    if not setting:
        return {}
    return {
        "set_at_boot_by": [f"{a.where()} ({a.key} = {a.value})" for a in setting],
        "wins": setting[-1].where(),
    }


class NodeKernel(Check):
    """The kernel prerequisites of kubeadm's install instructions: bridged traffic through iptables,
    forwarding, swap and the cgroup version, now and after a reboot.

    Read: ``/proc/sys/net/bridge/bridge-nf-call-iptables`` (it exists only while
    ``br_netfilter`` is loaded), ``/proc/sys/net/ipv4/ip_forward``, ``/proc/modules``,
    ``/proc/swaps``, ``/sys/fs/cgroup/cgroup.controllers`` (cgroup v2), and what a boot
    applies: ``/etc/sysctl.d`` and the other sysctl.d directories plus ``/etc/sysctl.conf``
    (systemd-sysctl's order: file names sorted, a later assignment wins), the modules-load.d
    directories and ``/etc/modules``, ``/etc/fstab``. The kubelet's ``failSwapOn``,
    ``memorySwap`` and ``failCgroupV1`` come from ``/var/lib/kubelet/config.yaml`` and its
    flags; its version from ``kubelet --version``.

    ## Why it matters
    Without ``br_netfilter`` (or with ``bridge-nf-call-iptables = 0``) traffic between pods
    on one bridge bypasses iptables, so Service IPs do not answer from pods; without
    ``ip_forward = 1`` nothing routes between pods and nodes. The kubelet refuses to start
    with swap on (``failSwapOn: true``, the default), and from 1.35 on a cgroup v1 host
    (1.31–1.34: maintenance mode, warn). A value set by hand with ``sysctl -w`` or
    ``modprobe`` is gone after the next reboot: the node breaks again then.

    ## How to fix
    Set the value now and persist it in one file of kdoctor's: ``modprobe br_netfilter`` and
    ``/etc/modules-load.d/kdoctor.conf``; ``sysctl -w`` and ``/etc/sysctl.d/90-kdoctor.conf``.
    When a file applied later (e.g. ``99-sysctl.conf``) sets the key otherwise, that file is
    named and no persistence is offered for the key (it would not win). Swap: ``swapoff -a``
    and the fstab swap lines commented out. cgroup v1: boot with
    ``systemd.unified_cgroup_hierarchy=1`` (not done by kdoctor).

    ## Fix safety
    safe for the sysctl and module parts (idempotent, what kubeadm requires); unsafe when it
    turns swap off (memory pressure changes at once).
    """

    id = "node.kernel"
    title = "Kernel prerequisites of the kubelet and the CNI, now and after a reboot"
    scope = Scope.NODE
    fix_safety = FixSafety.SAFE

    def run(self, ctx: CheckContext) -> Verdict:
        node = ctx.node
        forward = _value(node, IP_FORWARD)
        if forward is None:
            raise FactMissing(
                f"{node.display_path(sysctl_path(IP_FORWARD))} is not there "
                f"({node.origin} has no /proc/sys)"
            )
        kubelet = read_kubelet(node)
        assignments = boot_sysctl(node)
        plan = Plan()
        findings: list[Finding] = []
        notes: dict[str, Any] = {}
        dockerd = _dockerd_sets_kernel(node, kubelet)
        if dockerd:
            notes["dockerd"] = dockerd
        findings += self._bridge(node, assignments, plan, notes, bool(dockerd))
        findings += self._forward(forward, assignments, plan, bool(dockerd))
        findings += self._swap(node, kubelet, plan, notes)
        findings += self._cgroup(node, kubelet, notes)
        fix = self._build_fix(node, assignments, plan) if findings else None
        summary = "; ".join(dict.fromkeys(f.evidence.get("short", f.message) for f in findings))
        if plan.blocked:
            summary += "; " + "; ".join(plan.blocked)
        return Verdict.from_findings(
            [
                Finding(
                    f.severity,
                    f.message,
                    f.resource,
                    {k: v for k, v in f.evidence.items() if k != "short"},
                    f.hint,
                )
                for f in findings
            ],
            summary=summary,
            ok_summary=(
                f"br_netfilter loaded, {BRIDGE_NF} = 1, {IP_FORWARD} = 1, persisted for boot; "
                f"{notes.get('swap', 'swap off')}; {notes.get('cgroup', 'cgroup version unknown')}"
            ),
            fix=fix,
            evidence=notes,
        )

    # -- br_netfilter and bridge-nf-call-iptables -------------------------------------------
    def _bridge(
        self,
        node: NodeFacts,
        assignments: list[Assignment],
        plan: Plan,
        notes: dict[str, Any],
        dockerd: bool,
    ) -> list[Finding]:
        findings: list[Finding] = []
        bridge = _value(node, BRIDGE_NF)
        modules_text = node.read_text("/proc/modules")
        loaded = loaded_modules(modules_text) if modules_text is not None else None
        persisted = [m for m in boot_modules(node) if m.module == BR_NETFILTER]
        boot, setting = _boot_value(assignments, BRIDGE_NF)
        if bridge is None:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"{BR_NETFILTER} is not loaded ({sysctl_path(BRIDGE_NF)} does not exist): "
                    "traffic between pods on one bridge bypasses iptables, Service IPs do "
                    "not answer from pods",
                    resource=BR_NETFILTER,
                    evidence={
                        "short": f"{BR_NETFILTER} not loaded",
                        "proc_modules": "not read" if loaded is None else "no br_netfilter",
                        "modules_load_d": [m.where() for m in persisted] or "not listed",
                    },
                    hint=f"modprobe {BR_NETFILTER} and list it in {MODULES_FILE}",
                )
            )
            plan.modprobe = True
            plan.persist_module = not persisted
            plan.sysctls[BRIDGE_NF] = "1"
            if boot != "1":
                plan.persist[BRIDGE_NF] = "1"
            return findings
        if bridge != "1":
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"{BRIDGE_NF} = {bridge}: bridged pod traffic bypasses iptables "
                    "(kube-proxy's Service rules never see it)",
                    resource=BRIDGE_NF,
                    evidence={"short": f"{BRIDGE_NF} = {bridge}", "now": bridge},
                    hint=f"sysctl -w {BRIDGE_NF}=1 and persist it in /etc/sysctl.d",
                )
            )
            plan.sysctls[BRIDGE_NF] = "1"
        if not persisted and not dockerd:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"{BR_NETFILTER} is loaded now, but no modules-load.d file (nor /etc/modules) "
                    "loads it at boot: after a reboot it is missing until something loads it",
                    resource=BR_NETFILTER,
                    evidence={"short": f"{BR_NETFILTER} not loaded at boot"},
                    hint=f"list {BR_NETFILTER} in {MODULES_FILE}",
                )
            )
            plan.persist_module = True
        notes["br_netfilter_at_boot"] = [m.where() for m in persisted]
        if boot != "1":
            last = setting[-1]
            findings.append(
                Finding(
                    Severity.WARN if bridge == "1" else Severity.FAIL,
                    f"{BRIDGE_NF} is set to {boot} at boot by {last.where()}"
                    + (
                        f" (over {', '.join(a.where() for a in setting[:-1])})"
                        if setting[:-1]
                        else ""
                    ),
                    resource=last.file,
                    evidence={
                        "short": f"{BRIDGE_NF} = {boot} after a reboot",
                        **_shadow_evidence(setting),
                    },
                    hint=f"set {BRIDGE_NF} = 1 in {last.file}",
                )
            )
            plan.persist[BRIDGE_NF] = "1"
        return findings

    # -- ip_forward -------------------------------------------------------------------------
    def _forward(
        self, forward: str, assignments: list[Assignment], plan: Plan, dockerd: bool
    ) -> list[Finding]:
        findings: list[Finding] = []
        boot, setting = _boot_value(assignments, IP_FORWARD)
        if forward != "1":
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"{IP_FORWARD} = {forward}: the node does not route pod traffic "
                    "(kubeadm preflight: /proc/sys/net/ipv4/ip_forward contents are not set to 1)",
                    resource=IP_FORWARD,
                    evidence={"short": f"{IP_FORWARD} = {forward}", "now": forward},
                    hint=f"sysctl -w {IP_FORWARD}=1 and persist it in /etc/sysctl.d",
                )
            )
            plan.sysctls[IP_FORWARD] = "1"
        if boot != "1" and not (dockerd and forward == "1"):
            where = (
                f"set to {boot} at boot by {setting[-1].where()}"
                if setting
                else "not set by any sysctl file: the kernel starts with 0"
            )
            findings.append(
                Finding(
                    Severity.WARN if forward == "1" else Severity.FAIL,
                    f"{IP_FORWARD} is {where}; after a reboot pod traffic is not routed",
                    resource=setting[-1].file if setting else IP_FORWARD,
                    evidence={
                        "short": f"{IP_FORWARD} = {boot} after a reboot",
                        **_shadow_evidence(setting),
                    },
                    hint=f"persist {IP_FORWARD} = 1 in /etc/sysctl.d",
                )
            )
            plan.persist[IP_FORWARD] = "1"
        return findings

    # -- swap -------------------------------------------------------------------------------
    def _swap(
        self, node: NodeFacts, kubelet: Kubelet | None, plan: Plan, notes: dict[str, Any]
    ) -> list[Finding]:
        proc_swaps = node.read_text("/proc/swaps")
        active = active_swaps(proc_swaps) if proc_swaps is not None else []
        fstab_text = node.read_text(FSTAB)
        at_boot = [s for s in fstab_swaps(fstab_text) if s.auto] if fstab_text is not None else []
        if kubelet is None:
            kubelet = Kubelet(None)
        fail_swap_on = kubelet.fail_swap_on
        behavior = kubelet.swap_behavior
        if proc_swaps is None:
            notes["swap"] = "swap not read (no /proc/swaps)"
        elif not active:
            notes["swap"] = "swap off"
        if not fail_swap_on.value:
            if active:
                notes["swap"] = (
                    f"swap on, allowed: failSwapOn false ({fail_swap_on.source}), "
                    f"swapBehavior {behavior.value} ({behavior.source})"
                )
            return []
        findings: list[Finding] = []
        if active:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"swap is on ({', '.join(active)}) and the kubelet refuses to start with "
                    f"swap (failSwapOn: true, {fail_swap_on.source})",
                    resource="/proc/swaps",
                    evidence={
                        "short": "swap on",
                        "active": active,
                        "fstab": [s.where() for s in at_boot],
                        "failSwapOn": fail_swap_on.source,
                    },
                    hint="swapoff -a and comment out the swap lines of /etc/fstab, or set "
                    "failSwapOn: false with memorySwap.swapBehavior in the kubelet's config",
                )
            )
            plan.swapoff = True
        if at_boot:
            findings.append(
                Finding(
                    Severity.WARN if not active else Severity.FAIL,
                    f"{', '.join(s.where() for s in at_boot)} turns swap on at boot: the kubelet "
                    "(failSwapOn: true) does not start after a reboot",
                    resource=FSTAB,
                    evidence={
                        "short": "swap on after a reboot",
                        "lines": [s.text for s in at_boot],
                    },
                    hint="comment out the swap line of /etc/fstab",
                )
            )
            plan.fstab_lines = [s.line for s in at_boot]
        return findings

    # -- cgroup version ---------------------------------------------------------------------
    def _cgroup(
        self, node: NodeFacts, kubelet: Kubelet | None, notes: dict[str, Any]
    ) -> list[Finding]:
        if node.exists(CGROUP_V2_MARK):
            notes["cgroup"] = "cgroup v2"
            return []
        if node.is_bundle:
            # The collector of 2026-12 writes cgroup.controllers on a v2 host and, with it,
            # /proc/modules: only such a bundle tells v1 by the file's absence.
            if not node.exists("/proc/modules"):
                notes["cgroup"] = "cgroup version not in this bundle"
                return []
        elif not node.listdir("/sys/fs/cgroup"):
            notes["cgroup"] = f"cgroup version unknown (no /sys/fs/cgroup under {node.origin})"
            return []
        version = kubelet.version if kubelet is not None else None
        notes["cgroup"] = "cgroup v1"
        if version is None:
            notes["cgroup"] = "cgroup v1 (kubelet version unknown: not judged)"
            return []
        minor = version[:2]
        assert kubelet is not None
        fail_v1 = kubelet.fail_cgroup_v1
        if minor >= CGROUP_V1_FAIL_FROM:
            severity = Severity.FAIL if fail_v1.value else Severity.WARN
            message = (
                f"cgroup v1 host and kubelet {version_text(version)}: the kubelet refuses to "
                f"start on cgroup v1 (failCgroupV1: {str(fail_v1.value).lower()}, {fail_v1.source})"
                if fail_v1.value
                else f"cgroup v1 host and kubelet {version_text(version)}: allowed only because "
                f"failCgroupV1: false ({fail_v1.source}); cgroup v1 support is being removed"
            )
        elif minor >= CGROUP_V1_WARN_FROM:
            severity = Severity.WARN
            message = (
                f"cgroup v1 host and kubelet {version_text(version)}: cgroup v1 is in "
                "maintenance mode since 1.31 and refused from 1.35; move to cgroup v2"
            )
        else:
            return []
        return [
            Finding(
                severity,
                message,
                resource="/sys/fs/cgroup",
                evidence={"short": "cgroup v1", "kubelet": version_text(version)},
                hint="boot with systemd.unified_cgroup_hierarchy=1 (or a distribution "
                "release that defaults to cgroup v2)",
            )
        ]

    # -- the fix ----------------------------------------------------------------------------
    def _build_fix(self, node: NodeFacts, assignments: list[Assignment], plan: Plan) -> Fix | None:
        actions: list[Action] = []
        if plan.modprobe:
            actions.append(Command(["modprobe", BR_NETFILTER]))
        if plan.persist_module:
            old = node.read_text(MODULES_FILE)
            lines = (old or HEADER).rstrip("\n").splitlines()
            if BR_NETFILTER not in [line.strip() for line in lines]:
                lines.append(BR_NETFILTER)
            actions.append(WriteFile(MODULES_FILE, "\n".join(lines) + "\n", old_content=old))
        for key, value in plan.sysctls.items():
            actions.append(SetSysctl(key, value))
        if plan.persist:
            old = node.read_text(SYSCTL_FILE)
            mine = parse_sysctl(old or "", SYSCTL_FILE)
            persisted: dict[str, str] = {}
            for key, value in plan.persist.items():
                others = [a for a in assignments if a.key == key and a.file != SYSCTL_FILE]
                later = [a for a in others if _applied_after(a.file, SYSCTL_FILE)]
                if later and later[-1].value != value:
                    plan.blocked.append(
                        f"{key} is not persisted by kdoctor: {later[-1].where()} is applied "
                        f"after {SYSCTL_FILE} and sets {later[-1].value}; change it there"
                    )
                    continue
                persisted[key] = value
            if persisted:
                drop = {a.line for a in mine if a.key in persisted}
                old_lines = (old or HEADER).rstrip("\n").splitlines()
                keep = [line for n, line in enumerate(old_lines, 1) if n not in drop]
                content = "\n".join(keep + [f"{k} = {v}" for k, v in persisted.items()]) + "\n"
                actions.append(WriteFile(SYSCTL_FILE, content, old_content=old))
        safety = FixSafety.SAFE
        if plan.swapoff or plan.fstab_lines:
            safety = FixSafety.UNSAFE
            if plan.swapoff:
                actions.append(Command(["swapoff", "-a"], undo_argvs=[["swapon", "-a"]]))
            if plan.fstab_lines:
                old = node.read_text(FSTAB) or ""
                lines = old.splitlines(keepends=True)
                for number in plan.fstab_lines:
                    lines[number - 1] = (
                        "# disabled by kdoctor (kubelet failSwapOn): " + lines[number - 1]
                    )
                actions.append(WriteFile(FSTAB, "".join(lines), old_content=old))
        if not actions:
            return None
        return Fix(
            id="node.kernel",
            title="Load br_netfilter, set the sysctls now and for every boot"
            + (", turn swap off" if safety is FixSafety.UNSAFE else ""),
            safety=safety,
            actions=actions,
        )


def _dockerd_sets_kernel(node: NodeFacts, kubelet: Kubelet | None) -> str:
    """On a Docker node dockerd itself loads br_netfilter and sets ip_forward = 1 at every
    start (libnetwork's bridge driver; ``--ip-forward`` defaults to true), so those need no
    boot file. Empty when that does not apply."""
    if kubelet is None or kubelet.runtime != "docker":
        return ""
    try:
        text = node.read_text("/etc/docker/daemon.json")
        config = json.loads(text) if text else {}
    except (FactError, ValueError):
        config = {}  # node.docker.drift reports a broken daemon.json
    if isinstance(config, dict) and config.get("ip-forward") is False:
        return ""
    return (
        "the kubelet uses Docker: dockerd loads br_netfilter and sets ip_forward = 1 at "
        "every start (no boot file needed)"
    )


def _applied_after(path: str, ours: str) -> bool:
    """systemd-sysctl applies files by name; /etc/sysctl.conf (procps) comes last."""
    if path == "/etc/sysctl.conf":
        return True
    return path.rsplit("/", 1)[-1] > ours.rsplit("/", 1)[-1]
