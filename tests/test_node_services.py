"""node.services and doctor.facts.systemctl: parsing, unit files, bundles, live fix, bad input.

systemd cannot run as PID 1 here, so live tests put ``tests/shims/`` first on PATH: its fake
``systemctl`` keeps unit state in a JSON file and records every argv. Fix tests assert the
exact commands recorded at that process boundary and the state the re-check then reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from doctor.core.errors import FactError
from doctor.facts.node import BundleNodeFacts, LiveNodeFacts
from doctor.facts.systemctl import (
    from_show,
    from_unit_files,
    parse_show,
    start_command,
    unit_status,
)
from tests.conftest import BAD_INPUT, BUNDLES, check_json, result_of
from tests.shims.fakesystemd import FakeSystemd

CHECK = "node.services"


def svc(active: str = "active", enabled: str = "enabled", **extra: Any) -> dict[str, Any]:
    return {"ActiveState": active, "UnitFileState": enabled, **extra}


def check(node: FakeSystemd) -> tuple[int, dict[str, Any]]:
    return node.check(CHECK)


def fix(node: FakeSystemd, fail: str | None = None) -> int:
    return node.fix(CHECK, fail=fail)


def journal(node: FakeSystemd) -> list[dict[str, Any]]:
    return node.journal()


# -- doctor.facts.systemctl: parsing -----------------------------------------------------------


def test_parse_show_reads_every_property_of_a_real_capture() -> None:
    text = (BUNDLES / "docker-1.13-centos/commands/systemctl-show-kubelet.txt").read_text()
    props = parse_show(text, "commands/systemctl-show-kubelet.txt")
    assert props["ActiveState"] == "activating"
    assert props["SubState"] == "auto-restart"
    assert props["Result"] == "exit-code"
    assert props["ExecMainStatus"] == "255"
    assert props["DropInPaths"] == "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
    # repeated properties keep their first value; values may contain '='
    assert props["EnvironmentFile"] == "/var/lib/kubelet/kubeadm-flags.env (ignore_errors=yes)"
    assert props["Environment"].startswith("KUBELET_KUBECONFIG_ARGS=--bootstrap-kubeconfig=")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty output"),
        ("\n\n", "empty output"),
        ("Failed to get D-Bus connection: Operation not permitted\n", "line 1: not a Property"),
        ("LoadState=loaded\nSubState=running\n", "no ActiveState= property"),
        ("ActiveState=active\n", "no LoadState= property"),
        ("LoadState=loaded\nActiveState=up\n", "ActiveState='up' is not a systemd ActiveState"),
        ("LoadState=gone\nActiveState=active\n", "LoadState='gone'"),
        ("LoadState=loaded\nActiveState=active\x1b[0m\n", "line 2: binary data"),
        ("Id=docker.service\nLoadState=loaded\nActiveState=active\n", "describes docker.service"),
    ],
)
def test_garbled_show_output_is_a_fact_error_naming_the_file(text: str, reason: str) -> None:
    with pytest.raises(FactError) as err:
        from_show(text, "commands/systemctl-show-kubelet.txt", "kubelet")
    assert str(err.value).startswith("commands/systemctl-show-kubelet.txt: ")
    assert reason in str(err.value)


def test_not_found_unit_is_not_installed() -> None:
    text = (BUNDLES / "centos7-firewalld/commands/systemctl-show-iptables.txt").read_text()
    unit = from_show(text, "x", "iptables")
    assert unit.installed is False
    assert unit.unit_file_state == ""
    assert unit.enabled is False


def test_last_failure_names_result_status_and_time() -> None:
    text = (BUNDLES / "docker-1.13-centos/commands/systemctl-show-kubelet.txt").read_text()
    unit = from_show(text, "x", "kubelet")
    assert unit.last_failure() == (
        "Result=exit-code: main process exited, status=255 at Mon 2017-04-10 09:59:53 UTC"
    )


# -- doctor.facts.systemctl: the undo of `systemctl enable --now` -------------------------------


def _unit(active: str, state: str) -> Any:
    return from_show(
        f"Id=kubelet.service\nLoadState=loaded\nActiveState={active}\nUnitFileState={state}\n",
        "x",
        "kubelet",
    )


@pytest.mark.parametrize(
    ("active", "state", "expected"),
    [
        ("inactive", "disabled", (["enable", "--now"], [["disable", "--now"]])),
        ("active", "disabled", (["enable", "--now"], [["disable"]])),
        ("inactive", "enabled", (["enable", "--now"], [["stop"]])),
        ("failed", "enabled", (["enable", "--now"], [["stop"]])),
        (
            "active",
            "enabled-runtime",
            (["enable", "--now"], [["disable"], ["enable", "--runtime"]]),
        ),
        (
            "inactive",
            "enabled-runtime",
            (["enable", "--now"], [["disable"], ["enable", "--runtime"], ["stop"]]),
        ),
        ("inactive", "static", (["start"], [["stop"]])),
        ("active", "enabled", None),
        ("active", "static", None),
    ],
)
def test_start_command_undoes_exactly_what_it_changes(
    active: str, state: str, expected: tuple[list[str], list[list[str]]] | None
) -> None:
    step = start_command(_unit(active, state))
    if expected is None:
        assert step is None
        return
    verb, undo = expected
    assert step == (["systemctl", *verb, "kubelet"], [["systemctl", *u, "kubelet"] for u in undo])


# -- doctor.facts.systemctl: unit files when systemd is not running ------------------------------


def _lib(root: Path, name: str, text: str) -> None:
    lib = root / "usr/lib/systemd/system"
    lib.mkdir(parents=True, exist_ok=True)
    (lib / name).write_text(text)


def _link(root: Path, directory: str, name: str, target: str) -> None:
    path = root / directory
    path.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path / name)


INSTALLABLE = "[Service]\nExecStart=/bin/true\n\n[Install]\nWantedBy=multi-user.target\n"


def test_unit_files_enabled_disabled_static_masked(tmp_path: Path) -> None:
    root = tmp_path
    _lib(root, "kubelet.service", INSTALLABLE)
    _lib(root, "docker.service", INSTALLABLE)
    _lib(root, "containerd.service", "[Service]\nExecStart=/usr/bin/containerd\n")
    _lib(root, "firewalld.service", INSTALLABLE)
    _link(
        root,
        "etc/systemd/system/multi-user.target.wants",
        "kubelet.service",
        "/usr/lib/systemd/system/kubelet.service",
    )
    os.symlink("/dev/null", root / "etc/systemd/system/firewalld.service")
    node = LiveNodeFacts(root)
    assert not node.systemd_running()

    kubelet = unit_status(node, "kubelet")
    assert (kubelet.installed, kubelet.unit_file_state, kubelet.active_state) == (
        True,
        "enabled",
        None,
    )
    assert kubelet.unknown_reason == f"systemd not running: no {root}/run/systemd/system"
    assert unit_status(node, "docker").unit_file_state == "disabled"
    assert unit_status(node, "containerd").unit_file_state == "static"
    firewalld = unit_status(node, "firewalld")
    assert firewalld.masked
    assert unit_status(node, "iptables").installed is False


def test_unit_files_relative_links_and_bundle_absolute_links_stay_inside(tmp_path: Path) -> None:
    """A bundle's absolute links point at the node's paths, never the analysing machine's."""
    bundle = tmp_path / "bundle"
    host = bundle / "host"
    _lib(host, "kubelet.service", INSTALLABLE)
    os.symlink("/dev/null", tmp_path / "not-this")  # decoys do not matter: links stay inside
    _link(
        host,
        "etc/systemd/system/multi-user.target.wants",
        "kubelet.service",
        "../../../../usr/lib/systemd/system/kubelet.service",
    )
    (bundle / "commands").mkdir(parents=True)
    node = BundleNodeFacts(bundle)
    assert not node.systemd_running()
    kubelet = from_unit_files(node, "kubelet", "test")
    assert kubelet.unit_file_state == "enabled"
    assert kubelet.links == ("/etc/systemd/system/multi-user.target.wants/kubelet.service",)
    assert unit_status(node, "kubelet").unknown_reason == (
        "systemd not running: the bundle has no commands/systemctl-show-*.txt"
    )


