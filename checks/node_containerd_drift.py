"""node.containerd.drift: containerd configuration that disagrees with what the kubelet and
kubeadm need, each value named with the file (and ``imports``) and line it comes from."""

from __future__ import annotations

import posixpath
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doctor.analysis.runtime import read_kubelet, version_text
from doctor.core.context import CheckContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Action, Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.core.sources import NodeFacts
from doctor.parse.containerd import (
    CONFIG_PATH,
    CRI_IMAGES_V3,
    CRI_RUNTIME_V3,
    CRI_V2,
    ConfigFile,
    ContainerdConfig,
    Located,
    load_config,
    parse_containerd_version,
    v1_plugin_name,
)
from doctor.parse.kubelet import Kubelet
from doctor.parse.toml_lines import KeyPath, TomlSyntaxError, load_toml
from fixes.base import Command, WriteFile
from fixes.containerd import Expect, VerifyContainerdConfig, remove_from_list, set_value
from fixes.docker import ReloadOnRollback

VERSION_ARGV = ["containerd", "--version"]
DUMP_ARGV = ["containerd", "config", "dump"]
DEFAULT_ARGV = ["containerd", "config", "default"]
CRI_NAMES = frozenset({"cri", CRI_V2, CRI_RUNTIME_V3, CRI_IMAGES_V3})
CGROUP_V2_MARK = "/sys/fs/cgroup/cgroup.controllers"

#: The pause image tag kubeadm expects, by kubelet minor version: kubeadm's
#: ``constants.PauseVersion`` (cmd/kubeadm/app/constants/constants.go) in each release;
#: kubeadm preflight warns when the runtime's sandbox image differs.
PAUSE_TAGS: list[tuple[tuple[int, int], tuple[int, int], str]] = [
    ((1, 21), (1, 21), "3.4.1"),
    ((1, 22), (1, 22), "3.5"),
    ((1, 23), (1, 23), "3.6"),
    ((1, 24), (1, 24), "3.7"),
    ((1, 25), (1, 25), "3.8"),
    ((1, 26), (1, 30), "3.9"),
    ((1, 31), (1, 33), "3.10"),
    ((1, 34), (9, 99), "3.10.1"),
]
#: From Kubernetes 1.34 the kubelet takes its cgroup driver from the runtime (KEP-4033,
#: KubeletCgroupDriverFromCRI GA in 1.34) when the runtime reports it: containerd from 2.0
#: (the CRI RuntimeConfig call). Before, the kubelet's own cgroupDriver must match.
DRIVER_FROM_CRI_KUBELET = (1, 34)
DRIVER_FROM_CRI_CONTAINERD = (2, 0)
#: containerd 2.2 removed the CRI registry.mirrors / configs / auths (deprecated since 1.5,
#: docs/cri/registry.md); config_path + hosts.toml replaces them.
REGISTRY_REMOVED_IN = (2, 2)
LEGACY_REGISTRY_KEYS = ("mirrors", "configs", "auths")


def expected_pause(version: tuple[int, int, int]) -> str | None:
    for low, high, tag in PAUSE_TAGS:
        if low <= version[:2] <= high:
            return tag
    return None


@dataclass(frozen=True)
class CriPaths:
    """Where the CRI settings live in one config version."""

    version: int

    @property
    def runtime(self) -> KeyPath:
        return ("plugins", CRI_V2 if self.version < 3 else CRI_RUNTIME_V3)

    @property
    def images(self) -> KeyPath:
        return ("plugins", CRI_V2 if self.version < 3 else CRI_IMAGES_V3)

    @property
    def sandbox(self) -> KeyPath:
        if self.version < 3:
            return (*self.images, "sandbox_image")
        return (*self.images, "pinned_images", "sandbox")

    @property
    def registry(self) -> KeyPath:
        return (*self.images, "registry")

    @property
    def default_runtime(self) -> KeyPath:
        return (*self.runtime, "containerd", "default_runtime_name")

    def systemd_cgroup(self, runtime: str) -> KeyPath:
        return (*self.runtime, "containerd", "runtimes", runtime, "options", "SystemdCgroup")


@dataclass
class Edits:
    """What the fix changes, per file (node path -> new text), and what it must verify."""

    texts: dict[str, str] = field(default_factory=dict)
    originals: dict[str, str] = field(default_factory=dict)
    expects: list[Expect] = field(default_factory=list)

    def edit(self, config: ConfigFile, change: Any) -> None:
        self.originals.setdefault(config.path, config.text)
        self.texts[config.path] = change(self.texts.get(config.path, config.text))


