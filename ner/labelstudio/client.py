"""Label Studio through its API (label-studio-sdk 2.x ``LabelStudio`` client). No storage.

:class:`LabelStudioProject` is one project on one server. It ensures the project
(:meth:`~LabelStudioProject.connect`: found by exact title or created with
:func:`~ner.labelstudio.config.label_config`, and its *actual* config read back), lists its
tasks and post ids, imports one batch of tasks (never retried blindly: the SDK retries a POST
after a 5xx or a dropped connection, which could import a batch twice), lists the annotations
saved since a :class:`~ner.labelstudio.checkpoint.PullCheckpoint`, exports tasks as raw JSON,
and registers webhooks idempotently. What is read from or written to storage (import files,
snapshots, checkpoints) is :mod:`ner.labelstudio.exchange`'s.

Every SDK or HTTP failure becomes :class:`~ner.errors.LabelStudioError` (``raise … from``);
messages carry the status and a short body, never headers or the API key.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import pydantic
from label_studio_sdk.core.api_error import ApiError
from label_studio_sdk.core.request_options import RequestOptions

from ner.errors import (
    ExportFileError,
    LabelStudioAuthError,
    LabelStudioError,
    ProjectNotFoundError,
)
from ner.labelstudio.checkpoint import (
    DEFAULT_OVERLAP_SECONDS,
    AnnotationStamp,
    PullCheckpoint,
    annotation_stamps,
    format_time,
)
from ner.labelstudio.config import LabelConfig, is_generated, label_config, parse_label_config
from ner.labelstudio.export import load_export, task_post_id_text
from ner.settings import redact_uri

if TYPE_CHECKING:
    from label_studio_sdk import LabelStudio

    from ner.settings import Settings

log = logging.getLogger(__name__)

#: Task ids per export request (they travel in the query string as ``ids[]=…``).
EXPORT_IDS_PER_REQUEST = 500
#: Tasks per page when listing a project.
PAGE_SIZE = 1000

#: Request options for a call the SDK must not retry (its default: twice, ~3 s of backoff):
#: an import that could land twice, or a one-shot status read.
NO_RETRY: RequestOptions = {"max_retries": 0}


#: What the SDK and the HTTP layer raise; :func:`api_error` turns them into ours.
API_FAILURES = (ApiError, httpx.HTTPError, pydantic.ValidationError, json.JSONDecodeError)
#: An HTML tag in an error body (Label Studio links its guide in some).
_TAG = re.compile(r"<[^>]*>")
#: Statuses of a refused API key.
REFUSED = (401, 403)


def describe_failure(exc: BaseException) -> str:
    """A short description of an SDK/HTTP failure: status and the body's ``detail`` with
    Label Studio's field errors (HTML tags dropped), else the body; never headers."""
    if isinstance(exc, ApiError):
        body = exc.body
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            errors = _field_errors(body.get("validation_errors"))
            return f"HTTP {exc.status_code}: {body['detail'][:300]}{errors}"
        text = body if isinstance(body, str) else json.dumps(body, default=str)
        return f"HTTP {exc.status_code}: {text[:300]}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _field_errors(found: object) -> str:
    """``": field: message; message"`` from Label Studio's ``validation_errors`` (a mapping
    of field to messages), HTML tags dropped, at most 300 characters; ``""`` when none."""
    if not isinstance(found, Mapping) or not found:
        return ""
    text = "; ".join(
        f"{field}: {' '.join(_TAG.sub('', str(message)).split())}"
        for field, messages in found.items()
        for message in (messages if isinstance(messages, list) else [messages])
    )
    return f": {text if len(text) <= 300 else text[:299] + '…'}"


