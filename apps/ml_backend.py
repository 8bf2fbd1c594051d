"""The champion as a Label Studio ML backend.

Connect it in a project's *Settings → Model* (or ``client.ml.create(url=..., project=...)``)
and Label Studio asks it for pre-annotations; annotation events can queue ``train-ner``.
``python -m apps.ml_backend --host 127.0.0.1 --port 9090`` starts it (settings from ``NER_``
variables); :func:`create_app` builds the ASGI app for any other server.

Routes (Label Studio's ML backend protocol)
    ``GET /health``, ``GET /``
        ``{"status": "UP", "model_class": "brandloop", "model_version": "brand-ner/3"}``
        (plus ``pending_labels``, ``runs_queued`` and ``runs_failed`` when training is on;
        ``runs_queued`` counts training requests answered, one that found a run still
        waiting to start, which it leaves to read the new labels, included). While the first
        promotion to ``@champion`` is awaited: ``"model_version": null`` and ``"waiting"``,
        still ``200``, so that Label Studio connects the backend (it checks ``/health`` and
        ``/setup``); ``/predict`` answers ``503`` until then. No authentication.
    ``POST /setup``
        ``{"project": "12.1732893600", "schema": "<View>…</View>", …}`` →
        ``{"model_version": "brand-ner/3"}`` (``""`` before the first promotion). Label
        Studio calls it before every batch of predictions. After answering, the version
        behind ``NER_SERVE_MODEL`` (``models:/brand-ner@champion``) is resolved again and
        loaded if the alias moved, so
        a promotion or rollback reaches Label Studio from its next call, without a restart;
        while a new version loads, or if it fails to, the old one keeps answering. The alias
        is also checked every ``NER_SERVE_REFRESH_SECONDS`` (60; 0 = only at ``/setup``). A schema
        without a ``<Labels>`` control on a ``<Text>`` object is refused with ``400``.
    ``POST /predict``
        ``{"tasks": [{"id": 7, "data": {"text": "…"}}], "project": "…", "label_config": "…",
        "params": {…}}`` → ``{"results": [{"result": [region, …], "score": 0.97,
        "model_version": "brand-ner/3"}, …], "model_version": "brand-ner/3"}``: one item per
        task, in order. A region is ``{"id", "from_name", "to_name", "type": "labels",
        "value": {"start", "end", "text", "labels": [label]}, "score"}`` with the names read
        from the project's label config and code-point offsets into the task text
        (``text[start:end] == value.text``). ``score`` is the span's probability under the
        ``ner`` beam (1.0 for a gazetteer match); the task's is the mean of its regions'.
        A bad task (no text, a lone surrogate, over ``NER_SERVE_MAX_CHARS``) gets an empty
        ``result`` and a warning naming it; the other tasks are predicted. More than
        ``NER_ML_BACKEND_MAX_TASKS`` tasks (5,000) are refused with ``413``, as is a body
        over ``NER_ML_BACKEND_MAX_BODY_BYTES`` (50 MB) before it is parsed; a body not
        declared JSON gets ``415``, one of the wrong shape ``422`` without its values echoed.
    ``POST /webhook``
        Label Studio's project events (it registers this URL itself when the backend is
        connected). With ``NER_ML_BACKEND_TRAIN=true``, ``NER_MIN_NEW_LABELS`` distinct new
        annotations (``ANNOTATION_CREATED``/``UPDATED``) queue one run of the
        ``train-ner/{env}`` deployment (``NER_ML_BACKEND_TRAIN_DEPLOYMENT``) on the Prefect
        API in ``PREFECT_API_URL``, after the response; ``START_TRAINING`` queues one at once.

Authentication
    With ``NER_ML_BACKEND_USER`` and ``NER_ML_BACKEND_PASSWORD`` set, every route but the
    health check needs HTTP Basic credentials (Label Studio: *Authentication method: Basic
    Auth*), compared in constant time and never logged. Label Studio's own webhook to
    ``/webhook`` carries no credentials: add an ``Authorization: Basic …`` header to it.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Annotated, Any

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import BaseModel, ConfigDict, Field
from spacy.language import Language

from apps.serving import (
    GRACEFUL_STOP_S,
    SERVING_VARIABLES,
    Loader,
    ModelHolder,
    RequestGuard,
    Resolver,
    invalid_request,
    load_at_start,
    model_holder,
    model_lifespan,
    port_number,
    require_json_body,
    serving_mlflow_defaults,
)
from apps.webhook import WebhookReceiver
from flows.context import deployment_settings
from ner.active import entity_probabilities, has_scorer
from ner.errors import ConfigError, DataError, LabelStudioError, ModelError
from ner.inference import predict_texts
from ner.labelstudio.config import LabelConfig, parse_label_config
from ner.labelstudio.triggers import LABEL_ACTIONS
from ner.models import RULER, LoadedModel
from ner.settings import Settings
from ner.types import Span, check_spans

log = logging.getLogger(__name__)

#: Label Studio's "Start training" event (sent to ``/webhook``).
START_TRAINING = "START_TRAINING"
#: Result type of a span region in Label Studio.
REGION_TYPE = "labels"

_BASIC = HTTPBasic(auto_error=False)
Trigger = Callable[[], object]


# --------------------------------------------------------------------------- protocol shapes


class SetupRequest(BaseModel):
    """What Label Studio sends to ``/setup`` (fields it may add are kept, not used)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    project: str | None = None
    label_config: str | None = Field(None, alias="schema")


