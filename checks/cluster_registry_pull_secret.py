"""cluster.registry.pull-secret: pods that cannot pull; pull secrets naming the wrong host."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from doctor.core.context import CheckContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Verdict
from doctor.core.registry import Check
from doctor.facts.kube import EVENTS, PODS, SECRETS, KubeFacts
from doctor.parse.registry_auth import (
    DOCKERCFG_KEY,
    DOCKERCFG_TYPE,
    DOCKERCONFIGJSON_KEY,
    DOCKERCONFIGJSON_TYPE,
    AuthEntry,
    ImageRef,
    InvalidReference,
    Mismatch,
    PullSecret,
    SecretProblem,
    decode_pull_secret,
    key_matches,
    mismatch_kind,
    parse_reference,
)

PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff")
TERMINAL_PHASES = ("Succeeded", "Failed")
#: What registries and runtimes answer when credentials are missing or wrong.
AUTH_REFUSED = re.compile(
    r"unauthori[sz]ed|authentication required|no basic auth credentials|\b401\b|"
    r"access (is )?denied|pull access denied|requested access to the resource is denied|"
    r"may require 'docker login'|failed to authorize|incorrect username or password",
    re.IGNORECASE,
)
#: Pull messages that say nothing about the cause.
UNINFORMATIVE = ("Back-off pulling image", "Error: ", "Pulling image")
MAX_LISTED = 20
#: Above this many referenced secrets, list them once instead of one GET each.
BULK_SECRETS = 100
NOT_TOKENS = "type!=kubernetes.io/service-account-token"
#: Narrowed server-side: finished pods pull nothing (a completed Job's pods can be many).
NOT_DONE = "status.phase!=Succeeded,status.phase!=Failed"
#: Up to this many pods in the cluster every unfinished pod is read, running ones included (a
#: secret that would fail the next pull elsewhere). Beyond, only pods that can be failing to
#: pull are read: the Pending ones, server-side, and kube-system's (read anyway by other checks).
FULL_SCAN_PODS = 5000
PENDING = "status.phase=Pending"
SYSTEM_NAMESPACE = "kube-system"
POD_EVENTS = (
    "involvedObject.kind=Pod"  # the same list (and cache entry) as doctor.analysis.podcause
)
#: Nearest miss first: the one to name in the message and to repair.
MISMATCH_ORDER = (Mismatch.DOCKER_HUB_DEFAULT, Mismatch.PORT, Mismatch.PATH, Mismatch.OTHER_HOST)


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    ref: ImageRef | None
    invalid: str | None  # why the reference does not parse
    waiting_reason: str | None
    waiting_message: str | None

    @property
    def cannot_pull(self) -> bool:
        return self.waiting_reason in PULL_FAILURES


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    uid: str | None
    phase: str | None
    service_account: str
    secret_refs: tuple[str, ...]
    containers: tuple[Container, ...]
    owner: str | None  # "ReplicaSet/app-5d8f…" when a controller recreates it

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES

    @property
    def failing(self) -> list[Container]:
        return [c for c in self.containers if c.cannot_pull]


@dataclass
class Group:
    """Findings about the same thing, gathered over every pod it concerns."""

    severity: Severity
    resource: str
    pods: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)  # kubelet / event messages
    evidence: dict[str, Any] = field(default_factory=dict)
    text: str = ""
    hint: str = ""
    failing: list[str] = field(default_factory=list)  # the pods that cannot pull
    #: Secret problems: the message ends with what it causes, known once every pod is seen.
    with_consequence: bool = False

    def add(self, pod: Pod, container: Container | None, message: str | None) -> None:
        _append(self.pods, pod.key)
        if container is not None:
            _append(self.images, container.image)
            if container.cannot_pull:
                _append(self.failing, pod.key)
        if message:
            _append(self.messages, message)

    def worsen(self, severity: Severity) -> None:
        if severity is Severity.FAIL:
            self.severity = Severity.FAIL


@dataclass
class Repair:
    """One secret to (re)create, and what it must name."""

    namespace: str
    name: str
    secret: PullSecret | None  # None: the pod has no pull secret, a new one is made
    registries: list[str] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)


def _append(items: list[str], value: str) -> None:
    if value not in items:
        items.append(value)


def _listed(items: list[str]) -> list[str]:
    if len(items) <= MAX_LISTED:
        return list(items)
    return [*items[:MAX_LISTED], f"… and {len(items) - MAX_LISTED} more"]


def _pods_phrase(pods: list[str]) -> str:
    if len(pods) == 1:
        return f"pod {pods[0]}"
    return f"{len(pods)} pods ({pods[0]}, …)"


def _parse_pod(obj: dict[str, Any]) -> Pod:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    waiting: dict[str, tuple[str | None, str | None]] = {}
    for cs in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        state = (cs or {}).get("state") or {}
        wait = state.get("waiting") if isinstance(state, dict) else None
        if isinstance(wait, dict):
            waiting[str(cs.get("name"))] = (wait.get("reason"), wait.get("message"))
    containers = []
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        image = str((c or {}).get("image") or "")
        ref, invalid = None, None
        try:
            ref = parse_reference(image)
        except InvalidReference as exc:
            invalid = str(exc)
        reason, message = waiting.get(str(c.get("name")), (None, None))
        containers.append(Container(str(c.get("name")), image, ref, invalid, reason, message))
    refs = tuple(
        str(r["name"])
        for r in spec.get("imagePullSecrets") or []
        if isinstance(r, dict) and r.get("name")
    )
    owner = None
    for ref_obj in meta.get("ownerReferences") or []:
        if isinstance(ref_obj, dict) and ref_obj.get("controller"):
            owner = f"{ref_obj.get('kind')}/{ref_obj.get('name')}"
    return Pod(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or "?"),
        uid=meta.get("uid"),
        phase=status.get("phase"),
        service_account=str(
            spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        ),
        secret_refs=refs,
        containers=tuple(containers),
        owner=owner,
    )


def _may_matter(obj: dict[str, Any]) -> bool:
    """The pod names a pull secret or has a container waiting in a pull failure (what
    :class:`Pod` ``failing`` and ``secret_refs`` are made of), read without parsing images."""
    if (obj.get("spec") or {}).get("imagePullSecrets"):
        return True
    status = obj.get("status") or {}
    for cs in [
        *(status.get("initContainerStatuses") or []),
        *(status.get("containerStatuses") or []),
    ]:
        wait = ((cs or {}).get("state") or {}).get("waiting") if isinstance(cs, dict) else None
        if isinstance(wait, dict) and wait.get("reason") in PULL_FAILURES:
            return True
    return False


def _event_time(event: dict[str, Any]) -> str:
    meta = event.get("metadata") or {}
    return str(
        event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
        or meta.get("creationTimestamp") or ""
    )  # fmt: skip


def _pull_events(
    cluster: KubeFacts, namespaces: Iterable[str]
) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Pull-failure events by (namespace, pod), newest last. Evidence only: never required."""
    by_pod: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for ns in sorted(set(namespaces)):
        try:
            events = cluster.list_objects(EVENTS, namespace=ns, field_selector=POD_EVENTS)
        except (FactMissing, FactError):
            continue  # the verdict rests on pods and secrets; events only add the detail
        for ev in events:
            obj = ev.get("involvedObject") or {}
            message = str(ev.get("message") or "")
            if obj.get("kind") != "Pod" or ev.get("type", "Warning") != "Warning":
                continue
            if "pull" not in message.lower():
                continue
            by_pod.setdefault((ns, str(obj.get("name"))), []).append(ev)
    for items in by_pod.values():
        items.sort(key=_event_time)
    return by_pod


