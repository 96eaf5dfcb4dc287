"""A simulated large cluster for the test API server: N nodes, P pods (the scalability envelope).

Built from the objects of the ``modern-coredns`` fixture (a kubeadm 1.29 cluster with Calico and
CoreDNS), multiplied out the way a real cluster of that size looks:

* ``nodes`` nodes (3 control-plane nodes tainted ``NoSchedule``), each with the status a kubelet
  posts (conditions, addresses, capacity, the images it holds) and server-side ``managedFields``;
* kube-system: one ``kube-proxy`` and one ``calico-node`` pod per node plus 2 CoreDNS pods
  (10,002 pods at 5,000 nodes); no static pods (a managed control plane);
* the rest of the pods in application namespaces of 200 pods (Deployments of 20 replicas, a
  few Job pods that Succeeded); one namespace in four pulls from a private registry with a pull
  secret that names it.

What is broken, as something always is at that size: node ``node-<last>`` stopped posting status
(Ready=Unknown; its two DaemonSet pods are not ready), and Deployment ``billing`` in the second
application namespace cannot pull its image: its pull secret was made without
``--docker-server`` and names only Docker Hub (the lab's mistake), so its 3 pods are Pending in
ImagePullBackOff with the kubelet's events.

Objects of one template share their unchanging parts (spec, managedFields): the server never
mutates a stored object, and a 150,000-pod cluster then fits in about 1 GB of the server's memory.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TEMPLATES = REPO / "fixtures" / "bundles" / "modern-coredns" / "cluster"
Obj = dict[str, Any]

PODS_PER_NAMESPACE = 200
BILLING_PODS = (0, 1, 2)
REPLICAS = 20
PRIVATE_REGISTRY = "registry.example.com:5000"
CREATED = "2026-11-02T08:00:00Z"
STARTED = "2026-11-02T08:05:00Z"
HEARTBEAT = "2026-12-04T09:00:00Z"
_SUFFIX = "bcdfghjklmnpqrstvwxz2456789"


def _suffix(n: int, width: int = 5) -> str:
    out = ""
    for _ in range(width):
        n, digit = divmod(n, len(_SUFFIX))
        out += _SUFFIX[digit]
    return out


def _uid(*parts: object) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(map(str, parts))))


def _template(resource: str, name: str) -> Obj:
    doc = json.loads((TEMPLATES / f"{resource}.json").read_text())
    for item in doc["items"]:
        if item["metadata"]["name"] == name:
            obj: Obj = copy.deepcopy(item)
            obj["metadata"].pop("selfLink", None)
            return obj
    raise KeyError(f"{resource}/{name} not in {TEMPLATES}")


def _managed(manager: str, operation: str, subresource: str | None, fields: Obj) -> Obj:
    entry: Obj = {
        "manager": manager,
        "operation": operation,
        "apiVersion": "v1",
        "time": STARTED,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def _fields_of(obj: Any) -> Any:
    """A FieldsV1 tree of OBJ's keys (the shape the server records in managedFields)."""
    if isinstance(obj, dict):
        return {f"f:{k}": _fields_of(v) for k, v in obj.items()}
    return {}


def _pod_managed_fields(pod: Obj, controller: str) -> list[Obj]:
    return [
        _managed(
            controller,
            "Update",
            None,
            _fields_of({"metadata": pod["metadata"], "spec": pod["spec"]}),
        ),
        _managed("kubelet", "Update", "status", _fields_of({"status": pod["status"]})),
    ]


