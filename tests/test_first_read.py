"""What a person reads (issue 10): the text report, the words of hints and plans, the docs.

The text report of the lab-22 broken bundle is the reference case: it fails on the overlay
(Weave Net crash-looping on kubernetes-2) and on a pull secret created without
``--docker-server``. A person must see what is broken first, once, with what to do.
"""

from __future__ import annotations

import io
import re

from doctor.core.model import CheckResult, Finding, Scope, Severity, Status
from doctor.ui.text import make_console, print_result
from tests.conftest import BUNDLES, kdoctor

BROKEN = BUNDLES / "seed-lab-broken"
SERVICES = BUNDLES / "centos7-iptables-services"
CHECK_LINE = re.compile(r"^\[(.)\] (\S+)  ")


def _registered() -> tuple[int, int]:
    """(all checks, cluster checks) as `kdoctor list` says: the counts grow with new checks."""
    rows = [line.split() for line in kdoctor("list").stdout.splitlines() if line.strip()]
    return len(rows), sum(1 for row in rows if row[1] == "cluster")


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
    # the one ok check: one line
    oks = [line for line in lines if line.startswith("[✓]")]
    assert len(oks) == 1 and oks[0].startswith("[✓] cluster.kube-proxy  kube-proxy ready"), oks
    # no evidence dumps, no raw JSON
    assert "resourceVersion" not in text and "waiting_containers" not in text
    assert not [line for line in lines if '{"' in line or "': " in line], text
    assert "hint: " in text
    total, _cluster = _registered()
    assert lines[-3].startswith(f"✗ kdoctor found issues in 5 of {total} checks")


def test_checks_skipped_for_the_same_reason_share_one_line() -> None:
    proc = kdoctor("check", "--bundle", str(SERVICES))
    lines = proc.stdout.splitlines()
    reason = "the bundle has no cluster/ directory"
    shared = [line for line in lines if reason in line]
    assert len(shared) == 1, proc.stdout
    _total, cluster = _registered()
    assert shared[0].startswith(f"[-] {cluster} skipped") and "cluster.nodes" in shared[0]
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
    total, _cluster = _registered()
    assert proc.stdout.splitlines() == [
        f"✗ kdoctor found issues in 5 of {total} checks (1 ok, 5 fail, {total - 6} skip)."
    ]


def test_the_report_on_a_bundle_shows_the_plan_command_that_works_there() -> None:
    proc = kdoctor("check", "--bundle", str(SERVICES), "--scope", "node")
    assert "kdoctor fix node.iptables.reject --unsafe" in proc.stdout
    assert proc.stdout.splitlines()[-1] == (
        f"  1 fixable on the live target; the plans from this bundle: "
        f"kdoctor fix --dry-run --bundle {SERVICES}"
    )


def test_glyphs_pip_and_flutter_style() -> None:
    text = kdoctor("check", "--bundle", str(SERVICES), "--scope", "node").stdout
    assert "[✗] node.iptables.reject" in text
    assert "    × `-A INPUT -j REJECT" in text
    assert "      hint: Delete it" in text
