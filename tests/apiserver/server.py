"""A Kubernetes API server for tests and benchmarks, served from a kdoctor bundle.

Clients (the `kubernetes` Python client, kubectl) talk to it over HTTPS with a bearer token
exactly as they would to kube-apiserver: discovery, get/list/watch with selectors and
pagination, create/update/patch/delete with resourceVersion preconditions, pods/log, and
`kind: Status` errors. Faults can be injected at runtime, and every request is logged so a
test can assert how a client used the API.
"""

from __future__ import annotations

import contextlib
import copy
import json
import secrets
import shutil
import socket
import ssl
import tempfile
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import certs, errors, execws, protobuf, resources, tables
from .errors import ApiError
from .execws import Executor
from .faults import Fault, FaultSet, RequestInfo, fault_from_mapping
from .registry import Registry, decode_continue, load_bundle, new_namespace, server_version
from .resources import ResourceType
from .selectors import SelectorError, parse_field_selector, parse_label_selector
from .store import Obj, Store, meta

__all__ = ["ApiServer", "Fault", "RequestRecord"]

CONTROL_PREFIX = "/_kdoctor/"
_JSON = "application/json"
_PROTOBUF = "application/vnd.kubernetes.protobuf"
_STATUSES = {s.value for s in HTTPStatus}
_PROTOBUF_OPENAPI = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def encode(obj: Any) -> bytes:
    """Compact JSON with a trailing newline, as Go's json.Encoder writes it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


@dataclass
class RequestRecord:
    """One request as the server saw it; `status` is filled in once answered."""

    method: str
    path: str
    query: dict[str, str]
    raw_query: str
    verb: str
    resource: str
    subresource: str
    namespace: str
    name: str
    headers: dict[str, str]
    body: str
    time: float
    status: int = 0
    #: Body bytes sent (0 for streamed answers: watch, exec).
    bytes_out: int = 0

    @property
    def user_agent(self) -> str:
        return self.headers.get("user-agent", "")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "headers"} | {
            "userAgent": self.user_agent
        }


@dataclass
class Response:
    status: int
    body: bytes = b""
    content_type: str = _JSON
    headers: dict[str, str] = field(default_factory=dict)
    stream: Callable[[Callable[[bytes], None]], None] | None = None
    # A 101 answer: the handler sends the headers, then hands the socket to this callable.
    upgrade: Callable[[Any], None] | None = None


@dataclass
class Route:
    """Where a URL points: a fixed endpoint or a resource (collection, object, subresource)."""

    kind: str
    rt: ResourceType | None = None
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    group: str = ""
    version: str = ""
    collection: bool = False


def _route(segments: list[str]) -> Route:
    if not segments:
        return Route("root")
    head = segments[0]
    if len(segments) == 1 and head == "version":
        return Route("version")
    if head in ("healthz", "livez", "readyz"):
        return Route("health")
    if head == "openapi" and len(segments) >= 2:
        return Route("openapi", version=segments[1], name="/".join(segments[2:]))
    if head == "api":
        if len(segments) == 1:
            return Route("api")
        if segments[1] != "v1":
            return Route("notfound")
        if len(segments) == 2:
            return Route("resources", group="", version="v1")
        return _resource_route("", "v1", segments[2:])
    if head == "apis":
        if len(segments) == 1:
            return Route("apis")
        group = segments[1]
        if len(segments) == 2:
            return Route("group", group=group)
        version = segments[2]
        if (group, version) not in resources.GROUP_VERSIONS:
            return Route("notfound")
        if len(segments) == 3:
            return Route("resources", group=group, version=version)
        return _resource_route(group, version, segments[3:])
    return Route("notfound")


def _resource_route(group: str, version: str, rest: list[str]) -> Route:
    namespace = ""
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and group == ""
        and rest[2] in ("status", "finalize")
        and len(rest) == 3
    ):
        rt = resources.find("", "v1", "namespaces")
        return Route("resource", rt, "", rest[1], rest[2], group, version)
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace = rest[1]
        rest = rest[2:]
        rt = resources.find(group, version, rest[0])
        if rt is None or not rt.namespaced:
            return Route("notfound")
    else:
        rt = resources.find(group, version, rest[0])
        if rt is None:
            return Route("notfound")
    if len(rest) == 1:
        return Route("resource", rt, namespace, group=group, version=version, collection=True)
    if len(rest) > 3:
        return Route("notfound")
    name = rest[1]
    sub = rest[2] if len(rest) == 3 else ""
    if rt.namespaced and not namespace:
        return Route("notfound")
    if (
        sub
        and not rt.has_subresource(sub)
        and not (rt.plural == "namespaces" and sub == "finalize")
    ):
        return Route("notfound")
    return Route("resource", rt, namespace, name, sub, group, version)


_VERBS = {
    ("GET", True): "list",
    ("GET", False): "get",
    ("POST", True): "create",
    ("POST", False): "create",
    ("PUT", False): "update",
    ("PATCH", False): "patch",
    ("DELETE", False): "delete",
    ("DELETE", True): "deletecollection",
}


def _truthy(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer that tracks client sockets and threads so stop() can end them."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], api: ApiServer) -> None:
        self.api = api
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.api._track(request)
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"apiserver-{self.server_address[1]}-conn",
            daemon=True,
        )
        self.api._add_thread(thread)
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        self.api._untrack(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client disconnects and failed handshakes are normal here; keep stderr quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300
    server: _HTTPServer

    def setup(self) -> None:
        api = self.server.api
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if api.ssl_context is not None:
            raw = self.request
            raw.settimeout(10)
            tls = api.ssl_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
            self.request = tls
            if not api._retrack(raw, tls):
                raise ConnectionAbortedError("server stopping")
            tls.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        """Requests go to the request log, not stderr."""

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        api = self.server.api
        split = urlsplit(self.path)
        body = self._read_body()
        segments = [unquote(s) for s in split.path.split("/") if s]
        path = "/" + "/".join(segments)
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        if split.path.startswith(CONTROL_PREFIX):
            response = api._control(self.command, segments[1:], self.headers, body)
            self._send(response, self.command == "HEAD")
            return
        route = _route(segments)
        info = self._info(route, path, query)
        record = RequestRecord(
            self.command,
            path,
            query,
            split.query,
            info.verb,
            info.resource,
            info.subresource,
            info.namespace,
            info.name,
            {k.lower(): v for k, v in self.headers.items()},
            body[:65536].decode("utf-8", "replace"),
            time.time(),
        )
        api._log(record)
        faults = api.faults.match(info)
        delay = sum(f.delay for f in faults)
        if delay > 0 and api._stopping.wait(delay):
            self.close_connection = True
            return
        if any(f.hang for f in faults):
            api._stopping.wait()
            self.close_connection = True
            return
        try:
            api._authenticate(self.headers.get("Authorization"))
            status_fault = next((f for f in faults if f.status), None)
            if status_fault is not None:
                raise api._fault_error(status_fault, info, route)
            response = api._dispatch(
                self.command, route, info, query, self.headers, body, raw_query=split.query
            )
        except ApiError as exc:
            response = Response(exc.code, encode(exc.status()), headers=dict(exc.headers))
        except Exception as exc:  # a bug in the fake server must still answer like a server
            api.errors.append(traceback.format_exc())
            err = errors.internal(f"{type(exc).__name__}: {exc}")
            response = Response(500, encode(err.status()))
        if response.stream is None and any(f.truncate for f in faults):
            response.body = response.body[: len(response.body) // 2]
        record.status = response.status
        record.bytes_out = len(response.body)
        if response.upgrade is not None:
            self._upgrade(response)
            return
        self._send(response, self.command == "HEAD")

    def _upgrade(self, response: Response) -> None:
        """Send the 101 head and let the upgraded protocol own the connection."""
        assert response.upgrade is not None
        head = f"HTTP/1.1 {response.status} Switching Protocols\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in response.headers.items()) + "\r\n"
        self.close_connection = True
        try:
            self.wfile.write(head.encode("latin-1"))
            self.wfile.flush()
            response.upgrade(self.connection)
        except OSError:
            pass

    def _info(self, route: Route, path: str, query: dict[str, str]) -> RequestInfo:
        if route.kind != "resource" or route.rt is None:
            return RequestInfo(self.command, path, verb=self.command.lower())
        verb = _VERBS.get((self.command, route.collection), self.command.lower())
        if verb == "list" and _truthy(query.get("watch")):
            verb = "watch"
        return RequestInfo(
            self.command,
            path,
            verb=verb,
            resource=route.rt.plural,
            subresource=route.subresource,
            group=route.rt.group,
            namespace=route.namespace,
            name=route.name,
        )

    def _send(self, response: Response, head_only: bool = False) -> None:
        api = self.server.api
        phrase = HTTPStatus(response.status).phrase if response.status in _STATUSES else ""
        headers = [
            ("Audit-Id", str(uuid.uuid4())),
            ("Cache-Control", "no-cache, private"),
            ("Content-Type", response.content_type),
            ("X-Kubernetes-Pf-Flowschema-Uid", api._flowschema_uid),
            ("X-Kubernetes-Pf-Prioritylevel-Uid", api._priority_uid),
            *response.headers.items(),
            ("Date", self.date_time_string()),
        ]
        if self.close_connection:
            headers.append(("Connection", "close"))
        if response.stream is not None:
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            headers.append(("Content-Length", str(len(response.body))))
        head = f"HTTP/1.1 {response.status} {phrase}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
        if response.stream is None:
            # One write for head and body: a separate small write stalls on delayed ACKs.
            self.wfile.write(head.encode("latin-1") + (b"" if head_only else response.body))
            self.wfile.flush()
            return
        self.wfile.write(head.encode("latin-1"))

        def write(chunk: bytes) -> None:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()

        try:
            response.stream(write)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True


class ApiServer:
    """A fake kube-apiserver on 127.0.0.1 backed by a bundle's cluster/ directory.

    Use as a context manager or call start()/stop(). `store` holds the objects; `faults`
    injects failures; `requests` lists what clients asked for.
    """

    def __init__(
        self,
        bundle_dir: str | Path | None = None,
        *,
        tls: bool = True,
        token: str | None = "kdoctor-test-token",
        port: int = 0,
        strict: bool = True,
        pod_start_delay: float = 0.0,
        fresh_certs: bool = False,
        executor: Executor | None = None,
    ) -> None:
        self.tls = tls
        # What pods/exec runs (see execws.py); a DataPlane swaps in one that runs busybox.
        self.executor: Executor = executor or execws.no_data_plane
        self.fresh_certs = fresh_certs
        self.token = token
        self.port = port
        self.store = Store()
        self.bundle_dir = Path(bundle_dir) if bundle_dir is not None else None
        if self.bundle_dir is not None:
            if not self.bundle_dir.is_dir():
                raise FileNotFoundError(f"bundle directory {self.bundle_dir} does not exist")
            info = load_bundle(self.store, self.bundle_dir, strict=strict)
            self.version = info.version
            self.load_errors = info.skipped
            log_dirs = info.log_dirs
        else:
            self.version = server_version(None)
            self.load_errors = []
            log_dirs = []
            namespaces = resources.lookup("v1", "namespaces")
            for name in ("default", "kube-system", "kube-public"):
                self.store.load(namespaces, new_namespace(name), "2024-01-01T00:00:00Z")
        self.registry = Registry(self.store, log_dirs=log_dirs, pod_start_delay=pod_start_delay)
        self.faults = FaultSet()
        self.errors: list[str] = []
        self.ssl_context: ssl.SSLContext | None = None
        self._requests: list[RequestRecord] = []
        self._requests_lock = threading.Lock()
        self._sockets: set[Any] = set()
        self._threads: list[threading.Thread] = []
        self._sockets_lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Extra listeners on the same 127.0.0.1:PORT inside network namespaces.
        self._netns_listeners: dict[str, tuple[_HTTPServer, threading.Thread]] = {}
        self._tmp: Path | None = None
        self._ca_file: Path | None = None
        self._flowschema_uid = str(uuid.uuid4())
        self._priority_uid = str(uuid.uuid4())

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ApiServer:
        """Bind 127.0.0.1, make the certificate (for TLS) and serve in a background thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._tmp = Path(tempfile.mkdtemp(prefix="kdoctor-apiserver-"))
        if self.tls:
            files = certs.generate(self._tmp / "pki") if self.fresh_certs else certs.shared()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(str(files.server_cert), str(files.server_key))
            ctx.set_alpn_protocols(["http/1.1"])
            self.ssl_context = ctx
            self._ca_file = files.ca_cert
        self._httpd = _HTTPServer(("127.0.0.1", self.port), self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"apiserver-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections (hung and watching ones too), join threads."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping.set()
        with self.store.changed:
            self.store.changed.notify_all()
        httpd.shutdown()
        for netns in list(self._netns_listeners):
            self.stop_listening_in_netns(netns)
        with self._sockets_lock:
            open_sockets = list(self._sockets)
            threads, self._threads = self._threads, []
        for sock in open_sockets:
            with contextlib.suppress(OSError, TypeError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join()
        deadline = time.monotonic() + 5
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self.errors.append(f"connection thread {thread.name} did not stop")
        self.registry.stop()
        self._httpd = None
        self._thread = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def listen_in_netns(self, netns: str) -> None:
        """Serve the same 127.0.0.1:PORT inside network namespace NETNS too (root only), so
        one kubeconfig works from the host and from `ip netns exec NETNS ...`."""
        from .netns import call_in_netns

        if self._httpd is None:
            raise RuntimeError("start the server before listening in a namespace")
        if netns in self._netns_listeners:
            return
        httpd = call_in_netns(netns, _HTTPServer, ("127.0.0.1", self.port), self)
        thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"apiserver-{self.port}-{netns}",
            daemon=True,
        )
        thread.start()
        self._netns_listeners[netns] = (httpd, thread)

    def stop_listening_in_netns(self, netns: str) -> None:
        """Close the listener made by listen_in_netns (connections it accepted stay up
        until stop())."""
        entry = self._netns_listeners.pop(netns, None)
        if entry is None:
            return
        httpd, thread = entry
        httpd.shutdown()
        httpd.server_close()
        thread.join()

    def __enter__(self) -> ApiServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate clients must trust (None for plain HTTP)."""
        return self._ca_file

    def write_kubeconfig(
        self,
        path: str | Path,
        context_name: str = "test",
        *,
        namespace: str | None = None,
        embed_ca: bool = False,
    ) -> Path:
        """Write a kubeconfig (cluster, user with token, context) that points at this server."""
        if self._httpd is None:
            raise RuntimeError("start the server before writing a kubeconfig")
        q = json.dumps
        lines = [
            "apiVersion: v1",
            "kind: Config",
            "clusters:",
            f"- name: {q(context_name)}",
            "  cluster:",
            f"    server: {q(self.url)}",
        ]
        if self._ca_file is not None:
            if embed_ca:
                import base64

                data = base64.b64encode(self._ca_file.read_bytes()).decode()
                lines.append(f"    certificate-authority-data: {q(data)}")
            else:
                lines.append(f"    certificate-authority: {q(str(self._ca_file))}")
        lines += ["users:", f"- name: {q(context_name)}", "  user:"]
        lines.append(f"    token: {q(self.token)}" if self.token else "    {}")
        lines += [
            "contexts:",
            f"- name: {q(context_name)}",
            "  context:",
            f"    cluster: {q(context_name)}",
            f"    user: {q(context_name)}",
        ]
        if namespace:
            lines.append(f"    namespace: {q(namespace)}")
        lines += [f"current-context: {q(context_name)}", "preferences: {}", ""]
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines))
        out.chmod(0o600)
        return out

    # ------------------------------------------------------------------ test helpers

    def get_object(
        self, api_version: str, resource: str, namespace: str | None, name: str
    ) -> Obj | None:
        """A copy of one stored object, or None (e.g. ("apps/v1", "daemonsets", ns, name))."""
        return self.store.get(api_version, resource, namespace, name)

    def list_objects(
        self, api_version: str, resource: str, namespace: str | None = None
    ) -> list[Obj]:
        return self.store.list(api_version, resource, namespace)

    def put_object(self, api_version: str, resource: str, obj: Obj) -> Obj:
        """Create or replace an object directly; bumps resourceVersion, notifies watchers."""
        return self.store.put(api_version, resource, obj)

    def delete_object(
        self, api_version: str, resource: str, namespace: str | None, name: str
    ) -> Obj | None:
        """Remove an object directly (no controller recreates it)."""
        return self.store.delete(api_version, resource, namespace, name)

    def mutate_object(
        self,
        api_version: str,
        resource: str,
        namespace: str | None,
        name: str,
        change: Callable[[Obj], None],
    ) -> Obj:
        """Change a stored object in place through CHANGE, atomically."""
        return self.store.mutate(api_version, resource, namespace, name, change)

    def compact(self) -> None:
        """Forget list snapshots and watch history: old continue tokens now get 410."""
        self.store.compact()

    @property
    def requests(self) -> list[RequestRecord]:
        """Every API request so far (control endpoints excluded), oldest first."""
        with self._requests_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    def requests_matching(
        self, *, method: str | None = None, path: str | None = None, verb: str | None = None
    ) -> list[RequestRecord]:
        """Requests filtered by HTTP method, exact path, or Kubernetes verb."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method)
            and (path is None or r.path == path)
            and (verb is None or r.verb == verb)
        ]

    # ------------------------------------------------------------------ internals

    def _track(self, sock: Any) -> None:
        with self._sockets_lock:
            self._sockets.add(sock)

    def _retrack(self, old: Any, new: Any) -> bool:
        """Swap a raw socket for its TLS wrapper; False once stop() has cut connections."""
        with self._sockets_lock:
            self._sockets.discard(old)
            self._sockets.add(new)
            return not self._stopping.is_set()

    def _add_thread(self, thread: threading.Thread) -> None:
        with self._sockets_lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)

    def _untrack(self, sock: Any) -> None:
        with self._sockets_lock:
            self._sockets.discard(sock)

    def _log(self, record: RequestRecord) -> None:
        with self._requests_lock:
            self._requests.append(record)

    def _authenticate(self, header: str | None) -> None:
        if self.token is None:
            return
        if not header or not header.startswith("Bearer "):
            raise errors.unauthorized()
        if not secrets.compare_digest(header[7:].strip(), self.token):
            raise errors.unauthorized()

    def _fault_error(self, fault: Fault, info: RequestInfo, route: Route) -> ApiError:
        code = int(fault.status or 500)
        if code == 401:
            return errors.unauthorized()
        if code == 403 and fault.message is None:
            if route.rt is not None:
                return errors.forbidden_resource(
                    route.rt, info.verb, info.namespace, info.name, info.subresource, fault.user
                )
            return errors.forbidden_path(info.method.lower(), info.path, fault.user)
        if code == 404 and fault.message is None and route.rt is not None and info.name:
            return errors.not_found(route.rt, info.name)
        if code == 500:
            return errors.internal(fault.message or "injected fault")
        return errors.generic(code, fault.message, retry_after=fault.retry_after)

    def _control(self, method: str, segments: list[str], headers: Any, body: bytes) -> Response:
        """/_kdoctor/faults and /_kdoctor/requests: drive a CLI-run server from outside."""
        try:
            self._authenticate(headers.get("Authorization"))
        except ApiError as exc:
            return Response(exc.code, encode(exc.status()))
        what = segments[0] if segments else ""
        if what == "faults":
            if method in ("PUT", "POST"):
                doc = json.loads(body or b"[]")
                rules = [fault_from_mapping(d) for d in (doc if isinstance(doc, list) else [doc])]
                if method == "PUT":
                    self.faults.clear()
                for rule in rules:
                    self.faults.add(rule)
            elif method == "DELETE":
                self.faults.clear()
            return Response(200, encode([f.to_dict() for f in self.faults.rules]))
        if what == "requests":
            if method == "DELETE":
                self.clear_requests()
            return Response(200, encode([r.to_dict() for r in self.requests]))
        if what == "compact" and method == "POST":
            self.compact()
            return Response(200, encode({"compacted": self.store.resource_version}))
        return Response(404, encode(errors.path_not_found().status()))

    # ------------------------------------------------------------------ dispatch

    def _dispatch(
        self,
        method: str,
        route: Route,
        info: RequestInfo,
        query: dict[str, str],
        headers: Any,
        body: bytes,
        *,
        raw_query: str = "",
    ) -> Response:
        accept = headers.get("Accept") or ""
        if route.kind == "resource":
            self._check_accept(accept)
            if route.subresource == "exec" and route.rt is not None and route.rt.plural == "pods":
                return self._exec(method, route, raw_query, headers)
            return self._resource(method, route, info, query, headers, body)
        if method not in ("GET", "HEAD"):
            raise (
                errors.method_not_allowed() if route.kind != "notfound" else errors.path_not_found()
            )
        if route.kind == "version":
            return Response(200, encode(self.version))
        if route.kind == "health":
            return Response(200, b"ok", "text/plain; charset=utf-8")
        if route.kind == "root":
            paths = [
                "/api",
                "/api/v1",
                "/apis",
                "/healthz",
                "/livez",
                "/openapi/v2",
                "/readyz",
                "/version",
            ]
            paths += [f"/apis/{g}" for g, _ in resources.GROUP_VERSIONS]
            paths += [f"/apis/{g}/{v}" for g, v in resources.GROUP_VERSIONS]
            return Response(200, encode({"paths": sorted(paths)}))
        if route.kind == "api":
            return Response(
                200,
                encode(
                    {
                        "kind": "APIVersions",
                        "versions": ["v1"],
                        "serverAddressByClientCIDRs": [
                            {"clientCIDR": "0.0.0.0/0", "serverAddress": f"127.0.0.1:{self.port}"}
                        ],
                    }
                ),
            )
        if route.kind == "apis":
            return Response(200, encode(resources.api_group_list()))
        if route.kind == "group":
            group = resources.api_group(route.group)
            if group is None:
                raise errors.path_not_found()
            return Response(200, encode(group))
        if route.kind == "resources":
            return Response(200, encode(resources.api_resource_list(route.group, route.version)))
        if route.kind == "openapi":
            return self._openapi(route, accept)
        raise errors.path_not_found()

    def _check_accept(self, accept: str) -> None:
        if not accept:
            return
        for part in accept.split(","):
            media = part.split(";")[0].strip().lower()
            if media in ("*/*", "application/*", _JSON, "application/yaml", "application/json-seq"):
                return
            if media.startswith("application/") and media.endswith("+json"):
                return
        raise errors.not_acceptable()

    def _openapi(self, route: Route, accept: str) -> Response:
        """An empty OpenAPI v2 document: kubectl's client-side validation then skips types."""
        if route.version == "v2" and not route.name:
            if "protobuf" in accept:
                return Response(200, b"", _PROTOBUF_OPENAPI)
            doc = {
                "swagger": "2.0",
                "info": {"title": "Kubernetes", "version": self.version["gitVersion"]},
                "paths": {},
                "definitions": {},
            }
            return Response(200, encode(doc))
        raise errors.path_not_found()

    def _resource(
        self,
        method: str,
        route: Route,
        info: RequestInfo,
        query: dict[str, str],
        headers: Any,
        body: bytes,
    ) -> Response:
        rt = route.rt
        assert rt is not None
        ns = route.namespace
        reg = self.registry
        dry_run = bool(query.get("dryRun"))
        accept = headers.get("Accept") or ""
        content_type = (headers.get("Content-Type") or _JSON).split(";")[0].strip().lower()
        if method in ("POST", "PUT", "DELETE") and body.strip():
            body = self._json_body(content_type, body)
        if route.collection:
            namespace = ns if rt.namespaced and ns else None
            if method in ("GET", "HEAD"):
                if _truthy(query.get("watch")):
                    return self._watch(rt, namespace, query, tables.wants_table(accept))
                page = reg.list(
                    rt,
                    namespace,
                    label_selector=query.get("labelSelector"),
                    field_selector=query.get("fieldSelector"),
                    limit=self._int(query.get("limit"), "limit"),
                    continue_token=query.get("continue"),
                    resource_version=query.get("resourceVersion"),
                )
                if tables.wants_table(accept):
                    body_obj = tables.to_table(
                        rt,
                        page.items,
                        page.body()["metadata"],
                        query.get("includeObject", "Metadata"),
                    )
                    return Response(200, encode(body_obj))
                return Response(200, page.encoded(self.store))
            if method == "POST":
                if rt.namespaced and not ns:
                    raise errors.method_not_allowed()
                return Response(201, encode(reg.create(rt, ns, body, dry_run=dry_run)))
            if method == "DELETE":
                if rt.namespaced and not ns and rt.plural != "namespaces":
                    raise errors.method_not_allowed()
                options = self._delete_options(query, body)
                result = reg.delete_collection(
                    rt,
                    namespace,
                    options,
                    label_selector=query.get("labelSelector"),
                    field_selector=query.get("fieldSelector"),
                    dry_run=dry_run,
                )
                return Response(200, encode(result))
            raise errors.method_not_allowed()
        name = route.name
        sub = route.subresource
        if sub == "log":
            if method != "GET":
                raise errors.method_not_allowed()
            return Response(200, reg.logs(ns, name, query), "text/plain")
        if sub == "eviction":
            if method != "POST":
                raise errors.method_not_allowed()
            reg.evict(ns, name, body, dry_run=dry_run)
            return Response(
                201,
                encode(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "code": 201,
                    }
                ),
            )
        if sub == "binding":
            if method != "POST":
                raise errors.method_not_allowed()
            reg.bind(ns, name, body)
            return Response(
                201,
                encode(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Success",
                        "code": 201,
                    }
                ),
            )
        if sub == "scale":
            return self._scale(method, rt, ns, name, content_type, body, dry_run)
        if sub == "finalize":
            raise errors.method_not_allowed()
        if method in ("GET", "HEAD"):
            obj = reg.get(rt, ns, name)
            if tables.wants_table(accept):
                table_meta = {"resourceVersion": meta(obj).get("resourceVersion", "")}
                return Response(
                    200,
                    encode(
                        tables.to_table(
                            rt, [obj], table_meta, query.get("includeObject", "Metadata")
                        )
                    ),
                )
            return Response(200, encode(obj))
        if method == "PUT":
            return Response(
                200, encode(reg.update(rt, ns, name, body, subresource=sub, dry_run=dry_run))
            )
        if method == "PATCH":
            obj, code = reg.patch(
                rt, ns, name, content_type, body, subresource=sub, dry_run=dry_run
            )
            return Response(code, encode(obj))
        if method == "DELETE" and not sub:
            options = self._delete_options(query, body)
            return Response(200, encode(reg.delete(rt, ns, name, options, dry_run=dry_run)))
        raise errors.method_not_allowed()

    def _exec(self, method: str, route: Route, raw_query: str, headers: Any) -> Response:
        """pods/exec: validate like kube-apiserver, then upgrade to a WebSocket session."""
        assert route.rt is not None
        if method not in ("GET", "POST"):
            raise errors.method_not_allowed()
        pod = copy.deepcopy(self.registry.get(route.rt, route.namespace, route.name))
        multi = parse_qs(raw_query, keep_blank_values=True)
        command = multi.get("command", [])
        want = {k: _truthy((multi.get(k) or [""])[0]) for k in ("stdin", "stdout", "stderr")}
        tty = _truthy((multi.get("tty") or [""])[0])
        spec = pod.get("spec") or {}
        names = [str(c.get("name")) for c in spec.get("containers") or [] if isinstance(c, dict)]
        others = [
            str(c.get("name"))
            for key in ("initContainers", "ephemeralContainers")
            for c in spec.get(key) or []
            if isinstance(c, dict)
        ]
        container = (multi.get("container") or [""])[0]
        if not container:
            if len(names) != 1:
                raise errors.bad_request(
                    f"a container name must be specified for pod {route.name}, "
                    f"choose one of: [{' '.join(names)}]"
                )
            container = names[0]
        elif container not in names + others:
            raise errors.bad_request(f"container {container} is not valid for pod {route.name}")
        if not command:
            raise errors.bad_request("you must specify at least 1 command")
        if not any(want.values()):
            raise errors.bad_request("you must specify at least one of stdin, stdout, stderr")
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            raise errors.bad_request(
                f"cannot exec into a container in a completed pod; current phase is {phase}"
            )
        if not spec.get("nodeName"):
            raise errors.bad_request(f"pod {route.name} does not have a host assigned")
        if phase != "Running":
            raise errors.bad_request(
                f'unable to upgrade connection: container not found ("{container}")'
            )
        upgrade = (headers.get("Upgrade") or "").lower()
        key = headers.get("Sec-WebSocket-Key")
        if upgrade != "websocket" or not key:
            raise errors.bad_request("Upgrade request required")
        protocol = execws.choose_protocol(headers.get("Sec-WebSocket-Protocol"))
        if protocol is None:
            raise errors.bad_request(
                "unable to upgrade: no supported WebSocket subprotocol among "
                f"{headers.get('Sec-WebSocket-Protocol')!r}"
            )
        reply = {
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Accept": execws.accept_key(key),
        }
        if protocol:
            reply["Sec-WebSocket-Protocol"] = protocol
        request = execws.ExecRequest(
            pod=pod,
            namespace=route.namespace,
            name=route.name,
            container=container,
            command=list(command),
            tty=tty,
        )
        executor = self.executor

        def session(sock: Any) -> None:
            execws.run_session(
                sock,
                protocol or execws.V1,
                executor,
                request,
                want_stdin=want["stdin"],
                want_stdout=want["stdout"],
                want_stderr=want["stderr"],
                stopping=self._stopping,
            )

        return Response(101, headers=reply, upgrade=session)

    def _scale(
        self,
        method: str,
        rt: ResourceType,
        ns: str,
        name: str,
        content_type: str,
        body: bytes,
        dry_run: bool,
    ) -> Response:
        from .patch import PatchError, json_patch, merge_patch

        reg = self.registry
        if method == "GET":
            return Response(200, encode(reg.scale(rt, ns, name)))

        def change(current: Obj) -> Obj:
            try:
                doc = json.loads(body or b"null")
            except ValueError as exc:
                raise errors.bad_request(
                    f"couldn't get version/kind; json parse error: {exc}"
                ) from exc
            if method == "PUT":
                return doc if isinstance(doc, dict) else {}
            try:
                if content_type == "application/json-patch+json":
                    result = json_patch(current, doc)
                else:
                    result = merge_patch(current, doc)
            except PatchError as exc:
                raise errors.invalid() from exc
            return result if isinstance(result, dict) else {}

        if method not in ("PUT", "PATCH"):
            raise errors.method_not_allowed()
        return Response(200, encode(reg.set_scale(rt, ns, name, change, dry_run=dry_run)))

    @staticmethod
    def _json_body(content_type: str, body: bytes) -> bytes:
        """The request body as JSON; typed kubectl clients send protobuf for some kinds."""
        if content_type == _PROTOBUF:
            try:
                return encode(protobuf.decode(body))
            except protobuf.ProtobufError as exc:
                raise errors.unsupported_body(content_type, str(exc)) from exc
        if content_type in (_JSON, "application/yaml", "*/*", ""):
            return body
        raise errors.unsupported_body(content_type)

    @staticmethod
    def _int(value: str | None, name: str) -> int:
        if value in (None, ""):
            return 0
        try:
            number = int(value)
        except ValueError as exc:
            raise errors.bad_request(
                f'strconv.ParseInt: parsing "{value}": invalid syntax'
            ) from exc
        if number < 0:
            raise errors.bad_request(f"{name}: must be non-negative")
        return number

    @staticmethod
    def _delete_options(query: dict[str, str], body: bytes) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if "gracePeriodSeconds" in query:
            options["gracePeriodSeconds"] = ApiServer._int(
                query["gracePeriodSeconds"], "gracePeriodSeconds"
            )
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "orphanDependents" in query:
            options["orphanDependents"] = _truthy(query["orphanDependents"])
        if body.strip():
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise errors.bad_request(
                    f"couldn't get version/kind; json parse error: {exc}"
                ) from exc
            if isinstance(doc, dict):
                options.update({k: v for k, v in doc.items() if v is not None})
        return options

    # ------------------------------------------------------------------ watch

    def _watch(
        self, rt: ResourceType, namespace: str | None, query: dict[str, str], as_table: bool
    ) -> Response:
        """A chunked stream of watch events, one JSON object per line (Table rows for
        `kubectl get -w`, column definitions on the first event only, as the real one)."""
        headers_sent = False
        include = query.get("includeObject", "Metadata")

        def event(kind: str, obj: Obj) -> bytes:
            nonlocal headers_sent
            if not as_table or kind in ("ERROR", "BOOKMARK"):
                return encode({"type": kind, "object": obj})
            table = tables.to_table(
                rt, [obj], {"resourceVersion": meta(obj).get("resourceVersion", "")}, include
            )
            if headers_sent:
                table["columnDefinitions"] = []
            headers_sent = True
            return encode({"type": kind, "object": table})

        try:
            label_match = parse_label_selector(query.get("labelSelector"))
            field_match = parse_field_selector(rt, query.get("fieldSelector"))
        except SelectorError as exc:
            raise errors.bad_request(str(exc)) from exc
        rv_param = query.get("resourceVersion", "")
        if rv_param not in ("", "0") and not rv_param.isdigit():
            raise errors.bad_request(
                f'resourceVersion: Invalid value: "{rv_param}": must be an integer'
            )
        if query.get("continue"):
            decode_continue(query["continue"])
        timeout = query.get("timeoutSeconds")
        deadline = time.monotonic() + float(timeout) if timeout and timeout.isdigit() else None
        send_initial = _truthy(query.get("sendInitialEvents"))
        bookmarks = _truthy(query.get("allowWatchBookmarks"))

        def matches(obj: Obj | None) -> bool:
            if obj is None:
                return False
            m = meta(obj)
            if namespace is not None and m.get("namespace") != namespace:
                return False
            labels = m.get("labels") if isinstance(m.get("labels"), dict) else {}
            return bool(label_match(labels or {}) and field_match(obj))

        def stream(write: Callable[[bytes], None]) -> None:
            store = self.store
            with store.lock:
                if rv_param in ("", "0") or send_initial:
                    rv = store.resource_version
                    initial = [o for o in store.rlist(rt, namespace) if matches(o)]
                else:
                    rv = int(rv_param)
                    initial = []
                    if rv < store.compacted_revision:
                        status = errors.expired(
                            f"too old resource version: {rv} ({store.compacted_revision})"
                        ).status()
                        write(encode({"type": "ERROR", "object": status}))
                        return
            for obj in initial:
                write(event("ADDED", obj))
            if send_initial and bookmarks:
                mark = {
                    "kind": rt.kind,
                    "apiVersion": rt.api_version,
                    "metadata": {
                        "resourceVersion": str(rv),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }
                write(encode({"type": "BOOKMARK", "object": mark}))
            while not self._stopping.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    return
                with store.changed:
                    events = store.events_after(rv)
                    if not events:
                        store.changed.wait(0.2)
                        continue
                for change in events:
                    rv = change.rv
                    if change.key != rt.key:
                        continue
                    now_match = matches(change.obj)
                    was_match = matches(change.old) if change.type == "MODIFIED" else now_match
                    if change.type == "MODIFIED" and now_match != was_match:
                        kind = "ADDED" if now_match else "DELETED"
                    elif now_match:
                        kind = change.type
                    else:
                        continue
                    write(event(kind, change.obj))

        return Response(200, stream=stream)
