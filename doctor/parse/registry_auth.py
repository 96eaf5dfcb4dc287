"""Image references, registry auth keys and docker-registry secrets: pure functions.

Three things the kubelet does before it pulls an image, reproduced so a check can say why a
pull secret is not used:

- **Reference parsing** as Docker's ``distribution/reference`` ``ParseNormalizedNamed``: a
  reference without a registry part is on Docker Hub (``busybox`` is
  ``docker.io/library/busybox``); the first path component is a registry only when it holds
  ``.`` or ``:`` or is ``localhost`` (or has upper-case letters); ``index.docker.io`` is
  ``docker.io``.
- **Auth key normalisation** as the kubelet's ``credentialprovider`` keyring (``Add``): a key
  may carry a scheme and a path (``https://nexus.lab:5000/v2/``); the scheme goes, a ``/v1/``
  or ``/v2/`` path prefix goes, what is left is ``host[:port][/path]``. The Docker Hub names
  (``https://index.docker.io/v1/``, ``index.docker.io``, ``registry-1.docker.io``,
  ``docker.io``) are one registry.
- **Matching** as the keyring's ``URLsMatch``: same port (``nexus.lab:5000`` is not
  ``nexus.lab``), same number of host labels, each label a glob (``*.lab``), and the key's
  path a prefix of the image's repository path.

And **secret decoding**: ``.dockerconfigjson`` (``{"auths": {host: entry}}``) of type
``kubernetes.io/dockerconfigjson`` and the legacy ``.dockercfg`` (``{host: entry}``) of type
``kubernetes.io/dockercfg`` (base64 in ``data``). Decoding keeps host names, user names and
e-mails only; passwords, ``auth`` and tokens never leave :func:`decode_pull_secret` — it only
records *whether* they were there. :func:`redact_secret` makes the bundle copy of a secret
(bundle-v1.md: keep hosts and user names, ``"REDACTED"`` for passwords and ``auth``, drop all
other values).
"""

from __future__ import annotations

import base64
import binascii
import copy
import fnmatch
import json
import re
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

DOCKER_HUB = "docker.io"
#: Every name Docker Hub's credentials are stored under; all mean the same registry.
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
#: What ``kubectl create secret docker-registry`` writes without ``--docker-server``.
KUBECTL_DEFAULT_SERVER = "https://index.docker.io/v1/"

DOCKERCONFIGJSON_TYPE = "kubernetes.io/dockerconfigjson"
DOCKERCONFIGJSON_KEY = ".dockerconfigjson"
DOCKERCFG_TYPE = "kubernetes.io/dockercfg"
DOCKERCFG_KEY = ".dockercfg"
PULL_SECRET_TYPES = {DOCKERCONFIGJSON_TYPE: DOCKERCONFIGJSON_KEY, DOCKERCFG_TYPE: DOCKERCFG_KEY}

REDACTED = "REDACTED"
#: Fields of an auth entry that are not secret: kept by redaction, read by the check.
PUBLIC_ENTRY_FIELDS = ("username", "email")
#: Fields holding credentials (``auth`` is base64 of ``user:password``).
CREDENTIAL_FIELDS = ("password", "auth", "identitytoken", "registrytoken")
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: Marks a secret whose values ``kdoctor collect`` removed.
REDACTED_ANNOTATION = "kdoctor.io/redacted"

_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")


class InvalidReference(ValueError):
    """An image reference Docker would refuse (the kubelet says InvalidImageName)."""


@dataclass(frozen=True)
class ImageRef:
    """A normalised image reference: ``registry/path[:tag][@digest]``."""

    registry: str  # host[:port], "docker.io" for Docker Hub
    path: str  # repository path without the registry, e.g. "library/busybox"
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The repository's full name, what the kubelet looks credentials up for."""
        return f"{self.registry}/{self.path}"

    @property
    def host(self) -> str:
        return split_host_port(self.registry)[0]

    @property
    def port(self) -> str:
        return split_host_port(self.registry)[1]

    @property
    def is_docker_hub(self) -> bool:
        return self.registry == DOCKER_HUB


