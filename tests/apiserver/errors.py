"""`kind: Status` errors worded as kube-apiserver words them.

Clients branch on `reason` and `code` and users read `message`; getting both right lets tests
check the error handling a client will meet against a real cluster.
"""

from __future__ import annotations

from typing import Any

from .resources import ResourceType


class ApiError(Exception):
    """An error response: the HTTP code and the Status body to send."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        continue_token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.continue_token = continue_token
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        """The Status object, field order as the real server encodes it."""
        meta: dict[str, Any] = {}
        if self.continue_token:
            meta["continue"] = self.continue_token
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": meta,
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rt: ResourceType | None, name: str = "") -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if rt is not None:
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def namespace_not_found(name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'namespaces "{name}" not found', {"name": name, "kind": "namespaces"}
    )


def path_not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(
        409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists', _details(rt, name)
    )


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}',
        _details(rt, name),
    )


MODIFIED = (
    "the object has been modified; please apply your changes to the latest version and try again"
)


def precondition_failed(rt: ResourceType, namespace: str, name: str, what: str) -> ApiError:
    """The wording a failed delete/update precondition gets from the etcd storage layer."""
    key = rt.storage_key(namespace, name)
    why = (
        f"StorageError: invalid object, Code: 4, Key: {key}, ResourceVersion: 0, "
        f"AdditionalErrorMsg: Precondition failed: {what}"
    )
    return conflict(rt, name, why)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def invalid(
    message: str = "the server rejected our request due to an error in our request",
    details: dict[str, Any] | None = None,
) -> ApiError:
    return ApiError(422, "Invalid", message, details if details is not None else {})


def invalid_field(rt: ResourceType, name: str, field: str, why: str) -> ApiError:
    message = f'{rt.kind} "{name}" is invalid: {field}: {why}'
    details = _details(rt, name)
    details["kind"] = rt.kind
    details["causes"] = [{"reason": "FieldValueRequired", "message": why, "field": field}]
    return ApiError(422, "Invalid", message, details)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized")


def forbidden_resource(
    rt: ResourceType,
    verb: str,
    namespace: str,
    name: str,
    subresource: str = "",
    user: str = "system:anonymous",
) -> ApiError:
    resource = f"{rt.plural}/{subresource}" if subresource else rt.plural
    subject = f'{rt.group_resource} "{name}"' if name else rt.group_resource
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    message = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{resource}" '
        f'in API group "{rt.group}" {scope}'
    )
    return ApiError(403, "Forbidden", message, _details(rt, name))


def forbidden_path(verb: str, path: str, user: str = "system:anonymous") -> ApiError:
    return ApiError(403, "Forbidden", f'forbidden: User "{user}" cannot {verb} path "{path}"', {})


def internal(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


def method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        {},
    )


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: "
        f"application/json-patch+json, application/merge-patch+json, "
        f"application/apply-patch+yaml, application/strategic-merge-patch+json "
        f"(got {content_type!r})",
        {},
    )


def unsupported_body(content_type: str, detail: str = "") -> ApiError:
    """A create/update/delete body in a format (or protobuf kind) this server cannot read."""
    message = (
        f"the body of the request was in an unknown format - accepted media types include: "
        f"application/json, application/yaml, application/vnd.kubernetes.protobuf "
        f"(got {content_type!r})"
    )
    return ApiError(415, "UnsupportedMediaType", f"{message}: {detail}" if detail else message, {})


def not_acceptable() -> ApiError:
    return ApiError(
        406,
        "NotAcceptable",
        "only the following media types are accepted: application/json, application/yaml, "
        "application/vnd.kubernetes.protobuf",
        {},
    )


EXPIRED_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted "
    "between the time the first chunk was returned and now may show up in the list."
)


def expired(message: str, continue_token: str | None = None) -> ApiError:
    return ApiError(410, "Expired", message, continue_token=continue_token)


def generic(code: int, message: str | None = None, *, retry_after: int | None = None) -> ApiError:
    """Any other injected status, with the reason the client libraries map it to.

    429 and 503 carry ``Retry-After`` (and ``details.retryAfterSeconds``), 1 s unless
    RETRY_AFTER says otherwise, as API Priority and Fairness sends them."""
    reasons = {
        400: ("BadRequest", "the server rejected our request for an unknown reason"),
        401: ("Unauthorized", "Unauthorized"),
        403: ("Forbidden", "forbidden"),
        404: ("NotFound", "the server could not find the requested resource"),
        405: (
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ),
        409: ("Conflict", "the server reported a conflict"),
        410: ("Gone", "the server no longer has the requested resource"),
        422: ("Invalid", "the server rejected our request due to an error in our request"),
        429: (
            "TooManyRequests",
            "the server has received too many requests and has asked us to try again later",
        ),
        500: ("InternalError", "an error on the server has prevented the request from succeeding"),
        503: ("ServiceUnavailable", "the server is currently unable to handle the request"),
        504: (
            "Timeout",
            "the server was unable to return a response in the time allotted, but may still "
            "be processing the request",
        ),
    }
    reason, default = reasons.get(
        code, ("Unknown" if code < 500 else "InternalError", f"injected status {code}")
    )
    seconds = 1 if retry_after is None else retry_after
    headers = {"Retry-After": str(seconds)} if code in (429, 503) else None
    details: dict[str, Any] | None = {"retryAfterSeconds": seconds} if headers else {}
    return ApiError(code, reason, message or default, details, headers=headers)
