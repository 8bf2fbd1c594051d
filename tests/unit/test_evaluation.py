"""Metrics of ner.evaluation on tiny hand-built cases (expected values reasoned inline)."""

from __future__ import annotations

import json
import re

import pytest

from ner.errors import DataError
from ner.evaluation import (
    ERROR_KINDS,
    errors,
    evaluate,
    metric_name,
    score_model,
    spans_by_post,
)
from ner.types import Annotation, Prediction, Span

TEXT = "I love Fenty Beauty and Glossier but not Nike shoes today"


def span(sub: str, label: str = "BRAND", text: str = TEXT, occurrence: int = 0) -> Span:
    """The ``occurrence``-th occurrence of ``sub`` in ``text`` as a span."""
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(sub, start + 1)
    return Span(start, start + len(sub), label, sub)


def test_exact_and_boundary_give_one_third_precision_half_recall() -> None:
    # given 2 gold spans and 3 predictions: 1 exact, 1 with wrong boundary, 1 spurious
    gold = {"p1": [span("Fenty Beauty"), span("Glossier")]}
    pred = {"p1": [span("Fenty Beauty"), span("Gloss"), span("shoes")]}
    # when
    report = evaluate(gold, pred, ["BRAND"])
    # then: tp=1 of 3 predicted, 1 of 2 gold
    p, r = 1 / 3, 1 / 2
    assert (report.tp, report.fp, report.fn) == (1, 2, 1)
    assert report.precision == pytest.approx(p)
    assert report.recall == pytest.approx(r)
    assert report.f1 == pytest.approx(2 * p * r / (p + r))
    # overlap matching also accepts "Gloss" for "Glossier": 2 of 3 predicted, 2 of 2 gold
    assert report.overlap_tp == 2
    assert report.overlap_precision == pytest.approx(2 / 3)
    assert report.overlap_recall == pytest.approx(1.0)
    assert report.overlap_f1 == pytest.approx(2 * (2 / 3) * 1.0 / (2 / 3 + 1.0))
    assert report.confusion.correct == 1
    assert report.confusion.boundary == 1
    assert report.confusion.spurious == 1
    assert report.confusion.missed == 0
    assert report.post_accuracy == 0.0


def test_per_label_table_counts_each_label_and_adds_up_to_micro() -> None:
    # given two labels: BRAND 2 gold (1 found), PRODUCT 1 gold (found) + 1 spurious
    gold = {
        "a": [span("Fenty Beauty"), span("shoes", "PRODUCT")],
        "b": [span("Nike")],
    }
    pred = {
        "a": [span("Fenty Beauty"), span("shoes", "PRODUCT"), span("today", "PRODUCT")],
        "b": [],
    }
    # when
    report = evaluate(gold, pred, ["BRAND", "PRODUCT"])
    # then
    brand, product = report.label_scores("BRAND"), report.label_scores("PRODUCT")
    assert (brand.tp, brand.fp, brand.fn, brand.support) == (1, 0, 1, 2)
    assert brand.precision == 1.0
    assert brand.recall == pytest.approx(1 / 2)
    assert brand.f1 == pytest.approx(2 * 1.0 * 0.5 / 1.5)
    assert (product.tp, product.fp, product.fn, product.support) == (1, 1, 0, 1)
    assert product.precision == pytest.approx(1 / 2)
    assert product.recall == 1.0
    assert report.tp == brand.tp + product.tp
    assert report.fp == brand.fp + product.fp
    assert report.fn == brand.fn + product.fn
    # micro pools the counts: 2 tp of 3 predicted, of 3 gold
    assert report.precision == pytest.approx(2 / 3)
    assert report.recall == pytest.approx(2 / 3)
    assert report.labels == ("BRAND", "PRODUCT")


def test_unknown_predicted_label_is_charged_and_listed() -> None:
    # given a model that emits ORG where BRAND is gold (same offsets)
    gold = {"p": [span("Nike")]}
    pred = {"p": [span("Nike", "ORG")]}
    # when
    report = evaluate(gold, pred, ["BRAND"])
    # then ORG appears after the requested labels and counts as a false positive
    assert report.labels == ("BRAND", "ORG")
    assert report.label_scores("ORG").fp == 1
    assert report.label_scores("BRAND").fn == 1
    assert report.confusion.label == 1
    assert report.precision == 0.0
    with pytest.raises(KeyError):
        report.label_scores("PRODUCT")


