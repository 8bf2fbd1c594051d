"""Label Studio export JSON: parsing into annotations, writing them back, the offset guard."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from ner.errors import LabelStudioError
from ner.labelstudio.config import LabelConfig, parse_label_config
from ner.labelstudio.export import (
    align_span,
    annotations_to_export,
    codepoint_to_utf16,
    parse_export,
    utf16_to_codepoint,
)
from ner.types import Annotation, Prediction, Span
from tests.support.ls_json import ls_utf16, result, span, task

LABELS = ("BRAND",)
CONFIG = LabelConfig.for_labels(LABELS)


# --------------------------------------------------------------------------- offsets


@pytest.mark.parametrize("text", ["plain", "💄😍 love", "🇫🇷x👨‍👩‍👧y", "é̃ ok", ""])
def test_utf16_and_codepoint_offsets_are_inverse(text: str) -> None:
    # given any text / when every code-point index goes to UTF-16 and back / then it is kept
    for index in range(len(text) + 1):
        units = codepoint_to_utf16(text, index)
        assert units == len(text[:index].encode("utf-16-le")) // 2
        assert utf16_to_codepoint(text, units) == index


def test_utf16_to_codepoint_rejects_impossible_offsets() -> None:
    # given a text starting with one astral char (2 UTF-16 units)
    text = "💄ab"
    # then the middle of the surrogate pair, negatives and past-the-end give None
    assert utf16_to_codepoint(text, 1) is None
    assert utf16_to_codepoint(text, -1) is None
    assert utf16_to_codepoint(text, 5) is None
    assert utf16_to_codepoint(text, 4) == len(text)


def test_align_span_keeps_correct_offsets() -> None:
    text = "I love Fenty Beauty"
    sp = span(text, "Fenty")
    assert align_span(text, sp.start, sp.end, "Fenty") == (sp.start, sp.end)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("💄😍 love Fenty Beauty", "Fenty Beauty"),  # surrogate pairs before the span
        ("🇫🇷🇺🇸 Dior and Chanel", "Chanel"),  # flags: two astral code points each
        ("👨‍👩‍👧 family day at Ikea", "Ikea"),  # ZWJ sequence: astral + BMP joiners
        ("I 💄 love 💋 Fenty 💄 Beauty 😍", "Fenty 💄 Beauty"),  # astral inside the span
    ],
)
def test_align_span_repairs_utf16_offsets(text: str, needle: str) -> None:
    # given offsets counted in UTF-16 code units
    sp = span(text, needle)
    start, end = codepoint_to_utf16(text, sp.start), codepoint_to_utf16(text, sp.end)
    assert (start, end) != (sp.start, sp.end)
    # when aligned / then the code-point offsets come back
    assert align_span(text, start, end, needle) == (sp.start, sp.end)


def test_align_span_repairs_utf16_when_a_wrong_match_sits_at_the_raw_offsets() -> None:
    # given two mentions, where the UTF-16 offsets of the second, read as code points,
    # land on nothing useful but the text occurs twice
    text = "😍😍 Dior, Dior"
    sp = span(text, "Dior", nth=1)
    start, end = codepoint_to_utf16(text, sp.start), codepoint_to_utf16(text, sp.end)
    # when aligned / then the UTF-16 reading is used, not another occurrence
    assert align_span(text, start, end, "Dior") == (sp.start, sp.end)


def test_align_span_prefers_the_utf16_reading_over_the_nearest_occurrence() -> None:
    # given many emoji then the same name twice: the raw UTF-16 start of the first mention
    # is closer to the second mention
    text = "😍😍😍😍 Dior Dior"
    first, second = span(text, "Dior"), span(text, "Dior", nth=1)
    start, end = codepoint_to_utf16(text, first.start), codepoint_to_utf16(text, first.end)
    assert abs(second.start - start) < abs(first.start - start)
    # when aligned / then the first mention is found, as the UTF-16 reading says
    assert align_span(text, start, end, "Dior") == (first.start, first.end)


def test_align_span_prefers_the_crlf_reading_over_the_nearest_occurrence() -> None:
    # given many CRLFs then the same name twice, offsets counted with CRLF as one char
    text = "a\r\nb\r\nc\r\nd\r\nDior Dior"
    first, second = span(text, "Dior"), span(text, "Dior", nth=1)
    shift = text[: second.start].count("\r\n")
    start, end = second.start - shift, second.end - shift
    assert abs(first.start - start) < abs(second.start - start)
    # when aligned / then the second mention is found, as the CRLF reading says
    assert align_span(text, start, end, "Dior") == (second.start, second.end)


def test_align_span_repairs_offsets_counting_crlf_as_one_char() -> None:
    # given a CRLF text and offsets from the text with CRLF collapsed
    text = "New drop!\r\nLoving\r\nGlossier today"
    sp = span(text, "Glossier")
    shift = text[: sp.start].count("\r\n")
    assert shift == 2
    # when aligned / then the offsets move back onto the original text
    assert align_span(text, sp.start - shift, sp.end - shift, "Glossier") == (sp.start, sp.end)


def test_align_span_repairs_crlf_and_utf16_together() -> None:
    # given emoji and CRLF before the span, offsets in UTF-16 units of the collapsed text
    text = "💄 wow\r\n😍 Rare Beauty"
    sp = span(text, "Rare Beauty")
    collapsed = text.replace("\r\n", "\n")
    cstart = collapsed.index("Rare Beauty")
    start = codepoint_to_utf16(collapsed, cstart)
    end = codepoint_to_utf16(collapsed, cstart + len("Rare Beauty"))
    # when aligned / then the span is found
    assert align_span(text, start, end, "Rare Beauty") == (sp.start, sp.end)


def test_align_span_prefers_the_crlf_utf16_reading_over_the_nearest_occurrence() -> None:
    # given emoji and a CRLF before two close mentions, offsets in UTF-16 units of the
    # CRLF-collapsed text, which land nearer the second mention
    text = "😍😍😍😍😍\r\nDior, Dior"
    first, second = span(text, "Dior"), span(text, "Dior", nth=1)
    collapsed = text.replace("\r\n", "\n")
    start = codepoint_to_utf16(collapsed, first.start - 1)
    end = codepoint_to_utf16(collapsed, first.end - 1)
    assert abs(second.start - start) < abs(first.start - start)
    # when aligned / then the first mention is found
    assert align_span(text, start, end, "Dior") == (first.start, first.end)


def test_align_span_accepts_value_text_with_lf_for_a_crlf_span() -> None:
    # given a span crossing a CRLF whose value.text has only LF, offsets on the collapsed text
    text = "Shop at\r\nSephora\r\nnow"
    sp = span(text, "at\r\nSephora")
    # when aligned with LF-only text / then the true span (with CRLF) is found
    assert align_span(text, sp.start, sp.end - 1, "at\nSephora") == (sp.start, sp.end)


def test_align_span_keeps_offsets_when_value_text_lost_double_spaces() -> None:
    # given correct offsets but a value.text whose double space was collapsed (issue 3078)
    text = "Berlin,  Fenty  Beauty."
    sp = span(text, "Fenty  Beauty")
    # when aligned / then the offsets stand
    assert align_span(text, sp.start, sp.end, "Fenty Beauty") == (sp.start, sp.end)


def test_align_span_keeps_a_double_space_span_even_if_the_collapsed_text_occurs_later() -> None:
    # given correct offsets over "Fenty  Beauty" and a literal "Fenty Beauty" further on
    text = "Fenty  Beauty! yes, Fenty Beauty"
    sp = span(text, "Fenty  Beauty")
    # when aligned with the collapsed value.text / then the offsets stand
    assert align_span(text, sp.start, sp.end, "Fenty Beauty") == (sp.start, sp.end)


def test_align_span_prefers_an_exact_occurrence_over_a_whitespace_flexible_one() -> None:
    # given wrong offsets closer to a double-space variant than to the exact text
    text = "Fenty  Beauty and Fenty Beauty"
    exact = span(text, "Fenty Beauty")
    # when aligned / then the exact occurrence wins (stronger evidence than a loose match)
    assert align_span(text, 1, 13, "Fenty Beauty") == (exact.start, exact.end)


def test_align_span_finds_collapsed_value_text_with_shifted_offsets() -> None:
    # given a double space in the post, collapsed value.text, offsets shifted by 3
    text = "so  happy with Fenty  Beauty"
    sp = span(text, "Fenty  Beauty")
    # when aligned / then the whitespace-flexible search finds the true span
    assert align_span(text, sp.start - 3, sp.end - 4, "Fenty Beauty") == (sp.start, sp.end)


@pytest.mark.parametrize("shift", [-5, -1, 1, 2, 7])
def test_align_span_repairs_offsets_shifted_by_n(shift: int) -> None:
    # given offsets shifted by N
    text = "Got my Nars blush and Nars bronzer, and a Milk stick"
    sp = span(text, "Milk")
    # when aligned / then the occurrence is found again
    assert align_span(text, sp.start + shift, sp.end + shift, "Milk") == (sp.start, sp.end)


def test_align_span_picks_the_nearest_occurrence() -> None:
    # given a name twice and offsets shifted by 2 from the second one
    text = "Nars blush and Nars bronzer"
    second = span(text, "Nars", nth=1)
    # when aligned / then the nearest (second) occurrence is chosen
    assert align_span(text, second.start + 2, second.end + 2, "Nars") == (second.start, second.end)


def test_align_span_joins_surrogate_halves_in_value_text() -> None:
    # given a value.text where the emoji arrived as two surrogate halves
    text = "x 💄Glow y"
    sp = span(text, "💄Glow")
    broken = "\ud83d\udc84Glow"  # the two UTF-16 halves of 💄 as separate code points
    assert len(broken) == 6 and broken != sp.text
    # when aligned with UTF-16 offsets / then the span is found
    start, end = codepoint_to_utf16(text, sp.start), codepoint_to_utf16(text, sp.end)
    assert align_span(text, start, end, broken) == (sp.start, sp.end)


def test_align_span_gives_none_when_the_text_is_not_there() -> None:
    text = "I love Fenty Beauty"
    assert align_span(text, 7, 12, "Chanel") is None


def test_align_span_without_value_text_trusts_in_range_offsets_only() -> None:
    text = "I love Dior"
    assert align_span(text, 7, 11, None) == (7, 11)
    assert align_span(text, 7, 40, None) is None
    assert align_span(text, -1, 3, None) is None


# --------------------------------------------------------------------------- parse_export


def sample_annotations() -> list[Annotation]:
    t1 = "💄😍 love Fenty Beauty and Dior"
    t2 = "Line one\r\nGlossier  You  smells nice"
    t3 = "no brands in here"
    t4 = "🇫🇷 Chanel"
    p1_spans = (span(t1, "Fenty Beauty"), span(t1, "Dior"))
    return [
        Annotation("p1", t1, p1_spans, 11, "1", "2026-11-20T10:00:00Z"),
        Annotation("p2", t2, (span(t2, "Glossier  You"),), 12, "ann@example.org", None),
        Annotation("p3", t3, (), 13, None, "2026-11-20T11:00:00+00:00"),
        Annotation("p4", t4, (span(t4, "Chanel"),), None, "7", None),
    ]  # fmt: skip


def test_round_trip_annotations_through_export() -> None:
    # given annotations with emoji, CRLF, double spaces, no spans and no task id
    annotations = sample_annotations()
    # when written as an export, serialised as JSON and parsed back
    export = json.loads(json.dumps(annotations_to_export(annotations, CONFIG)))
    parsed = parse_export(export, labels=LABELS, config=CONFIG)
    # then the very same annotations come back, with nothing rejected or repaired
    assert parsed.records == annotations
    assert parsed.rejected == []
    assert parsed.repaired == 0


def test_round_trip_with_another_project_config() -> None:
    # given a project with other names
    config = parse_label_config(
        '<View><Text name="tweet" value="$content"/>'
        '<Labels name="ner" toName="tweet"><Label value="BRAND"/></Labels></View>'
    )
    annotations = sample_annotations()
    # when exported / then the names are the project's and parsing gives the same records
    export = annotations_to_export(annotations, config)
    assert export[0]["annotations"][0]["result"][0]["from_name"] == "ner"
    assert "content" in export[0]["data"]
    assert parse_export(export, labels=LABELS, config=config).records == annotations


def test_export_with_predictions_and_export_shape() -> None:
    # given an annotation and a prediction for the same post
    (first, *_) = sample_annotations()
    prediction = Prediction(first.post_id, first.spans[:1], "v9", score=0.5)
    # when exported with predictions
    (t, *_) = annotations_to_export([first], CONFIG, predictions={first.post_id: prediction})
    # then the task has the LS export keys and the prediction
    (ann,) = t["annotations"]
    assert t["id"] == first.task_id
    assert {"id", "result", "completed_by", "updated_at", "was_cancelled"} <= set(ann)
    assert ann["was_cancelled"] is False
    assert t["predictions"][0]["model_version"] == "v9"
    assert len(t["predictions"][0]["result"]) == 1


def test_parse_export_repairs_utf16_offsets_and_counts_them() -> None:
    # given an export whose offsets are UTF-16 units after emoji
    text = "💄😍 love Fenty Beauty and 🇫🇷 Dior"
    fenty, dior = span(text, "Fenty Beauty"), span(text, "Dior")
    export = [task(1, text, [ls_utf16(text, fenty), ls_utf16(text, dior)], post_id="p1")]
    # when parsed
    parsed = parse_export(export, labels=LABELS, config=CONFIG)
    # then both spans are back on code points and counted as repaired
    (annotation,) = parsed.records
    assert annotation.spans == (fenty, dior)
    assert parsed.repaired == 2
    assert parsed.rejected == []
    # and each repair is named: task, offsets as labelled, offsets as kept
    assert parsed.repairs == {
        "p1": [
            f"task 1: span [{fenty.start + 2}, {fenty.end + 2}) 'Fenty Beauty' -> "
            f"[{fenty.start}, {fenty.end}) 'Fenty Beauty'",
            f"task 1: span [{dior.start + 4}, {dior.end + 4}) 'Dior' -> "
            f"[{dior.start}, {dior.end}) 'Dior'",
        ]
    }


def test_parse_export_uses_the_true_text_slice_when_value_text_collapsed_spaces() -> None:
    # given correct offsets over a double space but a collapsed value.text
    text = "Fenty  Beauty is back"
    sp = span(text, "Fenty  Beauty")
    export = [task(1, text, [result(sp.start, sp.end, "Fenty Beauty")])]
    # when parsed
    parsed = parse_export(export, labels=LABELS)
    # then Span.text is the real slice and the repair is counted
    assert parsed.records[0].spans == (sp,)
    assert parsed.records[0].spans[0].text == "Fenty  Beauty"
    assert parsed.repaired == 1


def test_parse_export_trims_the_spaces_a_selection_took_and_counts_the_repair() -> None:
    # given selections that took spaces around the word (a trial's "Glossier   "), and one
    # of spaces only
    text = "new drop from Glossier   today, and  Dior"
    padded = span(text, "Glossier   ")
    before = span(text, "  Dior")
    export = [
        task(
            1,
            text,
            [
                result(padded.start, padded.end, padded.text),
                result(before.start, before.end, before.text),
            ],
        ),
        task(2, "a   b", [result(1, 4, "   ")]),
    ]
    # when parsed
    parsed = parse_export(export, labels=LABELS, config=CONFIG, keep_partial=True)
    # then the spans are the words, repaired and counted; the blank one is rejected by name
    assert parsed.records[0].spans == (span(text, "Glossier"), span(text, "Dior"))
    assert parsed.repaired == 2
    assert [r.record_id for r in parsed.rejected] == ["2"]
    assert "only whitespace" in parsed.rejected[0].reason


def test_parse_export_crlf_offsets() -> None:
    # given a CRLF text and offsets that count CRLF as one char
    text = "Hello\r\nI love\r\nRare Beauty"
    sp = span(text, "Rare Beauty")
    export = [task(1, text, [result(sp.start - 2, sp.end - 2, "Rare Beauty")])]
    # when parsed / then the span is repaired
    parsed = parse_export(export, labels=LABELS, config=CONFIG)
    assert parsed.records[0].spans == (sp,)
    assert parsed.repaired == 1


def test_unrepairable_span_is_rejected_and_the_rest_kept() -> None:
    # given a post with one good and one hopeless span, and another good post
    text = "I love Dior and Chanel"
    good = span(text, "Dior")
    export = [
        task(1, text, [result(good.start, good.end, "Dior"), result(16, 22, "Prada")]),
        task(2, "Glossier rocks", [result(0, 8, "Glossier")]),
    ]
    # when parsed
    parsed = parse_export(export, labels=LABELS, config=CONFIG)
    # then the good span and the good post are kept
    assert [a.post_id for a in parsed.records] == ["1", "2"]
    assert parsed.records[0].spans == (good,)
    # and the bad span is reported naming the task, the post and the text
    (rejected,) = parsed.rejected
    assert rejected.record_id == "1"
    assert "task 1" in rejected.reason and "Prada" in rejected.reason


def test_a_span_without_value_text_is_kept_on_word_edges_and_rejected_inside_a_word() -> None:
    # given spans with no value.text (an export made by hand): offsets on word edges, and
    # offsets off by a few characters (a trial's 'e: Estee Lau' went into the gold set)
    text = "Love these: Estee Lauder and Dior"
    export = [
        task(1, text, [result(29, 33, None)]),
        task(2, text, [result(9, 21, None)]),
        task(3, "Dior", [result(0, 4, None)]),
    ]
    # when parsed as the pull parses (a post that lost a span is left out whole)
    parsed = parse_export(export, labels=LABELS, config=CONFIG, keep_partial=False)
    # then the spans on word edges are kept as they are, and the one that cuts words is
    # rejected with its post, saying why
    assert [(a.post_id, [s.text for s in a.spans]) for a in parsed.records] == [
        ("1", ["Dior"]),
        ("3", ["Dior"]),
    ]
    said = [r.reason for r in parsed.rejected if r.record_id == "2"]
    assert any(
        reason.endswith(
            "span [9, 21) (no text) BRAND: no value.text to check the offsets against, and they "
            "cut a word ('e: Estee Lau')"
        )
        for reason in said
    )


def test_keep_partial_false_rejects_a_post_that_lost_a_span() -> None:
    # given the same export / when parsed strictly
    text = "I love Dior and Chanel"
    export = [
        task(1, text, [result(7, 11, "Dior"), result(16, 22, "Prada")]),
        task(2, "Glossier rocks", [result(0, 8, "Glossier")]),
    ]
    parsed = parse_export(export, labels=LABELS, config=CONFIG, keep_partial=False)
    # then the whole post is rejected, the other post kept
    assert [a.post_id for a in parsed.records] == ["2"]
    assert any("lost a span" in r.reason for r in parsed.rejected)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (result("7", "11", "Dior"), "not integers"),
        (result(7.0, 11.0, "Dior"), "not integers"),
        (result(True, 11, "Dior"), "not integers"),
        (result(11, 7, "Dior"), "end <= start"),
        (result(7, 7, ""), "end <= start"),
        ({"type": "labels", "from_name": "label", "value": "Dior"}, "no 'value'"),
        ("not a result", "not an object"),
        ({**result(7, 11, "Dior"), "value": {"start": 7, "end": 11, "labels": []}}, "one label"),
    ],
)
def test_malformed_spans_are_rejected_with_task_id(bad: Any, reason: str) -> None:
    # given a task with one good and one malformed result
    text = "I love Dior and Chanel"
    good = span(text, "Chanel")
    export = [task(5, text, [bad, result(good.start, good.end, "Chanel")])]
    # when parsed
    parsed = parse_export(export, labels=LABELS, config=CONFIG)
    # then the good span is kept and the bad one reported with the task id and reason
    assert parsed.records[0].spans == (good,)
    (rejected,) = parsed.rejected
    assert "task 5" in rejected.reason and reason in rejected.reason


def test_malformed_tasks_are_rejected_and_the_rest_kept() -> None:
    # given an export mixing broken tasks with a good one
    good = task(9, "Dior", [result(0, 4, "Dior")], post_id="p9")
    no_text = task(2, "x", [])
    del no_text["data"]["text"]
    blank = task(3, "   ", [])
    no_data = {"id": 4, "annotations": []}
    bad_result = task(6, "Dior", [])
    bad_result["annotations"][0]["result"] = "oops"
    export = ["garbage", no_text, blank, no_data, bad_result, good]
    # when parsed
    parsed = parse_export(export, labels=LABELS, config=CONFIG)
    # then only the good task is kept and each broken one is named
    assert [a.post_id for a in parsed.records] == ["p9"]
    reasons = [r.reason for r in parsed.rejected]
    assert len(reasons) == 5
    assert "export item #0" in reasons[0]
    for ident, reason in zip((2, 3, 4, 6), reasons[1:], strict=True):
        assert f"task {ident}" in reason


def test_a_task_whose_annotations_are_not_a_list_is_named_by_its_post_id() -> None:
    # given a task with data.post_id "m2" whose annotations are an object (a trial's was
    # named "<no id>"), and one without any id of its own but its task id
    broken = task(8002, "Dior", [], post_id="m2")
    broken["annotations"] = {"result": []}
    bare = {"id": 8003, "data": {"text": "Dior"}, "annotations": "oops"}
    # when parsed
    parsed = parse_export([broken, bare], labels=LABELS, config=CONFIG)
    # then each is rejected under the id the pull reads it by
    assert [(r.record_id, r.reason) for r in parsed.rejected] == [
        ("m2", "task 8002: 'annotations' is not a list"),
        ("8003", "task 8003: 'annotations' is not a list"),
    ]


def test_an_annotation_without_a_result_is_rejected_not_read_as_no_brand() -> None:
    # given a labelled post whose annotation lost its 'result' (a trial's hand-edited
    # export), one whose 'result' is null, and one that says "no brand" ([])
    missing = task(1, "new nivea cream", [result(4, 9, "nivea")], post_id="p1")
    del missing["annotations"][0]["result"]
    null = task(2, "new nivea cream", [result(4, 9, "nivea")], post_id="p2")
    null["annotations"][0]["result"] = None
    none = task(3, "new cream", [], post_id="p3")
    # when parsed
    parsed = parse_export([missing, null, none], labels=LABELS, config=CONFIG)
    # then only the brand-less post is kept; the other two are named, with why
    assert [(a.post_id, a.spans) for a in parsed.records] == [("p3", ())]
    reasons = sorted(r.reason for r in parsed.rejected)
    assert len(reasons) == 2
    assert "task 1" in reasons[0] and "its 'result' is missing" in reasons[0]
    assert "task 2" in reasons[1] and "its 'result' is null" in reasons[1]


def test_unknown_label_span_is_rejected_naming_task_and_label() -> None:
    # given a span labelled PRODUCT while we only know BRAND
    text = "Fenty Gloss Bomb"
    export = [task(3, text, [result(0, 5, "Fenty"), result(6, 16, "Gloss Bomb", "PRODUCT")])]
    # when parsed
    parsed = parse_export(export, labels=LABELS, config=CONFIG)
    # then the BRAND span is kept and PRODUCT reported
    assert parsed.records[0].spans == (Span(0, 5, "BRAND", "Fenty"),)
    (rejected,) = parsed.rejected
    assert "task 3" in rejected.reason and "'PRODUCT'" in rejected.reason


def test_results_of_other_controls_and_types_are_ignored() -> None:
    # given a choices result and a labels result from another control
    text = "Dior is great"
    choice = {"type": "choices", "from_name": "sentiment", "value": {"choices": ["pos"]}}
    other = result(0, 4, "Dior", from_name="other_labels")
    export = [task(1, text, [choice, other, result(0, 4, "Dior")])]
    # when parsed with the project config
    parsed = parse_export(export, labels=LABELS, config=CONFIG)
    # then only our control's span is read and nothing is rejected
    assert parsed.records[0].spans == (Span(0, 4, "BRAND", "Dior"),)
    assert parsed.rejected == []


def test_results_of_other_types_are_ignored_without_a_config() -> None:
    # given a relation and a textarea result next to a span, and no project config
    text = "Dior is great"
    relation = {"type": "relation", "from_id": "a", "to_id": "b", "direction": "right"}
    textarea = {"type": "textarea", "from_name": "label", "value": {"text": ["note"]}}
    export = [task(1, text, [relation, textarea, result(0, 4, "Dior")])]
    # when parsed / then only the labels result is read and nothing is rejected
    parsed = parse_export(export, labels=LABELS)
    assert parsed.records[0].spans == (Span(0, 4, "BRAND", "Dior"),)
    assert parsed.rejected == []


def test_latest_non_cancelled_annotation_wins() -> None:
    # given three annotations: old, newest-but-cancelled, middle
    text = "Dior and Chanel"
    t = task(1, text, [result(0, 4, "Dior")], updated_at="2026-11-01T00:00:00Z")
    t["annotations"] += [
        {"id": 2, "result": [], "was_cancelled": True, "updated_at": "2026-11-03T00:00:00Z"},
        {
            "id": 3,
            "result": [result(9, 15, "Chanel")],
            "was_cancelled": False,
            "completed_by": {"id": 4, "email": "b@example.org"},
            "updated_at": "2026-11-02T00:00:00+00:00",
        },
    ]
    # when parsed
    (annotation,) = parse_export([t], labels=LABELS, config=CONFIG).records
    # then the middle one (latest usable) is used, with its annotator's email
    assert annotation.spans == (Span(9, 15, "BRAND", "Chanel"),)
    assert annotation.annotator == "b@example.org"
    assert annotation.updated_at == "2026-11-02T00:00:00+00:00"


def test_task_with_only_cancelled_or_no_annotations_is_left_out_as_unlabelled() -> None:
    # given a cancelled-only task, a task without annotations (a later snapshot holds a task
    # whose every annotation was deleted so), and a good task
    cancelled = task(1, "Dior", [result(0, 4, "Dior")], cancelled=True)
    empty = {"id": 2, "data": {"text": "Chanel"}, "annotations": []}
    good = task(3, "Nars", [result(0, 4, "Nars")])
    # when parsed
    parsed = parse_export([cancelled, empty, good], labels=LABELS, config=CONFIG)
    # then both are left out as unlabelled, not rejected (a trial saw deleted labels
    # reported as bad records on every pull), and the good one is kept
    assert [a.post_id for a in parsed.records] == ["3"]
    assert parsed.unlabelled == ["1", "2"] and parsed.rejected == []


def test_post_id_falls_back_to_data_id_then_task_id() -> None:
    # given tasks with data.post_id, data.id, or neither
    a = task(1, "Dior", [], post_id="tweet-1")
    b = task(2, "Dior", [])
    b["data"]["id"] = 12345
    c = task(3, "Dior", [])
    # when parsed / then ids are taken in that order and task ids are kept
    records = parse_export([a, b, c], labels=LABELS).records
    assert [(r.post_id, r.task_id) for r in records] == [("tweet-1", 1), ("12345", 2), ("3", 3)]


def test_overlapping_spans_keep_the_longer() -> None:
    # given overlapping spans and an exact duplicate
    text = "love Fenty Beauty so much"
    long, short = span(text, "Fenty Beauty"), span(text, "Beauty")
    export = [
        task(
            1,
            text,
            [
                result(short.start, short.end, "Beauty"),
                result(long.start, long.end, "Fenty Beauty"),
                result(long.start, long.end, "Fenty Beauty"),
            ],
        )
    ]
    # when parsed
    parsed = parse_export(export, labels=LABELS, config=CONFIG)
    # then only the longer span is kept, the others reported
    assert parsed.records[0].spans == (long,)
    assert len(parsed.rejected) == 2
    assert any("duplicates" in r.reason for r in parsed.rejected)
    assert any("'Beauty'" in r.reason and "overlaps" in r.reason for r in parsed.rejected)


def test_duplicate_post_ids_keep_the_most_recent_annotation() -> None:
    # given the same post in two tasks, the newer one listed first
    newer = task(8, "Dior", [result(0, 4, "Dior")], post_id="p", updated_at="2026-11-21T00:00:00Z")
    older = task(7, "Dior", [], post_id="p", updated_at="2026-11-20T00:00:00Z")
    # when parsed in both orders
    for export in ([newer, older], [older, newer]):
        parsed = parse_export(copy.deepcopy(export), labels=LABELS, config=CONFIG)
        # then the newer annotation is kept and the older one reported
        (record,) = parsed.records
        assert record.task_id == 8 and record.spans
        (rejected,) = parsed.rejected
        assert rejected.record_id == "p"
        assert "task 7" in rejected.reason and "task 8" in rejected.reason
        assert "texts differ" not in rejected.reason
    # and when the two tasks hold different texts (an id reused by another file), it says so
    other = task(9, "Glossier", [result(0, 8, "Glossier")], post_id="p")
    parsed = parse_export([older, other], labels=LABELS, config=CONFIG)
    assert "their texts differ: a source reused the id" in parsed.rejected[0].reason


def test_duplicate_post_ids_without_dates_say_how_the_kept_one_was_chosen() -> None:
    # Given the same post in two tasks whose annotations carry no date (a trial was told
    # "the annotation of task 2 (updated None) is more recent")
    first, second = (task(n, "Dior", [result(0, 4, "Dior")], post_id="p") for n in (1, 2))
    for item in (first, second):
        del item["annotations"][0]["updated_at"]
    parsed = parse_export([first, second], labels=LABELS, config=CONFIG)
    # Then the higher annotation id is kept, and said to be why
    (rejected,) = parsed.rejected
    assert "None" not in rejected.reason
    assert "(no date on either; the higher annotation id, 20) is more recent" in rejected.reason
    # and without ids either, the later in the export
    for item in (first, second):
        del item["annotations"][0]["id"]
    (rejected,) = parse_export([first, second], labels=LABELS, config=CONFIG).rejected
    assert "(no date or annotation id on either; the later in the export)" in rejected.reason


def test_empty_export_gives_nothing() -> None:
    parsed = parse_export([], labels=LABELS, config=CONFIG)
    assert (parsed.records, parsed.rejected, parsed.repaired) == ([], [], 0)


@pytest.mark.parametrize("export", [{"tasks": []}, "[]", None, 3])
def test_non_list_export_is_an_error(export: Any) -> None:
    with pytest.raises(LabelStudioError, match="list of tasks"):
        parse_export(export, labels=LABELS)
