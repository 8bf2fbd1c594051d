"""Label Studio webhook receiver: a small FastAPI app that starts retraining.

Label Studio POSTs ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` (labels) and
``ANNOTATIONS_DELETED`` / ``TASKS_DELETED`` (deletions: a change too, so the next pull
reconciles them) to ``/webhook``.
:class:`WebhookReceiver` answers at once with 202 (Label Studio sends webhooks inside the
annotator's request, with a 1 s timeout) and counts distinct annotations with
:class:`~ner.labelstudio.triggers.LabelCounter`; when ``min_new_labels`` is reached it calls
the injected ``on_trigger()`` after the response, on a worker thread. If ``on_trigger``
fails, the labels it was called for count again, so the next event retries. A shared secret
header authenticates the sender when one is configured. :func:`register_webhook` points a
project's webhook at the receiver, idempotently; :func:`running_receiver` serves the app on a
background thread (``python -m deployments.label_trigger serve`` runs it).
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from ner.labelstudio.triggers import (
    LABEL_ACTIONS,
    LabelCounter,
    OnTrigger,
    label_keys,
    payload_project,
    read_event,
)

if TYPE_CHECKING:
    from ner.labelstudio.client import LabelStudioProject
    from ner.settings import Settings

log = logging.getLogger(__name__)

#: Header carrying the shared secret Label Studio sends with every webhook.
SECRET_HEADER = "X-Brandloop-Webhook-Token"
#: Path the receiver listens on.
WEBHOOK_PATH = "/webhook"


@dataclass
class ReceiverStats:
    """What a receiver has seen (for its health endpoint, logs and tests)."""

    received: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    ignored: int = 0
    triggers: int = 0
    failures: int = 0
    last_error: str | None = None
    last_event_at: float | None = None
    last_trigger_at: float | None = None
    last_failure_at: float | None = None

    @property
    def failing(self) -> bool:
        """The last trigger attempt failed (no trigger has succeeded since)."""
        failed, ran = self.last_failure_at, self.last_trigger_at
        return failed is not None and (ran is None or failed > ran)


class EventAnswer(BaseModel):
    """The 202 body: whether the event counted, labels pending, a trigger starting."""

    accepted: bool
    reason: str | None = None
    pending: int | None = None
    triggering: bool | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ReceiverHealth(BaseModel):
    """``GET /health``: the receiver is up, labels pending (counted since the last trigger
    call, below the gate), trigger calls that returned and failed (a call may queue no run
    when one queued earlier has not started: that run reads the labels); ``status`` is
    ``failing`` (with ``last_error``) while its last trigger attempt failed (the labels stay
    pending), else ``ok``."""

    status: Literal["ok", "failing"] = "ok"
    pending: int
    min_new_labels: int
    triggers: int
    failures: int
    last_error: str | None = None


class WebhookReceiver:
    """Label Studio webhook receiver that calls ``on_trigger`` once enough labels arrived.

    Args:
        on_trigger: called with no argument, on a worker thread, after the response.
        min_new_labels: labels (distinct annotations) that open the gate.
        secret: when set, a request must carry it in ``secret_header`` (else 401).
        project_id: when set, events of other projects are acknowledged and ignored.
        actions: the actions that count.
    """

    def __init__(
        self,
        on_trigger: OnTrigger,
        *,
        min_new_labels: int = 1,
        secret: str | None = None,
        secret_header: str = SECRET_HEADER,
        project_id: int | None = None,
        actions: Sequence[str] = LABEL_ACTIONS,
    ) -> None:
        self.on_trigger = on_trigger
        self.counter = LabelCounter(min_new_labels)
        self.secret = secret or None
        self.secret_header = secret_header
        self.project_id = project_id
        self.actions = frozenset(actions)
        self.stats = ReceiverStats()
        self._lock = threading.Lock()
        self._app: FastAPI | None = None

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        on_trigger: OnTrigger,
        *,
        secret: str | None = None,
        project_id: int | None = None,
    ) -> WebhookReceiver:
        """A receiver gated by ``settings.min_new_labels``."""
        return cls(
            on_trigger,
            min_new_labels=settings.min_new_labels,
            secret=secret,
            project_id=project_id,
        )

    # -- the decision, free of HTTP (unit-testable) ----------------------------------------
    def authorised(self, headers: Mapping[str, str]) -> bool:
        """Whether a request with ``headers`` may post events."""
        if self.secret is None:
            return True
        given = headers.get(self.secret_header) or headers.get(self.secret_header.lower()) or ""
        return hmac.compare_digest(given.encode(), self.secret.encode())

    def _ignore(self, reason: str) -> tuple[EventAnswer, None]:
        with self._lock:
            self.stats.ignored += 1
        return EventAnswer(accepted=False, reason=reason), None

    def handle(self, payload: Any) -> tuple[EventAnswer, frozenset[str] | None]:
        """Count one event; returns the answer and the batch to trigger for (if any)."""
        action = read_event(payload).action
        with self._lock:
            self.stats.last_event_at = time.monotonic()
            name = str(action) if action else "<none>"
            self.stats.received[name] = self.stats.received.get(name, 0) + 1
        if action not in self.actions:
            return self._ignore(f"action {action!r} is not counted")
        project = payload_project(payload)
        if self.project_id is not None and project != self.project_id:
            return self._ignore(f"event of project {project}")
        batch = self.counter.record(label_keys(payload))
        answer = EventAnswer(
            accepted=True, pending=self.counter.pending, triggering=batch is not None
        )
        return answer, batch

    def run_trigger(self, batch: frozenset[str] | None) -> None:
        """Call ``on_trigger`` for ``batch`` (and again if more labels are due)."""
        while batch is not None:
            try:
                self.on_trigger()
            except Exception as exc:  # the trigger is user code: count it, keep serving
                log.error(
                    "on_trigger failed for %d labels: %s: %s", len(batch), type(exc).__name__, exc
                )
                with self._lock:
                    self.stats.failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
                    self.stats.last_failure_at = time.monotonic()
                self.counter.finish(batch, ok=False)
                return
            with self._lock:
                self.stats.triggers += 1
                self.stats.last_trigger_at = time.monotonic()
            # the trigger says whether it queued a run or a queued one will read them
            log.info("retraining trigger called for %d label changes", len(batch))
            batch = self.counter.finish(batch, ok=True)

    def refuse(self, request: Request) -> JSONResponse:
        """Count and answer a request without the shared secret (401)."""
        with self._lock:
            self.stats.rejected += 1
        log.warning("webhook from %s refused: bad or missing secret", request.client)
        return JSONResponse({"detail": "unauthorised"}, status_code=401)

    def health(self) -> ReceiverHealth:
        """Labels pending, the gate, and how many triggers ran and failed."""
        failing = self.stats.failing
        return ReceiverHealth(
            status="failing" if failing else "ok",
            pending=self.counter.pending,
            min_new_labels=self.counter.min_new,
            triggers=self.stats.triggers,
            failures=self.stats.failures,
            last_error=self.stats.last_error if failing else None,
        )

    # -- HTTP ------------------------------------------------------------------------------
    @property
    def app(self) -> FastAPI:
        """The ASGI app: ``POST /webhook`` (202) and ``GET /health``."""
        if self._app is None:
            self._app = build_app(self)
        return self._app


def build_app(receiver: WebhookReceiver) -> FastAPI:
    """The ASGI app of ``receiver``: ``POST /webhook`` (202) and ``GET /health``."""
    app = FastAPI(title="brandloop webhook receiver", docs_url=None, redoc_url=None)

    @app.post(WEBHOOK_PATH, status_code=202)
    async def webhook(request: Request, background: BackgroundTasks) -> JSONResponse:
        if not receiver.authorised(request.headers):
            return receiver.refuse(request)
        try:
            payload = await request.json()
        except ValueError:
            return JSONResponse({"detail": "body is not JSON"}, status_code=400)
        answer, batch = receiver.handle(payload)
        if batch is not None:
            background.add_task(receiver.run_trigger, batch)
        return JSONResponse(answer.body(), status_code=202)

    @app.get("/health")
    async def health() -> ReceiverHealth:
        return receiver.health()

    return app


@contextlib.contextmanager
def running_receiver(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0
) -> Iterator[str]:
    """Serve ``app`` on a background thread; yields its base URL and stops it on exit.

    ``port=0`` picks a free port (the socket is bound here, so there is no race). Raises
    :class:`RuntimeError` when the server does not start within ``timeout`` seconds.
    """
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = int(sock.getsockname()[1])
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="webhook-receiver", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"webhook receiver did not start on {host}:{bound_port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{bound_port}"
    finally:
        server.should_exit = True
        thread.join(timeout=timeout)
        sock.close()


def register_webhook(
    project: LabelStudioProject,
    url: str,
    *,
    secret: str | None = None,
    secret_header: str = SECRET_HEADER,
    actions: Sequence[str] = LABEL_ACTIONS,
) -> int:
    """Point ``project``'s webhook at ``url`` (the receiver's ``/webhook``); idempotent.

    With ``secret``, Label Studio sends it in ``secret_header``. Returns the webhook id.
    """
    headers = {secret_header: secret} if secret else {}
    return project.ensure_webhook(url, actions=actions, headers=headers)
