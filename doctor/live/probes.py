"""Live probe pods: the one place kdoctor creates objects while it *checks*.

The contract says checks never change anything, and it defines ``cluster.dns.pod-to-pod`` as
a check that creates probe pods which are always removed. This module is that exception, kept
as narrow as it can be:

What it creates
    In namespace ``kdoctor-probe`` (created only when missing, and then deleted at the end):
    a headless Service ``kdoctor-probe`` (``clusterIP: None``, selecting the probes) and one
    pod per schedulable node (or ``--probe-nodes N``), the lab-22 lab's test made automatic: image
    ``busybox`` (``--probe-image``; ``--probe-pull-secret [NS/]NAME`` adds an imagePullSecret:
    the secret, in namespace NS, ``default`` when not given, is copied into the probe namespace
    for the run unless one of that name is already there), running
    ``sleep``, with ``hostname`` + ``subdomain`` so each has the DNS name
    ``<hostname>.kdoctor-probe.kdoctor-probe.svc.<cluster domain>``, placed with
    ``spec.nodeName`` (nodes that are cordoned, not Ready, or carry a NoSchedule/NoExecute
    taint get none), ``restartPolicy: Never``, no service-account token, and
    ``activeDeadlineSeconds`` so a probe that outlives everything stops by itself. Every object
    is labelled ``app.kubernetes.io/managed-by=kdoctor`` and ``kdoctor.io/probe=pod-to-pod``.

What it may do
    Create those objects, delete objects in its namespace that carry its labels (and the
    namespace when it created it), list and read there, and exec in its own probe pods. Checks
    get this object (:attr:`doctor.core.context.CheckContext.probes`), never the fix writer
    (:class:`fixes.kube.KubeWriter`): a check still cannot patch or delete anything else.

When
    Once per run, on the first :meth:`ProbeCluster.pod_set` call; every check of the run shares
    the same probes (``cluster.dns.pod-to-pod`` and the pod resolv.conf comparison of
    ``cluster.dns.kube-dns``). The CLI creates a ProbeCluster only for a live cluster and
    without ``--no-probes`` (``--no-live`` implies it); on a bundle there is none.

Removal
    :meth:`ProbeCluster.cleanup` deletes the probe pods, the Service, the copied pull secret
    and, when kdoctor created it, the namespace. The CLI calls it when the run ends, also
    when a check timed out; Ctrl-C and SIGTERM become KeyboardInterrupt in the main thread,
    whose ``finally`` runs it. An ``atexit`` hook is the last resort (the TUI). Leftovers of
    an interrupted earlier run (objects with the probe labels) are removed before new probes
    are made. Two kdoctor runs probing the same cluster at the same moment would remove each
    other's probes: run one at a time.
"""

from __future__ import annotations

import atexit
import json
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from doctor.analysis import podcause
from doctor.core.errors import FactMissing
from doctor.facts.kube import (
    EVENTS,
    NODES,
    PODS,
    SECRETS,
    SERVICES,
    ApiError,
    LiveCluster,
    Resource,
)
from doctor.live.podexec import ExecResult, exec_in_pod

NAMESPACE = "kdoctor-probe"
SUBDOMAIN = "kdoctor-probe"
CONTAINER = "probe"
MANAGED_BY = "app.kubernetes.io/managed-by"
PROBE_KEY = "kdoctor.io/probe"
LABELS = {MANAGED_BY: "kdoctor", PROBE_KEY: "pod-to-pod"}
SELECTOR = ",".join(f"{k}={v}" for k, v in LABELS.items())
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
#: A probe stops by itself after this long, whatever happens to kdoctor.
ACTIVE_DEADLINE = 900
POLL = 0.3
#: A kubelet reports on a pod bound to its node within a second or two (conditions,
#: ContainerCreating); when none has after this long, waiting longer does not help.
SILENT_AFTER = 8.0
DEFAULT_IMAGE = "busybox"