def _dump(node: NodeFacts) -> tuple[dict[str, Any] | None, str]:
    """containerd's own merge (``containerd config dump``), or why there is none.

    Live it is asked only when the node is this machine (no --root): the binary would read
    this machine's imports, not the root's."""
    if not node.is_bundle and node.host_path(CONFIG_PATH) != Path(CONFIG_PATH):
        # Under --root only containerd's built-in defaults can be asked (they read no file).
        try:
            output = node.command("containerd-config-default.toml", DEFAULT_ARGV)
        except (FactMissing, FactError) as exc:
            return None, f"containerd config dump not run under --root; no defaults ({exc})"
        try:
            return load_toml(output.stdout, output.source), output.source
        except TomlSyntaxError as exc:
            raise FactError(str(exc)) from exc
    try:
        output = node.command("containerd-config-dump.toml", DUMP_ARGV)
    except FactMissing as exc:
        return None, f"no containerd config dump ({exc})"
    except FactError as exc:
        if node.is_bundle:
            raise
        return None, f"containerd refuses the configuration: {exc}"
    try:
        return load_toml(output.stdout, output.source), output.source
    except TomlSyntaxError as exc:
        raise FactError(str(exc)) from exc


def _dig(doc: dict[str, Any] | None, path: KeyPath) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


class ContainerdDrift(Check):
    """containerd settings that disagree with what the kubelet and kubeadm need.

    containerd's configuration is read as containerd builds it (:mod:`doctor.parse.containerd`):
    ``/etc/containerd/config.toml``, then the files of its ``imports`` breadth first; lists
    appended, values overridden, and on containerd 1.x a plugin section of a later file
    replacing the earlier one whole; config version 1 names migrated, version 2 keys moved to
    their version 3 plugins for containerd 2.x. ``containerd config dump`` (live, or the
    bundle's ``commands/containerd-config-dump.toml``) supplies containerd's built-in defaults
    for what no file sets. The kubelet side: ``/var/lib/kubelet/config.yaml``, its flags, and
    ``kubelet --version``.

    Found: the CRI plugin disabled (``disabled_plugins``: ``cri`` as Docker's containerd.io
    package ships it); ``SystemdCgroup`` against the kubelet's ``cgroupDriver`` (kubelet
    < 1.34 or containerd 1.x; from 1.34 with containerd >= 2.0 the kubelet takes the driver
    from containerd, so it is judged against systemd + cgroup v2); the sandbox (pause) image
    against the tag kubeadm expects for the kubelet's minor (3.9 for 1.26–1.30, 3.10 for
    1.31–1.33, 3.10.1 from 1.34); the deprecated ``registry.mirrors``/``configs``/``auths``
    (warn; fail on containerd >= 2.2 which removed them, and with ``config_path`` set, which
    the CRI plugin refuses); keys of the other config version, which containerd ignores
    silently; an import that replaces a whole plugin section (containerd 1.x); a relative
    glob in ``imports``, which containerd 1.x matches against its working directory.

    ## Why it matters
    With CRI disabled kubeadm stops at preflight ("container runtime is not running: ... CRI
    v1 runtime API is not implemented for endpoint"). A cgroup driver the kubelet and the
    runtime disagree on leaves two managers of the cgroup tree: pods are restarted, control
    plane static pods crash-loop. A pause image other than kubeadm's is pulled at every node
    start (and is not pinned against image GC). Mirrors in the deprecated section stop
    working on containerd 2.2, and next to ``config_path`` the CRI plugin does not load at
    all. Keys written for the other config version look right and do nothing.

    ## How to fix
    The fix edits the file that wins for each value in place with ``tomlkit`` (comments and
    every other setting kept), backs it up, verifies the merged result with ``containerd
    --config /etc/containerd/config.toml config dump`` before restarting, then runs
    ``systemctl restart containerd``; the engine re-checks and rolls back otherwise. It never
    deletes config.toml. It sets ``SystemdCgroup`` to the kubelet's driver (``true`` for
    systemd), the sandbox image to kubeadm's tag (same repository), and removes the CRI entries
    from ``disabled_plugins``. Registry mirrors (move them to
    ``/etc/containerd/certs.d/<host>/hosts.toml``) and keys of the wrong config version
    (``containerd config migrate``) are left to a person: the finding says what to write.

    ## Fix safety
    unsafe: restarting containerd restarts no containers, but the kubelet loses its runtime
    for the restart, and a changed cgroup driver applies to every new pod.
    """

    id = "node.containerd.drift"
    title = "containerd configuration agrees with the kubelet and kubeadm"
    scope = Scope.NODE
    fix_safety = FixSafety.UNSAFE

    def run(self, ctx: CheckContext) -> Verdict:
        node = ctx.node
        kubelet = read_kubelet(node)
        if kubelet is None:
            raise FactMissing(
                "no kubelet on this node (no /var/lib/kubelet/config.yaml, kubeadm-flags.env "
                "or kubelet --version): nothing uses containerd's CRI"
            )
        if (kubelet.config is not None or kubelet.flags) and kubelet.runtime != "containerd":
            endpoint = kubelet.runtime_endpoint
            raise FactMissing(
                f"the kubelet uses {kubelet.runtime}, not containerd (containerRuntimeEndpoint "
                f"{endpoint.value}, {endpoint.source})"
            )
        version: tuple[int, int, int] | None = None
        version_source = "containerd --version not available"
        try:
            output = node.command("containerd-version.txt", VERSION_ARGV)
            version = parse_containerd_version(output.stdout)
            version_source = output.source
        except FactMissing:
            pass
        except FactError as exc:
            version_source = str(exc)
        try:
            config = load_config(node, version)
        except TomlSyntaxError as exc:
            raise FactError(str(exc)) from exc
        dump, dump_source = _dump(node)
        if config is None and version is None and dump is None:
            raise FactMissing(
                f"containerd is not installed: no {CONFIG_PATH}, no containerd binary "
                f"({version_source})"
            )
        judge = Judge(node, kubelet, version, config, dump, dump_source)
        judge.run()
        evidence: dict[str, Any] = {
            "containerd": version_text(version) if version else "unknown",
            "containerd_version_source": version_source,
            "config_files": [f.path for f in config.files] if config else [],
            "config_version_used": judge.paths.version,
            "kubelet": version_text(kubelet.version),
            "dump": dump_source,
            **judge.values,
        }
        fix = judge.build_fix() if judge.findings else None
        ok_parts = [f"{k} {v}" for k, v in judge.values.items() if k != "registry"]
        return Verdict.from_findings(
            judge.findings,
            summary="; ".join(dict.fromkeys(judge.short)),
            ok_summary="containerd agrees with the kubelet: " + ", ".join(ok_parts),
            fix=fix,
            evidence=evidence,
        )


