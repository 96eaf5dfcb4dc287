"""node.iptables.reject on every netfilter backend, with the kernel as the referee.

Each case loads a rule set into the ``node`` namespace of a three-namespace lab
(:mod:`tests.netfilter_lab`): native nft (firewalld, kube-proxy's nftables mode, Debian's
nftables.conf), iptables-nft, iptables-legacy, or a mix. It runs ``kdoctor check`` inside
that namespace as a user would, then connects through the ruleset from the peer node and
from a pod, and asserts that what kdoctor says about each kind of traffic is what the
kernel did with a real connection: open, or refused/prohibited (a reject), or a timeout (a
drop). Bundle cases (no root) read the JSON nft itself printed for the same rule sets.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from doctor.core.commands import CommandRunner
from tests.conftest import (
    FIXTURES,
    check_json,
    kdoctor,
    read_journal,
    require_root_tools,
    result_of,
)
from tests.netfilter_lab import Lab, assert_agrees, netfilter_lab

CHECK = "node.iptables.reject"
NFT = FIXTURES / "nftables"


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_root_tools("ip", "nft", "iptables-nft-restore", "iptables-legacy-restore")
    with netfilter_lab() as created:
        yield created


def node_root(tmp_path: Path, nftables_conf: str | None = None) -> Path:
    """A --root for the node: optionally Debian's /etc/nftables.conf from a fixture."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    if nftables_conf is not None:
        shutil.copy(NFT / nftables_conf, root / "etc" / "nftables.conf")
    return root


def live_check(lab: Lab, root: Path) -> tuple[int, dict[str, Any]]:
    code, report = check_json(
        "--scope", "node", "--only", CHECK, "--root", str(root), netns=lab.node
    )
    return code, result_of(report, CHECK)


def live_fix(lab: Lab, root: Path, state: Path) -> subprocess.CompletedProcess[str]:
    return kdoctor(
        "fix",
        CHECK,
        "--yes",
        "--unsafe",
        "--root",
        str(root),
        "--state-dir",
        str(state),
        netns=lab.node,
    )


def load_nft(lab: Lab, *names: str) -> None:
    for name in names:
        lab.on_node("nft", "-f", str(NFT / name))


def script(table: str, properties: str, *rules: str, chain: str = "input") -> str:
    """An nft script of one table with one chain."""
    body = "".join(f"\t\t{line}\n" for line in (properties, *rules) if line)
    return f"table {table} {{\n\tchain {chain} {{\n{body}\t}}\n}}\n"


def nft_table(lab: Lab, family: str, name: str) -> str:
    return lab.on_node("nft", "list", "table", family, name)


# ---------------------------------------------------------------------------------------
# Native nftables against the kernel
# ---------------------------------------------------------------------------------------


@pytest.mark.root
def test_firewalld_nftables_reject_is_found_and_the_kernel_agrees(lab: Lab, tmp_path: Path) -> None:
    load_nft(lab, "firewalld-rhel9.nft")
    code, result = live_check(lab, node_root(tmp_path))
    kernel = lab.connect_all()
    assert kernel["tcp/10250 kubelet"] == "prohibited"
    assert code == 2 and result["status"] == "fail"
    assert_agrees(kernel, result, may_warn={"forwarded pod traffic -i weave"})
    kubelet = next(f for f in result["findings"] if "tcp/10250 kubelet" in f["evidence"]["blocks"])
    evidence = kubelet["evidence"]
    assert (evidence["backend"], evidence["family"], evidence["table"]) == (
        "nftables",
        "inet",
        "firewalld",
    )
    assert (evidence["chain"], evidence["hook"], evidence["priority"]) == (
        "filter_INPUT",
        "input",
        10,
    )
    assert evidence["owner"] == "firewalld"
    assert evidence["rule"] == "reject with icmpx admin-prohibited"
    handle = evidence["handle"]
    assert (
        f"# handle {handle}"
        in lab.on_node("nft", "-a", "list", "chain", "inet", "firewalld", "filter_INPUT")
        .split("reject with icmpx admin-prohibited")[1]
        .splitlines()[0]
    )
    # The fix goes through firewalld, never behind its back.
    plan = result["fix"]["plan"]
    assert any(line.startswith("firewall-cmd --permanent --add-port=10250/tcp") for line in plan)
    assert not any(line.startswith("nft delete") for line in plan)


