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
#: Seconds a check that a task did *not* run waits for the server to record what did run.
SETTLE_S = 5.0


def _send_pending_events() -> None:
    """Prefect 3 records task run states from events that this process sends in the
    background: send what is queued before the server is asked what it recorded."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=10)


def _runs_of(runs: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [r for r in runs if r["name"].rsplit("-", 1)[0] == task]


def attempts(
    service: PrefectService, flow_run_id: str, task: str, *, wait_s: float = 60.0
) -> list[int]:
    """``run_count`` of each run of ``task`` (by function name) in the flow run, read once
    the server has recorded at least one run of it, all in a final state (it records them
    from events, a moment after the run: read at once on a busy machine, a run that failed
    on its first attempt could still show 0 or be missing). After ``wait_s``, what it has.
    For a task expected *not* to run, use :func:`attempts_if_any`."""
    _send_pending_events()
    started = time.monotonic()
    while True:
        runs = _runs_of(task_runs(service, flow_run_id), task)
        settled = runs and all(r.get("state_type") in FINAL_STATES for r in runs)
        if settled or time.monotonic() - started > wait_s:
            return [int(r["run_count"]) for r in runs]
        time.sleep(0.2)


def attempts_if_any(
    service: PrefectService, flow_run_id: str, task: str, *, settle_s: float = SETTLE_S
) -> list[int]:
    """Like :func:`attempts` for a task that may not have run: waits ``settle_s`` seconds and
    until every task run the server recorded for the flow run is final, then reads."""
    _send_pending_events()
    started = time.monotonic()
    while True:
        runs = task_runs(service, flow_run_id)
        waited = time.monotonic() - started
        settled = all(r.get("state_type") in FINAL_STATES for r in runs)
        if (settled and waited > settle_s) or waited > 60.0:
            return [int(r["run_count"]) for r in _runs_of(runs, task)]
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
