"""node.iptables.reject: parser, evaluator, bundles, bad input, and the fix on real netfilter.

Unit tests drive the parser and the chain walker on the rule sets in ``fixtures/iptables``.
Live tests load a rule set into a throwaway network namespace (never the host's ruleset),
run the CLI inside it as a user would, and assert on the namespace's real ``iptables-save``.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from checks.node_iptables_reject import (
    Blocker,
    IptablesReject,
    PodNetwork,
    build_probes,
    detect_pod_network,
    find_blockers,
    is_targeted,
    managed_owner,
    walk,
)
from doctor.analysis.iptables_eval import (
    Fate,
    Probe,
    Tri,
    address_matches,
    interface_matches,
    rule_matches,
    view_of,
)
from doctor.core.commands import CommandRunner
from doctor.core.context import CheckContext, FixContext
from doctor.core.errors import FactError
from doctor.core.model import CheckResult, Status
from doctor.core.runner import run_one
from doctor.facts.cluster import NoCluster
from doctor.facts.node import BundleNodeFacts
from doctor.parse.iptables import ParseError, Ruleset, parse_rule, parse_ruleset, split_arguments
from fixes.base import WriteFile
from fixes.iptables import NFT_BACKEND, DeleteRule, KeepRule, SnapshotRuleset
from tests.conftest import (
    BAD_INPUT,
    BUNDLES,
    FIXTURES,
    check_json,
    kdoctor,
    load_rules,
    read_journal,
    result_of,
    saved_ruleset,
    without_rules,
)

CHECK = "node.iptables.reject"
RULES = FIXTURES / "iptables"
INPUT_REJECT = "-A INPUT -j REJECT --reject-with icmp-host-prohibited"
FORWARD_REJECT = "-A FORWARD -j REJECT --reject-with icmp-host-prohibited"
PODS = PodNetwork(ipaddress.IPv4Network("10.32.0.0/12"), "test", ("weave",))


def ruleset(name: str) -> Ruleset:
    return parse_ruleset((RULES / name).read_text(), name)


def blockers_of(name: str) -> list[Blocker]:
    rules = ruleset(name)
    pods = detect_pod_network([rules])
    return find_blockers(rules, build_probes(pods), pods)


def where(blockers: list[Blocker]) -> list[tuple[str, int | None, int]]:
    """(chain, position or None for a policy, round) of each blocker."""
    return [(b.chain, b.rule.position if b.rule else None, b.round) for b in blockers]


def run_on_bundle(bundle: Path) -> CheckResult:
    ctx = CheckContext(node=BundleNodeFacts(bundle), cluster=NoCluster("not needed"))
    return run_one(IptablesReject, ctx)


def make_bundle(tmp_path: Path, files: dict[str, str]) -> Path:
    """A bundle in ``tmp_path`` holding ``files`` (paths relative to the bundle)."""
    bundle = tmp_path / "bundle"
    for relative, text in files.items():
        path = bundle / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (bundle / "kdoctor-bundle.json").write_text(
        '{"format": "kdoctor-bundle", "version": 1, "node": "t", '
        '"collected_at": "2017-04-10T10:00:00Z"}'
    )
    return bundle


# ---------------------------------------------------------------------------------------
# Tokeniser and parser
# ---------------------------------------------------------------------------------------


def test_tokeniser_unescapes_weave_comment_quotes() -> None:
    line = (
        '-A FORWARD -i weave -m comment --comment "NOTE: this must go before '
        "\\'-j KUBE-FORWARD\\'\" -j WEAVE-NPC-EGRESS"
    )
    words = [t.text for t in split_arguments(line)]
    assert words[7] == "NOTE: this must go before '-j KUBE-FORWARD'"
    assert words[-2:] == ["-j", "WEAVE-NPC-EGRESS"]


def test_tokeniser_keeps_ipset_names_whole() -> None:
    line = "-A WEAVE-NPC-EGRESS-DEFAULT -m set --match-set weave-s_+ChJId4Uy_$}G;WdH|~TK)I src"
    assert [t.text for t in split_arguments(line)][5] == "weave-s_+ChJId4Uy_$}G;WdH|~TK)I"
    assert [t.text for t in split_arguments("-m set --match-set a(b){c}~d$e dst")][
        3
    ] == "a(b){c}~d$e"


def test_tokeniser_follows_iptables_restore_quoting() -> None:
    # A closing quote ends the argument (`"a"b` is two), backslashes only escape inside quotes.
    assert [t.text for t in split_arguments('"a"b c\\d "x\\"y\\\\"')] == ["a", "b", "c\\d", 'x"y\\']
    assert split_arguments('--comment ""')[1].text == ""
    with pytest.raises(ParseError, match="unterminated quote"):
        split_arguments('-m comment --comment "abc -j ACCEPT', 4)


def test_parses_the_broken_node_into_tables_chains_and_positions() -> None:
    rules = ruleset("centos7-kube-weave-broken.rules")
    assert list(rules.tables) == ["nat", "filter"]
    assert rules.variant() == "legacy"
    table = rules.filter
    assert table is not None
    assert table.chains["OUTPUT"].policy == "ACCEPT"
    assert table.chains["WEAVE-NPC"].policy is None
    inputs = table.chains["INPUT"].rules
    assert [r.position for r in inputs] == list(range(1, 13))
    assert inputs[6].text == INPUT_REJECT
    assert inputs[6].line == 56
    assert inputs[6].target == "REJECT"
    assert inputs[6].spec == ("-j", "REJECT", "--reject-with", "icmp-host-prohibited")
    forwards = table.chains["FORWARD"].rules
    assert forwards[6].text == FORWARD_REJECT
    ipset_rule = table.chains["WEAVE-NPC-DEFAULT"].rules[0]
    assert ipset_rule.modules[0].name == "set"
    assert ipset_rule.modules[0].options[0].args == ("weave-P.B|!ZhkAr5q=XZ?3}tMBA+0", "dst")


def test_parses_the_modern_dump_with_escaped_comments() -> None:
    rules = ruleset("healthy-modern.rules")
    forward = rules.filter.chains["FORWARD"].rules  # type: ignore[union-attr]
    assert forward[0].comment() == "NOTE: this must go before '-j KUBE-FORWARD'"
    assert forward[0].spec[-2:] == ("-j", "WEAVE-NPC-EGRESS")
    egress = rules.filter.chains["WEAVE-NPC-EGRESS"].rules  # type: ignore[union-attr]
    mark = egress[4].modules[1]
    assert (mark.name, mark.options[0].name, mark.options[0].negated) == ("mark", "--mark", True)


def test_parser_handles_counters_inserts_and_hand_written_forms() -> None:
    text = (
        "*filter\n:INPUT DROP [5:300]\n:LOCAL - [0:0]\n"
        "[3:180] -A INPUT -j LOCAL\n"
        "-I INPUT 1 -p tcp --dport 22 -j ACCEPT\n"
        "-N EXTRA\n-P FORWARD DROP\n"
        "-A LOCAL -p tcp -m tcp --dport ! 6443 -j RETURN\n"
        "COMMIT\n"
    )
    rules = parse_ruleset(text, "hand-written")
    table = rules.filter
    assert table is not None
    assert [r.text for r in table.chains["INPUT"].rules] == [
        "-I INPUT 1 -p tcp --dport 22 -j ACCEPT",
        "-A INPUT -j LOCAL",
    ]
    assert [r.position for r in table.chains["INPUT"].rules] == [1, 2]
    assert table.chains["FORWARD"].policy == "DROP"
    assert "EXTRA" in table.chains
    implicit = table.chains["INPUT"].rules[0].modules[0]
    assert (implicit.name, implicit.options[0].args) == ("tcp", ("22",))
    old_negation = table.chains["LOCAL"].rules[0].modules[0].options[0]
    assert (old_negation.args, old_negation.negated) == (("6443",), True)


def test_empty_output_is_a_ruleset_without_tables() -> None:
    assert parse_ruleset("", "empty").tables == {}
    only_comment = parse_ruleset("# Generated by iptables-save v1.8.9 (nf_tables)\n", "x")
    assert only_comment.tables == {} and not only_comment.has_rules()
    assert only_comment.variant() == "nft"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACCEPT\n", "line 3: input ends inside table"),
        ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j ACC", "line 3: input ends mid-line"),
        ("Chain INPUT (policy ACCEPT)\n", "line 1: expected a table line"),
        ("-A INPUT -j ACCEPT\n", "line 1: expected a table line"),
        ("*filter\n-A KUBE-X -j ACCEPT\nCOMMIT\n", "line 2: rule for undeclared chain 'KUBE-X'"),
        ("*filter\n-A INPUT -j KUBE-X\nCOMMIT\n", "line 2: jump to undeclared chain 'KUBE-X'"),
        ("*filter\n-A INPUT -g LOCAL\nCOMMIT\n", "line 2: goto to undeclared chain 'LOCAL'"),
        ('*filter\n-A INPUT -m comment --comment "x -j ACCEPT\nCOMMIT\n', "line 2: unterminated"),
        ("*filter\n-A INPUT -j ACCEPT\x1b[0m\nCOMMIT\n", "line 2: control character 0x1b"),
        ("*filter\n-A INPUT \ufffd\ufffd\nCOMMIT\n", "line 2: control character undecodable"),
        ("*filter\n*nat\nCOMMIT\n", "line 2: table 'nat' starts before COMMIT"),
        ("*filter\nCOMMIT\n*filter\nCOMMIT\n", "line 3: table 'filter' appears twice"),
        ("*filter\n:INPUT MAYBE [0:0]\nCOMMIT\n", "line 2: bad policy 'MAYBE'"),
        ("*filter\n:X - [zero]\nCOMMIT\n", "line 2: bad counters"),
        ("*filter\n:X - [0:0]\n:X - [0:0]\nCOMMIT\n", "line 3: chain 'X' declared twice"),
        ("*filter\n-A INPUT -j\nCOMMIT\n", "line 2: -j without a target"),
        ("*filter\n-A INPUT -m\nCOMMIT\n", "line 2: -m without a match name"),
        ("*filter\n-A INPUT --dport 22 -j ACCEPT\nCOMMIT\n", "line 2: option --dport outside"),
        ("*filter\n-A INPUT bogus -j ACCEPT\nCOMMIT\n", "line 2: unexpected 'bogus'"),
        ("*filter\n-F INPUT\nCOMMIT\n", "line 2: unsupported command '-F'"),
        ("*filter\nA INPUT -j DROP\nCOMMIT\n", "line 2: expected a rule"),
    ],
)
def test_garbled_input_names_source_line_and_reason(text: str, reason: str) -> None:
    with pytest.raises(FactError) as error:
        parse_ruleset(text, "commands/iptables-save.txt")
    assert str(error.value).startswith("commands/iptables-save.txt: ")
    assert reason in str(error.value)


# ---------------------------------------------------------------------------------------
# Matching and classification
# ---------------------------------------------------------------------------------------


def rule(text: str, chain: str = "INPUT") -> Any:
    return parse_rule("filter", chain, split_arguments(text), 1, f"-A {chain} {text}")


API = Probe("tcp/6443 API server", "INPUT", "tcp", 6443)
FROM_PODS = Probe("pods", "FORWARD", "tcp", 80, in_iface="weave", src_in_pods=True)
TO_PODS = Probe("pods", "FORWARD", "tcp", 80, out_iface="weave", dst_in_pods=True)


def test_interface_matching_with_wildcards_and_unknown_host_interfaces() -> None:
    assert interface_matches("weave", "weave") is Tri.YES
    assert interface_matches("wea+", "weave") is Tri.YES
    assert interface_matches("docker0", "weave") is Tri.NO
    assert interface_matches("+", None) is Tri.YES
    assert interface_matches("lo", None) is Tri.NO  # a host interface is never loopback
    assert interface_matches("veth+", None) is Tri.NO
    assert interface_matches("eth0", None) is Tri.MAYBE  # which one is it? cannot tell
    assert interface_matches("weave", "") is Tri.NO


def test_address_matching_against_the_pod_network() -> None:
    cidr = ipaddress.IPv4Network("10.32.0.0/12")
    assert address_matches("10.32.0.0/12", True, cidr) is Tri.YES
    assert address_matches("10.0.0.0/8", True, cidr) is Tri.YES
    assert address_matches("10.32.1.0/24", True, cidr) is Tri.MAYBE
    assert address_matches("172.17.0.0/16", True, cidr) is Tri.NO
    assert address_matches("0.0.0.0/0", False, cidr) is Tri.YES
    assert address_matches("127.0.0.0/8", False, cidr) is Tri.NO
    assert address_matches("224.0.0.0/4", False, cidr) is Tri.NO
    assert address_matches("192.168.56.10/32", False, cidr) is Tri.MAYBE
    assert address_matches("not-an-address", False, cidr) is Tri.MAYBE


@pytest.mark.parametrize(
    ("text", "probe", "expected"),
    [
        ("-j REJECT --reject-with icmp-host-prohibited", API, Tri.YES),
        ("-p tcp -m tcp --dport 6443 -j ACCEPT", API, Tri.YES),
        ("-p udp -m udp --dport 6443 -j ACCEPT", API, Tri.NO),
        ("-p tcp -m tcp ! --dport 22 -j ACCEPT", API, Tri.YES),
        ("-p tcp -m multiport --dports 2379:2380,6443 -j ACCEPT", API, Tri.YES),
        ("-p tcp -m multiport --dports 80,443 -j ACCEPT", API, Tri.NO),
        ("-p tcp -m state --state NEW -m tcp --dport 6443 -j ACCEPT", API, Tri.YES),
        ("-m state --state RELATED,ESTABLISHED -j ACCEPT", API, Tri.NO),
        ("-m conntrack --ctstate INVALID -j DROP", API, Tri.NO),
        ("-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT", API, Tri.YES),
        ("-p tcp --syn -j ACCEPT", API, Tri.YES),
        ("-p icmp -j ACCEPT", API, Tri.NO),
        ("-i lo -j ACCEPT", API, Tri.NO),
        ("! -i lo -j ACCEPT", API, Tri.YES),
        ("-m addrtype --dst-type LOCAL -j ACCEPT", API, Tri.YES),
        ("-m addrtype --dst-type LOCAL -j ACCEPT", TO_PODS, Tri.NO),
        ("-m comment --comment anything -j ACCEPT", API, Tri.YES),
        ("-m mark --mark 0x8000/0x8000 -j DROP", API, Tri.MAYBE),
        ("-m set --match-set weave-x dst -j ACCEPT", TO_PODS, Tri.MAYBE),
        ("-m physdev --physdev-out vethwe-bridge -j ACCEPT", TO_PODS, Tri.MAYBE),
        ("-m recent --rcheck --name X -j DROP", API, Tri.MAYBE),
        ("-i weave ! -o weave -j ACCEPT", FROM_PODS, Tri.YES),
        ("-i weave ! -o weave -j ACCEPT", TO_PODS, Tri.NO),
        ("-i docker0 -o weave -j DROP", TO_PODS, Tri.NO),
        ("-s 10.32.0.0/12 -j ACCEPT", FROM_PODS, Tri.YES),
        ("-d 10.32.0.0/12 -j ACCEPT", TO_PODS, Tri.YES),
        ("-d 10.96.0.10/32 -p udp -m udp --dport 53 -j REJECT", API, Tri.NO),
        ("-f -j DROP", API, Tri.NO),
    ],
)
def test_rule_matching(text: str, probe: Probe, expected: Tri) -> None:
    assert rule_matches(rule(text), probe, PODS.cidr) is expected


@pytest.mark.parametrize(
    ("chain", "text"),
    [
        (
            "KUBE-SERVICES",
            '-d 10.96.0.10/32 -p udp -m comment --comment "kube-system/kube-dns:dns has no '
            'endpoints" -m udp --dport 53 -j REJECT --reject-with icmp-port-unreachable',
        ),
        (
            "KUBE-EXTERNAL-SERVICES",
            '-p tcp -m comment --comment "default/traefik:http has no endpoints" -m addrtype '
            "--dst-type LOCAL -m tcp --dport 32445 -j REJECT --reject-with icmp-port-unreachable",
        ),
        (
            "KUBE-FIREWALL",
            '-m comment --comment "kubernetes firewall for dropping marked packets" '
            "-m mark --mark 0x8000/0x8000 -j DROP",
        ),
        ("KUBE-FORWARD", "-m conntrack --ctstate INVALID -j DROP"),
        ("FORWARD", "-o weave -j DROP"),
        ("FORWARD", "-i docker0 -o weave -j DROP"),
        ("INPUT", "-d 172.17.0.1/32 -i docker0 -p tcp -m tcp --dport 6783 -j DROP"),
        ("WEAVE-NPC-EGRESS", "-m mark ! --mark 0x40000/0x40000 -j DROP"),
        ("DOCKER-ISOLATION-STAGE-2", "-o docker0 -j DROP"),
        ("cali-FORWARD", '-m comment --comment "cali:vjrMJCRpqwy5oRoX" -j DROP'),
    ],
)
def test_managed_rules_are_told_apart(chain: str, text: str) -> None:
    assert managed_owner(rule(text, chain)) is not None


@pytest.mark.parametrize(
    ("chain", "text"),
    [
        ("INPUT", "-j REJECT --reject-with icmp-host-prohibited"),
        ("FORWARD", "-j REJECT --reject-with icmp-host-prohibited"),
        ("IN_public_deny", "-j REJECT --reject-with icmp-host-prohibited"),
        ("ufw-reject-input", "-j REJECT"),
        ("DOCKER-USER", "-j DROP"),  # the administrator's chain, not Docker's
    ],
)
def test_distro_and_admin_rules_are_not_managed(chain: str, text: str) -> None:
    assert managed_owner(rule(text, chain)) is None


def test_targeted_rules_are_told_from_blanket_ones() -> None:
    assert not is_targeted(rule("-j REJECT --reject-with icmp-host-prohibited"))
    assert not is_targeted(rule("-p tcp -m state --state NEW -j DROP"))
    assert is_targeted(rule("-p tcp -m tcp --dport 10250 -j DROP"))
    assert is_targeted(rule("-s 10.0.0.0/8 -j DROP"))


# ---------------------------------------------------------------------------------------
# The walk: jumps, RETURN, goto, policies
# ---------------------------------------------------------------------------------------


def walk_text(text: str, probe: Probe) -> tuple[Fate, str | None]:
    rules = parse_ruleset(text, "t")
    assert rules.filter is not None
    outcome = walk(view_of(rules.filter), probe, PODS.cidr, "t")
    return outcome.fate, outcome.rule.text if outcome.rule else None


def test_goto_returns_to_the_caller_of_the_calling_chain() -> None:
    text = (
        "*filter\n:INPUT ACCEPT [0:0]\n:ZONES - [0:0]\n:IN_public - [0:0]\n"
        "-A INPUT -j ZONES\n"
        "-A INPUT -p tcp -m tcp --dport 6443 -j ACCEPT\n"
        "-A ZONES -g IN_public\n"
        "-A ZONES -j DROP\n"  # never reached: the goto'd chain returns to INPUT
        "-A IN_public -p udp -j ACCEPT\n"
        "COMMIT\n"
    )
    assert walk_text(text, API) == (Fate.ACCEPTED, "-A INPUT -p tcp -m tcp --dport 6443 -j ACCEPT")


def test_return_and_policies() -> None:
    text = (
        "*filter\n:INPUT DROP [0:0]\n:LOCAL - [0:0]\n"
        "-A INPUT -j LOCAL\n-A LOCAL -j RETURN\n-A LOCAL -j ACCEPT\nCOMMIT\n"
    )
    assert walk_text(text, API) == (Fate.BLOCKED, None)
    assert walk_text(text.replace(":INPUT DROP", ":INPUT ACCEPT"), API) == (Fate.ACCEPTED, None)


def test_unknown_match_in_a_managed_chain_defers_to_it() -> None:
    text = (
        "*filter\n:FORWARD DROP [0:0]\n:cali-FORWARD - [0:0]\n"
        "-A FORWARD -j cali-FORWARD\n"
        "-A cali-FORWARD -m mark --mark 0x10000/0x10000 -j ACCEPT\nCOMMIT\n"
    )
    fate, _ = walk_text(text, FROM_PODS)
    assert fate is Fate.DEFERRED
    # The same rule in an administrator's chain is "may not match": the policy decides.
    assert walk_text(text.replace("cali-FORWARD", "LOCAL"), FROM_PODS) == (Fate.BLOCKED, None)


def test_log_and_nflog_do_not_end_the_walk() -> None:
    text = (
        "*filter\n:INPUT ACCEPT [0:0]\n"
        '-A INPUT -j LOG --log-prefix "in: "\n-A INPUT -j NFLOG --nflog-group 86\n'
        "-A INPUT -j REJECT\nCOMMIT\n"
    )
    assert walk_text(text, API) == (Fate.BLOCKED, "-A INPUT -j REJECT")


# ---------------------------------------------------------------------------------------
# Analysis of whole rule sets
# ---------------------------------------------------------------------------------------


def test_broken_node_has_exactly_the_two_planted_rejects() -> None:
    blockers = blockers_of("centos7-kube-weave-broken.rules")
    assert where(blockers) == [("INPUT", 7, 1), ("FORWARD", 7, 1)]
    inputs, forwards = blockers
    assert inputs.rule is not None and inputs.rule.text == INPUT_REJECT
    assert {p.label for p in inputs.probes} >= {
        "tcp/6443 API server",
        "tcp/10250 kubelet",
        "tcp/2379 etcd clients",
        "tcp/2380 etcd peers",
        "tcp/6783 Weave Net control",
        "udp/6783 Weave Net data (sleeve)",
        "udp/6784 Weave Net data (fastdp)",
        "traffic from pods to the node -i weave (tcp/6443)",
    }
    assert [p.label for p in forwards.probes] == [
        "forwarded pod traffic -i weave",
        "forwarded pod traffic -o weave",
    ]
    assert [r.text for r in forwards.shadows] == [
        "-A FORWARD -o weave -j WEAVE-NPC",
        "-A FORWARD -i weave ! -o weave -j ACCEPT",
    ]


def test_pod_network_is_read_from_the_rules() -> None:
    assert (
        str(detect_pod_network([ruleset("centos7-kube-weave-broken.rules")]).cidr) == "10.32.0.0/12"
    )
    kube = detect_pod_network([ruleset("forward-drop-policy-kube-forward.rules")])
    assert str(kube.cidr) == "10.244.0.0/16" and "KUBE-FORWARD" in kube.origin
    assert "default" in detect_pod_network([ruleset("centos7-default.rules")]).origin


def test_firewalld_rejects_are_found_through_zone_gotos() -> None:
    assert where(blockers_of("centos7-firewalld-kube-weave.rules")) == [
        ("INPUT", 9, 1),
        ("FORWARD", 15, 1),
    ]


@pytest.mark.parametrize(
    "name",
    [
        "healthy-modern.rules",
        "reject-after-accept.rules",
        "forward-drop-policy-weave.rules",
        "forward-drop-policy-kube-forward.rules",
    ],
)
def test_healthy_rule_sets_have_no_blockers(name: str) -> None:
    assert blockers_of(name) == []


def test_reject_after_weave_accepts_is_not_a_finding() -> None:
    # Weave 2.x puts its FORWARD accepts at the top: the distro FORWARD REJECT blocks none of
    # our traffic. Its INPUT rule is appended after the distro INPUT REJECT, which still bites.
    blockers = blockers_of("modern-weave2-centos.rules")
    assert where(blockers) == [("INPUT", 7, 1)]
    assert [r.text for r in blockers[0].shadows] == ["-A INPUT -i weave -j WEAVE-NPC-EGRESS"]


def test_forward_drop_policy_without_pod_accepts() -> None:
    blockers = blockers_of("forward-drop-policy-docker.rules")
    assert where(blockers) == [("FORWARD", None, 1)]
    assert [p.accept_spec for p in blockers[0].probes] == [
        ("-s", "10.32.0.0/12", "-j", "ACCEPT"),
        ("-d", "10.32.0.0/12", "-j", "ACCEPT"),
    ]


def test_duplicate_reject_is_found_behind_the_first() -> None:
    blockers = blockers_of("duplicate-reject.rules")
    assert where(blockers) == [("INPUT", 7, 1), ("FORWARD", 7, 1), ("INPUT", 8, 2)]
    assert blockers[2].hidden_behind == [blockers[0]]


def test_targeted_rule_is_reported_but_not_removable() -> None:
    blockers = blockers_of("targeted-kubelet-drop.rules")
    assert where(blockers) == [("INPUT", 7, 1), ("INPUT", 8, 1), ("FORWARD", 7, 1)]
    targeted = blockers[0]
    assert [p.label for p in targeted.probes] == ["tcp/10250 kubelet"]
    assert not targeted.removable and blockers[1].removable


# ---------------------------------------------------------------------------------------
# The check on bundles (in process) and its fix plan
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bundle", "status", "rules"),
    [
        ("centos7-iptables-services", Status.FAIL, [INPUT_REJECT, FORWARD_REJECT]),
        ("centos7-firewalld", Status.FAIL, [INPUT_REJECT, FORWARD_REJECT]),
        ("docker-1.12-centos", Status.FAIL, [INPUT_REJECT, FORWARD_REJECT]),
        ("docker-1.13-centos", Status.OK, []),
        ("docker-ce-dropins", Status.OK, []),
        ("healthy-node", Status.OK, []),
    ],
)
def test_bundles(bundle: str, status: Status, rules: list[str]) -> None:
    result = run_on_bundle(BUNDLES / bundle)
    assert result.status is status, result.summary
    assert [f.resource for f in result.findings] == rules


def test_firewalld_owner_and_hint() -> None:
    result = run_on_bundle(BUNDLES / "centos7-firewalld")
    assert {f.evidence["owner"] for f in result.findings} == {"firewalld"}
    assert all("node.firewalld" in (f.hint or "") for f in result.findings)


def test_sysconfig_rewrite_removes_only_the_offending_lines() -> None:
    result = run_on_bundle(BUNDLES / "centos7-iptables-services")
    assert result.fix is not None
    writes = [a for a in result.fix.actions if isinstance(a, WriteFile)]
    assert len(writes) == 1
    original = (BUNDLES / "centos7-iptables-services/host/etc/sysconfig/iptables").read_text()
    expected = original.replace(INPUT_REJECT + "\n", "").replace(FORWARD_REJECT + "\n", "")
    assert writes[0].path == "/etc/sysconfig/iptables"
    assert writes[0].content == expected
    assert writes[0].old_content == original
    assert result.fix.plan()[:3] == [
        "iptables-save -c > BACKUP/iptables-save.rules"
        "   # rollback: iptables-restore -c -T filter < that file",
        "iptables -t filter -D INPUT -j REJECT --reject-with icmp-host-prohibited",
        "iptables -t filter -D FORWARD -j REJECT --reject-with icmp-host-prohibited",
    ]


def test_sysconfig_rule_that_is_not_live_warns(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        {
            "commands/iptables-save.txt": (RULES / "healthy-modern.rules").read_text(),
            "host/etc/sysconfig/iptables": (RULES / "centos7-default.rules").read_text(),
        },
    )
    result = run_on_bundle(bundle)
    assert result.status is Status.WARN
    assert [f.resource for f in result.findings] == [
        "/etc/sysconfig/iptables:12",
        "/etc/sysconfig/iptables:13",
    ]
    assert "after the next boot" in result.findings[0].message
    assert result.fix is not None
    assert [type(a) for a in result.fix.actions] == [WriteFile]


def test_live_rules_are_judged_live_even_when_the_file_has_them(tmp_path: Path) -> None:
    # Weave 2.x: the distro FORWARD REJECT is live but harmless (weave accepts above it), so
    # neither the live rule nor its line in the file is touched; the INPUT one goes from both.
    default = (RULES / "centos7-default.rules").read_text()
    bundle = make_bundle(
        tmp_path,
        {
            "commands/iptables-save.txt": (RULES / "modern-weave2-centos.rules").read_text(),
            "host/etc/sysconfig/iptables": default,
        },
    )
    result = run_on_bundle(bundle)
    assert result.status is Status.FAIL
    assert [f.resource for f in result.findings] == [INPUT_REJECT]
    assert result.fix is not None
    writes = [a for a in result.fix.actions if isinstance(a, WriteFile)]
    assert [w.content for w in writes] == [default.replace(INPUT_REJECT + "\n", "")]


def test_both_backends_are_read_and_the_fix_uses_the_one_with_rules(tmp_path: Path) -> None:
    broken = (RULES / "centos7-kube-weave-broken.rules").read_text()
    header = "# Warning: iptables-legacy tables present, use iptables-legacy-save to see them\n"
    bundle = make_bundle(
        tmp_path,
        {
            "commands/iptables-save.txt": header,
            "commands/iptables-nft-save.txt": header,
            "commands/iptables-legacy-save.txt": broken,
        },
    )
    result = run_on_bundle(bundle)
    assert result.status is Status.FAIL
    assert {f.evidence["backend"] for f in result.findings} == {"iptables-legacy"}
    assert {f.evidence["source"] for f in result.findings} == {"commands/iptables-legacy-save.txt"}
    assert result.fix is not None
    assert result.fix.plan()[1] == (
        "iptables-legacy -t filter -D INPUT -j REJECT --reject-with icmp-host-prohibited"
    )


def test_rules_in_both_backends_are_both_reported(tmp_path: Path) -> None:
    broken = (RULES / "centos7-kube-weave-broken.rules").read_text()
    bundle = make_bundle(
        tmp_path,
        {
            "commands/iptables-save.txt": broken,
            "commands/iptables-nft-save.txt": (RULES / "centos7-default.rules").read_text(),
            "commands/iptables-legacy-save.txt": broken,
        },
    )
    result = run_on_bundle(bundle)
    assert [f.evidence["backend"] for f in result.findings] == [
        "iptables-legacy",
        "iptables-legacy",
        "iptables-nft",
        "iptables-nft",
    ]
    assert result.fix is not None
    snapshots = [a for a in result.fix.actions if isinstance(a, SnapshotRuleset)]
    assert [s.backend.name for s in snapshots] == ["legacy", "nft"]


def test_missing_iptables_save_skips(tmp_path: Path) -> None:
    result = run_on_bundle(make_bundle(tmp_path, {"commands/other.txt": ""}))
    assert result.status is Status.SKIP
    assert "commands/iptables-save.txt" in result.summary


def test_planted_targeted_rule_stays_in_the_plan_as_a_note(tmp_path: Path) -> None:
    bundle = make_bundle(
        tmp_path,
        {"commands/iptables-save.txt": (RULES / "targeted-kubelet-drop.rules").read_text()},
    )
    result = run_on_bundle(bundle)
    assert result.fix is not None
    kinds = [type(a) for a in result.fix.actions]
    assert kinds == [SnapshotRuleset, KeepRule, DeleteRule, DeleteRule]
    assert result.fix.plan()[1] == (
        "# left in place (it targets this traffic on purpose): "
        "-A INPUT -p tcp -m tcp --dport 10250 -j DROP"
    )
    targeted = result.findings[0]
    assert targeted.evidence["fixable"] is False
    assert "will not remove it" in (targeted.hint or "")


class RecordingRunner(CommandRunner):
    def __init__(self, outputs: dict[str, str]) -> None:
        super().__init__()
        self.outputs = outputs
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, argv: list[str], stdin: str | None = None) -> str:
        self.calls.append((argv, stdin))
        return self.outputs.get(argv[0], "")


def test_snapshot_backs_up_and_restores_the_filter_table(tmp_path: Path) -> None:
    saved = "*filter\n:INPUT ACCEPT [1:2]\n[3:4] -A INPUT -j REJECT\nCOMMIT\n"
    runner = RecordingRunner({"iptables-nft-save": saved})
    ctx = FixContext(node=BundleNodeFacts(tmp_path), cluster=NoCluster("x"), runner=runner)
    action = SnapshotRuleset(NFT_BACKEND)
    action.backup(ctx, tmp_path / "slot")
    action.apply(ctx)
    action.undo(ctx, tmp_path / "slot")
    assert runner.calls == [
        (["iptables-nft-save", "-c"], None),
        (["iptables-nft-restore", "-c", "-T", "filter"], saved),
    ]
    delete = DeleteRule(NFT_BACKEND, "INPUT", ("-m", "comment", "--comment", "a b", "-j", "DROP"))
    assert delete.describe() == [
        "iptables-nft -t filter -D INPUT -m comment --comment 'a b' -j DROP"
    ]


def test_snapshot_refuses_a_backup_without_the_filter_table(tmp_path: Path) -> None:
    runner = RecordingRunner({"iptables-nft-save": ""})
    ctx = FixContext(node=BundleNodeFacts(tmp_path), cluster=NoCluster("x"), runner=runner)
    with pytest.raises(Exception, match="no filter table"):
        SnapshotRuleset(NFT_BACKEND).backup(ctx, tmp_path / "slot")


# ---------------------------------------------------------------------------------------
# The CLI on bundles and on the bad-input corpus
# ---------------------------------------------------------------------------------------


def test_cli_reports_both_planted_rejects_on_the_centos_bundle() -> None:
    bundle = str(BUNDLES / "centos7-iptables-services")
    code, report = check_json("--bundle", bundle, "--only", CHECK)
    assert code == 2
    result = result_of(report, CHECK)
    assert result["status"] == "fail"
    assert result["summary"].startswith("2 iptables rules block Kubernetes traffic")
    first, second = result["findings"]
    assert first["resource"] == INPUT_REJECT
    assert second["resource"] == FORWARD_REJECT
    assert (first["evidence"]["chain"], first["evidence"]["position"]) == ("INPUT", 7)
    assert (second["evidence"]["chain"], second["evidence"]["position"]) == ("FORWARD", 7)
    assert "tcp/6443 API server" in first["evidence"]["blocks"]
    assert "forwarded pod traffic -o weave" in second["evidence"]["blocks"]
    assert "-A FORWARD -i weave ! -o weave -j ACCEPT" in second["evidence"]["shadows"]
    assert first["evidence"]["owner"] == "iptables-services (/etc/sysconfig/iptables line 12)"
    assert first["evidence"]["backend"] == "iptables (legacy)"
    assert "has no endpoints" not in json.dumps(result["findings"])
    plan = result["fix"]["plan"]
    assert result["fix"]["safety"] == "unsafe"
    assert "iptables -t filter -D INPUT -j REJECT --reject-with icmp-host-prohibited" in plan
    assert "-" + FORWARD_REJECT in plan  # the sysconfig diff

    text = kdoctor("check", "--bundle", bundle, "--only", CHECK)
    assert text.returncode == 2
    assert INPUT_REJECT in text.stdout and FORWARD_REJECT in text.stdout
    assert "filter INPUT #7" in text.stdout and "filter FORWARD #7" in text.stdout


BAD_CASES = {
    "truncated": "line 77: input ends mid-line inside table 'filter'",
    "missing-commit": "line 73: input ends inside table 'filter' (opened at line 39)",
    "garbled": "line 1: expected a table line such as '*filter'",
    "unterminated-quote": "line 78: unterminated quote",
    "binary-junk": "binary data",
    "control-characters": "line 51: control character 0x1b",
    "undeclared-chain": "line 85: rule for undeclared chain 'KUBE-FORWARD'",
    "jump-to-undeclared-chain": "line 63: jump to undeclared chain 'DOCKER-ISOLATION-STAGE-1'",
    "chain-loop": "chains jump deeper than",
    "garbled-sysconfig": "/etc/sysconfig/iptables: line 7: expected a rule",
    "nft-not-json": "not JSON (expected `nft -j list ruleset` output): Expecting value (line 1",
    "nft-truncated": "not JSON (expected `nft -j list ruleset` output): Unterminated string",
    "nft-not-nft-output": 'JSON without a top-level "nftables" list',
    "nft-chain-loop": "chains in table t jump deeper than 64 levels",
    "nft-jump-to-missing-chain": "inet t input handle 4 jumps to chain 'a', not in the table",
}


def test_bad_input_corpus_is_complete() -> None:
    cases = {p.name for p in (BAD_INPUT / CHECK).iterdir() if p.is_dir()}
    assert cases == {*BAD_CASES, "empty"}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_an_error_naming_file_and_reason(case: str) -> None:
    code, report = check_json("--bundle", str(BAD_INPUT / CHECK / case), "--only", CHECK)
    result = result_of(report, CHECK)
    assert result["status"] == "error", result["summary"]
    assert code == 3
    source = (
        "/etc/sysconfig/iptables" if case == "garbled-sysconfig" else "commands/iptables-save.txt"
    )
    if case.startswith("nft-"):
        source = "commands/nft-ruleset.json"
    assert result["summary"].startswith(source + ": ")
    assert BAD_CASES[case] in result["summary"]


def test_empty_iptables_save_is_ok() -> None:
    code, report = check_json("--bundle", str(BAD_INPUT / CHECK / "empty"), "--only", CHECK)
    result = result_of(report, CHECK)
    assert (code, result["status"]) == (0, "ok")
    assert "no iptables rules" in result["summary"]


# ---------------------------------------------------------------------------------------
# Live, on real netfilter in a throwaway namespace
# ---------------------------------------------------------------------------------------


def live_check(ns: str, root: Path) -> tuple[int, dict[str, Any]]:
    code, report = check_json("--scope", "node", "--only", CHECK, "--root", str(root), netns=ns)
    return code, result_of(report, CHECK)


def live_fix(ns: str, root: Path, state: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return kdoctor(
        "fix",
        CHECK,
        "--yes",
        "--unsafe",
        "--root",
        str(root),
        "--state-dir",
        str(state),
        *extra,
        netns=ns,
    )


@pytest.mark.root
def test_live_fix_removes_both_rejects_and_persists(
    netns: str, iptables_root: Path, tmp_path: Path
) -> None:
    load_rules(netns, "centos7-kube-weave-broken.rules")
    before = saved_ruleset(netns)
    sysconfig = iptables_root / "etc/sysconfig/iptables"
    original = sysconfig.read_text()

    code, result = live_check(netns, iptables_root)
    assert (code, result["status"]) == (2, "fail")
    assert [(f["evidence"]["chain"], f["evidence"]["position"]) for f in result["findings"]] == [
        ("INPUT", 7),
        ("FORWARD", 7),
    ]
    assert result["findings"][0]["evidence"]["backend"] in ("iptables-nft", "iptables (nft)")

    state = tmp_path / "state"
    proc = live_fix(netns, iptables_root, state)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    assert saved_ruleset(netns) == without_rules(before, INPUT_REJECT, FORWARD_REJECT)
    expected = original.replace(INPUT_REJECT + "\n", "").replace(FORWARD_REJECT + "\n", "")
    assert sysconfig.read_text() == expected
    assert sysconfig.stat().st_mode & 0o777 == 0o600
    backups = list(state.glob("backups/*/00-SnapshotRuleset/iptables-save.rules"))
    assert len(backups) == 1 and INPUT_REJECT in backups[0].read_text()
    assert [e["outcome"] for e in read_journal(state)] == ["applied"]

    code, result = live_check(netns, iptables_root)
    assert (code, result["status"]) == (0, "ok")


@pytest.mark.root
def test_live_fix_rolls_back_when_a_targeted_rule_remains(
    netns: str, iptables_root: Path, tmp_path: Path
) -> None:
    # Planted fault: someone closed tcp/10250 on purpose. kdoctor reports it but leaves it,
    # so after deleting the blanket REJECTs the re-check still fails and everything goes back.
    load_rules(netns, "targeted-kubelet-drop.rules")
    before = saved_ruleset(netns)
    sysconfig = iptables_root / "etc/sysconfig/iptables"
    original = sysconfig.read_bytes()

    state = tmp_path / "state"
    proc = live_fix(netns, iptables_root, state)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "left in place" in proc.stdout
    assert "rolled-back" in proc.stdout

    assert saved_ruleset(netns) == before
    assert sysconfig.read_bytes() == original
    entries = read_journal(state)
    assert [e["outcome"] for e in entries] == ["rolled-back"]
    assert "still reports fail" in entries[0]["reason"]


@pytest.mark.root
def test_live_dry_run_changes_nothing(netns: str, iptables_root: Path, tmp_path: Path) -> None:
    load_rules(netns, "centos7-kube-weave-broken.rules")
    before = saved_ruleset(netns)
    original = (iptables_root / "etc/sysconfig/iptables").read_bytes()
    proc = live_fix(netns, iptables_root, tmp_path / "state", "--dry-run")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "-t filter -D FORWARD -j REJECT --reject-with icmp-host-prohibited" in proc.stdout
    assert saved_ruleset(netns) == before
    assert (iptables_root / "etc/sysconfig/iptables").read_bytes() == original
    assert not (tmp_path / "state" / "journal.jsonl").exists()


@pytest.mark.root
def test_live_forward_drop_policy_gets_pod_accepts(netns: str, tmp_path: Path) -> None:
    load_rules(netns, "forward-drop-policy-docker.rules")
    before = saved_ruleset(netns)
    root = tmp_path / "root"
    root.mkdir()
    code, result = live_check(netns, root)
    assert (code, result["findings"][0]["resource"]) == (2, "filter/FORWARD policy DROP")

    proc = live_fix(netns, root, tmp_path / "state")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    after = saved_ruleset(netns)
    expected = list(before["filter"])
    last_forward = max(i for i, line in enumerate(expected) if line.startswith("-A FORWARD "))
    expected[last_forward + 1 : last_forward + 1] = [
        "-A FORWARD -s 10.32.0.0/12 -j ACCEPT",
        "-A FORWARD -d 10.32.0.0/12 -j ACCEPT",
    ]
    assert after["filter"] == expected
    assert ":FORWARD DROP [0:0]" in after["filter"]  # Docker's policy stays


@pytest.mark.root
@pytest.mark.parametrize("name", ["healthy-modern.rules", "reject-after-accept.rules"])
def test_live_healthy_rule_sets_are_ok(netns: str, tmp_path: Path, name: str) -> None:
    load_rules(netns, name)
    root = tmp_path / "root"
    root.mkdir()
    code, result = live_check(netns, root)
    assert (code, result["status"]) == (0, "ok"), result["summary"]


@pytest.mark.root
def test_live_legacy_backend_is_fixed_with_legacy_binaries(
    netns: str, iptables_root: Path, tmp_path: Path
) -> None:
    for tool in ("iptables-legacy-restore", "iptables-legacy-save", "iptables-nft-save"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (not installed)")
    load_rules(netns, "centos7-kube-weave-broken.rules", restore="iptables-legacy-restore")
    before = saved_ruleset(netns, "iptables-legacy-save")

    code, result = live_check(netns, iptables_root)
    assert code == 2
    assert {f["evidence"]["backend"] for f in result["findings"]} == {"iptables-legacy"}
    assert result["fix"]["plan"][1].startswith("iptables-legacy -t filter -D INPUT")

    proc = live_fix(netns, iptables_root, tmp_path / "state")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert saved_ruleset(netns, "iptables-legacy-save") == without_rules(
        before, INPUT_REJECT, FORWARD_REJECT
    )
    assert saved_ruleset(netns, "iptables-nft-save") == {}