@pytest.mark.root
@pytest.mark.parametrize(
    "sources",
    [
        ("firewalld-rhel9-kubernetes-ports.nft",),
        ("debian12-nftables.conf", "kube-proxy-nftables.nft"),
        ("firewalld-rhel9-kubernetes-ports.nft", "kube-proxy-nftables.nft"),
    ],
)
def test_healthy_nft_mode_nodes_are_ok(lab: Lab, tmp_path: Path, sources: tuple[str, ...]) -> None:
    load_nft(lab, *sources)
    code, result = live_check(lab, node_root(tmp_path, "debian12-nftables.conf"))
    kernel = lab.connect_all()
    assert set(kernel.values()) == {"open"}
    assert result["status"] == "ok", result
    assert code == 0
    assert "native nftables" in result["summary"]
    assert_agrees(kernel, result)


@pytest.mark.root
def test_kube_proxy_table_is_its_own_call_firewalld_still_blocks(lab: Lab, tmp_path: Path) -> None:
    load_nft(lab, "kube-proxy-nftables.nft", "firewalld-rhel9.nft")
    _, result = live_check(lab, node_root(tmp_path))
    assert_agrees(lab.connect_all(), result, may_warn={"forwarded pod traffic -i weave"})
    assert {f["evidence"]["table"] for f in result["findings"]} == {"firewalld"}


@pytest.mark.root
def test_debian_drop_policy_rule_times_out_and_kdoctor_says_drop(lab: Lab, tmp_path: Path) -> None:
    load_nft(lab, "debian-workstation.nft")
    _, result = live_check(lab, node_root(tmp_path, "debian-workstation.nft"))
    kernel = lab.connect_all()
    assert kernel["tcp/6443 API server"] == "timeout"
    assert_agrees(kernel, result)
    (finding,) = result["findings"]
    assert finding["evidence"]["owner"] == "the distro's nftables.conf (/etc/nftables.conf)"
    assert finding["evidence"]["verdict"] == "drop"


@pytest.mark.root
def test_accept_in_an_early_base_chain_does_not_save_it_from_a_later_one(
    lab: Lab, tmp_path: Path
) -> None:
    lab.on_node(
        "nft",
        "-f",
        "-",
        stdin=script(
            "inet early", "type filter hook input priority -50;", "tcp dport 10250 accept"
        ),
    )
    lab.on_node(
        "nft",
        "-f",
        "-",
        stdin=script(
            "inet late",
            "type filter hook input priority 50;",
            "tcp dport 10250 reject with tcp reset",
        ),
    )
    _, result = live_check(lab, node_root(tmp_path))
    kernel = lab.connect_all()
    assert kernel["tcp/10250 kubelet"] == "refused"
    assert_agrees(kernel, result)
    (finding,) = result["findings"]
    assert finding["evidence"]["table"] == "late"


@pytest.mark.root
def test_a_rule_kdoctor_cannot_evaluate_is_a_warning_never_ok(lab: Lab, tmp_path: Path) -> None:
    # A raw payload match: the low byte of the destination port (10250 is 0x280a). nft
    # prints `@th,16,16` as `th dport`, which is evaluated; this one it cannot name either.
    lab.on_node(
        "nft",
        "-f",
        "-",
        stdin=script("inet local", "type filter hook input priority 0;", "@th,24,8 0x0a drop"),
    )
    code, result = live_check(lab, node_root(tmp_path))
    kernel = lab.connect_all()
    assert kernel["tcp/10250 kubelet"] == "timeout"
    assert result["status"] == "warn" and code == 1
    assert_agrees(kernel, result, may_warn=set(kernel))
    (finding,) = result["findings"]
    assert "raw payload expression" in finding["message"]
    assert finding["evidence"]["table"] == "local" and finding["evidence"]["handle"] > 0


# ---------------------------------------------------------------------------------------
# iptables-nft and iptables-legacy beside native tables
# ---------------------------------------------------------------------------------------

KUBE_LEGACY = FIXTURES / "nftables" / "kubeadm-split-legacy.rules"
RHEL_NFT = FIXTURES / "nftables" / "kubeadm-split-nft.rules"


