"""The REST API's logic: auth, limits, offsets, following the alias (in-process app)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import spacy
from fastapi.testclient import TestClient
from pydantic import SecretStr

from ner.errors import ConfigError, ModelError
from ner.models import LoadedModel, add_gazetteer, add_label_filter
from ner.serving import ModelHolder, create_app, registry_version
from ner.settings import Settings

TOKEN = "serve-token-for-tests"


def gazetteer(brands: list[str], version: str) -> LoadedModel:
    nlp = spacy.blank("en")
    add_gazetteer(nlp, brands, exact_case=[])
    add_label_filter(nlp, {}, ["BRAND"])
    return LoadedModel(nlp, version)


class Registry:
    """Stands in for the MLflow registry: which version is behind the alias, and its brands."""

    def __init__(self) -> None:
        self.champion: str | None = "brand-ner/1"
        self.brands = {"brand-ner/1": ["Glossier"], "brand-ner/2": ["Glossier", "Fenty Beauty"]}
        self.loads: list[str] = []
        self.broken: set[str] = set()

    def resolve(self, spec: str) -> str | None:
        if self.champion is None:
            raise ModelError(f"{spec!r}: alias not set")
        return self.champion

    def load(self, spec: str) -> LoadedModel:
        self.loads.append(spec)
        version = spec.removeprefix("models:/")
        if version in self.broken:
            raise ModelError(f"cannot load {spec}")
        return gazetteer(self.brands[version], "loaded-" + version)


def settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "serve_api_key": SecretStr(TOKEN),
        "serve_refresh_seconds": 0.0,
        "serve_max_posts": 3,
        "serve_max_chars": 50,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def client(registry: Registry) -> Iterator[TestClient]:
    app = create_app(settings(), loader=registry.load, resolver=registry.resolve)
    with TestClient(app) as test_client:
        yield test_client


AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_the_server_refuses_to_start_without_a_token() -> None:
    with pytest.raises(ConfigError, match="NER_SERVE_API_KEY"):
        create_app(Settings())


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_every_v1_call_needs_the_bearer_token(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in [("get", "/v1/model"), ("post", "/v1/predict"), ("post", "/v1/reload")]:
        response = client.request(method, path, headers=headers, json={"posts": [{"text": "x"}]})
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in response.text


def test_health_needs_no_token_and_names_the_version(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "model_version": "brand-ner/1"}


def test_predict_returns_code_point_spans_per_post(client: TestClient) -> None:
    # Given posts with an astral emoji, CRLF and double spaces before the brand, and an empty one
    texts = ["💄🫶 new  glossier\r\ndrop", "", "nothing here"]
    body = {
        "posts": [{"id": "a", "text": texts[0]}, {"id": "b", "text": texts[1]}, {"text": texts[2]}]
    }
    # When they are tagged
    response = client.post("/v1/predict", headers=AUTH, json=body)
    # Then each post has its spans, in order, and offsets index the text as Python sees it
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["model_version"] == "brand-ner/1"
    assert [p["id"] for p in data["predictions"]] == ["a", "b", None]
    spans = data["predictions"][0]["spans"]
    assert spans == [{"start": 8, "end": 16, "label": "BRAND", "text": "glossier"}]
    assert texts[0][spans[0]["start"] : spans[0]["end"]] == "glossier"
    assert data["predictions"][1]["spans"] == [] and data["predictions"][2]["spans"] == []


def test_limits_name_the_post_and_malformed_bodies_are_refused(client: TestClient) -> None:
    too_many = {"posts": [{"text": "a"}] * 4}
    response = client.post("/v1/predict", headers=AUTH, json=too_many)
    assert response.status_code == 413 and "limit is 3" in response.json()["detail"]
    too_long = {"posts": [{"id": "ok", "text": "a"}, {"id": "long-one", "text": "x" * 51}]}
    response = client.post("/v1/predict", headers=AUTH, json=too_long)
    assert response.status_code == 413 and "'long-one'" in response.json()["detail"]
    for bad in [
        {"posts": []},
        {"posts": [{"id": "n"}]},
        {"posts": [{"text": 3}]},
        {"texts": ["a"]},
    ]:
        assert client.post("/v1/predict", headers=AUTH, json=bad).status_code == 422, bad


def test_reload_follows_the_alias_and_keeps_serving_on_failure(
    client: TestClient, registry: Registry
) -> None:
    # Given the alias did not move, a reload changes nothing and loads nothing
    loads = len(registry.loads)
    assert client.post("/v1/reload", headers=AUTH).json() == {
        "changed": False,
        "model_version": "brand-ner/1",
    }
    assert len(registry.loads) == loads
    # When the champion moves to v2
    registry.champion = "brand-ner/2"
    response = client.post("/v1/reload", headers=AUTH)
    # Then v2 is loaded by its exact version and answers
    assert response.json() == {"changed": True, "model_version": "brand-ner/2"}
    assert registry.loads[-1] == "models:/brand-ner/2"
    tagged = client.post("/v1/predict", headers=AUTH, json={"posts": [{"text": "fenty beauty"}]})
    assert tagged.json()["predictions"][0]["spans"][0]["text"] == "fenty beauty"
    # When the alias is lost, the reload fails with 503 and v2 keeps serving
    registry.champion = None
    assert client.post("/v1/reload", headers=AUTH).status_code == 503
    info = client.get("/v1/model", headers=AUTH).json()
    assert info["model_version"] == "brand-ner/2" and "alias not set" in info["last_error"]
    assert client.get("/health").json()["model_version"] == "brand-ner/2"


def test_a_version_that_fails_to_load_is_not_swapped_in(registry: Registry) -> None:
    holder = ModelHolder("models:/brand-ner@champion", registry.load, registry.resolve)
    assert holder.refresh() is True and holder.served.model.version == "brand-ner/1"
    registry.champion, registry.broken = "brand-ner/2", {"brand-ner/2"}
    holder.refresh_quietly()
    assert holder.served.model.version == "brand-ner/1"
    assert holder.last_error is not None and "brand-ner/2" in holder.last_error


def test_a_model_that_cannot_load_at_start_stops_the_start(registry: Registry) -> None:
    registry.champion = None
    app = create_app(settings(), loader=registry.load, resolver=registry.resolve)
    with pytest.raises(ModelError, match="alias not set"), TestClient(app):
        pass


def test_specs_that_do_not_follow_an_alias_resolve_to_nothing() -> None:
    assert registry_version("gazetteer", None) is None
    assert registry_version("models:/brand-ner/3", None) is None