# -- bundles -----------------------------------------------------------------------------


def test_healthy_node_runtime_containerd_docker_and_kubelet_ok() -> None:
    code, report = check_json("--bundle", str(BUNDLES / "healthy-node"), "--only", CHECK)
    result = result_of(report, CHECK)
    assert (code, result["status"]) == (0, "ok")
    assert result["summary"] == "containerd, docker and kubelet enabled and active"


@pytest.mark.parametrize(
    ("bundle", "summary"),
    [
        ("centos7-firewalld", "docker and kubelet enabled and active"),
        ("centos7-iptables-services", "docker and kubelet enabled and active"),
        ("docker-1.12-centos", "docker and kubelet enabled and active"),
        # docker-ce 18.09 runs on containerd.io (BindsTo=containerd.service)
        ("docker-ce-dropins", "containerd, docker and kubelet enabled and active"),
    ],
)
def test_docker_nodes_ok(bundle: str, summary: str) -> None:
    _code, report = check_json("--bundle", str(BUNDLES / bundle), "--only", CHECK)
    result = result_of(report, CHECK)
    assert (result["status"], result["summary"]) == ("ok", summary)


def test_kubelet_crash_looping_before_kubeadm_init() -> None:
    """docker-1.13-centos: kubelet activating (auto-restart), Result=exit-code, status 255."""
    code, report = check_json("--bundle", str(BUNDLES / "docker-1.13-centos"), "--only", CHECK)
    result = result_of(report, CHECK)
    assert (code, result["status"]) == (2, "fail")
    (finding,) = result["findings"]
    assert finding["message"].startswith("kubelet is activating (auto-restart): it keeps exiting")
    assert finding["resource"] == "kubelet.service"
    evidence = finding["evidence"]
    assert evidence["source"] == "commands/systemctl-show-kubelet.txt"
    assert evidence["ActiveState"] == "activating"
    assert evidence["SubState"] == "auto-restart"
    assert evidence["UnitFileState"] == "enabled"
    assert evidence["Result"] == "exit-code"
    assert evidence["ExecMainStatus"] == "255"
    assert "status=255" in evidence["last_failure"]
    assert "kubeadm init" in finding["hint"]
    # Restarting a crash loop does not help: no fix is offered for it.
    assert result["fix"] is None


