"""Live DNS probes: ask the cluster DNS directly, from where kdoctor runs (a node).

The live half of ``cluster.dns.kube-dns``, the part of the official "Debugging DNS
Resolution" procedure the API cannot answer:

* :func:`kubelet_dns` reads the kubelet's DNS settings (``clusterDomain``, ``clusterDNS``,
  ``resolvConf`` from ``/var/lib/kubelet/config.yaml`` or the file ``--config`` names;
  ``--cluster-domain``/``--cluster-dns``/``--resolv-conf`` flags from its unit drop-ins and
  environment files, which win over the file as they do in the kubelet).
* :func:`run_queries` asks ``kubernetes.default.svc.<domain>`` (A) at the ``kube-dns``
  Service ClusterIP and at every DNS pod IP, over UDP and TCP, all at once: 1 s per query,
  the whole probe bounded (5 s). UDP goes through a *connected* socket so an ICMP port
  unreachable (a host with nothing on port 53) comes back as "refused" instead of a timeout.
* :func:`assess` turns the answers into findings: pods answer and the Service does → ok;
  pods answer and the Service does not → Service routing (kube-proxy) is broken; no pod
  answers → the DNS pods are broken; NXDOMAIN → DNS is up but does not serve the cluster
  zone. Its evidence is a matrix (target × UDP/TCP), see :func:`matrix`.
* :func:`parse_resolv_conf` and :func:`resolv_findings` compare the node's resolv.conf
  (the upstream of ``dnsPolicy: Default`` pods, the DNS pods included) and a pod's
  (``ClusterFirst``: nameserver = the cluster DNS, search ``<ns>.svc.<domain> svc.<domain>
  <domain>``, ``options ndots:5``) with what the kubelet should have written.

Everything here is read-only: queries are plain DNS packets. dnspython is imported only
when queries are sent, so node-only runs never load it.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from doctor.core.errors import FactError, FactMissing
from doctor.core.model import Finding, Severity
from doctor.core.sources import NodeFacts
from doctor.facts.kube import NODES, SERVICES, ApiError, KubeFacts
from doctor.live.probes import ProbeCluster

if TYPE_CHECKING:
    from doctor.core.context import CheckContext

DEFAULT_DOMAIN = "cluster.local"
QUERY_TIMEOUT = 1.0
PROBE_BUDGET = 5.0
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
#: Where kubeadm and distributions keep kubelet flags (read in this order; later files are
#: the ones systemd reads later, so their values win).
KUBELET_FLAG_FILES = (
    "/usr/lib/systemd/system/kubelet.service",
    "/lib/systemd/system/kubelet.service",
    "/etc/systemd/system/kubelet.service",
    "/usr/lib/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf",
    "/etc/sysconfig/kubelet",
    "/etc/default/kubelet",
    "/var/lib/kubelet/kubeadm-flags.env",
)
#: Files whose presence says this host is a Kubernetes node.
NODE_MARKERS = ("/etc/kubernetes/kubelet.conf", KUBELET_CONFIG, "/var/lib/kubelet/kubeconfig")
#: glibc before 2.26 honours 6 search domains; the kubelet warns above that.
MAX_SEARCH = 6

PROBE_NAMESPACE = "kdoctor-probe"  # doctor.live.probes.NAMESPACE (not imported: no exec here)
PROXY_CHECK = "cluster.kube-proxy"
CNI_CHECK = "cluster.network.cni"


# -- the kubelet's DNS settings -------------------------------------------------------------


@dataclass(frozen=True)
class KubeletDns:
    """The cluster domain, the cluster DNS address(es) and the upstream resolv.conf the
    kubelet gives pods, each with where it was read."""

    domain: str
    domain_source: str
    cluster_dns: tuple[str, ...] = ()
    cluster_dns_source: str | None = None
    resolv_conf: str = "/etc/resolv.conf"
    resolv_conf_source: str = "kubelet default"
    notes: tuple[str, ...] = ()


def _flag(text: str, name: str) -> str | None:
    """The last value of ``--name=value`` or ``--name value`` in a unit or env file."""
    found = None
    for match in re.finditer(rf"--{re.escape(name)}(?:=|\s+)([^\s\"']+)", text):
        found = match.group(1)
    return found


def _yaml_config(text: str) -> dict[str, Any]:
    import yaml  # PyYAML comes with the kubernetes client; only needed here

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc).splitlines()[0]) from exc
    return doc if isinstance(doc, dict) else {}


def kubelet_dns(node: NodeFacts, override: str | None = None) -> KubeletDns:
    """What the kubelet says about cluster DNS; ``override`` (``--cluster-domain``) wins."""
    notes: list[str] = []
    domain: str | None = None
    domain_source = ""
    dns: tuple[str, ...] = ()
    dns_source: str | None = None
    resolv = "/etc/resolv.conf"
    resolv_source = "kubelet default"

    flags: dict[str, tuple[str, str]] = {}  # flag → (value, file)
    for path in KUBELET_FLAG_FILES:
        try:
            text = node.read_text(path)
        except FactError as exc:
            notes.append(str(exc))
            continue
        if not text:
            continue
        for name in ("cluster-domain", "cluster-dns", "resolv-conf", "config"):
            value = _flag(text, name)
            if value is not None:
                flags[name] = (value, path)

    config_path = flags["config"][0] if "config" in flags else KUBELET_CONFIG
    try:
        config_text = node.read_text(config_path)
    except FactError as exc:
        notes.append(str(exc))
        config_text = None
    if config_text:
        try:
            config = _yaml_config(config_text)
        except ValueError as exc:
            notes.append(f"{config_path}: not YAML: {exc}")
            config = {}
        if isinstance(config.get("clusterDomain"), str) and config["clusterDomain"]:
            domain, domain_source = config["clusterDomain"], f"{config_path} clusterDomain"
        servers = config.get("clusterDNS")
        if isinstance(servers, list) and servers:
            dns, dns_source = tuple(str(s) for s in servers), f"{config_path} clusterDNS"
        if isinstance(config.get("resolvConf"), str) and config["resolvConf"]:
            resolv, resolv_source = config["resolvConf"], f"{config_path} resolvConf"

    if "cluster-domain" in flags:
        value, path = flags["cluster-domain"]
        domain, domain_source = value, f"{path} --cluster-domain"
    if "cluster-dns" in flags:
        value, path = flags["cluster-dns"]
        dns, dns_source = tuple(v for v in value.split(",") if v), f"{path} --cluster-dns"
    if "resolv-conf" in flags:
        value, path = flags["resolv-conf"]
        resolv, resolv_source = value, f"{path} --resolv-conf"

    if override:
        domain, domain_source = override, "--cluster-domain"
    if not domain:
        domain, domain_source = DEFAULT_DOMAIN, "default (no kubelet configuration names one)"
    return KubeletDns(
        domain=domain.strip(".") or DEFAULT_DOMAIN,
        domain_source=domain_source,
        cluster_dns=dns,
        cluster_dns_source=dns_source,
        resolv_conf=resolv,
        resolv_conf_source=resolv_source,
        notes=tuple(notes),
    )


def on_node(node: NodeFacts, node_names: Sequence[str], node_ips: Sequence[str]) -> str | None:
    """Why kdoctor is on a cluster node (a kubelet file, the hostname, a local Node IP), or
    None when nothing says so: the Service and pod IPs are then likely unreachable."""
    for path in NODE_MARKERS:
        if node.exists(path):
            return f"{path} exists"
    host = socket.gethostname()
    short = host.split(".")[0]
    if host in node_names or short in node_names:
        return f"the hostname {host} is a Node's name"
    for ip in node_ips:
        try:
            with socket.socket(_family(ip), socket.SOCK_DGRAM) as sock:
                sock.bind((ip, 0))  # succeeds only for an address of this host
            return f"the Node address {ip} is local"
        except OSError:
            continue
    return None


def _family(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


# -- queries ------------------------------------------------------------------------------

ANSWER = "answer"
NXDOMAIN = "NXDOMAIN"
NODATA = "no data"
REFUSED = "refused"
SERVFAIL = "SERVFAIL"
RCODE = "rcode"
TIMEOUT = "timeout"
UNREACHABLE = "unreachable"
ERROR = "error"
NOT_QUERIED = "not queried"

#: Outcomes that prove a DNS server answered for the name (it is up and serves the zone).
SERVING = {ANSWER}
#: Outcomes that prove a DNS server is there (it answered, whatever it said).
ALIVE = {ANSWER, NXDOMAIN, NODATA, SERVFAIL, RCODE}


@dataclass(frozen=True)
class Target:
    """Where a query goes: the Service ClusterIP, or one DNS pod's IP."""

    label: str  # "Service kube-dns", "pod coredns-5d78c9869d-abcde"
    ip: str | None
    kind: str  # "service" | "pod"
    node: str | None = None
    why_not: str | None = None  # why it has no IP (pod Pending…)
    port: int = 53

    @property
    def row_name(self) -> str:
        where = f" {self.ip}" if self.ip else ""
        on = f" on {self.node}" if self.node else ""
        return f"{self.label}{where}{on}"