class PredictRequest(BaseModel):
    """What Label Studio sends to ``/predict``; tasks stay raw so one bad task cannot fail
    the batch."""

    model_config = ConfigDict(extra="allow")

    tasks: list[Any]
    project: str | None = None
    label_config: str | None = None
    params: dict[str, Any] | None = None


class RegionValue(BaseModel):
    start: int = Field(..., description="Code-point offset into the task text.")
    end: int = Field(..., description="Exclusive code-point offset.")
    text: str
    labels: list[str]


class Region(BaseModel):
    id: str
    from_name: str
    to_name: str
    type: str = REGION_TYPE
    value: RegionValue
    score: float | None = None


class TaskPrediction(BaseModel):
    result: list[Region]
    score: float | None = None
    model_version: str


class PredictResponse(BaseModel):
    results: list[TaskPrediction]
    model_version: str


# --------------------------------------------------------------------------- prediction


def task_text(task: Any, text_key: str, max_chars: int) -> str:
    """The text of a Label Studio task (``task["data"][text_key]``).

    Raises :class:`DataError` naming the task (its ``id``) when the task is not an object,
    has no string under ``text_key``, holds a lone surrogate, or is over ``max_chars``.
    """
    if not isinstance(task, Mapping):
        raise DataError(None, "task is not a JSON object")
    record_id = None if task.get("id") is None else f"task {task.get('id')}"
    data = task.get("data")
    text = data.get(text_key) if isinstance(data, Mapping) else None
    if not isinstance(text, str):
        raise DataError(record_id, f"task data has no text under {text_key!r}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(record_id, f"text has a lone surrogate at code point {exc.start}") from exc
    if len(text) > max_chars:
        raise DataError(record_id, f"text has {len(text)} characters; the limit is {max_chars}")
    return text


def scored_spans(nlp: Language, texts: Sequence[str], labels: Sequence[str]) -> list[list[Span]]:
    """Each text's spans with a score in [0, 1].

    A match of the pipeline's brand list (:data:`ner.models.RULER`) scores 1.0; with a
    statistical ``ner`` any other span scores its probability over the beam's parses
    (:func:`ner.active.entity_probabilities`; 0.0 for a span the beam never proposes).
    A rule-only pipeline scores 1.0.
    """
    found = predict_texts(nlp, texts, labels)
    if not has_scorer(nlp):
        return [[replace(span, score=1.0) for span in spans] for spans in found]
    beams = entity_probabilities(nlp, texts, labels)
    listed = listed_spans(nlp, texts)
    return [
        [
            replace(
                span,
                score=1.0 if span.key in mine else round(min(1.0, probs.get(span.key, 0.0)), 4),
            )
            for span in spans
        ]
        for spans, probs, mine in zip(found, beams, listed, strict=True)
    ]


def listed_spans(nlp: Language, texts: Sequence[str]) -> list[set[tuple[int, int, str]]]:
    """For each text, ``(start, end, label)`` (characters) of every match of the brand list
    the pipeline holds (:data:`ner.models.RULER`); empty sets when it holds none. A trial's
    gazetteer match scored the beam's 0.0016 instead of 1.0."""
    if RULER not in nlp.pipe_names:
        return [set() for _ in texts]
    ruler = nlp.get_pipe(RULER)
    out = []
    for text in texts:
        doc = nlp.make_doc(text)
        keys = set()
        for label_id, first, last in ruler.match(doc):  # type: ignore[attr-defined]
            span = doc[first:last]  # an EntityRuler's matches: (label, start, end) in tokens
            keys.add((span.start_char, span.end_char, nlp.vocab.strings[label_id]))
        out.append(keys)
    return out


def task_prediction(spans: Sequence[Span], config: LabelConfig, version: str) -> TaskPrediction:
    """One task's answer: its regions under the project's control and object names."""
    regions = [
        Region(
            id=f"brandloop-{span.start}-{span.end}-{span.label}",
            from_name=config.from_name,
            to_name=config.to_name,
            value=RegionValue(start=span.start, end=span.end, text=span.text, labels=[span.label]),
            score=span.score,
        )
        for span in spans
    ]
    scores = [region.score for region in regions if region.score is not None]
    mean = round(sum(scores) / len(scores), 4) if scores else None
    return TaskPrediction(result=regions, score=mean, model_version=version)


def predict_tasks(
    model: LoadedModel,
    tasks: Sequence[Any],
    config: LabelConfig,
    labels: Sequence[str],
    max_chars: int,
) -> list[TaskPrediction]:
    """One :class:`TaskPrediction` per task, in order; a bad task gets an empty result.

    Only ``labels`` that the project's config lists are predicted. Every span is checked
    against its task text before it leaves (``text[start:end] == span.text``).
    """
    texts: dict[int, str] = {}
    for index, task in enumerate(tasks):
        try:
            texts[index] = task_text(task, config.text_key, max_chars)
        except DataError as exc:  # named by its id ("task 2") if it has one, and its place
            which = f"{exc.record_id}, " if exc.record_id else ""
            where = f"{which}item {index} (0-based) of the request"
            log.warning("no prediction for %s: %s", where, exc.reason)
    wanted = [label for label in labels if label in config.labels]
    if not wanted:
        log.warning("the project's labels %s include none of %s", config.labels, labels)
    spans: dict[int, list[Span]] = {}
    if wanted and texts:
        found = scored_spans(model.nlp, list(texts.values()), wanted)
        spans = dict(zip(texts, found, strict=True))
    for index, task_spans in list(spans.items()):
        try:
            check_spans(f"task {tasks[index].get('id')}", texts[index], task_spans)
        except DataError as exc:  # a model bug: the task gets nothing, the batch goes on
            log.error("dropping the prediction of task #%d: %s", index, exc)
            spans[index] = []
    return [task_prediction(spans.get(i, []), config, model.version) for i in range(len(tasks))]


@lru_cache(maxsize=32)
def project_config(xml: str) -> LabelConfig:
    """The project's ``<Labels>``/``<Text>`` pair (cached per config text).

    Raises :class:`LabelStudioError` saying what is missing.
    """
    return parse_label_config(xml)


# --------------------------------------------------------------------------- training


@dataclass
class ManualTraining:
    """Runs queued by Label Studio's "Start training" (``START_TRAINING``), outside the
    label gate, through ``trigger`` (a run of its own each time). Thread-safe counts for the
    health check."""

    trigger: Trigger
    queued: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self) -> None:
        """Call the trigger once; a failure is logged and counted, never raised."""
        try:
            self.trigger()
        except Exception as exc:  # the trigger talks to Prefect: log it, keep serving
            log.error("queueing a training run failed: %s", exc)
            with self._lock:
                self.failed += 1
            return
        with self._lock:
            self.queued += 1


