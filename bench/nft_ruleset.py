"""How long node.iptables.reject's nft part takes on a 50,000-rule native ruleset.

Builds `nft -j list ruleset` output of one inet table whose input chain holds 50,000
port accepts (the shape of a large firewalld/nftables.conf allow list) and a final reject,
then times parsing and the evaluation of every probe the check uses. Prints figures; it
asserts nothing (performance is measured here, not in timed tests).

    .venv/bin/python bench/nft_ruleset.py [RULES]
"""

from __future__ import annotations

import ipaddress
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from doctor.analysis.nft_eval import find_nft_blockers
from doctor.parse.nft import parse_nft_ruleset

PODS = ipaddress.IPv4Network("10.32.0.0/12")


def ruleset_json(rules: int) -> str:
    items: list[dict[str, Any]] = [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "filter", "handle": 1}},
        {
            "chain": {
                "family": "inet",
                "table": "filter",
                "name": "input",
                "handle": 1,
                "type": "filter",
                "hook": "input",
                "prio": 0,
                "policy": "accept",
            }
        },
        {
            "chain": {
                "family": "inet",
                "table": "filter",
                "name": "forward",
                "handle": 2,
                "type": "filter",
                "hook": "forward",
                "prio": 0,
                "policy": "accept",
            }
        },
    ]
    for n in range(rules):
        match = {
            "op": "==",
            "left": {"payload": {"protocol": "tcp", "field": "dport"}},
            "right": 20000 + n % 40000,
        }
        items.append(
            {
                "rule": {
                    "family": "inet",
                    "table": "filter",
                    "chain": "input",
                    "handle": 10 + n,
                    "expr": [{"match": match}, {"accept": None}],
                }
            }
        )
    items.append(
        {
            "rule": {
                "family": "inet",
                "table": "filter",
                "chain": "input",
                "handle": 10 + rules,
                "expr": [{"reject": None}],
            }
        }
    )
    return json.dumps({"nftables": items})


def main() -> None:
    from checks.node_iptables_reject import PodNetwork, build_probes

    rules = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    text = ruleset_json(rules)
    probes = build_probes(PodNetwork(PODS, "bench", ("weave",)))
    start = time.perf_counter()
    json.loads(text)
    decoded = time.perf_counter()
    print(f"json.loads alone (the floor): {decoded - start:.3f} s")
    start = time.perf_counter()
    ruleset = parse_nft_ruleset(text, "bench")
    parsed = time.perf_counter()
    blockers, unjudged = find_nft_blockers(ruleset, probes, PODS, managed=lambda t: False)
    done = time.perf_counter()
    print(f"rules: {ruleset.rule_count()}  json: {len(text) / 1e6:.1f} MB  probes: {len(probes)}")
    print(
        f"parse: {parsed - start:.3f} s  evaluate: {done - parsed:.3f} s  "
        f"total: {done - start:.3f} s"
    )
    print(f"blockers: {len(blockers)}  unjudged: {len(unjudged)}")
    del ruleset, blockers, unjudged
    whole_check(text)


def whole_check(text: str) -> None:
    """The check as `kdoctor check --bundle` runs it: read, parse, evaluate, findings, plan."""
    from checks.node_iptables_reject import IptablesReject
    from doctor.core.context import CheckContext
    from doctor.core.runner import run_one
    from doctor.facts.cluster import NoCluster
    from doctor.facts.node import BundleNodeFacts

    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp)
        (bundle / "commands").mkdir()
        (bundle / "commands" / "nft-ruleset.json").write_text(text)
        (bundle / "kdoctor-bundle.json").write_text('{"format": "kdoctor-bundle", "version": 1}')
        ctx = CheckContext(node=BundleNodeFacts(bundle), cluster=NoCluster("bench"))
        start = time.perf_counter()
        result = run_one(IptablesReject, ctx)
        done = time.perf_counter()
    print(f"node.iptables.reject on the bundle: {done - start:.3f} s, status {result.status.value}")


if __name__ == "__main__":
    main()