def test_bundle_missing_one_show_file_falls_back_to_unit_files(tmp_path: Path) -> None:
    """A bundle with some systemctl-show files: a missing one is read from host/ unit files."""
    bundle = tmp_path / "b"
    (bundle / "commands").mkdir(parents=True)
    (bundle / "kdoctor-bundle.json").write_text(
        '{"format":"kdoctor-bundle","version":1,"node":"n","collected_at":"2017-04-10T10:00:00Z"}'
    )
    src = BUNDLES / "docker-1.12-centos"
    for unit in ("docker", "containerd"):
        name = f"systemctl-show-{unit}.txt"
        (bundle / "commands" / name).write_text((src / "commands" / name).read_text())
    _lib(bundle / "host", "kubelet.service", INSTALLABLE)
    _link(
        bundle / "host",
        "etc/systemd/system/multi-user.target.wants",
        "kubelet.service",
        "/usr/lib/systemd/system/kubelet.service",
    )
    _code, report = check_json("--bundle", str(bundle), "--only", CHECK)
    result = result_of(report, CHECK)
    assert result["status"] == "skip"
    assert result["summary"] == (
        "kubelet is enabled, active state unknown "
        "(the bundle has no commands/systemctl-show-kubelet.txt)"
    )


# -- live fix through the fake systemctl ----------------------------------------------------


def test_fix_enables_and_starts_kubelet(tmp_path: Path) -> None:
    """kubelet inactive+disabled → fix runs `systemctl enable --now kubelet` → ok.

    The command is asserted as recorded at the process boundary (the fake systemctl),
    because systemd cannot run here.
    """
    node = FakeSystemd(tmp_path, {"docker": svc(), "kubelet": svc("inactive", "disabled")})
    code, result = check(node)
    assert (code, result["status"]) == (2, "fail")
    assert result["summary"] == "kubelet is inactive (dead) and disabled"
    assert result["fix"]["safety"] == "safe"
    assert result["fix"]["plan"] == ["systemctl enable --now kubelet"]

    assert fix(node) == 0
    assert node.changes() == [["systemctl", "enable", "--now", "kubelet"]]
    assert node.states() == {"docker": ("active", "enabled"), "kubelet": ("active", "enabled")}
    (entry,) = journal(node)
    assert (entry["check"], entry["outcome"], entry["recheck_status"]) == (CHECK, "applied", "ok")

    code, result = check(node)
    assert (code, result["status"], result["summary"]) == (
        0,
        "ok",
        "docker and kubelet enabled and active",
    )


