"""The quality benchmark's pure parts: spread over seeds, flow settings, target rows."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from apps.cli import DEMO_RECIPE
from bench.quality import (
    SET_TITLES,
    WNUT_THRESHOLD_FLOOR,
    WNUT_THRESHOLD_MARGIN,
    Recipe,
    Spread,
    TrainedRun,
    best_pretrained,
    flow_overrides,
    recipe_rows,
    recipes,
    set_rows,
)


def scores(f1: float, precision: float = 0.5, recall: float = 0.5) -> dict[str, Any]:
    return {
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "overlap_f1": f1 + 0.05,
        "n_posts": 10,
        "n_gold": 5,
    }


def trained(recipe: str, seed: int, **by_set: dict[str, Any]) -> TrainedRun:
    return TrainedRun(
        recipe=recipe,
        seed=seed,
        status="promoted",
        model_uri="models:/brand-ner@champion",
        tracking_uri="sqlite:///x.db",
        flow_f1=None,
        flow_seconds=10.0,
        train_seconds=8.0,
        n_train=100,
        scores=by_set,
        summary={},
    )


def test_spread_is_the_mean_half_the_range_and_the_lowest_seed() -> None:
    spread = Spread((0.20, 0.26, 0.23))
    assert spread.mean == pytest.approx(0.23)
    assert spread.half_range == pytest.approx(0.03)
    assert spread.low == 0.20
    assert spread.text() == "0.230 ± 0.030 (seeds 0.200 / 0.260 / 0.230)"


def test_flow_overrides_keep_the_recipe_and_set_only_seed_data_and_threshold() -> None:
    # Given the demo recipe, which has a training setting of its own, and the WNUT recipe
    demo = Recipe(
        "demo",
        "demo",
        "beauty_train",
        "beauty_held",
        ("beauty_held",),
        overrides={"gold_recent_fraction": 0.0, "train": {"learn_rate": 0.002}},
    )
    wnut = Recipe("wnut", "wnut", "wnut_train", "wnut_dev", ("wnut_dev",), threshold=0.1)

    # Then a full run changes nothing of the recipe's training, and the flow's default
    # threshold stays unless the recipe names one
    full = flow_overrides(demo, seed=3, quick=False)
    assert full == {
        "gold_recent_fraction": 0.0,
        "train": {"learn_rate": 0.002},
        "seed": 3,
        "gold_fraction": 0.0,
    }
    assert flow_overrides(wnut, seed=1, quick=False)["threshold"] == 0.1
    # And a quick run trains one epoch without losing the recipe's own training settings
    quick = flow_overrides(demo, seed=3, quick=True)
    assert quick["train"] == {"learn_rate": 0.002, "max_epochs": 1, "accurate_epochs": 1}
    assert demo.overrides["train"] == {"learn_rate": 0.002}
    # And a quick run draws a few rehearsal posts, not the whole set
    rehearsed = replace(demo, overrides={"train": {"rehearsal_uri": "set.json"}})
    assert flow_overrides(rehearsed, seed=1, quick=True)["train"]["rehearsal_posts"] == 40
    assert "rehearsal_posts" not in flow_overrides(rehearsed, seed=1, quick=False)["train"]


def test_the_demo_champion_is_trained_with_the_demo_recipe_and_scored_across_domains() -> None:
    wnut, demo = recipes(0.28)
    assert dict(demo.overrides) == DEMO_RECIPE and demo.threshold is None
    assert demo.evaluation == ("beauty_held", "wnut_dev")
    assert wnut.overrides == {} and wnut.threshold == 0.28
    assert set(wnut.evaluation) | set(demo.evaluation) <= set(SET_TITLES)


def test_the_wnut_threshold_sits_just_above_what_the_brand_list_alone_scores() -> None:
    from bench import score
    from bench.quality import wnut_threshold
    from ner.models import build_gazetteer
    from ner.types import Annotation, Span

    # Given WNUT-like gold posts: two brands the shipped list knows, one it does not
    def post(i: int, text: str, brand: str) -> Annotation:
        start = text.index(brand)
        spans = (Span(start, start + len(brand), "BRAND", brand),)
        return Annotation(post_id=f"p{i}", text=text, spans=spans)

    found = [post(1, "my new iPhone died", "iPhone"), post(2, "coffee at Starbucks", "Starbucks")]
    missed = post(3, "love my Zorblax blender", "Zorblax")

    # When the threshold is set from the list alone's F1 on them (P 1, R 2/3: F1 0.8), as
    # the baselines score it
    def base(posts: list[Annotation]) -> dict[str, Any]:
        return {"gazetteer": {"wnut_dev": score.score(build_gazetteer().nlp, posts)}}

    both, unknown = base([*found, missed]), base([missed])
    # Then it is that F1 plus the margin, and never under the floor when the list finds none
    assert wnut_threshold(both) == pytest.approx(0.8 + WNUT_THRESHOLD_MARGIN)
    assert wnut_threshold(unknown) == WNUT_THRESHOLD_FLOOR


def test_the_baseline_is_the_best_pretrained_pipeline_not_the_gazetteer() -> None:
    base = {
        "pretrained sm": {"wnut_dev": scores(0.12)},
        "pretrained md": {"wnut_dev": scores(0.15)},
        "gazetteer": {"wnut_dev": scores(0.60)},
    }
    assert best_pretrained(base, "wnut_dev") == 0.15


def test_set_rows_need_every_seed_above_the_baseline_and_a_spread_below_the_margin() -> None:
    # Given three seeds around 0.24 against a baseline of 0.126
    runs = [trained("wnut", s, wnut_dev=scores(f1)) for s, f1 in ((1, 0.22), (2, 0.26), (3, 0.24))]

    # When the rows are built with the 0.25 target
    mean, never_below, spread = set_rows("WNUT-trained", runs, "wnut_dev", 0.126, 0.25)

    # Then the mean misses the target, every seed beats the baseline, the spread (0.02) is
    # under the margin (0.114)
    assert mean.value == pytest.approx(0.24) and mean.met is False
    assert "0.220 / 0.260 / 0.240" in mean.note and "overlap F1 0.290" in mean.note
    assert never_below.value == 0.22 and never_below.met is True
    assert spread.value == pytest.approx(0.02) and spread.met is True
    # And one seed under the baseline fails "never below", a wide spread fails the margin
    runs.append(trained("wnut", 4, wnut_dev=scores(0.10)))
    _, never_below, spread = set_rows("WNUT-trained", runs, "wnut_dev", 0.126, None)
    assert never_below.met is False and spread.met is False


def test_recipe_rows_report_the_demo_champion_precision_on_wnut_dev() -> None:
    base = {"pretrained sm": {k: scores(0.1) for k in SET_TITLES}}
    wnut = [trained("wnut", 1, wnut_dev=scores(0.3), beauty_all=scores(0.4))]
    demo = [trained("demo", 1, beauty_held=scores(0.9), wnut_dev=scores(0.2, precision=0.25))]

    rows = {row.name: row for row in recipe_rows(wnut, demo, base)}

    assert rows["demo champion on beauty hold-out: F1"].met is True
    precision = rows["demo champion on WNUT-17 dev: precision"]
    assert precision.value == 0.25 and precision.met is False
    assert rows["WNUT-trained on WNUT-17 dev: F1"].met is True
    assert rows["WNUT-trained on beauty gold: never below pretrained"].met is True


def test_a_quick_run_trains_one_epoch_even_when_the_recipe_names_flat_settings() -> None:
    # Given a demo recipe written with the flat setting names the CLI uses
    from ner.settings import Settings

    flat = {"gold_recent_fraction": 0.0, "max_epochs": 20, "learn_rate": 0.001}
    demo = Recipe("demo", "demo", "beauty_train", "beauty_held", ("beauty_held",), overrides=flat)

    # When the flow's settings are built from the overrides of a quick and of a full run
    quick = Settings(**flow_overrides(demo, seed=2, quick=True))
    full = Settings(**flow_overrides(demo, seed=2, quick=False))

    # Then the quick run trains one epoch, the full run the recipe's 20, both with its rate
    assert (quick.train.max_epochs, full.train.max_epochs) == (1, 20)
    assert quick.train.learn_rate == full.train.learn_rate == 0.001
    assert (quick.seed, quick.gold_fraction, quick.threshold) == (2, 0.0, Settings().threshold)


def test_flow_and_cost_rows_fail_on_a_different_model_or_slow_training() -> None:
    from bench.quality import cost_rows, flow_rows

    # Given runs whose flow scored the same model as the reload, but one that did not
    same = replace(trained("wnut", 1, wnut_dev=scores(0.2)), flow_f1=0.2)
    other = replace(trained("demo", 1, beauty_held=scores(0.8)), flow_f1=0.7)
    champion, identical = flow_rows([same], [same], 0.28)
    assert champion.met is True and identical.met is True
    assert champion.baseline.startswith("threshold 0.28, cold-start champion F1")
    assert flow_rows([same], [same, other], 0.28)[1].met is False

    # And a 1,000-label run that trained for 150 s, a model predicting 140 posts per CPU s
    slow = replace(same, train_seconds=150.0, n_train=1000)
    speed = {"posts_per_cpu_second": 140.0, "posts_per_wall_second": 90.0}
    rows = {
        row.name: row
        for row in cost_rows([same], slow, {**speed, "posts": 3000, "words_per_post": 16.0})
    }
    assert rows["training on 1000 labels"].met is False
    assert rows["predict, per core"].met is False
    assert rows["accurate recipe: WNUT-17 dev F1"].met is False


def test_accurate_rows_hold_the_accurate_targets() -> None:
    from bench.quality import ACCURATE_ROW, accurate_recipe, accurate_rows

    # Given the accurate recipe: WNUT-17 train with train.recipe=accurate, scored as WNUT
    recipe = accurate_recipe(0.28)
    assert recipe.overrides == {"train": {"recipe": "accurate"}}
    assert (recipe.train, recipe.gold, recipe.threshold) == ("wnut_train", "wnut_dev", 0.28)
    # And three seeds around 0.46 on dev, a 1,000-label run of 310 s
    runs = [
        trained("accurate", seed, wnut_dev=scores(f1), beauty_all=scores(0.6))
        for seed, f1 in ((1, 0.44), (2, 0.46), (3, 0.48))
    ]
    thousand = replace(runs[0], train_seconds=310.0, n_train=1000)
    base = {"pretrained sm": {"wnut_dev": scores(0.126), "beauty_all": scores(0.32)}}
    speed = {"posts_per_cpu_second": 140.0, "posts_per_wall_second": 90.0, "posts": 3000}
    rows = {row.name: row for row in accurate_rows(runs, thousand, speed, base)}
    # Then the dev row is the accurate target (mean 0.46 >= 0.45), the time row is missed
    assert rows[ACCURATE_ROW].met is True and rows[ACCURATE_ROW].value == pytest.approx(0.46)
    assert rows["accurate (transformer): training on 1000 labels"].met is False
    assert rows["accurate (transformer) on beauty gold: never below pretrained"].met is True


def test_the_accurate_demo_champion_has_the_demo_targets_under_its_own_title() -> None:
    from apps.cli import demo_accurate_recipe
    from bench.quality import accurate_demo_recipe, accurate_rows

    # Given the demo champion as `brandloop demo` trains it under train.recipe=accurate
    recipe = accurate_demo_recipe()
    assert recipe.overrides == demo_accurate_recipe() and recipe.threshold is None
    assert (recipe.train, recipe.gold, recipe.evaluation) == (
        "beauty_train",
        "beauty_held",
        ("beauty_held", "wnut_dev"),
    )
    # And accurate runs with two demo seeds: beauty 0.86 / 0.84, WNUT-17 dev P 0.36 / 0.32
    runs = [trained("accurate", 1, wnut_dev=scores(0.44), beauty_all=scores(0.6))]
    demo = [
        trained("demo-accurate", 1, beauty_held=scores(0.86), wnut_dev=scores(0.4, 0.36)),
        trained("demo-accurate", 2, beauty_held=scores(0.84), wnut_dev=scores(0.1, 0.32)),
    ]
    base = {"pretrained sm": {k: scores(0.18) for k in SET_TITLES}}
    speed = {"posts_per_cpu_second": 140.0, "posts_per_wall_second": 90.0, "posts": 3000}
    rows = {row.name: row for row in accurate_rows(runs, runs[0], speed, base, demo)}
    # Then its rows are the demo champion's targets, apart from the fast demo's rows
    assert rows["demo champion (accurate) on beauty hold-out: F1"].met is True  # mean 0.85
    precision = rows["demo champion (accurate) on WNUT-17 dev: precision"]
    assert precision.value == pytest.approx(0.34) and precision.met is True
    # And a seed under the pretrained pipeline on WNUT-17 dev fails "never below"
    assert rows["demo champion (accurate) on WNUT-17 dev: never below pretrained"].met is False
    assert "demo champion on beauty hold-out: F1" not in rows
    # And without demo runs there are no demo rows
    assert not any("demo" in row.name for row in accurate_rows(runs, runs[0], speed, base))
