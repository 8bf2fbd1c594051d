"""The run context: what one flow run needs, built once at its entry and passed down.

* :func:`build_settings` - the one way to build :class:`~ner.settings.Settings` outside the
  pure library: the environment, a flow's ``overrides`` on top, then every secret that is
  not set directly but names a Prefect Secret block (``NER_X_BEARER_TOKEN_BLOCK``,
  ``NER_LABEL_STUDIO_API_KEY_BLOCK``, ``NER_SERVE_API_KEY_BLOCK``) read from that block.
  Flows, the serving app, the label trigger and the bootstrap all use it.
* :class:`RunContext` - frozen: the settings, the storage, the registry and a model loader.
  A flow opens it with ``with run_context(overrides) as ctx:`` and passes ``ctx`` to its
  tasks. A sub-flow called by a flow of this process with the same ``overrides`` gets its
  parent's context (no second read of the Secret blocks).
* :class:`RetryPolicy` and :func:`io_task` - retries in one place. A task made with
  :func:`io_task` takes its Prefect retry options from the context (or settings) it is
  called with: ``NER_IO_RETRIES`` retries, the first after ``NER_IO_RETRY_DELAY_S``
  seconds, doubling, ±50 % jitter, and only for transient errors: :data:`PERMANENT_ERRORS`
  (a bad setting or parameter, a missing input, an unknown model, rejected credentials, a
  bad record, a refused promotion, and the errors of a bug: ``TypeError``, ``KeyError`` ...)
  fail at once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, cast

import httpx
from prefect import Task
from prefect.cache_policies import NO_CACHE
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ner import errors
from ner.registry import Registry
from ner.settings import (
    DEPLOYMENT_VARIABLES,
    ENVIRONMENT_DEFAULTS,
    Settings,
    deployment_overrides,
    has_secret,
    load_settings,
    plain_secrets,
)
from ner.storage import Storage, env_storage

if TYPE_CHECKING:
    from ner.models import LoadedModel
    from ner.parallel import ModelRef

#: Secrets the flows read; deployments name their blocks (``deployments/bootstrap.py``).
FLOW_SECRETS = ("x_bearer_token", "label_studio_api_key")
#: Secrets that may come from a Prefect Secret block named by ``NER_<FIELD>_BLOCK``.
BLOCK_SECRETS = (*FLOW_SECRETS, "serve_api_key")


def secret_block_name(field: str, env: str) -> str:
    """The conventional Secret block of ``field`` in ``env``: ``x-bearer-token-prod``."""
    return f"{field.replace('_', '-')}-{env}"


#: Errors another attempt cannot fix: tasks fail at once instead of retrying them.
PERMANENT_ERRORS: tuple[type[Exception], ...] = (
    errors.ConfigError,  # a bad setting or flow parameter
    errors.DataError,  # a bad record
    errors.GoldSetError,
    errors.NotFoundError,  # a missing input file, an unknown model or alias
    errors.PromotionError,
    errors.TrainingDataError,  # too few posts to train on, a label map that does not fit
    errors.SourceAuthError,  # rejected credentials
    errors.LabelStudioAuthError,
    errors.StorageAuthError,  # missing or rejected storage credentials
    # a bug: the same call fails the same way (a trial saw a TypeError retried 3 times)
    TypeError,
    AttributeError,
    NameError,
    LookupError,
    AssertionError,
    NotImplementedError,
    UnicodeError,  # a text that cannot be encoded or decoded fails the same way again
)


def flow_run_id() -> str | None:
    """Id of the current Prefect flow run, if any."""
    from prefect.runtime import flow_run

    run_id = flow_run.id
    return None if run_id is None else str(run_id)


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """Prefect's run logger inside a flow or task run; this module's logger when a task's
    body is called outside one (``task.fn(...)`` from a test or a notebook)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def run_stamp(run_id: str | None = None) -> str:
    """A sortable, unique name for the objects one run writes."""
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{now}-{run_id[:8]}" if run_id else now


