"""Runner and fix engine behaviour, with small checks defined here over real files."""

from __future__ import annotations

import json
import time
from pathlib import Path

from doctor.core.commands import CommandRunner
from doctor.core.context import CheckContext, FixContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.fix import Fix, FixSafety
from doctor.core.fixengine import Outcome, apply_fix
from doctor.core.model import Finding, Scope, Severity, Status, Verdict
from doctor.core.registry import Check
from doctor.core.runner import run_checks, run_one
from doctor.facts.cluster import NoCluster
from doctor.facts.node import LiveNodeFacts
from fixes.base import Command, WriteFile


def make_ctx(root: Path) -> CheckContext:
    return CheckContext(node=LiveNodeFacts(root), cluster=NoCluster("none here"))


class Crashes(Check):
    """Raises."""

    id = "node.test.crashes"
    title = "crashes"
    scope = Scope.NODE

    def run(self, ctx: CheckContext) -> Verdict:
        raise RuntimeError("boom")


class Hangs(Check):
    """Never finishes in time."""

    id = "node.test.hangs"
    title = "hangs"
    scope = Scope.NODE

    def run(self, ctx: CheckContext) -> Verdict:
        time.sleep(5)
        return Verdict.ok("late")


class Missing(Check):
    """Needs a fact that is absent."""

    id = "node.test.missing"
    title = "missing"
    scope = Scope.NODE

    def run(self, ctx: CheckContext) -> Verdict:
        raise FactMissing("the bundle has no commands/x.txt")


class Garbled(Check):
    """Reads an unparseable fact."""

    id = "node.test.garbled"
    title = "garbled"
    scope = Scope.NODE

    def run(self, ctx: CheckContext) -> Verdict:
        raise FactError("/etc/x: line 3: unterminated quote")


class InCluster(Check):
    """A cluster check."""

    id = "cluster.test.thing"
    title = "cluster thing"
    scope = Scope.CLUSTER

    def run(self, ctx: CheckContext) -> Verdict:
        raise AssertionError("must not run without a cluster")


class MarkerFile(Check):
    """Fails until /etc/marker says "good"; offers a fix that writes it."""

    id = "node.test.marker"
    title = "marker"
    scope = Scope.NODE
    fix_safety = FixSafety.SAFE
    content = "good\n"

    def run(self, ctx: CheckContext) -> Verdict:
        text = ctx.node.read_text("/etc/marker")
        if text == "good\n":
            return Verdict.ok("marker is good")
        fix = Fix(
            "node.test.marker/write",
            "write the marker",
            FixSafety.SAFE,
            [WriteFile("/etc/marker", self.content, old_content=text)],
        )
        finding = Finding(Severity.FAIL, f"marker is {text!r}", "/etc/marker")
        return Verdict.from_findings([finding], "bad marker", "", fix)


def test_crash_timeout_missing_and_garbled_become_statuses_and_others_still_run(
    tmp_path: Path,
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "marker").write_text("good\n")
    started = time.monotonic()
    results = run_checks(
        [Crashes, Hangs, Missing, Garbled, InCluster, MarkerFile],
        make_ctx(tmp_path),
        deadline=10,
        per_check_timeout=0.5,
    )
    assert time.monotonic() - started < 3
    by_id = {r.id: r for r in results}
    assert results[0].id == "node.test.crashes"
    assert by_id["node.test.crashes"].status is Status.ERROR
    assert "RuntimeError: boom" in by_id["node.test.crashes"].summary
    assert by_id["node.test.hangs"].status is Status.ERROR
    assert "timed out" in by_id["node.test.hangs"].summary
    assert by_id["node.test.missing"].status is Status.SKIP
    assert by_id["node.test.garbled"].status is Status.ERROR
    assert "unterminated quote" in by_id["node.test.garbled"].summary
    assert by_id["cluster.test.thing"].status is Status.SKIP
    assert by_id["cluster.test.thing"].summary.endswith("(looked at: none here)")
    assert by_id["node.test.marker"].status is Status.OK


def test_overall_deadline_marks_unfinished_checks_error(tmp_path: Path) -> None:
    results = run_checks([Hangs], make_ctx(tmp_path), deadline=0.3, per_check_timeout=30)
    assert results[0].status is Status.ERROR
    assert "deadline" in results[0].summary


def _fix_ctx(root: Path) -> FixContext:
    return FixContext(
        node=LiveNodeFacts(root), cluster=NoCluster("none"), root=root, runner=CommandRunner()
    )


def test_fix_applies_rechecks_and_journals(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "marker").write_text("bad\n")
    result = run_one(MarkerFile, make_ctx(root))
    assert result.status is Status.FAIL and result.fix is not None
    assert "-bad" in result.fix.plan() and "+good" in result.fix.plan()
    state = tmp_path / "state"
    report = apply_fix(
        MarkerFile.id,
        result.fix,
        _fix_ctx(root),
        state,
        lambda: run_one(MarkerFile, make_ctx(root)),
    )
    assert report.outcome is Outcome.APPLIED
    assert (root / "etc" / "marker").read_text() == "good\n"
    assert report.backup_dir is not None
    saved = list(report.backup_dir.rglob("original"))
    assert [p.read_text() for p in saved] == ["bad\n"]
    entry = json.loads((state / "journal.jsonl").read_text().splitlines()[-1])
    assert entry["outcome"] == "applied" and entry["backup"] == str(report.backup_dir)
    assert entry["recheck_status"] == "ok"


class WrongMarker(MarkerFile):
    """Its fix writes the wrong content, so the re-check still fails."""

    id = "node.test.wrong-marker"
    content = "still bad\n"


def test_fix_rolls_back_when_the_recheck_still_fails(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "marker").write_bytes(b"bad\r\n")
    result = run_one(WrongMarker, make_ctx(root))
    assert result.fix is not None
    report = apply_fix(
        WrongMarker.id,
        result.fix,
        _fix_ctx(root),
        tmp_path / "state",
        lambda: run_one(WrongMarker, make_ctx(root)),
    )
    assert report.outcome is Outcome.ROLLED_BACK
    assert "still reports fail" in report.reason
    assert (root / "etc" / "marker").read_bytes() == b"bad\r\n"


def test_fix_rolls_back_earlier_steps_when_a_later_step_fails(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    fix = Fix(
        "node.test.marker/two-steps",
        "write then fail",
        FixSafety.SAFE,
        [WriteFile("/etc/new-file", "x\n"), Command(["false"])],
    )
    report = apply_fix(
        "node.test.marker",
        fix,
        _fix_ctx(root),
        tmp_path / "state",
        lambda: run_one(MarkerFile, make_ctx(root)),
    )
    assert report.outcome is Outcome.ROLLED_BACK
    assert "`false` exited 1" in report.reason
    assert not (root / "etc" / "new-file").exists()
