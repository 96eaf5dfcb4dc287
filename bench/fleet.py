"""``kdoctor fleet`` at scale: prints figures, asserts nothing.

    .venv/bin/python bench/fleet.py [--nodes 500] [--concurrency 16]

The cluster is bench/scalegen.py's (3 tainted control-plane nodes, one node not posting
status, kube-proxy + calico-node on every node). The test API server's node farm runs the
DaemonSet as a kubelet would, in its light mode: pods go Running at once and each exec is
answered by a FAKE agent (no namespaces, no processes: a bundle packed by the real
``doctor.fleet.agent.pack`` with an iptables-save and a reachability.json where every port is
open, except that control-plane node 0 REJECTs 6443 with icmp-host-prohibited). Everything on
fleet's side is real: the objects it applies, the pod polling, one WebSocket exec per node,
unpacking, the node checks per node, the cluster checks once, the report.

Figures: wall time, API requests (total, per node, by verb; list calls by path), peak RSS
of the ``kdoctor fleet`` process, the report's size.
"""

from __future__ import annotations

import argparse
import collections
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

IPTABLES_OK = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n"
IPTABLES_REJECT = (
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    "-A INPUT -p tcp -m tcp --dport 6443 -j REJECT --reject-with icmp-host-prohibited\n"
    "COMMIT\n"
)


def fake_agent(blocked: str) -> object:
    """The light agent: the bundle a real agent would print, built without touching a host."""
    from doctor.fleet.agent import pack

    def answer(node: str, command: list[str]) -> bytes:
        targets = json.loads(command[command.index("--targets") + 1])
        entries = []
        for t in targets:
            for port in t["ports"]:
                result = "prohibited" if (t["node"] == blocked and port == 6443) else "open"
                entries.append({"to": t["node"], "ip": t["ip"], "port": port, "proto": "tcp",
                                "result": result, "ms": 0.4})  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            (out / "commands").mkdir()
            (out / "host/etc").mkdir(parents=True)
            (out / "host/etc/os-release").write_text('NAME="fake agent"\n')
            rules = IPTABLES_REJECT if node == blocked else IPTABLES_OK
            (out / "commands/iptables-save.txt").write_text(rules)
            (out / "commands/reachability.json").write_text(json.dumps(entries))
            (out / "kdoctor-bundle.json").write_text(
                json.dumps({"format": "kdoctor-bundle", "version": 1, "node": node})
            )
            return pack(out).encode()

    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    from scale import run_measured
    from scalegen import Cluster, load_into

    from tests.apiserver import ApiServer
    from tests.apiserver.nodefarm import NodeFarm

    started = time.perf_counter()
    cluster = Cluster(args.nodes, args.nodes * 2 + 2)
    server = ApiServer(None, tls=True)
    load_into(server, cluster)
    server.version = json.loads(
        (REPO / "fixtures/bundles/modern-coredns/cluster/version.json").read_text()
    )["serverVersion"] | {"gitVersion": "v1.29.4"}
    nodes = sorted(str(n["metadata"]["name"]) for n in server.store.list("v1", "nodes"))
    control = sorted(
        str(n["metadata"]["name"])
        for n in server.store.list("v1", "nodes")
        if "node-role.kubernetes.io/control-plane" in (n["metadata"].get("labels") or {})
    )
    blocked = control[0] if control else nodes[0]
    tmp = Path(tempfile.mkdtemp(prefix="kdoctor-bench-fleet-"))
    try:
        with NodeFarm(server, light_agent=fake_agent(blocked)) as farm:  # type: ignore[arg-type]
            print(
                f"== kdoctor fleet, {len(nodes)} simulated nodes (light fake agents), "
                f"concurrency {args.concurrency}; "
                f"set up in {time.perf_counter() - started:.1f} s =="
            )
            kubeconfig = server.write_kubeconfig(tmp / "kubeconfig")
            server.requests.clear()
            argv = [sys.executable, "-m", "doctor", "fleet", "--kubeconfig", str(kubeconfig),
                    "--format", "json", "--timeout", "600",
                    "--concurrency", str(args.concurrency)]  # fmt: skip
            wall, rss, code, text = run_measured(argv)
            requests = list(server.requests)
            assert not farm.errors, farm.errors
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report = json.loads(text) if text.strip() else {}
    checks = report.get("checks", [])
    by_verb = collections.Counter(r.verb for r in requests)
    lists = collections.Counter(r.path for r in requests if r.verb == "list")
    execs = sum(1 for r in requests if r.path.endswith("/exec"))
    n = len(nodes)
    print(f"wall time            {wall:6.1f} s   (exit {code})")
    print(f"peak RSS of fleet    {rss:6.0f} MB")
    print(f"API requests         {len(requests)} total, {len(requests) / n:.2f} per node")
    print(f"  exec               {execs} ({execs / n:.2f} per node)")
    print("  by verb            " + ", ".join(f"{v} {c}" for v, c in sorted(by_verb.items())))
    print(f"  without the exec   {(len(requests) - execs) / n:.2f} per node")
    print("  list calls         " + ", ".join(f"{p} x{c}" for p, c in sorted(lists.items())))
    print("  from agents        0 (the fake agents make none; real agents have no token)")
    node_rows = [c for c in checks if c.get("node")]
    print(f"report               {len(checks)} check results ({len(node_rows)} node rows, "
          f"{len(checks) - len(node_rows)} cluster), {len(text) / 1e6:.1f} MB JSON")  # fmt: skip
    ports = next((c for c in checks if c["id"] == "cluster.node-ports"), None)
    if ports:
        print(f"cluster.node-ports   {ports['status']}: {ports['summary']}")
        for f in ports["findings"][:2]:
            print(f"  {f['message'][:160]}")


if __name__ == "__main__":
    main()