class Judge:
    """The judgement of one node's containerd configuration, and the edits that fix it."""

    def __init__(
        self,
        node: NodeFacts,
        kubelet: Kubelet,
        version: tuple[int, int, int] | None,
        config: ContainerdConfig | None,
        dump: dict[str, Any] | None,
        dump_source: str,
    ) -> None:
        self.node = node
        self.kubelet = kubelet
        self.version = version
        self.config = config
        self.dump = dump
        self.dump_source = dump_source
        target = config.target_version if config else (3 if version and version[0] >= 2 else 2)
        self.paths = CriPaths(target)
        dump_version = (dump or {}).get("version")
        self.dump_paths = CriPaths(dump_version if isinstance(dump_version, int) else target)
        self.findings: list[Finding] = []
        self.short: list[str] = []
        self.values: dict[str, Any] = {}
        self.edits = Edits()
        self.no_fix: list[str] = []

    # -- values ---------------------------------------------------------------------------
    def value(self, path: KeyPath, dump_path: KeyPath, default: Any = None) -> Located | None:
        """A setting from the files, else containerd's default from its dump, else ours."""
        if self.config is not None:
            found = self.config.get(path)
            if found is not None:
                return found
        from_dump = _dig(self.dump, dump_path)
        if from_dump is not None:
            return Located(from_dump, f"containerd's default ({self.dump_source})", None)
        if default is not None:
            return Located(default, "containerd's default", None)
        return None

    def add(self, severity: Severity, message: str, short: str, **kwargs: Any) -> None:
        self.findings.append(Finding(severity, message, **kwargs))
        self.short.append(short)

    def winner_file(self, section: KeyPath) -> ConfigFile | None:
        """The file whose section containerd uses (the last one that configures it)."""
        if self.config is None:
            return None
        owner = self.config.section(section)
        if owner is not None and owner.line is not None:
            for config in self.config.files:
                if config.path == owner.file:
                    return config
        return self.config.root

    # -- the judgement ----------------------------------------------------------------------
    def run(self) -> None:
        self.version_findings()
        self.cri_disabled()
        self.cgroup_driver()
        self.sandbox_image()
        self.registry()
        self.shadowing()

    def version_findings(self) -> None:
        config = self.config
        if config is None or config.root is None:
            return
        root = config.root
        if root.version >= 3 and self.version is not None and self.version[0] < 2:
            self.add(
                Severity.FAIL,
                f"{root.path} is config version 3 (line {root.line(('version',))}) but containerd "
                f"is {version_text(self.version)}: containerd 1.x does not read version 3, its "
                "io.containerd.cri.v1.* sections are ignored",
                "config version 3 on containerd 1.x",
                resource=root.path,
                hint="write the file as version 2 (containerd config default of 1.x) or "
                "upgrade containerd to 2.x",
            )
            self.no_fix.append("config version 3 on containerd 1.x")
        for missing in config.missing_imports:
            self.add(
                Severity.FAIL,
                f"imports names {missing.value} ({missing.where()}), which does not exist: "
                "containerd fails to start (open …: no such file or directory)",
                "an imported file is missing",
                resource=missing.file,
            )
        by_file: dict[str, list[Any]] = {}
        for misplaced in config.misplaced:
            by_file.setdefault(misplaced.located.file, []).append(misplaced)
        for path, keys in by_file.items():
            first = keys[0]
            names = ", ".join(".".join(m.located.key) + f" (line {m.located.line})" for m in keys)
            self.add(
                Severity.WARN,
                f"{path} is config version {first.file_version} but sets keys of version "
                f"{first.belongs_to}, which containerd ignores without an error: {names}",
                f"config version {first.belongs_to} keys in a version {first.file_version} file",
                resource=path,
                evidence={"keys": [m.located.where() for m in keys]},
                hint="rewrite them at their version's place (`containerd config migrate` prints "
                "a file as version 3)",
            )
        for glob in config.relative_globs:
            self.add(
                Severity.WARN,
                f'imports = ["{glob.pattern}"] ({glob.at.where()}) is a relative pattern: '
                f"containerd 1.x matches it against its working directory (/ under systemd), "
                f"i.e. {glob.resolved}, not next to {glob.at.file}",
                "a relative imports glob loads nothing",
                resource=glob.at.file,
                hint="write it absolute: "
                + posixpath.join(posixpath.dirname(glob.at.file), glob.pattern),
            )

    def cri_disabled(self) -> None:
        self.values["cri"] = "enabled"
        if self.config is None:
            return
        for entry in self.config.disabled_plugins:
            name = str(entry.value)
            if name not in CRI_NAMES and v1_plugin_name(name) not in CRI_NAMES:
                continue
            self.values["cri"] = "disabled"
            self.add(
                Severity.FAIL,
                f'disabled_plugins holds "{name}" ({entry.where()}): containerd\'s CRI plugin is '
                "off and the kubelet cannot use containerd (kubeadm: container runtime is not "
                "running … CRI v1 runtime API is not implemented for endpoint)",
                "the CRI plugin is disabled",
                resource=entry.file,
                evidence={"disabled_plugins": entry.where()},
                hint=f'remove "{name}" from disabled_plugins (Docker\'s containerd.io package '
                "ships it so for Docker, which does not need CRI)",
            )
            config = next(f for f in self.config.files if f.path == entry.file)
            self.edits.edit(
                config, lambda text, n=name: remove_from_list(text, "disabled_plugins", [n])
            )
            self.edits.expects.append(
                Expect("disabled_plugins", (("disabled_plugins",),), absent_from_list=name)
            )

    def cgroup_driver(self) -> None:
        runtime_name = self.value(
            self.paths.default_runtime, self.dump_paths.default_runtime, "runc"
        )
        name = str(runtime_name.value) if runtime_name else "runc"
        systemd = self.value(
            self.paths.systemd_cgroup(name), self.dump_paths.systemd_cgroup(name), False
        )
        assert systemd is not None
        self.values["SystemdCgroup"] = f"{str(systemd.value).lower()} ({systemd.where()})"
        driver = self.kubelet.cgroup_driver
        kubelet_version = self.kubelet.version
        from_cri = (
            kubelet_version is not None
            and kubelet_version[:2] >= DRIVER_FROM_CRI_KUBELET
            and self.version is not None
            and self.version[:2] >= DRIVER_FROM_CRI_CONTAINERD
        )
        want: bool
        if from_cri:
            systemd_host = self.node.systemd_running()
            cgroup_v2 = self.node.exists(CGROUP_V2_MARK)
            if not (systemd_host and cgroup_v2) or systemd.value is True:
                return
            want = True
            self.add(
                Severity.WARN,
                f"SystemdCgroup = false ({systemd.where()}) on a systemd host with cgroup v2: "
                f"kubelet {version_text(kubelet_version)} takes its cgroup driver from "
                f"containerd {version_text(self.version)} (so cgroupfs, whatever its "
                f"cgroupDriver {driver.value} at {driver.source} says), and two managers "
                "share the cgroup tree",
                "containerd uses cgroupfs on a systemd host",
                resource=systemd.file,
                hint="set SystemdCgroup = true for the runc runtime",
            )
        else:
            want = driver.value == "systemd"
            if bool(systemd.value) == want:
                return
            self.add(
                Severity.FAIL,
                f"the kubelet's cgroupDriver is {driver.value} ({driver.source}) but containerd's "
                f"SystemdCgroup = {str(systemd.value).lower()} ({systemd.where()}): kubelet and "
                "runtime manage cgroups differently, pods are restarted and static pods "
                "crash-loop",
                "cgroup driver differs between the kubelet and containerd",
                resource=systemd.file if systemd.line else CONFIG_PATH,
                evidence={"kubelet": driver.source, "containerd": systemd.where()},
                hint=f"set SystemdCgroup = {str(want).lower()} for the {name} runtime",
            )
        self.set_in_winner(
            self.paths.runtime,
            lambda version: CriPaths(version).systemd_cgroup(name),
            want,
            "SystemdCgroup",
            tuple({CriPaths(2).systemd_cgroup(name), CriPaths(3).systemd_cgroup(name)}),
        )

    def sandbox_image(self) -> None:
        sandbox = self.value(self.paths.sandbox, self.dump_paths.sandbox)
        if sandbox is None:
            self.values["sandbox_image"] = "containerd's built-in default (not known: no dump)"
            return
        image = str(sandbox.value)
        self.values["sandbox_image"] = f"{image} ({sandbox.where()})"
        if self.kubelet.version is None:
            return
        tag = expected_pause(self.kubelet.version)
        if tag is None:
            return
        repository, _, current = image.rpartition(":")
        if "/" in current or not repository:
            repository, current = image, ""
        if current == tag:
            return
        wanted = f"{repository}:{tag}"
        self.add(
            Severity.WARN,
            f"sandbox image {image} ({sandbox.where()}), but kubeadm for kubelet "
            f"{version_text(self.kubelet.version)} expects pause:{tag} ({wanted}): kubeadm "
            "preflight warns, and the image kubeadm pre-pulled is not the one used",
            "sandbox image differs from kubeadm's",
            resource=sandbox.file if sandbox.line else CONFIG_PATH,
            evidence={"sandbox_image": image, "expected_tag": tag},
            hint=f'set the sandbox image to "{wanted}"',
        )
        self.set_in_winner(
            self.paths.images,
            lambda version: CriPaths(version).sandbox,
            wanted,
            "sandbox image",
            (CriPaths(2).sandbox, CriPaths(3).sandbox),
        )

    def registry(self) -> None:
        if self.config is None:
            return
        registry = self.config.under(self.paths.registry)
        legacy = {
            key: sorted({path[1] for path in registry if path[0] == key and len(path) > 1})
            for key in LEGACY_REGISTRY_KEYS
        }
        legacy = {key: hosts for key, hosts in legacy.items() if hosts}
        config_path = registry.get(("config_path",))
        self.values["registry"] = (
            f"config_path {config_path.value} ({config_path.where()})"
            if config_path is not None and config_path.value
            else "no config_path"
        )
        if config_path is not None and config_path.value:
            self.hosts_files(str(config_path.value))
        if not legacy:
            return
        first = min(
            (v for p, v in registry.items() if p[0] in legacy), key=lambda v: (v.file, v.line or 0)
        )
        removed = self.version is not None and self.version[:2] >= REGISTRY_REMOVED_IN
        both = "mirrors" in legacy and config_path is not None and bool(config_path.value)
        what = "; ".join(f"{key} for {', '.join(hosts)}" for key, hosts in legacy.items())
        if both:
            severity, tail = (
                Severity.FAIL,
                (
                    f"and config_path is set too ({config_path.where() if config_path else ''}): "
                    "the "
                    "CRI plugin refuses to load (`mirrors` cannot be set when `config_path` is "
                    "provided)"
                ),
            )
        elif removed:
            severity, tail = (
                Severity.FAIL,
                (f"containerd {version_text(self.version)} no longer reads them (removed in 2.2)"),
            )
        else:
            severity, tail = Severity.WARN, "deprecated, removed in containerd 2.2"
        self.add(
            severity,
            f"registry {what} set in the CRI registry section ({first.where()}): {tail}",
            "deprecated registry.mirrors/configs/auths",
            resource=first.file,
            evidence={"hosts": legacy},  # host names only: configs/auths may hold credentials
            hint="move each mirror to /etc/containerd/certs.d/<registry>/hosts.toml and set "
            'config_path = "/etc/containerd/certs.d"; credentials go to the kubelet '
            "(imagePullSecrets) or a credential provider",
        )
        self.no_fix.append("registry mirrors are moved by hand")

    def hosts_files(self, config_path: str) -> None:
        directory = config_path.split(":")[0]
        hosts: list[str] = []
        for name in self.node.listdir(directory):
            path = f"{directory}/{name}/hosts.toml"
            text = self.node.read_text(path)
            if text is None:
                continue
            try:
                load_toml(text, path)
            except TomlSyntaxError as exc:
                raise FactError(str(exc)) from exc
            hosts.append(name)
        self.values["hosts.toml"] = hosts

    def shadowing(self) -> None:
        if self.config is None:
            return
        for replaced in self.config.replaced:
            lost = ", ".join(f"{'.'.join(v.key[2:])} ({v.where()})" for v in replaced.lost)
            earlier = sorted({v.file for v in replaced.lost})
            self.add(
                Severity.WARN,
                f'{replaced.winner.file} configures [plugins."{replaced.plugin}"] too, and '
                f"containerd {version_text(self.version) if self.version else '1.x'} replaces the "
                f"whole section from {', '.join(earlier)} with it (1.x does not merge plugin "
                f"sections): {lost} no longer apply",
                "an import replaces a whole plugin section",
                resource=replaced.winner.file,
                evidence={
                    "winner": replaced.winner.where(),
                    "lost": [v.where() for v in replaced.lost],
                },
                hint=f'keep all of [plugins."{replaced.plugin}"] in one file '
                f"({replaced.winner.file}, the one that wins)",
            )

    # -- the fix ----------------------------------------------------------------------------
    def set_in_winner(
        self,
        section: KeyPath,
        path_for: Any,
        value: Any,
        name: str,
        verify_paths: tuple[KeyPath, ...],
    ) -> None:
        config = self.winner_file(section)
        if config is None:
            self.no_fix.append(f"no {CONFIG_PATH} to edit")
            return
        version = config.version
        path = path_for(2 if version < 3 else 3)
        if version == 1 and path[1] == CRI_V2:
            # version 1 files name plugins by short id: containerd 1.x reads only that
            # ([plugins."io.containerd.grpc.v1.cri"] is ignored there), 2.x migrates it
            path = ("plugins", "cri", *path[2:])
        self.edits.edit(config, lambda text: set_value(text, path, value))
        self.edits.expects.append(Expect(name, verify_paths, value))

    def build_fix(self) -> Fix | None:
        if self.no_fix or not self.edits.texts or self.config is None:
            return None
        for text in self.edits.texts.values():
            try:
                tomllib.loads(text)
            except tomllib.TOMLDecodeError:
                return None
        actions: list[Action] = [ReloadOnRollback("containerd")]
        actions += [
            WriteFile(path, text, old_content=self.edits.originals[path])
            for path, text in self.edits.texts.items()
        ]
        actions.append(VerifyContainerdConfig(CONFIG_PATH, self.edits.expects))
        actions.append(Command(["systemctl", "restart", "containerd"]))
        return Fix(
            id="node.containerd.drift",
            title="Edit containerd's configuration in place to agree with the kubelet, "
            "then restart containerd",
            safety=FixSafety.UNSAFE,
            actions=actions,
        )
