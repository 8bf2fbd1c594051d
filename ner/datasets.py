"""Gold/train splits, dataset hashes, frozen gold sets and spaCy training data.

Split. A post's split is a pure function of its id: ``sha256(salt + "\\x00" + post_id)``, read
as a number in [0, 1), is compared with ``gold_fraction``. It does not depend on the order of
the posts, on the other posts, or on Python's hash seed, and raising ``gold_fraction`` only
moves posts from train to gold, never back.

Frozen gold set. The first time enough annotated posts fall in the gold split,
:func:`freeze_gold_set` stores them and every later round evaluates on exactly those posts.
Storage layout (keys relative to the environment's root)::

    goldsets/{name}.json               the GoldSet record (ids, hash, salt, fraction, time)
    goldsets/{name}.annotations.jsonl  the gold annotations themselves, one JSON per line
    goldsets/CURRENT.json              {"name": ...}: which gold set is in force

``CURRENT.json`` is written last, so a reader never sees a gold set whose files are
incomplete. When it is missing (for example written by hand), :func:`load_gold_set` takes the
gold set whose name sorts last; default names start with a UTC timestamp so that is the
newest.

Posts whose id falls in the gold split but that were annotated after the freeze are not in
the frozen set; they are neither evaluated on nor trained on (see :func:`train_pool`).

Deletions: drop and re-hash. A gold post whose labels were all deleted in Label Studio (its
task deleted, or every annotation of it) is *withdrawn* (``CollectReport.withdrawn_post_ids``).
:func:`drop_from_gold_set` then writes a new gold set version without those posts — a new
name (``<name>-r<n>``), a new hash, ``revised_from`` pointing at the old one and the dropped
ids listed — and makes it current. A withdrawn label was retracted by a person (wrong, or the
post may no longer be kept), so it must not keep scoring models; the new hash tells every
reader that scores on the old version are not comparable. A post still holding another live
annotation is not withdrawn: it takes the label it kept when that differs from the frozen
one, and a post relabelled since the freeze takes its newer label (:func:`correct_gold_set`,
a new version likewise). The old version's files are left in place as history.

Forgotten posts (:mod:`ner.forget`). A post deleted upstream leaves the gold set: the frozen
set is kept under its name, minus those posts, and re-hashed (:func:`ner.purge.purge_frozen_set`
rewrites it and keeps the hashes it had before in ``hashes_before_forget``); so is the canary
set frozen beside it. So the gold hash changes and the champion is scored again on the
smaller set; a gold set that kept data the platform asks us to delete would break its terms.
Until the stored set is rewritten, :func:`load_gold_set` (and
:func:`ner.canary.load_canary_set`) leave the forgotten posts out and re-hash on the fly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, TypeVar

from ner import forget, layout
from ner.errors import DataError, GoldSetError

# Re-exported: readers of gold sets and training pools know them as ner.datasets names.
from ner.records import read_annotations as read_annotations
from ner.records import write_annotations as write_annotations
from ner.report import dropped_line, first_ids, quantity
from ner.storage import Storage
from ner.types import Annotation, Rejected

if TYPE_CHECKING:
    from spacy.language import Language
    from spacy.tokens import Doc, DocBin
    from spacy.tokens import Span as SpacySpan

log = logging.getLogger(__name__)
FrozenT = TypeVar("FrozenT", bound="FrozenSet")

DEFAULT_SALT = "brandloop-gold-v1"
CURRENT_KEY = layout.GOLD_SET_CURRENT
_HASH_FORMAT = "brandloop-dataset-v1"

Split = Literal["gold", "train"]


# Split ------------------------------------------------------------------------------------------


def _check_fraction(gold_fraction: float) -> None:
    if not 0.0 <= gold_fraction <= 1.0:
        raise ValueError(f"gold_fraction must be within [0, 1], got {gold_fraction}")


def split_point(post_id: str, salt: str = DEFAULT_SALT) -> float:
    """The post's position in [0, 1): the first 8 bytes of ``sha256(salt NUL id)``."""
    digest = hashlib.sha256(f"{salt}\x00{post_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(post_id: str, gold_fraction: float, salt: str = DEFAULT_SALT) -> Split:
    """``"gold"`` when the post's :func:`split_point` is below ``gold_fraction``, else train."""
    _check_fraction(gold_fraction)
    return "gold" if split_point(post_id, salt) < gold_fraction else "train"


def split(
    annotations: Iterable[Annotation], gold_fraction: float, salt: str = DEFAULT_SALT
) -> tuple[list[Annotation], list[Annotation]]:
    """``(gold, train)`` by :func:`split_of`, each in input order."""
    _check_fraction(gold_fraction)
    gold: list[Annotation] = []
    train: list[Annotation] = []
    for annotation in annotations:
        side = split_of(annotation.post_id, gold_fraction, salt)
        (gold if side == "gold" else train).append(annotation)
    return gold, train


# Hash -------------------------------------------------------------------------------------------


def _canonical(annotation: Annotation) -> dict[str, Any]:
    return {
        "post_id": annotation.post_id,
        "text": annotation.text,
        "spans": sorted([s.start, s.end, s.label] for s in annotation.spans),
    }


def dataset_hash(annotations: Iterable[Annotation]) -> str:
    """sha256 hex of the dataset's content, independent of record and span order.

    Only ``post_id``, ``text`` and the spans' ``(start, end, label)`` count: the annotator,
    the update time and the Label Studio task id do not, so relabelling a post with the same
    result keeps the hash.
    """
    records = sorted(
        (_canonical(a) for a in annotations),
        key=lambda r: json.dumps(r, ensure_ascii=False, sort_keys=True),
    )
    records.sort(key=lambda r: r["post_id"])  # stable: duplicates keep the content order
    payload = json.dumps(
        {"format": _HASH_FORMAT, "records": records},
        ensure_ascii=False,
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


# Frozen gold set -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GoldSet:
    """A frozen, versioned evaluation set. ``post_ids`` is sorted; ``hash`` is
    :func:`dataset_hash` of its annotations."""

    name: str
    post_ids: tuple[str, ...]
    hash: str
    created_at: str
    salt: str
    gold_fraction: float

    @property
    def key(self) -> str:
        return gold_set_key(self.name)

    @property
    def annotations_key(self) -> str:
        return gold_set_annotations_key(self.name)

    def __contains__(self, post_id: object) -> bool:
        if not isinstance(post_id, str):
            return False
        i = bisect_left(self.post_ids, post_id)
        return i < len(self.post_ids) and self.post_ids[i] == post_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "post_ids": list(self.post_ids),
            "n_posts": len(self.post_ids),
            "hash": self.hash,
            "created_at": self.created_at,
            "salt": self.salt,
            "gold_fraction": self.gold_fraction,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GoldSet:
        """Inverse of :meth:`to_dict`; :class:`GoldSetError` when a field is missing or bad."""
        try:
            post_ids = data["post_ids"]
            if not isinstance(post_ids, list):
                raise TypeError("post_ids is not a list")
            return cls(
                name=str(data["name"]),
                post_ids=tuple(sorted(str(p) for p in post_ids)),
                hash=str(data["hash"]),
                created_at=str(data["created_at"]),
                salt=str(data["salt"]),
                gold_fraction=float(data["gold_fraction"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GoldSetError(f"malformed gold set record: {exc!r}") from exc


def gold_set_key(name: str) -> str:
    """Storage key of the gold set record ``name``."""
    return layout.gold_set(name)


def gold_set_annotations_key(name: str) -> str:
    """Storage key of the gold set's annotations."""
    return layout.gold_set_annotations(name)


def current_gold_set_name(storage: Storage) -> str | None:
    """The name of the gold set in force (``CURRENT.json``, else the name that sorts last),
    or None when none was frozen or the last one was retired (:func:`retire_gold_set`).
    Raises :class:`GoldSetError` for a pointer without one."""
    if storage.exists(CURRENT_KEY):
        pointer = storage.read_json(CURRENT_KEY)
        if isinstance(pointer, dict) and pointer.get("name") is None and "retired" in pointer:
            return None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("name"), str):
            raise GoldSetError(f"{storage.uri(CURRENT_KEY)} has no gold set name")
        return str(pointer["name"])
    names = [
        name
        for name in map(layout.gold_set_name, storage.list(layout.GOLDSETS))
        if name is not None
    ]
    return max(names) if names else None


@dataclass(frozen=True, slots=True)
class Retirement:
    """The gold set taken out of force by :func:`retire_gold_set`: its name, when (UTC, ISO
    8601), by whom and why."""

    gold_name: str
    retired_at: str
    by: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {
            "retired": self.gold_name,
            "retired_at": self.retired_at,
            "by": self.by,
            "reason": self.reason,
        }


def retirement(storage: Storage) -> Retirement | None:
    """The retirement ``CURRENT.json`` records while no gold set is in force, else None."""
    if not storage.exists(CURRENT_KEY):
        return None
    pointer = storage.read_json(CURRENT_KEY)
    if not isinstance(pointer, dict) or pointer.get("name") is not None:
        return None
    if not isinstance(pointer.get("retired"), str):
        return None
    return Retirement(
        gold_name=pointer["retired"],
        retired_at=str(pointer.get("retired_at", "")),
        by=str(pointer.get("by", "")),
        reason=str(pointer.get("reason", "")),
    )


def retire_gold_set(
    storage: Storage, *, by: str, reason: str, now: datetime | None = None
) -> Retirement:
    """Take the gold set in force out of force, so that the next ``train-ner`` round freezes
    a new one (and its canary set) from the labels it pulls, leaving out every post an
    earlier training pool held (:func:`pooled_post_ids`).

    ``CURRENT.json`` becomes ``{"name": null, "retired": <name>, ...}`` and the retired
    set's record gets a ``retirement`` entry; its files stay as history, and ``forget``
    still purges them. Scores on it stay in
    MLflow under its hash; every later score is on the new set's. Raises
    :class:`GoldSetError` when no gold set is in force, or ``reason`` is blank.
    """
    if not reason.strip():
        raise GoldSetError("retiring a gold set needs a reason (it is kept with the record)")
    name = current_gold_set_name(storage)
    if name is None:
        where = f"{storage.uri(layout.GOLDSETS)}/"
        done = retirement(storage)
        if done is not None:
            raise GoldSetError(
                f"no gold set is in force in {where}: {done.gold_name} was retired already "
                f"({done.retired_at[:19]}, {done.reason}); the next train freezes a new one"
            )
        raise GoldSetError(f"no gold set is in force in {where}: none was frozen yet")
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    retired = Retirement(name, moment.isoformat(), by, reason.strip())
    record = storage.read_json(gold_set_key(name)) if storage.exists(gold_set_key(name)) else None
    if isinstance(record, dict):  # the record keeps it once a new set is in force
        storage.write_json(gold_set_key(name), {**record, "retirement": retired.to_dict()})
    storage.write_json(CURRENT_KEY, {"name": None, **retired.to_dict()})
    log.info("retired gold set %s (%s): the next train-ner run freezes a new one", name, reason)
    return retired


def reinstate_gold_set(
    storage: Storage, *, by: str, reason: str, now: datetime | None = None
) -> Retirement:
    """Undo :func:`retire_gold_set` while no gold set was frozen since: the retired set is
    in force again, and so its canary set (found by the gold set's name). Its record keeps
    the retirement under ``reinstated``, with when, by whom and why it was undone. Returns
    the retirement undone. Raises :class:`GoldSetError` when a gold set is in force (one was
    frozen since: retire it, the retired one stays history), none was retired, or ``reason``
    is blank."""
    if not reason.strip():
        raise GoldSetError("reinstating a gold set needs a reason (it is kept with the record)")
    done = retirement(storage)
    if done is None:
        raise GoldSetError(_nothing_to_reinstate(storage))
    key = gold_set_key(done.gold_name)
    record = storage.read_json(key) if storage.exists(key) else None
    if not isinstance(record, dict):
        raise GoldSetError(f"gold set {done.gold_name!r} is retired but {key} is missing")
    moment = (now or datetime.now(UTC)).astimezone(UTC).isoformat()
    undone = {**done.to_dict(), "reinstated_at": moment, "reinstated_by": by, "why": reason}
    kept = {k: v for k, v in record.items() if k != "retirement"}
    storage.write_json(key, {**kept, "reinstated": [*record.get("reinstated", []), undone]})
    storage.write_json(CURRENT_KEY, {"name": done.gold_name})
    log.info("reinstated gold set %s (%s)", done.gold_name, reason)
    return done


def _nothing_to_reinstate(storage: Storage) -> str:
    """Why no retirement can be undone: none was, or a set was frozen since (a trial read
    the same words for both)."""
    name = current_gold_set_name(storage)
    if name is None:  # the store named: a trial's command ran against another one
        return f"no gold set was retired in {storage.uri()}: nothing to reinstate"
    retired = [e.name for e in gold_set_history(storage) if e.state == "retired"]
    if not retired:
        return f"gold set {name} is in force and none was retired: nothing to reinstate"
    return (
        f"gold set {name} is in force: it was frozen after {retired[-1]} was retired, so "
        f"{retired[-1]} stays retired (a retirement is undone only until a new set is frozen)"
    )


@dataclass(frozen=True, slots=True)
class GoldSetEntry:
    """One stored gold set record, as ``brandloop gold-set list`` shows it. ``state`` is
    ``in force``, ``retired`` (taken out of force by :func:`retire_gold_set`) or ``earlier``
    (a version another replaced); ``origin`` names the set it revised or replaced, if any."""

    name: str
    created_at: str
    n_posts: int
    hash: str
    state: str
    origin: str


def gold_set_history(storage: Storage) -> list[GoldSetEntry]:
    """Every gold set stored here, oldest first (by ``created_at``). Raises
    :class:`GoldSetError` for a record that is not one."""
    current = current_gold_set_name(storage)
    entries = []
    for key in storage.list(layout.GOLDSETS):
        name = layout.gold_set_name(key)
        if name is None:
            continue
        record = storage.read_json(key)
        gold = GoldSet.from_dict(record if isinstance(record, dict) else {})
        state = "retired" if record.get("retirement") else "earlier"
        state = "in force" if name == current else state
        origin = _origin(record)
        entries.append(
            GoldSetEntry(name, gold.created_at, len(gold.post_ids), gold.hash, state, origin)
        )
    return sorted(entries, key=lambda e: (e.created_at, e.name))


#: what a revision's record lists (:func:`drop_from_gold_set`, :func:`correct_gold_set`,
#: :func:`reissue_gold_set`) -> the words ``gold-set list`` gives it
_REVISIONS = (
    ("dropped_post_ids", "withdrawn"),
    ("corrected_post_ids", "relabelled"),
    ("canary_dropped_post_ids", "withdrawn from its canary set"),
)


def _origin(record: Mapping[str, Any]) -> str:
    """``revises gold-x: 2 withdrawn, 1 relabelled`` (what the revision changed: a revision
    of the canary set alone keeps the posts and the hash, and read as a copy; trial BO),
    ``replaces gold-y`` or ``""``."""
    if not record.get("revised_from"):
        return f"replaces {record['replaces']}" if record.get("replaces") else ""
    changes = [
        f"{len(ids)} {words}"
        for key, words in _REVISIONS
        if isinstance(ids := record.get(key), list) and ids
    ]
    return f"revises {record['revised_from']}" + (f": {', '.join(changes)}" if changes else "")


def pooled_post_ids(storage: Storage) -> set[str]:
    """Every post id an earlier ``train-ner`` run put in its training pool
    (``annotations/<stamp>.train.jsonl``): posts a model here may have been trained on, so
    never gold or canary in a gold set frozen after a retirement."""
    ids: set[str] = set()
    for key in storage.list(layout.ANNOTATIONS):
        if layout.is_training_pool(key):
            ids.update(a.post_id for a in read_annotations(storage, key, include_forgotten=True))
    return ids


@dataclass(frozen=True)
class PoolChanges:
    """Posts whose labels ``pool_key``'s pool holds otherwise than the pool stored before it
    (``earlier``): ``relabelled`` (saved later, or undated), ``older`` (labels saved before
    the ones that pool held: only some exports read, ``--export-key``). Sorted ids."""

    earlier: str | None
    relabelled: list[str]
    older: list[str]


def relabelled_in_pool(storage: Storage, pool_key: str) -> PoolChanges:
    """Compare the training pool ``pool_key`` with the newest earlier one
    (``annotations/<stamp>.train.jsonl``): the posts both hold with the same text and other
    spans (:class:`PoolChanges`). Reads both pools."""
    earlier = sorted(
        key
        for key in storage.list(layout.ANNOTATIONS)
        if layout.is_training_pool(key) and key < pool_key
    )
    if not earlier:
        return PoolChanges(None, [], [])
    before = {a.post_id: a for a in read_annotations(storage, earlier[-1])}
    relabelled: list[str] = []
    older: list[str] = []
    for annotation in read_annotations(storage, pool_key):
        was = before.get(annotation.post_id)
        if was is None or not _fell_back(was, annotation):  # same text, other spans
            continue
        later = (annotation.updated_at or "~") >= (was.updated_at or "")
        (relabelled if later else older).append(annotation.post_id)
    return PoolChanges(earlier[-1], sorted(relabelled), sorted(older))


def load_gold_set(storage: Storage) -> tuple[GoldSet, list[Annotation]] | None:
    """The gold set in force and its annotations, or ``None`` if none was frozen yet.

    Raises :class:`GoldSetError` if the stored annotations do not match the record's post ids
    or hash (the files were edited or damaged).
    """
    name = current_gold_set_name(storage)
    if name is None:
        return None
    if not storage.exists(gold_set_key(name)):
        raise GoldSetError(f"gold set {name!r} is referenced but {gold_set_key(name)} is missing")
    gold_set = GoldSet.from_dict(storage.read_json(gold_set_key(name)))
    key = gold_set.annotations_key
    annotations = list(read_annotations(storage, key, include_forgotten=True))
    ids = tuple(sorted(a.post_id for a in annotations))
    if ids != gold_set.post_ids:
        raise GoldSetError(f"gold set {name!r}: stored annotations do not match its post ids")
    if dataset_hash(annotations) != gold_set.hash:
        raise GoldSetError(f"gold set {name!r}: stored annotations do not match its hash")
    return honour_forgotten(storage, gold_set, annotations)


class FrozenSet(Protocol):
    """A frozen set of posts (gold or canary), a dataclass: its sorted post ids and their
    hash."""

    __dataclass_fields__: ClassVar[dict[str, Any]]

    @property
    def post_ids(self) -> tuple[str, ...]: ...

    @property
    def hash(self) -> str: ...


def honour_forgotten(
    storage: Storage, frozen: FrozenT, annotations: list[Annotation]
) -> tuple[FrozenT, list[Annotation]]:
    """A frozen set (a dataclass: :class:`GoldSet`, :class:`~ner.canary.CanarySet`) without
    its forgotten posts, re-hashed: what a reader sees between a forget run's tombstones and
    the purge that removes the posts from storage (see :mod:`ner.purge`)."""
    forgotten = forget.forgotten_ids(storage)
    if forgotten.isdisjoint(frozen.post_ids):
        return frozen, annotations
    kept = [a for a in annotations if a.post_id not in forgotten]
    ids = tuple(a.post_id for a in kept)
    return replace(frozen, post_ids=ids, hash=dataset_hash(kept)), kept


def _unique(annotations: Iterable[Annotation]) -> list[Annotation]:
    seen: dict[str, Annotation] = {}
    for annotation in annotations:
        if annotation.post_id in seen:
            raise DataError(annotation.post_id, "post is annotated more than once")
        seen[annotation.post_id] = annotation
    return [seen[post_id] for post_id in sorted(seen)]


def freeze_gold_set(
    storage: Storage,
    annotations: Iterable[Annotation],
    gold_fraction: float,
    salt: str = DEFAULT_SALT,
    *,
    name: str | None = None,
    min_posts: int = 1,
    now: datetime | None = None,
    recent: Collection[str] = (),
    held_out: Collection[str] = (),
    never_gold: Collection[str] = (),
    policy: str | None = None,
) -> GoldSet:
    """Freeze the gold split of ``annotations``, unless a gold set is already in force.

    When one exists it is returned unchanged (whatever ``annotations`` holds now), so every
    round is scored on the same posts. Otherwise the annotations whose id is in the gold split
    are written under ``goldsets/`` and made current, together with the ``recent`` posts
    (the newest posts of the current window, :mod:`ner.canary`) whatever their split; the
    ``held_out`` posts (the canary set) and the ``never_gold`` ones (posts of earlier
    training pools, after a retirement) are never gold. ``name`` defaults to
    ``gold-{UTC timestamp}-{hash[:8]}``; ``policy``, the agreement policy that settled its
    labels, is recorded (:func:`frozen_policy`). Raises :class:`GoldSetError` when fewer than
    ``min_posts`` annotated posts are in the gold split (an empty set would be frozen for
    good), and :class:`DataError` when a post id appears twice.
    """
    existing = load_gold_set(storage)
    if existing is not None:
        current = existing[0]
        log.info("gold set %s already frozen (%d posts)", current.name, len(current.post_ids))
        if (current.gold_fraction, current.salt) != (gold_fraction, salt):
            log.warning(
                "gold set %s keeps its own split (fraction %s) although fraction %s "
                "or another salt was requested",
                current.name,
                current.gold_fraction,
                gold_fraction,
            )
        return current
    records = [
        a for a in _unique(annotations) if a.post_id not in held_out and a.post_id not in never_gold
    ]
    kept = [a for a in records if a.post_id not in recent]
    gold, _ = split(kept, gold_fraction, salt)
    gold = sorted(gold + [a for a in records if a.post_id in recent], key=lambda a: a.post_id)
    if len(gold) < max(1, min_posts):
        raise GoldSetError(
            f"only {len(gold)} annotated post(s) fall in the gold split "
            f"(fraction {gold_fraction}); need at least {max(1, min_posts)} to freeze a gold set"
        )
    retired = retirement(storage)
    extra = {"replaces": retired.gold_name} if retired is not None else {}
    if policy is not None:
        extra[POLICY_FIELD] = policy
    return _write_gold_set(storage, gold, name, now, salt, gold_fraction, "froze", extra)


#: The gold set record's field naming the agreement policy its labels were settled by.
POLICY_FIELD = "agreement_policy"


def frozen_policy(storage: Storage, gold: GoldSet) -> str | None:
    """The agreement policy that settled ``gold``'s labels when it froze (revisions carry
    it on), None for a set frozen without one (adopted, or before it was recorded)."""
    value = storage.read_json(gold.key).get(POLICY_FIELD)
    return value if isinstance(value, str) else None


def adopt_gold_set(
    storage: Storage,
    annotations: Iterable[Annotation],
    *,
    name: str | None = None,
    now: datetime | None = None,
) -> GoldSet:
    """Freeze ``annotations`` themselves (no hash split) as the gold set in force.

    For an evaluation set that was labelled apart from the training data (a benchmark's
    test split, a curated set). The record says ``gold_fraction`` 0, so every other post
    stays trainable; run the flows with ``NER_GOLD_FRACTION=0`` too, or their split would
    still hold a share of the training posts out. Refuses (:class:`GoldSetError`) when a
    gold set is already frozen or ``annotations`` is empty, and raises :class:`DataError`
    when a post id appears twice.
    """
    if load_gold_set(storage) is not None:
        raise GoldSetError("a gold set is already frozen here: adopt one only in a fresh store")
    gold = _unique(annotations)
    if not gold:
        raise GoldSetError("cannot adopt an empty gold set")
    return _write_gold_set(storage, gold, name, now, DEFAULT_SALT, 0.0, "adopted")


def _write_gold_set(
    storage: Storage,
    gold: list[Annotation],
    name: str | None,
    now: datetime | None,
    salt: str,
    gold_fraction: float,
    verb: str,
    extra: Mapping[str, Any] | None = None,
) -> GoldSet:
    """Write ``gold`` as a named gold set and make it the one in force (``CURRENT``)."""
    digest = dataset_hash(gold)
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    name = name or f"gold-{moment:%Y%m%dT%H%M%SZ}-{digest[:8]}"
    if not name.strip() or "/" in name or name == "CURRENT" or name.startswith("."):
        raise ValueError(f"invalid gold set name {name!r}")
    gold_set = GoldSet(
        name=name,
        post_ids=tuple(a.post_id for a in gold),
        hash=digest,
        created_at=moment.isoformat(),
        salt=salt,
        gold_fraction=gold_fraction,
    )
    write_annotations(storage, gold_set.annotations_key, gold)
    storage.write_json(gold_set.key, {**gold_set.to_dict(), **(extra or {})})
    storage.write_json(CURRENT_KEY, {"name": name})
    log.info("%s gold set %s: %d posts, hash %s", verb, name, len(gold), digest[:12])
    return gold_set


def _carried(storage: Storage, current: GoldSet) -> dict[str, str]:
    """What a revision of ``current`` keeps of its record: the policy it froze under."""
    policy = frozen_policy(storage, current)
    return {POLICY_FIELD: policy} if policy is not None else {}


def _revision_name(storage: Storage, name: str) -> str:
    base, number = name, 1
    head, _, tail = name.rpartition("-r")
    if head and tail.isdigit():
        base, number = head, int(tail)
    while storage.exists(gold_set_key(f"{base}-r{number + 1}")):
        number += 1
    return f"{base}-r{number + 1}"


def drop_from_gold_set(
    storage: Storage, post_ids: Iterable[str], *, now: datetime | None = None
) -> GoldSet | None:
    """Drop withdrawn posts from the gold set in force: a new version, re-hashed, made current.

    Returns the new :class:`GoldSet`, or ``None`` when no gold set is frozen or none of
    ``post_ids`` is in it (nothing is written then). The new record carries ``revised_from``
    (the old name) and ``dropped_post_ids``. Raises :class:`GoldSetError` when every gold post
    would go (an empty gold set cannot score anything; freeze a new one instead).
    """
    loaded = load_gold_set(storage)
    if loaded is None:
        return None
    current, annotations = loaded
    dropped = sorted(set(post_ids) & set(current.post_ids))
    if not dropped:
        return None
    kept = [a for a in annotations if a.post_id not in set(dropped)]
    if not kept:
        raise GoldSetError(
            f"gold set {current.name!r}: all {len(dropped)} posts were withdrawn; "
            "freeze a new gold set"
        )
    name = _revision_name(storage, current.name)
    extra = {
        "revised_from": current.name,
        "dropped_post_ids": dropped,
        **_carried(storage, current),
    }
    revised = _write_gold_set(
        storage, kept, name, now, current.salt, current.gold_fraction, "revised", extra
    )
    log.warning(dropped_line(f"gold set {current.name}", dropped, name, len(kept), revised.hash))
    return revised


def reissue_gold_set(
    storage: Storage,
    loaded: tuple[GoldSet, list[Annotation]],
    extra: Mapping[str, Any],
    *,
    now: datetime | None = None,
) -> GoldSet:
    """The gold set in force, ``loaded`` (:func:`load_gold_set`), written again as a new
    version (``<name>-r<n>``), made current: the same posts and labels, so the same hash
    (scores on it stay comparable), its record carrying ``revised_from`` and ``extra``. For
    a change beside the gold posts: the canary set frozen with it losing withdrawn posts
    (:func:`ner.canary.drop_from_canary_set`)."""
    current, annotations = loaded
    name = _revision_name(storage, current.name)
    record = {"revised_from": current.name, **extra, **_carried(storage, current)}
    return _write_gold_set(
        storage, annotations, name, now, current.salt, current.gold_fraction, "revised", record
    )


def is_relabelled(gold: Annotation, latest: Annotation | None) -> bool:
    """Whether ``latest`` (the post's label as pulled now) is a newer label of ``gold``'s
    post: same text, other spans, saved after it (Label Studio's ``updated_at``)."""
    if latest is None or latest.text != gold.text:
        return False
    if _canonical(latest)["spans"] == _canonical(gold)["spans"]:
        return False
    return bool(latest.updated_at) and (latest.updated_at or "") > (gold.updated_at or "")


def _fell_back(gold: Annotation, latest: Annotation | None) -> bool:
    """Whether ``latest``, the label a post kept after an annotation of it was deleted, is
    another label of ``gold``'s post (same text, other spans), whatever its date."""
    return (
        latest is not None
        and latest.text == gold.text
        and _canonical(latest)["spans"] != _canonical(gold)["spans"]
    )


def correct_gold_set(
    storage: Storage,
    annotations: Iterable[Annotation],
    *,
    fallen_back: Collection[str] = (),
    now: datetime | None = None,
) -> GoldSet | None:
    """Take the newer labels of gold posts relabelled since the gold set in force froze (a
    person corrected them in Label Studio), and the labels ``fallen_back`` posts (an
    annotation of them deleted in Label Studio, another kept) are left with when those
    differ (the frozen one may be the deleted one, which must not keep scoring models): a
    new version, re-hashed, made current, as :func:`drop_from_gold_set` does for withdrawn
    ones; its record carries ``revised_from``, ``corrected_post_ids`` and
    ``fallen_back_post_ids``. Returns it, or ``None`` (nothing written) when no gold post
    changes or no gold set is frozen. A post whose text differs is not its correction (a
    reused id) and is left as frozen."""
    loaded = load_gold_set(storage)
    if loaded is None:
        return None
    current, gold = loaded
    latest = {a.post_id: a for a in annotations}
    corrected = [g.post_id for g in gold if is_relabelled(g, latest.get(g.post_id))]
    relabelled = set(corrected)
    fell = [
        g.post_id
        for g in gold
        if g.post_id in fallen_back
        and g.post_id not in relabelled
        and _fell_back(g, latest.get(g.post_id))
    ]
    if not corrected and not fell:
        return None
    fixed = relabelled | set(fell)
    revised_gold = [latest[g.post_id] if g.post_id in fixed else g for g in gold]
    name = _revision_name(storage, current.name)
    extra = {
        "revised_from": current.name,
        "corrected_post_ids": corrected,
        **({"fallen_back_post_ids": fell} if fell else {}),
        **_carried(storage, current),
    }
    revised = _write_gold_set(
        storage, revised_gold, name, now, current.salt, current.gold_fraction, "revised", extra
    )
    _say_corrected(current.name, revised, corrected, fell)
    return revised


def _say_corrected(old: str, revised: GoldSet, corrected: list[str], fell: list[str]) -> None:
    """Log a correction of gold set ``old``: the posts relabelled, those fallen back."""
    changes = [
        f"{quantity(len(ids), 'post')} {what} ({first_ids(ids)})"
        for ids, what in (
            (corrected, "relabelled since it froze"),
            (fell, "left with another label after one was deleted in Label Studio"),
        )
        if ids
    ]
    log.warning(
        "gold set %s: %s, now with those labels -> %s (hash %s); models are scored on the new "
        "version from now on",
        old,
        "; ".join(changes),
        revised.name,
        revised.hash[:12],
    )


def train_pool(
    annotations: Iterable[Annotation],
    gold_set: GoldSet | None,
    gold_fraction: float | None = None,
    salt: str | None = None,
    *,
    trainable: Collection[str] = (),
) -> list[Annotation]:
    """The annotations that may be trained on, in input order.

    A post is kept only if it is not in the frozen ``gold_set`` and its id is in the train
    split, or is one of ``trainable`` (posts an earlier pool held). The split uses the gold
    set's own ``gold_fraction`` and ``salt``; if different values are passed too, a post
    must be in the train split under both. With no gold set, ``gold_fraction`` is required.
    """
    rules: set[tuple[float, str]] = set()
    if gold_set is not None:
        rules.add((gold_set.gold_fraction, gold_set.salt))
    if gold_fraction is not None:
        rules.add((gold_fraction, salt if salt is not None else DEFAULT_SALT))
    if not rules:
        raise ValueError("train_pool needs a gold set or a gold_fraction")
    frozen = frozenset(gold_set.post_ids) if gold_set is not None else frozenset()
    return [
        a
        for a in annotations
        if a.post_id not in frozen
        and (
            a.post_id in trainable
            or all(split_of(a.post_id, fraction, s) == "train" for fraction, s in rules)
        )
    ]


@dataclass(frozen=True)
class Splits:
    """One round's data (:func:`prepare_splits`). The gold fields are ``None`` (``n_gold``
    0) when there is no gold set yet and none could be frozen; ``n_held_out`` counts posts
    neither trained on nor in the gold set."""

    gold_name: str | None
    gold_key: str | None
    gold_hash: str | None
    n_gold: int
    train_key: str
    train_hash: str
    n_train: int
    n_held_out: int
    #: The gold set this round's replaced (posts withdrawn or relabelled in Label Studio).
    gold_revised_from: str | None = None
    #: With no gold set frozen yet: the posts a gold set would hold (:func:`would_freeze`).
    gold_waiting: int = 0
    #: With no gold set frozen yet: whether one of those posts has a span (a gold set of
    #: posts without any would score every model 0 for good, so none is frozen until then).
    gold_has_spans: bool = True
    #: With no gold set frozen: the stored (retired) set those posts would repeat exactly,
    #: so none was frozen.
    gold_repeats: str | None = None
    #: How many of the gold set's posts are among the annotations given (a frozen set may
    #: hold posts a pull lacks: labels deleted or held for review, ``--export-key``).
    n_gold_pulled: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready summary (a task result, a run's parameters)."""
        return dict(self.__dict__)


#: A gold set of fewer posts is small: one post moves its F1 by a point or more, so the gate
#: compares models on noise (the train-ner flow warns when it freezes one).
SMALL_GOLD_SET = 100


def would_freeze(
    candidates: Iterable[Annotation],
    gold_fraction: float,
    salt: str,
    recent: Collection[str],
    never_gold: Collection[str] = (),
) -> list[Annotation]:
    """The posts :func:`freeze_gold_set` would freeze from ``candidates`` (the gold split
    and the ``recent`` posts, ``held_out`` posts already left out, ``never_gold`` ones too)."""
    return [
        a
        for a in candidates
        if a.post_id not in never_gold
        and (a.post_id in recent or split_of(a.post_id, gold_fraction, salt) == "gold")
    ]


def prepare_splits(
    storage: Storage,
    annotations: Iterable[Annotation],
    gold_fraction: float,
    train_key: str,
    salt: str = DEFAULT_SALT,
    *,
    withdrawn: Iterable[str] = (),
    fallen_back: Collection[str] = (),
    recent: Collection[str] = (),
    held_out: Collection[str] = (),
    never_gold: Collection[str] = (),
    min_gold_posts: int = 1,
    policy: str | None = None,
) -> Splits:
    """One round's data: freeze the gold set if needed, write the training pool to storage.

    ``withdrawn`` posts (labels deleted in Label Studio) leave the gold set in force, and gold
    posts relabelled since it froze, or ``fallen_back`` after a deletion, take their new labels
    (a new version: :func:`drop_from_gold_set`, :func:`correct_gold_set`; ``gold_revised_from``).

    The gold set in force is kept, or frozen now (with the ``recent`` posts, once they and
    the gold split hold ``min_gold_posts``; until then the posts it would hold stay out of
    the pool), never with a ``never_gold`` post (:func:`pooled_post_ids` after a
    retirement), recording ``policy`` (the agreement policy). The training pool, written to
    ``train_key``, is :func:`train_pool` of ``annotations`` less the ``held_out`` posts (the
    canary set). Raises :class:`GoldSetError` if the stored gold set is inconsistent.
    """
    records = _unique(annotations)
    gold_set, revised_from = _revise_gold_set(storage, records, withdrawn, fallen_back)
    candidates = [a for a in records if a.post_id not in held_out]
    # the posts a gold set frozen now would hold (none while one is in force)
    chosen = [] if gold_set else would_freeze(candidates, gold_fraction, salt, recent, never_gold)
    waiting, has_spans = len(chosen), any(a.spans for a in chosen)
    repeats = _repeated_set(storage, chosen) if chosen else None
    if waiting >= max(1, min_gold_posts) and has_spans and not repeats:
        gold_set = freeze_gold_set(
            storage, records, gold_fraction, salt,
            recent=recent, held_out=held_out, never_gold=never_gold, policy=policy,
        )  # fmt: skip
    waiting_ids = {a.post_id for a in chosen} if gold_set is None else set()  # recent too
    pool = train_pool(candidates, gold_set, gold_fraction, salt, trainable=never_gold)
    pool = [a for a in pool if a.post_id not in waiting_ids]
    write_annotations(storage, train_key, pool)
    in_gold = sum(1 for a in records if gold_set is not None and a.post_id in gold_set)
    return Splits(
        gold_name=gold_set.name if gold_set else None,
        gold_key=gold_set.annotations_key if gold_set else None,
        gold_hash=gold_set.hash if gold_set else None,
        n_gold=len(gold_set.post_ids) if gold_set else 0,
        train_key=train_key,
        train_hash=dataset_hash(pool),
        n_train=len(pool),
        n_held_out=len(records) - len(pool) - in_gold,
        gold_revised_from=revised_from,
        gold_waiting=waiting if gold_set is None else 0,
        gold_has_spans=gold_set is not None or has_spans,
        gold_repeats=repeats,
        n_gold_pulled=in_gold,
    )


def _revise_gold_set(
    storage: Storage,
    records: Sequence[Annotation],
    withdrawn: Iterable[str],
    fallen_back: Collection[str] = (),
) -> tuple[GoldSet | None, str | None]:
    """The gold set in force after this round's revisions (``withdrawn`` posts dropped by
    :func:`drop_from_gold_set`, relabelled gold posts corrected by
    :func:`correct_gold_set`) and the name of the set it revised, None when nothing
    changed."""
    loaded = load_gold_set(storage)
    before = loaded[0] if loaded is not None else None
    dropped = drop_from_gold_set(storage, withdrawn)
    corrected = correct_gold_set(storage, records, fallen_back=fallen_back)
    if (corrected or dropped) is None:
        return before, None
    after = load_gold_set(storage)
    return (after[0] if after is not None else None), (before.name if before else None)


def _repeated_set(storage: Storage, chosen: Sequence[Annotation]) -> str | None:
    """The stored gold set (a retired one) whose posts and labels ``chosen`` would freeze
    again, hash for hash, else None: a set retired with no new label since would come back
    under a new name but the same hash, and scores on the two could not be told apart."""
    digest = dataset_hash(chosen)
    return next((e.name for e in gold_set_history(storage) if e.hash == digest), None)


# spaCy training data ---------------------------------------------------------------------------


def _trim_whitespace(span: SpacySpan) -> SpacySpan | None:
    start, end = span.start, span.end
    doc = span.doc
    while start < end and doc[start].is_space:
        start += 1
    while end > start and doc[end - 1].is_space:
        end -= 1
    if end <= start:
        return None
    if (start, end) == (span.start, span.end):
        return span
    from spacy.tokens import Span as SpacySpanCls

    return SpacySpanCls(doc, start, end, label=span.label)


def _align(doc: Doc, start: int, end: int, label: str) -> SpacySpan | None:
    """Tokens for the character span: whole tokens inside it, else the tokens it touches."""
    for mode in ("contract", "expand"):
        aligned = doc.char_span(start, end, label=label, alignment_mode=mode)
        if aligned is not None and len(aligned) > 0:
            trimmed = _trim_whitespace(aligned)
            if trimmed is not None:
                return trimmed
    return None


def annotation_to_doc(annotation: Annotation, nlp: Language) -> tuple[Doc, list[Rejected]]:
    """A tokenised doc whose ``ents`` are the annotation's spans, plus the spans left out.

    A span is aligned to whole tokens inside it (``contract``), else to the tokens it
    touches (``expand``); whitespace tokens at its edges are dropped. A span that still has
    no token, or whose tokens overlap an earlier span, is rejected; its tokens are marked
    *missing* rather than *outside*, so the model is not taught that they are not an entity.
    Every other token is *outside* (O).
    """
    doc = nlp.make_doc(annotation.text)
    rejected: list[Rejected] = []
    ents: list[SpacySpan] = []
    taken: set[int] = set()
    unknown: set[int] = set()
    for span in sorted(annotation.spans, key=lambda s: (s.start, s.end, s.label)):
        where = f"span [{span.start}, {span.end}) {span.text!r} {span.label}"
        aligned = _align(doc, span.start, span.end, span.label)
        if aligned is None:
            rejected.append(Rejected(annotation.post_id, f"{where} does not cover any token"))
            continue
        tokens = set(range(aligned.start, aligned.end))
        if tokens & taken:
            rejected.append(
                Rejected(annotation.post_id, f"{where} overlaps another span after alignment")
            )
            unknown |= tokens - taken
            continue
        if aligned.text != span.text:
            log.debug("%s: %s aligned to %r", annotation.post_id, where, aligned.text)
        ents.append(aligned)
        taken |= tokens
    unknown -= taken
    doc.set_ents(ents, missing=_runs(doc, unknown), default="outside")
    return doc, rejected


def _runs(doc: Doc, indices: set[int]) -> list[SpacySpan]:
    """Contiguous token runs of ``indices`` as spans."""
    runs: list[SpacySpan] = []
    start: int | None = None
    for i in range(len(doc) + 1):
        if i < len(doc) and i in indices:
            start = i if start is None else start
        elif start is not None:
            runs.append(doc[start:i])
            start = None
    return runs


def to_docbin(annotations: Iterable[Annotation], nlp: Language) -> tuple[DocBin, list[Rejected]]:
    """A spaCy ``DocBin`` of the annotations (see :func:`annotation_to_doc`).

    Only ``nlp``'s tokenizer is used (``nlp.make_doc``), so ``spacy.blank(lang)`` is enough.
    Posts with rejected spans are kept with their other spans; posts without spans are kept
    as negative examples.
    """
    from spacy.tokens import DocBin

    docbin = DocBin(store_user_data=False)
    rejected: list[Rejected] = []
    for annotation in annotations:
        doc, dropped = annotation_to_doc(annotation, nlp)
        docbin.add(doc)
        rejected.extend(dropped)
    if rejected:
        log.warning("%d span(s) could not be aligned to tokens", len(rejected))
    return docbin, rejected


def write_docbin(
    annotations: Iterable[Annotation], nlp: Language, path: str | Path
) -> tuple[int, list[Rejected]]:
    """Write :func:`to_docbin` to ``path`` (a ``.spacy`` file); returns (docs, rejected)."""
    docbin, rejected = to_docbin(annotations, nlp)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    docbin.to_disk(target)
    return len(docbin), rejected