@dataclass(frozen=True)
class QueryResult:
    target: Target
    proto: str  # "udp" | "tcp"
    outcome: str
    addresses: tuple[str, ...] = ()
    ms: int = 0
    detail: str = ""

    @property
    def answered(self) -> bool:
        return self.outcome in SERVING

    def cell(self) -> str:
        if self.outcome == ANSWER:
            return f"{', '.join(self.addresses)} ({self.ms} ms)"
        if self.outcome == NOT_QUERIED:
            return self.detail or "not queried"
        if self.outcome == TIMEOUT:
            return f"timeout ({self.ms} ms)"
        text = self.outcome
        if self.detail and self.outcome in (UNREACHABLE, ERROR, RCODE):
            text += f": {self.detail}"
        return f"{text} ({self.ms} ms)"

    def cell_status(self) -> str:
        if self.outcome == ANSWER:
            return "ok"
        if self.outcome == NOT_QUERIED:
            return "skip"
        return "fail"

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target.row_name,
            "proto": self.proto,
            "outcome": self.outcome,
            "addresses": list(self.addresses),
            "ms": self.ms,
            "detail": self.detail,
        }


def _rcode_outcome(response: Any) -> tuple[str, tuple[str, ...], str]:
    import dns.rcode
    import dns.rdatatype

    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return NXDOMAIN, (), ""
    if rcode == dns.rcode.REFUSED:
        return REFUSED, (), "the server refused the query (REFUSED)"
    if rcode == dns.rcode.SERVFAIL:
        return SERVFAIL, (), ""
    if rcode != dns.rcode.NOERROR:
        return RCODE, (), dns.rcode.to_text(rcode)
    addresses = tuple(
        sorted(
            {
                rdata.address
                for rrset in response.answer
                if rrset.rdtype == dns.rdatatype.A
                for rdata in rrset
            }
        )
    )
    if not addresses:
        return NODATA, (), "NOERROR without an A record"
    return ANSWER, addresses, ""