#: A count parameter of a flow: at least 1, or None for the setting's value. The bound goes
#: into a deployment's parameter schema, so the Prefect server refuses a deployment run with
#: 0 when it is asked to create it (``enforce_parameter_schema`` in prefect.yaml), and
#: Prefect checks a Python call before the flow body runs (the run is then Failed).
Count = Annotated[int, Field(ge=1)] | None
#: A poll interval in seconds: above 0.
PollSeconds = Annotated[float, Field(gt=0)]
#: A wait in seconds: 0 or more.
WaitSeconds = Annotated[float, Field(ge=0)]


def require_counts(**counts: int | None) -> None:
    """Refuse a count parameter of a flow below 1 (None: the setting's value is taken), by
    name, before anything runs. Raises :class:`ConfigError` (a trial's ``max_rounds=0``
    ran the setting's 3 rounds: ``0 or default`` read it as not given)."""
    bad = [f"{name}={value}" for name, value in counts.items() if value is not None and value < 1]
    if bad:
        raise errors.ConfigError(f"{', '.join(bad)}: must be at least 1 (None takes the setting)")


def build_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Settings from the environment and ``overrides``, secrets from Prefect blocks.

    A secret that is not set directly (unset, or set empty: ``NER_SERVE_API_KEY=`` beside its
    ``_BLOCK``, which a trial's shell had) but names a Secret block is read from that block
    at run time, so it never sits in a deployment's parameters or job variables. A block that
    cannot be read fails only what needs its secret: the reason is kept in the settings and
    raised as :class:`ConfigError` by ``Settings.require_secret`` (a training run does not
    need the X token's block). Raises :class:`ConfigError` for a bad value.
    """
    settings = load_settings(overrides)
    updates: dict[str, SecretStr] = {}
    unread: dict[str, str] = {}
    for name in BLOCK_SECRETS:
        block = getattr(settings, f"{name}_block")
        if not has_secret(getattr(settings, name)) and block:
            try:
                updates[name] = SecretStr(_read_secret_block(block, name, settings.env))
            except errors.ConfigError as exc:
                unread[name] = str(exc)
    settings = settings.model_copy(update=updates) if updates else settings
    return settings.with_unread_blocks(unread) if unread else settings


def deployment_settings(
    overrides: Mapping[str, Any] | None = None,
    say: Callable[[str], None] | None = None,
    names: tuple[str, ...] = tuple(DEPLOYMENT_VARIABLES),
) -> Settings:
    """:func:`build_settings` with what the environment's deployments take from
    ``BRANDLOOP_<ENV>_*`` (:func:`ner.settings.deployment_overrides`, the settings ``names``
    only): for the processes that serve or watch an environment beside its flows. Each value
    taken goes to ``say``."""
    taken, said = deployment_overrides(overrides or {}, os.environ, names)
    for line in said:
        (say or logging.getLogger(__name__).info)(line)
    return build_settings(taken)


def _read_secret_block(block: str, field: str, env: str) -> str:
    from prefect.blocks.system import Secret

    try:
        secret: Any = Secret.load(block, _sync=True)  # type: ignore[call-arg]
    except ValueError as exc:  # Prefect's "Unable to find block document named ..."
        raise errors.ConfigError(
            f"NER_{field.upper()}_BLOCK names the Prefect Secret block {block!r}, which "
            f"cannot be read: {exc}. {missing_block_hint(block, field, env)}"
        ) from exc
    except httpx.HTTPError as exc:  # a trial's serve said only "ConnectError: ..."
        from prefect.settings import get_current_settings

        api = get_current_settings().api.url or "(not set: a temporary local API)"
        raise errors.ConfigError(
            f"NER_{field.upper()}_BLOCK names the Prefect Secret block {block!r}, which "
            f"cannot be read: no Prefect API answers at PREFECT_API_URL={api} "
            f"({type(exc).__name__}: {exc}); start that server, correct PREFECT_API_URL, or "
            f"set NER_{field.upper()} instead"
        ) from exc
    return str(secret.get())


def conventional_block_hint(field: str, env: str) -> str:
    """``NER_<FIELD>_BLOCK=<its block in env>, the block brandloop deploy ... saves``: the
    other way to give a flow secret that is not set."""
    return (
        f"NER_{field.upper()}_BLOCK={secret_block_name(field, env)}, the block brandloop "
        f"deploy --secrets-from-env saves from BRANDLOOP_{env.upper()}_{field.upper()} (empty "
        "when that was unset)"
    )


def missing_block_hint(block: str, field: str, env: str) -> str:
    """How to create the Secret block ``block`` of ``field``: ``brandloop deploy`` saves only
    the flows' secrets, under their conventional names (:func:`secret_block_name`)."""
    variable = f"NER_{field.upper()}"
    by_hand = (
        "the Prefect UI (Blocks, Secret), or Python: `Secret(value=...).save(" + repr(block) + ")`"
        " with `from prefect.blocks.system import Secret`"
    )
    standard = secret_block_name(field, env)
    if field in FLOW_SECRETS and block == standard:
        return (
            f"Create it (`brandloop deploy --env {env} --secrets-from-env --no-deploy` saves "
            f"it from BRANDLOOP_{env.upper()}_{field.upper()}; or {by_hand}) or set "
            f"{variable} instead."
        )
    deploy = (
        f" (`brandloop deploy --secrets-from-env` saves only {standard!r})"
        if field in FLOW_SECRETS
        else ""
    )
    return f"Create it with {by_hand}{deploy}, or set {variable} instead."


class RetryPolicy(BaseModel):
    """How a task that talks to the outside world is retried."""

    model_config = ConfigDict(frozen=True)

    retries: int = 3
    first_delay_s: float = 2.0
    jitter: float = 0.5

    @classmethod
    def of(cls, settings: Settings) -> RetryPolicy:
        """``NER_IO_RETRIES`` retries, the first after ``NER_IO_RETRY_DELAY_S`` seconds."""
        return cls(retries=settings.io_retries, first_delay_s=settings.io_retry_delay_s)

    def delays(self) -> list[float]:
        """The delay before each retry: the first delay, doubled each time."""
        return [self.first_delay_s * 2**attempt for attempt in range(self.retries)]

    def task_options(self, cap: int | None = None) -> dict[str, Any]:
        """Prefect task options for this policy, at most ``cap`` retries."""
        retries = self.retries if cap is None else min(cap, self.retries)
        return {
            "retries": retries,
            "retry_delay_seconds": self.delays()[:retries] or 0,
            "retry_jitter_factor": self.jitter,
            "retry_condition_fn": is_transient,
        }


def is_permanent(exc: object) -> bool:
    """Whether ``exc`` is an error another attempt cannot fix: :data:`PERMANENT_ERRORS`, or
    an ``OSError`` whose number is in :data:`ner.errors.PERMANENT_ERRNOS`."""
    if isinstance(exc, OSError) and exc.errno in errors.PERMANENT_ERRNOS:
        return True
    return isinstance(exc, PERMANENT_ERRORS) or _prefect_api_unreachable(exc)


def failed_request(exc: object) -> tuple[str, str | None] | None:
    """For an HTTP request that failed (``httpx``, as Prefect's client sends them): its URL,
    and Prefect's API URL when it went there (else None); None for any other error."""
    from prefect.settings import get_current_settings

    if not isinstance(exc, httpx.RequestError):
        return None
    try:
        url = str(exc.request.url)
    except RuntimeError:  # no request attached
        return None
    api = str(get_current_settings().api.url or "").rstrip("/")
    return url, (api if api and url.startswith(api) else None)


def _prefect_api_unreachable(exc: object) -> bool:
    """Whether ``exc`` is a request to Prefect's own API that failed: its client has already
    retried it (``PREFECT_CLIENT_MAX_RETRIES``), so a task retry only waits longer (a trial's
    publish step was retried 3 times, minutes each, after its Prefect server stopped)."""
    found = failed_request(exc)
    return found is not None and found[1] is not None


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the failure is a permanent error
    (:func:`is_permanent`)."""
    return not is_permanent(getattr(state, "data", None))


@dataclass(frozen=True)
class RunContext:
    """What one flow run works with, built once at its entry (see :func:`run_context`)."""

    settings: Settings
    storage: Storage
    registry: Registry
    #: The overrides it was built from, as JSON: a sub-flow with the same ones shares it.
    overrides_key: str = "{}"
    #: The model :meth:`shared_model` loaded last, by spec (one at most).
    _shared: dict[str, LoadedModel] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def open(cls, settings: Settings, overrides_key: str = "{}") -> RunContext:
        """Open the storage and the registry ``settings`` name (nothing is contacted yet).
        The training recipe's optional install is checked first
        (:meth:`ner.settings.TrainSettings.check_installed`), so a run without it fails at
        once."""
        settings.train.check_installed()
        storage = env_storage(settings)
        registry = Registry(
            settings.mlflow_tracking_uri,
            model_name=settings.registered_model_name,
            experiment_name=settings.experiment_name,
            artifact_location=settings.artifact_location(),
        )
        return cls(settings, storage, registry, overrides_key)

    @property
    def retry(self) -> RetryPolicy:
        return RetryPolicy.of(self.settings)

    def model_ref(self, spec: str) -> ModelRef:
        """How to load model ``spec`` with this run's labels, base model and MLflow (a
        picklable :class:`ner.parallel.ModelRef`, for worker processes too)."""
        from ner.parallel import ModelRef  # spaCy is imported when a model is needed

        return ModelRef.for_settings(spec, self.settings)

    def load_model(self, spec: str) -> LoadedModel:
        """Load model ``spec`` (:meth:`model_ref`); :class:`ModelError` if it cannot be."""
        return self.model_ref(spec).load()

    def shared_model(self, spec: str) -> LoadedModel:
        """:meth:`load_model`, kept for the steps after this one: loading ``spec`` again
        returns the same model; loading another spec replaces it. Only for pinned specs
        (an alias could move meanwhile)."""
        if spec not in self._shared:
            loaded = self.load_model(spec)
            self._shared.clear()
            self._shared[spec] = loaded
        return self._shared[spec]


_CURRENT: ContextVar[RunContext | None] = ContextVar("brandloop_run_context", default=None)


def _overrides_key(overrides: Mapping[str, Any] | None) -> str:
    """``overrides`` as sorted JSON, a ``SecretStr`` by its value's digest (its text is
    ``**********`` whatever the value), so two runs with different secrets differ."""
    import hashlib
    import json

    def encode(value: Any) -> str:
        if isinstance(value, SecretStr):
            return hashlib.sha256(value.get_secret_value().encode()).hexdigest()
        return str(value)

    return json.dumps(dict(overrides or {}), sort_keys=True, default=encode)


def _warn_plain_secrets(overrides: Mapping[str, Any] | None) -> None:
    """Warn of secrets given as plain text in ``overrides``: Prefect stored them with the
    run's parameters, where its UI and API show them."""
    if names := plain_secrets(overrides):
        run_logger().warning(
            "overrides gave %s as plain text, which Prefect stores with this run's "
            "parameters: pass pydantic.SecretStr values (Prefect stores '**********'), or set "
            "them as NER_ variables or Secret blocks, and replace the exposed value",
            ", ".join(names),
        )


