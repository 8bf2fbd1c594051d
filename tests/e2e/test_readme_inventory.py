"""Every shell and Python block of the README names the test that runs it, and that test
exists: a block added without a test, or a marker naming a test that was renamed or
removed, fails here (in well under a second: this file starts nothing).

A marker is the line just before the block::

    <!-- readme-test: BLOCK-ID -> tests/e2e/test_readme_blocks.py::test_name -->

and the test it names reads the block by its id (``readme_block("BLOCK-ID")``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.readme import ROOT, Block, readme_blocks

pytestmark = pytest.mark.e2e


def defined_tests(path: Path) -> set[str]:
    """The names of the module-level test functions of ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def problems(blocks: list[Block]) -> list[str]:
    """One line per README block without a marker, naming a test that does not exist, or
    whose test never reads the block's id."""
    found = []
    for block in blocks:
        where = f"README.md:{block.line} ({block.language})"
        if block.block_id is None or block.test_path is None or block.test_name is None:
            found.append(f"{where}: no '<!-- readme-test: ID -> FILE::TEST -->' line before it")
            continue
        path = ROOT / block.test_path
        if not path.is_file():
            found.append(f"{where}: {block.test_path} does not exist")
        elif block.test_name not in defined_tests(path):
            found.append(f"{where}: {block.test_path} defines no {block.test_name}")
        elif f'"{block.block_id}"' not in path.read_text(encoding="utf-8"):
            found.append(f"{where}: {block.test_path} never reads block {block.block_id!r}")
    return found


def test_every_readme_block_is_run_by_an_existing_test() -> None:
    blocks = readme_blocks()
    # the README has blocks of both languages (the parser found them)
    assert {b.language for b in blocks} >= {"bash", "python"}, blocks
    assert problems(blocks) == []
    ids = [b.block_id for b in blocks]
    assert len(ids) == len(set(ids)), f"block ids used twice: {ids}"


def test_the_inventory_catches_an_unmarked_block_and_a_missing_test() -> None:
    text = (
        "intro\n\n```bash\necho unmarked\n```\n\n"
        "<!-- readme-test: gone -> tests/e2e/test_readme_inventory.py::test_nothing -->\n"
        "```python\nprint(1)\n```\n\n"
        "<!-- readme-test: elsewhere -> tests/e2e/no_such_file.py::test_x -->\n"
        "```sh\ntrue\n```\n\n```\nnot a shell block\n```\n"
    )
    blocks = readme_blocks(text)
    assert [b.language for b in blocks] == ["bash", "python", "sh"]
    assert problems(blocks) == [
        "README.md:3 (bash): no '<!-- readme-test: ID -> FILE::TEST -->' line before it",
        "README.md:8 (python): tests/e2e/test_readme_inventory.py defines no test_nothing",
        "README.md:13 (sh): tests/e2e/no_such_file.py does not exist",
    ]
