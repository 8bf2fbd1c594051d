"""The Label Studio ML backend's logic on tiny spaCy models (in-process app, no servers)."""

from __future__ import annotations

import base64
import json
import logging
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import spacy
from fastapi.testclient import TestClient
from pydantic import SecretStr
from spacy.training import Example

from apps.ml_backend import create_app, main, scored_spans
from ner.active import entity_probabilities
from ner.errors import ConfigError, ModelError, NotPromotedYetError
from ner.models import LoadedModel, RegistryRef, add_gazetteer
from ner.settings import Settings
from tests.support.models import gazetteer

#: Names that differ from the generated config's, so nothing can assume them.
CONFIG = (
    '<View><Text name="post" value="$body"/>'
    '<Labels name="brand" toName="post"><Label value="BRAND"/><Label value="OTHER"/></Labels>'
    "</View>"
)


class Registry:
    """Stands in for MLflow: the version behind ``@champion`` and the brands of each."""

    def __init__(self) -> None:
        self.champion: str | None = "brand-ner/1"
        self.brands = {"brand-ner/1": ["Glossier"], "brand-ner/2": ["Glossier", "Fenty Beauty"]}

    def resolve(self, spec: str) -> RegistryRef:
        if self.champion is None:
            raise NotPromotedYetError("no champion yet: no version of brand-ner has @champion")
        return RegistryRef(self.champion, "run-a")

    def load(self, spec: str) -> LoadedModel:
        version = spec.removeprefix("models:/")
        if version not in self.brands:
            raise ModelError(f"no model {spec}")
        return gazetteer(self.brands[version], version)


class Trigger:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"run-{self.calls}"


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {"serve_max_chars": 60, "min_new_labels": 2}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def trigger() -> Trigger:
    return Trigger()


def client_for(registry: Registry, trigger: Trigger, **overrides: object) -> TestClient:
    app = create_app(
        settings(**overrides), loader=registry.load, resolver=registry.resolve, trigger=trigger
    )
    return TestClient(app)


@pytest.fixture
def client(registry: Registry, trigger: Trigger) -> Iterator[TestClient]:
    with client_for(registry, trigger) as test_client:
        yield test_client


