"""chunkreg's packages import one way only, and no module imports itself round a cycle.

Every module under ``src/chunkreg`` is parsed with :mod:`ast`; its imports (at module level and
inside functions) give a graph of modules. The test fails on any cycle in that graph and on any
import of a higher layer from a lower one. The layers, lowest first:

0. ``errors``, ``_validation``, ``_version``, ``_logging``: imported by everyone;
1. ``registration`` (numpy kernels) and ``tiling`` (tile geometry): neither imports the other;
2. ``execution``: tasks on a cluster (client state that ``io`` asks about);
3. ``io``: zarr and OME-Zarr, stores, completion records;
4. ``engine``: stages, result sinks, blending, pyramids of outputs;
5. the workflows ``volume``, ``timeseries``, ``stitching``;
6. the front ends: ``cli``, ``_scripts``, ``demo``, ``dask``, ``testing`` and the package itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "chunkreg"

LAYERS = {
    "errors": 0,
    "_validation": 0,
    "_version": 0,
    "_logging": 0,
    "registration": 1,
    "tiling": 1,
    "execution": 2,
    "io": 3,
    "engine": 4,
    "volume": 5,
    "timeseries": 5,
    "stitching": 5,
}
TOP = 6  # anything not listed: cli, _scripts, demo, dask, testing, __main__, the package
#: Same-layer packages that must not import each other.
SEPARATE = {frozenset({"registration", "tiling"})}


def module_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules of the same package it imports}`` for the package at ``root``.

    Module names are dotted from the package (``pkg.sub.mod``); a package is named by its
    ``__init__``. ``from pkg.sub import name`` counts as importing ``pkg.sub.name`` when that
    is a module, else ``pkg.sub``. Imports anywhere in a module count (functions too).
    """
    package = root.name
    modules: dict[str, tuple[Path, bool]] = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        modules[".".join(parts)] = (path, is_package)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        here = name.split(".") if is_package else name.split(".")[:-1]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    found.add(sub if sub in modules else target)
        graph[name] = {
            m for m in found if m.split(".")[0] == package and m in modules and m != name
        }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Imports of a higher layer from a lower one, and between separate packages."""
    out = []
    for module, imports in sorted(graph.items()):
        src = _top(module)
        for target in sorted(imports):
            dst = _top(target)
            if src == dst:
                continue
            low, high = LAYERS.get(src, TOP), LAYERS.get(dst, TOP)
            if high > low or (high == low and frozenset({src, dst}) in SEPARATE):
                out.append(f"{module} imports {target}")
    return out


def test_no_import_cycles():
    cycle = find_cycle(module_graph(SRC))
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_imports_follow_the_layers():
    assert layer_violations(module_graph(SRC)) == []


def test_workflows_do_not_import_each_other_round_a_cycle():
    graph = module_graph(SRC)
    packages: dict[str, set[str]] = {}
    for module, imports in graph.items():
        packages.setdefault(_top(module), set()).update(_top(m) for m in imports)
    for p in packages.values():
        p.discard("")
    for p, imported in packages.items():
        imported.discard(p)
    assert find_cycle(packages) is None


def _fake_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_detector_finds_a_cycle_through_a_function_level_import(tmp_path):
    pkg = _fake_package(tmp_path, {
        "__init__.py": "",
        "a.py": "from . import b\n",
        "b.py": "def f():\n    from .c import g\n    return g\n",
        "c.py": "from .a import x\n",
        "d.py": "import pkg.a\n",
    })  # fmt: skip
    graph = module_graph(pkg)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"}
    assert graph["pkg.d"] == {"pkg.a"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (pkg / "c.py").write_text("import numpy\n")  # the cycle broken
    assert find_cycle(module_graph(pkg)) is None


def test_detector_resolves_relative_imports_from_subpackages(tmp_path):
    pkg = _fake_package(tmp_path, {
        "__init__.py": "",
        "io/__init__.py": "from ._x import y\n",
        "io/_x.py": "from ..volume import _w\n",
        "volume/__init__.py": "",
        "volume/_w.py": "from ..io import y\n",
    })  # fmt: skip
    graph = module_graph(pkg)
    assert graph["pkg.io"] == {"pkg.io._x"} and graph["pkg.io._x"] == {"pkg.volume._w"}
    assert find_cycle(graph) == ["pkg.io", "pkg.io._x", "pkg.volume._w", "pkg.io"]
    assert layer_violations(graph) == ["pkg.io._x imports pkg.volume._w"]


@pytest.mark.parametrize(
    ("source", "target", "bad"),
    [("registration", "io", True), ("registration", "tiling", True), ("io", "tiling", False),
     ("engine", "volume", True), ("volume", "engine", False), ("cli", "volume", False),
     ("execution", "io", True), ("volume", "cli", True)],
)  # fmt: skip
def test_layer_rules(source, target, bad):
    graph = {f"chunkreg.{source}._m": {f"chunkreg.{target}._n"}, f"chunkreg.{target}._n": set()}
    assert bool(layer_violations(graph)) is bad


#: Packages whose private modules the CLI and the ``workflows/`` scripts must not reach into.
LIBRARY = ("registration", "tiling", "execution", "io", "engine", "volume", "timeseries",
           "stitching")  # fmt: skip


def private_library_imports(graph: dict[str, set[str]], sources) -> list[str]:
    """Imports of ``chunkreg.<library package>._<module>`` by the modules in ``sources``."""
    out = []
    for module in sorted(sources):
        for target in sorted(graph.get(module, ())):
            parts = target.split(".")
            if len(parts) > 2 and parts[1] in LIBRARY and parts[2].startswith("_"):
                out.append(f"{module} imports {target}")
    return out


def _script_graph() -> dict[str, set[str]]:
    """The ``workflows/`` scripts' imports of chunkreg modules (absolute imports only)."""
    graph = module_graph(SRC)
    scripts = {}
    for path in sorted((SRC.parents[1] / "workflows").glob("*.py")):
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in graph
                          else node.module for a in node.names}  # fmt: skip
        scripts[f"workflows.{path.stem}"] = found
    return scripts


def test_cli_and_scripts_use_public_names_only():
    graph = module_graph(SRC)
    cli = [m for m in graph if m.startswith("chunkreg.cli")]
    assert cli and private_library_imports(graph, cli) == []
    scripts = _script_graph()
    assert scripts and private_library_imports(scripts, scripts) == []


def test_private_import_check_catches_one():
    graph = {"chunkreg.cli.warp": {"chunkreg.volume._warp_volume", "chunkreg.volume"}}
    assert private_library_imports(graph, graph) == [
        "chunkreg.cli.warp imports chunkreg.volume._warp_volume"
    ]
