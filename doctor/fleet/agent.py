"""``kdoctor agent``: what each agent pod of ``kdoctor fleet`` runs (not for people).

``kdoctor agent``        the container's main process: says it is ready and idles until
                         SIGTERM (the pod is the place fleet execs into; it makes no API call).
``kdoctor agent --run``  what fleet execs: collect this node's bundle from the host mounted at
                         ``/host`` (files) and through ``nsenter -t 1 -m -n`` into the host's
                         mount and network namespaces (``iptables-save``, ``nft``, ``systemctl``,
                         ``docker info``: a file is not enough for those), measure
                         ``cluster.node-ports`` towards the targets fleet hands over in
                         ``--targets`` (JSON; agents read no API), and write the bundle as a
                         base64 tar.gz to stdout (exec's stdout is text on the wire).

The agent has no credentials (``automountServiceAccountToken: false``): it cannot list
anything even if it tried.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from doctor.fleet import reachability

if TYPE_CHECKING:
    from doctor.core.sources import CommandOutput

HOST_ROOT_ENV = "KDOCTOR_HOST_ROOT"
NODE_NAME_ENV = "KDOCTOR_NODE_NAME"
DEFAULT_HOST_ROOT = "/host"
REACHABILITY_FILE = "reachability.json"
#: The bundle stream starts with this line, so fleet can tell it from noise on stdout.
STREAM_HEADER = "kdoctor-agent-bundle/v1"


def node_name() -> str:
    return os.environ.get(NODE_NAME_ENV) or socket.gethostname()


def host_root() -> Path:
    root = Path(os.environ.get(HOST_ROOT_ENV) or DEFAULT_HOST_ROOT)
    return root if root.is_dir() else Path("/")


def idle() -> int:
    """The container's main process: ready line on the log, then wait for SIGTERM."""
    done = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"kdoctor agent ready on {node_name()} (host at {host_root()})", flush=True)
    while not done.wait(3600):
        pass
    return 0


def host_facts(root: Path, host_pid: int | None) -> Any:
    """Node facts of the host: files under ROOT, commands in the host's namespaces."""
    from doctor.core.errors import FactError, FactMissing
    from doctor.core.sources import CommandOutput
    from doctor.facts.node import COMMAND_TIMEOUT, LiveNodeFacts

    class HostNodeFacts(LiveNodeFacts):
        """LiveNodeFacts whose commands run through ``nsenter`` in the host's mount and
        network namespaces: the host's own binaries, against the host's own netfilter."""

        def _command(self, bundle_name: str, argv: list[str]) -> CommandOutput:
            if host_pid is None:
                return super()._command(bundle_name, argv)
            display = " ".join(argv)
            full = ["nsenter", f"--target={host_pid}", "--mount", "--net", "--", *argv]
            try:
                proc = subprocess.run(
                    full, capture_output=True, timeout=COMMAND_TIMEOUT,
                    stdin=subprocess.DEVNULL, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired as exc:
                raise FactError(f"`{display}` did not finish within {COMMAND_TIMEOUT:g}s") from exc
            except OSError as exc:
                raise FactError(f"nsenter could not run: {exc.strerror or exc}") from exc
            stderr = proc.stderr.decode("utf-8", "replace").strip()
            if proc.returncode in (126, 127) and "failed to execute" in stderr:
                raise FactMissing(f"{argv[0]} is not installed on the host")
            if proc.returncode != 0:
                detail = stderr.splitlines()[-1] if stderr else f"exit status {proc.returncode}"
                raise FactError(f"`{display}` failed: {detail}")
            return CommandOutput(stdout=proc.stdout.decode("utf-8", "replace"), source=display)

    return HostNodeFacts(root)


def collect(out: Path, targets: list[reachability.Target], timeout: float) -> dict[str, Any]:
    """This node's bundle in OUT: host files, host commands, reachability.json."""
    from doctor.facts.collect import collect_node

    root = host_root()
    # Through /host the host's namespaces are PID 1's (hostPID); run directly on a host
    # (root /), commands run as they are.
    host_pid = 1 if root != Path("/") else None
    measured: list[dict[str, Any]] = []
    worker = threading.Thread(
        target=lambda: measured.extend(reachability.measure(targets, timeout)), daemon=True
    )
    worker.start()  # the probes wait on the network while the files are copied
    manifest = collect_node(out, root, facts=host_facts(root, host_pid), node=node_name())
    worker.join()
    commands = out / "commands"
    commands.mkdir(parents=True, exist_ok=True)
    (commands / REACHABILITY_FILE).write_text(json.dumps(measured, indent=1) + "\n")
    manifest["agent"] = {"host_root": str(root), "targets": len(targets)}
    (out / "kdoctor-bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def pack(directory: Path) -> str:
    """DIRECTORY as the text fleet reads back: header line, base64 of a tar.gz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(directory.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(directory)), recursive=False)
    return STREAM_HEADER + "\n" + base64.b64encode(buffer.getvalue()).decode() + "\n"


def unpack(text: str, into: Path) -> None:
    """The agent's stdout into directory INTO; ValueError when it is not a bundle stream."""
    header, _, body = text.lstrip().partition("\n")
    if header.strip() != STREAM_HEADER:
        raise ValueError(f"not a kdoctor agent bundle (starts with {text[:60]!r})")
    try:
        data = base64.b64decode("".join(body.split()), validate=True)
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            into.mkdir(parents=True, exist_ok=True)
            tar.extractall(into, filter="data")
    except (ValueError, tarfile.TarError, OSError, EOFError) as exc:
        raise ValueError(f"the agent's bundle is damaged: {exc}") from exc


def parse_targets(text: str) -> list[reachability.Target]:
    doc = json.loads(text)
    if not isinstance(doc, list):
        raise ValueError("--targets: a JSON list of {node, ip, ports}")
    return [reachability.Target.from_json(item) for item in doc]


def run(targets_json: str, timeout: float) -> int:
    """``kdoctor agent --run``: the bundle on stdout; problems on stderr, exit 3."""
    try:
        targets = parse_targets(targets_json)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"kdoctor agent: error: bad --targets: {exc}", file=sys.stderr)
        return 3
    with tempfile.TemporaryDirectory(prefix="kdoctor-agent-") as tmp:
        out = Path(tmp) / "bundle"
        out.mkdir()
        collect(out, targets, timeout)
        sys.stdout.write(pack(out))
        sys.stdout.flush()
    return 0
