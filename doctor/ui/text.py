"""Human output: flutter doctor's ✓ ! ✗ per check, pip's × message / hint per finding.

What a person reads first is what is broken:

- failing checks first (the root cause other findings point at before the rest), then
  warnings, then checks that could not decide (``error``); one line a check, its summary;
- under it up to three findings (``× message``, ``hint: …``) and ``+N more``; a finding
  whose message the summary already says shows only its hint;
- checks skipped for the same reason share one line; ok checks are summarised in one line
  (a lone ok check, or a run of one check, gets its own line);
- the status line last. ``-q`` prints the status line only; ``-v`` prints every check, every
  finding with its evidence (as indented ``key: value`` lines, never raw JSON), the fix plans
  and durations.

Every string that comes from outside kdoctor (summaries, messages, evidence, plans) goes
through :func:`doctor.core.safetext.safe`: an escape sequence in an event message is shown as
text, never interpreted. kdoctor's own styling is Rich styles on ``Text`` objects, so Rich
markup in those strings is shown as written too.

Rich decides colour: plain text when stdout is not a terminal or ``NO_COLOR`` is set.

Evidence values shaped as a *matrix* are drawn as a table instead of lines, wherever they
are (a finding's evidence or a check's own ``evidence``), under any key::

    {"title": "…",                      # optional caption
     "corner": "source",                # optional header of the row-name column
     "columns": ["UDP", "TCP"],         # one header per cell column
     "rows": [{"name": "Service kube-dns 10.96.0.10",
               "cells": ["10.96.0.1 (2 ms)", "timeout (1000 ms)"],
               "status": ["ok", "fail"]}]}   # optional, per cell: ok|warn|fail|skip

A cell with a status is coloured and prefixed with its glyph (✓ ! ✗ -), so the table reads
the same without colour. The JSON report carries the same object unchanged. A failing or
warning check's own matrix is shown without ``-v`` (it is the check's picture of the problem).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import IO, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from doctor.core.fix import FixSafety
from doctor.core.model import CheckResult, Finding, Status
from doctor.core.report import Report
from doctor.core.safetext import safe

STYLE = {
    Status.OK: "green",
    Status.WARN: "yellow",
    Status.FAIL: "red",
    Status.SKIP: "dim",
    Status.ERROR: "magenta",
}

#: Findings shown per check without ``-v``.
MAX_FINDINGS = 3

#: The order checks are shown in: what is broken first.
_ORDER = {Status.FAIL: 0, Status.WARN: 1, Status.ERROR: 2, Status.SKIP: 3, Status.OK: 4}


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
    table.add_column(
        safe(value.get("corner") or "", single_line=True), style="bold", overflow="fold"
    )
    for column in value["columns"]:
        table.add_column(safe(column, single_line=True), no_wrap=True)
    for row in value["rows"]:
        cells = list(row.get("cells") or [])
        statuses = list(row.get("status") or [])
        rendered: list[Text] = []
        for index in range(len(value["columns"])):
            cell = safe(cells[index], single_line=True) if index < len(cells) else ""
            status = statuses[index] if index < len(statuses) else None
            if status in _CELL:
                glyph, style = _CELL[status]
                rendered.append(Text(f"{glyph} {cell}", style=style))
            else:
                rendered.append(Text(cell))
        table.add_row(Text(safe(row.get("name", ""), single_line=True)), *rendered)
    return table


def _print_matrices(console: Console, evidence: dict[str, Any], indent: int) -> None:
    from rich.padding import Padding

    for value in evidence.values():
        if is_matrix(value):
            if value.get("title"):
                console.print(
                    Text(" " * indent + safe(value["title"], single_line=True), style="bold")
                )
            console.print(Padding(matrix_table(value), (0, 0, 0, indent), expand=False))


def _scalar(value: Any) -> str:
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return safe(value, single_line=True)


def evidence_lines(evidence: dict[str, Any], indent: str = "") -> Iterator[str]:
    """Evidence as indented ``key: value`` lines (nested values indented, no JSON)."""
    for key, value in evidence.items():
        name = safe(key, single_line=True)
        if is_matrix(value):
            continue  # drawn as a table (_print_matrices)
        yield from _value_lines(name, value, indent)


def _value_lines(name: str, value: Any, indent: str) -> Iterator[str]:
    if isinstance(value, dict):
        if not value:
            yield f"{indent}{name}: (none)"
            return
        yield f"{indent}{name}:"
        yield from evidence_lines(value, indent + "  ")
    elif isinstance(value, list | tuple):
        if not value:
            yield f"{indent}{name}: (none)"
        elif all(not isinstance(v, dict | list | tuple) for v in value):
            yield f"{indent}{name}:"
            yield from (f"{indent}  {_scalar(v)}" for v in value)
        else:
            yield f"{indent}{name}:"
            for number, item in enumerate(value, start=1):
                yield from _value_lines(f"[{number}]", item, indent + "  ")
    elif isinstance(value, str) and "\n" in value.strip("\n"):
        yield f"{indent}{name}:"
        yield from (f"{indent}  {line}" for line in safe(value.strip("\n")).split("\n"))
    else:
        yield f"{indent}{name}: {_scalar(value)}"


def _said_by_summary(result: CheckResult, finding: Finding) -> bool:
    """True when the check's summary already says this finding's message."""
    return bool(finding.message) and result.summary.startswith(finding.message)


def _print_finding(console: Console, result: CheckResult, finding: Finding, verbose: bool) -> None:
    fail = finding.severity.value == "fail"
    mark, style = ("×", "red") if fail else ("!", "yellow")
    if verbose or not _said_by_summary(result, finding):
        line = Text.assemble(
            ("    ", ""), (mark + " ", f"bold {style}"), safe(finding.message, single_line=True)
        )
        if finding.caused_by and finding.caused_by not in finding.message:
            line.append(f" (consequence of {safe(finding.caused_by)})", style="dim")
        console.print(line)
    if verbose:
        if finding.resource:
            console.print(Text("      ╰─> " + safe(finding.resource, single_line=True)))
        for text in evidence_lines(finding.evidence, "          "):
            console.print(Text(text, style="dim"))
        _print_matrices(console, finding.evidence, 10)
    if finding.hint:
        console.print(
            Text.assemble(("      hint: ", "bold cyan"), safe(finding.hint, single_line=True))
        )


def fix_line(result: CheckResult, bundle: str | None = None) -> str | None:
    """The line that says how to apply a check's fix (manual ones: how to see it). On a
    bundle the command is the one to run on the live target; the footer says how to see
    the plans from the bundle itself."""
    fix = result.fix
    if fix is None:
        return None
    title = safe(fix.title, single_line=True)
    if fix.safety is FixSafety.MANUAL:
        where = f" --bundle {safe(bundle, single_line=True)}" if bundle is not None else ""
        return f"manual fix: {title} — see: kdoctor fix {result.id} --dry-run{where}"
    if bundle is not None:
        # fix refuses to change a copy: offer what works on a bundle, the dry run.
        where = safe(bundle, single_line=True)
        return (
            f"fix ({fix.safety.value}): {title} — its plan: kdoctor fix {result.id} --dry-run "
            f"--bundle {where}; apply it on the node itself"
        )
    flags = " --unsafe" if fix.safety is FixSafety.UNSAFE else ""
    return f"fix ({fix.safety.value}): {title} — kdoctor fix {result.id}{flags}"


def _head(result: CheckResult, text: str) -> Text:
    style = STYLE[result.status]
    summary_style = "" if result.status in (Status.OK, Status.SKIP) else style
    return Text.assemble(
        (f"[{result.status.glyph}] ", f"bold {style}"),
        (safe(result.id, single_line=True), "bold"),
        "  ",
        (text, summary_style),
    )


def print_result(
    console: Console,
    result: CheckResult,
    verbose: bool = False,
    bundle: str | None = None,
    matrices: bool = False,
) -> None:
    """One check: its line, up to three findings with hints (all with ``-v``), its fix.
    Its own matrix is drawn when it did not pass, with ``-v``, or when ``matrices``."""
    console.print(_head(result, safe(result.summary, single_line=True)))
    if verbose:
        console.print(Text("    " + safe(result.title, single_line=True), style="dim"))
        for text in evidence_lines(result.evidence, "    "):
            console.print(Text(text, style="dim"))
    if verbose or matrices or result.status in (Status.FAIL, Status.WARN, Status.ERROR):
        _print_matrices(console, result.evidence, 4)
    shown = result.findings if verbose else result.findings[:MAX_FINDINGS]
    for finding in shown:
        _print_finding(console, result, finding, verbose)
    hidden = len(result.findings) - len(shown)
    if hidden:
        console.print(
            Text(f"    +{hidden} more (kdoctor check --only {result.id} -v)", style="dim")
        )
    line = fix_line(result, bundle)
    if line:
        console.print(Text("    " + line, style="cyan"))
    if result.fix and verbose:
        for step in result.fix.plan():
            console.print(Text("      " + safe(step), style="dim"))
    if verbose:
        console.print(Text(f"    ({result.duration_ms} ms)", style="dim"))


def _root_causes(report: Report) -> list[str]:
    return sorted({f.caused_by for r in report.results for f in r.findings if f.caused_by})


def ordered(report: Report) -> list[CheckResult]:
    """Fails first (root causes before the checks whose findings they explain), then
    warns, errors, skips, oks; the registry's order otherwise."""
    roots = set(_root_causes(report))
    return sorted(report.results, key=lambda r: (_ORDER[r.status], r.id not in roots))


