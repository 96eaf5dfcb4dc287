"""The cluster side of the context: where the kubeconfig is and, later, the API facts.

Finding the configuration is plain file and environment lookups, so it happens here without
importing the ``kubernetes`` package (0.4 s); node-only runs never pay that cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from doctor.core.errors import UsageError
from doctor.core.sources import ClusterFacts

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


@dataclass(frozen=True)
class ClusterConfig:
    """Where cluster access comes from: a kubeconfig file or the in-cluster service account."""

    kubeconfig: Path | None
    context: str | None
    in_cluster: bool = False


#: Where kubeadm leaves the cluster-admin kubeconfig on a control-plane node.
KUBEADM_ADMIN_CONF = "etc/kubernetes/admin.conf"


def find_cluster_config(
    kubeconfig: str | None,
    context: str | None,
    environ: dict[str, str] | None = None,
    root: Path = Path("/"),
) -> tuple[ClusterConfig | None, str]:
    """Resolve access the way kubectl does, plus kubeadm's admin.conf; return (config,
    where-we-looked).

    Order: ``--kubeconfig``, ``$KUBECONFIG`` (first existing entry), ``~/.kube/config``,
    ``/etc/kubernetes/admin.conf`` (under ``root``), then in-cluster config. The second value
    explains every place tried, for the skip reason. A ``--kubeconfig`` that is missing or
    unreadable is a :class:`UsageError`: the user named it, a skip would hide the typo.
    """
    env = os.environ if environ is None else environ
    tried: list[str] = []
    if kubeconfig:
        path = Path(kubeconfig).expanduser()
        problem = _unreadable(path)
        if problem:
            raise UsageError(
                f"--kubeconfig {path}: {problem}",
                "check the path, or leave --kubeconfig out to use $KUBECONFIG, "
                "~/.kube/config or /etc/kubernetes/admin.conf",
            )
        return ClusterConfig(path, context), f"--kubeconfig {path}"
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
    candidates = [home, root / KUBEADM_ADMIN_CONF]
    for path in candidates:
        problem = _unreadable(path)
        if problem is None:
            return ClusterConfig(path, context), str(path)
        tried.append(f"{path} ({problem})")
    if env.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_TOKEN.is_file():
        return ClusterConfig(None, context, in_cluster=True), "in-cluster service account"
    tried.append("in-cluster config (KUBERNETES_SERVICE_HOST unset or no service-account token)")
    return None, "; ".join(tried)


def _unreadable(path: Path) -> str | None:
    """Why PATH cannot serve as a kubeconfig, or None."""
    try:
        if not path.exists():
            return "no such file"
        if not path.is_file():
            return "not a file"
        if not os.access(path, os.R_OK):
            return "not readable by this user: permission denied"
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


class NoCluster(ClusterFacts):
    """No kubeconfig or in-cluster config: every cluster check is ``skip`` with this reason."""

    def __init__(self, where: str) -> None:
        super().__init__(f"no cluster configuration found (looked at: {where})")