def predict(client: TestClient, tasks: list[object], config: str = CONFIG) -> dict[str, object]:
    # ASCII-escaped JSON, as Label Studio sends it: a lone surrogate travels as "\\ud83d"
    payload = json.dumps({"tasks": tasks, "project": "3.17", "label_config": config})
    response = client.post(
        "/predict", content=payload.encode(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_health_and_root_name_the_served_version(client: TestClient) -> None:
    for path in ("/health", "/"):
        assert client.get(path).json() == {
            "status": "UP",
            "model_class": "brandloop",
            "model_version": "brand-ner/1",
        }


def test_health_says_degraded_while_the_new_champion_cannot_load(
    client: TestClient, registry: Registry
) -> None:
    # Given @champion moved to a version that cannot load (a trial moved its files away)
    registry.champion = "brand-ner/9"
    # When Label Studio calls /setup, which checks the alias
    setup = client.post("/setup", json={"project": "1.1", "label_config": CONFIG})
    # Then the old version still answers, and /health, still UP for Label Studio, says the
    # backend is behind its alias (a trial's monitor read "UP" alone)
    assert setup.status_code == 200
    health = client.get("/health").json()
    assert health["status"] == "UP" and health["model_version"] == "brand-ner/1"
    assert health["degraded"].startswith("the last check or load of the model failed")
    # And once the alias is back, so is a plain answer
    registry.champion = "brand-ner/1"
    client.post("/setup", json={"project": "1.1", "label_config": CONFIG})
    assert "degraded" not in client.get("/health").json()


def test_a_backend_started_before_the_first_promotion_waits_for_it(
    registry: Registry, trigger: Trigger
) -> None:
    # Given no version promoted to @champion yet (a new compose stack)
    registry.champion = None
    # When the backend starts while it follows the alias, Label Studio can connect it (its
    # health check and /setup answer 200: a trial could not connect it before a promotion)
    with client_for(registry, trigger, serve_refresh_seconds=0.05) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["model_version"] is None
        assert health.json()["waiting"].endswith("waiting for the first promotion to @champion")
        setup = client.post("/setup", json={"project": "1.1", "label_config": CONFIG})
        assert (setup.status_code, setup.json()) == (200, {"model_version": ""})
        # and predictions are refused, saying why
        refused = client.post("/predict", json={"tasks": [], "label_config": CONFIG})
        assert refused.status_code == 503
        assert refused.json()["detail"].endswith("waiting for the first promotion to @champion")
        # Then it loads the first champion by itself once one is promoted
        registry.champion = "brand-ner/1"
        deadline = time.monotonic() + 10
        while client.get("/health").json()["model_version"] is None:
            assert time.monotonic() < deadline, "the first champion was not loaded"
            time.sleep(0.05)
        assert client.get("/health").json()["model_version"] == "brand-ner/1"
    # While a backend that does not follow the alias refuses to start without one
    registry.champion = None
    with pytest.raises(NotPromotedYetError), client_for(registry, trigger, serve_refresh_seconds=0):
        pass


def test_setup_follows_the_alias_and_refuses_a_config_without_spans(
    client: TestClient, registry: Registry
) -> None:
    # Given Label Studio sets up the backend with a span config
    response = client.post("/setup", json={"project": "3.17", "schema": CONFIG})
    assert response.json() == {"model_version": "brand-ner/1"}
    # When the champion moves, the setup that follows loads it after answering (Label Studio
    # sends one per batch and waits 3 s at most), and the next one reports it
    registry.champion = "brand-ner/2"
    versions = [client.post("/setup", json={"project": "3.17"}).json() for _ in range(2)]
    assert versions == [{"model_version": "brand-ner/1"}, {"model_version": "brand-ner/2"}]
    # And predictions come from the new version
    body = predict(client, [{"id": 1, "data": {"body": "fenty beauty"}}])
    assert body["model_version"] == "brand-ner/2"
    # When the alias points at a version that cannot load, the old one keeps answering
    registry.champion = "brand-ner/9"
    for _ in range(2):
        assert client.post("/setup", json={}).json() == {"model_version": "brand-ner/2"}
    # A config with no <Labels> on a <Text> is refused, saying so
    choices = '<View><Text name="t" value="$text"/><Choices name="c" toName="t"/></View>'
    refused = client.post("/setup", json={"schema": choices})
    assert refused.status_code == 400 and "no <Labels> control" in refused.json()["detail"]


def test_predict_gives_regions_at_code_point_offsets_under_the_projects_names(
    client: TestClient,
) -> None:
    # Given tasks with emoji (astral and ZWJ sequences), CRLF and a task without brands
    texts = ["💄🫶 new  glossier\r\ndrop", "👩‍👩‍👧 GLOSSIER & glossier!", "nothing here"]
    tasks = [{"id": 10 + i, "data": {"body": text}} for i, text in enumerate(texts)]
    # When Label Studio asks for predictions
    body = predict(client, tasks)
    # Then there is one result per task, in order, each with the model version
    results = body["results"]
    assert isinstance(results, list) and len(results) == 3
    assert body["model_version"] == "brand-ner/1"
    assert all(r["model_version"] == "brand-ner/1" for r in results)
    # And each region names the project's control and object and indexes the text exactly
    first = results[0]["result"]
    assert first == [
        {
            "id": "brandloop-8-16-BRAND",
            "from_name": "brand",
            "to_name": "post",
            "type": "labels",
            "value": {"start": 8, "end": 16, "text": "glossier", "labels": ["BRAND"]},
            "score": 1.0,
        }
    ]
    for text, result in zip(texts, results, strict=True):
        for region in result["result"]:
            value = region["value"]
            assert text[value["start"] : value["end"]] == value["text"]
    assert [r["value"]["text"] for r in results[1]["result"]] == ["GLOSSIER", "glossier"]
    assert results[0]["score"] == 1.0 and results[2] == {
        "result": [],
        "score": None,
        "model_version": "brand-ner/1",
    }


def test_a_bad_task_gets_an_empty_result_and_a_logged_reason(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    tasks: list[object] = [
        {"id": 1, "data": {"body": "glossier"}},
        {"id": 2, "data": {"text": "glossier"}},  # wrong field
        {"id": 3, "data": {"body": "bad \ud83d glossier"}},  # lone surrogate
        {"id": 4, "data": {"body": "glossier " + "x" * 60}},  # over serve_max_chars
        {"id": 5},
        "not a task",
        {"id": 7, "data": {"body": "glossier again"}},
    ]
    with caplog.at_level(logging.WARNING, logger="apps.ml_backend"):
        body = predict(client, tasks)
    results = body["results"]
    assert isinstance(results, list)
    assert [len(r["result"]) for r in results] == [1, 0, 0, 0, 0, 0, 1]
    logged = caplog.text
    # each named by its task id and its place in the request, not "task #1: record 'task 2'"
    said = "no prediction for task 2, item 1 (0-based) of the request: task data has no text"
    assert said in logged
    assert "no prediction for item 5 (0-based) of the request: task is not a JSON object" in logged
    assert "task 3" in logged and "lone surrogate at code point 4" in logged
    assert "task 4" in logged and "the limit is 60" in logged
    assert "task 5" in logged and "not a JSON object" in logged


def test_labels_outside_the_projects_config_are_not_predicted(client: TestClient) -> None:
    other = (
        '<View><Labels name="l" toName="t"><Label value="PERSON"/></Labels>'
        '<Text name="t" value="$text"/></View>'
    )
    body = predict(client, [{"id": 1, "data": {"text": "glossier"}}], config=other)
    assert body["results"] == [{"result": [], "score": None, "model_version": "brand-ner/1"}]


def test_predict_needs_a_label_config(client: TestClient) -> None:
    response = client.post("/predict", json={"tasks": [{"id": 1, "data": {"text": "x"}}]})
    assert response.status_code == 400 and "label_config" in response.json()["detail"]


def test_basic_auth_guards_every_route_but_health(registry: Registry, trigger: Trigger) -> None:
    secret = "s3cret-pass"
    with client_for(
        registry, trigger, ml_backend_user="studio", ml_backend_password=SecretStr(secret)
    ) as client:
        good = base64.b64encode(f"studio:{secret}".encode()).decode()
        wrong = base64.b64encode(b"studio:nope").decode()
        assert client.get("/health").status_code == 200
        for headers in ({}, {"Authorization": f"Basic {wrong}"}):
            for path in ("/setup", "/predict", "/webhook"):
                response = client.post(path, json={}, headers=headers)
                assert response.status_code == 401, (path, headers)
                assert response.headers["www-authenticate"] == "Basic"
                assert secret not in response.text
        ok = client.post("/setup", json={}, headers={"Authorization": f"Basic {good}"})
        assert ok.status_code == 200


def test_the_password_stays_out_of_dumped_settings() -> None:
    dumped = settings(ml_backend_user="studio", ml_backend_password=SecretStr("pw-x1")).safe_dump()
    assert dumped["ml_backend_user"] == "studio" and "ml_backend_password" not in dumped
    assert "pw-x1" not in str(dumped)


def test_half_set_credentials_are_a_config_error(registry: Registry) -> None:
    with pytest.raises(ConfigError, match="NER_ML_BACKEND_PASSWORD"):
        create_app(settings(ml_backend_user="studio"), loader=registry.load)


def test_the_command_line_refuses_half_set_credentials(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("NER_ML_BACKEND_USER", "studio")
    monkeypatch.delenv("NER_ML_BACKEND_PASSWORD", raising=False)
    holder_log = logging.getLogger("apps.serving")
    monkeypatch.setattr(holder_log, "level", logging.WARNING)  # as Prefect's setup leaves it
    with caplog.at_level(logging.ERROR, logger="apps.ml_backend"):
        assert main(["--host", "127.0.0.1", "--port", "9"]) == 1
    assert "NER_ML_BACKEND_PASSWORD" in caplog.text
    # and the model holder's INFO lines (serving X, the alias moved) would show
    assert holder_log.level == logging.INFO


def test_the_command_line_warns_without_credentials_and_refuses_anonymous_training(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apps.ml_backend import start_warnings
    from ner.errors import ConfigError
    from ner.settings import load_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # A trial's backend answered /predict and queued training for anyone, without a word
    said = start_warnings(load_settings({}), "0.0.0.0:9090")
    assert said == [
        "no NER_ML_BACKEND_USER and NER_ML_BACKEND_PASSWORD: anyone who reaches 0.0.0.0:9090 "
        "gets the champion's predictions; set both (Label Studio sends them) to require them"
    ]
    with pytest.raises(
        ConfigError, match="starts train-ner runs on webhooks: set NER_ML_BACK"
    ) as both:
        start_warnings(load_settings({"ml_backend_train": True}), "h:1")
    assert "; and PREFECT_API_URL is not set" in str(both.value)  # both at once, not in turn
    # With credentials: nothing to say, but training still needs a Prefect API to queue on
    creds = {"ml_backend_user": "studio", "ml_backend_password": "s3cret"}
    assert start_warnings(load_settings(creds), "h:1") == []
    with pytest.raises(ConfigError, match="PREFECT_API_URL is not set"):
        start_warnings(load_settings({**creds, "ml_backend_train": True}), "h:1")


def test_the_command_line_refuses_a_missing_store_and_creates_none(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    # a new user's mistyped store became an empty one that waited forever (apps.serving
    # refuses it)
    missing = tmp_path / "nope" / "mlflow.db"
    monkeypatch.setenv("NER_MLFLOW_TRACKING_URI", f"sqlite:///{missing}")
    monkeypatch.delenv("NER_ML_BACKEND_USER", raising=False)
    monkeypatch.delenv("NER_ML_BACKEND_PASSWORD", raising=False)
    with caplog.at_level(logging.ERROR, logger="apps.ml_backend"):
        assert main(["--host", "127.0.0.1", "--port", "9"]) == 1
    assert "no MLflow store at" in caplog.text and "NER_MLFLOW_TRACKING_URI=" in caplog.text
    assert not missing.parent.exists()


def test_the_wait_for_a_first_promotion_is_logged_as_the_backend_answers(
    registry: Registry, trigger: Trigger, caplog: pytest.LogCaptureFixture
) -> None:
    registry.champion = None
    with (
        caplog.at_level(logging.WARNING, logger="apps.serving"),
        client_for(registry, trigger, serve_refresh_seconds=5) as client,
    ):
        assert client.get("/health").status_code == 200
    assert "/predict answers 503 until a version is promoted" in caplog.text
    assert "/health answers 503" not in caplog.text


def annotation_event(annotation_id: int, action: str = "ANNOTATION_CREATED") -> dict[str, object]:
    return {
        "action": action,
        "annotation": {"id": annotation_id, "project": 3},
        "project": {"id": 3},
    }


def test_webhook_is_off_unless_training_is_enabled(client: TestClient, trigger: Trigger) -> None:
    response = client.post("/webhook", json=annotation_event(1))
    assert response.status_code == 200
    assert (
        response.json()["accepted"] is False and "NER_ML_BACKEND_TRAIN" in response.json()["reason"]
    )
    assert trigger.calls == 0


def test_webhook_queues_training_once_enough_new_labels_arrived(
    registry: Registry, trigger: Trigger
) -> None:
    with client_for(registry, trigger, ml_backend_train=True) as client:
        # Given one annotation, created then updated: it counts once, the gate (2) stays shut
        assert client.post("/webhook", json=annotation_event(1)).json()["pending"] == 1
        client.post("/webhook", json=annotation_event(1, "ANNOTATION_UPDATED"))
        assert trigger.calls == 0
        # And events that are not annotations are acknowledged and ignored
        ignored = client.post("/webhook", json={"action": "TASKS_CREATED", "tasks": []})
        assert ignored.json()["accepted"] is False
        # When a second annotation arrives, one run is queued
        opened = client.post("/webhook", json=annotation_event(2)).json()
        assert opened["triggering"] is True and trigger.calls == 1
        # And Label Studio's "start training" queues one at once
        assert client.post("/webhook", json={"action": "START_TRAINING"}).json()["triggering"]
        assert trigger.calls == 2
        health = client.get("/health").json()
        assert (health["pending_labels"], health["runs_queued"], health["runs_failed"]) == (0, 2, 0)
        assert client.post("/webhook", content=b"{not json").status_code == 400


def tiny_ner() -> LoadedModel:
    """A statistical ``ner`` trained for a few steps on four sentences (about a second)."""
    nlp = spacy.blank("en")
    nlp.add_pipe("ner").add_label("BRAND")  # type: ignore[attr-defined]
    data = [
        ("love my glossier balm", [(8, 16, "BRAND")]),
        ("glossier drop today", [(0, 8, "BRAND")]),
        ("new nars blush", [(4, 8, "BRAND")]),
        ("just a sunny day", []),
    ]
    examples = [Example.from_dict(nlp.make_doc(t), {"entities": e}) for t, e in data]
    random.seed(0)
    spacy.util.fix_random_seed(0)
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(40):
        nlp.update(examples, sgd=optimizer, drop=0.0)
    return LoadedModel(nlp, "tiny/1")


def test_a_statistical_model_scores_each_span_by_its_beam_probability() -> None:
    model = tiny_ner()
    texts = ["love my glossier balm 💄", "just a sunny day"]
    spans = scored_spans(model.nlp, texts, ["BRAND"])
    assert [[s.text for s in found] for found in spans] == [["glossier"], []]
    score = spans[0][0].score
    assert score is not None and 0.5 < score <= 1.0


def test_a_brand_list_match_scores_one_though_the_beam_gives_it_little() -> None:
    # Given the tiny model with a brand list after it: the model finds "nars", the list
    # adds "lumiora", which the beam proposes with a probability near 0 (a trial's
    # gazetteer match scored 0.0016)
    model = tiny_ner()
    add_gazetteer(model.nlp, ["lumiora"], [], after_model=True)
    texts = ["my nars and lumiora haul"]
    (beam,) = entity_probabilities(model.nlp, texts, ["BRAND"])
    assert beam[(12, 19, "BRAND")] < 0.1
    # When the spans are scored
    (spans,) = scored_spans(model.nlp, texts, ["BRAND"])
    # Then the list's match scores 1.0 and the model's own span its beam probability
    scores = {s.text: s.score for s in spans}
    assert scores["lumiora"] == 1.0
    assert scores["nars"] == round(beam[(3, 7, "BRAND")], 4) and scores["nars"] > 0.5


def test_a_failing_trigger_is_counted_and_the_backend_keeps_answering(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable() -> str:
        raise ConnectionError("Prefect API at 127.0.0.1:9 refused the connection")

    app = create_app(
        settings(ml_backend_train=True, min_new_labels=1),
        loader=registry.load,
        resolver=registry.resolve,
        trigger=unreachable,
    )
    with TestClient(app) as client, caplog.at_level(logging.ERROR):
        assert client.post("/webhook", json={"action": "START_TRAINING"}).status_code == 200
        assert client.post("/webhook", json=annotation_event(1)).status_code == 200
        health = client.get("/health").json()
    assert (health["runs_queued"], health["runs_failed"], health["pending_labels"]) == (0, 2, 1)
    assert caplog.text.count("refused the connection") == 2


def test_oversized_or_malformed_requests_are_refused_without_echoing_them(
    registry: Registry, trigger: Trigger
) -> None:
    # A trial's backend read a 50 MB body, predicted 3,000 tasks in 42 s (Label Studio waits
    # 100 s) and echoed the input in its 422s
    tasks = [{"id": i, "data": {"body": "glossier"}} for i in range(4)]
    payload = {"tasks": tasks, "project": "3.17", "label_config": CONFIG}
    with client_for(
        registry, trigger, ml_backend_max_tasks=3, ml_backend_max_body_bytes=2_000
    ) as client:
        many = client.post("/predict", json=payload)
        assert many.status_code == 413
        assert many.json()["detail"].startswith("4 tasks in one request; the limit is 3 (NER_ML")
        assert client.post("/predict", json={**payload, "tasks": tasks[:3]}).status_code == 200
        big = client.post("/predict", json={**payload, "tasks": [], "pad": "x" * 3_000})
        assert (
            big.status_code == 413
            and "over the limit of 2000 bytes (NER_ML_BACKEND_MAX_BODY" in big.text
        )
        secret = "s3cret-looking-input"
        bad = client.post("/predict", json={"tasks": secret, "label_config": CONFIG})
        assert bad.status_code == 422 and secret not in bad.text
        assert bad.json()["detail"][0]["loc"] == ["body", "tasks"]
        # a form body (curl -d) is told to send JSON, as serve tells it (trial L)
        form = client.post("/predict", data={"tasks": "x"})
        assert form.status_code == 415 and "application/json" in form.text
        # a query string is not refused here (a webhook URL may carry one)
        assert client.get("/health?x=1").status_code == 200


def test_the_command_line_refuses_a_port_in_use_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    import socket

    monkeypatch.setenv("NER_SERVE_MODEL", "gazetteer")
    monkeypatch.delenv("NER_ML_BACKEND_USER", raising=False)
    monkeypatch.delenv("NER_ML_BACKEND_PASSWORD", raising=False)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="apps.ml_backend"):
            assert main(["--host", "127.0.0.1", "--port", str(port)]) == 1
    assert f"cannot listen on 127.0.0.1:{port} (" in caplog.text
    assert "choose another --port" in caplog.text


def test_the_command_line_refuses_a_model_that_cannot_load_before_it_listens(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    import uvicorn

    # a trial's backend on a model whose files were gone printed uvicorn's traceback
    monkeypatch.setenv("NER_SERVE_MODEL", str(tmp_path / "no-model-here"))
    monkeypatch.delenv("NER_ML_BACKEND_USER", raising=False)
    monkeypatch.delenv("NER_ML_BACKEND_PASSWORD", raising=False)
    ran: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: ran.append(a))
    from tests.support.servers import free_port

    with caplog.at_level(logging.ERROR, logger="apps.ml_backend"):
        assert main(["--host", "127.0.0.1", "--port", str(free_port())]) == 1
    assert not ran
    (error,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "no-model-here" in error and "\n" not in error


def test_brandloop_ml_backend_starts_it_with_the_command_line_s_settings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from apps import cli

    # a trial found only `python -m apps.ml_backend`, without --set or --model (serve has both)
    missing = tmp_path / "nope" / "mlflow.db"
    monkeypatch.delenv("NER_ML_BACKEND_USER", raising=False)
    monkeypatch.delenv("NER_ML_BACKEND_PASSWORD", raising=False)
    args = ["ml-backend", "--port", "9", "--model", "3"]
    args += ["--set", f"mlflow_tracking_uri=sqlite:///{missing}"]
    with caplog.at_level(logging.INFO, logger="apps.ml_backend"):
        result = CliRunner().invoke(cli.app, args)
    # Then the settings reached it: the store given is refused (not created), exit 1
    assert result.exit_code == 1, result.output
    assert f"no MLflow store at {missing}" in caplog.text
    assert not missing.parent.exists()
