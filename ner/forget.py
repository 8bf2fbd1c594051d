"""Forgotten posts: the tombstone list every reader honours, and its audit records.

Platform terms require that a post deleted upstream is forgotten here too. A forget run
writes one record per run at ``forgotten/<stamp>.json`` (:func:`ner.layout.forget_record`)::

    {"stamp": ..., "by": "cli:alice", "reason": "deleted on X", "at": "2026-...Z",
     "post_ids": [...], "n_posts": 3, "status": "recorded" | "done",
     "rewritten": {"posts/<stamp>.jsonl": 1, ...}, "held": ["<post id>", ...],
     "deleted_tasks": {"<post id>": [41]}, "unreadable": [...]}

The record is written first, with status ``recorded``, *before* anything is removed: from
that moment every reader skips those posts (:func:`honour`; :mod:`ner.records` readers,
the collected annotations, the gold set and training pool), so a run that fails halfway
still forgets. When the data were removed where they sit (:mod:`ner.purge`, Label Studio
tasks) the same record is rewritten with status ``done`` and what was removed: the audit.
Records are never deleted. A tombstone set by mistake (a wrong id) is *lifted* by a record
of its own (:func:`lift`, ``"lifted": true``): the posts it names may arrive again, and the
data removed stays removed. The tombstone list is the records read in order: a forget adds
its ids, a lift takes them away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from ner import layout
from ner.errors import ConfigError, DataError
from ner.storage import Storage

T = TypeVar("T")


class ForgetStatus(StrEnum):
    """How far a forget run got: tombstones ``recorded``, or the data removed (``done``)."""

    RECORDED = "recorded"
    DONE = "done"


class ForgetRecord(BaseModel):
    """One forget run: who, when, why, which posts, and (once done) what it removed."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    stamp: str
    by: str
    reason: str
    at: str
    post_ids: tuple[str, ...]
    status: ForgetStatus = ForgetStatus.RECORDED
    #: Storage key -> records (posts, predictions, tasks, annotations) removed from it.
    rewritten: dict[str, int] = {}
    #: The posts (of ``post_ids``) a readable stored object or a Label Studio task held.
    held: list[str] = []
    #: Post id -> the Label Studio task ids deleted for it.
    deleted_tasks: dict[str, list[int]] = {}
    #: Objects that could not be read to be cleaned (named so an operator can act).
    unreadable: list[str] = []
    #: A lift: the tombstones of ``post_ids`` are taken away (nothing is restored).
    lifted: bool = False
    #: Of a lift: the keys of the forget records whose tombstones it takes away.
    lifts: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return layout.forget_record(self.stamp)

    @property
    def n_posts(self) -> int:
        return len(self.post_ids)

    @property
    def n_tasks_deleted(self) -> int:
        return sum(len(ids) for ids in self.deleted_tasks.values())

    def to_json(self) -> dict[str, object]:
        """The stored JSON object (with ``n_posts`` and ``n_tasks_deleted`` spelled out)."""
        data = self.model_dump(mode="json")
        return {**data, "n_posts": self.n_posts, "n_tasks_deleted": self.n_tasks_deleted}


def clean_post_ids(post_ids: Iterable[str]) -> tuple[str, ...]:
    """The ids stripped, de-duplicated and sorted. :class:`ConfigError` when none is left;
    :class:`DataError` naming an id that is blank once stripped, or that is a whole record
    rather than an id (a JSON object or list, or several lines: a posts file read as ids
    would put the posts' text into the tombstones, which are kept for good)."""
    cleaned: set[str] = set()
    for raw in post_ids:
        post_id = str(raw).strip()
        if not post_id:
            raise DataError(repr(raw), "a post id to forget is blank")
        if post_id.startswith(("{", "[")) or "\n" in post_id:
            raise DataError(
                f"{post_id:.40}...", "a post id to forget is a record (JSON or several lines)"
            )
        if (len(post_id) > 1 and post_id[0] == post_id[-1] == '"') or "\ufeff" in post_id:
            raise DataError(post_id, "a post id to forget is quoted, or holds a byte-order mark")
        cleaned.add(post_id)
    if not cleaned:
        raise ConfigError("no post id to forget: give at least one")
    return tuple(sorted(cleaned))


