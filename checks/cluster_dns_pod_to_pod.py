"""cluster.dns.pod-to-pod: the lab-22 lab's busybox test, automated (probe pods, always removed)."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

from doctor.analysis import podcause
from doctor.core.context import CheckContext
from doctor.core.errors import FactMissing
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.facts.kube import ApiError
from doctor.live import dnsprobe
from doctor.live.podexec import ExecResult
from doctor.live.probes import NAMESPACE, SUBDOMAIN, ProbeCluster, ProbePod, ProbeSet

DNS_CHECK = "cluster.dns.kube-dns"
CNI_CHECK = "cluster.network.cni"
REGISTRY_CHECK = "cluster.registry.pull-secret"
EXEC_TIMEOUT = 8.0
PING = ["ping", "-c", "2", "-W", "1"]
_IP = re.compile(r"\b(\d{1,3}(?:\.\d{1,3}){3}|[0-9a-fA-F]*:[0-9a-fA-F:]+)\b")
_PACKETS = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_RTT = re.compile(r"(?:round-trip|rtt) min/avg/max(?:/mdev)? = [\d.]+/([\d.]+)/")
#: What busybox/glibc print when a lookup fails → the cell's word. The rcodes are matched
#: case-sensitively ("REFUSED" is the server's answer; "Connection refused" is nothing
#: listening on port 53).
_FAILURES = (
    ("NXDOMAIN", "NXDOMAIN"),
    ("SERVFAIL", "SERVFAIL"),
    ("REFUSED", "REFUSED"),
    ("connection refused", "connection refused"),
    ("timed out", "timeout"),
    ("no servers could be reached", "timeout"),
    ("can't resolve", "not resolved"),
    ("can't find", "not found"),
    ("bad address", "not resolved"),
)


# -- what a probe printed ------------------------------------------------------------------


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def parse_nslookup(output: str) -> tuple[tuple[str, ...], str]:
    """(addresses of the name, why not) from busybox nslookup, old (``Address 1: IP name``)
    and new (``Address: IP``) formats; the server's own address (before ``Name:``) is not
    an answer."""
    addresses: list[str] = []
    in_answer = False
    for line in output.splitlines():
        stripped = line.strip()
        if stripped.startswith("Name:"):
            in_answer = True
            continue
        if in_answer and stripped.startswith("Address"):
            _, _, rest = stripped.partition(":")
            for token in rest.split():
                if _is_ip(token) and token not in addresses:
                    addresses.append(token)
                    break
    why = ""
    if not addresses:
        for needle, label in _FAILURES:
            found = needle in output if needle.isupper() else needle in output.lower()
            if found:
                why = label
                break
        why = why or "no address in the answer"
    return tuple(addresses), why


def parse_ping(output: str) -> tuple[int, int, str | None]:
    """(transmitted, received, average rtt in ms) from busybox or iputils ping."""
    match = _PACKETS.search(output)
    sent, got = (int(match.group(1)), int(match.group(2))) if match else (0, 0)
    rtt = _RTT.search(output)
    return sent, got, rtt.group(1) if rtt else None


@dataclass(frozen=True)
class PairResult:
    """One source probe resolving and pinging one destination probe."""

    src: ProbePod
    dst: ProbePod
    fqdn: str
    addresses: tuple[str, ...] = ()
    resolve_why: str = ""
    resolve_output: str = ""
    ping_sent: int = 0
    ping_received: int = 0
    rtt_ms: str | None = None
    ping_output: str = ""
    #: The exec itself failed (API refused, stream broke): the pair was not tested.
    exec_error: str | None = None

    @property
    def resolved(self) -> bool:
        return bool(self.addresses)

    @property
    def right_ip(self) -> bool:
        return self.dst.ip in self.addresses

    @property
    def pinged(self) -> bool:
        return self.ping_received > 0

    @property
    def ok(self) -> bool:
        return self.exec_error is None and self.resolved and self.right_ip and self.pinged

    def cell(self) -> str:
        """Short: "0.2 ms" when all is well, else what failed ("NXDOMAIN · ping 0.2 ms")."""
        if self.exec_error:
            return "not tested (exec failed)"
        if self.pinged:
            ping = f"{self.rtt_ms} ms" if self.rtt_ms else "ping ok"
            if self.ping_received < self.ping_sent:
                ping += f" ({self.ping_sent - self.ping_received}/{self.ping_sent} lost)"
        else:
            ping = "ping lost" if self.ping_sent else "ping failed"
        if not self.resolved:
            return f"{self.resolve_why} · {ping}"
        if not self.right_ip:
            return f"resolves to {', '.join(self.addresses)} · {ping}"
        return ping if self.pinged else f"resolves · {ping}"

    def status(self) -> str:
        if self.exec_error:
            return "skip"
        return "ok" if self.ok else "fail"

    def evidence(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "from": f"pod/{NAMESPACE}/{self.src.name} on {self.src.node} ({self.src.ip})",
            "to": f"pod/{NAMESPACE}/{self.dst.name} on {self.dst.node} ({self.dst.ip})",
            "nslookup": f"nslookup {self.fqdn}",
            "nslookup_output": _lines(self.resolve_output),
            "ping": " ".join([*PING, str(self.dst.ip)]),
            "ping_output": _lines(self.ping_output),
        }
        if self.exec_error:
            data["exec_error"] = self.exec_error
        return data


def _lines(text: str, limit: int = 12) -> list[str]:
    return [line for line in text.strip().splitlines() if line.strip()][:limit]


def _exec(probes: ProbeCluster, pod: ProbePod, command: list[str]) -> ExecResult | str:
    try:
        return probes.run(pod, command, timeout=EXEC_TIMEOUT)
    except ApiError as exc:
        return str(exc)


def probe_pair(probes: ProbeCluster, src: ProbePod, dst: ProbePod, domain: str) -> PairResult:
    """nslookup the destination's FQDN and ping its pod IP, from the source probe."""
    fqdn = dst.fqdn(domain)
    looked = _exec(probes, src, ["nslookup", fqdn])
    pinged = _exec(probes, src, [*PING, str(dst.ip)])
    if isinstance(looked, str) or isinstance(pinged, str):
        error = looked if isinstance(looked, str) else pinged
        return PairResult(src, dst, fqdn, exec_error=str(error))
    addresses, why = parse_nslookup(looked.output)
    if looked.timed_out and not addresses:
        why = f"timeout (no answer within {EXEC_TIMEOUT:g}s)"
    sent, got, rtt = parse_ping(pinged.output)
    if pinged.timed_out:
        got = 0
    return PairResult(src, dst, fqdn, addresses, why, looked.output, sent, got, rtt, pinged.output)


