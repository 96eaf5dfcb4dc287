"""The words a person reads (issue 10): no "seed", no French guide quoted, hints that name
the distro's package tool, plans that say what kubectl really creates, and docs in docs/
that document kdoctor's own formats, with every flag in the README."""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

import pytest

from doctor.facts.distro import PackageTool, tool_for
from doctor.parse.os_release import parse_os_release
from tests.conftest import BUNDLES, REPO, copy_bundle, kdoctor

BROKEN = BUNDLES / "seed-lab-broken"
SERVICES = BUNDLES / "centos7-iptables-services"


# -- words ----------------------------------------------------------------------------------

SEED_WORDS = re.compile(r"\bseed\b|surtout|oublier|\bguide\b", re.IGNORECASE)


def _check_ids() -> list[str]:
    out = kdoctor("list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def test_explain_never_speaks_of_the_seed_or_quotes_a_french_guide() -> None:
    ids = _check_ids()
    assert len(ids) >= 11
    for check_id in ids:
        doc = kdoctor("explain", check_id).stdout
        assert not SEED_WORDS.search(doc), (check_id, SEED_WORDS.findall(doc))


@pytest.mark.parametrize(
    "bundle", sorted(p.name for p in BUNDLES.iterdir() if (p / "kdoctor-bundle.json").exists())
)
def test_reports_plans_and_hints_never_speak_of_the_seed(bundle: str) -> None:
    path = BUNDLES / bundle
    for args in (["check", "-v"], ["fix", "--dry-run", "--unsafe"]):
        proc = kdoctor(*args, "--bundle", str(path))
        text = (proc.stdout + proc.stderr).replace(str(path), "BUNDLE")
        assert not SEED_WORDS.search(text), (args, SEED_WORDS.findall(text))


@pytest.mark.parametrize(
    ("os_release", "command"),
    [
        ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_ID="12"\n', "apt-get"),
        ('NAME="Ubuntu"\nID=ubuntu\nID_LIKE=debian\nVERSION_ID="24.04"\n', "apt-get"),
        ('NAME="CentOS Linux"\nID="centos"\nID_LIKE="rhel fedora"\nVERSION_ID="7"\n', "yum"),
        ('NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.3"\n', "dnf"),
        ('NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\n', "dnf"),
        ('NAME="openSUSE Leap"\nID="opensuse-leap"\nID_LIKE="suse opensuse"\n', "zypper"),
        ('NAME="SLES"\nID="sles"\nID_LIKE="suse"\nVERSION_ID="15.5"\n', "zypper"),
        ("NAME=Alpine\nID=alpine\n", None),
    ],
)
def test_package_tool_from_os_release(os_release: str, command: str | None) -> None:
    tool = tool_for(parse_os_release(os_release))
    assert tool.command == command
    if command is None:
        assert "yum" not in tool.install("kubelet")
    else:
        assert tool.install("kubelet") == f"`{command} install -y kubelet`"


def _debian_node(tmp_path: Path) -> Path:
    """The CentOS services bundle turned into a Debian 12 node whose container runtime and
    firewalld are missing or misconfigured, so the hints have to name a package tool."""
    bundle = copy_bundle(SERVICES, tmp_path)
    (bundle / "host/etc/os-release").write_text(
        'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
        'VERSION_ID="12"\nID=debian\n'
    )
    for unit in ("docker", "containerd"):
        (bundle / f"commands/systemctl-show-{unit}.txt").write_text(
            f"Id={unit}.service\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n"
            "UnitFileState=\n"
        )
        for vendor in ("usr/lib/systemd/system", "lib/systemd/system"):
            (bundle / "host" / vendor / f"{unit}.service").unlink(missing_ok=True)
    return bundle


def test_hints_name_the_distros_package_tool(tmp_path: Path) -> None:
    bundle = _debian_node(tmp_path)
    proc = kdoctor("check", "--bundle", str(bundle), "--only", "node.services", "-v")
    assert "apt-get install -y" in proc.stdout, proc.stdout
    assert "yum" not in proc.stdout


def test_centos_hints_still_say_yum() -> None:
    tool = PackageTool("yum")
    assert tool.install("iptables-services") == "`yum install -y iptables-services`"


def test_every_argparse_flag_has_help_and_is_in_the_readme() -> None:
    from doctor.ui.cli import build_parser

    readme = (REPO / "README.md").read_text()
    parser = build_parser()
    missing_help: list[str] = []
    missing_readme: list[str] = []

    def walk(p: argparse.ArgumentParser, where: str) -> None:
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, f"{where} {name}")
                continue
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if not action.help:
                missing_help.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
            for option in action.option_strings:
                if option.startswith("--") and option not in readme:
                    missing_readme.append(f"{where} {option}")

    walk(parser, "kdoctor")
    assert not missing_help, missing_help
    assert not missing_readme, missing_readme


def test_readme_points_at_the_projects_own_docs() -> None:
    readme = (REPO / "README.md").read_text()
    assert "shared/spec" not in readme
    for doc in ("docs/bundle.md", "docs/report.md"):
        assert doc in readme and (REPO / doc).is_file()
    for key in ("`c`", "`tab`", "`esc`", "`/`", "`enter`"):
        assert key in readme.lower(), key


def _bundle_file_names() -> set[str]:
    """Every fixed bundle file name the code reads: ``node.command("NAME", …)`` and the
    ``cluster/*.json`` names of the API resources (``Resource.bundle_file``)."""
    from doctor.facts import kube

    names = {
        value.bundle_file for value in vars(kube).values() if isinstance(value, kube.Resource)
    }
    for path in [*(REPO / "checks").glob("*.py"), *(REPO / "doctor").rglob("*.py")]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                value = node.value
                if re.fullmatch(r"[a-z][a-z0-9-]*\.(txt|json|toml)", value):
                    names.add(value)
    return names


def test_docs_bundle_names_every_file_a_check_reads() -> None:
    doc = (REPO / "docs/bundle.md").read_text()
    names = _bundle_file_names()
    names.discard("kdoctor-bundle.json")
    assert {"iptables-save.txt", "docker-info.json", "pods.json", "events.json"} <= names
    ignore = {"report-v1.json", "journal.jsonl", "plan.json", "fix.json", "steps.json"}
    ignore |= {"undo.json", "kdoctor-report.json"}  # the fix journal's and the TUI's files
    missing = sorted(n for n in names - ignore if n not in doc and "systemctl-show" not in n)
    assert not missing, missing


def test_docs_report_documents_schema_prometheus_and_exit_codes() -> None:
    doc = (REPO / "docs/report.md").read_text()
    for word in (
        "kdoctor/report/v1",
        "kdoctor_check_status",
        "kdoctor_check_findings",
        "kdoctor_check_duration_seconds",
        "kdoctor_run_timestamp_seconds",
        "kdoctor_run_status",
        "caused_by",
        "| 3 |",
        "| 2 |",
    ):
        assert word in doc, word


# -- plans and messages ---------------------------------------------------------------------


def test_the_registry_plan_names_the_secret_type_kubectl_creates() -> None:
    proc = kdoctor("fix", "--dry-run", "--bundle", str(BROKEN), "cluster.registry.pull-secret")
    assert "kubernetes.io/dockerconfigjson" in proc.stdout, proc.stdout + proc.stderr
    assert "dockercfg secret" not in proc.stdout


def test_tool_for_an_unknown_distro_is_neutral() -> None:
    assert tool_for({}).install("kubelet") == "kubelet (with the distribution's package manager)"
