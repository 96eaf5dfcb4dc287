"""kdoctor benchmarks: print figures, assert nothing.

    .venv/bin/python bench/bench.py [--pods 20000] [--runs 5]

1. Start-up of a node-only run, and what it imports (kubernetes/textual must be absent).
2. Listing a large kube-system pod list from the test API server: kdoctor's raw paginated
   read vs the kubernetes client's typed models vs `kubectl get -o json`, with ratios.
3. A whole `kdoctor check --scope cluster` against that server vs `kubectl get pods -A -o json`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
BUNDLE = REPO / "fixtures" / "bundles"


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median and min wall time of ``runs`` calls, in seconds."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples), min(samples)


def _cached_bytecode_env() -> dict[str, str]:
    """An installed kdoctor has its bytecode compiled; PYTHONDONTWRITEBYTECODE (set in some
    sandboxes) would make every run recompile ~40 modules (~0.15 s) and skew the figures."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "doctor", *args], capture_output=True, text=True, cwd=REPO,
        env={**_cached_bytecode_env(), **(env or {})}, check=False,
    )  # fmt: skip


def bench_startup(runs: int) -> None:
    print("== node-only run (bundle centos7-iptables-services, --scope node) ==")
    bundle = str(BUNDLE / "centos7-iptables-services")
    run_cli("check", "--scope", "node", "--bundle", bundle, "--json")  # writes the bytecode
    med, best = timed(
        lambda: run_cli("check", "--scope", "node", "--bundle", bundle, "--json"), runs
    )
    print(f"kdoctor check --scope node: median {med * 1000:.0f} ms, best {best * 1000:.0f} ms")
    bare, _ = timed(lambda: subprocess.run([sys.executable, "-c", "pass"], check=True), runs)
    print(f"python -c pass:            median {bare * 1000:.0f} ms (interpreter floor)")
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "doctor", "check", "--scope", "node",
         "--bundle", bundle, "--json"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    rows = []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            parts = [p.strip() for p in line.split(":", 1)[1].split("|")]
            if parts[1].isdigit():
                rows.append((int(parts[1]), parts[2]))
    top = [r for r in sorted(rows, reverse=True) if not r[1].startswith(" ")][:8]
    print("largest top-level imports (cumulative µs):")
    for micros, name in top:
        print(f"  {micros:>8}  {name.strip()}")
    heavy = [
        name.strip() for _, name in rows if name.strip().split(".")[0] in ("kubernetes", "textual")
    ]
    print(f"kubernetes/textual imported: {'YES ' + str(heavy[:3]) if heavy else 'no'}")


def make_large_bundle(pods: int) -> Path:
    """seed-lab-healthy with ``pods`` extra kube-system pods (copies of a real pod)."""
    out = Path(tempfile.mkdtemp(prefix="kdoctor-bench-"))
    shutil.copytree(BUNDLE / "seed-lab-healthy", out / "b")
    path = out / "b" / "cluster" / "pods.json"
    doc = json.loads(path.read_text())
    template = next(p for p in doc["items"] if p["metadata"]["namespace"] == "kube-system")
    for i in range(pods):
        pod = copy.deepcopy(template)
        pod["metadata"]["name"] = f"bench-{i:06d}"
        pod["metadata"]["uid"] = f"00000000-0000-0000-0000-{i:012d}"
        pod["metadata"].pop("ownerReferences", None)
        doc["items"].append(pod)
    path.write_text(json.dumps(doc))
    return out / "b"


def bench_cluster(pods: int, runs: int) -> None:
    from doctor.facts.cluster import ClusterConfig
    from doctor.facts.kube import PODS, LiveCluster
    from tests.apiserver import ApiServer

    bundle = make_large_bundle(pods)
    try:
        with ApiServer(bundle) as server:
            kcfg = server.write_kubeconfig(bundle.parent / "kubeconfig")
            print(f"\n== list {pods} kube-system pods from the test API server (HTTPS) ==")
            config = ClusterConfig(Path(kcfg), None)

            def raw() -> int:
                cluster = LiveCluster(config, timeout=60)
                return len(cluster.list_objects(PODS, "kube-system"))

            def typed() -> int:
                from kubernetes import client
                from kubernetes import config as kconfig

                api = kconfig.new_client_from_config(config_file=str(kcfg))
                return len(client.CoreV1Api(api).list_namespaced_pod("kube-system").items)

            def kubectl() -> int:
                out = subprocess.run(
                    ["kubectl", "--kubeconfig", str(kcfg), "get", "pods", "-n", "kube-system",
                     "-o", "json"], capture_output=True, check=True,
                )  # fmt: skip
                return len(json.loads(out.stdout)["items"])

            raw()  # warm: imports and TLS set-up are not what we compare
            raw_t, _ = timed(raw, runs)
            print(f"kdoctor raw + json.loads, paginated (limit 500): {raw_t:.2f} s")
            typed_t, _ = timed(typed, max(1, runs // 2))
            print(
                f"kubernetes client typed models (one page):       {typed_t:.2f} s "
                f"({typed_t / raw_t:.1f}x kdoctor)"
            )
            if shutil.which("kubectl"):
                kubectl_t, _ = timed(kubectl, runs)
                print(
                    f"kubectl get pods -n kube-system -o json:        {kubectl_t:.2f} s "
                    f"({kubectl_t / raw_t:.1f}x kdoctor)"
                )
            print("\n== whole run: kdoctor check --scope cluster vs kubectl get pods -A -o json ==")
            # --no-probes: the test server has no kubelet, so probe pods would never start and
            # the pod-to-pod check would wait for them; what is compared here is API reading.
            whole, _ = timed(
                lambda: run_cli(
                    "check",
                    "--scope",
                    "cluster",
                    "--kubeconfig",
                    str(kcfg),
                    "--json",
                    "--no-probes",
                ),
                runs,
            )
            print(f"kdoctor check --scope cluster --no-probes:      {whole:.2f} s")
            if shutil.which("kubectl"):
                everything, _ = timed(lambda: subprocess.run(
                    ["kubectl", "--kubeconfig", str(kcfg), "get", "pods", "-A", "-o", "json"],
                    capture_output=True, check=True), runs)  # fmt: skip
                print(
                    f"kubectl get pods -A -o json (one list only):       {everything:.2f} s "
                    f"(ratio kdoctor/kubectl {whole / everything:.2f})"
                )
            lists = server.requests_matching(method="GET")
            print(f"requests made by the last kdoctor run + kubectl runs: {len(lists)}")
    finally:
        shutil.rmtree(bundle.parent, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pods", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bench_startup(args.runs)
    bench_cluster(args.pods, args.runs)


if __name__ == "__main__":
    main()
