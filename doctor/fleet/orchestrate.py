"""``kdoctor fleet``: one agent per node through a DaemonSet, the API read once, by fleet.

The run, in order:

1. Read the nodes (once; the cluster checks later reuse the same read) and pick those
   ``--selector`` names. Each node's targets (the other nodes' InternalIPs, the ports their
   roles need) are computed here: agents read no API.
2. Apply :mod:`doctor.fleet.manifest` (Namespace when missing, ServiceAccount, DaemonSet), every
   object labelled with this run's id; leftovers of an interrupted earlier run go first.
3. Wait, one pod list per second for the whole DaemonSet (not per node), printing a line per
   node as it changes; as soon as a node's agent runs, exec ``kdoctor agent --run --targets …``
   in it (at most ``concurrency`` at once) and unpack the bundle it prints into
   ``nodes/<node>/``. Per node: one exec. Per run: a pod list a second, one events list.
4. A node whose agent never reports gets the reason: a taint the stored DaemonSet does not
   tolerate, the DaemonSet's ``FailedCreate`` event (Pod Security admission), the pod's
   waiting state and events (image pull), or the timeout.
5. Delete what it created (DaemonSet, ServiceAccount, the Namespace when it made it), also on
   Ctrl-C, SIGTERM (the CLI turns it into KeyboardInterrupt) and timeout; ``--keep`` leaves it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from doctor.facts.kube import (
    DAEMONSETS,
    EVENTS,
    NODES,
    PODS,
    ApiError,
    LiveCluster,
    Resource,
    label_selector_matches,
)
from doctor.fleet import manifest as mf
from doctor.fleet import reachability
from doctor.fleet.agent import unpack
from doctor.live.podexec import exec_in_pod

NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SERVICEACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
POLL = 1.0
#: Pods stuck in these states do not recover by waiting (the image is not there, etc.).
HOPELESS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
            "CrashLoopBackOff", "ErrImageNeverPull"}  # fmt: skip
FLEET_MANIFEST = "kdoctor-bundle.json"


@dataclass(frozen=True)
class FleetSettings:
    manifest: mf.ManifestSettings = field(default_factory=mf.ManifestSettings)
    #: Seconds for the whole wait + gather (the checks run after it).
    timeout: float = 120.0
    keep: bool = False
    #: Execs into agents at the same time.
    concurrency: int = 16
    #: Seconds each reachability probe waits before it calls a port ``timeout``.
    connect_timeout: float = 2.0
    #: Seconds without news (no new pod, nothing running left to gather) before the nodes
    #: that have no agent are given up on (the DaemonSet controller creates pods at once).
    settle: float = 10.0


@dataclass
class NodeState:
    """One node's way through the run (what the progress line shows)."""

    name: str
    pod: str | None = None
    state: str = "waiting for its agent pod"
    bundle: Path | None = None
    reason: str | None = None
    exec_ms: int = 0

    @property
    def done(self) -> bool:
        return self.bundle is not None or self.reason is not None


@dataclass
class FleetRun:
    """What the run produced: a fleet bundle directory and each node's outcome."""

    directory: Path
    nodes: dict[str, NodeState]
    notes: list[str] = field(default_factory=list)
    cleanup_problems: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def reported(self) -> list[str]:
        return sorted(n for n, s in self.nodes.items() if s.bundle is not None)

    @property
    def unreported(self) -> dict[str, str]:
        return {n: s.reason or "no report" for n, s in sorted(self.nodes.items()) if not s.bundle}


def _taint_text(taint: dict[str, Any]) -> str:
    value = f"={taint['value']}" if taint.get("value") else ""
    return f"{taint.get('key')}{value}:{taint.get('effect')}"


