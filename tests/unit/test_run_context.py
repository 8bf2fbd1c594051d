"""The run context (flows.context) without a Prefect server: built once, shared, frozen.

With Secret blocks and a real Prefect server: tests/integration/test_run_context_servers.py.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from flows import apply_ner
from flows.context import RunContext, run_context
from ner import layout, models, parallel
from ner.errors import ConfigError
from ner.models import LoadedModel
from ner.records import write_records
from ner.settings import load_settings
from ner.types import Post


def test_a_nested_run_with_the_same_overrides_shares_the_context(
    clean_env: None, tmp_path: Path
) -> None:
    store = f"sqlite:///{tmp_path}/m.db"
    overrides = {"storage_uri": str(tmp_path), "mlflow_tracking_uri": store, "threshold": 0.4}
    with run_context(overrides) as outer:
        # Then a nested run with the same overrides gets the very same context
        with run_context(dict(overrides)) as inner:
            assert inner is outer
        # And one with other overrides gets its own
        with run_context({**overrides, "threshold": 0.5}) as other:
            assert other is not outer and other.settings.threshold == 0.5
    # And after the run, a new run builds a new context
    with run_context(overrides) as later:
        assert later is not outer
    assert outer.settings.threshold == 0.4 and outer.storage.uri() == (tmp_path / "dev").as_uri()
    assert outer.registry.model_name == outer.settings.registered_model_name


def test_the_context_is_frozen_and_bad_overrides_fail(clean_env: None, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/m.db"
    ctx = RunContext.open(load_settings(storage_uri=str(tmp_path), mlflow_tracking_uri=store))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.settings = ctx.settings  # type: ignore[misc]
    with pytest.raises(ConfigError, match="threshold=2: "), run_context({"threshold": 2}):
        pass


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The spec of every model loaded during the test (the loads still happen)."""
    specs: list[str] = []
    original = models.load_model

    def counted(spec: str, **kwargs: Any) -> LoadedModel:
        specs.append(spec)
        return original(spec, **kwargs)

    for module in (models, parallel):  # parallel imported the function by name
        monkeypatch.setattr(module, "load_model", counted)
    return specs


def test_the_run_builds_model_refs_from_its_settings_and_shares_one_loaded_model(
    clean_env: None, tmp_path: Path, loads: list[str]
) -> None:
    # Given a run with its own labels, and every model load counted
    store = f"sqlite:///{tmp_path}/m.db"
    settings = load_settings(
        storage_uri=str(tmp_path), mlflow_tracking_uri=store, labels=["BRAND", "PRODUCT"]
    )
    ctx = RunContext.open(settings)
    # Then its model references carry the run's settings
    ref = ctx.model_ref("gazetteer")
    assert (ref.labels, ref.base_model) == (("BRAND", "PRODUCT"), ctx.settings.base_model)
    assert ref.tracking_uri == ctx.settings.mlflow_tracking_uri
    # And a shared model is loaded once per spec; another spec replaces it
    first = ctx.shared_model("gazetteer")
    assert ctx.shared_model("gazetteer") is first and loads == ["gazetteer"]
    assert ctx.load_model("gazetteer") is not first and loads == ["gazetteer"] * 2


def test_a_batch_with_a_labelling_budget_loads_its_model_once(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loads: list[str]
) -> None:
    # Given a stored batch of 6 posts, a labelling budget of 2, prediction in this process
    store = f"sqlite:///{tmp_path}/m.db"
    settings = load_settings(
        storage_uri=str(tmp_path), mlflow_tracking_uri=store, label_budget=2, n_process=1
    )
    ctx = RunContext.open(settings)
    posts = [Post(id=f"p{i}", text=f"post {i}: my new Glossier balm {i * 7}") for i in range(6)]
    write_records(ctx.storage, layout.posts_batch("s1"), posts)
    monkeypatch.setattr(apply_ner, "get_run_logger", lambda: logging.getLogger("test"))
    # When the batch is predicted and its posts selected, as one delivery does
    predicted = apply_ner.predict_posts.fn(ctx, "gazetteer", layout.posts_batch("s1"), "s1")
    selection = apply_ner.select_for_labelling.fn(ctx, "gazetteer", layout.posts_batch("s1"), "s1")
    # Then every post was predicted, 2 were chosen, and the model was loaded once
    assert predicted.n_predictions == 6 and selection.n_selected == 2
    assert loads == ["gazetteer"]


