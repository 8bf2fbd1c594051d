"""The promotion gate (ner.gate): each rule on tiny data with the numbers worked out inline."""

from __future__ import annotations

import json
import random

import pytest

from ner.errors import GoldSetError
from ner.evaluation import (
    EvalReport,
    LabelScores,
    evaluate,
    predict_spans,
    score_model,
    spans_by_post,
)
from ner.gate import (
    GateDecision,
    GatePolicy,
    ModelScores,
    PostCounts,
    Rule,
    Status,
    bootstrap_f1,
    check_beats_champion,
    check_canary,
    check_confidence,
    check_label_regression,
    check_threshold,
    decide_promotion,
    paired_bootstrap,
    post_counts,
    score_spans,
)
from ner.types import Annotation, Span
from tests.support.gate_data import canary, gold_win, scored, unit_span


def label_report(rows: dict[str, tuple[int, int, int]]) -> EvalReport:
    """An evaluation report with the given per-label ``(tp, fp, fn)``."""
    per_label = tuple(LabelScores(label, *counts) for label, counts in rows.items())
    n_gold = sum(tp + fn for tp, _, fn in rows.values())
    n_pred = sum(tp + fp for tp, fp, _ in rows.values())
    return EvalReport(
        n_posts=10,
        n_gold=n_gold,
        n_pred=n_pred,
        n_ignored_posts=0,
        per_label=per_label,
        overlap_tp=0,
        posts_correct=0,
    )


# Per-post counts ---------------------------------------------------------------------------


def test_post_counts_sum_to_the_reports_counts_and_follow_its_conventions() -> None:
    # given: "a" 1 exact + 1 wrong label + 1 duplicate prediction; "b" not predicted at all
    gold = {"b": [unit_span(0), unit_span(1)], "a": [unit_span(0), unit_span(1)]}
    pred = {
        "a": [unit_span(0), unit_span(0), unit_span(1, "PRODUCT")],
        "zzz": [unit_span(3)],  # not a gold post: ignored
    }
    # when
    counts = post_counts(gold, pred)
    report = evaluate(gold, pred, ["BRAND"])
    # then: a = tp 1 (duplicate once), fp 1 (PRODUCT), fn 1; b = 2 missed; sorted by id
    assert counts == (PostCounts("a", 1, 1, 1), PostCounts("b", 0, 0, 2))
    assert sum(c.tp for c in counts) == report.tp == 1
    assert sum(c.fp for c in counts) == report.fp == 1
    assert sum(c.fn for c in counts) == report.fn == 3


def test_predicted_spans_of_a_pipeline_give_the_reports_and_per_post_counts() -> None:
    # given a rule-based pipeline that finds "Nike" as BRAND and "Glossier" as ORG
    import spacy

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [{"label": "BRAND", "pattern": "Nike"}, {"label": "ORG", "pattern": "Glossier"}]
    )
    gold = [
        Annotation("1", "I love Nike", (Span(7, 11, "BRAND", "Nike"),)),
        Annotation(
            "2",
            "Glossier and Fenty",
            (Span(0, 8, "BRAND", "Glossier"), Span(13, 18, "BRAND", "Fenty")),
        ),
    ]
    # when
    predicted = predict_spans(nlp, gold, ["BRAND"])
    scores = score_spans(spans_by_post(gold), predicted, ["BRAND"])
    # then: the ORG entity is filtered out; post 1 found, post 2 missed twice
    assert scores.posts == (PostCounts("1", 1, 0, 0), PostCounts("2", 0, 0, 2))
    assert scores.report == score_model(nlp, gold, ["BRAND"])


def test_scored_helper_builds_the_counts_it_was_asked_for() -> None:
    s = scored([(2, 1, 0), (0, 0, 3)])
    assert [(p.tp, p.fp, p.fn) for p in s.posts] == [(2, 1, 0), (0, 0, 3)]
    # pooled: tp 2, fp 1, fn 3 -> 2*2 / (2*2 + 1 + 3) = 0.5
    assert s.f1 == pytest.approx(0.5)


