"""The package's import graph, read from the source with ``ast``: cycles and upward imports.

Every ``import``/``from ... import`` of a ``taskengine`` module counts, wherever it sits
(module level, inside a function, under ``if TYPE_CHECKING``): a type-only or deferred
import still makes the importer know the imported module. ``LAYERS`` is the order the
import contracts in ``pyproject.toml`` enforce, top to bottom.

Run ``python tests/import_graph.py [package dir]`` for the numbers and the offending
edges.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

__all__ = ["LAYERS", "cycles", "import_graph", "layer_of", "upward_imports"]

LAYERS: tuple[tuple[str, ...], ...] = (
    ("taskengine.cli",),
    ("taskengine.dashboard",),
    ("taskengine.http", "taskengine.testing"),
    ("taskengine._servers", "taskengine._httpwire"),
    ("taskengine.tasktypes",),
    ("taskengine.engine",),
    ("taskengine._runner", "taskengine._settings", "taskengine._paging", "taskengine._retention"),
    ("taskengine._batches", "taskengine._queue", "taskengine._services"),
    ("taskengine._setstep",),
    ("taskengine._recorder",),
    ("taskengine._slices",),
    ("taskengine._ownership",),
    ("taskengine._writes",),
    ("taskengine.taskstore", "taskengine.progress"),
    ("taskengine._memory_taskstore", "taskengine._sqlite_taskstore", "taskengine._pg_taskstore"),
    ("taskengine._sqlite_leases", "taskengine._pg_leases"),
    ("taskengine._sqlite_taskschema", "taskengine._pg_taskschema"),
    ("taskengine._taskrow", "taskengine._lease"),
    ("taskengine.task",),
    ("taskengine._taskreader",),
    ("taskengine._taskjson",),
    ("taskengine._lifecycle",),
    ("taskengine.tasktype",),
    ("taskengine.storage", "taskengine.filters"),
    ("taskengine._jsonio", "taskengine.clock"),
    ("taskengine._values",),
    ("taskengine.errors", "taskengine.codes"),
)
"""Top to bottom; a module may import only modules of its own layer or lower ones."""

PACKAGE = Path(__file__).resolve().parents[1] / "taskengine"


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imported(node: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            yield full if full in known else base


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """``{module: modules of the package it imports}`` for every module under ``root``."""
    modules = _modules(root)
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        targets = set()
        for node in ast.walk(tree):
            for name in _imported(node, module, path.name == "__init__.py", known):
                while name and name not in known:
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """The import loops: each strongly connected group of two or more modules, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan; the graph is small, recursion is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of the layer holding ``module`` (0 = top), if any."""
    for number, layer in enumerate(LAYERS):
        if any(module == name or module.startswith(f"{name}.") for name in layer):
            return number
    return None


def upward_imports(graph: Mapping[str, set[str]]) -> list[tuple[str, str]]:
    """Every ``(importer, imported)`` where the imported module sits in a higher layer."""
    found = []
    for module, targets in graph.items():
        here = layer_of(module)
        for target in targets:
            there = layer_of(target)
            if here is not None and there is not None and there < here:
                found.append((module, target))
    return sorted(found)


def main(argv: list[str]) -> int:
    """Print the loops and the upward imports of the package at ``argv[0]``."""
    graph = import_graph(Path(argv[0]) if argv else PACKAGE)
    loops, upward = cycles(graph), upward_imports(graph)
    print(f"{len(graph)} modules, {len(loops)} import loop(s), {len(upward)} upward import(s)")
    for loop in loops:
        print("  loop:", " <-> ".join(loop))
    for importer, imported in upward:
        print(f"  upward: {importer} -> {imported}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
