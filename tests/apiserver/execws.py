"""pods/exec over WebSocket, as kube-apiserver (and the kubelet behind it) serves it.

The client sends `GET .../pods/NAME/exec?command=..&command=..&container=..&stdin=..` with
`Upgrade: websocket` and a list of `Sec-WebSocket-Protocol`s; the server picks the first it
knows, answers 101 and then speaks in frames whose first byte is the channel (0 stdin,
1 stdout, 2 stderr, 3 error, 4 resize; 255 is v5's close-stream signal). When the command ends
the error channel carries a Status (v4/v5) or the error text (v1), then a close frame follows.

What runs is an *executor*: a callable taking an ExecRequest and returning an ExecResult. It
may stream output through `req.write_stdout`/`req.write_stderr` while it runs, or just return
the bytes. `no_data_plane` is the default: nothing can run, exit code 126.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import select
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

__all__ = [
    "PROTOCOLS",
    "ExecRequest",
    "ExecResult",
    "Executor",
    "accept_key",
    "choose_protocol",
    "no_data_plane",
    "run_session",
]

_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V1 = "channel.k8s.io"
B64 = "base64.channel.k8s.io"
# Order of preference does not matter: the first protocol the *client* lists that we know wins.
PROTOCOLS = (V5, V4, V1, B64)

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255
_OP_CONT, _OP_TEXT, _OP_BINARY, _OP_CLOSE, _OP_PING, _OP_PONG = 0, 1, 2, 8, 9, 10
_CHUNK = 32 * 1024


@dataclass
class ExecResult:
    """How a command ended. `message` (exit code then ignored) means it could not be run at
    all: the error channel gets an InternalError Status with that text, as when the runtime
    fails to start the process."""

    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    message: str | None = None


@dataclass
class ExecRequest:
    """One exec call: the stored pod, the chosen container, the command and the streams."""

    pod: dict[str, Any]
    namespace: str
    name: str
    container: str
    command: list[str]
    tty: bool = False
    stdin: BinaryIO | None = None
    write_stdout: Callable[[bytes], None] = field(default=lambda _b: None)
    write_stderr: Callable[[bytes], None] = field(default=lambda _b: None)
    # Set when the client went away or the server stops: a long command should end.
    cancelled: threading.Event = field(default_factory=threading.Event)


Executor = Callable[[ExecRequest], ExecResult]


def no_data_plane(req: ExecRequest) -> ExecResult:
    """The default executor: the fake server has no containers to run anything in."""
    return ExecResult(exit_code=126, stderr=b"no data plane\n")


def accept_key(key: str) -> str:
    """Sec-WebSocket-Accept for a client's Sec-WebSocket-Key (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1((key.strip() + _GUID).encode()).digest()).decode()


def choose_protocol(header: str | None) -> str | None:
    """The first subprotocol the client offers that we speak; "" when it offered none
    (the server then speaks channel.k8s.io without naming it); None when none is known."""
    offered = [p.strip() for p in (header or "").split(",") if p.strip()]
    if not offered:
        return ""
    for proto in offered:
        if proto in PROTOCOLS:
            return proto
    return None


def exit_status(command: list[str], result: ExecResult) -> dict[str, Any] | None:
    """The v4 error-channel Status for RESULT; None means success."""
    if result.message is not None:
        return {
            "metadata": {},
            "status": "Failure",
            "message": result.message,
            "reason": "InternalError",
            "details": {"causes": [{"message": result.message}]},
            "code": 500,
        }
    if result.exit_code == 0:
        return None
    code = result.exit_code
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: error executing command "
            f"[{' '.join(command)}], exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


class _Conn:
    """Server side of a WebSocket on a (possibly TLS) socket; sends from many threads."""

    def __init__(self, sock: socket.socket, stopping: threading.Event) -> None:
        self.sock = sock
        self.stopping = stopping
        self.lock = threading.Lock()  # one TLS object must not be read and written at once
        self.buf = b""
        self.closed_sent = False
        self.broken = False

    def send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 127, n)
        with self.lock:
            if self.broken or self.closed_sent:
                return
            try:
                self.sock.settimeout(30)
                self.sock.sendall(head + payload)
            except OSError:
                self.broken = True
                return
            if opcode == _OP_CLOSE:
                self.closed_sent = True

    def _fill(self) -> bool:
        """Read more bytes into the buffer; False on EOF, error or server stop."""
        while not self.stopping.is_set() and not self.broken:
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
            if not pending:
                try:
                    ready, _, _ = select.select([self.sock], [], [], 0.1)
                except (OSError, ValueError):
                    return False
                if not ready:
                    continue
            with self.lock:
                try:
                    self.sock.settimeout(0.2)
                    data = self.sock.recv(65536)
                except (TimeoutError, ssl.SSLWantReadError, BlockingIOError):
                    continue
                except OSError:
                    return False
            if not data:
                return False
            self.buf += data
            return True
        return False

    def _take(self, n: int) -> bytes | None:
        while len(self.buf) < n:
            if not self._fill():
                return None
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes] | None:
        """One whole message (continuations joined): (opcode, payload); None on EOF."""
        opcode: int | None = None
        parts: list[bytes] = []
        while True:
            head = self._take(2)
            if head is None:
                return None
            fin, op = head[0] & 0x80, head[0] & 0x0F
            masked, n = head[1] & 0x80, head[1] & 0x7F
            if n == 126:
                ext = self._take(2)
                if ext is None:
                    return None
                n = struct.unpack("!H", ext)[0]
            elif n == 127:
                ext = self._take(8)
                if ext is None:
                    return None
                n = struct.unpack("!Q", ext)[0]
            mask = self._take(4) if masked else b""
            if mask is None:
                return None
            data = self._take(n) if n else b""
            if data is None:
                return None
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            if op >= 8:  # control frames may sit between fragments
                return op, data
            if op != _OP_CONT:
                opcode = op
            parts.append(data)
            if fin:
                return (opcode if opcode is not None else _OP_BINARY), b"".join(parts)