def _udp(wire: bytes, ip: str, port: int, timeout: float) -> bytes:
    """One UDP exchange on a connected socket: ICMP port unreachable → ConnectionRefused."""
    with socket.socket(_family(ip), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((ip, port))
        sock.send(wire)
        deadline = time.monotonic() + timeout
        while True:
            data = sock.recv(65535)
            if len(data) >= 2 and data[:2] == wire[:2]:  # the query's id: our answer
                return data
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)


def query(target: Target, proto: str, qname: str, timeout: float = QUERY_TIMEOUT) -> QueryResult:
    """Ask TARGET for QNAME's A record over PROTO; never raises."""
    import dns.exception
    import dns.message
    import dns.query

    if not target.ip:
        return QueryResult(target, proto, NOT_QUERIED, detail=target.why_not or "no IP")
    request = dns.message.make_query(qname, "A")
    started = time.monotonic()

    def elapsed() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        if proto == "udp":
            data = _udp(request.to_wire(), target.ip, target.port, timeout)
            response = dns.message.from_wire(data)
        else:
            response = dns.query.tcp(request, target.ip, timeout=timeout, port=target.port)
    except (TimeoutError, dns.exception.Timeout):
        return QueryResult(target, proto, TIMEOUT, ms=elapsed())
    except ConnectionRefusedError:
        return QueryResult(
            target, proto, REFUSED, ms=elapsed(), detail="nothing listens on port 53"
        )
    except OSError as exc:
        return QueryResult(
            target, proto, UNREACHABLE, ms=elapsed(), detail=exc.strerror or str(exc)
        )
    except dns.exception.DNSException as exc:
        return QueryResult(
            target, proto, ERROR, ms=elapsed(), detail=str(exc) or type(exc).__name__
        )
    outcome, addresses, detail = _rcode_outcome(response)
    return QueryResult(target, proto, outcome, addresses, elapsed(), detail)


def run_queries(
    targets: Sequence[Target],
    qname: str,
    timeout: float = QUERY_TIMEOUT,
    budget: float = PROBE_BUDGET,
) -> list[QueryResult]:
    """Every target over UDP and TCP, concurrently; the whole probe ends within BUDGET."""
    jobs = [(t, proto) for t in targets for proto in ("udp", "tcp")]
    results: dict[tuple[int, str], QueryResult] = {}
    pool = concurrent.futures.ThreadPoolExecutor(
        max_workers=max(1, min(16, len(jobs))), thread_name_prefix="dnsprobe"
    )
    try:
        futures = {
            pool.submit(query, target, proto, qname, timeout): (index, proto)
            for index, (target, proto) in enumerate((t, p) for t in targets for p in ("udp", "tcp"))
        }
        done, _pending = concurrent.futures.wait(futures, timeout=budget)
        for future in done:
            results[futures[future]] = future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    out = []
    for index, (target, proto) in enumerate(jobs):
        out.append(
            results.get(
                (index, proto),
                QueryResult(target, proto, TIMEOUT, ms=int(budget * 1000), detail="probe budget"),
            )
        )
    return out


