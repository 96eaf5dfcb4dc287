"""cluster.dns.kube-dns: the cluster DNS (kube-dns or CoreDNS) as the API sees it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from doctor.analysis import podcause
from doctor.core.context import CheckContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.facts.kube import (
    DEPLOYMENTS,
    ENDPOINTS,
    ENDPOINTSLICES,
    PODS,
    SERVICES,
    ApiError,
    KubeFacts,
    label_selector_matches,
)
from doctor.live import dnsprobe
from fixes import kube_proxy

NAMESPACE = "kube-system"
SERVICE = "kube-dns"
DNS_LABEL = "k8s-app=kube-dns"
SLICE_LABEL = "kubernetes.io/service-name=kube-dns"
LOG_TAIL = 50
LIVE = "not run (API-side diagnosis only)"
#: EndpointSlices are GA (discovery.k8s.io/v1) from 1.21.
SLICES_FROM = (1, 21)

CNI_CHECK = "cluster.network.cni"
PROXY_CHECK = "cluster.kube-proxy"
NODES_CHECK = "cluster.nodes"
REJECT_CHECK = "node.iptables.reject"

# -- the DNS pods' logs -----------------------------------------------------------------------

_KLOG_TIME = re.compile(r"^[IWEF](\d\d)(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d+))?\s")
_RFC3339_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d))\s")
_DIAL = re.compile(
    r"dial (?:tcp|udp) (?P<ip>\d{1,3}(?:\.\d{1,3}){3}):(?P<port>\d+): "
    r"(?:(?:getsockopt|connect): )?(?P<err>i/o timeout|no route to host)"
)
_API_URL = re.compile(r"https://(?P<ip>\d{1,3}(?:\.\d{1,3}){3}):443/apis?/")

LOOP = "loop"
FORBIDDEN = "forbidden"
SERVICE_TIMEOUT = "service-timeout"  # a Service ClusterIP does not answer: Service routing
UPSTREAM_TIMEOUT = "upstream-timeout"  # an upstream server (not a Service) does not answer
NO_ROUTE = "no-route"  # a REJECT (--reject-with icmp-host-prohibited) on the way


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def line_time(line: str, started: datetime | None) -> datetime | None:
    """When a log line was written: an RFC 3339 prefix, or a klog header (no year: the year
    is the container's start year, or the next one when that would be before the start)."""
    match = _RFC3339_TIME.match(line)
    if match:
        return parse_time(match.group(1))
    match = _KLOG_TIME.match(line)
    if not match or started is None:
        return None
    month, day, hour, minute, second = (int(g) for g in match.groups()[:5])
    micro = int((match.group(6) or "0")[:6].ljust(6, "0"))
    try:
        when = datetime(started.year, month, day, hour, minute, second, micro, tzinfo=UTC)
        if when < started - timedelta(days=1):
            when = when.replace(year=started.year + 1)
    except ValueError:
        return None
    return when


@dataclass(frozen=True)
class LogHit:
    """A known error in a DNS pod's log (the newest line of its kind, and how many)."""

    kind: str
    pod: str
    node: str | None
    container: str
    line: str
    count: int
    target: str | None = None  # ip:port the pod could not reach
    time: datetime | None = None
    #: For SERVICE_TIMEOUT: the kube-proxy pod on that node started after the line was
    #: written, so the line says nothing about the kube-proxy running now.
    stale_since: str | None = None

    def evidence(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "pod": f"{NAMESPACE}/{self.pod}",
            "node": self.node,
            "container": self.container,
            "log_line": self.line[:600],
            "matching_lines": self.count,
            "log_source": f"last {LOG_TAIL} lines of `kubectl -n {NAMESPACE} logs {self.pod} "
            f"-c {self.container}`",
        }
        if self.target:
            data["unreachable"] = self.target
        if self.time is not None:
            data["line_time"] = self.time.isoformat().replace("+00:00", "Z")
        return data


@dataclass
class LogScan:
    hits: list[LogHit] = field(default_factory=list)
    #: Logs that could not be read, and why (a bundle without them, a container waiting…).
    unread: list[str] = field(default_factory=list)
    read: list[str] = field(default_factory=list)


def _started(cs: dict[str, Any], pod: dict[str, Any]) -> datetime | None:
    """When the container whose log `kubectl logs` shows started (the running one, else the
    last terminated one), else when the pod started."""
    running = (cs.get("state") or {}).get("running") or {}
    last = (cs.get("lastState") or {}).get("terminated") or {}
    return (
        parse_time(running.get("startedAt"))
        or parse_time(last.get("startedAt"))
        or parse_time((pod.get("status") or {}).get("startTime"))
    )


def service_ips(cluster: KubeFacts) -> tuple[set[str], str | None]:
    """ClusterIPs of the ``kubernetes`` and ``kube-dns`` Services, and the API's one."""
    ips: set[str] = set()
    api_ip = None
    for namespace, name in (("default", "kubernetes"), (NAMESPACE, SERVICE)):
        try:
            svc = cluster.get(SERVICES, namespace, name)
        except FactMissing:
            continue
        ip = ((svc or {}).get("spec") or {}).get("clusterIP")
        if isinstance(ip, str) and ip and ip != "None":
            ips.add(ip)
            if name == "kubernetes":
                api_ip = ip
    return ips, api_ip


def _classify(line: str, vips: set[str]) -> tuple[str, str | None] | None:
    if "plugin/loop" in line and "Loop" in line:
        return LOOP, None
    if "forbidden" in line.lower():
        return FORBIDDEN, None
    dial = _DIAL.search(line)
    if dial is not None:
        target = f"{dial.group('ip')}:{dial.group('port')}"
        via_vip = dial.group("ip") in vips
        api = _API_URL.search(line)
        if api is not None and api.group("ip") == dial.group("ip"):
            via_vip = True  # an API request to port 443 of an IP: the kubernetes Service VIP
        if dial.group("err") == "no route to host":
            return NO_ROUTE, target
        return (SERVICE_TIMEOUT if via_vip else UPSTREAM_TIMEOUT), target
    if "i/o timeout" in line:
        return UPSTREAM_TIMEOUT, None
    return None


def scan_logs(cluster: KubeFacts, pods: list[dict[str, Any]]) -> LogScan:
    """The last LOG_TAIL lines of every running container of the DNS pods, classified."""
    vips, _api = service_ips(cluster)
    scan = LogScan()
    for pod in pods:
        name = str(pod["metadata"]["name"])
        node = (pod.get("spec") or {}).get("nodeName")
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            container = str(cs.get("name"))
            state = cs.get("state") or {}
            last = (cs.get("lastState") or {}).get("terminated")
            # A running container, or one restarting after a crash: `kubectl logs` then
            # shows its last run (a container still being created has no log).
            if "running" not in state and not isinstance(last, dict):
                continue
            where = f"{name}/{container}"
            try:
                text = cluster.pod_log(NAMESPACE, name, container, tail_lines=LOG_TAIL)
            except FactMissing as exc:
                scan.unread.append(f"{where}: {exc}")
                continue
            except ApiError as exc:
                if exc.status in (400, 404):  # container gone or not started: nothing to read
                    scan.unread.append(f"{where}: {exc}")
                    continue
                raise
            scan.read.append(where)
            started = _started(cs, pod)
            found: dict[tuple[str, str | None], tuple[str, int, datetime | None]] = {}
            for line in text.splitlines():
                classified = _classify(line, vips)
                if classified is None:
                    continue
                _last, count, _t = found.get(classified, ("", 0, None))
                found[classified] = (line.strip(), count + 1, line_time(line, started))
            for (kind, target), (line, count, when) in found.items():
                scan.hits.append(LogHit(kind, name, node, container, line, count, target, when))
    return scan


def kube_proxy_starts(cluster: KubeFacts) -> dict[str, datetime]:
    """When the kube-proxy pod on each node started (the newest pod per node)."""
    try:
        ds = kube_proxy.find_daemonset(cluster)
        if ds is None:
            return {}
        selector = kube_proxy.daemonset_selector(ds)
        pods = cluster.list_objects(PODS, namespace=NAMESPACE, label_selector=selector)
    except FactMissing:
        return {}  # the timeouts cannot be dated: they count
    out: dict[str, datetime] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        starts = [_started(cs, pod) for cs in statuses]
        when = max((s for s in starts if s is not None), default=None)
        if node and when is not None and (node not in out or when > out[node]):
            out[str(node)] = when
    return out


def routing_hits(cluster: KubeFacts, scan: LogScan) -> tuple[list[LogHit], list[LogHit]]:
    """(current, stale) Service-routing signals: a DNS pod timing out on a Service ClusterIP.

    A line written before the kube-proxy pod on that node (re)started says nothing about the
    kube-proxy running now (e.g. after the proxy-mode fix restarted it); a line without a
    time cannot be dated and counts.
    """
    hits = [h for h in scan.hits if h.kind == SERVICE_TIMEOUT]
    if not hits:
        return [], []
    starts = kube_proxy_starts(cluster)
    current, stale = [], []
    for hit in hits:
        start = starts.get(hit.node or "")
        if hit.time is not None and start is not None and hit.time < start:
            stale.append(replace(hit, stale_since=start.isoformat().replace("+00:00", "Z")))
        else:
            current.append(hit)
    return current, stale


def dns_pods(cluster: KubeFacts) -> list[dict[str, Any]]:
    return cluster.list_objects(PODS, namespace=NAMESPACE, label_selector=DNS_LABEL)


# -- the check --------------------------------------------------------------------------------


def _kube(ctx: CheckContext) -> KubeFacts:
    if not isinstance(ctx.cluster, KubeFacts):
        raise FactMissing(ctx.cluster.unavailable or "no cluster API facts")
    return ctx.cluster


def _cause_check(cause: podcause.PodCause) -> str | None:
    if cause.category == podcause.CNI:
        return CNI_CHECK
    if cause.category == podcause.UNSCHEDULABLE:
        return NODES_CHECK
    return None


@dataclass
class _State:
    findings: list[Finding] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)
    #: Causes of DNS pods not being ready, by pod name.
    pod_causes: dict[str, podcause.PodCause] = field(default_factory=dict)
    #: The root-cause check of each not-ready DNS pod (None: the pod itself).
    pod_roots: dict[str, str | None] = field(default_factory=dict)

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)