@pytest.mark.root
def test_kubeadm_node_with_rules_in_both_iptables_backends(lab: Lab, tmp_path: Path) -> None:
    lab.on_node("iptables-legacy-restore", stdin=KUBE_LEGACY.read_text())
    lab.on_node("iptables-nft-restore", stdin=RHEL_NFT.read_text())
    _, result = live_check(lab, node_root(tmp_path))
    kernel = lab.connect_all()
    assert kernel["tcp/10250 kubelet"] == "prohibited"
    assert_agrees(kernel, result)
    backends = {f["evidence"]["backend"] for f in result["findings"]}
    assert backends == {"iptables-nft"}
    # iptables-nft rules are nft rules too: each finding names the handle nft shows.
    listing = lab.on_node("nft", "-a", "list", "chain", "ip", "filter", "INPUT")
    for finding in result["findings"]:
        if finding["evidence"]["chain"] == "INPUT":
            assert finding["evidence"]["family"] == "ip"
            assert f"host-prohibited # handle {finding['evidence']['handle']}" in listing
    # Judged once, by the iptables evaluation, not a second time from nft's view of it.
    assert not any(
        f["evidence"].get("table") == "filter" and f["evidence"]["backend"] == "nftables"
        for f in result["findings"]
    )


@pytest.mark.root
def test_legacy_reject_beside_native_kube_proxy(lab: Lab, tmp_path: Path) -> None:
    load_nft(lab, "kube-proxy-nftables.nft")
    lab.on_node("iptables-legacy-restore", stdin=RHEL_NFT.read_text())
    _, result = live_check(lab, node_root(tmp_path))
    assert_agrees(lab.connect_all(), result)
    assert {f["evidence"]["backend"] for f in result["findings"]} == {"iptables-legacy"}


@pytest.mark.root
def test_native_table_iptables_calls_incompatible_is_judged_natively(
    lab: Lab, tmp_path: Path
) -> None:
    lab.on_node(
        "nft",
        "-f",
        "-",
        stdin=script(
            "ip filter",
            "type filter hook input priority 0;",
            "tcp dport { 6443, 10250 } reject",
            chain="INPUT",
        ),
    )
    assert "incompatible" in lab.on_node("iptables-nft-save")
    _, result = live_check(lab, node_root(tmp_path))
    assert_agrees(lab.connect_all(), result)
    (finding,) = result["findings"]
    assert finding["evidence"]["backend"] == "nftables"
    assert finding["evidence"]["table"] == "filter"


# ---------------------------------------------------------------------------------------
# The fix on a native rule: delete by handle, persist in nftables.conf, roll back
# ---------------------------------------------------------------------------------------


@pytest.mark.root
def test_fix_deletes_the_native_rule_and_edits_nftables_conf(lab: Lab, tmp_path: Path) -> None:
    load_nft(lab, "debian-workstation.nft")
    root = node_root(tmp_path, "debian-workstation.nft")
    conf = root / "etc" / "nftables.conf"
    conf.chmod(0o755)
    original = conf.read_text()
    state = tmp_path / "state"
    proc = live_fix(lab, root, state)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "counter drop" not in nft_table(lab, "inet", "filter")
    assert set(lab.connect_all().values()) == {"open"}
    # Edited in place: exactly the one line gone, every other byte and the mode kept.
    expected = "".join(
        line for line in original.splitlines(keepends=True) if line.strip() != "counter drop"
    )
    assert conf.read_text() == expected
    assert conf.stat().st_mode & 0o777 == 0o755
    # The file now loads into the same ruleset the fix left live.
    lab.on_node("nft", "-c", "-f", str(conf))
    assert [e["outcome"] for e in read_journal(state)] == ["applied"]
    code, result = live_check(lab, root)
    assert result["status"] == "ok" and code == 0


@pytest.mark.root
def test_fix_rolls_back_the_table_exactly_when_the_recheck_fails(lab: Lab, tmp_path: Path) -> None:
    rules = script(
        "inet filter",
        "type filter hook input priority 0; policy drop;",
        'iifname "lo" accept',
        "tcp dport 10250 counter reject",
    )
    root = node_root(tmp_path)
    conf = root / "etc" / "nftables.conf"
    conf.write_text("#!/usr/sbin/nft -f\n\nflush ruleset\n\n" + rules)
    lab.on_node("nft", "-f", "-", stdin=rules)
    kernel_before = lab.connect_all()
    before = nft_table(lab, "inet", "filter")  # counters included, after the probes' packets
    conf_before = conf.read_text()
    state = tmp_path / "state"
    proc = live_fix(lab, root, state)
    # The reject goes, but the drop policy (which kdoctor leaves to a human) still blocks:
    # the re-check fails and everything comes back as it was.
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert nft_table(lab, "inet", "filter") == before
    assert conf.read_text() == conf_before
    assert lab.connect_all() == kernel_before
    assert [e["outcome"] for e in read_journal(state)] == ["rolled-back"]


