"""The champion inside the real Label Studio: ``python -m apps.ml_backend`` as its ML backend.

A model registered in MLflow (SQLite store in tmp) is promoted to ``@champion``; the backend
runs as users run it (a subprocess on 127.0.0.1, HTTP Basic auth), Label Studio 1.23.2 is
connected to it through the SDK, asked for predictions on its tasks (emoji posts included),
and the predictions are read back from Label Studio. Annotations made in Label Studio reach
the backend through the webhook Label Studio registers for it and queue one ``train-ner`` run
on a real Prefect server once the label gate opens.
"""

from __future__ import annotations

import base64
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from label_studio_sdk.client import LabelStudio
from mlflow import MlflowClient
from typer.testing import CliRunner

from ner.registry import CHAMPION, Registry, decide
from tests.support.models import register_gazetteer
from tests.support.servers import (
    LOCALHOST,
    LabelStudioService,
    ManagedServer,
    PrefectService,
    free_port,
    http_post_json,
)

ROOT = Path(__file__).resolve().parents[2]
GOLD = "e" * 64
BRANDS = ["Glossier", "Fenty Beauty", "Rare Beauty"]
#: Control and object names unlike the generated config's, so nothing can assume them.
LABEL_CONFIG = (
    '<View><Text name="post" value="$body"/>'
    '<Labels name="brand" toName="post"><Label value="BRAND"/></Labels></View>'
)
POSTS = [
    "💄🫶 new glossier drop, and Fenty Beauty restock 🔥",
    "👩‍👩‍👧 family trip; RARE BEAUTY blush 💖💖 then glossier again",
    "🇫🇷 no brands here at all",
    "plain text Fenty Beauty",
]
USER = "studio"
PASSWORD = f"pw-{secrets.token_hex(8)}"


@dataclass(frozen=True)
class Backend:
    url: str
    registry: Registry
    version: str
    deployment_id: str


def _promote(
    registry: Registry, tmp_path: Path, brands: list[str], f1: float, champion_f1: float | None
) -> str:
    """A gazetteer model over ``brands``, registered and promoted to ``@champion``;
    returns its ``name/version``."""
    version = register_gazetteer(registry, tmp_path, brands, f1, GOLD)
    decision = decide(f1, champion_f1, 0.8)
    registry.promote(version, gold_hash=GOLD, decision=decision, metrics={"f1": f1})
    return f"{registry.model_name}/{version}"


def _train_deployment(prefect: PrefectService, name: str) -> str:
    """A ``train-ner`` deployment on the Prefect server (no worker: its runs stay queued)."""
    # A busy machine can keep the server's first writes waiting for seconds.
    flow = http_post_json(f"{prefect.api_url}/flows/", {"name": "train-ner"}, timeout=60)
    assert isinstance(flow, dict), flow
    deployment = http_post_json(
        f"{prefect.api_url}/deployments/", {"name": name, "flow_id": flow["id"]}, timeout=60
    )
    assert isinstance(deployment, dict), deployment
    return str(deployment["id"])


def _backend_server(
    name: str, registry: Registry, tmp_path: Path, env: dict[str, str]
) -> tuple[int, ManagedServer]:
    """``python -m apps.ml_backend`` on a free port, serving ``registry``'s champion with the
    Basic credentials of this module, plus ``env``."""
    port = free_port()
    server = ManagedServer(
        name,
        [sys.executable, "-m", "apps.ml_backend", "--host", LOCALHOST, "--port", str(port)],
        workdir=tmp_path,
        cwd=ROOT,
        port=port,
        health_url=f"http://{LOCALHOST}:{port}/health",
        env={
            "NER_MLFLOW_TRACKING_URI": registry.tracking_uri,
            "NER_SERVE_MODEL": f"models:/{registry.model_name}@{CHAMPION}",
            "NER_ML_BACKEND_USER": USER,
            "NER_ML_BACKEND_PASSWORD": PASSWORD,
            **env,
        },
        unset_env=("MLFLOW_TRACKING_URI",),
        startup_timeout=120.0,
    )
    return port, server


@pytest.fixture(scope="module")
def backend(
    tmp_path_factory: pytest.TempPathFactory, prefect_server: PrefectService
) -> Iterator[Backend]:
    tmp_path = tmp_path_factory.mktemp("ml-backend")
    registry = Registry(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        model_name="brand-ner-ml",
        experiment_name="brand-ner-ml",
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )
    version = _promote(registry, tmp_path, BRANDS, 0.85, None)
    name = f"ml-backend-{secrets.token_hex(3)}"
    deployment_id = _train_deployment(prefect_server, name)
    training = {
        **prefect_server.env(),
        "NER_ML_BACKEND_TRAIN": "true",
        "NER_ML_BACKEND_TRAIN_DEPLOYMENT": f"train-ner/{name}",
        "NER_MIN_NEW_LABELS": "2",
    }
    port, server = _backend_server("ml-backend", registry, tmp_path, training)
    with server:
        yield Backend(f"http://{LOCALHOST}:{port}", registry, version, deployment_id)
    assert server.group_pids() == []


