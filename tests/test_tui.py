"""``kdoctor tui``: the real app driven by Textual's Pilot against real targets.

- Bundles (``fixtures/bundles``) for browsing: rows, findings with evidence, documentation,
  plans, filters, search, re-runs, the saved report, help, themes, mouse.
- The iptables fix in a throwaway network namespace (root): the app runs in a child Python
  process started with ``ip netns exec NS``, so it sees only the namespace's netfilter; the
  test reads the namespace's real ruleset before and after. The host ruleset is never touched.
- The kube-proxy fix against the protocol-faithful test API server (``tests.apiserver``).
- A hanging API server: the UI keeps answering and quitting does not wait for the socket.
- Snapshots (pytest-textual-snapshot) of the main, finding, plan and help screens at 80×24 and
  120×40, and one run in a real terminal (tmux).
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, ParamSpec, cast

import pytest
from rich.console import Console
from textual.pilot import Pilot
from textual.widgets import Button, Input, Markdown, RichLog

from doctor.core.context import CheckContext
from doctor.core.fix import Fix, FixSafety
from doctor.core.model import Finding, Scope, Severity, Status, Verdict
from doctor.core.registry import Check
from doctor.session import select_checks
from doctor.ui.cli import build_parser
from doctor.ui.tui.app import KdoctorApp
from doctor.ui.tui.backend import Backend
from doctor.ui.tui.logic import (
    BUNDLE_REASON,
    LineKind,
    classify_plan,
    confirmation_matches,
    evidence_rows,
    fix_blocked_reason,
    next_value,
    printable,
    row_matches,
)
from doctor.ui.tui.screens.check import CheckScreen
from doctor.ui.tui.screens.confirm import ConfirmFix
from doctor.ui.tui.screens.help import HelpScreen, SaveReportScreen
from doctor.ui.tui.screens.main import MainScreen
from doctor.ui.tui.screens.plan import PlanScreen
from doctor.ui.tui.style import DARK, LIGHT
from doctor.ui.tui.widgets.checks_table import ChecksTable
from doctor.ui.tui.widgets.details import FindingView, PlanView
from fixes.base import WriteFile
from tests.conftest import (
    BUNDLES,
    FIXTURES,
    REPO,
    check_json,
    kdoctor,
    load_rules,
    read_journal,
    saved_ruleset,
    validate_report,
    without_rules,
)

IPTABLES = "node.iptables.reject"
FIREWALLD = "node.firewalld"
INPUT_REJECT = "-A INPUT -j REJECT --reject-with icmp-host-prohibited"
FORWARD_REJECT = "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"
FIREWALLD_BUNDLE = BUNDLES / "centos7-firewalld"
SERVICES_BUNDLE = BUNDLES / "centos7-iptables-services"
SEED_BROKEN = BUNDLES / "seed-lab-broken"
#: The snapshots' checks: fixed, so a check added later does not change the pictures.
SNAPSHOT_CHECKS = "node.docker.drift,node.firewalld,node.iptables.reject,node.services"


# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


P = ParamSpec("P")


def pilot_test(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """Run an ``async def`` Pilot test with asyncio (no pytest async plugin needed)."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def tui_app(*argv: str, show_durations: bool = False) -> KdoctorApp:
    """The app exactly as ``kdoctor tui ARGV`` builds it (same parser, same check selection)."""
    args = build_parser().parse_args(["tui", *argv])
    return KdoctorApp(args, select_checks(args), show_durations=show_durations)


def on_top(app: KdoctorApp) -> object:
    """The screen on top (as object: identity checks without mypy narrowing the other side)."""
    return app.screen


def kapp(pilot: Pilot[None]) -> KdoctorApp:
    return cast(KdoctorApp, pilot.app)


async def settle(pilot: Pilot[None], timeout: float = 60.0) -> None:
    """Wait until the target is open and no check or fix is running."""
    app = kapp(pilot)
    deadline = time.monotonic() + timeout
    while True:
        await pilot.pause(0.02)
        opening = [s for s in app.part_state.values() if s == "opening"]
        if not opening and not app.states and app.applying is None:
            break
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled: {app.part_state} {app.states} {app.applying}")
    await pilot.pause()


def screen_text(app: KdoctorApp) -> str:
    """What the terminal shows right now, as plain text (the screenshot without styles)."""
    width, height = app.size
    console = Console(
        width=width, height=height, file=io.StringIO(), record=True, color_system=None,
        legacy_windows=False, force_terminal=True,
    )  # fmt: skip
    render = app.screen._compositor.render_update(
        full=True, screen_stack=app._background_screens, simplify=True
    )
    console.print(render)
    return console.export_text(styles=False)


def table_rows(app: KdoctorApp) -> dict[str, str]:
    """check id → status label as the table shows it."""
    table = app.screen.query_one(ChecksTable)
    return {str(row_key.value): str(table.get_cell(row_key, "status")) for row_key in table.rows}


async def select_row(pilot: Pilot[None], check_id: str) -> None:
    table = kapp(pilot).screen.query_one(ChecksTable)
    ids = [r.check_id for r in table.rows_shown]
    table.move_cursor(row=ids.index(check_id))
    await pilot.pause()


def reference(bundle: Path, *extra: str) -> dict[str, str]:
    """check id → status from ``kdoctor check --format json`` on the same target."""
    _code, report = check_json("--bundle", str(bundle), *extra)
    return {c["id"]: c["status"] for c in report["checks"]}


