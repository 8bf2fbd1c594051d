"""Where the Label Studio code may reach: the package serves no HTTP, and its client makes
SDK calls without storage (the layers as a whole: tests/unit/test_import_graph.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of the file (lazy imports included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def imports_of(folder: str) -> dict[str, set[str]]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"no Python files under {folder}/"
    return {str(f.relative_to(ROOT)): imported_modules(f) for f in files}


def reaching(imports: dict[str, set[str]], *packages: str) -> dict[str, list[str]]:
    """The files importing any of ``packages`` (or a module in them), with those imports."""

    def hit(module: str) -> bool:
        return module.split(".")[0] in packages

    return {
        name: sorted(filter(hit, modules))
        for name, modules in imports.items()
        if any(map(hit, modules))
    }


def test_the_label_studio_package_serves_no_http() -> None:
    # given the Label Studio package / then no web framework or server is imported there
    assert reaching(imports_of("ner/labelstudio"), "fastapi", "starlette", "uvicorn") == {}


def test_the_client_makes_sdk_calls_without_storage() -> None:
    # given the client module / then it reaches neither storage nor the storage exchange
    modules = imported_modules(ROOT / "ner" / "labelstudio" / "client.py")
    assert "label_studio_sdk.core.api_error" in modules  # it does wrap the SDK
    assert not {"ner.storage", "ner.labelstudio.exchange", "ner.inference"} & modules