def _print_skips(console: Console, skipped: list[CheckResult]) -> None:
    """One line per reason: checks skipped for the same reason share it."""
    by_reason: dict[str, list[CheckResult]] = {}
    for result in skipped:
        by_reason.setdefault(result.summary, []).append(result)
    for reason, results in by_reason.items():
        if len(results) == 1:
            console.print(_head(results[0], safe(reason, single_line=True)))
            continue
        ids = ", ".join(safe(r.id, single_line=True) for r in results)
        console.print(
            Text.assemble(
                ("[-] ", "bold dim"),
                (f"{len(results)} skipped", "bold"),
                f"  {safe(reason, single_line=True)}: ",
                (ids, "dim"),
            )
        )


def status_line(report: Report) -> Text:
    """The run's verdict in one line (all ``-q`` prints)."""
    counts = report.summary()
    total = len(report.results)
    problems = counts["warn"] + counts["fail"] + counts["error"]
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    if problems:
        glyph, style = ("✗", "bold red") if counts["fail"] else ("!", "bold yellow")
        if not counts["fail"] and not counts["warn"]:
            glyph, style = ("?", "bold magenta")
        return Text.assemble(
            (f"{glyph} ", style), f"kdoctor found issues in {problems} of {total} checks ({tally})."
        )
    if counts["ok"] == 0:
        return Text.assemble(
            ("? ", "bold magenta"),
            f"Nothing was decided: every one of the {total} checks was skipped ({tally}).",
        )
    return Text.assemble(("✓ ", "bold green"), f"No issues found ({tally}).")