# ---------------------------------------------------------------------------------------
# the logic without a screen
# ---------------------------------------------------------------------------------------


def test_filters_search_and_cycling() -> None:
    from doctor.core.model import CheckResult

    failing = CheckResult(
        id=IPTABLES, title="t", scope=Scope.NODE, status=Status.FAIL, summary="2 rules",
        findings=(Finding(Severity.FAIL, "rejects tcp/6443", resource=INPUT_REJECT),),
    )  # fmt: skip
    ok = CheckResult(id="cluster.nodes", title="n", scope=Scope.CLUSTER, status=Status.OK,
                     summary="all 3 nodes Ready")  # fmt: skip
    assert row_matches(IPTABLES, "t", Scope.NODE, failing, "problems", "all", "")
    assert not row_matches("cluster.nodes", "n", Scope.CLUSTER, ok, "problems", "all", "")
    assert row_matches("cluster.nodes", "n", Scope.CLUSTER, ok, "ok", "cluster", "")
    assert not row_matches(IPTABLES, "t", Scope.NODE, failing, "all", "cluster", "")
    assert not row_matches(IPTABLES, "t", Scope.NODE, None, "fail", "all", "")  # not run yet
    assert row_matches(IPTABLES, "t", Scope.NODE, failing, "all", "all", "6443 REJECT")
    assert not row_matches(IPTABLES, "t", Scope.NODE, failing, "all", "all", "6443 weave")
    assert next_value(("a", "b", "c"), "c") == "a"
    assert next_value(("a", "b"), "zzz") == "a"


def test_plan_lines_are_told_apart() -> None:
    lines = [
        "iptables-save -c > BACKUP/x   # rollback: …",
        "-A INPUT is not a diff line here",
        "write /etc/sysconfig/iptables:",
        "--- /etc/sysconfig/iptables",
        "+++ /etc/sysconfig/iptables",
        "@@ -9,6 +9,4 @@",
        " -A INPUT -i lo -j ACCEPT",
        "--A INPUT -j REJECT",
        "+-A INPUT -j ACCEPT",
        "# left in place (targeted): -A INPUT -p tcp --dport 10250 -j DROP",
        "kubectl -n kube-system delete pods -l k8s-app=kube-proxy",
    ]
    kinds = [kind for _line, kind in classify_plan(lines)]
    assert kinds == [
        LineKind.COMMAND, LineKind.COMMAND, LineKind.FILE, LineKind.FILE, LineKind.FILE,
        LineKind.HUNK, LineKind.CONTEXT, LineKind.REMOVED, LineKind.ADDED, LineKind.COMMENT,
        LineKind.COMMAND,
    ]  # fmt: skip


def test_confirmation_evidence_and_control_codes() -> None:
    assert confirmation_matches(IPTABLES, IPTABLES)
    assert confirmation_matches(" yes ", IPTABLES)
    assert not confirmation_matches("y", IPTABLES)
    assert not confirmation_matches("node.iptables", IPTABLES)
    assert evidence_rows({"rule": "-A INPUT -j REJECT", "blocks": ["tcp/6443", "tcp/10250"],
                          "position": 7, "owner": None, "extra": {"b": 1}}) == [
        ("rule", "-A INPUT -j REJECT"), ("blocks", "tcp/6443\ntcp/10250"), ("position", "7"),
        ("owner", "(none)"), ("extra", "b: 1"),
    ]  # fmt: skip
    # nested evidence reads as key: value lines, the way `check -v` prints it, never JSON
    assert evidence_rows({"event": {"count": 2, "node": "n1"}, "pods": [{"name": "p"}]}) == [
        ("event", "count: 2\nnode: n1"), ("pods", "[1]:\n  name: p"),
    ]  # fmt: skip
    # control sequences are shown as text, inert (doctor.core.safetext)
    assert printable("a\x1b[2J\x1b[31mb\x1b]52;c;ZXZpbA==\x07c\r\n\td") == (
        "a\\x1b[2J\\x1b[31mb\\x1b]52;c;ZXZpbA==\\x07c\\r\n\td"
    )


def test_fix_blocked_reasons() -> None:
    from doctor.core.model import CheckResult

    def result(safety: FixSafety | None, status: Status = Status.FAIL) -> CheckResult:
        fix = Fix("f", "t", safety) if safety else None
        return CheckResult(IPTABLES, "t", Scope.NODE, status, "s", fix=fix)

    assert fix_blocked_reason(None, False, None) == "the check has not finished yet"
    assert fix_blocked_reason(result(FixSafety.UNSAFE), True, None) == BUNDLE_REASON
    assert "manual" in (fix_blocked_reason(result(FixSafety.MANUAL), False, None) or "")
    assert "being applied" in (fix_blocked_reason(result(FixSafety.SAFE), False, "x") or "")
    assert "nothing to fix" in (fix_blocked_reason(result(None, Status.OK), False, None) or "")
    assert fix_blocked_reason(result(FixSafety.SAFE), False, None) is None


