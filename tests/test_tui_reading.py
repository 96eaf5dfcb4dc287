"""What a person reads in ``kdoctor tui`` (issue 10): failing checks first, Esc clears the
search, evidence labels never break mid-word, outside text shown inert (issue 15)."""

from __future__ import annotations

import re

from textual.widgets import Input, Static

from tests.conftest import BUNDLES
from tests.test_tui import pilot_test, screen_text, select_row, settle, table_rows, tui_app

BROKEN = BUNDLES / "seed-lab-broken"
HOSTILE = BUNDLES / "hostile-text"


@pilot_test
async def test_failing_checks_come_first_root_cause_on_top() -> None:
    app = tui_app("--bundle", str(BROKEN))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        statuses = [app.results[i].status.value for i in table_rows(app)]
        assert statuses[:5] == ["fail"] * 5, statuses
        assert statuses[-1] == "ok"
        assert next(iter(table_rows(app))) == "cluster.network.cni"  # the root cause


@pilot_test
async def test_escape_clears_the_search() -> None:
    app = tui_app("--bundle", str(BROKEN))
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        every = set(table_rows(app))
        await pilot.press("slash")
        for key in "registry":
            await pilot.press(key)
        await pilot.pause()
        assert set(table_rows(app)) == {"cluster.registry.pull-secret"}
        await pilot.press("escape")
        await pilot.pause()
        assert app.screen.query_one("#search", Input).value == ""
        assert set(table_rows(app)) == every
        assert app.focused is app.screen.query_one("ChecksTable")


@pilot_test
async def test_evidence_labels_do_not_wrap_mid_word() -> None:
    app = tui_app("--bundle", str(BROKEN))
    async with app.run_test(size=(100, 60)) as pilot:
        await settle(pilot)
        await select_row(pilot, "cluster.network.cni")
        await pilot.press("enter")
        await pilot.pause(0.3)
        text = screen_text(app)
        # 25 characters: longer than the old 24-column label, so it used to break in two
        assert "daemonset_resourceVersion" in text, text
        labels = [str(w.render()) for w in app.screen.query(".evidence-key").results(Static)]
        assert "daemonset_resourceVersion" in labels
        for line in text.splitlines():
            assert not re.search(r"\bdaemonset_resourceVe\s*$", line), line


@pilot_test
async def test_outside_text_in_a_finding_is_shown_as_text() -> None:
    app = tui_app("--bundle", str(HOSTILE))
    async with app.run_test(size=(160, 60)) as pilot:
        await settle(pilot)
        await select_row(pilot, "cluster.kube-system.pods")
        await pilot.press("enter")
        await pilot.pause(0.3)
        text = screen_text(app)
        assert "weave-net-xpdvj\\x1b[31m\\x1b]0;pwned\\x07" in text, text
        assert "\x1b" not in text.replace("\x1b[0m", "") and "\x07" not in text