def test_fix_failure_rolls_back_only_what_changed(tmp_path: Path) -> None:
    """Runtime first, then kubelet; kubelet's start fails (planted) → exact rollback, exit 2.

    Commands recorded at the process boundary (fake systemctl): kubelet was enabled, so its
    undo is only `stop`; docker was neither enabled nor running, so `disable --now`.
    """
    node = FakeSystemd(
        tmp_path,
        {"docker": svc("inactive", "disabled"), "kubelet": svc("inactive", "enabled")},
    )
    before = node.states()
    assert fix(node, fail="enable kubelet") == 2
    assert node.changes() == [
        ["systemctl", "enable", "--now", "docker"],
        ["systemctl", "enable", "--now", "kubelet"],  # fails (planted)
        ["systemctl", "stop", "kubelet"],
        ["systemctl", "disable", "--now", "docker"],
    ]
    assert node.states() == before
    (entry,) = journal(node)
    assert entry["outcome"] == "rolled-back"


def test_active_but_disabled_is_warn_and_fix_only_enables(tmp_path: Path) -> None:
    node = FakeSystemd(tmp_path, {"docker": svc("active", "disabled"), "kubelet": svc()})
    code, result = check(node)
    assert (code, result["status"]) == (1, "warn")
    assert result["summary"] == "docker is active but disabled: it will not start at the next boot"
    assert fix(node) == 0
    assert node.changes() == [["systemctl", "enable", "--now", "docker"]]
    assert node.states()["docker"] == ("active", "enabled")


def test_failed_unit_reports_last_failure_and_is_restarted(tmp_path: Path) -> None:
    node = FakeSystemd(
        tmp_path,
        {
            "containerd": svc(),
            "docker": svc(
                "failed",
                "enabled",
                Result="exit-code",
                ExecMainCode="1",
                ExecMainStatus="1",
                ExecMainExitTimestamp="Mon 2017-04-10 09:40:12 UTC",
            ),
            "kubelet": svc(),
        },
    )
    code, result = check(node)
    assert (code, result["status"]) == (2, "fail")
    (finding,) = result["findings"]
    assert finding["message"] == (
        "docker is failed (failed) (last: Result=exit-code: main process exited, status=1 "
        "at Mon 2017-04-10 09:40:12 UTC)"
    )
    assert finding["evidence"]["Result"] == "exit-code"
    assert result["fix"]["plan"] == ["systemctl enable --now docker"]
    assert fix(node) == 0
    assert node.changes() == [["systemctl", "enable", "--now", "docker"]]


@pytest.mark.parametrize(
    ("units", "message"),
    [
        ({"docker": svc()}, "kubelet is not installed"),
        ({"kubelet": svc()}, "no container runtime is installed (neither docker nor containerd)"),
        (
            {"docker": svc(), "kubelet": svc("inactive", "masked")},
            "kubelet is masked: it cannot start",
        ),
    ],
)
def test_missing_or_masked_units_fail_without_a_fix(
    tmp_path: Path, units: dict[str, dict[str, Any]], message: str
) -> None:
    node = FakeSystemd(tmp_path, units)
    code, result = check(node)
    assert (code, result["status"]) == (2, "fail")
    assert [f["message"] for f in result["findings"]] == [message]
    assert result["fix"] is None


def test_unit_that_does_not_load_fails_without_a_futile_start(tmp_path: Path) -> None:
    """Two ExecStart= in a drop-in: systemd refuses docker.service; starting it cannot work."""
    error = 'org.freedesktop.systemd1.BadSetting "Unit docker.service has a bad unit file setting."'
    node = FakeSystemd(
        tmp_path,
        {
            "docker": svc("inactive", "enabled", LoadState="error", LoadError=error),
            "kubelet": svc(),
        },
    )
    code, result = check(node)
    assert (code, result["status"]) == (2, "fail")
    (finding,) = result["findings"]
    assert finding["message"] == "docker cannot start: its unit does not load (LoadState=error)"
    assert finding["evidence"]["LoadError"] == error
    assert result["fix"] is None


