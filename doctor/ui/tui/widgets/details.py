"""Findings with their evidence, the preview of the highlighted check, and plans."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult, RenderResult
from textual.containers import Grid, Vertical
from textual.content import Content
from textual.widget import Widget
from textual.widgets import Static

from doctor.core.fix import FixSafety
from doctor.core.model import CheckResult, Finding
from doctor.ui.tui.logic import RowView, classify_plan, evidence_text, printable
from doctor.ui.tui.style import (
    PENDING_LABEL,
    plan_table,
    safety_content,
    severity_content,
    status_content,
)


def evidence_widgets(evidence: dict[str, Any]) -> list[Widget]:
    """Key / value pairs for a two-column grid; a matrix (e.g. a probe matrix) is drawn as
    a table, the way ``check`` draws it (:func:`doctor.ui.text.matrix_table`)."""
    from doctor.ui.text import is_matrix, matrix_table

    widgets: list[Widget] = []
    for key, value in evidence.items():
        widgets.append(Static(Content(printable(str(key))), classes="prop-key evidence-key"))
        if is_matrix(value):
            parts: list[Widget] = []
            if value.get("title"):
                parts.append(
                    Static(Content(printable(str(value["title"]))), classes="matrix-title")
                )
            parts.append(Static(matrix_table(value), classes="matrix"))
            widgets.append(Vertical(*parts, classes="prop-value evidence-matrix"))
        else:
            text = printable(evidence_text(value))
            widgets.append(Static(Content(text), classes="prop-value evidence-value"))
    return widgets


class FindingView(Vertical):
    """One finding: severity and message, then resource, evidence and hint in a grid."""

    def __init__(self, finding: Finding, index: int) -> None:
        super().__init__(classes=f"finding finding-{finding.severity.value}")
        self.finding = finding
        self.index = index

    def compose(self) -> ComposeResult:
        f = self.finding
        yield Static(
            Content.assemble(severity_content(f.severity), "  ", (printable(f.message), "bold")),
            classes="finding-head",
        )
        with Grid(classes="finding-props"):
            if f.resource:
                yield Static("resource", classes="prop-key")
                yield Static(Content(printable(f.resource)), classes="prop-value")
            if f.caused_by:
                yield Static("caused by", classes="prop-key")
                yield Static(
                    Content.assemble(
                        ("consequence of ", "$text-muted"), (printable(f.caused_by), "bold")
                    ),
                    classes="prop-value",
                )
            yield from evidence_widgets(f.evidence)
            if f.hint:
                yield Static("hint", classes="prop-key hint-key")
                yield Static(Content(printable(f.hint)), classes="prop-value hint-value")


class CheckEvidenceView(Vertical):
    """What the check measured, whatever its status (a result's own ``evidence``)."""

    def __init__(self, evidence: dict[str, Any]) -> None:
        super().__init__(classes="check-evidence")
        self.evidence = evidence

    def compose(self) -> ComposeResult:
        yield Static(Content.styled("measured", "bold $text-muted"), classes="finding-head")
        with Grid(classes="finding-props"):
            yield from evidence_widgets(self.evidence)


class PlanView(Widget):
    """A fix's plan, line for line, diffs coloured; a long line wraps under itself (hanging
    indent), so every plan line stays recognisable at 80 columns."""

    def __init__(self, lines: list[str], *, id: str | None = None) -> None:
        super().__init__(id=id, classes="plan")
        self.lines = [printable(line) for line in lines]
        self.classified = classify_plan(self.lines)

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _t: self.refresh(layout=True))

    def render(self) -> RenderResult:
        return plan_table(self.classified, self.app.theme_variables)


class Preview(Vertical):
    """Under the table: the highlighted check's title, status and summary, findings and fix."""

    def compose(self) -> ComposeResult:
        yield Static(id="preview-head")
        yield Static(id="preview-summary")
        yield Static(id="preview-fix")

    def show(self, row: RowView | None, fix_note: str | None) -> None:
        head, summary, fix = preview_content(row, fix_note)
        self.query_one("#preview-head", Static).update(head)
        self.query_one("#preview-summary", Static).update(summary)
        self.query_one("#preview-fix", Static).update(fix)


def preview_content(row: RowView | None, fix_note: str | None) -> tuple[Content, Content, Content]:
    """The three parts of the preview: heading, status with summary, findings and fix."""
    if row is None:
        return Content.styled("No check matches the filters.", "$text-muted"), Content(), Content()
    head = Content.assemble(
        (printable(row.check_id), "bold"), ("  " + printable(row.title), "$text-muted")
    )
    result = row.result
    if row.state is not None:
        second = Content.assemble(
            (PENDING_LABEL[row.state], "$status-pending"),
            "  ",
            (printable(result.summary) if result else "", "$status-pending"),
        )
    elif result is None:
        second = Content.styled("waiting for the target…", "$status-pending")
    else:
        second = Content.assemble(status_content(result.status), "  ", printable(result.summary))
    return head, second, _third_line(result, fix_note)


def _third_line(result: CheckResult | None, fix_note: str | None) -> Content:
    if result is None:
        return Content("")
    count = len(result.findings)
    pieces: list[Content | str | tuple[str, str]] = []
    if count:
        pieces.append((f"{count} finding{'s' if count != 1 else ''}", "bold"))
        pieces.append(("  ·  ", "$text-muted"))
    if result.fix is not None:
        pieces.extend([("fix ", "$text-muted"), safety_content(result.fix.safety), " "])
        pieces.append(printable(result.fix.title))
        if fix_note:
            pieces.append((f"  ({fix_note})", "$text-muted"))
    elif result.status.value in ("fail", "warn", "error"):
        pieces.append(("no fix offered", "$text-muted"))
    return Content.assemble(*pieces)


def fix_intro(result: CheckResult | None, blocked: str | None, check_has_fix: bool) -> Content:
    """What the Fix tab and the plan screen say above the plan."""
    if result is None:
        return Content.styled("The check has not finished yet.", "$text-muted")
    fix = result.fix
    if fix is None:
        why = blocked or "no fix"
        never = "" if check_has_fix else " This check never offers a fix."
        return Content.styled(f"No fix to apply: {why}.{never}", "$text-muted")
    lines: list[Content] = [
        Content.assemble(
            safety_content(fix.safety),
            "  ",
            (printable(fix.title), "bold"),
            ("  " + fix.id, "$text-muted"),
        )
    ]
    if fix.safety is FixSafety.SAFE:
        how = "safe: idempotent and keeps meaning; one key (y) confirms."
    elif fix.safety is FixSafety.UNSAFE:
        how = (
            "unsafe: it changes how the node or cluster behaves; you will type the check id "
            "or 'yes' to confirm."
        )
    else:
        how = "manual: these are the commands to run yourself; kdoctor never runs them."
    lines.append(Content.styled(how, "$text-muted"))
    if blocked and fix.safety is not FixSafety.MANUAL:
        lines.append(Content.assemble(("cannot apply here: ", "bold $status-warn"), blocked))
    elif fix.safety is not FixSafety.MANUAL:
        lines.append(
            Content.styled(
                "Applying backs up what changes, re-runs the check and rolls back by itself "
                "if the check still fails.",
                "$text-muted",
            )
        )
    return Content("\n").join(lines)
