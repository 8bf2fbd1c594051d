"""The short reason an unreachable MLflow server gets (``ner.errors.mlflow_reason``)."""

from __future__ import annotations

import socket

import pytest

from ner.errors import ModelError, mlflow_reason
from ner.models import registry_version


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_tracking_server_is_named_in_one_phrase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given MLflow's own client asking a port where nothing listens (no retry)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = f"http://127.0.0.1:{_closed_port()}"
    # When the champion's alias is resolved there
    with pytest.raises(ModelError) as raised:
        registry_version("models:/brand-ner@champion", url)
    # Then the error names the server and why, not urllib3's chain
    message = str(raised.value)
    assert f"MLflow at {url} did not answer (Connection refused)" in message, message
    assert "Max retries" not in message and "HTTPConnectionPool" not in message


def test_a_timeout_reads_timed_out() -> None:
    text = (
        "API request to http://10.0.0.5:5000/api/2.0/mlflow/runs/get failed with exception "
        "HTTPConnectionPool(host='10.0.0.5', port=5000): Max retries exceeded with url: "
        '/api/2.0/mlflow/runs/get (Caused by ReadTimeoutError("HTTPConnectionPool(host='
        "'10.0.0.5', port=5000): Read timed out. (read timeout=10)\"))"
    )
    assert (
        mlflow_reason(RuntimeError(text))
        == "MLflow at http://10.0.0.5:5000 did not answer (timed out)"
    )


def test_any_other_error_keeps_its_own_text() -> None:
    text = "RESOURCE_DOES_NOT_EXIST: Registered Model with name=brand-ner not found"
    assert mlflow_reason(RuntimeError(text)) == text


def test_a_database_error_keeps_its_first_line_not_the_sql() -> None:
    # a store being rebuilt under a server (trial AO: six lines of SQL in one warning)
    text = (
        "(sqlite3.OperationalError) no such table: registered_models\n"
        "[SQL: SELECT registered_models.name FROM registered_models WHERE name = ?]\n"
        "[parameters: ('brand-ner-dev',)]\n"
        "(Background on this error at: https://sqlalche.me/e/20/e3q8)"
    )
    assert mlflow_reason(RuntimeError(text)) == (
        "(sqlite3.OperationalError) no such table: registered_models"
    )
