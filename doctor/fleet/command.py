"""The ``fleet``, ``manifest`` and ``agent`` commands (the CLI parses, this runs them).

Text rendering stays in ``doctor.ui`` (above this layer): the CLI hands a renderer in.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from doctor.core.errors import UsageError
from doctor.core.model import EXIT_CODES, Scope
from doctor.fleet import manifest as mf

if TYPE_CHECKING:
    from doctor.core.registry import Check
    from doctor.core.report import Report
    from doctor.fleet.orchestrate import FleetRun

#: (report, args) -> the text report ("" when it was printed to the terminal directly).
TextRenderer = Callable[["Report", argparse.Namespace], str]


def manifest_settings(args: argparse.Namespace) -> mf.ManifestSettings:
    if args.selector:
        try:
            mf.node_affinity(args.selector)
        except mf.SelectorError as exc:
            raise UsageError(f"--selector: {exc}") from exc
    return mf.ManifestSettings(
        image=args.image,
        namespace=args.namespace,
        pull_secrets=tuple(args.image_pull_secret or ()),
        selector=getattr(args, "selector", None),
    )


def run_manifest(args: argparse.Namespace) -> int:
    settings = manifest_settings(args)
    objects = mf.cronjob_objects(settings) if args.cronjob else mf.fleet_objects(settings)
    sys.stdout.write(mf.to_yaml(objects))
    return 0


def run_agent(args: argparse.Namespace) -> int:
    from doctor.fleet import agent

    if not args.run:
        return agent.idle()
    return agent.run(args.targets, args.connect_timeout)


def _emit(report: Report, args: argparse.Namespace, render_text: TextRenderer) -> int:
    from doctor.core.report import render_json, render_prometheus, write_atomically

    if args.format == "json":
        text = render_json(report)
    elif args.format == "prometheus":
        text = render_prometheus(report)
    else:
        text = render_text(report, args)
    if args.output is not None:
        write_atomically(args.output, text)
    elif text:
        sys.stdout.write(text)
    return EXIT_CODES[report.status]


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    """One line per node change on stderr (a terminal, or -v); silent otherwise."""
    if not (args.verbose or sys.stderr.isatty()):
        return lambda _line: None

    def show(line: str) -> None:
        print(f"kdoctor fleet: {line}", file=sys.stderr, flush=True)

    return show


def run_fleet(
    args: argparse.Namespace, checks: Sequence[type[Check]], render_text: TextRenderer
) -> int:
    """Apply, gather, examine, report, clean up (see doctor.fleet.orchestrate)."""
    from doctor.core.context import Options
    from doctor.core.report import Report, Target, now
    from doctor.facts.cluster import find_cluster_config
    from doctor.facts.kube import LiveCluster, open_live_cluster
    from doctor.fleet.examine import FleetBundle, examine
    from doctor.fleet.orchestrate import Fleet, FleetSettings

    settings = FleetSettings(
        manifest=manifest_settings(args),
        timeout=args.timeout,
        keep=args.keep,
        concurrency=args.concurrency,
        connect_timeout=args.connect_timeout,
    )
    if args.collect is not None and args.collect.exists() and any(args.collect.iterdir()):
        raise UsageError(f"--collect {args.collect}: exists and is not empty")
    config, where = find_cluster_config(args.kubeconfig, args.context)
    if config is None:
        raise UsageError(f"kdoctor fleet needs a cluster: {where}")
    cluster = open_live_cluster(config, timeout=min(args.timeout, 15.0))
    if not isinstance(cluster, LiveCluster):
        raise UsageError(f"kdoctor fleet needs a live cluster: {cluster.unavailable}")
    if cluster.unavailable:
        raise UsageError(f"kdoctor fleet: {cluster.unavailable}")
    progress = _progress(args)
    scratch = None
    if args.collect is not None:
        directory: Path = args.collect
        directory.mkdir(parents=True, exist_ok=True)
    else:
        scratch = tempfile.TemporaryDirectory(prefix="kdoctor-fleet-")
        directory = Path(scratch.name)
    try:
        started = time.monotonic()
        run = Fleet(cluster, settings, directory, progress).run()
        for note in run.notes:
            print(f"kdoctor fleet: note: {note}", file=sys.stderr)
        for problem in run.cleanup_problems:
            print(f"kdoctor fleet: warning: not removed: {problem}", file=sys.stderr)
        if args.collect is not None and any(c.scope is Scope.CLUSTER for c in checks):
            _collect_cluster(directory, args)
        options = Options(verbose=args.verbose, check_timeout=args.timeout, probes=False)
        bundle = FleetBundle(directory, tuple(sorted(run.nodes)), run.unreported)
        remaining = max(10.0, args.timeout - (time.monotonic() - started))
        results = examine(bundle, checks, cluster, options, deadline=remaining)
        _print_requests(run, args)
        target = Target(
            node=None,
            bundle=str(directory) if args.collect is not None else None,
            cluster=cluster.target,
            fleet_nodes=bundle.nodes,
            unreported=run.unreported,
        )
        report = Report(target=target, results=results, generated_at=now())
        return _emit(report, args, render_text)
    finally:
        if scratch is not None:
            scratch.cleanup()


def _print_requests(run: FleetRun, args: argparse.Namespace) -> None:
    if args.verbose:
        counts = ", ".join(f"{verb} {n}" for verb, n in sorted(run.requests.items()))
        print(f"kdoctor fleet: API requests by fleet's own steps: {counts}", file=sys.stderr)


def _collect_cluster(directory: Path, args: argparse.Namespace) -> None:
    """The fleet bundle's cluster/ part, as ``kdoctor collect`` writes it."""
    from doctor.facts.collect_cluster import collect_cluster

    manifest_path = directory / "kdoctor-bundle.json"
    manifest = json.loads(manifest_path.read_text())
    merged = collect_cluster(directory, args, dict(manifest))
    manifest["missing"] = merged.get("missing", [])
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


def fleet_bundle_report(args: argparse.Namespace, checks: Sequence[type[Check]]) -> Report:
    """The report of a fleet bundle: node checks per node, cluster checks once."""
    from doctor.core.context import Options
    from doctor.core.report import Report, Target, now
    from doctor.facts.cluster import NoCluster
    from doctor.facts.kube import open_bundle_cluster
    from doctor.fleet.examine import examine, read_fleet_bundle

    bundle = read_fleet_bundle(args.bundle)
    needs_cluster = any(c.scope is Scope.CLUSTER for c in checks)
    cluster = open_bundle_cluster(args.bundle) if needs_cluster else NoCluster("not needed")
    options = Options(verbose=args.verbose, check_timeout=args.timeout, live=False, probes=False)
    results = examine(bundle, checks, cluster, options, deadline=args.timeout)
    target = Target(
        node=None,
        bundle=str(args.bundle),
        cluster=cluster.target,
        fleet_nodes=bundle.nodes,
        unreported=bundle.unreported,
    )
    return Report(target=target, results=results, generated_at=now())


def check_fleet_bundle(
    args: argparse.Namespace, checks: Sequence[type[Check]], render_text: TextRenderer
) -> int:
    """``kdoctor check --bundle DIR`` on a fleet bundle."""
    return _emit(fleet_bundle_report(args, checks), args, render_text)