@dataclass(frozen=True)
class ProbeSettings:
    image: str = DEFAULT_IMAGE
    #: ``[NAMESPACE/]NAME`` of a docker-registry secret for the image.
    pull_secret: str | None = None
    #: How many nodes get a probe (None: every schedulable node).
    nodes: int | None = None
    #: How long to wait for the probes to run.
    wait: float = 25.0


@dataclass(frozen=True)
class ProbePod:
    name: str
    hostname: str
    node: str
    ip: str | None = None
    ready: bool = False
    state: str = "Pending"
    #: Why it is not running (when it is not): the pod diagnosis.
    cause: podcause.PodCause | None = None

    def fqdn(self, domain: str) -> str:
        return f"{self.hostname}.{SUBDOMAIN}.{NAMESPACE}.svc.{domain}"


@dataclass(frozen=True)
class ProbeSet:
    """The run's probes as they stood when waiting ended."""

    pods: tuple[ProbePod, ...] = ()
    #: Nodes that got no probe, and why (cordoned, tainted, not Ready, over --probe-nodes).
    skipped_nodes: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    waited_ms: int = 0

    @property
    def ready(self) -> list[ProbePod]:
        return [p for p in self.pods if p.ready and p.ip]


def _label_value(text: str) -> str:
    value = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return value[:40].strip("-") or "node"


def _ready(node: dict[str, Any]) -> bool:
    cond = podcause.condition(node, "Ready")
    return cond is not None and cond.get("status") == "True"


def _running(pod: dict[str, Any]) -> bool:
    return podcause.pod_is_ready(pod) and bool((pod.get("status") or {}).get("podIP"))


def _reported(pod: dict[str, Any]) -> bool:
    """A kubelet has written the pod's status (conditions or container states)."""
    status = pod.get("status") or {}
    return bool(status.get("conditions") or status.get("containerStatuses"))


def choose_nodes(
    nodes: list[dict[str, Any]], limit: int | None
) -> tuple[list[str], dict[str, str]]:
    """Nodes a probe may run on (sorted by name), and why the others get none."""
    usable: list[str] = []
    skipped: dict[str, str] = {}
    for node in sorted(nodes, key=lambda n: str(n["metadata"]["name"])):
        name = str(node["metadata"]["name"])
        spec = node.get("spec") or {}
        taints = [
            t
            for t in spec.get("taints") or []
            if isinstance(t, dict) and t.get("effect") in ("NoSchedule", "NoExecute")
        ]
        if spec.get("unschedulable"):
            skipped[name] = "cordoned (spec.unschedulable)"
        elif taints:
            t = taints[0]
            value = f"={t['value']}" if t.get("value") else ""
            skipped[name] = f"taint {t.get('key')}{value}:{t.get('effect')}"
        elif not _ready(node):
            skipped[name] = "not Ready"
        else:
            usable.append(name)
    if limit is not None and len(usable) > limit:
        for name in usable[limit:]:
            skipped[name] = f"over --probe-nodes {limit}"
        usable = usable[:limit]
    return usable, skipped


