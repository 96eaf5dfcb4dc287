"""The text report of a fleet run: a node × check table (worst nodes first), the cluster
checks once, then the details of everything that is not ok, fails first."""

from __future__ import annotations

from collections import defaultdict

from rich.console import Console
from rich.table import Table
from rich.text import Text

from doctor.core.model import STATUS_RANK, CheckResult, Status
from doctor.core.report import Report
from doctor.core.safetext import safe
from doctor.ui.text import STYLE, print_result


def _rank(status: Status) -> int:
    """Sort key: fail, error, warn, ok, skip."""
    return {Status.FAIL: 0, Status.ERROR: 1, Status.WARN: 2, Status.OK: 3, Status.SKIP: 4}[status]


def _worst(results: list[CheckResult]) -> Status:
    """A row's colour: its worst result (ok over skip when nothing is worse)."""
    if not results:
        return Status.SKIP
    return max((r.status for r in results), key=lambda s: (STATUS_RANK[s], s is Status.OK))


def _short(check_id: str) -> str:
    return check_id.removeprefix("node.")


def render_fleet_text(
    report: Report, console: Console, verbose: bool = False, node_filter: str | None = None
) -> None:
    target = report.target
    nodes = list(target.fleet_nodes or ())
    where = f"{len(nodes)} nodes"
    if target.bundle:
        where += f", bundle {safe(target.bundle, single_line=True)}"
    if target.cluster:
        c = target.cluster
        where += ", cluster " + safe(
            f"{c.context or '?'} ({c.server or '?'}, {c.version or '?'})", single_line=True
        )
    console.print(Text(f"kdoctor fleet: {where}", style="bold"))
    by_node: dict[str, list[CheckResult]] = defaultdict(list)
    cluster_results: list[CheckResult] = []
    for r in report.results:
        if r.node is not None:
            by_node[r.node].append(r)
        else:
            cluster_results.append(r)
    if node_filter:
        nodes = [n for n in nodes if node_filter in n]
    check_ids = sorted({r.id for rs in by_node.values() for r in rs})
    if check_ids and nodes:
        table = Table(title=None, show_edge=False, pad_edge=False, header_style="bold")
        table.add_column("node", no_wrap=True)
        for check_id in check_ids:
            table.add_column(_short(check_id), justify="center")
        ordered = sorted(nodes, key=lambda n: (_rank(_worst(by_node.get(n, []))), n))
        for node in ordered:
            style = STYLE[_worst(by_node.get(node, []))]
            cells: list[Text | str] = [Text(safe(node, single_line=True), style=style)]
            results = {r.id: r for r in by_node.get(node, [])}
            for check_id in check_ids:
                cell = results.get(check_id)
                cells.append(Text(cell.status.glyph, style=STYLE[cell.status]) if cell else "")
            table.add_row(*cells)
        console.print()
        console.print(table)
    unreported = target.unreported or {}
    for node, reason in sorted(unreported.items()):
        if not node_filter or node_filter in node:
            why = f"{safe(node, single_line=True)}: no report from its agent: {safe(reason)}"
            console.print(Text(f"  ? {why}", style="magenta"))
    if cluster_results:
        console.print()
        console.print(Text("Cluster (checked once)", style="bold"))
        for r in sorted(cluster_results, key=lambda r: _rank(r.status)):
            print_result(console, r, verbose)
    problems = [
        r
        for node in nodes
        for r in by_node.get(node, [])
        if r.status in (Status.FAIL, Status.ERROR, Status.WARN) and node not in unreported
    ]
    if problems:
        console.print()
        console.print(Text("Nodes", style="bold"))
        for r in sorted(problems, key=lambda r: (_rank(r.status), r.id, r.node or "")):
            console.print(Text(f"{safe(r.node or '', single_line=True)}:", style="bold"))
            print_result(console, r, verbose)
    console.print()
    counts = report.summary()
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    bad_nodes = sorted({r.node for r in report.results if r.node and r.status in
                        (Status.FAIL, Status.ERROR)})  # fmt: skip
    if counts["fail"] or counts["error"] or counts["warn"]:
        line = f"kdoctor found issues ({tally})"
        if bad_nodes:
            line += f" on {len(bad_nodes)} of {len(nodes)} nodes"
        console.print(Text.assemble(("! ", "bold yellow"), line + "."))
        roots = sorted({f.caused_by for r in report.results for f in r.findings if f.caused_by})
        for root in roots:
            console.print(Text.assemble(("  root cause: ", "bold"), (root, "bold red")))
    else:
        console.print(Text.assemble(("• ", "bold green"), f"No issues found! ({tally})"))
