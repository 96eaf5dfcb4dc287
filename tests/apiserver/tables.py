"""Server-side printing: `meta.k8s.io/v1 Table` responses for `kubectl get` without -o.

kubectl asks the server for tables; without them it prints only NAME and AGE, so the columns
below follow the real server's printers closely enough for a human to read a fake cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .resources import ResourceType
from .store import Obj, meta

Column = tuple[str, str, int]  # name, type, priority


def human_duration(seconds: int) -> str:
    """apimachinery's duration.HumanDuration."""
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def age(timestamp: Any) -> str:
    if not isinstance(timestamp, str) or not timestamp:
        return "<unknown>"
    try:
        when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return human_duration(int((datetime.now(UTC) - when).total_seconds()))


def _none(value: Any) -> Any:
    return "<none>" if value in (None, "", []) else value


def _selector(sel: Mapping[str, Any] | None) -> str:
    labels = (sel or {}).get("matchLabels") if sel and "matchLabels" in sel else sel
    if not labels:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()) if isinstance(v, str))


def _containers(obj: Obj) -> tuple[str, str]:
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    cs = spec.get("containers") or []
    return ",".join(str(c.get("name")) for c in cs), ",".join(str(c.get("image")) for c in cs)


def _pod_row(obj: Obj) -> list[Any]:
    spec, status, m = obj.get("spec") or {}, obj.get("status") or {}, meta(obj)
    statuses = status.get("containerStatuses") or []
    total = len(spec.get("containers") or [])
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for c in statuses:
        state = c.get("state") or {}
        if "waiting" in state and state["waiting"].get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            reason = state["terminated"].get("reason") or "Terminated"
    if m.get("deletionTimestamp"):
        reason = "Terminating"
    return [
        m.get("name"),
        f"{ready}/{total}",
        reason,
        restarts,
        age(m.get("creationTimestamp")),
        _none(status.get("podIP")),
        _none(spec.get("nodeName")),
        _none(status.get("nominatedNodeName")),
        "<none>",
    ]


def _node_row(obj: Obj) -> list[Any]:
    m, status = meta(obj), obj.get("status") or {}
    ready = "Unknown"
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Ready":
            ready = "Ready" if cond.get("status") == "True" else "NotReady"
    if (obj.get("spec") or {}).get("unschedulable"):
        ready += ",SchedulingDisabled"
    labels = m.get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    if "kubernetes.io/role" in labels:
        roles.append(labels["kubernetes.io/role"])
    addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
    info = status.get("nodeInfo") or {}
    return [
        m.get("name"),
        ready,
        ",".join(roles) or "<none>",
        age(m.get("creationTimestamp")),
        info.get("kubeletVersion", ""),
        _none(addresses.get("InternalIP")),
        _none(addresses.get("ExternalIP")),
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


def _service_row(obj: Obj) -> list[Any]:
    m, spec = meta(obj), obj.get("spec") or {}
    ports = []
    for p in spec.get("ports") or []:
        text = str(p.get("port"))
        if p.get("nodePort"):
            text += f":{p['nodePort']}"
        ports.append(f"{text}/{p.get('protocol', 'TCP')}")
    external = spec.get("externalIPs") or []
    return [
        m.get("name"),
        spec.get("type", "ClusterIP"),
        _none(spec.get("clusterIP")),
        ",".join(external) or "<none>",
        ",".join(ports) or "<none>",
        age(m.get("creationTimestamp")),
        _selector(spec.get("selector")),
    ]


def _ds_row(obj: Obj) -> list[Any]:
    m, spec, st = meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    node_selector = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector")
    return [
        m.get("name"),
        st.get("desiredNumberScheduled", 0),
        st.get("currentNumberScheduled", 0),
        st.get("numberReady", 0),
        st.get("updatedNumberScheduled", 0),
        st.get("numberAvailable", 0),
        _selector(node_selector),
        age(m.get("creationTimestamp")),
        names,
        images,
        _selector(spec.get("selector")),
    ]


def _deploy_row(obj: Obj) -> list[Any]:
    m, spec, st = meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    return [
        m.get("name"),
        f"{st.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        st.get("updatedReplicas", 0),
        st.get("availableReplicas", 0),
        age(m.get("creationTimestamp")),
        names,
        images,
        _selector(spec.get("selector")),
    ]


def _rs_row(obj: Obj) -> list[Any]:
    m, spec, st = meta(obj), obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers(obj)
    return [
        m.get("name"),
        spec.get("replicas", 1),
        st.get("replicas", 0),
        st.get("readyReplicas", 0),
        age(m.get("creationTimestamp")),
        names,
        images,
        _selector(spec.get("selector")),
    ]


def _event_row(obj: Obj) -> list[Any]:
    m, inv = meta(obj), obj.get("involvedObject") or {}
    last = obj.get("lastTimestamp") or obj.get("eventTime") or m.get("creationTimestamp")
    first = obj.get("firstTimestamp") or obj.get("eventTime") or m.get("creationTimestamp")
    source = (obj.get("source") or {}).get("component") or obj.get("reportingComponent") or ""
    host = (obj.get("source") or {}).get("host")
    return [
        age(last),
        obj.get("type", ""),
        obj.get("reason", ""),
        f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}",
        inv.get("fieldPath", ""),
        f"{source}, {host}" if host else source,
        obj.get("message", ""),
        age(first),
        obj.get("count", 1),
        m.get("name"),
    ]