def _failure_message(
    pod: Pod, container: Container, events: dict[tuple[str, str], list[dict[str, Any]]]
) -> str | None:
    """The most telling message: the kubelet's own, else the newest matching event."""
    own = container.waiting_message or ""
    candidates = []
    for ev in events.get((pod.namespace, pod.name), []):
        uid = (ev.get("involvedObject") or {}).get("uid")
        if not uid or uid == pod.uid:  # not an event of an older pod of the same name
            candidates.append(ev)
    for_container = [
        ev for ev in candidates
        if f"{{{container.name}}}" in str((ev.get("involvedObject") or {}).get("fieldPath") or "")
        or container.image in str(ev.get("message") or "")
    ]  # fmt: skip
    detailed = [
        str(ev.get("message")) for ev in for_container or candidates
        if not str(ev.get("message") or "").startswith(UNINFORMATIVE)
    ]  # fmt: skip
    if own and not own.startswith(UNINFORMATIVE):
        return own
    if detailed:
        return detailed[-1]
    return own or None


def _read_secrets(cluster: KubeFacts, pods: list[Pod]) -> dict[tuple[str, str], PullSecret]:
    """Decode every referenced secret: one GET each, or one list when there are many."""
    keys = list(dict.fromkeys((p.namespace, n) for p in pods for n in p.secret_refs))
    listed: dict[tuple[str, str], dict[str, Any]] = {}
    if len(keys) > BULK_SECRETS:
        # Service-account tokens are most of a cluster's secrets and never pull secrets.
        for obj in cluster.list_objects(SECRETS, field_selector=NOT_TOKENS):
            meta = obj.get("metadata") or {}
            listed[(str(meta.get("namespace")), str(meta.get("name")))] = obj
    decoded = {}
    for ns, name in keys:
        found = listed.get((ns, name)) or cluster.get(SECRETS, ns, name)
        decoded[(ns, name)] = decode_pull_secret(found, ns, name)
    return decoded