def run_session(
    sock: socket.socket,
    protocol: str,
    executor: Executor,
    request: ExecRequest,
    *,
    want_stdin: bool,
    want_stdout: bool,
    want_stderr: bool,
    stopping: threading.Event,
) -> ExecResult | None:
    """Speak the exec protocol on an upgraded connection until the command ends."""
    conn = _Conn(sock, stopping)
    text = protocol == B64

    def send_channel(channel: int, data: bytes) -> None:
        for start in range(0, max(len(data), 1), _CHUNK):
            piece = data[start : start + _CHUNK]
            if not piece and data:
                break
            if text:
                conn.send(_OP_TEXT, str(channel).encode() + base64.b64encode(piece))
            else:
                conn.send(_OP_BINARY, bytes([channel]) + piece)

    def write_stdout(data: bytes) -> None:
        if data and want_stdout:
            send_channel(STDOUT, data)

    def write_stderr(data: bytes) -> None:
        if not data:
            return
        if request.tty:
            write_stdout(data)
        elif want_stderr:
            send_channel(STDERR, data)

    stdin_w: int | None = None
    if want_stdin:
        r, stdin_w = os.pipe()
        request.stdin = os.fdopen(r, "rb", buffering=0)
    request.write_stdout = write_stdout
    request.write_stderr = write_stderr
    peer_closed = threading.Event()

    def close_stdin() -> None:
        nonlocal stdin_w
        if stdin_w is not None:
            with contextlib.suppress(OSError):
                os.close(stdin_w)
            stdin_w = None

    def reader() -> None:
        try:
            while True:
                frame = conn.recv_frame()
                if frame is None:
                    request.cancelled.set()
                    return
                op, data = frame
                if op == _OP_PING:
                    conn.send(_OP_PONG, data)
                elif op == _OP_CLOSE:
                    peer_closed.set()
                    conn.send(_OP_CLOSE, data[:2] or struct.pack("!H", 1000))
                    if not done.is_set():
                        request.cancelled.set()
                    return
                elif op in (_OP_BINARY, _OP_TEXT) and data:
                    if text:
                        try:
                            channel = int(chr(data[0]))
                            payload = base64.b64decode(data[1:])
                        except ValueError:
                            continue
                    else:
                        channel, payload = data[0], data[1:]
                    if channel == CLOSE and protocol == V5:
                        if payload[:1] == bytes([STDIN]):
                            close_stdin()
                    elif channel == STDIN and stdin_w is not None and payload:
                        try:
                            os.write(stdin_w, payload)
                        except OSError:
                            close_stdin()
        finally:
            close_stdin()

    done = threading.Event()
    thread = threading.Thread(target=reader, name="exec-ws-reader", daemon=True)
    thread.start()
    result: ExecResult | None = None
    try:
        try:
            result = executor(request)
        except Exception as exc:  # an executor bug still ends the stream like a server would
            result = ExecResult(message=f"error executing command: {type(exc).__name__}: {exc}")
        done.set()
        write_stdout(result.stdout)
        write_stderr(result.stderr)
        status = exit_status(request.command, result)
        if protocol in (V4, V5):
            send_channel(
                ERROR,
                json.dumps(
                    status or {"metadata": {}, "status": "Success"}, separators=(",", ":")
                ).encode(),
            )
        elif status is not None:
            send_channel(ERROR, str(status["message"]).encode())
        conn.send(_OP_CLOSE, struct.pack("!H", 1000))
        peer_closed.wait(2)
    finally:
        done.set()
        close_stdin()
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        thread.join(3)
        if request.stdin is not None:
            with contextlib.suppress(OSError):
                request.stdin.close()
    return result