def test_node_only_check_never_imports_textual() -> None:
    code = (
        "import sys; from doctor.ui.cli import main; rc = main(['check', '--scope', 'node', "
        f"'--bundle', {str(FIREWALLD_BUNDLE)!r}, '--format', 'json']); "
        "print('TEXTUAL', 'textual' in sys.modules, file=sys.stderr)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert "TEXTUAL False" in proc.stderr, proc.stderr


def test_tui_without_a_terminal_is_a_usage_error() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "doctor", "tui", "--bundle", str(FIREWALLD_BUNDLE)],
        capture_output=True, text=True, cwd=REPO, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 3
    assert "needs a terminal" in proc.stderr


# ---------------------------------------------------------------------------------------
# browsing bundles
# ---------------------------------------------------------------------------------------


@pilot_test
async def test_rows_fill_in_with_the_same_verdicts_as_check() -> None:
    app = tui_app("--bundle", str(FIREWALLD_BUNDLE))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        expected = reference(FIREWALLD_BUNDLE)
        assert {i: r.status.value for i, r in app.results.items()} == expected
        shown = table_rows(app)
        assert set(shown) == {c.id for c in app.backend.checks}
        # what is broken first: fail, warn, error, then skip and ok
        rank = {"fail": 0, "warn": 1, "error": 2, "skip": 4, "ok": 5}
        order = [rank[expected[i]] for i in shown]
        assert order == sorted(order), list(shown)
        assert expected[next(iter(shown))] == "fail"
        for check_id, status in expected.items():
            assert shown[check_id].endswith(status), (check_id, shown[check_id])
        text = screen_text(app)
        assert "node kubernetes-1" in text and f"bundle {FIREWALLD_BUNDLE}" in text
        assert "✗ 2" in text  # the tally
        assert "unsafe" in text  # fix safety column
        for binding in ("Details", "Fix", "Re-run", "Search", "Save", "Quit"):
            assert binding in text  # the footer


@pilot_test
async def test_a_failing_check_shows_findings_evidence_docs_and_fix() -> None:
    app = tui_app("--bundle", str(SERVICES_BUNDLE))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await select_row(pilot, IPTABLES)
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, CheckScreen) and screen.check_id == IPTABLES
        await pilot.pause()
        findings = list(screen.query(FindingView))
        assert len(findings) == len(app.results[IPTABLES].findings) == 2
        text = screen_text(app)
        assert "✗ fail" in text and "Findings (2)" in text
        assert INPUT_REJECT in text  # the rule itself, quoted as evidence
        assert "/etc/sysconfig/iptables" in text  # where it is persisted
        await pilot.press("2")
        doc = screen.query_one("#doc", Markdown)
        check = app.backend.by_id[IPTABLES]
        assert doc.source == check.documentation()
        assert "Why it matters" in screen_text(app)
        await pilot.press("3")
        plan = screen.query_one(PlanView)
        assert plan.lines == app.results[IPTABLES].fix.plan()  # type: ignore[union-attr]
        text = screen_text(app)
        assert "iptables -t filter -D INPUT -j REJECT --reject-with icmp-host-prohibited" in text
        assert "-" + INPUT_REJECT in text  # the /etc/sysconfig/iptables diff
        assert "fixes are disabled on a bundle" in text
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


@pilot_test
async def test_the_plan_on_a_bundle_is_shown_but_never_applied(tmp_path: Path) -> None:
    state = tmp_path / "state"
    app = tui_app("--bundle", str(SERVICES_BUNDLE), "--state-dir", str(state))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await select_row(pilot, IPTABLES)
        await pilot.press("x")
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        lines = [line for line, _kind in screen.query_one(PlanView).classified]
        kinds = {kind for _line, kind in screen.query_one(PlanView).classified}
        assert lines == app.results[IPTABLES].fix.plan()  # type: ignore[union-attr]
        assert {LineKind.ADDED, LineKind.REMOVED, LineKind.HUNK} <= kinds or (
            LineKind.REMOVED in kinds
        )
        assert screen.query_one("#apply", Button).disabled
        await pilot.press("a")
        await pilot.pause()
        assert isinstance(app.screen, PlanScreen)  # no confirmation: nothing to confirm
        assert "unsafe" in screen_text(app)
        assert "fixes are disabled on a bundle" in screen_text(app)
        await pilot.click("#back")
        assert isinstance(app.screen, MainScreen)
    assert not state.exists()  # nothing backed up, nothing journaled


@pilot_test
async def test_filters_search_and_scope_with_keys_and_mouse() -> None:
    app = tui_app("--bundle", str(FIREWALLD_BUNDLE))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        everything = list(table_rows(app))
        await pilot.press("f")  # problems
        problems = [i for i, r in app.results.items() if r.status in (Status.FAIL, Status.WARN,
                                                                        Status.ERROR)]  # fmt: skip
        assert sorted(table_rows(app)) == sorted(problems)
        await pilot.press("f")  # fail
        assert all(v.endswith("fail") for v in table_rows(app).values())
        for _ in range(5):  # warn, error, skip, ok, all
            await pilot.press("f")
        assert list(table_rows(app)) == everything
        await pilot.click("#scope-chip")  # mouse: scope → node
        assert all(i.startswith("node.") for i in table_rows(app))
        await pilot.press("s")  # cluster
        assert all(i.startswith("cluster.") for i in table_rows(app))
        await pilot.press("s")  # all
        await pilot.press("slash")
        assert app.focused is app.screen.query_one("#search", Input)
        await pilot.press(*"firewalld active")
        assert list(table_rows(app)) == [FIREWALLD]
        await pilot.press("escape")
        assert isinstance(app.focused, ChecksTable)
        await pilot.press("enter")
        assert isinstance(app.screen, CheckScreen) and app.screen.check_id == FIREWALLD