# --------------------------------------------------------------------------- the app


def basic_auth(settings: Settings) -> Callable[..., None]:
    """A FastAPI dependency that checks HTTP Basic credentials, or accepts everyone when
    ``NER_ML_BACKEND_USER``/``NER_ML_BACKEND_PASSWORD`` are both unset.

    Raises :class:`ConfigError` when only one of them is set.
    """
    user = settings.ml_backend_user
    password = settings.ml_backend_password
    if (user is None) != (password is None):
        raise ConfigError("set both NER_ML_BACKEND_USER and NER_ML_BACKEND_PASSWORD, or neither")
    if user is None or password is None:
        return lambda: None
    expected = (user.encode("utf-8"), password.get_secret_value().encode("utf-8"))

    def check(credentials: Annotated[HTTPBasicCredentials | None, Depends(_BASIC)]) -> None:
        given = (
            (b"", b"")
            if credentials is None
            else (
                credentials.username.encode("utf-8"),
                credentials.password.encode("utf-8"),
            )
        )
        user_ok = hmac.compare_digest(given[0], expected[0])
        if not (hmac.compare_digest(given[1], expected[1]) and user_ok):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong credentials",
                headers={"WWW-Authenticate": "Basic"},
            )

    return check


def _triggers(settings: Settings, trigger: Trigger | None) -> tuple[Trigger, Trigger] | None:
    """``(on new labels, on "Start training")``, or None when training is off. New labels
    queue no run while one queued earlier has not started (it will read them); a person
    pressing "Start training" always gets a run of their own."""
    if not settings.ml_backend_train:
        return None
    if trigger is not None:
        return trigger, trigger
    # Imported here: `deployments` is not in the wheel (yet), and predictions must not need it.
    from deployments.label_trigger import deployment_name, start_training

    deployment = deployment_name(settings.env, settings.ml_backend_train_deployment)
    return start_training(deployment), start_training(deployment, coalesce=False)


