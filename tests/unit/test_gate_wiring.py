"""The gate's wiring into train-ner: settings -> policy, the canary set in storage, the
gold split with its recent slice, the result and the MLflow metric names."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from flows.train_ner import gate_policy, gate_result
from ner import canary, datasets, layout
from ner.evaluation import evaluate
from ner.gate import GatePolicy, ModelScores, decide_promotion
from ner.registry import set_metrics
from ner.settings import load_settings
from ner.storage import LocalStorage
from ner.types import Annotation, Span
from tests.support.gate_data import canary as canary_scores
from tests.support.gate_data import gold_win


def annotation(post_id: str) -> Annotation:
    return Annotation(post_id, "Fenty gloss", (Span(0, 5, "BRAND", "Fenty"),))


def post(post_id: str, created_at: str | None, source: str = "x") -> dict[str, object]:
    return {"id": post_id, "text": "Fenty gloss", "created_at": created_at, "source": source}


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage")


def test_policy_defaults_are_the_gate_policy_defaults() -> None:
    policy = gate_policy(load_settings({"threshold": 0.6}))
    reference = GatePolicy(threshold=0.6)
    assert policy.bootstrap_level == reference.bootstrap_level
    assert policy.bootstrap_resamples == reference.bootstrap_resamples
    assert policy.label_regression_margin == reference.label_regression_margin
    assert policy.canary_margin == reference.canary_margin
    assert policy.threshold == 0.6


def test_policy_follows_the_settings() -> None:
    policy = gate_policy(
        load_settings(
            gate_bootstrap_level=0.9,
            gate_bootstrap_resamples=200,
            gate_label_regression_margin=0.1,
            gate_canary_margin=0.03,
            promotion_margin=0.01,
            seed=3,
        )
    )
    assert (policy.bootstrap_level, policy.bootstrap_resamples) == (0.9, 200)
    assert (policy.label_regression_margin, policy.canary_margin) == (0.1, 0.03)
    assert (policy.promotion_margin, policy.bootstrap_seed) == (0.01, 3)


def test_a_canary_refusal_reaches_the_result_with_rule_and_numbers() -> None:
    mine_gold, theirs_gold = gold_win()
    decision = decide_promotion(
        ModelScores(mine_gold, canary_scores(6)),
        ModelScores(theirs_gold, canary_scores(10)),
        GatePolicy(threshold=0.5),
    )
    result = gate_result(decision)
    assert not result.promote and result.outcome == "refused"
    assert result.refused_by == ["canary"]
    verdict = next(v for v in result.verdicts if v.rule == "canary")
    assert verdict.numbers["champion_f1"] == 1.0
    assert verdict.numbers["challenger_f1"] == pytest.approx(0.75)
    assert result.reason.startswith("refused by canary: canary F1 1.0000 -> 0.7500")


def test_metrics_are_named_by_set_then_label() -> None:
    gold = {"a": (Span(0, 5, "BRAND", "Fenty"),)}
    report = evaluate(gold, gold, ["BRAND"])
    names = set_metrics(report, "canary")
    assert names["canary.f1"] == 1.0 and names["canary.BRAND.f1"] == 1.0
    assert names["canary.BRAND.support"] == 1.0 and "canary.BRAND_f1" not in names
    assert all(name.startswith("canary.") for name in names)


def test_post_stamps_join_dates_and_sources_from_the_stored_batches(
    storage: LocalStorage,
) -> None:
    rows = [post("a", "2026-11-20T00:00:00Z"), post("b", "not a date", "forum"), post("c", None)]
    storage.write_lines(layout.posts_batch("s1"), (json.dumps(r) for r in rows))
    stamps = canary.post_stamps(storage, ["a", "b", "zz"])
    assert set(stamps) == {"a", "b"}
    assert stamps["a"].created_at is not None and stamps["a"].source == "x"
    assert stamps["b"].created_at is None and stamps["b"].source == "forum"
    # and a forgotten post has none (read from the index of fetched posts, which keeps it)
    from ner import forget

    forget.record(storage, ["a"], by="ops", reason="deleted on X", stamp="f1")
    assert set(canary.post_stamps(storage, ["a", "b"])) == {"b"}


def test_no_stamped_post_freezes_an_empty_canary_set_that_says_why(
    storage: LocalStorage,
) -> None:
    holdout = canary.plan_holdout({}, window=timedelta(days=7), fraction=1.0, recent_fraction=0)
    assert holdout is None
    frozen = canary.freeze_canary_set(storage, "g1", [annotation("a")], None, n_labelled=1)
    loaded = canary.load_canary_set(storage, "g1")
    assert loaded is not None and loaded[0] == frozen and loaded[1] == []
    assert frozen.post_ids == ()
    assert "none of the 1 posts labelled when the gold set froze" in frozen.note
    assert canary.load_canary_set(storage, "other") is None


def test_an_empty_canary_set_of_mostly_undated_posts_says_they_have_no_date(
    storage: LocalStorage,
) -> None:
    # Given 2 stored posts of this week, and 4 labelled posts apply never stored (an export
    # copied in: a trial read only "no post is from an earlier window or another source")
    rows = [post(f"n{i}", "2026-11-21T00:00:00Z") for i in range(2)]
    storage.write_lines(layout.posts_batch("s1"), (json.dumps(r) for r in rows))
    ids = ["n0", "n1", "e0", "e1", "e2", "e3"]
    stamps = canary.post_stamps(storage, ids)
    holdout = canary.plan_holdout(stamps, window=timedelta(days=7), fraction=1.0, recent_fraction=0)
    assert holdout is not None
    # When the canary set is frozen, then it is empty and its note names the undated posts
    frozen = canary.freeze_canary_set(
        storage, "g1", [annotation(i) for i in ids], holdout, n_labelled=len(ids)
    )
    assert frozen.post_ids == () and frozen.n_undated == 4
    assert frozen.note == (
        "no labelled post is from an earlier window or another source (4 of the 6 labelled "
        "posts have no stored date: a post's date and source come from the posts apply "
        "stored, not from the export)"
    )


def test_the_canary_set_is_frozen_beside_the_gold_set_and_never_trained_on(
    storage: LocalStorage,
) -> None:
    # Given 10 posts of this week, 4 of August and 2 of another source
    rows = [post(f"n{i}", f"2026-11-2{i % 3}T00:00:00Z") for i in range(10)]
    rows += [post(f"o{i}", "2026-08-01T00:00:00Z") for i in range(4)]
    rows += [post(f"f{i}", "2026-11-21T00:00:00Z", "forum") for i in range(2)]
    ids = [str(r["id"]) for r in rows]
    storage.write_lines(layout.posts_batch("s1"), (json.dumps(r) for r in rows))
    annotations = [annotation(i) for i in ids]
    stamps = canary.post_stamps(storage, ids)
    # When the holdout is planned (every off-window post a canary) and the splits frozen
    holdout = canary.plan_holdout(
        stamps, window=timedelta(days=7), fraction=1.0, recent_fraction=0.2
    )
    assert holdout is not None
    splits = datasets.prepare_splits(
        storage,
        annotations,
        gold_fraction=0.3,
        train_key="annotations/s1.train.jsonl",
        recent=set(holdout.recent),
        held_out=set(holdout.canary),
    )
    frozen = canary.freeze_canary_set(
        storage, splits.gold_name, annotations, holdout, n_labelled=len(annotations)
    )
    # Then the August posts are the canary set (the forum posts share the week's window
    # and become a home source), the newest posts are gold, and neither is trained on
    assert set(frozen.post_ids) == {"o0", "o1", "o2", "o3"}
    assert frozen.n_earlier_window == 4 and frozen.n_other_source == 0
    gold = datasets.load_gold_set(storage)
    assert gold is not None
    assert set(holdout.recent) <= set(gold[0].post_ids)
    assert not set(frozen.post_ids) & set(gold[0].post_ids)
    pool = {a.post_id for a in datasets.read_annotations(storage, splits.train_key)}
    assert pool and not pool & set(frozen.post_ids) and not pool & set(gold[0].post_ids)
    # And a later round keeps new August posts out of training by the frozen rule
    late = canary.PostStamp("o9", stamps["o0"].created_at, "x")
    loaded = canary.load_canary_set(storage, splits.gold_name)
    assert loaded is not None and loaded[0].rule is not None
    assert "o9" in loaded[0].held_out({"o9": late})
    assert storage.exists(layout.canary_set_annotations(splits.gold_name))


def test_the_canary_set_outlives_gold_set_revisions(storage: LocalStorage) -> None:
    # Given a gold set and its canary set (a trial saw the canary set lost, then trained on,
    # after labels were deleted in Label Studio and the gold set was revised)
    gold = [annotation(f"g{i}") for i in range(4)]
    frozen = datasets.freeze_gold_set(storage, gold, gold_fraction=1.0, name="g1")
    rule = canary.CanaryRule.freeze([canary.PostStamp("c0", None, "x")], fraction=1.0)
    holdout = canary.HoldoutSplit(rule, ("c0", "c1"), (), (), (), 2, 0)
    chosen = [annotation("c0"), annotation("c1")]
    kept = canary.freeze_canary_set(storage, frozen.name, chosen, holdout, n_labelled=6)
    # When a gold post is withdrawn, twice (revisions g1-r2, then g1-r3)
    first = datasets.drop_from_gold_set(storage, ["g0"])
    second = datasets.drop_from_gold_set(storage, ["g1"])
    assert first is not None and second is not None and second.name == "g1-r3"
    # Then each revision finds the canary set frozen with the first version, unchanged
    for name in (first.name, second.name):
        found = canary.load_canary_set(storage, name)
        assert found is not None and found[0] == kept
        assert [a.post_id for a in found[1]] == ["c0", "c1"]
    # And a gold set frozen without one (and never revised) still has none
    assert canary.load_canary_set(storage, "other") is None