def run_pairs(probes: ProbeCluster, pods: list[ProbePod], domain: str) -> list[PairResult]:
    pairs = [(a, b) for a in pods for b in pods if a.name != b.name]
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, min(8, len(pairs))), thread_name_prefix="pod-to-pod"
    ) as pool:
        return list(pool.map(lambda p: probe_pair(probes, p[0], p[1], domain), pairs))


# -- the verdict ------------------------------------------------------------------------------


def _who(pod: ProbePod) -> str:
    return f"{pod.hostname} on {pod.node}"


def _labels(pods: list[ProbePod]) -> dict[str, str]:
    """Matrix labels: the node name, or the probe's hostname where a node has two probes."""
    nodes = [p.node for p in pods]
    return {p.name: p.node if nodes.count(p.node) == 1 else p.hostname for p in pods}


def matrix(pods: list[ProbePod], results: list[PairResult], domain: str) -> dict[str, Any]:
    """From (rows) × to (columns), one probe per node: resolve + ping, see PairResult.cell."""
    by_pair = {(r.src.name, r.dst.name): r for r in results}
    label = _labels(pods)
    rows = []
    for src in pods:
        cells: list[str] = []
        status: list[str | None] = []
        for dst in pods:
            if src.name == dst.name:
                cells.append("")
                status.append(None)
            else:
                pair = by_pair[(src.name, dst.name)]
                cells.append(pair.cell())
                status.append(pair.status())
        rows.append({"name": f"{label[src.name]} {src.ip}", "cells": cells, "status": status})
    return {
        "title": f"probe pods: nslookup <hostname>.{SUBDOMAIN}.{NAMESPACE}.svc.{domain}, "
        "then ping -c 2 <pod IP>",
        "corner": "from \\ to",
        "columns": [label[p.name] for p in pods],
        "rows": rows,
    }


