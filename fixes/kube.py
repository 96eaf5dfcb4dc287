"""Actions that change the cluster through the API, each preconditioned and reversible.

Patches carry the object's ``resourceVersion`` so a concurrent change makes the API server
answer 409 Conflict and the fix aborts instead of overwriting someone else's edit. The
previous object is kept in the backup; rollback puts it back with a replace (PUT).
"""

from __future__ import annotations

import difflib
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.core.context import FixContext
from doctor.core.fix import Action, UndoRecord
from doctor.facts.kube import PODS, ApiError, LiveCluster, Resource


class KubeStepFailed(Exception):
    """An API write failed; the message says why (conflict, forbidden, …)."""


class KubeWriter:
    """The write side of the API, given only to fixes (through :class:`FixContext`)."""

    def __init__(self, cluster: LiveCluster) -> None:
        self.cluster = cluster

    def _write(
        self,
        method: str,
        resource: Resource,
        namespace: str | None,
        name: str,
        body: Any,
        verb: str,
        content_type: str = "application/json",
    ) -> bytes:
        """Every write goes here, so the run's read cache is dropped after it."""
        try:
            _status, data = self.cluster.request(
                method, resource.path(namespace, name), body=body, content_type=content_type,
                verb=verb, what=f"{resource.plural}/{name}",
            )  # fmt: skip
        finally:
            self.cluster.invalidate()
        return data

    def get(self, resource: Resource, namespace: str | None, name: str) -> dict[str, Any]:
        _status, data = self.cluster.request(
            "GET", resource.path(namespace, name), verb="get", what=f"{resource.plural}/{name}"
        )
        doc: dict[str, Any] = json.loads(data)
        return doc

    def merge_patch(
        self, resource: Resource, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        data = self._write(
            "PATCH", resource, namespace, name, patch, "patch", "application/merge-patch+json"
        )
        doc: dict[str, Any] = json.loads(data)
        return doc

    def replace(
        self, resource: Resource, namespace: str | None, name: str, obj: dict[str, Any]
    ) -> dict[str, Any]:
        data = self._write("PUT", resource, namespace, name, obj, "update")
        doc: dict[str, Any] = json.loads(data)
        return doc

    def delete(
        self, resource: Resource, namespace: str | None, name: str, uid: str | None = None
    ) -> None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if uid:
            body["preconditions"] = {"uid": uid}
        self._write("DELETE", resource, namespace, name, body, "delete")


def _writer(ctx: FixContext) -> KubeWriter:
    if not isinstance(ctx.kube, KubeWriter):
        raise KubeStepFailed("no live cluster to change (fixes never run on a bundle)")
    return ctx.kube


def _writer_problems(ctx: FixContext) -> list[str]:
    if not isinstance(ctx.kube, KubeWriter):
        return ["no live cluster to change (no kubeconfig, or a bundle)"]
    return []


def _kubectl_ns(namespace: str | None) -> list[str]:
    return ["-n", namespace] if namespace else []


@dataclass
class PatchObject(Action):
    """Change one object from ``previous`` to ``desired`` with a preconditioned merge patch.

    Rollback only undoes what this patch did: nothing unless its PATCH succeeded, and the
    restore (PUT of ``previous``) carries the resourceVersion the PATCH produced, so neither a
    writer who changed the object before the fix (409: the fix aborts) nor one who changed it
    after is overwritten (the rollback then fails loudly and names the backup). On a 409 the
    object is read once: when it already holds exactly what the patch sets (the same fix
    offered by two checks and applied by the first) there is nothing to write.
    """

    resource: Resource
    namespace: str | None
    name: str
    previous: dict[str, Any]
    patch: dict[str, Any]  # merge patch, without metadata.resourceVersion (added on apply)
    desired: dict[str, Any] = field(default_factory=dict)  # for the plan's diff
    applied: bool = field(default=False, init=False, repr=False)
    applied_version: str = field(default="", init=False, repr=False)

    @property
    def _at_version(self) -> Resource:
        """Write at the group/version the object was read with (1.6: extensions/v1beta1)."""
        return self.resource.at_version_of(self.previous)

    @property
    def resource_version(self) -> str:
        return str((self.previous.get("metadata") or {}).get("resourceVersion", ""))

    def describe(self) -> list[str]:
        kind = self.resource.kind.lower()
        argv = ["kubectl", *_kubectl_ns(self.namespace), "patch", kind, self.name,
                "--type=merge", "-p", json.dumps(self._body(), sort_keys=True)]  # fmt: skip
        lines = [shlex.join(argv)]
        if self.resource.kind == "ConfigMap":
            # A JSON diff of a multi-line string is one unreadable line: diff the keys as text.
            old = self.previous.get("data") or {}
            data = self.patch.get("data")
            new: dict[str, Any] = data if isinstance(data, dict) else {}
            for key in sorted(new):
                title = f"configmap/{self.name} {key}"
                diff = difflib.unified_diff(
                    str(old.get(key, "")).splitlines(),
                    str(new[key]).splitlines(),
                    fromfile=f"{title} (resourceVersion {self.resource_version})",
                    tofile=f"{title} (patched)",
                    lineterm="",
                )
                lines.extend(diff)
        elif self.desired:
            before = json.dumps(_comparable(self.previous), indent=2, sort_keys=True)
            after = json.dumps(_comparable(self.desired), indent=2, sort_keys=True)
            diff = difflib.unified_diff(
                before.splitlines(), after.splitlines(),
                fromfile=f"{kind}/{self.name} (resourceVersion {self.resource_version})",
                tofile=f"{kind}/{self.name} (patched)", lineterm="",
            )  # fmt: skip
            lines.extend(diff)
        return lines

    def _body(self) -> dict[str, Any]:
        body = json.loads(json.dumps(self.patch))
        body.setdefault("metadata", {})["resourceVersion"] = self.resource_version
        return body  # type: ignore[no-any-return]

    def backup(self, ctx: FixContext, into: Path) -> None:
        (into / f"{self.resource.kind.lower()}-{self.name}.json").write_text(
            json.dumps(self.previous, indent=2, sort_keys=True)
        )

    def apply(self, ctx: FixContext) -> None:
        ctx.runner.on_step(self.describe()[0])
        writer = _writer(ctx)
        try:
            result = writer.merge_patch(self._at_version, self.namespace, self.name, self._body())
        except ApiError as exc:
            if exc.status != 409:
                raise KubeStepFailed(str(exc)) from exc
            try:
                current: dict[str, Any] | None = writer.get(
                    self._at_version, self.namespace, self.name
                )
            except ApiError:
                current = None
            if current is not None and patch_is_noop(current, self.patch):
                ctx.runner.on_step(
                    f"{self.resource.kind} {self.name} changed since the plan was made but "
                    "already holds this change: nothing to patch"
                )
                return
            raise KubeStepFailed(
                f"{self.resource.kind} {self.name} changed since the plan was made "
                f"(resourceVersion {self.resource_version} is stale); nothing was patched"
            ) from exc
        self.applied = True
        self.applied_version = str((result.get("metadata") or {}).get("resourceVersion", ""))

    def preflight(self, ctx: FixContext) -> list[str]:
        """The object is still there, at the version the plan was made from."""
        problems = _writer_problems(ctx)
        if problems:
            return problems
        writer = _writer(ctx)
        what = f"{self.resource.kind} {self.namespace + '/' if self.namespace else ''}{self.name}"
        try:
            current = writer.get(self._at_version, self.namespace, self.name)
        except ApiError as exc:
            if exc.status == 404:
                return [f"{what} no longer exists: nothing to patch"]
            return [f"cannot read {what} before patching it: {exc}"]
        version = str((current.get("metadata") or {}).get("resourceVersion", ""))
        if version != self.resource_version and not patch_is_noop(current, self.patch):
            return [
                f"{what} changed since the plan was made (resourceVersion "
                f"{self.resource_version} → {version}): run kdoctor fix again for a fresh plan"
            ]
        return []

    def undo_record(self, backup: Path) -> UndoRecord | None:
        return None  # a later undo would overwrite whatever changed since: left to a human

    def undo(self, ctx: FixContext, backup: Path) -> None:
        if not self.applied:
            return
        writer = _writer(ctx)
        restored = json.loads(json.dumps(self.previous))
        restored["metadata"]["resourceVersion"] = self.applied_version
        ctx.runner.on_step(f"restore {self.resource.kind} {self.name} to its previous spec (PUT)")
        try:
            writer.replace(self._at_version, self.namespace, self.name, restored)
        except ApiError as exc:
            if exc.status == 409:
                raise KubeStepFailed(
                    f"{self.resource.kind} {self.name} was changed again after the fix; not "
                    "overwriting that change"
                ) from exc
            raise KubeStepFailed(str(exc)) from exc


def patch_is_noop(obj: Any, patch: Any) -> bool:
    """Whether the JSON merge patch PATCH would leave OBJ as it is (lists compare whole)."""
    if not isinstance(patch, dict):
        return bool(obj == patch)
    if not isinstance(obj, dict):
        return False
    for key, value in patch.items():
        if value is None:
            if key in obj:
                return False
        elif not patch_is_noop(obj.get(key), value):
            return False
    return True


def _comparable(obj: dict[str, Any]) -> dict[str, Any]:
    """The parts of an object a human compares: no status, no bookkeeping metadata."""
    out = {k: v for k, v in obj.items() if k not in ("status",)}
    meta = dict(out.get("metadata") or {})
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields"):
        meta.pop(key, None)
    out["metadata"] = meta
    return out


@dataclass
class DeletePod(Action):
    """Delete a pod its controller will recreate. Not undoable, and said so in the plan."""

    namespace: str
    name: str
    uid: str | None = None
    owner: str = ""  # "DaemonSet/weave-net", for the plan

    def describe(self) -> list[str]:
        argv = ["kubectl", "-n", self.namespace, "delete", "pod", self.name]
        note = f"  # {self.owner} recreates it" if self.owner else ""
        return [shlex.join(argv) + note]

    def preflight(self, ctx: FixContext) -> list[str]:
        return _writer_problems(ctx)

    def undo_record(self, backup: Path) -> UndoRecord:
        return UndoRecord()  # its controller recreated it: nothing to put back

    def apply(self, ctx: FixContext) -> None:
        ctx.runner.on_step(self.describe()[0])
        try:
            _writer(ctx).delete(PODS, self.namespace, self.name, self.uid)
        except ApiError as exc:
            if exc.status == 404:
                return  # already gone: the controller got there first
            raise KubeStepFailed(str(exc)) from exc


@dataclass
class RestartPods(Action):
    """Delete every pod matching a selector so their controller restarts them."""

    namespace: str
    label_selector: str
    owner: str = ""

    def describe(self) -> list[str]:
        argv = ["kubectl", "-n", self.namespace, "delete", "pods", "-l", self.label_selector]
        return [shlex.join(argv) + (f"  # {self.owner} recreates them" if self.owner else "")]

    def preflight(self, ctx: FixContext) -> list[str]:
        return _writer_problems(ctx)

    def undo_record(self, backup: Path) -> UndoRecord:
        return UndoRecord()  # the controller recreated them: nothing to put back

    def apply(self, ctx: FixContext) -> None:
        ctx.runner.on_step(self.describe()[0])
        writer = _writer(ctx)
        pods = writer.cluster.list_objects(PODS, self.namespace, self.label_selector)
        for pod in pods:
            meta = pod.get("metadata") or {}
            try:
                writer.delete(PODS, self.namespace, meta["name"], meta.get("uid"))
            except ApiError as exc:
                if exc.status != 404:
                    raise KubeStepFailed(str(exc)) from exc