# -- the verdict --------------------------------------------------------------------------


def matrix(title: str, results: Sequence[QueryResult]) -> dict[str, Any]:
    """The evidence table: one row per target, columns UDP and TCP (see doctor.ui.text)."""
    rows: dict[str, dict[str, QueryResult]] = {}
    order: list[str] = []
    for result in results:
        name = result.target.row_name
        if name not in rows:
            rows[name] = {}
            order.append(name)
        rows[name][result.proto] = result
    return {
        "title": title,
        "corner": "target",
        "columns": ["UDP", "TCP"],
        "rows": [
            {
                "name": name,
                "cells": [rows[name][p].cell() if p in rows[name] else "-" for p in ("udp", "tcp")],
                "status": [
                    rows[name][p].cell_status() if p in rows[name] else "skip"
                    for p in ("udp", "tcp")
                ],
            }
            for name in order
        ],
    }


@dataclass
class Assessment:
    """What the live queries say, for the check to merge with its API findings."""

    findings: list[Finding] = field(default_factory=list)
    #: Pods answer and the Service does not: the kube-proxy proxy-mode fix applies.
    service_routing_broken: bool = False
    summary: str = ""


def _by_target(results: Sequence[QueryResult]) -> dict[Target, dict[str, QueryResult]]:
    out: dict[Target, dict[str, QueryResult]] = {}
    for result in results:
        out.setdefault(result.target, {})[result.proto] = result
    return out


def _outcomes(per_proto: Mapping[str, QueryResult]) -> str:
    return ", ".join(f"{p.upper()} {r.cell()}" for p, r in sorted(per_proto.items(), reverse=True))


