"""Retraining triggers: start training once enough new human labels exist.

Two ways, the same gate (a minimum count of new labels since the last trigger):

* **Webhook** — :class:`WebhookReceiver` is a small ASGI app (FastAPI) that Label Studio
  POSTs ``ANNOTATION_CREATED`` / ``ANNOTATION_UPDATED`` to. It answers at once with 202
  (Label Studio sends webhooks inside the annotator's request, with a 1 s timeout) and counts
  distinct annotations; when ``min_new_labels`` is reached it calls the injected
  ``on_trigger()`` after the response, on a worker thread. If ``on_trigger`` fails, the
  labels it was called for count again, so the next event retries. A shared secret header
  authenticates the sender when one is configured. :func:`register_webhook` points a project's
  webhook at the receiver, idempotently.
* **Polling** — :func:`poll_for_labels` counts annotations created or updated since the last
  trigger (a checkpoint in storage) and triggers when there are enough; :func:`watch_labels`
  loops over it and :func:`wait_for_labels` blocks until enough humans have labelled
  (or a timeout passes).

``on_trigger`` is any callable: in production the flow side passes one that starts the
``train-ner`` deployment (Prefect's ``run_deployment``); this module imports no Prefect.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import BackgroundTasks, FastAPI, Request
from fastapi.responses import JSONResponse

from ner.errors import LabelStudioError
from ner.labelstudio_client import (
    DEFAULT_OVERLAP_SECONDS,
    LABEL_ACTIONS,
    AnnotationStamp,
    PullCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from ner.storage import CHECKPOINTS, Storage

if TYPE_CHECKING:
    from ner.labelstudio_client import LabelStudioProject
    from ner.settings import Settings

log = logging.getLogger(__name__)

#: Header carrying the shared secret Label Studio sends with every webhook.
SECRET_HEADER = "X-Brandloop-Webhook-Token"
#: Path the receiver listens on.
WEBHOOK_PATH = "/webhook"

OnTrigger = Callable[[], object]


# --------------------------------------------------------------------------- counting


class LabelCounter:
    """Counts distinct new labels and says when a trigger is due. Thread-safe.

    A label is an annotation, keyed by its id: created then updated five times, it counts
    once. :meth:`record` returns the batch to trigger for once ``min_new`` labels are
    pending and no trigger is running; :meth:`finish` ends that trigger (a failed one puts
    its labels back) and may hand out the next batch if enough arrived meanwhile.
    """

    def __init__(self, min_new: int) -> None:
        if min_new < 1:
            raise ValueError("min_new must be at least 1")
        self.min_new = min_new
        self._pending: set[str] = set()
        self._running: frozenset[str] | None = None
        self._lock = threading.Lock()
        self.triggers = 0

    @property
    def pending(self) -> int:
        """Labels counted since the last trigger (not including one that is running)."""
        with self._lock:
            return len(self._pending)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._running is not None

    def _take(self) -> frozenset[str] | None:
        if self._running is not None or len(self._pending) < self.min_new:
            return None
        batch = frozenset(self._pending)
        self._pending.clear()
        self._running = batch
        return batch

    def record(self, keys: Iterable[str]) -> frozenset[str] | None:
        """Count ``keys``; returns the labels to trigger for when the gate opens."""
        with self._lock:
            self._pending.update(keys)
            return self._take()

    def finish(self, batch: frozenset[str], ok: bool) -> frozenset[str] | None:
        """End the trigger for ``batch``; returns the next batch if one is due already."""
        with self._lock:
            if self._running is not batch:
                raise RuntimeError("finish() called for a batch that is not running")
            self._running = None
            if ok:
                self.triggers += 1
            else:
                self._pending.update(batch)
                return None  # wait for the next event before trying again
            return self._take()


def label_keys(payload: Any) -> list[str]:
    """Annotation ids (as strings) in a Label Studio webhook payload, skipped ones left out.

    ``annotation`` is one object for ``ANNOTATION_CREATED``/``UPDATED`` and a list for the
    bulk ``ANNOTATIONS_CREATED``. An annotation without an id gives no key.
    """
    if not isinstance(payload, Mapping):
        return []
    raw = payload.get("annotation", payload.get("annotations"))
    items = raw if isinstance(raw, list) else [raw]
    keys: list[str] = []
    for item in items:
        if not isinstance(item, Mapping) or item.get("was_cancelled"):
            continue
        ident = item.get("id")
        if isinstance(ident, int | str) and not isinstance(ident, bool) and str(ident):
            keys.append(str(ident))
    return keys


def payload_project(payload: Any) -> int | None:
    """Project id of a webhook payload (``project.id``, else ``annotation.project``)."""
    if not isinstance(payload, Mapping):
        return None
    project = payload.get("project")
    if isinstance(project, Mapping) and isinstance(project.get("id"), int):
        return int(project["id"])
    annotation = payload.get("annotation")
    if isinstance(annotation, Mapping) and isinstance(annotation.get("project"), int):
        return int(annotation["project"])
    return None


# --------------------------------------------------------------------------- webhook


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

    def handle(self, payload: Any) -> tuple[dict[str, Any], frozenset[str] | None]:
        """Count one event; returns the response body and the batch to trigger for."""
        action = payload.get("action") if isinstance(payload, Mapping) else None
        with self._lock:
            self.stats.last_event_at = time.monotonic()
            name = str(action) if action else "<none>"
            self.stats.received[name] = self.stats.received.get(name, 0) + 1
        if action not in self.actions:
            with self._lock:
                self.stats.ignored += 1
            return {"accepted": False, "reason": f"action {action!r} is not counted"}, None
        project = payload_project(payload)
        if self.project_id is not None and project != self.project_id:
            with self._lock:
                self.stats.ignored += 1
            return {"accepted": False, "reason": f"event of project {project}"}, None
        batch = self.counter.record(label_keys(payload))
        return {
            "accepted": True,
            "pending": self.counter.pending,
            "triggering": batch is not None,
        }, batch

    def run_trigger(self, batch: frozenset[str] | None) -> None:
        """Call ``on_trigger`` for ``batch`` (and again if more labels are due)."""
        while batch is not None:
            try:
                self.on_trigger()
            except Exception as exc:  # the trigger is user code: count it, keep serving
                log.error("on_trigger failed for %d labels: %s", len(batch), exc)
                with self._lock:
                    self.stats.failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
                self.counter.finish(batch, ok=False)
                return
            with self._lock:
                self.stats.triggers += 1
                self.stats.last_trigger_at = time.monotonic()
            log.info("triggered retraining after %d new labels", len(batch))
            batch = self.counter.finish(batch, ok=True)

    # -- HTTP ------------------------------------------------------------------------------
    @property
    def app(self) -> FastAPI:
        """The ASGI app: ``POST /webhook`` (202) and ``GET /health``."""
        if self._app is None:
            self._app = self._build_app()
        return self._app

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="brandloop webhook receiver", docs_url=None, redoc_url=None)
        receiver = self

        @app.post(WEBHOOK_PATH, status_code=202)
        async def webhook(request: Request, background: BackgroundTasks) -> JSONResponse:
            if not receiver.authorised(request.headers):
                with receiver._lock:
                    receiver.stats.rejected += 1
                log.warning("webhook from %s refused: bad or missing secret", request.client)
                return JSONResponse({"detail": "unauthorised"}, status_code=401)
            try:
                payload = await request.json()
            except ValueError:
                return JSONResponse({"detail": "body is not JSON"}, status_code=400)
            body, batch = receiver.handle(payload)
            if batch is not None:
                background.add_task(receiver.run_trigger, batch)
            return JSONResponse(body, status_code=202)

        @app.get("/health")
        async def health() -> dict[str, Any]:
            return {
                "status": "ok",
                "pending": receiver.counter.pending,
                "min_new_labels": receiver.counter.min_new,
                "triggers": receiver.stats.triggers,
                "failures": receiver.stats.failures,
            }

        return app


def serve(app: Any, host: str = "127.0.0.1", port: int = 8765) -> None:
    """Run ``app`` with uvicorn until interrupted (the receiver's production entry)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@contextlib.contextmanager
def running_receiver(
    app: Any, host: str = "127.0.0.1", port: int = 0, *, timeout: float = 10.0
) -> Iterator[str]:
    """Serve ``app`` on a background thread; yields its base URL and stops it on exit.

    ``port=0`` picks a free port (the socket is bound here, so there is no race).
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


# --------------------------------------------------------------------------- polling


class LabelSource(Protocol):
    """What polling needs from a project (:class:`~ner.labelstudio_client.LabelStudioProject`)."""

    project_id: int

    def new_annotations(
        self, checkpoint: PullCheckpoint, *, overlap: float = ..., include_cancelled: bool = ...
    ) -> list[AnnotationStamp]: ...


def trigger_checkpoint_key(project_id: int) -> str:
    """Where polling keeps the point of the last trigger for a project."""
    return f"{CHECKPOINTS}/labelstudio-{project_id}-trigger.json"


def poll_for_labels(
    project: LabelSource,
    storage: Storage,
    min_new: int,
    *,
    on_trigger: OnTrigger | None = None,
    overlap: float = DEFAULT_OVERLAP_SECONDS,
    checkpoint_key: str | None = None,
) -> int:
    """One poll: are there ``min_new`` labels created or updated since the last trigger?

    If so, calls ``on_trigger`` (when given), then moves the trigger checkpoint past those
    labels and returns how many there were. Otherwise nothing moves and it returns 0, so
    labels keep adding up across polls. If ``on_trigger`` raises, the checkpoint does not
    move and the error propagates: the next poll triggers again.

    A label is an annotation that was not skipped, counted once however often it was
    saved. The checkpoint lives at ``checkpoint_key`` (default
    :func:`trigger_checkpoint_key`); give each independent consumer its own key, or they
    would take each other's labels.
    """
    if min_new < 1:
        raise ValueError("min_new must be at least 1")
    key = checkpoint_key or trigger_checkpoint_key(project.project_id)
    checkpoint = load_checkpoint(storage, key)
    stamps = project.new_annotations(checkpoint, overlap=overlap, include_cancelled=False)
    labels = {stamp.annotation_id for stamp in stamps}
    if len(labels) < min_new:
        log.debug("%d of %d new labels in project %s", len(labels), min_new, project.project_id)
        return 0
    if on_trigger is not None:
        on_trigger()
    save_checkpoint(
        storage, key, checkpoint.advance(stamps, overlap), project_id=project.project_id
    )
    log.info("%d new labels in project %s: triggered", len(labels), project.project_id)
    return len(labels)


def watch_labels(
    project: LabelSource,
    storage: Storage,
    min_new: int,
    on_trigger: OnTrigger,
    *,
    interval: float = 60.0,
    max_polls: int | None = None,
    stop: threading.Event | None = None,
    overlap: float = DEFAULT_OVERLAP_SECONDS,
    checkpoint_key: str | None = None,
) -> int:
    """Poll every ``interval`` seconds, triggering whenever ``min_new`` labels are new.

    Runs until ``stop`` is set or after ``max_polls`` polls; returns the number of triggers.
    A poll that fails (Label Studio down, ``on_trigger`` raising) is logged and retried at
    the next interval.
    """
    stop = stop or threading.Event()
    polls = triggers = 0
    while not stop.is_set() and (max_polls is None or polls < max_polls):
        polls += 1
        try:
            if poll_for_labels(
                project,
                storage,
                min_new,
                on_trigger=on_trigger,
                overlap=overlap,
                checkpoint_key=checkpoint_key,
            ):
                triggers += 1
        except LabelStudioError as exc:
            log.warning("polling Label Studio failed, retrying in %.0f s: %s", interval, exc)
        except Exception as exc:  # on_trigger is user code; keep watching
            log.error("trigger failed, retrying in %.0f s: %s", interval, exc)
        if max_polls is None or polls < max_polls:
            stop.wait(interval)
    return triggers


def wait_for_labels(
    project: LabelSource,
    storage: Storage,
    min_new: int,
    *,
    timeout: float,
    interval: float = 30.0,
    overlap: float = DEFAULT_OVERLAP_SECONDS,
    checkpoint_key: str | None = None,
) -> int:
    """Block until ``min_new`` labels are new since the last trigger, or ``timeout`` passes.

    Returns the number of new labels (and moves the trigger checkpoint past them) when
    they are there in time, else 0 (nothing moves; the labels seen so far still count at
    the next call). Polls at least once, even with ``timeout=0``. A poll that fails
    (:class:`LabelStudioError`: the server is down or restarting) is retried at the next
    interval; if the last poll before the deadline failed, its error is raised instead of
    returning 0, so an unreachable server never looks like "nobody labelled".
    """
    deadline = time.monotonic() + timeout
    while True:
        failure: LabelStudioError | None = None
        try:
            found = poll_for_labels(
                project, storage, min_new, overlap=overlap, checkpoint_key=checkpoint_key
            )
        except LabelStudioError as exc:
            failure, found = exc, 0
            log.warning("polling Label Studio failed, retrying: %s", exc)
        if found:
            return found
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            if failure is not None:
                raise failure
            log.info(
                "fewer than %d new labels in project %s after %.0f s",
                min_new,
                project.project_id,
                timeout,
            )
            return 0
        time.sleep(min(interval, remaining))
