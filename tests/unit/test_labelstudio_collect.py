"""Collecting snapshots: deletions reconciled with the live set, agreement policies, and
withdrawn posts leaving the frozen gold set (the real server: test_labelstudio_deletions.py)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from ner import canary, layout
from ner.agreement import AgreementPolicy, Outcome
from ner.datasets import (
    drop_from_gold_set,
    freeze_gold_set,
    gold_set_history,
    load_gold_set,
    prepare_splits,
    read_annotations,
)
from ner.errors import DataError, GoldSetError
from ner.labelstudio.collect import collect_annotations, report_line
from ner.labelstudio.liveset import LiveSet, load_live_set, reconcile, save_live_set
from ner.storage import Storage, open_storage
from ner.types import Annotation
from tests.support.ls_json import result, span, task

LABELS = ("BRAND",)
PROJECT = 5
TEXT = "Glossier and Fenty Beauty at Sephora"


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return open_storage(str(tmp_path), "dev")


def res(needle: str) -> dict[str, Any]:
    sp = span(TEXT, needle)
    return result(sp.start, sp.end, sp.text)


def annotation(ident: int, needles: list[str], when: str, who: int) -> dict[str, Any]:
    results = [res(n) for n in needles]
    return {"id": ident, "result": results, "completed_by": who, "updated_at": when}


def two_annotator_task(task_id: int, post_id: str, first: list[str], second: list[str]) -> Any:
    raw = task(task_id, TEXT, [], post_id=post_id)
    raw["annotations"] = [
        annotation(task_id * 10, first, "2026-11-20T10:00:00Z", 1),
        annotation(task_id * 10 + 1, second, "2026-11-20T11:00:00Z", 2),
    ]
    return raw


def write_snapshot(storage: Storage, stamp: str, tasks: list[Any]) -> str:
    key = layout.export_snapshot(stamp, PROJECT)
    storage.write_json(key, tasks)
    return key


def collect(storage: Storage, keys: list[str], **kwargs: Any) -> Any:
    return collect_annotations(
        storage, keys, LABELS, out_key=layout.pulled_annotations("run"), **kwargs
    )


def pulled(storage: Storage) -> dict[str, Annotation]:
    found = read_annotations(storage, layout.pulled_annotations("run"))
    return {a.post_id: a for a in found}


# --------------------------------------------------------------------------- reconcile


def live_set_of(tasks: dict[int, list[int]]) -> LiveSet:
    return LiveSet(
        project_id=PROJECT, taken_at="now", tasks={k: frozenset(v) for k, v in tasks.items()}
    )


def test_reconcile_drops_deleted_tasks_and_annotations_and_keeps_unknown_shapes() -> None:
    tasks = [
        two_annotator_task(1, "a", ["Glossier"], ["Sephora"]),
        task(2, TEXT, [res("Glossier")], post_id="b"),
        {"id": "x", "annotations": []},  # not an integer id: cannot be checked, kept
        "not a task",
    ]
    live = live_set_of({1: [10]})
    outcome = reconcile(tasks, live)
    assert outcome.deleted_task_ids == [2] and outcome.deleted_annotation_ids == [11, 20]
    assert [t if isinstance(t, str) else t["id"] for t in outcome.kept] == [1, "x", "not a task"]
    assert [a["id"] for a in outcome.kept[0]["annotations"]] == [10]
    assert [(t["id"], [a["id"] for a in t["annotations"]]) for t in outcome.removed] == [
        (1, [11]),
        (2, [20]),
    ]


def test_live_set_round_trips_and_a_bad_one_is_named(storage: Storage) -> None:
    save_live_set(storage, PROJECT, {3: [31, 30], 4: []})
    live = load_live_set(storage, PROJECT)
    assert live is not None and live.tasks == {3: frozenset({30, 31}), 4: frozenset()}
    assert load_live_set(storage, PROJECT + 1) is None
    storage.write_json(layout.live_set(PROJECT), {"project_id": "x"})
    with pytest.raises(DataError, match=r"livesets/ls-5\.json"):
        load_live_set(storage, PROJECT)


# --------------------------------------------------------------------------- deletions


def test_deleted_annotation_and_task_leave_the_pool_and_the_older_label_comes_back(
    storage: Storage,
) -> None:
    # given two snapshots: task 1 labelled twice (latest: Sephora), task 2 once, task 3 once
    first = write_snapshot(storage, "s1", [task(2, TEXT, [res("Fenty Beauty")], post_id="b")])
    second = write_snapshot(
        storage,
        "s2",
        [
            two_annotator_task(1, "a", ["Glossier"], ["Sephora"]),
            task(3, TEXT, [res("Glossier")], post_id="c"),
        ],
    )
    save_live_set(storage, PROJECT, {1: [10, 11], 2: [20], 3: [30]})
    before = collect(storage, [first, second])
    assert before.n_annotations == 3 and before.n_deleted_annotations == 0
    assert [s.text for s in pulled(storage)["a"].spans] == ["Sephora"]
    # when annotation 11 and task 2 are deleted in Label Studio, and annotation 30 too
    save_live_set(storage, PROJECT, {1: [10], 3: []})
    after = collect(storage, [first, second])
    # then task 2's post and annotation 30's post are gone; post a falls back to annotation 10
    assert after.n_annotations == 1
    assert after.n_deleted_tasks == 1 and after.n_deleted_annotations == 3
    assert [s.text for s in pulled(storage)["a"].spans] == ["Glossier"]
    assert after.withdrawn_post_ids == ["b", "c"]
    assert after.dataset_hash != before.dataset_hash
    # and a deleted label read in two snapshots counts once
    third = write_snapshot(storage, "s3", [task(3, TEXT, [res("Glossier")], post_id="c")])
    assert collect(storage, [first, second, third]).n_deleted_annotations == 3


def test_snapshots_without_a_live_set_are_read_as_they_are(storage: Storage) -> None:
    key = write_snapshot(storage, "s1", [task(2, TEXT, [res("Glossier")], post_id="b")])
    replay = layout.replay_export("s1")
    storage.write_json(replay, [task(9, TEXT, [res("Sephora")], post_id="z")])
    report = collect(storage, [key, replay])
    assert report.n_annotations == 2 and report.withdrawn_post_ids == []
    save_live_set(storage, PROJECT, {})
    report = collect(storage, [key, replay])  # the replay export belongs to no project
    assert sorted(pulled(storage)) == ["z"] and report.withdrawn_post_ids == ["b"]


# --------------------------------------------------------------------------- agreement


@pytest.mark.parametrize(
    ("policy", "spans", "outcome"),
    [
        (AgreementPolicy.LATEST, ["Glossier", "Sephora"], Outcome.KEPT_LATEST),
        # (one of two on Fenty Beauty, and on Sephora: a tie, held; a trial saw a tie trained
        # as "no brand")
        (AgreementPolicy.MAJORITY, None, Outcome.HELD),
        (AgreementPolicy.REVIEW, None, Outcome.HELD),
    ],
)
def test_policies_on_two_disagreeing_annotators(
    storage: Storage, policy: AgreementPolicy, spans: list[str] | None, outcome: Outcome
) -> None:
    # given task 1 where annotators agree on Glossier only (F1 2*1/(2+2) = 0.5), task 2 agreed
    key = write_snapshot(
        storage,
        "s1",
        [
            two_annotator_task(1, "a", ["Glossier", "Fenty Beauty"], ["Glossier", "Sephora"]),
            two_annotator_task(2, "b", ["Sephora"], ["Sephora"]),
        ],
    )
    report = collect(storage, [key], policy=policy, threshold=0.8)
    scores = {a.post_id: (a.score, a.outcome) for a in report.agreement}
    assert scores["a"] == (pytest.approx(0.5), outcome)
    assert scores["b"][0] == 1.0
    labels = pulled(storage)
    assert [s.text for s in labels["b"].spans] == ["Sephora"]
    if spans is None:
        assert "a" not in labels and report.held_post_ids == ["a"]
        review = storage.read_json(layout.review_report(layout.pulled_annotations("run")))
        assert review == [
            {
                "post_id": "a",
                "task_id": 1,
                "annotators": ["1", "2"],
                "score": 0.5,
                "outcome": "held_for_review",
                # what each annotator chose, so a reviewer sees the difference here
                "spans": {
                    "1": ["[0, 8) 'Glossier' BRAND", "[13, 25) 'Fenty Beauty' BRAND"],
                    "2": ["[0, 8) 'Glossier' BRAND", "[29, 36) 'Sephora' BRAND"],
                },
            }
        ]
        assert report.withdrawn_post_ids == []  # held is not withdrawn
    else:
        assert [s.text for s in labels["a"].spans] == spans
        assert report.held_post_ids == [] and report.review_key is None
        assert report.rejected_key is None  # nothing refused, repaired nor superseded
    json.dumps(report.model_dump(mode="json"))  # the flow returns it as JSON


def test_a_post_the_last_pull_held_for_review_is_named_when_released(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from flows.train_ner import Pulled, _say_disagreements

    # Given a pull that held posts a and c (their two annotators disagree)
    held = [
        two_annotator_task(1, "a", ["Glossier", "Fenty Beauty"], ["Glossier", "Sephora"]),
        two_annotator_task(3, "c", ["Glossier"], ["Sephora"]),
    ]
    first = write_snapshot(storage, "s1", held)
    kwargs: dict[str, Any] = {"policy": AgreementPolicy.REVIEW, "threshold": 0.8}
    out = [layout.pulled_annotations(stamp) for stamp in ("20261201T000000Z", "20261202T000000Z")]
    collect_annotations(storage, [first], LABELS, out_key=out[0], **kwargs)
    # When a's second annotator edits the label to agree, and the next pull runs
    agreed = two_annotator_task(1, "a", ["Glossier", "Sephora"], ["Glossier", "Sephora"])
    second = write_snapshot(storage, "s2", [agreed, held[1]])
    report = collect_annotations(storage, [second], LABELS, out_key=out[1], **kwargs)
    # Then a is reported as released (a trial saw only the count drop), c still held
    assert (report.held_post_ids, report.released_post_ids) == (["c"], ["a"])

    # and train-ner names it
    def released_lines(pulled: Any) -> set[str]:
        """What train-ner says of ``pulled``'s released posts (a set: where Prefect's
        set-up lets the record propagate, caplog sees it twice)."""
        caplog.clear()
        logger = logging.getLogger("flows.context")  # Prefect's set-up may stop propagation
        logger.addHandler(caplog.handler)
        try:
            with caplog.at_level(logging.INFO, logger="flows.context"):
                _say_disagreements(Pulled.model_validate(pulled.model_dump(mode="json")))
        finally:
            logger.removeHandler(caplog.handler)
        return {r.getMessage() for r in caplog.records if "released" in r.getMessage()}

    assert released_lines(report) == {
        "1 post held for review by the last pull released (their annotations now agree, or "
        "one was edited or deleted): a"
    }
    # And when the next pull runs under another policy, c is released though its
    # annotators still disagree, and said so (a trial read "now agree" after a policy change)
    latest = collect_annotations(
        storage, [second], LABELS, out_key=layout.pulled_annotations("20261203T000000Z")
    )
    assert latest.released_post_ids == ["c"]
    assert released_lines(latest) == {
        "1 post held for review by the last pull released by this run's agreement settings "
        "(NER_AGREEMENT_POLICY=latest), though their annotators still disagree: c"
    }


def test_an_annotator_who_saved_twice_votes_once(storage: Storage) -> None:
    # given a trial's task: annotator 1 saved "Glossier Sephora" twice, annotator 2 "Glossier"
    raw = two_annotator_task(1, "a", ["Glossier", "Sephora"], ["Glossier"])
    raw["annotations"].insert(0, annotation(9, ["Glossier", "Sephora"], "2026-11-20T09:00:00Z", 1))
    key = write_snapshot(storage, "s1", [raw])
    # when pulled under majority
    report = collect(storage, [key], policy=AgreementPolicy.MAJORITY)
    # then two people voted, not three: Sephora (1 of 2) is a tie, which holds the post
    # (counted three times, 2 of 3 would have kept it)
    (agreement,) = report.agreement
    assert sorted(agreement.annotators) == ["1", "2"]
    assert agreement.outcome is Outcome.HELD and "a" not in pulled(storage)


def test_agreement_follows_the_latest_version_of_a_task(storage: Storage) -> None:
    # a task exported with two annotations, then (after one was deleted) with one
    first = write_snapshot(storage, "s1", [two_annotator_task(1, "a", ["Glossier"], ["Sephora"])])
    later = task(1, TEXT, [res("Glossier")], post_id="a")
    second = write_snapshot(storage, "s2", [later])
    report = collect(storage, [first, second], policy=AgreementPolicy.REVIEW)
    assert report.agreement == [] and report.n_annotations == 1


# --------------------------------------------------------------------------- gold set


def gold_annotations() -> list[Annotation]:
    return [Annotation(f"g{i}", TEXT, (span(TEXT, "Glossier"),)) for i in range(4)]


def test_withdrawn_posts_leave_the_gold_set_as_a_new_version(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    frozen = freeze_gold_set(storage, gold_annotations(), gold_fraction=1.0, name="gold-x")
    assert drop_from_gold_set(storage, ["not-gold"]) is None
    with caplog.at_level("WARNING", logger="ner.datasets"):
        revised = drop_from_gold_set(storage, ["g1", "g3", "other"])
    # (the line names the posts, as a relabel's does: a trial saw only their number)
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith(
            "gold set gold-x: 2 withdrawn posts dropped (g1, g3) -> gold-x-r2 (2 posts, hash "
        )
    )
    assert revised is not None and revised.name == "gold-x-r2"
    assert revised.post_ids == ("g0", "g2") and revised.hash != frozen.hash
    loaded = load_gold_set(storage)
    assert loaded is not None and loaded[0].name == "gold-x-r2"
    record = storage.read_json(layout.gold_set("gold-x-r2"))
    assert record["revised_from"] == "gold-x" and record["dropped_post_ids"] == ["g1", "g3"]
    again = drop_from_gold_set(storage, ["g2"])
    assert again is not None and again.name == "gold-x-r3"
    assert storage.exists(layout.gold_set("gold-x"))  # history stays
    with pytest.raises(GoldSetError, match="all 1 posts were withdrawn"):
        drop_from_gold_set(storage, ["g0"])


def test_withdrawn_canary_posts_leave_the_canary_set_and_stay_out_of_training(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a gold set and, frozen beside it, a canary set of four posts
    gold = freeze_gold_set(storage, gold_annotations(), gold_fraction=1.0, name="gold-c")
    posts = [Annotation(f"c{i}", TEXT, (span(TEXT, "Sephora"),)) for i in range(4)]
    stamps = [canary.PostStamp(a.post_id, None, "jsonl") for a in posts]
    rule = canary.CanaryRule.freeze(stamps, window=timedelta(days=7), home_sources=["x"])
    holdout = canary.HoldoutSplit(rule, tuple(a.post_id for a in posts), (), (), (), 0, 4)
    frozen = canary.freeze_canary_set(storage, "gold-c", posts, holdout, n_labelled=8)
    assert canary.drop_from_canary_set(storage, ["g1", "other"]) is None  # none of its posts
    # When two of its posts are withdrawn (every label deleted in Label Studio)
    with caplog.at_level("WARNING", logger="ner.canary"):
        revised = canary.drop_from_canary_set(storage, ["c1", "c3", "other"])
    # Then the canary set of a new gold set version holds the two others, re-hashed
    assert revised is not None
    smaller, kept = revised
    assert (smaller.gold_name, smaller.post_ids) == ("gold-c-r2", ("c0", "c2"))
    assert smaller.hash != frozen.hash and [a.post_id for a in kept] == ["c0", "c2"]
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith(
            "canary set of gold set gold-c: 2 withdrawn posts dropped (c1, c3) -> canary set of "
            "gold-c-r2 (2 posts, hash "
        )
    )
    # And the gold set's new version has the same posts and hash, and is in force
    loaded = load_gold_set(storage)
    assert loaded is not None and loaded[0].name == "gold-c-r2" and loaded[0].hash == gold.hash
    record = storage.read_json(layout.gold_set("gold-c-r2"))
    assert (record["revised_from"], record["canary_dropped_post_ids"]) == ("gold-c", ["c1", "c3"])
    # And every later reader finds the smaller set, which still never trains on c1 or c3
    again = canary.load_canary_set(storage, "gold-c-r2")
    assert again is not None and again[0] == smaller and smaller.revised_from == "gold-c"
    assert smaller.held_out({}) == {"c0", "c1", "c2", "c3"}
    # And a gold set revised this round (no canary set of its own yet) takes it as it is
    drop_from_gold_set(storage, ["g0"])
    last = canary.drop_from_canary_set(storage, ["c0"])
    assert last is not None and last[0].gold_name == "gold-c-r3" and last[0].post_ids == ("c2",)
    assert last[0].dropped == ("c0", "c1", "c3")
    # And when the last one goes, the set is empty and says why
    empty = canary.drop_from_canary_set(storage, ["c2"])
    assert empty is not None and empty[0].post_ids == () and "withdrawn" in empty[0].note
    # And the gold set's history says what each version changed: a canary-only revision has
    # the same posts and hash as the one it revises, and read as a copy of it (trial BO)
    assert [(e.name, e.n_posts, e.origin) for e in gold_set_history(storage)] == [
        ("gold-c", 4, ""),
        ("gold-c-r2", 4, "revises gold-c: 2 withdrawn from its canary set"),
        ("gold-c-r3", 3, "revises gold-c-r2: 1 withdrawn"),
        ("gold-c-r4", 3, "revises gold-c-r3: 1 withdrawn from its canary set"),
    ]


def test_prepare_splits_drops_withdrawn_gold_posts(storage: Storage) -> None:
    freeze_gold_set(storage, gold_annotations(), gold_fraction=1.0, name="gold-y")
    summary = prepare_splits(
        storage, gold_annotations()[:3], 1.0, layout.training_pool("r"), withdrawn=["g3"]
    )
    assert summary.n_gold == 3 and summary.gold_revised_from == "gold-y"
    summary = prepare_splits(
        storage, gold_annotations()[:3], 1.0, layout.training_pool("r"), withdrawn=["g3"]
    )
    assert summary.n_gold == 3 and summary.gold_revised_from is None


def test_a_gold_post_relabelled_after_the_freeze_takes_its_new_label(storage: Storage) -> None:
    # Given a gold set frozen from labels saved on 2026-11-20 (a trial later added a span to
    # one of them in Label Studio and every model kept being scored on the old label)
    def label(post_id: str, needles: list[str], when: str, text: str = TEXT) -> Annotation:
        spans = tuple(span(text, n) for n in needles)
        return Annotation(post_id, text, spans, updated_at=when)

    old = "2026-11-20T10:00:00Z"
    frozen = [label(f"g{i}", ["Glossier"], old) for i in range(3)]
    first = freeze_gold_set(storage, frozen, gold_fraction=1.0, name="gold-z")
    # When the pull brings g1 relabelled later, g2 relabelled with an older stamp, and g0
    # with another text under its id (a reused id), each with other spans
    pulled = [
        label("g0", ["Sephora"], "2026-11-22T10:00:00Z", text=TEXT + " again"),
        label("g1", ["Glossier", "Sephora"], "2026-11-21T09:00:00Z"),
        label("g2", ["Sephora"], "2026-11-19T10:00:00Z"),
    ]
    summary = prepare_splits(storage, pulled, 1.0, layout.training_pool("r"))
    # Then a new version holds g1's new label, the others as frozen, and says which changed
    assert summary.gold_revised_from == "gold-z" and summary.gold_name == "gold-z-r2"
    assert summary.gold_hash != first.hash
    loaded = load_gold_set(storage)
    assert loaded is not None
    spans = {a.post_id: [s.text for s in a.spans] for a in loaded[1]}
    assert spans == {"g0": ["Glossier"], "g1": ["Glossier", "Sephora"], "g2": ["Glossier"]}
    assert storage.read_json(layout.gold_set("gold-z-r2"))["corrected_post_ids"] == ["g1"]
    # And the same pull again changes nothing
    again = prepare_splits(storage, pulled, 1.0, layout.training_pool("r"))
    assert again.gold_revised_from is None and again.gold_name == "gold-z-r2"


def test_a_gold_post_whose_frozen_annotation_was_deleted_takes_the_label_it_kept(
    storage: Storage,
) -> None:
    # Given a task labelled by two annotators, the later one's label (no brand) frozen in
    # the gold set, then that annotation deleted in Label Studio (a trial's gold set kept
    # scoring models on the deleted label)
    key = write_snapshot(storage, "s1", [two_annotator_task(4, "g1", ["Glossier"], [])])
    freeze_gold_set(storage, [Annotation("g1", TEXT, (), updated_at="2026-11-20T11:00:00Z")],
                    gold_fraction=1.0, name="gold-d")  # fmt: skip
    save_live_set(storage, PROJECT, {4: [40]}, snapshot=key)
    # When pulled
    report = collect(storage, [key])
    # Then the post fell back to the first annotator's label, and says so
    assert report.fallen_back_post_ids == ["g1"] and report.withdrawn_post_ids == []
    kept = pulled(storage)["g1"]
    assert [s.text for s in kept.spans] == ["Glossier"]
    # And without that word, the older label is no correction: the gold set stays
    assert prepare_splits(storage, [kept], 1.0, layout.training_pool("a")).gold_revised_from is None
    # With it, the gold set takes the label the post kept, in a new version that names it
    summary = prepare_splits(
        storage, [kept], 1.0, layout.training_pool("b"), fallen_back=report.fallen_back_post_ids
    )
    assert summary.gold_revised_from == "gold-d" and summary.gold_name == "gold-d-r2"
    loaded = load_gold_set(storage)
    assert loaded is not None and [s.text for s in loaded[1][0].spans] == ["Glossier"]
    record = storage.read_json(layout.gold_set("gold-d-r2"))
    assert record["fallen_back_post_ids"] == ["g1"] and record["corrected_post_ids"] == []
    # And the next pull, the deletion still on record, changes nothing more
    again = prepare_splits(storage, [kept], 1.0, layout.training_pool("c"), fallen_back=["g1"])
    assert again.gold_revised_from is None


def test_a_snapshot_newer_than_the_live_set_is_read_as_it_is(storage: Storage) -> None:
    # given a live set taken after snapshot s1, and a snapshot s2 written after it (a pull that
    # stopped between its export and its live set)
    first = write_snapshot(storage, "s1", [task(1, TEXT, [res("Glossier")], post_id="a")])
    save_live_set(storage, PROJECT, {}, snapshot=first)
    second = write_snapshot(storage, "s2", [task(2, TEXT, [res("Sephora")], post_id="b")])
    again = layout.export_snapshot("s1", PROJECT, attempt=2)
    storage.write_json(again, [task(3, TEXT, [res("Sephora")], post_id="c")])
    # then s1 is reconciled (task 1 is gone) but the labels of the later snapshots stay
    report = collect(storage, [first, again, second])
    assert sorted(pulled(storage)) == ["b", "c"]
    assert report.n_deleted_tasks == 1 and report.withdrawn_post_ids == ["a"]


def test_rejected_counts_posts_not_lines_nor_replaced_annotations(storage: Storage) -> None:
    # Given a snapshot (a trial's): a post with two bad spans (three lines: two spans, then
    # the post), a post with one, a good post, and a task of that good post's id replaced by
    # a newer one (the duplicate line)
    bad_two = task(1, TEXT, [result(0, 5, "Prada"), result(6, 11, "Gucci"), res("Sephora")])
    bad_two["data"]["post_id"] = "p1"
    bad_one = task(2, TEXT, [result(0, 6, "Chanel")], post_id="p2")
    older = task(3, TEXT, [res("Glossier")], post_id="p3")
    older["annotations"][0]["updated_at"] = "2026-11-20T10:00:00Z"
    newer = task(4, TEXT, [res("Sephora")], post_id="p3")
    newer["annotations"][0]["updated_at"] = "2026-11-21T10:00:00Z"
    key = write_snapshot(storage, "s1", [bad_two, bad_one, older, newer])
    # When collected
    report = collect(storage, [key])
    # Then two posts are rejected, however many lines name them, and p3 keeps its newer label
    assert len(report.rejected) >= 4 and all("p3" not in line for line in report.rejected)
    assert report.n_rejected == 2 and report.n_superseded == 1
    # and the report names where every record is (a trial found no line giving the path)
    assert report.rejected_key == layout.rejected_report(layout.pulled_annotations("run"))
    said = storage.read_json(report.rejected_key)
    assert (said[-1]["kind"], said[-1]["post_id"]) == ("superseded", "p3")
    assert said[-1]["export"].startswith("exports/")
    assert said[-1]["reason"].startswith("task 3: duplicate")
    assert set(pulled(storage)) == {"p3"} and pulled(storage)["p3"].spans[0].text == "Sephora"


def test_a_newer_bad_annotation_is_rejected_not_superseded_by_the_older_one(
    storage: Storage,
) -> None:
    # Given week 1's pull of a post labelled well, then week 2's snapshot of the same task
    # with a newer annotation whose label the project does not have (a trial's "PERSON")
    first = write_snapshot(storage, "s1", [task(8, TEXT, [res("Glossier")], post_id="L1")])
    relabelled = task(8, TEXT, [res("Glossier")], post_id="L1")
    newer = annotation(81, [], "2026-11-21T10:00:00Z", 2)
    newer["result"] = [result(0, 8, "Glossier", "PERSON")]
    relabelled["annotations"].append(newer)
    second = write_snapshot(storage, "s2", [relabelled])
    # When both are collected
    report = collect(storage, [first, second])
    # Then the post is not trained on the labels its annotator replaced: it is rejected,
    # named with the reason, and nothing is called superseded
    assert "L1" not in pulled(storage)
    assert (report.n_rejected, report.n_superseded) == (1, 0)
    assert any("L1: task 8" in line and "PERSON" in line for line in report.rejected)
    # and a third snapshot that fixes it brings the post back, the bad one now superseded
    fixed = task(8, TEXT, [res("Sephora")], post_id="L1", updated_at="2026-11-22T10:00:00Z")
    third = write_snapshot(storage, "s3", [fixed])
    report = collect(storage, [first, second, third])
    assert pulled(storage)["L1"].spans[0].text == "Sephora"
    assert (report.n_rejected, report.n_superseded) == (0, 1)  # one post (a trial saw 2)
    said = storage.read_json(report.rejected_key)
    assert [e["kind"] for e in said] == ["superseded", "superseded"]  # the span, the post


def test_the_newest_record_of_a_post_decides_whatever_order_the_exports_are_read_in(
    storage: Storage,
) -> None:
    # Given two hand-named exports of one task, read in key order: the newer one, its label
    # fixed, sorts first ("-" before "."); the older one, with a label the project does not
    # have, second (trial BE: the fixed post was dropped)
    old = task(34, TEXT, [result(0, 8, "Glossier", "PRODUCT")], post_id="e034")
    new = task(34, TEXT, [res("Glossier")], post_id="e034", updated_at="2026-11-21T09:55:00Z")
    old["annotations"][0]["updated_at"] = "2026-11-21T09:30:00Z"
    fixed_key, old_key = "exports/project-1-export-2.json", "exports/project-1-export.json"
    storage.write_json(fixed_key, [new])
    storage.write_json(old_key, [old])
    assert sorted([old_key, fixed_key]) == [fixed_key, old_key]
    # When both are collected in that order
    report = collect(storage, [fixed_key, old_key])
    # Then the post keeps its newer label, and the older record is named as superseded
    assert pulled(storage)["e034"].spans[0].label == "BRAND"
    assert (report.n_rejected, report.n_superseded) == (0, 1)
    said = storage.read_json(report.rejected_key)
    assert {e["kind"] for e in said} == {"superseded"}
    assert all(e["export"] == old_key for e in said)
    # while the same rejected record read after an older good one still drops it
    older_good = task(34, TEXT, [res("Glossier")], post_id="e034", updated_at="2026-11-21T09:00Z")
    storage.write_json(fixed_key, [older_good])
    report = collect(storage, [fixed_key, old_key])
    assert "e034" not in pulled(storage)
    assert (report.n_rejected, report.n_superseded) == (1, 0)
    # and read before it, too: a newer rejected record keeps an older good one out whatever
    # the order the files are read in (trial BH: the newer file, rejected, sorted first)
    report = collect(storage, [old_key, fixed_key])
    assert "e034" not in pulled(storage)
    assert (report.n_rejected, report.n_superseded) == (1, 0)


def test_two_snapshots_holding_the_same_tasks_count_and_name_each_once(storage: Storage) -> None:
    # Given two exports (a trial sent the whole project twice) holding alike: a post whose
    # span is repaired (its offsets one off), a rejected post, and a post whose older task
    # is superseded by a newer one
    repaired = task(1, TEXT, [result(1, 9, "Glossier")], post_id="p1")
    bad = task(2, TEXT, [result(0, 6, "Chanel")], post_id="p2")
    older = task(3, TEXT, [res("Glossier")], post_id="p3")
    newer = task(4, TEXT, [res("Sephora")], post_id="p3", updated_at="2026-11-21T10:00:00Z")
    keys = [write_snapshot(storage, s, [repaired, bad, older, newer]) for s in ("s1", "s2")]
    # When collected
    report = collect(storage, keys)
    # Then the repair, the rejected post and the superseded record count once each
    assert (report.n_repaired, report.n_rejected, report.n_superseded) == (1, 1, 1)
    said = storage.read_json(layout.rejected_report(layout.pulled_annotations("run")))
    # and each entry names the first export and the other that holds the record alike
    assert said[-1] == {
        "kind": "superseded",
        "export": keys[0],
        "post_id": "p3",
        "reason": "task 3: duplicate post id; the annotation of task 4 "
        "(updated 2026-11-21T10:00:00Z) is more recent and is kept",
        "also_in": [keys[1]],
    }
    rejected = said[:2]  # the span, then the post it took with it
    assert all(
        (e["kind"], e["export"], e["post_id"]) == ("rejected", keys[0], "p2") for e in rejected
    )
    assert all(e["reason"].startswith("task 2: ") and e["also_in"] == [keys[1]] for e in rejected)
    assert report_line(rejected[0]).startswith(f"{keys[0]}: p2: task 2: ")
    assert report_line(rejected[0]).endswith(f"(also in {keys[1]})")
    # and the repair is named once, in the export whose record is kept
    assert report_line(said[2]) == (
        f"repaired: {keys[1]}: p1: task 1: span [1, 9) 'Glossier' -> [0, 8) 'Glossier'"
    )
    assert len(said) == 4
    assert sorted(pulled(storage)) == ["p1", "p3"]


def test_a_post_sent_twice_as_two_tasks_in_two_pulls_names_the_record_that_gives_way(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given post t4 labelled in task 4 (week 1's pull), then sent again with an edited text
    # as task 25 and labelled there (week 2's pull: only changed tasks are exported); a trial
    # saw task 25's label replace task 4's with "0 records superseded" and no warning
    first = task(4, TEXT, [res("Glossier")], post_id="t4", updated_at="2026-11-20T10:00:00Z")
    edited = TEXT + "!!"
    again = task(25, edited, [result(0, 8, "Glossier")], post_id="t4")
    again["annotations"][0]["updated_at"] = "2026-11-21T10:00:00Z"
    keys = [write_snapshot(storage, "s1", [first]), write_snapshot(storage, "s2", [again])]
    # When both are pulled
    with caplog.at_level("INFO", logger="ner.labelstudio.collect"):
        report = collect(storage, keys)
    # Then task 25's label is kept, and task 4's record is named as superseded, a warning
    # since their texts differ
    assert pulled(storage)["t4"].text == edited and report.n_superseded == 1
    said = storage.read_json(layout.rejected_report(layout.pulled_annotations("run")))
    assert said == [
        {
            "kind": "superseded",
            "export": keys[0],
            "post_id": "t4",
            "reason": "task 4: duplicate post id; the annotation of task 25 (updated "
            "2026-11-21T10:00:00Z) is more recent and is kept; their texts differ: a source "
            "reused the id, or the post was edited: check which post it is",
            "also_in": [],
        }
    ]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and ": t4: task 4: duplicate post id" in warned[0]
    # And read the other way round (the newer label in the earlier snapshot), the same
    # record gives way, named in the snapshot that holds it
    report = collect(storage, keys[::-1])
    assert pulled(storage)["t4"].text == edited and report.n_superseded == 1
    (entry,) = storage.read_json(layout.rejected_report(layout.pulled_annotations("run")))
    assert (entry["export"], entry["reason"]) == (keys[0], said[0]["reason"])


def test_train_ner_says_how_many_disagreements_the_policy_settled(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from flows.train_ner import Pulled, _say_disagreements

    # given two posts whose annotators disagree and one where they agree, under `latest`
    key = write_snapshot(
        storage,
        "s1",
        [
            two_annotator_task(1, "a", ["Glossier", "Fenty Beauty"], ["Glossier"]),
            two_annotator_task(2, "b", ["Sephora"], ["Glossier"]),
            two_annotator_task(3, "c", ["Sephora"], ["Sephora"]),
        ],
    )
    report = collect(storage, [key], policy=AgreementPolicy.LATEST)
    # when train-ner reads the pull (as JSON, as the task returns it) and reports it
    logger = logging.getLogger("flows.context")  # Prefect's set-up may stop propagation
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="flows.context"):
            _say_disagreements(Pulled.model_validate(report.model_dump(mode="json")))
            _say_disagreements(Pulled.model_validate({**report.model_dump(), "agreement": []}))
    finally:
        logger.removeHandler(caplog.handler)
    # then the two settled disagreements are said once, with the way to review them
    (said,) = {r.getMessage() for r in caplog.records if "disagree" in r.getMessage()}
    assert said.startswith("annotators disagree on 2 posts (agreement below 1, first a at 0.67)")
    assert "policy latest settled them (NER_AGREEMENT_POLICY=review holds them" in said
    # and under review, whose threshold they passed, it says so (a trial read "review
    # settled them (NER_AGREEMENT_POLICY=review holds them for a look instead)")
    caplog.clear()
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="flows.context"):
            reviewed = {**report.model_dump(mode="json"), "agreement_policy": "review"}
            _say_disagreements(Pulled.model_validate(reviewed))
    finally:
        logger.removeHandler(caplog.handler)
    (said,) = {r.getMessage() for r in caplog.records if "disagree" in r.getMessage()}
    assert said.endswith(
        "above the review threshold, their latest labels were kept (a higher "
        "NER_AGREEMENT_THRESHOLD holds them)"
    )
    # and the model card's line of the pull counts them too
    assert Pulled.model_validate(report.model_dump(mode="json")).quality_note() == (
        "3 labelled posts pulled: 0 rejected, 0 spans repaired, 0 held for review, "
        "2 with disagreeing annotators (policy latest), 0 posts whose earlier records a "
        "newer annotation superseded, 0 annotations deleted in Label Studio"
    )


def test_a_forgotten_posts_records_are_not_reported(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    from ner import forget

    # Given a forgotten post whose export comes back with a bad span and a duplicate task
    forget.record(storage, ["p1"], by="ops", reason="deleted upstream", stamp="s")
    bad = task(1, TEXT, [result(0, 5, "Prada")], post_id="p1")
    again = task(2, TEXT, [res("Glossier")], post_id="p1")
    key = write_snapshot(
        storage, "s1", [bad, again, task(3, TEXT, [result(0, 4, "Dior")], post_id="p2")]
    )
    # When collected: the post is left out, and no report names it
    with caplog.at_level("WARNING", logger="ner.labelstudio.collect"):
        report = collect(storage, [key])
    # but the run says the export holds it again, and how to remove it there
    assert (
        f"1 forgotten posts left out of the labels; {key} still hold(s) them: run "
        "`brandloop forget` with their ids again"
    ) in caplog.text
    assert pulled(storage) == {}
    assert report.n_rejected == 1  # p2's "Dior" is not in the text
    said = storage.read_json(layout.rejected_report(layout.pulled_annotations("run")))
    assert all(e["post_id"] != "p1" for e in said) and report.n_superseded == 0


def test_a_pull_names_one_by_one_only_records_the_last_pull_did_not(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given week 1's export with a bad span and a superseded task, pulled once (a trial saw
    # the first week's rejections named again at every pull, since every pull reads every
    # snapshot)
    older = task(3, TEXT, [res("Glossier")], post_id="p3")
    newer = task(4, TEXT, [res("Sephora")], post_id="p3", updated_at="2026-11-21T10:00:00Z")
    week1 = [task(1, TEXT, [result(0, 5, "Prada")], post_id="p1"), older, newer]
    keys = [write_snapshot(storage, "s1", week1)]
    out1, out2 = layout.pulled_annotations("run1"), layout.pulled_annotations("run2")
    collect_annotations(storage, keys, LABELS, out_key=out1)
    # and week 2's export holding week 1's tasks again and a new bad span
    keys.append(
        write_snapshot(storage, "s2", [*week1, task(5, TEXT, [result(0, 4, "Dior")], post_id="p5")])
    )
    # When pulled again
    caplog.clear()
    with caplog.at_level("WARNING", logger="ner.labelstudio.collect"):
        report = collect_annotations(storage, keys, LABELS, out_key=out2)
    said = [r.getMessage() for r in caplog.records]
    # Then only the new post is named, by its span and by the post; the old post's two
    # lines are one line naming the report that has them (a superseded record of the same
    # text, a label fixed or sent again, is no warning)
    named = [line for line in said if line.startswith("rejected ") or "superseded" in line]
    assert len(named) == 2 and all(line.startswith(f"rejected {keys[1]}: p5: ") for line in named)
    assert said[-1].startswith(
        "1 rejected post (2 lines) of the last pull's report (annotations/run1.rejected.json) "
        "still stand"
    )
    # and the report still holds every record, counted as before
    assert report.n_rejected == 2 and report.n_superseded == 1
    assert len(storage.read_json(layout.rejected_report(out2))) == 5


def test_a_pull_names_its_first_20_rejected_posts_with_all_their_lines_and_counts_the_rest(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given 23 posts, each with a span that is nowhere in its text (two report lines each: a
    # trial's log named 10 posts in 20 lines where the README says 20, and no "more")
    tasks = [task(i, TEXT, [result(0, 5, "Prada")], post_id=f"p{i:02d}") for i in range(23)]
    keys = [write_snapshot(storage, "s1", tasks)]
    # When pulled
    with caplog.at_level("WARNING", logger="ner.labelstudio.collect"):
        collect_annotations(storage, keys, LABELS, out_key=layout.pulled_annotations("run"))
    said = [r.getMessage() for r in caplog.records]
    # Then the first 20 posts are named, each by all its lines, and the 3 others counted
    named = [line for line in said if line.startswith("rejected ")]
    posts = {line.split(": ")[1] for line in named}
    assert posts == {f"p{i:02d}" for i in range(20)} and len(named) == 40
    assert "and 3 more rejected posts, in the report below" in said
    # and what to do, at once (trial AM: only a later pull said it)
    assert (
        "to take a rejected post back, fix its annotation in Label Studio (or its record in "
        "the export files): the next pull reads it again"
    ) in said


def test_a_report_of_lines_written_before_entries_still_counts_as_named(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a pull whose report is rewritten as the lines reports held before 2026-12-04
    week1 = [task(1, TEXT, [result(0, 5, "Prada")], post_id="p1")]
    keys = [write_snapshot(storage, "s1", week1)]
    out1, out2 = layout.pulled_annotations("run1"), layout.pulled_annotations("run2")
    collect_annotations(storage, keys, LABELS, out_key=out1)
    old_key = layout.rejected_report(out1)
    storage.write_json(old_key, [report_line(e) for e in storage.read_json(old_key)])
    # When the same export is pulled again
    caplog.clear()
    with caplog.at_level("WARNING", logger="ner.labelstudio.collect"):
        collect_annotations(storage, keys, LABELS, out_key=out2)
    said = [r.getMessage() for r in caplog.records]
    # Then its records are not named one by one again, and the new report holds entries
    assert not any(line.startswith("rejected ") for line in said)
    assert said[-1].startswith("1 rejected post (2 lines) of the last pull's report")
    assert all(isinstance(e, dict) for e in storage.read_json(layout.rejected_report(out2)))


def test_a_superseded_record_is_a_warning_only_when_its_posts_texts_differ(
    storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given p1 sent twice with the same text (a label fixed in a new task: a trial saw its
    # old rejection warned at every pull) and p2 whose id a source reused for another text
    old = task(1, TEXT, [result(0, 5, "Prada")], post_id="p1")
    fixed = task(2, TEXT, [res("Glossier")], post_id="p1", updated_at="2026-11-21T10:00:00Z")
    first = task(3, TEXT, [res("Sephora")], post_id="p2")
    other = task(
        4,
        "Dior at Sephora",
        [result(0, 4, "Dior")],
        post_id="p2",
        updated_at="2026-11-21T10:00:00Z",
    )
    key = write_snapshot(storage, "s1", [old, fixed, first, other])
    # When pulled
    with caplog.at_level("INFO", logger="ner.labelstudio.collect"):
        report = collect(storage, [key])
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # Then only p2's record is a warning, and p1's is counted in an INFO line
    assert len(warned) == 1 and ": p2: task 3: " in warned[0] and "texts differ" in warned[0]
    said = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert "2 records superseded by a newer one of the same post" in said
    assert report.n_rejected == 0 and sorted(pulled(storage)) == ["p1", "p2"]


def test_standing_posts_are_counted_by_kind_each_once() -> None:
    from ner.labelstudio.collect import _standing_posts

    def entry(kind: str, post_id: str) -> dict[str, object]:
        return {"kind": kind, "export": "exports/a.json", "post_id": post_id, "reason": "r"}

    # a trial read "9 posts (17 lines) ... still stand" beside "8 posts rejected"
    entries = [entry("rejected", "p1"), entry("rejected", "p1"), entry("rejected", "p2")]
    assert _standing_posts(entries) == "2 rejected posts"
    assert _standing_posts([*entries, entry("superseded", "p3")]) == (
        "2 rejected posts and 1 post whose id holds another text"
    )
    assert _standing_posts([entry("superseded", "p3")]) == "1 post whose id holds another text"