def api_error(what: str, exc: BaseException, secret: str | None = None) -> LabelStudioError:
    """Our error for an SDK/HTTP failure of ``what`` (the key masked):
    :class:`LabelStudioAuthError` when the server refused the key (never retried), else
    :class:`LabelStudioError`."""
    message = f"Label Studio {what} failed: {describe_failure(exc)}"
    if isinstance(exc, ApiError) and exc.status_code in REFUSED:
        message += (
            "; the API key was refused: set NER_LABEL_STUDIO_API_KEY to a token of this "
            "server (Account & Settings in Label Studio)"
        )
    if secret:
        message = message.replace(secret, "***")
    refused = isinstance(exc, ApiError) and exc.status_code in REFUSED
    return (LabelStudioAuthError if refused else LabelStudioError)(message)


@contextmanager
def _api(what: str, secret: str | None = None) -> Iterator[None]:
    """Turn SDK, HTTP and response-shape failures into :class:`LabelStudioError` (see
    :func:`api_error`)."""
    try:
        yield
    except API_FAILURES as exc:
        raise api_error(what, exc, secret) from exc


def post_id_of(task: Any) -> str | None:
    """The post id the pull reads a task as (:mod:`ner.labelstudio.export`): ``data.post_id``
    (what ``apply`` sends), else ``data.id``, else the task id (a task made by hand), so
    that a post is checked against the same identity its labels come back under; None when
    the task has none of them."""
    get = task.get if isinstance(task, Mapping) else lambda key: getattr(task, key, None)
    return task_post_id_text(get("data"), get("id"))


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


def _updated_since_query(since: datetime | None, annotated_only: bool) -> dict[str, Any] | None:
    """A Data Manager query: tasks updated at or after ``since`` (and annotated)."""
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
    return {"filters": {"conjunction": "and", "items": items}} if items else None


def list_projects(
    client: LabelStudio, title: str | None = None, request_options: RequestOptions | None = None
) -> list[Any]:
    """Projects whose title contains ``title`` (case-insensitive; all without it), every page.

    The SDK's pager asks for one more page after any page with items; Label Studio answers
    that page with a 404 and logs an ERROR with a traceback each time. Here the next page is
    asked for only when the answer names one (``next``). Raises the SDK's errors.
    """
    page: Any = client.projects.list(title=title, page_size=100, request_options=request_options)
    found: list[Any] = []
    while page is not None:
        found.extend(page.items or [])
        page = page.next_page() if getattr(page.response, "next", None) else None
    return found


def projects_titled(
    client: LabelStudio, title: str, request_options: RequestOptions | None = None
) -> list[Any]:
    """Projects titled exactly ``title``, oldest (lowest id) first. Raises the SDK's errors."""
    listed = list_projects(client, title, request_options=request_options)
    return sorted((p for p in listed if p.title == title), key=lambda p: p.id or 0)


def _find_or_create(
    client: LabelStudio, title: str, xml: str, secret: str | None, *, create: bool
) -> tuple[int, bool]:
    """(id, created) of the oldest project titled exactly ``title``; created with ``xml`` if
    none and ``create``, else :class:`ProjectNotFoundError`."""
    with _api(f"lookup of project {title!r}", secret):
        matches = projects_titled(client, title)
    if len(matches) > 1:
        log.warning(
            "%d Label Studio projects are titled %r; using the oldest, id %s",
            len(matches),
            title,
            matches[0].id,
        )
    if matches:
        return int(matches[0].id or 0), False
    if not create:
        raise ProjectNotFoundError(_missing_project(client, title, secret))
    with _api(f"creation of project {title!r}", secret):
        created = client.projects.create(title=title, label_config=xml)
    if created.id is None:
        raise LabelStudioError(f"Label Studio created project {title!r} without an id")
    log.info("created Label Studio project %s %r", created.id, title)
    return int(created.id), True


