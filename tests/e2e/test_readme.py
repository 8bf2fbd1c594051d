"""The README works as written: its Prefect walk-through, run as a user would.

The bash block marked ``<!-- readme-test: prefect-walkthrough -->`` is taken from the README
and run by bash in a copy of the project's tracked files (the project's ``.venv`` linked in),
with a private PREFECT_HOME and a free port in place of 4200. It starts a Prefect server,
deploys the dev deployments, starts a process worker and runs ``apply-ner/dev`` on the
shipped posts. The test then waits for the run's Label Studio import file in storage and
reads the run's final state from the server.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- readme-test: prefect-walkthrough"


def readme_block(marker: str) -> str:
    """The first fenced block after ``marker`` in the README."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    after = text[text.index(marker) :]
    match = re.search(r"```(?:bash|sh)\n(.*?)```", after, flags=re.S)
    assert match is not None, f"no code block after {marker!r}"
    return match.group(1)


def project_copy(dest: Path) -> Path:
    """The project's tracked files under ``dest``, its ``.venv`` linked in."""
    files = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


def clean_env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("NER_", "MLFLOW_", "PREFECT_", "BRANDLOOP_"))
    }
    env.update(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    return env


def wait_for_tasks(storage: Path, timeout: float) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted((storage / "dev" / "tasks").glob("*.json"))
        if found:
            return found
        time.sleep(2)
    raise AssertionError(f"no Label Studio import file in {storage} within {timeout:.0f} s")


def test_the_prefect_walkthrough_runs_as_written(tmp_path: Path) -> None:
    project = project_copy(tmp_path / "brandloop")
    port = free_port()
    block = readme_block(MARKER).replace("4200", str(port))
    script = f"set -euo pipefail\n{block}\n"
    proc = subprocess.Popen(
        ["bash", "-c", script],
        cwd=project,
        env=clean_env(tmp_path / "prefect-home"),
        stdout=(tmp_path / "walkthrough.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        assert proc.wait(timeout=300) == 0, (tmp_path / "walkthrough.log").read_text()
        (tasks,) = wait_for_tasks(project / ".brandloop" / "storage", timeout=300)
        runs = requests.post(
            f"http://127.0.0.1:{port}/api/flow_runs/filter", json={}, timeout=30
        ).json()
        states = {r["name"]: r["state_type"] for r in runs}
        deadline = time.monotonic() + 60
        while "COMPLETED" not in states.values() and time.monotonic() < deadline:
            time.sleep(1)
            runs = requests.post(
                f"http://127.0.0.1:{port}/api/flow_runs/filter", json={}, timeout=30
            ).json()
            states = {r["name"]: r["state_type"] for r in runs}
    finally:
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(5)
    # Then the apply-ner/dev run completed and wrote one task per fetched post (dev: 100)
    assert list(states.values()) == ["COMPLETED"], states
    imported = json.loads(tasks.read_text(encoding="utf-8"))
    assert len(imported) == 100
    assert all(task["data"]["text"] for task in imported)
