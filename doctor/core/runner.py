"""Runs checks concurrently, each with a timeout, the whole run within a deadline.

A check that raises, or does not finish in time, becomes ``error`` with the reason; the
others are unaffected. Threads are daemons so a check stuck in a dead socket can never keep
the process alive after the report is written.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence

from doctor.core.context import CheckContext
from doctor.core.errors import FactError, FactMissing
from doctor.core.model import CheckResult, Scope, Status, Verdict
from doctor.core.registry import Check

MAX_PARALLEL = 8


def _verdict_of(check: Check, ctx: CheckContext) -> Verdict:
    if check.scope is Scope.CLUSTER and ctx.cluster.unavailable:
        return Verdict.skip(ctx.cluster.unavailable)
    if check.scope is Scope.NODE and ctx.not_a_node:
        return Verdict.skip(ctx.not_a_node)
    try:
        verdict = check.run(ctx)
    except FactMissing as exc:
        return Verdict.skip(str(exc))
    except FactError as exc:
        return Verdict.error(str(exc))
    except Exception as exc:  # the doctor check crashed: report it, never a traceback
        return Verdict.error(f"check crashed: {type(exc).__name__}: {exc}")
    if not isinstance(verdict, Verdict):
        return Verdict.error(f"check returned {type(verdict).__name__}, not a Verdict")
    return verdict


def run_one(check_cls: type[Check], ctx: CheckContext) -> CheckResult:
    """Run a single check in the calling thread (used for re-checks after a fix)."""
    started = time.monotonic()
    verdict = _verdict_of(check_cls(), ctx)
    return _result(check_cls, verdict, started)


def _result(check_cls: type[Check], verdict: Verdict, started: float) -> CheckResult:
    return CheckResult(
        id=check_cls.id,
        title=check_cls.title,
        scope=check_cls.scope,
        status=verdict.status,
        summary=verdict.summary,
        findings=verdict.findings,
        fix=verdict.fix,
        duration_ms=int((time.monotonic() - started) * 1000),
        evidence=verdict.evidence,
    )


def run_checks(
    checks: Sequence[type[Check]],
    ctx: CheckContext,
    *,
    deadline: float,
    per_check_timeout: float,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """Run every check; return results in the order given."""
    results: dict[str, CheckResult] = {}
    done: queue.Queue[CheckResult] = queue.Queue()
    slots = threading.Semaphore(MAX_PARALLEL)
    started_at: dict[str, float] = {}
    run_started = time.monotonic()
    run_deadline = run_started + deadline
    # Before any check asks: which whole lists will be read, for the fact cache to share.
    ctx.cluster.expect(read for c in checks for read in c.reads)

    def worker(check_cls: type[Check]) -> None:
        with slots:
            started = time.monotonic()
            started_at[check_cls.id] = started
            done.put(_result(check_cls, _verdict_of(check_cls(), ctx), started))

    for check_cls in checks:
        threading.Thread(target=worker, args=(check_cls,), name=check_cls.id, daemon=True).start()

    pending = {c.id: c for c in checks}
    while pending:
        now = time.monotonic()
        # Earliest moment some pending check runs out of time.
        limits = [run_deadline]
        limits.extend(started_at[cid] + per_check_timeout for cid in pending if cid in started_at)
        wait = max(0.0, min(limits) - now)
        try:
            result = done.get(timeout=min(wait, 0.2) if wait > 0 else 0.0)
        except queue.Empty:
            result = None
        if result is not None and result.id in pending:
            del pending[result.id]
            results[result.id] = result
            if on_result:
                on_result(result)
            continue
        now = time.monotonic()
        for cid in list(pending):
            began = started_at.get(cid)
            overall = now >= run_deadline
            own = began is not None and now >= began + per_check_timeout
            if overall or own:
                check_cls = pending.pop(cid)
                reason = (
                    f"timed out after {per_check_timeout:g}s"
                    if own
                    else f"did not finish before the run's deadline ({deadline:g}s)"
                )
                timed_out = CheckResult(
                    id=cid,
                    title=check_cls.title,
                    scope=check_cls.scope,
                    status=Status.ERROR,
                    summary=reason,
                    duration_ms=int((now - (began or run_started)) * 1000),
                )
                results[cid] = timed_out
                if on_result:
                    on_result(timed_out)
    return [results[c.id] for c in checks]
