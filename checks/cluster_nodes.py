"""cluster.nodes: every node Ready, none with NetworkUnavailable or a pressure condition."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from doctor.analysis.podcause import cni_not_ready_message, cni_short_reason, condition
from doctor.core.context import CheckContext
from doctor.core.errors import FactMissing
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.facts.kube import NODES, KubeFacts

#: Conditions that are bad when True (Ready is the one that is bad when not True).
PRESSURE = ("MemoryPressure", "DiskPressure", "PIDPressure", "OutOfDisk")

HINT_CNI = (
    "the kubelet finds no CNI configuration in /etc/cni/net.d: the overlay's pod on this node "
    "writes it when it starts (Weave Net: 10-weave.conf). See cluster.network.cni for why "
    "that pod is not ready; the node turns Ready by itself once it is."
)
HINT_NOT_READY = (
    "look at the kubelet on that node: `journalctl -u kubelet -e` and `systemctl status "
    "kubelet docker` (node.services checks both are enabled and running)."
)
HINT_UNKNOWN = (
    "the node controller stopped hearing from the kubelet: is the node up, is the kubelet "
    "running, can it reach the API server (6443 open in the node's firewall)?"
)
HINT_NETWORK = (
    "NetworkUnavailable=True: the node's pod network route or overlay is not set up; the "
    "overlay (cluster.network.cni) or the cloud route controller clears it."
)


def _condition_evidence(cond: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "condition": cond.get("type"),
        "status": cond.get("status"),
        "reason": cond.get("reason"),
        "message": cond.get("message"),
        "lastTransitionTime": cond.get("lastTransitionTime"),
    }


def _name(node: Mapping[str, Any]) -> str:
    return str((node.get("metadata") or {}).get("name", "?"))


def node_findings(node: Mapping[str, Any]) -> list[Finding]:
    """What is wrong with one node (pure: the Node object as the API returns it)."""
    name = _name(node)
    resource = f"node/{name}"
    meta = node.get("metadata") or {}
    base = {"node": name, "resourceVersion": meta.get("resourceVersion")}
    findings: list[Finding] = []
    ready = condition(node, "Ready")
    if ready is None:
        findings.append(
            Finding(
                Severity.WARN,
                f"node {name} reports no Ready condition: its state is unknown",
                resource,
                dict(base, conditions=[c.get("type") for c in _conditions(node)]),
                hint=HINT_UNKNOWN,
            )
        )
    elif ready.get("status") != "True":
        message = str(ready.get("message") or "")
        evidence = dict(base, **_condition_evidence(ready))
        cni = cni_not_ready_message(node)
        if ready.get("status") == "Unknown":
            text = f"node {name} Ready=Unknown ({ready.get('reason')}): {message}"
            hint = HINT_UNKNOWN
        elif cni:
            text = f"node {name} is NotReady: the kubelet says: {message}"
            hint = HINT_CNI
        else:
            text = f"node {name} is NotReady ({ready.get('reason')}): {message}"
            hint = HINT_NOT_READY
        findings.append(Finding(Severity.FAIL, text.rstrip(": "), resource, evidence, hint))
    network = condition(node, "NetworkUnavailable")
    if network is not None and network.get("status") == "True":
        findings.append(
            Finding(
                Severity.FAIL,
                f"node {name} has NetworkUnavailable=True ({network.get('reason')}): "
                f"{network.get('message') or ''}".rstrip(": "),
                resource,
                dict(base, **_condition_evidence(network)),
                HINT_NETWORK,
            )
        )
    for kind in PRESSURE:
        cond = condition(node, kind)
        if cond is not None and cond.get("status") == "True":
            findings.append(
                Finding(
                    Severity.WARN,
                    f"node {name} has {kind}=True: {cond.get('message') or cond.get('reason')}",
                    resource,
                    dict(base, **_condition_evidence(cond)),
                    "the kubelet evicts pods and refuses new ones under pressure: free "
                    "memory/disk/PIDs on the node",
                )
            )
    return findings


def _conditions(node: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    conds = (node.get("status") or {}).get("conditions")
    return [c for c in conds if isinstance(c, Mapping)] if isinstance(conds, list) else []


class ClusterNodes(Check):
    """Every node is Ready, none has NetworkUnavailable=True or a pressure condition.

    Lists the nodes (`kubectl get nodes -o json`; a bundle's `cluster/nodes.json`) and reads
    each node's conditions. `Ready` not True is `fail`, with the kubelet's message quoted
    verbatim in the evidence (e.g. "runtime network not ready: NetworkReady=false
    reason:NetworkPluginNotReady message:docker: network plugin is not ready: cni config
    uninitialized"); `Ready=Unknown` (the kubelet stopped posting status) is `fail`; a node
    with no Ready condition at all is `warn` (state unknown). `NetworkUnavailable=True` is
    `fail`. `MemoryPressure`, `DiskPressure`, `PIDPressure` or `OutOfDisk` True is `warn`. No
    nodes at all is `fail`.

    ## Why it matters
    A NotReady node gets no new pods, and the pods it has cannot be reached. With kubeadm
    1.6+ a node stays NotReady until a CNI plugin is installed and working on it: the kubelet
    reports "network plugin is not ready: cni config uninitialized", kube-dns stays Pending
    or ContainerCreating, and cluster DNS is down.

    ## How to fix
    Follow the message. "cni config uninitialized": the overlay (Weave Net, …) has not
    written its CNI config on that node, usually because its pod there is not running; see
    `cluster.network.cni`. Other reasons: the kubelet or docker is down (`node.services`),
    the node cannot reach the API server (firewall: `node.firewalld`,
    `node.iptables.reject`), or the node is short of memory or disk.

    ## Fix safety
    No fix: the node's own state follows from its kubelet, runtime and overlay, which the
    checks named above repair.
    """

    id = "cluster.nodes"
    title = "Every node Ready, none with NetworkUnavailable"
    scope = Scope.CLUSTER
    reads = ("nodes",)
    fix_safety = None

    def run(self, ctx: CheckContext) -> Verdict:
        cluster = ctx.cluster
        if not isinstance(cluster, KubeFacts):
            raise FactMissing(cluster.unavailable or "no cluster facts")
        nodes = cluster.list_objects(NODES)
        if not nodes:
            return Verdict.from_findings(
                [
                    Finding(
                        Severity.FAIL,
                        "the cluster has no nodes registered",
                        None,
                        {"nodes": 0},
                        "a node registers itself when its kubelet starts (kubeadm join)",
                    )
                ],
                summary="no nodes",
                ok_summary="",
            )
        findings: list[Finding] = []
        for node in sorted(nodes, key=_name):
            findings.extend(node_findings(node))
        bad = sorted({f.resource for f in findings if f.severity is Severity.FAIL and f.resource})
        names = [r.split("/", 1)[1] for r in bad]
        if names:
            not_ready = [
                _name(n)
                for n in nodes
                if (condition(n, "Ready") or {}).get("status", "True") != "True"
            ]
            summary = f"{len(names)} of {len(nodes)} nodes not healthy: {', '.join(names)}"
            if not_ready:
                summary = f"{len(not_ready)} of {len(nodes)} nodes NotReady: {', '.join(not_ready)}"
                reasons = sorted(
                    {cni_short_reason(m) for m in map(cni_not_ready_message, nodes) if m}
                )
                if reasons:
                    summary += f" ({'; '.join(reasons)})"
        else:
            summary = f"{len(findings)} node warnings"
        return Verdict.from_findings(
            findings, summary=summary, ok_summary=f"all {len(nodes)} nodes Ready"
        )
