"""Pull checkpoints: timestamps, annotation stamps, what is new since a pull, and the
checkpoint stored and read back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ner.errors import DataError
from ner.labelstudio.checkpoint import (
    AnnotationStamp,
    PullCheckpoint,
    annotation_stamps,
    format_time,
    parse_time,
)
from ner.labelstudio.exchange import load_checkpoint, save_checkpoint
from ner.storage import open_storage

T0 = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
OVERLAP = 60.0


def at(seconds: float) -> str:
    return format_time(T0 + timedelta(seconds=seconds))


def stamp(ident: int, seconds: float, task: int = 1, cancelled: bool = False) -> AnnotationStamp:
    return AnnotationStamp(ident, task, at(seconds), cancelled)


# --- timestamps -----------------------------------------------------------------------------
def test_parse_time_reads_label_studio_formats_as_aware_utc() -> None:
    assert parse_time("2026-11-20T12:00:00.123456Z") == T0.replace(microsecond=123456)
    assert parse_time("2026-11-20T13:00:00+01:00") == T0
    assert parse_time("2026-11-20T12:00:00") == T0  # naive means UTC
    assert parse_time(T0.replace(tzinfo=None)) == T0
    for bad in ("", "yesterday", None, 17):
        assert parse_time(bad) is None


def test_format_time_round_trips_with_microseconds() -> None:
    moment = T0 + timedelta(microseconds=7)
    text = format_time(moment)
    assert text == "2026-11-20T12:00:00.000007Z"
    assert parse_time(text) == moment


# --- annotation stamps ----------------------------------------------------------------------
def test_annotation_stamps_of_tasks_skip_untrackable_annotations() -> None:
    tasks: list[Any] = [
        {
            "id": 5,
            "annotations": [
                {"id": 1, "updated_at": at(1)},
                {"id": 2, "created_at": at(2)},  # no updated_at: created_at is used
                {"id": 3, "updated_at": at(3), "was_cancelled": True},
                {"id": "x", "updated_at": at(4)},  # not an integer id
                {"id": 4},  # no time at all
                "not an annotation",
            ],
        },
        {"id": 6, "annotations": None},
        "not a task",
    ]
    assert annotation_stamps(tasks) == [
        AnnotationStamp(1, 5, at(1)),
        AnnotationStamp(2, 5, at(2)),
        AnnotationStamp(3, 5, at(3), cancelled=True),
    ]


# --- the pull checkpoint --------------------------------------------------------------------
def test_empty_checkpoint_sees_everything_as_new() -> None:
    empty = PullCheckpoint()
    assert empty.lower_bound(OVERLAP) is None
    assert empty.is_new(stamp(1, -10_000), OVERLAP)


def test_advance_keeps_the_newest_time_and_recent_ids() -> None:
    checkpoint = PullCheckpoint().advance([stamp(1, 0), stamp(2, 100), stamp(3, 50)], OVERLAP)
    assert checkpoint.updated_at == at(100)
    # ids within the overlap window before the newest are remembered; older ones are not
    assert dict(checkpoint.seen) == {2: at(100), 3: at(50)}
    assert checkpoint.lower_bound(OVERLAP) == T0 + timedelta(seconds=40)


def test_seen_versions_are_not_new_but_updates_and_ties_are() -> None:
    checkpoint = PullCheckpoint().advance([stamp(1, 100), stamp(2, 90)], OVERLAP)
    # Already read, same version: not new
    assert not checkpoint.is_new(stamp(1, 100), OVERLAP)
    # The same annotation saved again later: new
    assert checkpoint.is_new(stamp(1, 130), OVERLAP)
    # Another annotation stamped with exactly the newest time seen: new (>= not >)
    assert checkpoint.is_new(stamp(3, 100), OVERLAP)
    # Committed late with an older timestamp, but inside the overlap window: new
    assert checkpoint.is_new(stamp(4, 70), OVERLAP)
    # Older than the window: considered read
    assert not checkpoint.is_new(stamp(5, 10), OVERLAP)


def test_advance_never_moves_backwards_and_prunes_old_ids() -> None:
    checkpoint = PullCheckpoint().advance([stamp(1, 100)], OVERLAP)
    same = checkpoint.advance([stamp(2, 20)], OVERLAP)  # older than the newest seen
    assert same.updated_at == at(100)
    assert 2 not in same.seen  # outside the window: never looked at again anyway
    later = checkpoint.advance([stamp(3, 500)], OVERLAP)
    assert later.updated_at == at(500)
    assert dict(later.seen) == {3: at(500)}  # 1 fell out of the window
    assert PullCheckpoint().advance([], OVERLAP) == PullCheckpoint()


def test_checkpoint_round_trips_through_storage(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path), "dev")
    key = "checkpoints/labelstudio-3.json"
    assert load_checkpoint(storage, key) == PullCheckpoint()
    checkpoint = PullCheckpoint().advance([stamp(7, 5), stamp(8, 6)], OVERLAP)
    save_checkpoint(storage, key, checkpoint, project_id=3)
    assert load_checkpoint(storage, key) == checkpoint
    assert storage.read_json(key)["project_id"] == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "not an object"),
        ({"updated_at": "soon"}, "not a timestamp"),
        ({"updated_at": None, "seen": ["1"]}, "'seen' is not an object"),
        ({"updated_at": None, "seen": {"abc": "x"}}, "bad annotation id"),
    ],
)
def test_malformed_checkpoint_is_a_data_error_naming_its_key(data: Any, message: str) -> None:
    with pytest.raises(DataError, match=message) as caught:
        PullCheckpoint.from_dict(data, "checkpoints/x.json")
    assert "checkpoints/x.json" in str(caught.value)
