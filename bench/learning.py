"""Active learning: how many labels does uncertainty selection need to match random picks?

A simulation on WNUT-17 train (3,394 tweets) with its gold labels as the oracle. The tweets
are cut in two halves by position: the odd ones are the pool, the even ones the test set,
less every test tweet that is a retweet, duplicate or near-duplicate of a pool tweet, so no
test tweet can be labelled through a copy. Labels come from the same stream as the posts the
model is tested on, so the models train with the project's default recipe (the
``train-ner`` defaults of ``ner.settings.Settings``, 10 epochs). Both strategies start from
the pretrained pipeline the flow starts from (``Settings().base_model``: en_core_web_md
after ``make install``; ORG+PRODUCT→BRAND, no labels) and run the same rounds:

1. select ``BUDGET`` posts from the pool with :func:`ner.active.select` - ``"uncertainty"``
   (beam uncertainty of the current model, diversity within the round) or ``"random"``;
   both skip retweets, duplicates and near-duplicates of each other and of labelled posts;
2. the oracle labels them;
3. a model is trained from the pretrained pipeline on every label so far
   (``ner.training.train``), scored on the test tweets (the curve), and used for the next
   round.

Random selection is scored the same way and its final F1 is its last round's; the strategy
is the same as the apply flow's labelling budget (``NER_LABEL_BUDGET``, no random share).
One round's F1 moves by a few points with the seed (which posts random picks, the training
shuffle, the checkpoint training keeps), so every strategy runs with ``SEEDS`` seeds and the
curves are averaged label count by label count. The seeds run two at a time in spawned
processes (one per core). Reported: the mean curves (also a PNG logged to MLflow in
``bench/out/learning/mlflow.db``, with every seed's curve), the number of labels the mean
active curve needs to reach random's mean final F1 as a share of random's labels (target
≤ 60 %), and the same share seed by seed (active and random of one seed paired). Crossing
points are linearly interpolated between rounds.
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import Context, Metric, at_most, benchmark

if TYPE_CHECKING:
    from ner.types import Annotation, Post

log = logging.getLogger(__name__)

BUDGET = 100
ROUNDS = 8
SEEDS = 3
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


def mean_curve(curves: Sequence[Sequence[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Average F1, precision, recall and spans over seeds, point by point.

    Every curve must have the same label counts (the same rounds and budget); raises
    ``ValueError`` otherwise, since averaging different x values would hide a short round.
    """
    if not curves:
        raise ValueError("no curves to average")
    counts = [[int(p["labels"]) for p in curve] for curve in curves]
    if any(c != counts[0] for c in counts):
        raise ValueError(f"curves have different label counts: {counts}")
    out = []
    for index, labels in enumerate(counts[0]):
        points = [curve[index] for curve in curves]
        f1s = [float(p["f1"]) for p in points]
        out.append(
            {
                "labels": labels,
                "f1": statistics.fmean(f1s),
                "f1_min": min(f1s),
                "f1_max": max(f1s),
                "precision": statistics.fmean(float(p["precision"]) for p in points),
                "recall": statistics.fmean(float(p["recall"]) for p in points),
                "spans": statistics.fmean(float(p["spans"]) for p in points),
            }
        )
    return out


def share_to_reach(
    active: Sequence[dict[str, Any]], random: Sequence[dict[str, Any]]
) -> float | None:
    """Labels ``active`` needs to reach ``random``'s last F1, as a share of random's labels."""
    needed = labels_to_reach(
        [(int(p["labels"]), float(p["f1"])) for p in active], float(random[-1]["f1"])
    )
    return None if needed is None else needed / float(random[-1]["labels"])


@dataclass(frozen=True)
class Job:
    """One simulated labelling campaign: a strategy, a seed and everything it needs."""

    strategy: str
    seed: int
    pool: Sequence[Any]
    oracle: dict[str, Any]
    test: Sequence[Any]
    rounds: int
    budget: int
    options: Any
    work: Path
    base_model: str
    explore: float = 0.0


def _one_thread() -> None:
    """Worker initialiser: one BLAS/OpenMP thread per process (two processes, two cores)."""
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = "1"