def parse_reference(reference: str) -> ImageRef:
    """Parse an image reference the way Docker does (``ParseNormalizedNamed``).

    >>> parse_reference("busybox").name
    'docker.io/library/busybox'
    >>> parse_reference("nexus.lab:5000/team/app:1.0").registry
    'nexus.lab:5000'
    """
    ref = reference.strip()
    if not ref or ref != reference or any(c.isspace() for c in ref):
        raise InvalidReference(f"invalid reference format: {reference!r}")
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
        if not re.fullmatch(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[0-9a-fA-F]{32,}", digest):
            raise InvalidReference(f"invalid digest in {reference!r}")
    tag = None
    last_slash = ref.rfind("/")
    colon = ref.rfind(":")
    if colon > last_slash:
        ref, tag = ref[:colon], ref[colon + 1 :]
        if not _TAG.match(tag):
            raise InvalidReference(f"invalid tag in {reference!r}")
    first, sep, rest = ref.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        registry, path = first.lower(), rest
    else:
        registry, path = DOCKER_HUB, ref
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    if not registry or not path or not all(_PATH_COMPONENT.match(p) for p in path.split("/")):
        raise InvalidReference(f"invalid reference format: {reference!r}")
    return ImageRef(registry=registry, path=path, tag=tag, digest=digest)


def split_host_port(hostport: str) -> tuple[str, str]:
    """``net.SplitHostPort`` leniently: ``("nexus.lab", "5000")``, ``("nexus.lab", "")``."""
    if hostport.startswith("["):
        end = hostport.find("]")
        if end != -1:
            rest = hostport[end + 1 :]
            return hostport[1:end], rest[1:] if rest.startswith(":") else ""
    if hostport.count(":") == 1:
        host, port = hostport.split(":")
        return host, port
    return hostport, ""


@dataclass(frozen=True)
class AuthKey:
    """An ``auths`` key as the kubelet's keyring stores it: ``host[:port][/path]``."""

    raw: str  # the key as written in the secret
    host: str  # lower case, Docker Hub aliases → "docker.io"
    port: str
    path: str  # "" or "/team" (no /v1/ /v2/ prefix, no trailing "/")

    @property
    def registry(self) -> str:
        """``host[:port]`` — what ``--docker-server`` should have been."""
        return f"{self.host}:{self.port}" if self.port else self.host

    @property
    def is_docker_hub(self) -> bool:
        return self.host == DOCKER_HUB and not self.port

    def display(self) -> str:
        return self.registry + self.path


def normalize_auth_key(key: str) -> AuthKey:
    """Normalise like the keyring's ``Add``: drop the scheme and a ``/v1/``/``/v2/`` prefix."""
    value = key.strip()
    if not value.startswith(("https://", "http://")):
        value = "https://" + value
    try:
        parts = urlsplit(value)
        netloc = parts.netloc
        path = parts.path
    except ValueError:  # e.g. an unbalanced "[" in the host
        netloc, _, path = value.split("://", 1)[1].partition("/")
        path = "/" + path if path else ""
    netloc = netloc.rsplit("@", 1)[-1].lower()  # user info is not part of the registry
    if path.startswith(("/v1/", "/v2/")):
        path = path[3:]
    elif path in ("/v1", "/v2"):
        path = ""
    path = path.rstrip("/")
    host, port = split_host_port(netloc)
    if host in DOCKER_HUB_ALIASES and port in ("", "443"):
        host, port = DOCKER_HUB, ""
    return AuthKey(raw=key, host=host, port=port, path=path)


def key_matches(key: AuthKey, image: ImageRef) -> bool:
    """Would the kubelet use credentials stored under ``key`` to pull ``image``?

    ``URLsMatch``: ports equal, the same number of host labels, each label matching as a glob,
    the key's path a prefix of the image's repository path. Docker Hub aliases are one host.
    """
    if key.port != image.port:
        return False
    key_labels = key.host.split(".")
    image_labels = image.host.split(".")
    if len(key_labels) != len(image_labels):
        return False
    if not all(fnmatch.fnmatchcase(i, k) for k, i in zip(key_labels, image_labels, strict=True)):
        return False
    return ("/" + image.path).startswith(key.path)


class Mismatch:
    """Why a key does not serve an image, from the closest miss to the farthest."""

    DOCKER_HUB_DEFAULT = "docker-hub-default"  # the key is Docker Hub, the image is not
    PORT = "port"  # same host, another port
    PATH = "path"  # same host and port, the path is not a prefix
    OTHER_HOST = "other-host"


def mismatch_kind(key: AuthKey, image: ImageRef) -> str:
    if key.is_docker_hub and not image.is_docker_hub:
        return Mismatch.DOCKER_HUB_DEFAULT
    if key.host == image.host and key.port != image.port:
        return Mismatch.PORT
    if key.host == image.host and key.port == image.port:
        return Mismatch.PATH
    return Mismatch.OTHER_HOST


# -- secrets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthEntry:
    """One ``auths`` entry, without its credentials."""

    key: AuthKey
    username: str | None
    email: str | None
    has_password: bool
    has_auth: bool
    redacted: bool  # the bundle's collect replaced the credentials with "REDACTED"

    @property
    def has_credentials(self) -> bool:
        return self.has_auth or (bool(self.username) and self.has_password)


class SecretProblem:
    """Why the kubelet cannot use a secret as an image pull secret."""

    MISSING = "missing"
    WRONG_TYPE = "wrong-type"
    NO_DATA = "no-data"
    UNDECODABLE = "undecodable"
    KUBECTL_19 = "kubectl-1.9-dockercfg"
    NO_ENTRIES = "no-entries"


@dataclass(frozen=True)
class PullSecret:
    """What a pull secret says, safe to print: hosts, user names, never a credential."""

    namespace: str
    name: str
    type: str | None
    data_keys: tuple[str, ...] = ()
    entries: tuple[AuthEntry, ...] = ()
    problem: str | None = None
    detail: str = ""  # the decoder's reason or what is wrong, for the message
    redacted: bool = False
    resource_version: str | None = None
    immutable: bool = False  # `immutable: true`: its data cannot be replaced, only deleted

    @property
    def usable(self) -> bool:
        return self.problem is None

    @property
    def hosts(self) -> list[str]:
        return [e.key.raw for e in self.entries]

    def matching(self, image: ImageRef) -> list[AuthEntry]:
        return [e for e in self.entries if key_matches(e.key, image)]

    @property
    def only_docker_hub(self) -> bool:
        return bool(self.entries) and all(e.key.is_docker_hub for e in self.entries)


def _decode_field(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{what} is not valid base64 ({exc})") from None


def _load_json(raw: bytes, what: str) -> Any:
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        # The message names a position only, never the content.
        raise ValueError(f"{what} is not JSON ({exc.msg} at char {exc.pos})") from None


def _username_of(entry: dict[str, Any]) -> str | None:
    """The ``username`` field, else the user part of ``auth`` (the password is discarded)."""
    user = entry.get("username")
    if isinstance(user, str) and user:
        return user
    auth = entry.get("auth")
    if isinstance(auth, str) and auth and auth != REDACTED:
        try:
            decoded = base64.b64decode(auth, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        if ":" in decoded:
            return decoded.split(":", 1)[0] or None
    return None


def _entries(auths: dict[str, Any]) -> tuple[AuthEntry, ...]:
    out = []
    for key, value in auths.items():
        entry = value if isinstance(value, dict) else {}
        creds = [entry.get(f) for f in CREDENTIAL_FIELDS]
        email = entry.get("email")
        out.append(
            AuthEntry(
                key=normalize_auth_key(str(key)),
                username=_username_of(entry),
                email=email if isinstance(email, str) and email else None,
                has_password=bool(entry.get("password")),
                has_auth=bool(entry.get("auth")),
                redacted=REDACTED in creds,
            )
        )
    return tuple(out)


def decode_pull_secret(secret: dict[str, Any] | None, namespace: str, name: str) -> PullSecret:
    """Decode a secret referenced as ``imagePullSecrets`` the way the kubelet reads it.

    The kubelet (``MakeDockerKeyring``) uses ``.dockerconfigjson`` only in a secret of type
    ``kubernetes.io/dockerconfigjson`` and ``.dockercfg`` only in one of type
    ``kubernetes.io/dockercfg``; anything else is silently ignored. Never raises: every
    problem is in ``problem``/``detail``, which never quote a value.
    """
    if secret is None:
        return PullSecret(namespace, name, None, problem=SecretProblem.MISSING)
    meta = _dict(secret.get("metadata"))
    rv = meta.get("resourceVersion")
    stype = secret.get("type")
    stype = stype if isinstance(stype, str) and stype else "Opaque"  # the API's default
    data = _dict(secret.get("data"))
    base = PullSecret(
        namespace=namespace,
        name=name,
        type=stype,
        data_keys=tuple(sorted(str(k) for k in data)),
        redacted=REDACTED_ANNOTATION in _dict(meta.get("annotations")),
        resource_version=str(rv) if rv is not None else None,
        immutable=secret.get("immutable") is True,
    )
    data_key = PULL_SECRET_TYPES.get(stype)
    if data_key is None:
        # Ignored by the kubelet; what it holds still tells which registry was meant.
        for key in (DOCKERCONFIGJSON_KEY, DOCKERCFG_KEY):
            if data.get(key):
                try:
                    doc = _load_json(_decode_field(data[key], key), key)
                except ValueError:
                    break
                auths = _dict(doc)
                if key == DOCKERCONFIGJSON_KEY or set(auths) == {"auths"}:
                    auths = _dict(auths.get("auths"))
                return replace(base, entries=_entries(auths), problem=SecretProblem.WRONG_TYPE)
        return replace(base, problem=SecretProblem.WRONG_TYPE)
    value = data.get(data_key)
    if not value:
        return replace(base, problem=SecretProblem.NO_DATA, detail=f"it has no {data_key} data")
    try:
        doc = _load_json(_decode_field(value, data_key), data_key)
    except ValueError as exc:
        return replace(base, problem=SecretProblem.UNDECODABLE, detail=str(exc))
    if not isinstance(doc, dict):
        detail = f"{data_key} is JSON but not an object"
        return replace(base, problem=SecretProblem.UNDECODABLE, detail=detail)
    if stype == DOCKERCONFIGJSON_TYPE:
        found = doc.get("auths")
        if found is not None and not isinstance(found, dict):
            detail = f'"auths" in {data_key} is not an object'
            return replace(base, problem=SecretProblem.UNDECODABLE, detail=detail)
        entries = _entries(found or {})
    else:
        nested = doc.get("auths")
        if isinstance(nested, dict) and len(doc) == 1:
            # kubectl 1.9 wrote the new format under the old key (kubernetes#61358).
            return replace(base, entries=_entries(nested), problem=SecretProblem.KUBECTL_19)
        entries = _entries(doc)
    if not entries:
        detail = f"{data_key} names no registry"
        return replace(base, problem=SecretProblem.NO_ENTRIES, detail=detail)
    return replace(base, entries=entries)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


# -- redaction (kdoctor collect) --------------------------------------------------------


def _redact_entry(entry: Any) -> Any:
    if not isinstance(entry, dict):
        return REDACTED
    out: dict[str, Any] = {}
    user = _username_of(entry)
    for key, value in entry.items():
        if key in PUBLIC_ENTRY_FIELDS and isinstance(value, str):
            out[key] = value
        elif value not in (None, ""):
            out[key] = REDACTED
    if user and "username" not in out:
        out["username"] = user
    return out


def _redact_config(doc: Any, legacy: bool) -> Any:
    """Keep hosts and user names; "REDACTED" for every other non-empty value."""
    if not isinstance(doc, dict):
        return None
    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "auths" and isinstance(value, dict):
            out[key] = {host: _redact_entry(entry) for host, entry in value.items()}
        elif legacy:
            out[key] = _redact_entry(value)
        else:
            out[key] = REDACTED  # credsStore, credHelpers, HttpHeaders, …: none needed
    return out


def redact_secret(secret: dict[str, Any]) -> dict[str, Any]:
    """The copy of a secret a bundle may hold (bundle-v1.md), never a value in clear.

    Pull secrets (the ``.dockerconfigjson`` and ``.dockercfg`` data, whatever the secret's type)
    keep their registry hosts, user names and e-mails; passwords, ``auth`` and tokens become
    ``"REDACTED"`` and the payload is base64-encoded again. Every other data
    value is replaced by the empty string — the keys stay, so a reader still sees *which*
    data a secret has (an Opaque secret holding ``.dockerconfigjson`` is a classic mistake).
    ``stringData`` and the ``last-applied-configuration`` annotation (the whole secret in
    clear) are dropped.
    """
    out = copy.deepcopy(secret)
    out.pop("stringData", None)
    meta = out.get("metadata")
    if isinstance(meta, dict):
        annotations = meta.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
        else:
            annotations = {}
        annotations[REDACTED_ANNOTATION] = "values removed by kdoctor collect"
        meta["annotations"] = annotations
    data = out.get("data")
    if not isinstance(data, dict):
        out.pop("data", None)
        return out
    redacted: dict[str, Any] = {}
    for key, value in data.items():
        redacted[key] = ""
        # By name, whatever the type: an Opaque secret holding .dockerconfigjson keeps its
        # hosts too, so the check says the same on the bundle as on the live cluster.
        if key in (DOCKERCONFIGJSON_KEY, DOCKERCFG_KEY) and isinstance(value, str):
            try:
                doc = _load_json(_decode_field(value, key), key)
            except ValueError:
                continue
            clean = _redact_config(doc, legacy=key == DOCKERCFG_KEY)
            if clean is not None:
                text = json.dumps(clean, separators=(",", ":"))
                redacted[key] = base64.b64encode(text.encode()).decode()
    out["data"] = redacted
    return out
