"""apps.status: how one MLflow run becomes a row of ``brandloop status``'s evaluations."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from apps.status import _evaluation_row, label_studio_counts


def run(start_ms: int, end_ms: int | None) -> Any:
    """An evaluation run as MLflow's client returns it (the fields status reads)."""
    tags = {
        "brandloop.kind": "evaluation",
        "brandloop.role": "champion",
        "brandloop.model_version": "brand-ner/3",
        "brandloop.gold_hash": "abc123",
    }
    info = SimpleNamespace(start_time=start_ms, end_time=end_ms, run_id="r1", run_name="eval")
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags, metrics={"gold_f1": 0.8}))


def test_an_evaluation_is_dated_when_its_run_ended() -> None:
    # Given a run that started at t=1,000 s and ended (scored) 600 s later
    row = _evaluation_row(None, run(1_000_000, 1_600_000))  # type: ignore[arg-type]
    assert row is not None
    # Then its row carries the end, when the score existed
    assert row.at == 1_600.0
    assert (row.role, row.model, row.gold_hash) == ("champion", "brand-ner/3", "abc123")


def test_a_run_still_going_is_dated_by_its_start() -> None:
    row = _evaluation_row(None, run(1_000_000, None))  # type: ignore[arg-type]
    assert row is not None and row.at == 1_000.0


def test_a_label_studio_nobody_runs_is_named_with_the_setting_to_check() -> None:
    from ner.errors import LabelStudioError
    from ner.settings import load_settings
    from tests.support.servers import free_port

    # Given a Label Studio URL where nothing listens
    url = f"http://127.0.0.1:{free_port()}"
    settings = load_settings({"label_studio_url": url, "label_studio_api_key": "k" * 40})
    # When its counts are asked for, the error names the server and what to check, no key
    with pytest.raises(LabelStudioError) as raised:
        label_studio_counts(settings)
    text = str(raised.value)
    assert text.startswith(f"Label Studio read of project 'brandloop-dev' at {url} failed: ")
    assert "ConnectError: " in text
    assert text.endswith("(is Label Studio running there? NER_LABEL_STUDIO_URL names it)")
    assert "k" * 40 not in text


def test_a_label_studio_that_fails_is_asked_once() -> None:
    import http.server
    import threading

    from ner.errors import LabelStudioError
    from ner.settings import load_settings

    # Given a server on 127.0.0.1 that answers every request 503 and counts them
    asked: list[str] = []

    class Unavailable(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Unavailable)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        settings = load_settings({"label_studio_url": url, "label_studio_api_key": "k" * 40})
        # When its counts are asked for, the refusal is reported after one request (the
        # SDK's own retries would ask three times: a status is a one-shot read)
        with pytest.raises(
            LabelStudioError, match=f"Label Studio read of project .* at {url} failed: "
        ):
            label_studio_counts(settings)
    finally:
        server.shutdown()
        server.server_close()
    assert len(asked) == 1 and asked[0].startswith("/api/projects")


def test_a_key_block_that_could_not_be_read_is_what_status_says() -> None:
    from apps.status import _label_studio_part
    from ner.settings import load_settings

    reason = "NER_LABEL_STUDIO_API_KEY_BLOCK names the Prefect Secret block 'k', which cannot"
    settings = load_settings(label_studio_api_key_block="k").with_unread_blocks(
        {"label_studio_api_key": reason}
    )
    assert _label_studio_part(settings) == (None, reason)


def test_each_alias_says_which_files_it_lacks_or_that_they_could_not_be_listed() -> None:
    from apps.status import AliasState, alias_states
    from ner.errors import RegistryError

    class Registry:  # the three calls alias_states makes (the real one: test_cli_servers)
        def alias_version(self, alias: str) -> str | None:
            return {"champion": "2", "previous": "1"}.get(alias)

        def evaluated_f1(self, version: str, gold_hash: str) -> float | None:
            return 0.5

        def version_files(self, version: str) -> tuple[str, list[str]]:
            if version == "2":
                raise RegistryError("MLflow did not answer")
            return "mlflow-artifacts:/1/m/artifacts", ["MLmodel"]

    states = alias_states(Registry(), "abc123")  # type: ignore[arg-type]
    assert states == (
        AliasState("champion", "2", 0.5, None),  # not listed: "not checked", not "ok"
        AliasState("challenger", None, None, ()),
        AliasState("previous", "1", 0.5, ("MLmodel",)),
    )