_S, _I, _D = "string", "integer", "date"

PRINTERS: dict[str, tuple[list[Column], Callable[[Obj], list[Any]]]] = {
    "Pod": (
        [
            ("Name", _S, 0),
            ("Ready", _S, 0),
            ("Status", _S, 0),
            ("Restarts", _S, 0),
            ("Age", _S, 0),
            ("IP", _S, 1),
            ("Node", _S, 1),
            ("Nominated Node", _S, 1),
            ("Readiness Gates", _S, 1),
        ],
        _pod_row,
    ),
    "Node": (
        [
            ("Name", _S, 0),
            ("Status", _S, 0),
            ("Roles", _S, 0),
            ("Age", _S, 0),
            ("Version", _S, 0),
            ("Internal-IP", _S, 1),
            ("External-IP", _S, 1),
            ("OS-Image", _S, 1),
            ("Kernel-Version", _S, 1),
            ("Container-Runtime", _S, 1),
        ],
        _node_row,
    ),
    "Service": (
        [
            ("Name", _S, 0),
            ("Type", _S, 0),
            ("Cluster-IP", _S, 0),
            ("External-IP", _S, 0),
            ("Port(s)", _S, 0),
            ("Age", _S, 0),
            ("Selector", _S, 1),
        ],
        _service_row,
    ),
    "DaemonSet": (
        [
            ("Name", _S, 0),
            ("Desired", _I, 0),
            ("Current", _I, 0),
            ("Ready", _I, 0),
            ("Up-to-date", _I, 0),
            ("Available", _I, 0),
            ("Node Selector", _S, 0),
            ("Age", _S, 0),
            ("Containers", _S, 1),
            ("Images", _S, 1),
            ("Selector", _S, 1),
        ],
        _ds_row,
    ),
    "Deployment": (
        [
            ("Name", _S, 0),
            ("Ready", _S, 0),
            ("Up-to-date", _S, 0),
            ("Available", _S, 0),
            ("Age", _S, 0),
            ("Containers", _S, 1),
            ("Images", _S, 1),
            ("Selector", _S, 1),
        ],
        _deploy_row,
    ),
    "ReplicaSet": (
        [
            ("Name", _S, 0),
            ("Desired", _I, 0),
            ("Current", _I, 0),
            ("Ready", _I, 0),
            ("Age", _S, 0),
            ("Containers", _S, 1),
            ("Images", _S, 1),
            ("Selector", _S, 1),
        ],
        _rs_row,
    ),
    "Namespace": (
        [("Name", _S, 0), ("Status", _S, 0), ("Age", _S, 0)],
        lambda o: [
            meta(o).get("name"),
            (o.get("status") or {}).get("phase", ""),
            age(meta(o).get("creationTimestamp")),
        ],
    ),
    "ConfigMap": (
        [("Name", _S, 0), ("Data", _I, 0), ("Age", _S, 0)],
        lambda o: [
            meta(o).get("name"),
            len(o.get("data") or {}) + len(o.get("binaryData") or {}),
            age(meta(o).get("creationTimestamp")),
        ],
    ),
    "Secret": (
        [("Name", _S, 0), ("Type", _S, 0), ("Data", _I, 0), ("Age", _S, 0)],
        lambda o: [
            meta(o).get("name"),
            o.get("type", "Opaque"),
            len(o.get("data") or {}),
            age(meta(o).get("creationTimestamp")),
        ],
    ),
    "Endpoints": (
        [("Name", _S, 0), ("Endpoints", _S, 0), ("Age", _S, 0)],
        lambda o: [
            meta(o).get("name"),
            ",".join(
                f"{a.get('ip')}:{p.get('port')}"
                for s in o.get("subsets") or []
                for a in s.get("addresses") or []
                for p in s.get("ports") or []
            )
            or "<none>",
            age(meta(o).get("creationTimestamp")),
        ],
    ),
    "Event": (
        [
            ("Last Seen", _S, 0),
            ("Type", _S, 0),
            ("Reason", _S, 0),
            ("Object", _S, 0),
            ("Subobject", _S, 1),
            ("Source", _S, 1),
            ("Message", _S, 0),
            ("First Seen", _S, 1),
            ("Count", _S, 1),
            ("Name", _S, 1),
        ],
        _event_row,
    ),
}

_DEFAULT: tuple[list[Column], Callable[[Obj], list[Any]]] = (
    [("Name", _S, 0), ("Created At", _D, 0)],
    lambda o: [meta(o).get("name"), meta(o).get("creationTimestamp")],
)


def wants_table(accept: str) -> bool:
    """True when the client's first acceptable type is a meta.k8s.io Table."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if "as=Table" in params and "g=meta.k8s.io" in params:
            return True
    return False


def to_table(
    rt: ResourceType,
    items: list[Obj],
    list_meta: dict[str, Any],
    include_object: str = "Metadata",
) -> Obj:
    columns, row = PRINTERS.get(rt.kind, _DEFAULT)
    rows = []
    for obj in items:
        entry: dict[str, Any] = {"cells": row(obj)}
        if include_object == "Object":
            entry["object"] = obj
        elif include_object != "None":
            entry["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": meta(obj),
            }
        rows.append(entry)
    definitions = [
        {
            "name": name,
            "type": kind,
            "format": "name" if name == "Name" else "",
            "description": f"{name} of the {rt.kind}",
            "priority": priority,
        }
        for name, kind, priority in columns
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": definitions,
        "rows": rows,
    }
