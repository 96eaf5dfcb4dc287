"""cluster.kube-proxy and the kube-proxy proxy-mode fix (fixes/kube_proxy.py).

Unit tests for the mode readers and the patch builders (flag in place / appended once,
ConfigMap `mode:` line only); bundle tests for every verdict (in-process and through the
CLI); end-to-end tests apply the fix with the CLI against the test API server and read its
state and request log: seed lab (flag appended), flag replaced, modern (ConfigMap patched,
DaemonSet untouched, userspace refused), a concurrent writer (409 → nothing changed), a
rollback (pods never ready → previous spec back), --dry-run, and real kubectl.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from checks.cluster_kube_proxy import KubeProxy
from doctor.core.context import Options
from doctor.core.model import CheckResult, Status
from fixes import kube_proxy as kp
from fixes.kube import patch_is_noop
from tests.conftest import BUNDLES, KUBECTL, check_json, kdoctor, result_of, run_on_bundle
from tests.conftest import copy_bundle as variant
from tests.conftest import edit_bundle as edit

ID = "cluster.kube-proxy"
HEALTHY = BUNDLES / "seed-lab-healthy"
BROKEN = BUNDLES / "seed-lab-broken"
MODERN = BUNDLES / "modern-coredns"
ROUTING = BUNDLES / "kube-proxy-seed-routing"
FLAG_IPTABLES = BUNDLES / "kube-proxy-flag-iptables"
MODERN_USERSPACE = BUNDLES / "kube-proxy-modern-userspace"
FLAG_IGNORED = BUNDLES / "kube-proxy-flag-ignored"


# ---------------------------------------------------------------- helpers


def run_check(bundle: Path, proxy_mode: str | None = None) -> CheckResult:
    return run_on_bundle(KubeProxy, bundle, Options(proxy_mode=proxy_mode))


def proxy_ds(items: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in items if d["metadata"]["name"] == "kube-proxy")


def set_command(*extra: str) -> Callable[[Any], None]:
    """Append to the kube-proxy command: of a DaemonSet list's items, or of one DaemonSet."""

    def change(items: Any) -> None:
        ds = proxy_ds(items) if isinstance(items, list) else items
        ds["spec"]["template"]["spec"]["containers"][0]["command"].extend(extra)

    return change


def plan_text(result: CheckResult) -> str:
    assert result.fix is not None, result
    return "\n".join(result.fix.plan())


# ---------------------------------------------------------------- units: the flag


