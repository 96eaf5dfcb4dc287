"""Why a pod is not Running/Ready, and whether the pod network (the CNI overlay) is up.

Two layers, both reusable by any check or probe:

* :func:`diagnose` is a pure function: a pod (as ``kubectl get pod -o json`` prints it) and
  the events about it → a :class:`PodCause` (category, one-line message, evidence). It reads
  the container states the kubelet reports (``waiting.reason`` ContainerCreating,
  ImagePullBackOff, ErrImagePull, CrashLoopBackOff, CreateContainerConfigError, …), the last
  termination state (reason, exit code, message), the pod's conditions (PodScheduled False
  → the scheduler's message) and the events (FailedCreatePodSandBox, or FailedSync with a
  CreatePodSandbox error, naming the CNI plugin → the network plugin is the cause).
* :func:`compute_overlay` is pure too: DaemonSets, pods and nodes → the state of the overlay
  DaemonSets (Weave Net, Calico, Cilium, Flannel, …) per node. :func:`overlay_state` reads
  those lists through ``ctx.cluster`` (cached per run: the same lists the pod and node checks
  read, so computing it costs no extra request) and is what ``cluster.network.cni`` and
  ``cluster.kube-system.pods`` share to tell a root cause from its consequences.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from doctor.core.errors import FactError, FactMissing
from doctor.facts.kube import DAEMONSETS, EVENTS, NODES, PODS, KubeFacts, label_selector_matches

Obj = Mapping[str, Any]

# -- categories -----------------------------------------------------------------------------

#: The pod network (CNI plugin / overlay) could not give the pod a sandbox.
CNI = "cni"
#: The pod sandbox could not be created for a reason that does not name the network.
SANDBOX = "sandbox"
IMAGE_PULL = "image-pull"
CRASH_LOOP = "crash-loop"
CONTAINER_CONFIG = "container-config"
VOLUME = "volume"
UNSCHEDULABLE = "unschedulable"
#: Running, but a container is not ready (readiness probe failing, or restarting).
NOT_READY = "not-ready"
TERMINATED = "terminated"
FAILED = "failed"
TERMINATING = "terminating"
#: Still being created, with no event that says why (yet).
CREATING = "creating"
UNKNOWN = "unknown"

_IMAGE_REASONS = {
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "ImageInspectError",
    "RegistryUnavailable",
}
_CONFIG_REASONS = {
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
    "PreStartHookError",
    "PostStartHookError",
}
_CREATING_REASONS = {"ContainerCreating", "PodInitializing"}
_NETWORK_WORDS = re.compile(
    r"\bcni\b|network ?plugin|networkplugin|failed to set up (sandbox container|pod)|"
    r"set ?up network|setupnetwork|networkready=false",
    re.IGNORECASE,
)
_SANDBOX_WORDS = re.compile(r"podsandbox|pod sandbox", re.IGNORECASE)
_MESSAGE_LIMIT = 600


@dataclass(frozen=True)
class PodCause:
    """Why one pod is not Running and Ready."""

    category: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    #: The container the cause is about, when it is about one.
    container: str | None = None

    @property
    def is_network(self) -> bool:
        """True when the pod network (CNI) is the cause."""
        return self.category == CNI


# -- small readers --------------------------------------------------------------------------

#: dict first: a plain isinstance(x, Mapping) goes through the ABC machinery, and these
#: readers run a million times over a 10,000-pod kube-system.
_MAPPING = (dict, Mapping)


def _meta(obj: Obj) -> Mapping[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, _MAPPING) else {}


def _status(obj: Obj) -> Mapping[str, Any]:
    value = obj.get("status")
    return value if isinstance(value, _MAPPING) else {}


def _spec(obj: Obj) -> Mapping[str, Any]:
    value = obj.get("spec")
    return value if isinstance(value, _MAPPING) else {}


def _list(value: Any) -> list[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, _MAPPING)] if isinstance(value, list) else []


def _clip(text: str) -> str:
    text = text.strip()
    return text if len(text) <= _MESSAGE_LIMIT else text[: _MESSAGE_LIMIT - 1] + "…"


def pod_name(pod: Obj) -> str:
    return str(_meta(pod).get("name", "?"))


def pod_namespace(pod: Obj) -> str:
    return str(_meta(pod).get("namespace", "default"))


def condition(obj: Obj, kind: str) -> Mapping[str, Any] | None:
    """The status condition of type KIND (pods and nodes), or None."""
    conditions = _status(obj).get("conditions")
    for cond in conditions if isinstance(conditions, list) else ():
        if isinstance(cond, _MAPPING) and cond.get("type") == kind:
            return cond
    return None


def pod_is_ready(pod: Obj) -> bool:
    """Running with the Ready condition True (a finished pod counts as healthy too)."""
    phase = _status(pod).get("phase")
    if phase == "Succeeded":
        return True
    ready = condition(pod, "Ready")
    return phase == "Running" and ready is not None and ready.get("status") == "True"


def pod_state(pod: Obj) -> str:
    """What ``kubectl get pods`` shows in STATUS/READY, in words: "Pending", "Running 1/2"…"""
    status = _status(pod)
    statuses = _list(status.get("containerStatuses"))
    phase = str(status.get("phase") or "Unknown")
    for cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting")
        if isinstance(waiting, Mapping) and waiting.get("reason"):
            phase = f"{phase} ({waiting['reason']})"
            break
    if _meta(pod).get("deletionTimestamp"):
        phase = f"{phase}, Terminating"
    total = len(_list(_spec(pod).get("containers"))) or len(statuses)
    ready = sum(1 for cs in statuses if cs.get("ready") is True)
    return f"{phase}, {ready}/{total} ready"


def controller_of(obj: Obj) -> Mapping[str, Any] | None:
    """The ownerReference with ``controller: true``, if any."""
    for ref in _list(_meta(obj).get("ownerReferences")):
        if ref.get("controller") is True:
            return ref
    return None


def is_static_pod(pod: Obj) -> bool:
    """A mirror of a static pod (the kubelet runs it from a manifest file)."""
    annotations = _meta(pod).get("annotations") or {}
    if isinstance(annotations, Mapping) and "kubernetes.io/config.mirror" in annotations:
        return True
    ref = controller_of(pod)
    return ref is not None and ref.get("kind") == "Node"


# -- events ---------------------------------------------------------------------------------


def _event_time(event: Obj) -> str:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        value = event.get(key)
        if value:
            return str(value)
    series = event.get("series")
    if isinstance(series, Mapping) and series.get("lastObservedTime"):
        return str(series["lastObservedTime"])
    return str(_meta(event).get("creationTimestamp") or "")


def events_by_pod(events: Iterable[Obj]) -> dict[tuple[str, str], list[Obj]]:
    """Group events by (namespace, pod name) of their involvedObject, newest first."""
    out: dict[tuple[str, str], list[Obj]] = {}
    for event in events:
        inv = event.get("involvedObject") or event.get("regarding") or {}
        if not isinstance(inv, Mapping) or inv.get("kind", "Pod") != "Pod":
            continue
        namespace = str(inv.get("namespace") or _meta(event).get("namespace") or "default")
        out.setdefault((namespace, str(inv.get("name", ""))), []).append(event)
    for items in out.values():
        items.sort(key=_event_time, reverse=True)
    return out


def events_for(pod: Obj, grouped: Mapping[tuple[str, str], Sequence[Obj]]) -> list[Obj]:
    """The pod's events, dropping those about an earlier pod of the same name (uid differs)."""
    uid = _meta(pod).get("uid")
    out = []
    for event in grouped.get((pod_namespace(pod), pod_name(pod)), ()):
        inv = event.get("involvedObject") or event.get("regarding") or {}
        event_uid = inv.get("uid") if isinstance(inv, Mapping) else None
        if uid and event_uid and event_uid != uid:
            continue
        out.append(event)
    return out


