"""One way in for settings, and retries in one place, on a real Prefect server.

* Secret blocks reach every user of ``flows.context.build_settings``: the serving app
  (``NER_SERVE_API_KEY_BLOCK`` did nothing before), and a sub-flow reuses its parent's run
  context instead of reading the blocks again.
* The sharded predict step follows ``NER_IO_RETRIES`` (it kept the decorator's 3 before).
* Errors that cannot succeed on retry fail at once, each task having run exactly once: a bad
  flow parameter (a ``ValueError`` retried 3 times before), a missing input file, an unknown
  model.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect import flow

from flows import context
from flows.apply_ner import apply_ner
from flows.context import build_settings, run_context
from ner import parallel
from ner.errors import (
    ConfigError,
    InputNotFoundError,
    ModelNotFoundError,
    NotFoundError,
    StorageError,
)
from ner.storage import open_storage
from tests.support.flows import attempts, attempts_if_any, demo_slice, prefect_api
from tests.support.servers import MlflowService, PrefectService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Short task retries, so a wrongly retried error would show as run_count 3.
RETRIES = {"io_retries": 2, "io_retry_delay_s": 0.1}


@pytest.fixture
def prefect(prefect_server: PrefectService, clean_env: None) -> Iterator[PrefectService]:
    with prefect_api(prefect_server):
        yield prefect_server


def save_secret(value: str) -> str:
    """Save ``value`` in a new Secret block on the current Prefect API; returns its name."""
    from prefect.blocks.system import Secret

    name = f"test-secret-{uuid.uuid4().hex[:8]}"
    Secret(value=value).save(name, overwrite=False)
    return name


def local(tmp_path: Path) -> dict[str, Any]:
    return {
        "storage_uri": str(tmp_path / "storage"),
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        **RETRIES,
    }


# --------------------------------------------------------------------------- Secret blocks
def test_serving_takes_its_api_key_from_a_secret_block(
    prefect: PrefectService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient

    from apps.serving import create_app

    # Given the serving token only in a Prefect Secret block, named by NER_SERVE_API_KEY_BLOCK
    token = f"serve-{uuid.uuid4().hex}"
    monkeypatch.setenv("NER_SERVE_API_KEY_BLOCK", save_secret(token))
    monkeypatch.setenv("NER_SERVE_MODEL", "gazetteer")
    # When the serving settings are built the way every entry point builds them
    settings = build_settings()
    # Then the key came from the block, and the app serves with it
    assert settings.require_secret("serve_api_key") == token
    with TestClient(create_app(settings)) as client:
        body = {"posts": [{"id": "a", "text": "haul from Sephora today"}]}
        assert client.post("/v1/predict", json=body).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        answer = client.post("/v1/predict", json=body, headers=auth)
        assert answer.status_code == 200, answer.text
        spans = answer.json()["predictions"][0]["spans"]
        assert [s["text"] for s in spans] == ["Sephora"]
    # And an empty NER_SERVE_API_KEY beside the block does not hide it (a trial's shell had
    # one: serve said the variable was not set)
    monkeypatch.setenv("NER_SERVE_API_KEY", "")
    assert build_settings().require_secret("serve_api_key") == token


def test_a_missing_secret_block_fails_only_what_needs_its_secret(
    prefect: PrefectService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given NER_X_BEARER_TOKEN_BLOCK naming a Secret block that does not exist
    missing = f"no-such-block-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("NER_X_BEARER_TOKEN_BLOCK", missing)
    # When the settings are built, nothing fails yet
    settings = build_settings()
    # Then using the secret is a ConfigError naming the variable, the block and the fix
    with pytest.raises(ConfigError, match="NER_X_BEARER_TOKEN_BLOCK") as info:
        settings.require_secret("x_bearer_token")
    assert missing in str(info.value)
    assert "--secrets-from-env" in str(info.value)
    # And a flow that does not read X runs (a trial's train-ner failed on this block)
    posts = demo_slice(tmp_path, 6)
    overrides = local(tmp_path)
    done = apply_ner(source="jsonl", input_uri=str(posts), overrides=overrides)
    assert done.delivered.n_predictions == 6
    # While one that reads X fails at once, with the block's reason
    state = run_apply(source="x", keywords=["glossier"], overrides=overrides)
    with pytest.raises(ConfigError, match=missing):
        state.result()
    assert attempts(prefect, str(state.state_details.flow_run_id), "fetch_posts") == [1]


def test_a_secret_in_overrides_is_stored_masked_in_the_runs_parameters(
    prefect: PrefectService, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import json

    from apps.cli import cli_overrides
    from tests.support.flows import flow_run

    # Given the Label Studio key given on the command line (a trial read its --set value in
    # the run's parameters, through Prefect's API and UI)
    posts = demo_slice(tmp_path, 3)
    overrides = {**local(tmp_path), **cli_overrides(["label_studio_api_key=cli-secret-555"])}
    # When apply-ner runs with it
    state = apply_ner(source="jsonl", input_uri=str(posts), overrides=overrides, return_state=True)
    assert state.is_completed(), state
    # Then Prefect stored the key masked, and the run still had it
    stored = flow_run(prefect, str(state.state_details.flow_run_id))["parameters"]
    assert stored["overrides"]["label_studio_api_key"] == "**********"
    assert "cli-secret-555" not in json.dumps(stored)
    # And a script's plain-text key is warned of by name, the value not shown
    plain = {**local(tmp_path), "label_studio_api_key": "py-secret-777"}
    with caplog.at_level("WARNING"):
        apply_ner(source="jsonl", input_uri=str(posts), reread=True, overrides=plain)
    said = {r.getMessage() for r in caplog.records if "as plain text" in r.getMessage()}
    assert len(said) == 1 and "label_studio_api_key" in next(iter(said))
    assert not any("py-secret-777" in r.getMessage() for r in caplog.records)


def test_a_sub_flow_shares_its_parents_run_context(
    prefect: PrefectService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the Label Studio key in a Secret block, and every read of a block counted
    monkeypatch.setenv("NER_LABEL_STUDIO_API_KEY_BLOCK", save_secret("ls-key"))
    reads: list[str] = []
    original = context._read_secret_block

    def counted(block: str, field: str, env: str) -> str:
        reads.append(block)
        return original(block, field, env)

    monkeypatch.setattr(context, "_read_secret_block", counted)
    posts = demo_slice(tmp_path, 12)
    overrides = local(tmp_path)
    seen: list[Any] = []

    @flow(name="parent-of-apply")
    def parent() -> None:
        with run_context(overrides) as ctx:
            seen.append(ctx)
            for _ in range(2):
                apply_ner(source="jsonl", input_uri=str(posts), max_posts=6, overrides=overrides)

    # When a flow calls apply-ner twice with its own overrides
    parent()
    # Then the blocks were read once, for the parent's context, which the sub-flows used
    assert len(reads) == 1
    assert seen[0].settings.require_secret("label_studio_api_key") == "ls-key"
    storage = open_storage(overrides["storage_uri"], "dev")
    assert len([k for k in storage.list("tasks") if k.endswith(".json")]) == 2
    # And a flow run alone builds its own context (and reads the block again)
    apply_ner(source="jsonl", input_uri=str(posts), max_posts=6, overrides=overrides)
    assert len(reads) == 2


def test_the_librarys_warnings_reach_the_runs_logs_on_the_api(
    prefect: PrefectService, tmp_path: Path
) -> None:
    import logging

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler, APILogWorker

    library = logging.getLogger("ner.labelstudio.collect")

    @flow(name="library-warns")
    def warns() -> None:
        with run_context(local(tmp_path)):
            library.warning("rejected exports/x.json: p7: task 9: unknown label 'PRODUCT'")
            library.info("an info line stays on the console")

    # When a flow's library code warns (a pull naming a rejected record)
    state = warns(return_state=True)
    APILogWorker.drain_all(timeout=10)
    # Then the warning is among the run's logs on the API, as a deployment's UI shows them
    # (a trial found them only on the worker's console), and the info line is not
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
    messages = [log.message for log in logs]
    assert "rejected exports/x.json: p7: task 9: unknown label 'PRODUCT'" in messages
    assert not [m for m in messages if "info line" in m]
    # and after the run the library logs to no API handler (nothing outside a run is sent)
    assert not [h for h in logging.getLogger("ner").handlers if isinstance(h, APILogHandler)]


# --------------------------------------------------------------------------- retries
@pytest.mark.parametrize(("io_retries", "completes"), [(2, True), (1, False)])
def test_the_parallel_predict_step_follows_ner_io_retries(
    prefect: PrefectService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    io_retries: int,
    completes: bool,
) -> None:
    # Given posts, and parallel prediction (2 processes) that fails twice with a storage error
    overrides = {**local(tmp_path), "io_retries": io_retries}
    posts = demo_slice(tmp_path, 20)
    failures: list[int] = []
    original = parallel.predict_parallel

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if len(failures) < 2:
            failures.append(1)
            raise StorageError("bucket unavailable")
        return original(*args, **kwargs)

    monkeypatch.setattr(parallel, "predict_parallel", flaky)
    # When apply-ner predicts on 2 processes with NER_IO_RETRIES retries
    state: Any = apply_ner(
        source="jsonl",
        input_uri=str(posts),
        model="gazetteer",
        overrides=overrides,
        workers=2,
        return_state=True,
    )
    # Then the predict task was tried 1 + NER_IO_RETRIES times at most
    assert state.is_completed() is completes, state
    tries = attempts(prefect, str(state.state_details.flow_run_id), "predict_posts")
    assert tries == [3 if completes else 2]
    if completes:
        assert state.result().delivered.n_predictions == 20


def run_apply(**kwargs: Any) -> Any:
    state = apply_ner(return_state=True, **kwargs)
    assert state.is_failed(), state
    return state


def test_a_bad_flow_parameter_fails_at_once(prefect: PrefectService, tmp_path: Path) -> None:
    # When apply-ner is asked for a JSONL source without input
    state = run_apply(source="jsonl", overrides=local(tmp_path))
    # Then it fails with a ConfigError saying what is missing, without a retry
    with pytest.raises(ConfigError, match="input_uri"):
        state.result()
    assert attempts(prefect, str(state.state_details.flow_run_id), "fetch_posts") == [1]


def test_a_reread_predicts_a_file_again_and_a_reread_of_x_fails_at_once(
    prefect: PrefectService, tmp_path: Path
) -> None:
    # Given a JSONL file that an apply-ner run read to its end
    posts = demo_slice(tmp_path, 4)
    overrides = local(tmp_path)
    first = apply_ner(source="jsonl", input_uri=str(posts), model="gazetteer", overrides=overrides)
    again = apply_ner(source="jsonl", input_uri=str(posts), model="base", overrides=overrides)
    assert first.delivered.n_predictions == 4 and again.n_posts == 0
    # When it is read again to predict it with another model
    reread = apply_ner(
        source="jsonl", input_uri=str(posts), model="base", overrides=overrides, reread=True
    )
    # Then every post is fetched and predicted again, into a batch of its own
    assert reread.delivered.n_predictions == 4
    assert reread.model_version != first.model_version
    assert reread.delivered.tasks_key != first.delivered.tasks_key
    # And a reread of X is a bad parameter: it fails at once, without a retry
    state = run_apply(source="x", keywords=["glossier"], overrides=overrides, reread=True)
    with pytest.raises(ConfigError, match="reread reads a JSONL file again"):
        state.result()
    assert attempts(prefect, str(state.state_details.flow_run_id), "fetch_posts") == [1]


def test_bad_overrides_fail_before_any_task(prefect: PrefectService, tmp_path: Path) -> None:
    state = run_apply(source="jsonl", overrides={**local(tmp_path), "treshold": 0.5})
    with pytest.raises(ConfigError, match="'treshold'"):
        state.result()
    assert attempts_if_any(prefect, str(state.state_details.flow_run_id), "fetch_posts") == []


def test_a_missing_input_file_fails_at_once(prefect: PrefectService, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-posts.jsonl"
    state = run_apply(source="jsonl", input_uri=str(missing), overrides=local(tmp_path))
    with pytest.raises(InputNotFoundError, match=r"no-such-posts\.jsonl"):
        state.result()
    assert attempts(prefect, str(state.state_details.flow_run_id), "fetch_posts") == [1]


def test_an_unknown_model_fails_at_once(
    prefect: PrefectService, mlflow_server: MlflowService, tmp_path: Path
) -> None:
    # Given posts and a registry (a real MLflow server) without the model asked for
    posts = demo_slice(tmp_path, 5)
    overrides = {**local(tmp_path), "mlflow_tracking_uri": mlflow_server.url}
    state = run_apply(
        source="jsonl",
        input_uri=str(posts),
        model=f"models:/nope-{uuid.uuid4().hex[:6]}@champion",
        overrides=overrides,
    )
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        state.result()
    run_id = str(state.state_details.flow_run_id)
    assert attempts(prefect, run_id, "resolve_model") == [1]
    assert attempts_if_any(prefect, run_id, "fetch_posts") == []  # checked before any post is read
    # And a version that the registry lacks is refused the same way (it was only loaded late)
    version = run_apply(
        source="jsonl", input_uri=str(posts), model="models:/brand-ner/99", overrides=overrides
    )
    with pytest.raises(ModelNotFoundError, match="brand-ner/99"):
        version.result()
    assert attempts_if_any(prefect, str(version.state_details.flow_run_id), "fetch_posts") == []


def test_a_missing_replay_gold_export_fails_before_any_post_is_fetched(
    prefect: PrefectService, tmp_path: Path
) -> None:
    from flows.feedback_loop import feedback_loop

    posts = demo_slice(tmp_path, 5)
    state = feedback_loop(
        source="jsonl",
        input_uri=str(posts),
        annotator="replay",
        gold_export=str(tmp_path / "nope.json"),
        overrides=local(tmp_path),
        return_state=True,
    )
    assert state.is_failed(), state
    with pytest.raises(NotFoundError, match=r"nope\.json: no such file"):
        state.result()
    assert not (tmp_path / "storage").exists() or not any((tmp_path / "storage").rglob("*.jsonl"))
