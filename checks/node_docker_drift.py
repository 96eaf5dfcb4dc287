"""node.docker.drift: Docker settings that disagree between the files that configure dockerd
and the daemon that runs.

The effective configuration is built the way systemd and dockerd build it (see
:mod:`doctor.parse.systemd`): docker.service and its drop-ins, the ``Environment=`` and
``EnvironmentFile=`` variables (``/etc/sysconfig/docker*`` on CentOS), the expanded
``ExecStart=`` argv parsed as dockerd's flags, then ``/etc/docker/daemon.json``, then what the
running daemon reports (``docker info --format '{{json .}}'``).
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from doctor.analysis.runtime import kubelet_runtime
from doctor.core.context import CheckContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Action, Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.core.sources import NodeFacts
from doctor.parse.systemd import (
    Arg,
    EnvVar,
    ExecCommand,
    FileReader,
    ServiceEnvironment,
    Unit,
    UnitSyntaxError,
    exec_commands,
    expand_command,
    load_unit,
    parse_env_file,
    service_environment,
    service_refusals,
    split_words,
)
from fixes.base import Command, WriteFile
from fixes.docker import ReloadOnRollback

UNIT = "docker.service"
DEFAULT_CONFIG_FILE = "/etc/docker/daemon.json"
DROPIN_DIR = "/etc/systemd/system/docker.service.d"
#: Files distributions ship for dockerd's environment (CentOS/RHEL, Debian/Ubuntu).
ENV_FILE_CANDIDATES = (
    "/etc/sysconfig/docker",
    "/etc/sysconfig/docker-storage",
    "/etc/sysconfig/docker-network",
    "/etc/default/docker",
)
INFO_ARGV = ["docker", "info", "--format", "{{json .}}"]
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")
ALL_PROXY_VARS = frozenset(PROXY_VARS + tuple(v.lower() for v in PROXY_VARS))
#: Variables dockerd, its packaging or the docker client read from the environment: set in an
#: environment file, they work without ExecStart naming them.
ENV_CONSUMED = ALL_PROXY_VARS | {
    "PATH",
    "GOTRACEBACK",
    "DOCKER_CERT_PATH",
    "DOCKER_TMPDIR",
    "DOCKER_HTTP_HOST_COMPAT",
    "DOCKER_RAMDISK",
    "DOCKER_NOWARN_KERNEL_VERSION",
    "DOCKER_DRIVER",
    "DOCKER_GRAPHDRIVER",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CONTENT_TRUST",
    "LOGROTATE",
    "DOCKERBINARY",
    "DOCKERDBINARY",
    "DOCKER_CONTAINERD_BINARY",
    "DOCKER_CONTAINERD_SHIM_BINARY",
    "NOTIFY_SOCKET",
}
EXEC_KEYS = ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop", "ExecStopPost")
#: Registries dockerd always lists as insecure (not configuration).
DEFAULT_INSECURE = frozenset({"127.0.0.0/8", "::1/128"})


# -- dockerd's flags ----------------------------------------------------------------------


@dataclass(frozen=True)
class FlagSpec:
    """A dockerd flag: ``kind`` decides parsing and how Go prints its value."""

    name: str
    kind: str  # list | map | runtime | string | bool | unknown
    key: str | None = None  # the NamedOption name (daemon.json key) when not the flag name
    shorthand: str | None = None

    @property
    def config_key(self) -> str:
        return self.key or self.name


FLAG_SPECS = (
    FlagSpec("insecure-registry", "list", "insecure-registries"),
    FlagSpec("registry-mirror", "list", "registry-mirrors"),
    FlagSpec("exec-opt", "list", "exec-opts"),
    FlagSpec("storage-opt", "list", "storage-opts"),
    FlagSpec("log-opt", "map", "log-opts"),
    FlagSpec("label", "list", "labels"),
    FlagSpec("host", "list", "hosts", "H"),
    FlagSpec("dns", "list", "dns"),
    FlagSpec("dns-opt", "list", "dns-opts"),
    FlagSpec("dns-search", "list", "dns-search"),
    FlagSpec("authorization-plugin", "list", "authorization-plugins"),
    FlagSpec("default-ulimit", "list", "default-ulimits"),
    FlagSpec("allow-nondistributable-artifacts", "list", "allow-nondistributable-artifacts"),
    FlagSpec("add-runtime", "runtime", "runtimes"),
    # RHEL/CentOS docker 1.x only
    FlagSpec("add-registry", "list", "add-registry"),
    FlagSpec("block-registry", "list", "block-registry"),
    FlagSpec("storage-driver", "string", shorthand="s"),
    FlagSpec("log-driver", "string"),
    FlagSpec("log-level", "string", shorthand="l"),
    FlagSpec("data-root", "string"),
    FlagSpec("graph", "string", shorthand="g"),
    FlagSpec("exec-root", "string"),
    FlagSpec("pidfile", "string", shorthand="p"),
    FlagSpec("group", "string", shorthand="G"),
    FlagSpec("config-file", "string"),
    FlagSpec("containerd", "string"),
    FlagSpec("default-runtime", "string"),
    FlagSpec("userland-proxy-path", "string"),
    FlagSpec("init-path", "string"),
    FlagSpec("seccomp-profile", "string"),
    FlagSpec("bridge", "string", shorthand="b"),
    FlagSpec("bip", "string"),
    FlagSpec("mtu", "string"),
    FlagSpec("userns-remap", "string"),
    FlagSpec("cgroup-parent", "string"),
    FlagSpec("http-proxy", "string"),
    FlagSpec("https-proxy", "string"),
    FlagSpec("no-proxy", "string"),
    FlagSpec("selinux-enabled", "bool"),
    FlagSpec("signature-verification", "bool"),
    FlagSpec("debug", "bool", shorthand="D"),
    FlagSpec("iptables", "bool"),
    FlagSpec("ip6tables", "bool"),
    FlagSpec("ip-forward", "bool"),
    FlagSpec("ip-masq", "bool"),
    FlagSpec("icc", "bool"),
    FlagSpec("ipv6", "bool"),
    FlagSpec("userland-proxy", "bool"),
    FlagSpec("live-restore", "bool"),
    FlagSpec("experimental", "bool"),
    FlagSpec("no-new-privileges", "bool"),
    FlagSpec("init", "bool"),
    FlagSpec("raw-logs", "bool"),
    FlagSpec("disable-legacy-registry", "bool"),
    FlagSpec("tls", "bool"),
    FlagSpec("tlsverify", "bool"),
    FlagSpec("rootless", "bool"),
    FlagSpec("validate", "bool"),
    FlagSpec("version", "bool", shorthand="v"),
    FlagSpec("help", "bool", shorthand="h"),
)
_BY_NAME = {spec.name: spec for spec in FLAG_SPECS}
_BY_SHORT = {spec.shorthand: spec for spec in FLAG_SPECS if spec.shorthand}
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


@dataclass
class FlagUse:
    """Every occurrence of one flag on the command line (pflag accumulates lists)."""

    spec: FlagSpec
    values: list[str] = field(default_factory=list)
    args: list[Arg] = field(default_factory=list)

    @property
    def last(self) -> str:
        return self.values[-1] if self.values else ""

    def go_string(self) -> str:
        """The flag value as dockerd prints it in the conflict message (``Value.String()``)."""
        kind = self.spec.kind
        if kind == "list":
            return "[" + " ".join(self.values) + "]"
        if kind == "map":
            return go_format(dict(v.partition("=")[::2] for v in self.values))
        if kind == "runtime":
            return "[" + " ".join(sorted({v.partition("=")[0] for v in self.values})) + "]"
        if kind == "bool":
            return "true" if self.last in _TRUE else "false"
        return self.last

    def provenance(self) -> list[str]:
        return _dedupe(arg.provenance() for arg in self.args)


def parse_dockerd_args(args: Sequence[Arg]) -> tuple[dict[str, FlagUse], list[Arg]]:
    """dockerd's flags from an argv (without the program), the way pflag reads them."""
    flags: dict[str, FlagUse] = {}
    positional: list[Arg] = []
    index = 0
    while index < len(args):
        arg = args[index]
        text = arg.value
        used = [arg]
        value: str
        if text == "--":
            positional.extend(args[index + 1 :])
            break
        if text.startswith("--") and len(text) > 2:
            name, eq, inline = text[2:].partition("=")
            spec = _BY_NAME.get(name, FlagSpec(name, "unknown"))
            rest: str | None = inline if eq else None
        elif text.startswith("-") and len(text) > 1:
            spec = _BY_SHORT.get(text[1], FlagSpec(text[1], "unknown"))
            tail = text[2:]
            rest = tail[1:] if tail.startswith("=") else (tail or None)
        else:
            positional.append(arg)
            index += 1
            continue
        if rest is not None:
            value = rest
        elif spec.kind == "bool":
            value = "true"
        elif index + 1 < len(args) and not (
            spec.kind == "unknown" and args[index + 1].value.startswith("-")
        ):
            index += 1
            value = args[index].value
            used.append(args[index])
        else:
            value = "true" if spec.kind == "unknown" else ""
        use = flags.setdefault(spec.name, FlagUse(spec))
        use.values.append(value)
        use.args.extend(used)
        index += 1
    return flags, positional


