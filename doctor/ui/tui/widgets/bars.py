"""The bars of the main screen: what is being examined, and the filters."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.widgets import Button, Input, Label, Static

from doctor.core.model import Scope, Status
from doctor.core.report import Target
from doctor.ui.tui.logic import printable
from doctor.ui.tui.style import status_var

_ORDER = (Status.FAIL, Status.ERROR, Status.WARN, Status.OK, Status.SKIP)


def target_content(
    target: Target | None,
    parts: dict[Scope, str],
    bundle: str | None,
    cluster_note: str | None = None,
) -> Content:
    """Two lines: the node (or bundle) and the cluster, with what is still being opened."""
    node_state = parts.get(Scope.NODE, "opening")
    if node_state.startswith("failed: "):
        what = f"bundle {bundle}" if bundle else "the node"
        first = Content.assemble(
            ("kdoctor ", "bold $primary"),
            (f"cannot open the target: {printable(node_state[8:])}", "bold $status-error"),
            (f"  ({what}; R retries)", "$text-muted"),
        )
    elif target is None:
        first = Content.assemble(
            ("kdoctor ", "bold $primary"),
            (f"opening {'bundle ' + bundle if bundle else 'the node'}…", "$text-muted"),
        )
    else:
        pieces: list[tuple[str, str] | str] = [
            ("kdoctor ", "bold $primary"),
            ("node ", "$text-muted"),
            (printable(target.node or "?"), "bold"),
        ]
        if target.bundle:
            pieces += [("  bundle ", "$text-muted"), (printable(target.bundle), "bold")]
        first = Content.assemble(*pieces)

    cluster_state = parts.get(Scope.CLUSTER)
    if cluster_state is None:
        second = Content.styled("cluster: not checked (no cluster checks selected)", "$text-muted")
    elif cluster_state == "opening":
        second = Content.styled("cluster: connecting…", "$status-pending")
    elif cluster_state.startswith("failed"):
        reason = printable(cluster_state[8:])
        second = Content.styled(f"cluster: cannot open: {reason} (R retries)", "$status-error")
    elif target is not None and target.cluster is not None:
        c = target.cluster
        pieces = [("cluster ", "$text-muted")]
        if c.context:
            pieces.append((printable(c.context), "bold"))
        else:
            pieces.append(("from the bundle" if target.bundle else "(no context)", "$text-muted"))
        if c.server:
            pieces.extend([("  server ", "$text-muted"), printable(c.server)])
        pieces.extend([("  version ", "$text-muted"), (printable(c.version or "unknown"), "bold")])
        if cluster_note:
            pieces.append((f"  ({printable(cluster_note)})", "$status-error"))
        second = Content.assemble(*pieces)
    else:
        why = printable(cluster_note) if cluster_note else "the cluster checks say why"
        second = Content.styled(f"cluster: none ({why})", "$text-muted")
    return Content("\n").join([first, second])


def tally_content(counts: dict[Status, int], busy: int) -> Content:
    pieces: list[tuple[str, str] | str] = []
    for status in _ORDER:
        if pieces:
            pieces.append("  ")
        style = status_var(status) if counts.get(status) else "$text-muted"
        pieces.append((f"{status.glyph} {counts.get(status, 0)}", f"bold {style}"))
    second = Content.styled(f"{busy} running…" if busy else "", "$status-pending")
    return Content("\n").join([Content.assemble(*pieces), second])


class TargetBar(Horizontal):
    """Node / bundle and cluster on the left, the tally of statuses on the right."""

    def compose(self) -> ComposeResult:
        yield Static(id="target")
        yield Static(id="tally")

    def show(self, target: Content, tally: Content) -> None:
        self.query_one("#target", Static).update(target)
        self.query_one("#tally", Static).update(tally)


class FilterBar(Horizontal):
    """Status and scope filters (click or f / s to cycle) and the search box."""

    class Cycle(Message):
        """A filter chip was clicked."""

        def __init__(self, which: str) -> None:
            super().__init__()
            self.which = which

    def compose(self) -> ComposeResult:
        yield Label(Content.assemble(("f", "bold $accent"), " status"), classes="filter-label")
        yield Button("all", id="status-chip", classes="chip", compact=True)
        yield Label(Content.assemble(("s", "bold $accent"), " scope"), classes="filter-label")
        yield Button("all", id="scope-chip", classes="chip", compact=True)
        yield Input(placeholder="/ search id, summary, finding…", id="search", compact=True)

    def on_mount(self) -> None:
        for chip in self.query(".chip"):
            chip.can_focus = False

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "status-chip":
            self.post_message(self.Cycle("status"))
        elif event.button.id == "scope-chip":
            self.post_message(self.Cycle("scope"))

    def show(self, status_filter: str, scope_filter: str) -> None:
        self.query_one("#status-chip", Button).label = status_filter
        self.query_one("#scope-chip", Button).label = scope_filter