@pytest.mark.root
def test_fix_refuses_a_handle_that_now_names_another_rule(lab: Lab, tmp_path: Path) -> None:
    from doctor.core.context import FixContext
    from doctor.facts.cluster import NoCluster
    from doctor.facts.node import LiveNodeFacts
    from fixes.nft import DeleteNftRule

    lab.on_node("nft", "-f", "-", stdin=script("inet t", "", "tcp dport 1 accept", chain="c"))
    listing = json.loads(lab.on_node("nft", "-j", "list", "chain", "inet", "t", "c"))
    (handle,) = [i["rule"]["handle"] for i in listing["nftables"] if "rule" in i]
    action = DeleteNftRule("inet", "t", "c", handle, ({"drop": None},), "drop")
    ctx = FixContext(node=LiveNodeFacts(), cluster=NoCluster("n/a"), runner=NsRunner(lab.node))
    with pytest.raises(Exception, match="is now another rule"):
        action.apply(ctx)
    assert "tcp dport 1 accept" in nft_table(lab, "inet", "t")


class NsRunner(CommandRunner):
    """The fix's command runner, with every command run inside the lab's node namespace."""

    def __init__(self, ns: str) -> None:
        super().__init__()
        self.ns = ns

    def run(self, argv: list[str], stdin: str | None = None) -> str:
        return super().run(["ip", "netns", "exec", self.ns, *argv], stdin=stdin)


# ---------------------------------------------------------------------------------------
# Bundles (no root): the JSON nft printed for the same rule sets
# ---------------------------------------------------------------------------------------


def nft_bundle(tmp_path: Path, nft_json: str, extra: dict[str, str] | None = None) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "commands").mkdir(parents=True)
    (bundle / "commands" / "nft-ruleset.json").write_text(nft_json)
    for relative, text in (extra or {}).items():
        path = bundle / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (bundle / "kdoctor-bundle.json").write_text(
        '{"format": "kdoctor-bundle", "version": 1, "node": "n1", '
        '"collected_at": "2026-12-01T10:00:00Z"}'
    )
    return bundle


def bundle_result(bundle: Path) -> tuple[int, dict[str, Any]]:
    code, report = check_json("--scope", "node", "--only", CHECK, "--bundle", str(bundle))
    return code, result_of(report, CHECK)


def test_bundle_firewalld_fails_naming_backend_table_chain_handle_owner(tmp_path: Path) -> None:
    code, result = bundle_result(nft_bundle(tmp_path, (NFT / "firewalld-rhel9.json").read_text()))
    assert code == 2
    fails = [f for f in result["findings"] if f["severity"] == "fail"]
    assert {(f["evidence"]["chain"], f["evidence"]["handle"]) for f in fails} == {
        ("filter_INPUT", 59),
        ("filter_FORWARD", 71),
    }
    for finding in result["findings"]:
        assert {"backend", "family", "table", "chain", "handle", "owner"} <= set(
            finding["evidence"]
        )


def test_bundle_healthy_kube_proxy_nftables_mode_is_ok(tmp_path: Path) -> None:
    code, result = bundle_result(
        nft_bundle(tmp_path, (NFT / "kube-proxy-nftables.json").read_text())
    )
    assert (code, result["status"]) == (0, "ok")
    assert "ip kube-proxy (kube-proxy (nftables mode))" in result["summary"]


def test_bundle_nft_output_that_is_not_json_is_an_error(tmp_path: Path) -> None:
    bundle = nft_bundle(tmp_path, (NFT / "firewalld-rhel9.nft").read_text())
    code, result = bundle_result(bundle)
    assert (code, result["status"]) == (3, "error")
    assert "commands/nft-ruleset.json: not JSON" in result["summary"]
    assert "line 1 column 1" in result["summary"]


