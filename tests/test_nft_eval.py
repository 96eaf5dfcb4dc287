"""The nft -j parser and the native nftables evaluator, on rule sets nft itself printed.

``fixtures/nftables/*.json`` are what Debian's nft printed (``nft -j list ruleset``) after
loading the ``*.nft``/``*.conf`` next to them (``fixtures/nftables/regenerate.sh``); the
live tests in ``test_nft_live.py`` load the same sources into a namespace and ask the kernel.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from doctor.analysis.iptables_eval import Fate, Probe
from doctor.analysis.nft_eval import (
    NftBlocker,
    Tri,
    find_nft_blockers,
    hook_chains,
    walk_base_chain,
)
from doctor.parse.nft import NftParseError, NftRuleset, parse_nft_ruleset, parse_priority
from tests.conftest import FIXTURES

NFT = FIXTURES / "nftables"
PODS = ipaddress.IPv4Network("10.32.0.0/12")
KUBELET = Probe("tcp/10250 kubelet", "INPUT", "tcp", 10250)
API = Probe("tcp/6443 API server", "INPUT", "tcp", 6443)
POD_OUT = Probe(
    "forwarded pod traffic -i weave", "FORWARD", "tcp", 80, in_iface="weave", src_in_pods=True
)
POD_IN = Probe(
    "forwarded pod traffic -o weave", "FORWARD", "tcp", 80, out_iface="weave", dst_in_pods=True
)
PROBES = [KUBELET, API, POD_OUT, POD_IN]


def load(name: str) -> NftRuleset:
    return parse_nft_ruleset((NFT / name).read_text(), f"fixtures/nftables/{name}")


def ruleset_of(*items: dict[str, Any]) -> NftRuleset:
    """A ruleset from JSON objects, as nft -j would list them (table first)."""
    return parse_nft_ruleset(json.dumps({"nftables": list(items)}), "test")


def table(family: str = "inet", name: str = "t") -> dict[str, Any]:
    return {"table": {"family": family, "name": name, "handle": 1}}


def chain(
    name: str,
    hook: str | None = "input",
    prio: Any = 0,
    policy: str = "accept",
    family: str = "inet",
    tname: str = "t",
) -> dict[str, Any]:
    body: dict[str, Any] = {"family": family, "table": tname, "name": name, "handle": 1}
    if hook:
        body.update(type="filter", hook=hook, prio=prio, policy=policy)
    return {"chain": body}


def rule(
    chain_name: str, handle: int, *expr: Any, family: str = "inet", tname: str = "t"
) -> dict[str, Any]:
    return {
        "rule": {
            "family": family,
            "table": tname,
            "chain": chain_name,
            "handle": handle,
            "expr": list(expr),
        }
    }


def dport(port: Any, proto: str = "tcp", op: str = "==") -> dict[str, Any]:
    return {
        "match": {
            "op": op,
            "left": {"payload": {"protocol": proto, "field": "dport"}},
            "right": port,
        }
    }


def blockers(rs: NftRuleset, probes: list[Probe] = PROBES) -> list[NftBlocker]:
    found, _ = find_nft_blockers(rs, probes, PODS, managed=lambda t: t.name == "kube-proxy")
    return found


# ---------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------


def test_parses_firewalld_tables_chains_priorities_and_handles() -> None:
    rs = load("firewalld-rhel9.json")
    assert rs.version == "1.0.6"
    fw = rs.tables[("inet", "firewalld")]
    inp = fw.chains["filter_INPUT"]
    assert (inp.type, inp.hook, inp.priority, inp.policy) == ("filter", "input", 10, "accept")
    assert fw.chains["mangle_PREROUTING"].priority == -140
    assert not fw.chains["filter_IN_public"].is_base
    last = inp.rules[-1]
    assert last.text() == "reject with icmpx admin-prohibited"
    assert last.position == len(inp.rules)
    assert [r.handle for r in inp.rules] == sorted(r.handle for r in inp.rules)


def test_parses_kube_proxy_sets_and_maps_with_elements() -> None:
    rs = load("kube-proxy-nftables.json")
    kp = rs.tables[("ip", "kube-proxy")]
    assert ("ip6", "kube-proxy") in rs.tables
    assert kp.sets["cluster-ips"].elements == ["10.96.0.1", "10.96.0.10", "10.96.0.50"]
    assert kp.sets["service-ips"].is_map
    assert kp.sets["firewall-ips"].elements == []
    assert kp.chains["filter-input"].priority == 0


def test_priority_names_follow_nft() -> None:
    assert parse_priority("filter + 10", "inet") == 10
    assert parse_priority("mangle - 5", "ip") == -155
    assert parse_priority("dstnat", "ip") == -100
    assert parse_priority("filter", "bridge") == -200
    assert parse_priority(-110, "ip") == -110
    with pytest.raises(NftParseError):
        parse_priority("sideways", "ip")


def test_empty_output_is_an_empty_ruleset() -> None:
    assert parse_nft_ruleset("", "nft").tables == {}
    assert parse_nft_ruleset('{"nftables": [{"metainfo": {"version": "1.0.6"}}]}', "x").tables == {}


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            "table inet filter {\n}\n",
            "not JSON (expected `nft -j list ruleset` output): Expecting value (line 1 column 1)",
        ),
        ('{"nftables": [{"table": {"family": "inet"', "not JSON"),
        ("[1, 2]", 'JSON without a top-level "nftables" list'),
        (
            '{"nftables": [{"chain": {"family": "inet", "table": "x", "name": "c", "handle": 1}}]}',
            "nftables[0] (chain) names table inet x, not listed",
        ),
        (
            '{"nftables": [{"table": {"family": "inet", "name": "x", "handle": 1}},'
            '{"rule": {"family": "inet", "table": "x", "chain": "c", "handle": 2, "expr": []}}]}',
            "is in chain 'c', not listed",
        ),
        ('{"nftables": [{"table": {"family": "inet", "name": "x"}}]}', "has no 'handle' number"),
        ('{"nftables": ["table"]}', "nftables[0] is not an object with one key"),
    ],
)
def test_bad_input_names_source_and_reason(text: str, reason: str) -> None:
    with pytest.raises(NftParseError) as caught:
        parse_nft_ruleset(text, "commands/nft-ruleset.json")
    assert str(caught.value).startswith("commands/nft-ruleset.json: ")
    assert reason in str(caught.value)


# ---------------------------------------------------------------------------------------
# Evaluator: the kernel's rules for base chains
# ---------------------------------------------------------------------------------------


def test_firewalld_default_rejects_kubernetes_ports_at_filter_input() -> None:
    found = blockers(load("firewalld-rhel9.json"))
    inputs = [b for b in found if b.base.name == "filter_INPUT"]
    assert len(inputs) == 1
    assert (
        inputs[0].verdict is not None
        and inputs[0].verdict.describe() == "reject with icmpx admin-prohibited"
    )
    assert {p.label for p in inputs[0].probes} == {KUBELET.label, API.label}
    assert inputs[0].certain
    forward = {
        (b.certain, p.label) for b in found if b.base.name == "filter_FORWARD" for p in b.probes
    }
    # Out to another node through eth0 the public zone forwards it (intra-zone forwarding),
    # so that block is conditional; into the pods it is certain.
    assert forward == {(False, POD_OUT.label), (True, POD_IN.label)}


def test_firewalld_with_the_ports_opened_blocks_nothing() -> None:
    assert blockers(load("firewalld-rhel9-kubernetes-ports.json")) == []


def test_kube_proxy_nftables_mode_blocks_nothing_a_node_needs() -> None:
    rs = load("kube-proxy-nftables.json")
    assert blockers(rs) == []
    # Even judged as if nobody owned it: its vmaps and sets are fully evaluated.
    found, unjudged = find_nft_blockers(rs, PROBES, PODS, managed=lambda t: False)
    assert found == [] and unjudged == []


def test_debian_default_nftables_conf_accepts_and_workstation_drops() -> None:
    assert blockers(load("debian12-nftables.json")) == []
    found = blockers(load("debian-workstation.json"))
    assert [(b.chain, b.verdict.kind if b.verdict else None) for b in found] == [("input", "drop")]
    assert {p.label for p in found[0].probes} == {KUBELET.label, API.label}


def test_accept_ends_only_its_chain_a_later_base_chain_still_rejects() -> None:
    rs = ruleset_of(
        table(),
        chain("early", prio=-10),
        chain("late", prio=10),
        rule("early", 2, {"accept": None}),
        rule("late", 3, dport(10250), {"reject": None}),
    )
    order = [c.name for _, c in hook_chains(rs, "input")]
    assert order == ["early", "late"]
    found = blockers(rs, [KUBELET, API])
    assert [(b.chain, b.rule.handle if b.rule else None) for b in found] == [("late", 3)]
    assert [p.label for p in found[0].probes] == [KUBELET.label]


def test_drop_anywhere_is_final_and_the_next_round_finds_what_hides_behind() -> None:
    rs = ruleset_of(
        table(),
        chain("first", prio=-5),
        chain("second", prio=5),
        rule("first", 2, dport(10250), {"drop": None}),
        rule("second", 3, dport({"set": [10250, 6443]}), {"reject": {"type": "tcp reset"}}),
        rule("second", 4, dport({"range": [10000, 11000]}), {"drop": None}),
    )
    found = blockers(rs, [KUBELET])
    assert [(b.chain, b.rule.handle if b.rule else 0, b.round) for b in found] == [
        ("first", 2, 1),
        ("second", 3, 1),
        ("second", 4, 2),
    ]
    assert found[1].hidden_behind == [found[0]]


def test_jump_return_goto_and_policy() -> None:
    rs = ruleset_of(
        table(),
        chain("in", policy="drop"),
        chain("sub", hook=None),
        chain("zone", hook=None),
        rule("in", 2, {"jump": {"target": "sub"}}),
        rule("in", 3, {"goto": {"target": "zone"}}),
        rule("in", 4, {"accept": None}),
        rule("sub", 5, dport(10250), {"return": None}),
        rule("sub", 6, dport(6443), {"accept": None}),
        rule("zone", 7, dport(22), {"accept": None}),
    )
    api = walk_base_chain(
        rs.tables[("inet", "t")].chains["in"], rs.tables[("inet", "t")], API, PODS
    )
    assert api.fate is Fate.ACCEPTED and api.rule is not None and api.rule.handle == 6
    kubelet = walk_base_chain(
        rs.tables[("inet", "t")].chains["in"], rs.tables[("inet", "t")], KUBELET, PODS
    )
    # goto zone: falling off zone's end returns to in's caller, i.e. the base chain ends: policy.
    assert kubelet.fate is Fate.BLOCKED and kubelet.rule is None
    assert kubelet.verdict is not None and kubelet.verdict.kind == "drop"


def test_verdict_maps_are_evaluated_when_their_key_is_known() -> None:
    rs = ruleset_of(
        table(),
        chain("in"),
        rule(
            "in",
            2,
            {
                "vmap": {
                    "key": {"payload": {"protocol": "tcp", "field": "dport"}},
                    "data": {"set": [[22, {"accept": None}], [10250, {"drop": None}]]},
                }
            },
        ),
    )
    found = blockers(rs, [KUBELET, API])
    assert [(b.rule.handle if b.rule else 0, [p.label for p in b.probes]) for b in found] == [
        (2, [KUBELET.label])
    ]


def test_ip6_and_other_protocol_matches_never_hit_an_ipv4_tcp_probe() -> None:
    rs = ruleset_of(
        table(),
        chain("in"),
        rule(
            "in",
            2,
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "ip6", "field": "saddr"}},
                    "right": {"prefix": {"addr": "::", "len": 0}},
                }
            },
            {"drop": None},
        ),
        rule("in", 3, dport(10250, proto="udp"), {"drop": None}),
        rule(
            "in",
            4,
            {"match": {"op": "==", "left": {"meta": {"key": "nfproto"}}, "right": "ipv6"}},
            {"drop": None},
        ),
    )
    assert blockers(rs, [KUBELET]) == []


def test_tables_of_other_families_do_not_see_ipv4() -> None:
    rs = ruleset_of(
        table("ip6", "v6"),
        table("bridge", "br"),
        chain("in", family="ip6", tname="v6"),
        rule("in", 2, {"drop": None}, family="ip6", tname="v6"),
    )
    assert blockers(rs) == []


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ({"frobnicate": {"x": 1}}, "unknown expression 'frobnicate'"),
        (
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"base": "th", "offset": 16, "len": 16}},
                    "right": 10250,
                }
            },
            "raw payload expression",
        ),
        (
            {"match": {"op": "==", "left": {"ip": "daddr"}, "right": "10.0.0.1"}},
            "unknown expression 'ip'",
        ),
        (
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                    "right": "@missing",
                }
            },
            "set @missing is not in table t",
        ),
        ({"xt": {"type": "match", "name": "recent"}}, "xt match recent (iptables-nft)"),
    ],
)
def test_what_cannot_be_evaluated_is_reported_by_rule_never_passed(expr: Any, reason: str) -> None:
    rs = ruleset_of(table(), chain("in"), rule("in", 7, expr, {"drop": None}))
    found, unjudged = find_nft_blockers(rs, [KUBELET], PODS, managed=lambda t: False)
    assert found == []
    assert [(u.uncertain.rule.handle, u.uncertain.reason) for u in unjudged] == [(7, reason)]


def test_a_verdict_map_it_cannot_resolve_is_reported() -> None:
    rs = ruleset_of(
        table(),
        chain("in"),
        rule(
            "in",
            9,
            {
                "vmap": {
                    "key": {"payload": {"base": "th", "offset": 16, "len": 16}},
                    "data": {"set": [[10250, {"drop": None}]]},
                }
            },
        ),
    )
    _, unjudged = find_nft_blockers(rs, [KUBELET], PODS, managed=lambda t: False)
    assert [u.uncertain.rule.handle for u in unjudged] == [9]
    assert unjudged[0].uncertain.could.kind == "drop"


def test_managed_tables_decide_for_themselves() -> None:
    rs = ruleset_of(
        table("ip", "kube-proxy"),
        chain("filter-input", family="ip", tname="kube-proxy"),
        rule(
            "filter-input", 2, {"frobnicate": None}, {"drop": None}, family="ip", tname="kube-proxy"
        ),
        rule("filter-input", 3, dport(10250), {"reject": None}, family="ip", tname="kube-proxy"),
    )
    found, unjudged = find_nft_blockers(
        rs, [KUBELET], PODS, managed=lambda t: t.name == "kube-proxy"
    )
    assert found == [] and unjudged == []


def test_interface_and_state_matches() -> None:
    rs = ruleset_of(
        table(),
        chain("in"),
        rule(
            "in",
            2,
            {
                "match": {
                    "op": "in",
                    "left": {"ct": {"key": "state"}},
                    "right": ["established", "related"],
                }
            },
            {"drop": None},
        ),
        rule(
            "in",
            3,
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
            {"drop": None},
        ),
        rule(
            "in",
            4,
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "weave"}},
            {"drop": None},
        ),
        rule(
            "in",
            5,
            {
                "match": {
                    "op": "==",
                    "left": {"fib": {"flags": ["daddr"], "result": "type"}},
                    "right": "local",
                }
            },
            {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
            dport(10250),
            {"reject": None},
        ),
    )
    found = blockers(rs, [KUBELET])
    assert [b.rule.handle if b.rule else 0 for b in found] == [5]


def test_fifty_thousand_rules_parse_and_evaluate() -> None:
    """Correctness at size (the time is measured by bench/nft_ruleset.py, not here)."""
    items: list[dict[str, Any]] = [table(), chain("in")]
    items += [rule("in", 10 + n, dport(20000 + n % 40000), {"accept": None}) for n in range(50_000)]
    items.append(rule("in", 99_999, dport(10250), {"reject": None}))
    rs = ruleset_of(*items)
    assert rs.rule_count() == 50_001
    found = blockers(rs, [KUBELET])
    assert [b.rule.handle if b.rule else 0 for b in found] == [99_999]


def test_tri_is_shared_with_iptables() -> None:
    # One notion of "maybe" for both backends.
    from doctor.analysis import iptables_eval

    assert Tri is iptables_eval.Tri


def test_fixture_sources_are_next_to_their_json() -> None:
    for generated in NFT.glob("*.json"):
        sources = [generated.with_suffix(s) for s in (".nft", ".conf")]
        assert any(Path(s).exists() for s in sources), generated


def test_a_zone_bound_to_one_host_interface_makes_a_later_block_conditional() -> None:
    def iif(name: str) -> dict[str, Any]:
        return {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": name}}

    rs = ruleset_of(
        table(),
        chain("in"),
        chain("zone_public", hook=None),
        rule("in", 2, iif("eth0"), {"goto": {"target": "zone_public"}}),
        rule("in", 3, {"reject": None}),
        rule("zone_public", 4, dport(10250), {"accept": None}),
    )
    found = blockers(rs, [KUBELET, API])
    by_probe = {p.label: b for b in found for p in b.probes}
    # The kubelet is open on eth0 (its zone accepts it), refused on other interfaces.
    assert not by_probe[KUBELET.label].certain
    assert [r.handle for r, _ in by_probe[KUBELET.label].unless] == [2]
    # The API server is refused on every interface.
    assert by_probe[API.label].certain