@pilot_test
async def test_mouse_opens_a_check_and_goes_back() -> None:
    app = tui_app("--bundle", str(FIREWALLD_BUNDLE))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(ChecksTable)
        row = [r.check_id for r in table.rows_shown].index(FIREWALLD)
        offset = (12, 1 + row)  # header line, then one line per row
        await pilot.click(ChecksTable, offset=offset)  # highlight
        assert table.selected_id == FIREWALLD
        await pilot.click(ChecksTable, offset=offset)  # select
        await pilot.pause()
        assert isinstance(app.screen, CheckScreen) and app.screen.check_id == FIREWALLD
        await pilot.click("#tabs Tab#--content-tab-tab-docs")
        assert app.screen.query_one("#tabs").active == "tab-docs"  # type: ignore[attr-defined]
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


@pilot_test
async def test_rerun_one_and_all() -> None:
    app = tui_app("--bundle", str(FIREWALLD_BUNDLE))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        before = dict(app.results)
        await select_row(pilot, FIREWALLD)
        await pilot.press("r")
        assert app.states.get(FIREWALLD) in ("running", None)
        await settle(pilot)
        assert app.results[FIREWALLD] is not before[FIREWALLD]  # a new result arrived
        assert app.results[FIREWALLD].status is before[FIREWALLD].status
        assert app.results[IPTABLES] is before[IPTABLES]  # the others were not re-run
        await pilot.press("R")
        await settle(pilot)
        assert all(app.results[i] is not before[i] for i in before)


@pilot_test
async def test_save_writes_the_check_report(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "now.json"
    app = tui_app("--bundle", str(FIREWALLD_BUNDLE))
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await settle(pilot)
        await pilot.press("w")
        assert isinstance(app.screen, SaveReportScreen)
        field = app.screen.query_one("#save-path", Input)
        field.value = str(out)
        await pilot.press("enter")
        deadline = time.monotonic() + 10
        while not out.exists() and time.monotonic() < deadline:
            await pilot.pause(0.05)
        await pilot.pause(0.1)
        assert isinstance(app.screen, MainScreen)
        assert any(str(out) in n.message for n in app._notifications)
    saved = validate_report(out.read_text())
    _code, expected = check_json("--bundle", str(FIREWALLD_BUNDLE))
    assert saved["schema"] == "kdoctor/report/v1"
    assert saved["target"] == expected["target"]
    assert [(c["id"], c["status"], c["summary"]) for c in saved["checks"]] == [
        (c["id"], c["status"], c["summary"]) for c in expected["checks"]
    ]
    assert saved["summary"] == expected["summary"]


@pilot_test
async def test_help_theme_and_quit() -> None:
    app = tui_app("--bundle", str(FIREWALLD_BUNDLE))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "kdoctor tui — keys" in screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)
        await pilot.press("f1")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert app.theme == DARK
        await pilot.press("t")
        assert app.theme == LIGHT
        assert app.theme_variables["status-fail"] != ""
        await pilot.press("t")
        assert app.theme == DARK
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0


@pilot_test
async def test_seed_lab_broken_cluster_findings() -> None:
    if not SEED_BROKEN.is_dir():
        pytest.skip("fixtures/bundles/seed-lab-broken does not exist")
    app = tui_app("--bundle", str(SEED_BROKEN), "--scope", "cluster")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert {i: r.status.value for i, r in app.results.items()} == reference(
            SEED_BROKEN, "--scope", "cluster"
        )
        text = screen_text(app)
        assert "version v1." in text  # the cluster's version in the header
        pods = "cluster.kube-system.pods"
        await select_row(pilot, pods)
        await pilot.press("enter")
        text = screen_text(app)
        assert "weave-net-xpdvj" in text and "CrashLoopBackOff" in text
        await pilot.press("escape")
        registry = "cluster.registry.pull-secret"
        await select_row(pilot, registry)
        await pilot.press("x")
        screen = app.screen
        assert isinstance(screen, PlanScreen)
        assert screen.fix.safety is FixSafety.MANUAL
        assert not screen.query("#apply")  # manual: commands only, nothing to apply
        text = screen_text(app)
        assert "kubectl" in text and "manual" in text
        await pilot.press("a")
        assert isinstance(app.screen, PlanScreen)


