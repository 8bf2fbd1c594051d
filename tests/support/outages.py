"""Servers broken on purpose while a flow runs (tests of reliability and atomic promotion).

Fixtures (import them into a test module to use them): ``own_mlflow``, a private MLflow
server per test module that the module may pause, kill and restart; ``fail_fast_mlflow``,
MLflow's own client retries off so that brandloop's task retries are what is exercised (the
``prefect`` fixture, flows of this process reporting to the session's Prefect server, is
every integration module's: ``tests/integration/conftest.py``).

Helpers: :func:`fault_once` runs a fault at an exact call of a library function (the call
itself still runs against the real server), :func:`pause_for` hangs a server for a while,
:func:`labelled_posts` gives train-ner settings over labelled posts in storage, and
:func:`failed_run` checks a flow run failed with a given error.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ner.replay import demo_gold_path
from ner.storage import Storage, open_storage
from tests.support.flows import MLFLOW_FAIL_FAST
from tests.support.servers import MlflowService, Service, mlflow_service

#: Short task retries: 3 retries, after ~0.5, 1 and 2 s.
RETRIES = {"io_retries": 3, "io_retry_delay_s": 0.5}


@pytest.fixture(scope="module")
def own_mlflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowService]:
    """A private MLflow server the test module may pause, kill and restart."""
    service = mlflow_service(tmp_path_factory.mktemp("reliability-mlflow"))
    started = time.monotonic()
    with service.start():
        print(f"\nprivate MLflow server healthy after {time.monotonic() - started:.1f} s")
        yield service


@pytest.fixture
def fail_fast_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """MLflow's client gives up on a failing request at once (see ``MLFLOW_FAIL_FAST``)."""
    for key, value in MLFLOW_FAIL_FAST.items():
        monkeypatch.setenv(key, value)


def fault_once(
    monkeypatch: pytest.MonkeyPatch,
    owner: object,
    name: str,
    fault: Callable[[], None],
    *,
    after: bool = False,
    when: Callable[..., bool] = lambda *args, **kwargs: True,
) -> Callable[[], None]:
    """Run ``fault`` once, just before (or ``after``) the first call of ``owner.name`` whose
    arguments ``when`` accepts; returns a function that removes the wrapper."""
    original = getattr(owner, name)
    done: list[bool] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        hit = not done and when(*args, **kwargs)
        if hit and not after:
            done.append(True)
            fault()
        result = original(*args, **kwargs)
        if hit and after:
            done.append(True)
            fault()
        return result

    monkeypatch.setattr(owner, name, wrapped)
    return lambda: monkeypatch.setattr(owner, name, original)


def pause_for(service: Service, seconds: float) -> None:
    """Hang ``service`` (SIGSTOP) now and resume it after ``seconds``, in the background."""
    service.server.pause()
    threading.Timer(seconds, service.server.resume).start()


def write_gold_exports(storage: Storage, n: int) -> None:
    """The first ``n`` tasks of the demo's gold export, as one export snapshot."""
    export = json.loads(demo_gold_path().read_text(encoding="utf-8"))[:n]
    storage.write_json("exports/20261101T000000Z-gold.json", export)


def train_settings(tmp_path: Path, mlflow: MlflowService, name: str) -> dict[str, Any]:
    """train-ner overrides: storage under ``tmp_path``, model and experiment ``name``."""
    return {
        "storage_uri": str(tmp_path / "storage"),
        "mlflow_tracking_uri": mlflow.url,
        "registered_model_name": name,
        "experiment_name": name,
        "cold_start": "base",
        "threshold": 0.2,
        "train": {"max_epochs": 3},
        "seed": 7,
        **RETRIES,
    }


def labelled_posts(tmp_path: Path, mlflow: MlflowService, prefix: str) -> dict[str, Any]:
    """train-ner settings for a new model ``prefix-…``, with 160 labelled posts in storage."""
    settings = train_settings(tmp_path, mlflow, f"{prefix}-{uuid.uuid4().hex[:6]}")
    write_gold_exports(open_storage(settings["storage_uri"], "dev"), 160)
    return settings


def failed_run(state: Any, error: type[BaseException]) -> str:
    """Check the flow run ``state`` failed with ``error``; returns the flow run's id."""
    assert state.is_failed(), state
    with pytest.raises(error):
        state.result()
    return str(state.state_details.flow_run_id)