def assess(
    results: Sequence[QueryResult],
    qname: str,
    domain: str,
    evidence: dict[str, Any],
    expected_ip: str | None = None,
    pods_root: str | None = None,
    pods_not_ready: Sequence[str] = (),
) -> Assessment:
    """Decide from the answers. ``evidence`` goes on every finding, with ``answers`` (what
    each target answered; the matrix is the check's own evidence).

    ``expected_ip`` is the ``kubernetes`` Service ClusterIP the name must resolve to;
    ``pods_root`` the check a not-answering DNS pod's problem comes from (the API side's
    diagnosis), ``pods_not_ready`` the DNS pods the API already reports as not ready.
    """
    out = Assessment()
    grouped = _by_target(results)
    service = [t for t in grouped if t.kind == "service" and t.ip]
    pods = [t for t in grouped if t.kind == "pod" and t.ip]
    if not service and not pods:
        out.summary = "live DNS queries: nothing to query (no Service IP, no DNS pod IP)"
        return out

    def serves(target: Target) -> bool:
        return any(r.answered for r in grouped[target].values())

    def udp_serves(target: Target) -> bool:
        udp = grouped[target].get("udp")
        return udp is not None and udp.answered

    # Every finding carries what each target answered (the check's evidence has the matrix).
    evidence = {**evidence, "answers": {t.row_name: _outcomes(grouped[t]) for t in grouped}}
    nx = [t for t in grouped if any(r.outcome == NXDOMAIN for r in grouped[t].values())]
    pods_ok = [t for t in pods if serves(t)]
    pods_bad = [t for t in pods if not serves(t)]
    svc = service[0] if service else None
    svc_ok = svc is not None and udp_serves(svc)

    if nx:
        names = ", ".join(t.row_name for t in nx)
        out.findings.append(
            Finding(
                Severity.FAIL,
                f"the cluster DNS answers NXDOMAIN for {qname}: it runs but does not serve "
                f"the cluster zone {domain} ({names})",
                resource=f"service/kube-system/kube-dns {svc.ip}" if svc else None,
                evidence=evidence,
                hint=f"The DNS server's domain differs from the kubelet's cluster domain "
                f"({domain}), or its Kubernetes plugin is off: compare `--domain` of kube-dns / "
                "the `kubernetes` block of ConfigMap coredns with the kubelet's clusterDomain "
                "(kdoctor reads it from the kubelet; override with --cluster-domain).",
            )
        )
        out.summary = f"NXDOMAIN for {qname}: DNS up but not serving {domain}"
        return out

    if pods and not pods_ok and not svc_ok:
        alive = [t for t in pods if any(r.outcome in ALIVE for r in grouped[t].values())]
        why = f" (the API reports {', '.join(pods_not_ready)} not ready)" if pods_not_ready else ""
        out.findings.append(
            Finding(
                Severity.FAIL,
                f"no DNS pod answers for {qname}, nor does the Service: the DNS pods are "
                f"broken{why}",
                resource="pods/kube-system -l k8s-app=kube-dns",
                evidence=evidence,
                hint=(
                    "See the DNS pod findings for their cause."
                    if pods_root or pods_not_ready
                    else "The pods run but their DNS server does not answer"
                    + (" (it answers with an error)" if alive else "")
                    + ": `kubectl -n kube-system logs -l k8s-app=kube-dns` and, for "
                    "CoreDNS, the Corefile in ConfigMap coredns. kube-proxy's proxy mode "
                    "does not help here."
                ),
                caused_by=pods_root,
            )
        )
        out.summary = "DNS pods do not answer (nor the Service)"
        return out

    if svc is not None and not svc_ok and pods_ok:
        out.service_routing_broken = True
        answering = ", ".join(t.row_name for t in pods_ok)
        out.findings.append(
            Finding(
                Severity.FAIL,
                f"the DNS pods answer ({answering}) but the Service kube-dns {svc.ip} does "
                f"not ({_outcomes(grouped[svc])}): Service routing (kube-proxy) is broken",
                resource=f"service/kube-system/kube-dns {svc.ip}",
                evidence=evidence,
                hint="A ClusterIP exists only in kube-proxy's rules on each node: see "
                "`kdoctor explain cluster.kube-proxy` (its mode, its pods, its log).",
                caused_by=PROXY_CHECK,
            )
        )
        out.summary = f"DNS pods answer, Service {svc.ip} does not (kube-proxy)"
        return out

    if svc is not None and not svc_ok and not pods:
        out.findings.append(
            Finding(
                Severity.FAIL,
                f"the Service kube-dns {svc.ip} does not answer ({_outcomes(grouped[svc])}) "
                "and no DNS pod has an IP to ask directly",
                resource=f"service/kube-system/kube-dns {svc.ip}",
                evidence=evidence,
                hint="See the DNS pod findings.",
                caused_by=pods_root,
            )
        )
        out.summary = f"Service {svc.ip} does not answer"
        return out

    # The Service answers (or there is none to ask): look at the rest.
    if svc is not None and svc_ok:
        tcp = grouped[svc].get("tcp")
        if tcp is not None and not tcp.answered:
            out.findings.append(
                Finding(
                    Severity.WARN,
                    f"the Service kube-dns {svc.ip} answers over UDP but not over TCP "
                    f"({tcp.cell()}): answers too large for UDP cannot be retried",
                    resource=f"service/kube-system/kube-dns {svc.ip}",
                    evidence=evidence,
                    hint="Check that the Service has port 53/TCP and that nothing drops "
                    "TCP 53 to it (kube-proxy rules, a firewall).",
                )
            )
    if pods and not pods_ok and svc_ok:
        # Reached through the Service but not directly: the node cannot reach pod IPs.
        out.findings.append(
            Finding(
                Severity.WARN,
                "the Service answers but no DNS pod answers when asked directly by its pod "
                "IP: this node cannot reach pod IPs (the pod network is not routed to it)",
                resource="pods/kube-system -l k8s-app=kube-dns",
                evidence=evidence,
                hint=f"Check the overlay on this node ({CNI_CHECK}) and rules that drop "
                "traffic to the pod range (node.iptables.reject).",
            )
        )
    elif pods_bad:
        for target in pods_bad:
            name = target.label.removeprefix("pod ")
            on = f" and the pod network on node {target.node} ({CNI_CHECK})" if target.node else ""
            out.findings.append(
                Finding(
                    Severity.WARN if svc_ok else Severity.FAIL,
                    f"DNS pod {name} ({target.ip}) does not answer "
                    f"({_outcomes(grouped[target])}) while "
                    + ("the Service does" if svc_ok else "other DNS pods do")
                    + ": the queries the Service sends to it fail",
                    resource=f"pod/kube-system/{name}",
                    evidence=evidence,
                    hint="Its readiness probe should take it out of the Service; see its log "
                    f"(`kubectl -n kube-system logs {name}`){on}.",
                )
            )
    if expected_ip:
        wrong = [
            r for r in results if r.answered and r.addresses and expected_ip not in r.addresses
        ]
        if wrong:
            out.findings.append(
                Finding(
                    Severity.WARN,
                    f"{qname} resolves to {', '.join(wrong[0].addresses)}, not to the "
                    f"kubernetes Service ClusterIP {expected_ip}",
                    resource="service/default/kubernetes",
                    evidence=evidence,
                    hint="The DNS server serves stale or foreign records: restart the DNS pods "
                    "and check what they watch.",
                )
            )
    if not out.findings:
        out.summary = f"{qname} answered at the Service and {len(pods_ok)} DNS pod(s)"
        if not svc:
            out.summary = f"{qname} answered by {len(pods_ok)} DNS pod(s)"
    elif pods_bad:
        out.summary = f"{len(pods_bad)} of {len(pods)} DNS pod(s) do not answer"
    else:
        out.summary = f"{qname} answered, with {len(out.findings)} problem(s)"
    return out


