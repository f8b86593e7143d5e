"""No library's private name outside ``zoo/compat.py``: read from the source of zoo/, callbacks/ and recipes/.

A private name is one that starts with a single underscore. The scan finds the libraries' among them four ways:

- imported: ``from torch.nn.modules.batchnorm import _BatchNorm``, or any import from a private module;
- used on ``self`` (or ``super()``), or defined as a method, in a class that inherits a library class that has
  the name (in its ``__dict__`` or set on ``self`` in its source): overriding ``ModelCheckpoint._save_checkpoint``,
  reading ``self._every_n_train_steps``;
- read or written on any other object, ``trainer._signal_connector``, when the project never defines the name
  itself (a method, a class, an attribute it sets on ``self``, a module-level name);
- as a string: ``getattr(live, "_refresh_thread")``, a checkpoint's ``"_instantiator"`` key.

What the scan cannot see (a library's behaviour relied on through public names) is listed in :data:`UNSEEN`.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import inspect
import re
from functools import cache
from pathlib import Path

from source_imports import imported_module

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("zoo", "callbacks", "recipes")
COMPAT = ROOT / "zoo" / "compat.py"
# documented public API despite the underscore: namedtuple's fields
PUBLIC = {"_fields", "_asdict", "_replace", "_make", "_field_defaults"}
# a library's private behaviour relied on through public names, which no scan of names finds (with the reason)
UNSEEN: dict[str, str] = {}
PRIVATE = re.compile(r"^_[A-Za-z0-9]\w*$")


def private(name: str) -> bool:
    return bool(PRIVATE.match(name)) and not name.startswith("__") and name not in PUBLIC


def sources() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = sources()
TREES = {module: ast.parse(path.read_text()) for module, path in MODULES.items()}


def own_module(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def imported_names(tree: ast.AST, module: str) -> dict[str, tuple[str, str | None]]:
    """{name bound by an import anywhere in the file: (module, attribute or None for a module)}."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:  # import torch.nn as nn
                    names[alias.asname] = (alias.name, None)
                else:  # import torch.nn binds torch
                    names[alias.name.split(".")[0]] = (alias.name.split(".")[0], None)
        elif isinstance(node, ast.ImportFrom):
            base = imported_module(node, package)
            for alias in node.names:
                names[alias.asname or alias.name] = (base, alias.name)
    return names


@cache
def resolve(module: str, name: str):
    """The object ``name`` stands for in ``module`` (an import, or a class the module defines), or None."""
    tree = TREES[module]
    imports = imported_names(tree, module)
    if name in imports:
        source, attr = imports[name]
        try:
            loaded = importlib.import_module(source)
            return getattr(loaded, attr) if attr else loaded
        except (ImportError, AttributeError):
            try:
                return importlib.import_module(f"{source}.{attr}")
            except ImportError:
                return None
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def base_classes(module: str, cls: ast.ClassDef) -> list[type]:
    """The classes ``cls`` inherits, resolved (``Name`` and ``module.Name`` bases; a nested class's too)."""
    found = []
    for base in cls.bases:
        if isinstance(base, ast.Name):
            value = resolve(module, base.id)
        elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
            value = getattr(resolve(module, base.value.id), base.attr, None)
        else:
            value = None
        if isinstance(value, type):
            found.append(value)
    return found


@cache
def library_names(cls: type) -> frozenset[str]:
    """Private names a library class has: in its ``__dict__``, or set on ``self`` in its source."""
    names = {name for name in vars(cls) if private(name)}
    with contextlib.suppress(OSError, TypeError):  # a class with no Python source
        names |= {name for name in re.findall(r"self\.(_\w+)", inspect.getsource(cls)) if private(name)}
    return frozenset(names)


def library_bases(bases: list[type]) -> list[type]:
    """Every library class in the MRO of ``bases`` (the project's own classes left out)."""
    return [c for b in bases for c in b.__mro__ if not own_module(c.__module__) and c is not object]


def inherited(bases: list[type], name: str) -> type | None:
    """The library class among ``bases``' ancestors that has ``name``, or None."""
    return next((c for c in library_bases(bases) if name in library_names(c)), None)


