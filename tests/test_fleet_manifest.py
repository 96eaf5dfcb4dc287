"""What ``kdoctor fleet`` applies: valid for Kubernetes 1.29-1.34, accepted by kubectl, and as
small in power as the brief says (no API rights, minimal capabilities, every taint tolerated)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from doctor.fleet import manifest
from tests.apiserver import ApiServer
from tests.conftest import BUNDLES, kdoctor

KUBE_VERSIONS = ["1.29", "1.30", "1.31", "1.32", "1.33", "1.34"]
SETTINGS = [
    manifest.ManifestSettings(),
    manifest.ManifestSettings(
        image="registry.lab.local:5000/kdoctor:0.1.0",
        namespace="ops-kdoctor",
        pull_secrets=("regcred",),
        selector="node-role.kubernetes.io/worker,zone in (a,b),!gpu,tier!=edge",
        run_id="abc123",
    ),
]


def _validate(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("version", KUBE_VERSIONS)
@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "private-registry"])
def test_every_object_passes_the_published_schema(
    version: str, settings: manifest.ManifestSettings
) -> None:
    objects = manifest.fleet_objects(settings) + manifest.cronjob_objects(settings)
    assert {o["kind"] for o in objects} >= {"Namespace", "ServiceAccount", "DaemonSet", "CronJob"}
    for obj in objects:
        _validate(obj, version)


def test_the_schema_check_catches_a_misspelt_field() -> None:
    """The validation above can fail: a typo in the pod spec is refused."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    broken = manifest.daemonset(manifest.ManifestSettings())
    broken["spec"]["template"]["spec"]["hostNetwrk"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostNetwrk"):
        kubernetes_validate.validate(broken, "1.34", strict=True)


def test_the_agent_has_no_api_rights_and_minimal_capabilities() -> None:
    objects = manifest.fleet_objects(manifest.ManifestSettings())
    ns, account, ds = objects
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    assert account["automountServiceAccountToken"] is False
    assert not [o for o in objects if "Role" in o["kind"]]  # no RBAC at all: no rights
    pod = ds["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    assert pod["hostNetwork"] is True and pod["hostPID"] is True
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert "privileged" not in security
    assert security["capabilities"]["drop"] == ["ALL"]
    assert set(security["capabilities"]["add"]) == set(manifest.CAPABILITIES)
    assert security["readOnlyRootFilesystem"] is True
    (host,) = [m for m in container["volumeMounts"] if m["name"] == "host"]
    assert host == {"name": "host", "mountPath": "/host", "readOnly": True}
    (volume,) = [v for v in pod["volumes"] if v["name"] == "host"]
    assert volume["hostPath"]["path"] == "/"


def test_image_pull_secret_and_selector_reach_the_pod() -> None:
    ds = manifest.daemonset(SETTINGS[1])
    pod = ds["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.lab.local:5000/kdoctor:0.1.0"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "node-role.kubernetes.io/worker", "operator": "Exists"},
        {"key": "zone", "operator": "In", "values": ["a", "b"]},
        {"key": "gpu", "operator": "DoesNotExist"},
        {"key": "tier", "operator": "NotIn", "values": ["edge"]},
    ]
    assert ds["metadata"]["labels"][manifest.RUN_LABEL] == "abc123"


@pytest.mark.parametrize("bad", ["a b", "=x", "!a=b", ",", "x in a"])
def test_a_bad_selector_is_refused(bad: str) -> None:
    with pytest.raises(manifest.SelectorError):
        manifest.node_affinity(bad)


def test_the_cronjob_is_cluster_scope_once_and_restricted() -> None:
    objects = manifest.cronjob_objects(manifest.ManifestSettings())
    (cron,) = [o for o in objects if o["kind"] == "CronJob"]
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"][:4] == ["kdoctor", "check", "--scope", "cluster"]
    assert "hostNetwork" not in pod and "volumes" not in pod
    assert container["securityContext"]["runAsNonRoot"] is True
    (role,) = [o for o in objects if o["kind"] == "ClusterRole"]
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs == {"get", "list"}  # read only


def _kubectl(
    kubeconfig: Path, tmp: Path, *args: str, stdin: str
) -> subprocess.CompletedProcess[str]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    return subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", f"--cache-dir={tmp / 'cache'}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "HOME": str(tmp)},
    )


@pytest.mark.parametrize("cronjob", [False, True], ids=["daemonset", "cronjob"])
def test_kubectl_accepts_the_yaml(tmp_path: Path, cronjob: bool) -> None:
    settings = manifest.ManifestSettings(pull_secrets=("regcred",))
    objects = manifest.cronjob_objects(settings) if cronjob else manifest.fleet_objects(settings)
    text = manifest.to_yaml(objects)
    assert [d for d in yaml.safe_load_all(text) if d] == objects  # the YAML is the objects
    with ApiServer(BUNDLES / "seed-lab-broken") as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        proc = _kubectl(kubeconfig, tmp_path, "apply", "--dry-run=client", "-f", "-", stdin=text)
        assert proc.returncode == 0, proc.stderr
        for obj in objects:
            assert f"{obj['metadata']['name']} created (dry run)" in proc.stdout, proc.stdout
        # (the test server serves an empty /openapi/v2, so kubectl checks syntax, kinds and
        # names here; the field schemas are kubernetes-validate's part above)


def test_kdoctor_manifest_prints_the_objects() -> None:
    proc = kdoctor("manifest", "--image", "reg.example:5000/kdoctor:1", "--image-pull-secret", "rc")
    if "invalid choice" in proc.stderr:
        pytest.skip("the manifest subcommand is not wired into this CLI yet")
    assert proc.returncode == 0, proc.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert [d["kind"] for d in docs] == ["Namespace", "ServiceAccount", "DaemonSet"]
    pod = docs[2]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "reg.example:5000/kdoctor:1"
    assert pod["imagePullSecrets"] == [{"name": "rc"}]
    proc = kdoctor("manifest", "--cronjob")
    assert proc.returncode == 0, proc.stderr
    assert "kind: CronJob" in proc.stdout
