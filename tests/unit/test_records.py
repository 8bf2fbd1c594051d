"""``ner.records``: one streaming JSONL writer that counts, one reader with line ranges."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ner.errors import DataError
from ner.records import (
    count_lines,
    read_annotations,
    read_posts,
    read_predictions,
    write_records,
)
from ner.storage import LocalStorage
from ner.types import Post, Prediction, Span


def test_writer_streams_and_counts_and_reader_gives_them_back(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    predictions = [
        Prediction("1", (Span(0, 4, "BRAND", "Nivé"),), "m1"),
        Prediction("2", (), "m1"),
    ]
    # when written from a generator
    count = write_records(storage, "predictions/p.jsonl", (p for p in predictions))
    # then the count is the number of lines, UTF-8 unescaped, and they read back equal
    assert count == 2 == count_lines(storage, "predictions/p.jsonl")
    assert "Nivé" in storage.read_text("predictions/p.jsonl")
    assert list(read_predictions(storage, "predictions/p.jsonl")) == predictions


def test_line_ranges_count_blank_lines_and_name_the_bad_line(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    lines = [json.dumps({"id": str(i), "text": f"post {i}"}) for i in range(4)]
    lines.insert(2, "")
    lines.append("[1, 2]")
    storage.write_lines("posts/p.jsonl", lines)
    # then ranges are physical lines, blank lines give no post
    assert [p.id for p in read_posts(storage, "posts/p.jsonl", 0, 3)] == ["0", "1"]
    assert [p.id for p in read_posts(storage, "posts/p.jsonl", 3, 5)] == ["2", "3"]
    assert all(isinstance(p, Post) for p in read_posts(storage, "posts/p.jsonl", 0, 5))
    # and a line that is no object raises DataError naming key and 1-based line
    with pytest.raises(DataError, match=r"posts/p\.jsonl:6") as caught:
        list(read_posts(storage, "posts/p.jsonl"))
    assert caught.value.record_id == "posts/p.jsonl:6"
    assert "not a valid post" in caught.value.reason


def test_a_broken_annotation_names_its_line(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_lines("a.jsonl", ['{"post_id": "1", "text": "x", "spans": [{"start": 0}]}'])
    with pytest.raises(DataError, match=r"'a\.jsonl:1': not a valid annotation"):
        list(read_annotations(storage, "a.jsonl"))
