"""Serve the champion over an authenticated REST API (FastAPI).

``python -m ner.serving`` (settings from ``NER_`` variables) starts it with uvicorn;
:func:`create_app` builds the ASGI app for any other server.

Endpoints
    ``GET /health``
        No authentication (for load balancers): ``200`` with the model version once a model
        is loaded.
    ``GET /v1/model``
        The served spec, the registry version behind it, when it was loaded and the last
        refresh error, if any.
    ``POST /v1/predict``
        ``{"posts": [{"id": "p1", "text": "..."}, ...]}`` (``id`` optional) →
        ``{"model_version": "brand-ner/3", "predictions": [{"id": "p1", "spans": [...]}]}``
        with code-point offsets (``text[start:end] == span.text``). At most
        ``NER_SERVE_MAX_POSTS`` posts of at most ``NER_SERVE_MAX_CHARS`` characters; a post
        over the limit is refused with ``413`` naming it.
    ``POST /v1/reload``
        Check the registry now and load the new version if the alias moved.

Every ``/v1`` call needs ``Authorization: Bearer <NER_SERVE_API_KEY>``; the server refuses
to start without a key. The token is compared in constant time and never logged.

Following the champion
    For a ``models:/<name>@<alias>`` spec the version behind the alias is resolved first and
    that exact version is loaded, so the reported version is the one answering. A background
    thread re-resolves the alias every ``NER_SERVE_REFRESH_SECONDS`` and swaps in a promoted
    (or rolled back) version without a restart; requests in flight finish on the model they
    started with. If loading the new version fails, the old one keeps serving and the error
    shows in ``/v1/model``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from ner.errors import ModelError
from ner.inference import predict_texts
from ner.models import LoadedModel, load_model, registry_version
from ner.settings import Settings

log = logging.getLogger(__name__)

Loader = Callable[[str], LoadedModel]
#: Reads ``Authorization: Bearer …``; module level so FastAPI can resolve the annotation.
_BEARER = HTTPBearer(auto_error=False)
Resolver = Callable[[str], str | None]


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Served:
    """The model answering requests, and where it came from."""

    model: LoadedModel
    spec: str
    loaded_at: datetime


class ModelHolder:
    """Holds the served model and swaps it when the alias it follows moves.

    ``loader`` turns a spec into a :class:`LoadedModel`; ``resolver`` returns the registry
    version a spec stands for (None for specs that do not move).
    """

    def __init__(self, spec: str, loader: Loader, resolver: Resolver) -> None:
        self.spec = spec
        self._loader = loader
        self._resolver = resolver
        self._served: Served | None = None
        self._swap_lock = threading.Lock()
        self.last_error: str | None = None
        self.last_check: datetime | None = None

    @property
    def served(self) -> Served:
        served = self._served
        if served is None:
            raise ModelError(f"no model loaded for {self.spec!r} yet")
        return served

    @property
    def loaded(self) -> bool:
        return self._served is not None

    def refresh(self, *, force: bool = False) -> bool:
        """Load the model if the version behind the spec changed; True when it swapped.

        Raises :class:`ModelError` when the spec cannot be resolved or loaded; the model
        served so far (if any) stays in place.
        """
        with self._swap_lock:
            self.last_check = datetime.now(UTC)
            try:
                version = self._resolver(self.spec)
                current = self._served
                if (
                    current is not None
                    and not force
                    and (version is None or version == current.model.version)
                ):
                    self.last_error = None
                    return False
                name, _, number = (version or "").rpartition("/")
                target = f"models:/{name}/{number}" if version else self.spec
                model = self._loader(target)
            except ModelError as exc:
                self.last_error = str(exc)
                raise
            if version is not None:
                model = LoadedModel(model.nlp, version)
            previous = None if current is None else current.model.version
            self._served = Served(model, target, datetime.now(UTC))
            self.last_error = None
            log.info("serving %s (was %s)", model.version, previous)
            return True

    def refresh_quietly(self) -> None:
        """:meth:`refresh` for the background thread: failures are logged, not raised."""
        try:
            self.refresh()
        except ModelError as exc:
            log.warning("model refresh failed, still serving the old model: %s", exc)


def _follow(holder: ModelHolder, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        holder.refresh_quietly()


# --------------------------------------------------------------------------- the API


class PostIn(BaseModel):
    """One post to tag."""

    id: str | None = Field(None, description="Caller's id, echoed back.")
    text: str


class PredictRequest(BaseModel):
    posts: list[PostIn] = Field(..., min_length=1)


class SpanOut(BaseModel):
    start: int
    end: int
    label: str
    text: str


class PredictionOut(BaseModel):
    id: str | None
    spans: list[SpanOut]


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[PredictionOut]


class ModelInfo(BaseModel):
    spec: str
    model_version: str
    loaded_from: str
    loaded_at: datetime
    last_check: datetime | None
    last_error: str | None


class ReloadResponse(BaseModel):
    changed: bool
    model_version: str


def _check_limits(posts: Sequence[PostIn], max_posts: int, max_chars: int) -> None:
    if len(posts) > max_posts:
        raise HTTPException(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"{len(posts)} posts in one request; the limit is {max_posts}",
        )
    for index, post in enumerate(posts):
        if len(post.text) > max_chars:
            name = f"post {post.id!r}" if post.id is not None else f"post #{index}"
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{name} has {len(post.text)} characters; the limit is {max_chars}",
            )


def create_app(
    settings: Settings,
    *,
    loader: Loader | None = None,
    resolver: Resolver | None = None,
) -> FastAPI:
    """The REST app serving ``settings.serve_model``.

    Raises :class:`~ner.errors.ConfigError` when ``NER_SERVE_API_KEY`` is not set. The model
    is loaded when the app starts (its lifespan), not here; a model that cannot be loaded
    stops the start with :class:`ModelError`.
    """
    token = settings.require_secret("serve_api_key").encode("utf-8")
    tracking_uri = settings.mlflow_tracking_uri
    labels = settings.labels

    def default_loader(spec: str) -> LoadedModel:
        return load_model(
            spec,
            labels=labels,
            base_model=settings.base_model,
            label_map=settings.base_label_map,
            tracking_uri=tracking_uri,
        )

    holder = ModelHolder(
        settings.serve_model,
        loader or default_loader,
        resolver or (lambda spec: registry_version(spec, tracking_uri)),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        started = time.perf_counter()
        holder.refresh(force=True)
        log.info("loaded %s in %.1f s", holder.served.model.version, time.perf_counter() - started)
        stop = threading.Event()
        thread = None
        if settings.serve_refresh_seconds > 0:
            thread = threading.Thread(
                target=_follow,
                args=(holder, settings.serve_refresh_seconds, stop),
                name="brandloop-model-refresh",
                daemon=True,
            )
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join(timeout=5)

    app = FastAPI(title="brandloop", summary="Brand mentions in posts", lifespan=lifespan)
    app.state.holder = holder

    def authorised(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        given = b"" if credentials is None else credentials.credentials.encode("utf-8")
        if credentials is None or not hmac.compare_digest(given, token):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.get("/health")
    def health() -> dict[str, Any]:
        if not holder.loaded:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no model loaded")
        return {"status": "ok", "model_version": holder.served.model.version}

    @app.get("/v1/model", dependencies=[Depends(authorised)])
    def model_info() -> ModelInfo:
        served = holder.served
        return ModelInfo(
            spec=holder.spec,
            model_version=served.model.version,
            loaded_from=served.spec,
            loaded_at=served.loaded_at,
            last_check=holder.last_check,
            last_error=holder.last_error,
        )

    @app.post("/v1/predict", dependencies=[Depends(authorised)])
    def predict(request: PredictRequest) -> PredictResponse:
        _check_limits(request.posts, settings.serve_max_posts, settings.serve_max_chars)
        model = holder.served.model  # one model for the whole request, even mid-swap
        spans = predict_texts(model.nlp, [post.text for post in request.posts], labels)
        return PredictResponse(
            model_version=model.version,
            predictions=[
                PredictionOut(
                    id=post.id,
                    spans=[
                        SpanOut(start=s.start, end=s.end, label=s.label, text=s.text) for s in found
                    ],
                )
                for post, found in zip(request.posts, spans, strict=True)
            ],
        )

    @app.post("/v1/reload", dependencies=[Depends(authorised)])
    def reload() -> ReloadResponse:
        try:
            changed = holder.refresh()
        except ModelError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
        return ReloadResponse(changed=changed, model_version=holder.served.model.version)

    return app


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ner.serving``: serve ``NER_SERVE_MODEL`` on ``NER_SERVE_HOST:PORT``."""
    import uvicorn

    from ner.settings import load_settings

    del argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    settings = load_settings()
    app = create_app(settings)
    uvicorn.run(app, host=settings.serve_host, port=settings.serve_port, log_level="info")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
