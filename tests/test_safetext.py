"""Text from outside kdoctor reaches a person inert (issue 15).

The fixture bundle ``fixtures/bundles/hostile-text`` (made by ``fixtures/hostile/make_bundle.py``)
is the lab-22 broken cluster on a CentOS node whose event messages, pod names, container
messages, node conditions, iptables comments, unit descriptions and daemon.json values carry
escape sequences (OSC 0 title, clear screen, SGR colours, OSC 8 hyperlinks, 8-bit CSI), BEL,
backspaces, CR and Rich markup. Every human-facing output must show them as visible text;
the JSON report must keep them exactly; the Prometheus textfile must still parse.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client.parser import text_string_to_metric_families

from doctor.core.model import CheckResult, Scope, Status
from doctor.core.report import Report, Target, render_prometheus
from doctor.core.safetext import NEWLINE_MARK, prometheus_label, safe
from tests.conftest import BUNDLES, FIXTURES, REPO, kdoctor, validate_report

HOSTILE = BUNDLES / "hostile-text"


def _payloads() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_bundle", FIXTURES / "hostile/make_bundle.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


P = _payloads()
#: Bytes that must never reach a terminal from outside text: ESC, BEL, CR, BS and the C1 range.
FORBIDDEN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def forbidden_in(text: str) -> list[str]:
    return sorted({repr(c) for c in FORBIDDEN.findall(text)})


# -- the function ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("a\rb", "a\\rb"),
        ("ok\x08\x08NO", "ok\\b\\bNO"),
        ("\x9b7m", "\\x9b7m"),
        ("\x00\x7f", "\\x00\\x7f"),
        ("abc\u202edcba", "abc\\u202edcba"),  # a bidi override cannot reorder the line
        ("bad \udcff byte", "bad \\xff byte"),  # surrogateescape: the original byte
        ("[bold red]markup[/]", "[bold red]markup[/]"),  # markup is text (renderers use Text)
    ],
)
def test_safe_shows_control_characters_visibly(raw: str, shown: str) -> None:
    assert safe(raw) == shown
    assert not forbidden_in(safe(raw))
    safe(raw).encode("utf-8")  # printable to any UTF-8 stream, no UnicodeEncodeError


def test_safe_keeps_kdoctor_text_and_multiline_text_as_it_is() -> None:
    own = "✓ ok  ! warn  ✗ fail  × message ╰─> evidence — hint: `kdoctor fix` ⏎ é 日本"
    assert safe(own) == own
    assert safe("first\nsecond\tcolumn") == "first\nsecond\tcolumn"
    assert safe("a\u2028b") == "a\nb"
    assert safe(42) == "42"


def test_safe_folds_a_single_line_field() -> None:
    folded = safe("Could not get peers\r\nFailed\nto\u2029get\tpeers\n", single_line=True)
    assert (
        folded == f"Could not get peers{NEWLINE_MARK}Failed{NEWLINE_MARK}to{NEWLINE_MARK}get peers"
    )
    assert "\n" not in safe(P.PAYLOAD + "\n" + P.PAYLOAD, single_line=True)


# -- the fixture ----------------------------------------------------------------------------


def test_the_fixture_bundle_carries_every_kind_of_payload() -> None:
    """The bundle is what the generator writes (so the tests below test what they say)."""
    events = (HOSTILE / "cluster/events.json").read_text()
    pods = json.loads((HOSTILE / "cluster/pods.json").read_text())
    assert P.PAYLOAD in json.loads(events)["items"][0]["message"]
    assert any(p["metadata"]["name"] == P.HOSTILE_POD for p in pods["items"])
    rules = (HOSTILE / "commands/iptables-save.txt").read_bytes().decode()
    assert '--comment "' + P.PAYLOAD.replace('"', "'") in rules
    unit = (HOSTILE / "commands/systemctl-show-kubelet.txt").read_bytes().decode()
    assert "Description=kubelet \x1b]0;pwned\x07" in unit
    for kind in ("\x1b]0;", "\x1b]8;;", "\x07", "\x08", "\r", "\x9b", "[bold red]"):
        assert kind in P.PAYLOAD


# -- text outputs, piped --------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["check", "--bundle", str(HOSTILE)],
        ["check", "--bundle", str(HOSTILE), "-v"],
        ["check", "--bundle", str(HOSTILE), "-q"],
        ["fix", "--dry-run", "--bundle", str(HOSTILE)],
        ["fix", "--dry-run", "--bundle", str(HOSTILE), "--unsafe", "-v"],
    ],
    ids=["check", "check-v", "check-q", "fix-dry-run", "fix-dry-run-unsafe"],
)
def test_no_control_byte_reaches_piped_text_output(args: list[str]) -> None:
    proc = kdoctor(*args)
    out = proc.stdout + proc.stderr
    assert not forbidden_in(out), (forbidden_in(out), out)
    if args[0] == "check" and "-q" not in args:
        # shown, not hidden: the reader sees what the cluster object holds
        assert "weave-net-xpdvj\\x1b[31m\\x1b]0;pwned\\x07" in out
        assert "all fine\\rOVERWRITTEN" in out
        assert "[bold red]markup[/]" in out  # markup shown as text, not interpreted


def test_the_text_report_written_to_a_file_is_safe_too(tmp_path: Path) -> None:
    out = tmp_path / "report.txt"
    kdoctor("check", "--bundle", str(HOSTILE), "-v", "--output", str(out))
    text = out.read_text()
    assert "kube-system" in text
    assert not forbidden_in(text), forbidden_in(text)


def test_the_iptables_comment_is_evidence_not_an_error() -> None:
    """iptables-save prints a comment's bytes as they are: the rule is still judged."""
    proc = kdoctor("check", "--bundle", str(HOSTILE), "--only", "node.iptables.reject", "-v")
    assert proc.returncode == 2, proc.stdout
    assert "--comment" in proc.stdout and "\\x1b]0;pwned\\x07" in proc.stdout
    assert not forbidden_in(proc.stdout)


