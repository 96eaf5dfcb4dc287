"""The ``kdoctor`` command line (contract: shared/spec/checks-and-report-v1.md).

Heavy imports (kubernetes, textual) happen only inside the commands and code paths that
need them, so ``kdoctor check --scope node`` starts fast.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from doctor import __version__
from doctor.model import EXIT_CODES, CheckResult, FixSafety, Scope, Status

if TYPE_CHECKING:
    from doctor.cluster import ClusterFacts
    from doctor.context import CheckContext, FixContext, Options
    from doctor.probes import ProbeCluster
    from doctor.registry import Check, LoadFailure
    from doctor.report import Report, Target
    from fixes.kube import KubeWriter

USAGE_ERROR = 3


class UsageError(Exception):
    """Bad command line or target: exit 3 with the message."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"kdoctor: error: {message}\n")


def _id_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target")
    group.add_argument("--scope", choices=["node", "cluster", "all"], default="all")
    group.add_argument("--only", type=_id_list, default=[], metavar="ID[,ID…]")
    group.add_argument("--skip", type=_id_list, default=[], metavar="ID[,ID…]")
    group.add_argument("--bundle", type=Path, metavar="DIR", help="analyse a bundle, not this node")
    group.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="read the node's files under DIR (default /)",
    )
    group.add_argument("--kubeconfig", metavar="FILE")
    group.add_argument("--context", metavar="NAME")
    group.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="deadline for the whole run (default 60)",
    )
    group.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where fixes keep backups and the journal (default /var/lib/kdoctor)",
    )
    group.add_argument("-v", "--verbose", action="store_true")
    live = parser.add_argument_group("live probes")
    live.add_argument(
        "--cluster-domain",
        metavar="DOMAIN",
        help="the cluster DNS domain (default: the kubelet's clusterDomain, else cluster.local)",
    )
    live.add_argument(
        "--no-live",
        action="store_true",
        help="no live network probes: no DNS queries from this host, no probe pods",
    )
    live.add_argument(
        "--no-probes",
        action="store_true",
        help="create no probe pods and exec into none (cluster.dns.pod-to-pod is skipped)",
    )
    live.add_argument(
        "--probe-nodes",
        type=_positive_int,
        metavar="N",
        help="probe pods on at most N nodes (default: every schedulable node)",
    )
    live.add_argument(
        "--probe-image",
        default="busybox",
        metavar="IMAGE",
        help="image of the probe pods: it needs sleep, cat, nslookup and ping (default busybox)",
    )
    live.add_argument(
        "--probe-pull-secret",
        metavar="[NS/]NAME",
        help="docker-registry secret for the probe image (copied into the probe namespace "
        "for the run; NS defaults to default)",
    )


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kdoctor", description="A doctor for Kubernetes nodes and clusters.")
    parser.add_argument("--version", action="version", version=f"kdoctor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = sub.add_parser("check", help="diagnose (changes nothing)")
    _add_target_options(check)
    check.add_argument("--format", choices=["text", "json", "prometheus"], default="text")
    check.add_argument("--json", action="store_const", const="json", dest="format")
    check.add_argument("--output", type=Path, metavar="FILE", help="write atomically to FILE")

    fix = sub.add_parser("fix", help="repair: plan, confirm, back up, apply, re-check, roll back")
    fix.add_argument("ids", nargs="*", metavar="ID")
    _add_target_options(fix)
    fix.add_argument("--dry-run", action="store_true", help="print the plans, change nothing")
    fix.add_argument("--yes", action="store_true", help="do not ask before each fix")
    fix.add_argument("--unsafe", action="store_true", help="allow unsafe fixes")
    fix.add_argument(
        "--proxy-mode",
        choices=["userspace", "iptables", "ipvs", "nftables"],
        help="mode for the kube-proxy proxy-mode fix (default: userspace where the server "
        "still has it, else iptables)",
    )

    lst = sub.add_parser("list", help="every registered check")
    lst.add_argument("--format", choices=["text", "json"], default="text")

    explain = sub.add_parser("explain", help="a check's documentation")
    explain.add_argument("id", metavar="ID")

    tui = sub.add_parser("tui", help="the interactive fixer (same target options as check)")
    _add_target_options(tui)

    collect = sub.add_parser("collect", help="write a bundle of this node (and cluster)")
    collect.add_argument("dir", type=Path, metavar="DIR")
    _add_target_options(collect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "check": cmd_check,
        "fix": cmd_fix,
        "list": cmd_list,
        "explain": cmd_explain,
        "collect": cmd_collect,
        "tui": cmd_tui,
    }
    try:
        return handlers[args.command](args)
    except UsageError as exc:
        print(f"kdoctor: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("kdoctor: interrupted", file=sys.stderr)
        return 130


# -- shared --------------------------------------------------------------------------------


@dataclass
class Session:
    """Everything a command needs about the target, built once from the options."""

    checks: list[type[Check]]
    ctx_factory: Callable[[], CheckContext]  # fresh fact caches on each call
    target: Target
    #: Removes what the run's live probes created (doctor.probes); call when the run ends.
    cleanup: Callable[[], list[str]] = lambda: []


def _registry_warnings(failures: Sequence[LoadFailure]) -> None:
    for failure in failures:
        print(
            f"kdoctor: warning: plugin {failure.source} failed to load: {failure.reason}",
            file=sys.stderr,
        )


def select_checks(args: argparse.Namespace, explicit: Sequence[str] = ()) -> list[type[Check]]:
    from doctor.registry import discover

    registry = discover()
    _registry_warnings(registry.failures)
    known = {c.id for c in registry.checks}
    wanted = list(args.only) + list(explicit)
    unknown = [i for i in [*wanted, *args.skip] if i not in known]
    if unknown:
        raise UsageError(f"unknown check id(s): {', '.join(unknown)} (see `kdoctor list`)")
    checks = list(registry.checks)
    if args.scope != "all":
        checks = [c for c in checks if c.scope.value == args.scope]
    if wanted:
        checks = [c for c in checks if c.id in wanted]
    return [c for c in checks if c.id not in args.skip]


def open_target(
    args: argparse.Namespace, checks: Sequence[type[Check]], with_probes: bool = True
) -> Session:
    """The session for ARGS. WITH_PROBES False: no probe pods (``fix`` runs create none)."""
    from doctor.cluster import NoCluster, find_cluster_config
    from doctor.context import CheckContext, Options
    from doctor.facts import BundleNodeFacts, LiveNodeFacts, NodeFacts
    from doctor.report import Target, live_node_name

    needs_cluster = any(c.scope is Scope.CLUSTER for c in checks)
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
        manifest_path = bundle / "kdoctor-bundle.json"
        if not bundle.is_dir():
            raise UsageError(f"--bundle {bundle}: not a directory")
        node_name = None
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("format") != "kdoctor-bundle" or manifest.get("version") != 1:
                raise UsageError(f"{manifest_path}: not a kdoctor bundle of format version 1")
            node_name = manifest.get("node")
        except FileNotFoundError:
            print(
                f"kdoctor: warning: {manifest_path} is missing; reading the directory as a "
                "bundle anyway",
                file=sys.stderr,
            )
        except (json.JSONDecodeError, AttributeError) as exc:
            raise UsageError(f"{manifest_path}: invalid manifest: {exc}") from exc

        def cluster_of_bundle() -> ClusterFacts:
            from doctor.cluster import open_bundle_cluster

            return open_bundle_cluster(bundle) if needs_cluster else NoCluster("not needed")

        bundle_cluster = cluster_of_bundle()

        def bundle_ctx() -> CheckContext:
            node: NodeFacts = BundleNodeFacts(bundle)
            return CheckContext(node=node, cluster=bundle_cluster, options=options)

        target = Target(node=node_name, bundle=str(bundle), cluster=bundle_cluster.target)
        return Session(list(checks), bundle_ctx, target)

    if needs_cluster:
        config, where = find_cluster_config(args.kubeconfig, args.context)
        if config is None:
            cluster: ClusterFacts = NoCluster(where)
        else:
            from doctor.cluster import open_live_cluster

            cluster = open_live_cluster(config, timeout=min(args.timeout, 15.0))
    else:
        cluster = NoCluster("cluster checks not selected")

    root = args.root
    probes = _probes(cluster, options) if with_probes else None

    def live_ctx() -> CheckContext:
        node: NodeFacts = LiveNodeFacts(root)
        return CheckContext(node=node, cluster=cluster, options=options, probes=probes)

    node_name = live_node_name() if root == Path("/") else f"{live_node_name()} (root {root})"
    return Session(
        list(checks),
        live_ctx,
        Target(node=node_name, bundle=None, cluster=cluster.target),
        cleanup=probes.cleanup if probes is not None else lambda: [],
    )


def _probes(cluster: ClusterFacts, options: Options) -> ProbeCluster | None:
    """The probe capability (doctor.probes) for a live cluster, unless --no-probes."""
    from doctor.kube import LiveCluster  # stdlib-only module: kubernetes is not imported here

    if not options.probes or not isinstance(cluster, LiveCluster):
        return None
    from doctor.probes import ProbeCluster, ProbeSettings

    settings = ProbeSettings(
        image=options.probe_image,
        pull_secret=options.probe_pull_secret,
        nodes=options.probe_nodes,
        wait=max(5.0, min(25.0, options.check_timeout * 0.4)),
    )
    return ProbeCluster(cluster, settings)


def _run(session: Session, args: argparse.Namespace, progress: bool) -> list[CheckResult]:
    from doctor.runner import run_checks

    on_result = None
    stop_progress: Callable[[], None] = lambda: None  # noqa: E731
    ctx = session.ctx_factory()
    if progress and sys.stderr.isatty() and session.checks:
        on_result, note, stop_progress = _progress(len(session.checks))
        if ctx.probes is not None:
            ctx.probes.on_progress = note
    restore = _sigterm_interrupts()
    try:
        return run_checks(
            session.checks,
            ctx,
            deadline=args.timeout,
            per_check_timeout=args.timeout,
            on_result=on_result,
        )
    finally:
        stop_progress()
        # Probe pods go away however the run ends (done, timed out, Ctrl-C, SIGTERM).
        for problem in session.cleanup():
            print(f"kdoctor: warning: probe not removed: {problem}", file=sys.stderr)
        restore()


def _sigterm_interrupts() -> Callable[[], None]:
    """SIGTERM raises KeyboardInterrupt like Ctrl-C, so ``finally`` blocks clean up."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _progress(
    total: int,
) -> tuple[Callable[[CheckResult], None], Callable[[str], None], Callable[[], None]]:
    """A spinner on stderr, shown only when the run lasts longer than a moment; returns
    (on_result, note for a sub-step such as the probe wait, stop)."""
    from rich.console import Console

    console = Console(stderr=True)
    status = console.status(f"running {total} checks…")
    done = [0]
    shown = threading.Event()

    def show() -> None:
        status.start()
        shown.set()

    timer = threading.Timer(0.5, show)
    timer.daemon = True
    timer.start()

    def on_result(result: CheckResult) -> None:
        done[0] += 1
        status.update(f"running {total} checks… {done[0]} done (last: {result.id})")

    def note(text: str) -> None:
        status.update(f"running {total} checks… {done[0]} done; {text}")

    def stop() -> None:
        timer.cancel()
        if shown.is_set():
            status.stop()

    return on_result, note, stop


# -- check ------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from doctor.report import Report, now, render_json, render_prometheus

    checks = select_checks(args)
    session = open_target(args, checks)
    results = _run(session, args, progress=args.format == "text" or args.output is not None)
    report = Report(target=session.target, results=results, generated_at=now())
    if args.format == "json":
        text = render_json(report)
    elif args.format == "prometheus":
        text = render_prometheus(report)
    else:
        text = _render_text_to_string(report, args.verbose, to_terminal=args.output is None)
        if args.output is None:
            text = ""
    if args.output is not None:
        from doctor.report import write_atomically

        write_atomically(args.output, text)
    elif text:
        sys.stdout.write(text)
    return EXIT_CODES[report.status]


def _render_text_to_string(report: Report, verbose: bool, to_terminal: bool) -> str:
    """Print to the terminal directly (colour), or return plain text for --output."""
    import io

    from doctor.render.text import make_console, render_text

    if to_terminal:
        render_text(report, make_console(), verbose)
        return ""
    buffer = io.StringIO()
    render_text(report, make_console(buffer), verbose)
    return buffer.getvalue()


# -- fix --------------------------------------------------------------------------------


def cmd_fix(args: argparse.Namespace) -> int:
    from doctor.fixengine import (
        DEFAULT_STATE_DIR,
        Outcome,
        apply_fix,
        record_without_applying,
    )
    from doctor.render.text import make_console, print_result
    from doctor.runner import run_one

    if args.bundle is not None:
        raise UsageError("fixes refuse to run on a bundle: a bundle is a copy, not the node")
    checks = select_checks(args, explicit=args.ids)
    if not args.ids and not args.only:
        checks = [c for c in checks if c.fix_safety is not None]
    # A fix run (a dry run above all) creates nothing but what its plan says: no probe pods.
    session = open_target(args, checks, with_probes=False)
    state_dir = args.state_dir or DEFAULT_STATE_DIR
    console = make_console()
    results = _run(session, args, progress=True)
    by_id = {c.id: c for c in checks}
    exit_code = 0
    offered = 0
    handled: dict[str, str] = {}  # fix id -> the check whose offer was taken up
    for result in _root_causes_first(results):
        if result.fix is not None and result.fix.id in handled:
            console.print(
                f"[{result.status.glyph}] {result.id}: its fix {result.fix.id} was already "
                f"offered for {handled[result.fix.id]} in this run",
                highlight=False,
                markup=False,
            )
            continue
        if result.status in (Status.OK, Status.SKIP) or result.fix is None:
            if args.ids and result.id in args.ids:
                why = result.summary if result.fix is None else "nothing to fix"
                console.print(
                    f"[{result.status.glyph}] {result.id}: no fix to apply ({why})",
                    highlight=False,
                    markup=False,
                )
            continue
        fix = result.fix
        handled[fix.id] = result.id
        offered += 1
        print_result(console, result)
        console.print(
            f"\nPlan for {fix.id} ({fix.safety.value}): {fix.title}", markup=False, highlight=False
        )
        for line in fix.plan():
            console.print(f"    {line}", markup=False, highlight=False)
        if args.dry_run:
            console.print("    (dry run: nothing changed)", markup=False)
            continue
        if fix.safety is FixSafety.MANUAL:
            console.print("    manual fix: run the commands above yourself.", markup=False)
            record_without_applying(state_dir, result.id, fix, Outcome.REFUSED, "manual fix")
            continue
        if fix.safety is FixSafety.UNSAFE and not args.unsafe:
            console.print(
                "    refused: this fix is unsafe; add --unsafe to apply it.", markup=False
            )
            exit_code = max(exit_code, 1)
            continue
        if not args.yes and not _confirm(f"Apply {fix.id}?"):
            console.print("    declined: nothing changed.", markup=False)
            record_without_applying(state_dir, result.id, fix, Outcome.DECLINED, "declined")
            exit_code = max(exit_code, 1)
            continue
        check_cls = by_id[result.id]
        fix_ctx = make_fix_context(
            session,
            args.root,
            lambda line: console.print(f"    {line}", markup=False, highlight=False),
        )

        def recheck(check_cls: type[Check] = check_cls) -> CheckResult:
            fresh = session.ctx_factory()  # new fact caches: read the changed node again
            return run_one(check_cls, fresh)

        report = apply_fix(result.id, fix, fix_ctx, state_dir, recheck)
        if report.outcome is Outcome.APPLIED:
            status = report.recheck.status.value if report.recheck else "?"
            console.print(
                f"    ✓ applied; {result.id} now reports {status}. Backup: {report.backup_dir}",
                markup=False,
                highlight=False,
            )
        else:
            console.print(
                f"    ✗ {report.outcome.value}: {report.reason}. Backup: {report.backup_dir}",
                markup=False,
                highlight=False,
            )
            exit_code = 2
    if offered == 0:
        console.print("Nothing to fix.", markup=False)
    return exit_code


def make_fix_context(session: Session, root: Path, on_step: Callable[[str], None]) -> FixContext:
    """The write-capable context a fix runs with (fresh fact caches, API writes when live).

    Shared by ``fix`` and ``tui``; ``on_step`` receives every step line as it happens.
    """
    from doctor.context import FixContext
    from doctor.runner_commands import CommandRunner

    base_ctx = session.ctx_factory()
    return FixContext(
        node=base_ctx.node,
        cluster=base_ctx.cluster,
        options=base_ctx.options,
        runner=CommandRunner(on_step=on_step),
        root=root,
        kube=_kube_writer(base_ctx.cluster),
    )


def _root_causes_first(results: list[CheckResult]) -> list[CheckResult]:
    """Checks other findings name as their root cause come first: fixing the overlay may
    make the pods it kept stuck recover by themselves."""
    roots = {f.caused_by for r in results for f in r.findings if f.caused_by}
    return sorted(results, key=lambda r: r.id not in roots)


def _kube_writer(cluster: ClusterFacts) -> KubeWriter | None:
    """API write access for cluster fixes, only for a live cluster."""
    from doctor.kube import LiveCluster  # stdlib-only module: kubernetes is not imported here
    from fixes.kube import KubeWriter

    return KubeWriter(cluster) if isinstance(cluster, LiveCluster) else None


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        print(f"{question} not confirmed (no terminal; use --yes)", file=sys.stderr)
        return False
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


# -- tui --------------------------------------------------------------------------------


def cmd_tui(args: argparse.Namespace) -> int:
    """The interactive fixer. The only place textual is imported."""
    import contextlib
    import io

    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError("kdoctor tui needs a terminal (use `kdoctor check` in scripts)")
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            checks = select_checks(args)
    finally:
        sys.stderr.write(captured.getvalue())  # still on the terminal after the TUI exits
    from doctor.tui.app import KdoctorApp

    warnings = [line for line in captured.getvalue().splitlines() if line.strip()]
    app = KdoctorApp(args, checks, warnings=warnings)
    app.run()
    return app.return_code or 0


# -- list / explain / collect ------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from doctor.registry import discover

    registry = discover()
    _registry_warnings(registry.failures)
    rows: list[dict[str, str | None]] = [
        {
            "id": c.id,
            "scope": c.scope.value,
            "title": c.title,
            "fix": c.fix_safety.value if c.fix_safety else None,
        }
        for c in registry.checks
    ]
    if args.format == "json":
        failures = [{"source": f.source, "reason": f.reason} for f in registry.failures]
        print(json.dumps({"checks": rows, "load_failures": failures}, indent=2))
        return 0
    width = max((len(c.id) for c in registry.checks), default=10)
    for check in registry.checks:
        fix = check.fix_safety.value if check.fix_safety else "-"
        print(f"{check.id:<{width}}  {check.scope.value:<7}  {fix:<6}  {check.title}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from doctor.registry import discover

    registry = discover()
    check = registry.get(args.id)
    if check is None:
        raise UsageError(f"unknown check id {args.id!r} (see `kdoctor list`)")
    fix = check.fix_safety.value if check.fix_safety else "none"
    print(f"{check.id} ({check.scope.value}) — {check.title}")
    print(f"fix: {fix}")
    print()
    print(check.documentation())
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from doctor.collect import collect_node

    out: Path = args.dir
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    manifest = collect_node(out, args.root)
    if args.scope in ("all", "cluster"):
        from doctor.cluster import collect_cluster

        manifest = collect_cluster(out, args, manifest)
    print(f"bundle written to {out}")
    for item in manifest.get("missing", []):
        print(f"  not collected: {item}")
    return 0
