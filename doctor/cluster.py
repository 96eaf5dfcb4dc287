"""The cluster side of the context: where the kubeconfig is and, later, the API facts.

Finding the configuration is plain file and environment lookups, so it happens here without
importing the ``kubernetes`` package (0.4 s); node-only runs never pay that cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True)
class ClusterTarget:
    """What the report's ``target.cluster`` says."""

    context: str | None
    server: str | None
    version: str | None

    def to_json(self) -> dict[str, Any]:
        return {"context": self.context, "server": self.server, "version": self.version}


@dataclass(frozen=True)
class ClusterConfig:
    """Where cluster access comes from: a kubeconfig file or the in-cluster service account."""

    kubeconfig: Path | None
    context: str | None
    in_cluster: bool = False


def find_cluster_config(
    kubeconfig: str | None, context: str | None, environ: dict[str, str] | None = None
) -> tuple[ClusterConfig | None, str]:
    """Resolve access the way kubectl does; return (config, where-we-looked).

    Order: ``--kubeconfig``, ``$KUBECONFIG`` (first existing entry), ``~/.kube/config``,
    then in-cluster config. The second value explains every place tried, for the skip reason.
    """
    env = os.environ if environ is None else environ
    tried: list[str] = []
    if kubeconfig:
        path = Path(kubeconfig).expanduser()
        if path.is_file():
            return ClusterConfig(path, context), f"--kubeconfig {path}"
        tried.append(f"--kubeconfig {path} (missing)")
        return None, "; ".join(tried)
    tried.append("--kubeconfig (not given)")
    env_value = env.get("KUBECONFIG", "")
    if env_value:
        for entry in env_value.split(os.pathsep):
            if entry and Path(entry).expanduser().is_file():
                return ClusterConfig(Path(entry).expanduser(), context), f"$KUBECONFIG {entry}"
        tried.append(f"$KUBECONFIG={env_value} (no such file)")
    else:
        tried.append("$KUBECONFIG (unset)")
    home = Path(env.get("HOME", str(Path.home()))) / ".kube" / "config"
    if home.is_file():
        return ClusterConfig(home, context), str(home)
    tried.append(f"{home} (missing)")
    if env.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_TOKEN.is_file():
        return ClusterConfig(None, context, in_cluster=True), "in-cluster service account"
    tried.append("in-cluster config (KUBERNETES_SERVICE_HOST unset or no service-account token)")
    return None, "; ".join(tried)


class ClusterFacts:
    """Read-only access to the cluster. This base is the "no cluster" case."""

    def __init__(self, unavailable: str | None = None) -> None:
        self.unavailable = unavailable

    @property
    def target(self) -> ClusterTarget | None:
        return None

    @property
    def is_bundle(self) -> bool:
        return False


class NoCluster(ClusterFacts):
    """No kubeconfig or in-cluster config: every cluster check is ``skip`` with this reason."""

    def __init__(self, where: str) -> None:
        super().__init__(f"no cluster configuration found (looked at: {where})")


def open_bundle_cluster(bundle: Path) -> ClusterFacts:
    """The cluster part of a bundle (``cluster/``), or why there is none."""
    if not (bundle / "cluster").is_dir():
        return ClusterFacts(f"the bundle has no cluster/ directory ({bundle / 'cluster'})")
    from doctor.kube import BundleCluster

    return BundleCluster(bundle)


def open_live_cluster(config: ClusterConfig, timeout: float) -> ClusterFacts:
    """Live API access through the kubeconfig or in-cluster config (imports kubernetes)."""
    from doctor.kube import LiveCluster

    return LiveCluster(config, timeout)


def collect_cluster(out: Path, args: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the cluster part of a bundle (doctor.collect_cluster does the work)."""
    from doctor.collect_cluster import collect_cluster as collect

    return collect(out, args, manifest)