@pytest.fixture(scope="module")
def studio(label_studio: LabelStudioService) -> LabelStudio:
    return LabelStudio(base_url=label_studio.url, api_key=label_studio.token)


@pytest.fixture(scope="module")
def project(studio: LabelStudio, backend: Backend, label_studio: LabelStudioService) -> int:
    """A project with the posts as tasks, the backend connected through the SDK."""
    created = studio.projects.create(
        title=f"ml-backend-{secrets.token_hex(3)}", label_config=LABEL_CONFIG
    )
    assert created.id is not None
    rows: list[Any] = [{"body": text} for text in POSTS]
    studio.projects.import_tasks(created.id, request=rows)
    # connected as the README says, twice: the second run changes nothing
    first, again = [_setup_backend(label_studio, created.title or "", backend.url) for _ in "12"]
    assert first[0] == 0 and again[0] == 0, (first, again)
    assert f"ML backend {backend.url} connected (id " in first[1]
    assert f"ML backend {backend.url} already connected, updated" in again[1]
    # (its state as Label Studio words it, not its code "CO": trial AK)
    assert "state Connected" in again[1], again[1]
    for _, out in (first, again):
        assert f"Basic auth as '{USER}'" in out and "sends the same credentials" in out
        assert PASSWORD not in out
    return created.id


def _setup_backend(label_studio: LabelStudioService, title: str, url: str) -> tuple[int, str]:
    """``brandloop labelstudio setup --ml-backend-url URL`` with the backend's credentials."""
    from apps import cli

    with pytest.MonkeyPatch.context() as env:
        env.setenv("NER_ML_BACKEND_USER", USER)
        env.setenv("NER_ML_BACKEND_PASSWORD", PASSWORD)
        settings = {
            "label_studio_url": label_studio.url,
            "label_studio_api_key": label_studio.token,
            "label_studio_project": title,
        }
        flags = [arg for k, v in settings.items() for arg in ("--set", f"{k}={v}")]
        result = CliRunner().invoke(
            cli.app, ["labelstudio", "setup", "--ml-backend-url", url, *flags]
        )
    return result.exit_code, result.stdout + result.stderr


def _expected(text: str) -> list[str]:
    """The brand mentions in ``text`` as written, in order (case-insensitive search)."""
    lowered = text.lower()
    found: list[tuple[int, str]] = []
    for brand in BRANDS:
        start = lowered.find(brand.lower())
        while start != -1:
            found.append((start, text[start : start + len(brand)]))
            start = lowered.find(brand.lower(), start + 1)
    return [mention for _, mention in sorted(found)]


def test_label_studio_gets_the_champions_spans_at_exact_offsets(
    studio: LabelStudio, project: int, backend: Backend
) -> None:
    # Given the backend is connected, Label Studio saw its model version at setup
    connected = studio.ml.list(project=project)
    assert len(connected) == 1 and connected[0].state == "CO", connected[0]
    assert connected[0].model_version == backend.version
    # When Label Studio is asked to retrieve predictions for every task
    studio.actions.create(
        id="retrieve_tasks_predictions", project=project, selected_items={"all": True}
    )
    # Then every task holds one prediction of the champion's version, read back from Label Studio
    listed: list[Any] = list(studio.tasks.list(project=project, fields="all"))
    texts = {t.id: t.data["body"] for t in listed}
    assert sorted(texts.values()) == sorted(POSTS)
    predictions = studio.predictions.list(project=project)
    assert sorted(p.task for p in predictions) == sorted(texts)
    for prediction in predictions:
        text = texts[prediction.task]
        assert prediction.model_version == backend.version
        # And each region uses the project's names and lands at exact code-point offsets
        mentions = []
        for region in prediction.result:
            assert (region["from_name"], region["to_name"], region["type"]) == (
                "brand",
                "post",
                "labels",
            )
            value = region["value"]
            assert text[value["start"] : value["end"]] == value["text"], (text, value)
            assert value["labels"] == ["BRAND"] and region["score"] == 1.0
            mentions.append(value["text"])
        assert mentions == _expected(text), text
        assert prediction.score == (1.0 if mentions else None)


def _first_word(text: str) -> dict[str, Any]:
    """An annotation region over the text's first word (in the project's names)."""
    end = text.index(" ")
    value = {"start": 0, "end": end, "text": text[:end], "labels": ["BRAND"]}
    return {"from_name": "brand", "to_name": "post", "type": "labels", "value": value}