def container(command: list[str] | None = None, args: list[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "kube-proxy"}
    if command is not None:
        out["command"] = command
    if args is not None:
        out["args"] = args
    return out


def test_flag_is_appended_once_to_command() -> None:
    c = container(["/usr/local/bin/kube-proxy", "--kubeconfig=/run/kubeconfig"])
    new = kp.set_flag(c, "userspace")
    assert new["command"] == [
        "/usr/local/bin/kube-proxy", "--kubeconfig=/run/kubeconfig", "--proxy-mode=userspace",
    ]  # fmt: skip
    assert c["command"][-1] == "--kubeconfig=/run/kubeconfig"  # the input is not changed
    assert kp.set_flag(new, "userspace") == new  # idempotent: never a second flag


def test_flag_goes_to_args_when_the_container_passes_flags_there() -> None:
    c = container(["kube-proxy"], ["--v=2"])
    assert kp.set_flag(c, "iptables")["args"] == ["--v=2", "--proxy-mode=iptables"]


@pytest.mark.parametrize(
    ("command", "args", "want_command", "want_args"),
    [
        (["kube-proxy", "--proxy-mode=iptables", "--v=2"], None,
         ["kube-proxy", "--proxy-mode=userspace", "--v=2"], None),
        (["kube-proxy", "--proxy-mode", "iptables", "--v=2"], None,
         ["kube-proxy", "--proxy-mode", "userspace", "--v=2"], None),
        (["kube-proxy"], ["--proxy-mode", "ipvs"], ["kube-proxy"], ["--proxy-mode", "userspace"]),
        # the seed's workaround applied twice, the second time by hand in args: one is left
        (["kube-proxy", "--proxy-mode=userspace"], ["--proxy-mode", "iptables", "--v=2"],
         ["kube-proxy", "--proxy-mode=userspace"], ["--v=2"]),
        (["kube-proxy", "--proxy-mode=iptables", "--proxy-mode=iptables"], None,
         ["kube-proxy", "--proxy-mode=userspace"], None),
    ],
)  # fmt: skip
def test_flag_is_replaced_in_place_in_either_form(
    command: list[str], args: list[str] | None, want_command: list[str], want_args: list[str] | None
) -> None:
    new = kp.set_flag(container(command, args), "userspace")
    assert new["command"] == want_command
    assert new.get("args") == want_args
    tokens = [*new["command"], *(new.get("args") or [])]
    assert sum(t.startswith("--proxy-mode") for t in tokens) == 1


def test_flag_without_command_or_args_is_not_patchable() -> None:
    with pytest.raises(kp.NotPatchable, match="entrypoint"):
        kp.set_flag(container(), "iptables")


# ---------------------------------------------------------------- units: the ConfigMap


KUBEADM_CONF = (MODERN / "cluster" / "configmaps.json").read_text()


def kubeadm_config_conf() -> str:
    doc = json.loads(KUBEADM_CONF)
    cm = next(i for i in doc["items"] if i["metadata"]["name"] == "kube-proxy")
    text: str = cm["data"]["config.conf"]
    return text


def test_config_mode_line_changed_rest_byte_identical() -> None:
    text = kubeadm_config_conf()
    assert 'mode: ""\n' in text
    new, line = kp.set_config_mode(text, "iptables")
    assert new == text.replace('mode: ""\n', 'mode: "iptables"\n')
    assert new.splitlines()[line - 1] == 'mode: "iptables"'


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("kind: KubeProxyConfiguration\nmode: userspace # seed\nclusterCIDR: 10.32.0.0/12\n",
         "kind: KubeProxyConfiguration\nmode: iptables # seed\nclusterCIDR: 10.32.0.0/12\n"),
        ("kind: KubeProxyConfiguration\r\nmode: 'ipvs'\r\n",
         "kind: KubeProxyConfiguration\r\nmode: 'iptables'\r\n"),
        ("kind: KubeProxyConfiguration\nclusterCIDR: 10.32.0.0/12\n",
         "kind: KubeProxyConfiguration\nclusterCIDR: 10.32.0.0/12\nmode: iptables\n"),
        ("kind: KubeProxyConfiguration", "kind: KubeProxyConfiguration\nmode: iptables\n"),
        # a nested `mode:` (ipvs.mode, say) is not the top-level one
        ("kind: KubeProxyConfiguration\nwinkernel:\n  mode: x\n",
         "kind: KubeProxyConfiguration\nwinkernel:\n  mode: x\nmode: iptables\n"),
    ],
)  # fmt: skip
def test_config_mode_replaced_or_inserted(text: str, want: str) -> None:
    assert kp.set_config_mode(text, "iptables")[0] == want


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"kind": "KubeProxyConfiguration", "mode": "userspace"}', "layout"),
        ('{"kind": "KubeProxyConfiguration"}', "break the YAML"),
        ('"mode": userspace\nkind: KubeProxyConfiguration\n', "layout"),
        ("mode: userspace\nmode: iptables\n", "more than one"),
        ("- a\n- b\n", "not a YAML mapping"),
        ("kind: [unclosed\n", "not valid YAML"),
    ],
)
def test_config_that_cannot_be_changed_line_by_line_is_refused(text: str, reason: str) -> None:
    with pytest.raises(kp.NotPatchable, match=reason):
        kp.set_config_mode(text, "iptables")


# ---------------------------------------------------------------- units: modes by version


@pytest.mark.parametrize(
    ("mode", "version", "severity"),
    [
        ("iptables", (1, 6), None),
        ("", (1, 29), "fail"),  # an empty string is not a mode (the check maps it to iptables)
        ("userspace", (1, 6), "warn"),
        ("userspace", (1, 25), "warn"),
        ("userspace", (1, 26), "fail"),
        ("userspace", None, "warn"),
        ("nftables", (1, 29), "fail"),
        ("nftables", (1, 31), None),
        ("ipvs", (1, 9), "warn"),
        ("ipvs", (1, 29), None),
        ("kernelspace", (1, 29), "fail"),
        ("bogus", (1, 10), "fail"),
    ],
)
def test_mode_problem(mode: str, version: tuple[int, int] | None, severity: str | None) -> None:
    problem = kp.mode_problem(mode, version)
    assert (problem[0] if problem else None) == severity


