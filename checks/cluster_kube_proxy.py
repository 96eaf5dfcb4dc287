"""cluster.kube-proxy: kube-proxy runs on every node, in a proxy mode the server supports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from checks import cluster_dns_kube_dns as dns
from doctor.analysis import podcause
from doctor.core.context import CheckContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.facts.kube import DAEMONSETS, NODES, PODS, KubeFacts
from fixes import kube_proxy as kp

CILIUM = "k8s-app=cilium"


def _kube(ctx: CheckContext) -> KubeFacts:
    if not isinstance(ctx.cluster, KubeFacts):
        raise FactMissing(ctx.cluster.unavailable or "no cluster API facts")
    return ctx.cluster


def _tolerated(taint: Mapping[str, Any], tolerations: Sequence[Mapping[str, Any]]) -> bool:
    if str(taint.get("key", "")).startswith("node.kubernetes.io/"):
        return True  # the DaemonSet controller tolerates these on every pod
    effect = taint.get("effect")
    if effect not in ("NoSchedule", "NoExecute"):
        return True
    for tol in tolerations:
        if tol.get("effect") and tol.get("effect") != effect:
            continue
        operator = tol.get("operator") or "Equal"
        if not tol.get("key") and operator == "Exists":
            return True
        if tol.get("key") != taint.get("key"):
            continue
        if operator == "Exists" or str(tol.get("value") or "") == str(taint.get("value") or ""):
            return True
    return False


def should_run_on(ds: Mapping[str, Any], node: Mapping[str, Any]) -> bool:
    """Whether the DaemonSet places a pod on NODE (node selector and taints)."""
    pod_spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    labels = (node.get("metadata") or {}).get("labels") or {}
    selector = pod_spec.get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    tolerations = pod_spec.get("tolerations") or []
    return all(_tolerated(t, tolerations) for t in (node.get("spec") or {}).get("taints") or [])


class KubeProxy(Check):
    """kube-proxy runs and is ready on every node, in a proxy mode the server supports.

    Finds the DaemonSet by name (`kube-system/kube-proxy`) or by either label kubeadm has
    used (`component=kube-proxy` up to 1.5, `k8s-app=kube-proxy` since). Readiness: the
    DaemonSet's counters must agree (desired = ready = available) and every node it should
    run on (node selector, taints) must have a Running, Ready kube-proxy pod; the nodes
    without one are named with the pod's state and cause. Proxy mode: read where kube-proxy
    takes it from — the `--proxy-mode` flag in the container's command/args (the last one
    wins), or, when it runs with `--config=PATH`, the `mode:` of the KubeProxyConfiguration
    in the ConfigMap mounted there (`kube-proxy`, key `config.conf`), in which case a
    `--proxy-mode` flag is ignored (warn: the lab-22 lab's workaround applied to a kubeadm ≥ 1.8
    cluster changes nothing). An empty mode is the default, iptables. `userspace` on a server
    ≥ v1.26 is a failure (removed there: kube-proxy refuses to start, and running pods fail
    at their next restart); `userspace` below v1.26 is a warning (the legacy proxier,
    deprecated in v1.23: every Service connection is copied through the kube-proxy process);
    unknown modes, `nftables` before v1.31 and `kernelspace` fail. Last, the Service path:
    when a DNS pod runs but its log shows timeouts on a Service ClusterIP (kube-dns or
    CoreDNS cannot reach the API through the `kubernetes` Service: `dial tcp
    10.96.0.1:443: i/o timeout`, the 1.6-era symptom), and that line is newer than the
    kube-proxy pod on its node, Service routing is broken: fail. Evidence: the mode, where it
    is set (flag and its position, or the ConfigMap key and line), the DaemonSet's
    resourceVersion, the server version. A healthy flag-based iptables DaemonSet is ok.

    ## Why it matters
    kube-proxy turns every Service ClusterIP into rules on each node; where it is not
    running, or runs a mode the node cannot use, Service traffic (DNS at 10.96.0.10, the API
    at 10.96.0.1) goes nowhere. A mode set where kube-proxy does not read it is a silent
    no-op; a mode the next version removed breaks the cluster at its next restart.

    ## How to fix
    - Not ready on a node: `kubectl -n kube-system describe pod <pod>` and its logs; the
      cause is in the finding.
    - Mode: set it where kube-proxy reads it: in ConfigMap `kube-proxy` `config.conf`
      (`mode: iptables`) when it runs with `--config`, else the `--proxy-mode` flag; then
      restart the pods (`kubectl -n kube-system rollout restart ds/kube-proxy`, or delete
      them). Move off `userspace` before upgrading to v1.26.
    - Service routing broken: the lab-22 lab's remedy was `--proxy-mode=userspace` (v1.5/1.6 with
      Weave Net); on current versions restart kube-proxy and read its log ("Using iptables
      Proxier"), check `--cluster-cidr` and the node's iptables.

    ## Fix safety
    unsafe: the kube-proxy proxy-mode patch changes how every Service on every node is
    routed. It is offered when the mode is a failure (`userspace` on ≥ v1.26, an unknown or
    unsupported mode → `iptables`), and when Service routing is broken (the lab-22 kubeadm lab's
    situation) — then the mode is the one picked with `kdoctor fix --proxy-mode MODE`, by
    default the lab-22 lab's `userspace` where the server still has it (< v1.26) and `iptables`
    elsewhere; when kube-proxy already runs that mode, the fix only restarts its pods. For a
    warning (userspace below v1.26, a flag `--config` makes kube-proxy ignore) it is offered
    only when a mode is picked explicitly with `--proxy-mode`: the check cannot tell a
    deliberate workaround from a mistake, and `kdoctor fix --yes` must not flip a cluster
    back and forth. `userspace` is refused on ≥ v1.26 (and on a server of unknown version)
    and `iptables` applied instead (`nftables` is named as the other choice from v1.33).
    The patch goes where the mode is read — the DaemonSet's `--proxy-mode` replaced in
    place or appended once (never a second one), or only the `mode:` line of the ConfigMap's
    `config.conf` (the rest of the YAML byte-identical, the DaemonSet untouched) — with the
    object's resourceVersion as precondition (changed meanwhile → 409 → nothing is
    changed, unless the object already holds exactly this change, e.g. applied through
    `cluster.dns.kube-dns` in the same run); the previous object is kept in the backup.
    Then the kube-proxy pods are deleted (their DaemonSet recreates them) and awaited (up to
    `--timeout`, 120 s at most); the check is re-run, and if it still fails the previous
    object is put back and the pods restarted again.
    """

    id = "cluster.kube-proxy"
    title = "kube-proxy ready on every node, in a proxy mode the server supports"
    scope = Scope.CLUSTER
    reads = ("nodes",)
    fix_safety = FixSafety.UNSAFE

    def run(self, ctx: CheckContext) -> Verdict:
        cluster = _kube(ctx)
        version = cluster.server_version()
        ds = kp.find_daemonset(cluster)
        if ds is None:
            return self._no_daemonset(cluster)
        setup = kp.read_setup(cluster, ds)
        base = setup.evidence(version)
        if setup.shell_form:
            base["note"] = "kube-proxy is started through a shell; flags read from its script"
        scan, unassessed = self._scan(cluster)
        current, stale = dns.routing_hits(cluster, scan)
        if stale:
            base["stale_service_timeouts"] = [f"{h.pod}: {h.line[:200]}" for h in stale]
        if unassessed:
            base["routing"] = unassessed
        findings: list[Finding] = []
        resource = f"daemonset/{setup.namespace}/{setup.name}"

        findings.extend(self._readiness(cluster, setup, base, resource))

        fix_reasons: list[str] = []  # failures the proxy-mode fix addresses
        explicit_only: list[str] = []  # warnings it addresses when a mode is picked
        problem = kp.mode_problem(setup.mode, version)
        if setup.config is not None and setup.config.object is None:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"kube-proxy runs with --config={setup.config.path} but ConfigMap "
                    f"{setup.config.configmap} does not exist: its pods cannot start"
                    if setup.config.configmap
                    else f"kube-proxy runs with --config={setup.config.path}, but no ConfigMap "
                    "volume of its pods provides that file: its pods cannot start",
                    resource=f"configmap/{kp.NAMESPACE}/{setup.config.configmap}"
                    if setup.config.configmap
                    else None,
                    evidence=dict(base),
                    hint="Re-create it: `kubeadm init phase addon kube-proxy`.",
                )
            )
        elif setup.config is not None and setup.config.text is None:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"ConfigMap {setup.config.configmap} has no key {setup.config.key}, which "
                    f"kube-proxy reads with --config={setup.config.path}",
                    resource=f"configmap/{kp.NAMESPACE}/{setup.config.configmap}"
                    if setup.config.configmap
                    else None,
                    evidence=dict(base),
                    hint="Re-create it: `kubeadm init phase addon kube-proxy`.",
                )
            )
        elif problem is not None:
            severity, short, why = problem
            findings.append(
                Finding(
                    Severity.FAIL if severity == "fail" else Severity.WARN,
                    f"kube-proxy mode {setup.mode} ({setup.source}): {why}",
                    resource=resource if setup.config is None else self._cm(setup),
                    evidence=dict(base),
                    hint="Set `mode: iptables` (or leave it empty) where kube-proxy reads it "
                    "and restart its pods: `kdoctor fix cluster.kube-proxy --proxy-mode "
                    "iptables --unsafe`.",
                )
            )
            (fix_reasons if severity == "fail" else explicit_only).append(short)
        if setup.flag_ignored:
            findings.append(
                Finding(
                    Severity.WARN,
                    f"--proxy-mode={setup.flag_mode} is ignored: kube-proxy runs with "
                    f"--config={setup.config.path if setup.config else ''} and takes the mode "
                    f"from there ({setup.mode}, {setup.source})",
                    resource=resource,
                    evidence=dict(base),
                    hint="Remove the flag from the DaemonSet and set `mode:` in ConfigMap "
                    "kube-proxy key config.conf instead (`kdoctor fix cluster.kube-proxy "
                    "--proxy-mode MODE --unsafe` patches the ConfigMap).",
                )
            )
            explicit_only.append("the --proxy-mode flag is ignored")
        for hit in current:
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"Service routing is broken on {hit.node}: DNS pod {hit.pod} times out on "
                    f"the Service IP {hit.target} (mode {setup.mode})",
                    resource=resource,
                    evidence={**base, **hit.evidence()},
                    hint="kube-proxy's rules on that node do not translate the ClusterIP. The "
                    "lab-22 kubeadm lab's workaround on v1.5/1.6 was --proxy-mode=userspace; "
                    "on current "
                    "versions restart kube-proxy, read its log (`Using iptables Proxier`), "
                    "check --cluster-cidr/clusterCIDR and the node's iptables.",
                )
            )
        if current:
            fix_reasons.append("Service routing broken")

        fix, not_offered = self._fix(
            ctx, cluster, setup, version, fix_reasons, explicit_only, bool(current)
        )
        if not_offered:
            findings = [
                Finding(
                    f.severity,
                    f.message,
                    f.resource,
                    {**f.evidence, "proxy_mode_fix": f"not offered: {not_offered}"},
                    f.hint,
                    f.caused_by,
                )
                for f in findings
            ]
        ok = (
            f"kube-proxy ready on every node ({self._ready_text(setup)}); mode {setup.mode} "
            f"({setup.source}); server {kp.version_text(version)}"
        )
        if unassessed:
            ok += f"; {unassessed}"
        summary = "; ".join(f.message for f in findings[:2])
        if len(findings) > 2:
            summary += f" (+{len(findings) - 2} more)"
        return Verdict.from_findings(findings, summary=summary, ok_summary=ok, fix=fix)

    # -- pieces -------------------------------------------------------------------------

    @staticmethod
    def _cm(setup: kp.KubeProxySetup) -> str:
        name = setup.config.configmap if setup.config else None
        return f"configmap/{kp.NAMESPACE}/{name}"

    @staticmethod
    def _ready_text(setup: kp.KubeProxySetup) -> str:
        status = setup.daemonset.get("status") or {}
        return f"{status.get('numberReady', 0)}/{status.get('desiredNumberScheduled', 0)} ready"

    @staticmethod
    def _scan(cluster: KubeFacts) -> tuple[dns.LogScan, str | None]:
        """The DNS pods' logs (the Service-routing signal), or why they could not be read:
        kube-proxy's own verdict does not depend on them."""
        try:
            return dns.scan_logs(cluster, dns.dns_pods(cluster)), None
        except (FactMissing, FactError) as exc:
            return dns.LogScan(), f"Service routing not assessed (DNS pod logs: {exc})"

    def _no_daemonset(self, cluster: KubeFacts) -> Verdict:
        looked = [
            f"daemonset/{kp.NAMESPACE}/{kp.NAME}",
            *(f"daemonsets -l {sel}" for sel in kp.LABELS),
        ]
        try:
            cilium = cluster.list_objects(DAEMONSETS, namespace=kp.NAMESPACE, label_selector=CILIUM)
        except (FactMissing, FactError):
            cilium = []
        if cilium:
            return Verdict.skip(
                "no kube-proxy DaemonSet; Cilium runs in kube-system (kube-proxy replacement?)"
            )
        return Verdict.from_findings(
            [
                Finding(
                    Severity.FAIL,
                    "no kube-proxy DaemonSet in kube-system: Service ClusterIPs are not routed",
                    resource=f"daemonset/{kp.NAMESPACE}",
                    evidence={"looked_for": looked},
                    hint="kubeadm deploys it as an addon: `kubeadm init phase addon kube-proxy`.",
                )
            ],
            summary="no kube-proxy DaemonSet in kube-system",
            ok_summary="",
        )

    def _readiness(
        self,
        cluster: KubeFacts,
        setup: kp.KubeProxySetup,
        base: dict[str, Any],
        resource: str,
    ) -> list[Finding]:
        ds = setup.daemonset
        status = ds.get("status") or {}
        desired = int(status.get("desiredNumberScheduled") or 0)
        ready = int(status.get("numberReady") or 0)
        available = status.get("numberAvailable")
        available_n = int(available) if isinstance(available, int) else ready
        counters = {"desired": desired, "ready": ready, "available": available_n}
        findings: list[Finding] = []
        try:
            pods: list[dict[str, Any]] | None = cluster.list_objects(
                PODS, namespace=setup.namespace, label_selector=setup.selector
            )
        except FactMissing as exc:
            pods = None
            base["pods"] = str(exc)
        try:
            nodes: list[dict[str, Any]] | None = cluster.list_objects(NODES)
        except FactMissing as exc:
            nodes = None
            base["nodes"] = str(exc)

        missing: dict[str, str] = {}
        causes: dict[str, podcause.PodCause] = {}
        if pods is not None:
            by_node: dict[str, list[dict[str, Any]]] = {}
            for pod in pods:
                by_node.setdefault(str((pod.get("spec") or {}).get("nodeName") or ""), []).append(
                    pod
                )
            if nodes is not None:
                wanted = [str(n["metadata"]["name"]) for n in nodes if should_run_on(ds, n)]
            else:
                wanted = sorted(n for n in by_node if n)
            events: list[dict[str, Any]] | None = None
            for node in wanted:
                here = by_node.get(node, [])
                if any(podcause.pod_is_ready(p) for p in here):
                    continue
                if not here:
                    missing[node] = "no kube-proxy pod"
                    continue
                if events is None:
                    events = podcause.pod_events(cluster, setup.namespace)[0]
                pod = here[0]
                grouped = podcause.events_by_pod(events)
                cause = podcause.diagnose(pod, podcause.events_for(pod, grouped))
                causes[node] = cause
                missing[node] = f"{pod['metadata']['name']}: {podcause.pod_state(pod)}"
        if missing:
            details = {node: causes[node].message if node in causes else why
                       for node, why in missing.items()}  # fmt: skip
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"kube-proxy is not ready on {len(missing)} node(s): "
                    f"{', '.join(sorted(missing))}",
                    resource=resource,
                    evidence={**base, **counters, "not_ready": missing, "causes": details},
                    hint="Service ClusterIPs do not work from pods on those nodes. "
                    f"`kubectl -n {setup.namespace} describe pod` / `logs` the pods named.",
                    caused_by=dns.CNI_CHECK
                    if causes and all(c.category == podcause.CNI for c in causes.values())
                    else None,
                )
            )
        elif desired == 0 and (nodes is None or nodes):
            findings.append(
                Finding(
                    Severity.FAIL,
                    f"DaemonSet {setup.name} schedules no pod (desiredNumberScheduled 0)",
                    resource=resource,
                    evidence={**base, **counters},
                    hint="Check its nodeSelector and tolerations against the nodes' labels "
                    "and taints.",
                )
            )
        elif not desired == ready == available_n:
            severity = Severity.FAIL if pods is None else Severity.WARN
            lag = "" if pods is None else " (every node's pod is ready: the counters lag)"
            findings.append(
                Finding(
                    severity,
                    f"DaemonSet {setup.name}: {ready} ready, {available_n} available of "
                    f"{desired} desired{lag}",
                    resource=resource,
                    evidence={**base, **counters},
                    hint=f"kubectl -n {setup.namespace} get pods -l {setup.selector} -o wide",
                )
            )
        return findings

    def _fix(
        self,
        ctx: CheckContext,
        cluster: KubeFacts,
        setup: kp.KubeProxySetup,
        version: kp.Version | None,
        fix_reasons: list[str],
        explicit_only: list[str],
        routing: bool,
    ) -> tuple[Fix | None, str | None]:
        """The proxy-mode fix, or (None, why it cannot be offered when it should be)."""
        requested = ctx.options.proxy_mode
        if not fix_reasons and not (explicit_only and requested):
            return None, None
        if routing and version is not None and version < kp.USERSPACE_REMOVED:
            default = "userspace" if setup.mode != "userspace" else "iptables"
        else:
            default = "iptables"
        choice = kp.choose_mode(requested, default, version)
        if not fix_reasons and choice.mode == setup.mode:
            return None, None  # a warning, and the mode asked for is already in effect
        why = "; ".join(fix_reasons or explicit_only)
        return kp.build_fix(cluster, setup, choice, why)
