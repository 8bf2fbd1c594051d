"""Annotator agreement: span F1, the mean over pairs, and the three policies (pure)."""

from __future__ import annotations

import pytest

from ner.agreement import (
    AgreementPolicy,
    Outcome,
    agreement_score,
    majority_spans,
    resolve,
    span_f1,
)
from ner.types import Annotation, Span
from tests.support.ls_json import span

TEXT = "Glossier and Fenty Beauty at Sephora"
GLOSSIER = span(TEXT, "Glossier")
FENTY = span(TEXT, "Fenty Beauty")
FENTY_SHORT = span(TEXT, "Fenty")
SEPHORA = span(TEXT, "Sephora")


def ann(*spans: Span, who: str, when: str) -> Annotation:
    return Annotation("p1", TEXT, tuple(spans), task_id=7, annotator=who, updated_at=when)


def test_span_f1_is_exact_and_symmetric() -> None:
    # one shared span of 2 + 3 -> 2 * 1 / 5
    assert span_f1([GLOSSIER, FENTY], [GLOSSIER, FENTY_SHORT, SEPHORA]) == pytest.approx(0.4)
    assert span_f1([GLOSSIER, FENTY_SHORT, SEPHORA], [GLOSSIER, FENTY]) == pytest.approx(0.4)
    # the same offsets with another label do not match
    org = Span(GLOSSIER.start, GLOSSIER.end, "ORG", GLOSSIER.text)
    assert span_f1([GLOSSIER], [org]) == 0.0
    assert span_f1([], []) == 1.0
    assert span_f1([GLOSSIER], []) == 0.0


def test_agreement_score_is_the_mean_over_pairs() -> None:
    a = ann(GLOSSIER, FENTY, who="a", when="1")
    b = ann(GLOSSIER, FENTY, who="b", when="2")
    c = ann(GLOSSIER, who="c", when="3")
    # pairs: (a, b) 1.0; (a, c) 2/3; (b, c) 2/3
    assert agreement_score([a, b, c]) == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert agreement_score([a]) == 1.0


def test_majority_needs_more_than_half() -> None:
    a = ann(GLOSSIER, FENTY, who="a", when="1")
    b = ann(GLOSSIER, FENTY_SHORT, who="b", when="2")
    c = ann(GLOSSIER, FENTY, SEPHORA, who="c", when="3")
    assert majority_spans([a, b, c]) == (GLOSSIER, FENTY)
    # two annotators: a span needs both (one of two is a tie, not a majority)
    assert majority_spans([a, b]) == (GLOSSIER,)


def test_latest_keeps_the_last_saved_and_reports_the_score() -> None:
    older = ann(GLOSSIER, FENTY, who="a", when="2026-11-20T10:00:00Z")
    newer = ann(SEPHORA, who="b", when="2026-11-20T11:00:00Z")
    resolution = resolve([newer, older], AgreementPolicy.LATEST, 0.8)
    assert resolution.annotation is newer
    assert resolution.agreement.outcome is Outcome.KEPT_LATEST
    assert resolution.agreement.score == 0.0
    assert resolution.agreement.annotators == ("b", "a")


def test_majority_policy_writes_the_majority_spans() -> None:
    a = ann(GLOSSIER, FENTY, who="a", when="1")
    b = ann(GLOSSIER, FENTY_SHORT, who="b", when="2")
    c = ann(GLOSSIER, FENTY, SEPHORA, who="c", when="3")
    resolution = resolve([a, b, c], AgreementPolicy.MAJORITY, 0.8)
    assert resolution.annotation is not None
    assert resolution.annotation.spans == (GLOSSIER, FENTY)
    assert resolution.annotation.annotator == "majority of 3"
    assert resolution.annotation.updated_at == "3"
    assert resolution.agreement.outcome is Outcome.MAJORITY


def test_majority_holds_a_post_whose_annotators_mark_one_place_with_other_bounds() -> None:
    # a trial's two annotators chose "Fenty Beauty" and "Fenty": the majority policy trained
    # the post as having no brand there
    a = ann(GLOSSIER, FENTY, who="a", when="1")
    b = ann(GLOSSIER, FENTY_SHORT, who="b", when="2")
    held = resolve([a, b], AgreementPolicy.MAJORITY, 0.8)
    assert held.annotation is None and held.agreement.outcome is Outcome.HELD
    # a place only a minority marked is dropped as before (Sephora, 1 of 3), and 2 of 3 on
    # one place with other bounds hold the post too
    c = ann(GLOSSIER, FENTY_SHORT, SEPHORA, who="c", when="3")
    b_only = ann(GLOSSIER, who="b", when="2")
    kept = resolve([a, b_only, ann(GLOSSIER, FENTY, SEPHORA, who="c", when="3")], *MAJ)
    assert kept.annotation is not None and kept.annotation.spans == (GLOSSIER, FENTY)
    assert resolve([a, b_only, c], *MAJ).agreement.outcome is Outcome.HELD


MAJ = (AgreementPolicy.MAJORITY, 0.8)


def test_majority_holds_a_tie_on_whether_there_is_a_brand() -> None:
    # a trial's two annotators: one marked Glossier, the other nothing; trained as "no brand"
    marked, empty = ann(GLOSSIER, who="a", when="1"), ann(who="b", when="2")
    assert resolve([marked, empty], *MAJ).agreement.outcome is Outcome.HELD
    # two of four is a tie too; one of three is a minority, dropped as before
    others = [ann(who=w, when="3") for w in ("c", "d")]
    assert resolve([marked, ann(GLOSSIER, who="e", when="2"), *others], *MAJ).annotation is None
    kept = resolve([marked, *[ann(who=w, when="3") for w in ("c", "d")]], *MAJ)
    assert kept.annotation is not None and kept.annotation.spans == ()


def test_review_holds_below_the_threshold_only() -> None:
    a = ann(GLOSSIER, FENTY, who="a", when="1")
    b = ann(GLOSSIER, FENTY_SHORT, who="b", when="2")  # F1 0.5
    held = resolve([a, b], AgreementPolicy.REVIEW, 0.8)
    assert held.annotation is None and held.agreement.outcome is Outcome.HELD
    kept = resolve([a, b], AgreementPolicy.REVIEW, 0.5)  # not strictly below
    assert kept.annotation is b and kept.agreement.outcome is Outcome.KEPT_LATEST


def test_resolve_refuses_nothing_or_two_posts() -> None:
    with pytest.raises(ValueError, match="at least one"):
        resolve([], AgreementPolicy.LATEST, 0.8)
    other = Annotation("p2", TEXT, (), annotator="x")
    with pytest.raises(ValueError, match="one post"):
        resolve([ann(who="a", when="1"), other], AgreementPolicy.LATEST, 0.8)


def test_policy_and_threshold_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from ner.settings import Settings

    monkeypatch.setenv("NER_AGREEMENT_POLICY", "review")
    monkeypatch.setenv("NER_AGREEMENT_THRESHOLD", "0.6")
    settings = Settings()
    assert settings.agreement_policy is AgreementPolicy.REVIEW
    assert settings.agreement_threshold == 0.6
    monkeypatch.setenv("NER_AGREEMENT_POLICY", "vote")
    with pytest.raises(ValidationError, match="agreement_policy"):
        Settings()
