"""The import graph of ``ner``, ``flows`` and ``apps`` has no cycle, and the layers hold.

Read with ``ast`` from the source files, nothing is imported. An import at module level
(``if TYPE_CHECKING:`` blocks excepted: they never run; and ``if __name__ == "__main__":``
blocks, the script entry of a flow file that hands over to the ``brandloop`` CLI: they run
only as ``python -m flows.<name>``, never on import) is an edge of the graph, and so is an
import inside a function: it runs later, but two modules that each import the other inside a
function are still a cycle, only a hidden one. ``ner`` (the library) never imports Prefect
nor ``apps`` (the edge); ``flows`` never imports ``apps``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ner", "flows", "apps")


@dataclass(frozen=True)
class Import:
    """``importer`` imports ``target`` (a dotted name) at ``line``."""

    importer: str
    target: str
    line: int
    lazy: bool  # inside a function
    typing_only: bool  # inside ``if TYPE_CHECKING:``


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> dict[str, Path]:
    return {
        module_name(path, root): path
        for package in packages
        if (root / package).is_dir()
        for path in sorted((root / package).rglob("*.py"))
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_main_guard(node: ast.If) -> bool:
    """``if __name__ == "__main__":``"""
    test = node.test
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


def _targets(node: ast.Import | ast.ImportFrom, importer: str, modules: set[str]) -> list[str]:
    """Dotted names ``node`` imports: ``from a import b`` is ``a.b`` if that is a module."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: resolve against the importer's package
        package = importer.split(".")[: -node.level] if node.level else []
        base = ".".join([*package, base] if base else package)
    found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
    return found if len(found) == len(node.names) else [*found, base]


def imports_of(module: str, path: Path, modules: set[str]) -> Iterator[Import]:
    """Every import statement of one file, with where it sits."""

    def walk(nodes: list[ast.stmt], lazy: bool, typing_only: bool) -> Iterator[Import]:
        for node in nodes:
            if isinstance(node, ast.Import | ast.ImportFrom):
                for target in _targets(node, module, modules):
                    yield Import(module, target, node.lineno, lazy, typing_only)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                yield from walk(node.body, True, typing_only)
            elif isinstance(node, ast.If) and _is_main_guard(node):
                continue  # a script entry, not part of the module when imported
            elif isinstance(node, ast.If) and _is_type_checking(node):
                yield from walk(node.body, lazy, True)
                yield from walk(node.orelse, lazy, typing_only)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    children = getattr(node, field, None)
                    if isinstance(children, list):
                        yield from walk(
                            [c for c in children if isinstance(c, ast.stmt | ast.excepthandler)],
                            lazy,
                            typing_only,
                        )
                if isinstance(node, ast.ExceptHandler):
                    yield from walk(node.body, lazy, typing_only)
                if isinstance(node, ast.Match):
                    for case in node.cases:
                        yield from walk(case.body, lazy, typing_only)

    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    yield from walk(tree.body, False, False)


def all_imports(root: Path = ROOT, packages: tuple[str, ...] = PACKAGES) -> list[Import]:
    files = source_files(root, packages)
    names = set(files)
    return [imp for module, path in files.items() for imp in imports_of(module, path, names)]


def project_target(target: str, modules: set[str]) -> str | None:
    """The project module ``target`` names (``ner.x.y`` may be a name inside ``ner.x``)."""
    while target:
        if target in modules:
            return target
        target = target.rpartition(".")[0]
    return None


def module_graph(
    imports: list[Import], modules: set[str], *, lazy: bool = True
) -> dict[str, set[str]]:
    """Edges of the imports that run: at import time, and (``lazy``) inside functions."""
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for imp in imports:
        target = project_target(imp.target, modules)
        if target and target != imp.importer and not imp.typing_only and (lazy or not imp.lazy):
            graph[imp.importer].add(target)
    return graph


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A path of module-level imports from ``start`` to ``goal``, if any (depth first)."""
    stack, seen = [[start]], {start}
    while stack:
        path = stack.pop()
        if path[-1] == goal:
            return path
        for nxt in sorted(graph[path[-1]] - seen):
            seen.add(nxt)
            stack.append([*path, nxt])
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each module that is on one."""
    return [
        [module, *path]
        for module in sorted(graph)
        for nxt in sorted(graph[module])
        if (path := reaches(graph, nxt, module)) is not None
    ]