def _receiver(settings: Settings, on_labels: Trigger) -> WebhookReceiver:
    return WebhookReceiver(
        on_labels,
        min_new_labels=settings.min_new_labels,
        actions=(*LABEL_ACTIONS, "ANNOTATIONS_CREATED"),
    )


def create_app(
    settings: Settings,
    *,
    loader: Loader | None = None,
    resolver: Resolver | None = None,
    trigger: Trigger | None = None,
) -> FastAPI:
    """The ML backend serving ``settings.serve_model`` to Label Studio (see the module doc).

    ``loader``/``resolver`` replace the MLflow model loader and alias lookup, ``trigger``
    the Prefect deployment run. The model is loaded when the app starts (its lifespan,
    :func:`apps.serving.model_lifespan`); one that cannot be loaded stops the start with
    :class:`ModelError`, except ``@champion`` not promoted yet while the alias is followed
    (``NER_SERVE_REFRESH_SECONDS`` > 0): the backend then starts, can be connected, answers
    ``503`` to predictions and loads the first champion by itself. Raises
    :class:`ConfigError` for half-set Basic credentials.
    """
    holder = model_holder(settings, loader, resolver)
    waiting = "/health says so and /predict answers 503 until a version is promoted"
    lifespan = model_lifespan(holder, settings.serve_refresh_seconds, waiting)
    app = FastAPI(
        title="brandloop ML backend",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.holder = holder
    # Label Studio sends no query string, but a user's webhook URL may: not refused here
    max_body = settings.ml_backend_max_body_bytes
    setting = "NER_ML_BACKEND_MAX_BODY_BYTES"
    app.add_middleware(RequestGuard, max_body_bytes=max_body, refuse_query=False, setting=setting)
    app.add_exception_handler(RequestValidationError, invalid_request)
    triggers = _triggers(settings, trigger)
    app.state.receiver = _receiver(settings, triggers[0]) if triggers else None
    app.state.manual = ManualTraining(triggers[1]) if triggers else None
    guard = Depends(basic_auth(settings))
    _protocol_routes(app, settings, holder, guard)
    return app


def _protocol_routes(app: FastAPI, settings: Settings, holder: ModelHolder, guard: Any) -> None:
    def current() -> LoadedModel:
        if not holder.loaded:
            reason = "no model loaded"
            if holder.awaiting_promotion:
                reason += " yet: waiting for the first promotion to @champion"
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, reason)
        return holder.served.model

    def version_or_waiting() -> str | None:
        """The served version; None while the first promotion is awaited (Label Studio
        connects a backend only when its health check and ``/setup`` answer 200)."""
        return None if holder.awaiting_promotion else current().version

    @app.get("/")
    @app.get("/health")
    def health() -> dict[str, Any]:
        version = version_or_waiting()
        return _health_body(app, version, holder.loaded and holder.failure is not None)

    takes_json = [guard, Depends(require_json_body)]  # credentials first, as serve

    @app.post("/setup", dependencies=takes_json)
    def setup(request: SetupRequest, background: BackgroundTasks) -> dict[str, str]:
        if request.label_config:
            _config_or_400(request.label_config)
        # Follow the alias after answering: Label Studio waits 3 s at most for /setup, and
        # loading a new version can take longer.
        background.add_task(holder.refresh_quietly)
        return {"model_version": version_or_waiting() or ""}

    @app.post("/predict", dependencies=takes_json)
    def predict(request: PredictRequest) -> PredictResponse:
        if not request.label_config:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "label_config is required")
        config = _config_or_400(request.label_config)
        if len(request.tasks) > settings.ml_backend_max_tasks:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{len(request.tasks)} tasks in one request; the limit is "
                f"{settings.ml_backend_max_tasks} (NER_ML_BACKEND_MAX_TASKS): select fewer "
                "tasks in Label Studio",
            )
        model = current()  # one model for the whole batch, even if the alias moves meanwhile
        results = predict_tasks(
            model, request.tasks, config, settings.labels, settings.serve_max_chars
        )
        return PredictResponse(results=results, model_version=model.version)

    _webhook_route(app, guard)