# -- resolv.conf ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    options: dict[str, str | None]

    @property
    def ndots(self) -> int:
        value = self.options.get("ndots")
        try:
            return int(value) if value is not None else 1
        except ValueError:
            return 1


def parse_resolv_conf(text: str) -> ResolvConf:
    """resolv.conf(5): ``nameserver``, ``search``/``domain`` (the last one wins), ``options``."""
    servers: list[str] = []
    search: list[str] = []
    options: dict[str, str | None] = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        key, values = words[0], words[1:]
        if key == "nameserver" and values:
            servers.append(values[0])
        elif key in ("search", "domain"):
            search = list(values) if key == "search" else values[:1]
        elif key == "options":
            for option in values:
                name, _, value = option.partition(":")
                options[name] = value or None
    return ResolvConf(tuple(servers), tuple(search), options)


def expected_search(namespace: str, domain: str) -> tuple[str, ...]:
    return (f"{namespace}.svc.{domain}", f"svc.{domain}", domain)


def _loopback(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def node_resolv_findings(
    text: str | None, path: str, service_ip: str | None, source: str
) -> list[Finding]:
    """The node's resolv.conf as the upstream of the cluster DNS (``dnsPolicy: Default``)."""
    resource = path
    if text is None:
        return [
            Finding(
                Severity.WARN,
                f"{path} does not exist: pods with dnsPolicy Default (the DNS pods) get no "
                "upstream nameserver",
                resource=resource,
                evidence={"kubelet_resolv_conf": source},
                hint="Point the kubelet's resolvConf at an existing file.",
            )
        ]
    conf = parse_resolv_conf(text)
    evidence = {
        "file": path,
        "kubelet_resolv_conf": source,
        "nameservers": list(conf.nameservers),
        "search": list(conf.search),
    }
    out = []
    if not conf.nameservers:
        out.append(
            Finding(
                Severity.WARN,
                f"{path} names no nameserver: the DNS pods have no upstream for names outside "
                "the cluster",
                resource=resource,
                evidence=evidence,
                hint="Add the site's nameservers to it.",
            )
        )
    stubs = [s for s in conf.nameservers if _loopback(s)]
    if stubs:
        out.append(
            Finding(
                Severity.WARN,
                f"{path} points at a local stub ({', '.join(stubs)}): the DNS pods forward "
                "upstream queries to themselves (CoreDNS `plugin/loop`)",
                resource=resource,
                evidence=evidence,
                hint="Give the kubelet the real upstream list: resolvConf: "
                "/run/systemd/resolve/resolv.conf (systemd-resolved) in its configuration.",
            )
        )
    if service_ip and service_ip in conf.nameservers:
        out.append(
            Finding(
                Severity.WARN,
                f"{path} names the cluster DNS {service_ip} itself: the DNS pods forward to "
                "themselves",
                resource=resource,
                evidence=evidence,
                hint="The node's resolv.conf must name the site's nameservers, not the cluster "
                "DNS Service.",
            )
        )
    if len(conf.search) + 3 > MAX_SEARCH:
        out.append(
            Finding(
                Severity.WARN,
                f"{path} has {len(conf.search)} search domains: with the 3 the kubelet adds, "
                f"pods get more than {MAX_SEARCH} (the kubelet drops the extra ones and "
                "warns 'Search Line limits were exceeded')",
                resource=resource,
                evidence=evidence,
                hint=f"Keep at most {MAX_SEARCH - 3} search domains on the node.",
            )
        )
    return out


def pod_resolv_findings(
    text: str, pod: str, namespace: str, domain: str, dns_ips: Sequence[str]
) -> list[Finding]:
    """A ClusterFirst pod's resolv.conf against what the kubelet should write."""
    conf = parse_resolv_conf(text)
    want_search = expected_search(namespace, domain)
    evidence = {
        "pod": f"{namespace}/{pod}",
        "resolv_conf": text.strip().splitlines()[:12],
        "expected": {
            "nameserver": list(dns_ips),
            "search": list(want_search),
            "options": "ndots:5",
        },
    }
    resource = f"pod/{namespace}/{pod}"
    out = []
    first = conf.nameservers[0] if conf.nameservers else None
    if dns_ips and first not in dns_ips:
        out.append(
            Finding(
                Severity.FAIL,
                f"pods get nameserver {first or '(none)'}, not the cluster DNS "
                f"{', '.join(dns_ips)}: they cannot resolve Service names",
                resource=resource,
                evidence=evidence,
                hint="The kubelet's clusterDNS (--cluster-dns) must be the kube-dns Service "
                "ClusterIP; fix it in /var/lib/kubelet/config.yaml (or the kubelet flags) on "
                "every node and restart the kubelet.",
            )
        )
    if tuple(conf.search[:3]) != want_search:
        out.append(
            Finding(
                Severity.WARN,
                f"pods get search {' '.join(conf.search) or '(none)'}, not "
                f"{' '.join(want_search)}: short Service names do not resolve",
                resource=resource,
                evidence=evidence,
                hint=f"The kubelet's cluster domain must be {domain} (clusterDomain / "
                "--cluster-domain) on every node.",
            )
        )
    if conf.ndots != 5:
        out.append(
            Finding(
                Severity.WARN,
                f"pods get ndots:{conf.ndots}, not ndots:5: names like `svc.ns` are not tried "
                "with the cluster search domains first",
                resource=resource,
                evidence=evidence,
                hint="Something rewrites the pod's resolv.conf (a dnsConfig, an admission "
                "webhook, the image); the kubelet writes ndots:5.",
            )
        )
    return out


def cluster_dns_findings(kubelet: KubeletDns, service_ip: str | None) -> list[Finding]:
    """The kubelet's clusterDNS must be the kube-dns Service IP."""
    if not kubelet.cluster_dns or not service_ip or service_ip in kubelet.cluster_dns:
        return []
    return [
        Finding(
            Severity.FAIL,
            f"the kubelet gives pods nameserver {', '.join(kubelet.cluster_dns)} but the "
            f"kube-dns Service is {service_ip}: pods ask a DNS server that does not exist",
            resource=kubelet.cluster_dns_source,
            evidence={
                "cluster_dns": list(kubelet.cluster_dns),
                "source": kubelet.cluster_dns_source,
                "service_ip": service_ip,
            },
            hint="Set the kubelet's clusterDNS (--cluster-dns) to the Service ClusterIP on every "
            "node and restart the kubelet, or give the Service the address the kubelets use.",
        )
    ]


# -- the live part of cluster.dns.kube-dns ------------------------------------------------------


@dataclass
class LiveDns:
    """What the live part adds to ``cluster.dns.kube-dns``."""

    ran: bool
    #: One line for the check's summary ("live DNS queries not run (bundle)", …).
    note: str
    findings: list[Finding] = field(default_factory=list)
    #: Check-level evidence: the matrix, where the domain came from, what was compared.
    evidence: dict[str, Any] = field(default_factory=dict)
    #: The DNS pods answer and the Service does not: offer the kube-proxy fix.
    service_routing_broken: bool = False


def _cluster_ip(service: Mapping[str, Any] | None) -> str | None:
    ip = ((service or {}).get("spec") or {}).get("clusterIP")
    return str(ip) if isinstance(ip, str) and ip and ip != "None" else None


def dns_targets(
    service: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]]
) -> list[Target]:
    """The Service ClusterIP first, then every DNS pod (those without an IP say why)."""
    targets = []
    svc_ip = _cluster_ip(service)
    if svc_ip:
        targets.append(Target("Service kube-dns", svc_ip, "service"))
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        ip = status.get("podIP") or None
        why = None if ip else f"no pod IP ({status.get('phase') or 'Unknown'})"
        targets.append(
            Target(
                f"pod {meta.get('name')}",
                str(ip) if ip else None,
                "pod",
                (pod.get("spec") or {}).get("nodeName"),
                why,
            )
        )
    return targets