def test_userspace_is_refused_from_126_with_iptables_offered() -> None:
    assert kp.choose_mode("userspace", "iptables", (1, 25)).mode == "userspace"
    refused = kp.choose_mode("userspace", "iptables", (1, 29))
    assert refused.mode == "iptables" and refused.requested == "userspace"
    assert refused.refused and "removed in v1.26" in refused.refused
    assert "nftables" not in refused.refused
    assert "nftables" in (kp.choose_mode("userspace", "iptables", (1, 33)).refused or "")
    assert kp.choose_mode(None, "userspace", None).mode == "iptables"  # unknown version
    assert kp.choose_mode("nftables", "iptables", (1, 30)).mode == "iptables"
    assert kp.choose_mode("ipvs", "iptables", (1, 29)) == kp.ModeChoice("ipvs", "ipvs")


def test_patch_is_noop() -> None:
    obj = {"metadata": {"name": "x"}, "data": {"a": "1", "b": "2"}, "spec": {"l": [1, 2]}}
    assert patch_is_noop(obj, {"data": {"a": "1"}})
    assert not patch_is_noop(obj, {"data": {"a": "2"}})
    assert patch_is_noop(obj, {"spec": {"l": [1, 2]}})
    assert not patch_is_noop(obj, {"spec": {"l": [1]}})  # merge patch replaces lists
    assert not patch_is_noop(obj, {"data": {"a": None}})  # null deletes
    assert patch_is_noop(obj, {"data": {"c": None}})
    assert not patch_is_noop(obj, {"status": {"x": 1}})


def test_selector_with_expressions() -> None:
    ds = {"spec": {"selector": {"matchLabels": {"k8s-app": "kube-proxy"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["node", "edge"]},
        {"key": "canary", "operator": "DoesNotExist"}]}}}  # fmt: skip
    assert kp.daemonset_selector(ds) == "k8s-app=kube-proxy,tier in (node,edge),!canary"
    legacy = {"spec": {"template": {"metadata": {"labels": {"component": "kube-proxy"}}}}}
    assert kp.daemonset_selector(legacy) == "component=kube-proxy"


# ---------------------------------------------------------------- bundles: verdicts


@pytest.mark.parametrize("bundle", [HEALTHY, BROKEN], ids=lambda b: b.name)
def test_seed_lab_flag_based_iptables_is_ok(bundle: Path) -> None:
    result = run_check(bundle)
    assert result.status is Status.OK, result
    assert "mode iptables" in result.summary and "no --proxy-mode flag (default)" in result.summary
    assert "v1.6" in result.summary
    assert result.fix is None


def test_healthy_flag_based_iptables_mode_set_explicitly_is_ok(tmp_path: Path) -> None:
    bundle = variant(HEALTHY, tmp_path)
    edit(bundle, "daemonsets", set_command("--proxy-mode", "iptables"))
    result = run_check(bundle)
    assert result.status is Status.OK, result
    assert "command[2] `--proxy-mode iptables`" in result.summary


def test_modern_mode_comes_from_the_configmap_line() -> None:
    result = run_check(MODERN)
    assert result.status is Status.OK, result
    assert 'ConfigMap kube-system/kube-proxy key config.conf line 47 `mode: ""`' in result.summary
    assert "mode iptables" in result.summary


def test_seed_routing_broken_fails_and_offers_userspace_appended() -> None:
    result = run_check(ROUTING)
    assert result.status is Status.FAIL
    (finding,) = result.findings
    assert "Service routing is broken on kubernetes-1" in finding.message
    ev = finding.evidence
    assert ev["mode"] == "iptables" and ev["server_version"] == "v1.6"
    assert ev["daemonset_resourceVersion"] == "328"
    assert ev["unreachable"] == "10.96.0.1:443" and "i/o timeout" in ev["log_line"]
    assert result.fix is not None and result.fix.id == "cluster.kube-proxy.proxy-mode"
    plan = plan_text(result)
    assert "append --proxy-mode=userspace" in result.fix.title
    assert '"resourceVersion": "328"' in plan  # the patch is preconditioned
    assert plan.count('"--proxy-mode=userspace"') == 2  # the patch body and the diff, once each
    assert "kubectl -n kube-system delete pods -l component=kube-proxy,k8s-app=kube-proxy" in plan