def _health_body(app: FastAPI, version: str | None, degraded: bool = False) -> dict[str, Any]:
    """``/health``'s answer: the served version (None while the first promotion is awaited),
    ``degraded`` while the last check of the alias or load of a new version failed (the
    status stays ``UP``, which Label Studio reads: the old version still answers), and, when
    the app receives webhooks, its label and run counts."""
    body: dict[str, Any] = {"status": "UP", "model_class": "brandloop", "model_version": version}
    if version is None:
        body["waiting"] = "no model yet: waiting for the first promotion to @champion"
    elif degraded:  # as brandloop serve's /health (trial AB)
        body["degraded"] = "the last check or load of the model failed: still serving this version"
    receiver: WebhookReceiver | None = app.state.receiver
    if receiver is not None:
        manual: ManualTraining = app.state.manual
        body["pending_labels"] = receiver.counter.pending
        body["runs_queued"] = receiver.stats.triggers + manual.queued
        body["runs_failed"] = receiver.stats.failures + manual.failed
    return body


def _config_or_400(label_config: str) -> LabelConfig:
    """The project's labelling config parsed (:func:`project_config`); 400 with the reason
    when Label Studio's XML cannot be used."""
    try:
        return project_config(label_config)
    except LabelStudioError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc


def _webhook_route(app: FastAPI, guard: Any) -> None:
    """``POST /webhook``: annotation events and "Start training" (when training is on)."""

    @app.post("/webhook", dependencies=[guard])
    async def webhook(request: Request, background: BackgroundTasks) -> dict[str, Any]:
        try:
            payload = await request.json()
        except ValueError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "body is not JSON") from exc
        receiver: WebhookReceiver | None = app.state.receiver
        if receiver is None:
            return {"accepted": False, "reason": "training is off (NER_ML_BACKEND_TRAIN)"}
        if isinstance(payload, Mapping) and payload.get("action") == START_TRAINING:
            background.add_task(app.state.manual.run)
            return {"accepted": True, "triggering": True}
        body, batch = receiver.handle(payload)
        if batch is not None:
            background.add_task(receiver.run_trigger, batch)
        return body.body()


