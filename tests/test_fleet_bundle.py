"""A fleet bundle read back anywhere (no root): node checks per node, cluster checks once, and
cluster.node-ports judged from what the agents measured.

fixtures/bundles/fleet-lab-reject was written by ``kdoctor fleet --collect`` on the test
server's node farm (the lab's cluster with kubernetes-0 REJECTing 6443 in real netfilter)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from checks.cluster_node_ports import NodePorts
from doctor.core.context import CheckContext
from doctor.core.model import CheckResult, Finding, Scope, Severity, Status
from doctor.core.runner import run_one
from doctor.core.sources import FleetFacts
from doctor.facts.kube import open_bundle_cluster
from doctor.facts.node import BundleNodeFacts
from tests.conftest import BUNDLES, kdoctor, validate_report

FLEET = BUNDLES / "fleet-lab-reject"
NODES = ["kubernetes-0", "kubernetes-1", "kubernetes-2"]


def _check(bundle: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = kdoctor("check", "--bundle", str(bundle), "--format", "json", *args)
    return proc.returncode, validate_report(proc.stdout)


def test_node_checks_per_node_and_the_cluster_once() -> None:
    code, report = _check(FLEET)
    assert code == 2
    assert report["target"]["fleet"]["nodes"] == NODES
    node_rows = [c for c in report["checks"] if c["scope"] == "node"]
    ids = {c["id"] for c in node_rows}
    assert len(node_rows) == len(ids) * len(NODES)
    assert all(c.get("node") in NODES for c in node_rows)
    cluster_rows = [c for c in report["checks"] if c["scope"] == "cluster"]
    assert len(cluster_rows) == len({c["id"] for c in cluster_rows})  # each once
    assert all("node" not in c for c in cluster_rows)
    (ports,) = [c for c in cluster_rows if c["id"] == "cluster.node-ports"]
    (finding,) = ports["findings"]
    assert finding["evidence"]["from"] == ["kubernetes-1", "kubernetes-2"]
    assert (
        "kubernetes-0's own rule: `-A INPUT -p tcp -m tcp --dport 6443 -j REJECT"
        in (finding["message"])
    )


def test_only_one_check_and_text_table() -> None:
    code, report = _check(FLEET, "--only", "node.iptables.reject")
    assert {c.get("node"): c["status"] for c in report["checks"]} == {
        "kubernetes-0": "fail", "kubernetes-1": "ok", "kubernetes-2": "ok",
    }  # fmt: skip
    assert code == 2
    proc = kdoctor("check", "--bundle", str(FLEET), "--only", "node.iptables.reject")
    rows = [line for line in proc.stdout.splitlines() if "│" in line]
    assert [r.split()[0] for r in rows] == NODES  # kubernetes-0 (the fail) first
    assert "kubernetes-0:" in proc.stdout  # its details follow the table
    assert "iptables.reject" in proc.stdout


def test_a_node_missing_from_the_bundle_is_an_error_row(tmp_path: Path) -> None:
    bundle = tmp_path / "fleet"
    shutil.copytree(FLEET, bundle)
    shutil.rmtree(bundle / "nodes" / "kubernetes-2")
    code, report = _check(bundle, "--scope", "node")
    rows = [c for c in report["checks"] if c.get("node") == "kubernetes-2"]
    assert rows and all(c["status"] == "error" for c in rows)
    assert "the bundle has no nodes/kubernetes-2/" in rows[0]["summary"]
    assert code == 2


def test_a_damaged_reachability_file_is_named(tmp_path: Path) -> None:
    bundle = tmp_path / "fleet"
    shutil.copytree(FLEET, bundle)
    (bundle / "nodes/kubernetes-1/commands/reachability.json").write_text("[{not json")
    _code, report = _check(bundle, "--only", "cluster.node-ports")
    (ports,) = report["checks"]
    assert ports["status"] == "fail"  # kubernetes-2 still measured the REJECT
    assert ports["findings"][0]["evidence"]["from"] == ["kubernetes-2"]
    assert "kubernetes-1" in ports["evidence"]["not_measured_from"]


def _ctx(fleet: FleetFacts | None) -> CheckContext:
    return CheckContext(
        node=BundleNodeFacts(FLEET), cluster=open_bundle_cluster(FLEET), fleet=fleet
    )


def _facts(entries: dict[str, list[dict[str, Any]]], **kw: Any) -> FleetFacts:
    nodes = tuple(sorted({*entries, *kw.get("unreported", {})}))
    return FleetFacts(
        nodes=nodes,
        reachability={n: [e for e in es if e["result"] != "open"] for n, es in entries.items()},
        measured={n: len(es) for n, es in entries.items()},
        unreported=kw.get("unreported", {}),
        node_results=kw.get("node_results", {}),
    )


def _entry(to: str, port: int, result: str) -> dict[str, Any]:
    return {"to": to, "ip": "10.0.0.1", "port": port, "proto": "tcp", "result": result, "ms": 1}


def test_outside_a_fleet_it_skips() -> None:
    result = run_one(NodePorts, _ctx(None))
    assert result.status is Status.SKIP
    assert "kdoctor fleet" in result.summary


def test_no_agent_reported_is_an_error() -> None:
    facts = _facts({}, unreported={"a": "image pull", "b": "image pull"})
    result = run_one(NodePorts, _ctx(facts))
    assert result.status is Status.ERROR
    assert "a: image pull" in result.summary


def test_refused_without_a_rule_points_at_the_service() -> None:
    facts = _facts({"a": [_entry("b", 10250, "refused")], "b": [_entry("a", 10250, "open")]})
    result = run_one(NodePorts, _ctx(facts))
    assert result.status is Status.FAIL
    (finding,) = result.findings
    assert "nothing listens on b:10250" in (finding.hint or "")
    assert finding.caused_by is None


def test_the_target_rule_is_named_and_marked_as_the_cause() -> None:
    rule = "-A INPUT -j DROP"
    own = CheckResult(
        "node.iptables.reject", "t", Scope.NODE, Status.FAIL, "1 rule",
        (Finding(Severity.FAIL, "drops everything", rule),), node="b",
    )  # fmt: skip
    facts = _facts(
        {"a": [_entry("b", 6443, "timeout")], "b": [_entry("a", 6443, "open")]},
        node_results={"b": [own]},
    )
    (finding,) = run_one(NodePorts, _ctx(facts)).findings
    assert f"b's own rule: `{rule}`" in finding.message
    assert finding.caused_by == "node.iptables.reject"
    assert "DROP" in finding.message


def test_all_open_is_ok_with_the_count() -> None:
    facts = _facts({"a": [_entry("b", 10250, "open")], "b": [_entry("a", 10250, "open")]})
    result = run_one(NodePorts, _ctx(facts))
    assert result.status is Status.OK
    assert "all 2 node-to-node ports open" in result.summary


@pytest.mark.parametrize("field", ["nodes"])
def test_a_fleet_manifest_without_nodes_is_a_usage_error(tmp_path: Path, field: str) -> None:
    bundle = tmp_path / "fleet"
    shutil.copytree(FLEET, bundle)
    doc = json.loads((bundle / "kdoctor-bundle.json").read_text())
    del doc[field]
    (bundle / "kdoctor-bundle.json").write_text(json.dumps(doc))
    proc = kdoctor("check", "--bundle", str(bundle))
    assert proc.returncode == 3
    assert "a fleet bundle lists its nodes" in proc.stderr


def test_the_tui_shows_the_fleet_with_a_node_column_and_filter() -> None:
    import asyncio

    from textual.widgets import DataTable, Static

    from doctor.fleet.command import fleet_bundle_report
    from doctor.session import select_checks
    from doctor.ui.cli import build_parser
    from doctor.ui.tui.fleet import FleetApp

    args = build_parser().parse_args(["tui", "--bundle", str(FLEET)])
    report = fleet_bundle_report(args, select_checks(args))
    app = FleetApp(report)

    def shown() -> list[tuple[str, str, str]]:
        table = app.query_one("#rows", DataTable)
        rows = [table.get_row_at(i) for i in range(table.row_count)]
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    async def drive() -> None:
        async with app.run_test(size=(140, 40)) as pilot:
            await pilot.pause()
            rows = shown()
            assert len(rows) == len(report.results)
            assert rows[0][0].endswith("fail")  # worst first
            assert {r[1] for r in rows} == {*NODES, "(cluster)"}
            await pilot.press("slash", *"kubernetes-0")
            await pilot.pause()
            rows = shown()
            assert rows and {r[1] for r in rows} == {"kubernetes-0"}
            await pilot.press("enter")  # back to the table
            await pilot.press("f")  # problems only
            await pilot.pause()
            assert [(r[1], r[2]) for r in shown()] == [("kubernetes-0", "node.iptables.reject")]
            await pilot.press("enter")
            await pilot.pause()
            text = str(app.query_one("#details", Static).render())
            assert "--dport 6443 -j REJECT" in text
            await pilot.press("escape")
            await pilot.pause()
            assert len(shown()) == len(report.results)

    asyncio.run(drive())