def record(
    storage: Storage,
    post_ids: Iterable[str],
    *,
    by: str,
    reason: str,
    stamp: str,
    now: datetime | None = None,
    lifted: bool = False,
    lifts: Sequence[str] = (),
) -> ForgetRecord:
    """Write the tombstones of ``post_ids`` at ``forgotten/<stamp>.json`` (status recorded),
    or, ``lifted``, the record that lifts them (status done: there is nothing to remove),
    naming the keys of the records it ``lifts``.

    From then on :func:`honour` skips those posts. Idempotent: when the record ``stamp``
    exists for the same posts (a retried write) it is returned as it is. Raises
    :class:`ConfigError` when no id, no ``reason`` or no ``by`` is given, or when the record
    ``stamp`` exists for other posts or the other action.
    """
    if not reason.strip():
        raise ConfigError("forgetting posts needs a reason (kept in the audit)")
    if not by.strip():
        raise ConfigError("forgetting posts needs who asks for it (by)")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    made = ForgetRecord(
        stamp=stamp,
        by=by.strip(),
        reason=reason.strip(),
        at=moment.isoformat().replace("+00:00", "Z"),
        post_ids=clean_post_ids(post_ids),
        lifted=lifted,
        lifts=tuple(lifts),
        status=ForgetStatus.DONE if lifted else ForgetStatus.RECORDED,
    )
    if storage.exists(made.key):
        stored = ForgetRecord.model_validate(storage.read_json(made.key))
        if (stored.post_ids, stored.lifted) != (made.post_ids, made.lifted):
            raise ConfigError(f"forget record {made.key} exists for other posts")
        return stored
    save(storage, made)
    return made


def save(storage: Storage, made: ForgetRecord) -> str:
    """Write ``made`` (atomically) at its key; returns the object's URI."""
    return storage.write_json(made.key, made.to_json())


def load_records(storage: Storage) -> list[ForgetRecord]:
    """Every forget record, oldest first. An unreadable record raises :class:`DataError`
    naming its key: a tombstone list read in part would let forgotten posts back."""
    found: list[ForgetRecord] = []
    for key in storage.list(layout.FORGOTTEN):
        if not layout.is_forget_record(key):
            continue
        try:
            found.append(ForgetRecord.model_validate(storage.read_json(key)))
        except ValidationError as exc:
            raise DataError(key, f"malformed forget record: {exc.errors()[:3]}") from exc
    return found


def forgotten_ids(storage: Storage) -> frozenset[str]:
    """The tombstone list: the ids of every post forgotten and not lifted since."""
    ids: set[str] = set()
    for made in sorted(load_records(storage), key=lambda r: (r.at, r.stamp)):
        if made.lifted:
            ids.difference_update(made.post_ids)
        else:
            ids.update(made.post_ids)
    return frozenset(ids)


def lift(storage: Storage, post_ids: Iterable[str], stamp: str, **audit: str) -> ForgetRecord:
    """Lift the tombstones of ``post_ids`` (a forget by mistake): a record at
    ``forgotten/<stamp>.json`` with ``lifted`` true, so the posts may arrive again. Nothing
    removed comes back. Raises :class:`ConfigError` naming the ids that are not forgotten,
    and as :func:`record` does for a missing ``reason`` or ``by`` (the ``audit`` keywords)."""
    wanted = clean_post_ids(post_ids)
    forgotten = forgotten_ids(storage)
    unknown = [i for i in wanted if i not in forgotten]
    if unknown:
        raise ConfigError(f"not forgotten, so nothing to lift: {', '.join(unknown)}")
    by, reason = audit.get("by", ""), audit.get("reason", "")
    lifts = [r.key for r in load_records(storage) if not r.lifted and set(r.post_ids) & set(wanted)]
    return record(storage, wanted, by=by, reason=reason, stamp=stamp, lifted=True, lifts=lifts)


def drop_forgotten(
    items: Iterable[T], forgotten: frozenset[str], post_id: Callable[[T], str]
) -> Iterator[T]:
    """The items whose ``post_id(item)`` is not in ``forgotten``, in order."""
    if not forgotten:
        yield from items
        return
    for item in items:
        if post_id(item) not in forgotten:
            yield item


def honour(storage: Storage, items: Iterable[T], post_id: Callable[[T], str]) -> Iterator[T]:
    """:func:`drop_forgotten` with the tombstone list of ``storage``, read when the first
    item is asked for (so a reader that is never iterated costs no listing)."""
    yield from drop_forgotten(items, forgotten_ids(storage), post_id)


def drop_ids(post_ids: Sequence[str], forgotten: frozenset[str]) -> list[str]:
    """``post_ids`` without the forgotten ones, in order (selections, gold set ids)."""
    return [i for i in post_ids if i not in forgotten]
