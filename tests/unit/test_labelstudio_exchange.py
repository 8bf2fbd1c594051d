"""Between storage and Label Studio: import tasks, import files, snapshots, checkpoints
(the server side is tested in tests/integration/test_labelstudio_api.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ner.errors import DataError, OffsetError
from ner.labelstudio.config import LabelConfig
from ner.labelstudio.exchange import (
    read_pairs,
    snapshot_key,
    snapshot_keys,
    to_tasks,
    write_import_file,
)
from ner.storage import LocalStorage, open_storage
from ner.types import Post, Prediction, Span
from tests.support.ls_json import span

LABELS = ("BRAND",)
CONFIG = LabelConfig.for_labels(LABELS)


# --------------------------------------------------------------------------- to_tasks


def test_to_tasks_shape_with_and_without_prediction() -> None:
    # given two posts, one with a prediction
    text = "💄 new Fenty Beauty drop"
    post = Post("p1", text, "2026-11-20T10:00:00Z", "u1", "en", "x", "fenty")
    bare = Post("p2", "nothing here", source="jsonl")
    sp = span(text, "Fenty Beauty")
    scored = Span(sp.start, sp.end, sp.label, sp.text, 0.87)
    prediction = Prediction("p1", (scored,), "brand-ner@3", score=0.87)
    # when converted
    tasks = to_tasks([(post, prediction), (bare, None)], CONFIG)
    # then the first task carries data, meta and one prediction in Label Studio's shape
    assert len(tasks) == 2
    assert tasks[0]["data"] == {
        "text": text,
        "post_id": "p1",
        "created_at": post.created_at,
        "author_id": post.author_id,
        "lang": post.lang,
        "source": post.source,
        "query": post.query,
    }
    (pred,) = tasks[0]["predictions"]
    assert pred["model_version"] == "brand-ner@3"
    assert pred["score"] == pytest.approx(0.87)
    (res,) = pred["result"]
    assert res["from_name"] == CONFIG.from_name and res["to_name"] == CONFIG.to_name
    assert res["type"] == "labels"
    assert res["value"] == {"start": sp.start, "end": sp.end, "text": sp.text, "labels": ["BRAND"]}
    assert text[res["value"]["start"] : res["value"]["end"]] == res["value"]["text"]
    assert res["score"] == pytest.approx(0.87)
    assert isinstance(res["id"], str) and 0 < len(res["id"]) <= 16
    # and the post without a prediction has no predictions key at all
    assert "predictions" not in tasks[1]
    assert tasks[1]["data"]["post_id"] == "p2"
    # and the whole thing is JSON
    assert json.loads(json.dumps(tasks)) == tasks


def test_to_tasks_region_ids_are_stable_and_distinct() -> None:
    # given a post with two spans
    text = "Glossier and Glossier"
    a, b = span(text, "Glossier"), span(text, "Glossier", nth=1)
    items = [(Post("p", text), Prediction("p", (a, b), "v1"))]
    # when converted twice
    first, second = to_tasks(items, CONFIG), to_tasks(items, CONFIG)
    ids = [r["id"] for r in first[0]["predictions"][0]["result"]]
    # then ids repeat across runs and differ between regions
    assert ids == [r["id"] for r in second[0]["predictions"][0]["result"]]
    assert len(set(ids)) == 2


def test_to_tasks_uses_the_project_config_names() -> None:
    # given a project whose control is "ner" on Text "tweet" reading $content
    config = LabelConfig("ner", "tweet", LABELS, "content")
    text = "Dior"
    items = [(Post("p", text), Prediction("p", (span(text, "Dior"),), "v"))]
    # when converted
    (t,) = to_tasks(items, config)
    # then the text is under the config's key and results use its names
    assert t["data"]["content"] == text and "text" not in t["data"]
    res = t["predictions"][0]["result"][0]
    assert (res["from_name"], res["to_name"]) == ("ner", "tweet")


def test_to_tasks_refuses_inconsistent_predictions() -> None:
    # given a prediction whose span does not match the post text, and one for another post
    post = Post("p", "I love Dior")
    bad_span = Prediction("p", (Span(0, 4, "BRAND", "Dior"),), "v")
    other = Prediction("q", (), "v")
    # then both raise naming the post
    with pytest.raises(OffsetError, match="'p'"):
        to_tasks([(post, bad_span)], CONFIG)
    with pytest.raises(DataError, match="'q'"):
        to_tasks([(post, other)], CONFIG)


def test_write_import_file_keeps_order_and_can_take_only_the_selected_posts(
    tmp_path: Path,
) -> None:
    # Given three stored posts and their predictions, in step
    storage = LocalStorage(tmp_path)
    items = [Post(id=f"p{i}", text=f"post number {i} about Glossier") for i in range(3)]
    storage.write_text(
        "posts/a.jsonl", "".join(json.dumps({"id": p.id, "text": p.text}) + "\n" for p in items)
    )
    preds = [Prediction(post_id=p.id, spans=(), model_version="m@1") for p in items]
    storage.write_text(
        "predictions/a.jsonl", "".join(json.dumps(p.to_dict()) + "\n" for p in preds)
    )
    # When every post is written, and then only p2 and p0
    every = write_import_file(
        storage, "posts/a.jsonl", "predictions/a.jsonl", "t/all.json", ["BRAND"]
    )
    some = write_import_file(
        storage,
        "posts/a.jsonl",
        "predictions/a.jsonl",
        "t/some.json",
        ["BRAND"],
        only={"p2", "p0"},
    )
    # Then the files hold those posts as tasks, in the batch's order
    assert (every, some) == (3, 2)
    assert [t["data"]["post_id"] for t in storage.read_json("t/all.json")] == ["p0", "p1", "p2"]
    assert [t["data"]["post_id"] for t in storage.read_json("t/some.json")] == ["p0", "p2"]


def test_snapshot_keys_of_one_project_in_the_order_taken(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path), "dev")
    names = [
        snapshot_key("20261120T120000Z", 7),
        snapshot_key("20261120T120000Z", 7, attempt=2),
        snapshot_key("20261120T110000Z", 7),
        snapshot_key("20261120T120000Z", 17),  # another project
        snapshot_key("20261120T120000Z", 1),  # another project, id a prefix of 17
        "exports/20261120T100000Z-replay.json",  # not a Label Studio snapshot
    ]
    for name in names:
        storage.write_bytes(name, b"[]")
    assert snapshot_keys(storage, 7) == [
        "exports/20261120T110000Z-ls-7.json",
        "exports/20261120T120000Z-ls-7.json",
        "exports/20261120T120000Z-ls-7-2.json",
    ]
    assert snapshot_keys(storage, 1) == ["exports/20261120T120000Z-ls-1.json"]
    assert snapshot_keys(storage, 2) == []


def write_batch(storage: LocalStorage, posts: list[Post], predictions: list[Prediction]) -> None:
    storage.write_lines("posts/b.jsonl", [json.dumps(p.to_dict()) for p in posts])
    storage.write_lines("predictions/b.jsonl", [json.dumps(p.to_dict()) for p in predictions])


def test_posts_and_predictions_that_disagree_write_no_import_file(tmp_path: Path) -> None:
    # Given three posts but predictions for two of them only
    storage = LocalStorage(tmp_path)
    items = [Post(id=f"p{i}", text=f"post {i}") for i in range(3)]
    write_batch(storage, items, [Prediction(p.id, (), "m@1") for p in items[:2]])
    # When the import file is written / then the error names the predictions and the post
    with pytest.raises(DataError, match="differ in count") as caught:
        write_import_file(storage, "posts/b.jsonl", "predictions/b.jsonl", "t/x.json", LABELS)
    assert "predictions/b.jsonl" in str(caught.value) and "'p2'" in str(caught.value)
    # and no half-written file is left behind
    assert not storage.exists("t/x.json")


def test_read_pairs_refuses_a_prediction_of_another_post(tmp_path: Path) -> None:
    # Given predictions written in another order than the posts
    storage = LocalStorage(tmp_path)
    items = [Post(id="a", text="post a"), Post(id="b", text="post b")]
    write_batch(storage, items, [Prediction("b", (), "m@1"), Prediction("a", (), "m@1")])
    # When read in step / then the first post whose prediction is another's is named
    with pytest.raises(DataError, match="prediction is for post 'b'") as caught:
        list(read_pairs(storage, "posts/b.jsonl", "predictions/b.jsonl"))
    assert caught.value.record_id == "a"