def simulate(job: Job) -> list[dict[str, Any]]:
    """Run ``job.rounds`` selection-label-train rounds; one dict per point of the curve."""

    from bench.score import score
    from bench.support import BASE_LABEL_MAP
    from ner.active import select
    from ner.models import build_base, load_spacy
    from ner.training import train

    def point(nlp: Any, labelled: Sequence[Any]) -> dict[str, Any]:
        result = score(nlp, job.test)
        return {
            "labels": len(labelled),
            "f1": result["f1"],
            "precision": result["precision"],
            "recall": result["recall"],
            "spans": sum(len(a.spans) for a in labelled),
        }

    nlp = build_base(job.base_model, BASE_LABEL_MAP).nlp
    labelled: list[Any] = []
    curve = [{**point(nlp, labelled), "select_s": 0.0, "train_s": 0.0}]
    for number in range(1, job.rounds + 1):
        clock = time.perf_counter()
        chosen = select(
            job.pool,
            job.budget,
            nlp=nlp,
            strategy="uncertainty" if job.strategy == "active" else "random",
            labelled_ids=[a.post_id for a in labelled],
            labelled_texts=[a.text for a in labelled],
            seed=job.seed * 1000 + number,
            explore=job.explore,
        )
        select_s = time.perf_counter() - clock
        labelled += [job.oracle[post.id] for post in chosen.posts]
        clock = time.perf_counter()
        trained = train(
            labelled,
            start_from=job.base_model,
            output_dir=job.work / f"{job.strategy}-x{job.explore:g}-seed{job.seed}-{number}",
            recipe=job.options,
            seed=job.seed,
        )
        train_s = time.perf_counter() - clock
        nlp = load_spacy(str(trained.model_dir))
        row = {**point(nlp, labelled), "select_s": select_s, "train_s": train_s}
        row["skipped"] = chosen.skipped
        log.info("%s seed %d round %d: %s", job.strategy, job.seed, number, row)
        curve.append(row)
    return curve


def log_to_mlflow(
    root: Path,
    curves: dict[str, list[dict[str, Any]]],
    seeds: dict[str, list[list[dict[str, Any]]]],
    summary: dict[str, Any],
) -> tuple[str, Path]:
    """One MLflow run with the mean curves (metric steps = labels), every seed's curve and
    their plot (mean lines, min-max bands) as a PNG."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric as MlflowMetric
    from mlflow.entities import Param

    from ner.plots import learning_curve

    db = root / "mlflow.db"
    store = f"sqlite:///{db.resolve()}"
    client = MlflowClient(tracking_uri=store, registry_uri=store)
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
        MlflowMetric(f"f1_{strategy}_seed{index}", float(point["f1"]), stamp, int(point["labels"]))
        for strategy, runs in seeds.items()
        for index, curve in enumerate(runs)
        for point in curve
    ]
    metrics += [
        MlflowMetric(k, float(v), stamp, 0)
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    params = [Param(k, str(v)) for k, v in summary.items() if isinstance(v, str)]
    client.log_batch(run_id, metrics=metrics, params=params)
    count = len(next(iter(seeds.values()), []))
    plot = learning_curve(
        [],
        root / "active_vs_random.png",
        title=f"brand F1 on held-out WNUT-17 tweets vs labels (mean of {count} seeds)",
        xlabel="labelled posts",
        series={
            strategy: [(float(p["labels"]), float(p["f1"])) for p in curve]
            for strategy, curve in curves.items()
        },
        bands={
            strategy: [(float(p["labels"]), float(p["f1_min"]), float(p["f1_max"])) for p in curve]
            for strategy, curve in curves.items()
        },
    )
    client.log_artifact(run_id, str(plot), "plots")
    client.set_terminated(run_id, "FINISHED")
    return run_id, plot


def run_jobs(jobs: Sequence[Job], workers: int) -> list[list[dict[str, Any]]]:
    """Each job's curve, in job order; ``workers`` spawned processes run them."""
    if workers <= 1:
        return [simulate(job) for job in jobs]
    context = get_context("spawn")  # the parent may hold threads (Prefect, Dask): no fork
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_one_thread) as pool:
        return list(pool.map(simulate, jobs))