def test_seed_routing_user_picks_iptables_only_restart() -> None:
    result = run_check(ROUTING, proxy_mode="iptables")
    assert result.fix is not None
    assert result.fix.title.startswith("Restart the kube-proxy pods (mode is already iptables)")
    assert "patch" not in plan_text(result)


def test_existing_flag_is_replaced_not_duplicated() -> None:
    result = run_check(FLAG_IPTABLES)
    assert result.status is Status.FAIL
    assert result.fix is not None and "replace --proxy-mode=userspace" in result.fix.title
    patch = result.fix.actions[1]
    assert isinstance(patch, kp.PatchObject)
    command = patch.patch["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["/usr/local/bin/kube-proxy", "--kubeconfig=/run/kubeconfig",
                       "--proxy-mode=userspace"]  # fmt: skip


def test_modern_userspace_in_configmap_fails_and_offers_iptables_in_the_configmap() -> None:
    result = run_check(MODERN_USERSPACE)
    assert result.status is Status.FAIL
    (finding,) = result.findings
    assert "removed in v1.26" in finding.message
    assert finding.resource == "configmap/kube-system/kube-proxy"
    assert finding.evidence["mode_source"].endswith("line 47 `mode: userspace`")
    assert finding.evidence["configmap_resourceVersion"] == "812"
    assert result.fix is not None
    assert (
        "set `mode: iptables` in ConfigMap kube-proxy key config.conf line 47" in result.fix.title
    )
    kinds = [type(a).__name__ for a in result.fix.actions]
    assert kinds == ["RestartOnRollback", "PatchObject", "RestartPods", "WaitForPods"]
    patch = result.fix.actions[1]
    assert isinstance(patch, kp.PatchObject) and patch.resource.kind == "ConfigMap"
    assert "patch daemonset" not in plan_text(result)


def test_modern_userspace_requested_is_refused_with_iptables_offered() -> None:
    result = run_check(MODERN_USERSPACE, proxy_mode="userspace")
    assert result.fix is not None
    assert "--proxy-mode userspace refused: userspace was removed in v1.26" in result.fix.title
    assert "mode userspace → iptables" in result.fix.title


def test_modern_nftables_requested_on_129_is_refused() -> None:
    result = run_check(MODERN_USERSPACE, proxy_mode="nftables")
    assert result.fix is not None and "nftables refused" in result.fix.title
    assert "→ iptables" in result.fix.title


def test_flag_next_to_config_is_ignored_warn_without_fix() -> None:
    result = run_check(FLAG_IGNORED)
    assert result.status is Status.WARN
    (finding,) = result.findings
    assert "--proxy-mode=userspace is ignored" in finding.message
    assert finding.evidence["mode"] == "iptables"
    assert "command[3] `--proxy-mode=userspace`" in finding.evidence["ignored_flag"]
    assert result.fix is None  # a warning: only an explicit --proxy-mode gets a fix
    picked = run_check(FLAG_IGNORED, proxy_mode="ipvs")
    assert picked.fix is not None and "ConfigMap kube-proxy" in picked.fix.title
    assert run_check(FLAG_IGNORED, proxy_mode="iptables").fix is None  # already in effect


def test_userspace_below_126_is_warn_explained_and_no_fix_by_default(tmp_path: Path) -> None:
    bundle = variant(HEALTHY, tmp_path)
    edit(bundle, "daemonsets", set_command("--proxy-mode=userspace"))
    result = run_check(bundle)
    assert result.status is Status.WARN
    (finding,) = result.findings
    assert (
        "legacy proxier" in finding.message and "copied through the kube-proxy" in finding.message
    )
    assert result.fix is None  # kdoctor fix --yes must not flip a deliberate workaround back
    picked = run_check(bundle, proxy_mode="iptables")
    assert picked.fix is not None and "replace --proxy-mode=iptables" in picked.fix.title


