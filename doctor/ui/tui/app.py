"""``kdoctor tui``: the app, its state, and the workers that do everything that may block.

The UI thread never blocks: opening the target (a bundle's manifest; a live cluster connects
in :class:`doctor.facts.kube.LiveCluster`'s constructor), running checks, applying a fix and writing
a report all run in thread workers (``@work(thread=True)``) that post their results back as
messages. A fix's steps stream into the plan screen through ``call_from_thread``.

Workers that may hang on a dead API server run their call in a daemon thread and return as
soon as the worker is cancelled, so quitting is never held up by a stuck socket. The fix
worker is the exception on purpose: quitting is refused while a fix is being applied, and
the process waits for its rollback rather than abandoning it half way.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar, TypeVar

from rich.text import Text
from textual import events, work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.signal import Signal
from textual.worker import get_current_worker

from doctor.core.errors import UsageError
from doctor.core.fix import Fix
from doctor.core.fixengine import FixReport, Outcome
from doctor.core.model import CheckResult, Scope, Status
from doctor.core.registry import Check
from doctor.ui.tui.backend import Backend
from doctor.ui.tui.logic import RowView, fix_blocked_reason, printable, problems_first, tally
from doctor.ui.tui.screens.check import CheckScreen
from doctor.ui.tui.screens.help import HelpScreen, SaveReportScreen
from doctor.ui.tui.screens.main import MainScreen
from doctor.ui.tui.screens.plan import PlanScreen
from doctor.ui.tui.style import DARK, LIGHT, THEMES, VARIABLE_DEFAULTS

T = TypeVar("T")

DEFAULT_REPORT = "kdoctor-report.json"


class Cancelled(Exception):
    """The worker was cancelled (the app is quitting) while waiting."""


def wait_cancellable(call: Callable[[], T]) -> T:
    """Run ``call`` in a daemon thread; return its result, or raise :class:`Cancelled` as soon
    as the current worker is cancelled (the thread is abandoned, it cannot hold up exit)."""
    worker = get_current_worker()
    box: list[tuple[bool, object]] = []
    done = threading.Event()

    def target() -> None:
        try:
            box.append((True, call()))
        except BaseException as exc:  # handed to the worker, raised there
            box.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=target, name=f"kdoctor-{worker.name}", daemon=True).start()
    while not done.wait(0.05):
        if worker.is_cancelled:
            raise Cancelled
    ok, value = box[0]
    if not ok:
        assert isinstance(value, BaseException)
        raise value
    return value  # type: ignore[return-value]


# -- messages from the workers ------------------------------------------------------------


class TargetOpened(Message):
    def __init__(self, scope: Scope, error: str | None = None, usage: bool = False) -> None:
        super().__init__()
        self.scope = scope
        self.error = error
        self.usage = usage


class ResultArrived(Message):
    def __init__(self, result: CheckResult, token: int) -> None:
        super().__init__()
        self.result = result
        self.token = token


class RunFailed(Message):
    def __init__(self, ids: Sequence[str], token: int, reason: str) -> None:
        super().__init__()
        self.ids = list(ids)
        self.token = token
        self.reason = reason


class FixFinished(Message):
    def __init__(
        self, check_id: str, screen: PlanScreen, report: FixReport | None, error: str | None
    ) -> None:
        super().__init__()
        self.check_id = check_id
        self.screen = screen
        self.report = report
        self.error = error


class ReportSaved(Message):
    def __init__(self, path: Path | None, error: str | None, left_out: int) -> None:
        super().__init__()
        self.path = path
        self.error = error
        self.left_out = left_out


# -- the app ------------------------------------------------------------------------------


class KdoctorApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "kdoctor"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("f1", "help", "Help", show=False),
        Binding("t", "toggle_theme", "Theme", show=False),
    ]

    def __init__(
        self,
        args: argparse.Namespace,
        checks: Sequence[type[Check]],
        *,
        warnings: Sequence[str] = (),
        show_durations: bool = True,
    ) -> None:
        super().__init__()
        for theme in THEMES:
            self.register_theme(theme)
        self.theme = DARK
        self.backend = Backend(args, checks)
        self.show_durations = show_durations
        self.startup_warnings = list(warnings)
        self.results: dict[str, CheckResult] = {}
        #: waiting / running / applying, for checks whose current result is not known.
        self.states: dict[str, str] = {c.id: "waiting" for c in checks}
        #: opening / open / failed: <reason>, per part of the target.
        self.part_state: dict[Scope, str] = {part: "opening" for part in self.backend.parts}
        self.applying: str | None = None
        self._tokens: dict[str, int] = {}
        self._next_token = 0
        self._warned: set[str] = set()
        #: Published with a check id when its row changed, "*" when anything else did.
        self.result_changed: Signal[str] = Signal(self, "result-changed")

    def get_theme_variable_defaults(self) -> dict[str, str]:
        return dict(VARIABLE_DEFAULTS)

    def on_mount(self) -> None:
        self.begin_capture_print(self, stdout=False, stderr=True)
        self.push_screen(MainScreen())
        for warning in self.startup_warnings:
            self.notify(printable(warning), severity="warning", timeout=10, markup=False)
        for part in self.backend.parts:
            self._open_part(part)

    def on_print(self, event: events.Print) -> None:
        """Warnings the shared target code prints to stderr become notifications."""
        text = event.text.strip()
        if text and text not in self._warned:
            self._warned.add(text)  # both parts of the target may say the same thing
            self.notify(printable(text), severity="warning", timeout=10, markup=False)

    # -- state, for the screens ----------------------------------------------------------
    def row(self, check_id: str) -> RowView:
        check = self.backend.by_id[check_id]
        return RowView(
            check_id=check.id,
            title=check.title,
            scope=check.scope,
            result=self.results.get(check_id),
            state=self.states.get(check_id),
        )

    def rows(self) -> list[RowView]:
        return problems_first([self.row(check.id) for check in self.backend.checks])

    def counts(self) -> dict[Status, int]:
        return tally(self.results.values())

    def busy(self) -> int:
        return sum(1 for state in self.states.values() if state in ("running", "applying"))

    def fix_blocked(self, check_id: str, result: CheckResult | None = None) -> str | None:
        """Why the fix of ``check_id`` cannot be applied now (None when it can)."""
        result = result if result is not None else self.results.get(check_id)
        return fix_blocked_reason(result, self.backend.on_bundle, self.applying)

    # -- the target ----------------------------------------------------------------------
    @work(thread=True, group="target", exit_on_error=False)
    def _open_part(self, scope: Scope) -> None:
        try:
            wait_cancellable(lambda: self.backend.open(scope))
        except Cancelled:
            return
        except UsageError as exc:
            self.post_message(TargetOpened(scope, str(exc), usage=True))
            return
        except Exception as exc:  # shown on the screen, never a traceback
            self.post_message(TargetOpened(scope, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(TargetOpened(scope))

    def on_target_opened(self, message: TargetOpened) -> None:
        ids = [c.id for c in self.backend.checks_of(message.scope)]
        if message.usage:
            self.exit(return_code=3, message=Text(f"kdoctor: error: {message.error}"))
            return
        if message.error is not None:
            self.part_state[message.scope] = f"failed: {message.error}"
            for check_id in ids:
                self._set_error(check_id, f"cannot open the target: {message.error}")
            self.result_changed.publish("*")
            return
        self.part_state[message.scope] = "open"
        self.result_changed.publish("*")
        if ids:
            self.start_run(ids)

    def _set_error(self, check_id: str, reason: str) -> None:
        check = self.backend.by_id[check_id]
        self.results[check_id] = CheckResult(
            id=check.id, title=check.title, scope=check.scope, status=Status.ERROR, summary=reason
        )
        self.states.pop(check_id, None)

    # -- running checks ------------------------------------------------------------------
    def start_run(self, ids: Sequence[str]) -> None:
        """Run (again) the given checks, each part in its own worker."""
        for scope in (Scope.NODE, Scope.CLUSTER):
            wanted = [
                i
                for i in ids
                if self.backend.by_id[i].scope is scope and self.states.get(i) != "applying"
            ]
            if not wanted:
                continue
            state = self.part_state.get(scope, "opening")
            if state == "opening":
                self.notify(
                    f"The {scope.value} target is still opening.", severity="warning", markup=False
                )
                continue
            if state != "open":  # it failed: try to open it again, its checks run after
                self.part_state[scope] = "opening"
                for check_id in wanted:
                    self.states[check_id] = "waiting"
                self._open_part(scope)
                continue
            self._next_token += 1
            token = self._next_token
            for check_id in wanted:
                self._tokens[check_id] = token
                self.states[check_id] = "running"
            self._run_worker(scope, wanted, token)
        self.result_changed.publish("*")

    @work(thread=True, group="checks", exit_on_error=False)
    def _run_worker(self, scope: Scope, ids: list[str], token: int) -> None:
        def on_result(result: CheckResult) -> None:
            self.post_message(ResultArrived(result, token))

        try:
            wait_cancellable(lambda: self.backend.run(scope, ids, on_result))
        except Cancelled:
            return
        except Exception as exc:
            self.post_message(RunFailed(ids, token, f"{type(exc).__name__}: {exc}"))

    def on_result_arrived(self, message: ResultArrived) -> None:
        check_id = message.result.id
        if self._tokens.get(check_id) != message.token:
            return  # a newer run (or a fix) superseded this one
        self.results[check_id] = message.result
        if self.states.get(check_id) == "running":
            del self.states[check_id]
        self.result_changed.publish(check_id)

    def on_run_failed(self, message: RunFailed) -> None:
        for check_id in message.ids:
            if self._tokens.get(check_id) == message.token:
                self._set_error(check_id, f"the run failed: {message.reason}")
        self.result_changed.publish("*")

    # -- screens -------------------------------------------------------------------------
    def open_check(self, check_id: str) -> None:
        self.push_screen(CheckScreen(check_id))

    def open_plan(self, check_id: str) -> None:
        result = self.results.get(check_id)
        if result is None or result.fix is None:
            reason = fix_blocked_reason(result, self.backend.on_bundle, None)
            self.notify(reason or "no fix", title="No fix", severity="information", markup=False)
            return
        self.push_screen(PlanScreen(check_id, result))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_toggle_theme(self) -> None:
        self.theme = LIGHT if self.theme == DARK else DARK

    async def action_quit(self) -> None:
        if self.applying is not None:
            self.notify(
                f"The fix of {self.applying} is being applied; quitting now could leave it "
                "half done. Wait for it to finish.",
                severity="warning",
                markup=False,
            )
            return
        self.exit()

    # -- fixes ---------------------------------------------------------------------------
    def start_fix(self, check_id: str, fix: Fix, screen: PlanScreen) -> None:
        self.applying = check_id
        self.states[check_id] = "applying"
        self._tokens[check_id] = -1  # results of runs started before the fix are stale
        self.result_changed.publish(check_id)
        self._fix_worker(check_id, fix, screen)

    @work(thread=True, group="fix", exit_on_error=False)
    def _fix_worker(self, check_id: str, fix: Fix, screen: PlanScreen) -> None:
        def on_step(line: str) -> None:
            with contextlib.suppress(RuntimeError):  # the app is gone: the journal has it
                self.call_from_thread(screen.add_step, line)

        try:
            report = self.backend.apply(check_id, fix, on_step)
        except Exception as exc:  # could not even start (state dir not writable, …)
            self.post_message(FixFinished(check_id, screen, None, f"{type(exc).__name__}: {exc}"))
            return
        self.post_message(FixFinished(check_id, screen, report, None))

    def on_fix_finished(self, message: FixFinished) -> None:
        check_id = message.check_id
        self.applying = None
        self.states.pop(check_id, None)
        report = message.report
        if report is not None and report.outcome is Outcome.APPLIED and report.recheck:
            self.results[check_id] = report.recheck
            self.result_changed.publish(check_id)
        else:
            # Rolled back (or never started): show the state the node is in now.
            self.start_run([check_id])
        if message.screen.is_attached:
            message.screen.fix_finished(report, message.error)
        if report is not None:
            if report.outcome is Outcome.APPLIED:
                self.notify(
                    f"{check_id}: fix applied, the check passes.", title="Applied", markup=False
                )
            else:
                self.notify(
                    f"{check_id}: {report.outcome.value}: {report.reason}",
                    title="Rolled back" if report.outcome is Outcome.ROLLED_BACK else "Failed",
                    severity="error",
                    timeout=15,
                    markup=False,
                )
        else:
            self.notify(
                f"{check_id}: {message.error}", title="Not applied", severity="error", markup=False
            )

    @work(thread=True, group="journal", exit_on_error=False)
    def decline_fix(self, check_id: str, fix: Fix) -> None:
        """Journal the declined fix, as ``kdoctor fix`` does (never fatal)."""
        try:
            self.backend.decline(check_id, fix)
        except Exception as exc:
            self.call_from_thread(
                self.notify,
                f"could not journal the decline: {exc}",
                severity="warning",
                markup=False,
            )

    # -- the report ----------------------------------------------------------------------
    def ask_save_report(self) -> None:
        pending = sum(1 for check in self.backend.checks if check.id not in self.results)
        note = f"{pending} checks without a result yet are left out." if pending else ""

        def save(path: str | None) -> None:
            if path:
                self._save_worker(Path(path).expanduser(), list(self.results.values()), pending)

        self.push_screen(SaveReportScreen(DEFAULT_REPORT, note), save)

    @work(thread=True, group="save", exit_on_error=False)
    def _save_worker(self, path: Path, results: list[CheckResult], left_out: int) -> None:
        try:
            written = wait_cancellable(lambda: self.backend.save(path, results))
        except Cancelled:
            return
        except Exception as exc:
            self.post_message(ReportSaved(None, f"{type(exc).__name__}: {exc}", left_out))
            return
        self.post_message(ReportSaved(written, None, left_out))

    def on_report_saved(self, message: ReportSaved) -> None:
        if message.path is None:
            self.notify(f"Not saved: {message.error}", severity="error", timeout=10, markup=False)
            return
        extra = f" ({message.left_out} unfinished checks left out)" if message.left_out else ""
        self.notify(f"Report saved to {message.path}{extra}", title="Saved", markup=False)