def probe_findings(probe_set: ProbeSet, wait_s: float) -> list[Finding]:
    """A probe that did not run is a finding with its cause (the pod diagnosis)."""
    out = []
    for pod in probe_set.pods:
        if pod.ready:
            continue
        cause = pod.cause
        message = cause.message if cause else pod.state
        evidence: dict[str, Any] = dict(cause.evidence) if cause else {}
        evidence.update({"state": pod.state, "node": pod.node, "waited_s": round(wait_s, 1)})
        severity = Severity.FAIL
        caused_by = None
        hint = f"kubectl -n {NAMESPACE} describe pod {pod.name} (while kdoctor runs)"
        if cause is not None and cause.category == podcause.IMAGE_PULL:
            severity = Severity.WARN
            hint = (
                "The probe image could not be pulled: give one the nodes can pull with "
                "--probe-image (e.g. from your registry) and --probe-pull-secret [NS/]NAME; "
                f"see also {REGISTRY_CHECK}."
            )
        elif cause is not None and cause.category == podcause.CNI:
            caused_by = CNI_CHECK
            hint = (
                f"The network plugin cannot give pods on {pod.node} a sandbox: see "
                f"`kdoctor explain {CNI_CHECK}`."
            )
        out.append(
            Finding(
                severity,
                f"probe pod on node {pod.node} did not run within {wait_s:.0f}s: {message}",
                resource=f"pod/{NAMESPACE}/{pod.name}",
                evidence=evidence,
                hint=hint,
                caused_by=caused_by,
            )
        )
    return out


def pair_findings(results: list[PairResult], domain: str) -> list[Finding]:
    out: list[Finding] = []
    tested = [r for r in results if r.exec_error is None]
    untested = [r for r in results if r.exec_error is not None]
    for r in untested:
        out.append(
            Finding(
                Severity.WARN,
                f"{_who(r.src)} → {_who(r.dst)} not tested: {r.exec_error}",
                resource=f"pod/{NAMESPACE}/{r.src.name}",
                evidence=r.evidence(),
                hint="kdoctor could not exec into the probe (pods/exec through the API).",
            )
        )
    if not tested:
        return out

    # Name resolution.
    unresolved = [r for r in tested if not r.resolved]
    if unresolved and len(unresolved) == len(tested):
        first = unresolved[0]
        out.append(
            Finding(
                Severity.FAIL,
                f"no probe resolves any other probe's name ({first.fqdn}: {first.resolve_why}): "
                "pods get no answer from the cluster DNS",
                resource=f"service/{NAMESPACE}/{SUBDOMAIN}",
                evidence=first.evidence(),
                hint=f"See {DNS_CHECK} (DNS pods, Service routing, the pods' resolv.conf).",
                caused_by=DNS_CHECK,
            )
        )
    else:
        by_dst: dict[str, list[PairResult]] = {}
        for r in tested:
            by_dst.setdefault(r.dst.name, []).append(r)
        for _dst, rows in sorted(by_dst.items()):
            failed = [r for r in rows if not r.resolved]
            if not failed:
                continue
            dst = rows[0].dst
            if len(failed) == len(rows):
                out.append(
                    Finding(
                        Severity.FAIL,
                        f"{failed[0].fqdn} (probe on node {dst.node}) does not resolve from any "
                        f"other probe ({failed[0].resolve_why}): its DNS record is missing",
                        resource=f"pod/{NAMESPACE}/{dst.name}",
                        evidence=failed[0].evidence(),
                        hint="A pod with hostname + subdomain gets a record when a headless "
                        "Service named like the subdomain selects it: check the Service's "
                        f"endpoints (`kubectl -n {NAMESPACE} get endpoints {SUBDOMAIN}`) and "
                        "that the DNS server watches endpoints (CoreDNS RBAC).",
                    )
                )
            else:
                for r in failed:
                    out.append(
                        Finding(
                            Severity.FAIL,
                            f"{_who(r.src)} cannot resolve {r.fqdn} ({r.resolve_why}), though "
                            "other probes can",
                            resource=f"pod/{NAMESPACE}/{r.src.name}",
                            evidence=r.evidence(),
                            hint=f"DNS from node {r.src.node} fails: pods there may not reach "
                            "the DNS Service (kube-proxy on that node) or a DNS pod; see "
                            f"{DNS_CHECK}.",
                        )
                    )
    for r in tested:
        if r.resolved and not r.right_ip:
            out.append(
                Finding(
                    Severity.FAIL,
                    f"{r.fqdn} resolves to {', '.join(r.addresses)} from {_who(r.src)}, but the "
                    f"probe's pod IP is {r.dst.ip}: a stale DNS record",
                    resource=f"pod/{NAMESPACE}/{r.dst.name}",
                    evidence=r.evidence(),
                    hint="The DNS server serves an old endpoint: restart the DNS pods.",
                )
            )

    # Reachability (the pod IP is pinged whether or not the name resolved).
    unreachable = [r for r in tested if not r.pinged]
    if unreachable and len(unreachable) == len(tested):
        first = unreachable[0]
        out.append(
            Finding(
                Severity.FAIL,
                "no probe can ping any other probe: pod-to-pod traffic is broken "
                f"(e.g. {_who(first.src)} → {first.dst.ip})",
                resource=f"pod/{NAMESPACE}/{first.src.name}",
                evidence=first.evidence(),
                hint=f"The overlay does not carry pod traffic: see {CNI_CHECK} and rules that "
                "drop forwarded traffic (node.iptables.reject on the nodes).",
            )
        )
    else:
        for r in unreachable:
            resolved = "resolves, but" if r.resolved and r.right_ip else "and"
            out.append(
                Finding(
                    Severity.FAIL,
                    f"{_who(r.src)} cannot ping {_who(r.dst)} ({r.dst.ip}): the name {resolved} "
                    f"ICMP is lost ({r.ping_sent} sent, {r.ping_received} received)",
                    resource=f"pod/{NAMESPACE}/{r.src.name}",
                    evidence=r.evidence(),
                    hint=f"Traffic from {r.src.node} to {r.dst.node} is dropped: a firewall or "
                    "iptables rule on one of the nodes (or a network policy), or the overlay "
                    f"between them ({CNI_CHECK}).",
                )
            )
    return out