def header(report: Report) -> Text:
    target = report.target
    if target.bundle:
        where = f"bundle {safe(target.bundle, single_line=True)}"
        if target.node:
            where += f" (node {safe(target.node, single_line=True)})"
    else:
        where = f"node {safe(target.node or '?', single_line=True)}"
    if target.cluster:
        c = target.cluster
        where += ", cluster " + safe(
            f"{c.context or '?'} ({c.server or '?'}, {c.version or '?'})", single_line=True
        )
    return Text(f"kdoctor: {where}", style="bold")


def render_text(
    report: Report, console: Console, verbose: bool = False, quiet: bool = False
) -> None:
    if quiet:
        console.print(status_line(report))
        return
    bundle = report.target.bundle
    console.print(header(report))
    console.print()
    results = ordered(report)
    if verbose or len(results) == 1:
        # -v, or the one check asked for (--only ID): everything it measured
        for result in results:
            print_result(console, result, verbose=verbose, bundle=bundle, matrices=True)
    else:
        for result in results:
            if result.status in (Status.FAIL, Status.WARN, Status.ERROR):
                print_result(console, result, bundle=bundle)
        _print_skips(console, [r for r in results if r.status is Status.SKIP])
        oks = [safe(r.id, single_line=True) for r in results if r.status is Status.OK]
        if len(oks) == 1:
            print_result(console, next(r for r in results if r.status is Status.OK))
        elif oks:
            console.print(
                Text.assemble(
                    ("[✓] ", "bold green"),
                    (f"{len(oks)} ok", "bold"),
                    "  ",
                    (", ".join(oks), "dim"),
                )
            )
    console.print()
    console.print(status_line(report))
    for root in _root_causes(report):
        consequences = sum(1 for r in report.results for f in r.findings if f.caused_by == root)
        console.print(
            Text.assemble(
                ("  root cause: ", "bold"),
                (safe(root, single_line=True), "bold red"),
                f" ({consequences} finding(s) elsewhere are its consequences; fix it first)",
            )
        )
    fixable = [r for r in report.results if r.fix and r.fix.safety is not FixSafety.MANUAL]
    if fixable and bundle is None:
        console.print(
            Text(f"  {len(fixable)} fixable with `kdoctor fix` (see the plans with --dry-run).")
        )
    elif fixable:
        console.print(
            Text(
                f"  {len(fixable)} fixable on the live target; the plans from this bundle: "
                f"kdoctor fix --dry-run --bundle {safe(bundle, single_line=True)}"
            )
        )
