"""The REST API's logic: auth, limits, offsets, following the alias (in-process app)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from apps.serving import POSTS_HINT, ModelHolder, RedactQuery, create_app
from ner.errors import ConfigError, ModelError, NotPromotedYetError
from ner.inference import predict_texts
from ner.models import LoadedModel, RegistryRef, registry_ref, registry_version
from ner.pyfunc import row_ids
from ner.settings import Settings
from tests.support.models import gazetteer
from tests.support.servers import free_port

TOKEN = "serve-token-for-tests"


class Registry:
    """Stands in for the MLflow registry: which version is behind the alias, and its brands."""

    def __init__(self) -> None:
        self.champion: str | None = "brand-ner/1"
        self.brands = {"brand-ner/1": ["Glossier"], "brand-ner/2": ["Glossier", "Fenty Beauty"]}
        self.loads: list[str] = []
        self.broken: set[str] = set()
        #: The run behind every version; a rebuilt store logs its versions by other runs.
        self.run = "run-a"

    def resolve(self, spec: str) -> RegistryRef | None:
        if self.champion is None:
            raise NotPromotedYetError(f"{spec!r}: alias not set")
        return RegistryRef(self.champion, self.run)

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
        "serve_max_total_chars": 120,
        "serve_max_body_bytes": 2_000,
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


def test_a_short_token_is_warned_about_not_shown(caplog: pytest.LogCaptureFixture) -> None:
    from apps.serving import token_digests

    # a trial served with NER_SERVE_API_KEY=a, and nothing said so
    keys = [SecretStr("a"), SecretStr(TOKEN)]
    with caplog.at_level(logging.WARNING, logger="apps.serving"):
        assert len(token_digests(Settings(serve_api_keys=keys))) == 2
    (said,) = [r.getMessage() for r in caplog.records]
    assert said.startswith("bearer token 1 of NER_SERVE_API_KEY / NER_SERVE_API_KEYS has 1 ")
    assert "secrets.token_hex(20)" in said and TOKEN not in said


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}]
)
def test_every_v1_call_needs_the_bearer_token(client: TestClient, headers: dict[str, str]) -> None:
    for method, path in [("get", "/v1/model"), ("post", "/v1/predict"), ("post", "/v1/reload")]:
        response = client.request(method, path, headers=headers, json={"posts": [{"text": "x"}]})
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in response.text


def test_the_api_schema_needs_the_token_and_there_are_no_docs_pages(client: TestClient) -> None:
    # a trial read /docs, /redoc and /openapi.json without a token, where the README says
    # every call but the health checks needs one
    assert client.get("/openapi.json").status_code == 401
    schema = client.get("/openapi.json", headers=AUTH)
    assert schema.status_code == 200 and "/v1/predict" in schema.json()["paths"]
    assert "/openapi.json" not in schema.json()["paths"]
    assert [client.get(path).status_code for path in ("/docs", "/redoc")] == [404, 404]


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
    assert [p["id"] for p in data["predictions"]] == ["a", "b", "2"]
    spans = data["predictions"][0]["spans"]
    assert spans == [{"start": 8, "end": 16, "label": "BRAND", "text": "glossier"}]
    assert texts[0][spans[0]["start"] : spans[0]["end"]] == "glossier"
    assert data["predictions"][1]["spans"] == [] and data["predictions"][2]["spans"] == []


@pytest.mark.parametrize("path", ["/v1/predict", "/invocations"])
def test_a_post_without_an_id_gets_its_position_as_its_id(client: TestClient, path: str) -> None:
    # Given posts where only the middle one has an id
    body = {"posts": [{"text": "glossier"}, {"id": "b", "text": "x"}, {"text": "y"}]}
    # When they are tagged
    response = client.post(path, headers=AUTH, json=body)
    # Then the others get their position in the request, as text, counted from 0 like the pyfunc
    assert response.status_code == 200, response.text
    ids = [p["id"] for p in response.json()["predictions"]]
    assert ids == ["0", "b", "2"]
    assert ids == row_ids([post.get("id") for post in body["posts"]])


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
    # and /health, still 200, says the server is degraded (a monitor on /health alone saw
    # "ok" while the server was behind its alias), without the registry's names
    health = client.get("/health")
    assert health.status_code == 200 and health.json() == {
        "status": "degraded",
        "model_version": "brand-ner/2",
        "detail": "the last check or load of the model failed: still serving this version",
    }
    # When the alias is back, the next reload clears it
    registry.champion = "brand-ner/2"
    assert client.post("/v1/reload", headers=AUTH).json()["changed"] is False
    assert client.get("/health").json() == {"status": "ok", "model_version": "brand-ner/2"}


def test_a_version_that_fails_to_load_is_not_swapped_in(registry: Registry) -> None:
    holder = ModelHolder("models:/brand-ner@champion", registry.load, registry.resolve)
    assert holder.refresh() is True and holder.served.model.version == "brand-ner/1"
    registry.champion, registry.broken = "brand-ner/2", {"brand-ner/2"}
    holder.refresh_quietly()
    assert holder.served.model.version == "brand-ner/1"
    assert holder.last_error is not None and "brand-ner/2" in holder.last_error


def test_a_reload_waits_for_a_running_check_at_most_its_limit(registry: Registry) -> None:
    import threading

    # Given a served model whose next alias check hangs (MLflow not answering)
    holder = ModelHolder("models:/brand-ner@champion", registry.load, registry.resolve)
    assert holder.refresh() is True
    entered, release = threading.Event(), threading.Event()

    def hanging(spec: str) -> RegistryRef | None:
        entered.set()
        release.wait(30)
        return registry.resolve(spec)

    holder._resolver = hanging
    background = threading.Thread(target=holder.refresh_quietly)
    background.start()
    assert entered.wait(10)
    # When a reload asks meanwhile, it gives up after its wait, naming why; the model stays
    with pytest.raises(ModelError, match="another check of 'models:/brand-ner@champion' is"):
        holder.refresh(wait_s=0.2)
    assert holder.served.model.version == "brand-ner/1"
    # And once the check ends, a reload goes through
    release.set()
    background.join(10)
    assert holder.refresh(wait_s=0.2) is False


def test_a_serving_process_bounds_mlflow_retries_unless_the_user_set_them() -> None:
    from apps.serving import MLFLOW_DB_LOGGER, SERVE_MLFLOW_ENV, serving_mlflow_defaults

    environ = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    serving_mlflow_defaults(environ)
    assert environ == {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": SERVE_MLFLOW_ENV["MLFLOW_HTTP_REQUEST_MAX_RETRIES"],
        "MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool",
    }
    # and MLflow's database errors, each a traceback, are left to the server's own warning
    assert logging.getLogger(MLFLOW_DB_LOGGER).level == logging.CRITICAL


def build_store(folder: str, artifacts: str, brands: list[str]) -> None:
    """A SQLite store in ``folder`` whose v1 of brand-ner-dev, a gazetteer of ``brands``
    logged by a run of its own, is ``@champion`` (what a demo leaves)."""
    from ner.registry import Decision, Registry
    from tests.support.models import register_gazetteer

    Path(folder).mkdir()
    registry = Registry(
        f"sqlite:///{folder}/mlflow.db",
        model_name="brand-ner-dev",
        artifact_location=Path(artifacts).as_uri(),
    )
    version = register_gazetteer(registry, Path(artifacts).parent, brands, 0.9, "0" * 16)
    registry.promote(version, gold_hash="0" * 16, decision=Decision(True, "t"), metrics={})


def test_a_sqlite_store_rebuilt_under_the_server_is_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil
    import subprocess
    import sys

    from apps.serving import model_holder, serving_mlflow_defaults

    environ: dict[str, str] = {}
    serving_mlflow_defaults(environ)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    store = tmp_path / "store"
    # Given a server on a SQLite store's v1 (as a demo leaves it)
    build_store(str(store), str(tmp_path / "artifacts-1"), ["Glossier"])
    cfg = settings(
        mlflow_tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
        serve_model="models:/brand-ner-dev@champion",
    )
    holder = model_holder(cfg)
    assert holder.refresh() is True
    assert predict_texts(holder.served.model.nlp, ["fenty beauty"]) == [()]
    # When another process deletes the store and builds it again, its v1 from another run
    # (a second demo)
    shutil.rmtree(store)
    again = f"build_store({str(store)!r}, {str(tmp_path / 'artifacts-2')!r}, ['Fenty Beauty'])"
    code = f"from tests.unit.test_serving import build_store; {again}"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env, timeout=120)
    # Then the next check loads the new v1 (trial AL: a pooled connection kept reading the
    # deleted file, and the old model answered with "ok")
    assert holder.refresh() is True and holder.served.model.version == "brand-ner-dev/1"
    spans = predict_texts(holder.served.model.nlp, ["fenty beauty"])
    assert [s.text for s in spans[0]] == ["fenty beauty"]


def test_a_repeated_refresh_failure_is_warned_once(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a server waiting for its first champion, checking three times
    registry.champion = None
    holder = ModelHolder("models:/brand-ner@champion", registry.load, registry.resolve)
    with caplog.at_level(logging.DEBUG, logger="apps.serving"):
        for _ in range(3):
            holder.refresh_quietly()
        # When the failure changes (the alias now names a version that cannot load)
        registry.champion, registry.broken = "brand-ner/2", {"brand-ner/2"}
        holder.refresh_quietly()
    # Then the same failure is a warning once (later repeats at DEBUG), a new one warns again
    levels = [(r.levelno, "alias not set" in r.getMessage()) for r in caplog.records]
    assert levels == [
        (logging.WARNING, True),
        (logging.DEBUG, True),
        (logging.DEBUG, True),
        (logging.WARNING, False),
    ]


def test_a_model_that_cannot_load_at_start_stops_the_start(registry: Registry) -> None:
    registry.champion = None
    app = create_app(settings(), loader=registry.load, resolver=registry.resolve)
    with pytest.raises(ModelError, match="alias not set"), TestClient(app):
        pass


def test_a_followed_alias_not_set_yet_starts_the_server_at_503_until_promoted(
    registry: Registry,
) -> None:
    # Given no version behind the alias yet, and a server that follows it
    registry.champion = None
    app = create_app(
        settings(serve_refresh_seconds=0.05), loader=registry.load, resolver=registry.resolve
    )
    with TestClient(app) as client:
        # Then it starts, and every call answers 503 saying why (health without the details)
        health = client.get("/health")
        assert health.status_code == 503
        waiting = "no model loaded yet: waiting for the first promotion to @champion"
        assert health.json()["detail"] == waiting
        refused = client.post("/v1/predict", headers=AUTH, json={"posts": [{"text": "x"}]})
        assert refused.status_code == 503
        assert refused.json()["detail"].startswith(waiting + " (")
        assert "alias not set" in refused.json()["detail"]
        described = client.get("/v1/model", headers=AUTH)
        assert described.status_code == 503 and described.json()["detail"].startswith(waiting)
        assert registry.loads == []
        # When a version is promoted, the server loads it by itself
        registry.champion = "brand-ner/1"
        deadline = time.monotonic() + 10
        while client.get("/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/health").json() == {"status": "ok", "model_version": "brand-ner/1"}
        tagged = client.post("/v1/predict", headers=AUTH, json={"posts": [{"text": "glossier"}]})
        assert tagged.json()["predictions"][0]["spans"][0]["text"] == "glossier"


def test_a_model_that_fails_to_load_stops_the_start_even_when_followed(
    registry: Registry,
) -> None:
    registry.broken = {"brand-ner/1"}
    app = create_app(
        settings(serve_refresh_seconds=0.05), loader=registry.load, resolver=registry.resolve
    )
    with pytest.raises(ModelError, match="cannot load"), TestClient(app):
        pass


def test_specs_that_do_not_follow_an_alias_resolve_to_nothing() -> None:
    assert registry_version("gazetteer", None) is None
    assert registry_version("models:/brand-ner/3", None) is None
    assert registry_ref("models:/brand-ner/3", None) is None


def test_a_version_of_the_same_number_from_another_run_is_loaded(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a server on v1 of a store (trial AJ: the demo rebuilt its store under a running
    # serve, and the old model kept answering as the new store's v1)
    holder = ModelHolder("models:/brand-ner@champion", registry.load, registry.resolve)
    assert holder.refresh() is True
    loads = len(registry.loads)
    assert holder.refresh() is False and len(registry.loads) == loads
    # When the store is rebuilt: v1 again, logged by another run
    registry.run = "run-b"
    registry.brands["brand-ner/1"] = ["Fenty Beauty"]
    with caplog.at_level("INFO", logger="apps.serving"):
        changed = holder.refresh()
    # Then the new v1 is loaded, and the log says why a v1 replaced a v1
    assert changed is True and len(registry.loads) == loads + 1
    spans = predict_texts(holder.served.model.nlp, ["fenty beauty"])
    assert [s.text for s in spans[0]] == ["fenty beauty"]
    assert "serving brand-ner/1 (logged by run run-b; the one served so far by run run-a)" in (
        caplog.text
    )


# --- SageMaker contract, several tokens --------------------------------------------------
OTHER_TOKENS = ["client-a-token", "client-b-token"]


def test_ping_and_invocations_answer_like_health_and_predict(client: TestClient) -> None:
    # Given the SageMaker container contract beside /v1
    ping = client.get("/ping")
    # Then /ping needs no token and names the served version, like /health
    assert ping.status_code == 200 and ping.json() == client.get("/health").json()
    # And /invocations takes the same JSON and answers the same spans as /v1/predict
    body = {"posts": [{"id": "a", "text": "💄 glossier haul"}, {"text": "nothing"}]}
    invoked = client.post("/invocations", headers=AUTH, json=body)
    assert invoked.status_code == 200, invoked.text
    assert invoked.headers["content-type"] == "application/json"
    assert invoked.json() == client.post("/v1/predict", headers=AUTH, json=body).json()
    assert invoked.json()["predictions"][0]["spans"] == [
        {"start": 2, "end": 10, "label": "BRAND", "text": "glossier"}
    ]
    # And without a token it is refused like every other model call
    assert client.post("/invocations", json=body).status_code == 401


def test_every_configured_token_is_accepted_and_no_other(registry: Registry) -> None:
    # Given one legacy token and two per-client tokens
    keys = tuple(SecretStr(t) for t in OTHER_TOKENS)
    app = create_app(settings(serve_api_keys=keys), loader=registry.load, resolver=registry.resolve)
    body = {"posts": [{"text": "glossier"}]}
    with TestClient(app) as client:
        # Then each of them opens /v1 and /invocations
        for token in [TOKEN, *OTHER_TOKENS]:
            for path in ("/v1/predict", "/invocations"):
                headers = {"Authorization": f"Bearer {token}"}
                assert client.post(path, headers=headers, json=body).status_code == 200, token
        # And a prefix, a longer token or a token of another case does not
        for wrong in [OTHER_TOKENS[0][:-1], OTHER_TOKENS[0] + "x", TOKEN.upper()]:
            response = client.post(
                "/invocations", headers={"Authorization": f"Bearer {wrong}"}, json=body
            )
            assert response.status_code == 401, wrong


def test_the_token_list_alone_is_enough_and_an_empty_one_is_not(registry: Registry) -> None:
    keys = (SecretStr(OTHER_TOKENS[0]),)
    app = create_app(
        settings(serve_api_key=None, serve_api_keys=keys),
        loader=registry.load,
        resolver=registry.resolve,
    )
    with TestClient(app) as client:
        headers = {"Authorization": f"Bearer {OTHER_TOKENS[0]}"}
        assert client.get("/v1/model", headers=headers).status_code == 200
        assert client.get("/v1/model", headers=AUTH).status_code == 401
    with pytest.raises(ConfigError, match="NER_SERVE_API_KEYS"):
        create_app(settings(serve_api_key=SecretStr(""), serve_api_keys=(SecretStr(""),)))


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (" ", "is blank"),
        (" tok-with-space", "has spaces around it"),
        ("change-me", "placeholder"),
        ("Change-Me", "placeholder"),
    ],
)
def test_a_token_no_client_can_send_or_anyone_can_guess_stops_the_start(
    token: str, why: str
) -> None:
    # Given a token a trial started the server with (a blank one, the example's placeholder)
    for bad in (
        settings(serve_api_key=SecretStr(token)),
        settings(serve_api_keys=(SecretStr(token),)),
    ):
        # Then the server does not start, and says which token and why, never the token
        with pytest.raises(ConfigError, match=why) as refused:
            create_app(bad)
        assert not token.strip() or token.strip() not in str(refused.value)


def test_python_m_apps_serving_has_brandloop_serves_options_and_checks(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import apps.serving as serving

    def run(*argv: str) -> int:
        try:
            return serving.main(list(argv))
        except SystemExit as stopped:  # argparse: --help, a usage error
            return int(stopped.code or 0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serving, "run_server", lambda *a: pytest.fail("must not serve"))
    # Given no token in the environment: one line naming the setting (it was a traceback)
    monkeypatch.delenv("NER_SERVE_API_KEY", raising=False)
    monkeypatch.delenv("NER_SERVE_API_KEYS", raising=False)
    assert run("--port", "18803") == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: NER_SERVE_API_KEY")
    # and --help is usage, an unknown option a usage error: neither starts a server on 8000
    usage = run("--help"), capsys.readouterr().out
    assert usage[0] == 0 and "--port" in usage[1] and "NER_SERVE_API_KEY" in usage[1]
    assert run("--prot", "1") == 2
    # Given a token and a SQLite store that does not exist: refused, nothing created (a
    # trial's server made an empty store and answered 503)
    monkeypatch.setenv("NER_SERVE_API_KEY", TOKEN)
    monkeypatch.setenv("NER_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'nope' / 'x.db'}")
    assert run("--port", "18803") == 1
    refusal = capsys.readouterr().err
    # in this command's terms: the variables, not brandloop's --set flags
    assert "no MLflow store at" in refusal and "NER_MLFLOW_TRACKING_URI=sqlite:///" in refusal
    assert "--set" not in refusal
    assert not (tmp_path / "nope").exists()
    # and with a model that needs no store, the options reach the server's settings
    served: list[Settings] = []
    monkeypatch.setattr(serving, "run_server", lambda cfg, app: served.append(cfg))
    port = str(free_port())
    assert run("--model", "gazetteer", "--host", "127.0.0.1", "--port", port) == 0
    assert (served[0].serve_host, served[0].serve_port) == ("127.0.0.1", int(port))


def test_an_unread_token_block_stops_the_start_even_with_other_tokens() -> None:
    # Given a token list, and NER_SERVE_API_KEY_BLOCK naming a block that could not be read
    reason = "NER_SERVE_API_KEY_BLOCK names the Prefect Secret block 'tok', which cannot be read"
    unread = settings(
        serve_api_key=None, serve_api_keys=(SecretStr(OTHER_TOKENS[0]),)
    ).with_unread_blocks({"serve_api_key": reason})
    # Then the server does not start without the token the operator named
    with pytest.raises(ConfigError, match="'tok', which cannot be read"):
        create_app(unread)


def test_an_empty_token_block_is_named_as_empty() -> None:
    # Given NER_SERVE_API_KEY_BLOCK naming a block that was read and held no value (a trial
    # was told NER_SERVE_API_KEY "is not set", the block not named)
    empty = settings(serve_api_key=SecretStr(""), serve_api_key_block="serve-key-empty")
    # Then the start is refused naming the block as empty
    with pytest.raises(ConfigError) as refused:
        create_app(empty)
    assert str(refused.value).startswith(
        "the Prefect Secret block 'serve-key-empty' (NER_SERVE_API_KEY_BLOCK) gave no value"
    )
    # And a block holding only spaces is named with the refusal of a blank token
    blank = settings(serve_api_key=SecretStr("   "), serve_api_key_block="serve-key-blank")
    with pytest.raises(ConfigError) as refused:
        create_app(blank)
    assert str(refused.value).startswith(
        "bearer token 1 of NER_SERVE_API_KEY (or its Secret block 'serve-key-blank') / "
        "NER_SERVE_API_KEYS is blank"
    )


# --- bad input: lone surrogates, sizes, query strings -----------------------------------
LONE = "\\ud83d"  # a JSON escape of a high surrogate with no low one after it


@pytest.mark.parametrize("path", ["/v1/predict", "/invocations"])
@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"posts": [{"id": "ok", "text": "hi"}, {"id": "p2", "text": "x LONE y"}]}', "text"),
        ('{"posts": [{"id": "ok", "text": "hi"}, {"id": "pLONE", "text": "glossier"}]}', "id"),
    ],
    ids=["in-text", "in-id"],
)
def test_a_lone_surrogate_is_a_422_naming_the_post(
    client: TestClient, path: str, raw: str, field: str
) -> None:
    # Given a post whose text or id holds an escaped lone surrogate (valid JSON, invalid Unicode)
    body = raw.replace("LONE", LONE).encode("ascii")
    headers = {**AUTH, "Content-Type": "application/json"}
    # When it is sent
    response = client.post(path, headers=headers, content=body)
    # Then it is refused with 422 naming the post by its index and id, and the field
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["post"] == 1
    assert problem["loc"] == ["body", "posts", 1]
    assert f"{field} holds a lone surrogate" in problem["msg"]
    assert ("'p2'" if field == "text" else "'p\\ud83d'") in problem["msg"]
    # And the server still answers good posts
    good = client.post(path, headers=AUTH, json={"posts": [{"text": "glossier"}]})
    assert good.status_code == 200


@pytest.mark.parametrize("path", ["/v1/predict", "/invocations"])
def test_posts_that_would_answer_under_one_id_are_a_422(client: TestClient, path: str) -> None:
    # Given a post with id "1" and, second, a post without an id (it answers as its
    # position, 1): a trial got two answers both under "1"
    posts = [{"id": "1", "text": "new Dior"}, {"text": "Sephora haul"}]
    response = client.post(path, headers=AUTH, json={"posts": posts})
    # Then it is refused, naming both posts and how to fix it
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["msg"].endswith(
        "posts 0 and 1 would both answer as id '1' (a post without an id answers as its "
        "position, from 0): give every post its own id"
    )
    # And so are two posts sent with one id, while posts without ids are answered in order
    twice = [{"id": "a", "text": "x"}, {"id": "a", "text": "y"}]
    assert client.post(path, headers=AUTH, json={"posts": twice}).status_code == 422
    plain = client.post(path, headers=AUTH, json={"posts": [{"text": "x"}, {"text": "y"}]})
    assert [p["id"] for p in plain.json()["predictions"]] == ["0", "1"]


@pytest.mark.parametrize("path", ["/v1/predict", "/invocations"])
def test_an_integer_id_answers_as_its_text_as_a_jsonl_source_reads_it(
    client: TestClient, path: str
) -> None:
    # a trial's posts file read {"id": 7} as post "7", and this API refused it (422)
    posts = [{"id": 7, "text": "new Dior"}, {"id": "8", "text": "Sephora haul"}]
    response = client.post(path, headers=AUTH, json={"posts": posts})
    assert response.status_code == 200, response.text
    assert [p["id"] for p in response.json()["predictions"]] == ["7", "8"]
    # and 7 beside "7" are one id twice; a boolean or a float is still refused
    twice = [{"id": 7, "text": "x"}, {"id": "7", "text": "y"}]
    assert client.post(path, headers=AUTH, json={"posts": twice}).status_code == 422
    for bad in (True, 7.5):
        sent = {"posts": [{"id": bad, "text": "x"}]}
        refused = client.post(path, headers=AUTH, json=sent)
        assert refused.status_code == 422, bad
        assert "id must be a string or an integer" in refused.text, refused.text


@pytest.mark.parametrize("path", ["/v1/predict", "/invocations"])
def test_mlflows_scoring_format_is_a_422_saying_what_this_api_takes(
    client: TestClient, path: str
) -> None:
    # a trial sent MLflow's dataframe_records to /invocations and read only "Field required"
    body = {"dataframe_records": [{"id": "p1", "text": "new Dior"}]}
    response = client.post(path, headers=AUTH, json=body)
    assert response.status_code == 422, response.text
    problem, beside = response.json()["detail"]
    assert problem["loc"] == ["body", "posts"] and problem["type"] == "missing"
    assert problem["hint"].startswith('this API takes {"posts": [{"id": "p1", "text": "..."}]}')
    assert "`mlflow models serve`" in problem["hint"] and "new Dior" not in response.text
    assert beside["loc"] == ["body", "dataframe_records"] and beside["hint"] == problem["hint"]
    # a field beside posts is refused, not ignored (a trial's rows there went unanswered)
    both = client.post(path, headers=AUTH, json={"posts": [{"text": "x"}], **body})
    assert both.status_code == 422, both.text
    assert [(p["loc"], p["type"]) for p in both.json()["detail"]] == [
        (["body", "dataframe_records"], "extra_forbidden")
    ]
    # (so does a body that is a bare list of rows; a problem inside a post gets no hint)
    rows = client.post(path, headers=AUTH, json=[{"id": "p1", "text": "new Dior"}])
    assert rows.status_code == 422 and "hint" in rows.json()["detail"][0], rows.text
    inside = client.post(path, headers=AUTH, json={"posts": [{"id": "a"}]})
    assert inside.status_code == 422 and "hint" not in inside.json()["detail"][0]


@pytest.mark.parametrize("path", ["/v1/predict", "/invocations"])
def test_an_empty_id_is_a_422_naming_the_post(client: TestClient, path: str) -> None:
    # Given a post whose id is empty (a trial's answer came back under "")
    posts = [{"id": "a", "text": "new Dior"}, {"id": "", "text": "Sephora haul"}]
    response = client.post(path, headers=AUTH, json={"posts": posts})
    # Then it is refused, naming the post and the two ways out
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["post"] == 1
    assert "id is empty: leave the id out to answer as the post's position" in problem["msg"]
    # and so is one of spaces alone (a trial's was answered under "  ")
    posts[1]["id"] = "  "
    [problem] = client.post(path, headers=AUTH, json={"posts": posts}).json()["detail"]
    assert problem["post"] == 1 and "id is blank: leave the id out" in problem["msg"]


def test_surrogates_encoded_as_raw_bytes_are_refused_too(client: TestClient) -> None:
    # Given the UTF-8-like bytes of a lone surrogate (Python's json reads them as one)
    body = b'{"posts": [{"id": "a", "text": "x \xed\xa0\xbd y"}]}'
    response = client.post(
        "/v1/predict", headers={**AUTH, "Content-Type": "application/json"}, content=body
    )
    assert response.status_code == 422, response.text
    [problem] = response.json()["detail"]
    assert problem["post"] == 0 and "text holds a lone surrogate at character 2" in problem["msg"]


@pytest.mark.parametrize(
    ("body", "code", "said"),
    [
        (b"[" * 1_900 + b"]" * 1_900, 400, "the body's JSON is nested too deeply to read"),
        (b'{"posts": [{"text": "caf\xe9"}]}', 400, "the body is not UTF-8: byte 24 (0xe9)"),
        (b"{not json", 422, "JSON decode error"),
        (b'{"posts": [{"text": "a \xf0\x9f', 400, "the body ends inside a character (byte 23"),
        (b'{"posts": [{"id": ' + b"7" * 5_000 + b"}]}", 400, "read as JSON: Exceeds the limit"),
    ],
    ids=["nested-deep", "not-utf8", "not-json", "cut-in-a-character", "huge-integer"],
)
def test_unparsable_bodies_are_a_client_error_not_a_500(
    registry: Registry, body: bytes, code: int, said: str
) -> None:
    # Given a body limit that lets JSON nested 1,900 levels deep reach the parser
    app = create_app(
        settings(serve_max_body_bytes=100_000), loader=registry.load, resolver=registry.resolve
    )
    headers = {**AUTH, "Content-Type": "application/json"}
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post("/invocations", headers=headers, content=body)
        # Then it is refused as the client's error, in JSON, saying why and what to send (a
        # trial got FastAPI's "There was an error parsing the body")
        assert response.status_code == code, response.text
        assert response.headers["content-type"] == "application/json"
        answer = response.json()
        problem = answer["detail"][0] if code == 422 else answer
        assert said in str(problem.get("msg", problem.get("detail")))
        assert "set_int_max_str_digits" not in response.text  # Python's advice to the server
        assert problem["hint"] == POSTS_HINT
        # And the server answers the next request as usual
        good = client.post("/invocations", headers=AUTH, json={"posts": [{"text": "a"}]})
        assert good.status_code == 200


CURL_FORM = "application/x-www-form-urlencoded"  # what `curl -d` sends


@pytest.mark.parametrize("path", ["/v1/predict", "/invocations"])
@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        (CURL_FORM, f"Content-Type '{CURL_FORM}'"),
        ("text/plain", "Content-Type 'text/plain'"),
        ("multipart/form-data; boundary=x", "Content-Type 'multipart/form-data'"),
        (None, "no Content-Type"),
    ],
)
def test_a_body_not_declared_as_json_is_a_415_saying_so(
    client: TestClient, path: str, content_type: str | None, named: str
) -> None:
    # Given a valid JSON body sent with another Content-Type or none (e.g. `curl -d` without -H)
    body = json.dumps({"posts": [{"id": "a", "text": "glossier"}]}).encode()
    declared = {} if content_type is None else {"Content-Type": content_type}
    response = client.post(path, headers={**AUTH, **declared}, content=body)
    # Then it is refused as an unsupported media type, saying what to send, in the usual shape
    assert response.status_code == 415, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "detail": f"the body must be JSON sent with Content-Type: application/json (got {named})"
    }
    # And without a token it is still a 401 first
    assert client.post(path, headers=declared, content=body).status_code == 401


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/json; charset=utf-8"},
        {"Content-Type": "Application/JSON"},
        {"Content-Type": "application/vnd.brandloop+json"},
    ],
    ids=["charset", "case", "plus-json"],
)
def test_json_bodies_are_accepted_under_any_json_content_type(
    client: TestClient, headers: dict[str, str]
) -> None:
    body = json.dumps({"posts": [{"id": "a", "text": "glossier"}]}).encode()
    response = client.post("/v1/predict", headers={**AUTH, **headers}, content=body)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["spans"][0]["text"] == "glossier"


def test_total_characters_per_request_are_bounded_naming_the_post(client: TestClient) -> None:
    # Given three posts of 45 characters each (under 50 each, 135 in all, limit 120)
    posts = [{"id": f"p{n}", "text": "y" * 45} for n in range(3)]
    response = client.post("/invocations", headers=AUTH, json={"posts": posts})
    # Then the post that crosses the limit is named
    assert response.status_code == 413
    detail = response.json()["detail"]
    assert "'p2'" in detail and "135 characters" in detail and "120 per request" in detail
    assert client.post("/invocations", headers=AUTH, json={"posts": posts[:2]}).status_code == 200


def test_a_body_over_the_limit_is_refused_before_parsing(client: TestClient) -> None:
    big = json.dumps({"posts": [{"text": "a"}], "pad": "z" * 3_000}).encode()
    headers = {**AUTH, "Content-Type": "application/json"}
    # Given a declared Content-Length over 2,000 bytes
    response = client.post("/v1/predict", headers=headers, content=big)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"] and "2000 bytes" in response.json()["detail"]

    # And the same bytes streamed in chunks, with no length declared
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(big), 500):
            yield big[start : start + 500]

    response = client.post("/invocations", headers=headers, content=chunks())
    assert response.status_code == 413, response.text
    # And a small streamed body still goes through
    small = json.dumps({"posts": [{"text": "glossier"}]}).encode()
    response = client.post("/invocations", headers=headers, content=iter([small[:10], small[10:]]))
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["spans"][0]["text"] == "glossier"


@pytest.mark.parametrize("path", ["/v1/model", "/health", "/invocations"])
def test_a_token_in_the_query_string_is_refused(client: TestClient, path: str) -> None:
    response = client.request(
        "GET" if path != "/invocations" else "POST",
        f"{path}?api_key={TOKEN}",
        json={"posts": [{"text": "x"}]},
    )
    assert response.status_code == 400
    assert "Authorization: Bearer" in response.json()["detail"]
    assert TOKEN not in response.text


def test_the_access_log_filter_drops_the_query_string() -> None:
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/v1/model?api_key={TOKEN}", "1.1", 400),
        None,
    )
    assert RedactQuery().filter(record) is True
    assert record.getMessage() == '127.0.0.1:5000 - "GET /v1/model?<redacted> HTTP/1.1" 400'
    plain = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, "%s %s %s", ("a", "GET", "/health"), None
    )
    RedactQuery().filter(plain)
    assert plain.getMessage() == "a GET /health"


@pytest.mark.parametrize("port", ["0", "99999", "http"])
def test_a_port_out_of_range_is_a_usage_error_as_the_cli_gives(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from apps import ml_backend, serving

    # a trial's python -m apps.serving --port 99999 named the setting serve_port, exit 1
    for module in (serving, ml_backend):
        with pytest.raises(SystemExit) as stopped:
            module.main(["--port", port])
        assert stopped.value.code == 2
        assert "argument --port:" in capsys.readouterr().err


def test_a_serving_process_takes_only_its_environments_mlflow(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from apps.serving import SERVING_VARIABLES
    from flows.context import deployment_settings

    # Given the dev deployments' storage and MLflow in the shell, as for the flows
    monkeypatch.setenv("BRANDLOOP_DEV_STORAGE_URI", "/data/dev-storage")
    monkeypatch.setenv("BRANDLOOP_DEV_MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    said: list[str] = []
    # When a serving process builds its settings
    settings = deployment_settings({}, said.append, SERVING_VARIABLES)
    # Then it takes and names MLflow only: it never opens storage (a trial's serve named it)
    assert settings.mlflow_tracking_uri == "http://127.0.0.1:5999"
    assert settings.storage_uri != "/data/dev-storage"
    assert said == ["dev's MLflow: http://127.0.0.1:5999 (BRANDLOOP_DEV_MLFLOW_TRACKING_URI)"]
