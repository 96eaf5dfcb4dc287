"""The objects ``kdoctor fleet`` applies, and ``kdoctor manifest`` prints for review/GitOps.

One agent per node, as a DaemonSet, with as little power as the host commands need:

- Namespace ``kdoctor-fleet`` labelled ``pod-security.kubernetes.io/enforce=privileged``: host
  namespaces and a hostPath volume are what Pod Security's ``baseline`` forbids, so the agents
  can only run in a namespace that allows them (and only there).
- ServiceAccount ``kdoctor-agent`` with ``automountServiceAccountToken: false`` and no
  RoleBinding: an agent has no credentials at all, so it cannot list anything. ``fleet`` reads
  the API once and hands each agent its targets over exec.
- DaemonSet ``kdoctor-agent``: ``tolerations: [{operator: Exists}]`` (control-plane and every
  other tainted node included), ``hostNetwork`` (the reachability probes leave from the node's
  own address, as ``kubeadm join`` does), ``hostPID`` (``nsenter -t 1`` reaches the host's
  mount and network namespaces for ``iptables-save``, ``nft``, ``systemctl``), the host root
  read-only at ``/host``, a read-only image root, every capability dropped but the ones
  ``nsenter`` + netfilter listing need (listed in :data:`CAPABILITIES`).

``--cronjob`` gives the cluster-scope run (``kdoctor check --scope cluster``) as a CronJob
instead, once for the whole cluster, with a read-only ClusterRole: the node scope runs on each
node (cron/systemd timer), the cluster scope once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from doctor import __version__
from doctor.facts.kube import split_selector_terms

DEFAULT_NAMESPACE = "kdoctor-fleet"
DEFAULT_IMAGE = f"kdoctor:{__version__}"
NAME = "kdoctor-agent"
CRON_NAME = "kdoctor-cluster"
CONTAINER = "agent"
HOST_MOUNT = "/host"
MANAGED_BY = "app.kubernetes.io/managed-by"
APP = "app.kubernetes.io/name"
RUN_LABEL = "kdoctor.io/fleet-run"
LABELS = {APP: NAME, MANAGED_BY: "kdoctor"}
PSA_LABELS = {
    "pod-security.kubernetes.io/enforce": "privileged",
    "pod-security.kubernetes.io/enforce-version": "latest",
}
#: Why each capability is there (nothing else is kept):
CAPABILITIES = {
    "SYS_ADMIN": "setns(2) into the host's mount namespace (nsenter -m)",
    "SYS_CHROOT": "setns(2) into a mount namespace also needs it",
    "SYS_PTRACE": "open /proc/1/ns/* of the host's init",
    "NET_ADMIN": "read netfilter rules (iptables-save, nft list ruleset)",
    "NET_RAW": "iptables-legacy reads its tables through a raw socket",
}
#: Pod Security admission label values, in increasing strictness.
PSA_LEVELS = ("privileged", "baseline", "restricted")

_SELECTOR_TERM = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9./_-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9._-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


class SelectorError(ValueError):
    """A --selector that is not a Kubernetes label selector."""


@dataclass(frozen=True)
class ManifestSettings:
    image: str = DEFAULT_IMAGE
    namespace: str = DEFAULT_NAMESPACE
    #: Names of docker-registry secrets in the namespace for the image (``--image-pull-secret``).
    pull_secrets: tuple[str, ...] = ()
    #: Node label selector (``--selector``): the agents run only on matching nodes.
    selector: str | None = None
    #: Labels every object of one fleet run carries (so it deletes only what it made).
    run_id: str | None = None
    #: Schedule of the ``--cronjob`` variant.
    schedule: str = "*/15 * * * *"


def node_affinity(selector: str) -> dict[str, Any]:
    """A label selector (``role=worker,zone in (a,b),!gpu``) as required node affinity."""
    expressions: list[dict[str, Any]] = []
    for term in split_selector_terms(selector):
        match = _SELECTOR_TERM.match(term)
        if match is None:
            raise SelectorError(f"not a label selector term: {term.strip()!r}")
        key = match.group("key")
        if match.group("setop"):
            if match.group("neg"):
                raise SelectorError(f"not a label selector term: {term.strip()!r}")
            values = [v.strip() for v in match.group("values").split(",") if v.strip()]
            operator = "In" if match.group("setop") == "in" else "NotIn"
            expressions.append({"key": key, "operator": operator, "values": values})
        elif match.group("op"):
            if match.group("neg"):
                raise SelectorError(f"not a label selector term: {term.strip()!r}")
            operator = "NotIn" if match.group("op") == "!=" else "In"
            expressions.append({"key": key, "operator": operator, "values": [match["value"]]})
        else:
            operator = "DoesNotExist" if match.group("neg") else "Exists"
            expressions.append({"key": key, "operator": operator})
    if not expressions:
        raise SelectorError("an empty --selector selects every node: leave it out instead")
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def _labels(settings: ManifestSettings) -> dict[str, str]:
    labels = dict(LABELS)
    if settings.run_id:
        labels[RUN_LABEL] = settings.run_id
    return labels


def namespace(settings: ManifestSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": settings.namespace, "labels": {**_labels(settings), **PSA_LABELS}},
    }


def service_account(settings: ManifestSettings) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": NAME, "namespace": settings.namespace, "labels": _labels(settings)},
        "automountServiceAccountToken": False,
    }


def pod_spec(settings: ManifestSettings) -> dict[str, Any]:
    """The agent pod: host namespaces, /host read-only, minimal capabilities, no token."""
    spec: dict[str, Any] = {
        "serviceAccountName": NAME,
        "automountServiceAccountToken": False,
        "hostNetwork": True,
        "hostPID": True,
        "dnsPolicy": "ClusterFirstWithHostNet",
        "tolerations": [{"operator": "Exists"}],
        "terminationGracePeriodSeconds": 2,
        "containers": [
            {
                "name": CONTAINER,
                "image": settings.image,
                "imagePullPolicy": "IfNotPresent",
                # Idles until fleet execs `kdoctor agent --run` with the targets.
                "command": ["kdoctor", "agent"],
                "env": [
                    {
                        "name": "KDOCTOR_NODE_NAME",
                        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                    },
                    {"name": "KDOCTOR_HOST_ROOT", "value": HOST_MOUNT},
                ],
                "securityContext": {
                    "runAsUser": 0,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"], "add": list(CAPABILITIES)},
                },
                "resources": {
                    "requests": {"cpu": "10m", "memory": "48Mi"},
                    "limits": {"memory": "256Mi"},
                },
                "volumeMounts": [
                    {"name": "host", "mountPath": HOST_MOUNT, "readOnly": True},
                    {"name": "tmp", "mountPath": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {"name": "host", "hostPath": {"path": "/", "type": "Directory"}},
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }
    if settings.pull_secrets:
        spec["imagePullSecrets"] = [{"name": name} for name in settings.pull_secrets]
    if settings.selector:
        spec["affinity"] = node_affinity(settings.selector)
    return spec


def daemonset(settings: ManifestSettings) -> dict[str, Any]:
    labels = _labels(settings)
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": NAME, "namespace": settings.namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": dict(LABELS)},
            "updateStrategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "100%"},
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": pod_spec(settings),
            },
        },
    }


def fleet_objects(settings: ManifestSettings) -> list[dict[str, Any]]:
    """What ``kdoctor fleet`` creates, in the order it creates them."""
    return [namespace(settings), service_account(settings), daemonset(settings)]


#: Read-only access the cluster-scope checks need (the CronJob's ServiceAccount).
CLUSTER_READ_RULES = [
    {
        "apiGroups": [""],
        "resources": [
            "nodes", "pods", "pods/log", "services", "endpoints", "namespaces",
            "configmaps", "secrets", "events",
        ],
        "verbs": ["get", "list"],
    },
    {"apiGroups": ["apps"], "resources": ["daemonsets", "deployments"], "verbs": ["get", "list"]},
    {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list"]},
]  # fmt: skip


def cronjob_objects(settings: ManifestSettings) -> list[dict[str, Any]]:
    """The cluster scope once (``kdoctor check --scope cluster``), on a schedule.

    No host access and no privileges: a restricted pod with a read-only ClusterRole. It runs
    without probe pods (``--no-probes``: a check run that creates pods needs write rights this
    role does not grant). The report goes to the Job's log as JSON; the Job fails when the
    report does (exit 1-3), so ``kube_job_status_failed`` alerts on it.
    """
    labels = _labels(settings)
    ns = settings.namespace
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": CRON_NAME, "namespace": ns, "labels": labels},
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": CRON_NAME, "labels": labels},
        "rules": CLUSTER_READ_RULES,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": CRON_NAME, "labels": labels},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": CRON_NAME,
        },
        "subjects": [{"kind": "ServiceAccount", "name": CRON_NAME, "namespace": ns}],
    }
    container = {
        "name": "check",
        "image": settings.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["kdoctor", "check", "--scope", "cluster", "--no-probes", "--format", "json"],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "resources": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"memory": "512Mi"}},
    }
    pod: dict[str, Any] = {
        "serviceAccountName": CRON_NAME,
        "restartPolicy": "Never",
        "containers": [container],
    }
    if settings.pull_secrets:
        pod["imagePullSecrets"] = [{"name": name} for name in settings.pull_secrets]
    cron = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": CRON_NAME, "namespace": ns, "labels": labels},
        "spec": {
            "schedule": settings.schedule,
            "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 1,
            "failedJobsHistoryLimit": 3,
            "jobTemplate": {
                "spec": {
                    "backoffLimit": 0,
                    "activeDeadlineSeconds": 300,
                    "template": {"metadata": {"labels": labels}, "spec": pod},
                }
            },
        },
    }
    ns_obj = {
        "apiVersion": "v1",
        "kind": "Namespace",
        # No Pod Security label here: the fleet manifest may share this namespace and needs
        # it privileged; the CronJob's pod itself passes "restricted".
        "metadata": {"name": ns, "labels": labels},
    }
    return [ns_obj, account, role, binding, cron]


def to_yaml(objects: list[dict[str, Any]]) -> str:
    """Objects as one multi-document YAML stream (``kubectl apply -f -`` reads it)."""
    import yaml

    header = f"# kdoctor {__version__}: review, then `kubectl apply -f` this file\n"
    docs = [yaml.safe_dump(obj, sort_keys=False, default_flow_style=False) for obj in objects]
    return header + "---\n" + "---\n".join(docs)
