"""The help screen, and the small dialog that asks where to save the report."""

from __future__ import annotations

from typing import ClassVar

from rich.markdown import Markdown as RichMarkdown
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

HELP = """\
# kdoctor tui — keys

| key | where | what |
|---|---|---|
| `↑` `↓` `pgup` `pgdn` | table | move |
| `enter` or click | table | open the check: findings, documentation, fix |
| `x` | table, check | the fix's plan (apply from there) |
| `r` / `R` | table | re-run this check / every check |
| `f` or click | table | status: all, problems, fail, warn, error, skip, ok |
| `s` or click | table | scope: all, node, cluster |
| `/` | table | search ids, titles, summaries, findings (`esc`: back) |
| `w` | table | save the results as a JSON report (kdoctor/report/v1) |
| `1` `2` `3` | check | findings, documentation, fix |
| `a` / `c` | plan | apply (asks first) / copy the plan |
| `y` / `n` | safe fix | apply / cancel |
| id or `yes`, `enter` | unsafe fix | type the check id or yes to apply |
| `esc` | anywhere | back, cancel |
| `t` | anywhere | light / dark theme |
| `?` `f1` | anywhere | this help |
| `q` `ctrl+q` | anywhere | quit (not while a fix is being applied) |

## Statuses

`✓ ok` passes · `! warn` works now, bites later · `✗ fail` broken · `? error` the check
could not decide (crashed, timed out, unreadable facts, API refused) · `- skip` not
applicable or facts missing. Errors and skips always say why.

## Fixes

A fix shows its plan first — the exact commands and diffs — and runs only after you
confirm. It backs up what it changes, re-runs the check and rolls back by itself when the
check still fails; every fix is journaled in the state directory. **safe**: idempotent,
keeps meaning, `y` applies it. **unsafe**: changes how the node or cluster behaves, type
the check id or `yes`. **manual**: commands for you to run; kdoctor never runs them. On a
bundle nothing is applied: a bundle is a copy of a node, not the node.

## Running

Every check runs in the background as soon as the screen opens; each row fills in when its
result arrives. A slow or unreachable API server only delays the cluster rows.
"""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark,f1", "close", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            with VerticalScroll(id="help-scroll"):
                yield Static(RichMarkdown(HELP), id="help-text")
            yield Static("esc  close", id="help-foot")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()

    def action_close(self) -> None:
        self.dismiss(None)


class SaveReportScreen(ModalScreen[str | None]):
    """Asks for the file to write the JSON report to; None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str, note: str = "") -> None:
        super().__init__()
        self.default = default
        self.note = note

    def compose(self) -> ComposeResult:
        with Vertical(id="save-dialog"):
            yield Static("Save the results as a JSON report (kdoctor/report/v1)", id="save-title")
            yield Input(value=self.default, id="save-path")
            if self.note:
                yield Static(self.note, id="save-note")
            with Horizontal(id="save-buttons"):
                yield Button("Save (enter)", id="save-ok", variant="primary")
                yield Button("Cancel (esc)", id="save-cancel")

    def on_mount(self) -> None:
        self.query_one("#save-path", Input).focus()

    @on(Input.Submitted, "#save-path")
    @on(Button.Pressed, "#save-ok")
    def _save(self) -> None:
        path = self.query_one("#save-path", Input).value.strip()
        if path:
            self.dismiss(path)

    @on(Button.Pressed, "#save-cancel")
    def _cancel(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)
