"""What the TUI decides without drawing anything: filters, search, plan line kinds, evidence
layout and whether a fix may be applied. No textual import here."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from doctor.core.fix import FixSafety
from doctor.core.model import CheckResult, Scope, Status
from doctor.core.safetext import safe

#: Status filter values, in the order the ``f`` key cycles through them.
STATUS_FILTERS: tuple[str, ...] = ("all", "problems", "fail", "warn", "error", "skip", "ok")
#: Scope filter values, in the order the ``s`` key cycles through them.
SCOPE_FILTERS: tuple[str, ...] = ("all", "node", "cluster")
PROBLEMS = frozenset({Status.FAIL, Status.WARN, Status.ERROR})

#: The typed confirmation an unsafe fix accepts besides the check id.
CONFIRM_WORD = "yes"


def printable(text: str) -> str:
    """``text`` with control characters and escape sequences shown as text (``\\x1b``):
    facts come from broken nodes and other people's pods, and must not redraw the
    operator's terminal (:func:`doctor.core.safetext.safe`)."""
    return safe(text)


BUNDLE_REASON = "fixes are disabled on a bundle: a bundle is a copy of a node, not the node"


@dataclass(frozen=True)
class RowView:
    """One row of the checks table: the check, its last result and what is happening now."""

    check_id: str
    title: str
    scope: Scope
    result: CheckResult | None
    #: "waiting" (target still opening), "running", "applying", or None (result is current).
    state: str | None = None


#: Table order: what is broken first, then what could not decide, then the rest.
_ROW_ORDER = {Status.FAIL: 0, Status.WARN: 1, Status.ERROR: 2, Status.SKIP: 4, Status.OK: 5}


def problems_first(rows: Sequence[RowView]) -> list[RowView]:
    """Failing checks first (a root cause other findings name before the checks it
    explains), then warnings, errors, unfinished ones, skips and oks; the registry's order
    within each (the sort is stable), as ``kdoctor check`` prints them."""
    roots = {f.caused_by for r in rows if r.result for f in r.result.findings if f.caused_by}

    def key(row: RowView) -> tuple[int, bool]:
        rank = _ROW_ORDER[row.result.status] if row.result else 3
        return rank, row.check_id not in roots

    return sorted(rows, key=key)


def next_value(values: Sequence[str], current: str) -> str:
    """The value after ``current`` (wrapping), for keys that cycle a filter."""
    try:
        return values[(values.index(current) + 1) % len(values)]
    except ValueError:
        return values[0]


def status_matches(status: Status | None, status_filter: str) -> bool:
    """Whether a row with ``status`` (None: not finished yet) passes the status filter."""
    if status_filter == "all":
        return True
    if status is None:
        return False
    if status_filter == "problems":
        return status in PROBLEMS
    return status.value == status_filter


def searchable_text(check_id: str, title: str, result: CheckResult | None) -> str:
    """Everything a search matches against, lower-cased."""
    parts = [check_id, title]
    if result is not None:
        parts.append(result.summary)
        for finding in result.findings:
            parts.append(finding.message)
            if finding.resource:
                parts.append(finding.resource)
        if result.fix is not None:
            parts.append(result.fix.title)
    return "\n".join(parts).lower()


def row_matches(
    check_id: str,
    title: str,
    scope: Scope,
    result: CheckResult | None,
    status_filter: str,
    scope_filter: str,
    query: str,
) -> bool:
    """Whether a check's row is shown under the current filters and search."""
    if scope_filter != "all" and scope.value != scope_filter:
        return False
    if not status_matches(result.status if result else None, status_filter):
        return False
    words = query.lower().split()
    text = searchable_text(check_id, title, result)
    return all(word in text for word in words)


class LineKind(enum.StrEnum):
    """How a plan line is coloured."""

    COMMAND = "command"  # a command kdoctor runs (or a manual one)
    COMMENT = "comment"  # "# ..." notes, rollback remarks
    FILE = "file"  # "--- a" / "+++ b" headers, "write /path:"
    HUNK = "hunk"  # "@@ -1,3 +1,4 @@"
    ADDED = "added"
    REMOVED = "removed"
    CONTEXT = "context"  # unchanged diff line


def classify_plan(lines: Iterable[str]) -> list[tuple[str, LineKind]]:
    """Tell diff lines (only inside a diff: after its ``---``/``+++`` header) from commands.

    A command may well start with ``-`` or ``+`` outside a diff, so only lines that follow a
    diff header are coloured as added/removed.
    """
    out: list[tuple[str, LineKind]] = []
    in_diff = False
    for line in lines:
        if line.startswith("--- ") or line.startswith("+++ "):
            in_diff = True
            out.append((line, LineKind.FILE))
        elif in_diff and line.startswith("@@"):
            out.append((line, LineKind.HUNK))
        elif in_diff and line.startswith("+"):
            out.append((line, LineKind.ADDED))
        elif in_diff and line.startswith("-"):
            out.append((line, LineKind.REMOVED))
        elif in_diff and (line.startswith(" ") or line.startswith("\\") or line == ""):
            out.append((line, LineKind.CONTEXT))
        else:
            in_diff = False
            stripped = line.lstrip()
            if stripped.startswith("#"):
                out.append((line, LineKind.COMMENT))
            elif stripped.startswith("write ") and stripped.endswith(":"):
                out.append((line, LineKind.FILE))
            else:
                out.append((line, LineKind.COMMAND))
    return out


def evidence_text(value: Any) -> str:
    """One evidence value for display, the way ``check -v`` shows it: lists one item per
    line, mappings as indented ``key: value`` lines, never JSON."""
    from doctor.ui.text import evidence_lines

    if isinstance(value, str):
        return safe(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(safe(v, single_line=True) for v in value) if value else "(none)"
    if value is None:
        return "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict):
        return "\n".join(evidence_lines(value)) or "(none)"
    lines = list(evidence_lines({"": value}))
    return "\n".join(line[2:] for line in lines[1:]) or "(none)"


def evidence_rows(evidence: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, value) pairs for display (matrices, drawn as tables, are not among them)."""
    from doctor.ui.text import is_matrix

    return [(str(k), evidence_text(v)) for k, v in evidence.items() if not is_matrix(v)]


def fix_blocked_reason(
    result: CheckResult | None, on_bundle: bool, applying: str | None
) -> str | None:
    """Why the fix of ``result`` cannot be applied from the TUI now (None: it can)."""
    if result is None:
        return "the check has not finished yet"
    if result.fix is None:
        if result.status in (Status.OK, Status.SKIP):
            return f"nothing to fix: the check reports {result.status.value}"
        return "this check offers no fix for what it found"
    if result.fix.safety is FixSafety.MANUAL:
        return "manual fix: kdoctor never runs these commands; run them yourself"
    if on_bundle:
        return BUNDLE_REASON
    if applying is not None:
        return f"the fix of {applying} is being applied; wait for it to finish"
    return None


def confirmation_matches(typed: str, check_id: str) -> bool:
    """The typed confirmation of an unsafe fix: the check id or ``yes``, exactly."""
    return typed.strip() in (check_id, CONFIRM_WORD)


def format_duration(ms: int) -> str:
    if ms < 1000:
        return f"{ms} ms"
    return f"{ms / 1000:.1f} s"


def tally(results: Iterable[CheckResult]) -> dict[Status, int]:
    counts = dict.fromkeys(Status, 0)
    for result in results:
        counts[result.status] += 1
    return counts
