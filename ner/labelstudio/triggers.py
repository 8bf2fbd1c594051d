"""Retraining triggers: the gate on new human labels, webhook events, and polling. No HTTP.

Two ways, the same gate (a minimum count of new labels since the last trigger):

* **Webhook events** — :class:`LabelCounter` counts the distinct annotations named by
  Label Studio's webhook events (:func:`label_keys`) and hands out one batch to trigger for
  once ``min_new`` are pending. The HTTP receiver around it is ``apps.webhook``.
* **Polling** — :func:`poll_for_labels` counts annotations created or updated since the last
  trigger (a checkpoint in storage) and triggers when there are enough; :func:`watch_labels`
  loops over it and :func:`wait_for_labels` blocks until enough humans have labelled (or a
  timeout passes).

``on_trigger`` is any callable: in production the caller passes one that starts the
``train-ner`` deployment (Prefect's ``run_deployment``); this module imports no Prefect.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, TypeAdapter, ValidationError

from ner import layout
from ner.errors import LabelStudioError
from ner.labelstudio.checkpoint import DEFAULT_OVERLAP_SECONDS, AnnotationStamp, PullCheckpoint
from ner.labelstudio.exchange import load_checkpoint, save_checkpoint
from ner.storage import Storage

log = logging.getLogger(__name__)

#: Webhook actions that delete labels: they count as changes, so the next pull reconciles
#: (drops the deleted tasks and annotations, see ``ner.labelstudio.liveset``).
DELETE_ACTIONS: tuple[str, ...] = ("ANNOTATIONS_DELETED", "TASKS_DELETED")
#: Webhook actions that mean "the labels changed": a human labelled, relabelled or deleted.
LABEL_ACTIONS: tuple[str, ...] = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", *DELETE_ACTIONS)

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


# --------------------------------------------------------------------------- webhook events


class _EventAnnotation(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt | StrictStr | None = None
    was_cancelled: bool | None = False
    project: Any = None


class _EventProject(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: StrictInt


class WebhookEvent(BaseModel):
    """The parts of a Label Studio webhook payload the gate reads."""

    model_config = ConfigDict(extra="ignore")

    action: Any = None
    project: Any = None
    annotation: Any = None
    annotations: Any = None
    tasks: Any = None


_ANNOTATION = TypeAdapter(_EventAnnotation)
_PROJECT = TypeAdapter(_EventProject)


def read_event(payload: Any) -> WebhookEvent:
    """The event in a webhook payload (an empty event if the payload is not an object)."""
    try:
        return WebhookEvent.model_validate(payload)
    except ValidationError:
        return WebhookEvent()


def _annotation(raw: Any) -> _EventAnnotation | None:
    try:
        return _ANNOTATION.validate_python(raw)
    except ValidationError:
        return None


def label_keys(payload: Any) -> list[str]:
    """Annotation ids (as strings) in a Label Studio webhook payload, skipped ones left out.

    ``annotation`` is one object for ``ANNOTATION_CREATED``/``UPDATED`` and a list for the
    bulk ``ANNOTATIONS_CREATED``. An annotation without an id gives no key. A deletion is a
    change of its own: ``ANNOTATIONS_DELETED`` gives ``"deleted-annotation:<id>"`` per
    annotation and ``TASKS_DELETED`` ``"deleted-task:<id>"`` per task.
    """
    event = read_event(payload)
    if event.action == "TASKS_DELETED":
        return _keys(event.tasks, "deleted-task:")
    raw = event.annotation if event.annotation is not None else event.annotations
    prefix = "deleted-annotation:" if event.action == "ANNOTATIONS_DELETED" else ""
    return _keys(raw, prefix)


def _keys(raw: Any, prefix: str) -> list[str]:
    keys: list[str] = []
    for item in raw if isinstance(raw, list) else [raw]:
        found = _annotation(item)  # tasks have an id too; was_cancelled is absent there
        if found is None or found.was_cancelled or found.id in (None, ""):
            continue
        keys.append(f"{prefix}{found.id}")
    return keys


def payload_project(payload: Any) -> int | None:
    """Project id of a webhook payload (``project.id``, else ``annotation.project``)."""
    event = read_event(payload)
    try:
        return _PROJECT.validate_python(event.project).id
    except ValidationError:
        annotation = _annotation(event.annotation)
        project = None if annotation is None else annotation.project
        return project if type(project) is int else None


# --------------------------------------------------------------------------- polling


class LabelSource(Protocol):
    """What polling needs from a project (:class:`~ner.labelstudio.client.LabelStudioProject`)."""

    project_id: int

    def new_annotations(
        self, checkpoint: PullCheckpoint, *, overlap: float = ..., include_cancelled: bool = ...
    ) -> list[AnnotationStamp]: ...


def trigger_checkpoint_key(project_id: int) -> str:
    """Where polling keeps the point of the last trigger for a project."""
    return layout.labelstudio_checkpoint(project_id, "trigger")


def poll_for_labels(
    project: LabelSource,
    storage: Storage,
    min_new: int,
    *,
    on_trigger: OnTrigger | None = None,
    overlap: float = DEFAULT_OVERLAP_SECONDS,
    checkpoint_key: str | None = None,
    read_key: str | None = None,
) -> int:
    """One poll: are there ``min_new`` labels created or updated since the last trigger?

    If so, calls ``on_trigger`` (when given), then moves the trigger checkpoint past those
    labels and returns how many there were. Otherwise nothing moves and it returns 0, so
    labels keep adding up across polls. If ``on_trigger`` raises, the checkpoint does not
    move and the error propagates: the next poll triggers again.

    A label is an annotation that was not skipped, counted once however often it was
    saved. The checkpoint lives at ``checkpoint_key`` (default
    :func:`trigger_checkpoint_key`); give each independent consumer its own key, or they
    would take each other's labels. With ``read_key`` (the checkpoint of what a training
    pull has read, :func:`ner.labelstudio.exchange.checkpoint_key`), labels read there are
    not new either: the two checkpoints' later one counts.
    """
    if min_new < 1:
        raise ValueError("min_new must be at least 1")
    key = checkpoint_key or trigger_checkpoint_key(project.project_id)
    checkpoint = load_checkpoint(storage, key)
    if read_key is not None:
        checkpoint = checkpoint.later(load_checkpoint(storage, read_key))
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
    read_key: str | None = None,
) -> int:
    """Poll every ``interval`` seconds, triggering whenever ``min_new`` labels are new.

    Runs until ``stop`` is set or after ``max_polls`` polls; returns the number of triggers.
    A poll that fails (Label Studio down, ``on_trigger`` raising) is logged and retried at
    the next interval. ``checkpoint_key`` and ``read_key``: as in :func:`poll_for_labels`.
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
                read_key=read_key,
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
    read_key: str | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> int:
    """Block until ``min_new`` labels are new since the last trigger, or ``timeout`` passes.

    Returns the number of new labels (and moves the trigger checkpoint past them) when
    they are there in time, else 0 (nothing moves; the labels seen so far still count at
    the next call). Polls at least once, even with ``timeout=0``. A poll that fails
    (:class:`LabelStudioError`: the server is down or restarting) is retried at the next
    interval; if the last poll before the deadline failed, its error is raised instead of
    returning 0, so an unreachable server never looks like "nobody labelled". ``read_key``:
    as in :func:`poll_for_labels`. ``on_wait`` is called with the seconds left before each
    pause between polls (a progress line).
    """
    deadline = time.monotonic() + timeout
    while True:
        failure: LabelStudioError | None = None
        try:
            found = poll_for_labels(
                project,
                storage,
                min_new,
                overlap=overlap,
                checkpoint_key=checkpoint_key,
                read_key=read_key,
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
        if on_wait is not None:
            on_wait(remaining)
        time.sleep(min(interval, remaining))
