"""node.docker.drift: bundles, bad input, a real dockerd, and the fix through the CLI.

- Bundles and the bad-input corpus run the CLI in a subprocess (``python -m doctor check
  --bundle DIR --only node.docker.drift --format json``) and validate the report.
- The real-daemon tests start Debian's ``/usr/sbin/dockerd`` by hand, with flags the test
  writes itself for the unit it also writes (the check's parser is not used to compute them),
  and point ``docker info`` at it with ``DOCKER_HOST``. They need root; they are skipped
  with the reason otherwise. Three daemon starts at most; each is stopped through its
  pidfile and its directories removed.
- systemd is not PID 1 here, so the fix tests put a ``systemctl`` shim first on PATH that
  appends its arguments to a log: the tests assert the exact commands kdoctor ran at that
  process boundary and the files it wrote under ``--root``. The re-check after the fix has no
  daemon to ask (``DOCKER_HOST`` names a socket nobody listens on), so it compares the
  configuration files only, and its summary says so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from checks.node_docker_drift import FlagUse, go_format, parse_dockerd_args
from doctor.parse.systemd import Arg, Origin
from tests.conftest import BAD_INPUT, BUNDLES, check_json, is_root, kdoctor, result_of

CHECK = "node.docker.drift"
VENDOR = "/usr/lib/systemd/system/docker.service"
SYSCONFIG = "/etc/sysconfig/docker"
DIRECTIVES = "the following directives are specified both as a flag and in the configuration file: "


def bundle_result(path: Path) -> tuple[int, dict[str, Any]]:
    code, report = check_json("--bundle", str(path), "--only", CHECK)
    return code, result_of(report, CHECK)


def by_setting(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["evidence"]["setting"]: f for f in result["findings"] if "setting" in f["evidence"]}


# -- bundles ------------------------------------------------------------------------------


def test_centos_112_daemon_not_restarted_after_sysconfig_edits() -> None:
    """The seed's node: registry and proxy in /etc/sysconfig/docker, daemon from before."""
    code, result = bundle_result(BUNDLES / "docker-1.12-centos")
    assert code == 2 and result["status"] == "fail"
    settings = by_setting(result)
    assert set(settings) == {"insecure-registries", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}
    registry = settings["insecure-registries"]
    assert registry["severity"] == "fail"
    assert registry["evidence"]["configured"] == ["nexus.lab:5000"]
    assert registry["evidence"]["configured_by"] == [
        f"{VENDOR}:28 ($INSECURE_REGISTRY from {SYSCONFIG}:25)"
    ]
    assert registry["evidence"]["docker_info"] == []
    assert registry["evidence"]["docker_info_source"] == "commands/docker-info.json"
    proxy = settings["HTTP_PROXY"]["evidence"]
    assert proxy["configured_by"][0].startswith(f"{SYSCONFIG}:49 (HTTP_PROXY; EnvironmentFile=")
    assert "ExecStart need not name it" in proxy["configured_by"][0]
    assert result["summary"].startswith("the running daemon differs from its configuration")
    # the files are consistent: the fix only restarts
    plan = result["fix"]["plan"]
    assert plan[-2:] == ["systemctl daemon-reload", "systemctl restart docker"]
    assert not any(line.startswith("write ") for line in plan)
    assert result["fix"]["safety"] == "unsafe"