# Rule: threshold and beats_champion -----------------------------------------------------------


def test_threshold_refuses_below_and_passes_at_the_threshold() -> None:
    low = check_threshold(0.79, 0.8)
    assert low.status is Status.REFUSED
    assert low.numbers == {"challenger_f1": 0.79, "threshold": 0.8}
    assert "0.7900 < threshold 0.8000" in low.reason
    assert check_threshold(0.8, 0.8).status is Status.PASSED


def test_beats_champion_refuses_a_tie_and_a_win_within_the_margin() -> None:
    tie = check_beats_champion(0.9, 0.9)
    assert tie.status is Status.REFUSED
    within = check_beats_champion(0.905, 0.9, margin=0.01)
    assert within.status is Status.REFUSED
    assert within.numbers["difference"] == pytest.approx(0.005)
    assert "does not beat champion F1 0.9000 + margin 0.0100" in within.reason
    assert check_beats_champion(0.915, 0.9, margin=0.01).status is Status.PASSED


def test_a_score_read_from_a_six_place_tag_ties_with_the_same_score_afresh() -> None:
    from ner.registry import decide

    # a trial's copy scored 0.8014440433212997 afresh; its champion's tag held 0.801444
    fresh, tagged = 0.8014440433212997, 0.801444
    assert check_beats_champion(fresh, tagged).status is Status.REFUSED
    assert not decide(fresh, tagged, 0.5).promote
    assert "does not beat champion F1 0.8014" in decide(fresh, tagged, 0.5).reason
    # one span more on a gold set of a thousand still wins
    assert check_beats_champion(tagged + 1e-4, tagged).status is Status.PASSED
    assert decide(tagged + 1e-4, tagged, 0.5).promote


def test_beats_champion_does_not_apply_without_a_champion() -> None:
    verdict = check_beats_champion(0.5, None)
    assert verdict.status is Status.NOT_APPLICABLE
    assert verdict.passed


# Rule: confidence (paired bootstrap) ------------------------------------------------------------


def test_bootstrap_of_identical_posts_has_no_spread() -> None:
    # every post tp 1, fp 1, fn 0: each resample pools k*(1,1,0) -> F1 = 2k/(2k+k) = 2/3
    interval = bootstrap_f1([PostCounts(f"p{i}", 1, 1, 0) for i in range(7)], seed=3)
    assert interval.estimate == pytest.approx(2 / 3)
    assert interval.lower == pytest.approx(2 / 3)
    assert interval.upper == pytest.approx(2 / 3)
    assert interval.resamples == 1000
    assert interval.format() == "0.667 [0.667, 0.667] (95% interval)"


def test_paired_bootstrap_on_two_posts_matches_the_exact_distribution() -> None:
    # post a: challenger finds the span, champion misses it; post b: both find theirs.
    # Resamples: {a,a} (p 1/4): 1 - 0 = 1; {a,b} (p 1/2): 1 - 2/3 = 1/3; {b,b} (p 1/4): 0.
    challenger = [PostCounts("a", 1, 0, 0), PostCounts("b", 1, 0, 0)]
    champion = [PostCounts("a", 0, 0, 1), PostCounts("b", 1, 0, 0)]
    wide = paired_bootstrap(challenger, champion, level=0.95, resamples=4000, seed=1)
    assert wide.difference.estimate == pytest.approx(1 / 3)
    # the 2.5 % and 97.5 % quantiles fall in the atoms at 0 and at 1
    assert wide.difference.lower == pytest.approx(0.0)
    assert wide.difference.upper == pytest.approx(1.0)
    # at level 0.4 the 30 % and 70 % quantiles both fall in the atom at 1/3 (P(d<=0) = .25)
    narrow = paired_bootstrap(challenger, champion, level=0.4, resamples=4000, seed=1)
    assert narrow.difference.lower == pytest.approx(1 / 3)
    assert narrow.difference.upper == pytest.approx(1 / 3)
    assert wide.n_posts == 2


