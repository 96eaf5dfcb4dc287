"""Kubernetes API facts: one fact cache per run, read live (raw JSON) or from a bundle.

The fact cache (:class:`KubeFacts`; :class:`LiveCluster` and :class:`BundleCluster` fill it)
is what every cluster check, and fleet's aggregator, reads the cluster through. Its API:

* ``list_objects(resource, namespace=None, label_selector=None, field_selector=None)`` →
  the matching objects (dicts as ``kubectl get -o json`` prints them, ``kind`` and
  ``apiVersion`` filled in). Each distinct list is fetched once per run, lazily, and shared
  by every caller; callers must not modify what they get.
* ``expect(["kube-system/pods", "nodes", …])``: whole lists ("<plural>" for all namespaces,
  "<namespace>/<plural>") the run will read. A narrower ask (a selector, or one namespace of
  an all-namespaces list) is then answered locally from that list, never with a second
  request; a whole list that is already held serves narrower asks the same way. The runner
  calls it with the ``reads`` every selected check declares.
* ``count(resource, namespace=None)`` → how many objects exist (``limit=1`` and the server's
  ``remainingItemCount``), or None when the server does not say: a check can choose a cheaper
  strategy for a large cluster before it reads anything big.
* ``derived(name, compute)``: a fact computed from those lists (the overlay's state), once
  per run however many checks ask.
* ``get(resource, namespace, name)``, ``pod_log(...)``, ``server_version()``; ``invalidate()``
  forgets everything (after a fix wrote to the cluster, the re-check reads again).

Asking the server for less: lists are paginated (``limit=500``), each page is parsed and
slimmed (:func:`slim`: ``managedFields`` and a node's image list, which no check reads, are
dropped) before the next is read, so memory holds the kept fields of a list, not its bytes.
Small lists are read with ``resourceVersion=0`` (the API server answers from its watch cache
instead of etcd); pods and nodes, the lists that grow with the cluster, page through
consistent reads as kubectl does. Selectors narrow server-side what is not held already.

A good API citizen (:class:`LiveCluster`): a client-side rate limit (token bucket, ``qps`` and
``burst``), 429 and 503 answers retried after their ``Retry-After``, every request bounded by
the run's deadline (``--timeout``) as well as its own timeout, and a User-Agent that names the
check that asked (``kdoctor/0.1.0 (check cluster.nodes)``) for the server's audit log.

This module imports ``kubernetes`` only inside :class:`LiveCluster`; node-only runs never
load it.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

from doctor import __version__
from doctor.core.errors import FactError, FactMissing
from doctor.core.sources import ClusterFacts, ClusterTarget
from doctor.facts.cluster import ClusterConfig

PAGE_SIZE = 500
T = TypeVar("T")
#: Client-side rate limit: sustained requests per second, and how many may go at once.
#: (kubectl's own defaults are 50/300 since 1.27; a run makes a few dozen requests.)
DEFAULT_QPS = 50.0
DEFAULT_BURST = 100
#: 429/503 answers retried at most this many times each, after their Retry-After.
MAX_RETRIES = 5
#: Retry-After beyond this is not waited for: the check reports the server's refusal.
MAX_RETRY_AFTER = 30.0
#: Lists that grow with the cluster: paginated consistent reads, never one watch-cache answer
#: (which ignores ``limit`` and would hold the whole list's bytes at once).
_GROWING = ("pods", "nodes")


@dataclass(frozen=True)
class Resource:
    """One API resource kdoctor reads, and the bundle file that holds it."""

    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def bundle_file(self) -> str:
        return f"{self.plural}.json"

    def candidates(self) -> list[Resource]:
        """This resource, then the older group/versions a 1.6–1.15 server serves it under."""
        return [self] + [
            Resource(group, version, self.plural, self.kind, self.namespaced)
            for group, version in OLDER_VERSIONS.get(self.plural, ())
        ]

    def at_version_of(self, obj: dict[str, Any]) -> Resource:
        """The same resource at the group/version an object was read with (for writes)."""
        api_version = str(obj.get("apiVersion") or "")
        if not api_version:
            return self
        group, _, version = api_version.rpartition("/")
        return Resource(group, version, self.plural, self.kind, self.namespaced)

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{quote(namespace)}"
        base += f"/{self.plural}"
        if name:
            base += f"/{quote(name)}"
        return base


#: kubeadm 1.6 serves DaemonSets only in extensions/v1beta1, Deployments in apps/v1beta1.
OLDER_VERSIONS: dict[str, tuple[tuple[str, str], ...]] = {
    "daemonsets": (("apps", "v1beta2"), ("extensions", "v1beta1")),
    "deployments": (("apps", "v1beta2"), ("apps", "v1beta1"), ("extensions", "v1beta1")),
    "replicasets": (("apps", "v1beta2"), ("extensions", "v1beta1")),
    "endpointslices": (("discovery.k8s.io", "v1beta1"),),
}

PODS = Resource("", "v1", "pods", "Pod")
SERVICES = Resource("", "v1", "services", "Service")
ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
SECRETS = Resource("", "v1", "secrets", "Secret")
EVENTS = Resource("", "v1", "events", "Event")
DAEMONSETS = Resource("apps", "v1", "daemonsets", "DaemonSet")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
ENDPOINTSLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")

ALL_RESOURCES = [
    NODES, PODS, SERVICES, ENDPOINTS, DAEMONSETS, DEPLOYMENTS, REPLICASETS, CONFIGMAPS,
    SECRETS, EVENTS, ENDPOINTSLICES,
]  # fmt: skip


class ApiError(FactError):
    """The API refused or failed a request; ``status`` is the HTTP status (0: no answer)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


