"""Decode the Kubernetes protobuf request bodies that kubectl's typed clients send.

`kubectl create configmap|secret|namespace|serviceaccount` and `kubectl drain` (evictions)
post `application/vnd.kubernetes.protobuf` bodies. The field numbers below come from the
upstream generated.proto files; other kinds are answered with 415 like an unknown format.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

MAGIC = b"k8s\x00"


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf envelope of a kind decoded here."""


# A schema maps field number -> (JSON name, type, repeated). Types: "string", "bytes",
# "int", "bool", "time", "map" (string->string), "bmap" (string->bytes), or a nested schema.
Schema = dict[int, tuple[str, Any, bool]]

_TIME: Schema = {1: ("seconds", "int", False), 2: ("nanos", "int", False)}
_OWNER: Schema = {
    1: ("kind", "string", False),
    3: ("name", "string", False),
    4: ("uid", "string", False),
    5: ("apiVersion", "string", False),
    6: ("controller", "bool", False),
    7: ("blockOwnerDeletion", "bool", False),
}
OBJECT_META: Schema = {
    1: ("name", "string", False),
    2: ("generateName", "string", False),
    3: ("namespace", "string", False),
    5: ("uid", "string", False),
    6: ("resourceVersion", "string", False),
    7: ("generation", "int", False),
    8: ("creationTimestamp", "time", False),
    9: ("deletionTimestamp", "time", False),
    10: ("deletionGracePeriodSeconds", "int", False),
    11: ("labels", "map", False),
    12: ("annotations", "map", False),
    13: ("ownerReferences", _OWNER, True),
    14: ("finalizers", "string", True),
}
_REF: Schema = {
    1: ("kind", "string", False),
    2: ("namespace", "string", False),
    3: ("name", "string", False),
    4: ("uid", "string", False),
    5: ("apiVersion", "string", False),
}
_LOCAL_REF: Schema = {1: ("name", "string", False)}
_PRECONDITIONS: Schema = {1: ("uid", "string", False), 2: ("resourceVersion", "string", False)}
_DELETE_OPTIONS: Schema = {
    1: ("gracePeriodSeconds", "int", False),
    2: ("preconditions", _PRECONDITIONS, False),
    3: ("orphanDependents", "bool", False),
    4: ("propagationPolicy", "string", False),
    5: ("dryRun", "string", True),
}

KINDS: dict[str, Schema] = {
    "ConfigMap": {
        1: ("metadata", OBJECT_META, False),
        2: ("data", "map", False),
        3: ("binaryData", "bmap", False),
        4: ("immutable", "bool", False),
    },
    "Secret": {
        1: ("metadata", OBJECT_META, False),
        2: ("data", "bmap", False),
        3: ("type", "string", False),
        4: ("stringData", "map", False),
        5: ("immutable", "bool", False),
    },
    "Namespace": {
        1: ("metadata", OBJECT_META, False),
        2: ("spec", {1: ("finalizers", "string", True)}, False),
        3: ("status", {1: ("phase", "string", False)}, False),
    },
    "ServiceAccount": {
        1: ("metadata", OBJECT_META, False),
        2: ("secrets", _REF, True),
        3: ("imagePullSecrets", _LOCAL_REF, True),
        4: ("automountServiceAccountToken", "bool", False),
    },
    "Eviction": {1: ("metadata", OBJECT_META, False), 2: ("deleteOptions", _DELETE_OPTIONS, False)},
    "DeleteOptions": _DELETE_OPTIONS,
}


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one message; length-delimited values stay bytes."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            out.append((number, value))
        elif wire == 2:
            length, pos = _varint(data, pos)
            out.append((number, data[pos : pos + length]))
            pos += length
        elif wire == 1:
            out.append((number, int.from_bytes(data[pos : pos + 8], "little")))
            pos += 8
        elif wire == 5:
            out.append((number, int.from_bytes(data[pos : pos + 4], "little")))
            pos += 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _value(kind: Any, raw: int | bytes) -> Any:
    if isinstance(kind, dict):
        return decode_message(kind, _as_bytes(raw))
    if kind == "string":
        return _as_bytes(raw).decode()
    if kind == "bytes":
        return base64.b64encode(_as_bytes(raw)).decode()
    if kind == "int":
        return _signed(int(raw)) if isinstance(raw, int) else 0
    if kind == "bool":
        return bool(raw)
    if kind == "time":
        seconds = int(decode_message(_TIME, _as_bytes(raw)).get("seconds", 0))
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise ProtobufError(f"unknown field type {kind}")


def _as_bytes(raw: int | bytes) -> bytes:
    if not isinstance(raw, bytes):
        raise ProtobufError("expected a length-delimited field")
    return raw


def decode_message(schema: Schema, data: bytes) -> dict[str, Any]:
    """Decode one message into its JSON form; unknown field numbers are skipped."""
    out: dict[str, Any] = {}
    for number, raw in _fields(data):
        if number not in schema:
            continue
        name, kind, repeated = schema[number]
        if kind in ("map", "bmap"):
            entry = dict(_fields(_as_bytes(raw)))
            key = _as_bytes(entry.get(1, b"")).decode()
            value = entry.get(2, b"")
            out.setdefault(name, {})[key] = (
                _as_bytes(value).decode() if kind == "map" else _value("bytes", value)
            )
        elif repeated:
            out.setdefault(name, []).append(_value(kind, raw))
        else:
            out[name] = _value(kind, raw)
    return out


def decode(body: bytes) -> dict[str, Any]:
    """Decode a `k8s\\0` envelope into a JSON-shaped object with kind and apiVersion."""
    if not body.startswith(MAGIC):
        raise ProtobufError("missing the k8s protobuf magic prefix")
    envelope = dict(_fields(body[len(MAGIC) :]))
    type_meta = decode_message(
        {1: ("apiVersion", "string", False), 2: ("kind", "string", False)},
        _as_bytes(envelope.get(1, b"")),
    )
    kind = str(type_meta.get("kind", ""))
    schema = KINDS.get(kind)
    if schema is None:
        raise ProtobufError(f"protobuf bodies of kind {kind!r} are not supported by this server")
    obj = decode_message(schema, _as_bytes(envelope.get(2, b"")))
    return {"kind": kind, "apiVersion": type_meta.get("apiVersion", ""), **obj}
