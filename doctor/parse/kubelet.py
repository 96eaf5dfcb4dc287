"""The kubelet's configuration: ``/var/lib/kubelet/config.yaml`` (KubeletConfiguration),
the flags kubeadm and the packages pass (``kubeadm-flags.env``, ``/etc/default/kubelet``,
``/etc/sysconfig/kubelet``) and ``kubelet --version``; every value with file and line.

Precedence (kubelet's own): a command-line flag overrides the same field of the config file.
Defaults are the KubeletConfiguration v1beta1 ones (``pkg/kubelet/apis/config/v1beta1``):
``cgroupDriver: cgroupfs``, ``failSwapOn: true``, ``memorySwap.swapBehavior: NoSwap``,
``failCgroupV1: true`` from 1.35 (false before), ``containerRuntimeEndpoint:
unix:///run/containerd/containerd.sock`` (since 1.24 the flag's default; before 1.24 the
kubelet ran the Docker shim unless told ``--container-runtime=remote``).
"""

from __future__ import annotations

import contextlib
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

import yaml

CONFIG_PATH = "/var/lib/kubelet/config.yaml"
FLAGS_FILES = (
    "/var/lib/kubelet/kubeadm-flags.env",
    "/etc/default/kubelet",
    "/etc/sysconfig/kubelet",
)
DEFAULT_ENDPOINT = "unix:///run/containerd/containerd.sock"
_VERSION = re.compile(r"v?(\d+)\.(\d+)(?:\.(\d+))?")
#: flag name -> KubeletConfiguration field it sets
FLAG_FIELDS = {
    "cgroup-driver": "cgroupDriver",
    "fail-swap-on": "failSwapOn",
    "container-runtime-endpoint": "containerRuntimeEndpoint",
}


class KubeletConfigError(ValueError):
    """A kubelet file that cannot be parsed, with the line the parser stopped at."""

    def __init__(self, path: str, line: int | None, reason: str) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class Setting:
    """A kubelet setting's value and where it comes from (``file:line`` or "default")."""

    value: Any
    source: str
    default: bool = False


@dataclass(frozen=True)
class KubeletConfigFile:
    path: str
    data: dict[str, Any]
    lines: dict[tuple[str, ...], int]

    def where(self, *keys: str) -> str:
        line = self.lines.get(tuple(keys))
        return f"{self.path}:{line}" if line else self.path


