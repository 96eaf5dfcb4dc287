"""Run a command in a pod through the API (``kubectl exec``), bounded in time.

The exec goes over the kubernetes client's own WebSocket transport
(``kubernetes.stream.ws_client``, what ``kubernetes.stream.stream(CoreV1Api.
connect_get_namespaced_pod_exec, …)`` ends up calling): ``GET …/pods/NAME/exec?command=…``
upgraded to the ``v4.channel.k8s.io``/``v5`` protocol, stdout on channel 1, stderr on 2, the
exit Status on 3. It is called directly, with the URL and credentials the run's ApiClient
serialises (:meth:`doctor.facts.kube.LiveCluster.stream_request`), for two reasons: ``stream()``
swaps ``call_api`` on the ApiClient it is given while it opens the stream (a race with the
reads other checks make on the same client at the same time), and ``CoreV1Api`` costs 2 s of
model building to import, for a URL this module can write itself.

Exec is not a write: it changes no object. It is used only by the live probes
(:mod:`doctor.live.probes`, which exec only in its own probe pods). ``kubernetes`` is imported
only when a command is run.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from urllib.parse import quote

from doctor.facts.kube import ApiError, LiveCluster

#: A WebSocket that never answers must not hold a check forever (websocket-client has no
#: connect timeout of its own unless one is set).
CONNECT_TIMEOUT = 10.0

_HANDSHAKE = re.compile(r"Handshake status (\d{3})")


@dataclass(frozen=True)
class ExecResult:
    """How the command ended. ``exit_code`` is None when it did not end within the timeout
    (``timed_out``) or the stream broke before the exit status came."""

    exit_code: int | None
    stdout: str
    stderr: str
    ms: int
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()


def _exit_code(status_text: str) -> int | None:
    """The exit code in the error channel's Status (v4: ``NonZeroExitCode`` cause)."""
    if not status_text.strip():
        return None
    try:
        status = json.loads(status_text)
    except ValueError:
        return None  # v1 protocol: plain error text
    if not isinstance(status, dict):
        return None
    if status.get("status") == "Success":
        return 0
    for cause in (status.get("details") or {}).get("causes") or []:
        if isinstance(cause, dict) and cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message", ""))
            except ValueError:
                return None
    return None


def _api_error(exc: Exception, what: str) -> ApiError:
    """The client's ApiException (status 0 for handshake failures) as an ApiError."""
    status = int(getattr(exc, "status", 0) or 0)
    reason = str(getattr(exc, "reason", "") or exc)
    match = _HANDSHAKE.search(reason)
    if match:
        status = int(match.group(1))
    body = getattr(exc, "body", None)
    message = ""
    text = body if isinstance(body, str) else reason
    json_part = re.search(r"\{.*\}", text, re.DOTALL)
    if json_part:
        try:
            doc = json.loads(json_part.group(0))
            message = doc.get("message", "") if isinstance(doc, dict) else ""
        except ValueError:
            message = ""
    if status == 403:
        return ApiError(f"403 Forbidden: not allowed to create pods/exec ({what}): {message}", 403)
    if status:
        return ApiError(f"API error {status} on exec ({what}): {message or reason[:200]}", status)
    return ApiError(f"exec ({what}) failed: {reason[:300]}")


def exec_in_pod(
    cluster: LiveCluster,
    namespace: str,
    pod: str,
    command: list[str],
    container: str | None = None,
    timeout: float = 10.0,
) -> ExecResult:
    """Run COMMAND in the pod; raises ApiError when the API refuses the exec itself."""
    import websocket
    from kubernetes.stream import ws_client

    if websocket.getdefaulttimeout() is None:
        websocket.setdefaulttimeout(CONNECT_TIMEOUT)
    what = f"{namespace}/{pod}: {' '.join(command)}"
    query = [("command", part) for part in command]
    if container:
        query.append(("container", container))
    query += [("stdin", "false"), ("stdout", "true"), ("stderr", "true"), ("tty", "false")]
    path = f"/api/v1/namespaces/{quote(namespace)}/pods/{quote(pod)}/exec"
    configuration, url, headers = cluster.stream_request(path, query)
    started = time.monotonic()
    try:
        resp = ws_client.websocket_call(  # type: ignore[no-untyped-call]
            configuration, "GET", url, headers=headers, _preload_content=False
        )
    except Exception as exc:  # ApiException (handshake refused), socket errors
        raise _api_error(exc, what) from exc
    stdout: list[str] = []
    stderr: list[str] = []
    deadline = started + timeout
    try:
        while resp.is_open() and time.monotonic() < deadline:
            resp.update(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            if resp.peek_stdout():
                stdout.append(resp.read_stdout())
            if resp.peek_stderr():
                stderr.append(resp.read_stderr())
        timed_out = resp.is_open()
        stdout.append(resp.read_channel(1))  # what arrived with the closing frames
        stderr.append(resp.read_channel(2))
        status_text = "" if timed_out else resp.read_channel(3)
    except Exception as exc:  # the stream broke half way
        elapsed = int((time.monotonic() - started) * 1000)
        return ExecResult(None, "".join(stdout), "".join(stderr) + f"\n({exc})", elapsed)
    finally:
        resp.close()
    elapsed = int((time.monotonic() - started) * 1000)
    return ExecResult(
        None if timed_out else _exit_code(status_text),
        "".join(stdout),
        "".join(stderr),
        elapsed,
        timed_out,
    )
