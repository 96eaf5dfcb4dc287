"""node.services: the container runtime and kubelet are enabled and running."""

from __future__ import annotations

from dataclasses import dataclass, field

from doctor.core.context import CheckContext
from doctor.core.errors import FactMissing
from doctor.core.fix import Action, Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.facts.distro import package_tool
from doctor.facts.systemctl import UnitStatus, start_command, unit_status
from fixes.base import Command

#: Runtimes kubelet may use, in the order they must start (docker-ce runs on containerd).
RUNTIMES = ("containerd", "docker")
KUBELET = "kubelet"
#: LoadState values of a unit file systemd refused (e.g. two ExecStart= in a service).
BROKEN_LOAD_STATES = frozenset({"error", "bad-setting"})

KUBELET_CRASHLOOP_HINT = (
    "Before `kubeadm init` or `kubeadm join`, kubelet exits and systemd restarts it every 10 s "
    "until kubeadm writes its configuration: run kubeadm first. Otherwise read why it exits: "
    "`journalctl -u kubelet -n 50`."
)


@dataclass
class _Diagnosis:
    findings: list[Finding] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)


class Services(Check):
    """The container runtime (docker, containerd) and kubelet are enabled and active.

    Reads `systemctl show <unit>` for containerd, docker and kubelet (a bundle's
    `commands/systemctl-show-<unit>.txt`): `LoadState`, `ActiveState`, `SubState`,
    `UnitFileState`, `Result`, `ExecMainStatus`. Every installed runtime and kubelet must be
    enabled (`UnitFileState` enabled, or static/alias/generated for units that cannot be
    enabled) and active (`ActiveState=active`). kubelet not installed is `fail`; a runtime not
    installed is only a problem when neither is. Not active is `fail` (with the last failure
    when `Result` is not `success`); active but not enabled, or enabled only until the next
    boot (`enabled-runtime`), is `warn`. When systemd is not running, enablement comes from
    unit files and `*.wants` links and the active state is unknown: the check is `skip` with
    the reason unless the unit files alone show a problem — never `ok` on a guess.

    ## Why it matters
    kubelet is what makes a machine a node: when it is stopped the node turns NotReady and its
    pods are evicted. It needs a running container runtime; the lab-22 kubeadm lab's install steps
    (`systemctl enable docker && systemctl start docker`, the same for kubelet) are easy to
    half-do, and a unit that is active but not enabled silently breaks the node at the next
    reboot. kubeadm's preflight only warns that kubelet is not enabled and no longer looks at
    docker at all; troubleshoot's `hostServices` cannot see enablement.

    ## How to fix
    `systemctl enable --now <unit>` for each unit that is not enabled or not active, runtimes
    first. A unit that keeps restarting (`activating (auto-restart)`) or failed needs its cause
    fixed: `journalctl -u <unit>`; kubelet crash-loops by design until `kubeadm init`/`join`
    has configured it. A masked unit needs `systemctl unmask <unit>` first (someone masked it
    on purpose: kdoctor leaves that to you).

    ## Fix safety
    safe: it only starts and enables services the node is meant to run, and is idempotent.
    One `systemctl enable --now <unit>` per unit that is not enabled or not active (failed
    units are started again; crash-looping and masked ones are left alone); its undo puts back
    only what changed (`systemctl disable --now` when the unit was neither enabled nor active,
    `disable` when it was only active, `stop` when it was only enabled). No fix is offered when
    systemd is not running.
    """

    id = "node.services"
    title = "Container runtime and kubelet are enabled and active"
    scope = Scope.NODE
    fix_safety = FixSafety.SAFE

    def run(self, ctx: CheckContext) -> Verdict:
        units = {name: unit_status(ctx.node, name) for name in (*RUNTIMES, KUBELET)}
        if all(unit.installed is None for unit in units.values()):
            raise FactMissing(
                "cannot tell whether kubelet, docker or containerd are installed: "
                f"{units[KUBELET].unknown_reason}"
            )
        kubelet = units[KUBELET]
        runtimes = [units[name] for name in RUNTIMES]
        diag = _Diagnosis()
        tool = package_tool(ctx.node)

        installed_runtimes = [unit for unit in runtimes if unit.installed]
        if not installed_runtimes:
            undecided = [unit for unit in runtimes if unit.installed is None]
            if undecided:
                reasons = sorted({str(unit.unknown_reason) for unit in undecided})
                diag.unknown.append(
                    "cannot tell whether docker or containerd is installed: " + "; ".join(reasons)
                )
            else:
                diag.findings.append(
                    Finding(
                        Severity.FAIL,
                        "no container runtime is installed (neither docker nor containerd)",
                        resource="docker.service, containerd.service",
                        evidence={unit.name: unit.evidence() for unit in runtimes},
                        hint=f"Install the runtime the kubelet uses (e.g. "
                        f"{tool.install('containerd')}), then `systemctl enable --now "
                        "containerd`.",
                    )
                )

        checked = list(installed_runtimes)
        if kubelet.installed is False:
            diag.findings.append(
                Finding(
                    Severity.FAIL,
                    "kubelet is not installed",
                    resource=kubelet.name,
                    evidence=kubelet.evidence(),
                    hint=f"Install it ({tool.install('kubelet', 'kubeadm')} from the "
                    "Kubernetes package repository), then `systemctl enable --now kubelet`.",
                )
            )
        elif kubelet.installed is None:
            diag.unknown.append(
                f"cannot tell whether kubelet is installed: {kubelet.unknown_reason}"
            )
        else:
            checked.append(kubelet)

        for unit in checked:
            _judge(unit, diag)

        if not diag.findings and diag.unknown:
            return Verdict.skip("; ".join(diag.unknown))
        fix = None
        if diag.actions:
            fix = Fix(
                id="node.services.enable-now",
                title="Enable and start " + _join(_names(diag.actions)),
                safety=FixSafety.SAFE,
                actions=diag.actions,
            )
        return Verdict.from_findings(
            diag.findings,
            summary="; ".join(f.message for f in diag.findings),
            ok_summary=f"{_join([unit.short for unit in checked])} enabled and active",
            fix=fix,
        )


