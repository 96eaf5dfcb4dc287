"""``/etc/os-release`` (os-release(5)): shell-style ``KEY=value`` lines -> a dict."""

from __future__ import annotations

import shlex


def parse_os_release(text: str) -> dict[str, str]:
    """The variables of an os-release file; lines that are not ``KEY=value`` are skipped
    (the format allows comments and blank lines; a garbled line says nothing)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        if not key.isidentifier():
            continue
        try:
            parts = shlex.split(raw, comments=False, posix=True)
        except ValueError:  # an unbalanced quote
            parts = [raw.strip("\"'")]
        values[key] = " ".join(parts)
    return values