@pytest.fixture(scope="module")
def imports() -> list[Import]:
    return all_imports()


def test_the_graph_is_read_from_the_tree(imports: list[Import]) -> None:
    # Given the files of ner/ and flows/, then their imports are found, lazy ones included
    modules = set(source_files())
    assert {"ner.parallel", "ner.records", "ner.layout", "flows.apply_ner"} <= modules
    graph = module_graph(imports, modules)
    assert {"ner.inference", "ner.records", "ner.layout"} <= graph["ner.parallel"]
    assert any(imp.lazy for imp in imports)


def test_no_module_level_import_cycle(imports: list[Import]) -> None:
    graph = module_graph(imports, set(source_files()), lazy=False)
    assert cycles(graph) == []


def test_no_cycle_when_imports_inside_functions_count(imports: list[Import]) -> None:
    graph = module_graph(imports, set(source_files()))
    assert cycles(graph) == []


def test_the_detector_finds_a_cycle_and_a_hidden_one() -> None:
    # Given a <-> b at module level, and c importing d in a function while d imports c
    graph = {"a": {"b"}, "b": {"a"}, "c": set(), "d": {"c"}}
    # Then the cycle is found, and the lazy edge c -> d would close one
    assert ["a", "b", "a"] in cycles(graph)
    assert reaches(graph, "d", "c") == ["d", "c"]
    assert reaches(graph, "c", "d") is None


def write_package(root: Path, files: dict[str, str]) -> None:
    for name, text in {"__init__.py": "", **files}.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_two_sided_imports_inside_functions_are_a_cycle(tmp_path: Path) -> None:
    # Given a package where a imports b inside a function and b imports a inside a method,
    # c imports d inside a function, and d imports c only in its script entry
    write_package(
        tmp_path,
        {
            "a.py": "def f():\n    from pkg import b\n    return b\n",
            "b.py": "class B:\n    def g(self):\n        import pkg.a\n        return pkg.a\n",
            "c.py": "def h():\n    from pkg.d import x\n    return x\n",
            "d.py": 'x = 1\nif __name__ == "__main__":\n    import pkg.c\n',
        },
    )
    found = all_imports(tmp_path, ("pkg",))
    modules = set(source_files(tmp_path, ("pkg",)))
    # Then only imports at module level make no cycle, but with the lazy ones a <-> b is one
    assert cycles(module_graph(found, modules, lazy=False)) == []
    assert cycles(module_graph(found, modules)) == [
        ["pkg.a", "pkg.b", "pkg.a"],
        ["pkg.b", "pkg.a", "pkg.b"],
    ]


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("ner", ("prefect", "prefect_dask", "apps")), ("flows", ("apps",))],
)
def test_layers_do_not_import_upwards(
    imports: list[Import], package: str, forbidden: tuple[str, ...]
) -> None:
    # Any import counts here, lazy or for type checking only
    bad = [
        f"{imp.importer}:{imp.line} imports {imp.target}"
        for imp in imports
        if imp.importer.split(".")[0] == package and imp.target.split(".")[0] in forbidden
    ]
    assert bad == []


def test_a_script_entry_is_no_edge_but_a_type_checking_import_is_typing_only(
    tmp_path: Path,
) -> None:
    # Given a module whose script entry hands over to the CLI
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "import ner.layout\n"
        "if TYPE_CHECKING:\n    import ner.records\n"
        'if __name__ == "__main__":\n    import apps.cli\n',
        encoding="utf-8",
    )
    found = list(imports_of("flows.m", source, {"ner.layout", "ner.records", "apps.cli"}))
    # Then the script entry's import is not part of the module; the others are
    assert [(i.target, i.typing_only) for i in found] == [
        ("typing", False),
        ("ner.layout", False),
        ("ner.records", True),
    ]