class KubeDns(Check):
    """The cluster DNS (kube-dns or CoreDNS) is deployed, ready and reachable as a Service.

    The API side of the official "Debugging DNS Resolution" procedure: the DNS Deployment
    (pods labelled `k8s-app=kube-dns`: `kube-dns` up to kubeadm 1.10, `coredns` after) has
    its replicas available; the Service `kube-system/kube-dns` exists, has a ClusterIP,
    selects the DNS pods and serves 53/UDP and 53/TCP; its endpoints (EndpointSlices labelled
    `kubernetes.io/service-name=kube-dns` from v1.21, the Endpoints object before) list ready
    addresses (`notReadyAddresses` or `ready: false` count as not ready); the last 50 log
    lines of every running DNS container are searched for the known failures:
    `plugin/loop` (CoreDNS forwarding to itself), `forbidden` (RBAC: CoreDNS may not list
    what it serves), `i/o timeout` and `no route to host`. A DNS pod that is not ready is
    explained with the pod diagnosis (container states and events) and points at its root
    cause: `caused_by: cluster.network.cni` when the network plugin cannot give it a sandbox
    (the lab-22 lab's kube-dns stuck in ContainerCreating), `cluster.nodes` when it cannot be
    scheduled. A DNS pod that runs but times out on a Service ClusterIP (the `kubernetes`
    Service it reaches the API through, `dial tcp 10.96.0.1:443: i/o timeout`) means the pods
    are fine and the Service path is not: `caused_by: cluster.kube-proxy`. Logs a bundle does
    not hold are noted in the evidence, not counted as a failure.

    Live DNS queries (on a node, not on a bundle, not with `--no-live`; `doctor.live.dnsprobe`): the
    query `kubernetes.default.svc.<cluster domain>` A is sent to the Service ClusterIP and to
    every DNS pod IP, over UDP and TCP, all at once (1 s per query, 5 s for the whole
    probe); the evidence is a matrix (target × UDP/TCP: the addresses answered and the
    milliseconds, or timeout / refused / NXDOMAIN). Pods answer and the Service does → ok;
    pods answer and the Service does not → Service routing (kube-proxy) is broken
    (`caused_by: cluster.kube-proxy`, the proxy-mode fix is offered); no pod answers → the
    DNS pods are broken (`caused_by` their root cause when the API side knows it);
    NXDOMAIN → the DNS server runs but does not serve the cluster zone. The cluster domain is
    the kubelet's (`clusterDomain` in /var/lib/kubelet/config.yaml, or `--cluster-domain` in
    its unit drop-ins and flag files), else `cluster.local`; `--cluster-domain` overrides.
    The kubelet's clusterDNS must be the Service IP; the node's resolv.conf (the upstream of
    the DNS pods) must not point at a local stub or at the cluster DNS itself; a probe pod's
    resolv.conf (read with `cat /etc/resolv.conf` through pods/exec in the probe of
    `cluster.dns.pod-to-pod`, unless `--no-probes`) must name the cluster DNS, search
    `<ns>.svc.<domain> svc.<domain> <domain>` and set `ndots:5`. When kdoctor does not run on
    a cluster node (no kubelet configuration, no Node with its hostname or address) the
    queries are not run: Service and pod IPs are reachable only from nodes and pods.

    ## Why it matters
    Every pod resolves Service names through this Service; when it is down, nothing that
    talks to a Service by name works. The lab-22 lab's kube-dns stayed in ContainerCreating: the
    cause was the overlay (Weave Net), but the workaround applied was kube-proxy's
    `--proxy-mode=userspace`, which only helps when DNS pods run and the Service path is what
    is broken. Telling those two apart is this check's job.

    ## How to fix
    - Pods not ready: fix the cause named in the finding (`kdoctor explain
      cluster.network.cni` for the overlay); the Deployment recreates the pods.
    - `plugin/loop`: the node's resolv.conf points at a local stub (systemd-resolved
      127.0.0.53): give kubelet `--resolv-conf=/run/systemd/resolve/resolv.conf` or forward
      CoreDNS to a real upstream (`forward . 1.1.1.1`), then restart CoreDNS.
    - `forbidden`: restore ClusterRole `system:coredns` (list/watch endpoints, services,
      pods, namespaces and `discovery.k8s.io` endpointslices) and its binding to
      ServiceAccount `kube-system:coredns`.
    - Service-IP timeouts: Service routing is broken; see `kdoctor explain cluster.kube-proxy`.
    - `no route to host`: a REJECT rule on the node; see `node.iptables.reject`.
    - Service or ports missing: re-create the Service (`kubeadm init phase addon coredns`,
      or the kube-dns addon manifest of your version).

    ## Fix safety
    unsafe, offered only when the DNS pods run and the Service path is what fails (a DNS pod
    timing out on a Service ClusterIP, with the kube-proxy pod on that node started before
    the error; or, live, the DNS pods answering at their own IPs while the Service IP does
    not): the kube-proxy proxy-mode patch (see `cluster.kube-proxy`): set the mode
    chosen with `kdoctor fix --proxy-mode MODE` (default: the lab-22 lab's `userspace` where the
    server still has it, below v1.26, else `iptables`) where kube-proxy really reads it —
    the `--proxy-mode` flag or ConfigMap `kube-proxy` `config.conf` — with a
    resourceVersion precondition, restart the kube-proxy pods, wait for them, re-check, and
    restore the previous object if the re-check still fails. Nothing is offered for DNS pods
    that are broken themselves.
    """

    id = "cluster.dns.kube-dns"
    title = "Cluster DNS (kube-dns/CoreDNS) deployed, ready, and served by Service kube-dns"
    scope = Scope.CLUSTER
    fix_safety = FixSafety.UNSAFE

    def run(self, ctx: CheckContext) -> Verdict:
        cluster = _kube(ctx)
        state = _State()
        version = cluster.server_version()

        pods = self._pods(cluster, state)
        scan = LogScan()
        if pods is not None:
            scan = scan_logs(cluster, pods)
        current, stale = routing_hits(cluster, scan)
        routed = {h.pod for h in current}
        for name, cause in state.pod_causes.items():
            root = _cause_check(cause)
            if name in routed and cause.category in (podcause.NOT_READY, podcause.CRASH_LOOP):
                root = PROXY_CHECK
            state.pod_roots[name] = root
        self._pod_findings(cluster, state, pods or [])
        self._deployments(cluster, state, pods)
        service = self._service(cluster, state, pods)
        ready_endpoints = self._endpoints(cluster, state, version, service)
        self._log_findings(state, scan, current)
        if scan.unread:
            state.notes["logs_not_read"] = scan.unread
        if stale:
            state.notes["stale_service_timeouts"] = [
                f"{h.pod}/{h.container}: {h.line[:200]} (before kube-proxy restarted at "
                f"{h.stale_since})"
                for h in stale
            ]

        live = dnsprobe.live_dns(
            ctx,
            cluster,
            service,
            pods or [],
            pods_root=self._common_cause(state),
            pods_not_ready=sorted(state.pod_causes),
        )
        state.findings.extend(live.findings)

        fix = None
        if current or live.service_routing_broken:
            fix = self._proxy_fix(ctx, cluster, state, current)

        if state.notes or state.missing:
            notes = dict(state.notes)
            if state.missing:
                notes["facts_missing"] = state.missing
            state.findings = [
                Finding(
                    f.severity, f.message, f.resource, {**f.evidence, **notes}, f.hint, f.caused_by
                )
                for f in state.findings
            ]
        if not state.findings and state.missing:
            raise FactMissing("; ".join(state.missing))
        where = f"Service {SERVICE}"
        if service is not None:
            where += f" {(service.get('spec') or {}).get('clusterIP')}"
        logs = f"no known error in {len(scan.read)} container log(s)"
        if scan.unread:
            logs += f" ({len(scan.unread)} log(s) not available: {scan.unread[0]})"
        ok = (
            f"{len(pods or [])} DNS pod(s) ready, {where} 53/UDP+TCP, {ready_endpoints} ready "
            f"endpoint(s), {logs}; {live.note}"
        )
        worst = [f for f in state.findings if f.severity is Severity.FAIL] or state.findings
        summary = worst[0].message if worst else ""
        if len(state.findings) > 1:
            summary += f" (+{len(state.findings) - 1} more)"
        summary += f"; {live.note}"
        return Verdict.from_findings(
            state.findings, summary=summary, ok_summary=ok, fix=fix, evidence=live.evidence
        )

    # -- pods and deployments ---------------------------------------------------------

    def _pods(self, cluster: KubeFacts, state: _State) -> list[dict[str, Any]] | None:
        """The DNS pods, with the diagnosis of each one that is not ready."""
        try:
            pods = dns_pods(cluster)
        except FactMissing as exc:
            state.missing.append(str(exc))
            return None
        events, why = podcause.pod_events(cluster, NAMESPACE)
        if why:
            state.notes["events"] = why
        grouped = podcause.events_by_pod(events)
        for pod in pods:
            if not podcause.pod_is_ready(pod):
                name = str(pod["metadata"]["name"])
                state.pod_causes[name] = podcause.diagnose(pod, podcause.events_for(pod, grouped))
        return pods

    def _pod_findings(self, cluster: KubeFacts, state: _State, pods: list[dict[str, Any]]) -> None:
        overlay: podcause.OverlayState | None = None
        for pod in pods:
            name = str(pod["metadata"]["name"])
            cause = state.pod_causes.get(name)
            if cause is None:
                continue
            caused_by = state.pod_roots.get(name)
            evidence = dict(cause.evidence)
            evidence["state"] = podcause.pod_state(pod)
            hint = None
            if caused_by == CNI_CHECK:
                if overlay is None:
                    try:
                        overlay = podcause.overlay_state(cluster)
                    except (FactMissing, FactError):
                        overlay = podcause.OverlayState(())
                if overlay.found:
                    evidence["overlay"] = overlay.root_cause()
                hint = (
                    "The network plugin is the root cause, not DNS: repair the overlay "
                    "(`kdoctor explain cluster.network.cni`); the DNS pod then gets its sandbox. "
                    "kube-proxy's proxy mode does not help here."
                )
            elif caused_by == NODES_CHECK:
                hint = "The DNS pod cannot be scheduled: see `cluster.nodes`."
            elif caused_by == PROXY_CHECK:
                hint = (
                    "The pod runs but cannot reach the API through the kubernetes Service IP "
                    "(see the Service-IP timeout finding): kube-proxy, not DNS."
                )
            state.add(
                Finding(
                    Severity.FAIL,
                    f"DNS pod {name} is not ready: {cause.message}",
                    resource=f"pod/{NAMESPACE}/{name}",
                    evidence=evidence,
                    hint=hint,
                    caused_by=caused_by,
                )
            )

    def _common_cause(self, state: _State) -> str | None:
        """The root-cause check when every not-ready DNS pod has the same one."""
        checks = {state.pod_roots.get(name) for name in state.pod_causes}
        return checks.pop() if len(checks) == 1 else None

    def _deployments(
        self, cluster: KubeFacts, state: _State, pods: list[dict[str, Any]] | None
    ) -> None:
        try:
            deployments = cluster.list_objects(
                DEPLOYMENTS, namespace=NAMESPACE, label_selector=DNS_LABEL
            )
            if not deployments:
                deployments = [
                    d
                    for name in ("coredns", "kube-dns")
                    if (d := cluster.get(DEPLOYMENTS, NAMESPACE, name)) is not None
                ]
        except FactMissing as exc:
            state.missing.append(str(exc))
            return
        if not deployments:
            if pods:
                state.notes["deployment"] = (
                    "no Deployment labelled k8s-app=kube-dns (the DNS pods have another owner)"
                )
                return
            if pods is not None:
                state.add(
                    Finding(
                        Severity.FAIL,
                        "no cluster DNS: no Deployment and no pod labelled k8s-app=kube-dns "
                        "in kube-system",
                        resource=f"deployment/{NAMESPACE}",
                        evidence={
                            "looked_for": [
                                "deployments -l k8s-app=kube-dns",
                                "deployment/coredns",
                                "deployment/kube-dns",
                                "pods -l k8s-app=kube-dns",
                            ]
                        },
                        hint="Install CoreDNS (`kubeadm init phase addon coredns`) or the "
                        "kube-dns addon of your Kubernetes version.",
                    )
                )
            return
        for dep in deployments:
            meta = dep["metadata"]
            spec = dep.get("spec") or {}
            status = dep.get("status") or {}
            wanted = spec.get("replicas", 1)
            available = int(status.get("availableReplicas") or 0)
            ready = status.get("readyReplicas")
            ready_n = int(ready) if isinstance(ready, int) else available
            evidence = {
                "deployment": f"{NAMESPACE}/{meta['name']}",
                "resourceVersion": meta.get("resourceVersion"),
                "replicas": wanted,
                "readyReplicas": ready_n,
                "availableReplicas": available,
            }
            if wanted == 0:
                state.add(
                    Finding(
                        Severity.FAIL,
                        f"Deployment {meta['name']} is scaled to 0 replicas",
                        resource=f"deployment/{NAMESPACE}/{meta['name']}",
                        evidence=evidence,
                        hint=f"kubectl -n {NAMESPACE} scale deployment {meta['name']} --replicas=2",
                    )
                )
            elif available < wanted or ready_n < wanted:
                cause = self._common_cause(state)
                state.add(
                    Finding(
                        Severity.FAIL,
                        f"Deployment {meta['name']}: {min(available, ready_n)}/{wanted} "
                        "replicas ready and available",
                        resource=f"deployment/{NAMESPACE}/{meta['name']}",
                        evidence=evidence,
                        hint="See the DNS pod findings for why the pods are not ready."
                        if state.pod_causes
                        else f"kubectl -n {NAMESPACE} describe deployment {meta['name']}",
                        caused_by=cause,
                    )
                )

    # -- the Service and its endpoints --------------------------------------------------

    def _service(
        self, cluster: KubeFacts, state: _State, pods: list[dict[str, Any]] | None
    ) -> dict[str, Any] | None:
        try:
            service = cluster.get(SERVICES, NAMESPACE, SERVICE)
        except FactMissing as exc:
            state.missing.append(str(exc))
            return None
        resource = f"service/{NAMESPACE}/{SERVICE}"
        if service is None:
            state.add(
                Finding(
                    Severity.FAIL,
                    f"Service {NAMESPACE}/{SERVICE} does not exist: pods cannot reach the "
                    "cluster DNS",
                    resource=resource,
                    evidence={"looked_for": f"service/{NAMESPACE}/{SERVICE}"},
                    hint="Re-create it (kubeadm: `kubeadm init phase addon coredns`) with the "
                    "ClusterIP the kubelets use (`--cluster-dns`, 10.96.0.10 by default).",
                )
            )
            return None
        spec = service.get("spec") or {}
        meta = service["metadata"]
        base = {
            "service": f"{NAMESPACE}/{SERVICE}",
            "resourceVersion": meta.get("resourceVersion"),
            "clusterIP": spec.get("clusterIP"),
            "ports": [
                f"{p.get('name', '')} {p.get('port')}/{p.get('protocol', 'TCP')}"
                for p in spec.get("ports") or []
            ],
        }
        if spec.get("clusterIP") in (None, "", "None"):
            state.add(
                Finding(
                    Severity.FAIL,
                    f"Service {SERVICE} has no ClusterIP (headless): the kubelets' "
                    "--cluster-dns address does not exist",
                    resource=resource,
                    evidence=base,
                    hint="Re-create the Service with clusterIP 10.96.0.10 (the kubelets' "
                    "--cluster-dns).",
                )
            )
        ports = {(p.get("port"), p.get("protocol") or "TCP") for p in spec.get("ports") or []}
        if (53, "UDP") not in ports:
            state.add(
                Finding(
                    Severity.FAIL,
                    f"Service {SERVICE} does not serve 53/UDP: ordinary DNS queries fail",
                    resource=resource,
                    evidence=base,
                    hint="Add the port `{name: dns, port: 53, protocol: UDP}` to the Service.",
                )
            )
        if (53, "TCP") not in ports:
            state.add(
                Finding(
                    Severity.WARN,
                    f"Service {SERVICE} does not serve 53/TCP: answers too large for UDP "
                    "(truncated) cannot be retried over TCP",
                    resource=resource,
                    evidence=base,
                    hint="Add the port `{name: dns-tcp, port: 53, protocol: TCP}`.",
                )
            )
        selector = spec.get("selector") or {}
        if pods and selector:
            text = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
            selected = [
                p for p in pods if label_selector_matches(text, p["metadata"].get("labels") or {})
            ]
            if not selected:
                state.add(
                    Finding(
                        Severity.FAIL,
                        f"Service {SERVICE} selects {text}, which matches none of the DNS pods",
                        resource=resource,
                        evidence={
                            **base,
                            "selector": selector,
                            "dns_pods": [p["metadata"]["name"] for p in pods],
                        },
                        hint="Set the Service selector to the DNS pods' labels "
                        "(k8s-app: kube-dns).",
                    )
                )
        return service

    def _endpoints(
        self,
        cluster: KubeFacts,
        state: _State,
        version: tuple[int, int] | None,
        service: dict[str, Any] | None,
    ) -> int:
        """Record endpoint findings; return the number of ready endpoints."""
        ready: list[str] = []
        not_ready: list[str] = []
        source = ""
        found = False
        if version is not None and version >= SLICES_FROM:
            try:
                slices = cluster.list_objects(
                    ENDPOINTSLICES, namespace=NAMESPACE, label_selector=SLICE_LABEL
                )
                source = f"endpointslices -l {SLICE_LABEL}"
                found = bool(slices)
                for sl in slices:
                    for ep in sl.get("endpoints") or []:
                        who = _endpoint_name(ep.get("addresses") or [], ep.get("targetRef"))
                        # ready: nil means unknown, which consumers treat as ready.
                        if (ep.get("conditions") or {}).get("ready") is False:
                            not_ready.append(who)
                        else:
                            ready.append(who)
            except FactMissing:
                found = False
            except ApiError as exc:
                if exc.status != 404:
                    raise
                # discovery.k8s.io is not served (a pre-1.21 server, or one that reports
                # a newer version than it serves): the core Endpoints object has the same.
                found, source = False, ""
        if not found:
            try:
                obj = cluster.get(ENDPOINTS, NAMESPACE, SERVICE)
            except FactMissing as exc:
                if not source:
                    state.missing.append(str(exc))
                    return 0
                obj = None
            source = f"endpoints/{SERVICE}"
            found = obj is not None
            for subset in (obj or {}).get("subsets") or []:
                for addr in subset.get("addresses") or []:
                    ready.append(_endpoint_name([addr.get("ip")], addr.get("targetRef")))
                for addr in subset.get("notReadyAddresses") or []:
                    not_ready.append(_endpoint_name([addr.get("ip")], addr.get("targetRef")))
        ready, not_ready = sorted(set(ready)), sorted(set(not_ready))
        evidence = {"source": source, "ready": ready, "not_ready": not_ready}
        resource = f"endpoints/{NAMESPACE}/{SERVICE}"
        cause = self._common_cause(state)
        if not found and service is not None:
            state.add(
                Finding(
                    Severity.FAIL,
                    f"Service {SERVICE} has no endpoints object: the endpoints controller has "
                    "not seen any DNS pod",
                    resource=resource,
                    evidence=evidence,
                    hint="Check kube-controller-manager and that the Service selects the DNS pods.",
                    caused_by=cause,
                )
            )
        elif found and not ready:
            state.add(
                Finding(
                    Severity.FAIL,
                    f"Service {SERVICE} has no ready endpoint"
                    + (
                        f" ({len(not_ready)} not ready: {', '.join(not_ready)})"
                        if not_ready
                        else ""
                    ),
                    resource=resource,
                    evidence=evidence,
                    hint="DNS queries to the Service IP go nowhere until a DNS pod is ready; "
                    "see the DNS pod findings.",
                    caused_by=cause,
                )
            )
        elif not_ready:
            state.add(
                Finding(
                    Severity.WARN,
                    f"Service {SERVICE}: {len(not_ready)} endpoint(s) not ready "
                    f"({', '.join(not_ready)}), {len(ready)} ready",
                    resource=resource,
                    evidence=evidence,
                    hint="See the DNS pod findings.",
                    caused_by=cause,
                )
            )
        return len(ready)

    # -- logs -----------------------------------------------------------------------

    def _log_findings(self, state: _State, scan: LogScan, current: list[LogHit]) -> None:
        for hit in scan.hits:
            resource = f"pod/{NAMESPACE}/{hit.pod}"
            if hit.kind == LOOP:
                state.add(
                    Finding(
                        Severity.FAIL,
                        f"CoreDNS in {hit.pod} detected a forwarding loop and exits: "
                        f"{_short(hit.line)}",
                        resource=resource,
                        evidence=hit.evidence(),
                        hint="The node's resolv.conf points CoreDNS back at itself (often "
                        "systemd-resolved's 127.0.0.53): run kubelet with "
                        "--resolv-conf=/run/systemd/resolve/resolv.conf, or `forward . "
                        "<upstream IP>` in ConfigMap coredns, then restart CoreDNS. "
                        "https://coredns.io/plugins/loop#troubleshooting",
                    )
                )
            elif hit.kind == FORBIDDEN:
                state.add(
                    Finding(
                        Severity.FAIL,
                        f"{hit.pod}/{hit.container} is refused by the API (RBAC): "
                        f"{_short(hit.line)}",
                        resource=resource,
                        evidence=hit.evidence(),
                        hint="Restore ClusterRole system:coredns (list/watch endpoints, "
                        "services, pods, namespaces, discovery.k8s.io endpointslices) and "
                        "ClusterRoleBinding system:coredns to ServiceAccount "
                        "kube-system:coredns (`kubeadm init phase addon coredns` re-creates "
                        "them).",
                    )
                )
            elif hit.kind == NO_ROUTE:
                state.add(
                    Finding(
                        Severity.FAIL,
                        f"{hit.pod}/{hit.container} gets `no route to host` reaching "
                        f"{hit.target}: a REJECT rule on the node blocks pod traffic",
                        resource=resource,
                        evidence=hit.evidence(),
                        hint="The distro's `-j REJECT --reject-with icmp-host-prohibited` "
                        "answers like this (kubeadm#29): see node.iptables.reject on the node "
                        f"{hit.node}.",
                        caused_by=REJECT_CHECK,
                    )
                )
            elif hit.kind == UPSTREAM_TIMEOUT:
                state.add(
                    Finding(
                        Severity.WARN,
                        f"{hit.pod}/{hit.container} times out reaching "
                        f"{hit.target or 'an upstream server'}: names outside the cluster "
                        "may not resolve",
                        resource=resource,
                        evidence=hit.evidence(),
                        hint="Check the upstream servers in the node's /etc/resolv.conf (or "
                        "the `forward` line of ConfigMap coredns) and that pods may reach "
                        "them (firewall, egress rules).",
                    )
                )
        for hit in current:
            state.add(
                Finding(
                    Severity.FAIL,
                    f"{hit.pod}/{hit.container} times out on the Service IP {hit.target}: "
                    "the DNS pod runs but Service routing (kube-proxy) is broken",
                    resource=f"pod/{NAMESPACE}/{hit.pod}",
                    evidence=hit.evidence(),
                    hint="Traffic to a ClusterIP is translated by kube-proxy's rules on the "
                    f"node ({hit.node}); see `kdoctor explain cluster.kube-proxy`.",
                    caused_by=PROXY_CHECK,
                )
            )

    # -- the fix ----------------------------------------------------------------------

    def _proxy_fix(
        self, ctx: CheckContext, cluster: KubeFacts, state: _State, current: list[LogHit]
    ) -> Fix | None:
        """The kube-proxy proxy-mode patch, when the DNS pods are fine but the Service path
        is not: every not-ready DNS pod runs (its readiness fails, or it restarts) and its
        log shows the Service-IP timeouts."""
        if any(root != PROXY_CHECK for root in state.pod_roots.values()):
            return None  # a DNS pod is broken itself (CNI, image, scheduling…)
        try:
            ds = kube_proxy.find_daemonset(cluster)
            setup = kube_proxy.read_setup(cluster, ds) if ds is not None else None
        except (FactMissing, FactError) as exc:
            state.notes["proxy_mode_fix"] = f"not offered: kube-proxy unreadable: {exc}"
            return None
        if setup is None:
            state.notes["proxy_mode_fix"] = "not offered: no kube-proxy DaemonSet"
            return None
        version = cluster.server_version()
        default = "userspace" if version is not None and version < (1, 26) else "iptables"
        if setup.mode == "userspace":
            default = "iptables"
        choice = kube_proxy.choose_mode(ctx.options.proxy_mode, default, version)
        fix, why_not = kube_proxy.build_fix(
            cluster, setup, choice, "DNS pods run but time out on Service IPs"
        )
        if why_not:
            state.notes["proxy_mode_fix"] = f"not offered: {why_not}"
        if fix is not None and state.pod_roots:
            # The DNS pods need a moment to sync with the API once Service routing works.
            nodes = {str(h.node): "" for h in current if h.node and h.pod in state.pod_roots}
            fix.actions.append(
                kube_proxy.WaitForPods(NAMESPACE, DNS_LABEL, nodes, what="a ready DNS pod")
            )
        return fix


def _endpoint_name(addresses: list[Any], target: Any) -> str:
    ip = ",".join(str(a) for a in addresses if a)
    if isinstance(target, dict) and target.get("name"):
        return f"{target['name']} ({ip})" if ip else str(target["name"])
    return ip or "?"


def _short(line: str, limit: int = 200) -> str:
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _listed(names: list[str], what: str) -> str:
    return f" ({len(names)} {what}: {', '.join(names)})" if names else ""
