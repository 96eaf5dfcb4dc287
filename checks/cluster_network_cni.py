"""cluster.network.cni: the overlay's DaemonSet has a ready pod on every node."""

from __future__ import annotations

from typing import Any

from doctor.analysis.podcause import (
    NodeOverlay,
    OverlayDaemonSet,
    cni_short_reason,
    overlay_state,
    pod_state,
    what_was_looked_for,
)
from doctor.core.context import CheckContext
from doctor.core.errors import FactMissing
from doctor.core.fix import Action, Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.facts.kube import DAEMONSETS, KubeFacts
from fixes.kube import DeletePod


def _counters(ds: OverlayDaemonSet) -> dict[str, Any]:
    return {
        "desiredNumberScheduled": ds.desired,
        "numberReady": ds.ready,
        "numberAvailable": ds.available,
        "updatedNumberScheduled": ds.updated,
    }


def _node_finding(ds: OverlayDaemonSet, node: NodeOverlay) -> Finding:
    meta = ds.daemonset.get("metadata") or {}
    evidence: dict[str, Any] = {
        "daemonset": f"{ds.namespace}/{ds.name}",
        "overlay": ds.kind.title,
        "node": node.node,
        "daemonset_status": _counters(ds),
        "daemonset_resourceVersion": meta.get("resourceVersion"),
    }
    if node.pod is None:
        return Finding(
            Severity.FAIL,
            f"{ds.name} has no pod on node {node.node}",
            f"daemonset/{ds.namespace}/{ds.name}",
            evidence,
            hint=(
                f"the DaemonSet controller places one {ds.name} pod per node: check the "
                "node's taints against the DaemonSet's tolerations and nodeSelector "
                f"(`kubectl -n {ds.namespace} describe ds {ds.name}`)"
            ),
        )
    cause = node.cause
    evidence["pod"] = f"{ds.namespace}/{node.pod_name}"
    evidence["pod_state"] = pod_state(node.pod)
    if cause is not None:
        evidence["cause"] = cause.category
        evidence.update({k: v for k, v in cause.evidence.items() if k not in ("pod", "node")})
    text = f"{ds.name} not ready on node {node.node}: pod {node.pod_name}"
    if cause is not None:
        text += f": {cause.message}"
    return Finding(
        Severity.FAIL,
        text,
        f"pod/{ds.namespace}/{node.pod_name}",
        evidence,
        hint=(
            f"read the failing container's log (`kubectl -n {ds.namespace} logs "
            f"{node.pod_name} -c {(cause.container if cause else None) or 'weave'} "
            "--previous`); deleting the pod makes the DaemonSet start a fresh one: "
            "`kdoctor fix cluster.network.cni --unsafe`"
        ),
    )


