"""``kdoctor collect``, cluster part: the API objects and DNS logs of bundle-v1.md's ``cluster/``.

Every list is read page by page (``limit``/``continue``) and streamed to its file as a
``kind: List`` document, the shape ``kubectl get … -o json`` prints, so a cluster of any size
never sits in memory whole. Secrets are redacted before a byte reaches the disk
(:func:`doctor.parse.registry_auth.redact_secret`), and so are the bootstrap tokens old kubeadm
versions left in the ConfigMap ``kubeadm-config``. A resource that cannot be read (forbidden, not
served by this server version, …) is left out and named in the manifest's ``missing``; the
rest is still collected. Without a cluster configuration the node bundle stands alone.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from doctor.facts.cluster import find_cluster_config
from doctor.facts.kube import (
    CONFIGMAPS,
    DAEMONSETS,
    DEPLOYMENTS,
    ENDPOINTS,
    ENDPOINTSLICES,
    EVENTS,
    NODES,
    PAGE_SIZE,
    PODS,
    REPLICASETS,
    SECRETS,
    SERVICES,
    ApiError,
    LiveCluster,
    Resource,
)
from doctor.parse.registry_auth import redact_secret

#: (resource, namespace) in the order they are written; None = all namespaces.
CLUSTER_LISTS: list[tuple[Resource, str | None]] = [
    (NODES, None),
    (PODS, None),
    (SERVICES, None),
    (ENDPOINTS, None),
    (ENDPOINTSLICES, None),
    (DAEMONSETS, None),
    (DEPLOYMENTS, None),
    (REPLICASETS, None),
    (CONFIGMAPS, "kube-system"),
    (SECRETS, None),
    (EVENTS, None),
]
DNS_NAMESPACE = "kube-system"
DNS_LABEL = ("k8s-app", "kube-dns")  # kube-dns (every kubeadm version) and CoreDNS alike
DNS_NAME = re.compile(r"^(kube-dns|coredns)-")
LOG_TAIL_LINES = 1000
LOG_LIMIT_BYTES = 4 * 1024 * 1024
ITEM_INDENT = " " * 8
#: kubeadm 1.6–1.10 uploaded its MasterConfiguration, bootstrap ``token:`` included, to the
#: ConfigMap kube-system/kubeadm-config: a secret in a ConfigMap.
TOKEN_LINE = re.compile(r"(?m)^(\s*(?:-\s+)?token:[ \t]*)(?![ \t]*$)(\S.*)$")


def redact_configmap(configmap: dict[str, Any]) -> dict[str, Any]:
    """kubeadm-config without its bootstrap tokens; every other ConfigMap as it is."""
    meta = configmap.get("metadata") or {}
    data = configmap.get("data")
    if meta.get("name") != "kubeadm-config" or not isinstance(data, dict):
        return configmap
    clean = {
        k: TOKEN_LINE.sub(r"\1REDACTED", v) if isinstance(v, str) else v for k, v in data.items()
    }
    return {**configmap, "data": clean}


@dataclass(frozen=True)
class _DnsPod:
    name: str
    containers: tuple[tuple[str, int], ...]  # (name, restartCount)


class _Restart(Exception):
    """The list changed under a paginated read (410 Gone): read it again from the start."""


def collect_cluster(out: Path, args: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write ``out/cluster/`` from the cluster the kubeconfig names; update the manifest."""
    missing: list[str] = manifest.setdefault("missing", [])
    config, where = find_cluster_config(
        getattr(args, "kubeconfig", None),
        getattr(args, "context", None),
        root=getattr(args, "root", None) or Path("/"),
    )
    if config is None:
        missing.append(f"cluster/: no cluster configuration found (looked at: {where})")
        write_manifest(out, manifest)
        return manifest
    timeout = min(float(getattr(args, "timeout", 60.0) or 60.0), 15.0)
    cluster = LiveCluster(config, timeout=timeout)
    target = cluster.target
    if target is not None:
        manifest["cluster"] = {"context": target.context, "server": target.server}
    ClusterCollector(cluster, out / "cluster", missing).run()
    write_manifest(out, manifest)
    return manifest


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out / "kdoctor-bundle.json"
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, path)