# -- machine outputs ------------------------------------------------------------------------


def test_the_json_report_keeps_outside_text_exactly() -> None:
    proc = kdoctor("check", "--bundle", str(HOSTILE), "--format", "json")
    assert not forbidden_in(proc.stdout)  # json escapes control characters itself
    report = validate_report(proc.stdout)
    text = json.dumps(report, ensure_ascii=False)
    assert json.dumps(P.HOSTILE_POD, ensure_ascii=False)[1:-1] in text
    pods = next(c for c in report["checks"] if c["id"] == "cluster.kube-system.pods")
    resources = {f["resource"] for f in pods["findings"]}
    assert f"pod/kube-system/{P.HOSTILE_POD}" in resources
    nodes = next(c for c in report["checks"] if c["id"] == "cluster.nodes")
    assert any(P.PAYLOAD in f["evidence"].get("message", "") for f in nodes["findings"])


def _parse_prometheus(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_the_prometheus_textfile_of_the_hostile_bundle_parses() -> None:
    proc = kdoctor("check", "--bundle", str(HOSTILE), "--format", "prometheus")
    assert proc.stdout
    assert not forbidden_in(proc.stdout)
    samples = _parse_prometheus(proc.stdout)
    key = (
        "kdoctor_check_status",
        (("check", "cluster.nodes"), ("scope", "cluster"), ("status", "fail")),
    )
    assert samples[key] == 1


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ('back\\slash "quoted"', 'back\\slash "quoted"'),
        ("two\nlines", "two\nlines"),
        ("pod\x1b]0;pwned\x07\r", "pod\\x1b]0;pwned\\x07\\r"),
        ("bad \udcff byte", "bad \\xff byte"),
    ],
)
def test_prometheus_label_values_are_escaped_per_the_exposition_format(
    value: str, parsed: str
) -> None:
    """A check id from a plugin (or a node name) cannot break a line of the textfile."""
    result = CheckResult(id=value, title="t", scope=Scope.NODE, status=Status.FAIL, summary="s")
    report = Report(Target(node=value, bundle=None, cluster=None), [result], datetime.now(UTC))
    text = render_prometheus(report)
    text.encode("utf-8")
    assert not forbidden_in(text)
    samples = _parse_prometheus(text)
    assert samples[("kdoctor_check_duration_seconds", (("check", parsed),))] == 0
    assert prometheus_label("a\nb") == "a\\nb"


# -- a real terminal ------------------------------------------------------------------------

# kdoctor's own styling: CSI sequences (colours, the progress line's erase/cursor codes),
# and the carriage return Rich's live progress line puts before them.
_OWN_STYLING = re.compile(r"\r?\x1b\[[0-9;?]*[A-Za-z]")