def _event_evidence(event: Obj) -> dict[str, Any]:
    data: dict[str, Any] = {
        "reason": event.get("reason"),
        "type": event.get("type"),
        "message": _clip(str(event.get("message") or event.get("note") or "")),
        "count": event.get("count") or 1,
        "last_seen": _event_time(event) or None,
    }
    source = event.get("source")
    if isinstance(source, Mapping) and source.get("host"):
        data["node"] = source["host"]
    return data


def _message(event: Obj) -> str:
    return str(event.get("message") or event.get("note") or "")


def _sandbox_event(events: Sequence[Obj]) -> Obj | None:
    """The newest event saying the pod sandbox could not be created (any kubelet version)."""
    for event in events:
        reason = str(event.get("reason") or "")
        message = _message(event)
        if reason == "FailedCreatePodSandBox":
            return event
        if reason in ("FailedSync", "FailedSetupNetwork") and (
            _SANDBOX_WORDS.search(message) or _NETWORK_WORDS.search(message)
        ):
            return event
    return None


def _first_event(events: Sequence[Obj], reasons: set[str]) -> Obj | None:
    for event in events:
        if event.get("reason") in reasons:
            return event
    return None


# -- the diagnosis ------------------------------------------------------------------------


def _container_statuses(pod: Obj) -> list[tuple[bool, Mapping[str, Any]]]:
    """(is_init, status) pairs: init containers first, as the kubelet runs them."""
    status = _status(pod)
    out = [(True, cs) for cs in _list(status.get("initContainerStatuses"))]
    out += [(False, cs) for cs in _list(status.get("containerStatuses"))]
    return out


