"""The README's code blocks, and running them as a user would in a copy of the project.

Every ```bash and ```python block of ``README.md`` is preceded by a marker naming the test
that runs it::

    <!-- readme-test: BLOCK-ID -> tests/e2e/test_readme_blocks.py::test_name -->

:func:`readme_blocks` reads them all (the inventory test checks that none is missing);
:func:`readme_block` gives one block's code by its id. :func:`project_copy` copies the
project's tracked files (the ``.venv`` linked in), so a block runs on a fresh checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

#: A fenced block of one of the languages the README tests run.
FENCE = re.compile(r"^```(bash|sh|python)\n(.*?)^```", flags=re.S | re.M)
MARKER = re.compile(r"<!-- readme-test: (?P<id>[\w-]+) -> (?P<path>[\w/.]+\.py)::(?P<test>\w+) -->")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language, code, 1-based line, and its marker (if any)."""

    language: str
    code: str
    line: int
    block_id: str | None
    test_path: str | None
    test_name: str | None


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every ```bash/```sh/```python block of the README, with the marker on the line
    before it (``None`` fields when there is none)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARKER.fullmatch(before.strip())
        blocks.append(
            Block(
                language=match.group(1),
                code=match.group(2),
                line=text.count("\n", 0, match.start()) + 1,
                block_id=marker["id"] if marker else None,
                test_path=marker["path"] if marker else None,
                test_name=marker["test"] if marker else None,
            )
        )
    return blocks


def readme_block(block_id: str) -> str:
    """The code of the README block marked ``block_id``."""
    found = [b.code for b in readme_blocks() if b.block_id == block_id]
    assert len(found) == 1, f"{len(found)} README blocks marked {block_id!r}"
    return found[0]


def shown_output(code: str) -> list[str]:
    """The output a block shows: its comment lines that start with ``# `` and hold no
    command (``# {...}``, ``# [...]``), without the ``# ``."""
    return [
        line.strip()[2:] for line in code.splitlines() if line.strip().startswith(("# {", "# ["))
    ]


def project_copy(dest: Path) -> Path:
    """The project's tracked files under ``dest``, its ``.venv`` linked in."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        target = dest / name
        if not (ROOT / name).exists():  # deleted in the work tree, not yet committed
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    if (ROOT / ".models").is_dir():  # models installed by `make install`, untracked
        (dest / ".models").symlink_to(ROOT / ".models")
    return dest


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without brandloop's, MLflow's and Prefect's variables,
    with a private ``PREFECT_HOME`` (and ``extra``)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NER_", "MLFLOW_", "PREFECT_", "BRANDLOOP_"))
    }
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", **extra)
    return env


def run_bash(
    script: str, cwd: Path, env: Mapping[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``script`` run by ``bash -euo pipefail`` in ``cwd``; output captured."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@contextmanager
def background(
    script: str, cwd: Path, env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """``script`` run by bash in its own process group while in the block, its output in
    ``log``; the group gets SIGINT, then SIGKILL, on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", script],
            cwd=cwd,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield proc
        finally:
            stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGINT to ``proc``'s process group, SIGKILL after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=grace)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    proc.wait(timeout=grace)


def wait_http(url: str, timeout: float, log: Path | None = None) -> requests.Response:
    """The first answer of ``GET url`` below 500 within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            answer = requests.get(url, timeout=5)
            if answer.status_code < 500:
                return answer
        except requests.ConnectionError:
            pass
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-3000:] if log is not None else ""
    raise AssertionError(f"no answer from {url} within {timeout:.0f} s\n{tail}")


def wait_for_text(log: Path, text: str, timeout: float) -> str:
    """The content of ``log`` once it holds ``text`` (within ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = log.read_text(errors="replace") if log.exists() else ""
        if text in content:
            return content
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {log} within {timeout:.0f} s:\n{content[-3000:]}")
