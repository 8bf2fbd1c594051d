"""Label Studio through its API (label-studio-sdk 2.x ``LabelStudio`` client).

:class:`LabelStudioProject` is one project on one server. It

* **ensures the project** (:meth:`LabelStudioProject.connect`): finds it by exact title or
  creates it with the config :func:`ner.labelstudio.label_config` generates, and reads
  ``from_name``/``to_name`` back from the project's *actual* config;
* **imports predictions idempotently** (:meth:`~LabelStudioProject.import_predictions`): the
  post id (task ``data.post_id``) is the key. The project's post ids are listed first and only
  the missing posts are imported, in batches, so a re-run, or a run after a crash in the
  middle of an import, leaves exactly one task per post. Imports are never retried blindly
  (the SDK retries a POST after a 5xx or a dropped connection, which could import a batch
  twice): a failed batch raises, and the next run lists the project again;
* **pulls annotations incrementally** (:meth:`~LabelStudioProject.snapshot_export`): only the
  tasks with annotations created or updated since the last pull are exported, the raw export
  is kept unchanged as an immutable snapshot in storage, and a checkpoint is advanced only
  after the snapshot is written;
* registers webhooks idempotently (:meth:`~LabelStudioProject.ensure_webhook`).

Incremental pulls, equal timestamps and late commits
    The checkpoint (:class:`PullCheckpoint`) holds the newest annotation ``updated_at`` seen
    and the ids of the annotations seen in the last ``overlap`` seconds before it. A pull asks
    the server for tasks updated at or after ``newest - overlap`` (Label Studio bumps a task's
    ``updated_at`` whenever one of its annotations is saved) and keeps the annotations whose
    ``(id, updated_at)`` was not seen yet. ``>=`` plus the overlap window means an annotation
    stamped with the same microsecond as the last one seen, or committed a little later than
    its timestamp says, is still picked up; the ``seen`` set removes the re-reads. A missed
    label is worse than a re-read one: when in doubt, a task is exported again and
    :func:`ner.labelstudio.collect_annotations` keeps the latest annotation per post.

Every SDK or HTTP failure becomes :class:`~ner.errors.LabelStudioError` (``raise … from``);
messages carry the status and a short body, never headers or the API key.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ner.errors import DataError, LabelStudioError
from ner.labelstudio import LabelConfig, label_config, parse_label_config, to_tasks
from ner.storage import CHECKPOINTS, EXPORTS, Storage
from ner.types import Post, Prediction

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

    from ner.settings import Settings

log = logging.getLogger(__name__)

#: Webhook actions that mean "a human labelled something".
LABEL_ACTIONS: tuple[str, ...] = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")

#: Posts imported per request.
DEFAULT_BATCH_SIZE = 500
#: Task ids per export request (they travel in the query string as ``ids[]=…``).
EXPORT_IDS_PER_REQUEST = 500
#: Tasks per page when listing a project.
PAGE_SIZE = 1000
#: Seconds re-read before the newest annotation seen (see the module docstring).
DEFAULT_OVERLAP_SECONDS = 300.0

#: Timestamp format Label Studio's Data Manager filters accept (UTC, microseconds).
_LS_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_NO_RETRY: dict[str, Any] = {"max_retries": 0}


# --------------------------------------------------------------------------- errors


def _describe(exc: BaseException) -> str:
    """A short description of an SDK/HTTP failure: status and body, never headers."""
    from label_studio_sdk.core.api_error import ApiError

    if isinstance(exc, ApiError):
        body = exc.body if isinstance(exc.body, str) else json.dumps(exc.body, default=str)
        return f"HTTP {exc.status_code}: {body[:300]}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


@contextmanager
def _api(what: str, secret: str | None = None) -> Iterator[None]:
    """Turn SDK, HTTP and response-shape failures into :class:`LabelStudioError`."""
    import httpx
    import pydantic
    from label_studio_sdk.core.api_error import ApiError

    try:
        yield
    except (ApiError, httpx.HTTPError, pydantic.ValidationError, json.JSONDecodeError) as exc:
        message = f"Label Studio {what} failed: {_describe(exc)}"
        if secret:
            message = message.replace(secret, "***")
        raise LabelStudioError(message) from exc


# --------------------------------------------------------------------------- timestamps


def parse_time(value: Any) -> datetime | None:
    """An aware UTC datetime from a Label Studio timestamp (ISO string or datetime)."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    """``value`` in the format Label Studio writes and its filters read."""
    return value.astimezone(UTC).strftime(_LS_TIME_FORMAT)


# --------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True, slots=True)
class AnnotationStamp:
    """One version of one annotation: its id, its task and when it was last saved."""

    annotation_id: int
    task_id: int
    updated_at: str
    cancelled: bool = False

    @property
    def when(self) -> datetime:
        parsed = parse_time(self.updated_at)
        assert parsed is not None  # annotation_stamps() only builds parseable stamps
        return parsed


def annotation_stamps(tasks: Iterable[Any]) -> list[AnnotationStamp]:
    """Every annotation of ``tasks`` (task dicts from a list or an export) as a stamp.

    Annotations without an integer id or a readable ``updated_at`` (else ``created_at``) are
    skipped with a warning: they cannot be tracked.
    """
    stamps: list[AnnotationStamp] = []
    for task in tasks:
        if not isinstance(task, Mapping):
            continue
        task_id = task.get("id")
        for annotation in task.get("annotations") or []:
            if not isinstance(annotation, Mapping):
                continue
            ident = annotation.get("id")
            when = parse_time(annotation.get("updated_at")) or parse_time(
                annotation.get("created_at")
            )
            if not isinstance(ident, int) or not isinstance(task_id, int) or when is None:
                log.warning("task %r: annotation %r has no id or timestamp", task_id, ident)
                continue
            stamps.append(
                AnnotationStamp(
                    ident, task_id, format_time(when), bool(annotation.get("was_cancelled"))
                )
            )
    return stamps


@dataclass(frozen=True, slots=True)
class PullCheckpoint:
    """How far annotations were read: the newest ``updated_at`` and the recent ids seen.

    ``seen`` maps annotation id to the ``updated_at`` it had when read, for every annotation
    at most ``overlap`` older than ``updated_at``; older entries are pruned, since pulls never
    look back further than that.
    """

    updated_at: str | None = None
    seen: Mapping[int, str] = field(default_factory=dict)

    def lower_bound(self, overlap: float) -> datetime | None:
        """Tasks updated at or after this instant may hold unseen annotations."""
        newest = parse_time(self.updated_at)
        return None if newest is None else newest - timedelta(seconds=overlap)

    def is_new(self, stamp: AnnotationStamp, overlap: float) -> bool:
        """Whether ``stamp`` is an annotation version this checkpoint has not read yet."""
        bound = self.lower_bound(overlap)
        if bound is None:
            return True
        if stamp.when < bound:
            return False
        return self.seen.get(stamp.annotation_id) != stamp.updated_at

    def advance(self, stamps: Iterable[AnnotationStamp], overlap: float) -> PullCheckpoint:
        """The checkpoint after reading ``stamps`` (never moves backwards)."""
        stamps = list(stamps)
        newest = parse_time(self.updated_at)
        for stamp in stamps:
            if newest is None or stamp.when > newest:
                newest = stamp.when
        if newest is None:
            return self
        bound = newest - timedelta(seconds=overlap)
        seen = {k: v for k, v in self.seen.items() if (parse_time(v) or bound) >= bound}
        for stamp in stamps:
            if stamp.when >= bound:
                seen[stamp.annotation_id] = stamp.updated_at
        return PullCheckpoint(format_time(newest), seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "updated_at": self.updated_at,
            "seen": {str(k): v for k, v in sorted(self.seen.items())},
        }

    @classmethod
    def from_dict(cls, data: Any, key: str = "checkpoint") -> PullCheckpoint:
        """Read a stored checkpoint; :class:`DataError` naming ``key`` if it is malformed."""
        if not isinstance(data, Mapping):
            raise DataError(key, f"checkpoint is not an object ({type(data).__name__})")
        updated_at = data.get("updated_at")
        if updated_at is not None and parse_time(updated_at) is None:
            raise DataError(key, f"checkpoint updated_at {updated_at!r} is not a timestamp")
        raw_seen = data.get("seen") or {}
        if not isinstance(raw_seen, Mapping):
            raise DataError(key, "checkpoint 'seen' is not an object")
        seen: dict[int, str] = {}
        for ident, when in raw_seen.items():
            try:
                seen[int(ident)] = str(when)
            except (TypeError, ValueError) as exc:
                raise DataError(key, f"checkpoint has a bad annotation id {ident!r}") from exc
        return cls(None if updated_at is None else str(updated_at), seen)


def load_checkpoint(storage: Storage, key: str) -> PullCheckpoint:
    """The checkpoint stored at ``key``, or an empty one."""
    if not storage.exists(key):
        return PullCheckpoint()
    return PullCheckpoint.from_dict(storage.read_json(key), key)


def save_checkpoint(storage: Storage, key: str, checkpoint: PullCheckpoint, **extra: Any) -> None:
    """Write ``checkpoint`` (plus ``extra`` informative fields) atomically at ``key``."""
    storage.write_json(key, {**checkpoint.to_dict(), **extra})


# --------------------------------------------------------------------------- pure helpers


def post_id_of(task: Any) -> str | None:
    """The post id a task was imported for (``data.post_id``), if any."""
    data = task.get("data") if isinstance(task, Mapping) else getattr(task, "data", None)
    if not isinstance(data, Mapping):
        return None
    value = data.get("post_id")
    return None if value is None or value == "" else str(value)


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Lists of at most ``size`` consecutive items."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_pairs(
    storage: Storage, posts_key: str, predictions_key: str
) -> Iterator[tuple[Post, Prediction]]:
    """Posts and their predictions, read line by line in step (the predict step keeps order)."""
    from ner.inference import read_posts

    def predictions() -> Iterator[Prediction]:
        for number, line in enumerate(storage.iter_lines(predictions_key), start=1):
            if not line.strip():
                continue
            try:
                yield Prediction.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError) as exc:
                raise DataError(
                    f"{predictions_key}:{number}", f"unreadable prediction: {exc}"
                ) from exc

    posts = read_posts(storage, posts_key)
    preds = predictions()
    count = 0
    for post in posts:
        prediction = next(preds, None)
        if prediction is None:
            raise DataError(
                predictions_key,
                f"posts and predictions differ in count: no prediction for "
                f"post {post.id!r} (post #{count + 1})",
            )
        if prediction.post_id != post.id:
            raise DataError(post.id, f"prediction is for post {prediction.post_id!r}")
        count += 1
        yield post, prediction
    extra = next(preds, None)
    if extra is not None:
        raise DataError(
            predictions_key,
            f"posts and predictions differ in count: {count} posts, and a prediction for "
            f"{extra.post_id!r} after them",
        )


def snapshot_key(stamp: str, project_id: int, attempt: int = 1) -> str:
    """Storage key of an export snapshot (``-2``, ``-3`` … if the stamp was used already)."""
    suffix = "" if attempt == 1 else f"-{attempt}"
    return f"{EXPORTS}/{stamp}-ls-{project_id}{suffix}.json"


def snapshot_keys(storage: Storage, project_id: int) -> list[str]:
    """Keys of the export snapshots of project ``project_id``, in the order they were taken.

    Ordered by stamp, then attempt (``…-ls-7.json`` before ``…-ls-7-2.json``, which a plain
    sort of the names would invert).
    """
    pattern = re.compile(rf"^{re.escape(EXPORTS)}/(.+)-ls-{project_id}(?:-(\d+))?\.json$")
    found: list[tuple[str, int, str]] = []
    for key in storage.list(EXPORTS):
        match = pattern.match(key)
        if match is not None:
            found.append((match.group(1), int(match.group(2) or 1), key))
    return [key for _, _, key in sorted(found)]


# --------------------------------------------------------------------------- the project


class LabelStudioProject:
    """One Label Studio project, reached through the SDK's ``LabelStudio`` client.

    Build it with :meth:`connect` (from settings) or :meth:`ensure` (from a client).
    ``config`` is the project's own labelling config, parsed: results are written with its
    ``from_name``/``to_name`` and task text goes under its ``text_key``.
    """

    def __init__(
        self,
        client: LabelStudio,
        project_id: int,
        title: str,
        config: LabelConfig,
        *,
        secret: str | None = None,
    ) -> None:
        self.client = client
        self.project_id = project_id
        self.title = title
        self.config = config
        self._secret = secret

    def __repr__(self) -> str:
        return f"<LabelStudioProject {self.project_id} {self.title!r}>"

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def connect(
        cls, settings: Settings, *, timeout: float = 60.0, client: LabelStudio | None = None
    ) -> LabelStudioProject:
        """The project ``settings.project_title`` on ``settings.label_studio_url``, ensured.

        Raises :class:`~ner.errors.ConfigError` when ``NER_LABEL_STUDIO_API_KEY`` is not set,
        and :class:`LabelStudioError` when the server cannot be reached or refuses the key.
        """
        api_key = settings.require_secret("label_studio_api_key")
        if client is None:
            from label_studio_sdk import LabelStudio

            with _api("client set-up", api_key):
                client = LabelStudio(
                    base_url=settings.label_studio_url.rstrip("/"),
                    api_key=api_key,
                    timeout=timeout,
                )
        return cls.ensure(client, settings.project_title, settings.labels, secret=api_key)

    @classmethod
    def ensure(
        cls,
        client: LabelStudio,
        title: str,
        labels: Sequence[str],
        *,
        secret: str | None = None,
    ) -> LabelStudioProject:
        """Find the project titled exactly ``title`` or create it; idempotent.

        A new project gets :func:`~ner.labelstudio.label_config` for ``labels``. An existing
        one keeps its config; if that config is one brandloop generated and lacks some of
        ``labels``, they are added (the old labels stay, so existing annotations stay
        valid). A hand-written config lacking labels is an error, not overwritten. With
        several projects of that title, the oldest (lowest id) is used.
        """
        with _api(f"lookup of project {title!r}", secret):
            listed: Iterable[Any] = client.projects.list(title=title, page_size=100)
            matches = sorted((p for p in listed if p.title == title), key=lambda p: p.id or 0)
        if len(matches) > 1:
            log.warning(
                "%d Label Studio projects are titled %r; using the oldest, id %s",
                len(matches),
                title,
                matches[0].id,
            )
        if not matches:
            with _api(f"creation of project {title!r}", secret):
                created = client.projects.create(title=title, label_config=label_config(labels))
            if created.id is None:
                raise LabelStudioError(f"Label Studio created project {title!r} without an id")
            project_id = int(created.id)
            log.info("created Label Studio project %s %r", project_id, title)
        else:
            project_id = int(matches[0].id or 0)
        with _api(f"read of project {project_id}", secret):
            xml = client.projects.get(id=project_id).label_config or ""
        config = parse_label_config(xml)
        missing = [label for label in labels if label not in config.labels]
        if missing:
            if xml.strip() != label_config(list(config.labels)):
                raise LabelStudioError(
                    f"project {project_id} {title!r} has a custom labelling config without "
                    f"the labels {missing}: add them in Label Studio (project settings)"
                )
            wanted = [*config.labels, *missing]
            with _api(f"update of project {project_id}'s labelling config", secret):
                client.projects.update(id=project_id, label_config=label_config(wanted))
            config = LabelConfig.for_labels(wanted)
            log.info("added labels %s to Label Studio project %s", missing, project_id)
        return cls(client, project_id, title, config, secret=secret)

    def _api(self, what: str) -> Any:
        return _api(what, self._secret)

    # -- tasks -----------------------------------------------------------------------------
    def iter_tasks(
        self,
        *,
        query: Mapping[str, Any] | None = None,
        fields: str | None = None,
        include: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Tasks of the project as plain dicts (paged; ``query`` is a Data Manager query)."""
        with self._api(f"listing of project {self.project_id}'s tasks"):
            pager: Iterable[Any] = self.client.tasks.list(
                project=self.project_id,
                query=None if query is None else json.dumps(query),
                fields=fields,
                include=include,
                page_size=PAGE_SIZE,
            )
            for task in pager:
                yield task.model_dump(mode="json", exclude_none=True)

    def post_ids(self) -> dict[str, list[int]]:
        """Task ids of every post id in the project (more than one means a duplicate)."""
        found: dict[str, list[int]] = {}
        for task in self.iter_tasks(include="id,data"):
            post_id = post_id_of(task)
            if post_id is not None:
                found.setdefault(post_id, []).append(int(task["id"]))
        return found

    def import_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import one batch of tasks as they are (no retry); returns the new task ids.

        The tasks go as plain JSON: the SDK's ``ImportApiRequest`` model wrongly requires a
        ``task`` id in every prediction.
        """
        request: Any = [dict(task) for task in tasks]
        with self._api(f"import of {len(tasks)} tasks into project {self.project_id}"):
            response = self.client.projects.import_tasks(
                self.project_id,
                request=request,
                return_task_ids=True,
                request_options=_NO_RETRY,  # type: ignore[arg-type]
            )
        task_ids = (response.model_extra or {}).get("task_ids") or []
        if response.task_count != len(tasks) or len(task_ids) != len(tasks):
            raise LabelStudioError(
                f"Label Studio imported {response.task_count} of {len(tasks)} tasks into "
                f"project {self.project_id} (task ids returned: {len(task_ids)})"
            )
        return [int(t) for t in task_ids]

    def import_items(
        self,
        items: Iterable[tuple[Post, Prediction | None]],
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_batch: Callable[[int, list[int]], None] | None = None,
    ) -> dict[str, int]:
        """Import posts (with their predictions) whose post id is not in the project yet.

        The project's post ids are listed first; a post already there, or met earlier in
        ``items``, is skipped. ``on_batch(number, task_ids)`` is called after each batch
        (progress; tests use it to crash in the middle). Returns counts.
        """
        existing = self.post_ids()
        duplicates = sum(1 for ids in existing.values() if len(ids) > 1)
        if duplicates:
            log.warning(
                "project %s already holds %d posts more than once", self.project_id, duplicates
            )
        known = set(existing)
        counts = {
            "project_id": self.project_id,
            "n_imported": 0,
            "n_skipped_existing": 0,
            "n_duplicates_in_input": 0,
            "n_batches": 0,
        }
        seen_here: set[str] = set()

        def missing() -> Iterator[tuple[Post, Prediction | None]]:
            for post, prediction in items:
                if post.id in known:
                    counts["n_skipped_existing"] += 1
                elif post.id in seen_here:
                    counts["n_duplicates_in_input"] += 1
                else:
                    seen_here.add(post.id)
                    yield post, prediction

        for batch in batched(missing(), batch_size):
            task_ids = self.import_tasks(to_tasks(batch, self.config))
            counts["n_batches"] += 1
            counts["n_imported"] += len(task_ids)
            log.info(
                "imported batch %d (%d tasks) into project %s",
                counts["n_batches"],
                len(task_ids),
                self.project_id,
            )
            if on_batch is not None:
                on_batch(counts["n_batches"], task_ids)
        log.info("import into project %s: %s", self.project_id, counts)
        return counts

    def import_predictions(
        self,
        storage: Storage,
        posts_key: str,
        predictions_key: str,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        on_batch: Callable[[int, list[int]], None] | None = None,
        only: Collection[str] | None = None,
    ) -> dict[str, int]:
        """Import the posts at ``posts_key`` with the predictions at ``predictions_key``.

        Idempotent per post id (see :meth:`import_items`). Each task carries its prediction
        as a pre-annotation with ``model_version`` and the span scores. With ``only``, just
        the posts with those ids are imported (the active-learning selection). Returns
        ``{"n_imported", "n_skipped_existing", "n_duplicates_in_input", "n_batches",
        "project_id"}``.
        """
        pairs = read_pairs(storage, posts_key, predictions_key)
        return self.import_items(
            pairs if only is None else ((p, q) for p, q in pairs if p.id in only),
            batch_size=batch_size,
            on_batch=on_batch,
        )

    # -- annotations -----------------------------------------------------------------------
    def tasks_updated_since(
        self, since: datetime | None, *, annotated_only: bool = False
    ) -> Iterator[dict[str, Any]]:
        """Tasks (with annotations) whose ``updated_at`` is at or after ``since``.

        ``since=None`` means every task. With ``annotated_only``, only tasks holding at
        least one annotation that was not skipped (Label Studio's ``total_annotations``
        does not count skipped ones), so that polling a large project that has few labels
        does not list every task each time.
        """
        items: list[dict[str, Any]] = []
        if since is not None:
            items.append(
                {
                    "filter": "filter:tasks:updated_at",
                    "operator": "greater_or_equal",
                    "type": "Datetime",
                    "value": format_time(since),
                }
            )
        if annotated_only:
            items.append(
                {
                    "filter": "filter:tasks:total_annotations",
                    "operator": "greater",
                    "type": "Number",
                    "value": 0,
                }
            )
        query = {"filters": {"conjunction": "and", "items": items}} if items else None
        return self.iter_tasks(query=query, fields="all")

    def new_annotations(
        self,
        checkpoint: PullCheckpoint,
        *,
        overlap: float = DEFAULT_OVERLAP_SECONDS,
        include_cancelled: bool = False,
    ) -> list[AnnotationStamp]:
        """Annotation versions saved since ``checkpoint`` (all of them for an empty one)."""
        bound = checkpoint.lower_bound(overlap)
        tasks = self.tasks_updated_since(bound, annotated_only=not include_cancelled)
        return [
            stamp
            for stamp in annotation_stamps(tasks)
            if checkpoint.is_new(stamp, overlap) and (include_cancelled or not stamp.cancelled)
        ]

    def count_labelled_since(
        self, checkpoint: PullCheckpoint | None = None, *, overlap: float = DEFAULT_OVERLAP_SECONDS
    ) -> int:
        """How many annotations (not skipped) were created or updated since ``checkpoint``."""
        return len(self.new_annotations(checkpoint or PullCheckpoint(), overlap=overlap))

    def export_json(self, task_ids: Sequence[int] | None = None) -> bytes:
        """The raw JSON export of the annotated tasks (of ``task_ids`` only, if given).

        Note: the SDK's ``ids=`` argument is sent as ``ids=…``, which the server ignores
        (it reads ``ids[]``); it would silently export every task. ``ids[]`` is sent here.
        """
        options: dict[str, Any] = {}
        if task_ids is not None:
            if not task_ids:
                return b"[]"
            options["additional_query_parameters"] = {"ids[]": [int(t) for t in task_ids]}
        with self._api(f"export of project {self.project_id}"):
            return b"".join(
                self.client.projects.exports.download_sync(
                    self.project_id,
                    export_type="JSON",
                    request_options=options or None,  # type: ignore[arg-type]
                )
            )

    def _export_tasks(self, task_ids: Sequence[int] | None) -> tuple[bytes, list[Any]]:
        """Raw export bytes and the parsed tasks; several requests are joined into one list."""
        if task_ids is None or len(task_ids) <= EXPORT_IDS_PER_REQUEST:
            raw = self.export_json(task_ids)
            parsed = self._parse_export(raw)
            return raw, parsed
        tasks: list[Any] = []
        for chunk in batched(task_ids, EXPORT_IDS_PER_REQUEST):
            tasks.extend(self._parse_export(self.export_json(chunk)))
        return json.dumps(tasks, ensure_ascii=False).encode("utf-8"), tasks

    def _parse_export(self, raw: bytes) -> list[Any]:
        try:
            parsed = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise LabelStudioError(
                f"the export of project {self.project_id} is not JSON: {exc}"
            ) from exc
        if not isinstance(parsed, list):
            raise LabelStudioError(
                f"the export of project {self.project_id} is a {type(parsed).__name__}, "
                "not a list of tasks"
            )
        return parsed

    @property
    def checkpoint_key(self) -> str:
        """Where :meth:`snapshot_export` keeps its checkpoint."""
        return f"{CHECKPOINTS}/labelstudio-{self.project_id}.json"

    def snapshot_keys(self, storage: Storage) -> list[str]:
        """Every export snapshot of this project in ``storage``, oldest first.

        Each incremental snapshot holds only what changed since the one before, so the
        labels of a project are all of its snapshots read in order (the latest annotation
        of a post wins).
        """
        return snapshot_keys(storage, self.project_id)

    def snapshot_export(
        self, storage: Storage, stamp: str, *, overlap: float = DEFAULT_OVERLAP_SECONDS
    ) -> str:
        """Pull the annotations created or updated since the last pull into a snapshot.

        Writes the raw export (the annotated tasks holding new annotation versions, every
        task exactly as Label Studio sent it) to ``exports/<stamp>-ls-<project id>.json``,
        never overwriting an existing snapshot, then advances the checkpoint at
        :attr:`checkpoint_key`. Returns the snapshot's key. The first pull exports every
        annotated task; a pull with nothing new writes an empty list.
        """
        checkpoint = load_checkpoint(storage, self.checkpoint_key)
        if checkpoint.updated_at is None:
            raw, tasks = self._export_tasks(None)
            n_new = len([s for s in annotation_stamps(tasks) if not s.cancelled])
        else:
            stamps = self.new_annotations(checkpoint, overlap=overlap, include_cancelled=True)
            task_ids = sorted({s.task_id for s in stamps})
            raw, tasks = self._export_tasks(task_ids)
            n_new = len([s for s in stamps if not s.cancelled])
        attempt = 1
        while storage.exists(snapshot_key(stamp, self.project_id, attempt)):
            attempt += 1
        key = snapshot_key(stamp, self.project_id, attempt)
        storage.write_bytes(key, raw)
        advanced = checkpoint.advance(annotation_stamps(tasks), overlap)
        save_checkpoint(
            storage,
            self.checkpoint_key,
            advanced,
            project_id=self.project_id,
            last_snapshot=key,
            overlap_seconds=overlap,
        )
        log.info(
            "pulled %d tasks (%d new annotation versions) from project %s into %s",
            len(tasks),
            n_new,
            self.project_id,
            key,
        )
        return key

    # -- webhooks --------------------------------------------------------------------------
    def ensure_webhook(
        self,
        url: str,
        *,
        actions: Sequence[str] = LABEL_ACTIONS,
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """A webhook of this project posting ``actions`` (with payload) to ``url``; idempotent.

        An existing webhook of the project with the same URL is updated in place when its
        actions, headers or state differ; otherwise a new one is created. Returns its id.
        """
        wanted_headers = dict(headers or {})
        with self._api(f"listing of project {self.project_id}'s webhooks"):
            hooks = [
                h
                for h in self.client.webhooks.list(project=str(self.project_id))
                if h.url == url and h.project == self.project_id
            ]
        if hooks:
            hook = min(hooks, key=lambda h: h.id or 0)
            current = {str(a) for a in (hook.actions or [])}
            if (
                current != set(actions)
                or dict(hook.headers or {}) != wanted_headers
                or not hook.send_payload
                or hook.is_active is False
            ):
                with self._api(f"update of webhook {hook.id}"):
                    self.client.webhooks.update(
                        id=int(hook.id or 0),
                        url=url,
                        actions=list(actions),
                        headers=wanted_headers,
                        send_payload=True,
                        is_active=True,
                    )
            return int(hook.id or 0)
        with self._api(f"creation of a webhook for project {self.project_id}"):
            created = self.client.webhooks.create(
                url=url,
                project=self.project_id,
                actions=list(actions),
                headers=wanted_headers,
                send_payload=True,
                is_active=True,
            )
        log.info("registered webhook %s of project %s", created.id, self.project_id)
        return int(created.id or 0)