class Cluster:
    """The generated objects by (apiVersion, resource), in the order the store wants them."""

    def __init__(self, nodes: int, pods: int) -> None:
        if nodes < 4:
            raise ValueError("at least 4 nodes (3 control-plane nodes and a worker)")
        self.nodes = nodes
        self.pods = pods
        self.objects: dict[tuple[str, str], list[Obj]] = {}
        self.node_names = [f"node-{i:04d}" for i in range(nodes)]
        self.broken_node = self.node_names[-1]
        self._build()

    def add(self, api_version: str, resource: str, obj: Obj) -> None:
        self.objects.setdefault((api_version, resource), []).append(obj)

    def count(self, api_version: str, resource: str, namespace: str | None = None) -> int:
        items = self.objects.get((api_version, resource), [])
        return sum(
            1 for o in items if namespace is None or o["metadata"].get("namespace") == namespace
        )

    # ------------------------------------------------------------------ building
    def _build(self) -> None:
        self._nodes()
        system = self._kube_system()
        self._applications(max(0, self.pods - system - len(BILLING_PODS)))
        self.add("v1", "namespaces", self._namespace("default"))
        self.add("v1", "namespaces", self._namespace("kube-system"))
        self.add("v1", "namespaces", self._namespace("kube-public"))

    def _namespace(self, name: str) -> Obj:
        return {
            "metadata": {
                "name": name,
                "uid": _uid("ns", name),
                "resourceVersion": "10",
                "creationTimestamp": CREATED,
                "labels": {"kubernetes.io/metadata.name": name},
            },
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    def _nodes(self) -> None:
        base = _template("nodes", "worker-1")
        images = [
            {"names": [f"{repo}@sha256:{_uid(repo)[:8] * 8}", f"{repo}:{tag}"], "sizeBytes": size}
            for repo, tag, size in (
                ("docker.io/calico/node", "v3.27.3", 116_845_111),
                ("docker.io/calico/cni", "v3.27.3", 94_567_320),
                ("registry.k8s.io/kube-proxy", "v1.29.4", 28_108_434),
                ("registry.k8s.io/coredns/coredns", "v1.11.1", 18_182_961),
                ("docker.io/library/nginx", "1.27", 72_195_292),
                (f"{PRIVATE_REGISTRY}/shop/cart", "3.2.0", 61_230_114),
                (f"{PRIVATE_REGISTRY}/shop/web", "8.1.4", 49_512_006),
                ("registry.k8s.io/pause", "3.9", 321_520),
            )
        ]
        shared_status = {
            k: base["status"][k] for k in ("allocatable", "capacity", "daemonEndpoints", "nodeInfo")
        }
        managed = [
            _managed("kubeadm", "Update", None, _fields_of({"metadata": base["metadata"]})),
            _managed("kube-controller-manager", "Update", None, _fields_of({"spec": base["spec"]})),
            _managed("kubelet", "Update", "status", _fields_of({"status": base["status"]})),
        ]
        conditions_ok = base["status"]["conditions"]
        conditions_unknown = [
            dict(
                c,
                status="Unknown",
                reason="NodeStatusUnknown",
                message="Kubelet stopped posting node status.",
            )
            if c["type"] != "NetworkUnavailable"
            else c
            for c in conditions_ok
        ]
        for i, name in enumerate(self.node_names):
            ip = f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"
            labels = dict(base["metadata"]["labels"], **{"kubernetes.io/hostname": name})
            spec: Obj = {"podCIDR": f"10.{128 + (i >> 8)}.{i & 255}.0/24"}
            spec["podCIDRs"] = [spec["podCIDR"]]
            if i < 3:
                labels["node-role.kubernetes.io/control-plane"] = ""
                spec["taints"] = [
                    {"effect": "NoSchedule", "key": "node-role.kubernetes.io/control-plane"}
                ]
            conditions = conditions_unknown if name == self.broken_node else conditions_ok
            if name == self.broken_node:
                spec["taints"] = [
                    {
                        "effect": "NoSchedule",
                        "key": "node.kubernetes.io/unreachable",
                        "timeAdded": HEARTBEAT,
                    },
                    {
                        "effect": "NoExecute",
                        "key": "node.kubernetes.io/unreachable",
                        "timeAdded": HEARTBEAT,
                    },
                ]
            node = {
                "metadata": {
                    "annotations": base["metadata"]["annotations"],
                    "creationTimestamp": CREATED,
                    "labels": labels,
                    "name": name,
                    "resourceVersion": str(1000 + i),
                    "uid": _uid("node", name),
                    "managedFields": managed,
                },
                "spec": spec,
                "status": dict(
                    shared_status,
                    addresses=[
                        {"address": ip, "type": "InternalIP"},
                        {"address": name, "type": "Hostname"},
                    ],
                    conditions=conditions,
                    images=images,
                ),
            }
            self.add("v1", "nodes", node)

    def _daemonset_pods(self, ds: Obj, first_rv: int) -> None:
        template = _template(
            "pods",
            {"kube-proxy": "kube-proxy-8xkqz", "calico-node": "calico-node-6jd2f"}[
                ds["metadata"]["name"]
            ],
        )
        name = ds["metadata"]["name"]
        owner = [dict(template["metadata"]["ownerReferences"][0], uid=ds["metadata"]["uid"])]
        managed = _pod_managed_fields(template, "kube-controller-manager")
        for i, node in enumerate(self.node_names):
            pod_name = f"{name}-{_suffix(i)}"
            status = dict(template["status"], hostIP=f"10.0.{i >> 8}.{i & 255}")
            if node == self.broken_node:
                status["conditions"] = [
                    dict(c, status="False", lastTransitionTime=HEARTBEAT)
                    if c["type"] in ("Ready", "ContainersReady")
                    else c
                    for c in template["status"]["conditions"]
                ]
                status["containerStatuses"] = [
                    dict(cs, ready=False) for cs in template["status"]["containerStatuses"]
                ]
            spec = dict(template["spec"], nodeName=node)
            self.add(
                "v1",
                "pods",
                {
                    "metadata": dict(
                        template["metadata"],
                        name=pod_name,
                        uid=_uid("pod", pod_name),
                        resourceVersion=str(first_rv + i),
                        ownerReferences=owner,
                        managedFields=managed,
                    ),
                    "spec": spec,
                    "status": status,
                },
            )

    def _kube_system(self) -> int:
        n = self.nodes
        for ds_name, first_rv in (("kube-proxy", 10_000_000), ("calico-node", 20_000_000)):
            ds = _template("daemonsets", ds_name)
            ds["status"] = dict(
                ds["status"],
                currentNumberScheduled=n,
                desiredNumberScheduled=n,
                numberAvailable=n - 1,
                numberReady=n - 1,
                updatedNumberScheduled=n,
                numberUnavailable=1,
            )
            self.add("apps/v1", "daemonsets", ds)
            self._daemonset_pods(ds, first_rv)
        for resource, name in (
            ("deployments", "coredns"),
            ("replicasets", "coredns-76f75df574"),
        ):
            self.add("apps/v1", resource, _template(resource, name))
        for name in ("coredns-76f75df574-9lmsx", "coredns-76f75df574-qhx4c"):
            pod = _template("pods", name)
            pod["spec"]["nodeName"] = self.node_names[3 + (name[-1] == "c")]
            self.add("v1", "pods", pod)
        for resource, names in (
            ("services", ("kubernetes", "kube-dns")),
            ("endpoints", ("kubernetes", "kube-dns")),
            ("endpointslices", ("kubernetes", "kube-dns-7x4kq")),
            ("configmaps", ("coredns", "kube-proxy", "kube-root-ca.crt")),
        ):
            api = "discovery.k8s.io/v1" if resource == "endpointslices" else "v1"
            for name in names:
                self.add(api, resource, _template(resource, name))
        return 2 * n + 2

    def _applications(self, total: int) -> None:
        namespaces = max(1, -(-total // PODS_PER_NAMESPACE))
        made = 0
        for index in range(namespaces):
            ns = f"team-{index:04d}"
            self.add("v1", "namespaces", self._namespace(ns))
            private = index % 4 == 1
            if private:
                self.add("v1", "secrets", self._pull_secret(ns, "regcred", PRIVATE_REGISTRY))
            count = min(PODS_PER_NAMESPACE, total - made)
            made += self._namespace_pods(ns, index, count, private)
        self._broken_deployment("team-0001")

    def _pull_secret(self, ns: str, name: str, server: str) -> Obj:
        auth = base64.b64encode(b"ci:not-a-real-password").decode()
        config = {
            "auths": {server: {"username": "ci", "password": "not-a-real-password", "auth": auth}}
        }
        return {
            "metadata": {
                "name": name,
                "namespace": ns,
                "uid": _uid("secret", ns, name),
                "resourceVersion": "500",
                "creationTimestamp": CREATED,
            },
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": base64.b64encode(json.dumps(config).encode()).decode()},
        }

    def _app_template(self, ns: str, app: str, image: str, secret: str | None) -> Obj:
        spec: Obj = {
            "containers": [
                {
                    "name": app,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"memory": "256Mi"},
                    },
                    "env": [{"name": "APP", "value": app}, {"name": "LOG_LEVEL", "value": "info"}],
                    "readinessProbe": {
                        "httpGet": {"path": "/ready", "port": 8080, "scheme": "HTTP"},
                        "periodSeconds": 10,
                        "timeoutSeconds": 1,
                        "successThreshold": 1,
                        "failureThreshold": 3,
                    },
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "volumeMounts": [
                        {
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                            "name": "kube-api-access",
                            "readOnly": True,
                        }
                    ],
                }
            ],
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccount": "default",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {
                    "effect": "NoExecute",
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "tolerationSeconds": 300,
                },
                {
                    "effect": "NoExecute",
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "tolerationSeconds": 300,
                },
            ],
            "volumes": [
                {
                    "name": "kube-api-access",
                    "projected": {
                        "defaultMode": 420,
                        "sources": [
                            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                            {
                                "configMap": {
                                    "name": "kube-root-ca.crt",
                                    "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                }
                            },
                            {
                                "downwardAPI": {
                                    "items": [
                                        {
                                            "path": "namespace",
                                            "fieldRef": {
                                                "apiVersion": "v1",
                                                "fieldPath": "metadata.namespace",
                                            },
                                        }
                                    ]
                                }
                            },
                        ],
                    },
                }
            ],
        }
        if secret:
            spec["imagePullSecrets"] = [{"name": secret}]
        return spec

    def _running_status(self, image: str, app: str, node_index: int, pod_index: int) -> Obj:
        conditions = [
            {"type": t, "status": "True", "lastProbeTime": None, "lastTransitionTime": STARTED}
            for t in (
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            )
        ]
        host = f"10.0.{node_index >> 8}.{node_index & 255}"
        pod_ip = f"10.{128 + (node_index >> 8)}.{node_index & 255}.{2 + pod_index % 250}"
        return {
            "conditions": conditions,
            "containerStatuses": [
                {
                    "containerID": f"containerd://{_uid('c', app, pod_index).replace('-', '')}",
                    "image": image,
                    "imageID": f"{image.split(':')[0]}@sha256:{'ab' * 32}",
                    "lastState": {},
                    "name": app,
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": STARTED}},
                }
            ],
            "hostIP": host,
            "hostIPs": [{"ip": host}],
            "phase": "Running",
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "qosClass": "Burstable",
            "startTime": STARTED,
        }

    def _namespace_pods(self, ns: str, index: int, count: int, private: bool) -> int:
        made = 0
        workers = self.nodes - 4  # neither the control plane nor the broken node
        deployment = 0
        while made < count:
            app = (
                "web",
                "cart",
                "search",
                "auth",
                "mail",
                "queue",
                "cache",
                "report",
                "audit",
                "batch",
            )[deployment % 10] + (f"-{deployment // 10}" if deployment >= 10 else "")
            image = (
                f"{PRIVATE_REGISTRY}/{ns}/{app}:3.2.0"
                if private
                else "docker.io/library/nginx:1.27"
            )
            spec_base = self._app_template(ns, app, image, "regcred" if private else None)
            rs = f"{app}-{_uid('rs', ns, app)[:10].replace('-', '')}"
            owner = [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": rs,
                    "uid": _uid("rs", ns, rs),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
            labels = {"app": app, "pod-template-hash": rs.rsplit("-", 1)[1]}
            managed: list[Obj] | None = None
            for replica in range(min(REPLICAS, count - made)):
                n = index * PODS_PER_NAMESPACE + made
                node_index = 3 + n % workers
                name = f"{rs}-{_suffix(n)}"
                job = replica == REPLICAS - 1 and deployment % 10 == 9  # a finished Job pod
                status = self._running_status(image, app, node_index, n)
                if job:
                    status = dict(
                        status,
                        phase="Succeeded",
                        conditions=[
                            dict(c, status="False")
                            if c["type"] in ("Ready", "ContainersReady")
                            else c
                            for c in status["conditions"]
                        ],
                    )
                pod = {
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "uid": _uid("pod", ns, name),
                        "resourceVersion": str(30_000_000 + n),
                        "generateName": f"{rs}-",
                        "creationTimestamp": CREATED,
                        "labels": labels,
                        "ownerReferences": owner,
                    },
                    "spec": dict(spec_base, nodeName=self.node_names[node_index]),
                    "status": status,
                }
                if managed is None:
                    managed = _pod_managed_fields(pod, "kube-controller-manager")
                pod["metadata"]["managedFields"] = managed
                self.add("v1", "pods", pod)
                made += 1
            deployment += 1
        return made

    def _broken_deployment(self, ns: str) -> None:
        """billing: a pull secret without --docker-server, 3 pods in ImagePullBackOff."""
        self.add(
            "v1", "secrets", self._pull_secret(ns, "billing-pull", "https://index.docker.io/v1/")
        )
        image = f"{PRIVATE_REGISTRY}/{ns}/billing:2.1.0"
        spec = self._app_template(ns, "billing", image, "billing-pull")
        message = (
            f'Failed to pull image "{image}": failed to pull and unpack image "{image}": failed '
            f'to resolve reference "{image}": pull access denied, repository does not exist or '
            "may require authorization: authorization failed: no basic auth credentials"
        )
        for i in BILLING_PODS:
            name = f"billing-6c9f7d8b5d-{_suffix(900_000 + i)}"
            node = self.node_names[(4 + i) % len(self.node_names)]
            self.add(
                "v1",
                "pods",
                {
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "uid": _uid("pod", ns, name),
                        "resourceVersion": str(40_000_000 + i),
                        "creationTimestamp": CREATED,
                        "generateName": "billing-6c9f7d8b5d-",
                        "labels": {"app": "billing", "pod-template-hash": "6c9f7d8b5d"},
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "ReplicaSet",
                                "name": "billing-6c9f7d8b5d",
                                "controller": True,
                                "uid": _uid("rs", ns, "billing"),
                            }
                        ],
                    },
                    "spec": dict(spec, nodeName=node),
                    "status": {
                        "phase": "Pending",
                        "qosClass": "Burstable",
                        "startTime": STARTED,
                        "conditions": [
                            {
                                "type": "PodScheduled",
                                "status": "True",
                                "lastTransitionTime": STARTED,
                            }
                        ],
                        "containerStatuses": [
                            {
                                "name": "billing",
                                "image": image,
                                "imageID": "",
                                "ready": False,
                                "restartCount": 0,
                                "started": False,
                                "lastState": {},
                                "state": {
                                    "waiting": {
                                        "reason": "ImagePullBackOff",
                                        "message": f'Back-off pulling image "{image}"',
                                    }
                                },
                            }
                        ],
                    },
                },
            )
            self.add(
                "v1",
                "events",
                {
                    "metadata": {
                        "name": f"{name}.17e0c3b9a1f2d4e{i}",
                        "namespace": ns,
                        "uid": _uid("event", ns, name),
                        "resourceVersion": str(41_000_000 + i),
                        "creationTimestamp": HEARTBEAT,
                    },
                    "involvedObject": {
                        "kind": "Pod",
                        "namespace": ns,
                        "name": name,
                        "uid": _uid("pod", ns, name),
                        "apiVersion": "v1",
                        "fieldPath": "spec.containers{billing}",
                    },
                    "reason": "Failed",
                    "message": message,
                    "type": "Warning",
                    "count": 42,
                    "source": {"component": "kubelet", "host": node},
                    "firstTimestamp": STARTED,
                    "lastTimestamp": HEARTBEAT,
                    "reportingComponent": "kubelet",
                    "reportingInstance": node,
                },
            )

    # ------------------------------------------------------------------ output
    def items(self) -> Iterator[tuple[str, str, list[Obj]]]:
        for (api_version, resource), objs in self.objects.items():
            yield api_version, resource, objs


def load_into(server: Any, cluster: Cluster) -> None:
    """Put the generated objects into a tests.apiserver.ApiServer's store (before start)."""
    from tests.apiserver import resources

    for api_version, resource, objs in cluster.items():
        server.store.load_many(resources.lookup(api_version, resource), objs, CREATED)
