"""cluster.registry.pull-secret: reference parsing, auth-key matching, secret decoding and
redaction (pure functions), the check on whole bundles, and that no secret value leaks."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from checks.cluster_registry_pull_secret import RegistryPullSecret
from doctor.core.context import CheckContext
from doctor.core.model import Status, Verdict
from doctor.core.runner import run_one
from doctor.facts.kube import BundleCluster
from doctor.facts.node import BundleNodeFacts
from doctor.parse.registry_auth import (
    LAST_APPLIED,
    REDACTED,
    InvalidReference,
    Mismatch,
    SecretProblem,
    decode_pull_secret,
    key_matches,
    mismatch_kind,
    normalize_auth_key,
    parse_reference,
    redact_secret,
)
from tests.conftest import BUNDLES, check_json

CHECK = "cluster.registry.pull-secret"
DIGEST = "sha256:" + "0123456789abcdef" * 4

# formats-and-failures.md §5, verbatim (user myuser, password mypassword).
HUB_DEFAULT = (
    "eyJhdXRocyI6eyJodHRwczovL2luZGV4LmRvY2tlci5pby92MS8iOnsidXNlcm5hbWUiOiJteXVzZXIiLCJwYXNzd29y"
    "ZCI6Im15cGFzc3dvcmQiLCJlbWFpbCI6Im1lQGV4YW1wbGUuY29tIiwiYXV0aCI6ImJYbDFjMlZ5T20xNWNHRnpjM2R2"
    "Y21RPSJ9fX0="
)
WITH_SERVER = (
    "eyJhdXRocyI6eyJyZWdpc3RyeS5leGFtcGxlLmNvbTo1MDAwIjp7InVzZXJuYW1lIjoibXl1c2VyIiwicGFzc3dvcmQi"
    "OiJteXBhc3N3b3JkIiwiZW1haWwiOiJtZUBleGFtcGxlLmNvbSIsImF1dGgiOiJiWGwxYzJWeU9tMTVjR0Z6YzNkdmNt"
    "UT0ifX19"
)
NO_EMAIL = (
    "eyJhdXRocyI6eyJodHRwczovL2luZGV4LmRvY2tlci5pby92MS8iOnsidXNlcm5hbWUiOiJteXVzZXIiLCJwYXNzd29y"
    "ZCI6Im15cGFzc3dvcmQiLCJhdXRoIjoiYlhsMWMyVnlPbTE1Y0dGemMzZHZjbVE9In19fQ=="
)
LEGACY_DEFAULT = (
    "eyJodHRwczovL2luZGV4LmRvY2tlci5pby92MS8iOnsidXNlcm5hbWUiOiJteXVzZXIiLCJwYXNzd29yZCI6Im15cGFz"
    "c3dvcmQiLCJlbWFpbCI6Im1lQGV4YW1wbGUuY29tIiwiYXV0aCI6ImJYbDFjMlZ5T20xNWNHRnpjM2R2Y21RPSJ9fQ=="
)
LEGACY_WITH_SERVER = (
    "eyJyZWdpc3RyeS5leGFtcGxlLmNvbTo1MDAwIjp7InVzZXJuYW1lIjoibXl1c2VyIiwicGFzc3dvcmQiOiJteXBhc3N3"
    "b3JkIiwiZW1haWwiOiJtZUBleGFtcGxlLmNvbSIsImF1dGgiOiJiWGwxYzJWeU9tMTVjR0Z6YzNkdmNtUT0ifX0="
)
SECRET_WORDS = ["mypassword", "bXl1c2VyOm15cGFzc3dvcmQ=", "myuser:mypassword"]


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(
    name: str = "regcred",
    stype: str = "kubernetes.io/dockerconfigjson",
    data: dict[str, str] | None = None,
    namespace: str = "default",
    **extra: Any,
) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "7"},
        "type": stype,
        "data": data if data is not None else {},
    }
    obj.update(extra)
    return obj


def config(auths: dict[str, Any]) -> str:
    return b64(json.dumps({"auths": auths}, separators=(",", ":")))


# -- reference parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reference", "registry", "path", "tag", "digest"),
    [
        ("busybox", "docker.io", "library/busybox", None, None),
        ("busybox:1.36", "docker.io", "library/busybox", "1.36", None),
        ("library/busybox", "docker.io", "library/busybox", None, None),
        ("docker.io/busybox", "docker.io", "library/busybox", None, None),
        ("index.docker.io/library/busybox:latest", "docker.io", "library/busybox", "latest", None),
        ("registry-1.docker.io/acme/tool", "docker.io", "acme/tool", None, None),
        ("acme/private-linter:3.1", "docker.io", "acme/private-linter", "3.1", None),
        ("weaveworks/weave-kube:1.9.4", "docker.io", "weaveworks/weave-kube", "1.9.4", None),
        ("nexus.lab:5000/team/app:1.0", "nexus.lab:5000", "team/app", "1.0", None),
        ("nexus.lab/team/app", "nexus.lab", "team/app", None, None),
        ("NEXUS.lab:5000/team/app", "nexus.lab:5000", "team/app", None, None),
        ("localhost/app", "localhost", "app", None, None),
        ("localhost:5000/app:dev", "localhost:5000", "app", "dev", None),
        ("myhost:5000/app", "myhost:5000", "app", None, None),
        ("gcr.io/google_containers/kube-proxy-amd64:v1.6.0", "gcr.io",
         "google_containers/kube-proxy-amd64", "v1.6.0", None),
        (f"busybox@{DIGEST}", "docker.io", "library/busybox", None, DIGEST),
        (f"nexus.lab:5000/team/app:1.0@{DIGEST}", "nexus.lab:5000", "team/app", "1.0", DIGEST),
        ("[::1]:5000/app", "[::1]:5000", "app", None, None),
    ],
)  # fmt: skip
def test_parse_reference_like_docker(
    reference: str, registry: str, path: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(reference)
    assert (ref.registry, ref.path, ref.tag, ref.digest) == (registry, path, tag, digest)


def test_reference_host_and_port() -> None:
    assert (parse_reference("nexus.lab:5000/a").host, parse_reference("nexus.lab:5000/a").port) == (
        "nexus.lab",
        "5000",
    )
    assert parse_reference("[::1]:5000/app").host == "::1"
    assert parse_reference("busybox").name == "docker.io/library/busybox"
    assert parse_reference("busybox").is_docker_hub


@pytest.mark.parametrize(
    "reference",
    ["", " busybox", "a b", "nexus.lab:5000/Team/app", "app:", "app@sha256:xyz", "nexus.lab:5000/"],
)
def test_invalid_references_raise(reference: str) -> None:
    with pytest.raises(InvalidReference):
        parse_reference(reference)


# -- auth keys and matching -------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "registry", "path"),
    [
        ("https://index.docker.io/v1/", "docker.io", ""),
        ("index.docker.io", "docker.io", ""),
        ("docker.io", "docker.io", ""),
        ("registry-1.docker.io", "docker.io", ""),
        ("https://registry-1.docker.io/v2/", "docker.io", ""),
        ("https://nexus.lab:5000/v2/", "nexus.lab:5000", ""),
        ("http://nexus.lab:5000", "nexus.lab:5000", ""),
        ("nexus.lab:5000", "nexus.lab:5000", ""),
        ("NEXUS.LAB:5000", "nexus.lab:5000", ""),
        ("nexus.lab:5000/team", "nexus.lab:5000", "/team"),
        ("https://nexus.lab:5000/v2/team/", "nexus.lab:5000", "/team"),
        ("https://nexus.lab:5000/v1", "nexus.lab:5000", ""),
        ("localhost:5000", "localhost:5000", ""),
        ("[::1]:5000", "::1:5000", ""),
    ],
)
def test_normalize_auth_key_like_the_kubelet_keyring(key: str, registry: str, path: str) -> None:
    normal = normalize_auth_key(key)
    assert (normal.registry, normal.path) == (registry, path)
    assert normal.raw == key


@pytest.mark.parametrize(
    ("key", "image", "expected"),
    [
        # Docker Hub, under any of its names
        ("https://index.docker.io/v1/", "busybox", True),
        ("https://index.docker.io/v1/", "acme/private:1", True),
        ("docker.io", "acme/app", True),
        ("index.docker.io", "docker.io/acme/app", True),
        ("registry-1.docker.io", "index.docker.io/acme/app", True),
        ("registry-1.docker.io", f"docker.io/acme/builder@{DIGEST}", True),
        # the seed: Docker Hub credentials do not serve a private registry
        ("https://index.docker.io/v1/", "nexus.lab:5000/team/app:1.0", False),
        ("docker.io", "nexus.lab:5000/team/app", False),
        # ports matter
        ("nexus.lab:5000", "nexus.lab:5000/team/app:1.0", True),
        ("nexus.lab", "nexus.lab:5000/team/app", False),
        ("nexus.lab:5000", "nexus.lab/team/app", False),
        ("nexus.lab:5443", "nexus.lab:5000/team/app", False),
        # schemes and /v1/ /v2/ are ignored
        ("https://nexus.lab:5000/v2/", "nexus.lab:5000/team/app", True),
        ("http://nexus.lab:5000", "nexus.lab:5000/team/app", True),
        ("https://nexus.lab:5000/v1/", "nexus.lab:5000/team/app", True),
        # paths are prefixes
        ("nexus.lab:5000/team", "nexus.lab:5000/team/app", True),
        ("https://nexus.lab:5000/v2/team/", "nexus.lab:5000/team/app", True),
        ("nexus.lab:5000/other", "nexus.lab:5000/team/app", False),
        # globs per host label, same number of labels
        ("*.lab:5000", "nexus.lab:5000/team/app", True),
        ("*.lab", "a.nexus.lab/team/app", False),
        ("*.example.com", "harbor.example.com/x/y", True),
        # localhost
        ("localhost:5000", "localhost:5000/app", True),
        ("localhost", "localhost:5000/app", False),
        ("localhost", "localhost/app", True),
        # digests do not change the registry
        ("nexus.lab:5000", f"nexus.lab:5000/team/app@{DIGEST}", True),
        ("gcr.io", "gcr.io/google_containers/pause:3.0", True),
        ("gcr.io", "k8s.gcr.io/pause:3.1", False),
    ],
)
def test_key_matches_image(key: str, image: str, expected: bool) -> None:
    assert key_matches(normalize_auth_key(key), parse_reference(image)) is expected


@pytest.mark.parametrize(
    ("key", "image", "kind"),
    [
        ("https://index.docker.io/v1/", "nexus.lab:5000/team/app", Mismatch.DOCKER_HUB_DEFAULT),
        ("nexus.lab", "nexus.lab:5000/team/app", Mismatch.PORT),
        ("nexus.lab:5000/other", "nexus.lab:5000/team/app", Mismatch.PATH),
        ("quay.io", "nexus.lab:5000/team/app", Mismatch.OTHER_HOST),
    ],
)
def test_mismatch_kind(key: str, image: str, kind: str) -> None:
    assert mismatch_kind(normalize_auth_key(key), parse_reference(image)) == kind


# -- decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stype", "key", "value", "host", "email"),
    [
        ("kubernetes.io/dockerconfigjson", ".dockerconfigjson", HUB_DEFAULT,
         "https://index.docker.io/v1/", "me@example.com"),
        ("kubernetes.io/dockerconfigjson", ".dockerconfigjson", WITH_SERVER,
         "registry.example.com:5000", "me@example.com"),
        ("kubernetes.io/dockerconfigjson", ".dockerconfigjson", NO_EMAIL,
         "https://index.docker.io/v1/", None),
        ("kubernetes.io/dockercfg", ".dockercfg", LEGACY_DEFAULT,
         "https://index.docker.io/v1/", "me@example.com"),
        ("kubernetes.io/dockercfg", ".dockercfg", LEGACY_WITH_SERVER,
         "registry.example.com:5000", "me@example.com"),
    ],
)  # fmt: skip
def test_decode_kubectl_secrets_of_every_version(
    stype: str, key: str, value: str, host: str, email: str | None
) -> None:
    decoded = decode_pull_secret(secret(stype=stype, data={key: value}), "default", "regcred")
    assert decoded.usable, decoded
    assert decoded.hosts == [host]
    entry = decoded.entries[0]
    assert (entry.username, entry.email) == ("myuser", email)
    assert entry.has_credentials and not entry.redacted
    assert decoded.resource_version == "7"
    for word in SECRET_WORDS:  # the decoded form keeps no credential
        assert word not in repr(decoded)


def test_decode_redacted_bundle_secret() -> None:
    value = config({"nexus.lab:5000": {"username": "ci", "password": REDACTED, "auth": REDACTED}})
    decoded = decode_pull_secret(secret(data={".dockerconfigjson": value}), "default", "nexus")
    assert decoded.usable
    assert decoded.entries[0].redacted and decoded.entries[0].has_credentials
    assert decoded.entries[0].username == "ci"


def test_decode_user_from_auth_when_there_is_no_username_field() -> None:
    value = config({"nexus.lab:5000": {"auth": b64("builder:s3cr3t-pw")}})
    decoded = decode_pull_secret(secret(data={".dockerconfigjson": value}), "default", "nexus")
    assert decoded.entries[0].username == "builder"
    assert "s3cr3t-pw" not in repr(decoded)


@pytest.mark.parametrize(
    ("obj", "problem", "detail"),
    [
        (None, SecretProblem.MISSING, ""),
        (secret(stype="Opaque", data={"password": b64("x")}), SecretProblem.WRONG_TYPE, ""),
        (secret(data={}), SecretProblem.NO_DATA, "no .dockerconfigjson"),
        (secret(data={".dockercfg": LEGACY_DEFAULT}), SecretProblem.NO_DATA,
         "no .dockerconfigjson"),
        (secret(data={".dockerconfigjson": "%%%not base64%%%"}), SecretProblem.UNDECODABLE,
         "not valid base64"),
        (secret(data={".dockerconfigjson": "abc"}), SecretProblem.UNDECODABLE, "not valid base64"),
        (secret(data={".dockerconfigjson": b64("{not json")}), SecretProblem.UNDECODABLE,
         "not JSON"),
        (secret(data={".dockerconfigjson": base64.b64encode(b"\xff\xfe").decode()}),
         SecretProblem.UNDECODABLE, "not UTF-8"),
        (secret(data={".dockerconfigjson": b64("[1, 2]")}), SecretProblem.UNDECODABLE,
         "not an object"),
        (secret(data={".dockerconfigjson": b64('{"auths": "x"}')}), SecretProblem.UNDECODABLE,
         '"auths"'),
        (secret(data={".dockerconfigjson": b64('{"auths": {}}')}), SecretProblem.NO_ENTRIES,
         "names no registry"),
        (secret(data={".dockerconfigjson": 42}), SecretProblem.UNDECODABLE, "base64 string"),  # type: ignore[dict-item]
        (secret(stype="kubernetes.io/dockercfg", data={".dockercfg": WITH_SERVER}),
         SecretProblem.KUBECTL_19, ""),
    ],
)  # fmt: skip
def test_decode_problems_never_raise(obj: dict[str, Any] | None, problem: str, detail: str) -> None:
    decoded = decode_pull_secret(obj, "default", "regcred")
    assert decoded.problem == problem
    assert detail in decoded.detail
    assert not decoded.usable


def test_kubectl_19_dockercfg_keeps_its_hosts_for_the_message() -> None:
    obj = secret(stype="kubernetes.io/dockercfg", data={".dockercfg": WITH_SERVER})
    assert decode_pull_secret(obj, "d", "r").hosts == ["registry.example.com:5000"]


def test_opaque_secret_holding_docker_config_tells_its_registry() -> None:
    obj = secret(stype="Opaque", data={".dockerconfigjson": WITH_SERVER})
    decoded = decode_pull_secret(obj, "d", "r")
    assert decoded.problem == SecretProblem.WRONG_TYPE
    assert decoded.hosts == ["registry.example.com:5000"]
    assert decoded.data_keys == (".dockerconfigjson",)


# -- redaction --------------------------------------------------------------------------


def _decoded_payload(obj: dict[str, Any], key: str) -> Any:
    return json.loads(base64.b64decode(obj["data"][key]))


def test_redact_pull_secret_keeps_hosts_and_users_only() -> None:
    raw = {
        "auths": {
            "nexus.lab:5000": {
                "username": "jdupont",
                "password": "Nexus#2017pw",
                "email": "j@lab.local",
                "auth": b64("jdupont:Nexus#2017pw"),
            },
            "ghcr.io": {"auth": b64("octo:ghp_token123"), "identitytoken": "idtok-xyz"},
        },
        "HttpHeaders": {"Authorization": "Bearer header-secret"},
        "credsStore": "desktop",
    }
    annotations = {LAST_APPLIED: '{"data":{".dockerconfigjson":"..."}}', "team": "a"}
    obj = secret(
        data={".dockerconfigjson": b64(json.dumps(raw))},
        stringData={"password": "clear-text-pw"},
    )
    obj["metadata"]["annotations"] = annotations
    out = redact_secret(obj)
    assert "stringData" not in out
    assert LAST_APPLIED not in out["metadata"]["annotations"]
    assert out["metadata"]["annotations"]["team"] == "a"
    assert obj["metadata"]["annotations"][LAST_APPLIED]  # the input is not changed
    payload = _decoded_payload(out, ".dockerconfigjson")
    assert payload["auths"]["nexus.lab:5000"] == {
        "username": "jdupont",
        "password": REDACTED,
        "email": "j@lab.local",
        "auth": REDACTED,
    }
    assert payload["auths"]["ghcr.io"] == {
        "auth": REDACTED,
        "identitytoken": REDACTED,
        "username": "octo",
    }
    assert payload["HttpHeaders"] == REDACTED
    text = json.dumps(out)
    for word in ("Nexus#2017pw", "ghp_token123", "idtok-xyz", "header-secret", "clear-text-pw"):
        assert word not in text
        assert b64(word) not in text
    before = decode_pull_secret(obj, "default", "regcred")
    after = decode_pull_secret(out, "default", "regcred")
    assert before.hosts == after.hosts
    assert [e.username for e in before.entries] == [e.username for e in after.entries]
    assert after.usable and all(e.has_credentials for e in after.entries)


def test_redact_legacy_dockercfg_and_other_secrets() -> None:
    legacy = redact_secret(
        secret(stype="kubernetes.io/dockercfg", data={".dockercfg": LEGACY_WITH_SERVER})
    )
    payload = _decoded_payload(legacy, ".dockercfg")
    assert payload == {
        "registry.example.com:5000": {
            "username": "myuser",
            "password": REDACTED,
            "email": "me@example.com",
            "auth": REDACTED,
        }
    }
    token = redact_secret(
        secret(
            stype="kubernetes.io/service-account-token",
            data={"token": b64("eyJhbGc.x.y"), "ca.crt": b64("PEM")},
        )
    )
    assert token["data"] == {"token": "", "ca.crt": ""}
    garbage = redact_secret(secret(data={".dockerconfigjson": "%%%"}))
    assert garbage["data"] == {".dockerconfigjson": ""}
    no_data = redact_secret({"metadata": {"name": "x"}, "type": "Opaque"})
    assert "data" not in no_data
    opaque = redact_secret(
        secret(stype="Opaque", data={".dockerconfigjson": WITH_SERVER, "x": b64("y")})
    )
    assert (
        _decoded_payload(opaque, ".dockerconfigjson")["auths"]["registry.example.com:5000"][
            "password"
        ]
        == REDACTED
    )
    assert opaque["data"]["x"] == ""


# -- the check on bundles ---------------------------------------------------------------


def context(bundle: Path) -> CheckContext:
    return CheckContext(node=BundleNodeFacts(bundle), cluster=BundleCluster(bundle))


def run_check(bundle: Path) -> Verdict:
    return RegistryPullSecret().run(context(bundle))


def test_seed_lab_broken_names_the_missing_docker_server_with_the_manual_command() -> None:
    code, report = check_json("--bundle", str(BUNDLES / "seed-lab-broken"), "--only", CHECK)
    result = next(c for c in report["checks"] if c["id"] == CHECK)
    assert code == 2 and result["status"] == "fail"
    [finding] = result["findings"]
    assert "--docker-server" in finding["message"]
    assert "default/nexus" in finding["message"] and "nexus.lab:5000" in finding["message"]
    assert finding["resource"] == "secret/default/nexus"
    evidence = finding["evidence"]
    assert evidence["pods"] == ["default/app"]
    assert evidence["images"] == ["nexus.lab:5000/team/app:1.0"]
    assert evidence["registry"] == "nexus.lab:5000"
    assert evidence["secret_hosts"] == ["https://index.docker.io/v1/"]
    assert "401" in evidence["kubelet_message"]
    fix = result["fix"]
    assert fix["safety"] == "manual"
    create = [line for line in fix["plan"] if " create secret docker-registry " in line]
    assert create == [
        "kubectl -n default create secret docker-registry nexus --docker-server=nexus.lab:5000 "
        "--docker-username=jdupont --docker-password='<password>' --docker-email=jdupont@lab.local"
    ]
    # A 1.6 kubectl writes kubernetes.io/dockercfg; a type cannot change: delete, then create.
    assert "kubectl -n default delete secret nexus" in fix["plan"]
    text = json.dumps(report)
    for word in ("Nexus#2017pw", b64("jdupont:Nexus#2017pw"), "Sup3r-DB-pass"):
        assert word not in text


@pytest.mark.parametrize(
    "bundle", ["seed-lab-healthy", "registry-legacy-dockercfg", "registry-dockerhub-alias"]
)
def test_matching_secrets_are_ok(bundle: str) -> None:
    result = run_one(RegistryPullSecret, context(BUNDLES / bundle))
    assert result.status is Status.OK, result
    assert "name the registries" in result.summary


def test_modern_bundle_without_pull_secrets_is_ok() -> None:
    verdict = run_check(BUNDLES / "modern-coredns")
    assert verdict.status is Status.OK
    assert "none references a pull secret" in verdict.summary


def test_missing_secret_fails_and_offers_create() -> None:
    verdict = run_check(BUNDLES / "registry-missing-secret")
    assert verdict.status is Status.FAIL
    [finding] = verdict.findings
    assert finding.message.startswith("pull secret shop/regcred does not exist")
    assert "cannot pull registry.corp.example:5000/shop/web:2.3" in finding.message
    assert "no basic auth credentials" in finding.evidence["kubelet_message"]
    assert verdict.fix is not None
    plan = verdict.fix.plan()
    assert plan[0] == (
        "kubectl -n shop create secret docker-registry regcred "
        "--docker-server=registry.corp.example:5000 --docker-username='<user>' "
        "--docker-password='<password>'"
    )
    assert "kubectl -n shop delete pod web-7c9d8f6b5-x2k4q" in plan
    assert not any("replace" in line or "delete secret" in line for line in plan)


def test_wrong_type_fails_and_is_recreated_not_replaced() -> None:
    verdict = run_check(BUNDLES / "registry-wrong-type")
    assert verdict.status is Status.FAIL
    [finding] = verdict.findings
    assert "type Opaque" in finding.message and "ignores" in finding.message
    assert finding.evidence["secret_data_keys"] == [".dockerconfigjson"]
    assert finding.evidence["secret_hosts"] == ["harbor.example.com"]
    assert "kubectl create secret generic" in (finding.hint or "")
    assert verdict.fix is not None
    plan = verdict.fix.plan()
    assert "kubectl -n platform delete secret regcred" in plan
    assert any(
        line.startswith("kubectl -n platform create secret docker-registry regcred")
        and "--docker-server=harbor.example.com" in line
        and "'--docker-username=robot$platform'" in line
        for line in plan
    )
    assert "h4rb0r-robot-tok3n" not in json.dumps([f.to_json() for f in verdict.findings] + plan)


def test_port_mismatch_on_a_redacted_bundle() -> None:
    verdict = run_check(BUNDLES / "registry-port-mismatch")
    assert verdict.status is Status.FAIL
    [finding] = verdict.findings
    assert "names nexus.lab, not nexus.lab:5000" in finding.message
    assert "port" in finding.message
    assert finding.evidence["secret_users"] == ["ci-bot"]
    assert verdict.fix is not None
    # 1.29: same type → one replace, no window without the secret
    assert verdict.fix.plan()[0] == (
        "kubectl -n team create secret docker-registry nexus --docker-server=nexus.lab:5000 "
        "--docker-username=ci-bot --docker-password='<password>' --docker-email=ci@lab.local "
        "--dry-run=client -o yaml | kubectl replace -f -"
    )


# -- built bundles for the remaining decisions ------------------------------------------


def make_bundle(
    tmp: Path,
    pods: list[dict[str, Any]],
    secrets: list[dict[str, Any]] | None,
    version: str = "v1.29.4",
    events: list[dict[str, Any]] | None = None,
) -> Path:
    cluster = tmp / "bundle" / "cluster"
    cluster.mkdir(parents=True)
    (tmp / "bundle" / "kdoctor-bundle.json").write_text(
        json.dumps({"format": "kdoctor-bundle", "version": 1, "node": "n"})
    )
    (cluster / "version.json").write_text(json.dumps({"serverVersion": {"gitVersion": version}}))
    (cluster / "pods.json").write_text(json.dumps({"kind": "List", "items": pods}))
    if secrets is not None:
        (cluster / "secrets.json").write_text(json.dumps({"kind": "List", "items": secrets}))
    (cluster / "events.json").write_text(json.dumps({"kind": "List", "items": events or []}))
    return tmp / "bundle"


def pod(
    name: str,
    image: str,
    secrets: list[str] | None = None,
    waiting: str | None = None,
    message: str = "",
    namespace: str = "default",
    phase: str | None = None,
) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting, "message": message}} if waiting else {"running": {}}
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": image}]}
    if secrets is not None:
        spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    return {
        "metadata": {"name": name, "namespace": namespace, "uid": f"uid-{name}"},
        "spec": spec,
        "status": {
            "phase": phase or ("Pending" if waiting else "Running"),
            "containerStatuses": [{"name": "c", "image": image, "state": state}],
        },
    }


HUB_ONLY = {
    ".dockerconfigjson": config({"https://index.docker.io/v1/": {"username": "u", "password": "p"}})
}
NEXUS = {
    ".dockerconfigjson": config(
        {"nexus.lab:5000": {"username": "u", "password": "p", "auth": b64("u:p")}}
    )
}


def test_garbage_base64_in_a_bundle_is_a_finding_not_a_traceback(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        [pod("app", "nexus.lab:5000/team/app:1.0", ["nexus"], "ImagePullBackOff")],
        [secret("nexus", data={".dockerconfigjson": "@@not-base64@@"})],
    )
    code, report = check_json("--bundle", str(bundle), "--only", CHECK)
    result = report["checks"][0]
    assert result["status"] == "fail" and code == 2
    assert "not valid base64" in result["findings"][0]["message"]
    assert "@@not-base64@@" not in json.dumps(report)


def test_broken_secrets_json_is_an_error_naming_the_file(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, [pod("app", "nexus.lab:5000/a", ["nexus"], "ErrImagePull")], [])
    (bundle / "cluster" / "secrets.json").write_text("{not json")
    result = run_one(RegistryPullSecret, context(bundle))
    assert result.status is Status.ERROR
    assert "cluster/secrets.json" in result.summary


def test_missing_secrets_json_skips_naming_the_file(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path, [pod("app", "nexus.lab:5000/a", ["nexus"], "ErrImagePull")], None
    )
    result = run_one(RegistryPullSecret, context(bundle))
    assert result.status is Status.SKIP
    assert "cluster/secrets.json" in result.summary


def test_missing_pods_json_skips(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path, [], [])
    (bundle / "cluster" / "pods.json").unlink()
    result = run_one(RegistryPullSecret, context(bundle))
    assert result.status is Status.SKIP and "cluster/pods.json" in result.summary


def test_running_pod_with_docker_hub_only_secret_is_a_latent_warning(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        [pod("app", "nexus.lab:5000/team/app:1.0", ["nexus"])],
        [secret("nexus", data=HUB_ONLY)],
    )
    verdict = run_check(bundle)
    assert verdict.status is Status.WARN
    assert "a pull on another node would fail" in verdict.findings[0].message
    assert "--docker-server" in verdict.findings[0].message


def test_running_pod_with_secret_for_another_registry_and_a_public_image_is_ok(
    tmp_path: Path,
) -> None:
    bundle = make_bundle(
        tmp_path,
        [
            pod("app", "quay.io/prometheus/node-exporter:v1", ["nexus"]),
            pod("b", "busybox", ["nexus"]),
        ],
        [secret("nexus", data=NEXUS)],
    )
    assert run_check(bundle).status is Status.OK


def test_covered_but_refused_credentials_is_a_fail_with_recreate(tmp_path: Path) -> None:
    msg = 'failed to pull "nexus.lab:5000/team/app:1.0": 401 Unauthorized'
    bundle = make_bundle(
        tmp_path,
        [pod("app", "nexus.lab:5000/team/app:1.0", ["nexus"], "ErrImagePull", msg)],
        [secret("nexus", data=NEXUS)],
    )
    verdict = run_check(bundle)
    assert verdict.status is Status.FAIL
    assert (
        "refuses the credentials of pull secret default/nexus (user u)"
        in verdict.findings[0].message
    )
    assert verdict.fix is not None and "kubectl replace -f -" in verdict.fix.plan()[0]


def test_covered_but_image_not_found_is_only_a_warning(tmp_path: Path) -> None:
    msg = 'rpc error: code = NotFound desc = failed to pull: "nexus.lab:5000/team/app:9": not found'
    bundle = make_bundle(
        tmp_path,
        [pod("app", "nexus.lab:5000/team/app:9", ["nexus"], "ErrImagePull", msg)],
        [secret("nexus", data=NEXUS)],
    )
    verdict = run_check(bundle)
    assert verdict.status is Status.WARN
    assert "not a pull-secret problem" in verdict.findings[0].message
    assert verdict.fix is None


def test_no_pull_secret_and_registry_asks_for_credentials(tmp_path: Path) -> None:
    msg = (
        "Error response from daemon: Get https://nexus.lab:5000/v2/team/app/manifests/1.0: "
        "no basic auth credentials"
    )
    bundle = make_bundle(
        tmp_path, [pod("app", "nexus.lab:5000/team/app:1.0", None, "ErrImagePull", msg)], []
    )
    verdict = run_check(bundle)
    assert verdict.status is Status.FAIL
    assert "has no imagePullSecrets" in verdict.findings[0].message
    assert verdict.fix is not None
    plan = verdict.fix.plan()
    assert any("patch serviceaccount default" in line for line in plan)


def test_public_docker_hub_image_failing_is_not_blamed_on_secrets(tmp_path: Path) -> None:
    msg = "manifest for busybox:nope not found: manifest unknown"
    bundle = make_bundle(
        tmp_path,
        [pod("app", "busybox:nope", ["nexus"], "ErrImagePull", msg)],
        [secret("nexus", data=NEXUS)],
    )
    verdict = run_check(bundle)
    assert verdict.status is Status.WARN
    assert verdict.fix is None


def test_path_mismatch_and_event_message(tmp_path: Path) -> None:
    data = {
        ".dockerconfigjson": config({"nexus.lab:5000/other": {"username": "u", "password": "p"}})
    }
    app = pod("app", "nexus.lab:5000/team/app:1.0", ["nexus"], "ImagePullBackOff",
              'Back-off pulling image "nexus.lab:5000/team/app:1.0"')  # fmt: skip
    event: dict[str, Any] = {
        "involvedObject": {
            "kind": "Pod",
            "name": "app",
            "uid": "uid-app",
            "fieldPath": "spec.containers{c}",
        },
        "type": "Warning",
        "reason": "Failed",
        "message": 'Failed to pull image "nexus.lab:5000/team/app:1.0": 401 Unauthorized',
        "lastTimestamp": "2024-01-01T00:00:00Z",
        "metadata": {"name": "app.1", "namespace": "default"},
    }
    stale = dict(
        event, involvedObject=dict(event["involvedObject"], uid="older-pod"), message="old"
    )
    bundle = make_bundle(tmp_path, [app], [secret("nexus", data=data)], events=[event, stale])
    verdict = run_check(bundle)
    [finding] = verdict.findings
    assert "whose path does not contain the repository" in finding.message
    assert finding.evidence["kubelet_message"].endswith("401 Unauthorized")


def test_many_pods_are_grouped_in_one_finding(tmp_path: Path) -> None:
    pods = [
        pod(f"app-{i}", "nexus.lab:5000/team/app:1.0", ["nexus"], "ImagePullBackOff")
        for i in range(30)
    ]
    bundle = make_bundle(tmp_path, pods, [secret("nexus", data=HUB_ONLY)])
    verdict = run_check(bundle)
    [finding] = verdict.findings
    assert finding.message.startswith("30 pods (default/app-0, …) cannot pull")
    assert len(finding.evidence["pods"]) == 21 and finding.evidence["pods"][-1] == "… and 10 more"


def test_kubectl_19_shape_is_rebuilt_from_a_config_json(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        [pod("app", "registry.example.com:5000/a:1", ["old"], "ErrImagePull")],
        [secret("old", stype="kubernetes.io/dockercfg", data={".dockercfg": WITH_SERVER})],
        version="v1.9.11",
    )
    verdict = run_check(bundle)
    assert verdict.status is Status.FAIL
    assert "kubernetes#61358" in verdict.findings[0].message
    assert verdict.fix is not None
    plan = verdict.fix.plan()
    # kubectl 1.9 would write the broken shape again: a config.json, and the type changes.
    assert "kubectl -n default delete secret old" in plan
    assert (
        "kubectl -n default create secret generic old --type=kubernetes.io/dockerconfigjson "
        '--from-file=.dockerconfigjson="$HOME/.docker/config.json"'
    ) in plan
    assert not any("docker-registry" in line for line in plan if not line.startswith("#"))


def test_servers_before_1_18_get_the_old_dry_run_flag(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        [pod("app", "nexus.lab:5000/a:1", ["nexus"], "ImagePullBackOff")],
        [secret("nexus", data=HUB_ONLY)],
        version="v1.13.5",
    )
    verdict = run_check(bundle)
    assert verdict.fix is not None
    assert verdict.fix.plan()[0] == (
        "kubectl -n default create secret docker-registry nexus --docker-server=nexus.lab:5000 "
        "--docker-username=u --docker-password='<password>' --dry-run -o yaml "
        "| kubectl replace -f -"
    )


def test_an_immutable_secret_is_deleted_and_created(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        [pod("app", "nexus.lab:5000/a:1", ["nexus"], "ImagePullBackOff")],
        [secret("nexus", data=HUB_ONLY, immutable=True)],
    )
    verdict = run_check(bundle)
    assert verdict.fix is not None
    plan = verdict.fix.plan()
    assert plan[0].startswith("# default/nexus is immutable")
    assert plan[1] == "kubectl -n default delete secret nexus"
    assert plan[2].startswith("kubectl -n default create secret docker-registry nexus ")
    assert "replace" not in plan[2]


def test_a_secret_serving_two_registries_keeps_both(tmp_path: Path) -> None:
    data = {
        ".dockerconfigjson": config(
            {
                "https://index.docker.io/v1/": {"username": "u", "password": "p"},
                "quay.io": {"username": "q", "password": "p"},
            }
        )
    }
    bundle = make_bundle(
        tmp_path,
        [
            pod("app", "nexus.lab:5000/a:1", ["multi"], "ImagePullBackOff"),
            pod("side", "quay.io/acme/side:1", ["multi"]),
        ],
        [secret("multi", data=data)],
    )
    verdict = run_check(bundle)
    assert verdict.status is Status.FAIL
    assert "names only Docker Hub" not in verdict.findings[0].message  # quay.io is there too
    assert verdict.fix is not None
    plan = verdict.fix.plan()
    assert plan[0].startswith("# default/multi: it must name nexus.lab:5000, quay.io;")
    assert "--from-file=.dockerconfigjson=" in plan[1] and plan[1].endswith("kubectl replace -f -")


def test_terminated_pods_are_ignored_and_invalid_images_do_not_crash(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        [
            pod("done", "nexus.lab:5000/a:1", ["missing"], phase="Succeeded"),
            pod("bad", "Not A Valid Image", ["nexus"], "ErrImagePull"),
        ],
        [secret("nexus", data=NEXUS)],
    )
    verdict = run_check(bundle)
    assert verdict.status is Status.OK, verdict


def test_no_report_of_an_unredacted_bundle_holds_a_secret_value() -> None:
    """Every credential of every fixture's secrets.json, in every encoding, is absent."""
    for secrets_file in sorted(BUNDLES.glob("*/cluster/secrets.json")):
        needles = secret_needles(json.loads(secrets_file.read_text()))
        result = run_one(RegistryPullSecret, context(secrets_file.parent.parent))
        text = json.dumps(result.findings and [f.to_json() for f in result.findings])
        text += json.dumps(result.fix.to_json() if result.fix else None) + result.summary
        leaked = [n for n in needles if n in text]
        assert not leaked, (secrets_file, leaked)


