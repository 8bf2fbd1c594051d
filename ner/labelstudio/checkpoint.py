"""Pull checkpoints: which annotation versions were read, up to when (pure, no I/O).

Incremental pulls, equal timestamps and late commits
    A :class:`PullCheckpoint` holds the newest annotation ``updated_at`` seen and the ids of
    the annotations seen in the last ``overlap`` seconds before it. A pull asks the server for
    tasks updated at or after ``newest - overlap`` (Label Studio bumps a task's ``updated_at``
    whenever one of its annotations is saved) and keeps the annotations whose
    ``(id, updated_at)`` was not seen yet. ``>=`` plus the overlap window means an annotation
    stamped with the same microsecond as the last one seen, or committed a little later than
    its timestamp says, is still picked up; the ``seen`` set removes the re-reads. A missed
    label is worse than a re-read one: when in doubt, a task is exported again and the
    latest annotation per post wins when the snapshots are collected.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ner.errors import DataError
from ner.labelstudio.export import ExportAnnotation, TaskAnnotations

log = logging.getLogger(__name__)

#: Seconds re-read before the newest annotation seen (see the module docstring).
DEFAULT_OVERLAP_SECONDS = 300.0

#: Timestamp format Label Studio's Data Manager filters accept (UTC, microseconds).
_LS_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


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


def _stamp(task_id: Any, annotation: ExportAnnotation) -> AnnotationStamp | None:
    when = parse_time(annotation.updated_at) or parse_time(annotation.created_at)
    if type(annotation.id) is not int or type(task_id) is not int or when is None:
        log.warning("task %r: annotation %r has no id or timestamp", task_id, annotation.id)
        return None
    cancelled = bool(annotation.was_cancelled)
    return AnnotationStamp(annotation.id, task_id, format_time(when), cancelled)


def annotation_stamps(tasks: Iterable[Any]) -> list[AnnotationStamp]:
    """Every annotation of ``tasks`` (task dicts from a list or an export) as a stamp.

    Annotations without an integer id or a readable ``updated_at`` (else ``created_at``) are
    skipped with a warning: they cannot be tracked. Items that are not tasks are skipped.
    """
    stamps: list[AnnotationStamp] = []
    for raw in tasks:
        try:
            task = TaskAnnotations.model_validate(raw)
        except ValidationError:
            continue
        found = (_stamp(task.id, annotation) for annotation in task.readable_annotations())
        stamps.extend(stamp for stamp in found if stamp is not None)
    return stamps


class _StoredCheckpoint(BaseModel):
    model_config = ConfigDict(extra="ignore")

    updated_at: str | None = None
    seen: dict[int, Any] | None = None


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

    def later(self, other: PullCheckpoint) -> PullCheckpoint:
        """Whichever of the two has read further (``self`` on a tie): labels either one
        has read are not new to the result."""
        mine, theirs = parse_time(self.updated_at), parse_time(other.updated_at)
        if theirs is not None and (mine is None or theirs > mine):
            return other
        return self

    def to_dict(self) -> dict[str, Any]:
        """``{"updated_at": str | None, "seen": {annotation id as str: updated_at}}``."""
        return {
            "updated_at": self.updated_at,
            "seen": {str(k): v for k, v in sorted(self.seen.items())},
        }

    @classmethod
    def from_dict(cls, data: Any, key: str = "checkpoint") -> PullCheckpoint:
        """Read a stored checkpoint; :class:`DataError` naming ``key`` if it is malformed."""
        if not isinstance(data, Mapping):
            raise DataError(key, f"checkpoint is not an object ({type(data).__name__})")
        try:
            stored = _StoredCheckpoint.model_validate(data)
        except ValidationError as exc:
            raise DataError(key, _checkpoint_problem(exc)) from exc
        if stored.updated_at is not None and parse_time(stored.updated_at) is None:
            raise DataError(key, f"checkpoint updated_at {stored.updated_at!r} is not a timestamp")
        return cls(stored.updated_at, {k: str(v) for k, v in (stored.seen or {}).items()})


def _checkpoint_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = tuple(error["loc"])
    if where[:1] == ("updated_at",):
        return f"checkpoint updated_at {error['input']!r} is not a timestamp"
    if where == ("seen",):
        return "checkpoint 'seen' is not an object"
    return f"checkpoint has a bad annotation id {where[1] if len(where) > 1 else None!r}"
