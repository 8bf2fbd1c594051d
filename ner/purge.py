"""Remove forgotten posts where they sit in storage.

:mod:`ner.forget` makes every reader skip a forgotten post; this module removes its data:
each object that holds one of the posts is rewritten without it, atomically (a reader sees
the old object or the new one, never half of it), and an object without them is left
untouched (not rewritten). What is cleaned, by key prefix (:mod:`ner.layout`):

* ``posts/``, ``predictions/`` (shards too), ``annotations/`` JSONL: the lines of the posts;
* ``tasks/<stamp>.json`` Label Studio import files and ``exports/`` snapshots: the tasks of
  the posts (``data.post_id``, else ``data.id``, else the task id, as the pull reads them;
  snapshots are otherwise never rewritten: deletion is the one exception the platform terms
  impose);
* ``selections/``: the ids in the active-learning choices;
* the ``.rejected.json`` and ``.review.json`` reports beside posts, annotations and import
  files, and exports set aside in ``quarantine/``: the entries that name the posts (a file
  that cannot be parsed but names one is reported as unreadable, for an operator to
  delete); a quarantined file's reason record then gets its new size and hash;
* ``indexes/fetched/`` (:mod:`ner.fetched`): the posts' entries in each index segment;
* ``goldsets/``: each frozen gold set, and the canary set frozen beside it, keeps its name,
  loses the posts (annotations and record) and is re-hashed; its record keeps the hashes it
  had before under ``hashes_before_forget``. Both objects are reported.

Every function is idempotent: run again, it finds nothing left to remove.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict

from ner import fetched, forget, layout
from ner.datasets import dataset_hash
from ner.errors import DataError
from ner.labelstudio.export import task_post_id_text
from ner.labelstudio.quarantine import reseal
from ner.records import read_annotations, write_annotations
from ner.report import quantity
from ner.storage import Storage, json_text

log = logging.getLogger(__name__)

#: The JSONL folders cleaned, and the field that names a record's post.
JSONL_FIELDS = {layout.POSTS: "id", layout.PREDICTIONS: "post_id", layout.ANNOTATIONS: "post_id"}


class PurgeReport(BaseModel):
    """What :func:`purge_storage` removed: records per rewritten key, the posts some object
    held (``held``, sorted), and the objects it could not read (named, for an operator to
    clean by hand)."""

    model_config = ConfigDict(frozen=True)

    rewritten: dict[str, int] = {}
    held: list[str] = []
    unreadable: list[str] = []

    @property
    def n_removed(self) -> int:
        return sum(self.rewritten.values())


def _line_post_id(line: str, field: str) -> str | None:
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        return None  # a damaged line is the readers' to report, not ours to drop
    value = data.get(field) if isinstance(data, dict) else None
    return None if value is None else str(value)


def purge_jsonl(storage: Storage, key: str, post_ids: Collection[str], field: str) -> Counter[str]:
    """Rewrite the JSONL ``key`` without the lines whose ``field`` is one of ``post_ids``;
    returns the lines removed per post (empty: the object was not rewritten)."""

    def kept(keep: bool) -> Iterator[str]:
        for line in storage.iter_lines(key):
            if (_line_post_id(line, field) in post_ids) != keep:
                yield line

    removed = Counter(str(_line_post_id(line, field)) for line in kept(False))
    if removed:
        storage.write_lines(key, kept(True))
    return removed


def _json_of(storage: Storage, key: str) -> Any:
    """The JSON object at ``key``; :class:`DataError` naming it if it is not JSON (a storage
    failure stays a :class:`~ner.errors.StorageError`)."""
    raw = storage.read_bytes(key)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(key, f"not JSON: {exc}") from exc


def drop_forgotten_posts(storage: Storage, key: str) -> int:
    """Remove the forgotten posts from a freshly fetched batch ``key`` (a post deleted
    upstream that a source still sent, or a JSONL input read again); returns how many."""
    forgotten = forget.forgotten_ids(storage)
    return purge_jsonl(storage, key, forgotten, "id").total() if forgotten else 0


def task_post_id(task: Any) -> str | None:
    """The post a Label Studio task (import or export JSON) is for, as the pull reads it
    (:func:`ner.labelstudio.export.task_post_id`): ``data.post_id``, else ``data.id``, else
    the task id (a task made by hand; a trial's forgotten one stayed in its export)."""
    if not isinstance(task, Mapping):
        return None
    return task_post_id_text(task.get("data"), task.get("id"))


def purge_tasks_file(storage: Storage, key: str, post_ids: Collection[str]) -> Counter[str]:
    """Rewrite the task list at ``key`` (an import file or an export snapshot) without the
    tasks of ``post_ids``; returns the tasks removed per post. :class:`DataError` if ``key``
    is not a JSON list."""
    tasks = _json_of(storage, key)
    if not isinstance(tasks, list):
        raise DataError(key, "not a list of tasks")
    kept = [task for task in tasks if task_post_id(task) not in post_ids]
    if len(kept) != len(tasks):
        storage.write_text(key, json_text(kept))
    return Counter(str(task_post_id(t)) for t in tasks if task_post_id(t) in post_ids)


def purge_selection(storage: Storage, key: str, post_ids: Collection[str]) -> Counter[str]:
    """Remove ``post_ids`` from the selection record at ``key``; returns those removed.
    :class:`DataError` if it is not a selection record."""
    selection = _json_of(storage, key)
    if not isinstance(selection, dict) or not isinstance(selection.get("post_ids"), list):
        raise DataError(key, "not a selection record")
    chosen = [str(i) for i in selection["post_ids"]]
    kept = [i for i in chosen if i not in post_ids]
    if len(kept) != len(chosen):
        scores = selection.get("uncertainty") or {}
        selection["post_ids"] = kept
        selection["uncertainty"] = {k: v for k, v in scores.items() if k not in post_ids}
        storage.write_json(key, selection)
    return Counter(i for i in chosen if i in post_ids)


def purge_frozen_set(
    storage: Storage, record_key: str, annotations_key: str, post_ids: Collection[str]
) -> dict[str, Counter[str]]:
    """Drop ``post_ids`` from a frozen set (a gold set, or the canary set frozen beside it):
    its annotations, then its record (post ids, count, hash; the hashes it had before under
    ``hashes_before_forget``). Returns ``{key: entries removed per post}`` of the objects
    rewritten."""
    record = _json_of(storage, record_key)
    if not isinstance(record, dict) or not isinstance(record.get("post_ids"), list):
        raise DataError(record_key, "not a frozen set record")
    if not set(map(str, record["post_ids"])) & set(post_ids):
        return {}
    held = list(read_annotations(storage, annotations_key, include_forgotten=True))
    kept = [a for a in held if a.post_id not in post_ids]
    write_annotations(storage, annotations_key, kept)
    before = [*record.get("hashes_before_forget", []), record.get("hash")]
    removed = Counter(str(p) for p in record["post_ids"] if str(p) in post_ids)
    record.update(
        post_ids=sorted(a.post_id for a in kept),
        n_posts=len(kept),
        hash=dataset_hash(kept),
        hashes_before_forget=before,
    )
    storage.write_json(record_key, record)
    log.info("%s: %d forgotten posts dropped, re-hashed", record_key, removed.total())
    gone = Counter(a.post_id for a in held if a.post_id in post_ids)
    counts = {annotations_key: gone, record_key: removed}
    return {key: n for key, n in counts.items() if n}  # an interrupted purge left one done


def _mentions(post_ids: Collection[str]) -> re.Pattern[str]:
    """A post id where the reports name a record (:class:`~ner.types.Rejected` as text):
    ``<id>: why``, ``<file>: <id>: why`` or ``line 4 (<id>): why``."""
    alternatives = "|".join(re.escape(p) for p in sorted(post_ids, key=len, reverse=True))
    return re.compile(rf"(?:^|: |\()({alternatives})(?=: |\))")


def _named_posts(item: Any, post_ids: Collection[str], mentions: re.Pattern[str]) -> set[str]:
    """The ``post_ids`` a report entry or a quarantined record names: a task
    (``data.post_id``), a flat record (``post_id``, ``id``), or a line of text."""
    if isinstance(item, str):
        return set(mentions.findall(item))
    if isinstance(item, Mapping):
        ids = {task_post_id(item), *(str(item[f]) for f in ("post_id", "id") if f in item)}
        return {i for i in ids if i is not None and i in post_ids}
    return set()


def purge_report(storage: Storage, key: str, post_ids: Collection[str]) -> Counter[str]:
    """Rewrite a list at ``key`` (a ``.rejected.json`` or ``.review.json`` report, or a
    quarantined export) without the entries that name ``post_ids``; returns the entries
    removed per post named. :class:`DataError` when it is not a JSON list but names one of
    the posts (an operator deletes it by hand); one that names none is left alone."""
    mentions = _mentions(post_ids)
    try:
        items = _json_of(storage, key)
    except DataError:
        items = None
    if not isinstance(items, list):
        text = storage.read_bytes(key).decode("utf-8", "replace")
        if any(json.dumps(p) in text for p in post_ids) or mentions.search(text):
            raise DataError(key, "unreadable, and it names a forgotten post: delete it by hand")
        return Counter()
    named = [_named_posts(item, post_ids, mentions) for item in items]
    if any(named):
        storage.write_text(key, json_text([i for i, n in zip(items, named, strict=True) if not n]))
    return Counter(post_id for names in named for post_id in names)


def _targets(storage: Storage) -> Iterator[tuple[str, str]]:
    """``(key, kind)`` of every object that may hold a post."""
    for folder, field in JSONL_FIELDS.items():
        for key in storage.list(folder):
            if layout.is_records_file(key):
                yield key, field
            elif key.endswith((".rejected.json", ".review.json")):
                yield key, "report"
    for key in storage.list(layout.QUARANTINE):
        if not layout.is_quarantine_reason(key):
            yield key, "quarantined"
    for key in storage.list(layout.TASKS):
        if key.endswith(".rejected.json"):
            yield key, "report"
        elif layout.delivered_stamp(key) is not None and not key.endswith(".imported.json"):
            yield key, "tasks"
    for key in storage.list(layout.EXPORTS):
        if layout.is_export(key):
            yield key, "tasks"
    for key in storage.list(layout.SELECTIONS):
        if layout.is_selection(key):
            yield key, "selection"
    for key in storage.list(layout.GOLDSETS):
        if layout.gold_set_name(key) is not None:
            yield key, "gold"
        elif layout.canary_set_gold_name(key) is not None:
            yield key, "canary"
    for key in fetched.segment_keys(storage).values():
        yield key, "fetched"


def _purge_one(
    storage: Storage, key: str, kind: str, post_ids: Collection[str]
) -> dict[str, Counter[str]]:
    """``{key: entries removed per post}`` of the objects cleaning ``key`` rewrote."""
    if kind == "gold":
        name = str(layout.gold_set_name(key))
        return purge_frozen_set(storage, key, layout.gold_set_annotations(name), post_ids)
    if kind == "canary":
        name = str(layout.canary_set_gold_name(key))
        return purge_frozen_set(storage, key, layout.canary_set_annotations(name), post_ids)
    if kind == "fetched":
        removed = fetched.purge_segment(storage, key, post_ids)
    elif kind == "tasks":
        removed = purge_tasks_file(storage, key, post_ids)
    elif kind == "selection":
        removed = purge_selection(storage, key, post_ids)
    elif kind in ("report", "quarantined"):
        removed = purge_report(storage, key, post_ids)
        if removed and kind == "quarantined":
            reseal(storage, key)  # its reason record names the size and hash it had
    else:
        removed = purge_jsonl(storage, key, post_ids, kind)
    return {key: removed} if removed else {}


def purge_storage(
    storage: Storage,
    post_ids: Collection[str],
    on_rewritten: Callable[[PurgeReport], None] | None = None,
) -> PurgeReport:
    """Remove ``post_ids`` from every object of ``storage`` that holds them (see the module
    docs). An object that cannot be parsed is named in ``unreadable`` and left as it is
    (the readers still skip the posts); a storage failure raises
    :class:`~ner.errors.StorageError`. ``on_rewritten`` gets each object's own report
    (records removed, posts it held) after it is rewritten, so a caller can keep an audit
    of a purge that fails half-way (a retry finds those objects clean)."""
    wanted = frozenset(post_ids)
    rewritten: dict[str, int] = {}
    held: set[str] = set()
    unreadable: list[str] = []
    for key, kind in _targets(storage):
        try:
            done = _purge_one(storage, key, kind, wanted)
        except DataError as exc:
            log.error("cannot clean %s of forgotten posts: %s", key, exc)
            unreadable.append(key)
            continue
        step = PurgeReport(
            rewritten={k: n.total() for k, n in done.items()},
            held=sorted({p for n in done.values() for p in n}),
        )
        rewritten.update(step.rewritten)
        held.update(step.held)
        if done and on_rewritten is not None:
            on_rewritten(step)
    report = PurgeReport(rewritten=rewritten, held=sorted(held), unreadable=unreadable)
    log.info(
        "removed %s of %s from %s",
        quantity(report.n_removed, "record"),
        quantity(len(wanted), "post"),
        quantity(len(rewritten), "object"),
    )
    return report
