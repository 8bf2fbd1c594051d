"""The loop on PostgreSQL, as production runs it (``deployments/compose.yaml``).

One PostgreSQL server (Debian's package, which ``make`` installs when it is missing) listens
on 127.0.0.1 with password auth and holds three databases: MLflow's tracking server,
Prefect's API server and Label Studio each use their own, as the compose stack configures
them. The loop runs against them: apply-ner sends demo posts to Label Studio through its
API, a human (SDK calls) labels them with the demo's gold spans, and train-ner pulls the
labels, freezes the gold set, trains a challenger and promotes it. The tests read the
outcome from the flows' results and straight from the PostgreSQL tables, so a server that
silently fell back to SQLite fails.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from label_studio_sdk import LabelStudio

from flows.apply_ner import ApplyResult, apply_ner
from flows.train_ner import TrainStatus, TrainSummary, train_ner
from ner.replay import demo_gold_path
from tests.support.flows import demo_slice, prefect_api
from tests.support.servers import (
    LabelStudioService,
    MlflowService,
    PostgresService,
    PrefectService,
    Service,
    label_studio_service,
    mlflow_service,
    postgres_service,
    prefect_service,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_POSTS = 160
PROJECT = "brandloop-postgres"
MODEL = "brand-ner-pg"
#: Cold start on the pretrained pipeline (below the threshold), a short training; the gold
#: set is the hash split alone (this test is about the databases, not the gate's slices).
TRAINING = {
    "cold_start": "base",
    "threshold": 0.3,
    "max_epochs": 3,
    "seed": 7,
    "gold_recent_fraction": 0.0,
    "canary_fraction": 0.0,
}


@dataclass
class PgStack:
    """The servers, all on one PostgreSQL, and what the loop returned."""

    pg: PostgresService
    mlflow: MlflowService
    prefect: PrefectService
    studio: LabelStudioService
    applied: ApplyResult
    trained: TrainSummary
    n_labelled: int


def _start_all(services: list[Service]) -> None:
    for service in services:
        service.server.launch()
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        list(pool.map(lambda s: s.wait_ready(), services))


def _label_like_the_demo_gold(studio: LabelStudioService) -> int:
    """A human labels every task of the project with the demo's gold spans (SDK calls)."""
    gold = {
        str(item["data"]["post_id"]): item["annotations"][0]["result"]
        for item in json.loads(demo_gold_path().read_text(encoding="utf-8"))
    }
    client = LabelStudio(base_url=studio.url, api_key=studio.token)
    (project,) = [p for p in client.projects.list() if p.title == PROJECT]
    labelled = 0
    for task in client.tasks.list(project=project.id, fields="all"):
        data: Any = task.data
        result = gold[str(data["post_id"])]
        client.annotations.create(id=task.id, result=result)
        labelled += 1
    return labelled


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgStack]:
    tmp = tmp_path_factory.mktemp("postgres-stack")
    with postgres_service(tmp / "postgres") as pg:
        mlflow_db = pg.create_database("mlflow")
        prefect_db = pg.create_database("prefect")
        studio_db = pg.create_database("labelstudio")
        mlflow = mlflow_service(tmp / "mlflow", backend_store_uri=mlflow_db.url())
        prefect = prefect_service(
            tmp / "prefect", database_url=prefect_db.url("postgresql+asyncpg")
        )
        studio = label_studio_service(tmp / "label-studio", database=studio_db)
        services: list[Service] = [studio, mlflow, prefect]
        try:
            _start_all(services)
            posts = demo_slice(tmp, N_POSTS)
            with pytest.MonkeyPatch.context() as mp:
                for key, value in {
                    **studio.env(),
                    "NER_STORAGE_URI": str(tmp / "storage"),
                    "NER_MLFLOW_TRACKING_URI": mlflow.url,
                    "NER_REGISTERED_MODEL_NAME": MODEL,
                    "NER_EXPERIMENT_NAME": MODEL,
                    "NER_LABEL_STUDIO_PROJECT": PROJECT,
                }.items():
                    mp.setenv(key, value)
                with prefect_api(prefect):
                    applied = apply_ner(
                        source="jsonl", input_uri=str(posts), destination="label_studio"
                    )
                    n_labelled = _label_like_the_demo_gold(studio)
                    trained = train_ner(source="label_studio", overrides=TRAINING)
            yield PgStack(pg, mlflow, prefect, studio, applied, trained, n_labelled)
        finally:
            for service in services:
                service.stop()


def test_the_loop_runs_on_postgres_and_promotes(stack: PgStack) -> None:
    assert stack.applied.n_posts == N_POSTS
    assert stack.n_labelled == N_POSTS
    trained = stack.trained
    assert trained.labels == N_POSTS
    assert trained.n_gold is not None and trained.n_train is not None
    assert trained.n_gold + trained.n_train == N_POSTS
    assert trained.status == TrainStatus.PROMOTED, trained
    assert trained.challenger_f1 is not None and trained.champion_f1 is not None
    assert trained.challenger_f1 > trained.champion_f1


def test_mlflow_keeps_runs_versions_and_aliases_in_postgres(stack: PgStack) -> None:
    sql = stack.pg.psql
    version = stack.trained.promoted_version
    assert sql(f"SELECT version FROM model_versions WHERE name = '{MODEL}'", "mlflow") == version
    aliases = sql(
        f"SELECT alias || '=' || version FROM registered_model_aliases WHERE name = '{MODEL}'",
        "mlflow",
    )
    assert aliases.splitlines() == [f"champion={version}"]
    run_id = stack.trained.run_id
    assert sql(f"SELECT status FROM runs WHERE run_uuid = '{run_id}'", "mlflow") == "FINISHED"
    n_metrics = int(sql(f"SELECT count(*) FROM metrics WHERE run_uuid = '{run_id}'", "mlflow"))
    assert n_metrics > 0


def test_prefect_records_the_flow_runs_in_postgres(stack: PgStack) -> None:
    rows = stack.pg.psql(
        "SELECT f.name || ':' || r.state_type FROM flow_run r JOIN flow f ON f.id = r.flow_id "
        "ORDER BY r.start_time",
        "prefect",
    ).splitlines()
    assert rows[:2] == ["apply-ner:COMPLETED", "train-ner:COMPLETED"], rows
    n_tasks = int(stack.pg.psql("SELECT count(*) FROM task_run", "prefect"))
    assert n_tasks >= 5


def test_label_studio_keeps_tasks_and_annotations_in_postgres(stack: PgStack) -> None:
    sql = stack.pg.psql
    assert int(sql("SELECT count(*) FROM task", "labelstudio")) == N_POSTS
    assert int(sql("SELECT count(*) FROM task_completion", "labelstudio")) == N_POSTS
    # Label Studio's own data folder holds no SQLite database: it really used PostgreSQL
    assert not list(Path(stack.studio.data_dir).rglob("*.sqlite3"))


def test_a_restarted_mlflow_server_finds_everything_again(stack: PgStack) -> None:
    from mlflow import MlflowClient

    stack.mlflow.restart()
    client = MlflowClient(tracking_uri=stack.mlflow.url, registry_uri=stack.mlflow.url)
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == stack.trained.promoted_version
