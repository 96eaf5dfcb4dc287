"""REST semantics on top of the store: preconditions, status rules, cascading deletes and the
little controller behaviour (a deleted controller-owned pod comes back) clients rely on.

Everything here raises `ApiError` with the real server's wording, so the HTTP layer only
routes and encodes.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import builtins
import contextlib
import copy
import json
import random
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import errors, resources
from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .resources import ResourceType
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import Obj, Store, meta, now_rfc3339, sort_key

PODS = resources.lookup("v1", "pods")
NAMESPACES = resources.lookup("v1", "namespaces")
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_CONTROLLER_KINDS = {"ReplicaSet", "DaemonSet", "StatefulSet", "Job", "ReplicationController"}
_DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public")
_SYSTEM_META = ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds")

PATCH_TYPES = {
    "application/json-patch+json": "json",
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/apply-patch+yaml": "apply",
}


class BundleError(ValueError):
    """A bundle file that exists but cannot be served (unparseable, not a List)."""


def random_suffix(n: int = 5) -> str:
    """The 5-character suffix generateName uses (apimachinery's utilrand alphabet)."""
    return "".join(random.choice(_SUFFIX_ALPHABET) for _ in range(n))


def strip_type(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A list item as typed lists encode it: without kind and apiVersion."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def encode_continue(rv: int, start: str) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": start}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    """Parse a continue token, with the real server's error texts for a malformed one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError) as exc:
        raise errors.bad_request(f"continue key is not valid: illegal base64 data: {exc}") from exc
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise errors.bad_request(f"continue key is not valid: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") != "meta.k8s.io/v1":
        raise errors.bad_request(
            "continue key is not valid: server does not recognize this encoded version"
        )
    rv = data.get("rv")
    if not isinstance(rv, int) or rv == 0:
        raise errors.bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion "
            "(version meta.k8s.io/v1)"
        )
    start = data.get("start")
    if not isinstance(start, str) or not start:
        raise errors.bad_request(
            "continue key is not valid: encoded start key empty (version meta.k8s.io/v1)"
        )
    return rv, start


def _parse_body(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except ValueError as exc:
        raise errors.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc


def _labels(obj: Obj) -> Mapping[str, Any]:
    labels = meta(obj).get("labels")
    return labels if isinstance(labels, dict) else {}


@dataclass
class ListResult:
    """One page of a list, before encoding (items are store references)."""

    rt: ResourceType
    resource_version: int
    items: list[Obj]
    continue_token: str | None = None
    remaining: int | None = None

    def _head(self) -> Obj:
        list_meta: dict[str, Any] = {"resourceVersion": str(self.resource_version)}
        if self.continue_token:
            list_meta["continue"] = self.continue_token
            if self.remaining is not None:
                list_meta["remainingItemCount"] = self.remaining
        return {"kind": self.rt.list_kind, "apiVersion": self.rt.api_version, "metadata": list_meta}

    def body(self) -> Obj:
        return dict(self._head(), items=[strip_type(o) for o in self.items])

    def encoded(self, store: Store) -> bytes:
        """The bytes of ``encode(self.body())``, joined from the store's per-object encodings."""
        head = json.dumps(dict(self._head(), items=[]), separators=(",", ":"), ensure_ascii=False)
        items = b",".join(store.encoded_item(o) for o in self.items)
        return head[:-2].encode() + items + b"]}\n"


@dataclass
class BundleInfo:
    """What the loader found besides objects: the version and where pod logs live."""

    version: dict[str, str]
    log_dirs: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


_VERSION_DEFAULTS = {
    "major": "1",
    "minor": "29",
    "gitVersion": "v1.29.0",
    "gitCommit": "3f7a50f38688eb332e2a1b013678c6435d539ae6",
    "gitTreeState": "clean",
    "buildDate": "2023-12-13T08:43:35Z",
    "goVersion": "go1.21.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def server_version(raw: Mapping[str, Any] | None) -> dict[str, str]:
    """A complete version.Info: the bundle's serverVersion with every missing field filled."""
    info = {k: str(v) for k, v in (raw or {}).items() if v is not None}
    git = info.get("gitVersion")
    if git:
        parts = git.lstrip("v").split(".")
        if "major" not in info and parts:
            info["major"] = parts[0]
        if "minor" not in info and len(parts) > 1:
            info["minor"] = "".join(ch for ch in parts[1] if ch.isdigit())
    for key, value in _VERSION_DEFAULTS.items():
        info.setdefault(key, value)
    if not git:
        info["gitVersion"] = f"v{info['major']}.{info['minor'].rstrip('+')}.0"
    return info


def load_bundle(store: Store, bundle_dir: Path, *, strict: bool = True) -> BundleInfo:
    """Fill STORE from a kdoctor bundle (or its cluster/ directory)."""
    cluster = bundle_dir / "cluster" if (bundle_dir / "cluster").is_dir() else bundle_dir
    created = now_rfc3339()
    header = bundle_dir / "kdoctor-bundle.json"
    if header.is_file():
        with contextlib.suppress(ValueError):
            created = str(json.loads(header.read_text()).get("collected_at") or created)
    info = BundleInfo(version=server_version(None))
    version_file = cluster / "version.json"
    if version_file.is_file():
        try:
            doc = json.loads(version_file.read_text())
            info.version = server_version(
                doc.get("serverVersion") if isinstance(doc, dict) else None
            )
        except ValueError as exc:
            if strict:
                raise BundleError(f"{version_file}: {exc}") from exc
            info.skipped.append(f"{version_file}: {exc}")
    for rt in resources.RESOURCES:
        if rt.bundle_file is None:
            continue
        path = cluster / rt.bundle_file
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
            items = doc.get("items") if isinstance(doc, dict) else None
            if not isinstance(items, list):
                raise BundleError("not a List document (no items array)")
        except (ValueError, BundleError) as exc:
            if strict:
                raise BundleError(f"{path}: {exc}") from exc
            info.skipped.append(f"{path}: {exc}")
            continue
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("metadata"), dict):
                continue
            target = rt
            if isinstance(item.get("kind"), str) and item["kind"] != rt.kind:
                other = resources.for_kind(str(item.get("apiVersion", "")), item["kind"])
                if other is None:
                    continue
                target = other
            obj = copy.deepcopy(item)
            if target.namespaced:
                meta(obj).setdefault("namespace", "default")
            store.load(target, obj, created)
    if not store.rlist(NAMESPACES):
        names = set(_DEFAULT_NAMESPACES)
        for rt in resources.RESOURCES:
            if rt.namespaced:
                names.update(meta(o).get("namespace", "") for o in store.rlist(rt))
        for name in sorted(n for n in names if n):
            store.load(NAMESPACES, new_namespace(name), created)
    for candidate in (cluster / "logs", bundle_dir / "logs"):
        if candidate.is_dir() and candidate not in info.log_dirs:
            info.log_dirs.append(candidate)
    return info


def new_namespace(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _controller_ref(obj: Obj) -> dict[str, Any] | None:
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


class Registry:
    """The API semantics over a Store."""

    def __init__(
        self,
        store: Store,
        *,
        log_dirs: list[Path] | None = None,
        pod_start_delay: float = 0.0,
    ) -> None:
        self.store = store
        self.log_dirs = log_dirs or []
        self.pod_start_delay = pod_start_delay
        self._timers: list[threading.Timer] = []
        self._timers_lock = threading.Lock()
        self._stopped = False

    def stop(self) -> None:
        """Cancel pending simulated pod starts (their threads must not outlive the server)."""
        with self._timers_lock:
            self._stopped = True
            timers, self._timers = self._timers, []
        for t in timers:
            t.cancel()
            t.join()

    # ------------------------------------------------------------------ reads

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.rget(rt, namespace, name)
        if obj is None:
            raise errors.not_found(rt, name)
        return obj

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
        resource_version: str | None = None,
    ) -> ListResult:
        """One page of a list, with the real server's pagination contract."""
        try:
            label_match = parse_label_selector(label_selector)
            field_match = parse_field_selector(rt, field_selector)
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from exc
        start = ""
        if resource_version == "0" and not continue_token:
            # Served from the watch cache, which (before 1.34's cache snapshots) ignores limit:
            # the whole list comes back in one answer.
            limit = 0
        if continue_token:
            if resource_version not in (None, "", "0"):
                raise errors.bad_request(
                    "specifying resource version is not allowed when using continue"
                )
            rv, start = decode_continue(continue_token)
            snap = self.store.snapshot_at(rt, namespace, rv)
            if snap is None:
                current = self.store.resource_version
                raise errors.expired(
                    errors.EXPIRED_CONTINUE, continue_token=encode_continue(current, start)
                )
            items = snap
        else:
            rv, items = self.store.snapshot(rt, namespace) if limit else self._read(rt, namespace)
        filtered = bool(label_selector or field_selector)
        out: list[Obj] = []
        remaining = 0
        last_key = ""

        def key_of(obj: Obj) -> str:
            m = meta(obj)
            return sort_key(rt, m.get("namespace", ""), m.get("name", ""))

        # Items are in key order: a continued page starts by bisection, not by a scan.
        first = bisect.bisect_left(items, start, key=key_of) if start else 0
        for index in range(first, len(items)):
            obj = items[index]
            if filtered and not (label_match(_labels(obj)) and field_match(obj)):
                continue
            if limit and len(out) >= limit:
                # Unfiltered, every later item counts; filtered, the count is not known.
                remaining = 1 if filtered else len(items) - index
                break
            out.append(obj)
        if out:
            last_key = key_of(out[-1])
        result = ListResult(rt, rv, out)
        if remaining:
            result.continue_token = encode_continue(rv, last_key + "\x00")
            result.remaining = None if filtered else remaining
        return result

    def _read(self, rt: ResourceType, namespace: str | None) -> tuple[int, builtins.list[Obj]]:
        with self.store.lock:
            return self.store.resource_version, self.store.rlist(rt, namespace)

    def namespace_exists(self, name: str) -> bool:
        return self.store.rget(NAMESPACES, "", name) is not None

    # ------------------------------------------------------------------ writes

    def create(self, rt: ResourceType, namespace: str, body: bytes, *, dry_run: bool) -> Obj:
        obj = _parse_body(body)
        if not isinstance(obj, dict):
            raise errors.bad_request("the request body must be a JSON object")
        m = meta(obj)
        if rt.namespaced:
            if m.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            m["namespace"] = namespace
        else:
            m.pop("namespace", None)
        with self.store.lock:
            if not m.get("name"):
                if m.get("generateName"):
                    m["name"] = str(m["generateName"]) + random_suffix()
                else:
                    raise errors.invalid_field(
                        rt, "", "metadata.name", "Required value: name or generateName is required"
                    )
            name = str(m["name"])
            if rt.namespaced and not self.namespace_exists(namespace):
                raise errors.namespace_not_found(namespace)
            if self.store.rget(rt, namespace, name) is not None:
                raise errors.already_exists(rt, name)
            for key in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                m.pop(key, None)
            m["uid"] = str(uuid.uuid4())
            m["creationTimestamp"] = now_rfc3339()
            if rt.has_generation:
                m["generation"] = 1
            if rt is NAMESPACES:
                obj.setdefault("spec", {"finalizers": ["kubernetes"]})
                obj["status"] = {"phase": "Active"}
                m.setdefault("labels", {})["kubernetes.io/metadata.name"] = name
            obj["kind"] = rt.kind
            obj["apiVersion"] = rt.api_version
            if dry_run:
                return obj
            return self.store.rwrite(rt, obj)

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        body: bytes,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> Obj:
        new = _parse_body(body)
        if not isinstance(new, dict):
            raise errors.bad_request("the request body must be a JSON object")
        with self.store.lock:
            current = self.get(rt, namespace, name)
            self._check_identity(rt, namespace, name, new)
            m = meta(new)
            uid = m.get("uid")
            if uid and uid != meta(current).get("uid"):
                raise errors.precondition_failed(
                    rt,
                    namespace,
                    name,
                    f"UID in precondition: {uid}, UID in object meta: {meta(current).get('uid')}",
                )
            self._check_resource_version(rt, name, current, m.get("resourceVersion"))
            return self._commit(rt, current, new, subresource=subresource, dry_run=dry_run)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body: bytes,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> tuple[Obj, int]:
        """Apply a patch; returns the object and the HTTP code (201 when apply created it)."""
        kind = PATCH_TYPES.get(content_type)
        if kind is None:
            raise errors.unsupported_media_type(content_type)
        patch_doc = _parse_body(body)
        if kind == "json" and not isinstance(patch_doc, list):
            raise errors.bad_request(
                "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
            )
        if kind != "json" and not isinstance(patch_doc, dict):
            raise errors.bad_request("the patch body must be a JSON object")
        with self.store.lock:
            current = self.store.rget(rt, namespace, name)
            if current is None:
                if kind == "apply" and not subresource:
                    return self.create(rt, namespace, body, dry_run=dry_run), 201
                raise errors.not_found(rt, name)
            try:
                if kind == "json":
                    new = json_patch(current, patch_doc)
                elif kind == "merge":
                    new = merge_patch(current, patch_doc)
                else:
                    new = strategic_merge_patch(current, patch_doc)
            except PatchError as exc:
                if exc.code == 422:
                    raise errors.invalid() from exc
                raise errors.bad_request(exc.message) from exc
            if not isinstance(new, dict):
                raise errors.invalid()
            self._check_identity(rt, namespace, name, new)
            self._check_resource_version(rt, name, current, meta(new).get("resourceVersion"))
            return self._commit(rt, current, new, subresource=subresource, dry_run=dry_run), 200

    def _check_identity(self, rt: ResourceType, namespace: str, name: str, new: Obj) -> None:
        m = meta(new)
        if m.get("name") not in (None, name):
            raise errors.bad_request(
                f"the name of the object ({m.get('name')}) does not match the name on the URL "
                f"({name})"
            )
        m["name"] = name
        if rt.namespaced:
            if m.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request"
                )
            m["namespace"] = namespace

    def _check_resource_version(
        self, rt: ResourceType, name: str, current: Obj, wanted: Any
    ) -> None:
        if wanted in (None, ""):
            return
        if str(wanted) != str(meta(current).get("resourceVersion")):
            raise errors.conflict(rt, name, errors.MODIFIED)

    def _commit(
        self, rt: ResourceType, current: Obj, new: Obj, *, subresource: str, dry_run: bool
    ) -> Obj:
        """Store an update with the registry strategy rules; a no-op leaves the revision."""
        cur_meta = meta(current)
        if subresource == "status":
            status = new.get("status")
            new = copy.deepcopy(current)
            if status is None:
                new.pop("status", None)
            else:
                new["status"] = status
        elif rt.has_status:
            if "status" in current:
                new["status"] = copy.deepcopy(current["status"])
            else:
                new.pop("status", None)
        m = meta(new)
        for key in _SYSTEM_META:
            if key in cur_meta:
                m[key] = cur_meta[key]
            else:
                m.pop(key, None)
        if rt.has_generation:
            generation = int(cur_meta.get("generation") or 1)
            if subresource != "status" and new.get("spec") != current.get("spec"):
                generation += 1
                # The workload controller notices the new generation at once.
                new.setdefault("status", {})["observedGeneration"] = generation
            m["generation"] = generation
        m["resourceVersion"] = cur_meta.get("resourceVersion")
        new["kind"] = rt.kind
        new["apiVersion"] = rt.api_version
        if new == current or dry_run:
            return new if dry_run else current
        stored = self.store.rwrite(rt, new)
        self._roll_out(rt, current, stored)
        return stored

    def _roll_out(self, rt: ResourceType, old: Obj, new: Obj) -> None:
        """A changed DaemonSet/StatefulSet template with the RollingUpdate strategy replaces
        the pods at once, as their controllers would (OnDelete waits for a pod delete)."""
        if rt.kind not in ("DaemonSet", "StatefulSet"):
            return
        spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
        if spec.get("template") == old_spec.get("template"):
            return
        if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
            return
        uid = meta(new).get("uid")
        for pod in list(self.store.rlist(PODS, meta(new).get("namespace"))):
            ref = _controller_ref(pod)
            if ref is not None and ref.get("uid") == uid:
                self.store.rdelete(PODS, meta(pod).get("namespace", ""), meta(pod)["name"])
                self._replace_pod(pod)

    # ------------------------------------------------------------------ deletes

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        options: Mapping[str, Any],
        *,
        dry_run: bool = False,
    ) -> Obj:
        """Delete one object; the response body is the object or a Success Status."""
        with self.store.lock:
            current = self.get(rt, namespace, name)
            self._check_preconditions(rt, namespace, name, current, options)
            grace = options.get("gracePeriodSeconds")
            if rt is PODS and grace is None:
                grace = (current.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            terminating = self._deleted_response(rt, current, grace)
            if dry_run:
                return terminating
            if rt is PODS:
                # Watchers see the pod go Terminating before it disappears, as with a kubelet.
                terminating = self.store.rwrite(PODS, terminating)
            self._remove(rt, namespace, name, options)
            if rt is PODS:
                self._replace_pod(current)
            return terminating

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        options: Mapping[str, Any],
        *,
        label_selector: str | None,
        field_selector: str | None,
        dry_run: bool = False,
    ) -> Obj:
        with self.store.lock:
            page = self.list(
                rt, namespace, label_selector=label_selector, field_selector=field_selector
            )
            deleted = []
            for obj in page.items:
                m = meta(obj)
                deleted.append(
                    self.delete(rt, m.get("namespace", ""), m["name"], options, dry_run=dry_run)
                )
            return {
                "kind": rt.list_kind,
                "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.store.resource_version)},
                "items": [strip_type(o) for o in deleted if o.get("kind") == rt.kind],
            }

    def _check_preconditions(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        current: Obj,
        options: Mapping[str, Any],
    ) -> None:
        pre = options.get("preconditions") or {}
        if not isinstance(pre, dict):
            return
        cur = meta(current)
        if pre.get("uid") and pre["uid"] != cur.get("uid"):
            raise errors.precondition_failed(
                rt,
                namespace,
                name,
                f"UID in precondition: {pre['uid']}, UID in object meta: {cur.get('uid')}",
            )
        if pre.get("resourceVersion") and str(pre["resourceVersion"]) != cur.get("resourceVersion"):
            raise errors.precondition_failed(
                rt,
                namespace,
                name,
                f"ResourceVersion in precondition: {pre['resourceVersion']}, ResourceVersion in "
                f"object meta: {cur.get('resourceVersion')}",
            )

    def _remove(
        self, rt: ResourceType, namespace: str, name: str, options: Mapping[str, Any]
    ) -> Obj:
        current = self.get(rt, namespace, name)
        uid = meta(current).get("uid")
        gone = self.store.rdelete(rt, namespace, name)
        assert gone is not None
        if rt is NAMESPACES:
            for other in resources.RESOURCES:
                if other.namespaced:
                    for obj in self.store.rlist(other, name):
                        self.store.rdelete(other, name, meta(obj)["name"])
        if (
            options.get("propagationPolicy") != "Orphan"
            and options.get("orphanDependents") is not True
        ):
            self._collect_garbage(uid)
        return gone

    def _collect_garbage(self, owner_uid: Any) -> None:
        """Delete the dependents of a deleted owner, as the garbage collector does."""
        if not owner_uid:
            return
        for rt in resources.RESOURCES:
            for obj in list(self.store.rlist(rt)):
                refs = meta(obj).get("ownerReferences") or []
                if any(isinstance(r, dict) and r.get("uid") == owner_uid for r in refs):
                    m = meta(obj)
                    if self.store.rget(rt, m.get("namespace", ""), m["name"]) is not None:
                        self._remove(rt, m.get("namespace", ""), m["name"], {})

    def _deleted_response(self, rt: ResourceType, current: Obj, grace: Any) -> Obj:
        if rt is PODS:
            out = copy.deepcopy(current)
            m = meta(out)
            seconds = int(grace or 0)
            when = datetime.now(UTC) + timedelta(seconds=seconds)
            m["deletionTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%SZ")
            m["deletionGracePeriodSeconds"] = seconds
            return out
        if rt is NAMESPACES:
            out = copy.deepcopy(current)
            meta(out)["deletionTimestamp"] = now_rfc3339()
            out["status"] = {"phase": "Terminating"}
            return out
        if rt.plural == "services" and not rt.group:
            # The service registry returns the deleted object (ReturnDeletedObject), and the
            # generated clients decode a V1Service.
            return copy.deepcopy(current)
        details: dict[str, Any] = {"name": meta(current).get("name")}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        details["uid"] = meta(current).get("uid")
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    # ------------------------------------------------------------------ controllers

    def _replace_pod(self, old: Obj) -> Obj | None:
        """Recreate a deleted controller-owned pod the way its controller would."""
        ref = _controller_ref(old)
        if ref is None or ref.get("kind") not in _CONTROLLER_KINDS:
            return None
        namespace = meta(old).get("namespace", "")
        owner_kind = str(ref["kind"])
        owner_name = str(ref.get("name", ""))
        owner_rt = resources.for_kind(str(ref.get("apiVersion", "")), owner_kind)
        owner = self.store.rget(owner_rt, namespace, owner_name) if owner_rt else None
        template = (owner or {}).get("spec", {}).get("template") if owner else None
        pod: Obj = {"apiVersion": "v1", "kind": "Pod"}
        old_meta = meta(old)
        if isinstance(template, dict):
            tmeta = template.get("metadata") or {}
            labels = copy.deepcopy(tmeta.get("labels") or {})
            annotations = copy.deepcopy(tmeta.get("annotations") or {})
            spec = copy.deepcopy(template.get("spec") or {})
        else:
            labels = copy.deepcopy(old_meta.get("labels") or {})
            annotations = copy.deepcopy(old_meta.get("annotations") or {})
            spec = copy.deepcopy(old.get("spec") or {})
        old_spec = old.get("spec") or {}
        if old_spec.get("nodeName"):
            spec["nodeName"] = old_spec["nodeName"]
        for key in ("affinity", "tolerations", "serviceAccountName", "serviceAccount"):
            if key not in spec and key in old_spec:
                spec[key] = copy.deepcopy(old_spec[key])
        new_meta: dict[str, Any] = {"namespace": namespace, "labels": labels}
        if owner_kind == "StatefulSet":
            new_meta["name"] = old_meta["name"]
            labels["statefulset.kubernetes.io/pod-name"] = old_meta["name"]
        else:
            new_meta["generateName"] = f"{owner_name}-"
            name = f"{owner_name}-{random_suffix()}"
            while self.store.rget(PODS, namespace, name) is not None:
                name = f"{owner_name}-{random_suffix()}"
            new_meta["name"] = name
        if owner_kind == "DaemonSet":
            for key in ("controller-revision-hash", "pod-template-generation"):
                if key in (old_meta.get("labels") or {}):
                    labels.setdefault(key, old_meta["labels"][key])
            if owner is not None:
                labels["pod-template-generation"] = str(meta(owner).get("generation", 1))
        if annotations:
            new_meta["annotations"] = annotations
        new_meta["ownerReferences"] = copy.deepcopy(old_meta.get("ownerReferences"))
        new_meta["uid"] = str(uuid.uuid4())
        new_meta["creationTimestamp"] = now_rfc3339()
        pod["metadata"] = new_meta
        pod["spec"] = spec
        if self.pod_start_delay > 0:
            pod["status"] = self._pending_status(old, spec)
            stored = self.store.rwrite(PODS, pod)
            self._schedule_start(namespace, new_meta["name"], new_meta["uid"], old)
            return stored
        pod["status"] = self._running_status(old, spec)
        return self.store.rwrite(PODS, pod)

    def _pending_status(self, old: Obj, spec: Obj) -> Obj:
        old_status = old.get("status") or {}
        now = now_rfc3339()
        status: Obj = {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": now,
                }
            ],
            "hostIP": old_status.get("hostIP"),
            "qosClass": old_status.get("qosClass", "BestEffort"),
            "startTime": now,
            "containerStatuses": [
                {
                    "name": c.get("name"),
                    "image": c.get("image"),
                    "imageID": "",
                    "ready": False,
                    "started": False,
                    "restartCount": 0,
                    "state": {"waiting": {"reason": "ContainerCreating"}},
                    "lastState": {},
                }
                for c in spec.get("containers") or []
            ],
        }
        return {k: v for k, v in status.items() if v is not None}

    def _running_status(self, old: Obj, spec: Obj) -> Obj:
        old_status = old.get("status") or {}
        now = now_rfc3339()
        old_cs = {c.get("name"): c for c in old_status.get("containerStatuses") or []}
        runtime = "docker"
        for c in old_cs.values():
            cid = str(c.get("containerID") or "")
            if "://" in cid:
                runtime = cid.split("://", 1)[0]
                break

        def container_status(c: Mapping[str, Any]) -> Obj:
            prev = old_cs.get(c.get("name")) or {}
            same_image = prev.get("image") == c.get("image")
            return {
                "name": c.get("name"),
                "image": c.get("image"),
                "imageID": prev.get("imageID", "") if same_image else "",
                "containerID": f"{runtime}://{uuid.uuid4().hex}{uuid.uuid4().hex}",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
                "lastState": {},
            }

        status: Obj = {
            "phase": "Running",
            "conditions": [
                {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "hostIP": old_status.get("hostIP"),
            "podIP": old_status.get("podIP"),
            "podIPs": old_status.get("podIPs"),
            "startTime": now,
            "qosClass": old_status.get("qosClass", "BestEffort"),
            "containerStatuses": [container_status(c) for c in spec.get("containers") or []],
        }
        if spec.get("initContainers"):
            status["initContainerStatuses"] = [
                {
                    "name": c.get("name"),
                    "image": c.get("image"),
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                    "lastState": {},
                }
                for c in spec["initContainers"]
            ]
        return {k: v for k, v in status.items() if v is not None}

    def _schedule_start(self, namespace: str, name: str, uid: str, old: Obj) -> None:
        def start() -> None:
            with self.store.lock:
                pod = self.store.rget(PODS, namespace, name)
                if pod is None or meta(pod).get("uid") != uid:
                    return
                new = copy.deepcopy(pod)
                new["status"] = self._running_status(old, new.get("spec") or {})
                self.store.rwrite(PODS, new)

        with self._timers_lock:
            if self._stopped:
                return
            timer = threading.Timer(self.pod_start_delay, start)
            timer.daemon = True
            self._timers = [t for t in self._timers if t.is_alive()]
            self._timers.append(timer)
            timer.start()

    # ------------------------------------------------------------------ subresources

    def logs(self, namespace: str, name: str, query: Mapping[str, str]) -> bytes:
        """pods/log from the bundle's logs/<ns>/<pod>/<container>.log files."""
        pod = self.get(PODS, namespace, name)
        spec = pod.get("spec") or {}
        containers = [c.get("name") for c in spec.get("containers") or []]
        inits = [c.get("name") for c in spec.get("initContainers") or []]
        container = query.get("container", "")
        if not container:
            if len(containers) == 1:
                container = str(containers[0])
            elif not containers:
                raise errors.bad_request(f"a container name must be specified for pod {name}")
            else:
                msg = (
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(str(c) for c in containers)}]"
                )
                if inits:
                    msg += f" or one of the init containers: [{' '.join(str(c) for c in inits)}]"
                raise errors.bad_request(msg)
        elif container not in containers and container not in inits:
            msg = f"container {container} is not valid for pod {name}"
            raise errors.bad_request(msg)
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting")
            if cs.get("name") == container and isinstance(waiting, dict):
                reason = waiting.get("reason", "ContainerCreating")
                raise errors.bad_request(
                    f'container "{container}" in pod "{name}" is waiting to start: {reason}'
                )
        previous = query.get("previous") in ("true", "1")
        filename = f"{container}.previous.log" if previous else f"{container}.log"
        data = b""
        found = False
        for base in self.log_dirs:
            path = base / namespace / name / filename
            if path.is_file():
                data = path.read_bytes()
                found = True
                break
        if previous and not found:
            raise errors.bad_request(
                f'previous terminated container "{container}" in pod "{name}" not found'
            )
        tail = query.get("tailLines")
        if tail is not None and tail.lstrip("-").isdigit():
            n = int(tail)
            lines = data.splitlines(keepends=True)
            data = b"".join(lines[-n:]) if n > 0 else b""
        limit = query.get("limitBytes")
        if limit is not None and limit.isdigit():
            data = data[: int(limit)]
        return data

    def scale(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.get(rt, namespace, name)
        m = meta(obj)
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                "name": m.get("name"),
                "namespace": m.get("namespace"),
                "uid": m.get("uid"),
                "resourceVersion": m.get("resourceVersion"),
                "creationTimestamp": m.get("creationTimestamp"),
            },
            "spec": {"replicas": spec.get("replicas", 1)},
            "status": {
                "replicas": status.get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
            },
        }

    def set_scale(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        change: Callable[[Obj], Obj],
        *,
        dry_run: bool,
    ) -> Obj:
        """Update spec.replicas through the scale subresource (PUT or PATCH)."""
        with self.store.lock:
            current_scale = self.scale(rt, namespace, name)
            new_scale = change(current_scale)
            wanted = meta(new_scale).get("resourceVersion")
            current = self.get(rt, namespace, name)
            self._check_resource_version(rt, name, current, wanted)
            replicas = (new_scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or replicas < 0:
                raise errors.invalid()
            new = copy.deepcopy(current)
            new.setdefault("spec", {})["replicas"] = replicas
            self._commit(rt, current, new, subresource="", dry_run=dry_run)
            return self.scale(rt, namespace, name)

    def evict(self, namespace: str, name: str, body: bytes, *, dry_run: bool) -> None:
        eviction = _parse_body(body) or {}
        options = eviction.get("deleteOptions") if isinstance(eviction, dict) else None
        self.delete(PODS, namespace, name, options or {}, dry_run=dry_run)

    def bind(self, namespace: str, name: str, body: bytes) -> None:
        binding = _parse_body(body)
        node = (
            ((binding or {}).get("target") or {}).get("name") if isinstance(binding, dict) else None
        )
        if not node:
            raise errors.invalid()
        with self.store.lock:
            pod = self.get(PODS, namespace, name)
            if (pod.get("spec") or {}).get("nodeName"):
                raise errors.conflict(
                    PODS,
                    name,
                    f'pod {name} is already assigned to node "{pod["spec"]["nodeName"]}"',
                )
            new = copy.deepcopy(pod)
            new.setdefault("spec", {})["nodeName"] = node
            self.store.rwrite(PODS, new)