def test_confidence_refuses_a_win_that_rests_on_one_post() -> None:
    challenger = [PostCounts("a", 1, 0, 0), PostCounts("b", 1, 0, 0)]
    champion = [PostCounts("a", 0, 0, 1), PostCounts("b", 1, 0, 0)]
    verdict = check_confidence(challenger, champion, level=0.95, resamples=2000, seed=5)
    assert verdict.status is Status.REFUSED
    assert verdict.numbers["lower"] == pytest.approx(0.0)
    assert verdict.numbers["difference"] == pytest.approx(1 / 3)
    assert "lower bound +0.0000 is not > 0" in verdict.reason
    assert "over 2 gold posts" in verdict.reason


def test_confidence_passes_a_win_on_every_post() -> None:
    # champion misses every span, challenger finds every one: the difference is 1 everywhere
    challenger = [PostCounts(f"p{i}", 1, 0, 0) for i in range(5)]
    champion = [PostCounts(f"p{i}", 0, 0, 1) for i in range(5)]
    verdict = check_confidence(challenger, champion, seed=2)
    assert verdict.status is Status.PASSED
    assert verdict.numbers["lower"] == pytest.approx(1.0)


def test_confidence_refuses_identical_models() -> None:
    posts = [PostCounts(f"p{i}", i % 2, 1, 1) for i in range(6)]
    verdict = check_confidence(posts, posts, seed=0)
    assert verdict.status is Status.REFUSED
    assert verdict.numbers["difference"] == 0.0


def test_bootstrap_is_a_function_of_its_seed() -> None:
    rng = random.Random(11)
    mine = [
        PostCounts(f"p{i}", rng.randint(0, 2), rng.randint(0, 1), rng.randint(0, 2))
        for i in range(40)
    ]
    theirs = [
        PostCounts(f"p{i}", rng.randint(0, 2), rng.randint(0, 1), rng.randint(0, 2))
        for i in range(40)
    ]
    first = paired_bootstrap(mine, theirs, seed=42, resamples=500)
    again = paired_bootstrap(list(reversed(mine)), theirs, seed=42, resamples=500)
    other = paired_bootstrap(mine, theirs, seed=43, resamples=500)
    assert first == again  # same seed, input order does not matter
    assert first.difference != other.difference
    assert first.difference.estimate == other.difference.estimate


def test_paired_bootstrap_refuses_different_post_sets() -> None:
    with pytest.raises(GoldSetError, match="post 'a' was scored for the challenger only"):
        paired_bootstrap([PostCounts("a", 1, 0, 0)], [PostCounts("c", 1, 0, 0)])


@pytest.mark.parametrize(("level", "resamples"), [(0.0, 10), (1.0, 10), (0.9, 0)])
def test_bootstrap_rejects_a_bad_level_or_count(level: float, resamples: int) -> None:
    with pytest.raises(ValueError, match="bootstrap"):
        bootstrap_f1([PostCounts("a", 1, 0, 0)], level=level, resamples=resamples)


def test_bootstrap_rejects_an_empty_evaluation() -> None:
    with pytest.raises(ValueError, match="no posts"):
        bootstrap_f1([])


# Rule: label regression ------------------------------------------------------------------------