def test_not_ready_node_is_named_with_its_cause(tmp_path: Path) -> None:
    bundle = variant(MODERN, tmp_path)

    def crash(items: list[dict[str, Any]]) -> None:
        pod = next(p for p in items if p["metadata"]["name"] == "kube-proxy-tq5wn")
        pod["status"]["conditions"] = [
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}
        ]
        cs = pod["status"]["containerStatuses"][0]
        cs.update({"ready": False, "restartCount": 4, "state": {"waiting": {
            "reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})  # fmt: skip

    edit(bundle, "pods", crash)
    edit(bundle, "daemonsets", lambda items: proxy_ds(items)["status"].update(numberReady=2))
    result = run_check(bundle)
    assert result.status is Status.FAIL
    (finding,) = result.findings
    assert finding.message == "kube-proxy is not ready on 1 node(s): worker-2"
    assert "kube-proxy-tq5wn" in finding.evidence["not_ready"]["worker-2"]
    assert "CrashLoopBackOff" in finding.evidence["causes"]["worker-2"]
    assert result.fix is None


def test_node_without_a_pod_and_tainted_nodes(tmp_path: Path) -> None:
    bundle = variant(HEALTHY, tmp_path)
    edit(bundle, "pods", lambda items: items.remove(
        next(p for p in items if p["metadata"]["name"] == "kube-proxy-2vsmn")))  # fmt: skip
    result = run_check(bundle)
    assert result.status is Status.FAIL
    assert result.findings[0].evidence["not_ready"] == {"kubernetes-2": "no kube-proxy pod"}
    # without a toleration for the master taint, kubernetes-0 is not expected to run one
    bundle2 = variant(HEALTHY, tmp_path, "b2")
    edit(bundle2, "pods", lambda items: items.remove(
        next(p for p in items if p["metadata"]["name"] == "kube-proxy-2jzmm")))  # fmt: skip
    edit(bundle2, "daemonsets", lambda items: proxy_ds(items)["spec"]["template"]["spec"].update(
        tolerations=[]))  # fmt: skip
    edit(bundle2, "daemonsets", lambda items: proxy_ds(items)["status"].update(
        desiredNumberScheduled=2, numberReady=2, numberAvailable=2))  # fmt: skip
    assert run_check(bundle2).status is Status.OK


def test_found_by_label_when_named_otherwise(tmp_path: Path) -> None:
    bundle = variant(HEALTHY, tmp_path)
    edit(bundle, "daemonsets", lambda items: proxy_ds(items)["metadata"].update(
        name="kube-proxy-amd64", labels={"component": "kube-proxy"}))  # fmt: skip
    result = run_check(bundle)
    assert result.status is Status.OK and "kube-proxy-amd64" in result.summary


def test_no_daemonset_fails(tmp_path: Path) -> None:
    bundle = variant(HEALTHY, tmp_path)
    edit(bundle, "daemonsets", lambda items: items.remove(proxy_ds(items)))
    result = run_check(bundle)
    assert result.status is Status.FAIL
    assert "no kube-proxy DaemonSet" in result.summary
    assert result.findings[0].evidence["looked_for"] == [
        "daemonset/kube-system/kube-proxy",
        "daemonsets -l component=kube-proxy",
        "daemonsets -l k8s-app=kube-proxy",
    ]


def test_missing_configmap_fails(tmp_path: Path) -> None:
    bundle = variant(MODERN, tmp_path)
    edit(bundle, "configmaps", lambda items: items.remove(
        next(c for c in items if c["metadata"]["name"] == "kube-proxy")))  # fmt: skip
    result = run_check(bundle)
    assert result.status is Status.FAIL
    assert "ConfigMap kube-proxy does not exist" in result.summary


def test_missing_and_broken_facts(tmp_path: Path) -> None:
    bundle = variant(MODERN, tmp_path)
    (bundle / "cluster" / "daemonsets.json").unlink()
    result = run_check(bundle)
    assert result.status is Status.SKIP and "cluster/daemonsets.json" in result.summary
    bundle2 = variant(MODERN, tmp_path, "b2")
    (bundle2 / "cluster" / "configmaps.json").unlink()
    assert run_check(bundle2).status is Status.SKIP
    bundle3 = variant(MODERN, tmp_path, "b3")

    def bad_yaml(items: list[dict[str, Any]]) -> None:
        cm = next(c for c in items if c["metadata"]["name"] == "kube-proxy")
        cm["data"]["config.conf"] = "kind: [KubeProxyConfiguration\n"

    edit(bundle3, "configmaps", bad_yaml)
    result3 = run_check(bundle3)
    assert result3.status is Status.ERROR
    assert "ConfigMap kube-system/kube-proxy key config.conf: invalid YAML" in result3.summary


def test_cli_bundles_exit_codes_and_schema() -> None:
    code, report = check_json("--bundle", str(ROUTING), "--only", ID)
    assert code == 2
    result = result_of(report, ID)
    assert (
        result["fix"]["safety"] == "unsafe"
        and result["fix"]["id"] == "cluster.kube-proxy.proxy-mode"
    )
    code, report = check_json("--bundle", str(FLAG_IGNORED), "--only", ID)
    assert code == 1 and result_of(report, ID)["status"] == "warn"
    code, report = check_json("--bundle", str(MODERN), "--only", ID)
    assert code == 0 and result_of(report, ID)["status"] == "ok"
    doc = kdoctor("explain", ID)
    assert doc.returncode == 0 and "## Fix safety" in doc.stdout


# ---------------------------------------------------------------- end to end (test API server)

apiserver = pytest.importorskip("tests.apiserver")

DS = ("apps/v1", "daemonsets", "kube-system", "kube-proxy")
CM = ("v1", "configmaps", "kube-system", "kube-proxy")


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def fix(kcfg: Path, state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return kdoctor(
        "fix", ID, "--kubeconfig", str(kcfg), "--yes", "--unsafe", "--state-dir", str(state), *extra
    )


def proxy_pods(server: Any) -> dict[str, str]:
    """node → kube-proxy pod name."""
    return {
        p["spec"]["nodeName"]: p["metadata"]["name"]
        for p in server.list_objects("v1", "pods", "kube-system")
        if p["metadata"]["name"].startswith("kube-proxy-")
    }


def writes(server: Any) -> list[tuple[str, str, str, int]]:
    return [
        (r.method, r.resource, r.name, r.status)
        for r in server.requests
        if r.method in ("PATCH", "PUT", "POST", "DELETE")
    ]


def command_of(ds: dict[str, Any]) -> list[str]:
    result: list[str] = ds["spec"]["template"]["spec"]["containers"][0]["command"]
    return result


def test_live_seed_lab_flag_appended_pods_restarted(tmp_path: Path, state: Path) -> None:
    with apiserver.ApiServer(ROUTING) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        before = proxy_pods(server)
        proc = fix(kcfg, state)
        patches = [r for r in server.requests if r.method == "PATCH"]
        assert len(patches) == 1 and patches[0].resource == "daemonsets"
        body = json.loads(patches[0].body)
        assert body["metadata"]["resourceVersion"] == "328"
        sent = body["spec"]["template"]["spec"]["containers"][0]["command"]
        assert sent == ["/usr/local/bin/kube-proxy", "--kubeconfig=/run/kubeconfig",
                        "--proxy-mode=userspace"]  # fmt: skip
        deleted = [r.name for r in server.requests if r.method == "DELETE"]
        assert sorted(deleted[:3]) == sorted(before.values())
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "applied; cluster.kube-proxy now reports warn" in proc.stdout  # userspace < 1.26
        ds = server.get_object(*DS)
        assert command_of(ds) == sent
        after = proxy_pods(server)
        assert set(after) == set(before) and not set(after.values()) & set(before.values())
        assert [w[0] for w in writes(server)] == ["PATCH", "DELETE", "DELETE", "DELETE"]
        journal = [json.loads(line) for line in (state / "journal.jsonl").read_text().splitlines()]
        assert journal[-1]["outcome"] == "applied" and journal[-1]["recheck_status"] == "warn"
        backups = list((state / "backups").glob("*/01-PatchObject/daemonset-kube-proxy.json"))
        assert command_of(json.loads(backups[0].read_text())) == [
            "/usr/local/bin/kube-proxy", "--kubeconfig=/run/kubeconfig"]  # fmt: skip
        # A second run: nothing to fix any more (the DNS pod's timeouts predate the restart).
        code, report = check_json("--kubeconfig", str(kcfg), "--only", ID)
        assert code == 1
        assert result_of(report, ID)["status"] == "warn" and result_of(report, ID)["fix"] is None
        if KUBECTL:
            out = subprocess.run(
                [KUBECTL, "--kubeconfig", str(kcfg), "-n", "kube-system", "get", "ds",
                 "kube-proxy", "-o", "json"],
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout  # fmt: skip
            seen = json.loads(out)["spec"]["template"]["spec"]["containers"][0]["command"]
            assert sum(a.startswith("--proxy-mode") for a in seen) == 1, seen


def test_live_existing_flag_replaced_not_duplicated(tmp_path: Path, state: Path) -> None:
    with apiserver.ApiServer(FLAG_IPTABLES) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        proc = fix(kcfg, state)
        (patch,) = [r for r in server.requests if r.method == "PATCH"]
        sent = json.loads(patch.body)["spec"]["template"]["spec"]["containers"][0]["command"]
        assert sent == ["/usr/local/bin/kube-proxy", "--kubeconfig=/run/kubeconfig",
                        "--proxy-mode=userspace"]  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert command_of(server.get_object(*DS)) == sent
        if KUBECTL:
            out = subprocess.run(
                [KUBECTL, "--kubeconfig", str(kcfg), "-n", "kube-system", "get", "ds",
                 "kube-proxy", "-o", "json"],
                capture_output=True, text=True, timeout=60, check=True,
            ).stdout  # fmt: skip
            seen = json.loads(out)["spec"]["template"]["spec"]["containers"][0]["command"]
            assert [a for a in seen if "proxy-mode" in a] == ["--proxy-mode=userspace"]


def test_live_modern_configmap_patched_daemonset_untouched(tmp_path: Path, state: Path) -> None:
    with apiserver.ApiServer(MODERN_USERSPACE) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        ds_before = server.get_object(*DS)
        text_before = server.get_object(*CM)["data"]["config.conf"]
        pods_before = proxy_pods(server)
        proc = fix(kcfg, state, "--proxy-mode", "userspace")
        assert "--proxy-mode userspace refused: userspace was removed in v1.26" in proc.stdout
        (patch,) = [r for r in server.requests if r.method == "PATCH"]
        assert patch.resource == "configmaps"
        sent = json.loads(patch.body)
        assert sent["metadata"]["resourceVersion"] == "812"
        assert sent["data"]["config.conf"] == text_before.replace(
            "\nmode: userspace\n", "\nmode: iptables\n"
        )
        assert not [w for w in writes(server) if w[1] == "daemonsets"]
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "applied; cluster.kube-proxy now reports ok" in proc.stdout
        cm = server.get_object(*CM)
        assert cm["data"]["config.conf"] == text_before.replace(
            "\nmode: userspace\n", "\nmode: iptables\n"
        )
        assert cm["data"]["kubeconfig.conf"].startswith("apiVersion: v1\nkind: Config\n")
        ds_after = server.get_object(*DS)
        assert ds_after["metadata"]["resourceVersion"] == ds_before["metadata"]["resourceVersion"]
        assert ds_after["spec"] == ds_before["spec"]
        pods_after = proxy_pods(server)
        assert not set(pods_after.values()) & set(pods_before.values())


def test_live_concurrent_change_aborts_with_409_and_keeps_the_other_writers_object(
    tmp_path: Path, state: Path
) -> None:
    with apiserver.ApiServer(ROUTING) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        # The PATCH waits 2 s at the server before it is processed; meanwhile another writer
        # changes the DaemonSet (the plan was built from resourceVersion 328).
        server.faults.add(verb="patch", resource="daemonsets", delay=2.0, times=1)
        other_writer: dict[str, Any] = {}

        def change(ds: dict[str, Any]) -> None:
            ds["metadata"].setdefault("annotations", {})["owner"] = "someone else"
            ds["spec"]["template"]["spec"]["containers"][0]["image"] = (
                "gcr.io/google_containers/kube-proxy-amd64:v1.6.1"
            )

        def writer() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any(r.method == "PATCH" for r in server.requests):
                    other_writer["ds"] = server.mutate_object(*DS, change)
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=writer)
        thread.start()
        proc = fix(kcfg, state)
        thread.join()
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "changed since the plan was made (resourceVersion 328 is stale)" in proc.stdout
        assert "rolled-back" in proc.stdout
        (patch,) = [r for r in server.requests if r.method == "PATCH"]
        assert patch.status == 409
        assert writes(server) == [("PATCH", "daemonsets", "kube-proxy", 409)]  # nothing else
        now = server.get_object(*DS)
        assert now == other_writer["ds"]
        assert command_of(now) == ["/usr/local/bin/kube-proxy", "--kubeconfig=/run/kubeconfig"]
        journal = [json.loads(line) for line in (state / "journal.jsonl").read_text().splitlines()]
        assert journal[-1]["outcome"] == "rolled-back"


def test_live_concurrent_identical_change_is_not_written_twice(tmp_path: Path, state: Path) -> None:
    """409, but the other writer made exactly this change (the same fix, applied through the
    DNS check first): nothing to patch, the fix goes on and passes."""
    with apiserver.ApiServer(ROUTING) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        server.faults.add(verb="patch", resource="daemonsets", delay=2.0, times=1)

        def writer() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if any(r.method == "PATCH" for r in server.requests):
                    server.mutate_object(*DS, set_command("--proxy-mode=userspace"))
                    return
                time.sleep(0.02)

        thread = threading.Thread(target=writer)
        thread.start()
        proc = fix(kcfg, state)
        thread.join()
        assert "already holds this change: nothing to patch" in proc.stdout
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert [w[0] for w in writes(server)] == ["PATCH", "DELETE", "DELETE", "DELETE"]
        assert writes(server)[0][3] == 409
        assert command_of(server.get_object(*DS)).count("--proxy-mode=userspace") == 1


def test_live_rollback_when_the_new_pods_never_become_ready(tmp_path: Path, state: Path) -> None:
    with apiserver.ApiServer(ROUTING, pod_start_delay=3600) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        before = server.get_object(*DS)
        proc = fix(kcfg, state, "--timeout", "3")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "rolled-back: the check still reports fail after the fix" in proc.stdout
        # the wait saw the new pods stay Pending; a fresh re-check reports exactly that
        assert "still waiting for a new ready kube-proxy pod after 3s" in proc.stdout
        assert "kube-proxy is not ready on 3 node(s)" in proc.stdout
        restored = server.get_object(*DS)
        assert restored["spec"] == before["spec"]
        assert command_of(restored) == ["/usr/local/bin/kube-proxy", "--kubeconfig=/run/kubeconfig"]
        methods = [w[0] for w in writes(server)]
        # patch, restart 3 pods, restore (PUT), restart again with the restored spec
        assert methods == [
            "PATCH",
            "DELETE",
            "DELETE",
            "DELETE",
            "PUT",
            "DELETE",
            "DELETE",
            "DELETE",
        ]
        put = next(r for r in server.requests if r.method == "PUT")
        assert command_of(json.loads(put.body)) == command_of(before)


def test_live_dry_run_changes_nothing(tmp_path: Path, state: Path) -> None:
    with apiserver.ApiServer(ROUTING) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        proc = kdoctor("fix", ID, "--kubeconfig", str(kcfg), "--dry-run", "--state-dir", str(state))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "dry run: nothing changed" in proc.stdout
        assert '"--proxy-mode=userspace"' in proc.stdout
        assert writes(server) == []
        refused = kdoctor("fix", ID, "--kubeconfig", str(kcfg), "--yes", "--state-dir", str(state))
        assert refused.returncode == 1 and "add --unsafe" in refused.stdout
        assert writes(server) == []


def test_live_check_same_verdict_as_bundle(tmp_path: Path) -> None:
    for bundle in (MODERN_USERSPACE,):
        _c, from_bundle = check_json("--bundle", str(bundle), "--only", ID)
        with apiserver.ApiServer(bundle) as server:
            kcfg = server.write_kubeconfig(tmp_path / f"{bundle.name}.kubeconfig")
            _c2, live = check_json("--kubeconfig", str(kcfg), "--only", ID)
        a, b = result_of(from_bundle, ID), result_of(live, ID)
        assert (a["status"], a["summary"]) == (b["status"], b["summary"])


def test_live_api_error_is_error_not_ok(tmp_path: Path) -> None:
    with apiserver.ApiServer(HEALTHY) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        server.faults.add(status=403, resource="daemonsets")
        code, report = check_json("--kubeconfig", str(kcfg), "--only", ID)
    result = result_of(report, ID)
    assert result["status"] == "error" and "403 Forbidden" in result["summary"]
    assert code == 3
