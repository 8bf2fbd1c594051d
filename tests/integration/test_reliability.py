"""Servers that go down in the middle of a flow: MLflow, the GCS bucket, Label Studio.

Each test breaks its own server instance (never the session's), at a chosen step of a flow
that runs in this process on the session's Prefect server:

* a **pause** (SIGSTOP) is a hang: requests time out until the server is resumed; the task
  that was talking to it fails and is retried with backoff, and the flow completes;
* a **kill** (SIGKILL) that outlasts the retries fails the flow. It must then leave nothing
  half-written (storage objects whole or absent, no alias moved, the training run ended
  FAILED rather than left RUNNING) and the next run, after a restart, must finish the work
  with every post delivered exactly once.

The fault is injected at an exact step by wrapping a library function (the step itself
still runs against the real server), so the outcome does not depend on timing. Retry
delays are shortened through ``NER_IO_RETRY_DELAY_S``; MLflow's and GCS's own client
retries through ``MLFLOW_HTTP_REQUEST_*`` and ``NER_GCS_TIMEOUT_S``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from flows.apply_ner import apply_ner
from flows.train_ner import TrainStatus, train_ner
from ner import inference, sources
from ner.errors import LabelStudioError, RegistryError, StorageError
from ner.labelstudio import exchange
from ner.labelstudio.client import LabelStudioProject
from ner.registry import Registry
from ner.storage import LocalStorage, Storage, open_storage
from tests.support import outages
from tests.support.flows import attempts, demo_slice
from tests.support.outages import (
    RETRIES,
    failed_run,
    fault_once,
    labelled_posts,
    pause_for,
)
from tests.support.servers import (
    GcsService,
    LabelStudioService,
    MlflowService,
    PrefectService,
    gcs_service,
    label_studio_service,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fixtures: a private MLflow server (this module's own instance), the session's Prefect
# server as the API, MLflow's client retries off.
own_mlflow = outages.own_mlflow
fail_fast_mlflow = outages.fail_fast_mlflow


def all_objects_whole(storage: Storage) -> list[str]:
    """Every key, after checking that each JSON/JSONL object parses completely."""
    keys = storage.list()
    for key in keys:
        if key.endswith(".jsonl"):
            for line in storage.iter_lines(key):
                if line.strip():
                    json.loads(line)
        elif key.endswith(".json"):
            storage.read_json(key)
    return keys


def mlflow_rest(mlflow: MlflowService, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{mlflow.url}/api/2.0/mlflow/{path}", params=params, timeout=30)


def runs_of(registry: Registry, experiment: str) -> list[Any]:
    exp = registry.client.get_experiment_by_name(experiment)
    assert exp is not None
    return list(registry.client.search_runs([exp.experiment_id], max_results=1000))


# --------------------------------------------------------------------------- MLflow
def test_mlflow_paused_while_logging_the_challenger_recovers_through_retries(
    own_mlflow: MlflowService,
    prefect: PrefectService,
    fail_fast_mlflow: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given labelled posts, and MLflow requests that time out after 2 s
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    settings = labelled_posts(tmp_path, own_mlflow, "paused")
    name = settings["registered_model_name"]
    # And MLflow frozen for 3 s as the training run starts to be logged
    paused: list[float] = []

    def freeze() -> None:
        pause_for(own_mlflow, 3.0)
        paused.append(time.monotonic())

    fault_once(monkeypatch, Registry, "log_training_run", freeze)
    # When train-ner runs
    state: Any = train_ner(source="storage", overrides=settings, return_state=True)
    # Then it completed and promoted its challenger
    assert state.is_completed(), state
    summary = state.result()
    assert summary.status == TrainStatus.PROMOTED, summary
    # And the logging step was attempted more than once (the first attempt timed out)
    assert paused and not own_mlflow.server.paused
    tries = attempts(prefect, str(state.state_details.flow_run_id), "log_challenger")
    assert len(tries) == 1 and tries[0] >= 2
    # And MLflow holds one finished training run, no run left RUNNING, and the champion
    registry = Registry(own_mlflow.url, model_name=name, experiment_name=name)
    runs = runs_of(registry, name)
    training = [r for r in runs if r.data.tags.get("brandloop.kind") == "training"]
    assert [r.info.run_id for r in training] == [summary.run_id]
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert registry.alias_version("champion") == summary.promoted_version


def test_mlflow_killed_before_promotion_fails_the_flow_and_promotes_nothing(
    own_mlflow: MlflowService,
    prefect: PrefectService,
    fail_fast_mlflow: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given labelled posts and a model that has no champion yet
    settings = labelled_posts(tmp_path, own_mlflow, "killed")
    name = settings["registered_model_name"]
    storage = open_storage(settings["storage_uri"], "dev")
    # And MLflow killed just as the promotion starts (after training, logging, evaluating)
    restore = fault_once(monkeypatch, Registry, "promote", own_mlflow.server.kill)
    # When train-ner runs, then it fails (every retry of the promotion fails)
    state: Any = train_ner(source="storage", overrides=settings, return_state=True)
    flow_run_id = failed_run(state, RegistryError)
    assert attempts(prefect, flow_run_id, "promote_if_better") == [4]
    # And every object in storage is whole (the annotations, gold set and training pool)
    keys = all_objects_whole(storage)
    assert "goldsets/CURRENT.json" in keys
    assert not [k for k in keys if k.rsplit("/", 1)[-1].startswith(".")]

    # When MLflow is back (same port, same database and artifacts)
    restore()
    own_mlflow.restart()
    registry = Registry(own_mlflow.url, model_name=name, experiment_name=name)
    # Then no alias but the challenger's moved: @champion does not exist
    assert registry.alias_version("champion") is None
    missing = mlflow_rest(own_mlflow, "registered-models/alias", name=name, alias="champion")
    assert missing.status_code == 400
    assert missing.json()["message"] == "Registered model alias champion not found."
    assert [(e.alias, e.to_version) for e in registry.audit_log()] == [("challenger", "1")]
    # And the training run is still open: MLflow was down when the flow tried to close it
    training = [r for r in runs_of(registry, name) if r.data.tags["brandloop.kind"] == "training"]
    assert [r.info.status for r in training] == ["RUNNING"]
    assert training[0].data.tags["brandloop.prefect_flow_run_id"] == flow_run_id

    # When the next train-ner run starts (here with a threshold the cold start meets)
    nxt: Any = train_ner(source="storage", overrides={**settings, "threshold": 0.0})
    # Then it closed the abandoned run as FAILED, saying why, and still promoted nothing
    assert nxt.status == TrainStatus.THRESHOLD_MET
    run = registry.client.get_run(training[0].info.run_id)
    assert run.info.status == "FAILED"
    assert run.data.tags["brandloop.end_reason"] == (
        f"flow run {flow_run_id} ended FAILED with this run open"
    )
    assert registry.alias_version("champion") is None
    assert [r.info.status for r in runs_of(registry, name) if r.info.status == "RUNNING"] == []


# --------------------------------------------------------------------------- GCS
@pytest.fixture
def own_gcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[GcsService]:
    """A private GCS emulator (data on disk, so it survives a restart)."""
    with gcs_service(tmp_path / "gcs") as gcs:
        for key, value in gcs.env().items():
            monkeypatch.setenv(key, value)
        yield gcs


def kill_after(n: int, items: Iterator[Any], kill: Callable[[], None]) -> Iterator[Any]:
    for number, item in enumerate(items, start=1):
        if number == n + 1:
            kill()
        yield item


@pytest.mark.parametrize("step", ["fetch", "predict"])
def test_bucket_killed_mid_apply_then_a_rerun_delivers_every_post_once(
    own_gcs: GcsService,
    prefect: PrefectService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    step: str,
) -> None:
    # Given 60 posts, 40 per run, and storage in the private emulator's bucket
    posts = demo_slice(tmp_path, 60)
    ids = [json.loads(line)["id"] for line in posts.read_text().splitlines()]
    settings = {
        "storage_uri": f"gs://{own_gcs.default_bucket}/loop",
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "gcs_timeout_s": 1.0,
        **RETRIES,
    }
    storage = open_storage(settings["storage_uri"], "dev")
    # And the emulator SIGKILLed while the step streams its records (10 read so far)
    original_parse, original_predict = sources.iter_jsonl, inference.predict
    if step == "fetch":

        def parse_then_die(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return kill_after(10, original_parse(*args, **kwargs), own_gcs.server.kill)

        monkeypatch.setattr(sources, "iter_jsonl", parse_then_die)
    else:

        def predict_then_die(*args: Any, **kwargs: Any) -> Iterator[Any]:
            return kill_after(10, original_predict(*args, **kwargs), own_gcs.server.kill)

        monkeypatch.setattr(inference, "predict", predict_then_die)

    def run() -> Any:
        return apply_ner(
            source="jsonl",
            input_uri=str(posts),
            max_posts=40,
            overrides=settings,
            return_state=True,
        )

    # When apply-ner runs, then it fails with a storage error once the retries are spent
    flow_run_id = failed_run(run(), StorageError)
    assert not own_gcs.server.running
    failed_task = "fetch_posts" if step == "fetch" else "predict_posts"
    assert attempts(prefect, flow_run_id, failed_task) == [4]

    # When the emulator is restarted (same port, same data)
    monkeypatch.setattr(sources, "iter_jsonl", original_parse)
    monkeypatch.setattr(inference, "predict", original_predict)
    own_gcs.restart()
    # Then the bucket holds no partial object: no predictions, no tasks; the fetched batch
    # (and the checkpoint that counts it) exist only if the fetch had finished
    keys = all_objects_whole(storage)
    assert not [k for k in keys if k.startswith(("predictions/", "tasks/"))]
    if step == "fetch":
        assert keys == []
    else:
        batches = [k for k in keys if k.startswith("posts/")]
        assert len(batches) == 1 and len(list(storage.iter_lines(batches[0]))) == 40
        assert len([k for k in keys if k.startswith("checkpoints/")]) == 1

    # When apply-ner runs again, twice
    first, second = run(), run()
    # Then the reruns finished the stored batch (if any) and fetched the rest
    assert first.is_completed() and second.is_completed()
    again, last = first.result(), second.result()
    if step == "predict":
        assert [r.posts_key for r in again.recovered] == batches
        assert again.recovered[0].delivered.n_predictions == 40
        assert again.n_posts == 20
    else:
        assert again.recovered == [] and again.n_posts == 40
    assert last.n_posts == (0 if step == "predict" else 20)
    # And every post is in exactly one Label Studio task file, each batch finished once
    tasks = [k for k in storage.list("tasks") if k.endswith(".json")]
    delivered = [t["data"]["post_id"] for key in tasks for t in storage.read_json(key)]
    assert sorted(delivered) == sorted(ids) and len(delivered) == len(set(delivered))
    stamps = {k.removeprefix("posts/").removesuffix(".jsonl") for k in storage.list("posts")}
    assert stamps == {k.removeprefix("tasks/").removesuffix(".json") for k in tasks}


# --------------------------------------------------------------------------- Label Studio
@pytest.fixture
def own_label_studio(tmp_path: Path) -> Iterator[LabelStudioService]:
    """A private Label Studio (a copy of the migrated template: it starts in seconds)."""
    service = label_studio_service(tmp_path / "label-studio")
    started = time.monotonic()
    with service.start():
        print(f"\nprivate Label Studio healthy after {time.monotonic() - started:.1f} s")
        yield service


def test_label_studio_killed_mid_import_then_a_rerun_imports_every_post_once(
    own_label_studio: LabelStudioService,
    prefect: PrefectService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 45 posts and a Label Studio that dies after the first batch of 10 tasks
    posts = demo_slice(tmp_path, 45)
    ids = [json.loads(line)["id"] for line in posts.read_text().splitlines()]
    monkeypatch.setenv("NER_LABEL_STUDIO_API_KEY", own_label_studio.token)
    settings = {
        "storage_uri": str(tmp_path / "storage"),
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "label_studio_url": own_label_studio.url,
        "label_studio_project": "reliability",
        **RETRIES,
    }
    original = exchange.import_predictions

    def import_then_die(project: LabelStudioProject, *args: Any, **kwargs: Any) -> Any:
        def crash(number: int, task_ids: list[int]) -> None:
            if number == 1:
                own_label_studio.server.kill()

        return original(project, *args, **{**kwargs, "batch_size": 10, "on_batch": crash})

    monkeypatch.setattr(exchange, "import_predictions", import_then_die)

    def run() -> Any:
        return apply_ner(
            source="jsonl",
            input_uri=str(posts),
            max_posts=100,
            destination="label_studio",
            overrides=settings,
            return_state=True,
        )

    # When apply-ner sends the posts, then the flow fails once its retries are spent
    flow_run_id = failed_run(run(), LabelStudioError)
    assert attempts(prefect, flow_run_id, "send_to_label_studio") == [4]
    # And the batch has no receipt: it is not finished
    storage = LocalStorage(tmp_path / "storage" / "dev")
    assert [k for k in storage.list("tasks")] == []
    assert len(storage.list("posts")) == 1

    # When Label Studio is back and apply-ner runs again
    monkeypatch.setattr(exchange, "import_predictions", original)
    own_label_studio.restart()
    again = run()
    assert again.is_completed(), again
    summary = again.result()
    # Then it finished the batch: the 10 tasks already there were skipped, 35 imported
    assert summary.n_posts == 0
    [recovered] = summary.recovered
    imported = recovered.delivered.imported
    assert (imported.n_skipped_existing, imported.n_imported) == (10, 35)
    assert storage.list("tasks") == [
        f"tasks/{recovered.posts_key.removeprefix('posts/').removesuffix('.jsonl')}.imported.json"
    ]
    # And the project holds every post exactly once
    from label_studio_sdk import LabelStudio

    client = LabelStudio(base_url=own_label_studio.url, api_key=own_label_studio.token)
    project_id = imported.project_id
    in_project = [
        str((t.data or {})["post_id"]) for t in client.tasks.list(project=project_id, fields="all")
    ]
    assert sorted(in_project) == sorted(ids)
