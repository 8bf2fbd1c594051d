"""Forgotten posts: the tombstone list, the readers that honour it, and the purge."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ner import canary, forget, layout, purge
from ner.datasets import dataset_hash, freeze_gold_set, load_gold_set
from ner.errors import ConfigError, DataError, StorageError
from ner.labelstudio.exchange import collect_annotations, read_pairs
from ner.labelstudio.quarantine import quarantine_file, quarantined_files
from ner.records import read_annotations, read_posts, read_predictions, write_records
from ner.storage import LocalStorage, Storage
from ner.types import Annotation, Post, Prediction, Span


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return LocalStorage(tmp_path / "store")


def posts(n: int) -> list[Post]:
    return [Post(id=f"p{i}", text=f"post {i} about Glossier") for i in range(n)]


def annotation(post: Post) -> Annotation:
    start = post.text.index("Glossier")
    span = Span(start, start + 8, "BRAND", "Glossier")
    return Annotation(post_id=post.id, text=post.text, spans=(span,), updated_at="2026-01-01")


def test_drop_forgotten_keeps_order_and_the_other_items() -> None:
    items = ["a", "b", "c", "d"]
    kept = list(forget.drop_forgotten(items, frozenset({"b", "d"}), lambda x: x))
    assert kept == ["a", "c"]
    assert list(forget.drop_forgotten(items, frozenset(), lambda x: x)) == items


def test_record_is_the_tombstone_and_needs_a_reason(storage: Storage) -> None:
    made = forget.record(storage, [" p2", "p1", "p2"], by="ops", reason="deleted", stamp="s1")
    assert made.post_ids == ("p1", "p2")
    assert storage.read_json(layout.forget_record("s1"))["n_posts"] == 2
    assert forget.forgotten_ids(storage) == {"p1", "p2"}
    # a retried write of the same record is a no-op; another set under that stamp is refused
    again = forget.record(storage, ["p1", "p2"], by="ops", reason="deleted", stamp="s1")
    assert again == made
    with pytest.raises(ConfigError, match="other posts"):
        forget.record(storage, ["p3"], by="ops", reason="deleted", stamp="s1")
    with pytest.raises(ConfigError, match="reason"):
        forget.record(storage, ["p3"], by="ops", reason=" ", stamp="s2")
    with pytest.raises(ConfigError, match="no post id"):
        forget.record(storage, [], by="ops", reason="x", stamp="s3")
    with pytest.raises(DataError, match="blank"):
        forget.record(storage, ["  "], by="ops", reason="x", stamp="s4")
    # a posts file read as ids (a flow called with its lines) writes no tombstone at all
    line = json.dumps({"id": "w1", "text": "Kylie Cosmetics restock tonight"})
    for record in (line, '["w1", "w2"]', "w1\nw2"):
        with pytest.raises(DataError, match="is a record"):
            forget.record(storage, ["p5", record], by="ops", reason="x", stamp="s5")
    assert not storage.exists(layout.forget_record("s5"))
    for record in ('"2094705541658948927"', "\ufeff2094678559236012465"):
        with pytest.raises(DataError, match="quoted, or holds a byte-order mark"):
            forget.record(storage, [record], by="ops", reason="x", stamp="s6")


def test_a_tombstone_set_by_mistake_is_lifted_by_a_record_of_its_own(storage: Storage) -> None:
    # Given p1 and p2 forgotten (p1 by mistake: a wrong id)
    t0 = datetime(2026, 12, 1, 10, tzinfo=UTC)
    forget.record(storage, ["p1", "p2"], by="ops", reason="deleted", stamp="s1", now=t0)
    # When p1's tombstone is lifted
    lifted = forget.lift(storage, ["p1"], "s2", by="ops", reason="wrong id")
    # Then p1 may arrive again and p2 is still forgotten; both records stay for the audit
    assert forget.forgotten_ids(storage) == {"p2"}
    assert storage.read_json(lifted.key)["lifted"] is True and lifted.status == "done"
    assert lifted.lifts == (layout.forget_record("s1"),)  # the record whose tombstone it lifts
    assert [r.stamp for r in forget.load_records(storage)] == ["s1", "s2"]
    posts = [Post(id="p1", text="Dior"), Post(id="p2", text="Fenty")]
    assert [p.id for p in forget.honour(storage, posts, lambda p: p.id)] == ["p1"]
    # And lifting an id that is not forgotten names it; forgetting p1 again forgets it
    with pytest.raises(ConfigError, match="not forgotten, so nothing to lift: p1, p9"):
        forget.lift(storage, ["p9", "p1"], "s3", by="ops", reason="x")
    forget.record(storage, ["p1"], by="ops", reason="deleted", stamp="s4")
    assert forget.forgotten_ids(storage) == {"p1", "p2"}


def test_a_damaged_record_fails_by_name(storage: Storage) -> None:
    storage.write_json(layout.forget_record("bad"), {"post_ids": "p1"})
    with pytest.raises(DataError, match=r"forgotten/bad\.json"):
        forget.forgotten_ids(storage)


def test_readers_skip_forgotten_posts_unless_asked(storage: Storage) -> None:
    batch = posts(5)
    write_records(storage, "posts/b.jsonl", batch)
    write_records(
        storage,
        "predictions/b.jsonl",
        [Prediction(post_id=p.id, spans=(), model_version="t") for p in batch],
    )
    write_records(storage, "annotations/b.jsonl", [annotation(p) for p in batch])
    forget.record(storage, ["p1", "p3"], by="ops", reason="deleted", stamp="s")
    assert [p.id for p in read_posts(storage, "posts/b.jsonl")] == ["p0", "p2", "p4"]
    assert [p.post_id for p in read_predictions(storage, "predictions/b.jsonl")] == [
        "p0",
        "p2",
        "p4",
    ]
    assert len(list(read_annotations(storage, "annotations/b.jsonl"))) == 3
    assert len(list(read_posts(storage, "posts/b.jsonl", include_forgotten=True))) == 5
    pairs = list(read_pairs(storage, "posts/b.jsonl", "predictions/b.jsonl"))
    assert [post.id for post, _ in pairs] == ["p0", "p2", "p4"]


def test_collected_annotations_leave_forgotten_posts_out(storage: Storage) -> None:
    batch = posts(4)
    export = [
        {
            "id": i,
            "data": {"text": p.text, "post_id": p.id},
            "annotations": [
                {
                    "id": 100 + i,
                    "updated_at": "2026-01-01T00:00:00Z",
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "text",
                            "type": "labels",
                            "value": {
                                "start": p.text.index("Glossier"),
                                "end": p.text.index("Glossier") + 8,
                                "text": "Glossier",
                                "labels": ["BRAND"],
                            },
                        }
                    ],
                }
            ],
        }
        for i, p in enumerate(batch)
    ]
    storage.write_json("exports/e.json", export)
    forget.record(storage, ["p0"], by="ops", reason="deleted", stamp="s")
    report = collect_annotations(storage, None, ["BRAND"], out_key="annotations/run.jsonl")
    assert report.n_annotations == 3
    ids = {
        a.post_id
        for a in read_annotations(storage, "annotations/run.jsonl", include_forgotten=True)
    }
    assert ids == {"p1", "p2", "p3"}


def test_gold_set_is_read_without_forgotten_posts_and_purged_with_a_new_hash(
    storage: Storage,
) -> None:
    gold = [annotation(p) for p in posts(6)]
    frozen = freeze_gold_set(storage, gold, gold_fraction=1.0, name="g")
    forget.record(storage, ["p2"], by="ops", reason="deleted", stamp="s")
    loaded = load_gold_set(storage)
    assert loaded is not None
    assert "p2" not in loaded[0].post_ids and len(loaded[1]) == 5
    assert loaded[0].hash == dataset_hash(loaded[1]) != frozen.hash
    # the purge rewrites it under the same name: same ids and hash as read above
    report = purge.purge_storage(storage, ["p2"])
    assert report.rewritten == {layout.gold_set_annotations("g"): 1, layout.gold_set("g"): 1}
    record = storage.read_json(layout.gold_set("g"))
    assert record["hash"] == loaded[0].hash and record["hashes_before_forget"] == [frozen.hash]
    raw = list(read_annotations(storage, layout.gold_set_annotations("g"), include_forgotten=True))
    assert [a.post_id for a in raw] == ["p0", "p1", "p3", "p4", "p5"]
    assert load_gold_set(storage) == loaded


def test_a_forgotten_canary_post_leaves_the_canary_set_readable_then_purged(
    storage: Storage,
) -> None:
    # Given a canary set of four posts frozen beside gold set "g"
    chosen = [annotation(p) for p in posts(4)]
    rule = canary.CanaryRule.freeze(
        [canary.PostStamp(a.post_id, None, "x") for a in chosen],
        window=timedelta(days=7),
        fraction=1.0,
    )
    ids = tuple(a.post_id for a in chosen)
    holdout = canary.HoldoutSplit(rule, ids, (), (), (), n_earlier_window=4, n_other_source=0)
    frozen = canary.freeze_canary_set(storage, "g", chosen, holdout, n_labelled=4)
    # When one of them is forgotten (tombstone written, storage not yet cleaned)
    forget.record(storage, ["p2"], by="ops", reason="deleted", stamp="s")
    # Then the canary set still loads (a train run must not fail), without the post
    loaded = canary.load_canary_set(storage, "g")
    assert loaded is not None
    assert loaded[0].post_ids == ("p0", "p1", "p3") and [a.post_id for a in loaded[1]] == [
        "p0",
        "p1",
        "p3",
    ]
    assert loaded[0].hash == dataset_hash(loaded[1]) != frozen.hash
    # And the purge removes it from the canary set's annotations and record, both reported
    report = purge.purge_storage(storage, ["p2"])
    assert report.rewritten == {
        layout.canary_set_annotations("g"): 1,
        layout.canary_set("g"): 1,
    }
    raw = read_annotations(storage, layout.canary_set_annotations("g"), include_forgotten=True)
    assert [a.post_id for a in raw] == ["p0", "p1", "p3"]
    record = storage.read_json(layout.canary_set("g"))
    assert record["hashes_before_forget"] == [frozen.hash] and record["n_posts"] == 3
    assert canary.load_canary_set(storage, "g") == loaded
    assert purge.purge_storage(storage, ["p2"]).rewritten == {}


def test_purge_rewrites_only_the_objects_holding_the_posts(storage: Storage) -> None:
    batch = posts(4)
    write_records(storage, "posts/a.jsonl", batch[:2])
    write_records(storage, "posts/b.jsonl", batch[2:])
    tasks = [{"data": {"text": p.text, "post_id": p.id}} for p in batch]
    storage.write_json("tasks/a.json", tasks)
    storage.write_json("tasks/a.imported.json", {"n_imported": 4})
    storage.write_json(
        "selections/a.json", {"post_ids": ["p1", "p3"], "uncertainty": {"p1": 0.5, "p3": 0.2}}
    )
    storage.write_text("exports/broken.json", "[{not json")
    untouched = (Path(storage.uri("posts/b.jsonl").removeprefix("file://"))).stat().st_mtime_ns
    report = purge.purge_storage(storage, ["p1"])
    assert report.rewritten == {"posts/a.jsonl": 1, "tasks/a.json": 1, "selections/a.json": 1}
    assert report.unreadable == ["exports/broken.json"]
    assert [p.id for p in read_posts(storage, "posts/a.jsonl", include_forgotten=True)] == ["p0"]
    assert [t["data"]["post_id"] for t in storage.read_json("tasks/a.json")] == ["p0", "p2", "p3"]
    assert storage.read_json("selections/a.json")["uncertainty"] == {"p3": 0.2}
    assert (
        Path(storage.uri("posts/b.jsonl").removeprefix("file://")).stat().st_mtime_ns == untouched
    )
    # idempotent
    assert purge.purge_storage(storage, ["p1"]).rewritten == {}


def test_purge_removes_a_task_made_by_hand_read_under_its_task_id(storage: Storage) -> None:
    # Given an export holding a task apply sent (data.post_id), one imported with data.id,
    # and one made by hand in Label Studio (task 499, read by the pull under its task id)
    export = [
        {"id": 7, "data": {"text": "post 7", "post_id": "x7"}, "annotations": []},
        {"id": 8, "data": {"text": "post 8", "id": "p8"}, "annotations": []},
        {"id": 499, "data": {"text": "hand made task: Glossier"}, "annotations": []},
    ]
    storage.write_json("exports/week1.json", export)
    # When the hand-made task's post is forgotten, then the data.id one, then task 7's id
    hand_made = purge.purge_storage(storage, ["499"])
    by_data_id = purge.purge_storage(storage, ["p8"])
    task_id = purge.purge_storage(storage, ["7"])  # its post is x7, not 7
    # Then each leaves the export as the pull reads it, and the others stay
    assert hand_made.rewritten == {"exports/week1.json": 1} == by_data_id.rewritten
    assert hand_made.held == ["499"] and task_id.rewritten == {}
    assert [t["id"] for t in storage.read_json("exports/week1.json")] == [7]


def test_purge_names_the_posts_some_object_held(storage: Storage) -> None:
    # Given p0 in a posts file, p1 only in a selection, p2 only named by a rejection report
    # (as reports read before 2026-12-04), p3 only by an import's id conflict (an entry)
    write_records(storage, "posts/a.jsonl", posts(1))
    storage.write_json("selections/a.json", {"post_ids": ["p1"], "uncertainty": {}})
    storage.write_json("posts/a.rejected.json", ["line 3 (p2): text is empty"])
    conflict = {"post_id": "p3", "reason": "not sent", "task_ids": [4]}
    storage.write_json("tasks/s.rejected.json", [conflict, {**conflict, "post_id": "p9"}])
    # When five ids are purged, one of which nothing holds
    report = purge.purge_storage(storage, ["p0", "p1", "p2", "p3", "nosuch"])
    # Then the report names the four held, not the fifth
    assert report.held == ["p0", "p1", "p2", "p3"]
    assert report.rewritten == {
        "posts/a.jsonl": 1,
        "selections/a.json": 1,
        "posts/a.rejected.json": 1,
        "tasks/s.rejected.json": 1,
    }
    assert [e["post_id"] for e in storage.read_json("tasks/s.rejected.json")] == ["p9"]
    assert purge.purge_storage(storage, ["p0"]).held == []  # held nothing any more


def test_purge_keeps_an_export_record_whose_text_utf8_cannot_store(storage: Storage) -> None:
    # Given an export holding a post with a lone surrogate (escaped in the file, as Label
    # Studio writes it; the pull rejects that record by name and keeps the rest), beside
    # the post being forgotten (a trial's forget crashed here, retried 3 times)
    bad = "bad \ud83d surrogate Glossier"
    raw = json.dumps(
        [
            {"data": {"text": bad, "post_id": "q9"}},
            {"data": {"text": "Ünïcode Glossier", "post_id": "p1"}},
            {"data": {"text": "café Nars", "post_id": "p2"}},
        ]
    )
    storage.write_text("exports/week1.json", raw)
    # When the post is forgotten
    report = purge.purge_storage(storage, ["p1"])
    # Then the export is rewritten without it, every other record kept as it was
    assert report.rewritten == {"exports/week1.json": 1}
    kept = storage.read_json("exports/week1.json")
    assert [(t["data"]["post_id"], t["data"]["text"]) for t in kept] == [
        ("q9", bad),
        ("p2", "café Nars"),
    ]
    # and a file without such a character keeps its characters unescaped
    storage.write_json("tasks/t.json", [{"data": {"text": "café", "post_id": "p3"}}])
    assert "café" in storage.read_text("tasks/t.json")


def test_a_text_that_cannot_be_encoded_is_not_retried() -> None:
    from flows.context import PERMANENT_ERRORS

    error = UnicodeEncodeError("utf-8", "\ud83d", 0, 1, "surrogates not allowed")
    assert isinstance(error, PERMANENT_ERRORS)


def test_purge_cleans_reports_and_quarantined_exports(storage: Storage) -> None:
    # Given a trial's leftovers: rejection and review reports naming the post, a JSON-MIN
    # export set aside in quarantine (flat records), and a quarantined file that is not JSON
    storage.write_json(
        "annotations/s.rejected.json",
        [
            "exports/e.json: p1: task 3: span [0, 4) 'Dior' BRAND: unknown label",
            "exports/e.json: p10: task 4: unknown label",  # another post, whose id holds p1
            "exports/e.json: p2: task 5: duplicate post id; task 6 is kept",
        ],
    )
    storage.write_json("posts/s.rejected.json", ["line 4 (p1): empty text", "line 9: not JSON"])
    storage.write_json("annotations/s.review.json", [{"post_id": "p1", "score": 0.5}])
    storage.write_json(
        "exports/min.json",
        [{"id": 1, "post_id": "p1", "text": "Dior"}, {"id": 2, "post_id": "p3", "text": "x"}],
    )
    quarantined = quarantine_file(storage, "exports/min.json", "flat records")
    storage.write_json(
        "tasks/b.rejected.json", ["p1: not sent: the project's task 7 holds this post id"]
    )
    storage.write_text("quarantine/exports/bad.json", '[{"post_id": "p1", "text": "Di')
    # When p1 is forgotten
    report = purge.purge_storage(storage, ["p1"])
    # Then each entry naming it is gone, the others stay, and the unparsable file is named
    assert report.rewritten == {
        "annotations/s.rejected.json": 1,
        "posts/s.rejected.json": 1,
        "annotations/s.review.json": 1,
        "quarantine/exports/min.json": 1,
        "tasks/b.rejected.json": 1,
    }
    assert storage.read_json("tasks/b.rejected.json") == []
    # And the quarantine record holds the rewritten file's size and hash, and the first ones
    (record,) = quarantined_files(storage)
    data = storage.read_bytes("quarantine/exports/min.json")
    assert (record.size_bytes, record.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert (record.size_bytes_as_quarantined, record.sha256_as_quarantined) == (
        quarantined.size_bytes,
        quarantined.sha256,
    )
    assert record.sha256 != quarantined.sha256 and record.purged_at
    assert [r.split(": ")[1] for r in storage.read_json("annotations/s.rejected.json")] == [
        "p10",
        "p2",
    ]
    assert storage.read_json("posts/s.rejected.json") == ["line 9: not JSON"]
    assert [r["post_id"] for r in storage.read_json("quarantine/exports/min.json")] == ["p3"]
    assert report.unreadable == ["quarantine/exports/bad.json"]
    assert purge.purge_storage(storage, ["p1"]).rewritten == {}


def test_a_refetched_forgotten_post_is_dropped_from_the_new_batch(storage: Storage) -> None:
    write_records(storage, "posts/new.jsonl", posts(3))
    assert purge.drop_forgotten_posts(storage, "posts/new.jsonl") == 0
    forget.record(storage, ["p0"], by="ops", reason="deleted", stamp="s")
    assert purge.drop_forgotten_posts(storage, "posts/new.jsonl") == 1
    lines = storage.read_text("posts/new.jsonl").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["p1", "p2"]


class FailsOnce(LocalStorage):
    """A local folder whose first write of ``key`` fails as a dropped connection would."""

    fail_key: str | None = None

    def write_bytes(self, key: str, data: bytes) -> str:
        if key == self.fail_key:
            self.fail_key = None
            raise StorageError(f"connection reset writing {key}")
        return super().write_bytes(key, data)


def test_a_purge_that_fails_half_way_keeps_what_it_removed_in_the_audit(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from flows.forget import purge_storage as purge_task

    # Given a post in two objects, and storage that drops the second rewrite once
    store = FailsOnce(tmp_path / "store")
    write_records(store, "posts/a.jsonl", posts(2))
    store.write_json("tasks/a.json", [{"data": {"text": "x", "post_id": "p1"}}])
    made = forget.record(store, ["p1"], by="ops", reason="deleted on X", stamp="20260101-1")
    store.fail_key = "tasks/a.json"
    ctx = SimpleNamespace(storage=store)
    # When the purge's first attempt fails after rewriting the posts
    with pytest.raises(StorageError):
        purge_task.fn(ctx, made)
    # Then the record already names the object it rewrote (a trial's audit lost it)
    assert store.read_json(made.key)["rewritten"] == {"posts/a.jsonl": 1}
    assert store.read_json(made.key)["held"] == ["p1"]
    # and the retry, which finds that object clean, reports both, and the post it held
    report = purge_task.fn(ctx, made)
    assert report.rewritten == {"posts/a.jsonl": 1, "tasks/a.json": 1}
    assert store.read_json(made.key)["rewritten"] == report.rewritten
    assert report.held == ["p1"]


def test_a_label_studio_failure_says_the_posts_are_forgotten_but_still_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    import flows.forget
    from ner.errors import LabelStudioError

    # Given Label Studio that does not answer (a trial: 3 retries, then a bare ConnectError)
    def down(ctx: object, post_ids: list[str]) -> dict[str, list[int]]:
        raise LabelStudioError("Label Studio lookup of project 'brandloop-dev' failed")

    monkeypatch.setattr(flows.forget, "delete_tasks", down)
    # When the forget flow's Label Studio step fails
    with pytest.raises(LabelStudioError) as caught:
        flows.forget._deleted_tasks(SimpleNamespace(), ["p1"], "file:///s/forgotten/1.json")
    # Then the error says what is done, what is not, and the two ways to finish
    said = str(caught.value)
    assert said.startswith("Label Studio lookup of project 'brandloop-dev' failed. The posts")
    assert "not yet removed from storage or MLflow" in said and "file:///s/forgotten/1.json" in said
    assert "run the same forget again" in said and "--no-label-studio" in said


def test_the_unmatched_line_names_the_ids_and_what_they_may_be() -> None:
    from flows.forget import _unmatched_lines

    (one,) = _unmatched_lines(["7"], unreadable=False)
    assert one.startswith("nothing held this id: '7' (not a post id: a post id is the id a")
    assert "unreadable" not in one
    (many,) = _unmatched_lines([str(i) for i in range(12)], unreadable=True)
    assert many.startswith("nothing held these 12 ids: '0', '1'")
    assert "'9' and 2 more (not post ids:" in many
    assert "or held only by the unreadable objects named above)" in many
    # and ids an earlier forget tombstoned are said to be that (a trial could not tell)
    again, unknown = _unmatched_lines(["p1", "p2", "7"], unreadable=False, earlier={"p1", "p2"})
    assert again == (
        "forgotten before, nothing held these 2 ids: 'p1', 'p2' (an earlier forget's tombstone)"
    )
    assert unknown.startswith("nothing held this id: '7' (not a post id")
