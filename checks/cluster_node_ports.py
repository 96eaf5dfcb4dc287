"""cluster.node-ports: every node reaches the ports the other nodes' roles need (fleet)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from doctor.core.context import CheckContext
from doctor.core.errors import FactMissing
from doctor.core.model import CheckResult, Finding, Scope, Severity, Status, Verdict
from doctor.core.registry import Check

MEANING = {
    "refused": "refused (a TCP reset: nothing listens there, or a REJECT --reject-with tcp-reset)",
    "prohibited": (
        "prohibited (an ICMP unreachable answer: a REJECT rule such as --reject-with "
        'icmp-host-prohibited; kubeadm join and the kubelet see "no route to host")'
    ),
    "timeout": "timed out (no answer at all: a DROP rule, or the node is down)",
}
PORT_ROLE = {
    6443: "the API server",
    10250: "the kubelet",
    2379: "etcd (clients)",
    2380: "etcd (peers)",
    6783: "Weave Net",
    179: "Calico BGP",
    4240: "Cilium health",
}
SHOWN_SOURCES = 5


def _own_rules(results: Sequence[CheckResult]) -> list[str]:
    """The rules a node's own node.iptables.reject found (what blocks its ports)."""
    for result in results:
        if result.id == "node.iptables.reject" and result.status is Status.FAIL:
            return [str(f.resource or f.message) for f in result.findings
                    if f.severity is Severity.FAIL]  # fmt: skip
    return []


class NodePorts(Check):
    """Each node reaches the others on the ports their roles need.

    Measured by `kdoctor fleet`: every node's agent opens a TCP connection from the node's own
    address to every other node's InternalIP: 6443 (API server) on control-plane nodes,
    10250 (kubelet) on every node, 2379-2380 (etcd) between control-plane nodes, and the
    overlay's TCP ports (Weave Net 6783). Each pair is `open`, `refused` (a TCP reset: nothing
    listening, or `REJECT --reject-with tcp-reset`), `prohibited` (an ICMP unreachable: a
    `REJECT` rule such as `--reject-with icmp-host-prohibited`) or `timeout` (a `DROP`). Any
    pair that is not open is `fail`, grouped by target port, naming every node that cannot
    reach it and, where the target's own `node.iptables.reject` found the rule, that rule.
    Skipped outside a fleet run (one node cannot see the others' firewalls); `error` when no
    agent reported.

    ## Why it matters
    A firewall on one node breaks another: the lab's control plane carried a blanket
    `REJECT --reject-with icmp-host-prohibited`, and `kubeadm join` on the worker failed with
    "dial tcp 188.226.140.115:6443: connect: no route to host". Looking at the worker shows
    nothing wrong; looking at the control plane alone does not show that anyone is blocked.

    ## How to fix
    Fix the rule on the target node (its `node.iptables.reject` fix removes it, or open the
    port in firewalld: `firewall-cmd --add-port=6443/tcp --permanent`). `refused` on a port
    with no rule: the service is not listening (the kubelet or API server is down there).

    ## Fix safety
    No fix of its own: the rule belongs to the target node's `node.iptables.reject`.
    """

    id = "cluster.node-ports"
    title = "Nodes reach each other on the ports their roles need"
    scope = Scope.CLUSTER
    fix_safety = None

    def run(self, ctx: CheckContext) -> Verdict:
        fleet = ctx.fleet
        if fleet is None:
            raise FactMissing(
                "measured from every node by `kdoctor fleet` (or read from a fleet bundle): "
                "one node cannot see the others' firewalls"
            )
        if len(fleet.nodes) < 2:
            raise FactMissing(f"only one node ({', '.join(fleet.nodes)}): no node-to-node path")
        if not fleet.measured:
            reasons = "; ".join(f"{n}: {r}" for n, r in sorted(fleet.unreported.items()))
            return Verdict(Status.ERROR, f"no node's agent reported ({reasons})")
        blocked: dict[tuple[str, int, str], list[Mapping[str, Any]]] = defaultdict(list)
        pairs = sum(fleet.measured.values())
        for source, entries in sorted(fleet.reachability.items()):
            for entry in entries:
                if entry.get("result") != "open":
                    key = (str(entry.get("to")), int(entry.get("port", 0)), str(entry["result"]))
                    blocked[key].append({"from": source, **entry})
        findings = [
            self._finding(target, port, result, entries, fleet.node_results.get(target, ()))
            for (target, port, result), entries in sorted(blocked.items())
        ]
        evidence: dict[str, Any] = {"pairs": pairs, "nodes": len(fleet.nodes)}
        if fleet.unreported:
            evidence["not_measured_from"] = dict(fleet.unreported)
        targets = sorted({t for t, _p, _r in blocked})
        return Verdict.from_findings(
            findings,
            summary=f"{len(findings)} node port(s) blocked, on {', '.join(targets)}",
            ok_summary=f"all {pairs} node-to-node ports open between {len(fleet.measured)} "
            "measured nodes",
            evidence=evidence,
        )

    @staticmethod
    def _finding(
        target: str,
        port: int,
        result: str,
        entries: list[Mapping[str, Any]],
        target_results: Sequence[CheckResult],
    ) -> Finding:
        sources = [str(e["from"]) for e in entries]
        shown = ", ".join(sources[:SHOWN_SOURCES])
        if len(sources) > SHOWN_SOURCES:
            shown += f" and {len(sources) - SHOWN_SOURCES} more"
        ip = entries[0].get("ip")
        role = PORT_ROLE.get(port, "a needed port")
        message = f"{target} {ip}:{port}/tcp ({role}) {MEANING.get(result, result)} from {shown}"
        rules = _own_rules(target_results)
        evidence: dict[str, Any] = {
            "to": target, "ip": ip, "port": port, "result": result,
            "from": sources, "measurements": [dict(e) for e in entries[:SHOWN_SOURCES]],
        }  # fmt: skip
        caused_by = None
        if rules:
            message += f"; {target}'s own rule: `{rules[0]}` (node.iptables.reject)"
            evidence["target_rules"] = rules
            caused_by = "node.iptables.reject"
            hint = (
                f"remove the rule on {target} (`kdoctor fix node.iptables.reject` there), "
                f"or accept {port}/tcp before it"
            )
        elif result == "refused":
            hint = f"nothing listens on {target}:{port}: is {role} running there?"
        else:
            hint = (
                f"look at {target}'s firewall (iptables-save / nft list ruleset) and at any "
                "network firewall between the nodes"
            )
        return Finding(
            Severity.FAIL,
            message,
            f"node/{target}:{port}/tcp",
            evidence,
            hint=hint,
            caused_by=caused_by,
        )