def live_dns(
    ctx: CheckContext,
    cluster: KubeFacts,
    service: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    pods_root: str | None = None,
    pods_not_ready: Sequence[str] = (),
) -> LiveDns:
    """Query the cluster DNS from this node and compare resolv.conf files.

    ``service`` is the kube-dns Service (None when missing), ``pods`` the DNS pods, as the
    API side of the check read them; ``pods_root``/``pods_not_ready`` its diagnosis of the
    DNS pods (for ``caused_by`` when no pod answers). Never raises for a network failure:
    that is what it measures.
    """
    if cluster.is_bundle:
        return LiveDns(False, "live DNS queries not run (bundle)")
    if not ctx.options.live:
        return LiveDns(False, "live DNS queries not run (--no-live)")
    kubelet = kubelet_dns(ctx.node, ctx.options.cluster_domain)
    domain = kubelet.domain
    evidence: dict[str, Any] = {"cluster_domain": f"{domain} ({kubelet.domain_source})"}
    if kubelet.notes:
        evidence["kubelet_config_notes"] = list(kubelet.notes)
    svc_ip = _cluster_ip(service)
    findings: list[Finding] = []
    findings.extend(cluster_dns_findings(kubelet, svc_ip))

    # Pod resolv.conf, through a probe pod (shared with cluster.dns.pod-to-pod).
    pod_note = _pod_resolv(ctx, domain, kubelet, svc_ip, findings, evidence)

    try:
        nodes = cluster.list_objects(NODES)
    except FactMissing:
        nodes = []
    names = [str((n.get("metadata") or {}).get("name")) for n in nodes]
    ips = [
        str(a.get("address"))
        for n in nodes
        for a in ((n.get("status") or {}).get("addresses") or [])
        if isinstance(a, dict) and a.get("type") == "InternalIP" and a.get("address")
    ]
    where = on_node(ctx.node, names, ips)
    if where is None:
        note = (
            "live DNS queries not run: this host is not a cluster node (no kubelet "
            "configuration; its name and addresses are no Node's)"
        )
        evidence["live_dns"] = (
            f"{note}: Service and pod IPs are reachable only from nodes and pods; run kdoctor "
            "on a node"
        )
        return LiveDns(False, note + pod_note, findings, evidence)
    evidence["queried_from"] = f"this host ({where})"

    # The node's resolv.conf: the upstream of the DNS pods (dnsPolicy Default).
    try:
        upstream = ctx.node.read_text(kubelet.resolv_conf)
    except FactError as exc:
        evidence["node_resolv_conf"] = str(exc)
    else:
        findings.extend(
            node_resolv_findings(upstream, kubelet.resolv_conf, svc_ip, kubelet.resolv_conf_source)
        )

    qname = f"kubernetes.default.svc.{domain}."
    targets = dns_targets(service, pods)
    if not any(t.ip for t in targets):
        note = "live DNS queries: nothing to query (no Service ClusterIP, no DNS pod IP)"
        return LiveDns(False, note + pod_note, findings, evidence)
    results = run_queries(targets, qname)
    expected = None
    try:
        expected = _cluster_ip(cluster.get(SERVICES, "default", "kubernetes"))
    except FactMissing:
        expected = None
    evidence["matrix"] = matrix(
        f"{qname.rstrip('.')} A, asked from this node at the Service and each DNS pod "
        f"({QUERY_TIMEOUT:g} s per query)",
        results,
    )
    assessment = assess(
        results,
        qname.rstrip("."),
        domain,
        {"queried_from": evidence["queried_from"]},
        expected_ip=expected,
        pods_root=pods_root,
        pods_not_ready=pods_not_ready,
    )
    findings = assessment.findings + findings
    return LiveDns(
        True,
        f"live: {assessment.summary}{pod_note}",
        findings,
        evidence,
        assessment.service_routing_broken,
    )