@dataclass(frozen=True)
class _Data:
    """The simulation's posts: the pool the strategies pick from (with the oracle's
    annotations) and the held-out test tweets (no copy of a pool tweet)."""

    pool: list[Post]
    oracle: dict[str, Annotation]
    test: list[Annotation]


def _data(ctx: Context) -> _Data:
    from bench.support import wnut as load_wnut
    from ner.active import filter_pool
    from ner.types import Post

    tweets = load_wnut("train")
    if ctx.quick:
        tweets = tweets[:450]
    pool_annotations = [a for i, a in enumerate(tweets) if i % 2 == 1]
    held_out = [a for i, a in enumerate(tweets) if i % 2 == 0]
    # No test tweet may be a copy of a pool tweet (WNUT-17 train has many retweets).
    clean, _ = filter_pool(
        [Post(id=a.post_id, text=a.text) for a in held_out],
        labelled_texts=[a.text for a in pool_annotations],
    )
    clean_ids = {post.id for post in clean}
    return _Data(
        pool=[Post(id=a.post_id, text=a.text) for a in pool_annotations],
        oracle={a.post_id: a for a in pool_annotations},
        test=[a for a in held_out if a.post_id in clean_ids],
    )


@dataclass(frozen=True)
class _Outcome:
    """Mean curves per strategy, each seed's curves, and what they give."""

    curves: dict[str, list[dict[str, Any]]]
    per_seed: dict[str, list[list[dict[str, Any]]]]
    needed: float | None  # active labels to reach random's final F1
    random_self: float | None  # where random itself reaches it
    seed_shares: list[float | None]

    @property
    def share(self) -> float | None:
        final_labels = float(self.curves["random"][-1]["labels"])
        return None if self.needed is None else self.needed / final_labels


def _outcome(jobs: Sequence[Job], results: Sequence[list[dict[str, Any]]]) -> _Outcome:
    per_seed: dict[str, list[list[dict[str, Any]]]] = {"random": [], "active": []}
    for job, curve in zip(jobs, results, strict=True):
        per_seed[job.strategy].append(curve)
    curves = {strategy: mean_curve(runs) for strategy, runs in per_seed.items()}
    target = float(curves["random"][-1]["f1"])

    def points(strategy: str) -> list[tuple[int, float]]:
        return [(int(p["labels"]), float(p["f1"])) for p in curves[strategy]]

    return _Outcome(
        curves=curves,
        per_seed=per_seed,
        needed=labels_to_reach(points("active"), target),
        random_self=labels_to_reach(points("random"), target),
        seed_shares=[
            share_to_reach(a, r)
            for a, r in zip(per_seed["active"], per_seed["random"], strict=True)
        ],
    )


def _shares_text(values: Sequence[float | None]) -> str:
    return ", ".join("never" if v is None else f"{100 * v:.0f} %" for v in values)


def _final_metrics(out: _Outcome, data: _Data, seeds: int) -> list[Metric]:
    random_final, active_final = out.curves["random"][-1], out.curves["active"][-1]
    test_spans = sum(len(a.spans) for a in data.test)
    met_seeds = sum(1 for s in out.seed_shares if s is not None and s <= TARGET_SHARE)
    return [
        Metric(
            "pretrained, no labels: F1",
            out.curves["random"][0]["f1"],
            note=f"{len(data.test)} held-out tweets ({test_spans} brand spans), "
            f"pool {len(data.pool)} tweets",
        ),
        *(
            Metric(
                f"{name}: final F1",
                final["f1"],
                note=f"{final['labels']} labels, mean of {seeds} seeds "
                f"(min {final['f1_min']:.3f}, max {final['f1_max']:.3f})",
            )
            for name, final in (("random", random_final), ("active", active_final))
        ),
        Metric(
            "active labels to reach random's final F1",
            out.needed,
            "labels",
            note=f"mean curves of {seeds} seeds; random's final F1 {random_final['f1']:.3f}; "
            + ("never reached" if out.needed is None else "interpolated between rounds"),
        ),
        Metric(
            "  as a share of random's labels",
            None if out.share is None else 100 * out.share,
            "%",
            f"≤ {100 * TARGET_SHARE:.0f} %",
            at_most(out.share, TARGET_SHARE) if out.share is not None else False,
            baseline="random selection, same rounds, same seeds, same run",
        ),
        Metric(
            "  random itself reaches that F1 at",
            out.random_self,
            "labels",
            note="its first round at or above its final F1 (interpolated): how flat random's "
            "curve is at the end",
        ),
        Metric(
            "  same, seed by seed",
            _shares_text(out.seed_shares),
            note=f"{met_seeds} of {seeds} seeds ≤ {100 * TARGET_SHARE:.0f} % "
            "(each seed's active curve vs the same seed's random final F1)",
        ),
    ]