def _last_termination(cs: Mapping[str, Any]) -> dict[str, Any] | None:
    last = (cs.get("lastState") or {}).get("terminated")
    if not isinstance(last, Mapping):
        last = (cs.get("state") or {}).get("terminated")
    if not isinstance(last, Mapping):
        return None
    data: dict[str, Any] = {"reason": last.get("reason"), "exit_code": last.get("exitCode")}
    if last.get("signal"):
        data["signal"] = last.get("signal")
    if last.get("message"):
        data["message"] = _clip(str(last["message"]))
    if last.get("finishedAt"):
        data["finished_at"] = last["finishedAt"]
    return data


def _describe_exit(term: Mapping[str, Any]) -> str:
    text = f"{term.get('reason') or 'terminated'}, exit code {term.get('exit_code')}"
    if term.get("message"):
        first = str(term["message"]).strip().splitlines()[0]
        text += f": {first}"
    return text


def _waiting_rank(reason: str) -> int:
    """The most telling waiting reason wins: a crash or a pull error says more than a
    container that is merely waiting for its sandbox."""
    if reason == "CrashLoopBackOff":
        return 0
    if reason in _IMAGE_REASONS:
        return 1
    if reason in _CONFIG_REASONS:
        return 2
    if reason in _CREATING_REASONS:
        return 3
    return 4


def diagnose(pod: Obj, events: Sequence[Obj] = ()) -> PodCause:
    """Why POD is not Running/Ready, from its status and EVENTS (newest first).

    Pure: reads nothing but its arguments, so any check (or a probe that created the pod)
    can call it. ``events`` are the pod's own (see :func:`events_by_pod`, :func:`events_for`).
    """
    cause = _diagnose(pod, events)
    if cause.evidence.get("event") is not None and cause.evidence.get(
        "event"
    ) == cause.evidence.get("last_warning_event"):
        cause.evidence.pop("last_warning_event")
    return cause


