"""Layers point down only: connectors → streams → processors, all of them → schemas.

An AST walk over every source file of the package (no import needed, so the
check cannot be fooled by import-time side effects):

* no import runs back up a layer (``processors`` importing ``streams``, ...);
* ``processors`` imports no Kafka client, no Faust and no web framework;
* no bare ``streams``/``processors``/``connectors``/``schemas``/``benchmarks``
  import is left in the package (everything is ``loopline.*``);
* no import cycle between modules (each edge counts, function-level imports too).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LAYERS = {"schemas": 0, "policies": 0, "processors": 1, "streams": 2, "connectors": 3}
BARE = {"streams", "processors", "connectors", "schemas", "benchmarks", "policies"}
PURE_FORBIDDEN = {"faust", "confluent_kafka", "aiokafka", "aiohttp", "mode", "prometheus_client"}


def _modules() -> dict[str, Path]:
    out = {}
    for top in LAYERS:
        for path in (REPO / top).rglob("*.py"):
            rel = path.relative_to(REPO).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out["loopline." + ".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
    return found


def _resolve(name: str) -> str | None:
    """The package module an imported name refers to (longest known prefix)."""
    parts = name.split(".")
    for i in range(len(parts), 1, -1):
        cand = ".".join(parts[:i])
        if cand in MODULES:
            return cand
    return None


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[1]]


def test_the_walk_sees_the_package():
    assert "loopline.processors.routing.router" in MODULES
    assert "loopline.connectors.cli.main" in MODULES
    assert len(MODULES) > 100


def test_no_import_runs_up_a_layer():
    problems = []
    for mod, path in MODULES.items():
        for name, line in _imports(path):
            target = _resolve(name)
            if target and _layer(target) > _layer(mod):
                problems.append(f"{path.relative_to(REPO)}:{line} imports {target}")
    assert problems == []


def test_processors_stay_pure():
    problems = [f"{path.relative_to(REPO)}:{line} imports {name}"
                for mod, path in MODULES.items() if mod.startswith("loopline.processors")
                for name, line in _imports(path) if name.split(".")[0] in PURE_FORBIDDEN]
    assert problems == []


@pytest.mark.parametrize("top", ["streams", "processors", "connectors", "benchmarks", "tests"])
def test_no_bare_imports(top):
    problems = [f"{path.relative_to(REPO)}:{line} imports {name}"
                for path in (REPO / top).rglob("*.py")
                for name, line in _imports(path) if name.split(".")[0] in BARE - {"benchmarks"}]
    assert problems == []


def test_the_package_never_imports_benchmarks():
    problems = [f"{path.relative_to(REPO)}:{line}" for path in MODULES.values()
                for name, line in _imports(path) if name.split(".")[0] == "benchmarks"]
    assert problems == []


def test_no_import_cycles():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for name, _ in _imports(path):
            target = _resolve(name)
            if target and target != mod and not mod.startswith(target + "."):  # a package's own __init__
                graph[mod].add(target)
    # Tarjan's strongly connected components; any component of size > 1 is a cycle
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    cycles = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    import sys

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            strong(v)
    assert cycles == []


def test_pyproject_lists_every_package_folder():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    folders = {"loopline." + ".".join(p.parent.relative_to(REPO).parts)
               for top in LAYERS for p in (REPO / top).rglob("__init__.py")}
    assert folders == listed