def _join(names: list[str]) -> str:
    """``a, b and c``."""
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _names(actions: list[Action]) -> list[str]:
    return [action.argv[-1] for action in actions if isinstance(action, Command)]


def _judge(unit: UnitStatus, diag: _Diagnosis) -> None:
    """Add what is wrong with one installed unit (and the step that repairs it)."""
    evidence = unit.evidence()
    name = unit.short
    if unit.masked:
        diag.findings.append(
            Finding(
                Severity.FAIL,
                f"{name} is masked: it cannot start"
                + (" again (at boot or after it stops)" if unit.up else ""),
                resource=unit.name,
                evidence=evidence,
                hint=f"Someone masked it on purpose; if it is meant to run: "
                f"`systemctl unmask {name} && systemctl enable --now {name}`.",
            )
        )
        return

    if unit.up is None:  # systemd is not running: only the unit files are known
        if unit.enabled:
            diag.unknown.append(
                f"{name} is {unit.unit_file_state}, active state unknown ({unit.unknown_reason})"
            )
        else:
            diag.findings.append(
                Finding(
                    Severity.WARN,
                    f"{name} is {unit.unit_file_state}: it does not start at boot (active state "
                    f"unknown: {unit.unknown_reason})",
                    resource=unit.name,
                    evidence=evidence,
                    hint=f"`systemctl enable --now {name}` once systemd runs.",
                )
            )
        return

    if unit.load_state in BROKEN_LOAD_STATES and not unit.up:
        error = unit.properties.get("LoadError", "")
        diag.findings.append(
            Finding(
                Severity.FAIL,
                f"{name} cannot start: its unit does not load (LoadState={unit.load_state})",
                resource=unit.name,
                evidence=evidence,
                hint=f"systemd refused the unit file{': ' + error if error else ''}; "
                f"`systemctl status {name}` names the bad setting. Fix the unit or drop-in, "
                f"then `systemctl daemon-reload && systemctl enable --now {name}`.",
            )
        )
        return

    state = unit.unit_file_state or "not enabled"
    if unit.up:
        if unit.unit_file_state == "enabled-runtime":
            message = f"{name} is active but enabled only until the next boot (enabled-runtime)"
        elif not unit.enabled:
            message = f"{name} is active but {state}: it will not start at the next boot"
        else:
            return
        diag.findings.append(
            Finding(
                Severity.WARN,
                message,
                resource=unit.name,
                evidence=evidence,
                hint=f"`systemctl enable {name}`",
            )
        )
        _add_step(unit, diag)
        return

    failure = unit.last_failure()
    if unit.active_state == "activating" and unit.sub_state == "auto-restart":
        message = f"{name} is {unit.state_text}: it keeps exiting"
        if failure:
            message += f" ({failure})"
        hint = (
            KUBELET_CRASHLOOP_HINT
            if name == KUBELET
            else f"Read why it exits: `journalctl -u {name} -n 50`; restarting it will not help."
        )
        diag.findings.append(
            Finding(Severity.FAIL, message, resource=unit.name, evidence=evidence, hint=hint)
        )
        return
    if unit.active_state == "activating":
        diag.findings.append(
            Finding(
                Severity.WARN,
                f"{name} is still starting ({unit.state_text})",
                resource=unit.name,
                evidence=evidence,
                hint=f"Check again in a moment; `systemctl status {name}` shows what it waits for.",
            )
        )
        return

    message = f"{name} is {unit.state_text}"
    if not unit.enabled:
        message += f" and {state}"
    if failure:
        message += f" (last: {failure})"
    diag.findings.append(
        Finding(
            Severity.FAIL,
            message,
            resource=unit.name,
            evidence=evidence,
            hint=f"`systemctl enable --now {name}`"
            + (f"; it failed before, see `journalctl -u {name} -n 50`" if failure else ""),
        )
    )
    _add_step(unit, diag)


def _add_step(unit: UnitStatus, diag: _Diagnosis) -> None:
    step = start_command(unit)
    if step is not None:
        diag.actions.append(Command(*step))
