"""The bad-input corpus of node.containerd.drift and node.kernel: one broken fact per bundle
makes that check ``error`` naming the file and the line, and the other node checks still run."""

from __future__ import annotations

import re

import pytest

from tests.conftest import BAD_INPUT, check_json, result_of

CASES = [
    (check_id, case.name)
    for check_id in ("node.containerd.drift", "node.kernel")
    for case in sorted((BAD_INPUT / check_id).iterdir())
]
WHERE = re.compile(r"^(/[\w./-]+|commands/[\w.-]+):\d+: ")


@pytest.mark.parametrize(("check_id", "case"), CASES)
def test_broken_fact_is_an_error_naming_file_and_line(check_id: str, case: str) -> None:
    _code, report = check_json("--bundle", str(BAD_INPUT / check_id / case), "--scope", "node")
    result = result_of(report, check_id)
    assert result["status"] == "error", result
    assert WHERE.match(result["summary"]), result["summary"]
    others = [c for c in report["checks"] if c["id"] != check_id]
    assert others and all(c["status"] != "error" or "kubelet" in c["summary"] for c in others)


def test_corpus_covers_toml_yaml_and_flags() -> None:
    names = {case for _, case in CASES}
    assert {
        "config-toml-unclosed-table",
        "import-duplicate-key",
        "hosts-toml-unterminated-string",
        "kubelet-config-bad-indent",
        "dump-not-toml",
        "kubelet-flags-unbalanced-quote",
    } <= names
