"""Issue 26.4: imports among autoprune's modules run one way. Three circles came back
after the architecture step (results / finalize / deploy; evaluate / pruning / recover /
tasks._base; profiles / quantize); this fails on any circle, so none comes back unseen.

Every import counts: at module level, inside a function (a lazy import is still a
dependency) and under ``TYPE_CHECKING`` (a type from a higher stage is a dependency on
it too). A package's own ``__init__`` is a node like any module: ``from autoprune
import search`` depends on ``autoprune/__init__.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "autoprune"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}

    def resolve(name: str) -> str | None:
        while name and name not in modules:  # `autoprune.x.func` -> `autoprune.x`
            name = name.rpartition(".")[0]
        return name or None

    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from package level up
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # `from autoprune import pruning` names a module; `from autoprune.x import f` a name in x
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
            for target in targets:
                found = resolve(target) if target.startswith("autoprune") else None
                if found and found != name:
                    graph[name].add(found)
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_the_imports_it_must():
    graph = _graph()
    assert "autoprune.tasks._base" in graph["autoprune.recover"]  # a module-level `from ... import`
    assert "autoprune.tasks._base" in graph["autoprune.pruning"]  # an import inside a function
    assert "autoprune.export" in graph["autoprune.trials"]  # under TYPE_CHECKING
    assert "autoprune.search_loop" in graph["autoprune"]  # the package's __init__


def test_no_import_circles_among_autoprune_modules():
    circles = _circles(_graph())
    assert not circles, "import circles (each: modules that import each other in a loop): " + "; ".join(
        " <-> ".join(c) for c in circles)


def test_a_circle_is_found_when_there_is_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _circles(graph) == [["a", "b", "c"]]
