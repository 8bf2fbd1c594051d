"""Running the flows in this process against a real Prefect server, and reading back what
Prefect recorded (flow runs, task runs and their attempts) through its REST API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from ner.replay import demo_posts_path
from tests.support.servers import PrefectService

#: MLflow's client retries a failing request 7 times with backoff (minutes) and waits up to
#: 120 s for an answer. Reliability tests make it give up at once, so that brandloop's own
#: task retries are what is exercised.
MLFLOW_FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"}


@contextmanager
def prefect_api(service: PrefectService) -> Iterator[PrefectService]:
    """Flows called in this process report to ``service`` (a real Prefect API server)."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    with pytest.MonkeyPatch.context() as mp:
        for key, value in service.env().items():
            mp.setenv(key, value)
        with temporary_settings(
            updates={PREFECT_API_URL: service.api_url, PREFECT_HOME: service.client_home}
        ):
            try:
                yield service
            finally:
                APILogWorker.drain_all(timeout=5)  # send queued run logs while the API is up


def demo_slice(folder: Path, n: int, start: int = 0, name: str = "posts.jsonl") -> Path:
    """The demo posts ``start:start+n`` as a JSONL file."""
    lines = demo_posts_path().read_text(encoding="utf-8").splitlines()[start : start + n]
    path = folder / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def task_runs(service: PrefectService, flow_run_id: str) -> list[dict[str, Any]]:
    """Task runs of one flow run as the server recorded them (``run_count`` = attempts)."""
    response = requests.post(
        f"{service.api_url}/task_runs/filter",
        json={"flow_runs": {"id": {"any_": [flow_run_id]}}},
        timeout=30,
    )
    response.raise_for_status()
    return list(response.json())


#: Task run states after which the server's ``run_count`` no longer changes.
FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
#: Seconds after which a flow run without any recorded task run is taken to have run none.
NO_TASK_WAIT_S = 2.0


def attempts(
    service: PrefectService, flow_run_id: str, task: str, *, wait_s: float = 30.0
) -> list[int]:
    """``run_count`` of each run of ``task`` (by function name) in the flow run, once the
    server has recorded the flow run's task runs in a final state (Prefect 3 records task run
    states from events, a moment after the run: read at once on a busy machine, a run that
    failed on its first attempt could still show 0). A flow run with no task run recorded
    after :data:`NO_TASK_WAIT_S` is taken to have run none. After ``wait_s``, what it has."""
    started = time.monotonic()
    while True:
        runs = task_runs(service, flow_run_id)
        waited = time.monotonic() - started
        settled = all(r.get("state_type") in FINAL_STATES for r in runs)
        if (runs and settled) or (not runs and waited > NO_TASK_WAIT_S) or waited > wait_s:
            return [int(r["run_count"]) for r in runs if r["name"].rsplit("-", 1)[0] == task]
        time.sleep(0.2)


def flow_run(service: PrefectService, flow_run_id: str) -> dict[str, Any]:
    response = requests.get(f"{service.api_url}/flow_runs/{flow_run_id}", timeout=30)
    response.raise_for_status()
    return dict(response.json())


def subflow_runs(service: PrefectService, parent_id: str) -> list[dict[str, Any]]:
    """Flow runs started by ``parent_id``'s tasks or body (sub-flows), oldest first."""
    response = requests.post(
        f"{service.api_url}/flow_runs/filter",
        json={"flow_runs": {"parent_flow_run_id": {"any_": [parent_id]}}, "sort": "START_TIME_ASC"},
        timeout=30,
    )
    response.raise_for_status()
    return list(response.json())


def flow_name(service: PrefectService, flow_id: str) -> str:
    response = requests.get(f"{service.api_url}/flows/{flow_id}", timeout=30)
    response.raise_for_status()
    return str(response.json()["name"])
