"""What goes between storage and Label Studio: tasks, imports, snapshots, collected labels.

* **tasks**: :func:`read_pairs` is the one join of stored posts with their predictions;
  :func:`to_tasks` turns the pairs into Label Studio import JSON, which
  :func:`write_import_file` streams into storage and :func:`import_predictions` sends;
* **imports are idempotent** (:func:`import_items`): the post id (task ``data.post_id``) is the
  key. The project's post ids are listed first and only the missing posts are imported, in
  batches, so a re-run, or a run after a crash in the middle of an import, leaves exactly one
  task per post. A failed batch raises, and the next run lists the project again;
* **pulls are incremental** (:func:`snapshot_export`): only the tasks with annotations created
  or updated since the last pull are exported (see :mod:`ner.labelstudio.checkpoint`), the raw
  export is kept unchanged as an immutable snapshot in storage, and the checkpoint is advanced
  only after the snapshot is written;
* **deletions**: each pull also records the project's live set (every task id with its
  annotation ids, :mod:`ner.labelstudio.liveset`), taken after the export;
* **collecting** (:func:`collect_annotations`, in :mod:`ner.labelstudio.collect`, re-exported
  here) parses snapshots into one annotations JSONL, the latest annotation of a post winning,
  deleted tasks and annotations dropped, disagreeing annotators resolved by a policy.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pydantic import BaseModel, ConfigDict

from ner import forget, layout
from ner.errors import ConfigError, DataError
from ner.labelstudio.checkpoint import (
    DEFAULT_OVERLAP_SECONDS,
    PullCheckpoint,
    annotation_stamps,
)
from ner.labelstudio.client import LabelStudioProject, batched

# Re-exported: collecting belongs with the snapshots for the flows and tests that pull.
from ner.labelstudio.collect import CollectReport as CollectReport
from ner.labelstudio.collect import collect_annotations as collect_annotations
from ner.labelstudio.config import LabelConfig
from ner.labelstudio.export import prediction_json
from ner.labelstudio.liveset import save_live_set
from ner.labelstudio.quarantine import quarantined_before
from ner.records import read_posts
from ner.report import quantity
from ner.storage import Storage
from ner.types import Post, Prediction, Rejected

log = logging.getLogger(__name__)

#: Keys of :class:`~ner.types.Post` copied into a task's ``data`` besides the text.
POST_META = ("created_at", "author_id", "lang", "source", "query")
#: Posts imported per request.
DEFAULT_BATCH_SIZE = 500

#: ``on_batch(number, task_ids)``: called after each imported batch.
OnBatch = Callable[[int, list[int]], None]


# --------------------------------------------------------------------------- tasks


def to_tasks(
    items: Iterable[tuple[Post, Prediction | None]], config: LabelConfig
) -> list[dict[str, Any]]:
    """Label Studio import JSON: one task per post, with its prediction as a pre-annotation.

    ``data`` holds the text under ``config.text_key``, the ``post_id`` and the post's
    metadata. A post without a prediction gets no ``predictions`` key. Predicted spans are
    code-point offsets; a span that does not match the post text, or a prediction for another
    post, is a bug upstream and raises :class:`~ner.errors.DataError` naming the post.
    """
    tasks: list[dict[str, Any]] = []
    for post, prediction in items:
        data: dict[str, Any] = {config.text_key: post.text, "post_id": post.id}
        for key in POST_META:
            data[key] = getattr(post, key)
        task: dict[str, Any] = {"data": data}
        if prediction is not None:
            task["predictions"] = [prediction_json(post.id, post.text, prediction, config)]
        tasks.append(task)
    return tasks


def _read_predictions(storage: Storage, key: str) -> Iterator[Prediction]:
    for number, line in enumerate(storage.iter_lines(key), start=1):
        if not line.strip():
            continue
        try:
            yield Prediction.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{key}:{number}", f"unreadable prediction: {exc}") from exc


def read_pairs(
    storage: Storage, posts_key: str, predictions_key: str
) -> Iterator[tuple[Post, Prediction]]:
    """Posts and their predictions, read line by line in step (the predict step keeps order).

    Raises :class:`DataError` for an unreadable line (naming ``key:line``), a prediction of
    another post (naming the post), or files that differ in count (naming the predictions).
    """
    predictions = forget.honour(
        storage, _read_predictions(storage, predictions_key), lambda p: p.post_id
    )
    count = 0
    for post in read_posts(storage, posts_key):
        prediction = next(predictions, None)
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
    extra = next(predictions, None)
    if extra is not None:
        raise DataError(
            predictions_key,
            f"posts and predictions differ in count: {count} posts, and a prediction for "
            f"{extra.post_id!r} after them",
        )


def _selected(
    pairs: Iterable[tuple[Post, Prediction]], only: Collection[str] | None
) -> Iterable[tuple[Post, Prediction]]:
    return pairs if only is None else ((p, q) for p, q in pairs if p.id in only)


def write_import_file(
    storage: Storage,
    posts_key: str,
    predictions_key: str,
    key: str,
    labels: Sequence[str],
    *,
    only: Collection[str] | None = None,
) -> int:
    """Stream posts and their predictions into one Label Studio import JSON at ``key``.

    Posts and predictions are read line by line, in step (:func:`read_pairs`), so memory
    stays flat. With ``only``, just the posts with those ids become tasks (the
    active-learning selection). Returns the number of tasks written.
    """
    config = LabelConfig.for_labels(labels)
    count = 0

    def lines() -> Iterator[str]:
        nonlocal count
        yield "["
        for pair in _selected(read_pairs(storage, posts_key, predictions_key), only):
            task = to_tasks([pair], config)[0]
            yield ("," if count else "") + json.dumps(task, ensure_ascii=False)
            count += 1
        yield "]"

    storage.write_lines(key, lines())
    return count


# --------------------------------------------------------------------------- imports


class ImportReport(BaseModel):
    """What an import did: tasks imported, posts skipped, batches sent. ``conflicts`` names
    each post skipped because the project holds its id with another text: ``{"post_id":
    str, "task_ids": [int], "reason": str}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project_id: int
    n_imported: int = 0
    n_skipped_existing: int = 0
    n_duplicates_in_input: int = 0
    n_id_conflicts: int = 0
    n_batches: int = 0
    #: Tasks already there given this run's prediction, whose model version they lacked
    #: (a post predicted again with another model: ``apply --reread``).
    n_predictions_added: int = 0
    conflicts: list[dict[str, Any]] = []