def test_centos_113_flag_and_daemon_json_conflict() -> None:
    code, result = bundle_result(BUNDLES / "docker-1.13-centos")
    assert code == 2 and result["status"] == "fail"
    messages: dict[str, list[dict[str, Any]]] = {"fail": [], "warn": []}
    for finding in result["findings"]:
        messages[finding["severity"]].append(finding)
    (conflict,) = messages["fail"]
    assert conflict["message"] == (
        "unable to configure the Docker daemon with file /etc/docker/daemon.json: "
        + DIRECTIVES
        + "exec-opts: (from flag: [native.cgroupdriver=systemd], from file: "
        "[native.cgroupdriver=systemd])"
    )
    (detail,) = conflict["evidence"]["conflicts"]
    assert detail["flag_set_by"] == [f"{VENDOR}:21"]
    assert detail["file"] == "/etc/docker/daemon.json:2"
    (unused,) = messages["warn"]
    assert unused["message"].startswith(f"DOCKER_OPTS is set in {SYSCONFIG}:34 but docker.service")
    assert unused["evidence"]["loaded_by"] == f"{VENDOR}:12"
    # the daemon still runs from before the edits: docker info agrees with the rest
    assert not by_setting(result)
    plan = "\n".join(result["fix"]["plan"])
    assert '-    "exec-opts": ["native.cgroupdriver=systemd"]' in plan
    assert "+{}" in plan
    assert "+ExecStart=\n" in plan
    assert "$INSECURE_REGISTRY $REGISTRIES $DOCKER_OPTS\n" in plan


def test_docker_ce_dropins_second_execstart_and_unread_sysconfig() -> None:
    code, result = bundle_result(BUNDLES / "docker-ce-dropins")
    assert code == 2
    first = result["findings"][0]
    assert first["message"] == (
        "docker.service has more than one ExecStart= setting, which is only allowed for "
        "Type=oneshot services. Refusing."
    )
    assert [e["at"] for e in first["evidence"]["ExecStart"]] == [
        f"{VENDOR}:14",
        "/etc/systemd/system/docker.service.d/insecure-registry.conf:2",
    ]
    (unread,) = [f for f in result["findings"] if f["resource"] == SYSCONFIG]
    assert unread["severity"] == "warn"
    assert "does not load it" in unread["message"]
    assert set(unread["evidence"]["variables"]) == {"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}
    assert unread["evidence"]["proxy_environment_of_dockerd"] == {
        "HTTP_PROXY": "http://proxy.lab:3128"
    }
    registry = by_setting(result)["insecure-registries"]
    assert registry["evidence"]["configured_by"] == [
        "/etc/systemd/system/docker.service.d/insecure-registry.conf:2"
    ]
    plan = result["fix"]["plan"]
    assert "+++ /etc/systemd/system/docker.service.d/kdoctor.conf" in plan
    assert "+EnvironmentFile=-/etc/sysconfig/docker" in plan
    assert (
        "+ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock "
        "--insecure-registry nexus.lab:5000"
    ) in plan


@pytest.mark.parametrize(
    "bundle", ["healthy-node", "centos7-iptables-services", "centos7-firewalld"]
)
def test_consistent_nodes_are_ok(bundle: str) -> None:
    _code, result = bundle_result(BUNDLES / bundle)
    assert result["status"] == "ok", result
    assert result["findings"] == [] and result["fix"] is None
    assert result["summary"].startswith(
        "Docker configuration and daemon agree (insecure-registries"
    )


BAD_CASES = {
    "daemon-json-invalid": "/etc/docker/daemon.json: invalid JSON: Expecting property name",
    "daemon-json-binary": "/etc/docker/daemon.json: binary data",
    "daemon-json-not-object": "/etc/docker/daemon.json: not a JSON object",
    "unit-unterminated-quote": f'{VENDOR}:14: ExecStart= has unterminated " quote',
    "unit-binary": f"{VENDOR}: binary data",
    "unit-truncated": f"{VENDOR}:18: file ends inside a continued line",
    "docker-info-invalid": "commands/docker-info.json: invalid JSON: Unterminated string",
    "docker-info-not-object": "commands/docker-info.json: not a JSON object",
}


def test_bad_input_corpus_is_complete() -> None:
    cases = {p.name for p in (BAD_INPUT / CHECK).iterdir() if p.is_dir()}
    assert cases == set(BAD_CASES)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_an_error_naming_the_file_and_reason(case: str) -> None:
    code, result = bundle_result(BAD_INPUT / CHECK / case)
    assert code == 3
    assert result["status"] == "error"
    assert result["summary"].startswith(BAD_CASES[case]), result["summary"]


def make_bundle(tmp_path: Path, files: dict[str, str]) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "host").mkdir(parents=True)
    (bundle / "kdoctor-bundle.json").write_text(
        '{"format":"kdoctor-bundle","version":1,"node":"n","collected_at":"2017-04-10T10:00:00Z"}'
    )
    for rel, text in files.items():
        path = bundle / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return bundle


