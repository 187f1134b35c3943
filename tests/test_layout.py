"""The rooms and their arrows (docs/foundation.md), read from the source without importing it.

Four rooms are installed into one ``rig`` namespace: ``rig/`` (the core), ``drivers/``
(``rig.drivers``), ``fixtures/`` (``rig.fixtures``) and ``cli/`` (``rig.cli``). Arrows go one
way: the CLI and the pytest plugin import drivers, drivers import the core, never back.

What counts, parsed with :mod:`ast` from every module of the four rooms:

* for the arrows, every ``import`` and ``from ... import`` anywhere in a module: at module level,
  inside functions (a lazy import is still an arrow) and under ``if TYPE_CHECKING:``;
* for cycles, only the imports that run when the module is imported: module level, outside
  ``if TYPE_CHECKING:`` (imports inside functions are how a module breaks a cycle on purpose).
  ``from package import name`` counts as an import of ``package.name`` when that is a module,
  else of ``package``; the parent packages Python initializes on the way are not counted.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Directory -> the package it is installed as (pyproject.toml's package-dir).
ROOMS = {"rig": "rig", "drivers": "rig.drivers", "fixtures": "rig.fixtures", "cli": "rig.cli"}
#: Room -> packages none of its modules may import.
FORBIDDEN = {
    "rig": ("rig.drivers", "rig.fixtures", "rig.cli"),
    "drivers": ("rig.cli", "rig.fixtures"),
    "fixtures": ("rig.cli",),
}
#: ``python -m rig`` runs rig/__main__.py, so it is the one sanctioned entry hook into the CLI
#: (a lazy import inside its function; see its docstring).
ENTRY_HOOK = ("rig.__main__", "rig.cli.main")


def _modules() -> dict[str, Path]:
    """Every module of the four rooms: dotted name -> file."""
    found: dict[str, Path] = {}
    for directory, package in ROOMS.items():
        for path in sorted((ROOT / directory).rglob("*.py")):
            parts = list(path.relative_to(ROOT / directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _base(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` import names (relative imports resolved)."""
    if not node.level:
        return node.module or ""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield alias.name
        return
    base = _base(module, path, node)
    for alias in node.names:
        full = f"{base}.{alias.name}"
        yield full if full in MODULES else base


def _imports(module: str, *, runtime_only: bool) -> set[str]:
    """What ``module`` imports; ``runtime_only``: module level, outside TYPE_CHECKING."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                out.update(_targets(module, path, node))
            elif isinstance(node, ast.If) and _is_type_checking(node):
                if not runtime_only:
                    visit(node.body)
                visit(node.orelse)
            elif runtime_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef |
                                             ast.ClassDef):
                if isinstance(node, ast.ClassDef):
                    visit(node.body)  # a class body runs at import
            else:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child])

    visit(tree.body)
    return out


def _room(module: str) -> str:
    path = MODULES[module]
    return path.relative_to(ROOT).parts[0]


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def test_the_rooms_are_all_found() -> None:
    for module in ("rig.core.backend", "rig.drivers.loop", "rig.fixtures.hooks", "rig.cli.main",
                   "rig.cli.sg_cmd"):
        assert module in MODULES
    assert not any(_within(m, "rig.cli") for m in MODULES if _room(m) != "cli")


def test_arrows_go_one_way() -> None:
    wrong = []
    for module in sorted(MODULES):
        banned = FORBIDDEN.get(_room(module), ())
        for name in sorted(_imports(module, runtime_only=False)):
            if (module, name) == ENTRY_HOOK:
                continue
            if any(_within(name, b) for b in banned):
                wrong.append(f"{MODULES[module].relative_to(ROOT)} imports {name}")
    assert not wrong, "imports against the arrows:\n" + "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def test_no_import_cycle() -> None:
    graph = {m: {n for n in _imports(m, runtime_only=True) if n in MODULES} for m in MODULES}
    cycles = _cycles(graph)
    assert not cycles, "module-level import cycles:\n" + "\n".join(
        " <-> ".join(c) for c in cycles)


def test_the_cycle_finder_finds_one() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