class ProbeCluster:
    """Probe pods for one run, created on first use and removed by :meth:`cleanup`."""

    def __init__(self, cluster: LiveCluster, settings: ProbeSettings) -> None:
        self.cluster = cluster
        self.settings = settings
        self._lock = threading.Lock()  # one creation; callers wait for it
        self._state_lock = threading.Lock()
        self._result: ProbeSet | ApiError | None = None
        self._closed = False
        self._namespace_ours = False
        self._touched = False
        self._names: set[str] = set()
        self._atexit = False
        self._run_id = secrets.token_hex(3)
        self._secret_name: str | None = None
        self._resolv: tuple[ProbePod, ExecResult] | None = None
        #: Told how the wait for probe pods goes (the CLI shows it on a terminal).
        self.on_progress: Callable[[str], None] = lambda _text: None

    @property
    def closed(self) -> bool:
        return self._closed

    # -- the API, uncached (the run's cache holds reads other checks made) -------------
    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        _status, data = self.cluster.request(method, path, **kwargs)
        return json.loads(data) if data else {}

    def _list(self, resource: Resource, query: list[tuple[str, str]]) -> list[dict[str, Any]]:
        doc = self._json(
            "GET", resource.path(NAMESPACE), query=query, verb="list",
            what=f"{resource.plural} in namespace {NAMESPACE}",
        )  # fmt: skip
        items = doc.get("items") if isinstance(doc, dict) else None
        return [i for i in items or [] if isinstance(i, dict)]

    def _create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        ns = None if not resource.namespaced else NAMESPACE
        name = body["metadata"]["name"]
        with self._state_lock:
            if self._closed:
                raise ApiError("the run ended: probes are no longer created")
            self._touched = True
        doc: dict[str, Any] = self._json(
            "POST", resource.path(ns), body=body, verb="create", what=f"{resource.plural}/{name}"
        )
        if self._closed:  # cleanup ran meanwhile: take this one back at once
            self._delete(resource, name)
        return doc

    def _delete(self, resource: Resource, name: str) -> None:
        ns = None if not resource.namespaced else NAMESPACE
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0}
        if resource is NAMESPACES:
            body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self.cluster.request(
                "DELETE", resource.path(ns, name), body=body, verb="delete",
                what=f"{resource.plural}/{name}",
            )  # fmt: skip
        except ApiError as exc:
            if exc.status != 404:
                raise

    # -- the probes ----------------------------------------------------------------------
    def pod_set(self) -> ProbeSet:
        """The run's probes, created and waited for on the first call (shared afterwards).

        Raises ApiError when the API refused to create them (the check reports error);
        probes that do not run in time are in the set with their cause.
        """
        with self._lock:
            if self._result is None:
                try:
                    self._result = self._make()
                except ApiError as exc:
                    self._result = exc
            result = self._result
        if isinstance(result, ApiError):
            raise result
        return result

    def _make(self) -> ProbeSet:
        if self._closed:
            raise ApiError("the run ended: probes are no longer created")
        if not self._atexit:
            atexit.register(self.cleanup)
            self._atexit = True
        started = time.monotonic()
        notes: list[str] = []
        self._prepare_namespace(notes)
        try:
            nodes = self.cluster.list_objects(NODES)
        except FactMissing as exc:
            raise ApiError(f"cannot place probes: {exc}") from exc
        usable, skipped = choose_nodes(nodes, self.settings.nodes)
        if not usable:
            return ProbeSet(skipped_nodes=skipped, notes=("no schedulable node for a probe",))
        placement = list(usable)
        if len(placement) == 1:
            placement.append(usable[0])
            notes.append(
                f"only one schedulable node ({usable[0]}): both probes run on it, so traffic "
                "between nodes is not tested"
            )
        self._create_service()
        self._copy_pull_secret(notes)
        pods: list[ProbePod] = []
        seen: dict[str, int] = {}
        for node in placement:
            base = f"probe-{_label_value(node)}"
            seen[base] = seen.get(base, 0) + 1
            hostname = base if seen[base] == 1 else f"{base}-{seen[base]}"
            name = f"{hostname}-{self._run_id}"
            self._create(PODS, self._pod_body(name, hostname, node))
            self._names.add(name)
            pods.append(ProbePod(name=name, hostname=hostname, node=node))
        final = self._wait(pods, started + self.settings.wait)
        return ProbeSet(
            pods=tuple(final),
            skipped_nodes=skipped,
            notes=tuple(notes),
            waited_ms=int((time.monotonic() - started) * 1000),
        )

    def _prepare_namespace(self, notes: list[str]) -> None:
        try:
            ns = self._json("GET", NAMESPACES.path(None, NAMESPACE), verb="get", what="namespace")
        except ApiError as exc:
            if exc.status != 404:
                raise
            ns = None
        if ns is not None and (ns.get("metadata") or {}).get("deletionTimestamp"):
            # A leftover namespace still being deleted: wait (bounded) for it to go.
            deadline = time.monotonic() + 15
            while ns is not None and time.monotonic() < deadline:
                time.sleep(0.5)
                try:
                    ns = self._json(
                        "GET", NAMESPACES.path(None, NAMESPACE), verb="get", what="namespace"
                    )
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                    ns = None
            if ns is not None:
                raise ApiError(f"namespace {NAMESPACE} is still being deleted (leftover)")
        if ns is None:
            body = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": NAMESPACE, "labels": {MANAGED_BY: "kdoctor"}},
            }
            self._create(NAMESPACES, body)
            self._namespace_ours = True
            return
        labels = (ns.get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY) == "kdoctor":
            self._namespace_ours = True  # made by an earlier run that was interrupted
        removed = self._remove_probe_objects()
        if removed:
            notes.append(f"removed leftover probes of an earlier run: {', '.join(removed)}")

    def _remove_probe_objects(self) -> list[str]:
        removed = []
        for resource in (PODS, SERVICES, SECRETS):
            for obj in self._list(resource, [("labelSelector", SELECTOR)]):
                name = str(obj["metadata"]["name"])
                self._delete(resource, name)
                removed.append(f"{resource.kind.lower()}/{name}")
        return removed

    def _create_service(self) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SUBDOMAIN, "labels": dict(LABELS)},
            "spec": {
                "clusterIP": "None",
                "selector": dict(LABELS),
                "publishNotReadyAddresses": True,
                # No port is needed for DNS records; old API servers want one.
                "ports": [{"name": "probe", "port": 9, "protocol": "TCP"}],
            },
        }
        try:
            self._create(SERVICES, body)
        except ApiError as exc:
            if exc.status != 409:  # AlreadyExists: a pre-existing one serves as well
                raise

    def _copy_pull_secret(self, notes: list[str]) -> None:
        """Make ``--probe-pull-secret [NS/]NAME`` usable by the probes (a pod can only use a
        secret of its own namespace): copy type and data, never print them."""
        wanted = self.settings.pull_secret
        if not wanted:
            return
        source_ns, _, name = wanted.rpartition("/")
        source_ns = source_ns or "default"
        self._secret_name = name
        try:
            self._json("GET", SECRETS.path(NAMESPACE, name), verb="get", what=f"secrets/{name}")
            return  # already in the probe namespace
        except ApiError as exc:
            if exc.status != 404:
                raise
        try:
            secret = self._json(
                "GET", SECRETS.path(source_ns, name), verb="get", what=f"secrets/{name}"
            )
        except ApiError as exc:
            if exc.status != 404:
                raise
            notes.append(f"pull secret {source_ns}/{name} does not exist: probes pull without it")
            self._secret_name = None
            return
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "labels": dict(LABELS)},
            "type": secret.get("type", "Opaque"),
            "data": secret.get("data") or {},
        }
        self._create(SECRETS, body)
        notes.append(f"pull secret {source_ns}/{name} copied into {NAMESPACE} for the run")

    def _pod_body(self, name: str, hostname: str, node: str) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "hostname": hostname,
            "subdomain": SUBDOMAIN,
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 0,
            "activeDeadlineSeconds": ACTIVE_DEADLINE,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "containers": [
                {
                    "name": CONTAINER,
                    "image": self.settings.image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["sleep", str(ACTIVE_DEADLINE)],
                    "resources": {
                        "requests": {"cpu": "10m", "memory": "16Mi"},
                        "limits": {"memory": "64Mi"},
                    },
                }
            ],
        }
        if self._secret_name:
            spec["imagePullSecrets"] = [{"name": self._secret_name}]
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": dict(LABELS),
                "annotations": {
                    "kdoctor.io/purpose": "cluster.dns.pod-to-pod probe; removed when the run "
                    "ends (`kubectl delete ns kdoctor-probe` if left over)"
                },
            },
            "spec": spec,
        }

    def _wait(self, pods: list[ProbePod], deadline: float) -> list[ProbePod]:
        """Poll until every probe runs, one ended, the deadline passes, or no kubelet has
        reported anything on the waiting probes for SILENT_AFTER seconds."""
        names = {p.name for p in pods}
        current: dict[str, dict[str, Any]] = {}
        silent_until = time.monotonic() + SILENT_AFTER
        silent = False
        while True:
            items = self._list(PODS, [("labelSelector", SELECTOR)])
            current = {
                str(i["metadata"]["name"]): i for i in items if i["metadata"]["name"] in names
            }
            up = [
                n
                for n in names
                if n in current
                and podcause.pod_is_ready(current[n])
                and (current[n].get("status") or {}).get("podIP")
            ]
            self.on_progress(f"waiting for probe pods: {len(up)}/{len(names)} running")
            if len(up) == len(names):
                break
            if (
                any(
                    (current[n].get("status") or {}).get("phase") in ("Failed", "Succeeded")
                    for n in current
                )
                or time.monotonic() >= deadline
            ):
                break
            waiting = [current[n] for n in names if n in current and not _running(current[n])]
            if time.monotonic() >= silent_until and waiting and not any(map(_reported, waiting)):
                silent = True
                break
            time.sleep(POLL)
        events: list[dict[str, Any]] = []
        out = []
        for probe in pods:
            obj = current.get(probe.name)
            if obj is None:
                out.append(ProbePod(probe.name, probe.hostname, probe.node, state="gone"))
                continue
            ip = (obj.get("status") or {}).get("podIP") or None
            ready = podcause.pod_is_ready(obj) and bool(ip)
            cause = None
            if not ready:
                if not events:
                    try:
                        events = self._list(EVENTS, [("fieldSelector", "involvedObject.kind=Pod")])
                    except ApiError:
                        events = []
                grouped = podcause.events_by_pod(events)
                cause = podcause.diagnose(obj, podcause.events_for(obj, grouped))
                if silent and not _reported(obj):
                    cause = podcause.PodCause(
                        podcause.UNKNOWN,
                        f"no kubelet reported on it within {SILENT_AFTER:g}s: the kubelet of "
                        f"node {probe.node} has not started it (read `journalctl -u kubelet` "
                        "on that node: its kubelet or container runtime is stuck)",
                        {"status": obj.get("status") or {}},
                    )
            out.append(
                ProbePod(
                    probe.name,
                    probe.hostname,
                    probe.node,
                    ip,
                    ready,
                    podcause.pod_state(obj),
                    cause,
                )
            )
        return out

    def run(self, pod: ProbePod, command: list[str], timeout: float = 8.0) -> ExecResult:
        """Exec COMMAND in one of this run's probes (never in any other pod)."""
        if pod.name not in self._names:
            raise ApiError(f"{pod.name} is not a probe of this run")
        if self._closed:
            raise ApiError("the run ended: the probes are removed")
        return exec_in_pod(self.cluster, NAMESPACE, pod.name, command, CONTAINER, timeout)

    def resolv_conf(self) -> tuple[ProbePod, ExecResult] | None:
        """``cat /etc/resolv.conf`` in the first running probe (once per run), or None when
        no probe runs. Raises ApiError when the probes could not be made or exec is refused."""
        with self._lock:
            cached = self._resolv
        if cached is not None:
            return cached
        ready = self.pod_set().ready
        if not ready:
            return None
        result = (ready[0], self.run(ready[0], ["cat", "/etc/resolv.conf"]))
        with self._lock:
            self._resolv = result
        return result

    # -- removal ---------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        """Remove everything this run created; return what could not be removed (why)."""
        with self._state_lock:
            if self._closed:
                return []
            self._closed = True
            touched = self._touched
        if not touched:
            return []
        with self.cluster.beyond_deadline():
            return self._remove_everything()

    def _remove_everything(self) -> list[str]:
        problems: list[str] = []
        try:
            self._remove_probe_objects()
        except ApiError as exc:
            problems.append(f"probe pods/Service in {NAMESPACE}: {exc}")
        for name in sorted(self._names):  # by name too, in case a list missed one
            try:
                self._delete(PODS, name)
            except ApiError as exc:
                problems.append(f"pod/{name}: {exc}")
        if self._namespace_ours:
            try:
                self._delete(NAMESPACES, NAMESPACE)
            except ApiError as exc:
                problems.append(f"namespace/{NAMESPACE}: {exc}")
        return problems
