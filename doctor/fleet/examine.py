"""The checks over a fleet bundle: node checks once per node, cluster checks once.

Used by ``kdoctor fleet`` (on the bundle it just gathered, with the live cluster) and by
``kdoctor check --bundle DIR`` on a fleet bundle (with the bundle's ``cluster/``). Node
checks run first, so a cluster check sees every node's results (cluster.node-ports names the
target's own ``node.iptables.reject`` rule).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from doctor.core.context import CheckContext, Options
from doctor.core.errors import UsageError
from doctor.core.model import CheckResult, Scope, Status
from doctor.core.registry import Check
from doctor.core.runner import run_checks
from doctor.core.sources import ClusterFacts, FleetFacts
from doctor.facts.node import BundleNodeFacts
from doctor.fleet.agent import REACHABILITY_FILE

#: Nodes examined at the same time (each node's checks run in parallel already).
NODE_PARALLEL = 4


@dataclass(frozen=True)
class FleetBundle:
    directory: Path
    nodes: tuple[str, ...]
    #: node -> why its agent did not report (no nodes/<node>/ then).
    unreported: dict[str, str]


def is_fleet_bundle(directory: Path) -> bool:
    try:
        doc = json.loads((directory / "kdoctor-bundle.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("fleet") is True


def read_fleet_bundle(directory: Path) -> FleetBundle:
    path = directory / "kdoctor-bundle.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: not a readable fleet bundle manifest: {exc}") from exc
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if not isinstance(nodes, list) or not all(isinstance(n, str) for n in nodes):
        raise UsageError(f'{path}: a fleet bundle lists its nodes in "nodes"')
    unreported = {str(k): str(v) for k, v in (doc.get("unreported") or {}).items()}
    for node in nodes:
        if node not in unreported and not (directory / "nodes" / node).is_dir():
            unreported[node] = f"the bundle has no nodes/{node}/"
    return FleetBundle(directory, tuple(nodes), unreported)


def read_reachability(node_dir: Path) -> tuple[int, list[dict[str, Any]]] | None:
    """(pairs measured, the entries that are not open) of a node's reachability.json; None
    when it is absent or unreadable."""
    try:
        doc = json.loads((node_dir / "commands" / REACHABILITY_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, list):
        return None
    entries = [e for e in doc if isinstance(e, dict)]
    return len(entries), [e for e in entries if e.get("result") != "open"]


def _unreported_result(check: type[Check], node: str, reason: str) -> CheckResult:
    return CheckResult(
        id=check.id,
        title=check.title,
        scope=check.scope,
        status=Status.ERROR,
        summary=f"the agent on {node} did not report: {reason}",
        node=node,
    )


def examine(
    bundle: FleetBundle,
    checks: Sequence[type[Check]],
    cluster: ClusterFacts,
    options: Options,
    deadline: float,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Node checks per node (``error`` for the nodes that did not report), then cluster
    checks once with the fleet's facts. Results: nodes in name order, then the cluster."""
    node_checks = [c for c in checks if c.scope is Scope.NODE]
    cluster_checks = [c for c in checks if c.scope is Scope.CLUSTER]

    def one_node(node: str) -> list[CheckResult]:
        if node in bundle.unreported:
            results = [_unreported_result(c, node, bundle.unreported[node]) for c in node_checks]
        else:
            ctx = CheckContext(
                node=BundleNodeFacts(bundle.directory / "nodes" / node),
                cluster=cluster,
                options=options,
            )
            ran = run_checks(node_checks, ctx, deadline=deadline, per_check_timeout=deadline)
            results = [replace(r, node=node) for r in ran]
        if on_result is not None:
            for r in results:
                on_result(r)
        return results

    per_node: dict[str, list[CheckResult]] = {}
    if node_checks:
        with ThreadPoolExecutor(max_workers=NODE_PARALLEL) as pool:
            for node, results in zip(bundle.nodes, pool.map(one_node, bundle.nodes), strict=True):
                per_node[node] = results
    reach: dict[str, list[dict[str, Any]]] = {}
    measured: dict[str, int] = {}
    unreported = dict(bundle.unreported)
    for node in bundle.nodes:
        if node in unreported:
            continue
        read = read_reachability(bundle.directory / "nodes" / node)
        if read is None:
            unreported[node] = f"nodes/{node}/commands/{REACHABILITY_FILE} is missing or unreadable"
        else:
            measured[node], reach[node] = read
    fleet = FleetFacts(
        nodes=bundle.nodes,
        reachability=reach,
        measured=measured,
        unreported=unreported,
        node_results=per_node,
    )
    cluster_results: list[CheckResult] = []
    if cluster_checks:
        ctx = CheckContext(
            node=BundleNodeFacts(bundle.directory), cluster=cluster, options=options, fleet=fleet
        )
        cluster_results = run_checks(
            cluster_checks, ctx, deadline=deadline, per_check_timeout=deadline, on_result=on_result
        )
    return [r for node in bundle.nodes for r in per_node.get(node, [])] + cluster_results
