"""Human output: flutter doctor's ✓ ! ✗ per check, pip's × message / context / hint per finding.

Rich decides colour: plain text when stdout is not a terminal or ``NO_COLOR`` is set.

Evidence values shaped as a *matrix* are drawn as a table instead of a JSON line, wherever
they are (a finding's evidence or a check's own ``evidence``), under any key::

    {"title": "…",                      # optional caption
     "corner": "source",                # optional header of the row-name column
     "columns": ["UDP", "TCP"],         # one header per cell column
     "rows": [{"name": "Service kube-dns 10.96.0.10",
               "cells": ["10.96.0.1 (2 ms)", "timeout (1000 ms)"],
               "status": ["ok", "fail"]}]}   # optional, per cell: ok|warn|fail|skip

A cell with a status is coloured and prefixed with its glyph (✓ ! ✗ -), so the table reads
the same without colour. The JSON report carries the same object unchanged.
"""

from __future__ import annotations

import json
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from doctor.core.fix import FixSafety
from doctor.core.model import CheckResult, Finding, Status
from doctor.core.report import Report

STYLE = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.FAIL: "red",
    Status.SKIP: "dim",
    Status.ERROR: "magenta",
}


def make_console(stream: IO[str] | None = None) -> Console:
    return Console(file=stream, highlight=False, soft_wrap=True)


_CELL = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red"), "skip": ("-", "dim")}


def is_matrix(value: Any) -> bool:
    """True for an evidence value shaped as a matrix (see the module docstring)."""
    return (
        isinstance(value, dict)
        and isinstance(value.get("columns"), list)
        and isinstance(value.get("rows"), list)
        and all(isinstance(r, dict) for r in value["rows"])
    )


def matrix_table(value: dict[str, Any]) -> Table:
    """A matrix evidence value as a rich Table (its title is printed above it, wrapped)."""
    table = Table()
    # Cells stay on one line; the row names fold when the terminal is narrow.
    table.add_column(str(value.get("corner") or ""), style="bold", overflow="fold")
    for column in value["columns"]:
        table.add_column(str(column), no_wrap=True)
    for row in value["rows"]:
        cells = list(row.get("cells") or [])
        statuses = list(row.get("status") or [])
        rendered: list[Text] = []
        for index in range(len(value["columns"])):
            cell = str(cells[index]) if index < len(cells) else ""
            status = statuses[index] if index < len(statuses) else None
            if status in _CELL:
                glyph, style = _CELL[status]
                rendered.append(Text(f"{glyph} {cell}", style=style))
            else:
                rendered.append(Text(cell))
        table.add_row(Text(str(row.get("name", ""))), *rendered)
    return table


def _print_matrices(console: Console, evidence: dict[str, Any], indent: int) -> None:
    from rich.padding import Padding

    for value in evidence.values():
        if is_matrix(value):
            if value.get("title"):
                console.print(Text(" " * indent + str(value["title"]), style="bold"))
            console.print(Padding(matrix_table(value), (0, 0, 0, indent), expand=False))


def _evidence_lines(evidence: dict[str, Any]) -> list[str]:
    lines = []
    for key, value in evidence.items():
        if is_matrix(value):
            continue  # drawn as a table (_print_matrices)
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
    _print_matrices(console, finding.evidence, 8)
    if finding.hint:
        console.print(Text.assemble(("    hint: ", "bold cyan"), finding.hint))


def _fix_line(result: CheckResult, bundle: str | None = None) -> str | None:
    """The fix offer; on a bundle only what works there (the dry run), since fix refuses
    to change a copy."""
    fix = result.fix
    if fix is None:
        return None
    where = f" --bundle {bundle}" if bundle else ""
    if fix.safety is FixSafety.MANUAL:
        return f"manual fix: {fix.title} (see `kdoctor fix {result.id} --dry-run{where}`)"
    flags = " --unsafe" if fix.safety is FixSafety.UNSAFE else ""
    if bundle:
        return (
            f"[*] fix available ({fix.safety.value}): {fix.title} — its plan: "
            f"`kdoctor fix {result.id} --dry-run{where}`; apply it on the node itself"
        )
    return f"[*] fix available ({fix.safety.value}): {fix.title} — kdoctor fix {result.id}{flags}"


def print_result(
    console: Console, result: CheckResult, verbose: bool = False, bundle: str | None = None
) -> None:
    style = STYLE[result.status]
    head = Text.assemble(
        (f"[{result.status.glyph}] ", f"bold {style}"),
        (result.id, "bold"),
        f"  {result.title}",
    )
    console.print(head)
    summary_style = "" if result.status in (Status.OK, Status.SKIP) else style
    console.print(Text(f"    {result.summary}", style=summary_style))
    if verbose:
        for text in _evidence_lines(result.evidence):
            console.print(Text(f"    {text}", style="dim"))
    _print_matrices(console, result.evidence, 4)
    for finding in result.findings:
        _print_finding(console, finding)
    line = _fix_line(result, bundle)
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
        print_result(console, result, verbose, target.bundle)
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
        roots = sorted({f.caused_by for r in report.results for f in r.findings if f.caused_by})
        for root in roots:
            consequences = sum(1 for r in report.results for f in r.findings if f.caused_by == root)
            console.print(
                Text.assemble(
                    ("  root cause: ", "bold"),
                    (root, "bold red"),
                    f" ({consequences} finding(s) elsewhere are its consequences; fix it first)",
                )
            )
        if fixable:
            console.print(
                Text(
                    f"[*] {fixable} fixable: `kdoctor fix --dry-run --bundle {target.bundle}` "
                    "shows the plans; apply them on the node itself."
                    if target.bundle
                    else f"[*] {fixable} fixable with `kdoctor fix` (see the plan with --dry-run)."
                )
            )
    elif not report.decided:
        console.print(
            Text.assemble(
                ("? ", "bold magenta"),
                f"Nothing was decided: every selected check skipped ({escape(tally)}); "
                "see the reasons above.",
            )
        )
    else:
        console.print(Text.assemble(("• ", "bold green"), f"No issues found! ({escape(tally)})"))
