"""What checks and fixes receive. Checks get the read-only :class:`CheckContext`; only fixes
get :class:`FixContext`, which adds the means to change things, so mypy enforces that a
check never mutates anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from doctor.core.commands import CommandRunner
from doctor.core.sources import ClusterFacts, FleetFacts, NodeFacts


@dataclass(frozen=True)
class Options:
    """Knobs from the command line that checks may read."""

    verbose: bool = False
    check_timeout: float = 20.0
    #: The kube-proxy mode the user picked for the proxy-mode fix (None: the fix's default).
    proxy_mode: str | None = None
    #: The cluster domain (``--cluster-domain``); None: read it from the kubelet.
    cluster_domain: str | None = None
    #: Live network probes (DNS queries from this host); False with ``--no-live``.
    live: bool = True
    #: Probe pods and exec into them; False with ``--no-probes`` (and ``--no-live``).
    probes: bool = True
    #: How many nodes get a probe pod (None: every schedulable node).
    probe_nodes: int | None = None
    probe_image: str = "busybox"
    #: imagePullSecret for the probe image (a secret in namespace kdoctor-probe).
    probe_pull_secret: str | None = None


@dataclass(frozen=True)
class CheckContext:
    node: NodeFacts
    cluster: ClusterFacts
    options: Options = field(default_factory=Options)
    #: Probe pods (doctor.live.probes): the only objects a check may create, always removed.
    #: Set by the CLI for a live cluster unless --no-probes; None on a bundle.
    #: Typed ``object`` here because the core stands below both; users narrow it with
    #: ``isinstance(ctx.probes, doctor.live.probes.ProbeCluster)``.
    probes: object | None = None
    #: What ``kdoctor fleet`` gathered from every node's agent (or a fleet bundle holds);
    #: None on a single node. Read by cluster checks that need all nodes (cluster.node-ports).
    fleet: FleetFacts | None = None
    #: Set when the host is no Kubernetes node (doctor.facts.node_role): every node check is
    #: then ``skip`` with this reason instead of judging a subject that is not there.
    not_a_node: str | None = None


@dataclass(frozen=True)
class FixContext(CheckContext):
    """The write-capable context: a command runner and the root files are written under."""

    runner: CommandRunner = field(default_factory=lambda: CommandRunner())
    root: Path = Path("/")
    #: API writes, for cluster fixes; None on a bundle or without a cluster.
    #: A :class:`fixes.kube.KubeWriter` (typed ``object``: the core stands below fixes/).
    kube: object | None = None

    def host_path(self, path: str) -> Path:
        """Where a node path is written (under ``--root``)."""
        return self.root / path.lstrip("/")
