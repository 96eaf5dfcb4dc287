"""The checks table: one row per check, filled in as results arrive."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.events import Resize
from textual.widgets import DataTable

from doctor.core.safetext import safe
from doctor.ui.tui.logic import RowView, format_duration, printable
from doctor.ui.tui.style import LABEL, PENDING_LABEL, rich_text, safety_var, status_var

STATUS_WIDTH = 7
FIX_WIDTH = 6
TIME_WIDTH = 7
#: From this table width on, the check's title gets its own column.
WIDE = 110


class ChecksTable(DataTable[Text]):
    """Status, id, (title,) summary, duration and fix safety of every shown check."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "select_cursor", "Details"),
    ]

    def __init__(self, show_durations: bool = True, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=False)
        self.show_durations = show_durations
        self.rows_shown: list[RowView] = []
        self._layout: tuple[tuple[str, str, int], ...] = ()

    # -- columns ---------------------------------------------------------------------------
    def _columns(self) -> tuple[tuple[str, str, int], ...]:
        """(key, label, width) for the current width: the summary takes what is left."""
        width = max(self.size.width, 60) - 1  # room for a vertical scrollbar's edge
        id_width = max((len(r.check_id) for r in self.rows_shown), default=20)
        id_width = min(max(id_width, 12), 30)
        fixed: list[tuple[str, str, int]] = [
            ("status", "Status", STATUS_WIDTH),
            ("id", "Check", id_width),
        ]
        tail: list[tuple[str, str, int]] = []
        if self.show_durations:
            tail.append(("time", "Time", TIME_WIDTH))
        tail.append(("fix", "Fix", FIX_WIDTH))
        used = sum(w for _k, _l, w in fixed + tail)
        padding = 2 * (len(fixed) + len(tail) + 1)  # cell_padding 1 on each side
        rest = width - used - padding
        middle: list[tuple[str, str, int]] = []
        if width >= WIDE:
            title_width = max(20, min(44, rest * 2 // 5))
            middle.append(("title", "Title", title_width))
            rest -= title_width + 2
        middle.append(("summary", "Summary", max(rest, 12)))
        return tuple(fixed + middle + tail)

    # -- rows ------------------------------------------------------------------------------
    def _cells(self, row: RowView) -> dict[str, Text]:
        variables = self.app.theme_variables
        result = row.result
        cells: dict[str, Text] = {}
        if row.state is not None:
            cells["status"] = rich_text(variables, PENDING_LABEL[row.state], "$status-pending")
        elif result is not None:
            cells["status"] = rich_text(
                variables, LABEL[result.status], status_var(result.status), bold=True
            )
        else:
            cells["status"] = rich_text(variables, PENDING_LABEL["waiting"], "$status-pending")
        cells["id"] = Text(printable(row.check_id), style="bold", no_wrap=True, overflow="ellipsis")
        cells["title"] = Text(printable(row.title), no_wrap=True, overflow="ellipsis")
        if result is None:
            note = {"running": "running…", "applying": "applying the fix…"}.get(
                row.state or "", "waiting for the target…"
            )
            cells["summary"] = rich_text(variables, note, "$status-pending")
        else:
            summary = safe(result.summary, single_line=True)
            if row.state is not None:
                cells["summary"] = rich_text(variables, summary, "$status-pending")
            else:
                cells["summary"] = Text(summary, no_wrap=True, overflow="ellipsis")
        if result is not None and row.state is None:
            cells["time"] = Text(
                format_duration(result.duration_ms), justify="right", style="dim", no_wrap=True
            )
        else:
            cells["time"] = Text("")
        if result is not None and result.fix is not None:
            safety = result.fix.safety
            cells["fix"] = rich_text(variables, safety.value, safety_var(safety), bold=True)
        else:
            cells["fix"] = Text("")
        return cells

    def show_rows(self, rows: list[RowView]) -> None:
        """Show exactly ``rows``: cells are updated in place when the same rows remain."""
        same_rows = [r.check_id for r in rows] == [r.check_id for r in self.rows_shown]
        self.rows_shown = list(rows)
        columns = self._columns()
        if same_rows and columns == self._layout and self.row_count == len(rows):
            for row in rows:
                cells = self._cells(row)
                for key, _label, _width in columns:
                    self.update_cell(row.check_id, key, cells[key])
            return
        self._rebuild(columns)

    def _rebuild(self, columns: tuple[tuple[str, str, int], ...]) -> None:
        keep = self.selected_id
        self.clear(columns=True)
        self._layout = columns
        for key, label, width in columns:
            self.add_column(Text(label, style="bold"), width=width, key=key)
        for row in self.rows_shown:
            cells = self._cells(row)
            self.add_row(*(cells[key] for key, _l, _w in columns), key=row.check_id)
        ids = [r.check_id for r in self.rows_shown]
        if keep in ids:
            self.move_cursor(row=ids.index(keep), animate=False)

    def restyle(self) -> None:
        """Re-render every row (after a theme change: cells carry concrete colours)."""
        self._rebuild(self._columns())

    def on_resize(self, event: Resize) -> None:
        columns = self._columns()
        if columns != self._layout:
            self._rebuild(columns)

    @property
    def selected_id(self) -> str | None:
        if not self.rows_shown or self.row_count == 0:
            return None
        index = self.cursor_row
        if 0 <= index < len(self.rows_shown):
            return self.rows_shown[index].check_id
        return None