# -- selectors (for bundles: the live server does this itself) ------------------------------

_SET_EXPR = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)\s*$")


@functools.lru_cache(maxsize=256)
def _split_selector(selector: str) -> tuple[str, ...]:
    """The terms of a selector (comma is AND, except inside ``in (…)``); parsed once per
    selector, since a held list is filtered item by item."""
    return tuple(split_selector_terms(selector))


def split_selector_terms(selector: str) -> list[str]:
    """A label selector's terms: split at commas that are not inside ``in (a,b)``."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def label_selector_matches(selector: str | None, labels: dict[str, str]) -> bool:
    """Kubernetes label selector semantics: =, ==, !=, in, notin, key, !key; comma is AND."""
    if not selector:
        return True
    for term in _split_selector(selector):
        match = _SET_EXPR.match(term)
        if match:
            key, op, values = match.groups()
            options = {v.strip() for v in values.split(",") if v.strip()}
            present = key in labels and labels[key] in options
            if (op == "in") != present:
                return False
        elif "!=" in term:
            key, value = (s.strip() for s in term.split("!=", 1))
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = (s.strip() for s in term.replace("==", "=").split("=", 1))
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:].strip() in labels:
                return False
        elif term not in labels:
            return False
    return True


def _field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def field_selector_matches(selector: str | None, obj: dict[str, Any]) -> bool:
    if not selector:
        return True
    for term in _split_selector(selector):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if _field_value(obj, key.strip()) == value.strip():
                return False
        else:
            key, value = term.replace("==", "=").split("=", 1)
            if _field_value(obj, key.strip()) != value.strip():
                return False
    return True


# -- the facts ----------------------------------------------------------------------------


#: Fields no check reads that make up much of a large list, dropped from every listed object
#: (live and bundle alike): server-side apply's bookkeeping, a node's image list, and the parts
#: of a pod that only the kubelet acts on (probes, resources, security context). A check that
#: needs one of them reads the object with ``get`` (never slimmed), or removes it from here.
_SLIM_METADATA = ("managedFields",)
_SLIM_STATUS: dict[str, tuple[str, ...]] = {"nodes": ("images",)}
_SLIM_POD_SPEC = ("affinity", "securityContext", "priorityClassName", "schedulerName",
                  "enableServiceLinks", "preemptionPolicy",
                  "terminationGracePeriodSeconds")  # fmt: skip
_SLIM_CONTAINER = ("livenessProbe", "readinessProbe", "startupProbe", "securityContext",
                   "resources", "terminationMessagePath", "terminationMessagePolicy",
                   "imagePullPolicy")  # fmt: skip
_SLIM_CONTAINER_STATUS = ("containerID", "imageID")


def _drop(obj: Any, keys: tuple[str, ...]) -> None:
    if isinstance(obj, dict):
        for key in keys:
            obj.pop(key, None)


def slim(resource: Resource, item: dict[str, Any]) -> dict[str, Any]:
    """ITEM without the fields no check reads (see ``_SLIM_*``): a pod keeps half its size,
    so 10,000 kube-system pods and 5,000 nodes fit in about 120 MB."""
    _drop(item.get("metadata"), _SLIM_METADATA)
    status = item.get("status")
    _drop(status, _SLIM_STATUS.get(resource.plural, ()))
    if resource.plural == "pods":
        spec = item.get("spec")
        _drop(spec, _SLIM_POD_SPEC)
        if isinstance(spec, dict):
            for key in ("containers", "initContainers"):
                for container in spec.get(key) or ():
                    _drop(container, _SLIM_CONTAINER)
        if isinstance(status, dict):
            for key in ("containerStatuses", "initContainerStatuses"):
                for container_status in status.get(key) or ():
                    _drop(container_status, _SLIM_CONTAINER_STATUS)
    return item


#: Parts of a pod its controller stamps from one template: equal across that controller's pods.
_POD_TEMPLATE_PARTS = (("spec", "containers"), ("spec", "initContainers"), ("spec", "volumes"),
                       ("spec", "tolerations"), ("spec", "nodeSelector"),
                       ("metadata", "labels"), ("metadata", "ownerReferences"))  # fmt: skip


class _SharedParts:
    """Makes equal template parts of a list's pods one object (compared with ``==``, so only
    truly equal values are shared): 5,000 pods of a DaemonSet hold its container specs once."""

    def __init__(self) -> None:
        self._seen: dict[tuple[Any, ...], Any] = {}

    def share(self, pod: dict[str, Any]) -> None:
        refs = (pod.get("metadata") or {}).get("ownerReferences")
        owner = (
            refs[0].get("uid")
            if isinstance(refs, list) and refs and isinstance(refs[0], dict)
            else None
        )
        if not owner:
            return
        for section, key in _POD_TEMPLATE_PARTS:
            part = pod.get(section)
            if not isinstance(part, dict) or key not in part:
                continue
            seen_key = (owner, section, key)
            known = self._seen.get(seen_key)
            if known is None:
                self._seen[seen_key] = part[key]
            elif known is not part[key] and known == part[key]:
                part[key] = known


class _NoCyclicGC:
    """Pause the cyclic garbage collector while JSON is parsed (any thread; nested).

    Parsed JSON holds no reference cycles, but its hundreds of thousands of new dicts trigger
    full collections that rescan everything already held: with 10,000 pods held, parsing the
    rest takes three times as long. Reference counting still frees a page's objects as soon
    as they are dropped. (``gc.freeze`` afterwards would save another tenth, but would also
    make immortal whatever cyclic garbage the TUI holds at that moment.)
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._was_enabled = False

    def __enter__(self) -> None:
        with self._lock:
            if self._depth == 0:
                self._was_enabled = gc.isenabled()
                gc.disable()
            self._depth += 1

    def __exit__(self, *exc: object) -> None:
        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._was_enabled:
                gc.enable()


