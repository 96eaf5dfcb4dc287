"""kdoctor at scale: the whole cluster scope against a generated 5,000-node / 150,000-pod cluster.

    .venv/bin/python bench/scale.py [--size 5000x150000 --size 500x15000] [--runs 3]
                                    [--kdoctor-repo /work/main]

Prints figures and asserts nothing. For each size the test API server (tests/apiserver, in this
process, HTTPS on loopback) is loaded with the cluster of bench/scalegen.py, and in the same run,
one client after the other:

1. ``kdoctor check --scope cluster --no-probes --json``: wall time and the peak RSS of the kdoctor
   process (``wait4``), the requests it made (by the check that made them: kdoctor's User-Agent
   names it) and the bytes the server sent;
2. ``kubectl get pods -n kube-system -o json; kubectl get nodes -o json`` (what a human would
   type to look at the same things);
3. a plain paginated fetch (limit 500, http.client, one connection) + ``json.loads`` of those two
   lists in a fresh Python process: the floor for reading them.

The goal (issue 14): kdoctor <= 0.3 x the kubectl pair, peak RSS <= 250 MB, and the small size
under a second. ``--kdoctor-repo DIR`` runs another checkout's kdoctor too (main, before a change).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from scalegen import Cluster, load_into  # noqa: E402

PLAIN_FETCH = r"""
import http.client, json, ssl, sys, time
host, port, token, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ctx = ssl.create_default_context(cafile=ca)
conn = http.client.HTTPSConnection(host, port, context=ctx)
total = 0
for path in ("/api/v1/namespaces/kube-system/pods", "/api/v1/nodes"):
    token_ = ""
    while True:
        query = "?limit=500" + (f"&continue={token_}" if token_ else "")
        conn.request("GET", path + query, headers={"Authorization": f"Bearer {token}",
                                                   "Accept": "application/json"})
        doc = json.loads(conn.getresponse().read())
        total += len(doc["items"])
        token_ = doc["metadata"].get("continue") or ""
        if not token_:
            break
print(total)
"""


#: Runs argv and prints its peak RSS (KiB) on stderr's last line. ru_maxrss carries the RSS a
#: process had before execve, so a client forked straight from this process (which holds the
#: whole generated cluster) would report this process's size; one forked from this small
#: launcher reports its own.
LAUNCHER = r"""
import os, subprocess, sys
with open(sys.argv[1], "wb") as out:
    proc = subprocess.Popen(sys.argv[2:], stdout=out, stderr=subprocess.DEVNULL)
    _pid, status, usage = os.wait4(proc.pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, file=sys.stderr)
"""


def run_measured(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path = REPO
) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS MB, exit code, stdout) of one process."""
    with tempfile.NamedTemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", LAUNCHER, out.name, *argv],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - start
        code, rss_kib = (int(x) for x in proc.stderr.split()[-2:])
        text = Path(out.name).read_text(encoding="utf-8", errors="replace")
    return wall, rss_kib / 1024, code, text


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed kdoctor has its bytecode compiled
    return env


def _median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def _check_of(user_agent: str) -> str:
    """kdoctor names the check in its User-Agent: ``kdoctor/0.1.0 (check cluster.nodes)``."""
    if "(check " in user_agent:
        return user_agent.split("(check ", 1)[1].rstrip(")")
    if user_agent.startswith("kdoctor"):
        return "(start-up)"
    return user_agent.split("/", 1)[0] or "?"


def _request_line(record: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in sorted(record.query.items()) if k != "continue")
    return f"{record.path}?{query}" if query else record.path