def _diagnose(pod: Obj, events: Sequence[Obj]) -> PodCause:
    meta = _meta(pod)
    status = _status(pod)
    phase = str(status.get("phase") or "Unknown")
    base: dict[str, Any] = {
        "pod": f"{pod_namespace(pod)}/{pod_name(pod)}",
        "phase": phase,
        "node": _spec(pod).get("nodeName"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    owner = controller_of(pod)
    if owner is not None:
        base["owner"] = f"{owner.get('kind')}/{owner.get('name')}"
    warnings = [e for e in events if e.get("type") == "Warning"]
    if warnings:
        base["last_warning_event"] = _event_evidence(warnings[0])

    if meta.get("deletionTimestamp"):
        return PodCause(
            TERMINATING,
            f"stuck terminating since {meta['deletionTimestamp']}",
            dict(base, deletionTimestamp=meta["deletionTimestamp"]),
        )
    if phase == "Failed":
        reason = status.get("reason") or "Failed"
        text = str(status.get("message") or "")
        return PodCause(
            FAILED,
            f"pod {reason}" + (f": {_clip(text)}" if text else ""),
            dict(base, reason=reason, message=_clip(text)),
        )
    scheduled = condition(pod, "PodScheduled")
    if scheduled is not None and scheduled.get("status") == "False":
        text = str(scheduled.get("message") or "")
        event = _first_event(events, {"FailedScheduling"})
        if not text and event is not None:
            text = _message(event)
        reason = scheduled.get("reason") or "Unschedulable"
        data = dict(base, reason=reason, message=_clip(text))
        if event is not None:
            data["event"] = _event_evidence(event)
        return PodCause(UNSCHEDULABLE, f"not scheduled ({reason}): {_clip(text)}", data)

    statuses = _container_statuses(pod)
    ranked: list[tuple[int, bool, Mapping[str, Any], Mapping[str, Any]]] = []
    for is_init, cs in statuses:
        waiting = (cs.get("state") or {}).get("waiting")
        if not isinstance(waiting, Mapping):
            continue
        reason = str(waiting.get("reason") or "")
        rank = _waiting_rank(reason)
        ranked.append((rank, is_init, cs, waiting))
    ranked.sort(key=lambda item: item[0])

    if ranked:
        rank, is_init, cs, waiting = ranked[0]
        name = str(cs.get("name"))
        label = f"init container {name}" if is_init else f"container {name}"
        reason = str(waiting.get("reason") or "")
        wmsg = _clip(str(waiting.get("message") or ""))
        data = dict(base, container=name, waiting_reason=reason)
        if wmsg:
            data["waiting_message"] = wmsg
        if rank == 0:
            term = _last_termination(cs)
            data["restart_count"] = cs.get("restartCount")
            text = f"{label} is in CrashLoopBackOff (restarted {cs.get('restartCount', 0)} times)"
            if term:
                data["last_termination"] = term
                text += f"; last exit: {_describe_exit(term)}"
            return PodCause(CRASH_LOOP, text, data, name)
        if rank == 1:
            image = cs.get("image") or _image_of(pod, name)
            data["image"] = image
            event = _first_event(events, {"Failed", "FailedSync", "ErrImagePull"})
            detail = wmsg
            if event is not None and (
                "pull" in _message(event).lower() or "image" in _message(event).lower()
            ):
                data["event"] = _event_evidence(event)
                detail = _clip(_message(event))
            text = f"{label} cannot pull image {image} ({reason})"
            return PodCause(IMAGE_PULL, text + (f": {detail}" if detail else ""), data, name)
        if rank == 2:
            text = f"{label} cannot start ({reason})" + (f": {wmsg}" if wmsg else "")
            return PodCause(CONTAINER_CONFIG, text, data, name)
        if rank == 3:
            creating = [
                str(c.get("name"))
                for _i, c in statuses
                if isinstance((c.get("state") or {}).get("waiting"), Mapping)
                and (c.get("state") or {}).get("waiting", {}).get("reason") in _CREATING_REASONS
            ]
            if len(creating) > 1:
                data.pop("container")
                data["waiting_containers"] = creating
                return _creating(pod, events, data, "pod", None)
            return _creating(pod, events, data, label, name)
        text = f"{label} is waiting ({reason or 'no reason given'})" + (f": {wmsg}" if wmsg else "")
        return PodCause(UNKNOWN, text, data, name)

    if phase == "Pending":
        # No container status at all yet: the sandbox is what is usually missing.
        return _creating(pod, events, dict(base), "pod", None)

    for is_init, cs in statuses:
        term = (cs.get("state") or {}).get("terminated")
        if isinstance(term, Mapping) and not is_init and term.get("exitCode") not in (0, None):
            info = _last_termination(cs) or {}
            name = str(cs.get("name"))
            text = f"container {name} terminated: {_describe_exit(info)}"
            return PodCause(TERMINATED, text, dict(base, container=name, termination=info), name)

    unready = [
        str(cs.get("name")) for is_init, cs in statuses if not is_init and not cs.get("ready")
    ]
    ready_cond = condition(pod, "Ready") or {}
    data = dict(base, unready_containers=unready)
    if ready_cond.get("message"):
        data["ready_condition"] = _clip(str(ready_cond["message"]))
    event = _first_event(events, {"Unhealthy", "BackOff"})
    text = f"running but not ready: containers {', '.join(unready) or '(none reported)'} not ready"
    if event is not None:
        data["event"] = _event_evidence(event)
        text += f"; {event.get('reason')}: {_clip(_message(event))}"
    restarted = [cs for _i, cs in statuses if (cs.get("restartCount") or 0) > 0]
    if restarted:
        term = _last_termination(restarted[0])
        if term:
            data["last_termination"] = term
    return PodCause(NOT_READY, text, data, unready[0] if unready else None)


def _image_of(pod: Obj, container: str) -> str | None:
    spec = _spec(pod)
    for c in _list(spec.get("initContainers")) + _list(spec.get("containers")):
        if c.get("name") == container:
            return str(c.get("image"))
    return None


def _creating(
    pod: Obj, events: Sequence[Obj], data: dict[str, Any], label: str, name: str | None
) -> PodCause:
    sandbox = _sandbox_event(events)
    if sandbox is not None:
        data["event"] = _event_evidence(sandbox)
        message = _message(sandbox)
        if _NETWORK_WORDS.search(message):
            return PodCause(
                CNI,
                f"{label} stuck in ContainerCreating: the network plugin (CNI) cannot set up "
                f"the pod's network: {_network_detail(message)}",
                data,
                name,
            )
        return PodCause(
            SANDBOX,
            f"{label} stuck in ContainerCreating: the pod sandbox cannot be created: "
            f"{_clip(message)}",
            data,
            name,
        )
    mount = _first_event(events, {"FailedMount", "FailedAttachVolume"})
    if mount is not None:
        data["event"] = _event_evidence(mount)
        return PodCause(
            VOLUME,
            f"{label} stuck in ContainerCreating: a volume cannot be mounted: "
            f"{_clip(_message(mount))}",
            data,
            name,
        )
    warnings = [e for e in events if e.get("type") == "Warning"]
    if warnings:
        data["event"] = _event_evidence(warnings[0])
        text = f"{label} still being created; last warning {warnings[0].get('reason')}: "
        return PodCause(CREATING, text + _clip(_message(warnings[0])), data, name)
    return PodCause(CREATING, f"{label} still being created (no event says why)", data, name)


def _network_detail(message: str) -> str:
    """The CNI part of a sandbox error: from "NetworkPlugin cni failed" (or the whole text)."""
    match = re.search(r"network ?plugin cni failed.*", message, re.IGNORECASE | re.DOTALL)
    text = match.group(0) if match else message
    text = text.replace('\\\\\\"', '"').replace('\\"', '"')
    return _clip(text.rstrip('" '))


# -- the overlay (CNI DaemonSets) --------------------------------------------------------


@dataclass(frozen=True)
class OverlayKind:
    """One CNI overlay and how its DaemonSet is recognised."""

    title: str
    names: tuple[str, ...]
    selectors: tuple[str, ...]  # label selectors matched against the DaemonSet's pod labels


OVERLAYS: tuple[OverlayKind, ...] = (
    OverlayKind("Weave Net", ("weave-net",), ("name=weave-net",)),
    OverlayKind("Calico", ("calico-node",), ("k8s-app=calico-node",)),
    OverlayKind("Canal", ("canal",), ("k8s-app=canal",)),
    OverlayKind("Cilium", ("cilium",), ("k8s-app=cilium",)),
    OverlayKind(
        "Flannel",
        ("kube-flannel-ds", "kube-flannel", "kube-flannel-ds-amd64", "kube-flannel-ds-arm64"),
        ("app=flannel", "k8s-app=flannel"),
    ),
    OverlayKind("Antrea", ("antrea-agent",), ("component=antrea-agent",)),
    OverlayKind("kube-router", ("kube-router",), ("k8s-app=kube-router",)),
    OverlayKind("kindnet", ("kindnet",), ("app=kindnet",)),
)


def what_was_looked_for() -> list[str]:
    """For the "no overlay found" evidence."""
    return [
        f"{o.title}: DaemonSet {' or '.join(o.names)} or pod labels {' or '.join(o.selectors)}"
        for o in OVERLAYS
    ]


@dataclass(frozen=True)
class NodeOverlay:
    """The overlay's pod on one node."""

    node: str
    pod: Obj | None  # None: no pod on that node at all
    ready: bool
    cause: PodCause | None = None

    @property
    def pod_name(self) -> str | None:
        return pod_name(self.pod) if self.pod is not None else None


@dataclass(frozen=True)
class OverlayDaemonSet:
    """One overlay DaemonSet: its status counters and its pod on every node it should run on."""

    kind: OverlayKind
    daemonset: Obj
    nodes: tuple[NodeOverlay, ...]
    desired: int
    ready: int
    available: int
    updated: int | None

    @property
    def name(self) -> str:
        return str(_meta(self.daemonset).get("name"))

    @property
    def namespace(self) -> str:
        return str(_meta(self.daemonset).get("namespace", "kube-system"))

    @property
    def not_ready_nodes(self) -> list[NodeOverlay]:
        return [n for n in self.nodes if not n.ready]

    @property
    def counters_agree(self) -> bool:
        return self.desired == self.ready == self.available

    @property
    def healthy(self) -> bool:
        return not self.not_ready_nodes and self.counters_agree


@dataclass(frozen=True)
class OverlayState:
    """The overlay across the cluster, and whether it is the root cause of pod failures."""

    daemonsets: tuple[OverlayDaemonSet, ...]
    #: Nodes whose kubelet reports the network plugin not ready (node name → message).
    cni_not_ready_nodes: dict[str, str] = field(default_factory=dict)
    #: Why the state may be incomplete (a list that could not be read).
    unknown: str | None = None

    @property
    def found(self) -> bool:
        return bool(self.daemonsets)

    @property
    def down(self) -> bool:
        """The overlay is (at least partly) down: pods failing with a CNI cause follow from it."""
        if any(not ds.healthy for ds in self.daemonsets):
            return True
        if self.cni_not_ready_nodes:
            return True
        return not self.found and self.unknown is None

    def root_cause(self) -> str:
        """One phrase naming the root cause, e.g. "weave-net not ready on kubernetes-2"."""
        parts = []
        for ds in self.daemonsets:
            bad = [n.node for n in ds.not_ready_nodes]
            if bad:
                parts.append(f"{ds.name} not ready on {', '.join(bad)}")
            elif not ds.counters_agree:
                parts.append(f"{ds.name} {ds.ready}/{ds.desired} ready")
        if not self.found and self.unknown is None:
            parts.append("no CNI overlay DaemonSet found")
        if self.cni_not_ready_nodes and not any(not ds.healthy for ds in self.daemonsets):
            nodes = ", ".join(sorted(self.cni_not_ready_nodes))
            parts.append(f"network plugin not ready on {nodes}")
        return "; ".join(parts) or "overlay healthy"


def _matches_overlay(ds: Obj) -> OverlayKind | None:
    name = str(_meta(ds).get("name", ""))
    template = (_spec(ds).get("template") or {}).get("metadata") or {}
    labels = {**(_meta(ds).get("labels") or {}), **(template.get("labels") or {})}
    for kind in OVERLAYS:
        if name in kind.names:
            return kind
    for kind in OVERLAYS:
        if any(label_selector_matches(sel, labels) for sel in kind.selectors):
            return kind
    return None


def _selector_labels(ds: Obj) -> dict[str, str]:
    selector = _spec(ds).get("selector") or {}
    labels = selector.get("matchLabels") if isinstance(selector, Mapping) else None
    if isinstance(labels, Mapping) and labels:
        return {str(k): str(v) for k, v in labels.items()}
    template = (_spec(ds).get("template") or {}).get("metadata") or {}
    return {str(k): str(v) for k, v in (template.get("labels") or {}).items()}


def _owned_by(pod: Obj, ds: Obj) -> bool:
    ref = controller_of(pod)
    if ref is not None:
        if ref.get("kind") != "DaemonSet":
            return False
        ds_uid = _meta(ds).get("uid")
        if ds_uid and ref.get("uid") and ref.get("uid") != ds_uid:
            return False
        return ref.get("name") == _meta(ds).get("name")
    labels = _meta(pod).get("labels") or {}
    wanted = _selector_labels(ds)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def _tolerated(taint: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]]) -> bool:
    key = str(taint.get("key", ""))
    if key.startswith("node.kubernetes.io/"):
        return True  # the DaemonSet controller adds these tolerations to every pod
    effect = taint.get("effect")
    if effect not in ("NoSchedule", "NoExecute"):
        return True
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != effect:
            continue
        operator = tol.get("operator") or "Equal"
        if not tol.get("key") and operator == "Exists":
            return True
        if tol.get("key") != key:
            continue
        if operator == "Exists" or str(tol.get("value") or "") == str(taint.get("value") or ""):
            return True
    return False


