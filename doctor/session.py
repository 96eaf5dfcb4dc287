"""The session a command runs in: which checks, what target (node, bundle, cluster), the
contexts checks and fixes receive. Shared by the CLI and the TUI, which both stand above it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from doctor.core.errors import UsageError
from doctor.core.model import CheckResult, Scope
from doctor.core.safetext import safe

if TYPE_CHECKING:
    from doctor.core.context import CheckContext, FixContext, Options
    from doctor.core.registry import Check, LoadFailure
    from doctor.core.report import Target
    from doctor.core.sources import ClusterFacts
    from doctor.live.probes import ProbeCluster
    from fixes.kube import KubeWriter


@dataclass
class Session:
    """Everything a command needs about the target, built once from the options."""

    checks: list[type[Check]]
    ctx_factory: Callable[[], CheckContext]  # fresh fact caches on each call
    target: Target
    #: Removes what the run's live probes created (doctor.live.probes); call when the run ends.
    cleanup: Callable[[], list[str]] = lambda: []


def registry_warnings(failures: Sequence[LoadFailure]) -> None:
    for failure in failures:
        print(
            f"kdoctor: warning: plugin {safe(failure.source)} failed to load: "
            f"{safe(failure.reason, single_line=True)}",
            file=sys.stderr,
        )


def select_checks(args: argparse.Namespace, explicit: Sequence[str] = ()) -> list[type[Check]]:
    from doctor.core.registry import discover

    registry = discover()
    registry_warnings(registry.failures)
    known = {c.id for c in registry.checks}
    wanted = list(args.only) + list(explicit)
    unknown = [i for i in [*wanted, *args.skip] if i not in known]
    if unknown:
        raise UsageError(
            f"unknown check id(s): {', '.join(unknown)}",
            "known checks: " + ", ".join(sorted(known)),
        )
    checks = list(registry.checks)
    if args.scope != "all":
        checks = [c for c in checks if c.scope.value == args.scope]
    if wanted:
        checks = [c for c in checks if c.id in wanted]
    checks = [c for c in checks if c.id not in args.skip]
    if not checks:
        given = [f"--scope {args.scope}"]
        given += [f"--only {','.join(args.only)}"] if args.only else []
        given += [f"--skip {','.join(args.skip)}"] if args.skip else []
        given += list(explicit)
        raise UsageError(
            f"no check selected: {' '.join(given)} leave(s) nothing to run",
            "`kdoctor list` shows every check with its scope",
        )
    return checks


def open_target(
    args: argparse.Namespace, checks: Sequence[type[Check]], with_probes: bool = True
) -> Session:
    """The session for ARGS. WITH_PROBES False: no probe pods (``fix`` runs create none)."""
    from doctor.core.context import CheckContext, Options
    from doctor.core.report import Target, live_node_name
    from doctor.core.sources import NodeFacts
    from doctor.facts.cluster import NoCluster, find_cluster_config
    from doctor.facts.node import BundleNodeFacts, LiveNodeFacts
    from doctor.facts.node_role import not_a_node_reason

    needs_cluster = any(c.scope is Scope.CLUSTER for c in checks)
    needs_node = any(c.scope is Scope.NODE for c in checks)
    options = Options(
        verbose=args.verbose,
        check_timeout=args.timeout,
        proxy_mode=getattr(args, "proxy_mode", None),
        cluster_domain=args.cluster_domain,
        live=not args.no_live,
        probes=not (args.no_live or args.no_probes),
        probe_nodes=args.probe_nodes,
        probe_image=args.probe_image,
        probe_pull_secret=args.probe_pull_secret,
    )
    if args.bundle is not None:
        bundle = args.bundle
        node_name = read_bundle_manifest(bundle)

        def cluster_of_bundle() -> ClusterFacts:
            from doctor.facts.kube import open_bundle_cluster

            return open_bundle_cluster(bundle) if needs_cluster else NoCluster("not needed")

        bundle_cluster = cluster_of_bundle()

        def bundle_ctx() -> CheckContext:
            node: NodeFacts = BundleNodeFacts(bundle)
            return CheckContext(
                node=node,
                cluster=bundle_cluster,
                options=options,
                not_a_node=not_a_node_reason(node) if needs_node else None,
            )

        target = Target(node=node_name, bundle=str(bundle), cluster=bundle_cluster.target)
        return Session(list(checks), bundle_ctx, target)

    if needs_cluster:
        config, where = find_cluster_config(args.kubeconfig, args.context, root=args.root)
        if config is None:
            cluster: ClusterFacts = NoCluster(where)
        else:
            from doctor.facts.kube import open_live_cluster

            # Each request gets at most 15 s; in a check run all of them together get the
            # run's --timeout (fix and tui wait for pods and re-check: no single deadline).
            deadline = None
            if getattr(args, "command", None) == "check":
                deadline = time.monotonic() + args.timeout
            cluster = open_live_cluster(config, timeout=min(args.timeout, 15.0), deadline=deadline)
    else:
        cluster = NoCluster("cluster checks not selected")

    root = args.root
    probes = probe_cluster(cluster, options) if with_probes else None

    def live_ctx() -> CheckContext:
        node: NodeFacts = LiveNodeFacts(root)
        return CheckContext(
            node=node,
            cluster=cluster,
            options=options,
            probes=probes,
            not_a_node=not_a_node_reason(node) if needs_node else None,
        )

    node_name = live_node_name() if root == Path("/") else f"{live_node_name()} (root {root})"
    return Session(
        list(checks),
        live_ctx,
        Target(node=node_name, bundle=None, cluster=cluster.target),
        cleanup=probes.cleanup if probes is not None else lambda: [],
    )


BUNDLE_HINT = (
    "a bundle is what `kdoctor collect DIR` writes (kdoctor-bundle.json, host/, commands/)"
)


def read_bundle_manifest(bundle: Path) -> str | None:
    """Check that BUNDLE is a kdoctor bundle (format version 1); its node name."""
    if not bundle.is_dir():
        raise UsageError(f"--bundle {bundle}: not a directory", BUNDLE_HINT)
    manifest_path = bundle / "kdoctor-bundle.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(
            f"--bundle {bundle}: not a kdoctor bundle (no kdoctor-bundle.json)", BUNDLE_HINT
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{manifest_path}: cannot be read: {exc}", BUNDLE_HINT) from exc
    except json.JSONDecodeError as exc:
        raise UsageError(f"{manifest_path}: invalid manifest: {exc}", BUNDLE_HINT) from exc
    if (
        not isinstance(manifest, dict)
        or manifest.get("format") != "kdoctor-bundle"
        or manifest.get("version") != 1
    ):
        raise UsageError(
            f"--bundle {bundle}: not a kdoctor bundle of format version 1 ({manifest_path})",
            BUNDLE_HINT,
        )
    node = manifest.get("node")
    return node if isinstance(node, str) else None


def probe_cluster(cluster: ClusterFacts, options: Options) -> ProbeCluster | None:
    """The probe capability (doctor.live.probes) for a live cluster, unless --no-probes."""
    from doctor.facts.kube import LiveCluster

    if not options.probes or not isinstance(cluster, LiveCluster):
        return None
    from doctor.live.probes import ProbeCluster, ProbeSettings

    settings = ProbeSettings(
        image=options.probe_image,
        pull_secret=options.probe_pull_secret,
        nodes=options.probe_nodes,
        wait=max(5.0, min(25.0, options.check_timeout * 0.4)),
    )
    return ProbeCluster(cluster, settings)


def make_fix_context(session: Session, root: Path, on_step: Callable[[str], None]) -> FixContext:
    """The write-capable context a fix runs with (fresh fact caches, API writes when live).

    Shared by ``fix`` and ``tui``; ``on_step`` receives every step line as it happens.
    """
    from doctor.core.commands import CommandRunner
    from doctor.core.context import FixContext

    base_ctx = session.ctx_factory()
    return FixContext(
        node=base_ctx.node,
        cluster=base_ctx.cluster,
        options=base_ctx.options,
        not_a_node=base_ctx.not_a_node,
        runner=CommandRunner(on_step=on_step),
        root=root,
        kube=kube_writer(base_ctx.cluster),
    )


def root_causes_first(results: list[CheckResult]) -> list[CheckResult]:
    """Checks other findings name as their root cause come first: fixing the overlay may
    make the pods it kept stuck recover by themselves."""
    roots = {f.caused_by for r in results for f in r.findings if f.caused_by}
    return sorted(results, key=lambda r: r.id not in roots)


def kube_writer(cluster: ClusterFacts) -> KubeWriter | None:
    """API write access for cluster fixes, only for a live cluster."""
    from doctor.facts.kube import LiveCluster
    from fixes.kube import KubeWriter

    return KubeWriter(cluster) if isinstance(cluster, LiveCluster) else None