#: How many id conflicts an import logs one by one (the flow writes all of them to storage).
LOG_CONFLICTS = 20


def _conflict(post: Post, tasks: list[tuple[int, str | None]]) -> dict[str, Any] | None:
    """Why ``post`` cannot go to the project that holds ``tasks`` for its id (an entry of
    :attr:`ImportReport.conflicts`), or None when one of them has its text (the post is
    there already)."""
    if any(text == post.text for _, text in tasks):
        return None
    task_ids = ", ".join(str(t) for t, _ in tasks)
    why = Rejected(
        post.id,
        f"not sent: the project's task {task_ids} holds this post id with another text "
        "(a source reused the id, or the post was edited); give the post a new id, or "
        "delete the task in Label Studio, and send it again (a JSONL file read before: "
        "brandloop apply --reread, the flow's reread=True)",
    )
    return {**why.entry(), "task_ids": [t for t, _ in tasks]}


def _missing(
    items: Iterable[tuple[Post, Prediction | None]],
    known: dict[str, list[tuple[int, str | None]]],
    tally: Counter[str],
    conflicts: list[dict[str, Any]],
    there: list[tuple[int, Post, Prediction]],
) -> Iterator[tuple[Post, Prediction | None]]:
    """The items whose post is neither in the project nor met earlier in ``items``; a post
    whose id the project holds with another text is added to ``conflicts``, one it holds
    with this text (and a prediction) to ``there`` with the task's id."""
    seen: set[str] = set()
    for post, prediction in items:
        if post.id in known:
            conflict = _conflict(post, known[post.id])
            if conflict is None:
                tally["n_skipped_existing"] += 1
                task_id = next(t for t, text in known[post.id] if text == post.text)
                if prediction is not None:
                    there.append((task_id, post, prediction))
            else:
                tally["n_id_conflicts"] += 1
                conflicts.append(conflict)
        elif post.id in seen:
            tally["n_duplicates_in_input"] += 1
        else:
            seen.add(post.id)
            yield post, prediction


def _add_predictions(project: LabelStudioProject, there: list[tuple[int, Post, Prediction]]) -> int:
    """Give each task already in the project (``there``: task id, post, prediction) the
    prediction when it holds none of that model version, beside those it holds (Label
    Studio shows each version's); returns how many were added. Idempotent per task and
    model version: a run that stopped part way is finished by the next."""
    if not there:
        return 0
    versions = project.prediction_versions()
    added = 0
    for task_id, post, prediction in there:
        if prediction.model_version in versions.get(task_id, set()):
            continue
        payload = prediction_json(post.id, post.text, prediction, project.config)
        project.add_prediction(task_id, payload)
        versions.setdefault(task_id, set()).add(prediction.model_version)  # a post met twice
        added += 1
    if added:
        log.info(
            "gave %s already in project %s the predictions of %s",
            quantity(added, "task"),
            project.project_id,
            there[0][2].model_version,
        )
    return added