def _should_run_on(ds: Obj, node: Obj) -> bool:
    """Whether the DaemonSet places a pod on NODE (node selector and taints)."""
    pod_spec = (_spec(ds).get("template") or {}).get("spec") or {}
    labels = _meta(node).get("labels") or {}
    selector = pod_spec.get("nodeSelector") or {}
    if isinstance(selector, Mapping) and any(labels.get(k) != v for k, v in selector.items()):
        return False
    tolerations = _list(pod_spec.get("tolerations"))
    return all(_tolerated(t, tolerations) for t in _list(_spec(node).get("taints")))


def _count(status: Mapping[str, Any], key: str) -> int:
    value = status.get(key)
    return int(value) if isinstance(value, int) else 0


def cni_not_ready_message(node: Obj) -> str | None:
    """The Ready condition's message when the kubelet says the network plugin is not ready."""
    ready = condition(node, "Ready")
    if ready is None or ready.get("status") == "True":
        return None
    message = str(ready.get("message") or "")
    if "NetworkPluginNotReady" in message or "network plugin is not ready" in message:
        return message
    return None


def cni_short_reason(message: str) -> str:
    """The kubelet's words after its prefixes: "network plugin is not ready: cni config …"."""
    match = re.search(r"network plugin is not ready:[^\n]*", message)
    if match:
        return match.group(0).strip()
    match = re.search(r"message:(?:\w+: )?(.*)$", message)
    return (match.group(1) if match else message).strip()


