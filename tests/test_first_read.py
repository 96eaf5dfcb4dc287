"""What a person reads (issue 10): the text report, the words of hints and plans, the docs.

The text report of the lab-22 broken bundle is the reference case: it fails on the overlay
(Weave Net crash-looping on kubernetes-2) and on a pull secret created without
``--docker-server``. A person must see what is broken first, once, with what to do.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
from pathlib import Path

import pytest

from doctor.core.model import CheckResult, Finding, Scope, Severity, Status
from doctor.facts.distro import PackageTool, tool_for
from doctor.parse.os_release import parse_os_release
from doctor.ui.text import make_console, print_result
from tests.conftest import BUNDLES, REPO, copy_bundle, kdoctor

BROKEN = BUNDLES / "seed-lab-broken"
SERVICES = BUNDLES / "centos7-iptables-services"
CHECK_LINE = re.compile(r"^\[(.)\] (\S+)  ")


def check_lines(text: str) -> list[tuple[str, str]]:
    """(glyph, check id or count) of every check line of a text report."""
    return [m.groups() for m in map(CHECK_LINE.match, text.splitlines()) if m]  # type: ignore[misc]


# -- the text report ------------------------------------------------------------------------


def test_the_lab_broken_report_is_short_and_puts_what_is_broken_first() -> None:
    proc = kdoctor("check", "--bundle", str(BROKEN))
    assert proc.returncode == 2
    text = proc.stdout
    lines = text.splitlines()
    assert 20 <= len(lines) <= 45, text
    rows = check_lines(text)
    glyphs = [glyph for glyph, _ in rows]
    # fails, then (warn, error), then skips, then the one line of oks
    order = {"✗": 0, "!": 1, "?": 1, "-": 2, "✓": 3}
    assert [order[g] for g in glyphs] == sorted(order[g] for g in glyphs), rows
    assert rows[0] == ("✗", "cluster.network.cni")  # the root cause before its consequences
    # a line a check: each failing check once, each finding once
    for check_id in ("cluster.nodes", "cluster.kube-system.pods", "cluster.registry.pull-secret"):
        assert sum(1 for _, i in rows if i == check_id) == 1
    assert text.count("Could not get peers: Get https://10.96.0.1:443/api/v1/nodes") == 2
    assert text.count("kubernetes-2 is NotReady") == 1
    # oks summarised in one line
    assert [line for line in lines if line.startswith("[✓]")] == ["[✓] 1 ok  cluster.kube-proxy"]
    # no evidence dumps, no raw JSON
    assert "resourceVersion" not in text and "waiting_containers" not in text
    assert not [line for line in lines if '{"' in line or "': " in line], text
    assert "hint: " in text
    assert lines[-3].startswith("✗ kdoctor found issues in 5 of 11 checks")


def test_checks_skipped_for_the_same_reason_share_one_line() -> None:
    proc = kdoctor("check", "--bundle", str(SERVICES))
    lines = proc.stdout.splitlines()
    reason = "the bundle has no cluster/ directory"
    shared = [line for line in lines if reason in line]
    assert len(shared) == 1, proc.stdout
    assert shared[0].startswith("[-] 7 skipped") and "cluster.nodes" in shared[0]
    assert "[✓] 3 ok  node.docker.drift, node.firewalld, node.services" in lines


def test_at_most_three_findings_a_check_then_plus_n_more() -> None:
    findings = tuple(
        Finding(Severity.FAIL, f"rule {n} blocks", hint=f"delete rule {n}") for n in range(1, 6)
    )
    result = CheckResult("node.x", "X", Scope.NODE, Status.FAIL, "5 rules block", findings)
    out = io.StringIO()
    print_result(make_console(out), result)
    text = out.getvalue()
    assert [n for n in range(1, 6) if f"rule {n} blocks" in text] == [1, 2, 3]
    assert "hint: delete rule 3" in text and "delete rule 4" not in text
    assert "+2 more" in text
    verbose = io.StringIO()
    print_result(make_console(verbose), result, verbose=True)
    assert "rule 5 blocks" in verbose.getvalue() and "+2 more" not in verbose.getvalue()


def test_evidence_only_with_verbose_and_never_as_json() -> None:
    proc = kdoctor("check", "--bundle", str(BROKEN), "-v")
    text = proc.stdout
    assert "resourceVersion: 391" in text  # the evidence is there with -v
    assert "event:" in text and "  message: Error syncing pod" in text  # nested: key: value
    assert not [line for line in text.splitlines() if '{"' in line], text
    assert "[✓] cluster.kube-proxy" in text  # every check has its line with -v


def test_quiet_prints_only_the_status_line() -> None:
    proc = kdoctor("check", "--bundle", str(BROKEN), "-q")
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == [
        "✗ kdoctor found issues in 5 of 11 checks (1 ok, 5 fail, 5 skip)."
    ]


def test_the_report_on_a_bundle_shows_the_plan_command_that_works_there() -> None:
    proc = kdoctor("check", "--bundle", str(SERVICES), "--scope", "node")
    assert f"kdoctor fix node.iptables.reject --dry-run --bundle {SERVICES}" in proc.stdout


def test_glyphs_pip_and_flutter_style() -> None:
    text = kdoctor("check", "--bundle", str(SERVICES), "--scope", "node").stdout
    assert "[✗] node.iptables.reject" in text
    assert "    × `-A INPUT -j REJECT" in text
    assert "      hint: Delete it" in text


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
    ``cluster/*.json`` names."""
    names: set[str] = set()
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
