"""The three PATCH dialects the API server accepts: JSON merge, JSON patch, strategic merge.

Strategic merge needs the per-field merge keys that the real server reads from Go struct
tags; the table below carries the ones that matter for the built-in workload types.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchError(Exception):
    """A patch that cannot be applied; `code` is the HTTP status the real server uses."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- RFC 7386 merge patch


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply an RFC 7386 JSON merge patch (null deletes, objects merge, all else replaces)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# ---------------------------------------------------------------- RFC 6902 JSON patch


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _container(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for part in parts[:-1]:
        if isinstance(cur, dict):
            if part not in cur:
                raise PatchError(422, f"doc is missing path: {path!r}")
            cur = cur[part]
        elif isinstance(cur, list):
            try:
                cur = cur[int(part)]
            except (ValueError, IndexError) as exc:
                raise PatchError(422, f"doc is missing path: {path!r}") from exc
        else:
            raise PatchError(422, f"doc is missing path: {path!r}")
    return cur


def _get(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        return doc
    parent = _container(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        try:
            return parent[int(last)]
        except (ValueError, IndexError):
            pass
    raise PatchError(422, f"unable to get nonexistent key: {last}: missing value")


def _list_index(lst: list[Any], token: str, *, for_insert: bool, path: str) -> int:
    if for_insert and token == "-":
        return len(lst)
    try:
        idx = int(token)
    except ValueError as exc:
        raise PatchError(422, f"invalid array index {token!r} in {path!r}") from exc
    limit = len(lst) if for_insert else len(lst) - 1
    if idx < 0 or idx > limit:
        raise PatchError(422, f"index out of bounds in {path!r}")
    return idx


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _container(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_list_index(parent, last, for_insert=True, path=path), copy.deepcopy(value))
    else:
        raise PatchError(422, f"doc is missing path: {path!r}")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise PatchError(422, "cannot remove the whole document")
    parent = _container(doc, parts, path)
    last = parts[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(422, f"Unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_list_index(parent, last, for_insert=False, path=path))
    raise PatchError(422, f"doc is missing path: {path!r}")


def json_patch(doc: Any, ops: Any) -> Any:
    """Apply an RFC 6902 patch; a failed `test` or a missing path is a 422 like the real one."""
    if not isinstance(ops, list):
        raise PatchError(400, "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise PatchError(
                400, "json: cannot unmarshal into Go value of type jsonpatch.Operation"
            )
        kind = op.get("op")
        path = op.get("path")
        if not isinstance(path, str):
            raise PatchError(422, f"operation missing path field: {op}")
        if kind == "add":
            doc = _add(doc, path, op.get("value"))
        elif kind == "remove":
            doc, _ = _remove(doc, path)
        elif kind == "replace":
            _get(doc, path)
            doc, _ = _remove(doc, path) if _pointer(path) else (doc, None)
            doc = _add(doc, path, op.get("value"))
        elif kind in ("move", "copy"):
            source = op.get("from")
            if not isinstance(source, str):
                raise PatchError(422, f"operation missing from field: {op}")
            if kind == "move":
                doc, value = _remove(doc, source)
            else:
                value = copy.deepcopy(_get(doc, source))
            doc = _add(doc, path, value)
        elif kind == "test":
            try:
                current = _get(doc, path)
            except PatchError:
                current = None
                if "value" in op and op["value"] is not None:
                    raise PatchError(422, f"testing value {path} failed: test failed") from None
            if current != op.get("value"):
                raise PatchError(422, f"testing value {path} failed: test failed")
        else:
            raise PatchError(422, f"Unexpected kind: {kind}")
    return doc


# ---------------------------------------------------------------- strategic merge patch

_NAME_KEYED = {
    "containers",
    "initContainers",
    "ephemeralContainers",
    "env",
    "volumes",
    "imagePullSecrets",
    "resourceClaims",
    "schedulingGates",
}
_CONTAINER_LISTS = {"containers", "initContainers", "ephemeralContainers"}


def merge_key(path: tuple[str, ...]) -> str | None:
    """The patchMergeKey of the list at PATH (field names only), or None for atomic lists."""
    if not path:
        return None
    last = path[-1]
    parent = path[-2] if len(path) > 1 else ""
    if last == "ports":
        return "containerPort" if parent in _CONTAINER_LISTS else "port"
    if last in _NAME_KEYED:
        return "name"
    if last == "volumeMounts":
        return "mountPath"
    if last == "volumeDevices":
        return "devicePath"
    if last == "hostAliases":
        return "ip"
    if last == "topologySpreadConstraints":
        return "topologyKey"
    if last == "ownerReferences":
        return "uid"
    if last in ("conditions", "addresses") and parent == "status":
        return "type"
    return None


_PRIMITIVE_MERGE = {("metadata", "finalizers")}


def _is_primitive_merge(path: tuple[str, ...]) -> bool:
    return path[-2:] in _PRIMITIVE_MERGE


def strategic_merge_patch(original: Any, patch: Any) -> Any:
    """Apply a strategic merge patch to ORIGINAL and return the result (inputs untouched)."""
    if not isinstance(patch, dict):
        raise PatchError(400, "strategic merge patch must be a JSON object")
    result = _merge_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch, ())
    return result if result is not None else {}


def _merge_map(
    original: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]
) -> dict[str, Any] | None:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
    if directive not in (None, "merge"):
        raise PatchError(400, f"Unknown patch type: {directive}")
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        for key in list(original):
            if key not in retain:
                del original[key]
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in ("$patch", "$retainKeys"):
            continue
        if key.startswith("$setElementOrder/"):
            if isinstance(value, list):
                orders[key.split("/", 1)[1]] = value
            continue
        if key.startswith("$deleteFromPrimitiveList/"):
            field = key.split("/", 1)[1]
            current = original.get(field)
            if isinstance(current, list) and isinstance(value, list):
                original[field] = [v for v in current if v not in value]
            continue
        if value is None:
            original.pop(key, None)
            continue
        sub_path = (*path, key)
        current = original.get(key)
        if isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value, sub_path)
            if merged is None:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list):
            original[key] = _merge_list(
                current if isinstance(current, list) else [], value, sub_path
            )
        else:
            original[key] = copy.deepcopy(value)
    for field, order in orders.items():
        if isinstance(original.get(field), list):
            original[field] = _apply_order(original[field], order, merge_key((*path, field)))
    return original


def _merge_list(original: list[Any], patch: list[Any], path: tuple[str, ...]) -> list[Any]:
    if any(isinstance(i, dict) and i.get("$patch") == "replace" for i in patch):
        return [
            copy.deepcopy(i)
            for i in patch
            if not (isinstance(i, dict) and i.get("$patch") == "replace")
        ]
    key = merge_key(path)
    if key is None:
        if _is_primitive_merge(path):
            merged = list(original)
            merged.extend(v for v in patch if v not in merged)
            return merged
        return [_strip_directives(copy.deepcopy(i)) for i in patch]
    result = list(original)
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            raise PatchError(400, f"map: {item} does not contain declared merge key: {key}")
        index = next(
            (n for n, o in enumerate(result) if isinstance(o, dict) and o.get(key) == item[key]),
            None,
        )
        if item.get("$patch") == "delete":
            if index is not None:
                result.pop(index)
            continue
        if index is None:
            merged_new = _merge_map({}, item, path)
            if merged_new is not None:
                result.append(merged_new)
        else:
            merged_item = _merge_map(result[index], item, path)
            if merged_item is None:
                result.pop(index)
            else:
                result[index] = merged_item
    return result


def _apply_order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Honour a `$setElementOrder` directive: listed items first, in that order."""

    def ident(value: Any) -> Any:
        if key is not None and isinstance(value, dict):
            return value.get(key)
        return value

    wanted = [ident(o) for o in order]
    positions = {repr(w): n for n, w in enumerate(wanted)}
    indexed = list(enumerate(items))
    indexed.sort(key=lambda p: (positions.get(repr(ident(p[1])), len(wanted)), p[0]))
    return [item for _, item in indexed]


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items() if not k.startswith("$")}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value