def test_only_containerd_is_enough(tmp_path: Path) -> None:
    node = FakeSystemd(tmp_path, {"containerd": svc(), "kubelet": svc()})
    code, result = check(node)
    assert (code, result["status"], result["summary"]) == (
        0,
        "ok",
        "containerd and kubelet enabled and active",
    )


# -- systemd not running -------------------------------------------------------------------


def test_offline_enabled_units_are_skip_never_ok(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for unit in ("docker", "kubelet"):
        _lib(root, f"{unit}.service", INSTALLABLE)
        _link(
            root,
            "etc/systemd/system/multi-user.target.wants",
            f"{unit}.service",
            f"/usr/lib/systemd/system/{unit}.service",
        )
    code, report = check_json("--root", str(root), "--only", CHECK)
    result = result_of(report, CHECK)
    assert (code, result["status"]) == (3, "skip")  # the run decided nothing: UNKNOWN
    assert "docker is enabled, active state unknown (systemd not running" in result["summary"]
    assert "kubelet is enabled, active state unknown (systemd not running" in result["summary"]


def test_offline_disabled_kubelet_is_warn_without_fix(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _lib(root, "docker.service", INSTALLABLE)
    _lib(root, "kubelet.service", INSTALLABLE)
    _link(
        root,
        "etc/systemd/system/multi-user.target.wants",
        "docker.service",
        "/usr/lib/systemd/system/docker.service",
    )
    _code, report = check_json("--root", str(root), "--only", CHECK)
    result = result_of(report, CHECK)
    assert result["status"] == "warn"
    (finding,) = result["findings"]
    assert finding["message"].startswith("kubelet is disabled: it does not start at boot")
    assert finding["evidence"]["ActiveState"].startswith("unknown (systemd not running")
    assert result["fix"] is None


def test_offline_no_kubelet_unit_fails_on_a_node(tmp_path: Path) -> None:
    root = tmp_path / "root"
    _lib(root, "docker.service", INSTALLABLE)
    _link(
        root,
        "etc/systemd/system/multi-user.target.wants",
        "docker.service",
        "/usr/lib/systemd/system/docker.service",
    )
    # A workstation with docker: no subject for node.services.
    _code, report = check_json("--root", str(root), "--only", CHECK)
    result = result_of(report, CHECK)
    assert result["status"] == "skip"
    assert result["summary"].startswith("not a Kubernetes node: kubelet is not installed")
    # kubeadm's directory says this machine was made a node: kubelet missing is a fail.
    (root / "etc/kubernetes").mkdir(parents=True)
    _code, report = check_json("--root", str(root), "--only", CHECK)
    result = result_of(report, CHECK)
    assert result["status"] == "fail"
    assert [f["message"] for f in result["findings"]] == ["kubelet is not installed"]


def test_offline_empty_root_is_skip(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    _code, report = check_json("--root", str(root), "--only", CHECK)
    result = result_of(report, CHECK)
    assert result["status"] == "skip"
    assert result["summary"] == (
        "cannot tell whether kubelet, docker or containerd are installed: systemd not running: "
        f"no {root}/run/systemd/system; and no systemd unit directories to read"
    )


# -- bad input ---------------------------------------------------------------------------

BAD_CASES = sorted(p.name for p in (BAD_INPUT / CHECK).iterdir())


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_error_naming_the_file(case: str) -> None:
    unit = case.split("-", 1)[0]
    code, report = check_json("--bundle", str(BAD_INPUT / CHECK / case), "--only", CHECK)
    result = result_of(report, CHECK)
    assert code == 3
    assert result["status"] == "error"
    assert result["summary"].startswith(f"commands/systemctl-show-{unit}.txt: ")


def test_bad_input_corpus_is_complete() -> None:
    assert len(BAD_CASES) >= 6
    assert {case.split("-", 1)[0] for case in BAD_CASES} == {"containerd", "docker", "kubelet"}
