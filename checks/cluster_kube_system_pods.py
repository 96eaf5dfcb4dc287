"""cluster.kube-system.pods: every kube-system pod Running and Ready, or why not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from doctor.analysis.podcause import (
    CNI,
    CRASH_LOOP,
    IMAGE_PULL,
    UNSCHEDULABLE,
    OverlayState,
    PodCause,
    controller_of,
    diagnose,
    events_by_pod,
    events_for,
    is_static_pod,
    overlay_state,
    pod_events,
    pod_is_ready,
    pod_name,
    pod_state,
)
from doctor.core.context import CheckContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Action, Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.facts.kube import PODS, KubeFacts
from fixes.kube import DeletePod

NAMESPACE = "kube-system"
#: Controllers that recreate a deleted pod.
RECREATING_CONTROLLERS = ("ReplicaSet", "DaemonSet", "StatefulSet")
CAUSED_BY = "cluster.network.cni"

_HINTS = {
    CNI: "the pod network is not set up for this pod: fix the overlay first "
    "(cluster.network.cni); the pod starts by itself once the network plugin works",
    IMAGE_PULL: "check the image name and the registry's credentials "
    "(cluster.registry.pull-secret); `kubectl -n kube-system describe pod` shows the pull error",
    UNSCHEDULABLE: "the scheduler's message says which nodes were rejected and why "
    "(taints, resources, node selectors, NotReady nodes)",
}


def _fixability(pod: Mapping[str, Any]) -> tuple[bool, str]:
    """(deletable, why): only pods a controller recreates are ever deleted."""
    if is_static_pod(pod):
        node = (pod.get("spec") or {}).get("nodeName") or "its node"
        return False, (
            f"no fix offered: a static (mirror) pod, run by the kubelet on {node} from its "
            "manifest (/etc/kubernetes/manifests); deleting the mirror does not restart it. "
            "Fix the manifest or the kubelet there."
        )
    ref = controller_of(pod)
    if ref is None:
        return False, (
            "no fix offered: a bare pod (no controller): deleting it would lose it for good"
        )
    if ref.get("kind") not in RECREATING_CONTROLLERS:
        return False, (
            f"no fix offered: owned by {ref.get('kind')}/{ref.get('name')}, which kdoctor does "
            "not trust to recreate it"
        )
    return True, f"{ref.get('kind')}/{ref.get('name')} recreates it"


def _overlay_pods(overlay: OverlayState | None) -> set[str]:
    if overlay is None:
        return set()
    return {
        str(n.pod_name)
        for ds in overlay.daemonsets
        if ds.namespace == NAMESPACE
        for n in ds.nodes
        if n.pod is not None
    }


def _short(cause: PodCause) -> str:
    waiting = cause.evidence.get("waiting_reason")
    return str(waiting or cause.category)


class KubeSystemPods(Check):
    """Every kube-system pod is Running and Ready; for those that are not, why.

    Lists the pods of kube-system once (paginated; a bundle's `cluster/pods.json`) and, only
    when some are not Running and Ready, the namespace's pod events once, narrowed
    server-side (`fieldSelector=involvedObject.kind=Pod`) and grouped locally by pod: one
    request however many pods are stuck, shared with every check that diagnoses pods, where a
    request per pod would cost one round trip each. For each pod that is not Running and
    Ready the cause comes from `doctor.analysis.podcause.diagnose`: container states
    (`waiting.reason` ContainerCreating, ImagePullBackOff/ErrImagePull, CrashLoopBackOff,
    CreateContainerConfigError), the last termination state (reason, exit code, message), the
    PodScheduled condition (Unschedulable → the scheduler's message) and the pod's events
    (FailedCreatePodSandBox, or the 1.6 kubelet's FailedSync "CreatePodSandbox … NetworkPlugin
    cni failed …", → the network plugin).

    Root cause first: when the overlay is down (a CNI DaemonSet such as weave-net not ready on
    some node, or a node whose kubelet says the network plugin is not ready; the same
    computation `cluster.network.cni` makes, from the same cached lists), pods stuck with a
    network cause are reported as its consequences (`caused_by: cluster.network.cni`), and
    the summary names that root cause once. Any pod not Running/Ready is `fail`.

    ## Why it matters
    kube-system holds what the cluster runs on: the control plane (static pods), kube-proxy,
    the overlay, cluster DNS. One of them down breaks every workload that needs it: kube-dns
    stuck in ContainerCreating means no name resolution anywhere.

    ## How to fix
    Follow the cause. Network plugin → fix the overlay (`cluster.network.cni`) and the node
    firewall it needs. Image pull → the image name or the pull secret
    (`cluster.registry.pull-secret`). CrashLoopBackOff → the container's previous log.
    Unschedulable → the scheduler's message (taints, resources, NotReady nodes). Once the
    cause is gone, a pod stuck in back-off can be deleted so its controller starts a fresh
    one at once instead of waiting out the back-off.

    ## Fix safety
    unsafe: deletes each stuck pod whose controller (ReplicaSet, DaemonSet, StatefulSet)
    recreates it, overlay pods first (`kubectl -n kube-system delete pod NAME`, preconditioned
    on the pod's uid). It cannot be undone, briefly removes a replica, and only helps when
    the cause is gone. Never offered for a bare pod (nothing would recreate it) or a static
    (mirror) pod (the kubelet runs it from a manifest file); the finding says why.
    """

    id = "cluster.kube-system.pods"
    title = "kube-system pods Running and Ready"
    scope = Scope.CLUSTER
    reads = ("kube-system/pods",)
    fix_safety = FixSafety.UNSAFE

    def run(self, ctx: CheckContext) -> Verdict:
        cluster = ctx.cluster
        if not isinstance(cluster, KubeFacts):
            raise FactMissing(cluster.unavailable or "no cluster facts")
        pods = cluster.list_objects(PODS, NAMESPACE)
        bad = [p for p in pods if not pod_is_ready(p)]
        if not bad:
            return Verdict.ok(f"all {len(pods)} kube-system pods Running and Ready")

        events, events_note = pod_events(cluster, NAMESPACE)
        grouped = events_by_pod(events)
        overlay: OverlayState | None
        overlay_note = None
        try:
            overlay = overlay_state(cluster)
        except (FactMissing, FactError) as exc:
            overlay, overlay_note = None, f"overlay state unknown: {exc}"
        overlay_pods = _overlay_pods(overlay)
        overlay_down = overlay is not None and overlay.down
        root = overlay.root_cause() if overlay is not None and overlay_down else None

        entries = []
        for pod in bad:
            cause = diagnose(pod, events_for(pod, grouped))
            name = pod_name(pod)
            is_overlay = name in overlay_pods
            consequence = cause.category == CNI and overlay_down and not is_overlay
            rank = 0 if is_overlay else 2 if consequence else 1
            entries.append((rank, name, pod, cause, is_overlay, consequence))
        entries.sort(key=lambda e: (e[0], e[1]))

        findings: list[Finding] = []
        actions: list[Action] = []
        for _rank, name, pod, cause, is_overlay, consequence in entries:
            deletable, why = _fixability(pod)
            evidence: dict[str, Any] = {"cause": cause.category, **cause.evidence}
            evidence["state"] = pod_state(pod)
            if events_note:
                evidence["events"] = events_note
            if overlay_note:
                evidence["overlay"] = overlay_note
            evidence["fix"] = why if not deletable else f"delete: {why}"
            message = f"{name} ({pod_state(pod)}): {cause.message}"
            if is_overlay:
                message += " — this is the overlay network itself (see cluster.network.cni)"
            if consequence:
                message += (
                    f" — a consequence of the overlay network being down ({root}); "
                    "see cluster.network.cni"
                )
            hint = _HINTS.get(cause.category, f"`kubectl -n kube-system describe pod {name}`")
            if cause.category == CRASH_LOOP:
                hint = (
                    f"read the container's previous log (`kubectl -n kube-system logs {name} "
                    f"-c {cause.container} --previous`): the last exit message above is its end"
                )
            if not deletable:
                hint += f". {why}"
            findings.append(
                Finding(
                    Severity.FAIL,
                    message,
                    f"pod/{NAMESPACE}/{name}",
                    evidence,
                    hint=hint,
                    caused_by=CAUSED_BY if consequence else None,
                )
            )
            if deletable:
                meta = pod.get("metadata") or {}
                ref = controller_of(pod) or {}
                actions.append(
                    DeletePod(
                        NAMESPACE,
                        name,
                        uid=meta.get("uid"),
                        owner=f"{ref.get('kind')}/{ref.get('name')}",
                    )
                )

        listed = ", ".join(f"{name} {_short(cause)}" for _r, name, _p, cause, _o, _c in entries)
        noun = "pod" if len(entries) == 1 else "pods"
        summary = f"{len(entries)} kube-system {noun} not Running/Ready ({listed})"
        if root and any(e[5] or e[4] for e in entries):
            summary += f"; root cause: overlay network ({root})"
        fix = None
        if actions:
            fix = Fix(
                id="cluster.kube-system.pods/delete-stuck-pods",
                title="Delete the stuck kube-system pods their controllers recreate",
                safety=FixSafety.UNSAFE,
                actions=actions,
            )
        return Verdict.from_findings(findings, summary=summary, ok_summary="", fix=fix)