def _missing_project(client: LabelStudio, title: str, secret: str | None) -> str:
    """Why no project titled ``title`` will do: the closest title there is, the settings
    that name it, and, for a new environment, the command that creates it."""
    with _api("listing of the projects", secret):
        titles = sorted({str(p.title) for p in list_projects(client) if p.title})
    close = difflib.get_close_matches(title, titles, n=1)
    there = f"did you mean {close[0]!r}? " if close else ""
    count = f"{len(titles)} project{'' if len(titles) == 1 else 's'} there"
    return (
        f"no Label Studio project is titled {title!r} ({there}{count}): "
        "check NER_ENV and NER_LABEL_STUDIO_PROJECT; for a new environment, `brandloop "
        "labelstudio setup` creates its project"
    )


class LabelStudioProject:
    """One Label Studio project, reached through the SDK's ``LabelStudio`` client.

    Build it with :meth:`connect` (from settings) or :meth:`ensure` (from a client).
    ``config`` is the project's own labelling config, parsed: results are written with its
    ``from_name``/``to_name`` and task text goes under its ``text_key``. ``created`` says
    whether building it created the project in Label Studio, ``added`` the labels it added
    to an existing project's config.
    """

    def __init__(
        self,
        client: LabelStudio,
        project_id: int,
        title: str,
        config: LabelConfig,
        *,
        secret: str | None = None,
        created: bool = False,
        added: Sequence[str] = (),
    ) -> None:
        self.client = client
        self.project_id = project_id
        self.title = title
        self.config = config
        self.created = created
        self.added = tuple(added)
        self._secret = secret

    def __repr__(self) -> str:
        return f"<LabelStudioProject {self.project_id} {self.title!r}>"

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def connect(
        cls,
        settings: Settings,
        *,
        timeout: float = 60.0,
        client: LabelStudio | None = None,
        create: bool = True,
    ) -> LabelStudioProject:
        """The project ``settings.project_title`` on ``settings.label_studio_url``, ensured
        (created when missing, unless ``create`` is False: what only reads passes False).

        Raises :class:`~ner.errors.ConfigError` when ``NER_LABEL_STUDIO_API_KEY`` is not set,
        :class:`~ner.errors.ProjectNotFoundError` for a missing project not to be created,
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
        try:
            return cls.ensure(
                client, settings.project_title, settings.labels, secret=api_key, create=create
            )
        except LabelStudioError as exc:
            if not isinstance(exc.__cause__, httpx.TransportError):
                raise
            raise type(exc)(  # a flow's log said "Connection refused" without the address
                f"{exc} (at {redact_uri(settings.label_studio_url)}: is Label Studio running "
                "there? NER_LABEL_STUDIO_URL names it)"
            ) from exc.__cause__

    @classmethod
    def ensure(
        cls,
        client: LabelStudio,
        title: str,
        labels: Sequence[str],
        *,
        secret: str | None = None,
        create: bool = True,
    ) -> LabelStudioProject:
        """Find the project titled exactly ``title`` or create it (``create``); idempotent.

        A new project gets :func:`~ner.labelstudio.config.label_config` for ``labels``. An
        existing one keeps its config; if that config is one brandloop generated and lacks
        some of ``labels``, they are added (the old labels stay, so existing annotations stay
        valid). A hand-written config lacking labels is an error, not overwritten. With
        several projects of that title, the oldest (lowest id) is used.
        """
        project_id, created = _find_or_create(
            client, title, label_config(labels), secret, create=create
        )
        with _api(f"read of project {project_id}", secret):
            xml = client.projects.get(id=project_id).label_config or ""
        config = parse_label_config(xml)
        missing = [label for label in labels if label not in config.labels]
        if missing:
            if not is_generated(xml):
                raise LabelStudioError(
                    f"project {project_id} {title!r} has a custom labelling config without "
                    f"the labels {missing}: add them in Label Studio (project settings)"
                )
            wanted = [*config.labels, *missing]
            with _api(f"update of project {project_id}'s labelling config", secret):
                client.projects.update(id=project_id, label_config=label_config(wanted))
            config = LabelConfig.for_labels(wanted)
            log.info("added labels %s to Label Studio project %s", missing, project_id)
        return cls(client, project_id, title, config, secret=secret, created=created, added=missing)

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
        """Tasks of the project as plain task JSON (paged; ``query`` is a Data Manager query)."""
        with self._api(f"listing of project {self.project_id}'s tasks"):
            page: Any = self.client.tasks.list(
                project=self.project_id,
                query=None if query is None else json.dumps(query),
                fields=fields,
                include=include,
                page_size=PAGE_SIZE,
            )
            listed = 0
            while page is not None:
                items = page.items or []
                for task in items:
                    yield task.model_dump(mode="json", exclude_none=True)
                listed += len(items)
                # the SDK's pager asks for a page past the last, which Label Studio answers
                # with a 404 it logs as an ERROR with a traceback: stop at the total instead
                total = getattr(page.response, "total", None)
                more = bool(items) and (not isinstance(total, int) or listed < total)
                page = page.next_page() if more else None

    def post_ids(self) -> dict[str, list[int]]:
        """Task ids of every post id in the project (more than one means a duplicate)."""
        return {post_id: [t for t, _ in tasks] for post_id, tasks in self.post_tasks().items()}

    def post_tasks(self) -> dict[str, list[tuple[int, str | None]]]:
        """``(task id, text)`` of every post id's tasks, in one paged listing; the text is the
        task's ``data[config.text_key]`` (None when it is not a string)."""
        found: dict[str, list[tuple[int, str | None]]] = {}
        for task in self.iter_tasks(include="id,data"):
            post_id = post_id_of(task)
            if post_id is not None:
                text = task["data"].get(self.config.text_key)
                found.setdefault(post_id, []).append(
                    (int(task["id"]), text if isinstance(text, str) else None)
                )
        return found

    def live_annotations(self) -> dict[int, list[int]]:
        """Every task id of the project with the ids of its annotations (skipped ones too).

        One paged listing that asks only for ids (``include="id,annotations"``; ``fields``
        must be ``"all"``, else the server leaves the annotations out), so it stays cheap on a
        large project. A task or annotation without an integer id is left out. A task listed
        without its ``annotations`` raises :class:`LabelStudioError`: read as "no
        annotations", it would drop every label of the project at the next collect.
        """
        live: dict[int, list[int]] = {}
        for task in self.iter_tasks(include="id,annotations", fields="all"):
            if type(task.get("id")) is not int:
                continue
            if not isinstance(task.get("annotations"), list):
                raise LabelStudioError(
                    f"project {self.project_id}: task {task['id']} was listed without its "
                    "annotations; the live set cannot be taken"
                )
            found = task["annotations"]
            live[task["id"]] = sorted(
                a["id"] for a in found if isinstance(a, dict) and type(a.get("id")) is int
            )
        return live

    def import_tasks(self, tasks: Sequence[Mapping[str, Any]]) -> list[int]:
        """Import one batch of tasks as they are (no retry); returns the new task ids.

        The tasks go as plain JSON: the SDK's ``ImportApiRequest`` model wrongly requires a
        ``task`` id in every prediction. Raises :class:`LabelStudioError` when the server
        imported another number of tasks than sent.
        """
        request: Any = [dict(task) for task in tasks]
        with self._api(f"import of {len(tasks)} tasks into project {self.project_id}"):
            response = self.client.projects.import_tasks(
                self.project_id,
                request=request,
                return_task_ids=True,
                request_options=NO_RETRY,
            )
        task_ids = (response.model_extra or {}).get("task_ids") or []
        if response.task_count != len(tasks) or len(task_ids) != len(tasks):
            raise LabelStudioError(
                f"Label Studio imported {response.task_count} of {len(tasks)} tasks into "
                f"project {self.project_id} (task ids returned: {len(task_ids)})"
            )
        return [int(t) for t in task_ids]

    def prediction_versions(self) -> dict[int, set[str]]:
        """Task id -> the ``model_version`` of each prediction it holds (``""`` for one
        without), for the whole project in one request."""
        with self._api(f"listing of project {self.project_id}'s predictions"):
            found = self.client.predictions.list(project=self.project_id)
        versions: dict[int, set[str]] = {}
        for prediction in found:
            versions.setdefault(int(prediction.task), set()).add(prediction.model_version or "")
        return versions

    def add_prediction(self, task_id: int, prediction: Mapping[str, Any]) -> None:
        """Add ``prediction`` (a pre-annotation: ``{"model_version", "score", "result"}``) to
        the task ``task_id`` beside those it holds (no retry)."""
        with self._api(f"prediction for task {task_id} of project {self.project_id}"):
            self.client.predictions.create(
                task=task_id,
                result=list(prediction["result"]),
                score=prediction.get("score"),
                model_version=prediction.get("model_version"),
                request_options=NO_RETRY,
            )

    def delete_post_tasks(self, post_ids: Iterable[str]) -> dict[str, list[int]]:
        """Delete every task of the posts ``post_ids`` (found by :func:`post_id_of`), with its
        annotations and predictions; returns post id -> deleted task ids (posts without a
        task are left out). A task already gone (404) counts as deleted, so a retry after a
        failure part way finishes the job. :class:`LabelStudioError` for other failures."""
        wanted = set(post_ids)
        found = {p: ids for p, ids in self.post_ids().items() if p in wanted}
        for post_id, task_ids in found.items():
            for task_id in task_ids:
                self._delete_task(task_id, post_id)
        return found

    def _delete_task(self, task_id: int, post_id: str) -> None:
        try:
            with self._api(f"deletion of task {task_id} (post {post_id!r})"):
                self.client.tasks.delete(id=str(task_id))
        except LabelStudioError as exc:
            cause = exc.__cause__
            if isinstance(cause, ApiError) and cause.status_code == 404:
                return  # deleted already
            raise

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
        return self.iter_tasks(query=_updated_since_query(since, annotated_only), fields="all")

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

    def export_tasks(self, task_ids: Sequence[int] | None) -> tuple[bytes, list[Any]]:
        """Raw export bytes and the parsed tasks (of ``task_ids``, or every annotated task).

        More ids than :data:`EXPORT_IDS_PER_REQUEST` are exported in several requests, joined
        into one list. Raises :class:`LabelStudioError` when an export is not a JSON list.
        """
        if task_ids is None or len(task_ids) <= EXPORT_IDS_PER_REQUEST:
            raw = self.export_json(task_ids)
            return raw, self._parse_export(raw)
        tasks: list[Any] = []
        for chunk in batched(task_ids, EXPORT_IDS_PER_REQUEST):
            tasks.extend(self._parse_export(self.export_json(chunk)))
        # ASCII escapes: a lone surrogate a task may hold stays an escape, never a crash here
        return json.dumps(tasks, ensure_ascii=True).encode("ascii"), tasks

    def _parse_export(self, raw: bytes) -> list[Any]:
        """The tasks of one export answer, read as the pull reads snapshots (so a snapshot
        is only written when it can be read): :class:`LabelStudioError` otherwise."""
        try:
            return load_export(raw, f"export of project {self.project_id}")
        except ExportFileError as exc:
            raise LabelStudioError(f"the {exc.record_id}: {exc.reason}") from exc

    # -- webhooks --------------------------------------------------------------------------
    def ensure_webhook(
        self,
        url: str,
        *,
        actions: Sequence[str],
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
        if not hooks:
            return self._create_webhook(url, actions, wanted_headers)
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

    def _create_webhook(self, url: str, actions: Sequence[str], headers: dict[str, str]) -> int:
        with self._api(f"creation of a webhook for project {self.project_id}"):
            created = self.client.webhooks.create(
                url=url,
                project=self.project_id,
                actions=list(actions),
                headers=headers,
                send_payload=True,
                is_active=True,
            )
        log.info("registered webhook %s of project %s", created.id, self.project_id)
        return int(created.id or 0)
