"""Make text that comes from outside kdoctor safe to put in front of a person.

Event messages, pod names, container logs, iptables comments, unit files and command
output are written by whoever can create a pod or an event, not by kdoctor. Printed raw,
an escape sequence in them can retitle the terminal, clear the screen, recolour or hide
lines of the report. Every human-facing renderer (text report, ``-v`` evidence,
``explain``, fix plans, progress lines, TUI widgets, error lines) passes such strings
through :func:`safe` before styling them; kdoctor's own styling is added afterwards (as
Rich styles, never as raw escape codes inside the text), so it stays.

What :func:`safe` does:

- C0 controls (except newline and tab), DEL and C1 controls become visible escapes
  (``ESC`` → ``\\x1b``, ``BEL`` → ``\\x07``, ``CR`` → ``\\r``): an ``ESC [2J`` is shown as the
  text ``\\x1b[2J`` and does nothing.
- Bidirectional overrides and isolates (the "Trojan Source" characters) become ``\\u202e``
  and the like, so they cannot reorder what the line seems to say.
- Undecodable bytes that Python kept as lone surrogates (``surrogateescape``) become
  ``\\xNN`` of the original byte instead of crashing the output stream.
- ``single_line=True`` (a table cell, a progress line, a summary): newlines, tabs and the
  Unicode line/paragraph separators are folded to `` ⏎ `` / a space, so one field stays
  one line.

Machine outputs do not use this: the JSON report keeps every string exact (``json``
escapes control characters itself) and the Prometheus textfile escapes label values as
the exposition format requires (:func:`prometheus_label`).
"""

from __future__ import annotations

import re

__all__ = ["NEWLINE_MARK", "prometheus_label", "safe"]

#: What a newline inside a single-line field is shown as.
NEWLINE_MARK = " ⏎ "

_NAMED = {"\r": "\\r", "\b": "\\b", "\x1b": "\\x1b", "\x07": "\\x07"}

# C0 (minus \t \n), DEL, C1; bidi embeddings/overrides (U+202A-202E), isolates (U+2066-2069),
# the marks LRM/RLM/ALM; lone surrogates from surrogateescape decoding.
_UNSAFE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]"
)
_LINE_BREAKS = re.compile("\r\n|[\n\u2028\u2029\x85\x0b\x0c]")


def _visible(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte that was not valid UTF-8 (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def safe(value: object, *, single_line: bool = False) -> str:
    """``value`` as text that a terminal shows and never interprets (see the module doc)."""
    text = value if isinstance(value, str) else str(value)
    if single_line:
        text = _LINE_BREAKS.sub(NEWLINE_MARK, text.strip("\r\n")).replace("\t", " ")
    elif "\u2028" in text or "\u2029" in text:
        text = text.replace("\u2028", "\n").replace("\u2029", "\n")
    return _UNSAFE.sub(_visible, text)


def prometheus_label(value: str) -> str:
    """A label value escaped for the Prometheus text exposition format.

    The format knows three escapes (``\\\\``, ``\\"``, ``\\n``). A carriage return or other
    control character is legal inside the quotes but makes some readers split the line,
    so it is shown the way :func:`safe` shows it; undecodable bytes likewise (the file must
    be UTF-8).
    """
    text = _UNSAFE.sub(_visible, value)
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