def _wait_for_health(backend: Backend, key: str, wanted: object, timeout: float = 60.0) -> Any:
    """The backend's health once ``key`` reaches ``wanted`` (Label Studio's webhook is sent
    from the annotation request, about a second later)."""
    deadline = time.monotonic() + timeout
    seen: Any = None
    while time.monotonic() < deadline:
        seen = requests.get(f"{backend.url}/health", timeout=5).json()
        if seen.get(key) == wanted:
            return seen
        time.sleep(0.25)
    raise AssertionError(f"backend health is {seen} after {timeout} s; wanted {key}={wanted}")


def _flow_runs(prefect: PrefectService, deployment_id: str) -> list[dict[str, Any]]:
    body = {"deployments": {"id": {"any_": [deployment_id]}}}
    runs = http_post_json(f"{prefect.api_url}/flow_runs/filter", body, timeout=60)
    assert isinstance(runs, list), runs
    return runs


def test_annotations_in_label_studio_queue_one_training_run(
    studio: LabelStudio, project: int, backend: Backend, prefect_server: PrefectService
) -> None:
    # Given the webhook Label Studio made for the backend carries the backend's credentials,
    # set by `brandloop labelstudio setup --ml-backend-url` (the project fixture)
    hooks = [h for h in studio.webhooks.list(project=str(project)) if h.url.endswith("/webhook")]
    assert [h.url for h in hooks] == [f"{backend.url}/webhook"]
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert hooks[0].headers == {"Authorization": f"Basic {token}"}
    tasks: list[Any] = list(studio.tasks.list(project=project, fields="all"))
    # When one annotation is made, the backend counts it and the gate (2 new labels) stays shut
    studio.annotations.create(id=tasks[0].id, result=[_first_word(tasks[0].data["body"])])
    assert _wait_for_health(backend, "pending_labels", 1)["runs_queued"] == 0
    assert _flow_runs(prefect_server, backend.deployment_id) == []
    # When a second one is made, one run of train-ner is queued on the Prefect server
    studio.annotations.create(id=tasks[1].id, result=[_first_word(tasks[1].data["body"])])
    assert _wait_for_health(backend, "runs_queued", 1)["pending_labels"] == 0
    runs = _flow_runs(prefect_server, backend.deployment_id)
    assert len(runs) == 1
    assert runs[0]["parameters"] == {"source": "label_studio"}
    assert runs[0]["state_type"] == "SCHEDULED"
    assert "label-trigger" in runs[0]["tags"]
    # When two more open the gate again while that run has not started (no worker here), no
    # second run is queued: the first will read every label when it starts
    for task in tasks[2:4]:
        studio.annotations.create(id=task.id, result=[_first_word(task.data["body"])])
    assert _wait_for_health(backend, "runs_queued", 2)["pending_labels"] == 0
    assert len(_flow_runs(prefect_server, backend.deployment_id)) == 1
    # When someone presses "Start training" on the connected model, a run of its own is queued
    connected = studio.ml.list(project=project)[0]
    assert connected.id is not None
    studio.ml.train(connected.id)
    assert _wait_for_health(backend, "runs_queued", 3)["pending_labels"] == 0
    assert len(_flow_runs(prefect_server, backend.deployment_id)) == 2


def test_a_promotion_reaches_label_studio_without_a_restart(
    studio: LabelStudio, project: int, backend: Backend, tmp_path: Path
) -> None:
    # Given a better challenger, which also knows NARS, is promoted on the registry
    newer = _promote(backend.registry, tmp_path, [*BRANDS, "NARS"], 0.92, 0.85)
    assert newer != backend.version
    post = "nars blush 😍 and glossier balm"
    rows: list[Any] = [{"body": post}]
    studio.projects.import_tasks(project, request=rows)
    # When Label Studio next sets up the backend, the backend loads the new champion
    retrieve = {"id": "retrieve_tasks_predictions", "project": project}
    studio.actions.create(**retrieve, selected_items={"all": True})
    _wait_for_health(backend, "model_version", newer)
    # And the next retrieval stamps every task with the new version's spans
    studio.actions.create(**retrieve, selected_items={"all": True})
    assert studio.ml.list(project=project)[0].model_version == newer
    listed: list[Any] = list(studio.tasks.list(project=project, fields="all"))
    texts = {t.id: t.data["body"] for t in listed}
    newest = [p for p in studio.predictions.list(project=project) if p.model_version == newer]
    assert sorted(p.task for p in newest) == sorted(texts)
    spans = {texts[p.task]: [r["value"]["text"] for r in p.result] for p in newest}
    assert spans[post] == ["nars", "glossier"]
    for prediction in newest:
        for region in prediction.result:
            value = region["value"]
            assert texts[prediction.task][value["start"] : value["end"]] == value["text"]


