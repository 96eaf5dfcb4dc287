"""The import contract of docs/architecture.md: layers import only downwards, no circles.

Every import counts, also those inside functions and under ``TYPE_CHECKING``: a lazy import
still ties the lower module to the upper one. The walk uses ``ast`` over the shipped packages.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("doctor", "checks", "fixes")

#: Bottom to top. A module may import its own layer and the ones before it.
LAYERS = [
    "doctor",  # doctor/__init__.py: __version__ only
    "doctor.core",
    "doctor.parse",
    "doctor.facts",
    "doctor.analysis",
    "doctor.live",
    "fixes",
    "checks",
    "doctor.session",
    "doctor.fleet",
    "doctor.ui.text",
    "doctor.ui.fleettext",
    "doctor.ui.tui",
    "doctor.ui.cli",
    "doctor.ui",  # doctor/ui/__init__.py
    "doctor.__main__",
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    """Index of the most specific layer that MODULE belongs to."""
    best, best_len = -1, -1
    for index, layer in enumerate(LAYERS):
        if (module == layer or module.startswith(layer + ".")) and len(layer) > best_len:
            best, best_len = index, len(layer)
    if best < 0:
        raise AssertionError(f"{module} belongs to no layer of docs/architecture.md")
    return best


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(path: Path, module: str, known: set[str]) -> list[tuple[int, str]]:
    """(line, imported project module) for every import statement in PATH."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import submodule` imports the submodule; `from mod import name` the module.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                out.append((node.lineno, target))
    return out


def import_graph() -> dict[str, list[tuple[int, str]]]:
    modules = project_modules()
    known = set(modules)
    return {name: imports_of(path, name, known) for name, path in modules.items()}


def find_cycles(graph: dict[str, list[tuple[int, str]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for _line, succ in graph.get(node, []):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_every_module_has_a_layer() -> None:
    for module in project_modules():
        layer_of(module)


def test_no_upward_imports() -> None:
    graph = import_graph()
    upward = [
        f"{project_modules()[module].relative_to(ROOT)}:{line}: {module} "
        f"({LAYERS[layer_of(module)]}) imports {target} ({LAYERS[layer_of(target)]})"
        for module, edges in graph.items()
        for line, target in edges
        if layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_no_import_circles() -> None:
    assert find_cycles(import_graph()) == []


def test_the_contract_catches_violations() -> None:
    """The walk itself: an upward edge and a circle in a made-up graph are both found."""
    graph = {"doctor.core.a": [(3, "doctor.ui.cli")], "doctor.ui.cli": [(9, "doctor.core.a")]}
    assert find_cycles(graph) == [["doctor.core.a", "doctor.ui.cli"]]
    assert layer_of("doctor.ui.cli") > layer_of("doctor.core.a")
    with pytest.raises(AssertionError):
        layer_of("elsewhere.module")