def test_post_accuracy_counts_posts_with_identical_span_sets() -> None:
    # given 4 posts: exact match, empty/empty, a miss, and only a wrong extra prediction
    gold = {
        "exact": [span("Nike"), span("Glossier")],
        "empty": [],
        "miss": [span("Nike")],
        "extra": [],
    }
    pred = {
        "exact": [span("Glossier"), span("Nike")],  # order does not matter
        "miss": [],
        "extra": [span("today")],
        # "empty" has no prediction at all: predicted nothing
    }
    # when
    report = evaluate(gold, pred, ["BRAND"])
    # then 2 of 4 posts (exact, empty) are entirely right
    assert report.n_posts == 4
    assert report.posts_correct == 2
    assert report.post_accuracy == pytest.approx(2 / 4)


def test_posts_outside_gold_are_ignored_and_counted() -> None:
    # given a prediction for a post that is not in the gold set
    gold = {"g": [span("Nike")]}
    pred = {"g": [span("Nike")], "other": [span("Glossier"), span("today")]}
    # when
    report = evaluate(gold, pred)
    # then it changes no score and is reported
    assert report.n_ignored_posts == 1
    assert report.n_pred == 1
    assert report.precision == 1.0
    assert report.recall == 1.0


def test_duplicate_spans_count_once() -> None:
    # given the same prediction twice
    gold = {"p": [span("Nike")]}
    pred = {"p": [span("Nike"), span("Nike")]}
    # when
    report = evaluate(gold, pred)
    # then
    assert report.n_pred == 1
    assert report.precision == 1.0
    assert report.post_accuracy == 1.0


def test_confusion_sorts_every_kind_and_partitions_the_spans() -> None:
    # given one post with one span of each error kind and one correct span
    text = "Nike Adidas Puma Reebok Fila Asics Vans"
    gold = {
        "p": [
            span("Nike", text=text),  # correct
            span("Adidas", text=text),  # boundary: predicted "Adid"
            span("Puma", text=text),  # label: predicted as PRODUCT
            span("Reebok", text=text),  # label_boundary: "Reeb" as PRODUCT
            span("Fila", text=text),  # missed
        ]
    }
    pred = {
        "p": [
            span("Nike", text=text),
            span("Adid", text=text),
            span("Puma", "PRODUCT", text=text),
            span("Reeb", "PRODUCT", text=text),
            span("Vans", text=text),  # spurious
        ]
    }
    # when
    report = evaluate(gold, pred, ["BRAND", "PRODUCT"])
    confusion = report.confusion
    # then
    assert confusion.to_dict() == {
        "correct": 1,
        "boundary": 1,
        "label": 1,
        "label_boundary": 1,
        "missed": 1,
        "spurious": 1,
    }
    paired = confusion.correct + confusion.boundary + confusion.label + confusion.label_boundary
    assert paired + confusion.missed == report.n_gold
    assert paired + confusion.spurious == report.n_pred
    assert report.overlap_tp == report.tp + confusion.boundary


def test_each_gold_span_is_matched_at_most_once_in_overlap_mode() -> None:
    # given one gold span and two predictions inside it
    text = "Fenty Beauty rocks"
    gold = {"p": [span("Fenty Beauty", text=text)]}
    pred = {"p": [span("Fenty", text=text), span("Beauty", text=text)]}
    # when
    report = evaluate(gold, pred)
    # then only one prediction gets the gold span; the other is spurious
    assert report.overlap_tp == 1
    assert report.overlap_precision == pytest.approx(1 / 2)
    assert report.overlap_recall == 1.0
    assert report.confusion.boundary == 1
    assert report.confusion.spurious == 1


def test_one_prediction_over_two_gold_spans_leaves_one_missed() -> None:
    # given two adjacent gold spans and one prediction covering both
    text = "Fenty Beauty rocks"
    gold = {"p": [span("Fenty", text=text), span("Beauty", text=text)]}
    pred = {"p": [span("Fenty Beauty", text=text)]}
    # when
    report = evaluate(gold, pred)
    # then the prediction pairs with one of them; the other is missed although it overlaps
    assert report.confusion.boundary == 1
    assert report.confusion.missed == 1
    assert report.overlap_recall == pytest.approx(1 / 2)


