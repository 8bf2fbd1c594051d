"""The index of fetched posts: what a JSONL input may not send again, read without parsing
every posts batch each run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ner import layout, purge
from ner.fetched import fetched_before, read_index, text_digest
from ner.records import write_records
from ner.storage import LocalStorage
from ner.types import Post


class CountingStorage(LocalStorage):
    """A local store that records which objects were read (whole or by lines)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []

    def read_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().read_bytes(key)

    def iter_lines(self, key: str) -> Iterator[str]:
        self.reads.append(key)
        return super().iter_lines(key)


@pytest.fixture
def storage(tmp_path: Path) -> CountingStorage:
    return CountingStorage(tmp_path / "store")


def batch(storage: LocalStorage, stamp: str, *posts: tuple[str, str]) -> str:
    key = layout.posts_batch(stamp)
    write_records(storage, key, [Post(id=i, text=t) for i, t in posts])
    return key


def batches_read(storage: CountingStorage) -> list[str]:
    return [key for key in storage.reads if layout.is_posts_batch(key)]


def test_each_batch_is_parsed_once_then_answered_from_the_index(
    storage: CountingStorage,
) -> None:
    # Given two batches, the second holding p1 again with an edited text
    batch(storage, "a", ("p0", "zero"), ("p1", "one"))
    batch(storage, "b", ("p1", "one, edited"), ("p2", "two"))
    expected = {
        "p0": {text_digest("zero")},
        "p1": {text_digest("one"), text_digest("one, edited")},
        "p2": {text_digest("two")},
    }
    # When read twice, then once more after a third batch
    assert fetched_before(storage) == expected
    assert sorted(batches_read(storage)) == ["posts/a.jsonl", "posts/b.jsonl"]
    storage.reads.clear()
    assert fetched_before(storage) == expected
    assert batches_read(storage) == []
    batch(storage, "c", ("p3", "three"))
    assert fetched_before(storage) == expected | {"p3": {text_digest("three")}}
    # Then only the new batch is parsed
    assert batches_read(storage) == ["posts/c.jsonl"]


def test_a_batch_gone_from_storage_leaves_the_index(storage: CountingStorage) -> None:
    batch(storage, "a", ("p0", "zero"))
    gone = batch(storage, "b", ("p1", "one"))
    assert set(fetched_before(storage)) == {"p0", "p1"}
    storage.delete(gone)
    assert set(fetched_before(storage)) == {"p0"}
    assert list(read_index(storage).batches) == ["posts/a.jsonl"]


@pytest.mark.parametrize("damage", ["{not json", '{"version": 2, "batches": {}}', "[]"])
def test_a_damaged_index_is_rebuilt_from_the_batches(
    storage: CountingStorage, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    batch(storage, "a", ("p0", "zero"))
    storage.write_text(layout.FETCHED_INDEX, damage)
    with caplog.at_level(logging.WARNING, logger="ner.fetched"):
        assert fetched_before(storage) == {"p0": {text_digest("zero")}}
    assert "is not an index of fetched posts" in caplog.text
    assert "rebuilding it from the posts batches" in caplog.text
    assert list(read_index(storage).batches) == ["posts/a.jsonl"]


def test_no_batches_writes_no_index(storage: CountingStorage) -> None:
    assert fetched_before(storage) == {}
    assert not storage.exists(layout.FETCHED_INDEX)


def test_purge_removes_forgotten_posts_from_the_index(storage: CountingStorage) -> None:
    # Given an index that covers two batches
    batch(storage, "a", ("p0", "zero"), ("p1", "one"))
    batch(storage, "b", ("p1", "one, edited"), ("p2", "two"))
    fetched_before(storage)
    # When p1 is purged
    report = purge.purge_storage(storage, ["p1"])
    # Then the index is rewritten without it, and counted with the batches
    assert report.rewritten[layout.FETCHED_INDEX] == 2
    assert "p1" not in storage.read_text(layout.FETCHED_INDEX)
    assert set(fetched_before(storage)) == {"p0", "p2"}
    assert layout.FETCHED_INDEX not in purge.purge_storage(storage, ["p1"]).rewritten
