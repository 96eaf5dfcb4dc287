"""Thread-safe object store with a global resourceVersion, a watch log and list snapshots.

It plays etcd's part: every write bumps one counter, watchers read an ordered event log, and
a paginated list reads the snapshot its first page saw, so continue tokens stay consistent.
Stored objects are never mutated in place (writers store fresh dicts), which lets readers
serialise them without copying under the lock.
"""

from __future__ import annotations

import bisect
import copy
import json
import threading
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import resources
from .resources import ResourceType

Obj = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(obj: Obj) -> dict[str, Any]:
    """The object's metadata dict, created when absent."""
    m = obj.get("metadata")
    if not isinstance(m, dict):
        m = {}
        obj["metadata"] = m
    return m


def sort_key(rt: ResourceType, namespace: str, name: str) -> str:
    """The etcd-style key that orders lists (namespace/name, byte order)."""
    return f"{namespace}/{name}" if rt.namespaced else name


@dataclass(frozen=True)
class WatchEvent:
    """One store change as watchers see it; OLD is the previous version for MODIFIED."""

    rv: int
    key: str
    type: str
    obj: Obj
    old: Obj | None


class Store:
    """The in-memory state of the fake cluster."""

    def __init__(self, history: int = 10000, snapshots: int = 64) -> None:
        self._lock = threading.RLock()
        self.changed = threading.Condition(self._lock)
        self._data: dict[str, dict[str, Obj]] = {r.key: {} for r in resources.RESOURCES}
        self._sorted: dict[str, list[str]] = {r.key: [] for r in resources.RESOURCES}
        self._rv = 1
        self._events: deque[WatchEvent] = deque(maxlen=history)
        self._compacted = 1
        self._snapshots: OrderedDict[tuple[str, int], list[Obj]] = OrderedDict()
        self._snapshot_limit = snapshots
        # id(object) -> (object, its list-item JSON): stored objects are never mutated in
        # place, so an object's encoding never changes; writes drop the replaced one.
        self._encoded: dict[int, tuple[Obj, bytes]] = {}

    # ------------------------------------------------------------ internals (ResourceType)

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    @property
    def compacted_revision(self) -> int:
        """Watches from before this revision get 410 Gone, like after an etcd compaction."""
        with self._lock:
            return self._compacted

    def rget(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        with self._lock:
            return self._data[rt.key].get(sort_key(rt, namespace, name))

    def rlist(self, rt: ResourceType, namespace: str | None = None) -> list[Obj]:
        """Objects in key order; NAMESPACE None means all namespaces."""
        with self._lock:
            bucket = self._data[rt.key]
            keys = self._sorted[rt.key]
            if namespace is None or not rt.namespaced:
                return [bucket[k] for k in keys]
            prefix = f"{namespace}/"
            start = bisect.bisect_left(keys, prefix)
            out = []
            for k in keys[start:]:
                if not k.startswith(prefix):
                    break
                out.append(bucket[k])
            return out

    def _next_rv(self) -> int:
        self._rv += 1
        return self._rv

    def rwrite(self, rt: ResourceType, obj: Obj, *, bump: bool = True) -> Obj:
        """Store OBJ (a fresh dict the caller gives up) as an add or a modification."""
        with self._lock:
            m = meta(obj)
            key = sort_key(rt, m.get("namespace", ""), m["name"])
            bucket = self._data[rt.key]
            old = bucket.get(key)
            if bump:
                m["resourceVersion"] = str(self._next_rv())
            obj["kind"] = rt.kind
            obj["apiVersion"] = rt.api_version
            if old is None:
                bisect.insort(self._sorted[rt.key], key)
            else:
                self._encoded.pop(id(old), None)
            bucket[key] = obj
            self._record(rt, "ADDED" if old is None else "MODIFIED", obj, old)
            return obj

    def rdelete(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        with self._lock:
            key = sort_key(rt, namespace, name)
            old = self._data[rt.key].pop(key, None)
            if old is None:
                return None
            keys = self._sorted[rt.key]
            keys.pop(bisect.bisect_left(keys, key))
            self._encoded.pop(id(old), None)
            gone = copy.copy(old)
            gone["metadata"] = dict(meta(old), resourceVersion=str(self._next_rv()))
            self._record(rt, "DELETED", gone, old)
            return gone

    def _record(self, rt: ResourceType, kind: str, obj: Obj, old: Obj | None) -> None:
        if self._events.maxlen is not None and len(self._events) == self._events.maxlen:
            self._compacted = self._events[0].rv
        self._events.append(WatchEvent(self._rv, rt.key, kind, obj, old))
        self.changed.notify_all()

    def events_after(self, rv: int) -> list[WatchEvent]:
        with self._lock:
            if not self._events or self._events[-1].rv <= rv:
                return []
            return [e for e in self._events if e.rv > rv]

    # ------------------------------------------------------------ list snapshots

    def snapshot(self, rt: ResourceType, namespace: str | None) -> tuple[int, list[Obj]]:
        """The current revision and the objects as of it, remembered for continue tokens."""
        with self._lock:
            items = self.rlist(rt, namespace)
            key = (f"{rt.key}|{namespace or ''}", self._rv)
            self._snapshots[key] = items
            self._snapshots.move_to_end(key)
            while len(self._snapshots) > self._snapshot_limit:
                self._snapshots.popitem(last=False)
            return self._rv, items

    def snapshot_at(self, rt: ResourceType, namespace: str | None, rv: int) -> list[Obj] | None:
        """The objects as of revision RV, or None when that revision is no longer kept."""
        with self._lock:
            key = (f"{rt.key}|{namespace or ''}", rv)
            if key in self._snapshots:
                return self._snapshots[key]
            if rv == self._rv:
                return self.rlist(rt, namespace)
            return None

    def compact(self) -> None:
        """Forget list snapshots and watch history, as an etcd compaction would."""
        with self._lock:
            self._snapshots.clear()
            self._events.clear()
            self._compacted = self._rv

    def encoded_item(self, obj: Obj) -> bytes:
        """OBJ as a list item (no kind/apiVersion) in compact JSON, encoded once.

        Lists of thousands of objects are then served by joining bytes: the server answers a
        500-item page in milliseconds, so a benchmark measures the client, not this server.
        """
        entry = self._encoded.get(id(obj))
        if entry is not None and entry[0] is obj:
            return entry[1]
        item = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
        data = json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()
        self._encoded[id(obj)] = (obj, data)
        return data

    # ------------------------------------------------------------ loading

    def load(self, rt: ResourceType, obj: Obj, created: str) -> None:
        """Add a bundle object, filling what kubectl output may lack."""
        with self._lock:
            m = meta(obj)
            m.setdefault(
                "uid",
                str(
                    uuid.uuid5(
                        uuid.NAMESPACE_URL,
                        sort_key(rt, m.get("namespace", ""), m["name"]) + "/" + rt.key,
                    )
                ),
            )
            m.setdefault("creationTimestamp", created)
            if rt.has_generation:
                m.setdefault("generation", 1)
            rv = m.get("resourceVersion")
            if isinstance(rv, str) and rv.isdigit():
                self._rv = max(self._rv, int(rv))
                self.rwrite(rt, obj, bump=False)
            else:
                self.rwrite(rt, obj)
            self._events.clear()
            self._compacted = self._rv

    def load_many(self, rt: ResourceType, objs: list[Obj], created: str) -> None:
        """Add many generated objects at once (a benchmark's 150,000 pods): as :meth:`load`,
        but sorting the keys once instead of inserting each one."""
        with self._lock:
            bucket = self._data[rt.key]
            for obj in objs:
                m = meta(obj)
                key = sort_key(rt, m.get("namespace", ""), m["name"])
                m.setdefault("uid", str(uuid.uuid5(uuid.NAMESPACE_URL, key + "/" + rt.key)))
                m.setdefault("creationTimestamp", created)
                if rt.has_generation:
                    m.setdefault("generation", 1)
                rv = m.get("resourceVersion")
                if isinstance(rv, str) and rv.isdigit():
                    self._rv = max(self._rv, int(rv))
                else:
                    m["resourceVersion"] = str(self._next_rv())
                obj["kind"] = rt.kind
                obj["apiVersion"] = rt.api_version
                bucket[key] = obj
            self._sorted[rt.key] = sorted(bucket)
            self._events.clear()
            self._compacted = self._rv

    # ------------------------------------------------------------ public test helpers

    def get(self, api_version: str, resource: str, namespace: str | None, name: str) -> Obj | None:
        """A deep copy of one object, or None."""
        rt = resources.lookup(api_version, resource)
        obj = self.rget(rt, namespace or "", name)
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, api_version: str, resource: str, namespace: str | None = None) -> list[Obj]:
        """Deep copies of all objects of a resource, in list order."""
        rt = resources.lookup(api_version, resource)
        return copy.deepcopy(self.rlist(rt, namespace))

    def put(self, api_version: str, resource: str, obj: Obj) -> Obj:
        """Create or replace an object directly (no admission, no preconditions)."""
        rt = resources.lookup(api_version, resource)
        new = copy.deepcopy(obj)
        m = meta(new)
        if "name" not in m:
            raise ValueError("object has no metadata.name")
        if rt.namespaced:
            m.setdefault("namespace", "default")
        else:
            m.pop("namespace", None)
        with self._lock:
            old = self.rget(rt, m.get("namespace", ""), m["name"])
            if old is not None:
                m.setdefault("uid", meta(old).get("uid"))
                m.setdefault("creationTimestamp", meta(old).get("creationTimestamp"))
            m.setdefault("uid", str(uuid.uuid4()))
            m.setdefault("creationTimestamp", now_rfc3339())
            return copy.deepcopy(self.rwrite(rt, new))

    def delete(
        self, api_version: str, resource: str, namespace: str | None, name: str
    ) -> Obj | None:
        """Remove an object directly (no controllers react); returns it, or None."""
        rt = resources.lookup(api_version, resource)
        gone = self.rdelete(rt, namespace or "", name)
        return copy.deepcopy(gone) if gone is not None else None

    def mutate(
        self,
        api_version: str,
        resource: str,
        namespace: str | None,
        name: str,
        change: Callable[[Obj], None],
    ) -> Obj:
        """Apply CHANGE to a copy of an object and store it atomically; returns the result."""
        rt = resources.lookup(api_version, resource)
        with self._lock:
            current = self.rget(rt, namespace or "", name)
            if current is None:
                raise KeyError(f"{rt.group_resource} {namespace}/{name} not found")
            new = copy.deepcopy(current)
            change(new)
            return copy.deepcopy(self.rwrite(rt, new))
