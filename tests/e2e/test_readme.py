"""The README works as written: its Prefect walk-through, run as a user would.

The bash block marked ``prefect-walkthrough`` is taken from the README
and run by bash in a copy of the project's tracked files (the project's ``.venv`` linked in),
with a private PREFECT_HOME and a free port in place of 4200. It starts a Prefect server,
deploys the dev deployments, starts a process worker and runs ``apply-ner/dev`` on the
shipped posts. The test then waits for the run's Label Studio import file in storage and
reads the run's final state from the server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.support.readme import clean_env, project_copy, readme_block
from tests.support.servers import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BLOCK = "prefect-walkthrough"


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
    block = readme_block(BLOCK).replace("4200", str(port))
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
