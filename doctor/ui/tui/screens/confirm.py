"""The "apply this fix?" dialog: one key for a safe fix, a typed answer for an unsafe one."""

from __future__ import annotations

from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.events import Key
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from doctor.core.fix import Fix, FixSafety
from doctor.ui.tui.logic import CONFIRM_WORD, confirmation_matches, printable
from doctor.ui.tui.style import safety_content


class ConfirmFix(ModalScreen[bool]):
    """Dismissed with True only on an explicit yes; escape, n and Cancel all mean no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, check_id: str, fix: Fix) -> None:
        super().__init__(classes="confirm-screen")
        self.check_id = check_id
        self.fix = fix
        self.typed = fix.safety is FixSafety.UNSAFE

    def compose(self) -> ComposeResult:
        steps = len(self.fix.plan())
        with Vertical(id="confirm-dialog", classes="unsafe" if self.typed else "safe"):
            yield Static(
                Content.assemble(("Apply this ", "bold"), safety_content(self.fix.safety),
                                 (" fix?", "bold")),
                id="confirm-title",
            )  # fmt: skip
            yield Static(
                Content.assemble(
                    (printable(self.fix.title), "bold"),
                    "\n",
                    (f"{self.check_id} · {self.fix.id} · {steps} plan lines", "$text-muted"),
                ),
                id="confirm-what",
            )
            if self.typed:
                yield Static(
                    Content.assemble(
                        "This fix changes how the node or cluster behaves. Everything it changes "
                        "is backed up first and rolled back if the check still fails.\n",
                        ("Type ", ""),
                        (self.check_id, "bold"),
                        " or ",
                        (CONFIRM_WORD, "bold"),
                        " and press enter to apply it.",
                    ),
                    id="confirm-explain",
                )
                yield Input(placeholder=f"{self.check_id} or {CONFIRM_WORD}", id="confirm-input")
                yield Static("", id="confirm-error")
            else:
                yield Static(
                    "Everything it changes is backed up first and rolled back if the check "
                    "still fails. Press y to apply, n or escape to cancel.",
                    id="confirm-explain",
                )
            with Horizontal(id="confirm-buttons"):
                yield Button(
                    "Apply" if self.typed else "Apply (y)",
                    id="confirm-apply",
                    variant="error" if self.typed else "success",
                    disabled=self.typed,
                )
                yield Button("Cancel (esc)", id="confirm-cancel")

    def on_mount(self) -> None:
        if self.typed:
            self.query_one("#confirm-input", Input).focus()
        else:
            self.query_one("#confirm-apply", Button).focus()

    def on_key(self, event: Key) -> None:
        """y / n answer a safe fix's question (an unsafe one needs the typed answer)."""
        if self.typed:
            return
        if event.key == "y":
            event.stop()
            self.dismiss(True)
        elif event.key == "n":
            event.stop()
            self.dismiss(False)

    @on(Input.Changed, "#confirm-input")
    def _typed(self, event: Input.Changed) -> None:
        ok = confirmation_matches(event.value, self.check_id)
        self.query_one("#confirm-apply", Button).disabled = not ok
        self.query_one("#confirm-error", Static).update("")

    @on(Input.Submitted, "#confirm-input")
    def _submitted(self, event: Input.Submitted) -> None:
        if confirmation_matches(event.value, self.check_id):
            self.dismiss(True)
        else:
            self.query_one("#confirm-error", Static).update(
                Content.styled(
                    f"Not applied: type exactly {self.check_id} or {CONFIRM_WORD}.",
                    "bold $status-fail",
                )
            )

    @on(Button.Pressed, "#confirm-apply")
    def _apply(self) -> None:
        if self.typed:
            typed = self.query_one("#confirm-input", Input).value
            if not confirmation_matches(typed, self.check_id):
                return
        self.dismiss(True)

    @on(Button.Pressed, "#confirm-cancel")
    def _cancel_button(self) -> None:
        self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)
