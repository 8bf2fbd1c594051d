"""Serve the champion over an authenticated REST API (FastAPI).

``python -m apps.serving`` (settings from ``NER_`` variables) starts it with uvicorn;
:func:`create_app` builds the ASGI app for any other server.

Endpoints
    ``GET /health``, ``GET /ping``
        No authentication (load balancers, SageMaker's health check): ``200`` with the model
        version once a model is loaded, ``503`` before.
    ``GET /v1/model``
        The served spec, the registry version behind it, when it was loaded and the last
        refresh error, if any.
    ``POST /v1/predict``, ``POST /invocations``
        ``{"posts": [{"id": "p1", "text": "..."}, ...]}`` (``id`` optional: a post without
        one gets its position in the request, from 0, as text, like the pyfunc's row number) →
        ``{"model_version": "brand-ner/3", "predictions": [{"id": "p1", "spans": [...]}]}``
        with code-point offsets (``text[start:end] == span.text``). The body must be sent as
        ``Content-Type: application/json`` (else ``415``). ``/invocations`` is the SageMaker
        container contract for the same call.
    ``POST /v1/reload``
        Check the registry now and load the new version if the alias moved.

Authentication
    Every call but the health checks needs ``Authorization: Bearer <token>``, one of
    ``NER_SERVE_API_KEY`` and ``NER_SERVE_API_KEYS`` (comma-separated or a JSON list, one
    token per client); the server refuses to start without one. Tokens are compared in
    constant time and never logged. A query string is refused (``400``), so no token rides
    in a URL, and the access log shows ``?<redacted>`` in place of any query.

Limits (each refusal is a JSON ``{"detail": ...}`` naming the post)
    The body is cut off at ``NER_SERVE_MAX_BODY_BYTES`` before it is parsed, whether it
    declares a ``Content-Length`` or streams (``413``). At most ``NER_SERVE_MAX_POSTS`` posts,
    each at most ``NER_SERVE_MAX_CHARS`` characters and all together at most
    ``NER_SERVE_MAX_TOTAL_CHARS`` (``413``). A post whose text or id holds a lone surrogate
    (not valid Unicode) is a ``422``; the connection stays open.

Following the champion
    For a ``models:/<name>@<alias>`` spec the version behind the alias is resolved first and
    that exact version is loaded, so the reported version is the one answering. A background
    thread re-resolves the alias every ``NER_SERVE_REFRESH_SECONDS`` and swaps in a promoted
    (or rolled back) version without a restart; requests in flight finish on the model they
    started with. If loading the new version fails, the old one keeps serving and the error
    shows in ``/v1/model``. A server started before any version was promoted (the alias is
    not set yet, or the environment's model not registered yet) starts without a model and
    answers ``503`` with the reason until the first promotion, which it then loads by itself
    (``/v1/reload`` checks at once); with ``NER_SERVE_REFRESH_SECONDS`` at 0 it refuses to
    start instead.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ner.errors import BrandloopError, ConfigError, ModelError, NotPromotedYetError
from ner.inference import predict_texts
from ner.models import (
    LoadedModel,
    RegistryRef,
    configured_brands,
    load_model,
    pinned_ref,
    registry_ref,
)
from ner.pyfunc import row_ids
from ner.settings import Settings

#: One name whether imported or run as ``python -m apps.serving`` (``__name__`` is then
#: ``__main__``), so its level can be set from outside.
log = logging.getLogger("apps.serving")

Loader = Callable[[str], LoadedModel]
#: Reads ``Authorization: Bearer …``; module level so FastAPI can resolve the annotation.
_BEARER = HTTPBearer(auto_error=False)
Resolver = Callable[[str], RegistryRef | None]
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


# --------------------------------------------------------------------------- the model


@dataclass(frozen=True)
class Served:
    """The model answering requests, and where it came from."""

    model: LoadedModel
    spec: str
    loaded_at: datetime
    #: The registry version loaded (None for a spec that does not follow an alias).
    ref: RegistryRef | None = None


def _replaced(current: Served | None, ref: RegistryRef | None) -> str:
    """`` (was brand-ner/2)`` after a swap; a version of the same number from another run
    (the store was rebuilt) says so."""
    if current is None:
        return ""
    if ref is not None and current.ref is not None and ref.version == current.ref.version:
        return f" (logged by run {ref.run_id}; the one served so far by run {current.ref.run_id})"
    return f" (was {current.model.version})"


class ModelHolder:
    """Holds the served model and swaps it when the alias it follows moves.

    ``loader`` turns a spec into a :class:`LoadedModel`; ``resolver`` returns the registry
    version a spec stands for (None for specs that do not move). A version of the same
    number logged by another run (a store rebuilt under a running server) is a new one.
    """

    def __init__(self, spec: str, loader: Loader, resolver: Resolver) -> None:
        self.spec = spec
        self._loader = loader
        self._resolver = resolver
        self._served: Served | None = None
        self._swap_lock = threading.Lock()
        #: Why the last refresh failed (None after a good one).
        self.failure: ModelError | None = None
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

    @property
    def last_error(self) -> str | None:
        return None if self.failure is None else str(self.failure)

    @property
    def awaiting_promotion(self) -> bool:
        """Nothing is served because no version is ``@champion`` yet."""
        return not self.loaded and isinstance(self.failure, NotPromotedYetError)

    def refresh(self, *, force: bool = False, wait_s: float | None = None) -> bool:
        """Load the model if the version behind the spec changed; True when it swapped.

        Raises :class:`ModelError` when the spec cannot be resolved or loaded (the model
        served so far, if any, stays in place), or when another refresh still runs after
        ``wait_s`` seconds (None: wait for it).
        """
        if not self._swap_lock.acquire(timeout=-1 if wait_s is None else wait_s):
            raise ModelError(
                f"another check of {self.spec!r} is still running after {wait_s:.0f} s (is "
                "MLflow answering?); the model served so far stays: try again later"
            )
        try:
            return self._refresh(force)
        finally:
            self._swap_lock.release()

    def _refresh(self, force: bool) -> bool:
        """:meth:`refresh` with the swap lock held."""
        self.last_check = datetime.now(UTC)
        try:
            ref = self._resolver(self.spec)
            current = self._served
            if current is not None and not force and (ref is None or ref == current.ref):
                self.failure = None
                return False
            target = f"models:/{ref.version}" if ref else self.spec
            model = self._loader(target)
        except ModelError as exc:
            self.failure = exc
            raise
        if ref is not None:
            model = LoadedModel(model.nlp, ref.version)
        self._served = Served(model, target, datetime.now(UTC), ref)
        self.failure = None
        log.info("serving %s%s", model.version, _replaced(current, ref))
        return True

    def refresh_quietly(self) -> None:
        """:meth:`refresh` for the background thread: failures are logged, not raised; a
        failure that repeats the last one word for word is logged at DEBUG only, so a server
        waiting for its first promotion says so once, not at every check."""
        before = self.last_error
        try:
            self.refresh()
        except ModelError as exc:
            level = logging.DEBUG if str(exc) == before else logging.WARNING
            if self.loaded:
                log.log(level, "model refresh failed, still serving the old model: %s", exc)
            else:
                log.log(level, "still no model to serve: %s", exc)


def _follow(holder: ModelHolder, every: float, stop: threading.Event) -> None:
    while not stop.wait(every):
        holder.refresh_quietly()


def load_at_start(holder: ModelHolder, refresh_seconds: float, waiting: str | None) -> None:
    """Load the model a server starts with, unless it is loaded already: a command line
    loads it before the server starts (``waiting`` None), so that a model that cannot load
    is refused in one line, not in uvicorn's traceback. Raises :class:`ModelError`, except
    for an alias not set yet while it is followed (``refresh_seconds`` > 0): that is logged
    with ``waiting``, what the app answers meanwhile (by the app's start)."""
    if holder.loaded:
        return
    started = time.perf_counter()
    try:
        holder.refresh(force=True)
    except NotPromotedYetError as exc:
        if refresh_seconds <= 0:
            raise
        if waiting is None:  # the app's start says it
            return
        log.warning(
            "%s\nwaiting for it: %s (checked every %.0f s, NER_SERVE_REFRESH_SECONDS)",
            exc,
            waiting,
            refresh_seconds,
        )
    else:
        elapsed = time.perf_counter() - started
        log.info("loaded %s in %.1f s", holder.served.model.version, elapsed)


def model_lifespan(
    holder: ModelHolder,
    refresh_seconds: float,
    waiting: str = "/health answers 503 until a version is promoted",
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """Load the model at start (:class:`ModelError` stops the start, except an alias not set
    yet when it is followed: then ``waiting`` says what the app answers meanwhile), then
    follow its alias every ``refresh_seconds`` (0 = never) in a daemon thread stopped at
    shutdown."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        load_at_start(holder, refresh_seconds, waiting)
        stop = threading.Event()
        thread = None
        if refresh_seconds > 0:
            thread = threading.Thread(
                target=_follow,
                args=(holder, refresh_seconds, stop),
                name="brandloop-model-refresh",
                daemon=True,
            )
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:  # a daemon: a check still hanging does not hold the stop
                thread.join(timeout=1)

    return lifespan


# --------------------------------------------------------------------------- the schema


def lone_surrogate(value: str) -> int | None:
    """Index of the first lone surrogate in ``value`` (it cannot be UTF-8 encoded), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


class PostIn(BaseModel):
    """One post to tag; its text and id must be valid Unicode (no lone surrogate), its id
    not empty or blank."""

    id: str | None = Field(
        None, description="Caller's id, echoed back (an integer as its decimal text)."
    )
    text: str

    @field_validator("id", mode="before")
    @classmethod
    def _integer_id_as_text(cls, value: object) -> object:
        """An integer id is read as its text, as a JSONL source reads it (trial AR: the
        file's ``7`` was post "7", the API's a 422); anything else but a string is refused
        in the JSONL source's words (trial AS read "a valid string" beside integers)."""
        if isinstance(value, bool) or not isinstance(value, str | int | None):
            raise ValueError(f"id must be a string or an integer, got {value!r}")
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _valid_unicode(self) -> PostIn:
        if self.id is not None and not self.id.strip():  # "  " too (trial Z)
            raise ValueError(
                f"id is {'empty' if self.id == '' else 'blank'}: leave the id out to answer "
                "as the post's position, or give the post its own id"
            )
        for field, value in (("id", self.id), ("text", self.text)):
            at = None if value is None else lone_surrogate(value)
            if at is not None:
                raise ValueError(
                    f"post {self.id!a}: {field} holds a lone surrogate at character {at} "
                    "(not valid Unicode); send the text as UTF-8"
                )
        return self


class PredictRequest(BaseModel):
    """The body: ``posts`` and nothing else (a field beside it, such as MLflow's
    ``dataframe_records``, is refused rather than ignored)."""

    model_config = ConfigDict(extra="forbid")

    posts: list[PostIn] = Field(..., min_length=1)

    @field_validator("posts")
    @classmethod
    def _distinct_ids(cls, posts: list[PostIn]) -> list[PostIn]:
        """Each post answers under its own id: a post without one answers as its position,
        which must not be another post's id (the answers could not be told apart)."""
        first: dict[str, int] = {}
        for position, post_id in enumerate(row_ids([post.id for post in posts])):
            if post_id in first:
                raise ValueError(
                    f"posts {first[post_id]} and {position} would both answer as id "
                    f"{post_id!a} (a post without an id answers as its position, from 0): "
                    "give every post its own id"
                )
            first[post_id] = position
        return posts


class SpanOut(BaseModel):
    start: int
    end: int
    label: str
    text: str


class PredictionOut(BaseModel):
    id: str = Field(..., description="The post's id, else its position in the request (0-based).")
    spans: list[SpanOut]


class PredictResponse(BaseModel):
    model_version: str
    predictions: list[PredictionOut]


class ModelInfo(BaseModel):
    spec: str
    model_version: str
    #: The MLflow run that logged the version (None for a spec that is not an alias): a
    #: store rebuilt under the server gives a version of the same number another run.
    run_id: str | None = None
    loaded_from: str
    loaded_at: datetime
    last_check: datetime | None
    last_error: str | None


class ReloadResponse(BaseModel):
    changed: bool
    model_version: str


class HealthResponse(BaseModel):
    """``status`` ``ok``, or ``degraded`` while the last check of the alias failed (the
    model served stays; ``detail`` says so without registry names, which need the token:
    ``/v1/model``)."""

    status: Literal["ok", "degraded"]
    model_version: str
    detail: str | None = None


# --------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class Limits:
    """What one request may ask for: bytes of body, posts, characters per post and in all."""

    max_body_bytes: int
    max_posts: int
    max_chars: int
    max_total_chars: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(
            max_body_bytes=settings.serve_max_body_bytes,
            max_posts=settings.serve_max_posts,
            max_chars=settings.serve_max_chars,
            max_total_chars=settings.serve_max_total_chars,
        )

    def check(self, posts: Sequence[PostIn]) -> None:
        """Raise ``HTTPException(413)`` naming the first post over a limit."""
        if len(posts) > self.max_posts:
            raise HTTPException(
                status.HTTP_413_CONTENT_TOO_LARGE,
                f"{len(posts)} posts in one request; the limit is {self.max_posts}",
            )
        total = 0
        for index, post in enumerate(posts):
            name = f"post {post.id!r}" if post.id is not None else f"post #{index}"
            total += len(post.text)
            if len(post.text) > self.max_chars:
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    f"{name} has {len(post.text)} characters; the limit is {self.max_chars}",
                )
            if total > self.max_total_chars:
                raise HTTPException(
                    status.HTTP_413_CONTENT_TOO_LARGE,
                    f"{name} brings the request to {total} characters; the limit is "
                    f"{self.max_total_chars} per request",
                )


class RequestGuard:
    """ASGI middleware run before any parsing: refuses a query string (``400``: tokens
    never ride in URLs; unless not ``refuse_query``) and a body over ``max_body_bytes``
    (``413``, naming the ``setting`` that sets it), counted from ``Content-Length`` when
    declared and on the bytes as they stream in either way."""

    def __init__(
        self,
        app: ASGIApp,
        max_body_bytes: int,
        refuse_query: bool = True,
        setting: str = "NER_SERVE_MAX_BODY_BYTES",
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.refuse_query = refuse_query
        self.setting = setting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.refuse_query and scope.get("query_string"):
            detail = "query strings are not accepted; send the token as Authorization: Bearer"
            await JSONResponse({"detail": detail}, status.HTTP_400_BAD_REQUEST)(
                scope, receive, send
            )
            return
        if scope["method"] not in _BODY_METHODS:
            await self.app(scope, receive, send)
            return
        body = await self._read_body(scope, receive)
        if body is None:
            detail = f"request body over the limit of {self.max_body_bytes} bytes ({self.setting})"
            response = JSONResponse({"detail": detail}, status.HTTP_413_CONTENT_TOO_LARGE)
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to be over the limit."""
        for name, value in scope["headers"]:
            if name == b"content-length" and (
                not value.isdigit() or int(value) > self.max_body_bytes
            ):
                return None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return b"".join(chunks)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def _printable(value: object) -> object:
    """``value`` safe to serialise as UTF-8 JSON: strings with lone surrogates escaped."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 listing each problem with its place and, for a post, its index (``post``). The
    input values are left out: they may be what cannot be encoded."""
    if not isinstance(exc, RequestValidationError):  # registered for that class only
        raise exc
    problems = []
    for error in exc.errors():
        loc = [_printable(part) for part in error.get("loc", ())]
        problem: dict[str, Any] = {"loc": loc, "msg": _printable(error.get("msg", ""))}
        problem["type"] = error.get("type")
        if loc[:2] == ["body", "posts"] and len(loc) > 2 and isinstance(loc[2], int):
            problem["post"] = loc[2]
        if _about_the_body_shape(loc, error.get("type")) or error.get("type") == "json_invalid":
            problem["hint"] = POSTS_HINT
        problems.append(problem)
    return JSONResponse({"detail": problems}, status.HTTP_422_UNPROCESSABLE_CONTENT)


async def unreadable_body(request: Request, exc: Exception) -> Response:
    """400 saying why FastAPI could not parse a body, which it answers with only "There was
    an error parsing the body" (its ``HTTPException`` raised from the cause): not UTF-8
    (the first bad byte's offset), or JSON nested deeper than Python's parser goes. Every
    other HTTP error goes to FastAPI's own handler (``WWW-Authenticate`` of a 401 kept)."""
    if not isinstance(exc, StarletteHTTPException):  # registered for that class only
        raise exc
    cause = exc.__cause__
    if exc.status_code != status.HTTP_400_BAD_REQUEST or cause is None:
        return await http_exception_handler(request, exc)
    if isinstance(cause, UnicodeDecodeError) and cause.end >= len(cause.object):
        why = f"the body ends inside a character (byte {cause.start} on): is it cut short?"
    elif isinstance(cause, UnicodeDecodeError):
        bad = cause.object[cause.start : cause.start + 1].hex()
        why = f"the body is not UTF-8: byte {cause.start} (0x{bad}) is not part of a character"
    elif isinstance(cause, RecursionError):
        why = "the body's JSON is nested too deeply to read"
    else:  # e.g. an integer of more digits than Python converts (its advice to the server
        # about sys.set_int_max_str_digits left out)
        why = f"the body could not be read as JSON: {str(cause).split(';')[0][:300]}"
    return JSONResponse({"detail": why, "hint": POSTS_HINT}, status.HTTP_400_BAD_REQUEST)


def _about_the_body_shape(loc: list[Any], error_type: Any) -> bool:
    """True for a body without ``posts``, not an object, or with a field beside ``posts``."""
    missing = loc in (["body", "posts"], ["body"]) and error_type in MISSING_POSTS
    return missing or (len(loc) == 2 and loc[0] == "body" and error_type == "extra_forbidden")


#: Errors of a body without ``posts`` or not an object at all (pydantic's types).
MISSING_POSTS = ("missing", "model_attributes_type", "dict_type")
#: Said when a body has no ``posts``, or a field beside it (a trial sent MLflow's
#: ``dataframe_records``).
POSTS_HINT = (
    'this API takes {"posts": [{"id": "p1", "text": "..."}]}; MLflow\'s scoring format '
    "(dataframe_records, dataframe_split, inputs, instances) is served by `mlflow models "
    "serve` on the registered model"
)


def is_json_media_type(content_type: str) -> bool:
    """True for ``application/json`` and ``application/*+json``, any case, any parameters:
    the bodies FastAPI parses as JSON."""
    maintype, _, subtype = content_type.partition(";")[0].strip().lower().partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def require_json_body(request: Request) -> None:
    """FastAPI dependency: ``415`` unless the body is declared JSON. Without it, ``curl -d``
    (form-encoded) got a 422 saying the input "should be a valid dictionary"."""
    declared = request.headers.get("content-type", "")
    if not is_json_media_type(declared):
        media = declared.partition(";")[0].strip()[:100]
        got = f"Content-Type {media!r}" if media else "no Content-Type"
        raise HTTPException(
            status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
            f"the body must be JSON sent with Content-Type: application/json (got {got})",
        )


# --------------------------------------------------------------------------- auth


def token_digests(settings: Settings) -> tuple[bytes, ...]:
    """SHA-256 of every accepted bearer token (``serve_api_key`` and ``serve_api_keys``).

    Raises :class:`ConfigError` when there is none (the server never runs open), or when
    ``NER_SERVE_API_KEY_BLOCK`` names a Secret block that could not be read.
    """
    if (problem := settings.secret_block_problem("serve_api_key")) is not None:
        raise ConfigError(problem)
    secrets = (settings.serve_api_key, *settings.serve_api_keys)
    tokens = [s.get_secret_value() for s in secrets if s is not None and s.get_secret_value()]
    if not tokens and settings.serve_api_key_block:  # read, and found empty
        raise ConfigError(
            f"the Prefect Secret block {settings.serve_api_key_block!r} "
            "(NER_SERVE_API_KEY_BLOCK) gave no value: save a bearer token in that block, or "
            "set NER_SERVE_API_KEY; the REST API needs at least one"
        )
    if not tokens:
        raise ConfigError(
            "NER_SERVE_API_KEY (or NER_SERVE_API_KEYS) is not set: the REST API needs at "
            "least one bearer token (or NER_SERVE_API_KEY_BLOCK, a Prefect Secret block)."
        )
    for number, token in enumerate(tokens, 1):
        if (problem := token_problem(token)) is not None:
            raise ConfigError(
                f"bearer token {number} of {_token_sources(settings)} {problem} "
                f"(the token is not shown); set one nobody can guess, e.g. {TOKEN_RECIPE}"
            )
        if len(token) < SHORT_TOKEN:
            log.warning(
                "bearer token %d of %s has %d characters: "
                "fine on 127.0.0.1, guessable anywhere else; e.g. %s",
                number,
                _token_sources(settings),
                len(token),
                TOKEN_RECIPE,
            )
    return tuple(hashlib.sha256(token.encode("utf-8")).digest() for token in tokens)


def _token_sources(settings: Settings) -> str:
    """Where the bearer tokens come from, as a refusal or warning names them: the Secret
    block too, when one is named (a trial's blank block was blamed on the variables)."""
    block = settings.serve_api_key_block
    first = f"NER_SERVE_API_KEY (or its Secret block {block!r})" if block else "NER_SERVE_API_KEY"
    return f"{first} / NER_SERVE_API_KEYS"


#: Bearer tokens shorter than this are warned about at start (not refused: the README's
#: local examples use short ones).
SHORT_TOKEN = 16
#: How to make a token nobody can guess.
TOKEN_RECIPE = "python3 -c 'import secrets; print(secrets.token_hex(20))'"
#: Tokens the examples say to replace (``deployments/.env.example``), refused as bearer tokens.
PLACEHOLDER_TOKENS = frozenset({"change-me", "changeme", "change-me-please"})


def token_problem(token: str) -> str | None:
    """Why ``token`` cannot be a bearer token (None when it can): blank, with spaces
    around it (a client sends it stripped), or an example's placeholder."""
    if not token.strip():
        return "is blank: no request could send it"
    if token != token.strip():
        return "has spaces around it: a client's header would not match it"
    if token.strip().lower() in PLACEHOLDER_TOKENS:
        return "is the example's placeholder"
    return None


class BearerAuth:
    """FastAPI dependency: ``401`` unless the bearer token is one of the accepted ones.

    Digests of equal length are compared with :func:`hmac.compare_digest`, each of them
    every time, so neither the token's length nor which token matched shows in the timing.
    """

    def __init__(self, digests: Sequence[bytes]) -> None:
        self._digests = tuple(digests)

    def __call__(
        self,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        given = b"" if credentials is None else credentials.credentials.encode("utf-8")
        digest = hashlib.sha256(given).digest()
        matches = [hmac.compare_digest(digest, accepted) for accepted in self._digests]
        if credentials is None or not any(matches):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "missing or wrong bearer token (send Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )


# --------------------------------------------------------------------------- the API


def _serving(holder: ModelHolder) -> Served:
    """The served model; ``503`` while none is loaded yet: :func:`_not_loaded`'s reason,
    then the last error in full (registry names: these callers hold the token)."""
    if not holder.loaded:
        detail = f"{_not_loaded(holder)} ({holder.last_error or 'loading'})"
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, detail)
    return holder.served


def _not_loaded(holder: ModelHolder) -> str:
    """Why there is no model yet, without registry names (``/health`` needs no token)."""
    if holder.awaiting_promotion:
        return "no model loaded yet: waiting for the first promotion to @champion"
    return "no model loaded yet"


def _predict(
    holder: ModelHolder, request: PredictRequest, labels: Sequence[str]
) -> PredictResponse:
    model = _serving(holder).model  # one model for the whole request, even mid-swap
    found = predict_texts(model.nlp, [post.text for post in request.posts], labels)
    ids = row_ids([post.id for post in request.posts])  # the pyfunc's ids: 0-based positions
    return PredictResponse(
        model_version=model.version,
        predictions=[
            PredictionOut(
                id=post_id,
                spans=[
                    SpanOut(start=s.start, end=s.end, label=s.label, text=s.text) for s in spans
                ],
            )
            for post_id, spans in zip(ids, found, strict=True)
        ],
    )


def _add_health_routes(app: FastAPI, holder: ModelHolder) -> None:
    def health() -> HealthResponse:
        if not holder.loaded:  # the reason in full is for the token's holders (_serving)
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, _not_loaded(holder))
        version = holder.served.model.version
        if holder.failure is not None:  # a monitor on /health alone saw "ok" (trial Z)
            detail = "the last check or load of the model failed: still serving this version"
            return HealthResponse(status="degraded", model_version=version, detail=detail)
        return HealthResponse(status="ok", model_version=version)

    app.get("/health", response_model_exclude_none=True)(health)
    app.get("/ping", response_model_exclude_none=True)(health)


def _add_model_routes(
    app: FastAPI, holder: ModelHolder, auth: BearerAuth, limits: Limits, labels: Sequence[str]
) -> None:
    guarded = [Depends(auth)]
    takes_json = [*guarded, Depends(require_json_body)]  # the token is checked first

    def predict(request: PredictRequest) -> PredictResponse:
        limits.check(request.posts)
        return _predict(holder, request, labels)

    def model_info() -> ModelInfo:
        served = _serving(holder)
        return ModelInfo(
            spec=holder.spec,
            model_version=served.model.version,
            run_id=served.ref.run_id if served.ref else None,
            loaded_from=served.spec,
            loaded_at=served.loaded_at,
            last_check=holder.last_check,
            last_error=holder.last_error,
        )

    def reload() -> ReloadResponse:
        try:
            changed = holder.refresh(wait_s=RELOAD_WAIT_S)
        except ModelError as exc:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from exc
        return ReloadResponse(changed=changed, model_version=holder.served.model.version)

    app.post("/v1/predict", dependencies=takes_json)(predict)
    app.post("/invocations", dependencies=takes_json)(predict)
    app.get("/v1/model", dependencies=guarded)(model_info)
    app.post("/v1/reload", dependencies=guarded)(reload)

    def openapi() -> dict[str, Any]:
        return app.openapi()

    # the schema needs the token like every call but the health checks; no /docs pages
    app.get("/openapi.json", dependencies=guarded, include_in_schema=False)(openapi)


def model_holder(
    settings: Settings, loader: Loader | None = None, resolver: Resolver | None = None
) -> ModelHolder:
    """A :class:`ModelHolder` of ``settings.serve_model``: loaded with the settings' labels,
    base model and MLflow, its alias resolved in that registry (both replaceable)."""
    tracking_uri = settings.mlflow_tracking_uri
    own_model = settings.registered_model_name

    def default_loader(spec: str) -> LoadedModel:
        return load_model(
            spec,
            labels=settings.labels,
            base_model=settings.base_model,
            label_map=settings.base_label_map,
            tracking_uri=tracking_uri,
            brands=configured_brands(settings),
        )

    def default_resolver(spec: str) -> RegistryRef | None:  # an alias, else a pinned version
        found = registry_ref(spec, tracking_uri, own_model=own_model)
        return found if found is not None else pinned_ref(spec, tracking_uri)

    return ModelHolder(settings.serve_model, loader or default_loader, resolver or default_resolver)


def create_app(
    settings: Settings,
    *,
    loader: Loader | None = None,
    resolver: Resolver | None = None,
) -> FastAPI:
    """The REST app serving ``settings.serve_model``.

    Raises :class:`~ner.errors.ConfigError` when no bearer token is set. The model is loaded
    when the app starts (its lifespan), not here; a model that cannot be loaded stops the
    start with :class:`ModelError`, except an alias not set yet while the alias is followed
    (``serve_refresh_seconds`` > 0): the app then starts and answers ``503`` until then.
    """
    auth = BearerAuth(token_digests(settings))
    holder = model_holder(settings, loader, resolver)
    app = FastAPI(
        title="brandloop",
        summary="Brand mentions in posts",
        lifespan=model_lifespan(holder, settings.serve_refresh_seconds),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served with the token instead (_add_model_routes)
    )
    app.state.holder = holder
    limits = Limits.from_settings(settings)
    app.add_middleware(RequestGuard, max_body_bytes=limits.max_body_bytes)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, unreadable_body)
    _add_health_routes(app, holder)
    _add_model_routes(app, holder, auth, limits, settings.labels)
    return app


# --------------------------------------------------------------------------- the server


#: Seconds ``POST /v1/reload`` waits for a check of the alias already running (the
#: background one) before it answers 503.
RELOAD_WAIT_S = 10.0
#: MLflow's settings in a serving process, unless set in its environment: HTTP retries and
#: per-request timeout (s), since the SDK's defaults (7 retries with back-off, 120 s) held a
#: reload, and the server's stop, for minutes while MLflow was down; and a database store
#: opened afresh at each check (SQLAlchemy's ``NullPool``), since a pooled SQLite connection
#: kept reading a store file deleted and rebuilt under the server (trial AL: a second demo).
SERVE_MLFLOW_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool",
}
#: Seconds a stopping server (SIGTERM, Ctrl+C) waits for requests still open.
GRACEFUL_STOP_S = 10


