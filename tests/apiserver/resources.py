"""The resource types the test API server knows, with the discovery facts clients read.

One table drives discovery, URL routing, field selectors and bundle loading, so adding a
resource means adding one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

STANDARD_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)


@dataclass(frozen=True)
class Subresource:
    """A subresource as discovery lists it (pods/log, deployments/scale, ...)."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class ResourceType:
    """One served resource: its names, scope and the fields a fieldSelector may use."""

    group: str
    version: str
    plural: str
    kind: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = STANDARD_VERBS
    subresources: tuple[Subresource, ...] = ()
    categories: tuple[str, ...] = ()
    field_labels: tuple[str, ...] = ()
    bundle_file: str | None = None
    has_status: bool = False
    has_generation: bool = False
    # etcd key segment, only used to reproduce the real StorageError message text.
    storage_prefix: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def key(self) -> str:
        """Store key: group and plural (the version does not matter for storage)."""
        return f"{self.group}/{self.plural}"

    @property
    def group_resource(self) -> str:
        """`pods` or `daemonsets.apps`, as the real server names resources in messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def storage_key(self, namespace: str, name: str) -> str:
        prefix = self.storage_prefix or self.plural
        if self.namespaced:
            return f"/registry/{prefix}/{namespace}/{name}"
        return f"/registry/{prefix}/{name}"

    def has_subresource(self, name: str) -> bool:
        return any(s.name == name for s in self.subresources)

    def supported_field_labels(self) -> tuple[str, ...]:
        base = ("metadata.name", "metadata.namespace") if self.namespaced else ("metadata.name",)
        return base + self.field_labels


_STATUS_VERBS = ("get", "patch", "update")
_SCALE = Subresource("scale", "Scale", _STATUS_VERBS, group="autoscaling", version="v1")


def _status(kind: str) -> Subresource:
    return Subresource("status", kind, _STATUS_VERBS)


RESOURCES: tuple[ResourceType, ...] = (
    ResourceType(
        "",
        "v1",
        "pods",
        "Pod",
        "pod",
        True,
        ("po",),
        subresources=(
            Subresource("binding", "Binding", ("create",)),
            Subresource("eviction", "Eviction", ("create",), group="policy", version="v1"),
            Subresource("exec", "PodExecOptions", ("create", "get")),
            Subresource("log", "Pod", ("get",)),
            _status("Pod"),
        ),
        categories=("all",),
        field_labels=(
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ),
        bundle_file="pods.json",
        has_status=True,
    ),
    ResourceType(
        "",
        "v1",
        "services",
        "Service",
        "service",
        True,
        ("svc",),
        verbs=("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"),
        subresources=(_status("Service"),),
        categories=("all",),
        bundle_file="services.json",
        has_status=True,
        storage_prefix="services/specs",
    ),
    ResourceType(
        "",
        "v1",
        "endpoints",
        "Endpoints",
        "endpoints",
        True,
        ("ep",),
        bundle_file="endpoints.json",
        storage_prefix="services/endpoints",
    ),
    ResourceType(
        "",
        "v1",
        "nodes",
        "Node",
        "node",
        False,
        ("no",),
        subresources=(_status("Node"),),
        field_labels=("spec.unschedulable",),
        bundle_file="nodes.json",
        has_status=True,
        storage_prefix="minions",
    ),
    ResourceType(
        "",
        "v1",
        "namespaces",
        "Namespace",
        "namespace",
        False,
        ("ns",),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        subresources=(_status("Namespace"),),
        field_labels=("status.phase",),
        bundle_file="namespaces.json",
        has_status=True,
    ),
    ResourceType(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        "configmap",
        True,
        ("cm",),
        bundle_file="configmaps.json",
    ),
    ResourceType(
        "",
        "v1",
        "secrets",
        "Secret",
        "secret",
        True,
        field_labels=("type",),
        bundle_file="secrets.json",
    ),
    ResourceType(
        "",
        "v1",
        "events",
        "Event",
        "event",
        True,
        ("ev",),
        field_labels=(
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ),
        bundle_file="events.json",
    ),
    ResourceType("", "v1", "serviceaccounts", "ServiceAccount", "serviceaccount", True, ("sa",)),
    ResourceType(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        "daemonset",
        True,
        ("ds",),
        subresources=(_status("DaemonSet"),),
        categories=("all",),
        bundle_file="daemonsets.json",
        has_status=True,
        has_generation=True,
    ),
    ResourceType(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        "deployment",
        True,
        ("deploy",),
        subresources=(_SCALE, _status("Deployment")),
        categories=("all",),
        bundle_file="deployments.json",
        has_status=True,
        has_generation=True,
    ),
    ResourceType(
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        "replicaset",
        True,
        ("rs",),
        subresources=(_SCALE, _status("ReplicaSet")),
        categories=("all",),
        field_labels=("status.replicas",),
        bundle_file="replicasets.json",
        has_status=True,
        has_generation=True,
    ),
    ResourceType(
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        "statefulset",
        True,
        ("sts",),
        subresources=(_SCALE, _status("StatefulSet")),
        categories=("all",),
        bundle_file="statefulsets.json",
        has_status=True,
        has_generation=True,
    ),
    ResourceType(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        "endpointslice",
        True,
        bundle_file="endpointslices.json",
    ),
)

# Served for `kubectl apply` of kdoctor's own manifests (kdoctor manifest --cronjob): stored,
# listed and deleted like the others, no controller behind them.
RESOURCES += (
    ResourceType("batch", "v1", "cronjobs", "CronJob", "cronjob", True, ("cj",)),
    ResourceType("batch", "v1", "jobs", "Job", "job", True),
    ResourceType(
        "rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", "clusterrole", False
    ),
    ResourceType(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        "clusterrolebinding",
        False,
    ),
)

GROUP_VERSIONS: tuple[tuple[str, str], ...] = (
    ("apps", "v1"),
    ("discovery.k8s.io", "v1"),
    ("batch", "v1"),
    ("rbac.authorization.k8s.io", "v1"),
)

_BY_GVR: dict[tuple[str, str, str], ResourceType] = {
    (r.group, r.version, r.plural): r for r in RESOURCES
}
_BY_KEY: dict[str, ResourceType] = {r.key: r for r in RESOURCES}


def find(group: str, version: str, plural: str) -> ResourceType | None:
    """The resource served at /api(s)/GROUP/VERSION/PLURAL, or None."""
    return _BY_GVR.get((group, version, plural))


def by_key(key: str) -> ResourceType:
    return _BY_KEY[key]


def lookup(api_version: str, resource: str) -> ResourceType:
    """Resolve ("apps/v1", "daemonsets") or ("v1", "Pod") style names for the test helpers."""
    group, _, version = api_version.rpartition("/")
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        if resource in (r.plural, r.kind, r.singular) or resource in r.short_names:
            return r
    raise KeyError(f"unknown resource {resource!r} in {api_version!r}")


def for_kind(api_version: str, kind: str) -> ResourceType | None:
    """The resource that stores objects of KIND (for ownerReferences)."""
    group = api_version.rpartition("/")[0] if "/" in api_version else ""
    for r in RESOURCES:
        if r.kind == kind and r.group == group:
            return r
    return None


def api_resource_list(group: str, version: str) -> dict[str, Any]:
    """The APIResourceList served at /api/v1 or /apis/GROUP/VERSION."""
    entries: list[dict[str, Any]] = []
    for r in RESOURCES:
        if r.group != group or r.version != version:
            continue
        entry: dict[str, Any] = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        entries.append(entry)
        for sub in r.subresources:
            sub_entry: dict[str, Any] = {
                "name": f"{r.plural}/{sub.name}",
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": sub.kind,
                "verbs": list(sub.verbs),
            }
            if sub.group is not None:
                sub_entry["group"] = sub.group
                sub_entry["version"] = sub.version
            entries.append(sub_entry)
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": entries}


def api_group_list() -> dict[str, Any]:
    """The APIGroupList served at /apis."""
    groups = []
    for group, version in GROUP_VERSIONS:
        gv = {"groupVersion": f"{group}/{version}", "version": version}
        groups.append({"name": group, "versions": [gv], "preferredVersion": gv})
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(group: str) -> dict[str, Any] | None:
    """The APIGroup served at /apis/GROUP."""
    for g, version in GROUP_VERSIONS:
        if g == group:
            gv = {"groupVersion": f"{group}/{version}", "version": version}
            return {
                "kind": "APIGroup",
                "apiVersion": "v1",
                "name": group,
                "versions": [gv],
                "preferredVersion": gv,
            }
    return None
