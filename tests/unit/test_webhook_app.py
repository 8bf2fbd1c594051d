"""The webhook receiver app in-process (apps.webhook) and the label-trigger CLI's pure parts.
The same code against a real Label Studio and Prefect server is in
tests/integration/test_labelstudio_api.py."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from apps.webhook import SECRET_HEADER, WEBHOOK_PATH, WebhookReceiver
from deployments import label_trigger
from ner.errors import LabelStudioError


# --- the receiver app -----------------------------------------------------------------------
def event(ident: int, action: str = "ANNOTATION_CREATED", project: int = 1) -> dict[str, Any]:
    return {"action": action, "project": {"id": project}, "annotation": {"id": ident}}


@pytest.fixture
def triggered() -> list[int]:
    return []


@pytest.fixture
def client(triggered: list[int]) -> Iterator[tuple[TestClient, WebhookReceiver]]:
    receiver = WebhookReceiver(
        lambda: triggered.append(1), min_new_labels=2, secret="s3cret", project_id=1
    )
    with TestClient(receiver.app) as test_client:
        yield test_client, receiver


def post(test_client: TestClient, body: Any, secret: str | None = "s3cret") -> Any:
    headers = {SECRET_HEADER: secret} if secret is not None else {}
    return test_client.post(WEBHOOK_PATH, json=body, headers=headers)


def test_receiver_triggers_once_at_the_gate(
    client: tuple[TestClient, WebhookReceiver], triggered: list[int]
) -> None:
    test_client, receiver = client
    first = post(test_client, event(1))
    assert first.status_code == 202
    assert first.json() == {"accepted": True, "pending": 1, "triggering": False}
    assert post(test_client, event(1, "ANNOTATION_UPDATED")).json()["pending"] == 1
    assert triggered == []
    second = post(test_client, event(2))
    assert second.json()["triggering"] is True
    assert triggered == [1]  # background tasks run before TestClient returns
    assert receiver.stats.triggers == 1
    assert test_client.get("/health").json()["triggers"] == 1
    assert post(test_client, event(3)).json()["triggering"] is False
    assert triggered == [1]


def test_receiver_refuses_a_bad_secret_and_ignores_other_events(
    client: tuple[TestClient, WebhookReceiver], triggered: list[int]
) -> None:
    test_client, receiver = client
    assert post(test_client, event(1), secret="wrong").status_code == 401
    assert post(test_client, event(2), secret=None).status_code == 401
    assert receiver.stats.rejected == 2
    other_project = post(test_client, event(3, project=2)).json()
    assert other_project["accepted"] is False
    other_action = post(test_client, event(4, "PROJECT_UPDATED")).json()
    assert other_action["accepted"] is False
    not_json = test_client.post(
        WEBHOOK_PATH, content=b"{", headers={SECRET_HEADER: "s3cret"}
    ).status_code
    assert not_json == 400
    assert receiver.counter.pending == 0 and triggered == []


def test_receiver_survives_a_failing_trigger_and_retries_on_the_next_event() -> None:
    calls: list[int] = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("Prefect API down")

    receiver = WebhookReceiver(flaky, min_new_labels=1)
    with TestClient(receiver.app) as test_client:
        assert test_client.post(WEBHOOK_PATH, json=event(1)).status_code == 202
        assert receiver.stats.failures == 1 and "Prefect API down" in str(receiver.stats.last_error)
        # its health says it is failing, and why, while the labels stay pending
        health = test_client.get("/health").json()
        assert health["status"] == "failing" and health["pending"] == 1
        assert health["last_error"] == "RuntimeError: Prefect API down"
        test_client.post(WEBHOOK_PATH, json=event(2))
        # and ok again once a trigger went through
        health = test_client.get("/health").json()
        assert (health["status"], health["last_error"], health["failures"]) == ("ok", None, 1)
    assert len(calls) == 2 and receiver.stats.triggers == 1


# --- the trigger CLI ------------------------------------------------------------------------
def test_deployment_name_defaults_to_train_ner_of_the_environment() -> None:
    assert label_trigger.deployment_name("dev") == "train-ner/dev"
    assert label_trigger.deployment_name("prod", "canary") == "train-ner/canary"
    assert label_trigger.deployment_name("prod", "other-flow/x") == "other-flow/x"


def test_cli_modes_and_options() -> None:
    served = label_trigger.parser().parse_args(
        ["serve", "--env", "staging", "--port", "9000", "--register-url", "http://h:9000/webhook"]
    )
    assert (served.run, served.env, served.port) == (label_trigger.serve, "staging", 9000)
    assert served.register_url == "http://h:9000/webhook" and served.host == "127.0.0.1"
    polled = label_trigger.parser().parse_args(["poll", "--env", "prod", "--max-polls", "2"])
    assert (polled.run, polled.interval, polled.max_polls) == (label_trigger.poll, 60.0, 2)
    with pytest.raises(SystemExit):
        label_trigger.parser().parse_args(["poll", "--env", "qa"])


@pytest.mark.parametrize("mode", ["serve", "poll"])
def test_the_trigger_refuses_to_start_without_a_prefect_api(
    mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    # Given no PREFECT_API_URL (runs would go to a temporary local database)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        # When the trigger is started, it refuses at once, naming the variable and its use
        assert label_trigger.main([mode, "--env", "dev"]) == 1
        url = "http://127.0.0.1:4200/api"
        with temporary_settings(updates={PREFECT_API_URL: url}):
            assert label_trigger.prefect_api_url() == url
    (error,) = [line for line in capsys.readouterr().err.splitlines() if " ERROR " in line]
    assert error.split(" ERROR ", 1)[1].startswith("PREFECT_API_URL is not set: the train-ner")
    assert "no worker reads" in error


def test_the_trigger_warns_when_no_prefect_api_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import http.server

    from tests.support.servers import free_port

    # Given nothing listening on a port, then a server that answers /health as Prefect's does
    silent = f"http://127.0.0.1:{free_port()}/api"

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/api/health"
            self.send_response(200 if ok else 404)
            self.end_headers()
            self.wfile.write(b"true" if ok else b"")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with caplog.at_level(logging.WARNING, logger="brandloop.label_trigger"):
            # Then the silent one is named in a warning, the answering one passes quietly
            assert label_trigger.check_prefect_api(silent) is False
            warned = [r.getMessage() for r in caplog.records]
            answering = f"http://127.0.0.1:{server.server_port}/api"
            assert label_trigger.check_prefect_api(answering) is True
            wrong = f"http://127.0.0.1:{server.server_port}/nope"
            assert label_trigger.check_prefect_api(wrong) is False
    finally:
        server.shutdown()
    assert len(warned) == 1 and warned[0].startswith(f"no Prefect API answers at {silent}")
    assert len(caplog.records) == 2 and "/nope/health answered 404" in caplog.messages[1]


def test_a_trigger_that_cannot_reach_prefect_names_the_api_in_health() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from tests.support.servers import free_port

    # Given a receiver whose trigger queues runs on a Prefect API nobody listens on
    api = f"http://127.0.0.1:{free_port()}/api"
    receiver = WebhookReceiver(label_trigger.start_training("train-ner/dev"), min_new_labels=1)
    with temporary_settings({PREFECT_API_URL: api}), TestClient(receiver.app) as test_client:
        # When a label arrives
        assert test_client.post(WEBHOOK_PATH, json=event(1)).status_code == 202
        health = test_client.get("/health").json()
    # Then its health says which API and deployment failed, and the label stays pending
    assert health["status"] == "failing" and health["pending"] == 1
    assert health["last_error"].startswith(
        f"BrandloopError: cannot queue a run of 'train-ner/dev' on {api}: ConnectError"
    )


@pytest.mark.slow  # the SDK's own retries of a refused connection take ~3 s an attempt
def test_registering_gives_up_with_a_label_studio_error_when_nobody_answers() -> None:
    from ner.settings import load_settings
    from tests.support.servers import free_port

    closed = f"http://127.0.0.1:{free_port()}"
    settings = load_settings(label_studio_url=closed, label_studio_api_key="k" * 40)
    with pytest.raises(LabelStudioError) as caught:
        label_trigger.register(settings, "http://127.0.0.1:1/webhook", attempts=2, delay=0)
    assert "k" * 40 not in str(caught.value)


def test_the_poll_mode_counts_from_the_training_pulls_checkpoint_and_the_envs_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from ner.labelstudio.exchange import checkpoint_key

    # Given staging's deployments on their own storage, and a project (a trial's first poll
    # counted labels a pull had read as new)
    monkeypatch.setenv("BRANDLOOP_STAGING_STORAGE_URI", str(tmp_path / "staging-store"))
    monkeypatch.setattr(label_trigger, "prefect_api_url", lambda *a, **k: "http://127.0.0.1:9")
    monkeypatch.setattr(label_trigger, "check_prefect_api", lambda *a, **k: True)
    project = SimpleNamespace(project_id=7)
    monkeypatch.setattr(label_trigger.LabelStudioProject, "connect", lambda *a, **k: project)
    seen: dict[str, object] = {}

    def watch(_project: object, storage: object, *_: object, **options: object) -> int:
        seen.update(options, storage=storage)
        return 0

    monkeypatch.setattr(label_trigger, "watch_labels", watch)
    # When the poll mode starts for staging
    args = label_trigger.parser().parse_args(["poll", "--env", "staging", "--max-polls", "1"])
    assert label_trigger.poll(args) == 0
    # Then it watches with the pull's checkpoint, in staging's deployment storage
    assert seen["read_key"] == checkpoint_key(7)
    assert str(tmp_path / "staging-store" / "staging") in seen["storage"].uri("")  # type: ignore[attr-defined]