# --------------------------------------------------------------------------- command line


def start_warnings(settings: Settings, host: str) -> list[str]:
    """What ``python -m apps.ml_backend`` must say before it listens on ``host``: without
    credentials, that anyone who reaches it gets predictions. Raises :class:`ConfigError`
    when training is on (``NER_ML_BACKEND_TRAIN``) without credentials (anyone could start
    runs) or without ``PREFECT_API_URL`` (the runs would go where no worker reads)."""
    anonymous = settings.ml_backend_user is None and settings.ml_backend_password is None
    if settings.ml_backend_train:
        from deployments.label_trigger import prefect_api_url

        problems = []
        if anonymous:
            problems.append(
                "NER_ML_BACKEND_TRAIN=true starts train-ner runs on webhooks: set "
                "NER_ML_BACKEND_USER and NER_ML_BACKEND_PASSWORD so that only Label Studio "
                "can (`brandloop labelstudio setup --ml-backend-url URL` gives them to it)"
            )
        try:
            prefect_api_url("the ML backend")
        except ConfigError as exc:
            problems.append(str(exc))
        if problems:
            raise ConfigError("; and ".join(problems))
    if not anonymous:
        return []
    return [
        f"no NER_ML_BACKEND_USER and NER_ML_BACKEND_PASSWORD: anyone who reaches {host} gets "
        "the champion's predictions; set both (Label Studio sends them) to require them"
    ]


def main(argv: Sequence[str] | None = None, overrides: Mapping[str, Any] | None = None) -> int:
    """``python -m apps.ml_backend [--host H] [--port N]``: serve until interrupted, with the
    environment's settings and ``overrides`` (``brandloop ml-backend --set``/``--model``)."""
    import uvicorn

    from apps.preflight import check_address, require_store

    parser = argparse.ArgumentParser(
        prog="python -m apps.ml_backend",
        description="The champion as a Label Studio ML backend.",
        epilog="Settings come from the environment as for every brandloop command: the model "
        "from NER_SERVE_MODEL (default: this environment's @champion) in the MLflow store of "
        "NER_MLFLOW_TRACKING_URI; HTTP Basic auth from NER_ML_BACKEND_USER and "
        "NER_ML_BACKEND_PASSWORD (both, or neither: it then answers anyone). See the README's "
        "'Label Studio ML backend'.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=port_number, default=9090, help="port to listen on")
    parser.add_argument("--log-level", default="info", help="uvicorn log level")
    args = parser.parse_args(argv)
    serving_mlflow_defaults(os.environ)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # the model holder's lines (serving X, the alias moved) are INFO of apps.serving, which
    # Prefect's logging setup (imported with the flows) may hold at WARNING
    for name in (log.name, "apps.serving"):
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        settings = deployment_settings(overrides, log.info, SERVING_VARIABLES)
        for line in start_warnings(settings, f"{args.host}:{args.port}"):
            log.warning("%s", line)
        app = create_app(settings)
        if settings.serve_model.startswith("models:/"):  # a missing SQLite store: refused,
            require_store(settings, flags=False)  # not created empty (as apps.serving)
        check_address(args.host, args.port, "--port", "--host")
        # loaded now, so that a model that cannot load is refused in one line
        load_at_start(app.state.holder, settings.serve_refresh_seconds, None)
    except (ConfigError, ModelError) as exc:
        log.error("%s", exc)
        return 1  # as the brandloop command line: 2 is argparse's usage error
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        timeout_graceful_shutdown=GRACEFUL_STOP_S,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
