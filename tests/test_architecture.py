"""The architecture, checked from the source: the import graph of ``mlmd_cache`` and ``lineage`` has no
cycle, and every import points down the layers declared in :data:`LAYERS` (issue 24, item 2).

The graph is read with ``ast``, never by importing: every ``import`` and ``from ... import``
anywhere in a module (at module level, under ``if TYPE_CHECKING``, inside a function: an import
moved into a function to dodge a cycle is still the cycle), relative imports resolved, ``from . import
x`` naming the submodule ``x``, and ``importlib.import_module("literal")`` / ``__import__("literal")``.
The implicit import of a module's parent packages is not an edge: the packages' ``__init__`` modules
import nothing of their own package at run time (docstrings, or names exported on first use).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import pytest

REPO = Path(__file__).resolve().parent.parent

LAYERS: list[tuple[str, dict[str, list[str]]]] = [
    # Bottom first. A module may import modules of its own unit and of the layers below it; never a
    # layer above, nor another unit of its own layer (siblings stay independent).
    ("base", {"base": ["mlmd_cache._backoff", "mlmd_cache._entry", "mlmd_cache._lazy", "mlmd_cache._messages", "mlmd_cache._protobuf",
                       "mlmd_cache._version", "mlmd_cache.defaults", "mlmd_cache.durations", "mlmd_cache.errors", "mlmd_cache.terminal"]}),
    ("key, environments", {"key": ["mlmd_cache.key"], "environments": ["mlmd_cache.environments"]}),
    ("store", {"store": ["mlmd_cache.store", "mlmd_cache.connection"]}),
    ("cache", {"cache": ["mlmd_cache.cache"]}),
    ("pipeline", {"pipeline": ["mlmd_cache.pipeline"]}),
    ("runner, server, lineage", {"runner": ["mlmd_cache.runner"], "server": ["mlmd_cache.server"],
                                 "lineage": ["lineage"]}),
    ("cli", {"cli": ["mlmd_cache.cli", "lineage.cli", "mlmd_cache.__main__", "lineage.__main__"]}),
    ("public API", {"api": ["mlmd_cache="]}),  # "=": that module only (the package's names, exported on first use)
]


# ------------------------------------------------------------------------------------ the graph


def modules_of(roots: Mapping[str, Path]) -> dict[str, tuple[Path, bool]]:
    """Every module under each package root: its name -> (its file, whether it is a package)."""
    found = {}
    for package, directory in roots.items():
        for path in sorted(directory.rglob("*.py")):
            parts = [package, *path.relative_to(directory).with_suffix("").parts]
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def _known(name: str, modules: Mapping[str, object]) -> Optional[str]:
    """``name`` if it is one of ``modules``, else its nearest enclosing one (a name in a module), else None."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, is_package: bool, modules: Mapping[str, object]) -> set[str]:
    """The modules among ``modules`` that ``module`` imports, anywhere in its source."""
    found: set[str] = set()
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[:len(here) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            function = node.func
            called = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            if called in ("import_module", "__import__"):
                names = [node.args[0].value]
        for name in names:
            target = _known(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(roots: Mapping[str, Path]) -> dict[str, set[str]]:
    """Module -> the modules it imports, for every module under ``roots`` (package name -> directory)."""
    modules = modules_of(roots)
    return {name: imports_of(name, path, is_package, modules) for name, (path, is_package) in modules.items()}


def cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component that has one, each as ``[a, b, ..., a]``."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(start: str) -> None:  # Tarjan's algorithm, iteratively (no recursion limit)
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for target in edges:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph.get(target, ())))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in graph.get(node, ()):
                        components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: Sequence[str], graph: Mapping[str, set[str]]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component (breadth first)."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph.get(node, ())):
                if target == start:
                    return paths[node] + [start]
                if target in members and target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def place(module: str, layers: Sequence[tuple[str, Mapping[str, Sequence[str]]]]) -> Optional[tuple[int, str]]:
    """(layer number, unit) of a module: the longest prefix that names it ("name=" names that module only)."""
    best: Optional[tuple[int, int, str]] = None
    for number, (_, units) in enumerate(layers):
        for unit, prefixes in units.items():
            for prefix in prefixes:
                exact = prefix.endswith("=")
                prefix = prefix.rstrip("=")
                if module == prefix or (not exact and module.startswith(prefix + ".")):
                    if best is None or len(prefix) > best[0]:
                        best = (len(prefix), number, unit)
    return None if best is None else (best[1], best[2])


