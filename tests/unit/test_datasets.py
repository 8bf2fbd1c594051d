"""Splits, dataset hashes, frozen gold sets and spaCy conversion in ner.datasets."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import spacy

from ner.datasets import (
    CURRENT_KEY,
    DEFAULT_SALT,
    GoldSet,
    GoldSetError,
    annotation_to_doc,
    current_gold_set_name,
    dataset_hash,
    freeze_gold_set,
    gold_set_annotations_key,
    gold_set_history,
    gold_set_key,
    load_gold_set,
    pooled_post_ids,
    prepare_splits,
    read_annotations,
    reinstate_gold_set,
    retire_gold_set,
    retirement,
    split,
    split_of,
    split_point,
    to_docbin,
    train_pool,
    would_freeze,
    write_annotations,
    write_docbin,
)
from ner.errors import DataError
from ner.storage import LocalStorage
from ner.types import Annotation, Span

REPO = Path(__file__).resolve().parents[2]


def span_of(text: str, sub: str, label: str = "BRAND", occurrence: int = 0) -> Span:
    start = -1
    for _ in range(occurrence + 1):
        start = text.index(sub, start + 1)
    return Span(start, start + len(sub), label, sub)


def annotation(post_id: str, text: str, *subs: str, **extra: object) -> Annotation:
    return Annotation(post_id, text, tuple(span_of(text, s) for s in subs), **extra)  # type: ignore[arg-type]


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def corpus(n: int) -> list[Annotation]:
    return [annotation(f"id{i}", f"post {i} about Nike", "Nike") for i in range(n)]


# Split ---------------------------------------------------------------------------------------


def test_split_of_is_stable_across_calls_and_order() -> None:
    # given ids in two different orders
    ids = [f"18{i:07d}" for i in range(500)]
    shuffled = ids[:]
    random.Random(3).shuffle(shuffled)
    # when
    first = {i: split_of(i, 0.3) for i in ids}
    second = {i: split_of(i, 0.3) for i in shuffled}
    # then
    assert first == second
    assert {split_of(i, 0.3) for i in ids} == {"gold", "train"}


def test_split_of_does_not_depend_on_python_hash_seed() -> None:
    # given the splits computed here
    ids = [f"post-{i}" for i in range(200)]
    here = [split_of(i, 0.3) for i in ids]
    code = (
        "import json, sys; from ner.datasets import split_of; "
        "print(json.dumps([split_of(i, 0.3) for i in json.loads(sys.argv[1])]))"
    )
    # when computed in fresh interpreters with different hash seeds
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        out = subprocess.run(
            [sys.executable, "-c", code, json.dumps(ids)],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        # then
        assert json.loads(out.stdout) == here


def test_gold_fraction_is_approximately_respected_on_10k_ids() -> None:
    # given 10,000 ids
    ids = [f"{1_700_000_000_000 + 7 * i}" for i in range(10_000)]
    for fraction in (0.1, 0.3, 0.5):
        # when
        share = sum(split_of(i, fraction) == "gold" for i in ids) / len(ids)
        # then within 4 standard deviations of a binomial share
        sd = (fraction * (1 - fraction) / len(ids)) ** 0.5
        assert abs(share - fraction) < 4 * sd


def test_raising_the_fraction_only_moves_posts_into_gold() -> None:
    ids = [f"x{i}" for i in range(2000)]
    small = {i for i in ids if split_of(i, 0.2) == "gold"}
    large = {i for i in ids if split_of(i, 0.4) == "gold"}
    assert small < large


def test_salt_changes_the_split_and_fraction_bounds_are_checked() -> None:
    ids = [f"x{i}" for i in range(300)]
    assert [split_of(i, 0.5) for i in ids] != [split_of(i, 0.5, salt="other") for i in ids]
    assert all(split_of(i, 0.0) == "train" for i in ids)
    assert all(split_of(i, 1.0) == "gold" for i in ids)
    assert all(0.0 <= split_point(i) < 1.0 for i in ids)
    with pytest.raises(ValueError):
        split_of("x", 1.5)


def test_split_partitions_in_input_order() -> None:
    # given
    data = corpus(60)
    # when
    gold, train = split(data, 0.3)
    # then every post is on exactly the side split_of says, order kept
    assert len(gold) + len(train) == len(data)
    assert all(split_of(a.post_id, 0.3) == "gold" for a in gold)
    assert all(split_of(a.post_id, 0.3) == "train" for a in train)
    assert [a.post_id for a in gold] == [a.post_id for a in data if a in gold]


# Hash ----------------------------------------------------------------------------------------


def test_dataset_hash_ignores_record_and_span_order() -> None:
    # given the same content in different orders
    text = "Nike and Glossier"
    a = Annotation("a", text, (span_of(text, "Nike"), span_of(text, "Glossier")))
    a_swapped = Annotation("a", text, (span_of(text, "Glossier"), span_of(text, "Nike")))
    b = annotation("b", "love Fenty", "Fenty")
    # then
    assert dataset_hash([a, b]) == dataset_hash([b, a_swapped])
    assert len(dataset_hash([a, b])) == 64


def test_dataset_hash_ignores_annotator_time_and_task() -> None:
    base = annotation("a", "love Fenty", "Fenty")
    relabelled = annotation(
        "a", "love Fenty", "Fenty", annotator="bob", updated_at="2026-01-01", task_id=9
    )
    assert dataset_hash([base]) == dataset_hash([relabelled])


def test_dataset_hash_changes_with_a_span_label_text_or_post() -> None:
    text = "love Fenty Beauty"
    base = Annotation("a", text, (span_of(text, "Fenty"),))
    reference = dataset_hash([base])
    wider = Annotation("a", text, (span_of(text, "Fenty Beauty"),))
    relabel = Annotation("a", text, (span_of(text, "Fenty", "PRODUCT"),))
    no_span = Annotation("a", text, ())
    other_text = annotation("a", "love Fenty Beauty!", "Fenty")
    other_id = Annotation("b", text, (span_of(text, "Fenty"),))
    hashes = {dataset_hash([x]) for x in (wider, relabel, no_span, other_text, other_id)} | {
        reference
    }
    assert len(hashes) == 6
    assert dataset_hash([]) != reference


# JSONL ---------------------------------------------------------------------------------------


def test_annotations_round_trip_through_storage(tmp_path: Path) -> None:
    # given annotations with emoji and an annotator
    storage = LocalStorage(tmp_path)
    data = [
        annotation("1", "😍😍 Glossier balm", "Glossier", annotator="ann", task_id=3),
        annotation("2", "nothing here"),
    ]
    # when
    write_annotations(storage, "exports/a.jsonl", data)
    back = list(read_annotations(storage, "exports/a.jsonl"))
    # then
    assert back == data


def test_read_annotations_names_the_bad_line(tmp_path: Path) -> None:
    # given a file whose second line has a span that does not match its text
    storage = LocalStorage(tmp_path)
    good = annotation("1", "love Nike", "Nike")
    bad = {
        "post_id": "2",
        "text": "abc",
        "spans": [{"start": 0, "end": 2, "label": "B", "text": "xy"}],
    }
    storage.write_lines("a.jsonl", [json.dumps(good.to_dict()), "", json.dumps(bad)])
    # when / then
    reader = read_annotations(storage, "a.jsonl")
    assert next(reader) == good
    with pytest.raises(DataError, match=r"a\.jsonl:3"):
        next(reader)


# Gold set ------------------------------------------------------------------------------------


def test_freeze_then_load_returns_the_gold_split(tmp_path: Path) -> None:
    # given 40 annotated posts
    storage = LocalStorage(tmp_path)
    data = corpus(40)
    expected_gold, _ = split(data, 0.3)
    when = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
    # when
    gold_set = freeze_gold_set(storage, data, 0.3, now=when)
    loaded = load_gold_set(storage)
    # then
    assert loaded is not None
    stored, annotations = loaded
    assert stored == gold_set
    assert gold_set.post_ids == tuple(sorted(a.post_id for a in expected_gold))
    assert gold_set.hash == dataset_hash(expected_gold)
    assert gold_set.salt == DEFAULT_SALT
    assert gold_set.gold_fraction == 0.3
    assert gold_set.name.startswith("gold-20261122T100000Z-")
    assert sorted(annotations, key=lambda a: a.post_id) == sorted(
        expected_gold, key=lambda a: a.post_id
    )
    assert storage.exists(gold_set_key(gold_set.name))
    assert storage.exists(gold_set_annotations_key(gold_set.name))
    assert storage.read_json(CURRENT_KEY) == {"name": gold_set.name}
    assert expected_gold[0].post_id in gold_set
    assert "not-a-post" not in gold_set


def test_second_freeze_keeps_the_first_gold_set(tmp_path: Path) -> None:
    # given a frozen gold set from round 1
    storage = LocalStorage(tmp_path)
    first = freeze_gold_set(storage, corpus(30), 0.3, name="round1")
    # when round 2 has more annotations (and a relabel of a gold post)
    more = corpus(80)
    relabel = annotation(first.post_ids[0], "totally new text Fenty", "Fenty")
    round2 = [relabel if a.post_id == relabel.post_id else a for a in more]
    second = freeze_gold_set(storage, round2, 0.3, name="round2")
    # then the first set is still in force, unchanged
    assert second == first
    loaded = load_gold_set(storage)
    assert loaded is not None
    assert loaded[0] == first
    assert dataset_hash(loaded[1]) == first.hash
    assert not storage.exists(gold_set_key("round2"))


def test_load_without_any_gold_set_is_none(tmp_path: Path) -> None:
    assert load_gold_set(LocalStorage(tmp_path)) is None


def test_load_falls_back_to_the_latest_name_without_current(tmp_path: Path) -> None:
    # given two gold sets copied in by hand and no CURRENT pointer
    storage = LocalStorage(tmp_path / "env")
    older = freeze_gold_set(storage, corpus(30), 0.3, name="gold-2026-01")
    elsewhere = LocalStorage(tmp_path / "other")
    newer = freeze_gold_set(elsewhere, corpus(30), 0.5, name="gold-2026-02")
    for key in (newer.key, newer.annotations_key):
        storage.write_bytes(key, elsewhere.read_bytes(key))
    storage.delete(CURRENT_KEY)
    # when
    loaded = load_gold_set(storage)
    # then
    assert loaded is not None
    assert loaded[0] == newer
    assert loaded[0] != older


def test_freeze_refuses_an_empty_gold_split(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    data = corpus(10)
    train_only = [a for a in data if split_of(a.post_id, 0.3) == "train"]
    with pytest.raises(GoldSetError, match="gold split"):
        freeze_gold_set(storage, train_only, 0.3)
    assert load_gold_set(storage) is None


def test_freeze_refuses_duplicate_posts(tmp_path: Path) -> None:
    data = corpus(5)
    with pytest.raises(DataError, match="more than once"):
        freeze_gold_set(LocalStorage(tmp_path), [*data, data[0]], 0.5)


def test_load_detects_tampered_annotations(tmp_path: Path) -> None:
    # given a frozen set whose annotation file was edited afterwards
    storage = LocalStorage(tmp_path)
    gold_set = freeze_gold_set(storage, corpus(30), 0.3)
    annotations = list(read_annotations(storage, gold_set.annotations_key))
    edited = [Annotation(a.post_id, a.text, ()) for a in annotations]
    write_annotations(storage, gold_set.annotations_key, edited)
    # when / then
    with pytest.raises(GoldSetError, match="hash"):
        load_gold_set(storage)


def test_gold_set_dict_round_trip_and_validation() -> None:
    gold_set = GoldSet("g", ("a", "b"), "h" * 64, "2026-11-22T00:00:00+00:00", "s", 0.3)
    assert GoldSet.from_dict(json.loads(json.dumps(gold_set.to_dict()))) == gold_set
    with pytest.raises(GoldSetError):
        GoldSet.from_dict({"name": "g"})


def test_train_pool_never_includes_gold_posts(tmp_path: Path) -> None:
    # given a gold set frozen early, and later annotations, some of them in the gold split
    storage = LocalStorage(tmp_path)
    early = corpus(20)
    gold_set = freeze_gold_set(storage, early, 0.3)
    later = corpus(200)
    # when
    pool = train_pool(later, gold_set)
    # then no frozen post and no post of the gold split is trained on
    pool_ids = {a.post_id for a in pool}
    assert not pool_ids & set(gold_set.post_ids)
    assert all(split_of(i, 0.3) == "train" for i in pool_ids)
    late_gold = {
        a.post_id for a in later if split_of(a.post_id, 0.3) == "gold" and a.post_id not in gold_set
    }
    assert late_gold  # the case the rule exists for actually occurs
    assert not pool_ids & late_gold
    # and every train-split post is kept
    assert pool_ids == {a.post_id for a in later if split_of(a.post_id, 0.3) == "train"}


def test_train_pool_with_a_changed_fraction_excludes_either_gold_split() -> None:
    # given a gold set frozen at 0.2 and a setting later raised to 0.4
    gold_set = GoldSet("g", (), "h", "t", DEFAULT_SALT, 0.2)
    data = corpus(300)
    # when
    pool = train_pool(data, gold_set, gold_fraction=0.4)
    # then a post must be train under both
    assert {a.post_id for a in pool} == {
        a.post_id for a in data if split_of(a.post_id, 0.4) == "train"
    }
    with pytest.raises(ValueError):
        train_pool(data, None)


# spaCy conversion ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nlp() -> spacy.language.Language:
    return spacy.blank("en")


def test_to_docbin_keeps_emoji_offsets_and_rejects_only_the_bad_span(
    nlp: spacy.language.Language,
) -> None:
    # given emoji before the brands, a ZWJ family emoji, and one span that covers only
    # whitespace (no token can carry it)
    text = "👩‍👩‍👧 Love 😍😍 my Glossier balm!!  and Fenty Beauty"
    gap = text.index("  ")
    spans = (
        span_of(text, "Glossier"),
        span_of(text, "Fenty Beauty"),
        Span(gap, gap + 1, "BRAND", " "),
    )
    data = [Annotation("p1", text, spans), annotation("p2", "no brand here")]
    # when
    docbin, rejected = to_docbin(data, nlp)
    docs = list(docbin.get_docs(nlp.vocab))
    # then both posts are kept, the two good spans survive with their exact text
    assert len(docs) == 2
    assert [(e.text, e.label_) for e in docs[0].ents] == [
        ("Glossier", "BRAND"),
        ("Fenty Beauty", "BRAND"),
    ]
    assert [e.start_char for e in docs[0].ents] == [spans[0].start, spans[1].start]
    assert [r.record_id for r in rejected] == ["p1"]
    assert "does not cover any token" in rejected[0].reason
    # tokens outside entities are O, and the post without brands is all O
    assert {t.ent_iob_ for t in docs[0] if not t.ent_type_} == {"O"}
    assert {t.ent_iob_ for t in docs[1]} == {"O"}


def test_partial_token_span_is_expanded_to_its_token(nlp: spacy.language.Language) -> None:
    # given "Glossier" annotated inside the single token "@Glossier"
    text = "thanks @Glossier!"
    doc, rejected = annotation_to_doc(annotation("p", text, "Glossier"), nlp)
    # then the entity is the whole token
    assert rejected == []
    assert [e.text for e in doc.ents] == ["@Glossier"]


def test_overlapping_span_is_rejected_and_its_tokens_marked_missing(
    nlp: spacy.language.Language,
) -> None:
    # given "Nike" and an overlapping "Nike Air" (sorted first: same start, shorter)
    text = "new Nike Air today"
    spans = (span_of(text, "Nike Air"), span_of(text, "Nike"))
    # when
    doc, rejected = annotation_to_doc(Annotation("p", text, spans), nlp)
    # then "Nike" is kept, "Nike Air" is rejected and "Air" is unknown rather than O
    assert [e.text for e in doc.ents] == ["Nike"]
    assert len(rejected) == 1
    assert "overlaps" in rejected[0].reason
    iob = {t.text: t.ent_iob_ for t in doc}
    assert iob == {"new": "O", "Nike": "B", "Air": "", "today": "O"}


def test_write_docbin_writes_a_loadable_file(tmp_path: Path, nlp: spacy.language.Language) -> None:
    # given
    path = tmp_path / "sub" / "train.spacy"
    # when
    count, rejected = write_docbin(corpus(3), nlp, path)
    # then
    from spacy.tokens import DocBin

    docs = list(DocBin().from_disk(path).get_docs(nlp.vocab))
    assert count == len(docs) == 3
    assert rejected == []
    assert all([e.text for e in d.ents] == ["Nike"] for d in docs)


def test_prepare_splits_freezes_once_and_writes_a_gold_free_pool(tmp_path: Path) -> None:
    # given round 1 with 40 posts and round 2 with 120 posts
    storage = LocalStorage(tmp_path)
    round1, round2 = corpus(40), corpus(120)
    # when
    first = prepare_splits(storage, round1, 0.3, train_key="annotations/r1.train.jsonl")
    second = prepare_splits(storage, round2, 0.3, train_key="annotations/r2.train.jsonl")
    # then the gold set is the same both times
    assert first.gold_hash == second.gold_hash
    assert first.n_gold == second.n_gold == len(split(round1, 0.3)[0])
    gold_ids = {a.post_id for a in read_annotations(storage, second.gold_key)}
    pool = list(read_annotations(storage, second.train_key))
    assert len(pool) == second.n_train
    assert dataset_hash(pool) == second.train_hash
    assert not {a.post_id for a in pool} & gold_ids
    # posts of the gold split annotated after the freeze are held out, not trained on
    late_gold = len(split(round2, 0.3)[0]) - len(gold_ids)
    assert second.n_held_out == late_gold > 0
    assert second.n_train + second.n_gold + second.n_held_out == len(round2)


def test_a_gold_set_emptied_by_forget_is_kept_and_a_new_one_freezes_once_retired(
    tmp_path: Path,
) -> None:
    from ner import forget

    # Given a gold set frozen from round 1, whose every post was then forgotten (a trial)
    storage = LocalStorage(tmp_path)
    round1, round2 = corpus(40), corpus(120)
    first = prepare_splits(storage, round1, 0.3, train_key="annotations/r1.train.jsonl")
    gone = [a.post_id for a in read_annotations(storage, first.gold_key)]
    forget.record(storage, gone, by="ops", reason="deleted on X", stamp="s1")
    # When round 2 arrives
    second = prepare_splits(storage, round2, 0.3, train_key="annotations/r2.train.jsonl")
    # Then the emptied set stays in force (a frozen set is never re-split in place)
    assert (second.gold_name, second.n_gold) == (first.gold_name, 0)
    # And once it is retired (train-ner's no_gold note), the next round freezes the gold
    # split of the labels it has, none of them forgotten or ever in a pool
    retire_gold_set(storage, by="ops", reason="emptied by forget")
    live = [a for a in round2 if a.post_id not in gone]  # a pull leaves forgotten posts out
    pooled = pooled_post_ids(storage)
    third = prepare_splits(
        storage, live, 0.3, train_key="annotations/r3.train.jsonl", never_gold=pooled
    )
    new_gold = {a.post_id for a in read_annotations(storage, third.gold_key)}
    assert third.gold_name != first.gold_name and third.n_gold == len(new_gold) > 0
    assert not new_gold & set(gone)
    assert not new_gold & pooled
    assert pooled == {
        a.post_id
        for key in (first.train_key, second.train_key)
        for a in read_annotations(storage, key)
    }


def test_retiring_takes_the_set_out_of_force_and_the_next_one_says_what_it_replaces(
    tmp_path: Path,
) -> None:
    # Given a gold set frozen in round 1, and a trained post that falls in the gold split
    # (the fraction was raised since, say)
    storage = LocalStorage(tmp_path)
    round1, round2 = corpus(40), corpus(120)
    first = prepare_splits(storage, round1, 0.3, train_key="annotations/r1.train.jsonl")
    old_gold = set(load_gold_set(storage)[0].post_ids)  # type: ignore[index]
    # When it is retired
    done = retire_gold_set(storage, by="cli:ops", reason="labels drifted", now=NOW)
    # Then none is in force, the pointer says which was retired, by whom and why, and its
    # files stay as history
    assert current_gold_set_name(storage) is None and load_gold_set(storage) is None
    assert retirement(storage) == done
    assert (done.gold_name, done.by, done.reason) == (first.gold_name, "cli:ops", "labels drifted")
    assert done.retired_at == NOW.isoformat()
    assert storage.exists(gold_set_key(str(first.gold_name)))
    # And a second retirement, or one without a reason, is refused
    with pytest.raises(GoldSetError, match="no gold set is in force") as again:
        retire_gold_set(storage, by="ops", reason="again")
    assert f"{first.gold_name} was retired already" in str(again.value)  # trial L
    assert "labels drifted); the next train freezes a new one" in str(again.value)
    # When round 2 freezes a new one without the posts round 1's pool held
    pooled = pooled_post_ids(storage)
    gold_split_trained = next(
        a.post_id for a in round2 if split_of(a.post_id, 0.5) == "gold" and a.post_id in pooled
    )
    second = prepare_splits(
        storage, round2, 0.5, train_key="annotations/r2.train.jsonl", never_gold=pooled
    )
    # Then the new set keeps the retired set's posts (still gold, never trained on), holds no
    # pooled post, keeps the pooled posts trainable, and names the set it replaces
    new_gold = set(load_gold_set(storage)[0].post_ids)  # type: ignore[index]
    assert second.gold_name != first.gold_name
    assert old_gold <= new_gold and not new_gold & pooled
    assert gold_split_trained in {a.post_id for a in read_annotations(storage, second.train_key)}
    record = storage.read_json(gold_set_key(str(second.gold_name)))
    assert record["replaces"] == first.gold_name and "revised_from" not in record
    assert retirement(storage) is None
    # And the history lists both, oldest first, with their states
    history = gold_set_history(storage)
    assert [(e.name, e.state, e.origin) for e in history] == [
        (first.gold_name, "retired", ""),
        (second.gold_name, "in force", f"replaces {first.gold_name}"),
    ]


def test_a_retired_set_is_not_frozen_again_under_a_new_name(tmp_path: Path) -> None:
    # Given a gold set retired with no label since (a trial got it back, same hash)
    storage = LocalStorage(tmp_path)
    round1 = corpus(40)
    first = prepare_splits(storage, round1, 0.3, train_key="annotations/r1.train.jsonl")
    retire_gold_set(storage, by="ops", reason="new season")
    pooled = pooled_post_ids(storage)
    # When the same labels are split again
    again = prepare_splits(
        storage, round1, 0.3, train_key="annotations/r2.train.jsonl", never_gold=pooled
    )
    # Then nothing is frozen, and the split names the set it would repeat
    assert (again.gold_name, again.n_gold, again.gold_repeats) == (None, 0, first.gold_name)
    assert current_gold_set_name(storage) is None
    # And once new gold posts are labelled, a new set freezes
    more = prepare_splits(
        storage, corpus(120), 0.3, train_key="annotations/r3.train.jsonl", never_gold=pooled
    )
    assert more.gold_name not in (None, first.gold_name) and more.gold_repeats is None
    assert more.gold_hash != first.gold_hash


def test_a_retirement_is_undone_only_while_no_set_was_frozen_since(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    none_retired = r"no gold set was retired in file://.*: nothing to reinstate"
    with pytest.raises(GoldSetError, match=none_retired):
        reinstate_gold_set(storage, by="ops", reason="why")
    # Given a gold set retired with no label since
    first = prepare_splits(storage, corpus(40), 0.3, train_key="annotations/r1.train.jsonl")
    retire_gold_set(storage, by="ops", reason="new season")
    with pytest.raises(GoldSetError, match="needs a reason"):
        reinstate_gold_set(storage, by="ops", reason=" ")
    # When it is reinstated, it is in force again, as it was (its hash, its posts)
    undone = reinstate_gold_set(storage, by="ops", reason="too early")
    assert undone.gold_name == first.gold_name and undone.reason == "new season"
    loaded = load_gold_set(storage)
    assert loaded is not None and loaded[0].hash == first.gold_hash
    assert [e.state for e in gold_set_history(storage)] == ["in force"]
    with pytest.raises(GoldSetError, match="is in force and none was retired: nothing to"):
        reinstate_gold_set(storage, by="ops", reason="twice")
    # And once a set was frozen after a retirement, the retired one stays history
    retire_gold_set(storage, by="ops", reason="again")
    pooled = pooled_post_ids(storage)
    newer = prepare_splits(
        storage, corpus(120), 0.3, train_key="annotations/r2.train.jsonl", never_gold=pooled
    )
    assert newer.gold_name not in (None, first.gold_name)
    # (said so by name: a trial read the words of a set never retired)
    frozen_after = (
        f"gold set {newer.gold_name} is in force: it was frozen after {first.gold_name} was "
        f"retired, so {first.gold_name} stays retired"
    )
    with pytest.raises(GoldSetError, match=frozen_after):
        reinstate_gold_set(storage, by="ops", reason="back")


def test_retiring_needs_a_gold_set_and_a_reason(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(GoldSetError, match=r"no gold set is in force in .*: none was frozen yet"):
        retire_gold_set(storage, by="ops", reason="why")
    prepare_splits(storage, corpus(40), 0.3, train_key="annotations/r1.train.jsonl")
    with pytest.raises(GoldSetError, match="needs a reason"):
        retire_gold_set(storage, by="ops", reason="  ")
    assert current_gold_set_name(storage) is not None


def test_prepare_splits_without_gold_posts_reports_zero(tmp_path: Path) -> None:
    # given only train-split posts
    storage = LocalStorage(tmp_path)
    train_only = [a for a in corpus(20) if split_of(a.post_id, 0.3) == "train"]
    # when
    result = prepare_splits(storage, train_only, 0.3, train_key="t.jsonl")
    # then nothing is frozen and every post is in the pool
    assert result.n_gold == 0
    assert result.gold_hash is None
    assert result.n_train == len(train_only)
    assert load_gold_set(storage) is None


def test_prepare_splits_waits_for_enough_gold_posts_before_freezing(tmp_path: Path) -> None:
    # given a store that wants at least 30 gold posts, and a first round of 40 posts
    storage = LocalStorage(tmp_path)
    round1, round2 = corpus(40), corpus(200)
    assert len(split(round1, 0.3)[0]) < 30 <= len(split(round2, 0.3)[0])
    # when round 1 is prepared, nothing is frozen and its gold-split posts stay untrained
    first = prepare_splits(storage, round1, 0.3, train_key="r1.jsonl", min_gold_posts=30)
    assert (first.n_gold, first.gold_hash, load_gold_set(storage)) == (0, None, None)
    assert first.gold_waiting == len(split(round1, 0.3)[0])
    assert first.n_train == len(split(round1, 0.3)[1])
    # then a later round with enough of them freezes all of its gold split at once
    second = prepare_splits(storage, round2, 0.3, train_key="r2.jsonl", min_gold_posts=30)
    assert second.n_gold == len(split(round2, 0.3)[0]) and second.gold_waiting == 0
    assert len(would_freeze(round2, 0.3, DEFAULT_SALT, ())) == second.n_gold
    # and the recent posts count toward the minimum whatever their split
    recent = {a.post_id for a in split(round1, 0.3)[1][:20]}
    assert len(would_freeze(round1, 0.3, DEFAULT_SALT, recent)) == len(split(round1, 0.3)[0]) + 20
    # and wait out of the pool with the gold split (a trial's were counted in it)
    fresh = LocalStorage(tmp_path / "fresh")
    waiting = prepare_splits(
        fresh, round1, 0.3, train_key="r1.jsonl", min_gold_posts=50, recent=recent
    )
    assert waiting.gold_waiting == len(split(round1, 0.3)[0]) + 20
    assert waiting.n_train == len(split(round1, 0.3)[1]) - 20
    assert waiting.n_held_out == waiting.gold_waiting
    pool = {a.post_id for a in read_annotations(fresh, "r1.jsonl")}
    assert not pool & recent


def test_no_gold_set_is_frozen_from_posts_without_a_single_span(tmp_path: Path) -> None:
    # Given a first round whose gold posts hold no span (a trial's loop froze one brand-less
    # post as the gold set: every model scored 0 on it, for good)
    storage = LocalStorage(tmp_path)
    bare = [Annotation(f"b{i}", "nothing to see here", ()) for i in range(12)]
    first = prepare_splits(storage, bare, 0.5, train_key="r1.jsonl")
    # Then nothing is frozen, and the summary says why
    assert (first.n_gold, load_gold_set(storage)) == (0, None)
    assert first.gold_waiting > 0 and first.gold_has_spans is False
    # And once a gold post with a span is labelled, the gold set freezes with it
    labelled = [*bare, *corpus(40)]
    second = prepare_splits(storage, labelled, 0.5, train_key="r2.jsonl")
    assert second.n_gold > 0 and second.gold_has_spans is True
    loaded = load_gold_set(storage)
    assert loaded is not None and any(a.spans for a in loaded[1])
