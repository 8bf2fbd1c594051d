"""Every package the shipped code imports is one ``pyproject.toml`` declares.

A package that is only there because another dependency pulls it in (httpx through the Label
Studio SDK, say) would vanish from a fresh install the day that dependency drops it. The
imports are read with ``ast`` (``tests.unit.test_import_graph``); an import's top-level name is
mapped to its distribution with :func:`importlib.metadata.packages_distributions`.
"""

from __future__ import annotations

import sys
import tomllib
from importlib.metadata import packages_distributions

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.unit.test_import_graph import ROOT, Import, all_imports

#: Installed by ``make install-accurate`` outside the lock file (Makefile ``ACCURATE_PKGS``
#: and ``MINILM_PKG``), imported only inside the accurate recipe's functions: module names.
ACCURATE = {"torch", "transformers", "all_minilm_l6_v2"}
#: The repository's own top-level packages (``deployments`` runs from the checkout).
FIRST_PARTY = {path.parent.name for path in ROOT.glob("*/__init__.py")}


def declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return {canonicalize_name(Requirement(req).name) for req in project["dependencies"]}


def undeclared(imports: list[Import], names: set[str]) -> dict[str, list[str]]:
    """Third-party top-level modules imported at run time whose distributions are not among
    ``names``, each with the importers (``module:line``)."""
    owners = packages_distributions()
    found: dict[str, list[str]] = {}
    for imp in imports:
        top = imp.target.split(".")[0]
        if imp.typing_only or top in FIRST_PARTY | ACCURATE or top in sys.stdlib_module_names:
            continue
        dists = {canonicalize_name(dist) for dist in owners.get(top, [top])}
        if not dists & names:
            found.setdefault(top, []).append(f"{imp.importer}:{imp.line}")
    return found


def test_every_imported_package_is_declared() -> None:
    missing = undeclared(all_imports(), declared())
    assert not missing, f"imported but not in pyproject.toml [project] dependencies: {missing}"


def test_a_package_left_out_of_the_declarations_is_found() -> None:
    names = declared() - {"httpx"}
    assert "httpx" in undeclared(all_imports(), names)