def go_format(value: Any) -> str:
    """Go's ``%v`` of a value decoded from JSON into ``interface{}``."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_float(float(value))
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(go_format(v) for v in value) + "]"
    if isinstance(value, dict):
        items = " ".join(f"{k}:{go_format(value[k])}" for k in sorted(value))
        return f"map[{items}]"
    return str(value)


def _go_float(number: float) -> str:
    """``%v`` of a float64 (strconv "g", shortest): ``%e`` when the exponent is < -4 or >= 6."""
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "+Inf" if number > 0 else "-Inf"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    mantissa, _, exp_text = repr(abs(number)).partition("e")
    whole, _, frac = mantissa.partition(".")
    if whole.strip("0"):
        exp = len(whole.lstrip("0")) - 1
    else:
        exp = -(len(frac) - len(frac.lstrip("0"))) - 1
    exp += int(exp_text) if exp_text else 0
    digits = (whole + frac).strip("0") or "0"
    if exp < -4 or exp >= 6:
        body = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{body}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    if exp < 0:
        return f"{sign}0.{'0' * (-exp - 1)}{digits}"
    if len(digits) <= exp + 1:
        return sign + digits + "0" * (exp + 1 - len(digits))
    return f"{sign}{digits[: exp + 1]}.{digits[exp + 1 :]}"


# -- facts --------------------------------------------------------------------------------


def mask_secrets(text: str) -> str:
    """Hide credentials in URLs (``http://user:pass@host`` → ``http://xxxxx:xxxxx@host``)."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1xxxxx:xxxxx@", text)


@dataclass(frozen=True)
class DaemonJson:
    path: str
    exists: bool
    data: Mapping[str, Any]
    text: str | None
    #: Empty or only whitespace: dockerd (20.10) exits with "…: EOF".
    empty: bool = False

    def line_of(self, key: str) -> int | None:
        if not self.text:
            return None
        needle = json.dumps(key)
        for number, line in enumerate(self.text.splitlines(), start=1):
            if needle in line:
                return number
        return None

    def where(self, key: str) -> str:
        line = self.line_of(key)
        return f"{self.path}:{line}" if line else self.path


def read_daemon_json(reader: FileReader, path: str) -> DaemonJson:
    """daemon.json as dockerd decodes it (into map[string]interface{}); FactError if invalid."""
    text = reader.read_text(path)
    if text is None:
        return DaemonJson(path, False, {}, None)
    body = text.removeprefix("\ufeff")
    if not body.strip():
        return DaemonJson(path, True, {}, text, empty=True)
    try:
        data = json.loads(body)
    except json.JSONDecodeError as exc:
        raise FactError(f"{path}: invalid JSON: {exc}") from exc
    except RecursionError as exc:
        raise FactError(f"{path}: invalid JSON: nested too deeply") from exc
    if not isinstance(data, dict):
        raise FactError(
            f"{path}: not a JSON object (dockerd: json: cannot unmarshal "
            f"{_json_kind(data)} into Go value of type map[string]interface {{}})"
        )
    return DaemonJson(path, True, data, text)


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if value is None:
        return "null"
    return "number"


@dataclass(frozen=True)
class DaemonInfo:
    """``docker info`` of the running daemon, or why there is none."""

    data: Mapping[str, Any] | None
    source: str
    note: str = ""


def read_docker_info(node: NodeFacts) -> DaemonInfo:
    """The running daemon's view. Not available (no docker, daemon down) is a note, not an error;
    output that cannot be parsed is an error."""
    try:
        output = node.command("docker-info.json", INFO_ARGV)
    except FactMissing as exc:
        return DaemonInfo(None, "docker info", f"daemon not asked: {exc}")
    except FactError as exc:
        if node.is_bundle:
            raise
        return DaemonInfo(None, "docker info", f"daemon not answering: {exc}")
    text = output.stdout.strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FactError(f"{output.source}: invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise FactError(
            f"{output.source}: not a JSON object (docker info --format '{{{{json .}}}}')"
        )
    if not data.get("ServerVersion"):
        # The client prints its JSON with empty server fields when the daemon is down.
        errors = data.get("ServerErrors") or ["no server fields in the output"]
        first = errors[0] if isinstance(errors, list) else errors
        return DaemonInfo(None, output.source, f"daemon not answering: {first}")
    return DaemonInfo(data, output.source)


# -- the effective configuration ----------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """A value dockerd is configured with, normalised for comparison, and where it is set."""

    name: str
    values: tuple[str, ...]
    shown: tuple[str, ...]
    sources: tuple[str, ...]
    #: Compared even when nothing is configured (the default is "none").
    always: bool = False


@dataclass
class Analysis:
    """Everything the configuration files say, and the findings they alone give."""

    unit: Unit | None
    env: ServiceEnvironment | None = None
    commands: list[ExecCommand] = field(default_factory=list)
    argv: list[Arg] = field(default_factory=list)
    flags: dict[str, FlagUse] = field(default_factory=dict)
    daemon_json: DaemonJson | None = None
    settings: dict[str, Setting] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    # what a fix needs
    conflicts: list[tuple[FlagUse, str, Any]] = field(default_factory=list)
    multi_exec: bool = False
    unreferenced: list[EnvVar] = field(default_factory=list)
    unloaded_proxy_files: list[str] = field(default_factory=list)

    @property
    def intended(self) -> ExecCommand | None:
        return self.commands[-1] if self.commands else None


def analyse(reader: FileReader) -> Analysis:
    """Build the effective configuration from the files alone (no daemon)."""
    try:
        unit = load_unit(UNIT, reader)
    except UnitSyntaxError as exc:
        raise FactError(str(exc)) from exc
    result = Analysis(unit)
    config_file = DEFAULT_CONFIG_FILE
    if unit is not None and not unit.masked:
        try:
            result.env = service_environment(unit, reader)
            result.commands = exec_commands(unit)
            references: set[str] = set()
            for key in EXEC_KEYS:
                for command in exec_commands(unit, key):
                    references |= command.references()
        except UnitSyntaxError as exc:
            raise FactError(str(exc)) from exc
        _unit_findings(result, unit)
        if result.intended is not None:
            result.argv = expand_command(result.intended, result.env.variables)
            skip = 2 if "@" in result.intended.prefixes else 1
            args = result.argv[skip:]
            if args and args[0].value == "daemon":  # docker <= 1.11: `docker daemon …`
                args = args[1:]
            result.flags, _ = parse_dockerd_args(args)
            config_flag = result.flags.get("config-file")
            if config_flag and config_flag.last:
                config_file = config_flag.last
        _env_file_findings(result, reader, references)
        _shadow_findings(result)
    result.daemon_json = read_daemon_json(reader, config_file)
    if result.daemon_json.empty:
        result.findings.append(
            Finding(
                severity=Severity.FAIL,
                message=(
                    f"unable to configure the Docker daemon with file {config_file}: EOF "
                    "(the file is empty: dockerd exits at start)"
                ),
                resource=config_file,
                evidence={"file": config_file, "size": len(result.daemon_json.text or "")},
                hint=f"write {{}} into {config_file} or remove it",
            )
        )
    _conflict_findings(result)
    _flag_shadow_findings(result)
    result.settings = _settings(result)
    return result


def _unit_findings(result: Analysis, unit: Unit) -> None:
    for problem in service_refusals(unit, result.commands):
        result.multi_exec = result.multi_exec or "more than one ExecStart" in problem
        result.findings.append(
            Finding(
                severity=Severity.FAIL,
                message=problem,
                resource=UNIT,
                evidence={
                    "ExecStart": [
                        {"at": str(c.directive.origin), "command": mask_secrets(c.template)}
                        for c in result.commands
                    ],
                    "unit_files": list(unit.files),
                    "systemd": "refuses to load the unit; dockerd is not (re)started with it",
                },
                hint=(
                    "a drop-in that replaces ExecStart must first reset it with an empty "
                    "`ExecStart=` line; then systemctl daemon-reload"
                ),
            )
        )
    assert result.env is not None
    for env_file in result.env.missing_required:
        result.findings.append(
            Finding(
                severity=Severity.FAIL,
                message=(
                    f"EnvironmentFile={env_file.path} (no '-' prefix) does not exist: systemd "
                    f"fails to start {UNIT} (Failed to load environment files)"
                ),
                resource=env_file.path,
                evidence={"set_at": str(env_file.directive.origin)},
                hint=f"create it, or make it optional: EnvironmentFile=-{env_file.path}",
            )
        )


def _looks_like_flags(value: str) -> bool:
    words = split_words(value, cunescape=False, relax=True)
    return bool(words) and words[0].value.startswith("-")


def _env_file_findings(result: Analysis, reader: FileReader, references: set[str]) -> None:
    env = result.env
    assert env is not None and result.unit is not None
    for var in env.variables.values():
        if not var.via.startswith("EnvironmentFile="):
            continue
        if var.name in references or var.name in ENV_CONSUMED or not _looks_like_flags(var.value):
            continue
        result.unreferenced.append(var)
        result.findings.append(
            Finding(
                severity=Severity.WARN,
                message=(
                    f"{var.name} is set in {var.origin} but {UNIT} never passes it to dockerd "
                    f"(no ${var.name} in ExecStart): {mask_secrets(var.value)!r} has no effect"
                ),
                resource=var.origin.path,
                evidence={
                    "variable": var.name,
                    "value": mask_secrets(var.value),
                    "set_at": str(var.origin),
                    "loaded_by": _loaded_by(env, var.origin.path),
                    "ExecStart": [str(c.directive.origin) for c in result.commands],
                    "ExecStart_references": sorted(references),
                },
                hint=f"reference ${var.name} in ExecStart (a drop-in), or move the flags to "
                "a variable the unit passes, or to daemon.json",
            )
        )
    for path in ENV_FILE_CANDIDATES:
        if env.loads(path):
            continue
        text = reader.read_text(path)
        if text is None:
            continue
        variables = [v for v in parse_env_file(text, path) if v.value.strip()]
        proxies = [v for v in variables if v.name in ALL_PROXY_VARS]
        flags = [
            v for v in variables if v.name not in ALL_PROXY_VARS and _looks_like_flags(v.value)
        ]
        if not proxies and not flags:
            continue
        if proxies:
            result.unloaded_proxy_files.append(path)
        names = ", ".join(v.name for v in proxies + flags)
        what = (
            "dockerd never sees these variables" if proxies else "these flags never reach dockerd"
        )
        result.findings.append(
            Finding(
                severity=Severity.WARN,
                message=(
                    f"{path} sets {names} but {UNIT} does not load it (no "
                    f"EnvironmentFile={path}): {what}"
                ),
                resource=path,
                evidence={
                    "variables": {
                        v.name: {"value": mask_secrets(v.value), "set_at": str(v.origin)}
                        for v in proxies + flags
                    },
                    "unit_files": list(result.unit.files),
                    "environment_files_loaded": [f.path for f in env.files if f.loaded],
                    "proxy_environment_of_dockerd": {
                        name: mask_secrets(env.variables[name].value)
                        for name in sorted(ALL_PROXY_VARS)
                        if name in env.variables
                    },
                },
                hint=(
                    f"load it with a drop-in (EnvironmentFile=-{path}) or set the variables with "
                    "Environment= in a docker.service.d drop-in"
                    if proxies
                    else "this unit does not read the file: put these settings in "
                    "/etc/docker/daemon.json or in a drop-in's ExecStart"
                ),
            )
        )


def _shadow_findings(result: Analysis) -> None:
    """A variable set in two places where one silently wins, both named with the winner.

    systemd's order (systemd.exec(5)): ``Environment=`` lines in the order read (the unit,
    then its drop-ins in lexical order of file name), then the ``EnvironmentFile=`` files in
    order; a later assignment replaces an earlier one, so a file read by ``EnvironmentFile=``
    overrides any ``Environment=`` of the same variable."""
    env = result.env
    if env is None:
        return
    sources: dict[str, list[EnvVar]] = {}
    for var in env.assignments:
        sources.setdefault(var.name, []).append(var)
    for env_file in env.files:
        if env_file.loaded:
            for var in env_file.variables:
                sources.setdefault(var.name, []).append(var)
    for name, found in sources.items():
        places = {var.origin.path for var in found}
        if len(places) < 2 or len({var.value for var in found}) < 2:
            continue
        winner = env.variables[name]
        losers = [var for var in found if var.value != winner.value]
        kinds = {var.via.startswith("EnvironmentFile=") for var in found}
        if kinds == {True, False}:
            rule = "systemd applies EnvironmentFile= after Environment=, so the file's value wins"
        elif True in kinds:
            rule = "the EnvironmentFile= read last wins"
        else:
            rule = "drop-ins are read in lexical order of their names, the last one wins"
        result.findings.append(
            Finding(
                severity=Severity.WARN,
                message=(
                    f"{name} is set in {', '.join(str(v.origin) for v in losers)} and in "
                    f"{winner.origin}: {rule}; dockerd gets {mask_secrets(winner.value)!r}"
                    + (f" (from {winner.via})" if winner.via != "Environment=" else "")
                ),
                resource=winner.origin.path,
                evidence={
                    "variable": name,
                    "set_at": [
                        {"at": str(v.origin), "via": v.via, "value": mask_secrets(v.value)}
                        for v in found
                    ],
                    "wins": str(winner.origin),
                },
                hint=f"set {name} in one place ({winner.origin.path} is the one that counts)",
            )
        )


def _flag_shadow_findings(result: Analysis) -> None:
    """A daemon.json key also given as a flag in a sysconfig variable that ExecStart never
    passes: nothing refuses, daemon.json silently wins."""
    daemon_json = result.daemon_json
    if daemon_json is None or not daemon_json.data:
        return
    for var in result.unreferenced:
        words = [Arg(w.value, var.origin, (var,)) for w in split_words(var.value, relax=True)]
        flags, _ = parse_dockerd_args(words)
        for flag_name, use in sorted(flags.items()):
            key = use.spec.config_key
            if key not in daemon_json.data:
                continue
            result.findings.append(
                Finding(
                    severity=Severity.WARN,
                    message=(
                        f"{key} is set twice: --{flag_name} {mask_secrets(use.go_string())} in "
                        f"{var.origin} (${var.name}, never passed to dockerd) and "
                        f"{mask_secrets(go_format(daemon_json.data[key]))} in "
                        f"{daemon_json.where(key)}: daemon.json wins, the sysconfig value does "
                        "nothing"
                    ),
                    resource=daemon_json.path,
                    evidence={
                        "setting": key,
                        "sysconfig": str(var.origin),
                        "daemon_json": daemon_json.where(key),
                        "wins": daemon_json.where(key),
                    },
                    hint=f"keep {key} in {daemon_json.path} and drop it from {var.origin.path}",
                )
            )


def _loaded_by(env: ServiceEnvironment, path: str) -> str | None:
    for env_file in env.files:
        if env_file.path == path and env_file.loaded:
            return str(env_file.directive.origin)
    return None


def _conflict_findings(result: Analysis) -> None:
    """dockerd's ``findConfigurationConflicts``: flags set on the command line (visited in
    lexicographic order of flag name) whose option is also a key of the configuration file."""
    daemon_json = result.daemon_json
    assert daemon_json is not None
    if not daemon_json.data:
        return
    parts: list[str] = []
    details: list[dict[str, Any]] = []
    for name in sorted(result.flags):
        use = result.flags[name]
        keys = [use.spec.config_key] if use.spec.key else [name, use.spec.shorthand or ""]
        for key in keys:
            if key and key in daemon_json.data:
                file_value = daemon_json.data[key]
                parts.append(
                    f"{key}: (from flag: {use.go_string()}, from file: {go_format(file_value)})"
                )
                result.conflicts.append((use, key, file_value))
                details.append(
                    {
                        "directive": key,
                        "from_flag": mask_secrets(use.go_string()),
                        "flag_set_by": use.provenance(),
                        "from_file": mask_secrets(go_format(file_value)),
                        "file": daemon_json.where(key),
                    }
                )
                break
    if not parts:
        return
    message = (
        f"unable to configure the Docker daemon with file {daemon_json.path}: the following "
        "directives are specified both as a flag and in the configuration file: " + ", ".join(parts)
    )
    result.findings.append(
        Finding(
            severity=Severity.FAIL,
            message=mask_secrets(message),
            resource=daemon_json.path,
            evidence={"conflicts": details, "dockerd": "exits at start with this message"},
            hint=(
                f"keep each directive in one place: remove it from {daemon_json.path} "
                "or from the flags the unit passes"
            ),
        )
    )


def _normal_registry(value: str) -> str:
    value = re.sub(r"^[a-z]+://", "", value.strip()).rstrip("/")
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        return value


def _settings(result: Analysis) -> dict[str, Setting]:
    """The settings compared with the daemon: flag over daemon.json over the default."""
    daemon_json = result.daemon_json
    assert daemon_json is not None
    data = daemon_json.data
    flags = result.flags
    out: dict[str, Setting] = {}

    def from_sources(
        name: str,
        flag_names: Sequence[str],
        keys: Sequence[str],
        normal: Any = lambda v: v,
        always: bool = False,
        pick: Any = None,
    ) -> None:
        for flag_name in flag_names:
            use = flags.get(flag_name)
            if use and use.values:
                shown = use.values if use.spec.kind == "list" else [use.last]
                if pick:
                    shown = pick(shown)
                    if not shown:
                        continue
                values = tuple(sorted({normal(v) for v in shown}))
                out[name] = Setting(name, values, tuple(shown), tuple(use.provenance()), always)
                return
        for key in keys:
            if key in data:
                raw = data[key]
                shown = [str(v) for v in raw] if isinstance(raw, list) else [go_format(raw)]
                if pick:
                    shown = pick(shown)
                    if not shown:
                        continue
                values = tuple(sorted({normal(v) for v in shown}))
                out[name] = Setting(name, values, tuple(shown), (daemon_json.where(key),), always)
                return
        if always:
            out[name] = Setting(name, (), (), ("nothing configured (dockerd default: none)",), True)

    def cgroup(values: list[str]) -> list[str]:
        found = [v.split("=", 1)[1] for v in values if v.startswith("native.cgroupdriver=")]
        return found[-1:]

    from_sources(
        "insecure-registries",
        ["insecure-registry"],
        ["insecure-registries"],
        _normal_registry,
        always=True,
    )
    from_sources(
        "registry-mirrors",
        ["registry-mirror"],
        ["registry-mirrors"],
        lambda v: v.rstrip("/"),
        always=True,
    )
    from_sources("cgroup-driver", ["exec-opt"], ["exec-opts"], pick=cgroup)
    from_sources("storage-driver", ["storage-driver"], ["storage-driver"])
    from_sources("log-driver", ["log-driver"], ["log-driver"])
    from_sources(
        "data-root", ["data-root", "graph"], ["data-root", "graph"], lambda v: v.rstrip("/")
    )
    for var in PROXY_VARS:
        out[var] = _proxy_setting(result, var)
    return out


def _proxy_setting(result: Analysis, var: str) -> Setting:
    """dockerd's proxy: ``--http-proxy``/daemon.json ``proxies`` (Engine >= 23), else the
    environment, upper case first (Go's ProxyFromEnvironment)."""
    flag_name = var.lower().replace("_", "-")
    use = result.flags.get(flag_name)
    if use and use.last:
        value = mask_secrets(use.last)
        return Setting(var, (value,), (value,), tuple(use.provenance()), True)
    assert result.daemon_json is not None
    proxies = result.daemon_json.data.get("proxies")
    if isinstance(proxies, dict) and proxies.get(flag_name):
        value = mask_secrets(str(proxies[flag_name]))
        return Setting(var, (value,), (value,), (result.daemon_json.where("proxies"),), True)
    if result.env is not None:
        for name in (var, var.lower()):
            env = result.env.variables.get(name)
            if env is not None and env.value:
                value = mask_secrets(env.value)
                how = (
                    f"{env.origin} ({name}; EnvironmentFile= puts it in dockerd's environment, "
                    "ExecStart need not name it)"
                    if env.via.startswith("EnvironmentFile=")
                    else f"{env.origin} ({name}, Environment=)"
                )
                return Setting(var, (value,), (value,), (how,), True)
    return Setting(var, (), (), ("not set in docker.service's environment",), True)


# -- the running daemon -------------------------------------------------------------------

INFO_FIELDS = {
    "cgroup-driver": "CgroupDriver",
    "storage-driver": "Driver",
    "log-driver": "LoggingDriver",
    "data-root": "DockerRootDir",
    "HTTP_PROXY": "HttpProxy",
    "HTTPS_PROXY": "HttpsProxy",
    "NO_PROXY": "NoProxy",
}


def daemon_values(info: Mapping[str, Any], name: str) -> tuple[str, ...] | None:
    """What ``docker info`` says for a setting; None when it does not report it."""
    registry = info.get("RegistryConfig")
    if name == "insecure-registries":
        if not isinstance(registry, dict):
            return None
        found: set[str] = set()
        for cidr in registry.get("InsecureRegistryCIDRs") or []:
            found.add(_normal_registry(str(cidr)))
        for index in (registry.get("IndexConfigs") or {}).values():
            if isinstance(index, dict) and index.get("Secure") is False:
                found.add(_normal_registry(str(index.get("Name", ""))))
        return tuple(sorted(found - DEFAULT_INSECURE))
    if name == "registry-mirrors":
        if not isinstance(registry, dict):
            return None
        return tuple(sorted({str(m).rstrip("/") for m in registry.get("Mirrors") or []}))
    key = INFO_FIELDS.get(name)
    if key is None or key not in info:
        return None
    value = info[key]
    if value in (None, ""):
        return ()
    text = str(value)
    if name == "data-root":
        text = text.rstrip("/")
    if name in PROXY_VARS:
        text = mask_secrets(text)
    return (text,)


def _drift_findings(analysis: Analysis, info: DaemonInfo) -> list[Finding]:
    if info.data is None:
        return []
    findings: list[Finding] = []
    for name, setting in analysis.settings.items():
        running = daemon_values(info.data, name)
        if running is None:
            continue
        configured = setting.values
        if set(configured) == set(running):
            continue
        if not setting.values and not setting.always:
            continue
        said = mask_secrets("[" + " ".join(setting.shown) + "]") if setting.shown else "nothing"
        has = mask_secrets("[" + " ".join(running) + "]") if running else "nothing"
        findings.append(
            Finding(
                severity=Severity.FAIL,
                message=(
                    f"{name}: the configuration gives {said}, the running daemon has {has} "
                    "(docker info): dockerd was not restarted after the change, or the file "
                    "that was edited is not one it reads"
                ),
                resource=UNIT,
                evidence={
                    "setting": name,
                    "configured": [mask_secrets(v) for v in setting.shown],
                    "configured_by": list(setting.sources),
                    "docker_info": [mask_secrets(v) for v in running],
                    "docker_info_source": info.source,
                    "missing_in_daemon": [
                        mask_secrets(v) for v in sorted(set(configured) - set(running))
                    ],
                    "only_in_daemon": [
                        mask_secrets(v) for v in sorted(set(running) - set(configured))
                    ],
                },
                hint="systemctl daemon-reload && systemctl restart docker, then check docker info",
            )
        )
    return findings


# -- the fix ------------------------------------------------------------------------------


class OverlayReader:
    """A node's files with some replaced: what the node would look like after a fix."""

    def __init__(self, base: FileReader, files: Mapping[str, str]) -> None:
        self.base = base
        self.files = dict(files)

    def read_text(self, path: str) -> str | None:
        if path in self.files:
            return self.files[path]
        return self.base.read_text(path)

    def listdir(self, path: str) -> list[str]:
        names = set(self.base.listdir(path))
        for file in self.files:
            directory, _, name = file.rpartition("/")
            if directory == path:
                names.add(name)
        return sorted(names)

    def readlink(self, path: str) -> str | None:
        return None if path in self.files else self.base.readlink(path)


_SAFE_WORD = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def unit_quote(word: str) -> str:
    """A word for an ExecStart= line: ``%`` and ``$`` escaped, quoted when needed."""
    word = word.replace("%", "%%").replace("$", "$$")
    if _SAFE_WORD.fullmatch(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _exec_line(command: ExecCommand, extra: Sequence[str]) -> str:
    return " ".join([command.template, *extra])


def _dropin_name(unit: Unit) -> str:
    """``kdoctor.conf`` unless a drop-in sorting after it sets ExecStart= (it would win)."""
    later = [
        d.origin.path
        for d in unit.directives
        if d.key == "ExecStart"
        and d.origin.path in unit.dropins
        and d.origin.path.rsplit("/", 1)[1] > "kdoctor.conf"
    ]
    return "zz-kdoctor.conf" if later else "kdoctor.conf"


def build_fix(reader: FileReader, analysis: Analysis, drift: bool) -> tuple[Fix | None, str | None]:
    """The fix and, when none can be offered, why."""
    unit = analysis.unit
    if unit is None or unit.masked:
        return None, None
    files: dict[str, str] = {}
    actions: list[Action] = [ReloadOnRollback("docker")]
    daemon_json = analysis.daemon_json
    assert daemon_json is not None
    extra: list[str] = []
    if analysis.conflicts or daemon_json.empty:
        data = dict(daemon_json.data)
        for use, key, file_value in analysis.conflicts:
            data.pop(key, None)
            extra.extend(_carried_over(use, file_value))
        content = json.dumps(data, indent=4) + "\n"
        files[daemon_json.path] = content
        actions.append(WriteFile(daemon_json.path, content, old_content=daemon_json.text))
    extra.extend(f"${var.name}" for var in analysis.unreferenced)
    lines: list[str] = [f"EnvironmentFile=-{path}" for path in analysis.unloaded_proxy_files]
    if analysis.multi_exec or extra:
        if analysis.intended is None:
            return None, "no ExecStart to build on"
        lines += ["ExecStart=", f"ExecStart={_exec_line(analysis.intended, extra)}"]
    if lines:
        path = f"{DROPIN_DIR}/{_dropin_name(unit)}"
        old = reader.read_text(path)
        head = (
            old.rstrip("\n") + "\n\n"
            if old
            else (
                "# Written by kdoctor (node.docker.drift): makes docker.service, its\n"
                "# environment files and /etc/docker/daemon.json agree (see kdoctor's journal).\n"
            )
        )
        content = head + "[Service]\n" + "\n".join(lines) + "\n"
        files[path] = content
        actions.append(WriteFile(path, content, old_content=old))
    if not files and not drift:
        return None, None
    texts = [*files.values(), daemon_json.text or ""]
    if any(mask_secrets(text) != text for text in texts):
        return (
            None,
            "no automatic fix: the files to rewrite hold credentials (the plan would show them)",
        )
    after = analyse(OverlayReader(reader, files))
    left = [f for f in after.findings if f.severity is Severity.FAIL]
    if left:
        return None, f"no automatic fix: after it, {left[0].message}"
    actions += [
        Command(["systemctl", "daemon-reload"]),
        Command(["systemctl", "restart", "docker"]),
    ]
    return (
        Fix(
            id="node.docker.drift",
            title=(
                "Make docker.service, its drop-ins, environment files and daemon.json agree, "
                "then restart docker"
                if files
                else "Restart docker so the daemon runs with its configuration"
            ),
            safety=FixSafety.UNSAFE,
            actions=actions,
        ),
        None,
    )


def _carried_over(use: FlagUse, file_value: Any) -> list[str]:
    """Entries of a list/map directive only daemon.json had, as flags (nothing is lost)."""
    if use.spec.kind == "list" and isinstance(file_value, list):
        have = set(use.values)
        return [f"--{use.spec.name}={unit_quote(str(v))}" for v in file_value if str(v) not in have]
    if use.spec.kind == "map" and isinstance(file_value, dict):
        have = {v.partition("=")[0] for v in use.values}
        return [
            f"--{use.spec.name}={unit_quote(f'{k}={v}')}"
            for k, v in file_value.items()
            if k not in have
        ]
    return []


# -- the check ----------------------------------------------------------------------------


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _summary_parts(analysis: Analysis, drift: Sequence[Finding]) -> list[str]:
    """One short phrase per kind of finding, worst first."""
    parts: list[str] = []
    if analysis.multi_exec:
        parts.append(f"{UNIT} has more than one ExecStart= (systemd refuses it)")
    if analysis.conflicts:
        keys = ", ".join(key for _, key, _ in analysis.conflicts)
        parts.append(f"{keys} set both as a flag and in daemon.json (dockerd refuses to start)")
    if drift:
        names = ", ".join(str(f.evidence.get("setting")) for f in drift)
        parts.append(f"the running daemon differs from its configuration: {names}")
    if analysis.unreferenced:
        names = ", ".join(v.name for v in analysis.unreferenced)
        parts.append(f"{names} set but never passed to dockerd")
    reported = {f.resource for f in analysis.findings if "does not load it" in f.message}
    if reported:
        parts.append(f"{', '.join(sorted(str(r) for r in reported))} not loaded by {UNIT}")
    others = [
        f.message
        for f in analysis.findings
        if "lacks both" in f.message
        or f.message.startswith("EnvironmentFile=")
        or f.message.endswith("dockerd exits at start)")
    ]
    parts.extend(others)
    shadowed = [f for f in analysis.findings if "wins" in f.evidence]
    if shadowed:
        names = ", ".join(
            f"{f.evidence.get('variable') or f.evidence.get('setting')} ({f.evidence['wins']} wins)"
            for f in shadowed
        )
        parts.append(f"set in two places: {names}")
    return parts or ["Docker settings disagree"]


class DockerDrift(Check):
    """Docker settings that disagree between its configuration files and the running daemon.

    The effective configuration is built as systemd and dockerd build it: docker.service
    (``/etc/systemd/system`` replaces ``/usr/lib`` and ``/lib``) and its drop-ins in
    lexicographic order; ``Environment=`` and the ``EnvironmentFile=`` files
    (``/etc/sysconfig/docker``, ``docker-storage``, ``docker-network`` on CentOS); the
    ``ExecStart=`` argv with ``$VAR`` split into words and ``${VAR}`` kept whole; dockerd's
    flags; ``/etc/docker/daemon.json``; then ``docker info`` of the running daemon. Compared:
    insecure registries, registry mirrors, cgroup driver, storage driver, log driver, data root
    and the proxy variables. Every value in a finding names the file and line it comes from.

    ## Why it matters
    On CentOS the docker rpm splits the daemon's configuration between the unit and
    ``/etc/sysconfig/docker``; docker-ce reads no sysconfig at all. A registry or proxy added
    to one file and missing from the other, a daemon not restarted after an edit, a second
    ``ExecStart=`` in a drop-in (systemd refuses the unit: "docker.service has more than one
    ExecStart= setting, which is only allowed for Type=oneshot services. Refusing.") or a
    directive both passed as a flag and in daemon.json (dockerd exits: "the following
    directives are specified both as a flag and in the configuration file") leave pulls
    failing with x509 or timeout errors and kubelet without a runtime.

    ## How to fix
    Keep each setting in one place and restart docker. The fix writes one drop-in,
    ``/etc/systemd/system/docker.service.d/kdoctor.conf`` (``zz-kdoctor.conf`` when another
    drop-in sorting after it sets ExecStart=), and edits daemon.json only to remove a key that
    a flag also sets, then runs ``systemctl daemon-reload`` and ``systemctl restart docker``;
    the engine re-checks. Choices:

    - two ExecStart=: the drop-in resets ExecStart= and keeps the last one (what the drop-in's
      author meant; the comparisons above use it too), written as it was, with its ``$VAR``
      references;
    - flag and daemon.json: the flag wins (the distribution's unit and sysconfig pass it) and
      the key leaves daemon.json; list/map entries only daemon.json had are added to that
      ExecStart as flags so nothing is lost (a differing single value, e.g. log-driver, is
      dropped: the diff shows it);
    - a sysconfig variable holding flags that ExecStart never names: ``$VAR`` is appended;
    - proxy variables in a sysconfig file the unit does not load (docker-ce): the drop-in
      loads it with ``EnvironmentFile=-`` rather than copying values (no credentials in the
      plan);
    - the daemon disagreeing with files that are right: restart only.
    No fix is offered when, simulated on the files, it would leave a failure.

    ## Fix safety
    unsafe: restarting docker restarts every container without live-restore, and the
    changed flags change what the daemon trusts (insecure registries) and how it runs.
    """

    id = "node.docker.drift"
    title = "Docker configuration files and the running daemon agree"
    scope = Scope.NODE
    fix_safety = FixSafety.UNSAFE

    def run(self, ctx: CheckContext) -> Verdict:
        node = ctx.node
        runtime = kubelet_runtime(node)
        if runtime.runtime is not None and runtime.runtime != "docker":
            raise FactMissing(f"{runtime.reason}: Docker is not the node's container runtime")
        analysis = analyse(node)
        info = read_docker_info(node)
        daemon_json = analysis.daemon_json
        assert daemon_json is not None
        if analysis.unit is None and not daemon_json.exists and info.data is None:
            raise FactMissing(
                f"Docker is not installed: no {UNIT} unit, no {DEFAULT_CONFIG_FILE}, {info.note}"
            )
        if analysis.unit is not None and analysis.unit.masked:
            raise FactMissing(
                f"{UNIT} is masked ({analysis.unit.fragment}): systemd never starts it"
            )
        findings = list(analysis.findings)
        drift = _drift_findings(analysis, info)
        findings.extend(drift)
        daemon_note = info.note or f"docker info from {info.source}"
        if analysis.unit is None:
            daemon_note += f"; no {UNIT} unit found: daemon.json only"
        findings = [
            Finding(
                f.severity,
                f.message,
                f.resource,
                {**f.evidence, "daemon": daemon_note},
                f.hint,
                f.caused_by,
            )
            for f in findings
        ]
        if not findings and info.data is None:
            # Installed, the files agree, but the daemon did not answer: whether it runs
            # what they say cannot be told. Never `ok` on the files alone.
            raise FactError(
                f"Docker is installed but {info.note}: the configuration files agree, the "
                "running daemon could not be compared"
            )
        fix, no_fix = (None, None)
        if findings:
            fix, no_fix = build_fix(node, analysis, bool(drift))
        compared = ", ".join(
            f"{name} [{' '.join(s.shown)}]"
            for name, s in analysis.settings.items()
            if s.shown and name not in PROXY_VARS
        )
        tail = "" if info.data is not None else f"; {info.note}: files compared, not the daemon"
        summary = "; ".join(_summary_parts(analysis, drift)) + tail
        if no_fix:
            summary += f"; {no_fix}"
        agree = "configuration and daemon agree" if info.data is not None else "files agree"
        return Verdict.from_findings(
            findings,
            summary=summary,
            ok_summary=f"Docker {agree}{' (' + compared + ')' if compared else ''}{tail}",
            fix=fix,
        )