class NetworkCni(Check):
    """The CNI overlay's DaemonSet is ready on every node.

    Finds the overlay DaemonSets, in any namespace, by name or pod label: Weave Net
    (`weave-net`, `name=weave-net`, containers `weave` and `weave-npc`), Calico
    (`calico-node`), Canal, Cilium (`cilium`), Flannel (`kube-flannel-ds`, `kube-flannel`,
    `app=flannel`), Antrea, kube-router and kindnet. For each, compares the nodes the
    DaemonSet should run on (the node list, less nodes its nodeSelector or tolerations
    exclude) with the nodes that have a Running and Ready pod of it (the pods' `spec.nodeName`):
    a node without one is `fail`, naming the pod and why it is not ready (the container
    states and events, as `cluster.kube-system.pods` reads them: CrashLoopBackOff with the
    last exit code and message, …). Status counters that disagree (`desiredNumberScheduled`,
    `numberReady`, `numberAvailable`) while every node has a ready pod are `warn` (the status
    lags), and so is a node whose kubelet still says "network plugin is not ready" though the
    overlay's pod there is ready. No overlay DaemonSet at all is `fail` "no CNI overlay
    DaemonSet found", listing what was looked for.

    Reads the DaemonSets, the overlay namespace's pods, the nodes and (only when an overlay
    pod is not ready) that namespace's pod events: the same cached lists the node and pod
    checks read, so this costs no extra request.

    ## Why it matters
    The overlay gives every pod its IP and carries pod-to-pod traffic between nodes. On a
    node where its pod is not ready the kubelet has no CNI config ("cni config
    uninitialized"), the node is NotReady, and every new pod there (and on other nodes, when
    the overlay's IP allocator is unreachable) stays in ContainerCreating with
    FailedCreatePodSandBox: kube-dns first, so cluster DNS is down.

    ## How to fix
    Read the failing container's log (`kubectl -n kube-system logs weave-net-xxxxx -c weave
    --previous`). Weave on CentOS 7 typically cannot reach the API server
    (`10.96.0.1:443 ... no route to host`) because of the distro's blanket iptables REJECT
    (`node.iptables.reject`) or firewalld (`node.firewalld`); fix that on the node, then
    delete the pod so the DaemonSet starts a fresh one.

    ## Fix safety
    unsafe: deletes the overlay pods that are not ready (`kubectl -n kube-system delete pod
    …`, preconditioned on each pod's uid) so their DaemonSet recreates them. Pod networking on
    those nodes is down already; a restart cannot make it worse, but it cannot be undone and
    it only helps once the cause (often a node firewall) is gone. Nodes with no overlay pod at
    all get no fix (nothing to delete: see the DaemonSet's events).
    """

    id = "cluster.network.cni"
    title = "CNI overlay ready on every node"
    scope = Scope.CLUSTER
    reads = ("daemonsets", "kube-system/pods", "nodes")
    fix_safety = FixSafety.UNSAFE

    def run(self, ctx: CheckContext) -> Verdict:
        cluster = ctx.cluster
        if not isinstance(cluster, KubeFacts):
            raise FactMissing(cluster.unavailable or "no cluster facts")
        state = overlay_state(cluster)
        if not state.found:
            seen = [d.get("metadata") or {} for d in cluster.list_objects(DAEMONSETS)]  # cached
            daemonsets = sorted(f"{m.get('namespace')}/{m.get('name')}" for m in seen)
            return Verdict.from_findings(
                [
                    Finding(
                        Severity.FAIL,
                        "no CNI overlay DaemonSet found",
                        None,
                        {"looked_for": what_was_looked_for(), "daemonsets_seen": daemonsets},
                        hint=(
                            "install a pod network add-on (kubeadm prints this step after "
                            "`kubeadm init`): e.g. Weave Net `kubectl apply -f "
                            "https://git.io/weave-kube-1.6` for the 1.6 lab"
                        ),
                    )
                ],
                summary="no CNI overlay DaemonSet found",
                ok_summary="",
            )
        findings: list[Finding] = []
        actions: list[Action] = []
        for ds in state.daemonsets:
            for node in ds.not_ready_nodes:
                findings.append(_node_finding(ds, node))
                if node.pod is not None:
                    meta = node.pod.get("metadata") or {}
                    actions.append(
                        DeletePod(
                            ds.namespace,
                            str(meta.get("name")),
                            uid=meta.get("uid"),
                            owner=f"DaemonSet/{ds.name}",
                        )
                    )
            if not ds.not_ready_nodes and not ds.counters_agree:
                findings.append(
                    Finding(
                        Severity.WARN,
                        f"{ds.name}: the DaemonSet status reports {ds.ready} ready and "
                        f"{ds.available} available of {ds.desired} desired, although every "
                        f"node has a ready {ds.name} pod (the status may lag)",
                        f"daemonset/{ds.namespace}/{ds.name}",
                        {"daemonset": f"{ds.namespace}/{ds.name}", **_counters(ds)},
                        hint=f"`kubectl -n {ds.namespace} get ds {ds.name}` again in a minute",
                    )
                )
        ready_nodes = {n.node for ds in state.daemonsets for n in ds.nodes if n.ready}
        for node_name, message in sorted(state.cni_not_ready_nodes.items()):
            if node_name in ready_nodes and not any(
                node_name in {n.node for n in ds.not_ready_nodes} for ds in state.daemonsets
            ):
                findings.append(
                    Finding(
                        Severity.WARN,
                        f"node {node_name} still reports the network plugin not ready "
                        f"({cni_short_reason(message)}) although the overlay's pod there is ready",
                        f"node/{node_name}",
                        {"node": node_name, "message": message},
                        hint=(
                            "the kubelet re-reads /etc/cni/net.d within seconds; if it stays, "
                            "check that the overlay wrote its config there on that node"
                        ),
                    )
                )
        fix = None
        if actions:
            fix = Fix(
                id="cluster.network.cni/delete-not-ready-overlay-pods",
                title="Delete the overlay pods that are not ready (their DaemonSet recreates them)",
                safety=FixSafety.UNSAFE,
                actions=actions,
            )
        summary_parts = []
        for ds in state.daemonsets:
            bad = [n.node for n in ds.not_ready_nodes]
            if bad:
                total = len(ds.nodes)
                summary_parts.append(
                    f"{ds.name} not ready on {', '.join(bad)} ({len(bad)} of {total} nodes)"
                )
        summary = "; ".join(summary_parts) or "; ".join(f.message for f in findings[:1])
        ok = "; ".join(
            f"{ds.kind.title} ({ds.name}) ready on all {len(ds.nodes)} nodes"
            for ds in state.daemonsets
        )
        return Verdict.from_findings(findings, summary=summary, ok_summary=ok, fix=fix)