@contextmanager
def run_context(overrides: Mapping[str, Any] | None = None) -> Iterator[RunContext]:
    """The run context of a flow run: its parent's, when this is a sub-flow called in this
    process with the same ``overrides``; else a new one (:func:`build_settings`)."""
    key = _overrides_key(overrides)
    parent = _CURRENT.get()
    if parent is not None and parent.overrides_key == key:
        yield parent
        return
    settings = build_settings(overrides)
    refuse_other_environment(settings, overrides)
    ctx = RunContext.open(settings, key)
    _warn_plain_secrets(overrides)
    token = _CURRENT.set(ctx)
    try:
        with library_warnings_to_run_logs():
            yield ctx
    finally:
        _CURRENT.reset(token)


#: What ties a deployment's run to its environment: the name, and the names that default from
#: it (README "Environments"). A deployment's run may not take other values from its
#: ``overrides``.
ENVIRONMENT_BOUND = ("env", *ENVIRONMENT_DEFAULTS, "label_studio_project")


def refuse_other_environment(settings: Settings, overrides: Mapping[str, Any] | None) -> None:
    """Raise :class:`~ner.errors.ConfigError` when the run of a deployment is moved to
    another environment by its ``overrides`` (``{"env": "staging"}`` on ``apply-ner/dev``,
    which a trial's run took without a word: staging's model, a third storage prefix), or to
    another environment's registered model or experiment. Runs outside a deployment (the
    command line, Python calls) choose their environment freely."""
    from prefect.runtime import deployment, flow_run

    bound = [name for name in ENVIRONMENT_BOUND if name in (overrides or {})]
    if not bound or deployment.id is None:
        return
    own = load_settings(None)
    moved = [
        f"{name}={getattr(settings, name)!r}"
        for name in bound
        if getattr(settings, name) != getattr(own, name)
    ]
    if moved:
        instead = (
            f"leave them out: {own.env}'s own names are {own.registered_model_name}, ..."
            if settings.env == own.env
            else f"run {flow_run.flow_name}/{settings.env} instead"
        )
        raise errors.ConfigError(
            f"deployment {deployment.name!r} runs in environment {own.env} (NER_ENV of its "
            f"work pool), and its overrides may not move it to another's state: "
            f"{', '.join(moved)}; {instead}"
        )