def tolerated(tolerations: Sequence[dict[str, Any]], taint: dict[str, Any]) -> bool:
    """Toleration.ToleratesTaint, as the scheduler and the DaemonSet controller apply it."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        operator = t.get("operator") or "Equal"
        if operator == "Exists" and (not t.get("key") or t.get("key") == taint.get("key")):
            return True
        if (
            operator == "Equal"
            and t.get("key") == taint.get("key")
            and (t.get("value") or "") == (taint.get("value") or "")
        ):
            return True
    return False


def overlay_ports(daemonsets: Sequence[dict[str, Any]]) -> list[int]:
    """TCP ports of the overlays whose DaemonSets the cluster runs."""
    names = {str((d.get("metadata") or {}).get("name")) for d in daemonsets}
    ports: list[int] = []
    for name, owned in reachability.OVERLAY_PORTS.items():
        if name in names:
            ports.extend(owned)
    return ports


class Fleet:
    """One ``kdoctor fleet`` run against CLUSTER (see the module doc)."""

    def __init__(
        self,
        cluster: LiveCluster,
        settings: FleetSettings,
        directory: Path,
        on_progress: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.cluster = cluster
        self.settings = settings
        self.directory = directory
        self.on_progress = on_progress
        self.run_id = secrets.token_hex(4)
        self.manifest = replace(settings.manifest, run_id=self.run_id)
        self.namespace = self.manifest.namespace
        self._created: list[tuple[Resource, str]] = []
        self._namespace_ours = False
        self._closed = False
        self._lock = threading.Lock()
        self.requests: dict[str, int] = {}

    # -- the API, uncached (fleet's own objects change under it) ---------------------------
    def _call(self, method: str, path: str, what: str, verb: str, **kwargs: Any) -> Any:
        with self._lock:
            self.requests[verb] = self.requests.get(verb, 0) + 1
        _status, data = self.cluster.request(method, path, verb=verb, what=what, **kwargs)
        return json.loads(data) if data else {}

    def _get(self, resource: Resource, name: str) -> dict[str, Any] | None:
        ns = self.namespace if resource.namespaced else None
        try:
            doc = self._call("GET", resource.path(ns, name), f"{resource.plural}/{name}", "get")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        return doc if isinstance(doc, dict) else None

    def _create(self, resource: Resource, body: dict[str, Any]) -> dict[str, Any]:
        ns = self.namespace if resource.namespaced else None
        name = body["metadata"]["name"]
        doc: dict[str, Any] = self._call(
            "POST", resource.path(ns), f"{resource.plural}/{name}", "create", body=body
        )
        self._created.append((resource, name))
        return doc

    def _delete(self, resource: Resource, name: str) -> None:
        ns = self.namespace if resource.namespaced else None
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self._call(
                "DELETE", resource.path(ns, name), f"{resource.plural}/{name}", "delete", body=body
            )
        except ApiError as exc:
            if exc.status != 404:
                raise

    def _list(self, resource: Resource, labels: str | None = None) -> list[dict[str, Any]]:
        query = [("labelSelector", labels)] if labels else []
        doc = self._call(
            "GET", resource.path(self.namespace), f"{resource.plural} in {self.namespace}",
            "list", query=query,
        )  # fmt: skip
        items = doc.get("items") if isinstance(doc, dict) else None
        return [i for i in items or [] if isinstance(i, dict)]

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> FleetRun:
        """Apply, wait, gather; always removes what it made (unless ``keep``)."""
        atexit.register(self.cleanup)
        started = time.monotonic()
        deadline = started + self.settings.timeout
        notes: list[str] = []
        states: dict[str, NodeState] = {}
        problems: list[str] = []
        try:
            nodes = self._nodes()
            states = {
                str(n["metadata"]["name"]): NodeState(str(n["metadata"]["name"])) for n in nodes
            }
            if not states:
                notes.append("no node matches the selector")
                return FleetRun(self.directory, states, notes)
            try:
                daemonsets = self.cluster.list_objects(DAEMONSETS)
            except Exception:  # the overlay's ports are an extra: go on without them
                daemonsets = []
            overlay = overlay_ports(daemonsets)
            targets = {name: reachability.targets_for(name, nodes, overlay) for name in states}
            self._apply(notes)
            self._gather(states, targets, deadline)
            self._explain(states, deadline)
        finally:
            if not self.settings.keep:
                problems = self.cleanup()
            else:
                atexit.unregister(self.cleanup)
                notes.append(
                    f"--keep: namespace {self.namespace} and DaemonSet {mf.NAME} are left in place"
                )
        run = FleetRun(self.directory, states, notes, problems, dict(self.requests))
        write_fleet_manifest(self.directory, run)
        return run

    def _nodes(self) -> list[dict[str, Any]]:
        nodes = self.cluster.list_objects(NODES)
        selector = self.manifest.selector
        picked = [
            n
            for n in nodes
            if label_selector_matches(selector, (n.get("metadata") or {}).get("labels") or {})
        ]
        return sorted(picked, key=lambda n: str(n["metadata"]["name"]))

    def _apply(self, notes: list[str]) -> None:
        ns = self._get(NAMESPACES, self.namespace)
        if ns is None:
            self._create(NAMESPACES, mf.namespace(self.manifest))
            self._namespace_ours = True
        else:
            labels = (ns.get("metadata") or {}).get("labels") or {}
            level = labels.get("pod-security.kubernetes.io/enforce")
            if level not in (None, "privileged"):
                notes.append(
                    f"namespace {self.namespace} enforces Pod Security {level!r}: the agents "
                    "need 'privileged' (host namespaces, hostPath); kdoctor does not relabel "
                    "a namespace it did not create"
                )
            # Leftovers of an interrupted earlier run (our labels) go before the new objects.
            old = self._get(DAEMONSETS, mf.NAME)
            if old is not None:
                old_labels = (old.get("metadata") or {}).get("labels") or {}
                if old_labels.get(mf.MANAGED_BY) != "kdoctor":
                    raise ApiError(
                        f"DaemonSet {self.namespace}/{mf.NAME} exists and is not kdoctor's"
                    )
                self._delete(DAEMONSETS, mf.NAME)
                notes.append(f"removed DaemonSet {mf.NAME} left by an earlier interrupted run")
        if self._get(SERVICEACCOUNTS, mf.NAME) is None:
            self._create(SERVICEACCOUNTS, mf.service_account(self.manifest))
        self._create(DAEMONSETS, mf.daemonset(self.manifest))
        self.on_progress(
            f"applied DaemonSet {self.namespace}/{mf.NAME} (image {self.manifest.image})"
        )

    def _note(self, state: NodeState, text: str) -> None:
        if state.state != text:
            state.state = text
            self.on_progress(f"{state.name}: {text}")

    def _gather(
        self,
        states: dict[str, NodeState],
        targets: dict[str, list[reachability.Target]],
        deadline: float,
    ) -> None:
        selector = f"{mf.RUN_LABEL}={self.run_id}"
        # Daemon threads, not a ThreadPoolExecutor: an exec that hangs must not keep the
        # process alive after Ctrl-C (the executor's workers are joined at exit).
        slots = threading.Semaphore(max(1, self.settings.concurrency))
        running: dict[str, threading.Thread] = {}

        def gather(state: NodeState, node_targets: list[reachability.Target]) -> None:
            with slots:
                if not self._closed:
                    self._collect_from(state, node_targets, deadline)

        last_news = time.monotonic()
        try:
            while time.monotonic() < deadline:
                for pod in self._list(PODS, selector):
                    node = str((pod.get("spec") or {}).get("nodeName") or "")
                    state = states.get(node)
                    if state is None or state.done or node in running:
                        continue
                    if state.pod != pod["metadata"]["name"]:
                        state.pod = str(pod["metadata"]["name"])
                        last_news = time.monotonic()
                    waiting = _waiting(pod)
                    if _ready(pod):
                        self._note(state, "agent running: gathering")
                        thread = threading.Thread(
                            target=gather, args=(state, targets.get(node, [])),
                            name=f"fleet-{node}", daemon=True,
                        )  # fmt: skip
                        thread.start()
                        running[node] = thread
                        last_news = time.monotonic()
                    elif waiting:
                        self._note(state, f"agent pod {state.pod}: {waiting[0]}")
                    else:
                        self._note(state, f"agent pod {state.pod}: {_phase(pod)}")
                for node, thread in list(running.items()):
                    if not thread.is_alive():
                        del running[node]
                        last_news = time.monotonic()
                if all(s.done for s in states.values()):
                    return
                quiet = time.monotonic() - last_news
                if not running and quiet >= self.settings.settle and self._hopeless(states):
                    return
                time.sleep(min(POLL, max(0.0, deadline - time.monotonic())))
        finally:
            # Execs still running end when the deadline passes (their own timeout).
            for node, thread in running.items():
                if thread.is_alive():
                    states[node].reason = states[node].reason or (
                        f"the agent did not answer within {self.settings.timeout:g}s "
                        f"(pod {states[node].pod})"
                    )

    def _hopeless(self, states: dict[str, NodeState]) -> bool:
        """Every node still open has no pod, or a pod stuck where waiting does not help."""
        return all(
            s.done or s.pod is None or any(word in s.state for word in HOPELESS)
            for s in states.values()
        )

    def _collect_from(
        self, state: NodeState, targets: list[reachability.Target], deadline: float
    ) -> None:
        assert state.pod is not None
        command = [
            "kdoctor", "agent", "--run",
            "--targets", json.dumps([t.to_json() for t in targets], separators=(",", ":")),
            "--connect-timeout", f"{self.settings.connect_timeout:g}",
        ]  # fmt: skip
        remaining = max(1.0, deadline - time.monotonic())
        with self._lock:
            self.requests["exec"] = self.requests.get("exec", 0) + 1
        try:
            result = exec_in_pod(
                self.cluster, self.namespace, state.pod, command, mf.CONTAINER, remaining
            )
        except ApiError as exc:
            state.reason = f"exec into the agent pod {state.pod} failed: {exc}"
            self._note(state, "error")
            return
        state.exec_ms = result.ms
        if result.timed_out:
            state.reason = (
                f"the agent did not answer within {remaining:.0f}s (pod {state.pod}: it hangs)"
            )
        elif result.exit_code != 0:
            tail = (result.stderr.strip().splitlines() or ["no message"])[-1]
            state.reason = f"the agent exited {result.exit_code}: {tail}"
        else:
            target = self.directory / "nodes" / state.name
            try:
                unpack(result.stdout, target)
            except ValueError as exc:
                shutil.rmtree(target, ignore_errors=True)
                state.reason = str(exc)
            else:
                state.bundle = target
        self._note(state, "reported" if state.bundle else f"error: {state.reason}")

    def _explain(self, states: dict[str, NodeState], deadline: float) -> None:
        """Why each node that did not report did not (the DaemonSet, its events, the pod)."""
        open_nodes = [s for s in states.values() if not s.done]
        if not open_nodes:
            return
        try:
            events = self._list(EVENTS)
            ds = self._get(DAEMONSETS, mf.NAME) or {}
            pods = {
                str((p.get("spec") or {}).get("nodeName")): p
                for p in self._list(PODS, f"{mf.RUN_LABEL}={self.run_id}")
            }
            node_objs = {str(n["metadata"]["name"]): n for n in self.cluster.list_objects(NODES)}
        except ApiError as exc:
            for s in open_nodes:
                s.reason = f"no report, and the reason could not be read: {exc}"
            return
        template = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
        tolerations = template.get("tolerations") or []
        failed_create = [
            e for e in events
            if (e.get("involvedObject") or {}).get("kind") == "DaemonSet"
            and e.get("reason") == "FailedCreate"
        ]  # fmt: skip
        waited = f"{self.settings.timeout:g}s" if time.monotonic() >= deadline else "the wait"
        for s in open_nodes:
            pod = pods.get(s.name)
            if pod is None:
                node = node_objs.get(s.name) or {}
                blocking = [
                    t
                    for t in (node.get("spec") or {}).get("taints") or []
                    if t.get("effect") in ("NoSchedule", "NoExecute")
                    and not tolerated(tolerations, t)
                ]
                if blocking:
                    stored = json.dumps(tolerations) if tolerations else "none"
                    s.reason = (
                        f"no agent pod: taint {_taint_text(blocking[0])} is not tolerated by "
                        f"the DaemonSet as the API stored it (tolerations: {stored}; an "
                        "admission policy may have changed them)"
                    )
                elif failed_create:
                    s.reason = "no agent pod: " + str(failed_create[-1].get("message") or "")
                else:
                    s.reason = f"no agent pod was created for this node within {waited}"
            else:
                name = str(pod["metadata"]["name"])
                waiting = _waiting(pod)
                pod_events = [
                    e for e in events if (e.get("involvedObject") or {}).get("name") == name
                ]
                if waiting:
                    reason, message = waiting
                    s.reason = f"agent pod {name} {reason}: {message}".rstrip(": ")
                elif pod_events:
                    last = pod_events[-1]
                    s.reason = f"agent pod {name}: {last.get('reason')}: {last.get('message')}"
                else:
                    s.reason = f"agent pod {name} not running after {waited} ({_phase(pod)})"
            self._note(s, f"error: {s.reason}")

    def cleanup(self) -> list[str]:
        """Delete what this run created, newest first; problems are returned, not raised."""
        if self._closed:
            return []
        self._closed = True
        atexit.unregister(self.cleanup)
        problems: list[str] = []
        for resource, name in reversed(self._created):
            if resource is NAMESPACES and not self._namespace_ours:
                continue
            try:
                self._delete(resource, name)
            except ApiError as exc:
                problems.append(f"{resource.plural}/{name}: {exc}")
        if self._created:
            self.on_progress(f"removed what this run created in namespace {self.namespace}")
        return problems


def _ready(pod: dict[str, Any]) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running":
        return False
    return all(bool(c.get("ready")) for c in status.get("containerStatuses") or [{}])


def _waiting(pod: dict[str, Any]) -> tuple[str, str] | None:
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (c.get("state") or {}).get("waiting")
        if isinstance(waiting, dict):
            return str(waiting.get("reason") or "Waiting"), str(waiting.get("message") or "")
    return None


def _phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def write_fleet_manifest(directory: Path, run: FleetRun) -> None:
    """``kdoctor-bundle.json`` of a fleet bundle (bundle-v1.md), with the unreported nodes."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "format": "kdoctor-bundle",
        "version": 1,
        "fleet": True,
        "nodes": sorted(run.nodes),
        "collected_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "unreported": run.unreported,
    }
    with contextlib.suppress(OSError):
        (directory / FLEET_MANIFEST).write_text(json.dumps(doc, indent=2) + "\n")
