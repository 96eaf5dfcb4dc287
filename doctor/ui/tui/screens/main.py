"""The main screen: the target, the filters, the checks table and a preview of one check."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input

from doctor.ui.tui.logic import (
    BUNDLE_REASON,
    SCOPE_FILTERS,
    STATUS_FILTERS,
    RowView,
    next_value,
    row_matches,
)
from doctor.ui.tui.widgets.bars import FilterBar, TargetBar, tally_content, target_content
from doctor.ui.tui.widgets.checks_table import ChecksTable
from doctor.ui.tui.widgets.details import Preview

if TYPE_CHECKING:
    from doctor.ui.tui.protocol import AppActions


class MainScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("x", "fix", "Fix"),
        Binding("r", "rerun", "Re-run"),
        Binding("R", "rerun_all", "All"),
        Binding("f", "cycle_status", "Status", show=False),  # shown in the filter bar
        Binding("s", "cycle_scope", "Scope", show=False),
        Binding("slash", "search", "Search"),
        Binding("w", "save", "Save"),
        Binding("escape", "leave_search", "Back to the table", show=False),
    ]

    def __init__(self) -> None:
        super().__init__(id="main")
        self.status_filter = "all"
        self.scope_filter = "all"
        self.query_text = ""

    @property
    def kapp(self) -> AppActions:
        return cast("AppActions", self.app)

    def compose(self) -> ComposeResult:
        yield TargetBar(id="target-bar")
        yield FilterBar(id="filter-bar")
        yield ChecksTable(show_durations=self.kapp.show_durations, id="checks")
        yield Preview(id="preview")
        yield Footer()

    def on_mount(self) -> None:
        self.kapp.result_changed.subscribe(self, self._changed)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.table.restyle())
        self.refresh_view()
        self.table.focus()

    @property
    def table(self) -> ChecksTable:
        return self.query_one("#checks", ChecksTable)

    def _changed(self, _check_id: str) -> None:
        self.refresh_view()

    # -- drawing -------------------------------------------------------------------------
    def visible_rows(self) -> list[RowView]:
        return [
            row
            for row in self.kapp.rows()
            if row_matches(
                row.check_id,
                row.title,
                row.scope,
                row.result,
                self.status_filter,
                self.scope_filter,
                self.query_text,
            )
        ]

    def refresh_view(self) -> None:
        app = self.kapp
        self.query_one(TargetBar).show(
            target_content(
                app.backend.target(),
                app.part_state,
                str(app.backend.args.bundle) if app.backend.on_bundle else None,
                app.backend.cluster_unavailable,
            ),
            tally_content(app.counts(), app.busy()),
        )
        self.query_one(FilterBar).show(self.status_filter, self.scope_filter)
        self.table.show_rows(self.visible_rows())
        self._show_preview()

    def _show_preview(self) -> None:
        check_id = self.table.selected_id
        row = self.kapp.row(check_id) if check_id else None
        note = self.kapp.fix_blocked(check_id) if check_id else None
        if note == BUNDLE_REASON:
            note = "read-only: a bundle"
        self.query_one(Preview).show(row, note)

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._show_preview()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.kapp.open_check(event.row_key.value)

    # -- filters -------------------------------------------------------------------------
    def on_filter_bar_cycle(self, event: FilterBar.Cycle) -> None:
        if event.which == "status":
            self.action_cycle_status()
        else:
            self.action_cycle_scope()

    def action_cycle_status(self) -> None:
        self.status_filter = next_value(STATUS_FILTERS, self.status_filter)
        self.refresh_view()

    def action_cycle_scope(self) -> None:
        self.scope_filter = next_value(SCOPE_FILTERS, self.scope_filter)
        self.refresh_view()

    def set_filters(self, status: str | None = None, scope: str | None = None) -> None:
        if status is not None:
            self.status_filter = status
        if scope is not None:
            self.scope_filter = scope
        self.refresh_view()

    def action_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_leave_search(self) -> None:
        """Esc: clear the search (every row is back) and return to the table."""
        search = self.query_one("#search", Input)
        if search.value or self.query_text:
            search.value = ""
            self.query_text = ""
            self.refresh_view()
        self.table.focus()

    @on(Input.Changed, "#search")
    def _search_changed(self, event: Input.Changed) -> None:
        self.query_text = event.value
        self.refresh_view()

    @on(Input.Submitted, "#search")
    def _search_submitted(self, _event: Input.Submitted) -> None:
        self.table.focus()

    # -- actions on the selected check ---------------------------------------------------
    def action_fix(self) -> None:
        check_id = self.table.selected_id
        if check_id:
            self.kapp.open_plan(check_id)

    def action_rerun(self) -> None:
        check_id = self.table.selected_id
        if check_id:
            self.kapp.start_run([check_id])

    def action_rerun_all(self) -> None:
        self.kapp.start_run([row.check_id for row in self.kapp.rows()])

    def action_save(self) -> None:
        self.kapp.ask_save_report()