def test_label_regression_refuses_a_label_that_fell_beyond_the_margin() -> None:
    # champion BRAND tp4 fp1 fn1 -> F1 0.8; PRODUCT tp1 fp1 fn1 -> 0.5
    champion = label_report({"BRAND": (4, 1, 1), "PRODUCT": (1, 1, 1)})
    # challenger BRAND tp5 fp1 fn0 -> 10/11; PRODUCT tp1 fp2 fn1 -> P 1/3, R 1/2 -> 0.4;
    # SHOP has no gold span (support 0): it is not judged here
    challenger = label_report({"BRAND": (5, 1, 0), "PRODUCT": (1, 2, 1), "SHOP": (0, 3, 0)})
    refused = check_label_regression(challenger, champion, margin=0.05)
    assert refused.status is Status.REFUSED
    assert refused.numbers["PRODUCT_champion_f1"] == pytest.approx(0.5)
    assert refused.numbers["PRODUCT_challenger_f1"] == pytest.approx(0.4)
    assert refused.numbers["BRAND_challenger_f1"] == pytest.approx(10 / 11)
    assert refused.numbers["worst_drop"] == pytest.approx(0.1)
    assert "SHOP_challenger_f1" not in refused.numbers
    assert "PRODUCT 0.5000 -> 0.4000 (-0.1000)" in refused.reason
    assert "BRAND" not in refused.reason
    passed = check_label_regression(challenger, champion, margin=0.15)
    assert passed.status is Status.PASSED
    assert "least change: PRODUCT -0.1000" in passed.reason
    # and a label that did not move reads +0.0000, never -0.0000 (a trial saw it)
    same = check_label_regression(champion, champion, margin=0.05)
    assert "least change: " in same.reason and "-0.0000" not in same.reason
    assert same.reason.endswith("+0.0000)")


def test_label_regression_does_not_apply_without_champion_or_support() -> None:
    report = label_report({"BRAND": (0, 2, 0)})
    assert check_label_regression(report, None).status is Status.NOT_APPLICABLE
    assert check_label_regression(report, report).status is Status.NOT_APPLICABLE


# Rule: canary ----------------------------------------------------------------------------------


def test_canary_refuses_a_drop_beyond_the_margin_and_passes_within() -> None:
    # champion: 8 of 10 canary spans -> 16/18; challenger 4 of 10 -> 8/14
    champion = canary(8)
    forgot = canary(4)
    verdict = check_canary(forgot, champion, margin=0.02)
    assert verdict.status is Status.REFUSED
    assert verdict.numbers["champion_f1"] == pytest.approx(16 / 18)
    assert verdict.numbers["challenger_f1"] == pytest.approx(8 / 14)
    assert verdict.numbers["difference"] == pytest.approx(8 / 14 - 16 / 18)
    lower, upper = verdict.numbers["lower"], verdict.numbers["upper"]
    assert lower < 8 / 14 - 16 / 18 < upper
    assert (
        f"canary F1 0.8889 -> 0.5714 (-0.3175, 95% interval [{lower:+.4f}, {upper:+.4f}]) "
        "on 10 posts: fell by more than 0.0200"
    ) in verdict.reason
    # 7 of 10 -> 14/17 = 0.8235: a drop of 0.065, within a margin of 0.1
    slight = canary(7)
    assert check_canary(slight, champion, margin=0.1).status is Status.PASSED
    assert check_canary(slight, champion, margin=0.05).status is Status.REFUSED


def test_canary_needs_both_evaluations_of_the_same_set() -> None:
    three = canary(3, total=3)
    missing = check_canary(None, three)
    assert missing.status is Status.NOT_APPLICABLE
    assert "challenger" in missing.reason
    assert check_canary(three, None).status is Status.NOT_APPLICABLE
    # no canary set at all says that (a trial's gate table said "no evaluation of the
    # challenger" where the run's summary said no post was from an earlier window)
    none = check_canary(None, None)
    assert (none.status, none.reason) == (Status.NOT_APPLICABLE, "no canary set")
    with pytest.raises(GoldSetError, match="canary"):
        check_canary(canary(2, total=2), three)


# decide_promotion ------------------------------------------------------------------------------