_no_cyclic_gc = _NoCyclicGC()


def _parse_reads(reads: Iterable[str]) -> set[tuple[str, str | None]]:
    out: set[tuple[str, str | None]] = set()
    for entry in reads:
        namespace, _, plural = entry.rpartition("/")
        out.add((plural, namespace or None))
    return out


class KubeFacts(ClusterFacts):
    """The run's fact cache, shared by both backends (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__(None)
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[Any, ...], threading.Lock] = {}
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._expected: set[tuple[str, str | None]] = set()

    def _cached(self, key: tuple[Any, ...], produce: Any) -> Any:
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # concurrent checks asking the same thing wait for one fetch
            if key not in self._cache:
                try:
                    self._cache[key] = ("ok", produce())
                except (FactError, FactMissing) as exc:
                    self._cache[key] = ("err", exc)
            kind, value = self._cache[key]
        if kind == "err":
            raise value
        return value

    def invalidate(self) -> None:
        """Forget what was read: after a fix wrote to the cluster, the re-check reads again."""
        with self._lock:
            self._cache.clear()
            self._key_locks.clear()

    def expect(self, reads: Iterable[str]) -> None:
        """The whole lists this run will read ("<plural>" or "<namespace>/<plural>")."""
        with self._lock:
            self._expected |= _parse_reads(reads)

    def _holds(self, plural: str, namespace: str | None) -> bool:
        """The whole list is expected this run, or already read."""
        with self._lock:
            if (plural, namespace) in self._expected:
                return True
            held = self._cache.get(("list", plural, namespace, None, None))
        return held is not None and held[0] == "ok"

    def _whole_list_for(
        self, resource: Resource, namespace: str | None, labels: str | None, fields: str | None
    ) -> tuple[str | None] | None:
        """The namespace (None: all namespaces) of a whole list, held or expected, that the
        ask (NAMESPACE, LABELS, FIELDS) selects from; None when there is no such list."""
        if self._holds(resource.plural, None) and (namespace, labels, fields) != (None, None, None):
            return (None,)
        if namespace is not None and (labels or fields) and self._holds(resource.plural, namespace):
            return (namespace,)
        return None

    def list_objects(
        self,
        resource: Resource,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        """Every object matching; each item has ``kind`` and ``apiVersion`` filled in.

        Selected locally from a whole list that is held or expected (see :meth:`expect`),
        else fetched (paginated, narrowed server-side) and kept for the rest of the run."""
        if not resource.namespaced:
            namespace = None
        key = ("list", resource.plural, namespace, label_selector, field_selector)
        source = self._whole_list_for(resource, namespace, label_selector, field_selector)
        if source is not None:
            whole = self.list_objects(resource, source[0])

            def select() -> list[dict[str, Any]]:
                return [
                    item
                    for item in whole
                    if _selected(item, resource, namespace, label_selector, field_selector)
                ]

            selected: list[dict[str, Any]] = self._cached(key, select)
            return selected
        items: list[dict[str, Any]] = self._cached(
            key, lambda: self._list(resource, namespace, label_selector, field_selector)
        )
        return items

    def derived(self, name: str, compute: Callable[[], T]) -> T:
        """A fact computed from the run's lists (e.g. the overlay's state), computed once
        however many checks ask; forgotten with the lists by :meth:`invalidate`."""
        value: T = self._cached(("derived", name), compute)
        return value

    def count(self, resource: Resource, namespace: str | None = None) -> int | None:
        """How many objects there are (None: the server does not say), read cheaply."""
        if not resource.namespaced:
            namespace = None
        with self._lock:
            held = self._cache.get(("list", resource.plural, namespace, None, None))
        if held is not None and held[0] == "ok":
            return len(held[1])
        total: int | None = self._cached(
            ("count", resource.plural, namespace), lambda: self._count(resource, namespace)
        )
        return total

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = ("get", resource.plural, namespace, name)
        obj: dict[str, Any] | None = self._cached(key, lambda: self._get(resource, namespace, name))
        return obj

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str,
        tail_lines: int = 100,
        timestamps: bool = False,
    ) -> str:
        """The container's last lines; with ``timestamps`` each starts with an RFC 3339 time
        (live only: a bundle keeps logs as collected)."""
        key = ("log", namespace, pod, container, tail_lines, timestamps)
        text: str = self._cached(
            key, lambda: self._pod_log(namespace, pod, container, tail_lines, timestamps)
        )
        return text

    def server_version(self) -> tuple[int, int] | None:
        """(major, minor) of the API server, when known."""
        version = self.target.version if self.target else None
        match = re.match(r"v?(\d+)\.(\d+)", version or "")
        return (int(match.group(1)), int(match.group(2))) if match else None

    def _list(
        self, resource: Resource, ns: str | None, labels: str | None, fields: str | None
    ) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _count(self, resource: Resource, ns: str | None) -> int | None:
        raise NotImplementedError

    def _get(self, resource: Resource, ns: str | None, name: str) -> dict[str, Any] | None:
        raise NotImplementedError

    def _pod_log(self, ns: str, pod: str, container: str, tail: int, stamps: bool) -> str:
        raise NotImplementedError


def _selected(
    item: dict[str, Any],
    resource: Resource,
    namespace: str | None,
    labels: str | None,
    fields: str | None,
) -> bool:
    """Whether ITEM is in the list (NAMESPACE, LABELS, FIELDS): the server's selection, done
    locally on a list already held (or a bundle's)."""
    meta = item.get("metadata") or {}
    if namespace and resource.namespaced and meta.get("namespace") != namespace:
        return False
    if labels and not label_selector_matches(labels, meta.get("labels") or {}):
        return False
    return field_selector_matches(fields, item)


def _with_kind(items: list[dict[str, Any]], resource: Resource) -> list[dict[str, Any]]:
    api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
    for item in items:
        item.setdefault("kind", resource.kind)
        item.setdefault("apiVersion", api_version)
    return items


class BundleCluster(KubeFacts):
    """``cluster/*.json`` of a bundle: ``kubectl get … -o json`` documents."""

    def __init__(self, bundle: Path) -> None:
        super().__init__()
        self.root = bundle / "cluster"
        self._target = self._read_target()

    @property
    def is_bundle(self) -> bool:
        return True

    @property
    def target(self) -> ClusterTarget | None:
        return self._target

    def _read_target(self) -> ClusterTarget:
        version = None
        try:
            doc = json.loads((self.root / "version.json").read_text())
            server = doc.get("serverVersion", doc) if isinstance(doc, dict) else {}
            version = server.get("gitVersion") if isinstance(server, dict) else None
        except (OSError, ValueError):
            pass
        return ClusterTarget(context=None, server=None, version=version)

    def _document(self, resource: Resource) -> list[dict[str, Any]]:
        def load() -> list[dict[str, Any]]:
            path = self.root / resource.bundle_file
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError as exc:
                raise FactMissing(f"the bundle has no cluster/{resource.bundle_file}") from exc
            except (OSError, UnicodeDecodeError) as exc:
                raise FactError(f"cluster/{resource.bundle_file}: {exc}") from exc
            try:
                with _no_cyclic_gc:
                    doc = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FactError(f"cluster/{resource.bundle_file}: invalid JSON: {exc}") from exc
            items = doc.get("items") if isinstance(doc, dict) else None
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise FactError(f"cluster/{resource.bundle_file}: not a List document (no items)")
            shared = _SharedParts() if resource.plural == "pods" else None
            for item in items:
                slim(resource, item)
                if shared is not None:
                    shared.share(item)
            return _with_kind(items, resource)

        doc: list[dict[str, Any]] = self._cached(("doc", resource.plural), load)
        return doc

    def _list(
        self, resource: Resource, ns: str | None, labels: str | None, fields: str | None
    ) -> list[dict[str, Any]]:
        return [i for i in self._document(resource) if _selected(i, resource, ns, labels, fields)]

    def _count(self, resource: Resource, ns: str | None) -> int | None:
        return len(self._list(resource, ns, None, None))

    def _get(self, resource: Resource, ns: str | None, name: str) -> dict[str, Any] | None:
        for item in self._document(resource):
            meta = item.get("metadata") or {}
            if meta.get("name") == name and (
                not resource.namespaced or meta.get("namespace") == ns
            ):
                return item
        return None

    def _pod_log(self, ns: str, pod: str, container: str, tail: int, stamps: bool) -> str:
        path = self.root / "logs" / ns / pod / f"{container}.log"
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError as exc:
            raise FactMissing(f"the bundle has no cluster/logs/{ns}/{pod}/{container}.log") from exc
        return "\n".join(lines[-tail:])


class RateLimiter:
    """A token bucket: BURST requests at once, then QPS per second (client-go's flowcontrol)."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps = qps
        self.burst = max(1, burst)
        self._tokens = float(self.burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token; return how long the caller must wait before using it."""
        with self._lock:
            now = time.monotonic()
            if self.qps > 0:
                self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.qps)
            self._stamp = now
            self._tokens -= 1
            if self._tokens >= 0 or self.qps <= 0:
                return 0.0
            return -self._tokens / self.qps