def secret_needles(doc: dict[str, Any]) -> set[str]:
    """Secret values of a secrets.json, encoded and decoded (not hosts, users or e-mails)."""
    needles: set[str] = set()

    def add(value: str) -> None:
        if len(value) >= 6 and value != REDACTED:
            needles.update({value, b64(value), json.dumps(value)[1:-1]})

    for item in doc.get("items", []):
        for key, value in (item.get("data") or {}).items():
            if key == "namespace" or not value:
                continue
            add(value)
            try:
                decoded = base64.b64decode(value).decode()
            except ValueError:
                continue
            if key in (".dockerconfigjson", ".dockercfg"):
                payload = json.loads(decoded)
                entries = payload.get("auths", payload)
                for entry in entries.values():
                    for field in ("password", "auth", "identitytoken", "registrytoken"):
                        if entry.get(field):
                            add(entry[field])
                    if entry.get("auth") and entry["auth"] != REDACTED:
                        add(base64.b64decode(entry["auth"]).decode())
            else:
                add(decoded)
        for value in (item.get("stringData") or {}).values():
            add(value)
        last = ((item.get("metadata") or {}).get("annotations") or {}).get(LAST_APPLIED)
        if last:
            add(last.strip())
            for value in (json.loads(last).get("stringData") or {}).values():
                add(value)
    return needles


