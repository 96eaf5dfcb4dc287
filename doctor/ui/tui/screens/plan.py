"""The plan of one fix: exactly what will change, then the confirmation, the apply's steps as
they happen, and the outcome (applied, or rolled back and why)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, cast

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Button, Footer, RichLog, Static

from doctor.core.fix import FixSafety
from doctor.core.fixengine import FixReport, Outcome
from doctor.core.model import CheckResult
from doctor.ui.tui.logic import printable
from doctor.ui.tui.screens.confirm import ConfirmFix
from doctor.ui.tui.widgets.details import PlanView, fix_intro

if TYPE_CHECKING:
    from doctor.ui.tui.protocol import AppActions


class PlanScreen(Screen[None]):
    """Shows the plan of the fix the check offered when the screen opened, and applies it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back"),
        Binding("a", "apply", "Apply"),
        Binding("c", "copy", "Copy plan"),
    ]

    def __init__(self, check_id: str, result: CheckResult) -> None:
        super().__init__(classes="plan-screen")
        assert result.fix is not None
        self.check_id = check_id
        self.result = result
        self.fix = result.fix
        #: ready → confirming → applying → done (or back to ready when declined)
        self.phase = "ready"
        self.report: FixReport | None = None

    @property
    def kapp(self) -> AppActions:
        return cast("AppActions", self.app)

    def compose(self) -> ComposeResult:
        manual = self.fix.safety is FixSafety.MANUAL
        yield Static(
            Content.assemble(
                ("Commands for " if manual else "Plan for ", "bold"),
                (self.check_id, "bold $primary"),
            ),
            id="plan-title",
        )
        yield Static(id="plan-intro")
        with VerticalScroll(id="plan-scroll"):
            yield PlanView(self.fix.plan(), id="plan-lines")
        log = RichLog(id="fix-log", wrap=True, markup=False, highlight=False, min_width=20)
        log.border_title = "apply"
        yield log
        yield Static(id="fix-outcome")
        with Horizontal(id="plan-buttons"):
            if not manual:
                unsafe = self.fix.safety is FixSafety.UNSAFE
                yield Button("Apply (a)", id="apply", variant="warning" if unsafe else "success")
            yield Button("Copy (c)", id="copy")
            yield Button("Back (esc)", id="back")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#fix-log").display = False
        self.query_one("#fix-outcome").display = False
        self._refresh_intro()
        self.query_one("#plan-scroll").focus()

    def _blocked(self) -> str | None:
        if self.phase == "done":
            return "this plan was applied already; re-open the check for its current fix"
        if self.phase == "applying":
            return "the fix is being applied"
        return self.kapp.fix_blocked(self.check_id, self.result)

    def _refresh_intro(self) -> None:
        blocked = self._blocked() if self.phase == "ready" else None
        self.query_one("#plan-intro", Static).update(fix_intro(self.result, blocked, True))
        for button in self.query("#apply").results(Button):
            button.disabled = self.phase != "ready" or blocked is not None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """No "Apply" key for a manual fix, nor once the plan was applied."""
        if action == "apply":
            return self.fix.safety is not FixSafety.MANUAL and self.phase in ("ready", "confirming")
        return True

    # -- apply ---------------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "apply":
            self.action_apply()
        elif event.button.id == "copy":
            self.action_copy()
        elif event.button.id == "back":
            self.action_back()

    def action_apply(self) -> None:
        if self.phase != "ready":
            return
        blocked = self._blocked()
        if blocked:
            self.notify(blocked, title="Not applied", severity="warning", markup=False)
            return
        self.phase = "confirming"
        self.app.push_screen(ConfirmFix(self.check_id, self.fix), self._confirmed)

    def _confirmed(self, yes: bool | None) -> None:
        if not yes:
            self.phase = "ready"
            self._show_outcome(
                Content.assemble(("Cancelled: ", "bold"), "nothing was changed."), "declined"
            )
            self.kapp.decline_fix(self.check_id, self.fix)
            return
        self.phase = "applying"
        self._refresh_intro()
        self.query_one("#plan-intro").display = False  # room for the steps at 80×24
        log = self.query_one("#fix-log", RichLog)
        log.clear()
        log.display = True
        self.query_one("#fix-outcome").display = False
        self.kapp.start_fix(self.check_id, self.fix, self)

    def add_step(self, line: str) -> None:
        """One step of the apply, as it happens (called through ``call_from_thread``)."""
        style = Style(bold=line.startswith("$"))
        if line.startswith("rolling back"):
            style = Style(bold=True, color=self.app.theme_variables.get("status-fail"))
        self.query_one("#fix-log", RichLog).write(Text(printable(line), style=style))

    def fix_finished(self, report: FixReport | None, error: str | None) -> None:
        self.phase = "done"
        self.report = report
        self._refresh_intro()
        self.refresh_bindings()
        for button in self.query("#apply").results(Button):
            button.display = False
        if report is None:
            self._show_outcome(
                Content.assemble(("✗ not applied: ", "bold $status-fail"), printable(error or "?")),
                "failed",
            )
            return
        backup = f"\nBackup: {report.backup_dir}" if report.backup_dir else ""
        if report.outcome is Outcome.APPLIED:
            status = report.recheck.status.value if report.recheck else "?"
            self._show_outcome(
                Content.assemble(
                    ("✓ applied", "bold $status-ok"),
                    f": {self.check_id} now reports {status}.{backup}",
                ),
                "applied",
            )
        else:
            self._show_outcome(
                Content.assemble(
                    (f"✗ {report.outcome.value}", "bold $status-fail"),
                    f": {printable(report.reason)}{backup}",
                ),
                report.outcome.value,
            )

    def _show_outcome(self, content: Content, kind: str) -> None:
        outcome = self.query_one("#fix-outcome", Static)
        outcome.update(content)
        outcome.set_classes(f"outcome-{kind}")
        outcome.display = True

    @property
    def outcome_text(self) -> str:
        """The outcome line as plain text (for tests and screen readers)."""
        outcome = self.query_one("#fix-outcome", Static)
        return str(outcome.render()) if outcome.display else ""

    # -- other ---------------------------------------------------------------------------
    def action_copy(self) -> None:
        self.app.copy_to_clipboard("\n".join(self.fix.plan()) + "\n")
        # OSC 52 has no answer: kdoctor cannot know whether the terminal (or tmux without
        # set-clipboard) took it, so it says what it did, not what happened.
        self.notify(
            "Sent the plan to the terminal's clipboard (OSC 52). Terminals without OSC 52 "
            "(tmux without set-clipboard) ignore it: the plan is shown on this screen.",
            title="Plan sent",
            markup=False,
        )

    def action_back(self) -> None:
        if self.phase == "applying":
            self.notify(
                "The fix is being applied; leaving now would hide its outcome. Wait for it.",
                severity="warning",
                markup=False,
            )
            return
        if self.phase == "confirming":
            return
        self.dismiss(None)