def test_a_backend_label_studio_cannot_reach_is_refused_with_its_reason(
    studio: LabelStudio, project: int, label_studio: LabelStudioService, backend: Backend
) -> None:
    # Given a URL where no backend listens
    title = studio.projects.get(id=project).title or ""
    dead = f"http://{LOCALHOST}:{free_port()}"
    # When it is connected as the README says
    code, out = _setup_backend(label_studio, title, dead)
    # Then the command fails, naming the URL and Label Studio's answer, without the password
    assert code == 1, out
    said = " ".join(out.split())
    assert f"Label Studio did not connect the ML backend {dead} (HTTP 400: Validation" in said
    assert "health check failed" in said and "start `python -m apps.ml_backend`" in said
    assert PASSWORD not in out
    # and the project keeps its one backend
    (kept,) = studio.ml.list(project=project)
    # When the backend is connected again under another URL (a trial moved it: two backends)
    moved = backend.url.replace(LOCALHOST, "localhost")
    code, out = _setup_backend(label_studio, title, moved)
    # Then it is a second backend, and the command names the first, still connected
    assert code == 0, out
    assert f"other ML backends too ({kept.id} at {backend.url})" in " ".join(out.split())
    added = [b for b in studio.ml.list(project=project) if b.id != kept.id]
    assert [b.url for b in added] == [moved]
    studio.ml.delete(added[0].id or 0)


def test_an_opened_task_without_a_prediction_gets_the_backends_spans(
    studio: LabelStudio, backend: Backend, label_studio: LabelStudioService
) -> None:
    # Given a project with a task `apply` imported with its prediction, and one without any
    created = studio.projects.create(
        title=f"opened-{secrets.token_hex(3)}", label_config=LABEL_CONFIG
    )
    assert created.id is not None
    imported = {
        "data": {"body": POSTS[3]},
        "predictions": [{"model_version": "gazetteer-0123", "result": []}],
    }
    rows: list[Any] = [imported, {"body": POSTS[0]}]
    studio.projects.import_tasks(created.id, request=rows)
    # When the backend is connected as the README says, and each task is opened (read as
    # the labelling page reads it)
    code, out = _setup_backend(label_studio, created.title or "", backend.url)
    assert code == 0, out
    opened = {}
    for task in studio.tasks.list(project=created.id):
        answer = requests.get(
            f"{label_studio.url}/api/tasks/{task.id}/?project={created.id}",
            headers={"Authorization": f"Token {label_studio.token}"},
            timeout=60,
        )
        answer.raise_for_status()
        opened[task.data["body"]] = [p["model_version"] for p in answer.json()["predictions"]]
    # Then the task without a prediction got the champion's, and the imported one kept its
    # own (Label Studio asks the backend only for a task that holds none: README)
    serving = requests.get(f"{backend.url}/health", timeout=10).json()["model_version"]
    assert opened == {POSTS[0]: [serving], POSTS[3]: ["gazetteer-0123"]}
    studio.projects.delete(id=created.id)


def test_a_backend_without_a_champion_yet_connects_and_serves_the_first_one(
    studio: LabelStudio, label_studio: LabelStudioService, tmp_path: Path
) -> None:
    # Given a backend started on a registry with no champion yet (a trial's cold start met
    # the threshold, so nothing was promoted, and Label Studio refused the backend: 503)
    registry = Registry(
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        model_name="brand-ner-wait",
        experiment_name="brand-ner-wait",
        artifact_location=(tmp_path / "artifacts").as_uri(),
    )
    MlflowClient(tracking_uri=registry.tracking_uri).search_experiments()  # the store exists
    following = {"NER_REGISTERED_MODEL_NAME": registry.model_name, "NER_SERVE_REFRESH_SECONDS": "1"}
    port, server = _backend_server("ml-backend-waiting", registry, tmp_path, following)
    title = f"waiting-{secrets.token_hex(3)}"
    created = studio.projects.create(title=title, label_config=LABEL_CONFIG)
    assert created.id is not None
    with server:
        url = f"http://{LOCALHOST}:{port}"
        assert requests.get(f"{url}/health", timeout=10).json()["model_version"] is None
        # When it is connected as the README says
        code, out = _setup_backend(label_studio, created.title or "", url)
        # Then Label Studio takes it, and the first champion is served once promoted
        assert code == 0, out
        assert f"ML backend {url} connected (id " in out
        version = _promote(registry, tmp_path, BRANDS, 0.85, None)
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/health", timeout=10).json()["model_version"] != version:
            assert time.monotonic() < deadline, "the first champion was not loaded"
            time.sleep(0.5)
    assert server.group_pids() == []
