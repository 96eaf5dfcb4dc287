"""The values every part of kdoctor exchanges: statuses, findings, verdicts and results.

They are frozen so a result cannot be edited after a check produced it; the names and
string values are the public contract (``shared/spec/checks-and-report-v1.md``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from doctor.core.fix import Fix


class Status(enum.StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    SKIP = "skip"
    ERROR = "error"

    @property
    def glyph(self) -> str:
        """The flutter-doctor style mark shown in text output."""
        return {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-", "error": "?"}[self.value]


#: Precedence for the run's overall status and the exit code: fail > error > warn > ok.
STATUS_RANK = {Status.SKIP: 0, Status.OK: 0, Status.WARN: 1, Status.ERROR: 2, Status.FAIL: 3}

#: Nagios-style exit codes of ``kdoctor check``.
EXIT_CODES = {Status.OK: 0, Status.SKIP: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 3}


class Scope(enum.StrEnum):
    NODE = "node"
    CLUSTER = "cluster"


class Severity(enum.StrEnum):
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Finding:
    """One problem a check found, with what proves it and what to do about it."""

    severity: Severity
    message: str
    resource: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    hint: str | None = None
    #: Set when this finding is a consequence of another check's root cause.
    caused_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "severity": self.severity.value,
            "message": self.message,
            "resource": self.resource,
            "evidence": self.evidence,
        }
        if self.hint:
            data["hint"] = self.hint
        if self.caused_by:
            data["caused_by"] = self.caused_by
        return data


@dataclass(frozen=True)
class Verdict:
    """What a check decided. The runner turns it into a :class:`CheckResult`."""

    status: Status
    summary: str
    findings: tuple[Finding, ...] = ()
    fix: Fix | None = None
    #: What the check measured, whatever the status (e.g. a probe matrix): shown under the
    #: summary and carried in the report's check object even when there is no finding.
    evidence: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def ok(cls, summary: str) -> Verdict:
        return cls(Status.OK, summary)

    @classmethod
    def skip(cls, reason: str) -> Verdict:
        return cls(Status.SKIP, reason)

    @classmethod
    def error(cls, reason: str) -> Verdict:
        return cls(Status.ERROR, reason)

    @classmethod
    def from_findings(
        cls,
        findings: list[Finding],
        summary: str,
        ok_summary: str,
        fix: Fix | None = None,
        evidence: dict[str, Any] | None = None,
    ) -> Verdict:
        """Status is the worst finding's severity; ok when there are none."""
        if not findings:
            return cls(Status.OK, ok_summary, evidence=evidence or {})
        worst = Status.FAIL if any(f.severity is Severity.FAIL for f in findings) else Status.WARN
        return cls(worst, summary, tuple(findings), fix, evidence or {})


@dataclass(frozen=True)
class CheckResult:
    id: str
    title: str
    scope: Scope
    status: Status
    summary: str
    findings: tuple[Finding, ...] = ()
    fix: Fix | None = None
    duration_ms: int = 0
    #: The verdict's check-level evidence (see Verdict.evidence); omitted from JSON if empty.
    evidence: dict[str, Any] = field(default_factory=dict)
    #: The node a node check ran for in a fleet report (``kdoctor fleet``); None otherwise.
    node: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "scope": self.scope.value,
            "status": self.status.value,
            "summary": self.summary,
            "findings": [f.to_json() for f in self.findings],
            "fix": self.fix.to_json() if self.fix else None,
            "duration_ms": self.duration_ms,
        }
        if self.evidence:
            data["evidence"] = self.evidence
        if self.node is not None:
            data["node"] = self.node
        return data


def worst_status(statuses: list[Status]) -> Status:
    """The run's status: fail > error > warn > ok (skip counts as ok)."""
    worst = Status.OK
    for status in statuses:
        if STATUS_RANK[status] > STATUS_RANK[worst]:
            worst = status
    return worst
