"""Whether the machine is a Kubernetes node at all (contract: "Honest verdicts").

A workstation with Docker, a laptop, a build box: none of the node checks has a subject
there, so each is ``skip`` with the reason instead of failing ("kubelet is not installed")
or passing. Only positive evidence makes a host "not a node": ``systemctl`` (or its capture
in a bundle) saying kubelet.service is not found, or, with systemd down, unit directories
that hold no kubelet unit; and none of the traces kubelet or kubeadm leave (the binary,
``/var/lib/kubelet``, ``/etc/kubernetes``). When that cannot be told, the checks run.
"""

from __future__ import annotations

from doctor.core.errors import FactError, FactMissing
from doctor.core.sources import NodeFacts
from doctor.facts.systemctl import show_argv, show_bundle_name, unit_status

#: What a kubelet package, kubeadm or a kubelet run leaves behind, besides the unit.
KUBELET_TRACES = (
    "/usr/bin/kubelet",
    "/usr/local/bin/kubelet",
    "/bin/kubelet",
    "/var/lib/kubelet",
    "/etc/kubernetes",
)


def not_a_node_reason(node: NodeFacts) -> str | None:
    """Why the node checks have no subject here, or None when this is (or may be) a node."""
    try:
        if any(node.exists(path) for path in KUBELET_TRACES):
            return None
        if node.is_bundle and not _bundle_has_kubelet_show(node):
            return None  # the bundle does not say: do not guess
        kubelet = unit_status(node, "kubelet")
    except (FactMissing, FactError, OSError):
        return None  # node.services reports what cannot be read
    if kubelet.installed is not False:
        return None
    where = kubelet.source if kubelet.from_systemctl else "the unit files"
    return (
        f"not a Kubernetes node: kubelet is not installed ({where}: kubelet.service not found; "
        f"no {', '.join(node.display_path(p) for p in KUBELET_TRACES)})"
    )


def _bundle_has_kubelet_show(node: NodeFacts) -> bool:
    try:
        node.command(show_bundle_name("kubelet"), show_argv("kubelet"))
    except FactMissing:
        return False
    return True