def test_no_docker_at_all_is_skipped(tmp_path: Path) -> None:
    code, result = bundle_result(make_bundle(tmp_path, {}))
    assert code == 3 and result["status"] == "skip"  # nothing decided
    assert result["summary"].startswith("Docker is not installed: no docker.service unit")
    assert "commands/docker-info.json" in result["summary"]


def test_without_docker_info_the_files_are_compared_and_it_says_so(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    shutil.copytree(BUNDLES / "docker-1.13-centos", bundle, symlinks=True)
    (bundle / "commands/docker-info.json").unlink()
    _code, result = bundle_result(bundle)
    assert result["status"] == "fail"
    assert result["summary"].endswith(
        "daemon not asked: the bundle has no commands/docker-info.json: files compared, "
        "not the daemon"
    )
    for finding in result["findings"]:
        assert finding["evidence"]["daemon"].startswith("daemon not asked")


def test_empty_daemon_json_makes_dockerd_exit(tmp_path: Path) -> None:
    unit = (BUNDLES / "healthy-node/host/usr/lib/systemd/system/docker.service").read_text()
    bundle = make_bundle(tmp_path, {f"host{VENDOR}": unit, "host/etc/docker/daemon.json": "  \n"})
    _code, result = bundle_result(bundle)
    assert result["status"] == "fail"
    assert result["findings"][0]["message"].startswith(
        "unable to configure the Docker daemon with file /etc/docker/daemon.json: EOF"
    )
    assert "+{}" in result["fix"]["plan"]


def test_proxy_credentials_never_reach_the_report(tmp_path: Path) -> None:
    unit = (BUNDLES / "docker-ce-dropins/host/usr/lib/systemd/system/docker.service").read_text()
    bundle = make_bundle(
        tmp_path,
        {
            f"host{VENDOR}": unit,
            "host/etc/sysconfig/docker": "HTTPS_PROXY=http://bob:s3cret@proxy.lab:3128\n",
        },
    )
    proc = kdoctor("check", "--bundle", str(bundle), "--only", CHECK, "--format", "json")
    assert "s3cret" not in proc.stdout
    assert "http://xxxxx:xxxxx@proxy.lab:3128" in proc.stdout
    assert "+EnvironmentFile=-/etc/sysconfig/docker" in proc.stdout  # no value copied


def test_no_fix_when_its_plan_would_show_credentials(tmp_path: Path) -> None:
    unit = (BUNDLES / "docker-ce-dropins/host/usr/lib/systemd/system/docker.service").read_text()
    bundle = make_bundle(
        tmp_path,
        {
            f"host{VENDOR}": unit,
            "host/etc/systemd/system/docker.service.d/mirror.conf": (
                "[Service]\nExecStart=/usr/bin/dockerd --registry-mirror=https://bob:s3cret@m.lab\n"
            ),
        },
    )
    proc = kdoctor("check", "--bundle", str(bundle), "--only", CHECK, "--format", "json")
    assert "s3cret" not in proc.stdout
    result = result_of(json.loads(proc.stdout), CHECK)
    assert result["status"] == "fail" and result["fix"] is None
    assert result["summary"].endswith(
        "the files to rewrite hold credentials (the plan would show them)"
    )


def test_fix_keeps_list_entries_only_daemon_json_had(tmp_path: Path) -> None:
    """Flag [a], file [a b]: the key leaves daemon.json, b becomes a flag; nothing is lost."""
    unit = (BUNDLES / "docker-ce-dropins/host/usr/lib/systemd/system/docker.service").read_text()
    bundle = make_bundle(
        tmp_path,
        {
            f"host{VENDOR}": unit.replace(
                "containerd.sock\n", "containerd.sock --insecure-registry a.lab:5000\n"
            ),
            "host/etc/docker/daemon.json": (
                '{"insecure-registries": ["a.lab:5000", "b.lab:5000"], "debug": true}\n'
            ),
        },
    )
    _code, result = bundle_result(bundle)
    (conflict,) = result["findings"]
    assert conflict["message"].endswith(
        "insecure-registries: (from flag: [a.lab:5000], from file: [a.lab:5000 b.lab:5000])"
    )
    plan = result["fix"]["plan"]
    assert '+    "debug": true' in plan
    assert (
        "+ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock "
        "--insecure-registry a.lab:5000 --insecure-registry=b.lab:5000"
    ) in plan


# -- dockerd's flag parsing and Go formatting ----------------------------------------------


def args(*words: str) -> list[Arg]:
    return [Arg(word, Origin("/u", 1)) for word in words]


def test_pflag_forms() -> None:
    flags, positional = parse_dockerd_args(
        args(
            "-H",
            "fd://",
            "--host=unix:///x.sock",
            "-soverlay2",
            "--selinux-enabled",
            "--insecure-registry",
            "a:5000",
            "--insecure-registry=b:5000",
            "--log-opt",
            "max-size=10m",
            "--debug=false",
            "--unknown-bool",
            "--unknown",
            "value",
            "extra",
        )
    )
    assert flags["host"].go_string() == "[fd:// unix:///x.sock]"
    assert flags["storage-driver"].last == "overlay2"
    assert flags["selinux-enabled"].go_string() == "true"
    assert flags["debug"].go_string() == "false"
    assert flags["insecure-registry"].go_string() == "[a:5000 b:5000]"
    assert flags["log-opt"].go_string() == "map[max-size:10m]"
    assert flags["unknown"].last == "value"
    assert flags["unknown-bool"].last == "true"
    assert [a.value for a in positional] == ["extra"]
    assert isinstance(flags["host"], FlagUse) and flags["host"].spec.config_key == "hosts"


def test_go_format_of_json_values() -> None:
    assert go_format(["a", "b"]) == "[a b]"
    assert go_format({"b": 1, "a": [True, None]}) == "map[a:[true <nil>] b:1]"
    assert go_format(3) == "3" and go_format(1000000) == "1e+06" and go_format(0.5) == "0.5"
    assert go_format("journald") == "journald"


# -- a real dockerd ------------------------------------------------------------------------

DOCKERD = "/usr/sbin/dockerd"
CLEAN_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}  # no proxy variables leak into dockerd


