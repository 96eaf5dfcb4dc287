"""Check plugins: the base class and discovery through the ``kdoctor.checks`` entry points.

Built-in checks are found the same way a third-party plugin is: the ``builtin`` entry point
names the :mod:`checks` package, and every module in it is imported and its :class:`Check`
subclasses collected, so adding a check is adding a module (no registry edit). A plugin's
entry point may name a package, a module or a single class. The pipeline is flake8's:
find → load (an import failure is reported, not fatal) → validate → sort.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib import metadata
from types import ModuleType
from typing import ClassVar

from doctor.core.context import CheckContext
from doctor.core.fix import FixSafety
from doctor.core.model import Scope, Verdict

ENTRY_POINT_GROUP = "kdoctor.checks"
ID_PATTERN = re.compile(r"^(node|cluster)(\.[a-z0-9][a-z0-9-]*)+$")


class Check(ABC):
    """One diagnosis. The class docstring is its documentation (``kdoctor explain``).

    Write it as: what it checks, why it matters, how to fix, fix safety.
    ``run`` must not change anything: it gets a read-only :class:`CheckContext`.
    """

    id: ClassVar[str]
    title: ClassVar[str]
    scope: ClassVar[Scope]
    #: None when the check never offers a fix (ruff's fix availability).
    fix_safety: ClassVar[FixSafety | None] = None
    #: Whole API lists the check reads ("nodes", "kube-system/pods"): the run's fact cache
    #: then answers other checks' narrower asks (a label selector in kube-system) from them.
    reads: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def run(self, ctx: CheckContext) -> Verdict:
        """Decide. Raise FactMissing to skip, FactError to report an error."""

    @classmethod
    def documentation(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "(no documentation)")


@dataclass(frozen=True)
class LoadFailure:
    """A plugin that could not be loaded; reported by ``kdoctor list`` and in runs."""

    source: str
    reason: str


@dataclass
class Registry:
    checks: list[type[Check]] = field(default_factory=list)
    failures: list[LoadFailure] = field(default_factory=list)

    def get(self, check_id: str) -> type[Check] | None:
        for check in self.checks:
            if check.id == check_id:
                return check
        return None


def _checks_in_module(module: ModuleType) -> list[type[Check]]:
    return [
        obj
        for _name, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, Check)
        and not inspect.isabstract(obj)
        and obj.__module__ == module.__name__
    ]


def _load_target(target: object, source: str, failures: list[LoadFailure]) -> list[type[Check]]:
    """Collect Check classes from a class, a module or a package (recursively)."""
    if inspect.isclass(target):
        if issubclass(target, Check):
            return [target]
        failures.append(LoadFailure(source, f"{target!r} is not a kdoctor Check"))
        return []
    if not isinstance(target, ModuleType):
        failures.append(LoadFailure(source, f"{target!r} is not a module or Check class"))
        return []
    found = _checks_in_module(target)
    for info in pkgutil.walk_packages(getattr(target, "__path__", []), target.__name__ + "."):
        try:
            module = importlib.import_module(info.name)
        except Exception as exc:  # a broken check module must not take the others down
            failures.append(LoadFailure(info.name, f"{type(exc).__name__}: {exc}"))
            continue
        found.extend(_checks_in_module(module))
    return found


def discover(include_builtin_fallback: bool = True) -> Registry:
    """Find, load, validate and sort every check."""
    registry = Registry()
    candidates: list[type[Check]] = []
    entry_points = sorted(
        metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: (ep.name, ep.value)
    )
    names = {ep.name for ep in entry_points}
    for ep in entry_points:
        try:
            target = ep.load()
        except Exception as exc:
            registry.failures.append(
                LoadFailure(f"{ep.name} = {ep.value}", f"{type(exc).__name__}: {exc}")
            )
            continue
        candidates.extend(_load_target(target, f"{ep.name} = {ep.value}", registry.failures))
    if "builtin" not in names and include_builtin_fallback:
        # Running from a source tree that was never installed: load the same package directly.
        candidates.extend(_load_target(importlib.import_module("checks"), "checks", []))

    seen: dict[str, type[Check]] = {}
    for check in candidates:
        problem = _validate(check)
        if problem:
            registry.failures.append(LoadFailure(f"{check.__module__}.{check.__name__}", problem))
            continue
        if check.id in seen:
            if seen[check.id] is not check:
                registry.failures.append(
                    LoadFailure(
                        f"{check.__module__}.{check.__name__}",
                        f"duplicate check id {check.id!r} (already defined by "
                        f"{seen[check.id].__module__}.{seen[check.id].__name__})",
                    )
                )
            continue
        seen[check.id] = check
    # Node checks first, then cluster; by id within a scope: stable for reports and diffs.
    registry.checks = sorted(seen.values(), key=lambda c: (c.scope != Scope.NODE, c.id))
    return registry


def _validate(check: type[Check]) -> str | None:
    check_id = getattr(check, "id", None)
    if not isinstance(check_id, str) or not ID_PATTERN.match(check_id):
        return f"invalid check id {check_id!r} (want e.g. node.something or cluster.something)"
    scope = getattr(check, "scope", None)
    if not isinstance(scope, Scope):
        return f"{check_id}: scope must be Scope.NODE or Scope.CLUSTER"
    if not check_id.startswith(scope.value + "."):
        return f"{check_id}: id must start with its scope {scope.value!r}"
    if not isinstance(getattr(check, "title", None), str):
        return f"{check_id}: missing title"
    return None
