"""One check in full: its findings with evidence, its documentation, and its fix."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, Footer, Markdown, Static, TabbedContent, TabPane

from doctor.core.fix import FixSafety
from doctor.core.model import CheckResult
from doctor.ui.tui.logic import printable
from doctor.ui.tui.style import PENDING_LABEL, status_content
from doctor.ui.tui.widgets.details import CheckEvidenceView, FindingView, PlanView, fix_intro

if TYPE_CHECKING:
    from doctor.ui.tui.protocol import AppActions


class CheckScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("x", "fix", "Fix"),
        Binding("r", "rerun", "Re-run"),
        Binding("1", "tab('tab-findings')", "Findings"),
        Binding("2", "tab('tab-docs')", "Docs"),
        Binding("3", "tab('tab-fix')", "Fix tab", show=False),
    ]

    def __init__(self, check_id: str) -> None:
        super().__init__(classes="check-screen")
        self.check_id = check_id
        self._shown: CheckResult | bool | None = False  # False: nothing drawn yet

    @property
    def kapp(self) -> AppActions:
        return cast("AppActions", self.app)

    def compose(self) -> ComposeResult:
        check = self.kapp.backend.by_id[self.check_id]
        yield Static(id="check-head")
        with TabbedContent(id="tabs", initial="tab-findings"):
            with TabPane("Findings", id="tab-findings"):
                yield VerticalScroll(id="findings")
            with TabPane("Documentation", id="tab-docs"), VerticalScroll(id="docs"):
                yield Markdown(check.documentation(), id="doc")
            with TabPane("Fix", id="tab-fix"), VerticalScroll(id="fix-pane"):
                yield Static(id="fix-intro")
                yield Vertical(id="fix-plan-box")
                yield Button("Review the plan and apply (x)", id="open-plan", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.kapp.result_changed.subscribe(self, self._changed)
        self.refresh_result()
        self.query_one("#findings").focus()  # ↑ ↓ pgup pgdn scroll the findings

    def _changed(self, check_id: str) -> None:
        if check_id in (self.check_id, "*"):
            self.refresh_result()

    def refresh_result(self) -> None:
        app = self.kapp
        row = app.row(self.check_id)
        result = row.result
        if row.state is not None:
            status: Content = Content.styled(PENDING_LABEL[row.state], "bold $status-pending")
        elif result is not None:
            status = status_content(result.status)
        else:
            status = Content.styled(PENDING_LABEL["waiting"], "bold $status-pending")
        head = [
            Content.assemble(
                status, "  ", (row.check_id, "bold"), ("  " + row.scope.value, "$text-muted")
            ),
            Content.styled(printable(row.title), "$text-muted"),
        ]
        if result is not None:
            head.append(Content(printable(result.summary)))
        self.query_one("#check-head", Static).update(Content("\n").join(head))
        if result is self._shown:
            return
        self._shown = result
        self._show_findings(result)
        self._show_fix(result)

    def _show_findings(self, result: CheckResult | None) -> None:
        box = self.query_one("#findings", VerticalScroll)
        box.remove_children()
        tab = self.query_one(TabbedContent).get_tab("tab-findings")
        if result is None:
            tab.label = "Findings"
            box.mount(Static("The check has not finished yet.", classes="empty-note"))
            return
        tab.label = f"Findings ({len(result.findings)})"
        widgets: list[Widget] = [FindingView(f, i) for i, f in enumerate(result.findings)]
        if not result.findings:
            note = Content.assemble(
                ("No findings. ", "bold"), (printable(result.summary), "$text-muted")
            )
            widgets.append(Static(note, classes="empty-note"))
        if result.evidence:  # what the check measured, e.g. a probe matrix
            widgets.append(CheckEvidenceView(result.evidence))
        box.mount_all(widgets)

    def _show_fix(self, result: CheckResult | None) -> None:
        app = self.kapp
        check = app.backend.by_id[self.check_id]
        blocked = app.fix_blocked(self.check_id)
        self.query_one("#fix-intro", Static).update(
            fix_intro(result, blocked, check.fix_safety is not None)
        )
        box = self.query_one("#fix-plan-box", Vertical)
        box.remove_children()
        button = self.query_one("#open-plan", Button)
        if result is not None and result.fix is not None:
            box.mount(PlanView(result.fix.plan()))
            button.display = True
            manual = result.fix.safety is FixSafety.MANUAL
            button.label = "Show the commands (x)" if manual else "Review the plan and apply (x)"
        else:
            button.display = False

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "open-plan":
            self.action_fix()

    def action_back(self) -> None:
        self.dismiss(None)

    def action_fix(self) -> None:
        self.kapp.open_plan(self.check_id)

    def action_rerun(self) -> None:
        self.kapp.start_run([self.check_id])

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        pane = {"tab-findings": "#findings", "tab-docs": "#docs", "tab-fix": "#fix-pane"}[tab]
        self.query_one(pane).focus()
