"""Live sets: which tasks and annotations a Label Studio project still holds (pure + storage).

Export snapshots are immutable and incremental, so they never learn that a label was
deleted. Each pull therefore also records the project's *live set* — every task id with the
ids of its annotations — at ``layout.live_set(project)``, overwritten by each pull and taken
*after* the export, so everything the snapshots hold that still exists is in it.
:func:`reconcile` then removes from a snapshot's tasks every task and every annotation that is
absent from the live set: a label deleted in Label Studio leaves the training pool at the next
pull, and a task whose latest annotation was deleted falls back to its other annotations.

Items without an integer id (hand-made or replay exports) cannot be checked and are kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ner import layout
from ner.errors import DataError
from ner.storage import Storage


class LiveSet(BaseModel):
    """The tasks of one project at one instant: task id -> its annotation ids."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    project_id: int
    taken_at: str
    tasks: dict[int, frozenset[int]]
    #: The snapshot this live set was taken after; later snapshots are not reconciled with it.
    snapshot: str | None = None

    def covers(self, key: str) -> bool:
        """Whether snapshot ``key`` of this project was taken before this live set.

        A snapshot written after it (a pull that stopped between the export and the live
        set) may hold labels the live set has never seen: it is read as it is.
        """
        if self.snapshot is None:
            return True
        pattern = layout.export_snapshot_pattern(self.project_id)
        mine, theirs = pattern.match(self.snapshot), pattern.match(key)
        if mine is None or theirs is None:
            return False
        return (theirs.group(1), int(theirs.group(2) or 1)) <= (
            mine.group(1),
            int(mine.group(2) or 1),
        )

    def to_json(self) -> dict[str, Any]:
        """``{"project_id", "taken_at", "n_tasks", "n_annotations", "tasks": {id: [ids]}}``."""
        return {
            "project_id": self.project_id,
            "taken_at": self.taken_at,
            "n_tasks": len(self.tasks),
            "n_annotations": sum(len(ids) for ids in self.tasks.values()),
            "snapshot": self.snapshot,
            "tasks": {str(t): sorted(ids) for t, ids in sorted(self.tasks.items())},
        }


def save_live_set(
    storage: Storage,
    project_id: int,
    tasks: Mapping[int, Sequence[int]],
    *,
    snapshot: str | None = None,
) -> LiveSet:
    """Record ``tasks`` (task id -> annotation ids) as the live set of ``project_id``, taken
    after the export ``snapshot`` (the key :func:`LiveSet.covers` compares against)."""
    live = LiveSet(
        project_id=project_id,
        taken_at=datetime.now(UTC).isoformat(),
        tasks={task: frozenset(ids) for task, ids in tasks.items()},
        snapshot=snapshot,
    )
    storage.write_json(layout.live_set(project_id), live.to_json())
    return live


def load_live_set(storage: Storage, project_id: int) -> LiveSet | None:
    """The last live set of ``project_id``, ``None`` if no pull recorded one yet.

    Raises :class:`DataError` naming the key when the stored record is malformed.
    """
    key = layout.live_set(project_id)
    if not storage.exists(key):
        return None
    try:
        return LiveSet.model_validate(storage.read_json(key))
    except ValidationError as exc:
        raise DataError(key, f"malformed live set: {exc.errors()[0]['msg']}") from exc


@dataclass(slots=True)
class Reconciled:
    """One snapshot's tasks after :func:`reconcile`.

    ``kept`` is the export with deleted tasks and annotations removed; ``removed`` holds the
    removed annotations, each in a copy of its task (so the posts that lost a label can be
    parsed from it); the ids say which tasks and annotations were deleted.
    """

    kept: list[Any] = field(default_factory=list)
    removed: list[Any] = field(default_factory=list)
    deleted_task_ids: list[int] = field(default_factory=list)
    deleted_annotation_ids: list[int] = field(default_factory=list)


def _annotation_id(raw: Any) -> int | None:
    ident = raw.get("id") if isinstance(raw, dict) else None
    return ident if type(ident) is int else None


def _annotation_alive(raw: Any, alive: frozenset[int]) -> bool:
    ident = _annotation_id(raw)
    return ident is None or ident in alive


def reconcile(tasks: Any, live: LiveSet) -> Reconciled:
    """Drop from ``tasks`` (an export: a list of task objects) what ``live`` no longer holds.

    A task whose integer id is not in ``live`` is removed whole (its annotations with integer
    ids count as deleted); an annotation whose integer id is not among its task's live
    annotations is removed from the task. Anything else (not a list, not a task, ids that
    are not integers) is passed through unchanged for the export parser to judge.
    """
    out = Reconciled()
    if not isinstance(tasks, list):
        out.kept = tasks
        return out
    for raw in tasks:
        ident = raw.get("id") if isinstance(raw, dict) else None
        if type(ident) is not int or not isinstance(raw.get("annotations"), list):
            out.kept.append(raw)
            continue
        annotations = raw["annotations"]
        alive = live.tasks.get(ident)
        if alive is None:
            out.deleted_task_ids.append(ident)
            gone = annotations
        else:
            gone = [a for a in annotations if not _annotation_alive(a, alive)]
            kept = [a for a in annotations if _annotation_alive(a, alive)]
            out.kept.append({**raw, "annotations": kept} if gone else raw)
        if gone:
            found = (_annotation_id(a) for a in gone)
            out.deleted_annotation_ids.extend(i for i in found if i is not None)
            out.removed.append({**raw, "annotations": gone})
    return out