def test_a_directory_that_is_no_bundle_is_refused_before_the_tui_starts(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(BUNDLES / "healthy-node", bundle, symlinks=True)
    (bundle / "kdoctor-bundle.json").unlink()
    proc = kdoctor("tui", "--bundle", str(bundle))
    assert proc.returncode == 3
    assert proc.stderr.startswith(f"kdoctor: error: --bundle {bundle}: not a kdoctor bundle")


@pilot_test
async def test_a_part_that_fails_to_open_shows_why_and_is_retried(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    opened: list[Scope] = []
    real_open = Backend.open

    def flaky_open(self: Backend, scope: Scope) -> Any:
        opened.append(scope)
        if opened.count(scope) == 1:
            raise OSError("disk on fire")
        return real_open(self, scope)

    monkeypatch.setattr(Backend, "open", flaky_open)
    app = tui_app("--bundle", str(FIREWALLD_BUNDLE), "--scope", "node")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert {r.status for r in app.results.values()} == {Status.ERROR}
        reason = "cannot open the target: OSError: disk on fire"
        assert all(r.summary == reason for r in app.results.values())
        assert "cannot open the target: OSError: disk on fire" in screen_text(app)
        await pilot.press("R")  # re-run all: opens the node part again, then runs
        await settle(pilot)
        assert {i: r.status.value for i, r in app.results.items()} == reference(
            FIREWALLD_BUNDLE, "--scope", "node"
        )
    assert opened == [Scope.NODE, Scope.NODE]


@pilot_test
async def test_a_bad_bundle_exits_like_check() -> None:
    app = tui_app("--bundle", str(FIXTURES / "no-such-bundle"))
    async with app.run_test(size=(80, 24)) as pilot:
        deadline = time.monotonic() + 10
        while app.is_running and time.monotonic() < deadline:
            await pilot.pause(0.05)
    assert app.return_code == 3


# ---------------------------------------------------------------------------------------
# a safe fix on a real file tree: one key confirms, a failed re-check rolls back
# ---------------------------------------------------------------------------------------

MARKER = "/etc/kdoctor-marker"


class MarkerFile(Check):
    """The marker file says "good" (a test check whose safe fix writes the file)."""

    id = "node.test.tui-marker"
    title = "The marker file says good"
    scope = Scope.NODE
    fix_safety = FixSafety.SAFE

    def run(self, ctx: CheckContext) -> Verdict:
        text = ctx.node.read_text(MARKER)
        if text == "good\n":
            return Verdict.ok("the marker says good")
        finding = Finding(
            Severity.FAIL, f"the marker says {text!r}", resource=MARKER,
            evidence={"content": text or "(absent)"}, hint="write good into it",
        )  # fmt: skip
        # A "stuck" marker gets a fix that does not fix it: the re-check fails → rollback.
        want = "still bad\n" if text == "stuck\n" else "good\n"
        fix = Fix("node.test.tui-marker.write", "Write good into the marker", FixSafety.SAFE,
                  [WriteFile(MARKER, want, text)])  # fmt: skip
        return Verdict.from_findings([finding], "the marker is bad", "the marker says good", fix)


def marker_app(root: Path, state: Path) -> KdoctorApp:
    args = build_parser().parse_args(["tui", "--root", str(root), "--state-dir", str(state)])
    return KdoctorApp(args, [MarkerFile], show_durations=False)


@pytest.mark.parametrize("content", ["bad\n", "stuck\n"])
@pilot_test
async def test_safe_fix_one_key_confirmation_apply_and_rollback(
    tmp_path: Path, content: str
) -> None:
    root, state = tmp_path / "root", tmp_path / "state"
    (root / "etc").mkdir(parents=True)
    marker = root / MARKER.lstrip("/")
    marker.write_text(content)
    app = marker_app(root, state)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert app.results[MarkerFile.id].status is Status.FAIL
        await pilot.press("x")
        plan = app.screen
        assert isinstance(plan, PlanScreen)
        await pilot.press("a")
        confirm = app.screen
        assert isinstance(confirm, ConfirmFix) and not confirm.typed
        await pilot.press("n")  # one key declines
        assert on_top(app) is plan and plan.outcome_text.startswith("Cancelled")
        assert marker.read_text() == content
        await pilot.press("a")
        await pilot.press("y")  # one key applies a safe fix
        await settle(pilot)
        outcome = plan.outcome_text
        log = [strip.text for strip in plan.query_one("#fix-log", RichLog).lines]
        status = app.results[MarkerFile.id].status
    outcomes = [e["outcome"] for e in read_journal(state)]
    if content == "bad\n":
        assert outcome.startswith("✓ applied") and status is Status.OK
        assert marker.read_text() == "good\n"
        assert outcomes == ["declined", "applied"]
        assert f"write {MARKER}" in log
    else:
        assert outcome.startswith("✗ rolled-back") and "still reports fail" in outcome
        assert marker.read_text() == "stuck\n"  # restored from the backup
        assert status is Status.FAIL
        assert outcomes == ["declined", "rolled-back"]
        assert any(line.startswith(f"restore {MARKER}") for line in log)


# ---------------------------------------------------------------------------------------
# a hanging API server never freezes the UI
# ---------------------------------------------------------------------------------------


@pytest.fixture
def hanging_kubeconfig(tmp_path: Path) -> Iterator[Path]:
    apiserver = pytest.importorskip("tests.apiserver")
    with apiserver.ApiServer(SEED_BROKEN if SEED_BROKEN.is_dir() else None) as server:
        server.faults.add(hang=True)  # accepts, then never answers anything
        yield server.write_kubeconfig(tmp_path / "kubeconfig")


@pilot_test
async def test_a_hanging_api_server_never_blocks_the_ui(
    hanging_kubeconfig: Path, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    app = tui_app(
        "--kubeconfig", str(hanging_kubeconfig), "--root", str(root), "--timeout", "30",
        "--only", "node.firewalld,cluster.nodes",
    )  # fmt: skip
    async with app.run_test(size=(120, 40)) as pilot:
        started = time.monotonic()
        while FIREWALLD not in app.results and time.monotonic() - started < 20:
            await pilot.pause(0.05)
        assert FIREWALLD in app.results  # the node part did not wait for the cluster
        assert app.part_state[Scope.CLUSTER] == "opening"  # still connecting
        assert "cluster: connecting" in screen_text(app)
        for key, screen in (("question_mark", HelpScreen), ("escape", MainScreen)):
            pressed = time.monotonic()
            await pilot.press(key)
            assert isinstance(app.screen, screen)
            assert time.monotonic() - pressed < 5.0  # the connect blocks for 15 s or more
        main = app.screen
        assert isinstance(main, MainScreen)
        await pilot.press("f")
        assert main.status_filter == "problems"
        assert app.part_state[Scope.CLUSTER] == "opening"  # all of that while it still hangs
        quit_at = time.monotonic()
        await pilot.press("q")
    assert time.monotonic() - quit_at < 3.0  # the stuck connect did not hold up exit
    assert app.return_code == 0


# ---------------------------------------------------------------------------------------
# the iptables fix in a network namespace (the app runs inside it, in a child process)
# ---------------------------------------------------------------------------------------


async def scenario_iptables_fix(root: str, state: str, answer: str) -> dict[str, Any]:
    """Runs INSIDE the namespace (child process): find, read, plan, confirm, apply.

    ``answer``: "cancel" presses escape at the confirmation; anything else is first a wrong
    answer (which must not apply), then ``answer`` typed and submitted.
    """
    app = tui_app("--scope", "node", "--only", IPTABLES, "--root", root, "--state-dir", state)
    out: dict[str, Any] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        out["before"] = app.results[IPTABLES].status.value
        out["row_before"] = table_rows(app)[IPTABLES]
        await pilot.press("enter")
        assert isinstance(app.screen, CheckScreen)
        out["findings"] = screen_text(app)
        # The findings scroll (pgdn) when their evidence is longer than the screen.
        await pilot.press("pagedown")
        await pilot.pause()
        out["findings"] += screen_text(app)
        await pilot.press("pageup")
        await pilot.press("x")
        plan_screen = app.screen
        assert isinstance(plan_screen, PlanScreen)
        out["plan"] = screen_text(app)
        await pilot.press("a")
        confirm = app.screen
        assert isinstance(confirm, ConfirmFix) and confirm.typed
        out["confirm"] = screen_text(app)
        if answer == "cancel":
            await pilot.press("escape")
        else:
            await pilot.press(*"y", "enter")  # one key is not enough for an unsafe fix
            await pilot.pause()
            out["wrong_answer_kept_dialog"] = app.screen is confirm
            out["wrong_answer"] = screen_text(app)
            confirm.query_one("#confirm-input", Input).value = ""
            await pilot.press(*answer, "enter")
        await pilot.pause()
        await settle(pilot, timeout=120)
        assert app.screen is plan_screen
        out["outcome"] = plan_screen.outcome_text
        out["log"] = [strip.text for strip in plan_screen.query_one("#fix-log", RichLog).lines]
        out["after"] = app.results[IPTABLES].status.value
        out["plan_after"] = screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, CheckScreen)
        out["check_after"] = screen_text(app)
        await pilot.press("escape")
        out["row_after"] = table_rows(app)[IPTABLES]
        out["main_after"] = screen_text(app)
    return out


def run_in_netns(ns: str, root: Path, state: Path, answer: str) -> dict[str, Any]:
    code = (
        "import asyncio, json, sys\n"
        "from tests.test_tui import scenario_iptables_fix\n"
        "out = asyncio.run(scenario_iptables_fix(*sys.argv[1:]))\n"
        "print('RESULT ' + json.dumps(out))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code, str(root), str(state), answer],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    result: dict[str, Any] = json.loads(line[len("RESULT ") :])
    return result


@pytest.mark.root
def test_netns_unsafe_fix_with_typed_confirmation_turns_the_check_green(
    netns: str, iptables_root: Path, tmp_path: Path
) -> None:
    load_rules(netns, "centos7-kube-weave-broken.rules")
    before = saved_ruleset(netns)
    sysconfig = iptables_root / "etc/sysconfig/iptables"
    original = sysconfig.read_text()
    state = tmp_path / "state"

    out = run_in_netns(netns, iptables_root, state, IPTABLES)

    assert out["before"] == "fail" and out["row_before"].endswith("fail")
    assert INPUT_REJECT in out["findings"] and FORWARD_REJECT in out["findings"]
    # The backend's own binary (iptables-nft on Debian): the fix edits what the check read.
    assert "-t filter -D INPUT -j REJECT --reject-with icmp-host-prohibited" in out["plan"]
    assert "-" + INPUT_REJECT in out["plan"]  # the /etc/sysconfig/iptables diff
    assert "Type node.iptables.reject or yes" in out["confirm"]
    assert out["wrong_answer_kept_dialog"] and "Not applied: type exactly" in out["wrong_answer"]
    assert out["outcome"].startswith("✓ applied"), out["outcome"]
    assert "now reports ok" in out["outcome"]
    assert any(
        re.match(r"\$ iptables(-nft|-legacy)? -t filter -D INPUT", line) for line in out["log"]
    )
    assert out["after"] == "ok" and out["row_after"].endswith("ok")
    assert "✓ ok" in out["check_after"] and "No findings." in out["check_after"]

    # The namespace's ruleset really changed, exactly by the two rules; the file too.
    assert saved_ruleset(netns) == without_rules(before, INPUT_REJECT, FORWARD_REJECT)
    assert sysconfig.read_text() == original.replace(INPUT_REJECT + "\n", "").replace(
        FORWARD_REJECT + "\n", ""
    )
    assert [e["outcome"] for e in read_journal(state)] == ["applied"]


@pytest.mark.root
def test_netns_cancel_leaves_everything_untouched(
    netns: str, iptables_root: Path, tmp_path: Path
) -> None:
    load_rules(netns, "centos7-kube-weave-broken.rules")
    before = saved_ruleset(netns)
    original = (iptables_root / "etc/sysconfig/iptables").read_bytes()
    state = tmp_path / "state"

    out = run_in_netns(netns, iptables_root, state, "cancel")

    assert out["outcome"].startswith("Cancelled"), out["outcome"]
    assert out["log"] == []
    assert out["after"] == "fail"
    assert saved_ruleset(netns) == before
    assert (iptables_root / "etc/sysconfig/iptables").read_bytes() == original
    assert not (state / "backups").exists()  # nothing was even backed up
    assert [e["outcome"] for e in read_journal(state)] == ["declined"]


@pytest.mark.root
def test_netns_failed_recheck_shows_the_rollback_and_restores(
    netns: str, iptables_root: Path, tmp_path: Path
) -> None:
    # Someone closed tcp/10250 on purpose: the fix leaves that rule, so after deleting the
    # blanket REJECTs the re-check still fails and everything is put back.
    load_rules(netns, "targeted-kubelet-drop.rules")
    before = saved_ruleset(netns)
    original = (iptables_root / "etc/sysconfig/iptables").read_bytes()
    state = tmp_path / "state"

    out = run_in_netns(netns, iptables_root, state, "yes")

    assert out["outcome"].startswith("✗ rolled-back"), out["outcome"]
    assert "still reports fail" in out["outcome"]
    assert "Backup: " in out["outcome"]
    assert any(line.startswith("rolling back") for line in out["log"])
    assert any(
        re.match(r"\$ iptables(-nft|-legacy)?-restore -c -T filter", ln) for ln in out["log"]
    )
    assert out["after"] == "fail" and out["row_after"].endswith("fail")
    assert saved_ruleset(netns) == before
    assert (iptables_root / "etc/sysconfig/iptables").read_bytes() == original
    assert [e["outcome"] for e in read_journal(state)] == ["rolled-back"]


# ---------------------------------------------------------------------------------------
# the kube-proxy fix against the test API server
# ---------------------------------------------------------------------------------------


@pilot_test
async def test_kube_proxy_fix_against_the_test_api_server(tmp_path: Path) -> None:
    apiserver = pytest.importorskip("tests.apiserver")
    bundle = BUNDLES / "kube-proxy-modern-userspace"
    if not bundle.is_dir():
        pytest.skip(f"{bundle} does not exist")
    check = "cluster.kube-proxy"
    state = tmp_path / "state"
    with apiserver.ApiServer(bundle) as server:
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        app = tui_app(
            "--kubeconfig", str(kcfg), "--scope", "cluster", "--only", check,
            "--state-dir", str(state), "--timeout", "30",
        )  # fmt: skip
        async with app.run_test(size=(120, 40)) as pilot:
            await settle(pilot)
            assert app.results[check].status is Status.FAIL
            assert "server https://127.0.0.1:" in screen_text(app)
            await pilot.press("x")
            plan = app.screen
            assert isinstance(plan, PlanScreen)
            kinds = [kind for _line, kind in plan.query_one(PlanView).classified]
            assert LineKind.REMOVED in kinds and LineKind.ADDED in kinds  # the patch as a diff
            assert "mode: userspace" in screen_text(app) or "kubectl" in screen_text(app)
            await pilot.press("a")
            assert isinstance(app.screen, ConfirmFix) and app.screen.typed
            await pilot.press(*"yes", "enter")
            await settle(pilot, timeout=120)
            outcome = plan.outcome_text
            log = [strip.text for strip in plan.query_one("#fix-log", RichLog).lines]
        cm = server.get_object("v1", "configmaps", "kube-system", "kube-proxy")
    assert any("kubectl -n kube-system patch configmap kube-proxy" in line for line in log), log
    assert outcome.startswith("✓ applied"), (outcome, log)
    assert "mode: iptables" in cm["data"]["config.conf"]
    assert app.results[check].status in (Status.OK, Status.WARN)


@pilot_test
async def test_live_probes_are_shown_and_removed_after_every_run(tmp_path: Path) -> None:
    support = pytest.importorskip("tests.live_probe_support")
    check = "cluster.dns.pod-to-pod"
    server = support.ApiServer(support.SAMPLE)
    server.start()
    try:
        support.add_node(server, "kubernetes-2")
        kcfg = server.write_kubeconfig(tmp_path / "kubeconfig")
        with support.FakeKubelet(server):
            app = tui_app("--kubeconfig", str(kcfg), "--only", check, "--timeout", "30")
            async with app.run_test(size=(120, 40)) as pilot:
                await settle(pilot)
                first = app.results[check]
                assert first.status is Status.OK, first.summary
                assert support.probe_objects(server) == []  # removed when the run ended
                await pilot.press("enter")
                text = screen_text(app)
                assert "measured" in text and "from \\ to" in text  # the probe matrix
                await pilot.press("r")  # a re-run makes new probes (the old set is closed)
                await settle(pilot)
                again = app.results[check]
                assert again is not first and again.status is Status.OK, again.summary
                assert support.probe_objects(server) == []
    finally:
        server.stop()


# ---------------------------------------------------------------------------------------
# snapshots
# ---------------------------------------------------------------------------------------

SIZES = [(80, 24), (120, 40)]


def snapshot_app() -> KdoctorApp:
    return tui_app("--bundle", "fixtures/bundles/centos7-iptables-services",
                   "--only", SNAPSHOT_CHECKS)  # fmt: skip


def before(*keys: str, row: str | None = None) -> Callable[[Pilot[None]], Any]:
    async def run(pilot: Pilot[None]) -> None:
        await settle(pilot)
        if row:
            await select_row(pilot, row)
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
        await pilot.pause(0.2)

    return run


@pytest.fixture
def in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # the header shows the bundle path as given: keep it relative


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_main(snap_compare: Any, size: tuple[int, int], in_repo: None) -> None:
    assert snap_compare(snapshot_app(), terminal_size=size, run_before=before(row=IPTABLES))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_finding(snap_compare: Any, size: tuple[int, int], in_repo: None) -> None:
    assert snap_compare(
        snapshot_app(), terminal_size=size, run_before=before("enter", row=IPTABLES)
    )


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_plan(snap_compare: Any, size: tuple[int, int], in_repo: None) -> None:
    assert snap_compare(snapshot_app(), terminal_size=size, run_before=before("x", row=IPTABLES))


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_snapshot_help(snap_compare: Any, size: tuple[int, int], in_repo: None) -> None:
    assert snap_compare(snapshot_app(), terminal_size=size, run_before=before("question_mark"))


def test_snapshot_light_theme(snap_compare: Any, in_repo: None) -> None:
    assert snap_compare(
        snapshot_app(), terminal_size=(80, 24), run_before=before("t", row=IPTABLES)
    )


# ---------------------------------------------------------------------------------------
# a real terminal
# ---------------------------------------------------------------------------------------


def test_in_a_real_terminal_with_tmux(tmp_path: Path) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("needs tmux (not installed)")
    socket = f"kdt-tui-{uuid.uuid4().hex[:8]}"
    done = tmp_path / "exit-code"
    command = (
        f"cd {shlex.quote(str(REPO))} && PYTHONPATH={shlex.quote(str(REPO))} "
        f"{shlex.quote(sys.executable)} -m doctor tui --bundle "
        f"{shlex.quote(str(SERVICES_BUNDLE))} --state-dir {shlex.quote(str(tmp_path / 's'))}; "
        f"echo $? > {shlex.quote(str(done))}; sleep 30"
    )

    def tmux(*args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30
        )
        return proc.stdout

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", "kdt")

    def wait_for(text: str, timeout: float = 30, gone: bool = False) -> str:
        """Poll the screen until TEXT is on it (or, GONE, off it): never a fixed sleep."""
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            shown = screen()
            if (text in shown) != gone:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never {'left' if gone else 'appeared'}:\n{shown}")

    env_term = {"TERM": "xterm-256color"}
    subprocess.run(
        ["tmux", "-L", socket, "new-session", "-d", "-s", "kdt", "-x", "120", "-y", "40",
         "bash", "-c", command],
        check=True, env=dict(os.environ, **env_term), timeout=30,
    )  # fmt: skip
    try:
        wait_for("✓ ok")
        wait_for("✗ fail")
        shown = wait_for("Quit")  # the footer: drawn after the table, so wait for it too
        assert "node kubernetes-1" in shown
        assert IPTABLES in shown and "unsafe" in shown
        assert "Quit" in shown  # the footer
        tmux("send-keys", "-t", "kdt", "f")  # problems only
        shown = wait_for("problems")
        assert "node.services" not in shown.split("Status")[1].split("\n\n")[0]
        tmux("send-keys", "-t", "kdt", "Enter")
        wait_for("Findings (2)")
        wait_for(INPUT_REJECT)  # the rule itself, as evidence
        tmux("send-keys", "-t", "kdt", "x")
        shown = wait_for("Plan for node.iptables.reject")
        assert "fixes are disabled on a bundle" in shown
        # plan → check → table, one Escape at a time (two at once read as alt+escape)
        tmux("send-keys", "-t", "kdt", "Escape")
        wait_for("Plan for node.iptables.reject", gone=True)
        tmux("send-keys", "-t", "kdt", "Escape")
        wait_for("Re-run")
        tmux("send-keys", "-t", "kdt", "?")
        shown = wait_for("kdoctor tui — keys")
        assert "Statuses" in shown
        tmux("send-keys", "-t", "kdt", "Escape")
        wait_for("kdoctor tui — keys", gone=True)
        tmux("send-keys", "-t", "kdt", "q")
        deadline = time.monotonic() + 15
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert done.exists(), screen()
        assert done.read_text().strip() == "0"
    finally:
        path = tmux("display-message", "-p", "#{socket_path}").strip()
        tmux("kill-server")
        if path.endswith(socket):
            Path(path).unlink(missing_ok=True)