def test_overlap_matching_pairs_as_many_spans_as_possible() -> None:
    # given gold A=[0,10) B=[10,12); pred X=[0,11) overlaps both, Y=[8,10) overlaps only A.
    # Greedy largest-overlap would give X->A and leave Y unmatched; a maximum matching pairs
    # X->B and Y->A.
    text = "abcdefghijklmn"
    a, b = Span(0, 10, "BRAND", text[0:10]), Span(10, 12, "BRAND", text[10:12])
    x, y = Span(0, 11, "BRAND", text[0:11]), Span(8, 10, "BRAND", text[8:10])
    # when
    report = evaluate({"p": [a, b]}, {"p": [x, y]})
    # then
    assert report.overlap_tp == 2
    assert report.confusion.missed == 0
    assert report.confusion.spurious == 0


def test_exact_match_wins_over_a_larger_overlap() -> None:
    # given gold "Fenty" and predictions "Fenty" (exact) and "Fenty Beauty" (contains it)
    text = "Fenty Beauty rocks"
    gold = {"p": [span("Fenty", text=text)]}
    pred = {"p": [span("Fenty Beauty", text=text), span("Fenty", text=text)]}
    # when
    report = evaluate(gold, pred)
    # then the exact one is paired, the long one is spurious
    assert report.tp == 1
    assert report.confusion.correct == 1
    assert report.confusion.spurious == 1
    assert report.confusion.boundary == 0


def test_empty_inputs_follow_the_zero_division_convention() -> None:
    # given no posts at all
    report = evaluate({}, {}, ["BRAND"])
    # then every ratio is 0.0 and the label still has a row
    assert report.n_posts == report.n_gold == report.n_pred == 0
    assert (report.precision, report.recall, report.f1) == (0.0, 0.0, 0.0)
    assert report.overlap_f1 == 0.0
    assert report.post_accuracy == 0.0
    assert report.labels == ("BRAND",)
    assert report.label_scores("BRAND").f1 == 0.0


def test_no_predictions_gives_zero_precision_and_zero_recall() -> None:
    # given gold spans and an empty model
    report = evaluate({"p": [span("Nike")]}, {})
    # then
    assert report.precision == 0.0
    assert report.recall == 0.0
    assert report.f1 == 0.0
    assert report.confusion.missed == 1


def test_no_gold_spans_and_no_predictions_is_a_correct_post_but_zero_f1() -> None:
    # given posts without any brand and a model that finds none
    report = evaluate({"a": [], "b": []}, {"a": []})
    # then post accuracy is perfect, span metrics follow the 0/0 = 0 convention
    assert report.post_accuracy == 1.0
    assert report.f1 == 0.0


def test_to_metrics_names_are_flat_prefixed_and_mlflow_safe() -> None:
    # given a report with one label containing a character MLflow refuses
    gold = {"p": [span("Nike"), span("shoes", "PROD:UCT")]}
    pred = {"p": [span("Nike")]}
    report = evaluate(gold, pred, ["BRAND"])
    # when
    metrics = report.to_metrics(prefix="gold/")
    # then
    assert metrics["gold/f1"] == pytest.approx(report.f1)
    assert metrics["gold/BRAND_f1"] == 1.0
    assert metrics["gold/PROD_UCT_support"] == 1.0
    assert metrics["gold/n_posts"] == 1.0
    assert metrics["gold/missed"] == 1.0
    assert {"gold/precision", "gold/recall", "gold/overlap_f1", "gold/post_accuracy"} <= set(
        metrics
    )
    assert all(re.fullmatch(r"[0-9A-Za-z_\-./ ]+", name) for name in metrics)
    assert all(isinstance(value, float) for value in metrics.values())
    assert report.to_metrics()["BRAND_precision"] == 1.0


def test_metric_name_replaces_disallowed_characters() -> None:
    assert metric_name("a:b@c d/e.f-g_h") == "a_b_c d/e.f-g_h"


def test_to_dict_is_json_ready_and_consistent() -> None:
    # given
    report = evaluate({"p": [span("Nike")]}, {"p": [span("Nike"), span("today")]}, ["BRAND"])
    # when
    data = json.loads(json.dumps(report.to_dict()))
    # then
    assert data["micro"]["precision"] == pytest.approx(1 / 2)
    assert data["per_label"][0]["label"] == "BRAND"
    assert data["confusion"]["spurious"] == 1


def test_format_table_has_one_row_per_label_and_a_micro_row() -> None:
    # given
    gold = {"p": [span("Nike"), span("shoes", "PRODUCT")]}
    pred = {"p": [span("Nike")]}
    report = evaluate(gold, pred, ["BRAND", "PRODUCT"])
    # when
    table = report.format_table().splitlines()
    # then: header, separator, 2 labels, micro
    assert len(table) == 5
    assert table[0].startswith("| label |")
    assert table[2] == "| BRAND | 1.000 | 1.000 | 1.000 | 1 |"
    assert table[3] == "| PRODUCT | 0.000 | 0.000 | 0.000 | 1 |"
    micro_f1 = 2 * 1.0 * 0.5 / 1.5
    assert table[4] == f"| micro | 1.000 | 0.500 | {micro_f1:.3f} | 2 |"


