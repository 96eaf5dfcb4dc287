"""Human output: flutter doctor's ✓ ! ✗ per check, pip's × message / context / hint per finding.

Rich decides colour: plain text when stdout is not a terminal or ``NO_COLOR`` is set.
"""

from __future__ import annotations

import json
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from doctor.model import CheckResult, Finding, FixSafety, Status
from doctor.report import Report

STYLE = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.FAIL: "red",
    Status.SKIP: "dim",
    Status.ERROR: "magenta",
}


def make_console(stream: IO[str] | None = None) -> Console:
    return Console(file=stream, highlight=False, soft_wrap=True)


def _evidence_lines(evidence: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in evidence.items():
        if isinstance(value, str):
            rendered = value
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            if not value:
                rendered = "(none)"
            else:
                lines.append(f"{key}:")
                lines.extend(f"  {v}" for v in value)
                continue
        else:
            rendered = json.dumps(value, sort_keys=True)
        lines.append(f"{key}: {rendered}")
    return lines


def _print_finding(console: Console, finding: Finding) -> None:
    mark = "×" if finding.severity.value == "fail" else "!"
    style = "red" if finding.severity.value == "fail" else "yellow"
    console.print(Text.assemble(("    ", ""), (mark + " ", f"bold {style}"), finding.message))
    context: list[str] = []
    if finding.resource:
        context.append(finding.resource)
    if finding.caused_by:
        context.append(f"consequence of {finding.caused_by}")
    context.extend(_evidence_lines(finding.evidence))
    for index, line in enumerate(context):
        lead = "    ╰─> " if index == 0 else "        "
        console.print(Text(lead + line, style="dim" if index else ""))
    if finding.hint:
        console.print(Text.assemble(("    hint: ", "bold cyan"), finding.hint))


def _fix_line(result: CheckResult) -> str | None:
    fix = result.fix
    if fix is None:
        return None
    if fix.safety is FixSafety.MANUAL:
        return f"manual fix: {fix.title} (see `kdoctor fix {result.id} --dry-run`)"
    flags = " --unsafe" if fix.safety is FixSafety.UNSAFE else ""
    return f"[*] fix available ({fix.safety.value}): {fix.title} — kdoctor fix {result.id}{flags}"


def print_result(console: Console, result: CheckResult, verbose: bool = False) -> None:
    style = STYLE[result.status]
    head = Text.assemble(
        (f"[{result.status.glyph}] ", f"bold {style}"),
        (result.id, "bold"),
        f"  {result.title}",
    )
    console.print(head)
    summary_style = "" if result.status in (Status.OK, Status.SKIP) else style
    console.print(Text(f"    {result.summary}", style=summary_style))
    for finding in result.findings:
        _print_finding(console, finding)
    line = _fix_line(result)
    if line:
        console.print(Text("    " + line, style="cyan"))
    if result.fix and verbose:
        for step in result.fix.plan():
            console.print(Text("      " + step, style="dim"))
    if verbose:
        console.print(Text(f"    ({result.duration_ms} ms)", style="dim"))


def render_text(report: Report, console: Console, verbose: bool = False) -> None:
    target = report.target
    where = f"bundle {target.bundle}" if target.bundle else f"node {target.node}"
    if target.cluster:
        c = target.cluster
        where += f", cluster {c.context or '?'} ({c.server or '?'}, {c.version or '?'})"
    console.print(Text(f"kdoctor: {where}", style="bold"))
    console.print()
    for result in report.results:
        print_result(console, result, verbose)
    console.print()
    counts = report.summary()
    problems = counts["warn"] + counts["fail"] + counts["error"]
    fixable = sum(1 for r in report.results if r.fix and r.fix.safety is not FixSafety.MANUAL)
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if problems:
        console.print(
            Text.assemble(
                ("! ", "bold yellow"),
                f"kdoctor found issues in {problems} of {len(report.results)} checks ({tally}).",
            )
        )
        if fixable:
            console.print(
                Text(f"[*] {fixable} fixable with `kdoctor fix` (see the plan with --dry-run).")
            )
    else:
        console.print(Text.assemble(("• ", "bold green"), f"No issues found! ({escape(tally)})"))
