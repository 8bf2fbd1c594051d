"""The retraining gate without a server: the label counter, webhook payloads, and the polling
gate over an in-memory project. The same code against a real Label Studio is in
tests/integration/test_labelstudio_api.py."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ner.errors import LabelStudioError
from ner.labelstudio.checkpoint import AnnotationStamp, PullCheckpoint, format_time
from ner.labelstudio.triggers import (
    LABEL_ACTIONS,
    LabelCounter,
    label_keys,
    payload_project,
    poll_for_labels,
    trigger_checkpoint_key,
    wait_for_labels,
    watch_labels,
)
from ner.storage import Storage, open_storage


# --- counting -------------------------------------------------------------------------------
def test_counter_opens_the_gate_once_at_the_minimum() -> None:
    counter = LabelCounter(3)
    assert counter.record(["1"]) is None
    assert counter.record(["2", "1"]) is None  # "1" again: still two labels
    assert counter.pending == 2
    batch = counter.record(["3"])
    assert batch == frozenset({"1", "2", "3"})
    assert counter.pending == 0 and counter.running
    # While the trigger runs, new labels wait for the next batch
    assert counter.record(["4", "5", "6"]) is None
    # Finishing hands out the next batch at once when it is already due
    assert counter.finish(batch, ok=True) == frozenset({"4", "5", "6"})
    assert counter.triggers == 1


def test_a_failed_trigger_puts_its_labels_back() -> None:
    counter = LabelCounter(2)
    batch = counter.record(["a", "b"])
    assert batch is not None
    assert counter.finish(batch, ok=False) is None  # no immediate retry
    assert counter.pending == 2 and not counter.running and counter.triggers == 0
    retry = counter.record(["b"])  # the next event retries with the same labels
    assert retry == frozenset({"a", "b"})


def test_counter_rejects_a_foreign_batch_and_a_zero_gate() -> None:
    counter = LabelCounter(1)
    with pytest.raises(RuntimeError):
        counter.finish(frozenset({"x"}), ok=True)
    with pytest.raises(ValueError):
        LabelCounter(0)


def test_concurrent_events_give_exactly_one_batch() -> None:
    counter = LabelCounter(50)
    batches: list[frozenset[str]] = []
    lock = threading.Lock()

    def send(worker: int) -> None:
        for n in range(10):
            batch = counter.record([f"{worker}-{n}"])
            if batch is not None:
                with lock:
                    batches.append(batch)

    threads = [threading.Thread(target=send, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(batches) == 1
    assert len(batches[0]) >= 50
    assert len(batches[0]) + counter.pending == 80


# --- payloads -------------------------------------------------------------------------------
def test_label_keys_of_created_updated_and_bulk_payloads() -> None:
    assert label_keys({"action": "ANNOTATION_CREATED", "annotation": {"id": 12}}) == ["12"]
    assert label_keys({"annotation": {"id": 12, "was_cancelled": True}}) == []
    bulk = {"annotations": [{"id": 1}, {"id": "2"}, {"id": None}, {"id": True}, "x"]}
    assert label_keys(bulk) == ["1", "2"]
    assert label_keys({"annotation": {}}) == []
    assert label_keys(["not", "a", "payload"]) == []


def test_deletion_events_count_as_changes_of_their_own() -> None:
    # given the payloads Label Studio sends when annotations or tasks are deleted
    deleted = {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 12}, {"id": 13}]}
    tasks = {"action": "TASKS_DELETED", "tasks": [{"id": 4}, {"id": None}]}
    # then each deletion is a key distinct from the label it removes
    assert label_keys(deleted) == ["deleted-annotation:12", "deleted-annotation:13"]
    assert label_keys(tasks) == ["deleted-task:4"]
    assert {"ANNOTATIONS_DELETED", "TASKS_DELETED"} <= set(LABEL_ACTIONS)
    counter = LabelCounter(3)
    assert counter.record(label_keys({"annotation": {"id": 12}})) is None
    assert counter.record(label_keys(deleted)) == frozenset(
        {"12", "deleted-annotation:12", "deleted-annotation:13"}
    )


def test_payload_project_from_project_or_annotation() -> None:
    assert payload_project({"project": {"id": 4}, "annotation": {"project": 9}}) == 4
    assert payload_project({"annotation": {"project": 9}}) == 9
    assert payload_project({"project": "4"}) is None
    assert payload_project(None) is None


# --- polling over an in-memory project ------------------------------------------------------
T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


class MemoryProject:
    """Annotations as a list of stamps; answers like LabelStudioProject.new_annotations."""

    project_id = 3

    def __init__(self) -> None:
        self.stamps: list[AnnotationStamp] = []
        self.failures = 0

    def label(self, ident: int, seconds: float, cancelled: bool = False) -> None:
        when = format_time(T0 + timedelta(seconds=seconds))
        self.stamps.append(AnnotationStamp(ident, ident, when, cancelled))

    def new_annotations(
        self, checkpoint: PullCheckpoint, *, overlap: float = 300.0, include_cancelled: bool = False
    ) -> list[AnnotationStamp]:
        if self.failures:
            self.failures -= 1
            raise LabelStudioError("Label Studio is restarting")
        return [
            s
            for s in self.stamps
            if checkpoint.is_new(s, overlap) and (include_cancelled or not s.cancelled)
        ]


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return open_storage(str(tmp_path), "dev")


def test_poll_counts_labels_across_polls_and_moves_only_when_triggered(storage: Storage) -> None:
    project = MemoryProject()
    calls: list[int] = []
    project.label(1, 0)
    project.label(2, 1, cancelled=True)  # skipped: not a label
    assert poll_for_labels(project, storage, 2, on_trigger=lambda: calls.append(1)) == 0
    assert not storage.exists(trigger_checkpoint_key(3))
    project.label(3, 2)
    assert poll_for_labels(project, storage, 2, on_trigger=lambda: calls.append(1)) == 2
    assert calls == [1]
    assert storage.exists(trigger_checkpoint_key(3))
    # Nothing new since the trigger
    assert poll_for_labels(project, storage, 1, on_trigger=lambda: calls.append(1)) == 0
    # A re-saved annotation is a new label version
    project.label(1, 10)
    assert poll_for_labels(project, storage, 1) == 1
    assert calls == [1]


def test_a_failing_trigger_leaves_the_checkpoint(storage: Storage) -> None:
    project = MemoryProject()
    project.label(1, 0)

    def boom() -> None:
        raise RuntimeError("no Prefect")

    with pytest.raises(RuntimeError):
        poll_for_labels(project, storage, 1, on_trigger=boom)
    assert poll_for_labels(project, storage, 1) == 1  # the labels still count


def test_consumers_with_their_own_checkpoints_do_not_share_labels(storage: Storage) -> None:
    project = MemoryProject()
    project.label(1, 0)
    assert poll_for_labels(project, storage, 1) == 1
    assert poll_for_labels(project, storage, 1, checkpoint_key="checkpoints/other.json") == 1
    assert poll_for_labels(project, storage, 1) == 0


def test_labels_a_training_pull_read_are_not_new_to_a_consumer(storage: Storage) -> None:
    from ner.labelstudio.exchange import checkpoint_key, save_checkpoint

    # Given two labels that `train --source label_studio` has pulled (its checkpoint moved
    # past them) before the loop's first wait (a trial saw such a loop train at once)
    project = MemoryProject()
    project.label(1, 0)
    project.label(2, 1)
    pulled = PullCheckpoint().advance(project.stamps, 300.0)
    save_checkpoint(storage, checkpoint_key(3), pulled)
    loop = {"checkpoint_key": "checkpoints/loop.json", "read_key": checkpoint_key(3)}
    # Then they are not new to the loop, though its own checkpoint does not exist
    assert poll_for_labels(project, storage, 1, **loop) == 0
    assert poll_for_labels(project, storage, 1, checkpoint_key="checkpoints/loop.json") == 2
    # and a label saved after the pull is
    project.label(3, 500)
    assert poll_for_labels(project, storage, 1, **loop) == 1
    # and the later of two checkpoints is the one that read further, whichever is given first
    assert PullCheckpoint().later(pulled) == pulled == pulled.later(PullCheckpoint())


def test_the_poll_watcher_does_not_count_labels_a_training_pull_read(storage: Storage) -> None:
    from ner.labelstudio.exchange import checkpoint_key, save_checkpoint

    # Given three labels, two of which a training pull has read (a trial's first poll
    # counted 10 labels where about 3 were new)
    project = MemoryProject()
    for annotation_id in (1, 2):
        project.label(annotation_id, 0)
    save_checkpoint(storage, checkpoint_key(3), PullCheckpoint().advance(project.stamps, 300.0))
    project.label(3, 500)
    # When the watcher polls with the pull's checkpoint, a gate of two opens nothing
    calls: list[int] = []
    watch = {"interval": 0, "max_polls": 1, "read_key": checkpoint_key(3)}
    assert watch_labels(project, storage, 2, lambda: calls.append(1), **watch) == 0
    # Then a fourth label opens it
    project.label(4, 600)
    assert watch_labels(project, storage, 2, lambda: calls.append(1), **watch) == 1
    assert calls == [1]


def test_wait_times_out_with_zero_and_returns_the_count_when_labels_are_there(
    storage: Storage,
) -> None:
    project = MemoryProject()
    assert wait_for_labels(project, storage, 1, timeout=0, interval=0) == 0
    # while it waits, it says how long is left before each pause (a trial saw no line)
    left: list[float] = []
    assert (
        wait_for_labels(project, storage, 1, timeout=0.05, interval=0.01, on_wait=left.append) == 0
    )
    assert left and all(0 < s <= 0.05 for s in left) and left == sorted(left, reverse=True)
    project.label(1, 0)
    project.label(2, 0)
    assert wait_for_labels(project, storage, 2, timeout=0, interval=0) == 2


def test_wait_retries_a_failed_poll_but_never_reports_an_outage_as_no_labels(
    storage: Storage,
) -> None:
    project = MemoryProject()
    project.label(1, 0)
    project.failures = 2
    assert wait_for_labels(project, storage, 1, timeout=30, interval=0) == 1
    project.failures = 1000
    with pytest.raises(LabelStudioError):
        wait_for_labels(project, storage, 1, timeout=0, interval=0)


def test_watch_keeps_going_after_failures(storage: Storage) -> None:
    project = MemoryProject()
    project.label(1, 0)
    project.failures = 1
    calls: list[int] = []
    triggers = watch_labels(project, storage, 1, lambda: calls.append(1), interval=0, max_polls=3)
    assert triggers == 1 and calls == [1]
