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
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from doctor import __version__
from doctor.core.errors import UsageError
from doctor.core.fix import FixSafety
from doctor.core.model import EXIT_CODES, CheckResult, Status
from doctor.session import (
    Session,
    make_fix_context,
    open_target,
    registry_warnings,
    root_causes_first,
    select_checks,
)

if TYPE_CHECKING:
    from doctor.core.registry import Check
    from doctor.core.report import Report

USAGE_ERROR = 3


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
    _add_fleet_parsers(sub)
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
        "fleet": cmd_fleet,
        "manifest": cmd_manifest,
        "agent": cmd_agent,
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


def _run(session: Session, args: argparse.Namespace, progress: bool) -> list[CheckResult]:
    from doctor.core.runner import run_checks

    on_result = None
    stop_progress: Callable[[], None] = lambda: None  # noqa: E731
    ctx = session.ctx_factory()
    if progress and sys.stderr.isatty() and session.checks:
        on_result, note, stop_progress = _progress(len(session.checks))
        from doctor.live.probes import ProbeCluster

        if isinstance(ctx.probes, ProbeCluster):
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
    from doctor.core.report import Report, now, render_json, render_prometheus

    checks = select_checks(args)
    if args.bundle is not None:
        from doctor.fleet.examine import is_fleet_bundle

        if is_fleet_bundle(args.bundle):
            from doctor.fleet.command import check_fleet_bundle

            return check_fleet_bundle(args, checks, _render_fleet_text)
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
        from doctor.core.report import write_atomically

        write_atomically(args.output, text)
    elif text:
        sys.stdout.write(text)
    return EXIT_CODES[report.status]


def _render_text_to_string(report: Report, verbose: bool, to_terminal: bool) -> str:
    """Print to the terminal directly (colour), or return plain text for --output."""
    import io

    from doctor.ui.text import make_console, render_text

    if to_terminal:
        render_text(report, make_console(), verbose)
        return ""
    buffer = io.StringIO()
    render_text(report, make_console(buffer), verbose)
    return buffer.getvalue()


# -- fleet / manifest / agent (doctor.fleet) ---------------------------------------------


def _add_fleet_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    from doctor.fleet.manifest import DEFAULT_IMAGE, DEFAULT_NAMESPACE

    def image_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--namespace", default=DEFAULT_NAMESPACE, metavar="NS")
        p.add_argument("--image", default=DEFAULT_IMAGE, metavar="IMAGE", help="agent image")
        p.add_argument("--image-pull-secret", action="append", metavar="NAME",
                       help="docker-registry secret (in NS) for the image; repeatable")  # fmt: skip
        p.add_argument("--selector", metavar="LABELS", help="only nodes with these labels")

    fleet = sub.add_parser("fleet", help="run the checks on every node, through a DaemonSet")
    _add_target_options(fleet)
    image_options(fleet)
    fleet.add_argument("--keep", action="store_true", help="leave the DaemonSet in place")
    fleet.add_argument("--collect", type=Path, metavar="DIR", help="write a fleet bundle")
    fleet.add_argument("--concurrency", type=_positive_int, default=16, metavar="N")
    fleet.add_argument("--connect-timeout", type=float, default=2.0, metavar="SECONDS")
    fleet.add_argument("--node", metavar="TEXT", help="text report: only nodes containing TEXT")
    fleet.add_argument("--format", choices=["text", "json", "prometheus"], default="text")
    fleet.add_argument("--json", action="store_const", const="json", dest="format")
    fleet.add_argument("--output", type=Path, metavar="FILE", help="write atomically to FILE")
    manifest = sub.add_parser("manifest", help="print the YAML that fleet applies")
    image_options(manifest)
    manifest.add_argument("--cronjob", action="store_true",
                          help="a CronJob running the cluster scope once instead")  # fmt: skip
    agent = sub.add_parser("agent", help="what each agent pod runs (not for people)")
    agent.add_argument("--run", action="store_true", help="collect and print this node's bundle")
    agent.add_argument("--targets", default="[]", metavar="JSON")
    agent.add_argument("--connect-timeout", type=float, default=2.0, metavar="SECONDS")


def _render_fleet_text(report: Report, args: argparse.Namespace) -> str:
    """The fleet report as text: to the terminal (colour), or returned for --output."""
    import io

    from doctor.ui.fleettext import render_fleet_text
    from doctor.ui.text import make_console

    node = getattr(args, "node", None)
    if args.output is None:
        render_fleet_text(report, make_console(), args.verbose, node)
        return ""
    buffer = io.StringIO()
    render_fleet_text(report, make_console(buffer), args.verbose, node)
    return buffer.getvalue()


def cmd_fleet(args: argparse.Namespace) -> int:
    from doctor.fleet.command import run_fleet

    restore = _sigterm_interrupts()  # SIGTERM cleans up like Ctrl-C
    try:
        return run_fleet(args, select_checks(args), _render_fleet_text)
    finally:
        restore()


def cmd_manifest(args: argparse.Namespace) -> int:
    from doctor.fleet.command import run_manifest

    return run_manifest(args)


def cmd_agent(args: argparse.Namespace) -> int:
    from doctor.fleet.command import run_agent

    return run_agent(args)


# -- fix --------------------------------------------------------------------------------


def cmd_fix(args: argparse.Namespace) -> int:
    from doctor.core.fixengine import DEFAULT_STATE_DIR, Outcome, apply_fix, record_without_applying
    from doctor.core.runner import run_one
    from doctor.ui.text import make_console, print_result

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
    for result in root_causes_first(results):
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
    from doctor.fleet.examine import is_fleet_bundle

    if args.bundle is not None and is_fleet_bundle(args.bundle):
        from doctor.fleet.command import fleet_bundle_report
        from doctor.ui.tui.fleet import FleetApp

        FleetApp(fleet_bundle_report(args, checks)).run()
        return 0
    from doctor.ui.tui.app import KdoctorApp

    warnings = [line for line in captured.getvalue().splitlines() if line.strip()]
    app = KdoctorApp(args, checks, warnings=warnings)
    app.run()
    return app.return_code or 0


# -- list / explain / collect ------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    from doctor.core.registry import discover

    registry = discover()
    registry_warnings(registry.failures)
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
    from doctor.core.registry import discover

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
    from doctor.facts.collect import collect_node

    out: Path = args.dir
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    manifest = collect_node(out, args.root)
    if args.scope in ("all", "cluster"):
        from doctor.facts.collect_cluster import collect_cluster

        manifest = collect_cluster(out, args, manifest)
    print(f"bundle written to {out}")
    for item in manifest.get("missing", []):
        print(f"  not collected: {item}")
    return 0
