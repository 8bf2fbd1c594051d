"""The frozen canary set and the recent gold slice: labelled posts the training pool never gets.

The gate (:mod:`ner.gate`) refuses a challenger that got worse on the **canary set**: posts
from earlier time windows and from other sources, so a model that only learned this week's
posts is caught. The gold split also keeps a **recent slice**, the newest posts in time order,
so the gold set always holds posts like the ones the model will meet next.

The rule, frozen once (:meth:`CanaryRule.freeze`, normally when the gold set is frozen) and
stored with the gold set:

1. ``cutoff`` = the newest ``created_at`` among the labelled posts minus ``window``: posts at
   or after it are the *current window*, posts before it are *earlier windows*.
2. ``home_sources`` = the sources of the current window's posts (unless given): what the loop
   labels now. A post whose source is not one of them comes from *another source*.
3. A post is a **canary** post when it is from an earlier window or from another source, *and*
   its canary point (:func:`canary_point`, a salted sha256 of the id in [0, 1)) is below
   ``fraction``. Membership depends only on the post's own id, date and source and on the
   frozen rule, never on the other posts: adding posts never moves a post in or out, so the
   canary set stays frozen and a post once trained on can never become a canary post.
4. The **recent** slice: of the current window's home-source posts that are not canary, the
   newest ``ceil(recent_fraction * n)``, newest first (ties by post id). They join the gold
   set, whatever their hash split says; the slice is computed once, at freeze time.
5. Everything else is the **pool**: it goes through the usual hash split of
   :mod:`ner.datasets` (gold or train). Canary and recent posts are never in the pool.

The frozen set takes no corrections (a canary post relabelled later keeps its frozen label),
but a post withdrawn in Label Studio (every label deleted) leaves it, as it leaves the gold set:
:func:`drop_from_canary_set` writes the smaller set beside a new version of the gold set.

A post without ``created_at`` cannot be placed in time: it is a canary post only when it comes
from another source (and its point says so), never recent; it is listed in
:attr:`HoldoutSplit.undated` so the count can be reported. Without any dated post there is no
cutoff: only the other-source rule applies.
"""

from __future__ import annotations

import enum
import itertools
import logging
import math
from bisect import bisect_left
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from ner import forget, layout
from ner.datasets import (
    dataset_hash,
    honour_forgotten,
    load_gold_set,
    reissue_gold_set,
    split_point,
)
from ner.errors import DataError, GoldSetError
from ner.fetched import stamps_of
from ner.records import read_annotations, write_annotations
from ner.report import dropped_line
from ner.storage import Storage
from ner.types import Annotation, Post

log = logging.getLogger(__name__)

DEFAULT_CANARY_SALT = "brandloop-canary-v1"


class Holdout(enum.StrEnum):
    """Where a labelled post goes."""

    CANARY = "canary"
    RECENT = "recent"
    POOL = "pool"


class CanaryReason(enum.StrEnum):
    """Why a post is off-window (a canary candidate)."""

    EARLIER_WINDOW = "earlier_window"
    OTHER_SOURCE = "other_source"


def parse_created_at(post_id: str, value: str | None) -> datetime | None:
    """``value`` (ISO 8601, ``Z`` allowed) as an aware UTC datetime; a naive time is taken as
    UTC; None stays None. Raises :class:`DataError` naming the post when it is not a date."""
    if value is None or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise DataError(post_id, f"created_at {value!r} is not an ISO 8601 date") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class PostStamp:
    """What the canary rule reads of a labelled post: its id, time and source."""

    post_id: str
    created_at: datetime | None
    source: str

    @classmethod
    def from_post(cls, post: Post) -> PostStamp:
        """The stamp of ``post``; :class:`DataError` naming it when ``created_at`` is bad."""
        return cls(post.id, parse_created_at(post.id, post.created_at), post.source)


def canary_point(post_id: str, salt: str = DEFAULT_CANARY_SALT) -> float:
    """The post's canary position in [0, 1): :func:`ner.datasets.split_point` under the
    canary's own salt, so the canary draw is independent of the gold/train split."""
    return split_point(post_id, salt)