class Scan(ast.NodeVisitor):
    """Collects, in one file, the private names it defines and the uses that may be a library's."""

    def __init__(self, module: str):
        self.module = module
        self.classes: list[list[type]] = []  # the resolved bases of each enclosing class
        self.defined: set[str] = set()
        self.found: list[tuple[int, str, str]] = []  # (line, name, why)
        self.foreign: list[tuple[int, str, str]] = []  # uses on other objects, judged once every file is read

    def flag(self, node: ast.AST, name: str, why: str) -> None:
        self.found.append((node.lineno, name, why))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append(base_classes(self.module, node))
        if private(node.name):
            self.defined.add(node.name)
        self.generic_visit(node)
        self.classes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if private(node.name):
            owner = inherited(self.classes[-1], node.name) if self.classes else None
            if owner is not None:
                self.flag(node, node.name, f"overrides {owner.__module__}.{owner.__qualname__}.{node.name}")
            else:
                self.defined.add(node.name)
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not own_module(alias.name) and any(private(p) for p in alias.name.split(".")):
                self.flag(node, alias.name, "import of a private module")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or own_module(node.module or "") or node.module == "__future__":
            return
        if any(private(p) for p in node.module.split(".")):
            self.flag(node, node.module, "import from a private module")
        for alias in node.names:
            if private(alias.name):
                self.flag(node, alias.name, f"private name of {node.module}")

    def visit_Assign(self, node: ast.Assign) -> None:
        for target in node.targets:
            if isinstance(target, ast.Name) and private(target.id):
                self.defined.add(target.id)
        value = node.value
        if (
            isinstance(value, ast.Constant)
            and isinstance(value.value, str)
            and private(value.value)
            and all(isinstance(t, ast.Name) for t in node.targets)
        ):
            self.defined.add(
                value.value
            )  # a constant naming the project's own marker, FROZEN = "_zoo_frozen"
            return
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = node.attr
        if private(name):
            on_self = (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")) or (
                isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name)
                and node.value.func.id == "super"
            )
            if on_self and self.classes:
                owner = inherited(self.classes[-1], name)
                if owner is not None:
                    self.flag(node, name, f"{owner.__module__}.{owner.__qualname__}'s")
                elif isinstance(node.ctx, ast.Store):
                    self.defined.add(name)
            elif isinstance(node.ctx, ast.Store) and name.startswith("_zoo"):
                self.defined.add(name)  # the project's own marker, set on another object
            else:
                self.foreign.append(
                    (node.lineno, name, "used on an object the project does not define it on")
                )
        self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> None:
        for value in node.values:  # the literal pieces of an f-string are text, not names
            if not isinstance(value, ast.Constant):
                self.visit(value)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and private(node.value):
            self.foreign.append((node.lineno, node.value, "named in a string"))


def scan() -> dict[str, list[tuple[int, str, str]]]:
    """{file: [(line, name, why)]} of every private library name outside zoo/compat.py."""
    scans = {}
    for module, path in MODULES.items():
        if path == COMPAT:
            continue
        scans[module] = Scan(module)
        scans[module].visit(TREES[module])
    defined = set().union(*(s.defined for s in scans.values()))
    report = {}
    for module, s in scans.items():
        found = s.found + [use for use in s.foreign if use[1] not in defined]
        if found:
            report[str(MODULES[module].relative_to(ROOT))] = sorted(found)
    return report


def test_no_private_library_name_outside_compat():
    found = scan()
    lines = [f"{path}:{line}: {name} ({why})" for path, uses in found.items() for line, name, why in uses]
    assert not lines, "private names of libraries outside zoo/compat.py:\n" + "\n".join(lines)
    assert len(UNSEEN) <= 2


def test_the_scan_finds_each_kind_of_use(tmp_path):
    """The four kinds of use, each in a file of its own, are found; the project's own private names are not."""
    code = {
        "zoo.a": "from torch.nn.modules.batchnorm import _BatchNorm\n",
        "zoo.b": (
            "from lightning.pytorch.callbacks import ModelCheckpoint\n"
            "class Mine(ModelCheckpoint):\n"
            "    def _save_checkpoint(self, trainer, filepath):\n"
            "        return self._last_global_step_saved\n"
            "    def _mine(self):\n"
            "        self._own = 1\n"
            "        return self._own\n"
        ),
        "zoo.c": "def stop(trainer):\n    trainer._signal_connector.received_sigterm = True\n",
        "zoo.d": "def thread(live):\n    return getattr(live, '_refresh_thread', None)\n",
    }
    expected = {
        "zoo.a": {"_BatchNorm"},
        "zoo.b": {"_save_checkpoint", "_last_global_step_saved"},
        "zoo.c": {"_signal_connector"},
        "zoo.d": {"_refresh_thread"},
    }
    for module, text in code.items():
        path = tmp_path / f"{module}.py"
        path.write_text(text)
        MODULES[module], TREES[module] = path, ast.parse(text)
    try:
        resolve.cache_clear()
        found = {}
        for module in code:
            s = Scan(module)
            s.visit(TREES[module])
            found[module] = {name for _, name, _ in s.found + s.foreign if name not in s.defined}
        assert found == expected
    finally:
        for module in code:
            MODULES.pop(module), TREES.pop(module)
        resolve.cache_clear()