def _run_metrics(
    out: _Outcome, seeds: int, run_id: str, plot: Path, n_jobs: int, wall_s: float
) -> list[Metric]:
    spans = {s: c[-1]["spans"] for s, c in out.curves.items()}
    return [
        Metric(
            "brand spans labelled, active / random",
            spans["active"] / max(1.0, spans["random"]),
            "x",
            note=f"{spans['active']:.0f} vs {spans['random']:.0f} spans in the labelled posts "
            "(mean over seeds)",
        ),
        Metric(
            "curve (labels: random / active F1)",
            "; ".join(
                f"{r['labels']}: {r['f1']:.3f}/{a['f1']:.3f}"
                for r, a in zip(out.curves["random"], out.curves["active"], strict=True)
            ),
            note=f"mean of {seeds} seeds; MLflow run {run_id[:8]} in "
            f"bench/out/learning/mlflow.db, plots/{plot.name}",
        ),
        Metric(
            "simulation wall time",
            wall_s,
            "s",
            note=f"{n_jobs} campaigns ({seeds} seeds x 2 strategies), "
            f"{min(2, os.cpu_count() or 1)} processes",
        ),
    ]


@benchmark(
    "learning",
    description="Active learning (uncertainty + diversity) vs random: labels to equal F1",
    budget_seconds=720,
)
def run(ctx: Context) -> dict[str, Any]:
    from bench.support import default_train_options, fresh_dir
    from ner.base_model import default_base_model

    data = _data(ctx)
    rounds, budget, seeds = ctx.size(ROUNDS, 2), ctx.size(BUDGET, 20), ctx.size(SEEDS, 2)
    # The brand list off: its spans are the same for both strategies and would hide what the
    # labels taught the model (it alone scores about 0.45 on WNUT-17 train since session 49).
    options = default_train_options(max_epochs=ctx.size(EPOCHS, 1), gazetteer=False)
    base_model, work = default_base_model(), fresh_dir(ctx.out_dir / "models")
    seed_list = [ctx.seed + index for index in range(seeds)]
    jobs = [
        Job(
            strategy,
            seed,
            data.pool,
            data.oracle,
            data.test,
            rounds,
            budget,
            options,
            work,
            base_model,
        )
        for seed in seed_list
        for strategy in ("random", "active")
    ]
    clock = time.perf_counter()
    results = run_jobs(jobs, workers=min(2, os.cpu_count() or 1))
    wall_s = time.perf_counter() - clock
    out = _outcome(jobs, results)
    random_final = out.curves["random"][-1]
    summary: dict[str, Any] = {
        "random_final_f1": random_final["f1"],
        "random_final_labels": random_final["labels"],
        "active_final_f1": out.curves["active"][-1]["f1"],
        "budget_per_round": budget,
        "rounds": rounds,
        "seeds": seeds,
        "pool_posts": len(data.pool),
        "test_posts": len(data.test),
        "test_spans": sum(len(a.spans) for a in data.test),
        "strategy": "uncertainty (beam 8) + diversity 0.5, near-duplicates 0.8",
        "wall_s": wall_s,
    }
    if out.needed is not None:
        summary["active_labels_to_random_final"] = out.needed
    run_id, plot = log_to_mlflow(ctx.out_dir, out.curves, out.per_seed, summary)
    metrics = _final_metrics(out, data, seeds)
    metrics += _run_metrics(out, seeds, run_id, plot, len(jobs), wall_s)
    return {
        "metrics": metrics,
        "curves": out.curves,
        "seed_curves": out.per_seed,
        "seeds": seed_list,
        "seed_shares": out.seed_shares,
        "summary": summary,
        "mlflow_run_id": run_id,
        "plot": str(plot),
        "options": options.as_params(ctx.seed),
    }