def layer_problems(graph: Mapping[str, set[str]],
                   layers: Sequence[tuple[str, Mapping[str, Sequence[str]]]]) -> list[str]:
    """Every import that goes up a layer or across to a sibling unit, and every module with no layer."""
    problems = []
    for module in sorted(graph):
        where = place(module, layers)
        if where is None:
            problems.append(f"{module} is in no layer: declare it in LAYERS")
            continue
        for target in sorted(graph[module]):
            there = place(target, layers)
            if there is None:
                continue  # told once, as a module
            if there[0] > where[0]:
                problems.append(f"{module} ({layers[where[0]][0]}) imports {target}, a higher layer "
                                f"({layers[there[0]][0]})")
            elif there[0] == where[0] and there[1] != where[1]:
                problems.append(f"{module} ({where[1]}) imports {target} of its sibling {there[1]}")
    return problems


# ------------------------------------------------------------------------------------ the checks

ROOTS = {"mlmd_cache": REPO / "mlmd_cache", "lineage": REPO / "lineage"}


def test_the_packages_import_no_cycle() -> None:
    found = cycles(import_graph(ROOTS))
    assert not found, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in found)


def test_every_import_points_down_the_layers() -> None:
    problems = layer_problems(import_graph(ROOTS), LAYERS)
    assert not problems, "\n".join(problems)


def test_the_graph_sees_what_it_must() -> None:
    """The graph has what the checks rely on: a function-level import, a relative import of a
    submodule, an import across the two packages."""
    graph = import_graph(ROOTS)
    assert "mlmd_cache.cache.dedup" in graph["mlmd_cache.cache.execution_cache"]  # from . import dedup
    assert "mlmd_cache.store.connection" in graph["mlmd_cache.cli.options"]  # inside a function
    assert "mlmd_cache.cli.options" in graph["lineage.cli"]


def _package(tmp_path: Path, files: Mapping[str, str]) -> dict[str, Path]:
    for name, text in files.items():
        path = tmp_path / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return {"pkg": tmp_path / "pkg"}


def test_a_cycle_is_found_and_named_even_through_a_function_level_import(tmp_path: Path) -> None:
    roots = _package(tmp_path, {
        "__init__.py": "",
        "low.py": "from . import high\n",
        "high.py": "def late():\n    from .low import something\n",
        "sub/__init__.py": "",
        "sub/other.py": "import importlib\nimportlib.import_module('pkg.sub.third')\n",
        "sub/third.py": "from .. import sub\nfrom ..sub import other\n",
    })
    assert cycles(import_graph(roots)) == [["pkg.high", "pkg.low", "pkg.high"],
                                           ["pkg.sub.other", "pkg.sub.third", "pkg.sub.other"]]


def test_an_import_up_or_across_a_layer_is_told(tmp_path: Path) -> None:
    roots = _package(tmp_path, {
        "__init__.py": "",
        "base.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.top import main\n",
        "left.py": "from . import right, base\n",
        "right.py": "",
        "top.py": "from . import base, left\n",
        "stray.py": "",
    })
    layers = [("bottom", {"base": ["pkg.base"]}), ("middle", {"left": ["pkg.left"], "right": ["pkg.right"]}),
              ("top", {"top": ["pkg.top", "pkg="]})]
    assert layer_problems(import_graph(roots), layers) == [
        "pkg.base (bottom) imports pkg.top, a higher layer (top)",
        "pkg.left (left) imports pkg.right of its sibling right",
        "pkg.stray is in no layer: declare it in LAYERS",
    ]


@pytest.mark.parametrize("module, layer", [("mlmd_cache", "public API"), ("mlmd_cache.cli.options", "cli"),
                                           ("lineage.cli", "cli"), ("lineage.graph", "runner, server, lineage"),
                                           ("mlmd_cache.key.gojson", "key, environments")])
def test_modules_are_placed_by_their_longest_prefix(module: str, layer: str) -> None:
    where = place(module, LAYERS)
    assert where is not None and LAYERS[where[0]][0] == layer
