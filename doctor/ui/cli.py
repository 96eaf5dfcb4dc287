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
from doctor.core.safetext import safe
from doctor.session import (
    Session,
    make_fix_context,
    open_target,
    read_bundle_manifest,
    registry_warnings,
    root_causes_first,
    select_checks,
)

if TYPE_CHECKING:
    from doctor.core.fix import Fix
    from doctor.core.fixengine import FixReport
    from doctor.core.registry import Check
    from doctor.core.report import Report

USAGE_ERROR = 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(
            USAGE_ERROR,
            f"kdoctor: error: {message}\nkdoctor: hint: see `{self.prog} --help`\n",
        )


def _id_list(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("target")
    group.add_argument(
        "--scope",
        choices=["node", "cluster", "all"],
        default="all",
        help="run the node checks, the cluster checks or both (default all)",
    )
    group.add_argument(
        "--only",
        type=_id_list,
        default=[],
        metavar="ID[,ID…]",
        help="run only these checks (ids from `kdoctor list`)",
    )
    group.add_argument(
        "--skip", type=_id_list, default=[], metavar="ID[,ID…]", help="do not run these checks"
    )
    group.add_argument("--bundle", type=Path, metavar="DIR", help="analyse a bundle, not this node")
    group.add_argument(
        "--root",
        type=Path,
        default=Path("/"),
        metavar="DIR",
        help="read the node's files under DIR (default /)",
    )
    group.add_argument(
        "--kubeconfig",
        metavar="FILE",
        help="the cluster's kubeconfig (default $KUBECONFIG, ~/.kube/config, "
        "/etc/kubernetes/admin.conf, in-cluster)",
    )
    group.add_argument(
        "--context", metavar="NAME", help="the kubeconfig context (default its current one)"
    )
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
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="every check, every finding with its evidence, fix plans and durations",
    )
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
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the Python traceback of an unexpected error (for a bug report)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    check = sub.add_parser("check", help="diagnose (changes nothing)")
    _add_target_options(check)
    check.add_argument(
        "--format",
        choices=["text", "json", "prometheus"],
        default="text",
        help="text for a person (default), the JSON report kdoctor/report/v1, or a "
        "Prometheus textfile (docs/report.md)",
    )
    check.add_argument(
        "--json", action="store_const", const="json", dest="format", help="--format json"
    )
    check.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write the report to FILE atomically instead of printing it",
    )
    check.add_argument(
        "-q", "--quiet", action="store_true", help="print only the status line (text format)"
    )

    fix = sub.add_parser("fix", help="repair: plan, confirm, back up, apply, re-check, roll back")
    fix.add_argument(
        "ids", nargs="*", metavar="ID", help="the checks to fix (default: every failing one)"
    )
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
    lst.add_argument("--format", choices=["text", "json"], default="text", help="a table or JSON")

    explain = sub.add_parser("explain", help="a check's documentation")
    explain.add_argument("id", metavar="ID", help="a check id (see `kdoctor list`)")

    tui = sub.add_parser("tui", help="the interactive fixer (same target options as check)")
    _add_target_options(tui)

    collect = sub.add_parser("collect", help="write a bundle of this node (and cluster)")
    collect.add_argument(
        "dir", type=Path, metavar="DIR", help="where to write the bundle (docs/bundle.md)"
    )
    _add_target_options(collect)

    undo = sub.add_parser(
        "undo", help="reverse the last applied fix (or journal entry ENTRY) from its backup"
    )
    undo.add_argument(
        "entry",
        nargs="?",
        metavar="ENTRY",
        help="the journal entry's id (its backup directory's name); default: the last "
        "applied fix not undone yet",
    )
    _add_target_options(undo)
    undo.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    undo.add_argument("--yes", action="store_true", help="do not ask before undoing")
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
        "undo": cmd_undo,
    }
    try:
        return handlers[args.command](args)
    except UsageError as exc:
        print(f"kdoctor: error: {safe(exc, single_line=True)}", file=sys.stderr)
        if exc.hint:
            print(f"kdoctor: hint: {safe(exc.hint, single_line=True)}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("kdoctor: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug or an environment kdoctor did not expect
        if args.debug:
            import traceback

            traceback.print_exc()
        print(f"kdoctor: error: {_one_line(exc)}", file=sys.stderr)
        if not args.debug:
            print("kdoctor: hint: run again with --debug for the traceback", file=sys.stderr)
        return USAGE_ERROR


def _one_line(exc: BaseException) -> str:
    """``PermissionError: [Errno 13] …: '/var/lib/x'`` as one readable line."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
            print(f"kdoctor: warning: probe not removed: {safe(problem)}", file=sys.stderr)
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
    from rich.text import Text

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
        last = safe(result.id, single_line=True)
        status.update(Text(f"running {total} checks… {done[0]} done (last: {last})"))

    def note(text: str) -> None:
        note_text = safe(text, single_line=True)
        status.update(Text(f"running {total} checks… {done[0]} done; {note_text}"))

    def stop() -> None:
        timer.cancel()
        if shown.is_set():
            status.stop()

    return on_result, note, stop


# -- check ------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    from doctor.core.report import Report, now, render_json, render_prometheus

    checks = select_checks(args)
    if args.output is not None:
        _check_output(args.output)
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
        text = _render_text_to_string(
            report, args.verbose, to_terminal=args.output is None, quiet=args.quiet
        )
        if args.output is None:
            text = ""
    if args.output is not None:
        from doctor.core.report import write_atomically

        try:
            write_atomically(args.output, text)
        except OSError as exc:
            raise UsageError(
                f"--output {args.output}: cannot write: {exc.strerror or exc}", OUTPUT_HINT
            ) from exc
    elif text:
        sys.stdout.write(text)
    return EXIT_CODES[report.status]


OUTPUT_HINT = (
    "--output writes into an existing directory you can write (the README's cron line runs "
    "as root; node_exporter's textfile directory must exist)"
)


def _check_output(path: Path) -> None:
    """Refuse an --output the run could not write, before running any check."""
    import os

    directory = path.parent
    if not directory.is_dir():
        what = "does not exist" if not directory.exists() else "is not a directory"
        raise UsageError(f"--output {path}: the directory {directory} {what}", OUTPUT_HINT)
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(
            f"--output {path}: cannot write into {directory} (permission denied)", OUTPUT_HINT
        )
    if path.is_dir():
        raise UsageError(f"--output {path}: is a directory", OUTPUT_HINT)


def _render_text_to_string(
    report: Report, verbose: bool, to_terminal: bool, quiet: bool = False
) -> str:
    """Print to the terminal directly (colour), or return plain text for --output."""
    import io

    from doctor.ui.text import make_console, render_text

    if to_terminal:
        render_text(report, make_console(), verbose, quiet=quiet)
        return ""
    buffer = io.StringIO()
    render_text(report, make_console(buffer), verbose, quiet=quiet)
    return buffer.getvalue()


# -- fleet / manifest / agent (doctor.fleet) ---------------------------------------------


def _add_fleet_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    from doctor.fleet.manifest import DEFAULT_IMAGE, DEFAULT_NAMESPACE

    def image_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--namespace",
            default=DEFAULT_NAMESPACE,
            metavar="NS",
            help=f"namespace of the agents (default {DEFAULT_NAMESPACE})",
        )
        p.add_argument("--image", default=DEFAULT_IMAGE, metavar="IMAGE", help="agent image")
        p.add_argument("--image-pull-secret", action="append", metavar="NAME",
                       help="docker-registry secret (in NS) for the image; repeatable")  # fmt: skip
        p.add_argument("--selector", metavar="LABELS", help="only nodes with these labels")

    fleet = sub.add_parser("fleet", help="run the checks on every node, through a DaemonSet")
    _add_target_options(fleet)
    image_options(fleet)
    fleet.add_argument("--keep", action="store_true", help="leave the DaemonSet in place")
    fleet.add_argument("--collect", type=Path, metavar="DIR", help="write a fleet bundle")
    fleet.add_argument(
        "--concurrency",
        type=_positive_int,
        default=16,
        metavar="N",
        help="agents gathered at once (default 16)",
    )
    fleet.add_argument(
        "--connect-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="TCP connect timeout of the node-ports probes (default 2)",
    )
    fleet.add_argument("--node", metavar="TEXT", help="text report: only nodes containing TEXT")
    fleet.add_argument(
        "--format",
        choices=["text", "json", "prometheus"],
        default="text",
        help="report format (default text)",
    )
    fleet.add_argument(
        "--json", action="store_const", const="json", dest="format", help="same as --format json"
    )
    fleet.add_argument("--output", type=Path, metavar="FILE", help="write atomically to FILE")
    manifest = sub.add_parser("manifest", help="print the YAML that fleet applies")
    image_options(manifest)
    manifest.add_argument("--cronjob", action="store_true",
                          help="a CronJob running the cluster scope once instead")  # fmt: skip
    agent = sub.add_parser("agent", help="what each agent pod runs (not for people)")
    agent.add_argument("--run", action="store_true", help="collect and print this node's bundle")
    agent.add_argument(
        "--targets",
        default="[]",
        metavar="JSON",
        help="the peers to probe, as fleet hands them over",
    )
    agent.add_argument(
        "--connect-timeout",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="TCP connect timeout per probe (default 2)",
    )


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
    from doctor.core.fixengine import DEFAULT_STATE_DIR

    if args.bundle is not None and not args.dry_run:
        raise UsageError(
            "fixes refuse to run on a bundle: a bundle is a copy, not the node",
            "`kdoctor fix --dry-run --bundle DIR` prints the plans that would run on that node",
        )
    checks = select_checks(args, explicit=args.ids)
    if not args.ids and not args.only:
        checks = [c for c in checks if c.fix_safety is not None] or checks
    state_dir = args.state_dir or DEFAULT_STATE_DIR
    if not args.dry_run:
        ensure_state_dir(state_dir)
    # A fix run (a dry run above all) creates nothing but what its plan says: no probe pods.
    session = open_target(args, checks, with_probes=False)
    results = _run(session, args, progress=True)
    return _offer_fixes(args, session, checks, results, state_dir)


def ensure_state_dir(state_dir: Path) -> None:
    """Backups and the journal must be writable before a fix is offered (usage error)."""
    import os

    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        writable = os.access(state_dir, os.W_OK | os.X_OK)
        reason = "permission denied"
    except OSError as exc:
        writable, reason = False, exc.strerror or str(exc)
    if not writable:
        raise UsageError(
            f"cannot keep backups and the journal in {state_dir}: {reason}",
            "run kdoctor fix as root (sudo), or give --state-dir DIR; "
            "--dry-run shows the plans without either",
        )


def _offer_fixes(
    args: argparse.Namespace,
    session: Session,
    checks: list[type[Check]],
    results: list[CheckResult],
    state_dir: Path,
) -> int:
    from doctor.core.fixengine import Outcome, apply_fix, preflight, record_without_applying
    from doctor.core.runner import run_one
    from doctor.ui.text import make_console, print_result

    console = make_console()

    def say(text: str) -> None:
        console.print(safe(text), markup=False, highlight=False)

    def journal(check_id: str, fix: Fix, outcome: Outcome, reason: str) -> None:
        try:
            record_without_applying(state_dir, check_id, fix, outcome, reason)
        except OSError as exc:
            say(f"    (not journaled: {exc.strerror or exc})")

    by_id = {c.id: c for c in checks}
    exit_code = 0
    offered = 0
    unfixable: list[CheckResult] = []
    handled: dict[str, str] = {}  # fix id -> the check whose offer was taken up
    if args.dry_run and session.target.bundle:
        say(f"Dry run on bundle {session.target.bundle}: the plans that would run on node "
            f"{session.target.node or '?'}; nothing is changed.")  # fmt: skip
    for result in root_causes_first(results):
        if result.fix is not None and result.fix.id in handled:
            say(
                f"[{result.status.glyph}] {result.id}: its fix {result.fix.id} was already "
                f"offered for {handled[result.fix.id]} in this run"
            )
            continue
        if result.status in (Status.OK, Status.SKIP) or result.fix is None:
            if result.status not in (Status.OK, Status.SKIP):
                unfixable.append(result)
            elif args.ids and result.id in args.ids:
                why = result.summary if result.fix is None else "nothing to fix"
                say(f"[{result.status.glyph}] {result.id}: no fix to apply ({why})")
            continue
        fix = result.fix
        handled[fix.id] = result.id
        offered += 1
        print_result(console, result, bundle=session.target.bundle)
        say(f"\nPlan for {fix.id} ({fix.safety.value}): {fix.title}")
        for line in fix.plan():
            say(f"    {line}")
        if args.dry_run:
            say("    (dry run: nothing changed)")
            continue
        if fix.safety is FixSafety.MANUAL:
            say("    manual fix: run the commands above yourself.")
            journal(result.id, fix, Outcome.REFUSED, "manual fix")
            continue
        if fix.safety is FixSafety.UNSAFE and not args.unsafe:
            say("    refused: this fix is unsafe; add --unsafe to apply it.")
            exit_code = max(exit_code, 1)
            continue
        fix_ctx = make_fix_context(session, args.root, lambda line: say(f"    {line}"))
        problems = preflight(fix, fix_ctx)
        if problems:
            say("    refused, nothing changed: " + "; ".join(problems))
            journal(result.id, fix, Outcome.REFUSED, "preflight: " + "; ".join(problems))
            exit_code = max(exit_code, 1)
            continue
        if not args.yes and not _confirm(f"Apply {fix.id}?"):
            say("    declined: nothing changed.")
            journal(result.id, fix, Outcome.DECLINED, "declined")
            exit_code = max(exit_code, 1)
            continue
        check_cls = by_id[result.id]

        def recheck(check_cls: type[Check] = check_cls) -> CheckResult:
            fresh = session.ctx_factory()  # new fact caches: read the changed node again
            return run_one(check_cls, fresh)

        report = apply_fix(result.id, fix, fix_ctx, state_dir, recheck)
        exit_code = max(exit_code, _say_outcome(say, result.id, report))
    for result in unfixable:
        say(
            f"[{result.status.glyph}] {result.id} reports {result.status.value}: no fix kdoctor "
            f"can apply here ({result.summary})"
        )
        exit_code = max(exit_code, 1)
    if offered == 0 and not unfixable:
        if results and all(r.status is Status.SKIP for r in results):
            say("Nothing to fix: every selected check skipped (nothing was decided).")
        else:
            say("Nothing to fix: no selected check reports a problem.")
    return exit_code


def _say_outcome(say: Callable[[str], None], check_id: str, report: FixReport) -> int:
    """Print what happened to one fix; its exit code (0 applied, 1 refused, 2 rolled back)."""
    from doctor.core.fixengine import Outcome

    backup = f" Backup: {report.backup_dir}" if report.backup_dir else ""
    if report.outcome in (Outcome.APPLIED, Outcome.UNDONE):
        status = report.recheck.status.value if report.recheck else "?"
        verb = "undone" if report.outcome is Outcome.UNDONE else "applied"
        say(f"    ✓ {verb}; {check_id} now reports {status}.{backup}")
        if report.outcome is Outcome.APPLIED:
            say(f"    (to reverse it: kdoctor undo {report.entry_id})")
        return 0
    if report.outcome is Outcome.REFUSED:
        say(f"    refused, nothing changed: {report.reason}")
        return 1
    say(f"    ✗ {report.outcome.value}: {report.reason}.{backup}")
    for item in report.rollback:
        mark = "verified equal to its backup" if item.verified else f"NOT restored: {item.problem}"
        source = "absent before the fix" if item.backup == "absent" else item.backup
        say(f"      {item.what}: {mark} ({source})")
    return 2


def cmd_undo(args: argparse.Namespace) -> int:
    """Reverse the last applied fix (or journal entry ENTRY) from its backup."""
    from doctor.core.fixengine import DEFAULT_STATE_DIR, Journal, apply_fix
    from doctor.core.registry import discover
    from doctor.core.runner import run_one
    from doctor.ui.text import make_console
    from fixes.undo import CannotUndo, undo_fix

    if args.bundle is not None:
        raise UsageError("undo changes the node; a bundle is a copy", "run it on the node")
    state_dir = args.state_dir or DEFAULT_STATE_DIR
    journal = Journal(state_dir)
    hint = "kdoctor undo reverses what `kdoctor fix` applied, from the journal in --state-dir"
    try:
        entries = journal.entries()
    except FileNotFoundError:
        raise UsageError(f"nothing to undo: no fix journal at {journal.path}", hint) from None
    except OSError as exc:
        raise UsageError(
            f"cannot read the fix journal {journal.path}: {exc.strerror or exc}",
            "run kdoctor undo as root (sudo), or give --state-dir DIR",
        ) from exc
    entry = _entry_to_undo(entries, args.entry, journal.path)
    try:
        fix = undo_fix(entry)
    except CannotUndo as exc:
        raise UsageError(f"cannot undo: {exc}", hint) from exc
    check_id = str(entry.get("check"))
    check_cls = discover().get(check_id)
    session = open_target(args, [check_cls] if check_cls else [], with_probes=False)
    console = make_console()

    def say(text: str) -> None:
        console.print(safe(text), markup=False, highlight=False)

    say(f"Plan for undo of {entry.get('fix')} ({entry.get('id')}, applied {entry.get('time')}):")
    for line in fix.plan():
        say(f"    {line}")
    if args.dry_run:
        say("    (dry run: nothing changed)")
        return 0
    ensure_state_dir(state_dir)
    fix_ctx = make_fix_context(session, args.root, lambda line: say(f"    {line}"))
    if not args.yes and not _confirm(f"Undo {entry.get('fix')}?"):
        say("    declined: nothing changed.")
        return 1

    def recheck() -> CheckResult:
        if check_cls is None:
            raise RuntimeError(f"check {check_id} is not registered: nothing to re-run")
        return run_one(check_cls, session.ctx_factory())

    report = apply_fix(check_id, fix, fix_ctx, state_dir, recheck, undoes=str(entry.get("id")))
    return _say_outcome(say, check_id, report)


def _entry_to_undo(
    entries: list[dict[str, object]], wanted: str | None, path: Path
) -> dict[str, object]:
    """The journal entry ``undo`` reverses: WANTED (an id), else the last applied fix that
    no later entry undid."""
    undone = {str(e.get("undoes")) for e in entries if e.get("outcome") == "undone"}
    if wanted:
        named = [
            e
            for e in entries
            if wanted in (e.get("id"), str(e.get("backup")), Path(str(e.get("backup"))).name)
        ]
        if not named:
            raise UsageError(
                f"no journal entry {wanted!r} in {path}",
                "the ids are the names of the backup directories (field id of each entry)",
            )
        entry = named[-1]
        if entry.get("outcome") != "applied":
            raise UsageError(
                f"entry {wanted} was not applied (outcome {entry.get('outcome')}): nothing to undo"
            )
        if str(entry.get("id")) in undone:
            raise UsageError(f"entry {wanted} was already undone", "see the journal: " + str(path))
        return entry
    for entry in reversed(entries):
        if entry.get("outcome") == "applied" and str(entry.get("id")) not in undone:
            return entry
    raise UsageError(
        f"nothing to undo: no applied fix in {path} that was not undone already",
        "kdoctor undo ENTRY names one journal entry (its id)",
    )


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

    # A target that cannot be opened is a usage error here, not a part stuck "opening".
    if args.bundle is not None:
        read_bundle_manifest(args.bundle)
    elif args.kubeconfig:
        from doctor.facts.cluster import find_cluster_config

        find_cluster_config(args.kubeconfig, args.context, root=args.root)
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UsageError(
            "kdoctor tui needs a terminal", "use `kdoctor check` (or `kdoctor fix`) in scripts"
        )
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
        title = safe(check.title, single_line=True)
        print(f"{safe(check.id):<{width}}  {check.scope.value:<7}  {fix:<6}  {title}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from doctor.core.registry import discover

    registry = discover()
    check = registry.get(args.id)
    if check is None:
        raise UsageError(f"unknown check id {args.id!r} (see `kdoctor list`)")
    fix = check.fix_safety.value if check.fix_safety else "none"
    print(f"{safe(check.id)} ({check.scope.value}) — {safe(check.title, single_line=True)}")
    print(f"fix: {fix}")
    print()
    print(safe(check.documentation()))
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from doctor.facts.collect import collect_node

    out: Path = args.dir
    hint = "give a new directory: `kdoctor collect DIR` creates it"
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} exists and is not a directory", hint)
    try:
        if out.exists() and any(out.iterdir()):
            raise UsageError(f"{out} exists and is not empty", hint)
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".kdoctor-write-test"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"cannot write a bundle into {out}: {exc.strerror or exc}",
            "choose a directory you can write (e.g. under your home), or run as root",
        ) from exc
    manifest = collect_node(out, args.root)
    if args.scope in ("all", "cluster"):
        from doctor.facts.collect_cluster import collect_cluster

        manifest = collect_cluster(out, args, manifest)
    print(f"bundle written to {safe(out)}")
    for item in manifest.get("missing", []):
        print(f"  not collected: {safe(item, single_line=True)}")
    return 0
