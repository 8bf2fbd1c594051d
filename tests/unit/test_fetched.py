"""The index of fetched posts: what a JSONL input may not send again, read without parsing
every posts batch each run."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from ner import fetched, layout, purge
from ner.fetched import fetched_before, read_segments, text_digest
from ner.records import write_records
from ner.storage import LocalStorage
from ner.types import Post


class CountingStorage(LocalStorage):
    """A local store that records which objects were read (whole or by lines) and written."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reads: list[str] = []
        self.writes: list[str] = []

    def write_text(self, key: str, text: str) -> str:
        self.writes.append(key)
        return super().write_text(key, text)

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
    assert [list(s.batches) for s in read_segments(storage).values()] == [["posts/a.jsonl"]]


@pytest.mark.parametrize("damage", ["{not json", '{"version": 2, "batches": []}', "[]"])
def test_a_damaged_segment_is_deleted_and_its_batches_read_again(
    storage: CountingStorage, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    batch(storage, "a", ("p0", "zero"))
    storage.write_text(layout.fetched_segment(1), damage)
    with caplog.at_level(logging.WARNING, logger="ner.fetched"):
        assert fetched_before(storage) == {"p0": {text_digest("zero")}}
    assert "is not a segment of the index of fetched posts" in caplog.text
    assert [list(s.batches) for s in read_segments(storage).values()] == [["posts/a.jsonl"]]


def test_a_segment_of_the_earlier_format_is_rebuilt_without_a_warning(
    storage: CountingStorage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a segment an earlier release wrote (digests, no dates or sources)
    batch(storage, "a", ("p0", "zero"))
    earlier = {"version": 1, "batches": {"posts/a.jsonl": {"p0": [text_digest("zero").hex()]}}}
    storage.write_json(layout.fetched_segment(1), earlier)
    # When it is read, then it is rebuilt from its batch, logged as an upgrade only
    with caplog.at_level(logging.INFO, logger="ner.fetched"):
        assert fetched.stamps_of(storage, {"p0"}) == {"p0": ("posts/a.jsonl", None, "jsonl")}
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "of an earlier format; rebuilt from its batches" in caplog.text


def test_dates_and_sources_come_from_the_index_first_batch_first(
    storage: CountingStorage,
) -> None:
    # Given p1 in two batches, with another date in the later one
    key_a = layout.posts_batch("a")
    write_records(storage, key_a, [Post(id="p1", text="one", created_at="2026-11-01T00:00:00Z")])
    key_b = layout.posts_batch("b")
    posts = [
        Post(id="p1", text="one", created_at="2026-11-20T00:00:00Z"),
        Post(id="p2", text="two", created_at=None, source="forum"),
    ]
    write_records(storage, key_b, posts)
    # When the stamps are asked for twice
    first = fetched.stamps_of(storage, {"p1", "p2", "zz"})
    storage.reads.clear()
    again = fetched.stamps_of(storage, {"p1", "p2", "zz"})
    # Then each comes from its first batch, and the second read parses no batch
    assert (
        first
        == again
        == {
            "p1": (key_a, "2026-11-01T00:00:00Z", "jsonl"),
            "p2": (key_b, None, "forum"),
        }
    )
    assert batches_read(storage) == []


def test_the_index_grows_by_segments_and_a_run_rewrites_only_the_last(
    storage: CountingStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given segments of two batches, and five batches
    monkeypatch.setattr(fetched, "SEGMENT_BATCHES", 2)
    for n in range(5):
        batch(storage, f"b{n}", (f"p{n}", f"text {n}"))
    assert len(fetched_before(storage)) == 5
    keys = list(fetched.segment_keys(storage).values())
    assert keys == [layout.fetched_segment(n) for n in (1, 2, 3)]
    # When a sixth batch comes
    batch(storage, "b5", ("p5", "text 5"))
    storage.reads.clear()
    storage.writes.clear()
    assert len(fetched_before(storage)) == 6
    # Then only it is parsed, the three segments read, and only the last one rewritten
    assert batches_read(storage) == ["posts/b5.jsonl"]
    assert sorted(k for k in storage.reads if k.startswith("indexes/")) == keys
    assert storage.writes == [layout.fetched_segment(3)]
    # And a seventh starts a fourth segment
    batch(storage, "b6", ("p6", "text 6"))
    fetched_before(storage)
    assert list(fetched.segment_keys(storage)) == [1, 2, 3, 4]


def test_no_batches_writes_no_index(storage: CountingStorage) -> None:
    assert fetched_before(storage) == {}
    assert storage.list(layout.FETCHED_INDEX) == []


def test_purge_removes_forgotten_posts_from_the_index(
    storage: CountingStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an index of two segments, p1 in both
    monkeypatch.setattr(fetched, "SEGMENT_BATCHES", 1)
    batch(storage, "a", ("p0", "zero"), ("p1", "one"))
    batch(storage, "b", ("p1", "one, edited"), ("p2", "two"))
    fetched_before(storage)
    first, second = layout.fetched_segment(1), layout.fetched_segment(2)
    # When p1 is purged
    report = purge.purge_storage(storage, ["p1"])
    # Then both segments are rewritten without it, and counted with the batches
    assert (report.rewritten[first], report.rewritten[second]) == (1, 1)
    assert not any("p1" in storage.read_text(k) for k in (first, second))
    assert set(fetched_before(storage)) == {"p0", "p2"}
    assert not {first, second} & set(purge.purge_storage(storage, ["p1"]).rewritten)