def test_a_task_body_called_outside_a_run_logs_to_the_module_logger() -> None:
    import logging

    from flows.context import run_logger

    # Given no flow or task run (a task's .fn called from a test or a notebook)
    logger = run_logger()
    # Then it gets a plain logger instead of Prefect's MissingContextError
    assert isinstance(logger, logging.Logger) and logger.name == "flows.context"


def test_a_missing_secret_block_is_created_the_way_that_can_create_it() -> None:
    from flows.context import missing_block_hint

    # the flows' own block under its conventional name: brandloop deploy saves it
    saved = missing_block_hint("label-studio-api-key-staging", "label_studio_api_key", "staging")
    assert "brandloop deploy --env staging --secrets-from-env --no-deploy" in saved
    assert "BRANDLOOP_STAGING_LABEL_STUDIO_API_KEY" in saved
    # another name, or the serving key (a trial ran the deploy command, which saved neither)
    for block, field in (("nope", "label_studio_api_key"), ("serve-key", "serve_api_key")):
        said = missing_block_hint(block, field, "staging")
        assert "--no-deploy" not in said and f"Secret(value=...).save({block!r})" in said
        assert said.endswith(f"or set NER_{field.upper()} instead.")
    assert "saves only 'label-studio-api-key-staging'" in missing_block_hint(
        "nope", "label_studio_api_key", "staging"
    )


def test_a_secret_block_behind_an_unreachable_prefect_api_names_the_api() -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.context import _read_secret_block
    from tests.support.servers import free_port

    # Given PREFECT_API_URL where nothing answers (a trial's serve said only "ConnectError")
    api = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings({PREFECT_API_URL: api}), pytest.raises(ConfigError) as raised:
        _read_secret_block("serve-key-staging", "serve_api_key", "staging")
    # Then the error names the block, the API and the ways out
    said = str(raised.value)
    assert said.startswith("NER_SERVE_API_KEY_BLOCK names the Prefect Secret block ")
    assert f"no Prefect API answers at PREFECT_API_URL={api} (ConnectError" in said
    assert said.endswith("or set NER_SERVE_API_KEY instead")


@pytest.mark.parametrize(
    ("overrides", "refused", "instead"),
    [
        ({"env": "staging"}, "env='staging'", "run apply-ner/staging instead"),
        (
            {"registered_model_name": "brand-ner-prod"},
            "registered_model_name='brand-ner-prod'",
            "leave them out: dev's own names are brand-ner-dev, ...",
        ),
        ({"env": "dev", "threshold": 0.5}, None, None),
    ],
    ids=["env", "a-name", "own-env"],
)
def test_a_deployment_run_stays_in_its_environment(
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    overrides: dict[str, Any],
    refused: str | None,
    instead: str | None,
) -> None:
    from flows.context import build_settings, refuse_other_environment

    # Given a run of the deployment apply-ner/dev (Prefect's runtime values, as a worker sets)
    monkeypatch.setenv("NER_ENV", "dev")
    for name, value in (("DEPLOYMENT__ID", "d-1"), ("DEPLOYMENT__NAME", "dev")):
        monkeypatch.setenv(f"PREFECT__RUNTIME__{name}", value)
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__FLOW_NAME", "apply-ner")
    settings = build_settings(overrides)
    if refused is None:  # its own environment, other settings: runs
        refuse_other_environment(settings, overrides)
        return
    # Then overrides that move it to another environment's state are refused, with the way out
    with pytest.raises(ConfigError) as caught:
        refuse_other_environment(settings, overrides)
    message = str(caught.value)
    assert f"may not move it to another's state: {refused}; {instead}" in message
    # And outside a deployment (the command line, Python) the same overrides are free
    monkeypatch.delenv("PREFECT__RUNTIME__DEPLOYMENT__ID")
    refuse_other_environment(settings, overrides)
