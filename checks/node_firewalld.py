"""node.firewalld: firewalld must not run (or start at boot) on a Kubernetes node."""

from __future__ import annotations

from dataclasses import dataclass

from doctor.core.context import CheckContext, FixContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Action, Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.facts.systemctl import UnitStatus, start_command, unit_status
from fixes.base import Command

FIREWALLD = "firewalld"
IPTABLES = "iptables"
INSTALL_IPTABLES = "yum install -y iptables-services"

HINT = (
    "firewalld's default zone rejects what the cluster needs (API server 6443, kubelet 10250, "
    "etcd 2379-2380, the overlay's ports, forwarded pod traffic); kubeadm only warns "
    "'firewalld is active, please ensure ports [6443 10250] are open'. Stop and disable it and "
    "keep the rules with the iptables service, or open every port the cluster needs with "
    "`firewall-cmd --permanent --add-port=…` and `firewall-cmd --reload`."
)


@dataclass
class ManualStep(Action):
    """A step kdoctor cannot do safely: shown in the plan, never run."""

    text: str

    def describe(self) -> list[str]:
        return [f"# manual step, not run by kdoctor: {self.text}"]

    def apply(self, ctx: FixContext) -> None:
        ctx.runner.on_step(f"# skipped (manual): {self.text}")


