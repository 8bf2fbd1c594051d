"""The gate and the promotion rule (pure logic)."""

from __future__ import annotations

import pytest

from ner.gate import Status, check_not_below_cold_start
from ner.registry import closest_hint, decide, needs_training


@pytest.mark.parametrize(
    ("champion_f1", "threshold", "expected"),
    [(None, 0.8, True), (0.5, 0.8, True), (0.8, 0.8, False), (0.93, 0.8, False)],
)
def test_gate_trains_only_below_threshold(
    champion_f1: float | None, threshold: float, expected: bool
) -> None:
    assert needs_training(champion_f1, threshold) is expected


def test_no_evaluation_means_no_promotion() -> None:
    decision = decide(None, 0.2, threshold=0.5)
    assert not decision.promote
    assert "not evaluated" in decision.reason


def test_challenger_below_threshold_is_not_promoted_even_if_better() -> None:
    decision = decide(0.7, 0.4, threshold=0.8)
    assert not decision.promote
    assert "threshold" in decision.reason
    assert "does not beat" not in decision.reason


def test_a_refusal_names_every_rule_that_failed() -> None:
    decision = decide(0.7, 0.75, threshold=0.8, margin=0.01)
    assert not decision.promote
    assert decision.reason == (
        "challenger F1 0.7000 < threshold 0.8000; "
        "challenger F1 0.7000 does not beat champion F1 0.7500 + margin 0.0100"
    )


def test_the_reasons_name_the_candidate_a_promotion_by_hand_judges() -> None:
    # a trial's `promote 2` was refused as "challenger F1 ...", though no challenger ran
    refused = decide(0.7117, None, threshold=0.8, subject="version 2")
    assert refused.reason == "version 2 F1 0.7117 < threshold 0.8000"
    passed = decide(0.9, 0.85, threshold=0.8, subject="version 2")
    assert passed.reason == "version 2 F1 0.9000 >= threshold 0.8000, beats champion F1 0.8500"
    assert decide(None, 0.85, 0.8, subject="version 2").reason.startswith("version 2 was not")


def test_challenger_worse_than_champion_is_not_promoted() -> None:
    decision = decide(0.85, 0.9, threshold=0.8)
    assert not decision.promote
    assert "does not beat" in decision.reason


def test_tie_is_not_a_win_and_margin_applies() -> None:
    assert not decide(0.9, 0.9, threshold=0.8).promote
    assert not decide(0.905, 0.9, threshold=0.8, margin=0.01).promote
    assert decide(0.915, 0.9, threshold=0.8, margin=0.01).promote


def test_first_model_is_promoted_when_it_reaches_threshold() -> None:
    decision = decide(0.81, None, threshold=0.8)
    assert decision.promote
    assert "no champion" in decision.reason


def test_a_first_version_by_hand_may_not_fall_below_the_cold_start() -> None:
    # a trial's `promote 1` said "beats no champion" for 0.7692 where the cold start had 0.8333
    refused = decide(0.7692, None, 0.7, subject="version 1", cold_start=("gaz-1", 0.8333))
    assert not refused.promote
    assert refused.reason == "version 1 F1 0.7692 is below the cold start gaz-1's F1 0.8333"
    # a tie within F1_TIE (a score read back from a tag) is not below, as in the gate's rule
    tie = decide(0.8333, None, 0.7, cold_start=("gaz-1", 0.8333 + 4e-7))
    assert tie.promote
    gate_tie = check_not_below_cold_start(0.8333, ("gaz-1", 0.8333 + 4e-7))
    assert gate_tie.status is Status.PASSED
    kept = decide(0.85, None, 0.7, subject="version 1", cold_start=("gaz-1", 0.8333))
    assert kept.promote and kept.reason == (
        "version 1 F1 0.8500 >= threshold 0.7000, no champion yet and not below the cold "
        "start gaz-1's F1 0.8333"
    )
    # with a champion, the champion is the bar, not the cold start
    assert decide(0.85, 0.8, 0.7, cold_start=("gaz-1", 0.9)).promote


def test_a_missing_model_is_offered_a_close_name_unless_both_are_environments_own() -> None:
    # a typo of the model's name is offered the name meant
    assert closest_hint("brand-ner-dve", "brand-ner-dev") == "did you mean 'brand-ner-dev'? "
    assert closest_hint("my-brands", "my-brand") == "did you mean 'my-brand'? "
    assert closest_hint("brand-ner-dev", None) == ""
    # staging's own model missing, dev's there: dev's is no typo; say how staging gets one
    hint = closest_hint("brand-ner-staging", "brand-ner-dev")
    assert "did you mean" not in hint
    assert hint.startswith("staging has no model yet: train-ner under NER_ENV=staging")
    assert "brandloop promote VERSION --from dev --to staging copies one of 'brand-ner-dev'" in hint
    # and when dev's has no version, no copy is offered
    empty = closest_hint("brand-ner-staging", "brand-ner-dev", copyable=False)
    assert "promote" not in empty and "('brand-ner-dev' has no version to copy either)" in empty
