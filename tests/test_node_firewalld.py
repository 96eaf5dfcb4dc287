"""node.firewalld: bundles, the live check and fix through a fake systemctl, offline, bad input.

systemd cannot run as PID 1 here, so live tests put ``tests/shims/`` first on PATH: its fake
``systemctl`` keeps unit state in a JSON file and records every argv. Fix tests assert the
exact commands recorded at that process boundary and the state the re-check then reads.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BAD_INPUT, BUNDLES, check_json, kdoctor, result_of
from tests.shims.fakesystemd import FakeSystemd

CHECK = "node.firewalld"


def firewalld(active: bool, enabled: bool) -> dict[str, Any]:
    return {
        "Description": "firewalld - dynamic firewall daemon",
        "Type": "dbus",
        "ActiveState": "active" if active else "inactive",
        "UnitFileState": "enabled" if enabled else "disabled",
        "UnitFilePreset": "enabled",
        "Conflicts": ["iptables", "ip6tables", "ebtables", "ipset"],
    }


def iptables(active: bool = False, enabled: bool = False) -> dict[str, Any]:
    return {
        "Description": "IPv4 firewall with iptables",
        "Type": "oneshot",
        "RemainAfterExit": "yes",
        "ActiveState": "active" if active else "inactive",
        "UnitFileState": "enabled" if enabled else "disabled",
    }


def check(node: FakeSystemd, fail: str | None = None) -> tuple[int, dict[str, Any]]:
    return node.check(CHECK, fail)


def fix(node: FakeSystemd, *extra: str, fail: str | None = None) -> int:
    return node.fix(CHECK, "--unsafe", *extra, fail=fail)


def journal(node: FakeSystemd) -> list[dict[str, Any]]:
    return node.journal()


# -- bundles ------------------------------------------------------------------------------


def test_centos7_default_firewalld_active_and_enabled_fails_with_unsafe_plan() -> None:
    """The CentOS 7 default: firewalld running and enabled, iptables-services not installed."""
    code, report = check_json("--bundle", str(BUNDLES / "centos7-firewalld"), "--only", CHECK)
    result = result_of(report, CHECK)
    assert code == 2
    assert result["status"] == "fail"
    assert result["summary"] == "firewalld is active (running) and enabled"
    (finding,) = result["findings"]
    assert finding["resource"] == "firewalld.service"
    assert finding["evidence"]["source"] == "commands/systemctl-show-firewalld.txt"
    assert finding["evidence"]["ActiveState"] == "active"
    assert finding["evidence"]["SubState"] == "running"
    assert finding["evidence"]["UnitFileState"] == "enabled"
    assert finding["evidence"]["LoadState"] == "loaded"
    assert result["fix"]["safety"] == "unsafe"
    plan = result["fix"]["plan"]
    assert plan[:2] == ["systemctl stop firewalld", "systemctl disable firewalld"]
    # iptables.service is not-found in this bundle: install it by hand, never guessed.
    assert len(plan) == 3
    assert plan[2].startswith("# manual step")
    assert "yum install -y iptables-services" in plan[2]


@pytest.mark.parametrize(
    ("bundle", "status", "summary"),
    [
        (
            "centos7-iptables-services",
            "ok",
            "firewalld is installed but inactive (dead) and disabled",
        ),
        ("docker-1.12-centos", "ok", "firewalld is installed but inactive (dead) and disabled"),
        ("healthy-node", "ok", "firewalld is not installed"),
        (
            "docker-ce-dropins",
            "warn",
            "firewalld is enabled (starts at the next boot) though inactive (dead)",
        ),
    ],
)
def test_bundles(bundle: str, status: str, summary: str) -> None:
    _code, report = check_json("--bundle", str(BUNDLES / bundle), "--only", CHECK)
    result = result_of(report, CHECK)
    assert (result["status"], result["summary"]) == (status, summary)


def test_enabled_but_stopped_plan_only_disables_and_enables_iptables(tmp_path: Path) -> None:
    """Only what needs changing is planned: firewalld is not running, so no `stop`."""
    node = FakeSystemd(tmp_path, {"firewalld": firewalld(False, True), "iptables": iptables()})
    code, result = check(node)
    assert code == 1
    assert result["status"] == "warn"
    assert result["fix"]["plan"] == [
        "systemctl disable firewalld",
        "systemctl enable --now iptables",
    ]


# -- live fix through the fake systemctl ----------------------------------------------------


def test_fix_replaces_firewalld_with_iptables(tmp_path: Path) -> None:
    """check fail → fix → firewalld off, iptables enabled+active, journal entry, re-check ok.

    The commands are asserted as recorded at the process boundary (the fake systemctl),
    because systemd cannot run here.
    """
    node = FakeSystemd(tmp_path, {"firewalld": firewalld(True, True), "iptables": iptables()})
    code, result = check(node)
    assert (code, result["status"]) == (2, "fail")
    assert result["fix"]["plan"] == [
        "systemctl stop firewalld",
        "systemctl disable firewalld",
        "systemctl enable --now iptables",
    ]

    assert fix(node) == 0
    assert node.changes() == [
        ["systemctl", "stop", "firewalld"],
        ["systemctl", "disable", "firewalld"],
        ["systemctl", "enable", "--now", "iptables"],
    ]
    assert node.states() == {
        "firewalld": ("inactive", "disabled"),
        "iptables": ("active", "enabled"),
    }
    (entry,) = journal(node)
    assert entry["check"] == CHECK
    assert entry["outcome"] == "applied"
    assert entry["safety"] == "unsafe"
    assert entry["recheck_status"] == "ok"
    assert "$ systemctl enable --now iptables" in entry["steps"]

    code, result = check(node)
    assert (code, result["status"]) == (0, "ok")


def test_planted_fault_rolls_back_to_the_exact_previous_state(tmp_path: Path) -> None:
    """`systemctl disable firewalld` fails → rollback re-enables and re-starts firewalld, exit 2.

    The undo commands are asserted at the process boundary (the fake systemctl): the failing
    step is undone too (it may have half-applied), then the earlier ones in reverse order.
    """
    node = FakeSystemd(tmp_path, {"firewalld": firewalld(True, True), "iptables": iptables()})
    before = node.states()

    assert fix(node, fail="disable firewalld") == 2
    assert node.changes() == [
        ["systemctl", "stop", "firewalld"],
        ["systemctl", "disable", "firewalld"],  # fails (planted)
        ["systemctl", "enable", "firewalld"],  # undo of the failed step
        ["systemctl", "start", "firewalld"],  # undo of `stop`
    ]
    assert node.states() == before
    (entry,) = journal(node)
    assert entry["outcome"] == "rolled-back"
    assert "disable firewalld" in entry["reason"]


def test_rollback_restores_only_what_was_there(tmp_path: Path) -> None:
    """firewalld running but not enabled: a failure never enables it, only restarts it.

    Recorded at the process boundary (fake systemctl): the failed `enable --now iptables` is
    undone with `disable --now iptables` (it was neither enabled nor running), then `start`.
    """
    node = FakeSystemd(tmp_path, {"firewalld": firewalld(True, False), "iptables": iptables()})
    before = node.states()

    assert fix(node, fail="enable iptables") == 2
    assert node.changes() == [
        ["systemctl", "stop", "firewalld"],
        ["systemctl", "enable", "--now", "iptables"],  # fails (planted)
        ["systemctl", "disable", "--now", "iptables"],
        ["systemctl", "start", "firewalld"],
    ]
    assert node.states() == before


def test_dry_run_changes_nothing(tmp_path: Path) -> None:
    """--dry-run prints the plan and runs no state-changing systemctl (only `systemctl show`)."""
    node = FakeSystemd(tmp_path, {"firewalld": firewalld(True, True), "iptables": iptables()})
    state_before = node.state_file.read_bytes()
    proc = kdoctor(
        "fix",
        CHECK,
        "--dry-run",
        "--root",
        str(node.root),
        "--state-dir",
        str(node.state_dir),
        env=node.env(),
    )
    assert proc.returncode == 0
    assert "systemctl stop firewalld" in proc.stdout
    assert "systemctl enable --now iptables" in proc.stdout
    assert node.changes() == []
    assert {argv[1] for argv in node.calls()} == {"show"}
    assert node.state_file.read_bytes() == state_before
    assert not (node.state_dir / "journal.jsonl").exists()


def test_without_iptables_service_the_fix_says_to_install_it(tmp_path: Path) -> None:
    """No iptables unit: firewalld is still stopped and disabled; installing is a manual step.

    Commands recorded at the process boundary (fake systemctl): nothing touches iptables.
    """
    node = FakeSystemd(tmp_path, {"firewalld": firewalld(True, True)})
    _code, result = check(node)
    assert result["fix"]["plan"][-1].startswith("# manual step, not run by kdoctor:")
    assert "yum install -y iptables-services" in result["fix"]["plan"][-1]

    assert fix(node) == 0
    assert node.changes() == [
        ["systemctl", "stop", "firewalld"],
        ["systemctl", "disable", "firewalld"],
    ]
    assert node.states() == {"firewalld": ("inactive", "disabled")}


def test_masked_but_still_running_fails_without_a_fix(tmp_path: Path) -> None:
    """`systemctl mask` does not stop firewalld; a rollback could not start it again."""
    node = FakeSystemd(
        tmp_path, {"firewalld": {**firewalld(True, False), "UnitFileState": "masked"}}
    )
    code, result = check(node)
    assert (code, result["status"]) == (2, "fail")
    assert result["summary"] == "firewalld is active (running) though masked"
    assert "systemctl stop firewalld" in result["findings"][0]["hint"]
    assert result["fix"] is None


def test_unsafe_fix_needs_unsafe(tmp_path: Path) -> None:
    node = FakeSystemd(tmp_path, {"firewalld": firewalld(True, True), "iptables": iptables()})
    proc = kdoctor(
        "fix",
        CHECK,
        "--yes",
        "--root",
        str(node.root),
        "--state-dir",
        str(node.state_dir),
        env=node.env(),
    )
    assert proc.returncode != 0
    assert node.changes() == []


@pytest.mark.parametrize(
    ("units", "status", "summary"),
    [
        ({}, "ok", "firewalld is not installed"),
        (
            {"firewalld": {**firewalld(False, False), "UnitFileState": "masked"}},
            "ok",
            "firewalld is masked (it cannot start)",
        ),
        (
            {"firewalld": firewalld(False, False)},
            "ok",
            "firewalld is installed but inactive (dead) and disabled",
        ),
    ],
)
def test_live_not_a_problem(
    tmp_path: Path, units: dict[str, dict[str, Any]], status: str, summary: str
) -> None:
    node = FakeSystemd(tmp_path, units)
    _code, result = check(node)
    assert (result["status"], result["summary"]) == (status, summary)
    assert result["fix"] is None


# -- systemd not running: unit files and *.wants links -------------------------------------


def offline_root(tmp_path: Path, *, unit: bool = True, link: bool = False) -> Path:
    root = tmp_path / "root"
    (root / "etc/kubernetes").mkdir(parents=True)  # a node: kubeadm was here
    lib = root / "usr/lib/systemd/system"
    lib.mkdir(parents=True)
    (lib / "sshd.service").write_text(
        "[Unit]\nDescription=sshd\n[Install]\nWantedBy=multi-user.target\n"
    )
    if unit:
        src = BUNDLES / "centos7-firewalld/host/usr/lib/systemd/system/firewalld.service"
        (lib / "firewalld.service").write_text(src.read_text())
    if link:
        wants = root / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True)
        os.symlink("/usr/lib/systemd/system/firewalld.service", wants / "firewalld.service")
    return root


def test_offline_enabled_is_warn_with_active_state_unknown(tmp_path: Path) -> None:
    """No /run/systemd/system: enablement from the wants link; no fix offered."""
    root = offline_root(tmp_path, link=True)
    code, report = check_json("--root", str(root), "--only", CHECK)
    result = result_of(report, CHECK)
    assert (code, result["status"]) == (1, "warn")
    assert result["summary"].startswith(
        "firewalld is enabled (active state unknown: systemd not running"
    )
    evidence = result["findings"][0]["evidence"]
    assert evidence["UnitFileState"] == "enabled"
    assert evidence["links"] == [
        str(root / "etc/systemd/system/multi-user.target.wants/firewalld.service")
    ]
    assert evidence["unit_file"] == str(root / "usr/lib/systemd/system/firewalld.service")
    assert result["fix"] is None


def test_offline_installed_not_enabled_is_skip_never_ok(tmp_path: Path) -> None:
    root = offline_root(tmp_path)
    _code, report = check_json("--root", str(root), "--only", CHECK)
    result = result_of(report, CHECK)
    assert result["status"] == "skip"
    assert "disabled" in result["summary"]
    assert "systemd not running" in result["summary"]


def test_offline_not_installed_is_ok(tmp_path: Path) -> None:
    root = offline_root(tmp_path, unit=False)
    _code, report = check_json("--root", str(root), "--only", CHECK)
    assert result_of(report, CHECK)["status"] == "ok"


def test_offline_masked_is_ok(tmp_path: Path) -> None:
    root = offline_root(tmp_path, link=True)
    os.symlink("/dev/null", root / "etc/systemd/system/firewalld.service")
    _code, report = check_json("--root", str(root), "--only", CHECK)
    result = result_of(report, CHECK)
    assert (result["status"], result["summary"]) == ("ok", "firewalld is masked (it cannot start)")


def test_offline_without_unit_directories_is_skip(tmp_path: Path) -> None:
    root = tmp_path / "empty-root"
    root.mkdir()
    _code, report = check_json("--root", str(root), "--only", CHECK)
    result = result_of(report, CHECK)
    assert result["status"] == "skip"
    assert "cannot tell whether firewalld is installed" in result["summary"]


# -- bad input ---------------------------------------------------------------------------

BAD_CASES = sorted(p.name for p in (BAD_INPUT / CHECK).iterdir())


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_error_naming_the_file(case: str) -> None:
    code, report = check_json("--bundle", str(BAD_INPUT / CHECK / case), "--only", CHECK)
    result = result_of(report, CHECK)
    assert code == 3
    assert result["status"] == "error"
    assert result["summary"].startswith("commands/systemctl-show-firewalld.txt: ")


def test_bad_input_corpus_is_complete() -> None:
    assert set(BAD_CASES) >= {
        "binary-junk",
        "dbus-error-text",
        "empty",
        "missing-activestate",
        "not-utf8",
        "terminal-escapes",
        "unknown-activestate",
        "wrong-unit",
    }