class LiveCluster(KubeFacts):
    """The API server named by a kubeconfig (or in-cluster config).

    TIMEOUT bounds each request; DEADLINE (a ``time.monotonic()`` value: the run's
    ``--timeout``) bounds them all together; QPS/BURST is the client-side rate limit.
    """

    def __init__(
        self,
        config: ClusterConfig,
        timeout: float,
        *,
        deadline: float | None = None,
        qps: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST,
    ) -> None:
        super().__init__()
        self.config = config
        self.timeout = timeout
        self.deadline = deadline
        self._budget = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.limiter = RateLimiter(qps, burst)
        self._past_deadline = threading.local()
        self._api: Any = None
        self._broken: str | None = None
        self._target_value: ClusterTarget | None = None
        self._connect()

    @property
    def target(self) -> ClusterTarget | None:
        return self._target_value

    def _connect(self) -> None:
        import urllib3
        from kubernetes import client, config

        context_name = self.config.context
        server = None
        try:
            configuration = client.Configuration()
            if self.config.in_cluster:
                config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
                context_name = context_name or "in-cluster"
            else:
                path = str(self.config.kubeconfig)
                if context_name is None:
                    _contexts, active = config.list_kube_config_contexts(  # type: ignore[no-untyped-call]
                        config_file=path
                    )
                    context_name = (active or {}).get("name")
                config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=path, context=self.config.context,
                    client_configuration=configuration, persist_config=False,
                )  # fmt: skip
            # One retry of a failed connection or read (urllib3's); 429/503 and their
            # Retry-After are handled in request(), within the deadline, not slept on here.
            configuration.retries = urllib3.Retry(total=1, respect_retry_after_header=False)
            server = configuration.host
            self._api = client.ApiClient(configuration)
        except Exception as exc:  # the library raises ConfigException, ValueError, OSError…
            self._broken = f"cannot load cluster configuration: {exc}"
            self._target_value = ClusterTarget(context_name, server, None)
            return
        version = None
        try:
            doc = self._request_json("GET", "/version", verb="get", what="the server version")
            version = doc.get("gitVersion") if isinstance(doc, dict) else None
        except ApiError as exc:
            # The node checks still run; every cluster check reports this reason as error.
            self._broken = str(exc)
        self._target_value = ClusterTarget(context_name, server, version)

    def stream_request(
        self, path: str, query: list[tuple[str, str]]
    ) -> tuple[Any, str, dict[str, str]]:
        """(client configuration, URL, headers with the credentials) of a GET that upgrades
        to a WebSocket, such as pods/exec (:mod:`doctor.live.podexec`). Nothing is sent here."""
        if self._broken:
            raise ApiError(self._broken)
        _method, url, headers, _body, _post = self._api.param_serialize(
            method="GET", resource_path=path, query_params=query, header_params={},
            auth_settings=["BearerToken"],
        )  # fmt: skip
        return self._api.configuration, url, dict(headers)

    # -- HTTP ---------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        verb: str = "get",
        what: str = "",
    ) -> tuple[int, bytes]:
        """One raw HTTP call (rate-limited, retried on 429/503, within the deadline); raises
        ApiError with a reason a human can act on."""
        if self._broken:
            raise ApiError(self._broken)
        url_path = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json", "User-Agent": _user_agent()}
        if body is not None:
            headers["Content-Type"] = content_type
        for attempt in range(MAX_RETRIES + 1):
            self._wait(self.limiter.reserve(), verb, what)
            status, data, retry_after = self._send(method, url_path, headers, body, verb, what)
            retry = status in (429, 503) and retry_after is not None and attempt < MAX_RETRIES
            if retry and retry_after is not None and retry_after <= MAX_RETRY_AFTER:
                self._wait(retry_after, verb, what, refused=status)
                continue
            if status >= 400:
                raise ApiError(self._status_reason(status, data, verb, what), status)
            return status, data
        raise AssertionError("unreachable")  # the last attempt returns or raises

    def _remaining(self) -> float | None:
        if self.deadline is None or getattr(self._past_deadline, "allowed", False):
            return None
        return self.deadline - time.monotonic()

    @contextlib.contextmanager
    def beyond_deadline(self) -> Iterator[None]:
        """Requests of this thread ignore the run's deadline: removing what the run created
        (probe pods) must happen also when the run's time ran out. The per-request timeout
        still holds."""
        self._past_deadline.allowed = True
        try:
            yield
        finally:
            self._past_deadline.allowed = False

    def _wait(self, seconds: float, verb: str, what: str, refused: int = 0) -> None:
        """Sleep SECONDS unless that would pass the deadline (then fail now, saying why)."""
        remaining = self._remaining()
        if remaining is not None and seconds >= remaining:
            why = f"the server answered {refused} and asked to retry later; " if refused else ""
            raise ApiError(
                f"{why}the run's deadline ({self._budget or 0:.3g}s, --timeout) ran out before "
                f"{verb} {what or 'the request'}",
                refused,
            )
        if seconds > 0:
            time.sleep(seconds)

    def _send(
        self, method: str, url_path: str, headers: dict[str, str], body: Any, verb: str, what: str
    ) -> tuple[int, bytes, float | None]:
        """(status, body, Retry-After seconds) of one HTTP exchange."""
        import urllib3

        timeout = self.timeout
        remaining = self._remaining()
        if remaining is not None:
            if remaining <= 0:
                self._wait(0, verb, what)
            # urllib3 may try twice (one retry): both tries together stay within the deadline.
            timeout = min(timeout, remaining / 2)
        try:
            params = self._api.param_serialize(
                method=method, resource_path=url_path, header_params=dict(headers),
                body=body, auth_settings=["BearerToken"],
            )  # fmt: skip
            params[2]["User-Agent"] = headers["User-Agent"]  # the client's default wins otherwise
            response = self._api.call_api(*params, _request_timeout=(timeout, timeout))
            data: bytes = response.read()
        except urllib3.exceptions.MaxRetryError as exc:
            raise ApiError(self._transport_reason(exc.reason, timeout)) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise ApiError(self._transport_reason(exc, timeout)) from exc
        return int(response.status), data, _retry_after(response)

    def _transport_reason(self, exc: object, timeout: float | None = None) -> str:
        import urllib3

        host = self._api.configuration.host if self._api else "?"
        text = str(exc)
        if isinstance(exc, urllib3.exceptions.SSLError) or "SSL" in text or "certificate" in text:
            return f"TLS failure talking to the API server {host}: {text}"
        # NewConnectionError subclasses ConnectTimeoutError in urllib3: test it first.
        if "refused" in text.lower() or isinstance(exc, urllib3.exceptions.NewConnectionError):
            return f"the API server {host} is unreachable: {text}"
        if isinstance(exc, urllib3.exceptions.TimeoutError) or "timed out" in text.lower():
            waited = self.timeout if timeout is None else timeout
            if waited < self.timeout:
                return (
                    f"the API server {host} did not answer within {waited:.3g}s, the time "
                    f"left of the run's deadline ({self._budget or 0:.3g}s, --timeout)"
                )
            return f"the API server {host} did not answer within {self.timeout:g}s"
        return f"the API server {host} failed: {text}"

    def _status_reason(self, status: int, data: bytes, verb: str, what: str) -> str:
        message = ""
        try:
            doc = json.loads(data)
            message = doc.get("message", "") if isinstance(doc, dict) else ""
        except ValueError:
            message = data[:200].decode("utf-8", "replace")
        if status == 401:
            return (
                "401 Unauthorized: the API server rejected the credentials of "
                f"{self.config.kubeconfig or 'the service account'}"
            )
        if status == 403:
            return f"403 Forbidden: not allowed to {verb} {what}: {message}"
        if status >= 500:
            return f"API server error {status} on {verb} {what}: {message or 'no message'}"
        return f"API error {status} on {verb} {what}: {message or 'no message'}"

    def _request_json(self, method: str, path: str, **kwargs: Any) -> Any:
        _status, data = self.request(method, path, **kwargs)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise ApiError(f"invalid JSON from the API server ({method} {path}): {exc}") from exc

    # -- reads ---------------------------------------------------------------------------
    def _list(
        self, resource: Resource, ns: str | None, labels: str | None, fields: str | None
    ) -> list[dict[str, Any]]:
        tried: list[str] = []
        for candidate in resource.candidates():
            try:
                return self._list_at(candidate, ns, labels, fields)
            except ApiError as exc:
                if exc.status != 404:
                    raise
                tried.append(f"{candidate.group or 'core'}/{candidate.version}")
        raise ApiError(
            f"{resource.plural} are not served by this API server (404 for {', '.join(tried)})",
            404,
        )

    def _list_at(
        self, resource: Resource, ns: str | None, labels: str | None, fields: str | None
    ) -> list[dict[str, Any]]:
        where = f" in namespace {ns}" if ns else " in all namespaces"
        what = f"{resource.plural}{where if resource.namespaced else ''}"
        # A list that does not grow with the cluster, or one a field selector keeps small (the
        # Pending pods), is read from the watch cache: no etcd read, no consistency needed.
        from_cache = resource.plural not in _GROWING or bool(fields)
        items: list[dict[str, Any]] = []
        shared = _SharedParts() if resource.plural == "pods" else None
        token = ""
        while True:
            query = [("limit", str(PAGE_SIZE))]
            if token:
                query.append(("continue", token))
            elif from_cache:
                query.append(("resourceVersion", "0"))
            if labels:
                query.append(("labelSelector", labels))
            if fields:
                query.append(("fieldSelector", fields))
            with _no_cyclic_gc:
                doc = self._request_json(
                    "GET", resource.path(ns), query=query, verb="list", what=what
                )
                if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
                    raise ApiError(f"unexpected answer listing {what}: not a List")
                # Page by page: only the slimmed objects outlive their page's bytes.
                page = [slim(resource, i) for i in doc["items"] if isinstance(i, dict)]
                if shared is not None:
                    for pod in page:
                        shared.share(pod)
                items.extend(page)
            token = (doc.get("metadata") or {}).get("continue") or ""
            del doc
            if not token:
                return _with_kind(items, resource)

    def _count(self, resource: Resource, ns: str | None) -> int | None:
        for candidate in resource.candidates():
            try:
                doc = self._request_json(
                    "GET", candidate.path(ns), query=[("limit", "1")], verb="list",
                    what=f"{resource.plural} (count)",
                )  # fmt: skip
            except ApiError as exc:
                if exc.status == 404:
                    continue
                raise
            items = doc.get("items") if isinstance(doc, dict) else None
            meta = (doc.get("metadata") or {}) if isinstance(doc, dict) else {}
            if not isinstance(items, list):
                return None
            if not meta.get("continue"):
                return len(items)  # all of them (a server before 1.9 ignores limit)
            remaining = meta.get("remainingItemCount")
            return len(items) + remaining if isinstance(remaining, int) else None
        return None

    def _get(self, resource: Resource, ns: str | None, name: str) -> dict[str, Any] | None:
        for candidate in resource.candidates():
            try:
                doc = self._request_json(
                    "GET", candidate.path(ns, name), verb="get", what=f"{resource.plural}/{name}"
                )
            except ApiError as exc:
                if exc.status == 404:
                    continue  # not found, or not served at this version: try an older one
                raise
            return _with_kind([doc], candidate)[0] if isinstance(doc, dict) else None
        return None

    def _pod_log(self, ns: str, pod: str, container: str, tail: int, stamps: bool) -> str:
        query = [("container", container), ("tailLines", str(tail))]
        if stamps:
            query.append(("timestamps", "true"))
        _status, data = self.request(
            "GET",
            PODS.path(ns, pod) + "/log",
            query=query,
            verb="get",
            what=f"pods/log of {ns}/{pod}",
        )
        return data.decode("utf-8", "replace")