class Tmux:
    """A private tmux server whose pane output is also recorded raw (pipe-pane)."""

    def __init__(self, tmp_path: Path, width: int = 160, height: int = 50) -> None:
        if shutil.which("tmux") is None:
            pytest.skip("needs tmux (not installed)")
        self.socket = f"kdt-safe-{uuid.uuid4().hex[:8]}"
        self.raw = tmp_path / "pane.raw"
        self.size = (width, height)

    def __call__(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30
        )
        return proc.stdout

    def start(self, command: str) -> None:
        """Run ``command`` in a pane once recording has started (the pane waits for Enter)."""
        script = f"stty -echo -onlcr; read _go; {command}; echo __KDT_DONE__; sleep 60"
        subprocess.run(
            ["tmux", "-L", self.socket, "new-session", "-d", "-s", "kdt",
             "-x", str(self.size[0]), "-y", str(self.size[1]), "sh", "-c", script],
            check=True, env=dict(os.environ, TERM="xterm-256color"), timeout=30,
        )  # fmt: skip
        self("set-option", "-t", "kdt", "history-limit", "5000")
        self("pipe-pane", "-t", "kdt", "-o", f"cat >> {shlex.quote(str(self.raw))}")
        self("send-keys", "-t", "kdt", "Enter")

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-S", "-", "-t", "kdt")

    def wait_for(self, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        shown = ""
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.1)
        raise AssertionError(f"{text!r} never appeared:\n{shown}")

    def title(self) -> str:
        return self("display-message", "-p", "-t", "kdt", "#{pane_title}").strip()

    def close(self) -> None:
        path = self("display-message", "-p", "#{socket_path}").strip()
        self("kill-server")
        if path.endswith(self.socket):
            Path(path).unlink(missing_ok=True)


def _python() -> str:
    return (
        f"cd {shlex.quote(str(REPO))} && PYTHONPATH={shlex.quote(str(REPO))} "
        f"{shlex.quote(sys.executable)} -m doctor"
    )


def test_in_a_real_terminal_nothing_is_interpreted(tmp_path: Path) -> None:
    tmux = Tmux(tmp_path)
    tmux.start(f"{_python()} check --bundle {shlex.quote(str(HOSTILE))} -v")
    try:
        before = tmux.title()
        shown = tmux.wait_for("__KDT_DONE__")
        assert "kdoctor" in shown.splitlines()[0] or "kdoctor:" in shown  # not cleared
        assert "\\x1b]0;pwned\\x07" in shown  # visible on screen, as text
        assert "pwned" not in tmux.title() and tmux.title() == before
        raw = tmux.raw.read_bytes().decode("utf-8", "replace")
        assert "\x1b[" in raw  # kdoctor's own colours are there (a terminal)
        leftover = _OWN_STYLING.sub("", raw)
        assert not forbidden_in(leftover), forbidden_in(leftover)
    finally:
        tmux.close()


def test_the_tui_shows_outside_text_inert(tmp_path: Path) -> None:
    tmux = Tmux(tmp_path, width=200, height=50)
    state = shlex.quote(str(tmp_path / "state"))
    tmux.start(f"{_python()} tui --bundle {shlex.quote(str(HOSTILE))} --state-dir {state}")
    try:
        before = tmux.title()
        shown = tmux.wait_for("cluster.kube-system.pods")
        shown = tmux.wait_for("\\x1b[31m")  # the pod name in the summary, shown visibly
        assert "pwned" not in tmux.title() and tmux.title() == before
        tmux("send-keys", "-t", "kdt", "q")
        tmux.wait_for("__KDT_DONE__")
        raw = tmux.raw.read_bytes().decode("utf-8", "replace")
        # Textual draws with CSI sequences, its own mode switches and OSC 22 (the mouse
        # pointer's shape); nothing else.
        leftover = re.sub(
            r"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b[=>()][0-9A-Za-z]?|\x1b\]22;[a-z-]*\x07", "", raw
        )
        leftover = leftover.replace("\r", "")  # Textual's own cursor returns
        assert "\x1b]0;pwned" not in raw and "\x1b]8;;https://evil" not in raw
        assert not forbidden_in(leftover), forbidden_in(leftover)
        assert shown
    finally:
        tmux.close()
