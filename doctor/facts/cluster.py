"""The cluster side of the context: where the kubeconfig is and, later, the API facts.

Finding the configuration is plain file and environment lookups, so it happens here without
importing the ``kubernetes`` package (0.4 s); node-only runs never pay that cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from doctor.core.sources import ClusterFacts

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


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


class NoCluster(ClusterFacts):
    """No kubeconfig or in-cluster config: every cluster check is ``skip`` with this reason."""

    def __init__(self, where: str) -> None:
        super().__init__(f"no cluster configuration found (looked at: {where})")
