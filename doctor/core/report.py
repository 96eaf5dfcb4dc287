"""The machine-readable outputs: the JSON report v1 and the Prometheus textfile."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

from doctor import __version__
from doctor.core.model import CheckResult, Status, worst_status
from doctor.core.safetext import prometheus_label
from doctor.core.sources import ClusterTarget

SCHEMA_ID = "kdoctor/report/v1"
STATUSES = [s.value for s in Status]


@dataclass(frozen=True)
class Target:
    node: str | None
    bundle: str | None
    cluster: ClusterTarget | None
    #: Fleet reports: every node examined, and why some nodes' agents did not report.
    fleet_nodes: tuple[str, ...] | None = None
    unreported: dict[str, str] | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "node": self.node,
            "bundle": self.bundle,
            "cluster": self.cluster.to_json() if self.cluster else None,
        }
        if self.fleet_nodes is not None:
            data["fleet"] = {"nodes": list(self.fleet_nodes), "unreported": self.unreported or {}}
        return data


def live_node_name() -> str:
    return socket.gethostname()


@dataclass(frozen=True)
class Report:
    target: Target
    results: list[CheckResult]
    generated_at: datetime

    @property
    def decided(self) -> bool:
        """At least one check reached a verdict (a run of skips decided nothing)."""
        return any(r.status is not Status.SKIP for r in self.results)

    @property
    def status(self) -> Status:
        """The worst status; ``error`` (UNKNOWN, exit 3) when every check skipped: a run that
        decided nothing must never read as green to a monitor."""
        if not self.decided:
            return Status.ERROR
        return worst_status([r.status for r in self.results])

    def summary(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for result in self.results:
            counts[result.status.value] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        overall = self.status
        return {
            "schema": SCHEMA_ID,
            "kdoctor_version": __version__,
            "generated_at": self.generated_at.isoformat().replace("+00:00", "Z"),
            "target": self.target.to_json(),
            "status": overall.value if overall is not Status.SKIP else "ok",
            "summary": self.summary(),
            "checks": [r.to_json() for r in self.results],
        }


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@cache
def report_schema() -> dict[str, Any]:
    """The JSON Schema shipped with the package (doctor/schemas/report-v1.json)."""
    text = resources.files("doctor").joinpath("schemas/report-v1.json").read_text()
    schema: dict[str, Any] = json.loads(text)
    return schema


def render_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, sort_keys=False) + "\n"


def _label(value: str) -> str:
    """A label value escaped per the exposition format (``\\``, ``\"``, ``\n``; other
    control characters shown visibly): a check or node name cannot break a line."""
    return prometheus_label(value)


def _node(r: CheckResult) -> str:
    """The ``node`` label of a node check in a fleet report (none otherwise)."""
    return f',node="{_label(r.node)}"' if r.node is not None else ""


def render_prometheus(report: Report) -> str:
    """node_exporter textfile: state sets like kube-state-metrics' phase metrics."""
    lines = [
        "# HELP kdoctor_check_status Current status of a kdoctor check (1 for the current one).",
        "# TYPE kdoctor_check_status gauge",
    ]
    for r in report.results:
        for status in STATUSES:
            value = 1 if r.status.value == status else 0
            lines.append(
                f'kdoctor_check_status{{check="{_label(r.id)}"{_node(r)},scope="{r.scope.value}",'
                f'status="{status}"}} {value}'
            )
    lines += [
        "# HELP kdoctor_check_findings Number of findings of a check, by severity.",
        "# TYPE kdoctor_check_findings gauge",
    ]
    for r in report.results:
        for severity in ("warn", "fail"):
            count = sum(1 for f in r.findings if f.severity.value == severity)
            lines.append(
                f'kdoctor_check_findings{{check="{_label(r.id)}"{_node(r)},severity="{severity}"}} '
                f"{count}"
            )
    lines += [
        "# HELP kdoctor_check_duration_seconds How long the check took.",
        "# TYPE kdoctor_check_duration_seconds gauge",
    ]
    for r in report.results:
        lines.append(
            f'kdoctor_check_duration_seconds{{check="{_label(r.id)}"{_node(r)}}} '
            f"{r.duration_ms / 1000:g}"
        )
    lines += [
        "# HELP kdoctor_run_timestamp_seconds When the run finished (Unix time).",
        "# TYPE kdoctor_run_timestamp_seconds gauge",
        f"kdoctor_run_timestamp_seconds {report.generated_at.timestamp():.3f}",
        "# HELP kdoctor_run_status Overall status of the run (1 for the current one).",
        "# TYPE kdoctor_run_status gauge",
    ]
    overall = report.status.value if report.status is not Status.SKIP else "ok"
    for status in ("ok", "warn", "fail", "error"):
        lines.append(f'kdoctor_run_status{{status="{status}"}} {1 if overall == status else 0}')
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Temporary file + rename in the same directory: a reader never sees half a report."""
    from doctor.core.files import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text, 0o644)