def compute_overlay(
    daemonsets: Sequence[Obj],
    pods: Sequence[Obj],
    nodes: Sequence[Obj] | None,
    events: Sequence[Obj] = (),
) -> OverlayState:
    """Pure: the overlay DaemonSets among DAEMONSETS and their pods on every node.

    NODES None means the node list is unknown: then only the nodes the pods are on count.
    """
    grouped = events_by_pod(events)
    found = []
    for ds in daemonsets:
        kind = _matches_overlay(ds)
        if kind is None:
            continue
        ns = _meta(ds).get("namespace")
        own = [p for p in pods if _meta(p).get("namespace") == ns and _owned_by(p, ds)]
        by_node: dict[str, list[Obj]] = {}
        for p in own:
            by_node.setdefault(str(_spec(p).get("nodeName") or ""), []).append(p)
        if nodes is not None:
            wanted = [str(_meta(n).get("name")) for n in nodes if _should_run_on(ds, n)]
        else:
            wanted = sorted(n for n in by_node if n)
        per_node = []
        for node in wanted:
            candidates = by_node.get(node, [])
            ready_pod = next((p for p in candidates if pod_is_ready(p)), None)
            if ready_pod is not None:
                per_node.append(NodeOverlay(node, ready_pod, True))
            elif candidates:
                bad = candidates[0]
                per_node.append(
                    NodeOverlay(node, bad, False, diagnose(bad, events_for(bad, grouped)))
                )
            else:
                per_node.append(NodeOverlay(node, None, False))
        status = _status(ds)
        updated = status.get("updatedNumberScheduled")
        found.append(
            OverlayDaemonSet(
                kind=kind,
                daemonset=ds,
                nodes=tuple(per_node),
                desired=_count(status, "desiredNumberScheduled"),
                ready=_count(status, "numberReady"),
                available=_count(status, "numberAvailable"),
                updated=updated if isinstance(updated, int) else None,
            )
        )
    cni_nodes = {}
    for node_obj in nodes or ():
        message = cni_not_ready_message(node_obj)
        if message:
            cni_nodes[str(_meta(node_obj).get("name"))] = message
    return OverlayState(tuple(found), cni_nodes)