def require_dockerd() -> None:
    if not is_root():
        pytest.skip("needs root to start dockerd")
    if not Path(DOCKERD).exists() or shutil.which("docker") is None:
        pytest.skip(f"needs {DOCKERD} and the docker client (Debian docker.io)")


@contextmanager
def dockerd(
    config_file: Path, flags: list[str], env: dict[str, str] | None = None
) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """Start dockerd with its own state (ENV added to a clean environment); yield (socket,
    process); stop it by its pidfile."""
    state = Path(tempfile.mkdtemp(prefix="kdd-", dir="/tmp"))  # short: unix socket path limit
    sock = state / "docker.sock"
    pidfile = state / "pid"
    argv = [
        DOCKERD, "--data-root", str(state / "root"), "--exec-root", str(state / "exec"),
        "-H", f"unix://{sock}", "--pidfile", str(pidfile), "--iptables=false", "--bridge=none",
        "--config-file", str(config_file), *flags,
    ]  # fmt: skip
    log = (state / "log").open("wb")
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env={**CLEAN_ENV, **(env or {})}, cwd=state
    )
    try:
        yield sock, proc
    finally:
        if pidfile.exists():
            with suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        log.close()
        shutil.rmtree(state, ignore_errors=True)


def wait_ready(sock: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = (sock.parent / "log").read_text(errors="replace")
            pytest.fail(f"dockerd exited with {proc.returncode}: {log[-2000:]}")
        ready = subprocess.run(
            ["docker", "-H", f"unix://{sock}", "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            timeout=10,
            check=False,
        )
        if ready.returncode == 0:
            return
        time.sleep(0.2)
    pytest.fail(f"dockerd did not answer on {sock} within {timeout:g}s")


CENTOS_LIKE_UNIT = """[Unit]
Description=Docker Application Container Engine (test unit with the CentOS layout)

[Service]
Type=notify
EnvironmentFile=-/etc/sysconfig/docker
ExecStart=/usr/sbin/dockerd \\
          $OPTIONS \\
          $INSECURE_REGISTRY
"""


def root_tree(base: Path, sysconfig: str, daemon_json: str, unit: str = CENTOS_LIKE_UNIT) -> Path:
    root = base / "root"
    (root / "etc/kubernetes").mkdir(parents=True, exist_ok=True)  # a node: kubeadm was here
    for rel, text in (
        ("etc/sysconfig/docker", sysconfig),
        ("usr/lib/systemd/system/docker.service", unit),
        ("etc/docker/daemon.json", daemon_json),
    ):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def live_result(root: Path, docker_host: str) -> dict[str, Any]:
    _code, report = check_json(
        "--root", str(root), "--only", CHECK, env={"DOCKER_HOST": docker_host}
    )
    return result_of(report, CHECK)


@pytest.mark.root
def test_real_dockerd_drift_then_agreement(tmp_path: Path) -> None:
    """sysconfig + unit say nexus.lab:5000 is insecure. Started as the unit would start it
    but without that registry (an edit that was never followed by a restart), the daemon
    drifts; started with the same flags the unit passes, it agrees."""
    require_dockerd()
    root = root_tree(
        tmp_path,
        "OPTIONS='--log-driver=json-file'\n"
        "INSECURE_REGISTRY='--insecure-registry nexus.lab:5000'\n",
        "{}\n",
    )
    config = root / "etc/docker/daemon.json"
    # what the unit expands to, written by hand: $OPTIONS then $INSECURE_REGISTRY
    before_edit = ["--log-driver=json-file"]
    as_configured = ["--log-driver=json-file", "--insecure-registry", "nexus.lab:5000"]

    with dockerd(config, before_edit) as (sock, proc):
        wait_ready(sock, proc)
        result = live_result(root, f"unix://{sock}")
    assert result["status"] == "fail", result
    (finding,) = result["findings"]
    evidence = finding["evidence"]
    assert evidence["setting"] == "insecure-registries"
    assert evidence["configured"] == ["nexus.lab:5000"]
    assert evidence["docker_info"] == []
    assert evidence["docker_info_source"] == "docker info --format {{json .}}"
    assert evidence["configured_by"] == [f"{VENDOR}:9 ($INSECURE_REGISTRY from {SYSCONFIG}:2)"]
    assert result["fix"]["plan"][-1] == "systemctl restart docker"

    with dockerd(config, as_configured) as (sock, proc):
        wait_ready(sock, proc)
        result = live_result(root, f"unix://{sock}")
    assert result["status"] == "ok", result
    assert result["summary"] == (
        "Docker configuration and daemon agree "
        "(insecure-registries [nexus.lab:5000], log-driver [json-file])"
    )


@pytest.mark.root
def test_real_dockerd_refuses_flag_and_file_and_the_check_quotes_it(tmp_path: Path) -> None:
    """dockerd exits at once; the check, from the files alone, prints the same directives."""
    require_dockerd()
    unit = CENTOS_LIKE_UNIT.replace(
        "ExecStart=/usr/sbin/dockerd \\\n",
        "ExecStart=/usr/sbin/dockerd --exec-opt native.cgroupdriver=cgroupfs \\\n",
    )
    root = root_tree(
        tmp_path,
        "INSECURE_REGISTRY='--insecure-registry nexus.lab:5000 "
        "--insecure-registry other.lab:5000'\n",
        json.dumps(
            {
                "insecure-registries": ["nexus.lab:5000"],
                "exec-opts": ["native.cgroupdriver=cgroupfs"],
            }
        ),
        unit,
    )
    config = root / "etc/docker/daemon.json"
    flags = [
        "--exec-opt", "native.cgroupdriver=cgroupfs",
        "--insecure-registry", "nexus.lab:5000", "--insecure-registry", "other.lab:5000",
    ]  # fmt: skip
    with dockerd(config, flags) as (sock, proc):
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("dockerd did not refuse the duplicated directives")
        printed = (sock.parent / "log").read_text(errors="replace")
    assert proc.returncode != 0
    (line,) = [line for line in printed.splitlines() if DIRECTIVES in line]
    assert f"unable to configure the Docker daemon with file {config}: " in line
    dockerd_says = line.split(DIRECTIVES, 1)[1].strip()

    result = live_result(root, f"unix://{tmp_path}/nobody-listens.sock")
    assert result["status"] == "fail"
    (conflict,) = [f for f in result["findings"] if DIRECTIVES in f["message"]]
    assert conflict["message"].startswith(
        "unable to configure the Docker daemon with file /etc/docker/daemon.json: "
    )
    assert conflict["message"].split(DIRECTIVES, 1)[1] == dockerd_says
    assert result["summary"].endswith("files compared, not the daemon")


# -- the fix through the CLI, with a systemctl shim -----------------------------------------

SHIM = """#!/bin/sh
printf '%s\\n' "$*" >> "$SHIM_LOG"
if [ -n "$SHIM_FAIL" ] && [ "$*" = "$SHIM_FAIL" ]; then
    echo "systemctl shim: $* failed as asked" >&2
    exit 1
fi
exit 0
"""


class Node:
    """A --root tree copied from a bundle's host/, a systemctl shim and a state dir."""

    def __init__(self, tmp_path: Path, bundle: str) -> None:
        self.root = tmp_path / "root"
        shutil.copytree(BUNDLES / bundle / "host", self.root, symlinks=True)
        (self.root / "run/systemd/system").mkdir(parents=True)  # systemd runs (fix preflight)
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        shim = self.bin / "systemctl"
        shim.write_text(SHIM)
        shim.chmod(0o755)
        self.log = tmp_path / "systemctl.log"
        self.state = tmp_path / "state"
        self.no_daemon = f"unix://{tmp_path}/nobody-listens.sock"
        self.docker_host = ""  # a real dockerd's socket, when the test starts one

    def env(self, fail: str = "") -> dict[str, str]:
        return {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "SHIM_LOG": str(self.log),
            "SHIM_FAIL": fail,
            "DOCKER_HOST": self.docker_host or self.no_daemon,
        }

    def fix(self, *extra: str, fail: str = "") -> subprocess.CompletedProcess[str]:
        return kdoctor(
            "fix", CHECK, "--root", str(self.root), "--state-dir", str(self.state), *extra,
            env=self.env(fail),
        )  # fmt: skip

    def calls(self) -> list[str]:
        """The systemctl calls that change something (reads such as `show` left out)."""
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [line for line in lines if not line.startswith("show ")]

    def snapshot(self) -> dict[str, bytes]:
        return {
            str(p.relative_to(self.root)): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }

    def journal(self) -> list[dict[str, Any]]:
        lines = (self.state / "journal.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]

    def check(self) -> dict[str, Any]:
        _code, report = check_json("--root", str(self.root), "--only", CHECK, env=self.env())
        return result_of(report, CHECK)


DROPIN = "etc/systemd/system/docker.service.d/kdoctor.conf"


def test_fix_dry_run_changes_nothing(tmp_path: Path) -> None:
    node = Node(tmp_path, "docker-ce-dropins")
    before = node.snapshot()
    proc = node.fix("--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Plan for node.docker.drift (unsafe)" in proc.stdout
    assert "+ExecStart=" in proc.stdout and "dry run: nothing changed" in proc.stdout
    assert node.snapshot() == before
    assert node.calls() == []


#: What docker-ce-dropins configures once its sysconfig file is loaded: the daemon a restart
#: after the fix starts.
DROPINS_PROXY_ENV = {
    "HTTP_PROXY": "http://proxy.lab:3128",
    "HTTPS_PROXY": "http://proxy.lab:3128",
    "NO_PROXY": "localhost,127.0.0.1,nexus.lab",
}


@pytest.mark.root
def test_fix_applied_writes_one_dropin_and_restarts_docker(tmp_path: Path) -> None:
    """A real dockerd runs as the fixed configuration says (the restart the shim records):
    the re-check compares files and daemon and passes."""
    require_dockerd()
    node = Node(tmp_path, "docker-ce-dropins")
    config = tmp_path / "daemon.json"
    config.write_text("{}\n")
    flags = ["--insecure-registry", "nexus.lab:5000"]
    with dockerd(config, flags, env=DROPINS_PROXY_ENV) as (sock, daemon):
        wait_ready(sock, daemon)
        node.docker_host = f"unix://{sock}"
        assert node.check()["status"] == "fail"
        proc = node.fix("--yes", "--unsafe")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        after = node.check()
    # exactly these commands reached the process boundary, in this order
    assert node.calls() == ["daemon-reload", "restart docker"]
    assert (node.root / DROPIN).read_text() == (
        "# Written by kdoctor (node.docker.drift): makes docker.service, its\n"
        "# environment files and /etc/docker/daemon.json agree (see kdoctor's journal).\n"
        "[Service]\n"
        "EnvironmentFile=-/etc/sysconfig/docker\n"
        "ExecStart=\n"
        "ExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock "
        "--insecure-registry nexus.lab:5000\n"
    )
    (entry,) = node.journal()
    assert entry["outcome"] == "applied" and entry["recheck_status"] == "ok"
    assert after["status"] == "ok", after
    assert after["summary"].startswith(
        "Docker configuration and daemon agree (insecure-registries [nexus.lab:5000]"
    )


def test_fix_rolled_back_when_the_daemon_does_not_answer_after_the_restart(
    tmp_path: Path,
) -> None:
    """The files are right but no daemon answers after the restart: the re-check cannot
    confirm the fix (error), so it is rolled back rather than reported as a success."""
    node = Node(tmp_path, "docker-1.13-centos")
    before = node.snapshot()
    dry = node.fix("--dry-run")
    assert "+{}" in dry.stdout  # daemon.json loses the directives the flags also set
    assert "$INSECURE_REGISTRY $REGISTRIES $DOCKER_OPTS" in dry.stdout
    proc = node.fix("--yes", "--unsafe")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert node.calls()[:2] == ["daemon-reload", "restart docker"]
    assert node.snapshot() == before
    (entry,) = node.journal()
    assert entry["outcome"] == "rolled-back"
    assert "still reports error" in entry["reason"] and "daemon not answering" in entry["reason"]
    assert all(item["verified"] for item in entry["rollback"])


def test_fix_rolled_back_when_restart_fails(tmp_path: Path) -> None:
    """The restart fails: files are put back first, then systemd reloads them and the
    service is restarted only if running (try-restart)."""
    node = Node(tmp_path, "docker-ce-dropins")
    before = node.snapshot()
    proc = node.fix("--yes", "--unsafe", fail="restart docker")
    assert proc.returncode == 2
    assert node.calls() == [
        "daemon-reload",
        "restart docker",
        "daemon-reload",
        "try-restart docker",
    ]
    assert not (node.root / DROPIN).exists()
    assert node.snapshot() == before
    (entry,) = node.journal()
    assert entry["outcome"] == "rolled-back"