#: The library's logger (``ner`` and its children: a rejected record, a quarantined file).
LIBRARY_LOGGER = "ner"


class _InARun(logging.Filter):
    """Passes records emitted inside a flow or task run (the API handler needs its id)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from prefect.context import FlowRunContext, TaskRunContext

        return FlowRunContext.get() is not None or TaskRunContext.get() is not None


@contextmanager
def library_warnings_to_run_logs() -> Iterator[None]:
    """Send the library's warnings (``ner.*``: the records a pull rejected by name, the files
    it quarantined) to the Prefect API as the run's logs while the block runs, as
    ``PREFECT_LOGGING_EXTRA_LOGGERS=ner`` would at WARNING, so a deployment's run shows them
    in the UI and not only on the worker's console. Nested blocks add no second handler."""
    from prefect.logging.handlers import APILogHandler

    library = logging.getLogger(LIBRARY_LOGGER)
    if any(isinstance(h, APILogHandler) for h in library.handlers):
        yield
        return
    handler = APILogHandler(level=logging.WARNING)
    handler.addFilter(_InARun())
    library.addHandler(handler)
    try:
        yield
    finally:
        library.removeHandler(handler)


P = ParamSpec("P")
R = TypeVar("R")


class IoTask(Task[Any, Any]):
    """A Prefect task whose retries follow the policy of the :class:`RunContext` (or
    :class:`Settings`) among its arguments; without one, :class:`RetryPolicy`'s defaults."""

    retry_cap: int | None = None

    def for_call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Task[Any, Any]:
        for value in (*args, *kwargs.values()):
            if isinstance(value, RunContext):
                return self.with_options(**value.retry.task_options(self.retry_cap))
            if isinstance(value, Settings):
                return self.with_options(**RetryPolicy.of(value).task_options(self.retry_cap))
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return Task.__call__(self.for_call(args, kwargs), *args, **kwargs)

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        return Task.submit(self.for_call(args, kwargs), *args, **kwargs)


