"""The import rules of docs/architecture.md, read from the source: zoo imports neither callbacks nor recipes,
callbacks do not import recipes, and the import graph has no cycle but the registry's documented one.

Every import counts, at module level or inside a function, and so does a module named by a string (what
``importlib.import_module`` loads, e.g. the CLI's commands)."""

from __future__ import annotations

import ast
from pathlib import Path

from source_imports import imported_module

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "callbacks", "recipes")
# the one intended cycle: the model families import zoo.models.registry to register themselves, and the registry
# imports them inside a function, at its first lookup
REGISTRY = "zoo.models.registry"
FAMILIES = {f"zoo.models.{name}" for name in ("convnet", "resnet", "resnet_cifar", "vgg")}


def project_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = project_modules()


def _resolve(name: str) -> str | None:
    """The project module ``name`` imports (its longest prefix that is one), or None for a library."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return None


def imports_of(module: str) -> dict[str, bool]:
    """{imported project module: whether every import of it is lazy (inside a function)}."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, bool] = {}

    def add(target: str | None, lazy: bool) -> None:
        if target and target != module:
            found[target] = found.get(target, True) and lazy

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(_resolve(alias.name), lazy)
            elif isinstance(child, ast.ImportFrom):
                base = imported_module(child, package)
                for alias in child.names:
                    add(_resolve(f"{base}.{alias.name}") or _resolve(base), lazy)
            elif (
                isinstance(child, ast.Constant)
                and isinstance(child.value, str)
                and "." in child.value
                and child.value in MODULES
            ):
                add(child.value, True)  # loaded by name (importlib.import_module)
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


GRAPH = {module: imports_of(module) for module in MODULES}


def test_zoo_imports_neither_callbacks_nor_recipes_and_callbacks_do_not_import_recipes():
    wrong = [
        f"{source} imports {target}"
        for source, targets in GRAPH.items()
        for target in targets
        if (source.split(".")[0], target.split(".")[0])
        in {("zoo", "callbacks"), ("zoo", "recipes"), ("callbacks", "recipes")}
    ]
    assert not wrong, wrong


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in order), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle_but_the_registrys_lazy_one():
    assert all(GRAPH[REGISTRY].get(f) is True for f in FAMILIES), "the registry imports its families lazily"
    graph = {m: set(targets) - (FAMILIES if m == REGISTRY else set()) for m, targets in GRAPH.items()}
    assert _cycle(graph) is None, f"import cycle: {' → '.join(_cycle(graph))}"
    # and the registry's edges do close a cycle, as documented (the families import the registry back)
    assert _cycle({**graph, REGISTRY: graph[REGISTRY] | FAMILIES}) is not None


def test_the_cycle_finder_finds_a_cycle_through_a_lazy_import():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    graph = imports_of("recipes.cli")  # the commands, loaded by name
    assert "recipes.commands.ensemble" in graph and graph["recipes.commands.ensemble"] is True