def test_a_challenger_that_forgot_is_refused_by_the_canary_alone() -> None:
    # given: it wins clearly on the gold set, but the canary F1 falls from 16/18 to 8/14
    gold_mine, gold_theirs = gold_win()
    challenger = ModelScores(gold_mine, canary(4))
    champion = ModelScores(gold_theirs, canary(8))
    # when
    decision = decide_promotion(challenger, champion, GatePolicy(threshold=0.5))
    # then
    assert not decision.promote
    assert [v.rule for v in decision.refusals] == [Rule.CANARY]
    assert decision.verdict(Rule.BEATS_CHAMPION).status is Status.PASSED
    assert decision.verdict(Rule.CONFIDENCE).status is Status.PASSED
    assert decision.reason.startswith("refused by canary: canary F1 0.8889 -> 0.5714")
    payload = json.loads(json.dumps(decision.to_dict()))
    assert payload["refused_by"] == ["canary"]
    assert [v["rule"] for v in payload["verdicts"]] == [str(r) for r in Rule]
    assert payload["outcome"] == "refused"
    tags = decision.to_tags()
    assert tags["brandloop.gate.outcome"] == "refused"
    assert tags["brandloop.gate.refused_by"] == "canary"
    assert tags["brandloop.gate.reason"] == decision.reason
    metrics = decision.to_metrics()
    assert metrics["gate_promote"] == 0.0
    assert metrics["gate_canary_passed"] == 0.0
    assert metrics["gate_canary_champion_f1"] == pytest.approx(16 / 18)


def test_a_challenger_that_passes_every_rule_is_promoted() -> None:
    gold_mine, gold_theirs = gold_win()
    same = canary(8)
    decision = decide_promotion(
        ModelScores(gold_mine, same), ModelScores(gold_theirs, same), GatePolicy(0.5)
    )
    assert decision.promote
    assert all(v.status is Status.PASSED for v in decision.verdicts)
    assert decision.to_tags()["brandloop.gate.refused_by"] == ""
    assert decision.outcome == "promoted"
    assert decision.reason.startswith("promoted: threshold: challenger F1 1.0000")
    # F1 difference 1 - 28/34: every resample except an all-champion-hit draw (p 0.7**20)
    lower = decision.verdict(Rule.CONFIDENCE).numbers["lower"]
    assert 0.0 < lower < 1 - 28 / 34


def test_several_refusals_are_all_named() -> None:
    gold_mine, gold_theirs = gold_win()
    # the "challenger" is the weaker model: below threshold 0.9, loses, and no confidence
    decision = decide_promotion(ModelScores(gold_theirs), ModelScores(gold_mine), GatePolicy(0.9))
    refused = [str(v.rule) for v in decision.refusals]
    assert refused == ["threshold", "beats_champion", "confidence", "label_regression"]
    assert decision.verdict(Rule.CANARY).status is Status.NOT_APPLICABLE
    assert "threshold: challenger F1 0.8235 < threshold 0.9000" in decision.reason


def test_the_first_model_needs_only_the_threshold() -> None:
    gold_mine, _ = gold_win()
    decision = decide_promotion(ModelScores(gold_mine), None, GatePolicy(threshold=0.8))
    assert decision.promote
    statuses = {v.rule: v.status for v in decision.verdicts}
    assert statuses[Rule.THRESHOLD] is Status.PASSED
    assert {statuses[r] for r in Rule if r is not Rule.THRESHOLD} == {Status.NOT_APPLICABLE}
    assert decision.reason == "promoted: threshold: challenger F1 1.0000 >= threshold 0.8000"
    # And MLflow sees only the threshold as passed; the others are named as not applicable
    # (a trial read gate.canary_passed 1.0 on a first model that had no canary to compare)
    passed = {k: v for k, v in decision.to_metrics().items() if k.endswith("_passed")}
    assert passed == {"gate_threshold_passed": 1.0}
    idle = decision.to_tags()["brandloop.gate.not_applicable"].split(",")
    assert idle == [str(r) for r in Rule if r is not Rule.THRESHOLD]
    # And the canary rule says there is no canary set (a trial missed it there)
    reasons = {v.rule: v.reason for v in decision.verdicts}
    assert reasons[Rule.CANARY] == "no canary set"
    assert reasons[Rule.CONFIDENCE] == "no champion to compare with"


