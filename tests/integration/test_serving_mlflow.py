"""The REST API as users run it: ``python -m apps.serving`` over a real MLflow server.

The served model follows ``@champion`` on the tracking server: a promotion and a rollback
made through :class:`ner.registry.Registry` reach the running server without a restart, and
a server started on a new stack (nothing registered, then nothing promoted) answers 503
until the first promotion, then serves it. A version served by number names its run too.
Bad input over real HTTP/1.1 (uvicorn): a lone surrogate is a 422 on a connection that stays
open, bodies over the limit are refused, and a token put in a URL never reaches the log.
"""

from __future__ import annotations

import http.client
import json
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from ner.registry import CHAMPION, Registry, decide
from tests.support.models import register_gazetteer
from tests.support.servers import (
    LOCALHOST,
    ManagedServer,
    MlflowService,
    free_port,
    mlflow_service,
)

ROOT = Path(__file__).resolve().parents[2]
GOLD = "c" * 64
MAX_BODY = 20_000


def _register(registry: Registry, tmp_path: Path, brands: list[str], f1: float) -> str:
    return register_gazetteer(registry, tmp_path, brands, f1, GOLD)


def _wait_for_version(url: str, wanted: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        seen = requests.get(f"{url}/health", timeout=5).json()
        if seen.get("model_version") == wanted:
            return seen
        time.sleep(0.25)
    raise AssertionError(f"server still serves {seen} after {timeout} s, wanted {wanted}")


@pytest.fixture
def registry(mlflow_server: MlflowService) -> Registry:
    name = f"brand-ner-serving-{secrets.token_hex(4)}"
    return Registry(mlflow_server.url, model_name=name, experiment_name=name)


@pytest.fixture
def token() -> str:
    return f"tok-{secrets.token_hex(12)}"


def _server(
    registry: Registry,
    mlflow_server: MlflowService,
    token: str,
    tmp_path: Path,
    ready: str | None = "/health",
    *,
    as_environment_model: bool = False,
) -> ManagedServer:
    """``python -m apps.serving`` of the registry's ``@champion``, ready once ``ready`` (a
    path) answers 2xx (None: once launched). ``as_environment_model``: the model is named
    as the environment's own (``NER_REGISTERED_MODEL_NAME``, the served spec derived from
    it, as compose does)."""
    port = free_port()
    name = registry.model_name
    model_env = (
        {"NER_REGISTERED_MODEL_NAME": name}
        if as_environment_model
        else {"NER_SERVE_MODEL": f"models:/{name}@{CHAMPION}"}
    )
    return ManagedServer(
        "serving",
        [sys.executable, "-m", "apps.serving"],
        workdir=tmp_path,
        cwd=ROOT,
        port=port,
        health_url=None if ready is None else f"http://{LOCALHOST}:{port}{ready}",
        env={
            "NER_MLFLOW_TRACKING_URI": mlflow_server.url,
            **model_env,
            "NER_SERVE_API_KEY": token,
            "NER_SERVE_PORT": str(port),
            "NER_SERVE_REFRESH_SECONDS": "0.5",
            "NER_SERVE_MAX_BODY_BYTES": str(MAX_BODY),
        },
        unset_env=("MLFLOW_TRACKING_URI",),
        startup_timeout=120.0,
    )


@pytest.fixture
def served(
    registry: Registry, mlflow_server: MlflowService, token: str, tmp_path: Path
) -> Iterator[ManagedServer]:
    # Given a champion on the tracking server
    v1 = _register(registry, tmp_path, ["Glossier"], 0.85)
    registry.promote(v1, gold_hash=GOLD, decision=decide(0.85, None, 0.8), metrics={"f1": 0.85})
    server = _server(registry, mlflow_server, token, tmp_path)
    with server:
        yield server
    assert server.group_pids() == []


def test_a_server_started_on_a_new_stack_serves_the_first_champion_once_promoted(
    registry: Registry, mlflow_server: MlflowService, token: str, tmp_path: Path
) -> None:
    # Given a new stack: the environment's model is not registered yet
    server = _server(registry, mlflow_server, token, tmp_path, None, as_environment_model=True)
    with server:
        url = f"http://{LOCALHOST}:{server.port}"
        _wait_for_answer(f"{url}/health")  # ready once its app answers, 503 or not
        auth = {"Authorization": f"Bearer {token}"}
        body = {"posts": [{"id": "p1", "text": "new glossier drop"}]}
        # Then it runs, answers 503 and says why
        health = requests.get(f"{url}/health", timeout=5)
        assert health.status_code == 503
        assert health.json()["detail"].endswith("waiting for the first promotion to @champion")
        waiting = requests.post(f"{url}/v1/predict", json=body, headers=auth, timeout=5)
        assert waiting.status_code == 503, waiting.text
        assert "has no registered version" in waiting.json()["detail"]
        # When a version is registered, not promoted: still 503, saying so
        v1 = _register(registry, tmp_path, ["Glossier"], 0.85)
        _wait_for_detail(url, auth, "was promoted to @champion")
        # When it is promoted, the server loads it by itself and tags posts with it
        registry.promote(v1, gold_hash=GOLD, decision=decide(0.85, None, 0.8), metrics={"f1": 0.85})
        _wait_for_version(url, f"{registry.model_name}/{v1}")
        answer = requests.post(f"{url}/v1/predict", json=body, headers=auth, timeout=30)
        assert [s["text"] for s in answer.json()["predictions"][0]["spans"]] == ["glossier"]
    assert server.group_pids() == []
    log = server.log_path.read_text(errors="replace")
    assert log.count("/health answers 503 until a version is promoted") == 1  # at start-up
    assert f"serving {registry.model_name}/{v1}" in log  # the first load is said


def _wait_for_answer(url: str, timeout: float = 120.0) -> None:
    """Until ``url`` answers at all (a server that starts up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=5)
            return
        except requests.ConnectionError:
            time.sleep(0.25)
    raise AssertionError(f"nothing answered {url} within {timeout} s")


def test_a_reload_with_mlflow_down_answers_503_and_the_server_still_stops(
    token: str, tmp_path: Path
) -> None:
    # Given a champion served from an MLflow server of its own, checked every 0.5 s
    own = mlflow_service(tmp_path / "mlflow")
    with own.start():
        name = f"brand-ner-down-{secrets.token_hex(4)}"
        registry = Registry(own.url, model_name=name, experiment_name=name)
        v1 = _register(registry, tmp_path, ["Glossier"], 0.85)
        registry.promote(v1, gold_hash=GOLD, decision=decide(0.85, None, 0.8), metrics={"f1": 0.85})
        server = _server(registry, own, token, tmp_path)
        with server:
            url, auth = f"http://{LOCALHOST}:{server.port}", {"Authorization": f"Bearer {token}"}
            # When MLflow goes down, and two reloads are asked at once (a trial's first reload
            # took 4 minutes, the second never answered, and SIGTERM did not stop the server)
            own.server.kill()
            with ThreadPoolExecutor(2) as pool:
                asked = [
                    pool.submit(requests.post, f"{url}/v1/reload", headers=auth, timeout=150)
                    for _ in range(2)
                ]
                answers = [future.result() for future in asked]
            # Then both answer 503 with the reason, and the served model keeps answering
            assert [a.status_code for a in answers] == [503, 503], [a.text for a in answers]
            details = [str(a.json()["detail"]) for a in answers]
            assert all(details) and not any("Max retries" in d for d in details), details
            assert any(f"MLflow at {own.url} did not answer" in d for d in details), details
            body = {"posts": [{"id": "p1", "text": "new glossier drop"}]}
            answer = requests.post(f"{url}/v1/predict", json=body, headers=auth, timeout=30)
            assert answer.json()["model_version"] == f"{name}/{v1}"
            # And SIGTERM stops it (uvicorn re-raises the signal once stopped; a server that
            # would not stop gets SIGKILL, -9)
            assert server.stop(timeout=60) == -signal.SIGTERM
    assert server.group_pids() == []


def _wait_for_detail(url: str, auth: dict[str, str], wanted: str, timeout: float = 30.0) -> None:
    """Until ``/v1/model`` answers 503 with ``wanted`` in its detail."""
    deadline = time.monotonic() + timeout
    seen: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = requests.get(f"{url}/v1/model", headers=auth, timeout=5)
        seen = answer.json()
        if answer.status_code == 503 and wanted in str(seen.get("detail")):
            return
        time.sleep(0.25)
    raise AssertionError(f"/v1/model answered {seen} after {timeout} s, wanted {wanted!r}")


def test_champion_is_served_with_auth_and_follows_promotion_and_rollback(
    served: ManagedServer, registry: Registry, token: str, tmp_path: Path
) -> None:
    url = f"http://{LOCALHOST}:{served.port}"
    auth = {"Authorization": f"Bearer {token}"}
    name = registry.model_name
    # Then health names the champion's version without a token
    assert requests.get(f"{url}/health", timeout=5).json()["model_version"] == f"{name}/1"
    # And the API refuses a missing or wrong token
    body = {"posts": [{"id": "p1", "text": "new glossier and fenty beauty drop 💄"}]}
    assert requests.post(f"{url}/v1/predict", json=body, timeout=5).status_code == 401
    wrong_token = f"wrong-{secrets.token_hex(8)}"
    wrong = {"Authorization": f"Bearer {wrong_token}"}
    assert (
        requests.post(f"{url}/v1/predict", json=body, headers=wrong, timeout=5).status_code == 401
    )
    # And tags posts with the champion
    first = requests.post(f"{url}/v1/predict", json=body, headers=auth, timeout=30).json()
    assert first["model_version"] == f"{name}/1"
    assert [s["text"] for s in first["predictions"][0]["spans"]] == ["glossier"]

    # When a better challenger is promoted on the tracking server
    v2 = _register(registry, tmp_path, ["Glossier", "Fenty Beauty"], 0.92)
    registry.promote(v2, gold_hash=GOLD, decision=decide(0.92, 0.85, 0.8), metrics={"f1": 0.92})
    # Then the running server picks it up by itself and answers with it
    _wait_for_version(url, f"{name}/{v2}")
    second = requests.post(f"{url}/v1/predict", json=body, headers=auth, timeout=30).json()
    assert second["model_version"] == f"{name}/{v2}"
    assert [s["text"] for s in second["predictions"][0]["spans"]] == ["glossier", "fenty beauty"]
    info = requests.get(f"{url}/v1/model", headers=auth, timeout=5).json()
    assert info["loaded_from"] == f"models:/{name}/{v2}" and info["last_error"] is None
    assert info["run_id"] == registry.client.get_model_version(name, v2).run_id

    # When the promotion is rolled back, an explicit reload serves v1 again
    registry.rollback(reason="test")
    reload = requests.post(f"{url}/v1/reload", headers=auth, timeout=60)
    assert reload.status_code == 200
    assert reload.json()["model_version"] == f"{name}/1"
    third = requests.post(f"{url}/v1/predict", json=body, headers=auth, timeout=30).json()
    assert [s["text"] for s in third["predictions"][0]["spans"]] == ["glossier"]
    # And neither the token nor the wrong one reached the server's log
    log = served.log_path.read_text(errors="replace")
    assert token not in log and wrong_token not in log
    assert '"POST /v1/predict HTTP/1.1" 401' in log


def _exchange(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None, token: str
) -> tuple[int, dict[str, Any], str | None]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, json.loads(response.read()), response.getheader("connection")


def test_bad_input_over_http_keeps_the_connection_and_no_token_reaches_the_log(
    served: ManagedServer, token: str
) -> None:
    conn = http.client.HTTPConnection(LOCALHOST, served.port, timeout=30)
    # Given a post whose text holds a lone surrogate (an escaped one: valid JSON)
    bad = b'{"posts": [{"id": "ok", "text": "glossier"}, {"id": "bad", "text": "x \\ud83d"}]}'
    status, payload, connection = _exchange(conn, "POST", "/invocations", bad, token)
    # Then the answer is a 422 naming the post, and the server keeps the connection open
    assert status == 422, payload
    assert payload["detail"][0]["post"] == 1 and "'bad'" in payload["detail"][0]["msg"]
    assert connection != "close"
    sock = conn.sock
    assert sock is not None
    # When the next request goes down the same connection, it is answered on it
    good = json.dumps({"posts": [{"id": "g", "text": "new glossier drop"}]}).encode()
    status, payload, _ = _exchange(conn, "POST", "/v1/predict", good, token)
    assert status == 200 and payload["predictions"][0]["spans"][0]["text"] == "glossier"
    assert conn.sock is sock
    conn.close()

    # Given a body over the limit, declared or streamed in chunks
    big = json.dumps({"posts": [{"text": "a " * MAX_BODY}]}).encode()
    conn = http.client.HTTPConnection(LOCALHOST, served.port, timeout=30)
    status, payload, _ = _exchange(conn, "POST", "/invocations", big, token)
    assert status == 413 and f"{MAX_BODY} bytes" in payload["detail"]
    conn.close()
    conn = http.client.HTTPConnection(LOCALHOST, served.port, timeout=30)
    conn.request(
        "POST",
        "/invocations",
        body=iter([big[:10_000], big[10_000:]]),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        encode_chunked=True,
    )
    streamed = conn.getresponse()
    assert streamed.status == 413, streamed.read()
    conn.close()

    # Given a token sent in the query string instead of the header
    leaked = requests.get(f"http://{LOCALHOST}:{served.port}/v1/model?api_key={token}", timeout=5)
    # Then it is refused, and the access log shows the request without its query
    assert leaked.status_code == 400
    deadline = time.monotonic() + 10
    log = ""
    while "/v1/model?<redacted>" not in log and time.monotonic() < deadline:
        time.sleep(0.2)
        log = served.log_path.read_text(errors="replace")
    assert '"GET /v1/model?<redacted> HTTP/1.1" 400' in log
    assert '"POST /invocations HTTP/1.1" 422' in log
    assert token not in log and "api_key" not in log


def test_a_pinned_version_is_served_with_the_run_that_logged_it(
    registry: Registry, mlflow_server: MlflowService, tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from apps.serving import create_app
    from ner.errors import ModelNotFoundError
    from ner.models import pinned_ref
    from ner.settings import Settings

    # Given a registered version served by number, not by alias (`brandloop serve --model v1`)
    name = registry.model_name
    v1 = _register(registry, tmp_path, ["Glossier"], 0.85)
    logged_by = registry.client.get_model_version(name, v1).run_id
    settings = Settings(
        mlflow_tracking_uri=mlflow_server.url,
        serve_model=f"models:/{name}/{v1}",
        serve_api_key="pinned-token-for-tests",
    )  # type: ignore[call-arg]
    # When its server starts
    with TestClient(create_app(settings)) as client:
        auth = {"Authorization": "Bearer pinned-token-for-tests"}
        info = client.get("/v1/model", headers=auth).json()
    # Then /v1/model names that run, as for an alias (a trial saw "run_id": null)
    assert info["model_version"] == f"{name}/{v1}" and info["run_id"] == logged_by
    # And a version that does not exist is named as such, aliases and other specs left alone
    with pytest.raises(ModelNotFoundError):
        pinned_ref(f"models:/{name}/99", mlflow_server.url)
    assert pinned_ref(f"models:/{name}@{CHAMPION}", mlflow_server.url) is None
    assert pinned_ref("gazetteer", mlflow_server.url) is None
