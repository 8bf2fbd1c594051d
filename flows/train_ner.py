"""Flow ``train-ner``: pull labels -> evaluate champion -> gate -> train -> log -> evaluate
-> promote.

1. Pull human annotations from Label Studio (API) or from export snapshots in storage.
2. Freeze the gold set (once) and keep the training pool apart from it.
3. Evaluate the champion (or the cold start when there is none) on the gold set.
4. Gate: if its F1 reaches ``NER_THRESHOLD``, stop.
5. Train a challenger on the training pool; log params, metrics, dataset hash, plots and
   the model to MLflow; register it as ``@challenger``.
6. Evaluate the challenger on the same gold set and promote it to ``@champion`` if the
   promotion rule says so (threshold reached and champion beaten). Nothing is promoted
   without an evaluation.

Failures: every task retries transient errors (``NER_IO_RETRIES``, backoff from
``NER_IO_RETRY_DELAY_S``). The training run stays RUNNING until the promotion step ends it
FINISHED; a run that fails after it was opened ends it FAILED. When MLflow itself was down at
that moment, the next train-ner run closes it (step 0: runs of flow runs that have ended
are marked FAILED). Storage writes are atomic, and ``@champion`` moves only in the last
step, so a failed run promotes nothing and leaves no half-written object.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.common import (
    build_settings,
    flow_run_id,
    io_task,
    load_settings_model,
    make_registry,
    open_settings_storage,
    retrying,
    run_stamp,
)
from ner import datasets, evaluation, labelstudio, labelstudio_client, layout
from ner.errors import RegistryError
from ner.registry import CHALLENGER, CHAMPION, decide, needs_training, run_tags
from ner.settings import Settings
from ner.training import TrainOptions, train_isolated


@io_task()
def close_abandoned_runs(settings: Settings) -> list[str]:
    """Mark FAILED the brandloop runs still RUNNING whose Prefect flow run has ended.

    They belong to flow runs that failed while MLflow was unreachable (so they could not
    close their own run) or that crashed. Runs of flow runs still in progress, and runs
    whose flow run this Prefect API does not know, are left alone.
    """
    registry = make_registry(settings)
    current = flow_run_id()
    closed = []
    for run_id, tags in registry.open_runs():
        owner = tags.get("brandloop.prefect_flow_run_id")
        if not owner or owner == current:
            continue
        ended = _ended_flow_run(owner)
        if ended is None:
            continue
        registry.close_run(
            run_id, "FAILED", reason=f"flow run {owner} ended {ended} with this run open"
        )
        closed.append(run_id)
    if closed:
        get_run_logger().warning("closed %d abandoned MLflow run(s): %s", len(closed), closed)
    return closed


def _ended_flow_run(run_id: str) -> str | None:
    """The final state type of Prefect flow run ``run_id``; None if running or unknown."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            flow_run = client.read_flow_run(uuid.UUID(run_id))
    except (ObjectNotFound, ValueError):
        return None
    state = flow_run.state
    return str(state.type.value) if state is not None and state.is_final() else None


@io_task()
def pull_annotations(
    settings: Settings, source: str, export_keys: list[str] | None, stamp: str
) -> dict[str, Any]:
    """Collect every human annotation into one JSONL in storage; returns key and counts.

    From Label Studio, the labels saved since the last pull are exported into a new
    snapshot, then every snapshot of the project is read (each holds only what changed),
    the latest annotation of a post winning.
    """
    storage = open_settings_storage(settings)
    if source == "label_studio":
        project = labelstudio_client.LabelStudioProject.connect(settings)
        project.snapshot_export(storage, stamp)
        export_keys = project.snapshot_keys(storage)
    return labelstudio.collect_annotations(
        storage, export_keys, settings.labels, out_key=layout.pulled_annotations(stamp)
    )


@io_task()
def prepare_gold(settings: Settings, annotations_key: str, stamp: str) -> dict[str, Any]:
    """Freeze the gold set on first use; write the training pool (never gold posts)."""
    storage = open_settings_storage(settings)
    annotations = list(datasets.read_annotations(storage, annotations_key))
    return datasets.prepare_splits(
        storage,
        annotations,
        gold_fraction=settings.gold_fraction,
        train_key=layout.training_pool(stamp),
    ).to_dict()


@io_task()
def find_champion(settings: Settings) -> str | None:
    """The version behind ``@champion``, if any."""
    return make_registry(settings).alias_version(CHAMPION)


