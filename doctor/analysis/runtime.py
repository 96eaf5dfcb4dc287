"""The kubelet as the runtime checks need it: its settings (file, flags, defaults), its
version, and which container runtime it talks to, which decides the runtime checks that
apply (``node.docker.drift`` on a Docker node, ``node.containerd.drift`` on a containerd one).
"""

from __future__ import annotations

from dataclasses import dataclass

from doctor.core.errors import FactError, FactMissing
from doctor.core.sources import NodeFacts
from doctor.parse.kubelet import (
    CONFIG_PATH,
    FLAGS_FILES,
    Flag,
    Kubelet,
    KubeletConfigError,
    parse_config_yaml,
    parse_flags_env,
    parse_kubelet_version,
)

KUBELET_VERSION_ARGV = ["kubelet", "--version"]


def read_kubelet(node: NodeFacts) -> Kubelet | None:
    """The kubelet's configuration; None when the node has none of its files or binary.

    A config.yaml or flags file that cannot be parsed is a :class:`FactError` naming file and
    line; ``kubelet --version`` that is not there only leaves the version unknown.
    """
    config = None
    text = node.read_text(CONFIG_PATH)
    try:
        if text is not None:
            config = parse_config_yaml(text, node.display_path(CONFIG_PATH))
        flags: list[Flag] = []
        for path in FLAGS_FILES:
            flags_text = node.read_text(path)
            if flags_text is not None:
                flags.extend(parse_flags_env(flags_text, node.display_path(path)))
    except KubeletConfigError as exc:
        raise FactError(str(exc)) from exc
    version = None
    source = ""
    try:
        output = node.command("kubelet-version.txt", KUBELET_VERSION_ARGV)
        version = parse_kubelet_version(output.stdout)
        source = output.source
    except (FactMissing, FactError):
        pass
    if config is None and not flags and version is None:
        return None
    return Kubelet(config, flags, version, source)


@dataclass(frozen=True)
class RuntimeChoice:
    """Which runtime the kubelet uses, and the evidence (setting and where it is set)."""

    runtime: str | None  # containerd, docker, crio, an endpoint; None when unknown
    reason: str


def kubelet_runtime(node: NodeFacts) -> RuntimeChoice:
    """The runtime named by the kubelet's containerRuntimeEndpoint (flag, file or default)."""
    kubelet = read_kubelet(node)
    if kubelet is None:
        return RuntimeChoice(None, "no kubelet configuration found")
    if kubelet.config is None and not kubelet.flags:
        return RuntimeChoice(None, "the kubelet's configuration files are not there")
    endpoint = kubelet.runtime_endpoint
    return RuntimeChoice(
        kubelet.runtime,
        f"the kubelet uses {kubelet.runtime} (containerRuntimeEndpoint {endpoint.value}, "
        f"{endpoint.source})",
    )


def version_text(version: tuple[int, int, int] | None) -> str:
    return "unknown" if version is None else "v" + ".".join(str(part) for part in version)