#: The one events list read per namespace: pod events, narrowed server-side.
POD_EVENTS_SELECTOR = "involvedObject.kind=Pod"


def pod_events(cluster: KubeFacts, namespace: str) -> tuple[list[dict[str, Any]], str | None]:
    """The namespace's pod events (one cached list per run), or why there are none.

    One list narrowed server-side (``involvedObject.kind=Pod``) and grouped locally with
    :func:`events_by_pod`, rather than one request per pod: a broken cluster has several
    stuck pods, the list is shared by every check that diagnoses pods, and it is paginated.
    Events only explain; when they cannot be read the diagnosis goes on from the pod status
    and the second value says why the events are missing.
    """
    try:
        return cluster.list_objects(EVENTS, namespace, field_selector=POD_EVENTS_SELECTOR), None
    except (FactMissing, FactError) as exc:
        return [], f"events unavailable: {exc}"


def overlay_state(cluster: KubeFacts) -> OverlayState:
    """The overlay state from the run's cached lists (no request another check did not need).

    Reads DaemonSets in all namespaces, the pods of the namespaces overlays run in (kube-system
    is the list ``cluster.kube-system.pods`` reads too), the nodes (as ``cluster.nodes``) and,
    only when an overlay pod is not ready, that namespace's pod events. Raises
    FactMissing/FactError when the DaemonSets or pods cannot be read; a missing node list only
    narrows the per-node view. Computed once per run (the fact cache keeps it with the lists
    it comes from) although several checks ask.
    """
    state: OverlayState = cluster.derived("overlay_state", lambda: _overlay_state(cluster))
    return state


def _overlay_state(cluster: KubeFacts) -> OverlayState:
    daemonsets = cluster.list_objects(DAEMONSETS)
    overlays = [ds for ds in daemonsets if _matches_overlay(ds) is not None]
    namespaces = sorted({str(_meta(ds).get("namespace", "kube-system")) for ds in overlays})
    pods: list[Obj] = []
    for ns in namespaces:
        pods.extend(cluster.list_objects(PODS, ns))
    nodes: list[dict[str, Any]] | None
    unknown = None
    try:
        nodes = cluster.list_objects(NODES)
    except (FactMissing, FactError) as exc:
        nodes, unknown = None, f"nodes unavailable: {exc}"
    state = compute_overlay(overlays, pods, nodes)
    bad_namespaces = sorted(
        {ds.namespace for ds in state.daemonsets if any(n.pod for n in ds.not_ready_nodes)}
    )
    if bad_namespaces:
        events: list[Obj] = []
        for ns in bad_namespaces:
            events.extend(pod_events(cluster, ns)[0])
        state = compute_overlay(overlays, pods, nodes, events)
    if unknown:
        return OverlayState(state.daemonsets, state.cni_not_ready_nodes, unknown)
    return state
