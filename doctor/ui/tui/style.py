"""Colours and labels: one place decides how a status, a safety class or a plan line looks.

Both themes define the same ``status-*`` / ``safety-*`` / ``diff-*`` variables, which
``app.tcss`` and every :class:`~textual.content.Content` here refer to, so switching the theme
recolours everything consistently.
"""

from __future__ import annotations

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.content import Content
from textual.theme import Theme

from doctor.core.fix import FixSafety
from doctor.core.model import Severity, Status
from doctor.ui.tui.logic import LineKind

DARK = "kdoctor-dark"
LIGHT = "kdoctor-light"

_DARK_VARS = {
    "status-ok": "#3fb950",
    "status-warn": "#d29922",
    "status-fail": "#f85149",
    "status-error": "#bc8cff",
    "status-skip": "#8b949e",
    "status-pending": "#8b949e",
    "safety-safe": "#3fb950",
    "safety-unsafe": "#d29922",
    "safety-manual": "#58a6ff",
    "diff-added": "#3fb950",
    "diff-removed": "#f85149",
    "diff-hunk": "#39c5cf",
    "diff-file": "#e6edf3",
    "plan-comment": "#8b949e",
}
_LIGHT_VARS = {
    "status-ok": "#1a7f37",
    "status-warn": "#9a6700",
    "status-fail": "#cf222e",
    "status-error": "#8250df",
    "status-skip": "#6e7781",
    "status-pending": "#6e7781",
    "safety-safe": "#1a7f37",
    "safety-unsafe": "#9a6700",
    "safety-manual": "#0969da",
    "diff-added": "#1a7f37",
    "diff-removed": "#cf222e",
    "diff-hunk": "#0550ae",
    "diff-file": "#1f2328",
    "plan-comment": "#6e7781",
}

THEMES = [
    Theme(
        name=DARK,
        primary="#58a6ff",
        secondary="#bc8cff",
        accent="#39c5cf",
        warning="#d29922",
        error="#f85149",
        success="#3fb950",
        foreground="#e6edf3",
        background="#0d1117",
        surface="#161b22",
        panel="#21262d",
        dark=True,
        variables=_DARK_VARS,
    ),
    Theme(
        name=LIGHT,
        primary="#0969da",
        secondary="#8250df",
        accent="#0550ae",
        warning="#9a6700",
        error="#cf222e",
        success="#1a7f37",
        foreground="#1f2328",
        background="#ffffff",
        surface="#f6f8fa",
        panel="#eaeef2",
        dark=False,
        variables=_LIGHT_VARS,
    ),
]

#: Defaults for the variables above, so the stylesheet parses before a theme is applied.
VARIABLE_DEFAULTS = dict(_DARK_VARS)

LABEL = {
    Status.OK: "✓ ok",
    Status.WARN: "! warn",
    Status.FAIL: "✗ fail",
    Status.SKIP: "- skip",
    Status.ERROR: "? error",
}
#: Row states while no (new) result is known.
PENDING_LABEL = {"waiting": "· wait", "running": "… run", "applying": "⚙ fix"}


def status_var(status: Status) -> str:
    return f"$status-{status.value}"


def safety_var(safety: FixSafety) -> str:
    return f"$safety-{safety.value}"


def status_content(status: Status, text: str | None = None, bold: bool = True) -> Content:
    """``✗ fail`` (or ``text``) in the status colour."""
    style = f"{'bold ' if bold else ''}{status_var(status)}"
    return Content.styled(text if text is not None else LABEL[status], style)


def severity_content(severity: Severity) -> Content:
    status = Status.FAIL if severity is Severity.FAIL else Status.WARN
    return status_content(status, f"{status.glyph} {severity.value.upper()}")


def safety_content(safety: FixSafety) -> Content:
    return Content.styled(safety.value, f"bold {safety_var(safety)}")


_LINE_STYLE = {
    LineKind.COMMAND: "",
    LineKind.COMMENT: "italic $plan-comment",
    LineKind.FILE: "bold $diff-file",
    LineKind.HUNK: "$diff-hunk",
    LineKind.ADDED: "$diff-added",
    LineKind.REMOVED: "$diff-removed",
    LineKind.CONTEXT: "",
}


def plan_table(lines: list[tuple[str, LineKind]], variables: dict[str, str]) -> Table:
    """A plan as a grid: a gutter mark per line (``$`` command, ``+``/``-`` diff, …) and the
    line itself, which wraps under itself. Colours are the theme's (Rich needs them resolved)."""
    grid = Table.grid(padding=(0, 1), expand=True)
    grid.add_column(width=1, no_wrap=True)
    grid.add_column(ratio=1, overflow="fold")
    for line, kind in lines:
        var = _LINE_STYLE[kind]
        color = variables.get(var.split("$", 1)[1]) if "$" in var else None
        style = Style(color=color, bold="bold" in var, italic="italic" in var)
        gutter = {LineKind.COMMAND: "›", LineKind.FILE: "▸"}.get(kind, " ")
        grid.add_row(Text(gutter, style="dim"), Text(line, style=style))
    return grid


def rich_text(variables: dict[str, str], text: str, var: str | None, bold: bool = False) -> Text:
    """A Rich Text in a theme colour, for widgets (DataTable) that render Rich, not Content."""
    color = variables.get(var.lstrip("$")) if var else None
    return Text(text, style=Style(color=color, bold=bold), no_wrap=True, overflow="ellipsis")
