"""Spans that cut a token are named, never widened in silence: a gold span frozen as
labelled (``Fenty`` of ``#FentyBeauty``, which no model of spaCy's tokenizer predicts
exactly), and a training span trained widened, in the run's log and on the model card."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest

from flows.context import RunContext
from flows.train_ner import prepare_gold, say_spans
from ner import layout
from ner.modelcard import ModelCard, Recipe, TrainingData, render_model_card
from ner.records import write_records
from ner.settings import load_settings
from ner.tokenizer import blank_en, report_unkept
from ner.types import Annotation, Span

FENTY = "obsessed with #FentyBeauty gloss"
GLOSSIER = "Glossier balm again"


def labelled(post_id: str, text: str, needle: str) -> Annotation:
    start = text.index(needle)
    return Annotation(post_id, text, (Span(start, start + len(needle), "BRAND", needle),))


def local_context(tmp_path: Path) -> RunContext:
    """A run context on a local store whose gold split takes nine posts in ten."""
    settings = load_settings(
        storage_uri=str(tmp_path / "storage"),
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        gold_fraction=0.9,
        gold_min_posts=1,
    )
    return RunContext.open(settings)


def test_a_gold_span_that_cuts_a_token_is_named_when_the_gold_set_freezes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = local_context(tmp_path)
    key = layout.pulled_annotations("s1")
    write_records(
        ctx.storage, key, [labelled("t02", FENTY, "Fenty"), labelled("t03", GLOSSIER, "Glossier")]
    )
    # When the first split freezes both posts as the gold set
    with caplog.at_level(logging.WARNING):
        splits = prepare_gold.fn(ctx, key, "s1")
    # Then the span inside #FentyBeauty is named with its post, and only that one
    assert splits.n_gold >= 1
    named = [
        r.getMessage() for r in caplog.records if "no model predicts exactly" in r.getMessage()
    ]
    assert named == [
        "gold span no model predicts exactly: t02: span [15, 20) 'Fenty' BRAND cuts token(s) "
        "'FentyBeauty'"
    ]


def test_a_cut_span_a_relabel_brings_into_the_gold_set_is_named_too(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from ner import datasets

    ctx = local_context(tmp_path)
    # Given a gold set frozen from posts labelled whole
    first = layout.pulled_annotations("s1")
    good = [labelled(f"t{i:02d}", GLOSSIER, "Glossier") for i in range(8)]
    write_records(ctx.storage, first, good)
    prepare_gold.fn(ctx, first, "s1")
    before = datasets.load_gold_set(ctx.storage)
    assert before is not None
    gold_id = before[0].post_ids[0]
    # When one gold post is relabelled with a span inside a word (trial BH: "Nik" of "Nike")
    second = layout.pulled_annotations("s2")
    fixed = replace(labelled(gold_id, GLOSSIER, "Gloss"), updated_at="2026-12-06T10:00:00Z")
    relabelled = [fixed if a.post_id == gold_id else a for a in good]
    write_records(ctx.storage, second, relabelled)
    with caplog.at_level(logging.WARNING):
        prepare_gold.fn(ctx, second, "s2")
    # Then the new gold version holds it as labelled, and it is named, it alone
    frozen = datasets.load_gold_set(ctx.storage)
    assert frozen is not None and frozen[0].name.endswith("-r2")
    named = {r.getMessage() for r in caplog.records if "predicts exactly" in r.getMessage()}
    assert named == {
        f"gold span no model predicts exactly: {gold_id}: span [0, 5) 'Gloss' BRAND cuts "
        "token(s) 'Glossier'"
    }


def test_spans_are_named_up_to_a_limit_and_carried_to_the_model_card(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cut = report_unkept([labelled(f"t{i}", FENTY, "Fenty") for i in range(12)], blank_en())
    with caplog.at_level(logging.WARNING):
        lines = say_spans("trained widened to whole tokens", cut)
    # every span comes back for the card; the log names ten and counts the rest
    assert len(lines) == 12 and lines[0].startswith("t0: span [15, 20) 'Fenty' BRAND cuts")
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 11 and said[-1] == "trained widened to whole tokens: 2 more spans"
    card = ModelCard(
        model_name="brand-ner",
        version="3",
        training=TrainingData(
            20,
            "h" * 16,
            n_rejected_spans=1,
            left_out=("t30: span [12, 19) 'Sephora' BRAND overlaps another span after alignment",),
            widened=tuple(lines),
            pull_note="40 labelled posts pulled: 4 rejected, 2 spans repaired",
        ),
        recipe=Recipe("en_core_web_md"),
        evaluations=(),
    )
    text = render_model_card(card)
    assert (
        "- spans left out of training: 1\n"
        "  - t30: span [12, 19) 'Sephora' BRAND overlaps another span after alignment\n"
    ) in text
    assert "spans trained widened to whole tokens (they cut a token, so no model of this " in text
    assert ": 12\n  - t0: span [15, 20) 'Fenty' BRAND cuts token(s) 'FentyBeauty'\n" in text
    assert "\n  - and 7 more\n" in text
    # and a forget takes out the lines naming its posts, nothing else
    from ner.modelcard import named_posts, without_posts

    assert named_posts(text, ["t30", "t1", "t99", "t10"]) == {"t30", "t1"}
    forgotten = without_posts(text, ["t30", "t1"])
    assert "t30:" not in forgotten and "  - t1: " not in forgotten and "  - t10" not in text
    assert "  - t0: span" in forgotten and "  - t2: span" in forgotten
    assert len(forgotten.splitlines()) == len(text.splitlines()) - 2
    # and the counts above them count what the card still holds (a trial saw 4 over 3 lines)
    assert "- spans left out of training: 0\n" in forgotten
    assert "predicts them exactly): 11\n  - t0: span" in forgotten
    assert "- 40 labelled posts pulled: 4 rejected, 2 spans repaired\n" in text
