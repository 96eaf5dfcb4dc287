"""Everything the TUI does to its target, with the same functions ``check`` and ``fix`` use.

Every method that may block (opening the target — :class:`doctor.facts.kube.LiveCluster` connects
in its constructor —, running checks, applying a fix, writing a file) is called from a worker
thread, never from the UI thread. No textual import here.

The target is opened in two parts: the node part (node checks, quick) and, when cluster
checks are selected, the cluster part, so node results appear at once while a slow or dead
API server is still being waited for.

A node session's ``ctx_factory()`` gives fresh fact caches on every call, but a cluster
session keeps one cluster object, whose API lists are cached for its lifetime. So a re-run
of cluster checks, and the re-check after a cluster fix, open the cluster part again: they
must see the cluster as it is now, not as it was at the first run.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from doctor.core.fix import Fix
from doctor.core.fixengine import (
    DEFAULT_STATE_DIR,
    FixReport,
    Outcome,
    apply_fix,
    record_without_applying,
)
from doctor.core.model import CheckResult, Scope
from doctor.core.registry import Check
from doctor.core.report import Report, Target, now, render_json, write_atomically
from doctor.core.runner import run_checks, run_one
from doctor.session import Session, make_fix_context, open_target


def _cleanup(session: Session) -> None:
    """Remove what a run's live probes created (probe pods), as ``check`` does after a run.

    Problems go to stderr, which the app shows as notifications. A session's probes are
    closed afterwards, which is one more reason a re-run opens the cluster part again.
    """
    for problem in session.cleanup():
        print(f"kdoctor: warning: probe not removed: {problem}", file=sys.stderr)


class TargetNotOpen(Exception):
    """The part of the target a check needs is not open (yet, or it failed)."""


class Backend:
    def __init__(self, args: argparse.Namespace, checks: Sequence[type[Check]]) -> None:
        self.args = args
        self.checks: list[type[Check]] = list(checks)
        self.by_id: dict[str, type[Check]] = {c.id: c for c in self.checks}
        self._sessions: dict[Scope, Session] = {}
        self._fresh: set[Scope] = set()  # parts opened and not yet used by a run
        #: Why there is no cluster to examine (no kubeconfig, bundle without cluster/, …).
        self.cluster_unavailable: str | None = None
        self._lock = threading.Lock()

    # -- the target ------------------------------------------------------------------------
    def checks_of(self, scope: Scope) -> list[type[Check]]:
        return [c for c in self.checks if c.scope is scope]

    @property
    def parts(self) -> list[Scope]:
        """The parts to open: always the node (it names the target), the cluster if needed."""
        return [Scope.NODE] + ([Scope.CLUSTER] if self.checks_of(Scope.CLUSTER) else [])

    @property
    def on_bundle(self) -> bool:
        return self.args.bundle is not None

    @property
    def state_dir(self) -> Path:
        state_dir: Path | None = self.args.state_dir
        return state_dir or DEFAULT_STATE_DIR

    def open(self, scope: Scope) -> Session:
        """Open one part (blocks: reads the bundle manifest, connects to the API server)."""
        session = open_target(self.args, self.checks_of(scope))
        if scope is Scope.CLUSTER:
            self.cluster_unavailable = session.ctx_factory().cluster.unavailable
        with self._lock:
            self._sessions[scope] = session
            self._fresh.add(scope)
        return session

    def current(self, scope: Scope) -> Session:
        """A session whose facts are read anew: the cluster part is reopened once used."""
        with self._lock:
            session = self._sessions.get(scope)
            fresh = scope in self._fresh
            self._fresh.discard(scope)
        if session is None:
            raise TargetNotOpen(f"the {scope.value} target is not open")
        if scope is Scope.CLUSTER and not fresh:
            session = self.open(scope)
            with self._lock:
                self._fresh.discard(scope)
        return session

    def session(self, scope: Scope) -> Session | None:
        with self._lock:
            return self._sessions.get(scope)

    def target(self) -> Target | None:
        """The report's target, from whatever parts are open so far."""
        node = self.session(Scope.NODE)
        cluster = self.session(Scope.CLUSTER)
        if node is None and cluster is None:
            return None
        base = (node or cluster).target  # type: ignore[union-attr]
        return Target(
            node=base.node,
            bundle=base.bundle,
            cluster=cluster.target.cluster if cluster is not None else None,
        )

    # -- checks ----------------------------------------------------------------------------
    def run(
        self, scope: Scope, ids: Sequence[str], on_result: Callable[[CheckResult], None]
    ) -> None:
        """Run the given checks of one part with the run's deadline, as ``check`` does."""
        session = self.current(scope)
        wanted = set(ids)
        checks = [c for c in session.checks if c.id in wanted]
        if not checks:
            return
        try:
            run_checks(
                checks,
                session.ctx_factory(),  # fresh fact caches: a re-run reads the node again
                deadline=self.args.timeout,
                per_check_timeout=self.args.timeout,
                on_result=on_result,
            )
        finally:
            _cleanup(session)

    # -- fixes -----------------------------------------------------------------------------
    def apply(self, check_id: str, fix: Fix, on_step: Callable[[str], None]) -> FixReport:
        """Back up, apply, re-check, roll back, journal: :func:`doctor.core.fixengine.apply_fix`."""
        if self.on_bundle:
            raise TargetNotOpen("fixes refuse to run on a bundle")
        check_cls = self.by_id[check_id]
        session = self.session(check_cls.scope)
        if session is None:
            raise TargetNotOpen(f"the {check_cls.scope.value} target is not open")
        ctx = make_fix_context(session, self.args.root, on_step)

        def recheck() -> CheckResult:
            fresh = self.current(check_cls.scope)
            try:
                return run_one(check_cls, fresh.ctx_factory())
            finally:
                _cleanup(fresh)

        return apply_fix(check_id, fix, ctx, self.state_dir, recheck)

    def decline(self, check_id: str, fix: Fix) -> None:
        """Journal a fix the user declined at the confirmation, as ``fix`` does."""
        record_without_applying(
            self.state_dir, check_id, fix, Outcome.DECLINED, "declined in kdoctor tui"
        )

    # -- reports ---------------------------------------------------------------------------
    def report(self, results: Sequence[CheckResult]) -> Report:
        target = self.target() or Target(node=None, bundle=None, cluster=None)
        order = {c.id: index for index, c in enumerate(self.checks)}
        ordered = sorted(results, key=lambda r: order.get(r.id, len(order)))
        return Report(target=target, results=ordered, generated_at=now())

    def save(self, path: Path, results: Sequence[CheckResult]) -> Path:
        """Write the JSON report (``kdoctor/report/v1``) atomically; return the full path."""
        write_atomically(path, render_json(self.report(results)))
        return path.resolve()
