"""The TUI for a fleet report (``kdoctor tui --bundle FLEET-BUNDLE``): one row per node check
per node and one per cluster check, a node column, a filter.

Read only: fixes run on the node itself (``kdoctor fix`` there), a fleet bundle is a copy.

Keys: ``/`` filter by node or check (text contained), ``f`` cycles all / problems / fail /
error, ``enter`` shows the row's findings, ``escape`` clears the filter, ``q`` quits.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Input, Static

from doctor.core.model import CheckResult, Status
from doctor.core.report import Report
from doctor.ui.tui.logic import printable

STATUS_FILTERS = ("all", "problems", "fail", "error")
_ORDER = {Status.FAIL: 0, Status.ERROR: 1, Status.WARN: 2, Status.OK: 3, Status.SKIP: 4}
_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red", Status.SKIP: "dim",
          Status.ERROR: "magenta"}  # fmt: skip
CLUSTER = "(cluster)"


def visible(results: list[CheckResult], text: str, status_filter: str) -> list[CheckResult]:
    """The rows a filter leaves, worst first (then node, then check)."""
    wanted = text.strip().lower()
    out = []
    for r in results:
        node = r.node or CLUSTER
        if wanted and wanted not in node.lower() and wanted not in r.id.lower():
            continue
        if status_filter == "problems" and r.status not in (Status.FAIL, Status.WARN, Status.ERROR):
            continue
        if status_filter in ("fail", "error") and r.status.value != status_filter:
            continue
        out.append(r)
    return sorted(out, key=lambda r: (_ORDER[r.status], r.node or "", r.id))


def details(result: CheckResult) -> str:
    lines = [f"{result.node or CLUSTER} · {result.id} · {result.status.value}", result.summary]
    for f in result.findings:
        lines.append(f"  {f.severity.value}: {f.message}")
        if f.resource:
            lines.append(f"    {f.resource}")
        if f.hint:
            lines.append(f"    hint: {f.hint}")
    return printable("\n".join(lines))


class FleetApp(App[None]):
    """A fleet report to browse (see the module doc)."""

    TITLE = "kdoctor fleet"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("f", "cycle_status", "Status"),
        Binding("escape", "clear", "Clear", show=False),
        Binding("q", "quit", "Quit"),
    ]
    CSS = "#details { height: auto; max-height: 12; border-top: solid $accent; }"

    def __init__(self, report: Report) -> None:
        super().__init__()
        self.report = report
        self.status_filter = "all"
        self.rows: list[CheckResult] = []

    def compose(self) -> ComposeResult:
        nodes = len(self.report.target.fleet_nodes or ())
        unreported = len(self.report.target.unreported or {})
        head = f"{nodes} nodes" + (f", {unreported} without a report" if unreported else "")
        yield Static(Text(f"kdoctor fleet: {head}", style="bold"), id="head")
        yield Input(placeholder="filter: node or check", id="filter")
        yield DataTable(id="rows", cursor_type="row", zebra_stripes=False)
        yield Static("", id="details")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#rows", DataTable)
        table.add_columns("Status", "Node", "Check", "Summary")
        self.refresh_rows()
        table.focus()

    def refresh_rows(self) -> None:
        text = self.query_one("#filter", Input).value
        self.rows = visible(list(self.report.results), text, self.status_filter)
        table = self.query_one("#rows", DataTable)
        table.clear()
        for r in self.rows:
            style = _STYLE[r.status]
            table.add_row(
                Text(f"{r.status.glyph} {r.status.value}", style=style),
                Text(r.node or CLUSTER, style="bold" if r.node is None else ""),
                r.id,
                printable(r.summary)[:200],
            )
        self.sub_title = f"{len(self.rows)} rows · status {self.status_filter}"

    def on_input_changed(self, _event: Input.Changed) -> None:
        self.refresh_rows()

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.query_one("#rows", DataTable).focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if 0 <= event.cursor_row < len(self.rows):
            self.query_one("#details", Static).update(details(self.rows[event.cursor_row]))

    def action_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_cycle_status(self) -> None:
        index = STATUS_FILTERS.index(self.status_filter)
        self.status_filter = STATUS_FILTERS[(index + 1) % len(STATUS_FILTERS)]
        self.refresh_rows()

    def action_clear(self) -> None:
        self.query_one("#filter", Input).value = ""
        self.status_filter = "all"
        self.refresh_rows()
        self.query_one("#rows", DataTable).focus()
