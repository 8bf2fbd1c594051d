"""Small helpers the flows share (settings, storage, registry, run ids)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ner.errors import ConfigError, DataError, GoldSetError, PromotionError, SourceAuthError
from ner.registry import Registry
from ner.settings import Settings, load_settings
from ner.storage import Storage, open_storage

if TYPE_CHECKING:
    from ner.models import LoadedModel


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
    return open_storage(settings.storage_uri, settings.env, gcs_timeout_s=settings.gcs_timeout_s)


def load_settings_model(settings: Settings, model_spec: str) -> LoadedModel:
    """:func:`ner.models.load_model` with the labels, base model and MLflow of ``settings``."""
    from ner.models import load_model

    return load_model(
        model_spec,
        labels=settings.labels,
        base_model=settings.base_model,
        label_map=settings.base_label_map,
        tracking_uri=settings.mlflow_tracking_uri,
    )


def make_registry(settings: Settings) -> Registry:
    return Registry(
        settings.mlflow_tracking_uri,
        model_name=settings.registered_model_name,
        experiment_name=settings.experiment_name,
        artifact_location=settings.artifact_location(),
    )


#: Retries of an :func:`io_task` that has not been given its own number nor settings.
DEFAULT_IO_RETRIES = 3
#: Errors another attempt cannot fix (a bad setting or record, a refused promotion,
#: rejected credentials): tasks fail at once instead of retrying them.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    ConfigError,
    DataError,
    GoldSetError,
    PromotionError,
    SourceAuthError,
)


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the failure is a permanent error."""
    return not isinstance(getattr(state, "data", None), PERMANENT_ERRORS)


def io_task(retries: int | None = None) -> Any:
    """Decorator for tasks that touch the outside world: transient failures are retried
    with exponential backoff and jitter (:data:`PERMANENT_ERRORS` are not). Their inputs are
    settings and keys, so result caching is off.

    ``retries`` caps the task's retries (training: 1, waiting for labels: 0); without it the
    task follows ``NER_IO_RETRIES``. Flows call such tasks through :func:`retrying` so that
    the count and the delays come from the run's settings.
    """
    from prefect import task
    from prefect.cache_policies import NO_CACHE
    from prefect.tasks import exponential_backoff

    def decorate(fn: Any) -> Any:
        wrapped: Any = task(
            retries=DEFAULT_IO_RETRIES if retries is None else retries,
            retry_delay_seconds=exponential_backoff(backoff_factor=2),
            retry_jitter_factor=0.5,
            retry_condition_fn=is_transient,
            cache_policy=NO_CACHE,
        )(fn)
        wrapped.brandloop_max_retries = retries
        return wrapped

    return decorate


def retry_delays(settings: Settings, retries: int) -> list[float]:
    """``NER_IO_RETRY_DELAY_S``, doubled for each further retry."""
    return [settings.io_retry_delay_s * 2**attempt for attempt in range(retries)]


def retrying(task: Any, settings: Settings) -> Any:
    """``task`` with the retry policy of ``settings``: ``NER_IO_RETRIES`` retries (at most
    the task's own cap), the first after ``NER_IO_RETRY_DELAY_S`` seconds, then doubling,
    each with ±50 % jitter."""
    cap = getattr(task, "brandloop_max_retries", None)
    retries = settings.io_retries if cap is None else min(cap, settings.io_retries)
    return task.with_options(
        retries=retries,
        retry_delay_seconds=retry_delays(settings, retries) or 0,
        retry_jitter_factor=0.5,
    )