def _pod_resolv(
    ctx: CheckContext,
    domain: str,
    kubelet: KubeletDns,
    svc_ip: str | None,
    findings: list[Finding],
    evidence: dict[str, Any],
) -> str:
    """Compare a probe pod's resolv.conf; return a note for the summary when not done."""
    if not isinstance(ctx.probes, ProbeCluster) or not ctx.options.probes:
        why = "--no-probes" if not ctx.options.probes else "no probe pods in this run"
        evidence["pod_resolv_conf"] = f"not compared ({why})"
        return ""
    try:
        got = ctx.probes.resolv_conf()
    except ApiError as exc:
        evidence["pod_resolv_conf"] = f"not compared: {exc}"
        return ""
    if got is None:
        evidence["pod_resolv_conf"] = "not compared: no probe pod runs (see cluster.dns.pod-to-pod)"
        return ""
    pod, result = got
    if not result.ok:
        evidence["pod_resolv_conf"] = (
            f"not compared: `cat /etc/resolv.conf` in {pod.name} failed: "
            f"{result.output[:200] or 'exit ' + str(result.exit_code)}"
        )
        return ""
    dns_ips = list(kubelet.cluster_dns) or ([svc_ip] if svc_ip else [])
    found = pod_resolv_findings(result.stdout, pod.name, PROBE_NAMESPACE, domain, dns_ips)
    findings.extend(found)
    evidence["pod_resolv_conf"] = f"pod/{PROBE_NAMESPACE}/{pod.name}: " + " | ".join(
        line.strip() for line in result.stdout.strip().splitlines()[:6]
    )
    return "" if found else "; pod resolv.conf as expected"