class PodToPod(Check):
    """Probe pods on different nodes resolve each other's DNS names and ping each other.

    The lab-22 lab's manual test, automated: in namespace `kdoctor-probe` (created when missing,
    deleted at the end when kdoctor created it) a headless Service `kdoctor-probe`
    (`clusterIP: None`) and one busybox pod per schedulable node (`--probe-nodes N` for
    fewer; cordoned, tainted and not-Ready nodes get none; with a single node, two probes run
    on it), each with `hostname` + `subdomain`, so each has the name
    `<hostname>.kdoctor-probe.kdoctor-probe.svc.<cluster domain>`. Through pods/exec every
    probe runs `nslookup` of every other probe's name and `ping -c 2 -W 1` of its pod IP. The
    result is a from × to matrix (in the report's evidence, drawn as a table). A probe that
    does not start is itself a finding, with its cause (image pull, network plugin, …).
    The probes carry `app.kubernetes.io/managed-by=kdoctor,kdoctor.io/probe=pod-to-pod` and
    are removed when the run ends, also on timeout, Ctrl-C and SIGTERM; leftovers of an
    interrupted run are removed at the start of the next. `--no-probes` (or `--no-live`)
    skips this check; on a bundle it is skipped (it must act live). The cluster domain is
    the kubelet's (`clusterDomain` / `--cluster-domain` on this node), else the probes' own
    resolv.conf search line, else `cluster.local`; `--cluster-domain` overrides.

    Findings name the pair: a name that resolves from nowhere (its DNS record is missing),
    a probe that resolves nothing (DNS from that node fails), a name resolving to another
    IP (stale record), resolution fine but ICMP lost between two nodes (a firewall, the
    overlay), or everything failing at once (cluster DNS down → `caused_by:
    cluster.dns.kube-dns`; pod network down).

    ## Why it matters
    This is what an application sees: a pod on one node finding a pod on another by name and
    reaching it. The API can report every component ready while this fails.

    ## How to fix
    - Names do not resolve: see `kdoctor explain cluster.dns.kube-dns`.
    - One record missing: the headless Service must select the pod; the DNS server must
      watch endpoints (CoreDNS RBAC).
    - Ping fails between two nodes: look for REJECT/DROP rules on both nodes
      (`kdoctor explain node.iptables.reject`, firewalld) and at the overlay
      (`kdoctor explain cluster.network.cni`).
    - A probe cannot pull busybox: `--probe-image REGISTRY/busybox --probe-pull-secret
      NS/NAME`.

    ## Fix safety
    No fix: this check only measures. It creates the probe objects described above and
    always removes them (`kubectl delete ns kdoctor-probe` removes anything left over).
    """

    id = "cluster.dns.pod-to-pod"
    title = "Pods on different nodes resolve each other by name and ping each other"
    scope = Scope.CLUSTER
    fix_safety = None

    def run(self, ctx: CheckContext) -> Verdict:
        if ctx.cluster.is_bundle:
            return Verdict.skip(
                "live probes not run (bundle): this check creates probe pods and execs into them"
            )
        if not ctx.options.live:
            return Verdict.skip("live probes disabled (--no-live)")
        if not ctx.options.probes:
            return Verdict.skip("probe pods disabled (--no-probes)")
        if not isinstance(ctx.probes, ProbeCluster):
            raise FactMissing(ctx.cluster.unavailable or "no live cluster to create probes in")
        probes = ctx.probes
        probe_set = probes.pod_set()  # ApiError (refused, …) → error
        findings = probe_findings(probe_set, probe_set.waited_ms / 1000)
        ready = probe_set.ready
        domain, domain_source = self._domain(ctx, probes)
        evidence: dict[str, Any] = {
            "probes": [
                f"pod/{NAMESPACE}/{p.name} on {p.node}: {p.ip or '-'} ({p.state})"
                for p in probe_set.pods
            ],
            "cluster_domain": f"{domain} ({domain_source})",
        }
        if probe_set.skipped_nodes:
            evidence["nodes_without_probe"] = dict(probe_set.skipped_nodes)
        if probe_set.notes:
            evidence["notes"] = list(probe_set.notes)
        if not probe_set.pods:
            raise FactMissing(
                "no node can run a probe pod: "
                + (
                    "; ".join(f"{n}: {why}" for n, why in probe_set.skipped_nodes.items())
                    or "the cluster has no nodes"
                )
            )
        if len(ready) < 2:
            summary = f"{len(ready)} of {len(probe_set.pods)} probe pods ran: no pair to test"
            if not findings:
                raise FactMissing(summary)
            return Verdict.from_findings(findings, summary, summary, evidence=evidence)

        results = run_pairs(probes, ready, domain)
        if results and all(r.exec_error for r in results):
            raise ApiError(f"cannot exec into the probe pods: {results[0].exec_error}")
        evidence = {"matrix": matrix(ready, results, domain), **evidence}
        findings.extend(pair_findings(results, domain))
        good = sum(1 for r in results if r.ok)
        nodes = sorted({p.node for p in ready})
        ok_summary = (
            f"{len(ready)} probes on {len(nodes)} node(s) ({', '.join(nodes)}): all "
            f"{len(results)} pairs resolve each other's name and ping"
        )
        if len(nodes) < 2:
            ok_summary += " (one node only: traffic between nodes not tested)"
        failing = [f for f in findings if f.severity is Severity.FAIL] or findings
        summary = f"{good}/{len(results)} probe pairs resolve and ping"
        if failing:
            summary += f"; {failing[0].message}"
            if len(findings) > 1:
                summary += f" (+{len(findings) - 1} more)"
        return Verdict.from_findings(findings, summary, ok_summary, evidence=evidence)

    def _domain(self, ctx: CheckContext, probes: ProbeCluster) -> tuple[str, str]:
        """--cluster-domain, else the kubelet's on this node, else the probes' search line."""
        kubelet = dnsprobe.kubelet_dns(ctx.node, ctx.options.cluster_domain)
        if not kubelet.domain_source.startswith("default"):
            return kubelet.domain, kubelet.domain_source
        try:
            got = probes.resolv_conf()
        except ApiError:
            got = None
        if got is not None and got[1].ok:
            conf = dnsprobe.parse_resolv_conf(got[1].stdout)
            prefix = f"{NAMESPACE}.svc."
            for domain in conf.search:
                if domain.startswith(prefix) and len(domain) > len(prefix):
                    return domain[len(prefix) :], f"search line of pod {got[0].name}"
        return kubelet.domain, kubelet.domain_source