def bench_size(nodes: int, pods: int, runs: int, other_repo: Path | None) -> dict[str, Any]:
    from tests.apiserver import ApiServer

    started = time.perf_counter()
    cluster = Cluster(nodes, pods)
    server = ApiServer(None, tls=True)
    load_into(server, cluster)
    server.version = json.loads(
        (REPO / "fixtures/bundles/modern-coredns/cluster/version.json").read_text()
    )["serverVersion"] | {"gitVersion": "v1.29.4"}
    server.start()
    print(
        f"\n== {nodes:,} nodes / {cluster.count('v1', 'pods'):,} pods "
        f"({cluster.count('v1', 'pods', 'kube-system'):,} in kube-system); "
        f"generated and loaded in {time.perf_counter() - started:.1f} s =="
    )
    figures: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="kdoctor-scale-") as tmp:
            kubeconfig = server.write_kubeconfig(Path(tmp) / "kubeconfig")
            # Warm the server's per-object encodings, as a real API server's watch cache is
            # warm: no client should pay for the first serialisation of an object.
            run_measured(
                [
                    sys.executable,
                    "-c",
                    PLAIN_FETCH,
                    "127.0.0.1",
                    str(server.port),
                    str(server.token),
                    str(server.ca_file),
                ]
            )
            kdoctor = [
                sys.executable,
                "-m",
                "doctor",
                "check",
                "--scope",
                "cluster",
                "--no-probes",
                "--json",
                "--kubeconfig",
                str(kubeconfig),
            ]
            clients: list[tuple[str, list[str], Path]] = [("kdoctor", kdoctor, REPO)]
            if other_repo is not None:
                python = other_repo / ".venv" / "bin" / "python"
                exe = str(python) if python.exists() else sys.executable
                clients.append((f"kdoctor ({other_repo})", [exe, *kdoctor[1:]], other_repo))
            kubectl = [
                "sh",
                "-c",
                f"kubectl --kubeconfig {kubeconfig} get pods -n kube-system "
                f"-o json >/dev/null && kubectl --kubeconfig {kubeconfig} get nodes "
                "-o json >/dev/null",
            ]
            plain = [
                sys.executable,
                "-c",
                PLAIN_FETCH,
                "127.0.0.1",
                str(server.port),
                str(server.token),
                str(server.ca_file),
            ]
            samples: dict[str, list[float]] = defaultdict(list)
            rss: dict[str, list[float]] = defaultdict(list)
            statuses: dict[str, dict[str, str]] = {}
            log: dict[str, list[Any]] = {}
            for _ in range(runs):
                for label, argv, cwd in clients:
                    server.clear_requests()
                    env = _env()
                    if cwd != REPO:
                        env["PYTHONPATH"] = str(cwd)
                    wall, peak, _code, out = run_measured(argv, env, cwd)
                    samples[label].append(wall)
                    rss[label].append(peak)
                    log[label] = server.requests
                    try:
                        report = json.loads(out)
                        statuses[label] = {
                            c["id"]: f"{c['status']} ({c['duration_ms']} ms)"
                            for c in report["checks"]
                        }
                    except (ValueError, KeyError):
                        statuses[label] = {"?": out[:200]}
                for label, argv in (("kubectl pair", kubectl), ("plain fetch", plain)):
                    wall, peak, _code, _out = run_measured(argv)
                    samples[label].append(wall)
                    rss[label].append(peak)
            kubectl_t = _median(samples["kubectl pair"])
            print(
                f"{'client':<44} {'wall (median of ' + str(runs) + ')':>20} {'peak RSS':>10} "
                f"{'x kubectl':>10}"
            )
            for label in [c[0] for c in clients] + ["kubectl pair", "plain fetch"]:
                t = _median(samples[label])
                print(f"{label:<44} {t:>18.2f} s {max(rss[label]):>7.0f} MB {t / kubectl_t:>9.2f}x")
                figures[label] = {"wall_s": t, "rss_mb": max(rss[label])}
            for label, _argv, _cwd in clients:
                print(f"\n{label}: requests by check (last run), bytes the server sent")
                by_check: Counter[str] = Counter()
                bytes_by: Counter[str] = Counter()
                for record in log[label]:
                    check = _check_of(record.user_agent)
                    by_check[check] += 1
                    bytes_by[check] += record.bytes_out
                for check, count in sorted(by_check.items()):
                    print(f"  {check:<36} {count:>5} requests {bytes_by[check] / 1e6:>9.1f} MB")
                total_bytes = sum(bytes_by.values())
                print(
                    f"  {'total':<36} {sum(by_check.values()):>5} requests "
                    f"{total_bytes / 1e6:>9.1f} MB"
                )
                paths = Counter(_request_line(r) for r in log[label])
                for path, count in sorted(paths.items()):
                    print(f"    {count:>4} x {path}")
                print("  verdicts: " + ", ".join(f"{k} {v}" for k, v in statuses[label].items()))
                figures[label]["requests"] = sum(by_check.values())
                figures[label]["bytes"] = total_bytes
    finally:
        server.stop()
    return figures


def serve(nodes: int, pods: int, kubeconfig: Path) -> None:
    from tests.apiserver import ApiServer

    server = ApiServer(None, tls=True)
    load_into(server, Cluster(nodes, pods))
    with server:
        server.write_kubeconfig(kubeconfig)
        print(f"serving {nodes} nodes / {pods} pods at {server.url}; kubeconfig {kubeconfig}")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--size", action="append", help="NODESxPODS (repeatable)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--kdoctor-repo", type=Path, help="also run the kdoctor of this checkout")
    parser.add_argument(
        "--serve", metavar="KUBECONFIG", type=Path,
        help="only serve the first --size, writing a kubeconfig for it (to profile a client)",
    )  # fmt: skip
    args = parser.parse_args()
    sizes = args.size or ["5000x150000", "500x15000"]
    if args.serve:
        serve(*(int(x) for x in sizes[0].lower().split("x")), args.serve)
        return
    results = {}
    for size in sizes:
        nodes, pods = (int(x) for x in size.lower().split("x"))
        results[size] = bench_size(nodes, pods, args.runs, args.kdoctor_repo)
    print("\n== goals (issue 14) ==")
    for size, fig in results.items():
        k, ref = fig["kdoctor"], fig["kubectl pair"]
        print(
            f"{size}: kdoctor {k['wall_s']:.2f} s = {k['wall_s'] / ref['wall_s']:.2f}x the kubectl "
            f"pair (goal <= 0.3x), peak RSS {k['rss_mb']:.0f} MB (goal <= 250 MB), "
            f"{k['requests']} requests, {k['bytes'] / 1e6:.1f} MB read"
        )


if __name__ == "__main__":
    main()