def test_bundle_unknown_expression_is_a_warning_naming_the_rule(tmp_path: Path) -> None:
    doc = json.loads((NFT / "debian12-nftables.json").read_text())
    doc["nftables"].append(
        {
            "rule": {
                "family": "inet",
                "table": "filter",
                "chain": "input",
                "handle": 42,
                "expr": [{"quantum-state": {"spin": "up"}}, {"drop": None}],
            }
        }
    )
    code, result = bundle_result(nft_bundle(tmp_path, json.dumps(doc)))
    assert (code, result["status"]) == (1, "warn")
    (finding,) = result["findings"]
    assert "unknown expression 'quantum-state'" in finding["message"]
    assert "inet filter input handle 42" in finding["message"]


def test_bundle_without_iptables_or_nft_skips(tmp_path: Path) -> None:
    bundle = nft_bundle(tmp_path, "")
    (bundle / "commands" / "nft-ruleset.json").unlink()
    _, result = bundle_result(bundle)
    assert result["status"] == "skip"
    assert "nft-ruleset.json" in result["summary"]


def test_bundle_dry_run_plan_for_a_native_rule(tmp_path: Path) -> None:
    bundle = nft_bundle(
        tmp_path,
        (NFT / "debian-workstation.json").read_text(),
        {"host/etc/nftables.conf": (NFT / "debian-workstation.nft").read_text()},
    )
    _, checked = bundle_result(bundle)
    plan = checked["fix"]["plan"]
    assert plan[0].startswith("nft list ruleset > BACKUP/")
    assert plan[1] == "nft delete rule inet filter input handle 8   # counter drop"
    assert "-\t\tcounter drop" in plan


@pytest.mark.root
def test_collect_writes_every_backend_and_the_bundle_decides_as_live(
    lab: Lab, tmp_path: Path
) -> None:
    load_nft(lab, "firewalld-rhel9.nft")
    lab.on_node("iptables-legacy-restore", stdin=KUBE_LEGACY.read_text())
    root = node_root(tmp_path, "debian12-nftables.conf")
    bundle = tmp_path / "collected"
    proc = kdoctor("collect", str(bundle), "--scope", "node", "--root", str(root), netns=lab.node)
    assert proc.returncode == 0, proc.stderr
    commands = bundle / "commands"
    nft_json = json.loads((commands / "nft-ruleset.json").read_text())
    assert any(item.get("table", {}).get("name") == "firewalld" for item in nft_json["nftables"])
    assert "-A KUBE-FIREWALL" in (commands / "iptables-legacy-save.txt").read_text()
    assert (commands / "iptables-nft-save.txt").exists()
    assert (bundle / "host" / "etc" / "nftables.conf").exists()
    _, live = live_check(lab, root)
    _, from_bundle = bundle_result(bundle)
    assert from_bundle["status"] == live["status"] == "fail"
    assert [f["message"] for f in from_bundle["findings"]] == [
        f["message"] for f in live["findings"]
    ]


def test_firewalld_fix_goes_through_firewall_cmd_and_undoes_itself(tmp_path: Path) -> None:
    from checks.node_iptables_reject import IptablesReject
    from doctor.core.context import CheckContext
    from doctor.core.runner import run_one
    from doctor.facts.cluster import NoCluster
    from doctor.facts.node import BundleNodeFacts
    from fixes.base import Command

    bundle = nft_bundle(tmp_path, (NFT / "firewalld-rhel9.json").read_text())
    ctx = CheckContext(node=BundleNodeFacts(bundle), cluster=NoCluster("n/a"))
    result = run_one(IptablesReject, ctx)
    assert result.fix is not None
    commands = [a for a in result.fix.actions if isinstance(a, Command)]
    assert [c.argv for c in commands] == [
        [
            "firewall-cmd",
            "--permanent",
            "--add-port=10250/tcp",
            "--add-port=2379/tcp",
            "--add-port=2380/tcp",
            "--add-port=6443/tcp",
            "--add-port=6783/tcp",
            "--add-port=6783/udp",
            "--add-port=6784/udp",
        ],
        ["firewall-cmd", "--permanent", "--zone=trusted", "--add-interface=weave"],
        ["firewall-cmd", "--reload"],
    ]
    assert commands[0].undo_argvs[0][2:] == [
        arg.replace("--add-", "--remove-") for arg in commands[0].argv[2:]
    ]
    assert commands[1].undo_argvs == [
        ["firewall-cmd", "--permanent", "--zone=trusted", "--remove-interface=weave"],
        ["firewall-cmd", "--reload"],
    ]
    # Nothing in firewalld's table is touched directly.
    assert all(
        type(a).__name__ not in ("DeleteNftRule", "SnapshotNftTable") for a in result.fix.actions
    )