@io_task()
def evaluate_on_gold(
    settings: Settings,
    model_spec: str,
    gold_key: str,
    gold_hash: str,
    role: str,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Score a model on the frozen gold set and record the evaluation in MLflow."""
    storage = open_settings_storage(settings)
    registry = make_registry(settings)
    gold = list(datasets.read_annotations(storage, gold_key))
    loaded = load_settings_model(settings, model_spec)
    report = evaluation.score_model(loaded.nlp, gold, settings.labels)
    metrics = report.to_metrics()
    version = (
        loaded.version.split("/")[-1]
        if loaded.version.startswith(f"{settings.registered_model_name}/")
        else None
    )
    registry.log_evaluation(
        report,
        model_version=loaded.version,
        role=role,
        gold_hash=gold_hash,
        tags=run_tags(settings.env, _prefect_tags()),
        run_id=run_id,
    )
    if version is not None:
        registry.record_evaluation(version, gold_hash, metrics)
    return {
        "model_version": loaded.version,
        "version": version,
        "f1": report.f1,
        "metrics": metrics,
    }


@io_task(retries=1)
def train_challenger(
    settings: Settings, train_key: str, start_from: str, model_dir: str
) -> dict[str, Any]:
    """Fine-tune a challenger on the training pool (gold posts excluded)."""
    storage = open_settings_storage(settings)
    pool = list(datasets.read_annotations(storage, train_key))
    options = TrainOptions(
        seed=settings.seed,
        max_epochs=settings.max_epochs,
        max_steps=settings.max_steps,
        patience=settings.patience,
        dropout=settings.dropout,
        with_gazetteer=settings.train_with_gazetteer,
        learn_rate=settings.learn_rate,
        negative_fraction=settings.negative_fraction,
        lowercase=settings.augment_lowercase,
        label_map=dict(settings.train_label_map),
        checkpoint=settings.train_checkpoint,
    )
    result = train_isolated(
        pool,
        start_from=start_from,
        output_dir=Path(model_dir),
        labels=settings.labels,
        options=options,
    )
    return {
        "model_dir": str(result.model_dir),
        "train_size": result.train_size,
        "dev_size": result.dev_size,
        "n_rejected": len(result.rejected),
        "seconds": result.seconds,
        "curve": list(result.curve),
        "dev_scores": result.dev_scores,
        "params": {**options.as_params(), "start_from": start_from},
    }


@io_task()
def log_challenger(
    settings: Settings, trained: dict[str, Any], splits: dict[str, Any], stamp: str
) -> dict[str, str]:
    """Log the training run (params, dataset, curve) and register the model as @challenger."""
    registry = make_registry(settings)
    storage = open_settings_storage(settings)
    run_id = registry.log_training_run(
        run_name=f"train {stamp}",
        params={
            **trained["params"],
            "base_model": settings.base_model,
            "labels": ",".join(settings.labels),
            "gold_fraction": settings.gold_fraction,
            "threshold": settings.threshold,
            "env": settings.env,
        },
        metrics={
            "train_size": trained["train_size"],
            "dev_size": trained["dev_size"],
            "train_rejected": trained["n_rejected"],
            "train_seconds": trained["seconds"],
            **{f"dev_{k}": v for k, v in trained["dev_scores"].items()},
        },
        curve=trained["curve"],
        dataset_hash=splits["train_hash"],
        dataset_uri=storage.uri(splits["train_key"]),
        gold_hash=splits["gold_hash"],
        gold_uri=storage.uri(splits["gold_key"]),
        tags=run_tags(settings.env, _prefect_tags()),
    )
    try:
        _, version = registry.log_model(Path(trained["model_dir"]), run_id)
        if version is None:
            raise RegistryError(f"the model of run {run_id} was logged but not registered")
        registry.set_alias(
            CHALLENGER,
            version,
            actor=_actor(),
            reason=f"trained by run {run_id}",
            gold_hash=splits["gold_hash"],
        )
    except Exception as exc:  # a retry opens a new run: end this one
        registry.close_run(run_id, "FAILED", reason=f"logging failed: {exc}", best_effort=True)
        raise
    return {"run_id": run_id, "version": version}


@io_task()
def promote_if_better(
    settings: Settings,
    challenger: dict[str, Any],
    champion: dict[str, Any],
    gold_hash: str,
    run_id: str,
) -> dict[str, Any]:
    """Apply the promotion rule; move @champion (audited) when it says so; then end the
    training run ``run_id`` FINISHED."""
    registry = make_registry(settings)
    decision = decide(
        challenger.get("f1"), champion.get("f1"), settings.threshold, settings.promotion_margin
    )
    # On a retry the move may already have happened: never promote the same version twice.
    if decision.promote and registry.alias_version(CHAMPION) != challenger["version"]:
        registry.promote(
            challenger["version"],
            gold_hash=gold_hash,
            decision=decision,
            metrics={
                "challenger_f1": challenger["f1"],
                "champion_f1": champion.get("f1") or 0.0,
                "threshold": settings.threshold,
            },
            actor=_actor(),
        )
    registry.close_run(run_id, "FINISHED", reason=decision.reason)
    return {"promote": decision.promote, "reason": decision.reason}


@io_task(retries=0)
def abandon_run(settings: Settings, run_id: str, reason: str) -> bool:
    """End training run ``run_id`` FAILED if MLflow answers (else a later run will)."""
    return make_registry(settings).close_run(run_id, "FAILED", reason=reason, best_effort=True)


def _prefect_tags() -> dict[str, str]:
    run_id = flow_run_id()
    return {"brandloop.prefect_flow_run_id": run_id} if run_id else {}


def _actor() -> str:
    run_id = flow_run_id()
    return f"prefect:train-ner/{run_id}" if run_id else "brandloop"


@flow(name="train-ner")
def train_ner(
    source: Literal["storage", "label_studio"] = "storage",
    export_keys: list[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run one evaluate-gate-train-promote cycle. Returns a summary of what happened."""
    logger = get_run_logger()
    cfg = build_settings(settings)
    stamp = run_stamp(flow_run_id())
    retrying(close_abandoned_runs, cfg)(cfg)
    pulled = retrying(pull_annotations, cfg)(cfg, source, export_keys, stamp)
    logger.info(
        "pulled %d annotations (%d rejected, %d repaired)",
        pulled["n_annotations"],
        pulled["n_rejected"],
        pulled["n_repaired"],
    )
    summary: dict[str, Any] = {"labels": pulled["n_annotations"], "rejected": pulled["n_rejected"]}
    if pulled["n_annotations"] == 0:
        return {**summary, "status": "no_labels"}

    splits = retrying(prepare_gold, cfg)(cfg, pulled["annotations_key"], stamp)
    summary.update(
        gold_hash=splits["gold_hash"], n_gold=splits["n_gold"], n_train=splits["n_train"]
    )
    if splits["n_gold"] == 0:
        return {**summary, "status": "no_gold"}

    registry = make_registry(cfg)
    champion_version = retrying(find_champion, cfg)(cfg)
    champion_spec = registry.model_uri(CHAMPION) if champion_version else cfg.cold_start
    evaluate = retrying(evaluate_on_gold, cfg)
    champion = evaluate(cfg, champion_spec, splits["gold_key"], splits["gold_hash"], "champion")
    summary.update(
        champion_f1=champion["f1"],
        champion_model=champion["model_version"],
        champion_version=champion_version,
    )
    logger.info(
        "champion %s: F1 %.4f on gold %s",
        champion["model_version"],
        champion["f1"],
        splits["gold_hash"][:12],
    )
    if not needs_training(champion["f1"], cfg.threshold):
        return {**summary, "status": "threshold_met"}
    if splits["n_train"] < cfg.min_new_labels:
        return {**summary, "status": "not_enough_labels"}

    with tempfile.TemporaryDirectory(prefix="brandloop-model-") as tmp:
        start_from = cfg.base_model
        if cfg.train_from == "champion" and champion_version:
            start_from = str(registry.download_model(CHAMPION, Path(tmp) / "champion"))
        trained = retrying(train_challenger, cfg)(
            cfg, splits["train_key"], start_from, str(Path(tmp) / "model")
        )
        logged = retrying(log_challenger, cfg)(cfg, trained, splits, stamp)
    run_id = logged["run_id"]
    summary.update(challenger_version=logged["version"], run_id=run_id)
    try:
        challenger = evaluate(
            cfg,
            f"models:/{cfg.registered_model_name}/{logged['version']}",
            splits["gold_key"],
            splits["gold_hash"],
            "challenger",
            run_id=run_id,
        )
        summary["challenger_f1"] = challenger["f1"]
        outcome = retrying(promote_if_better, cfg)(
            cfg, challenger, champion, splits["gold_hash"], run_id
        )
    except Exception as exc:
        abandon_run(cfg, run_id, f"train-ner failed after training: {exc}")
        raise
    summary["decision"] = outcome["reason"]
    if outcome["promote"]:
        summary.update(
            status="promoted",
            promoted_version=logged["version"],
            champion_version=logged["version"],
        )
    else:
        summary["status"] = "not_promoted"
    logger.info("train-ner: %s (%s)", summary["status"], outcome["reason"])
    return summary


if __name__ == "__main__":
    print(train_ner())