def _pods_to_read(cluster: KubeFacts) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The pods to judge, and (for a large cluster) what was read instead of every pod.

    Up to FULL_SCAN_PODS pods (or when the server does not say how many): every unfinished
    pod, one list narrowed server-side. Beyond, reading them all would cost more than every
    other check together (150,000 pods are ~500 MB of JSON): the Pending pods (a pod that never
    pulled its image is Pending) and kube-system's, which the run holds already.
    """
    total = cluster.count(PODS)
    if total is None or total <= FULL_SCAN_PODS:
        return cluster.list_objects(PODS, field_selector=NOT_DONE), None
    pending = cluster.list_objects(PODS, field_selector=PENDING)
    system = cluster.list_objects(PODS, SYSTEM_NAMESPACE)
    seen: set[tuple[str, str]] = set()
    pods: list[dict[str, Any]] = []
    for pod in [*pending, *system]:
        meta = pod.get("metadata") or {}
        key = (str(meta.get("namespace")), str(meta.get("name")))
        phase = (pod.get("status") or {}).get("phase")
        if key in seen or phase in TERMINAL_PHASES:
            continue
        seen.add(key)
        pods.append(pod)
    scope = {
        "pods_in_cluster": total,
        "read": (
            f"of {total} pods, the {len(pending)} Pending and the {len(system)} of "
            f"{SYSTEM_NAMESPACE} were read; running pods elsewhere were not audited"
        ),
    }
    return pods, scope


def _hosts_text(secret: PullSecret) -> str:
    return ", ".join(secret.hosts) if secret.hosts else "no registry"


class RegistryPullSecret(Check):
    """Pods that cannot pull their image, and pull secrets that do not name its registry.

    Lists the pods of every namespace once, without finished ones (there is no field
    selector for a container's waiting reason, so the rest of the filtering is local) and
    looks at containers waiting in `ErrImagePull` or `ImagePullBackOff`, with the kubelet's
    message (or the newest pull event's). In a cluster of more than 5,000 pods (counted first
    with one `limit=1` request) it reads only the pods that can be failing to pull: the
    `Pending` ones (`fieldSelector=status.phase=Pending`, from the watch cache) and those of
    kube-system; the verdict's evidence (`pods_read`) says so, since running pods elsewhere are
    then not audited for a secret that would fail their next pull. Every secret a pod names in
    `spec.imagePullSecrets` is read (one GET each; past 100 of them, one list of every secret
    but service-account tokens) and decoded as the kubelet does: `.dockerconfigjson` of a
    `kubernetes.io/dockerconfigjson` secret, the legacy `.dockercfg` of a
    `kubernetes.io/dockercfg` one. A service account's pull secrets are copied into the spec
    of a pod that names none when it is created, so the pod is enough. The `auths` keys are
    matched against the registry of each image with the kubelet keyring's rules: a reference
    without a registry is on Docker Hub (`busybox` is `docker.io/library/busybox`);
    `https://index.docker.io/v1/`, `index.docker.io`, `registry-1.docker.io` and `docker.io`
    are the same registry; a key's scheme and `/v1/`, `/v2/` are ignored; the port must be the
    same (`nexus.lab:5000` is not `nexus.lab`); a key with a path (`nexus.lab:5000/team`)
    serves only the repositories under it.

    Decides, for a pod that cannot pull (`fail`) — or, as `warn`, for a running pod whose next
    pull on another node would fail:
    - a referenced secret that does not exist, is not of a pull-secret type (an `Opaque`
      secret is ignored by the kubelet), cannot be decoded, names no registry, or is a
      `.dockercfg` holding `{"auths": …}` (kubectl 1.9, kubernetes#61358);
    - no usable secret of the pod names the image's registry: above all a secret keyed only
      by `https://index.docker.io/v1/`, which `kubectl create secret docker-registry` writes
      when `--docker-server` is left out (the lab-22 lab's mistake), or one keyed by the right host
      with another port or path;
    - a secret names the registry but the registry refuses it (`unauthorized`,
      `no basic auth credentials`, …): wrong user or password.
    A pod that cannot pull for another reason (unknown tag, registry unreachable, a public
    image) is `warn`: not a pull-secret problem. Secrets never appear in the report: only
    their names, types, data key names, registry hosts, user names and e-mails.

    ## Why it matters
    Without `--docker-server`, the secret's only registry is Docker Hub: the kubelet finds
    no credentials for the private registry, pulls anonymously and the registry answers
    401; the pod stays in `ImagePullBackOff` with no hint that the secret is the cause.
    The lab-22 lab stresses it: never forget the `--docker-server` flag. A missing or
    mistyped secret is only a warning in the kubelet's log.

    ## How to fix
    Recreate the secret naming the registry the images are on (the password is left for you
    to type): `kubectl -n NS create secret docker-registry NAME --docker-server=HOST:PORT
    --docker-username=USER --docker-password='<password>' --dry-run=client -o yaml | kubectl
    replace -f -`. `replace` swaps the secret's content in one step, so pods that reference
    it never see it missing. The type of a secret cannot change (the API refuses it as
    immutable), so a secret of another type (Opaque, or a legacy `kubernetes.io/dockercfg`
    when kubectl now writes `kubernetes.io/dockerconfigjson`) or an `immutable: true` one is
    deleted and created instead.
    On servers older than 1.18 kubectl spells the flag `--dry-run`. The kubelet retries the
    pull by itself (back-off up to 5 minutes); deleting a controller-managed pod retries now.

    ## Fix safety
    manual: the fix needs a password kdoctor never has, and replaces a secret other pods may
    use. kdoctor prints the exact commands; it never runs them.
    """

    id = "cluster.registry.pull-secret"
    title = "Image pull secrets name the registries of the images that use them"
    scope = Scope.CLUSTER
    fix_safety = FixSafety.MANUAL

    def run(self, ctx: CheckContext) -> Verdict:
        cluster = ctx.cluster
        if not isinstance(cluster, KubeFacts):
            raise FactMissing(cluster.unavailable or "no cluster facts")
        listed, scope = _pods_to_read(cluster)
        # kdoctor's own probe pods (cluster.dns.pod-to-pod) report their pulls themselves.
        considered = [
            p
            for p in listed
            if ((p.get("metadata") or {}).get("labels") or {}).get("app.kubernetes.io/managed-by")
            != "kdoctor"
        ]
        # Only pods that cannot pull or name a pull secret are judged: parse just those.
        pods = [_parse_pod(p) for p in considered if _may_matter(p)]
        failing = [p for p in pods if p.failing]
        wanted = [p for p in pods if p.secret_refs and (p.failing or not p.terminal)]

        secrets = _read_secrets(cluster, wanted)
        events = _pull_events(cluster, (p.namespace for p in failing)) if failing else {}
        judge = _Judge(secrets, events, cluster.server_version(), wanted)
        for pod in failing:
            judge.failing_pod(pod)
        for pod in wanted:
            if not pod.failing:
                judge.running_pod(pod)

        findings = judge.findings()
        fix = judge.fix()
        n_secrets = len(secrets)
        ok = (
            f"no pod is failing to pull; the {n_secrets} pull secret(s) referenced by "
            f"{len(wanted)} pod(s) name the registries of their images"
            if secrets
            else (
                f"no pod is failing to pull ({len(considered)} pods; none references a pull secret)"
            )
        )
        evidence: dict[str, Any] = {}
        if scope is not None:
            ok += f" ({scope['read']})"
            evidence["pods_read"] = scope
        fails = [f for f in findings if f.severity is Severity.FAIL]
        summary = (fails or findings)[0].message if findings else ok
        if len(findings) > 1:
            summary += f" (and {len(findings) - 1} more finding(s))"
        return Verdict.from_findings(
            findings, summary=summary, ok_summary=ok, fix=fix, evidence=evidence
        )


class _Judge:
    """Accumulates grouped findings and the secrets to repair."""

    def __init__(
        self,
        secrets: dict[tuple[str, str], PullSecret],
        events: dict[tuple[str, str], list[dict[str, Any]]],
        version: tuple[int, int] | None,
        pods: list[Pod],
    ) -> None:
        self.secrets = secrets
        #: Every pod naming each secret: a recreated secret must still serve all of them.
        self.users: dict[tuple[str, str], list[Pod]] = {}
        for pod in pods:
            for name in pod.secret_refs:
                self.users.setdefault((pod.namespace, name), []).append(pod)
        self.events = events
        self.version = version
        self.groups: dict[tuple[Any, ...], Group] = {}
        self.repairs: dict[tuple[str, str], Repair] = {}

    # -- helpers ------------------------------------------------------------------------
    def _group(self, key: tuple[Any, ...], severity: Severity, resource: str) -> Group:
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = Group(severity, resource)
        group.worsen(severity)
        return group

    def _repair(
        self, ns: str, name: str, secret: PullSecret | None, registry: str | None, pod: Pod
    ) -> None:
        repair = self.repairs.setdefault((ns, name), Repair(ns, name, secret))
        if registry:
            _append(repair.registries, registry)
        if pod not in repair.pods:
            repair.pods.append(pod)

    def _pod_secrets(self, pod: Pod) -> list[PullSecret]:
        return [
            self.secrets[(pod.namespace, n)]
            for n in pod.secret_refs
            if (pod.namespace, n) in self.secrets
        ]

    # -- secret problems ----------------------------------------------------------------
    def _secret_problem(
        self,
        secret: PullSecret,
        pod: Pod,
        severity: Severity,
        container: Container | None,
        message: str | None,
    ) -> None:
        resource = f"secret/{secret.namespace}/{secret.name}"
        group = self._group(("secret", secret.namespace, secret.name), severity, resource)
        group.add(pod, container, message)
        group.with_consequence = True
        if group.text:
            return
        ref = f"{secret.namespace}/{secret.name}"
        evidence: dict[str, Any] = {"secret": ref}
        if secret.problem == SecretProblem.MISSING:
            group.text = f"pull secret {ref} does not exist"
            group.hint = (
                "The kubelet only logs a warning and pulls without credentials. Create the "
                "secret (command in the fix), or correct the name in imagePullSecrets."
            )
        elif secret.problem == SecretProblem.WRONG_TYPE:
            has_json = DOCKERCONFIGJSON_KEY in secret.data_keys or DOCKERCFG_KEY in secret.data_keys
            group.text = (
                f"secret {ref} is of type {secret.type}, which the kubelet ignores as a pull "
                f"secret (it reads {DOCKERCONFIGJSON_TYPE} and {DOCKERCFG_TYPE} only)"
            )
            group.hint = (
                ("It holds docker credentials but was made with `kubectl create secret "
                 "generic`; " if has_json else "")
                + "recreate it with `kubectl create secret docker-registry` (command in the "
                "fix); a secret's type cannot be changed in place."
            )  # fmt: skip
        elif secret.problem == SecretProblem.KUBECTL_19:
            group.text = (
                f'pull secret {ref} is a .dockercfg holding {{"auths": …}}, written by kubectl '
                '1.9 (kubernetes#61358): the kubelet reads "auths" as a registry name and finds '
                "no credentials"
            )
            group.hint = "Recreate it with a newer kubectl (command in the fix)."
        else:
            group.text = f"pull secret {ref} cannot be used: {secret.detail}"
            group.hint = (
                "Recreate it with `kubectl create secret docker-registry` (command in the fix)."
            )
        if secret.type is not None:
            evidence["secret_type"] = secret.type
            evidence["secret_data_keys"] = list(secret.data_keys)
            if secret.entries:
                evidence["secret_hosts"] = secret.hosts
            if secret.resource_version:
                evidence["resourceVersion"] = secret.resource_version
        group.evidence = evidence

    # -- pods ---------------------------------------------------------------------------
    def failing_pod(self, pod: Pod) -> None:
        pod_secrets = self._pod_secrets(pod)
        usable = [s for s in pod_secrets if s.usable]
        broken = [s for s in pod_secrets if not s.usable]
        for container in pod.failing:
            message = _failure_message(pod, container, self.events)
            ref = container.ref
            covering = [s for s in usable if ref is not None and s.matching(ref)]
            # A broken secret is the cause when nothing else serves the image and the image
            # needs credentials (a public Docker Hub image does not).
            needs_auth = ref is not None and (not ref.is_docker_hub or _auth_refused(message))
            causes = needs_auth and not covering
            for secret in broken:
                severity = Severity.FAIL if causes else Severity.WARN
                self._secret_problem(secret, pod, severity, container, message)
                if causes and not usable and ref is not None:
                    self._repair(secret.namespace, secret.name, secret, ref.registry, pod)
            if ref is None:
                continue  # InvalidImageName is not this check's business
            if covering:
                self._covered_but_failing(pod, container, ref, covering[0], message)
            elif usable:
                self._uncovered(pod, container, ref, usable, message, Severity.FAIL)
            elif not broken:
                self._no_secret(pod, container, ref, message)
            elif not causes:  # only broken secrets, but the image needs none
                self._not_secret_related(pod, container, ref, message)

    def running_pod(self, pod: Pod) -> None:
        pod_secrets = self._pod_secrets(pod)
        usable = [s for s in pod_secrets if s.usable]
        for secret in pod_secrets:
            if not secret.usable:
                self._secret_problem(secret, pod, Severity.WARN, None, None)
        if not usable:
            return
        for container in pod.containers:
            ref = container.ref
            if ref is None or ref.is_docker_hub or any(s.matching(ref) for s in usable):
                continue
            near = [s for s in usable if _nearest(s, ref) != Mismatch.OTHER_HOST]
            if near:  # a near miss is a mistake; a secret for another registry is not
                self._uncovered(pod, container, ref, near, None, Severity.WARN)

    def _covered_but_failing(
        self, pod: Pod, container: Container, ref: ImageRef, secret: PullSecret, message: str | None
    ) -> None:
        entry = secret.matching(ref)[0]
        ref_name = f"{secret.namespace}/{secret.name}"
        if not entry.has_credentials:
            key = ("nocreds", secret.namespace, secret.name, entry.key.raw)
            group = self._group(key, Severity.FAIL, f"secret/{ref_name}")
            group.add(pod, container, message)
            group.text = (
                f"{_pods_phrase(group.pods)} cannot pull from {ref.registry}: the entry "
                f"{entry.key.raw} of pull secret {ref_name} has no credentials"
            )
            group.hint = "Recreate the secret with a user name and password (command in the fix)."
            group.evidence = self._secret_evidence(secret, ref)
            self._repair(secret.namespace, secret.name, secret, ref.registry, pod)
            return
        if _auth_refused(message):
            key = ("refused", secret.namespace, secret.name, ref.registry)
            group = self._group(key, Severity.FAIL, f"secret/{ref_name}")
            group.add(pod, container, message)
            user = f" (user {entry.username})" if entry.username else ""
            group.text = (
                f"{_pods_phrase(group.pods)} cannot pull from {ref.registry}: the registry "
                f"refuses the credentials of pull secret {ref_name}{user}"
            )
            group.hint = (
                "The secret names the right registry, so the user name or password is wrong "
                "(or the user may not read this repository). Recreate the secret with the right "
                "password (command in the fix); `docker login " + ref.registry + "` on a node "
                "tests them."
            )
            group.evidence = self._secret_evidence(secret, ref)
            self._repair(secret.namespace, secret.name, secret, ref.registry, pod)
            return
        key = ("other", pod.namespace, ref.registry, secret.name)
        group = self._group(key, Severity.WARN, f"pod/{pod.key}")
        group.add(pod, container, message)
        group.text = (
            f"{_pods_phrase(group.pods)} cannot pull {group.images[0]}, although pull secret "
            f"{ref_name} names {ref.registry}: not a pull-secret problem as far as kdoctor can see"
        )
        group.hint = (
            "Read the kubelet's message: a tag or repository that does not exist "
            "(`manifest unknown`, `not found`), a registry the node cannot reach or does not "
            "trust (x509, `http: server gave HTTP response to HTTPS client` → the node's "
            "insecure-registries), or a rate limit."
        )
        group.evidence = self._secret_evidence(secret, ref)

    def _uncovered(
        self,
        pod: Pod,
        container: Container,
        ref: ImageRef,
        usable: list[PullSecret],
        message: str | None,
        severity: Severity,
    ) -> None:
        if severity is Severity.FAIL and ref.is_docker_hub and not _auth_refused(message):
            # A public Docker Hub image needs no credentials: the secrets are not the cause.
            self._not_secret_related(pod, container, ref, message)
            return
        ranked = sorted(usable, key=lambda s: MISMATCH_ORDER.index(_nearest(s, ref)))
        secret = ranked[0]
        kind = _nearest(secret, ref)
        ref_name = f"{secret.namespace}/{secret.name}"
        key = ("uncovered", pod.namespace, ref.registry, tuple(s.name for s in ranked), severity)
        group = self._group(key, severity, f"secret/{ref_name}")
        group.add(pod, container, message)
        hosts = _hosts_text(secret)
        if severity is Severity.FAIL:
            lead = f"{_pods_phrase(group.pods)} cannot pull {group.images[0]}"
        else:
            lead = (
                f"{_pods_phrase(group.pods)} runs {group.images[0]} but no pull secret of it "
                f"names {ref.registry} (a pull on another node would fail)"
            )
        if kind == Mismatch.DOCKER_HUB_DEFAULT:
            text = (
                f"{lead}: its pull secret {ref_name} names only Docker Hub ({hosts}), the "
                "default of `kubectl create secret docker-registry`: it was created without "
                f"--docker-server, so the kubelet has no credentials for {ref.registry}"
            )
            hint = (
                f"Recreate the secret with --docker-server={ref.registry} (command in the fix). "
                "The lab-22 kubeadm lab warns: never forget the --docker-server flag."
            )
        elif kind == Mismatch.PORT:
            text = (
                f"{lead}: pull secret {ref_name} names {hosts}, not {ref.registry}: the port "
                "is part of the registry name and must match"
            )
            hint = f"Recreate the secret with --docker-server={ref.registry} (command in the fix)."
        elif kind == Mismatch.PATH:
            text = (
                f"{lead}: pull secret {ref_name} names {hosts}, whose path does not contain "
                f"the repository {ref.name}"
            )
            hint = f"Recreate the secret with --docker-server={ref.registry} (command in the fix)."
        else:
            names = ", ".join(f"{s.namespace}/{s.name} ({_hosts_text(s)})" for s in ranked)
            text = f"{lead}: no pull secret of the pod names {ref.registry}: {names}"
            hint = (
                f"Add credentials for {ref.registry}: recreate the secret naming it (command in "
                "the fix) or add another secret to imagePullSecrets."
            )
        group.text, group.hint = text, hint
        group.evidence = self._secret_evidence(secret, ref)
        if len(ranked) > 1:
            group.evidence["other_secrets"] = {
                f"{s.namespace}/{s.name}": s.hosts for s in ranked[1:]
            }
        if severity is Severity.FAIL or kind != Mismatch.OTHER_HOST:
            self._repair(secret.namespace, secret.name, secret, ref.registry, pod)

    def _no_secret(
        self, pod: Pod, container: Container, ref: ImageRef, message: str | None
    ) -> None:
        if not _auth_refused(message):
            self._not_secret_related(pod, container, ref, message)
            return
        key = ("nosecret", pod.namespace, ref.registry)
        group = self._group(key, Severity.FAIL, f"pod/{pod.key}")
        group.add(pod, container, message)
        group.text = (
            f"{_pods_phrase(group.pods)} cannot pull {group.images[0]}: {ref.registry} asks "
            "for credentials and the pod has no imagePullSecrets"
        )
        group.hint = (
            f"Create a docker-registry secret for {ref.registry} and name it in the pod "
            "template's imagePullSecrets (or in its service account's, for new pods)."
        )
        group.evidence = {"registry": ref.registry, "service_account": pod.service_account}
        self._repair(pod.namespace, "<secret-name>", None, ref.registry, pod)

    def _not_secret_related(
        self, pod: Pod, container: Container, ref: ImageRef, message: str | None
    ) -> None:
        key = ("pull", pod.namespace, ref.registry)
        group = self._group(key, Severity.WARN, f"pod/{pod.key}")
        group.add(pod, container, message)
        group.text = (
            f"{_pods_phrase(group.pods)} cannot pull {group.images[0]}: not a pull-secret "
            "problem as far as kdoctor can see"
        )
        group.hint = (
            "Read the kubelet's message: an image or tag that does not exist, a registry the "
            "node cannot reach or does not trust, or a rate limit."
        )
        group.evidence = {"registry": ref.registry}

    def _secret_evidence(self, secret: PullSecret, ref: ImageRef) -> dict[str, Any]:
        evidence: dict[str, Any] = {
            "registry": ref.registry,
            "secret": f"{secret.namespace}/{secret.name}",
            "secret_type": secret.type,
            "secret_hosts": secret.hosts,
        }
        users = sorted({e.username for e in secret.entries if e.username})
        if users:
            evidence["secret_users"] = users
        if secret.resource_version:
            evidence["resourceVersion"] = secret.resource_version
        return evidence

    # -- results --------------------------------------------------------------------------
    def findings(self) -> list[Finding]:
        out = []
        for group in self.groups.values():
            evidence: dict[str, Any] = {"pods": _listed(group.pods)}
            if group.images:
                evidence["images"] = _listed(group.images)
            evidence.update(group.evidence)
            if group.messages:
                evidence["kubelet_message"] = group.messages[-1]
            text = group.text
            if group.with_consequence and group.failing:
                text += f": {_pods_phrase(group.failing)} cannot pull {group.images[0]}"
            elif group.with_consequence:
                text += f" (named in imagePullSecrets by {_pods_phrase(group.pods)})"
            out.append(
                Finding(
                    group.severity,
                    text,
                    resource=group.resource,
                    evidence=evidence,
                    hint=group.hint or None,
                )
            )
        out.sort(key=lambda f: (f.severity is not Severity.FAIL, f.resource or ""))
        return out

    def fix(self) -> Fix | None:
        steps: list[str] = []
        for repair in self.repairs.values():
            steps.extend(self._commands(repair))
        if not steps:
            return None
        names = ", ".join(f"{r.namespace}/{r.name}" for r in self.repairs.values())
        return Fix(
            id="cluster.registry.pull-secret.recreate",
            title=f"(Re)create the pull secret(s) {names} for the right registry (password: yours)",
            safety=FixSafety.MANUAL,
            manual_steps=steps,
        )

    def _commands(self, repair: Repair) -> list[str]:
        ns, name, secret = repair.namespace, repair.name, repair.secret
        registries = list(repair.registries)
        if secret is not None:
            # Keep the registries the secret already serves for the pods that use it.
            for entry in secret.entries:
                if entry.key.registry in registries or entry.key.is_docker_hub:
                    continue
                users = self.users.get((ns, name), repair.pods)
                images = [c.ref for p in users for c in p.containers if c.ref is not None]
                if any(key_matches(entry.key, ref) for ref in images):
                    _append(registries, entry.key.registry)
        if not registries:
            registries = ["<registry>"]
        version = self.version
        dry_run = "--dry-run" if version is not None and version < (1, 18) else "--dry-run=client"
        new_type = (
            DOCKERCFG_TYPE if version is not None and version < (1, 10) else DOCKERCONFIGJSON_TYPE
        )
        exists = secret is not None and secret.problem != SecretProblem.MISSING
        old_type = secret.type if secret is not None else None
        kubectl = f"kubectl -n {shlex.quote(ns)}"
        secret_name = _arg(name)
        steps: list[str] = []
        # kubectl 1.9's `create secret docker-registry` writes the unusable kubernetes#61358
        # shape; one --docker-server cannot name two registries: build from a config.json.
        from_file = len(registries) > 1 or version == (1, 9)
        if from_file:
            new_type = DOCKERCONFIGJSON_TYPE
        if not from_file:
            chosen = self._entry_for(secret, registries[0])
            user = chosen.username if chosen and chosen.username else "<user>"
            parts = [
                f"{kubectl} create secret docker-registry {secret_name}",
                _arg(registries[0], "--docker-server="),
                _arg(user, "--docker-username="),
                _arg("<password>", "--docker-password="),
            ]
            if chosen and chosen.email:
                parts.append(_arg(chosen.email, "--docker-email="))
            elif version is not None and version < (1, 7):
                parts.append(_arg("<email>", "--docker-email="))  # required by kubectl <= 1.6
            create = " ".join(parts)
        else:
            why = (
                "kubectl 1.9's `create secret docker-registry` writes a secret the kubelet "
                "cannot read (kubernetes#61358)"
                if len(registries) == 1
                else f"it must name {', '.join(registries)}"
            )
            steps.append(
                f"# {ns}/{name}: {why}; `docker login {registries[0]}`"
                + (" (and each other registry)" if len(registries) > 1 else "")
                + ", then store that config.json:"
            )
            create = (
                f"{kubectl} create secret generic {secret_name} --type={DOCKERCONFIGJSON_TYPE} "
                f'--from-file={DOCKERCONFIGJSON_KEY}="$HOME/.docker/config.json"'
            )
        immutable = secret is not None and secret.immutable
        if exists and old_type == new_type and not immutable:
            steps.append(f"{create} {dry_run} -o yaml | kubectl replace -f -")
        else:
            if exists and immutable:
                steps.append(
                    f"# {ns}/{name} is immutable: its data cannot be replaced, so delete it and "
                    "create it again"
                )
            elif exists:
                steps.append(
                    f"# {ns}/{name} is of type {old_type} and kubectl creates {new_type}: the "
                    "type of a secret cannot change, so delete it and create it again"
                )
            if exists:
                steps.append(f"{kubectl} delete secret {secret_name}")
            steps.append(create)
        if secret is None:
            sa = repair.pods[0].service_account if repair.pods else "default"
            owners = sorted({p.owner for p in repair.pods if p.owner})
            steps.append(
                "# then name it in the pod template's imagePullSecrets"
                + (f" ({', '.join(owners)})" if owners else "")
                + ", or for new pods in its service account's:"
            )
            patch = json.dumps({"imagePullSecrets": [{"name": name}]}, separators=(",", ":"))
            steps.append(f"{kubectl} patch serviceaccount {_arg(sa)} -p {shlex.quote(patch)}")
        managed = [p for p in repair.pods if p.owner and p.failing]
        if managed:
            steps.append(
                "# the kubelet retries the pull within 5 minutes; to retry now, delete the "
                "pods (their controller recreates them):"
            )
            for pod in managed[:MAX_LISTED]:
                steps.append(f"kubectl -n {shlex.quote(pod.namespace)} delete pod {_arg(pod.name)}")
        return steps

    @staticmethod
    def _entry_for(secret: PullSecret | None, registry: str) -> AuthEntry | None:
        """The entry whose user name to reuse: the one for the registry, else the nearest."""
        if secret is None or not secret.entries:
            return None
        for entry in secret.entries:
            if entry.key.registry == registry:
                return entry
        with_user = [e for e in secret.entries if e.username]
        return with_user[0] if with_user else secret.entries[0]


def _arg(value: str, flag: str = "") -> str:
    """One shell word; a ``<placeholder>`` is quoted so the shell never reads it as a redirect."""
    if value.startswith("<") and value.endswith(">"):
        return f"{flag}'{value}'"
    return shlex.quote(flag + value)


def _nearest(secret: PullSecret, ref: ImageRef) -> str:
    """How close the secret comes to serving the image; Docker Hub only if that is all."""
    kinds = [mismatch_kind(e.key, ref) for e in secret.entries] or [Mismatch.OTHER_HOST]
    if not secret.only_docker_hub:
        kinds = [k for k in kinds if k != Mismatch.DOCKER_HUB_DEFAULT] or [Mismatch.OTHER_HOST]
    return min(kinds, key=MISMATCH_ORDER.index)


def _auth_refused(message: str | None) -> bool:
    return bool(message and AUTH_REFUSED.search(message))
