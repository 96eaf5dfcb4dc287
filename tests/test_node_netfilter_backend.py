"""node.netfilter.backend: rules split between iptables-legacy and iptables-nft, and tables
iptables cannot list, with the kernel showing why it matters.

Live cases build the split in the node namespace of :mod:`tests.netfilter_lab` with Debian's
iptables-legacy and iptables-nft, run kdoctor there, and connect through the ruleset: the
kernel refuses the kubelet although the backend holding Kubernetes' chains shows nothing
that would. The manual fix's commands are then run as a human would, and afterwards the
check is ok, every rule is in one listing and the kernel does the same as before.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BAD_INPUT, FIXTURES, check_json, require_root_tools, result_of
from tests.netfilter_lab import Lab, netfilter_lab

CHECK = "node.netfilter.backend"
KUBE_LEGACY = (FIXTURES / "nftables" / "kubeadm-split-legacy.rules").read_text()
RHEL_NFT = (FIXTURES / "nftables" / "kubeadm-split-nft.rules").read_text()


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_root_tools("ip", "nft", "iptables-nft-restore", "iptables-legacy-restore")
    with netfilter_lab() as created:
        yield created


def live(lab: Lab, tmp_path: Path, *checks: str) -> dict[str, Any]:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    _, report = check_json(
        "--scope",
        "node",
        "--only",
        ",".join(checks or (CHECK,)),
        "--root",
        str(root),
        netns=lab.node,
    )
    return report


def run_manual_steps(lab: Lab, plan: list[str], backup_dir: Path) -> None:
    """Run the plan's commands in the node namespace, as the user would paste them."""
    for line in plan:
        command = line.split("   #")[0].strip()
        if not command or command.startswith("#"):
            continue
        command = command.replace("/root/", f"{backup_dir}/")
        proc = subprocess.run(
            ["ip", "netns", "exec", lab.node, "sh", "-c", command], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"{command}: {proc.stderr}"


@pytest.mark.root
def test_kube_chains_in_legacy_reject_in_nft_fails_and_the_kernel_shows_why(
    lab: Lab, tmp_path: Path
) -> None:
    lab.on_node("iptables-legacy-restore", stdin=KUBE_LEGACY)
    lab.on_node("iptables-nft-restore", stdin=RHEL_NFT)
    report = live(lab, tmp_path)
    result = result_of(report, CHECK)
    assert result["status"] == "fail"
    (finding,) = result["findings"]
    evidence = finding["evidence"]
    assert (evidence["kube_backend"], evidence["backend"]) == ("iptables-legacy", "iptables-nft")
    assert "-A INPUT -j REJECT --reject-with icmp-host-prohibited" in evidence["blocking"]
    # What the legacy listing (the one holding Kubernetes' chains) shows blocks nothing...
    assert "REJECT" not in lab.on_node("iptables-legacy-save").split("*filter")[1]
    # ...yet the kernel refuses the kubelet: the other backend's rule is final.
    kernel = lab.connect_all()
    assert kernel["tcp/10250 kubelet"] == "prohibited"

    plan = result["fix"]["plan"]
    assert result["fix"]["safety"] == "manual"
    assert plan[0].startswith("iptables-nft-save > /root/kdoctor-iptables-nft-save.rules")
    assert "iptables-nft-save -t filter | iptables-legacy-restore --noflush" in plan[1]
    assert "iptables-nft -t filter -F && iptables-nft -t filter -X" in plan

    backups = tmp_path / "backups"
    backups.mkdir()
    run_manual_steps(lab, plan, backups)
    assert "REJECT" in (backups / "kdoctor-iptables-nft-save.rules").read_text()
    after = live(lab, tmp_path, CHECK, "node.iptables.reject")
    assert result_of(after, CHECK)["status"] == "ok"
    # Now the REJECT is in the same listing as the KUBE-* chains, and judged there.
    reject = result_of(after, "node.iptables.reject")
    assert {f["evidence"]["backend"] for f in reject["findings"]} == {"iptables-legacy"}
    assert lab.connect_all() == kernel
    assert "-A INPUT -j REJECT" not in lab.on_node("iptables-nft-save")


@pytest.mark.root
def test_table_written_by_nft_is_reported_incompatible(lab: Lab, tmp_path: Path) -> None:
    lab.on_node(
        "nft",
        "-f",
        "-",
        stdin="table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority 0;\n"
        "\t\ttcp dport { 6443, 10250 } reject\n\t}\n}\n",
    )
    result = result_of(live(lab, tmp_path), CHECK)
    assert result["status"] == "warn"
    tables = {(f["evidence"]["table"], f["evidence"]["source"]) for f in result["findings"]}
    assert ("filter", "iptables-nft-save") in tables
    # The iptables view is empty, the kernel still refuses.
    assert "-A INPUT" not in lab.on_node("iptables-nft-save")
    assert lab.connect_all()["tcp/10250 kubelet"] == "refused"


@pytest.mark.root
@pytest.mark.parametrize("restore", ["iptables-nft-restore", "iptables-legacy-restore"])
def test_everything_in_one_backend_is_ok(lab: Lab, tmp_path: Path, restore: str) -> None:
    lab.on_node(restore, stdin=KUBE_LEGACY)
    result = result_of(live(lab, tmp_path), CHECK)
    assert result["status"] == "ok", result
    assert restore.removesuffix("-restore") in result["summary"]


@pytest.mark.root
def test_no_rules_anywhere_is_ok(lab: Lab, tmp_path: Path) -> None:
    result = result_of(live(lab, tmp_path), CHECK)
    assert result["status"] == "ok"
    assert result["summary"].startswith("no iptables rules in any backend")


@pytest.mark.root
def test_kube_chains_in_both_backends_warns(lab: Lab, tmp_path: Path) -> None:
    lab.on_node("iptables-legacy-restore", stdin=KUBE_LEGACY)
    lab.on_node("iptables-nft", "-t", "filter", "-N", "KUBE-KUBELET-CANARY")
    result = result_of(live(lab, tmp_path), CHECK)
    assert result["status"] == "warn"
    assert "in both iptables-legacy and iptables-nft" in result["findings"][0]["message"]


def bundle(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "bundle"
    for name, text in files.items():
        path = root / "commands" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / "kdoctor-bundle.json").write_text(
        '{"format": "kdoctor-bundle", "version": 1, "node": "n1", '
        '"collected_at": "2026-12-01T10:00:00Z"}'
    )
    return root


def bundle_result(path: Path) -> tuple[int, dict[str, Any]]:
    code, report = check_json("--scope", "node", "--only", CHECK, "--bundle", str(path))
    return code, result_of(report, CHECK)


def test_bundle_split_fails_with_the_commands(tmp_path: Path) -> None:
    code, result = bundle_result(
        bundle(
            tmp_path, {"iptables-legacy-save.txt": KUBE_LEGACY, "iptables-nft-save.txt": RHEL_NFT}
        )
    )
    assert (code, result["status"]) == (2, "fail")
    assert all(shlex.split(line) for line in result["fix"]["plan"])


def test_bundle_without_either_backend_skips(tmp_path: Path) -> None:
    _, result = bundle_result(bundle(tmp_path, {"iptables-save.txt": RHEL_NFT}))
    assert result["status"] == "skip"
    assert "iptables-legacy-save" in result["summary"]


def test_bundle_garbled_backend_output_is_an_error(tmp_path: Path) -> None:
    code, result = bundle_result(
        bundle(
            tmp_path,
            {"iptables-legacy-save.txt": "*filter\n-A INPUT -j\n", "iptables-nft-save.txt": ""},
        )
    )
    assert (code, result["status"]) == (3, "error")
    assert "commands/iptables-legacy-save.txt: line 2" in result["summary"]


BAD_CASES = {
    "garbled-legacy": "commands/iptables-legacy-save.txt: line 2: -j without a target",
    "truncated-nft": "commands/iptables-nft-save.txt: line 12: input ends mid-line",
    "binary-legacy": "commands/iptables-legacy-save.txt: binary data",
}


def test_bad_input_corpus_is_complete() -> None:
    assert {p.name for p in (BAD_INPUT / CHECK).iterdir()} == set(BAD_CASES)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_is_an_error_naming_file_and_reason(case: str) -> None:
    code, result = bundle_result(BAD_INPUT / CHECK / case)
    assert (code, result["status"]) == (3, "error")
    assert result["summary"].startswith(BAD_CASES[case])
