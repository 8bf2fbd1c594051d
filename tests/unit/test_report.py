"""Counts of things read as English: one post, two posts."""

from __future__ import annotations

import pytest

from flows.train_ner import Pulled
from ner.report import quantity


@pytest.mark.parametrize(
    ("n", "noun", "plural", "said"),
    [
        (1, "post", None, "1 post"),
        (0, "post", None, "0 posts"),
        (2, "span", None, "2 spans"),
        (1234, "post", None, "1,234 posts"),
        (1, "batch", "batches", "1 batch"),
        (3, "batch", "batches", "3 batches"),
    ],
)
def test_a_count_agrees_with_its_noun(n: int, noun: str, plural: str | None, said: str) -> None:
    assert quantity(n, noun, plural) == said


def test_the_pull_line_of_one_post_reads_in_the_singular() -> None:
    # Given a pull of one labelled post with one repaired span and one superseded record
    pulled = Pulled(
        annotations_key="annotations/s.jsonl",
        n_annotations=1,
        n_rejected=0,
        n_repaired=1,
        n_superseded=1,
        n_deleted_annotations=1,
    )
    # Then the model card's line says so without "1 posts"
    note = pulled.quality_note()
    assert note.startswith("1 labelled post pulled: 0 rejected, 1 span repaired, ")
    assert "1 post whose earlier records a newer annotation superseded" in note
    assert "1 annotation deleted" in note
    assert "1 posts" not in note and "1 spans" not in note


def test_a_loops_result_as_markdown_has_its_status_and_rounds() -> None:
    from flows.feedback_loop import LoopResult, LoopStatus

    empty = LoopResult(status=LoopStatus.NO_NEW_POSTS)
    assert empty.markdown() == "# feedback-loop: no_new_posts\n\nno round\n"


def test_a_round_that_trained_nothing_shows_no_challenger_score() -> None:
    from flows.feedback_loop import RoundResult
    from flows.train_ner import TrainStatus, TrainSummary

    # a trial read the earlier version's score as a challenger's, in an already_trained round
    earlier = TrainSummary(
        status=TrainStatus.ALREADY_TRAINED,
        labels=30,
        rejected=0,
        challenger_version="3",
        challenger_f1=0.738,
    )
    row = RoundResult(round=1, posts_sent=0, model_used=None, new_labels=0, train=earlier)
    assert row.table_row()["challenger_f1"] is None and row.table_row()["labels"] == 30


def test_a_round_that_timed_out_shows_the_champion_that_predicted_it() -> None:
    from flows.feedback_loop import TIMED_OUT, LoopResult, RoundResult

    # a trial read "champion after: -" in a round that waited in vain while v5 was champion
    waited = RoundResult(round=2, posts_sent=5, model_used="brand-ner-dev/5", new_labels=0)
    table = LoopResult(status=TIMED_OUT, rounds=[waited]).markdown()
    assert table.splitlines()[-1] == (
        "| 2 | 5 | - | - | - | no | brand-ner-dev/5 | timed_out_waiting_for_labels |"
    )
    # and one that waited with no champion yet says so (a trial read the cold start's name)
    first = RoundResult(
        round=1, posts_sent=5, model_used="gazetteer-ddba8ce43e", cold_start=True, new_labels=0
    )
    table = LoopResult(status=TIMED_OUT, rounds=[first]).markdown()
    assert "| no | none (cold start gazetteer-ddba8ce43e) | timed_out" in table


def test_the_champion_after_a_round_is_the_one_promoted_else_the_one_kept() -> None:
    from ner.report import rounds_table

    promoted = {"champion_model": "gazetteer-1", "promoted_version": "2", "status": "promoted"}
    kept = {"champion_model": "brand-ner-dev/2", "champion_version": "2", "status": "refused"}
    cold = {"champion_model": "gazetteer-1", "status": "threshold_met"}
    rows = rounds_table([promoted, kept, cold]).splitlines()[2:]
    assert [row.split(" | ")[6] for row in rows] == ["v2", "v2", "gazetteer-1"]