def parse_config_yaml(text: str, path: str = CONFIG_PATH) -> KubeletConfigFile:
    """KubeletConfiguration with the line of every key (two levels deep)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = str(exc.problem or exc.context or "invalid YAML")
        raise KubeletConfigError(path, line, f"invalid YAML: {reason}") from exc
    except yaml.YAMLError as exc:
        raise KubeletConfigError(path, None, f"invalid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise KubeletConfigError(path, 1, "not a KubeletConfiguration (not a YAML mapping)")
    kind = data.get("kind")
    if kind is not None and kind != "KubeletConfiguration":
        raise KubeletConfigError(path, None, f"kind is {kind!r}, not KubeletConfiguration")
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            lines[(key,)] = key_node.start_mark.line + 1
            if isinstance(value_node, yaml.MappingNode):
                for sub_key, _ in value_node.value:
                    lines[(key, str(sub_key.value))] = sub_key.start_mark.line + 1
    return KubeletConfigFile(path, data, lines)


@dataclass(frozen=True)
class Flag:
    name: str
    value: str
    source: str  # file:line (variable)


def parse_flags_env(text: str, path: str) -> list[Flag]:
    """``--flag=value`` words of the variables in kubeadm-flags.env-style files
    (``KUBELET_KUBEADM_ARGS="--a=b --c=d"``, ``KUBELET_EXTRA_ARGS=…``)."""
    flags: list[Flag] = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        name, _, value = stripped.partition("=")
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise KubeletConfigError(path, number, f"{name}: {exc}") from exc
        if len(words) == 1:
            with contextlib.suppress(ValueError):
                words = shlex.split(words[0])
        index = 0
        while index < len(words):
            word = words[index]
            if word.startswith("--"):
                flag, eq, flag_value = word[2:].partition("=")
                if not eq and index + 1 < len(words) and not words[index + 1].startswith("-"):
                    index += 1
                    flag_value = words[index]
                elif not eq:
                    flag_value = "true"
                flags.append(Flag(flag, flag_value, f"{path}:{number} ({name.strip()})"))
            index += 1
    return flags


def parse_kubelet_version(text: str) -> tuple[int, int, int] | None:
    """``kubelet --version``: "Kubernetes v1.30.2"."""
    for word in text.split():
        match = _VERSION.fullmatch(word.strip())
        if match and word.startswith("v"):
            return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)
    return None


def _bool(value: str) -> bool:
    return value.lower() in ("1", "t", "true")


@dataclass
class Kubelet:
    """What the kubelet runs with: config file, flags over it, defaults under it."""

    config: KubeletConfigFile | None
    flags: list[Flag] = field(default_factory=list)
    version: tuple[int, int, int] | None = None
    version_source: str = ""

    def _flag(self, name: str) -> Flag | None:
        found = [f for f in self.flags if f.name == name]
        return found[-1] if found else None

    def _field(self, key: str) -> tuple[Any, str] | None:
        if self.config is not None and key in self.config.data:
            return self.config.data[key], self.config.where(key)
        return None

    @property
    def cgroup_driver(self) -> Setting:
        flag = self._flag("cgroup-driver")
        if flag is not None:
            return Setting(flag.value, flag.source)
        found = self._field("cgroupDriver")
        if found is not None:
            return Setting(found[0], found[1])
        return Setting("cgroupfs", "kubelet default (no cgroupDriver in its config)", True)

    @property
    def fail_swap_on(self) -> Setting:
        flag = self._flag("fail-swap-on")
        if flag is not None:
            return Setting(_bool(flag.value), flag.source)
        found = self._field("failSwapOn")
        if found is not None:
            return Setting(bool(found[0]), found[1])
        return Setting(True, "kubelet default (failSwapOn: true)", True)

    @property
    def swap_behavior(self) -> Setting:
        memory_swap = self.config.data.get("memorySwap") if self.config else None
        if isinstance(memory_swap, dict) and memory_swap.get("swapBehavior"):
            assert self.config is not None
            return Setting(
                memory_swap["swapBehavior"], self.config.where("memorySwap", "swapBehavior")
            )
        return Setting("NoSwap", "kubelet default (memorySwap.swapBehavior: NoSwap)", True)

    @property
    def fail_cgroup_v1(self) -> Setting:
        found = self._field("failCgroupV1")
        if found is not None:
            return Setting(bool(found[0]), found[1])
        default = self.version is not None and self.version[:2] >= (1, 35)
        return Setting(default, f"kubelet default (failCgroupV1: {str(default).lower()})", True)

    @property
    def runtime_endpoint(self) -> Setting:
        flag = self._flag("container-runtime-endpoint")
        if flag is not None:
            return Setting(flag.value, flag.source)
        found = self._field("containerRuntimeEndpoint")
        if found is not None:
            return Setting(found[0], found[1])
        runtime_flag = self._flag("container-runtime")
        if runtime_flag is not None and runtime_flag.value == "docker":
            return Setting("dockershim", runtime_flag.source)
        if self.version is not None and self.version[:2] < (1, 24):
            return Setting("dockershim", "kubelet default before 1.24 (the Docker shim)", True)
        return Setting(DEFAULT_ENDPOINT, f"kubelet default ({DEFAULT_ENDPOINT})", True)

    @property
    def runtime(self) -> str:
        """containerd, docker (dockershim or cri-dockerd), crio or the endpoint itself."""
        return runtime_of(str(self.runtime_endpoint.value))


def runtime_of(endpoint: str) -> str:
    text = endpoint.lower()
    if text == "dockershim" or "dockershim" in text or "cri-dockerd" in text:
        return "docker"
    if "containerd" in text:
        return "containerd"
    if "crio" in text or "cri-o" in text:
        return "crio"
    return endpoint