def test_errors_lists_every_error_with_texts_and_agrees_with_confusion() -> None:
    # given
    gold = {"p2": [span("Glossier")], "p1": [span("Nike"), span("Fenty Beauty")]}
    pred = {"p1": [span("Nike", "PRODUCT"), span("Fenty")], "p2": [span("today")]}
    # when
    found = errors(gold, pred)
    report = evaluate(gold, pred)
    # then
    kinds = [(e["post_id"], e["kind"]) for e in found]
    assert kinds == [("p1", "boundary"), ("p1", "label"), ("p2", "missed"), ("p2", "spurious")]
    boundary = found[0]
    assert boundary["gold"]["text"] == "Fenty Beauty"
    assert boundary["pred"]["text"] == "Fenty"
    assert found[2]["pred"] is None
    assert found[3]["gold"] is None
    assert found[3]["pred"]["text"] == "today"
    assert all(e["kind"] in ERROR_KINDS for e in found)
    confusion = report.confusion
    assert len(found) == (
        confusion.missed
        + confusion.spurious
        + confusion.boundary
        + confusion.label
        + confusion.label_boundary
    )


def test_spans_by_post_builds_the_mapping_and_refuses_duplicates() -> None:
    # given annotations and predictions for the same post
    annotation = Annotation("p", TEXT, (span("Nike"),))
    prediction = Prediction("p", (span("Nike"),), model_version="1")
    # when
    gold = spans_by_post([annotation])
    predicted = spans_by_post([prediction])
    # then
    assert evaluate(gold, predicted).f1 == 1.0
    with pytest.raises(DataError, match="more than once"):
        spans_by_post([annotation, annotation])


def test_report_exposes_per_label_dict_and_errors_list() -> None:
    # given
    gold = {"p": [span("Nike"), span("Glossier")]}
    pred = {"p": [span("Nike"), span("Gloss")]}
    # when
    report = evaluate(gold, pred, ["BRAND"])
    # then
    assert report.per_label_dict()["BRAND"]["precision"] == pytest.approx(1 / 2)
    assert report.per_label_dict()["BRAND"]["support"] == 2.0
    assert report.errors_list() == errors(gold, pred)
    assert [e["kind"] for e in report.errors_list()] == ["boundary"]


def test_score_model_runs_the_pipeline_and_keeps_only_wanted_labels() -> None:
    # given a rule-based pipeline that finds "Nike" as BRAND and "Glossier" as ORG
    spacy = pytest.importorskip("spacy")
    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler")
    ruler.add_patterns(
        [{"label": "BRAND", "pattern": "Nike"}, {"label": "ORG", "pattern": "Glossier"}]
    )
    text1, text2 = "😍 I love Nike", "Glossier and Fenty"
    gold = [
        Annotation("1", text1, (span("Nike", text=text1),)),
        Annotation("2", text2, (span("Glossier", text=text2), span("Fenty", text=text2))),
    ]
    # when
    report = score_model(nlp, gold, ["BRAND"])
    # then the ORG entity is dropped: 1 correct prediction of 1, 1 of 3 gold found
    assert report.n_pred == 1
    assert report.precision == 1.0
    assert report.recall == pytest.approx(1 / 3)
    assert report.posts_correct == 1


def test_format_confusion_lists_every_kind_with_its_count() -> None:
    # given one exact match, one boundary error, one miss and one spurious span
    gold = {"p": [span("Nike"), span("Fenty Beauty"), span("Glossier")]}
    pred = {"p": [span("Nike"), span("Fenty"), span("today")]}
    report = evaluate(gold, pred, ["BRAND"])
    # when
    lines = report.format_confusion().splitlines()
    # then every kind has its row, counts agree with the report, overlap scores follow
    rows = {line.split("|")[1].strip(): int(line.split("|")[2]) for line in lines[2:8]}
    assert rows == report.confusion.to_dict()
    assert rows["correct"] == 1 and rows["boundary"] == 1
    assert rows["missed"] == 1 and rows["spurious"] == 1
    assert f"F1 {report.overlap_f1:.3f}" in lines[-1]