#: MLflow's logger of database errors: it logs each with its traceback (three of 60 lines
#: in a trial, while the demo rebuilt the store a server read), where the server's own
#: warning already names the error (``model refresh failed, still serving ...``).
MLFLOW_DB_LOGGER = "mlflow.store.db.utils"


#: The deployment values (``BRANDLOOP_<ENV>_*``) a serving process takes: MLflow only, as it
#: reads no storage (a trial's serve named dev's storage, which it never opens).
SERVING_VARIABLES = ("mlflow_tracking_uri",)


def serving_mlflow_defaults(environ: MutableMapping[str, str]) -> None:
    """Set :data:`SERVE_MLFLOW_ENV` in ``environ`` (a serving process's ``os.environ``)
    where the user set nothing: a down MLflow then fails a check in seconds, and a rebuilt
    SQLite store is read as it is now. Holds :data:`MLFLOW_DB_LOGGER` at CRITICAL."""
    for name, value in SERVE_MLFLOW_ENV.items():
        environ.setdefault(name, value)
    logging.getLogger(MLFLOW_DB_LOGGER).setLevel(logging.CRITICAL)


class RedactQuery(logging.Filter):
    """Rewrites uvicorn access-log records so no query string (and no token in one) is
    written: ``GET /v1/model?api_key=x`` is logged as ``GET /v1/model?<redacted>``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            path, query, _ = args[2].partition("?")
            if query:
                record.args = (*args[:2], f"{path}?<redacted>", *args[3:])
        return True


def port_number(text: str) -> int:
    """``--port``'s value: an integer from 1 to 65535, else argparse's usage error (as
    ``brandloop serve --port`` gives)."""
    import argparse

    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not in the range 1-65535")
    return port


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m apps.serving [--host H] [--port P] [--model SPEC]``: serve ``NER_SERVE_MODEL``
    on ``NER_SERVE_HOST:NER_SERVE_PORT`` (the options override them), as ``brandloop serve``
    does, with its checks before the model loads (:func:`apps.preflight.check_servable`).
    A refusal is one ``error:`` line on stderr and exit code 1."""
    import argparse

    from apps.preflight import check_servable
    from flows.context import deployment_settings

    parser = argparse.ArgumentParser(
        prog="python -m apps.serving",
        description="Serve the champion over an authenticated REST API (as brandloop serve).",
        epilog="Needs a bearer token: NER_SERVE_API_KEY, NER_SERVE_API_KEYS (several, "
        "comma-separated or a JSON list) or NER_SERVE_API_KEY_BLOCK (a Prefect Secret "
        "block). Other settings: the NER_ variables (README, Configuration); with NER_ENV=<env>, "
        "BRANDLOOP_<ENV>_MLFLOW_TRACKING_URI when NER_MLFLOW_TRACKING_URI is not set.",
    )
    parser.add_argument("--host", help="address to listen on (default: NER_SERVE_HOST)")
    parser.add_argument("--port", type=port_number, help="port (default: NER_SERVE_PORT)")
    parser.add_argument("--model", metavar="SPEC", help="model (default: NER_SERVE_MODEL)")
    args = parser.parse_args(argv)
    serving_mlflow_defaults(os.environ)
    given = {"serve_host": args.host, "serve_port": args.port, "serve_model": args.model}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    log.setLevel(logging.INFO)  # Prefect's logging setup, imported above, may hold root at WARNING
    try:
        settings = deployment_settings(
            {k: v for k, v in given.items() if v is not None}, log.info, SERVING_VARIABLES
        )
        app = create_app(settings)  # a missing or unusable token first
        check_servable(settings, flags=False)
    except BrandloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        load_at_start(app.state.holder, settings.serve_refresh_seconds, None)
    except BrandloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    run_server(settings, app)
    return 0


def run_server(settings: Settings, app: Any = None) -> None:
    """Serve ``app`` (default :func:`create_app` of ``settings``) with uvicorn until
    interrupted; the access log never shows a query string (:class:`RedactQuery`)."""
    import uvicorn

    served = create_app(settings) if app is None else app
    config = uvicorn.Config(
        served,
        host=settings.serve_host,
        port=settings.serve_port,
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_STOP_S,
    )
    # uvicorn.Config configures its loggers; the filter goes on after that.
    logging.getLogger("uvicorn.access").addFilter(RedactQuery())
    uvicorn.Server(config).run()


if __name__ == "__main__":
    raise SystemExit(main())