def test_a_first_model_below_the_cold_start_is_refused() -> None:
    # a trial's first challenger (0.7692) was promoted although the cold start it replaced
    # in apply scored 0.8333 on the same gold set
    gold_mine, _ = gold_win()
    policy = GatePolicy(threshold=0.5)
    below = decide_promotion(ModelScores(gold_mine), None, policy, cold_start=("gaz", 1.01))
    verdict = below.verdict(Rule.BEATS_CHAMPION)
    assert not below.promote and verdict.status is Status.REFUSED
    assert verdict.reason == (
        "challenger F1 1.0000 is below the cold start gaz's F1 1.0100 (what apply predicts "
        "with while no version is champion)"
    )
    assert verdict.numbers == {"challenger_f1": 1.0, "cold_start_f1": 1.01}
    # a tie is not below; the other comparative rules stay not applicable
    tie = decide_promotion(ModelScores(gold_mine), None, policy, cold_start=("gaz", 1.0))
    assert tie.promote and tie.verdict(Rule.BEATS_CHAMPION).status is Status.PASSED
    idle = {r for r in Rule if tie.verdict(r).status is Status.NOT_APPLICABLE}
    assert idle == {Rule.CONFIDENCE, Rule.LABEL_REGRESSION, Rule.CANARY}


def test_a_first_model_that_forgot_what_the_cold_start_knows_is_refused_by_the_canary() -> None:
    # given: no champion; the challenger beats the cold start on the gold set, but on the
    # canary set (older posts) it finds 4 of 10 spans where the brand list found 8
    gold_mine, _ = gold_win()
    policy = GatePolicy(threshold=0.5)
    challenger = ModelScores(gold_mine, canary(4))
    # when
    decision = decide_promotion(
        challenger, None, policy, cold_start=("gaz", 0.5), cold_start_canary=canary(8)
    )
    # then: the canary rule alone refuses, against the cold start, with its numbers
    verdict = decision.verdict(Rule.CANARY)
    assert not decision.promote and [str(v.rule) for v in decision.refusals] == ["canary"]
    assert verdict.reason.startswith(
        "no champion yet; against the cold start gaz: canary F1 0.8889 -> 0.5714 (-0.3175"
    )
    assert verdict.reason.endswith("on 10 posts: fell by more than 0.0200")
    assert verdict.numbers["cold_start_f1"] == pytest.approx(16 / 18)
    assert "champion_f1" not in verdict.numbers
    assert decision.to_metrics()["gate_canary_cold_start_f1"] == pytest.approx(16 / 18)
    # a first model that holds the canary up is promoted, the canary rule among those passed
    kept = decide_promotion(
        ModelScores(gold_mine, canary(8)), None, policy, ("gaz", 0.5), canary(8)
    )
    assert kept.promote and kept.verdict(Rule.CANARY).status is Status.PASSED
    assert "canary: no champion yet; against the cold start gaz: canary F1 0.8889" in kept.reason
    # without the cold start's canary evaluation the rule does not apply, and says why
    alone = decide_promotion(ModelScores(gold_mine, canary(4)), None, policy, ("gaz", 0.5))
    assert alone.promote and alone.verdict(Rule.CANARY).status is Status.NOT_APPLICABLE
    assert alone.verdict(Rule.CANARY).reason == "no canary evaluation of the cold start gaz"


def test_gold_sets_that_differ_are_an_error_not_a_verdict() -> None:
    gold_mine, _ = gold_win()
    other = scored([(1, 0, 0)] * 20, "h")
    with pytest.raises(GoldSetError, match="different posts"):
        decide_promotion(ModelScores(gold_mine), ModelScores(other), GatePolicy(0.5))


@pytest.mark.parametrize(
    ("field", "value"),
    [("threshold", 1.5), ("canary_margin", -0.1), ("bootstrap_level", 1.0)],
)
def test_gate_policy_names_the_bad_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field.split("_")[0]):
        GatePolicy(**{"threshold": 0.5, field: value})


def test_a_decision_without_verdicts_never_promotes() -> None:
    assert not GateDecision(()).promote