def test_many_referenced_secrets_are_read_with_one_list(tmp_path: Path) -> None:
    from doctor.facts.cluster import ClusterConfig
    from doctor.facts.kube import LiveCluster
    from tests.apiserver import ApiServer

    pods = [pod(f"app-{i}", "nexus.lab:5000/a:1", [f"s{i}"]) for i in range(120)]
    secrets = [secret(f"s{i}", data=NEXUS) for i in range(119)]  # s119 does not exist
    secrets.append(
        secret("tok", stype="kubernetes.io/service-account-token", data={"token": b64("t")})
    )
    bundle = make_bundle(tmp_path, pods, secrets)
    offline = run_check(bundle)
    assert offline.status is Status.WARN
    assert [f.message for f in offline.findings] == [
        "pull secret default/s119 does not exist (named in imagePullSecrets by pod default/app-119)"
    ]
    with ApiServer(bundle, tls=True) as server:
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
        cluster = LiveCluster(ClusterConfig(kubeconfig, None), timeout=10)
        live = RegistryPullSecret().run(CheckContext(node=BundleNodeFacts(bundle), cluster=cluster))
        lists = server.requests_matching(verb="list", path="/api/v1/secrets")
        gets = [r.name for r in server.requests_matching(verb="get") if r.resource == "secrets"]
    assert [r.query.get("fieldSelector") for r in lists] == [
        "type!=kubernetes.io/service-account-token"
    ]
    assert gets == ["s119"]
    assert [f.to_json() for f in live.findings] == [f.to_json() for f in offline.findings]