def _say_conflicts(project: LabelStudioProject, conflicts: list[dict[str, Any]]) -> None:
    for conflict in conflicts[:LOG_CONFLICTS]:
        log.warning(
            "project %s: post %s: %s", project.project_id, conflict["post_id"], conflict["reason"]
        )
    if len(conflicts) > LOG_CONFLICTS:
        log.warning("... and %d more posts not sent", len(conflicts) - LOG_CONFLICTS)


def import_items(
    project: LabelStudioProject,
    items: Iterable[tuple[Post, Prediction | None]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: OnBatch | None = None,
) -> ImportReport:
    """Import posts (with their predictions) whose post id is not in ``project`` yet.

    The project's post ids and texts are listed first; a post already there, or met earlier
    in ``items``, is skipped. A post whose id the project holds with another text is not
    sent either, but named in the report's ``conflicts`` and logged: it is not the post the
    project has. ``on_batch(number, task_ids)`` is called after each batch (progress; tests
    use it to crash in the middle). Raises :class:`LabelStudioError` when a batch fails (the
    next run resumes after the batches that arrived).
    """
    existing = project.post_tasks()
    duplicates = sorted(post_id for post_id, tasks in existing.items() if len(tasks) > 1)
    if duplicates:  # named, as a trial read only a count and the object's repr
        log.warning(
            "Label Studio project %r (id %d) already holds %s more than once: %s%s (the pull "
            "keeps one label per post and names the others superseded)",
            project.title,
            project.project_id,
            quantity(len(duplicates), "post"),
            ", ".join(duplicates[:5]),
            " …" if len(duplicates) > 5 else "",
        )
    tally: Counter[str] = Counter()
    conflicts: list[dict[str, Any]] = []
    there: list[tuple[int, Post, Prediction]] = []
    for batch in batched(_missing(items, existing, tally, conflicts, there), batch_size):
        task_ids = project.import_tasks(to_tasks(batch, project.config))
        tally["n_batches"] += 1
        tally["n_imported"] += len(task_ids)
        number = tally["n_batches"]
        log.info("imported batch %d (%d tasks) into %s", number, len(task_ids), project)
        if on_batch is not None:
            on_batch(number, task_ids)
    _say_conflicts(project, conflicts)
    tally["n_predictions_added"] = _add_predictions(project, there)
    report = ImportReport(project_id=project.project_id, conflicts=conflicts, **tally)
    log.info(
        "import into project %s: %s", project.project_id, report.model_dump(exclude={"conflicts"})
    )
    return report


def import_predictions(
    project: LabelStudioProject,
    storage: Storage,
    posts_key: str,
    predictions_key: str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: OnBatch | None = None,
    only: Collection[str] | None = None,
) -> ImportReport:
    """Import the posts at ``posts_key`` with the predictions at ``predictions_key``.

    Idempotent per post id (see :func:`import_items`). Each task carries its prediction as a
    pre-annotation with ``model_version`` and the span scores. With ``only``, just the posts
    with those ids are imported (the active-learning selection).
    """
    pairs = _selected(read_pairs(storage, posts_key, predictions_key), only)
    return import_items(project, pairs, batch_size=batch_size, on_batch=on_batch)


# --------------------------------------------------------------------------- snapshots


def checkpoint_key(project_id: int) -> str:
    """Where :func:`snapshot_export` keeps the pull checkpoint of a project."""
    return layout.labelstudio_checkpoint(project_id)


def load_checkpoint(storage: Storage, key: str) -> PullCheckpoint:
    """The checkpoint stored at ``key``, or an empty one (:class:`DataError` if malformed)."""
    if not storage.exists(key):
        return PullCheckpoint()
    return PullCheckpoint.from_dict(storage.read_json(key), key)


def save_checkpoint(storage: Storage, key: str, checkpoint: PullCheckpoint, **extra: Any) -> None:
    """Write ``checkpoint`` (plus ``extra`` informative fields) atomically at ``key``."""
    storage.write_json(key, {**checkpoint.to_dict(), **extra})


def snapshot_key(stamp: str, project_id: int, attempt: int = 1) -> str:
    """Storage key of an export snapshot (``-2``, ``-3`` … if the stamp was used already)."""
    return layout.export_snapshot(stamp, project_id, attempt)


def find_export(storage: Storage, key: str) -> str:
    """The storage key of export ``key``: ``key`` itself (relative to the environment's
    storage), else ``exports/<key>``, where exports land. Raises :class:`ConfigError` (no
    retry helps) naming both places and what ``exports/`` holds when it is in neither, and
    for a key in a folder of brandloop's own records (``goldsets/``, ``quarantine/``...):
    read as an export, an unreadable one would be moved aside (a trial's gold set was)."""
    parts = key.split("/")
    if not key.strip() or "://" in key or key.startswith("/") or {".", ".."} & set(parts):
        way = _how_to_name(storage, key)
        raise ConfigError(
            f"export {key!r} is not a key under storage (a name under exports/, or a relative "
            f"key such as exports/NAME.json), but a path, a URI or nothing: {way}"
        )
    if folder := layout.own_folder(key):
        raise ConfigError(
            f"export {key!r} is in {storage.uri(folder)}/, which holds brandloop's own "
            f"records, not Label Studio exports: name an export under "
            f"{storage.uri(layout.EXPORTS)}/ (or elsewhere in storage)"
        )
    for candidate in (key, f"{layout.EXPORTS}/{key}"):
        if storage.exists(candidate):
            return candidate
    for candidate in (key, f"{layout.EXPORTS}/{key}"):
        if (moved := quarantined_before(storage, candidate)) is not None:  # a trial's 2nd run
            raise ConfigError(
                f"export {key!r} was set aside as unreadable at {moved.quarantined_at}: "
                f"{storage.uri(moved.quarantine_key)} ({moved.reason}); fix it and put it back "
                f"at {storage.uri(moved.key)}"
            )
    if Path(key).is_file():  # a path relative to the working folder (trial BB)
        way = _how_to_name(storage, key)
        raise ConfigError(f"export {key!r} is a local file, not a key under storage: {way}")
    there = [k.removeprefix(f"{layout.EXPORTS}/") for k in storage.list(layout.EXPORTS)]
    held = (
        f"it holds {', '.join(there[:5])}{' ...' if len(there) > 5 else ''}" if there else "empty"
    )
    raise ConfigError(
        f"export {key!r} is neither {storage.uri(key)} nor under "
        f"{storage.uri(layout.EXPORTS)}/ ({held}); drop --export-key to read every export"
    )


def add_export(storage: Storage, path: Path) -> tuple[str, bool]:
    """Copy the local Label Studio JSON export ``path`` to ``exports/<its name>`` in
    ``storage`` (a folder or ``gs://``, the emulator's too, where ``gsutil`` cannot reach),
    where train's pull reads it; returns ``(key, copied)``, ``copied`` False when that key
    holds the same bytes already.

    Raises :class:`DataError` naming the file when it cannot be read, is not a JSON export
    (:func:`ner.labelstudio.export.load_export`'s reasons: the pull would quarantine it),
    does not end in ``.json`` (the pull reads only those), or when its name holds another
    file already (nothing is overwritten: an export is read every run)."""
    from ner.errors import ExportFileError
    from ner.labelstudio.export import load_export

    key = f"{layout.EXPORTS}/{path.name}"
    if not layout.is_export(key):
        raise DataError(str(path), "the pull reads only files named *.json: rename it")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(str(path), f"cannot be read: {exc.strerror or exc}") from exc
    try:
        load_export(data, str(path))
    except ExportFileError as exc:
        raise DataError(str(path), exc.reason) from exc
    if storage.exists(key):
        if storage.read_bytes(key) == data:
            return key, False
        raise DataError(
            str(path),
            f"{storage.uri(key)} holds another file: give this one another name (every "
            "export there is read each run, the newest label of a post winning)",
        )
    storage.write_bytes(key, data)
    return key, True


def _how_to_name(storage: Storage, path: str) -> str:
    """What to pass instead of ``path`` (a local file's path, or a URI): its name when it
    is in the storage, else where to copy it."""
    inside = _key_of_path(storage, path)
    if inside:
        return f"it is in the storage: name it --export-key {inside.removeprefix('exports/')}"
    return (
        f"copy the file under {storage.uri(layout.EXPORTS)}/ (`brandloop labelstudio "
        "add-export FILE` does) and name it"
    )


def _key_of_path(storage: Storage, path: str) -> str | None:
    """The storage key a local file's path or a URI names, when it names one inside
    ``storage`` (a trial passed an export's full path), else None."""
    if "://" not in path:
        if not path or not Path(path).is_file():
            return None
        path = Path(path).resolve().as_uri()
    root = storage.uri().rstrip("/") + "/"
    key = path.removeprefix(root) if path.startswith(root) else ""
    key = unquote(key) if root.startswith("file:") else key  # as_uri() escapes a space
    usable = key and {".", ".."}.isdisjoint(key.split("/")) and not layout.own_folder(key)
    return key if usable else None


def check_pull_source(source: str, export_keys: Sequence[str], *, cli: bool = False) -> None:
    """Where annotations are pulled from: ``"storage"`` (every export there, or the
    ``export_keys`` named) or ``"label_studio"`` (every snapshot of the project).

    Raises:
        ConfigError: an unknown ``source``, or export keys named with ``"label_studio"``,
            whose snapshots they cannot narrow (a trial's key was ignored in silence).
            ``cli`` names the command line's options instead of the flow's parameters.
    """
    if source not in ("storage", "label_studio"):
        raise ConfigError(f"unknown source {source!r}: use 'storage' or 'label_studio'")
    if source == "label_studio" and export_keys:
        keys, storage, studio = (
            ("--export-key", "--source storage", "--source label_studio")
            if cli
            else ("export_keys", "source='storage'", "source='label_studio'")
        )
        raise ConfigError(
            f"{keys} reads exports in storage ({storage}); {studio} reads every snapshot "
            "of the project: give one or the other"
        )


def hand_exports(storage: Storage) -> list[str]:
    """Keys under ``exports/`` that are no project's snapshot (files put there by a person or
    an export storage), which a ``label_studio`` pull does not read."""
    keys = storage.list(layout.EXPORTS)
    return [key for key in keys if layout.export_snapshot_project(key) is None]


def snapshot_keys(storage: Storage, project_id: int) -> list[str]:
    """Keys of the export snapshots of project ``project_id``, in the order they were taken.

    Ordered by stamp, then attempt (``…-ls-7.json`` before ``…-ls-7-2.json``, which a plain
    sort of the names would invert). Each incremental snapshot holds only what changed since
    the one before, so the labels of a project are all of its snapshots read in order.
    """
    pattern = layout.export_snapshot_pattern(project_id)
    found: list[tuple[str, int, str]] = []
    for key in storage.list(layout.EXPORTS):
        match = pattern.match(key)
        if match is not None:
            found.append((match.group(1), int(match.group(2) or 1), key))
    return [key for _, _, key in sorted(found)]


def _free_snapshot_key(storage: Storage, stamp: str, project_id: int) -> str:
    attempt = 1
    while storage.exists(snapshot_key(stamp, project_id, attempt)):
        attempt += 1
    return snapshot_key(stamp, project_id, attempt)


def snapshot_export(
    project: LabelStudioProject,
    storage: Storage,
    stamp: str,
    *,
    overlap: float = DEFAULT_OVERLAP_SECONDS,
) -> str:
    """Pull the annotations created or updated since the last pull into a snapshot.

    Writes the raw export (the annotated tasks holding new annotation versions, every task
    exactly as Label Studio sent it) to ``exports/<stamp>-ls-<project id>.json``, never
    overwriting an existing snapshot, then advances the checkpoint at :func:`checkpoint_key`.
    Returns the snapshot's key. The first pull exports every annotated task; a pull with
    nothing new writes an empty list. After the snapshot, and before the checkpoint moves,
    the project's live set is recorded (``layout.live_set``), so the next collect drops the
    tasks and annotations deleted in Label Studio since.
    """
    key_of_checkpoint = checkpoint_key(project.project_id)
    checkpoint = load_checkpoint(storage, key_of_checkpoint)
    if checkpoint.updated_at is None:
        raw, tasks = project.export_tasks(None)
        n_new = len([s for s in annotation_stamps(tasks) if not s.cancelled])
    else:
        stamps = project.new_annotations(checkpoint, overlap=overlap, include_cancelled=True)
        raw, tasks = project.export_tasks(sorted({s.task_id for s in stamps}))
        n_new = len([s for s in stamps if not s.cancelled])
    key = _free_snapshot_key(storage, stamp, project.project_id)
    storage.write_bytes(key, raw)
    live = save_live_set(storage, project.project_id, project.live_annotations(), snapshot=key)
    save_checkpoint(
        storage,
        key_of_checkpoint,
        checkpoint.advance(annotation_stamps(tasks), overlap),
        project_id=project.project_id,
        last_snapshot=key,
        overlap_seconds=overlap,
    )
    log.info(
        "pulled %d tasks (%d new annotation versions) from %s into %s; %d tasks live",
        len(tasks),
        n_new,
        project,
        key,
        len(live.tasks),
    )
    return key
