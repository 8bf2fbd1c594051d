"""Small helpers the flows share (settings, storage, registry, run ids)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from ner.registry import Registry
from ner.settings import Settings, load_settings
from ner.storage import Storage, open_storage


def flow_run_id() -> str | None:
    """Id of the current Prefect flow run, if any."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return None if run_id is None else str(run_id)


def run_stamp(run_id: str | None = None) -> str:
    """A sortable, unique name for the objects one run writes."""
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{now}-{run_id[:8]}" if run_id else now


SECRET_FIELDS = ("x_bearer_token", "label_studio_api_key", "serve_api_key")


def build_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Settings for a flow run: environment + overrides, then secrets from Prefect blocks.

    A secret that is not set directly but names a Secret block (``NER_X_BEARER_TOKEN_BLOCK``)
    is read from that block at run time, so it never sits in a deployment's parameters or
    job variables.
    """
    from pydantic import SecretStr

    settings = load_settings(**(overrides or {}))
    updates: dict[str, Any] = {}
    for name in SECRET_FIELDS:
        block = getattr(settings, f"{name}_block")
        if getattr(settings, name) is None and block:
            from prefect.blocks.system import Secret

            secret: Any = Secret.load(block, _sync=True)  # type: ignore[call-arg]
            updates[name] = SecretStr(str(secret.get()))
    return settings.model_copy(update=updates) if updates else settings


def open_settings_storage(settings: Settings) -> Storage:
    return open_storage(settings.storage_uri, settings.env)


def make_registry(settings: Settings) -> Registry:
    return Registry(
        settings.mlflow_tracking_uri,
        model_name=settings.registered_model_name,
        experiment_name=settings.experiment_name,
        artifact_location=settings.artifact_location(),
    )


def io_task(retries: int = 3) -> Any:
    """Decorator for tasks that touch the outside world: retried with exponential backoff
    and jitter. Their inputs are settings and keys, so result caching is off."""
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.tasks import exponential_backoff

    return task(
        retries=retries,
        retry_delay_seconds=exponential_backoff(backoff_factor=2),
        retry_jitter_factor=0.5,
        cache_policy=NO_CACHE,
    )