class Firewalld(Check):
    """firewalld is neither running nor enabled on the node.

    Reads `systemctl show firewalld` (a bundle's `commands/systemctl-show-firewalld.txt`):
    `LoadState`, `ActiveState`, `SubState`, `UnitFileState`. Active (or starting) is `fail`;
    enabled but not running is `warn` (it comes back at the next boot); not installed, or
    masked and stopped, is `ok` (masked but still running is `fail`, without a fix). When
    systemd is not running (a chroot, a container, a bundle without
    `systemctl show` output) enablement comes from the unit file and the `*.wants` links under
    `/etc/systemd/system` (and `/usr/lib`, `/lib`); whether firewalld runs is then unknown, so
    an enabled firewalld is `warn` "enabled (active state unknown: systemd not running)" and an
    installed but disabled one is `skip` — never `ok` on a guess.

    ## Why it matters
    On CentOS/RHEL 7 firewalld is installed, enabled and running by default. Its `public`
    zone rejects everything but ssh and dhcpv6-client with `icmp-host-prohibited`, so
    `kubeadm join` hangs at discovery (6443 unreachable), `kubectl logs/exec` fail (10250),
    overlay traffic (Weave 6783-6784, VXLAN 8472, …) is dropped, and its reloads flush rules
    kube-proxy, Docker and the CNI wrote. kubeadm only warns, and only on `init`.

    ## How to fix
    What the usual CentOS 7 Kubernetes guides do: `systemctl stop firewalld`,
    `systemctl disable firewalld`, then keep an iptables ruleset with the `iptables` service
    (`yum install -y iptables-services`, `systemctl enable --now iptables`). The service loads
    `/etc/sysconfig/iptables`, whose shipped default ends in blanket REJECT rules for INPUT and
    FORWARD: `node.iptables.reject` finds and removes those. On Debian/Ubuntu the equivalent
    persistence service is `netfilter-persistent`; kdoctor does not enable it for you.
    Alternatively keep firewalld and open every port the cluster needs
    (`firewall-cmd --permanent --add-port=…`, `--add-masquerade`, `firewall-cmd --reload`).

    ## Fix safety
    unsafe: it changes the node's firewall (ports firewalld kept closed become reachable
    until iptables rules close them). Only what needs changing is planned: `systemctl stop
    firewalld` when it runs, `systemctl disable firewalld` when it is enabled, and
    `systemctl enable --now iptables` when the iptables unit exists and is not already
    enabled and active. When it does not exist the plan says to install `iptables-services`
    as a manual step. Each step carries its exact undo (`systemctl start firewalld`,
    `systemctl enable firewalld`, `systemctl disable --now iptables` / `stop` / `disable`), so
    a rollback re-enables only what was enabled and restarts only what was running. No fix is
    offered when systemd is not running.
    """

    id = "node.firewalld"
    title = "firewalld is not running or enabled"
    scope = Scope.NODE
    fix_safety = FixSafety.UNSAFE

    def run(self, ctx: CheckContext) -> Verdict:
        fw = unit_status(ctx.node, FIREWALLD)
        if fw.installed is None:
            raise FactMissing(f"cannot tell whether firewalld is installed: {fw.unknown_reason}")
        if not fw.installed:
            return Verdict.ok("firewalld is not installed")
        if fw.masked and fw.running:
            # `systemctl mask` does not stop a running unit, and a rollback could not start a
            # masked one again: say what to run instead of offering a fix.
            finding = Finding(
                Severity.FAIL,
                f"firewalld is {fw.state_text} though masked",
                resource=fw.name,
                evidence=fw.evidence(),
                hint=HINT + f" It is masked already: `systemctl stop {FIREWALLD}` is enough.",
            )
            return Verdict.from_findings([finding], finding.message, "firewalld is not running")
        if fw.masked:
            return Verdict.ok("firewalld is masked (it cannot start)")

        if fw.running is None:  # systemd is not running: only the unit files are known
            if not fw.enabled:
                return Verdict.skip(
                    f"firewalld is installed and {fw.unit_file_state}, but whether it runs is "
                    f"unknown ({fw.unknown_reason})"
                )
            finding = Finding(
                Severity.WARN,
                f"firewalld is {fw.unit_file_state} (active state unknown: {fw.unknown_reason})",
                resource=fw.name,
                evidence=fw.evidence(),
                hint=HINT + " (No fix is offered while systemd is not running.)",
            )
            return Verdict.from_findings(
                [finding], summary=finding.message, ok_summary="firewalld is not enabled"
            )

        if fw.running:
            enabled = f" and {fw.unit_file_state}" if fw.enabled else ""
            finding = Finding(
                Severity.FAIL,
                f"firewalld is {fw.state_text}{enabled}",
                resource=fw.name,
                evidence=fw.evidence(),
                hint=HINT,
            )
        elif fw.enabled:
            finding = Finding(
                Severity.WARN,
                f"firewalld is {fw.unit_file_state} (starts at the next boot) though "
                f"{fw.state_text}",
                resource=fw.name,
                evidence=fw.evidence(),
                hint=HINT,
            )
        else:
            return Verdict.ok(
                f"firewalld is installed but {fw.state_text} and {fw.unit_file_state or 'disabled'}"
            )
        return Verdict.from_findings(
            [finding],
            summary=finding.message,
            ok_summary="firewalld is not running",
            fix=self._fix(ctx, fw),
        )

    def _fix(self, ctx: CheckContext, fw: UnitStatus) -> Fix:
        actions: list[Action] = []
        if fw.running:
            actions.append(
                Command(["systemctl", "stop", FIREWALLD], [["systemctl", "start", FIREWALLD]])
            )
        if fw.unit_file_state == "enabled":
            actions.append(
                Command(["systemctl", "disable", FIREWALLD], [["systemctl", "enable", FIREWALLD]])
            )
        elif fw.unit_file_state == "enabled-runtime":
            actions.append(
                Command(
                    ["systemctl", "disable", "--runtime", FIREWALLD],
                    [["systemctl", "enable", "--runtime", FIREWALLD]],
                )
            )
        elif fw.enabled:
            actions.append(
                ManualStep(
                    f"firewalld is {fw.unit_file_state}; `systemctl disable` cannot turn that off: "
                    f"systemctl mask {FIREWALLD}"
                )
            )
        actions.extend(self._iptables_actions(ctx))
        return Fix(
            id="node.firewalld.replace-with-iptables",
            title="Stop and disable firewalld, keep rules with the iptables service",
            safety=FixSafety.UNSAFE,
            actions=actions,
        )

    @staticmethod
    def _iptables_actions(ctx: CheckContext) -> list[Action]:
        try:
            ipt = unit_status(ctx.node, IPTABLES)
        except FactError as exc:
            return [
                ManualStep(
                    f"cannot read the iptables unit ({exc}); check it and run: "
                    f"systemctl enable --now {IPTABLES}"
                )
            ]
        if ipt.installed is False:
            return [
                ManualStep(
                    f"the iptables service is not installed (iptables-services): "
                    f"{INSTALL_IPTABLES} && systemctl enable --now {IPTABLES}"
                )
            ]
        if ipt.installed is None or ipt.up is None or ipt.enabled is None:
            return [
                ManualStep(
                    f"the iptables unit's state is unknown ({ipt.unknown_reason}); when "
                    f"iptables-services is installed run: systemctl enable --now {IPTABLES}"
                )
            ]
        if ipt.masked:
            return [
                ManualStep(
                    f"iptables.service is masked: systemctl unmask {IPTABLES} && "
                    f"systemctl enable --now {IPTABLES}"
                )
            ]
        step = start_command(ipt)
        return [] if step is None else [Command(*step)]