@dataclass(frozen=True, slots=True)
class CanaryRule:
    """The frozen canary rule (see the module docstring). ``cutoff`` is aware UTC or None."""

    cutoff: datetime | None
    home_sources: frozenset[str]
    fraction: float = 0.25
    salt: str = DEFAULT_CANARY_SALT

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction <= 1.0:
            raise ValueError(f"canary fraction must be within [0, 1], got {self.fraction}")
        if self.cutoff is not None and self.cutoff.tzinfo is None:
            raise ValueError("canary cutoff must be timezone-aware")

    @classmethod
    def freeze(
        cls,
        posts: Iterable[PostStamp],
        *,
        window: timedelta = timedelta(days=7),
        fraction: float = 0.25,
        salt: str = DEFAULT_CANARY_SALT,
        home_sources: Collection[str] | None = None,
    ) -> CanaryRule:
        """The rule for these labelled posts: ``cutoff`` = newest ``created_at`` - ``window``;
        ``home_sources`` (when not given) = the sources of posts at or after the cutoff, or of
        every post when none is dated. Raises :class:`ValueError` for a window <= 0."""
        if window <= timedelta(0):
            raise ValueError(f"canary window must be positive, got {window}")
        stamps = list(posts)
        dated = [s.created_at for s in stamps if s.created_at is not None]
        cutoff = max(dated) - window if dated else None
        if home_sources is None:
            home_sources = {
                s.source
                for s in stamps
                if cutoff is None or (s.created_at is not None and s.created_at >= cutoff)
            }
        return cls(cutoff, frozenset(home_sources), fraction, salt)

    def off_window(self, post: PostStamp) -> CanaryReason | None:
        """Why ``post`` is a canary candidate (other source first), or None if it is not."""
        if post.source not in self.home_sources:
            return CanaryReason.OTHER_SOURCE
        if (
            self.cutoff is not None
            and post.created_at is not None
            and post.created_at < self.cutoff
        ):
            return CanaryReason.EARLIER_WINDOW
        return None

    def is_canary(self, post: PostStamp) -> bool:
        """True when ``post`` is off-window and its :func:`canary_point` < ``fraction``."""
        return self.off_window(post) is not None and canary_point(post.post_id, self.salt) < (
            self.fraction
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "cutoff": None if self.cutoff is None else self.cutoff.isoformat(),
            "home_sources": sorted(self.home_sources),
            "fraction": self.fraction,
            "salt": self.salt,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanaryRule:
        """Inverse of :meth:`to_dict`; :class:`ValueError` when a field is missing or bad."""
        try:
            cutoff = data["cutoff"]
            return cls(
                cutoff=None if cutoff is None else datetime.fromisoformat(str(cutoff)),
                home_sources=frozenset(str(s) for s in data["home_sources"]),
                fraction=float(data["fraction"]),
                salt=str(data["salt"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed canary rule record: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class HoldoutSplit:
    """Where each labelled post goes. ``canary`` and ``pool`` are sorted by post id,
    ``recent`` is newest first; the three are disjoint and cover every post."""

    rule: CanaryRule
    canary: tuple[str, ...]
    recent: tuple[str, ...]
    pool: tuple[str, ...]
    undated: tuple[str, ...]
    n_earlier_window: int
    n_other_source: int
    #: Posts the rule makes canary posts that stay in the pool: they were in an earlier
    #: training pool (a gold set frozen after a retirement), so no longer unseen.
    exempt: tuple[str, ...] = ()

    def side(self, post_id: str) -> Holdout:
        """Where ``post_id`` went; :class:`KeyError` for a post that was not split."""
        for side, ids in ((Holdout.CANARY, self.canary), (Holdout.POOL, self.pool)):
            i = bisect_left(ids, post_id)
            if i < len(ids) and ids[i] == post_id:
                return side
        if post_id in self.recent:
            return Holdout.RECENT
        raise KeyError(post_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, to store with the gold set."""
        return {
            "rule": self.rule.to_dict(),
            "canary": list(self.canary),
            "recent": list(self.recent),
            "n_pool": len(self.pool),
            "undated": list(self.undated),
            "n_earlier_window": self.n_earlier_window,
            "n_other_source": self.n_other_source,
            "exempt": list(self.exempt),
        }


def _unique(posts: Iterable[PostStamp]) -> list[PostStamp]:
    """``posts`` sorted by id; :class:`DataError` naming the first id that repeats."""
    ordered = sorted(posts, key=lambda p: p.post_id)
    for before, after in itertools.pairwise(ordered):
        if before.post_id == after.post_id:
            raise DataError(after.post_id, "post appears more than once in the canary split")
    return ordered


def split_holdout(
    posts: Iterable[PostStamp],
    rule: CanaryRule,
    *,
    recent_fraction: float = 0.1,
    trained: Collection[str] = (),
) -> HoldoutSplit:
    """Split labelled posts into canary, recent gold slice and pool (module docstring).

    ``trained`` posts (held by an earlier training pool) go to the pool whatever the rule
    says: a model may have learned them, so they can test nothing; those the rule makes
    canary posts are listed in ``exempt``. Deterministic: a function of the posts' ids,
    dates and sources, of ``rule`` and of ``trained``, not of their order. Raises
    :class:`DataError` naming a post id that appears twice and :class:`ValueError` for a
    ``recent_fraction`` outside [0, 1].
    """
    if not 0.0 <= recent_fraction <= 1.0:
        raise ValueError(f"recent_fraction must be within [0, 1], got {recent_fraction}")
    stamps = _unique(posts)
    canary: list[str] = []
    current: list[PostStamp] = []
    rest: list[str] = []
    exempt: list[str] = []
    reasons: dict[CanaryReason, int] = dict.fromkeys(CanaryReason, 0)
    for post in stamps:
        reason = rule.off_window(post)
        if post.post_id in trained:
            rest.append(post.post_id)
            if reason is not None and rule.is_canary(post):
                exempt.append(post.post_id)
        elif reason is not None and rule.is_canary(post):
            canary.append(post.post_id)
            reasons[reason] += 1
        elif reason is None and post.created_at is not None:
            current.append(post)
        else:
            rest.append(post.post_id)
    current.sort(key=lambda p: (p.created_at, p.post_id), reverse=True)
    n_recent = math.ceil(recent_fraction * len(current))
    recent = [p.post_id for p in current[:n_recent]]
    pool = sorted(rest + [p.post_id for p in current[n_recent:]])
    return HoldoutSplit(
        rule=rule,
        canary=tuple(canary),
        recent=tuple(recent),
        pool=tuple(pool),
        undated=tuple(p.post_id for p in stamps if p.created_at is None),
        n_earlier_window=reasons[CanaryReason.EARLIER_WINDOW],
        n_other_source=reasons[CanaryReason.OTHER_SOURCE],
        exempt=tuple(exempt),
    )


# The frozen canary set in storage ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CanarySet:
    """The canary set frozen beside gold set ``gold_name`` (``ner.layout.canary_set``).

    ``rule`` is None, and ``post_ids`` empty, when no labelled post had a stored date and
    source at freeze time; ``note`` then says why, and the gate reports the canary rule as
    not applicable with that note. ``post_ids`` is sorted; ``hash`` is
    :func:`ner.datasets.dataset_hash` of its annotations.
    """

    gold_name: str
    rule: CanaryRule | None
    post_ids: tuple[str, ...]
    hash: str
    n_earlier_window: int = 0
    n_other_source: int = 0
    n_undated: int = 0
    note: str = ""
    #: Posts the rule matches that stay trainable (:attr:`HoldoutSplit.exempt`).
    exempt: tuple[str, ...] = ()
    #: Posts withdrawn since the freeze (labels deleted in Label Studio), never trained on.
    dropped: tuple[str, ...] = ()
    #: The gold set whose canary set this one revises (:func:`drop_from_canary_set`).
    revised_from: str | None = None

    @property
    def key(self) -> str:
        return layout.canary_set(self.gold_name)

    @property
    def annotations_key(self) -> str:
        return layout.canary_set_annotations(self.gold_name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gold_name": self.gold_name,
            "rule": None if self.rule is None else self.rule.to_dict(),
            "post_ids": list(self.post_ids),
            "n_posts": len(self.post_ids),
            "hash": self.hash,
            "n_earlier_window": self.n_earlier_window,
            "n_other_source": self.n_other_source,
            "n_undated": self.n_undated,
            "note": self.note,
            "exempt": list(self.exempt),
            **({"dropped_post_ids": list(self.dropped)} if self.dropped else {}),
            **({"revised_from": self.revised_from} if self.revised_from else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CanarySet:
        """Inverse of :meth:`to_dict`; :class:`GoldSetError` when a field is missing or bad."""
        try:
            rule = data["rule"]
            return cls(
                gold_name=str(data["gold_name"]),
                rule=None if rule is None else CanaryRule.from_dict(rule),
                post_ids=tuple(sorted(str(p) for p in data["post_ids"])),
                hash=str(data["hash"]),
                n_earlier_window=int(data.get("n_earlier_window", 0)),
                n_other_source=int(data.get("n_other_source", 0)),
                n_undated=int(data.get("n_undated", 0)),
                note=str(data.get("note", "")),
                exempt=tuple(sorted(str(p) for p in data.get("exempt", ()))),
                dropped=tuple(sorted(str(p) for p in data.get("dropped_post_ids", ()))),
                revised_from=str(data["revised_from"]) if data.get("revised_from") else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GoldSetError(f"malformed canary set record: {exc!r}") from exc

    def held_out(self, stamps: Mapping[str, PostStamp]) -> set[str]:
        """Post ids never to train on: the frozen canary posts (withdrawn ones too) and every
        post of ``stamps`` the frozen rule makes a canary post (labelled after the freeze), but
        the :attr:`exempt` ones."""
        ids = set(self.post_ids) | set(self.dropped)
        if self.rule is not None:
            ids |= {post_id for post_id, stamp in stamps.items() if self.rule.is_canary(stamp)}
        return ids - set(self.exempt)


def post_stamps(storage: Storage, post_ids: Collection[str]) -> dict[str, PostStamp]:
    """``{post_id: PostStamp}`` of the labelled posts found in the stored post batches
    (``posts/<stamp>.jsonl``, read through the index of fetched posts:
    :func:`ner.fetched.stamps_of`); posts not stored there (a replayed export) and forgotten
    ones are left out. A post whose ``created_at`` is not a date is kept undated, with a
    warning naming it."""
    wanted = set(post_ids) - forget.forgotten_ids(storage)
    stamps: dict[str, PostStamp] = {}
    for post_id, (key, created_at, source) in stamps_of(storage, wanted).items():
        try:
            stamps[post_id] = PostStamp(post_id, parse_created_at(post_id, created_at), source)
        except DataError as exc:
            log.warning("%s: %s; the post is kept without a date", key, exc)
            stamps[post_id] = PostStamp(post_id, None, source)
    return stamps


def plan_holdout(
    stamps: Mapping[str, PostStamp],
    *,
    window: timedelta,
    fraction: float,
    recent_fraction: float,
    trained: Collection[str] = (),
) -> HoldoutSplit | None:
    """The canary rule frozen now and the split of the stamped posts (``trained`` ones
    always in the pool, :func:`split_holdout`), or None when no post has a stamp (then there
    is no canary set)."""
    if not stamps:
        return None
    rule = CanaryRule.freeze(stamps.values(), window=window, fraction=fraction)
    return split_holdout(stamps.values(), rule, recent_fraction=recent_fraction, trained=trained)


def freeze_canary_set(
    storage: Storage,
    gold_name: str,
    annotations: Iterable[Annotation],
    holdout: HoldoutSplit | None,
    *,
    n_labelled: int,
) -> CanarySet:
    """Store the canary posts of ``holdout`` (their annotations and the rule) beside gold
    set ``gold_name``; with no ``holdout`` an empty record whose note says why."""
    if holdout is None:
        note = (
            f"none of the {n_labelled} posts labelled when the gold set froze had a stored "
            "date and source (annotations replayed without their posts): no canary set"
        )
        canary = CanarySet(gold_name, None, (), dataset_hash([]), note=note)
        storage.write_json(canary.key, canary.to_dict())
        return canary
    ids = set(holdout.canary)
    chosen = sorted((a for a in annotations if a.post_id in ids), key=lambda a: a.post_id)
    undated = len(holdout.undated) + n_labelled - len(holdout.pool) - len(ids)
    undated -= len(holdout.recent)
    canary = CanarySet(
        gold_name=gold_name,
        rule=holdout.rule,
        post_ids=tuple(a.post_id for a in chosen),
        hash=dataset_hash(chosen),
        n_earlier_window=holdout.n_earlier_window,
        n_other_source=holdout.n_other_source,
        n_undated=undated,
        note="" if chosen else _no_canary_note(undated, n_labelled),
        exempt=holdout.exempt,
    )
    write_annotations(storage, canary.annotations_key, chosen)
    storage.write_json(canary.key, canary.to_dict())
    log.info("froze canary set of gold set %s: %d posts", gold_name, len(chosen))
    return canary


def _no_canary_note(undated: int, n_labelled: int) -> str:
    """Why a canary set froze empty; the undated posts named (a trial's export had no dates,
    and the note spoke only of windows and sources)."""
    note = "no labelled post is from an earlier window or another source"
    if undated:
        note += (
            f" ({undated} of the {n_labelled} labelled posts have no stored date: a post's "
            "date and source come from the posts apply stored, not from the export)"
        )
    return note


def canary_set_key(storage: Storage, gold_name: str) -> str | None:
    """Key of the canary set of gold set ``gold_name``: frozen once, with the first version
    of the gold set, so a revision (``<name>-r<n>``, :func:`ner.datasets.drop_from_gold_set`)
    finds it through its ``revised_from`` chain. None when that lineage has none."""
    seen: set[str] = set()
    name: str | None = gold_name
    while name is not None and name not in seen:
        seen.add(name)
        if storage.exists(layout.canary_set(name)):
            return layout.canary_set(name)
        record_key = layout.gold_set(name)
        record = storage.read_json(record_key) if storage.exists(record_key) else {}
        earlier = record.get("revised_from") if isinstance(record, dict) else None
        name = str(earlier) if earlier else None
    return None


def load_canary_set(storage: Storage, gold_name: str) -> tuple[CanarySet, list[Annotation]] | None:
    """The canary set of gold set ``gold_name`` (frozen with its first version, see
    :func:`canary_set_key`) and its annotations, or None when it was frozen without one;
    forgotten posts left out (re-hashed), as the gold set's. :class:`GoldSetError` when the
    stored annotations do not match the record."""
    key = canary_set_key(storage, gold_name)
    if key is None:
        return None
    canary = CanarySet.from_dict(storage.read_json(key))
    if not canary.post_ids:
        return canary, []
    annotations = list(read_annotations(storage, canary.annotations_key, include_forgotten=True))
    if tuple(sorted(a.post_id for a in annotations)) != canary.post_ids:
        raise GoldSetError(f"canary set of {gold_name!r}: annotations do not match its post ids")
    if dataset_hash(annotations) != canary.hash:
        raise GoldSetError(f"canary set of {gold_name!r}: annotations do not match its hash")
    return honour_forgotten(storage, canary, annotations)


def drop_from_canary_set(
    storage: Storage, withdrawn: Iterable[str], *, now: datetime | None = None
) -> tuple[CanarySet, list[Annotation]] | None:
    """Drop ``withdrawn`` posts (every label deleted in Label Studio) from the canary set of
    the gold set in force, as :func:`ner.datasets.drop_from_gold_set` drops them from the gold
    set: a label a person retracted must not keep scoring models.

    The canary set is keyed by its gold set's name, so the smaller one is written as the canary
    set of a new version of the gold set (:func:`ner.datasets.reissue_gold_set`: same posts and
    hash, ``canary_dropped_post_ids`` in its record) unless the gold set in force is already a
    version without a canary set of its own (one revised this round). Its record carries
    ``revised_from`` and ``dropped_post_ids`` (still never trained on). Returns the new set and
    its annotations, or None (nothing written) when no withdrawn post is in it.
    """
    gold = load_gold_set(storage)
    found = None if gold is None else load_canary_set(storage, gold[0].name)
    if gold is None or found is None:
        return None
    current, annotations = found
    dropped = sorted(set(withdrawn) & set(current.post_ids))
    if not dropped:
        return None
    gold_name = gold[0].name
    if storage.exists(layout.canary_set(gold_name)):
        extra = {"canary_dropped_post_ids": dropped}
        gold_name = reissue_gold_set(storage, gold, extra, now=now).name
    gone = set(dropped)
    kept = [a for a in annotations if a.post_id not in gone]
    revised = replace(
        current,
        gold_name=gold_name,
        post_ids=tuple(a.post_id for a in kept),
        hash=dataset_hash(kept),
        dropped=tuple(sorted({*current.dropped, *dropped})),
        revised_from=current.gold_name,
        note=current.note or ("" if kept else "every post of the canary set was withdrawn"),
    )
    write_annotations(storage, revised.annotations_key, kept)
    storage.write_json(revised.key, revised.to_dict())
    subject, into = f"canary set of gold set {current.gold_name}", f"canary set of {gold_name}"
    log.warning(dropped_line(subject, dropped, into, len(kept), revised.hash))
    return revised, kept