class ClusterCollector:
    """Reads the API and writes the files; every failure becomes one ``missing`` line."""

    def __init__(self, cluster: LiveCluster, directory: Path, missing: list[str]) -> None:
        self.cluster = cluster
        self.dir = directory
        self.missing = missing
        self.dns_pods: list[_DnsPod] = []

    def run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if not self._version():
            return
        for resource, namespace in CLUSTER_LISTS:
            self._list_to_file(resource, namespace)
        self._dns_logs()

    # -- version ----------------------------------------------------------------------
    def _version(self) -> bool:
        """Write version.json; False when the server cannot be talked to at all."""
        try:
            _status, data = self.cluster.request(
                "GET", "/version", verb="get", what="the server version"
            )
            info = json.loads(data)
            if not isinstance(info, dict):
                raise ValueError("not an object")
        except ApiError as exc:
            if exc.status in (0, 401):  # no answer, or credentials refused: nothing will work
                self.missing.append(f"cluster/: not collected: {exc}")
                return False
            self.missing.append(f"cluster/version.json: {exc}")
            return True
        except ValueError as exc:
            self.missing.append(f"cluster/version.json: invalid answer from /version: {exc}")
            return True
        # `kubectl version -o json` shape; kdoctor is not kubectl, so no clientVersion.
        self._write_json("version.json", {"serverVersion": info})
        return True

    # -- lists ------------------------------------------------------------------------
    def _list_to_file(self, resource: Resource, namespace: str | None) -> None:
        name = resource.bundle_file
        path = self.dir / name
        candidates = resource.candidates()
        not_served: list[str] = []
        for candidate in candidates:
            try:
                self._write_file(path, candidate, namespace)
                return
            except ApiError as exc:
                if exc.status != 404:
                    self.missing.append(f"cluster/{name}: {exc}")
                    return
                not_served.append(f"{candidate.group or 'core'}/{candidate.version}")
            except (_Restart, OSError) as exc:
                reason = (
                    "the list kept changing while it was read (410 Gone twice)"
                    if isinstance(exc, _Restart)
                    else f"cannot write {path}: {exc.strerror or exc}"
                )
                self.missing.append(f"cluster/{name}: {reason}")
                return
        self.missing.append(
            f"cluster/{name}: not served by this API server (404 for {', '.join(not_served)})"
        )

    def _write_file(self, path: Path, resource: Resource, namespace: str | None) -> None:
        """Stream one list to PATH (via a temporary file); one restart on 410 Gone."""
        tmp = path.with_name(path.name + ".part")
        try:
            for attempt in range(2):
                try:
                    with tmp.open("w", encoding="utf-8") as handle:
                        self._write_list(handle, resource, namespace)
                except _Restart:
                    if attempt == 1:
                        raise
                    continue
                os.replace(tmp, path)
                return
        finally:
            tmp.unlink(missing_ok=True)

    def _write_list(self, handle: IO[str], resource: Resource, namespace: str | None) -> None:
        if resource.plural == "pods":
            self.dns_pods = []  # a restarted read sees every pod again
        handle.write('{\n    "apiVersion": "v1",\n    "items": [')
        first = True
        for item in self._items(resource, namespace):
            if resource.plural == "secrets":
                item = redact_secret(item)
            elif resource.plural == "configmaps":
                item = redact_configmap(item)
            elif resource.plural == "pods":
                self._note_dns_pod(item)
            text = json.dumps(item, indent=4, ensure_ascii=False, sort_keys=True)
            handle.write("\n" if first else ",\n")
            handle.write(ITEM_INDENT + text.replace("\n", "\n" + ITEM_INDENT))
            first = False
        handle.write('\n    ],\n    "kind": "List",\n    "metadata": {\n')
        handle.write('        "resourceVersion": ""\n    }\n}\n')

    def _items(self, resource: Resource, namespace: str | None) -> Iterator[dict[str, Any]]:
        """Every object, page by page, with ``kind`` and ``apiVersion`` filled in."""
        api_version = f"{resource.group}/{resource.version}" if resource.group else resource.version
        where = f" in namespace {namespace}" if namespace else " in all namespaces"
        what = resource.plural + (where if resource.namespaced else "")
        token = ""
        while True:
            query = [("limit", str(PAGE_SIZE))]
            if token:
                query.append(("continue", token))
            try:
                _status, data = self.cluster.request(
                    "GET", resource.path(namespace), query=query, verb="list", what=what
                )
            except ApiError as exc:
                if exc.status == 410 and token:
                    raise _Restart from exc
                raise
            try:
                doc = json.loads(data)
            except ValueError as exc:
                raise ApiError(f"invalid JSON listing {what}: {exc}") from exc
            if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
                raise ApiError(f"unexpected answer listing {what}: not a List")
            for item in doc["items"]:
                if isinstance(item, dict):
                    item.setdefault("apiVersion", api_version)
                    item.setdefault("kind", resource.kind)
                    yield item
            token = (doc.get("metadata") or {}).get("continue") or ""
            if not token:
                return

    def _note_dns_pod(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name") or "")
        labels = meta.get("labels") or {}
        if meta.get("namespace") != DNS_NAMESPACE:
            return
        if labels.get(DNS_LABEL[0]) != DNS_LABEL[1] and not DNS_NAME.match(name):
            return
        restarts = {
            str(cs.get("name")): int(cs.get("restartCount") or 0)
            for cs in (pod.get("status") or {}).get("containerStatuses") or []
            if isinstance(cs, dict)
        }
        containers = tuple(
            (str(c.get("name")), restarts.get(str(c.get("name")), 0))
            for c in (pod.get("spec") or {}).get("containers") or []
            if isinstance(c, dict) and c.get("name")
        )
        self.dns_pods.append(_DnsPod(name, containers))

    # -- logs -------------------------------------------------------------------------
    def _dns_logs(self) -> None:
        for pod in self.dns_pods:
            for container, restarts in pod.containers:
                self._log(pod.name, container, previous=False)
                if restarts > 0:  # the crashed run's log says why it crashed
                    self._log(pod.name, container, previous=True)

    def _log(self, pod: str, container: str, previous: bool) -> None:
        suffix = ".previous.log" if previous else ".log"
        relative = f"logs/{DNS_NAMESPACE}/{pod}/{container}{suffix}"
        query = [
            ("container", container),
            ("tailLines", str(LOG_TAIL_LINES)),
            ("limitBytes", str(LOG_LIMIT_BYTES)),
        ]
        if previous:
            query.append(("previous", "true"))
        try:
            _status, data = self.cluster.request(
                "GET", PODS.path(DNS_NAMESPACE, pod) + "/log", query=query, verb="get",
                what=f"pods/log of {DNS_NAMESPACE}/{pod} ({container})",
            )  # fmt: skip
        except ApiError as exc:
            self.missing.append(f"cluster/{relative}: {exc}")
            return
        path = self.dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    # -- files ------------------------------------------------------------------------
    def _write_json(self, name: str, doc: Any) -> None:
        path = self.dir / name
        tmp = path.with_name(name + ".part")
        tmp.write_text(json.dumps(doc, indent=4) + "\n", encoding="utf-8")
        os.replace(tmp, path)