def io_task(retries: int | None = None) -> Callable[[Callable[P, R]], Task[P, R]]:
    """Decorator for tasks that touch the outside world (storage, MLflow, Label Studio, X):
    retried by the run's :class:`RetryPolicy`, at most ``retries`` times when given
    (training: 1, waiting for labels: 0). Their inputs are contexts and keys, so result
    caching is off."""

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        wrapped = IoTask(fn=fn, cache_policy=NO_CACHE, **RetryPolicy().task_options(retries))
        wrapped.retry_cap = retries
        return cast("Task[P, R]", wrapped)

    return decorate


@io_task()
def publish_result(key: str, markdown: str, description: str) -> str | None:
    """Publish a flow run's result as a Markdown artifact under ``key`` (lower-cased, every
    character but letters, digits and dashes made a dash: Prefect's rule for keys), so the
    Prefect UI and API show it for a deployment's run, whose return value is not persisted.
    Returns the artifact's id; None outside a flow run (a task body called directly)."""
    import re

    from prefect.artifacts import create_markdown_artifact
    from prefect.context import FlowRunContext

    if FlowRunContext.get() is None:
        return None
    safe = re.sub(r"[^a-z0-9-]", "-", key.lower())
    return str(create_markdown_artifact(markdown=markdown, key=safe, description=description))