def _user_agent() -> str:
    """``kdoctor/VERSION``, naming the check when a check's thread asks (the runner names its
    threads after the check ids), so the server's audit log says who read what."""
    name = threading.current_thread().name
    if name.startswith(("cluster.", "node.")):
        return f"kdoctor/{__version__} (check {name})"
    return f"kdoctor/{__version__}"


def _retry_after(response: Any) -> float | None:
    """Seconds of a Retry-After header (delta-seconds form), None when absent or a date."""
    try:
        value = response.headers.get("Retry-After")
    except AttributeError:
        return None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def open_live(config: ClusterConfig, timeout: float) -> LiveCluster:
    return LiveCluster(config, timeout)


def open_bundle_cluster(bundle: Path) -> ClusterFacts:
    """The cluster part of a bundle (``cluster/``), or why there is none."""
    if not (bundle / "cluster").is_dir():
        return ClusterFacts(f"the bundle has no cluster/ directory ({bundle / 'cluster'})")
    return BundleCluster(bundle)


def open_live_cluster(
    config: ClusterConfig, timeout: float, deadline: float | None = None
) -> ClusterFacts:
    """Live API access through the kubeconfig or in-cluster config (imports kubernetes).

    TIMEOUT bounds each request, DEADLINE (``time.monotonic()`` based) all of them."""
    return LiveCluster(config, timeout, deadline=deadline)
