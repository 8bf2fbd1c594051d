"""Loop latency: from a 1,000-label export landing in storage to a promoted champion.

A fresh store and registry; the Prefect API is already up (as in production, where a server
runs), then the clock starts:

1. a finished Label Studio export of 1,000 labelled WNUT-17 train tweets is written to
   ``exports/`` (that is the export landing);
2. the ``train-ner`` flow runs with the default settings (recipe, 20 epochs, 30 % gold split):
   pull the export, split and freeze the gold set, evaluate the champion (the cold start),
   train, log and register the challenger, evaluate it, promote it.

The clock stops when the flow returns. Each stage's time is read back from the Prefect API
(the task runs' start and end), so the stages are timed by the orchestrator; whatever lies
between tasks (flow start, Python between calls) is reported as "flow overhead".
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from bench import Context, Metric, at_most, benchmark

log = logging.getLogger(__name__)

N_LABELS = 1_000
TARGET_SECONDS = 300.0
#: The cold start of this benchmark: the pretrained pipeline, ORG+PRODUCT as BRAND (about
#: 0.1-0.2 on WNUT-17 tweets). Not the shipped brand list: since it holds brands outside beauty
#: (session 49) it alone scores about 0.45 on WNUT-17 train, as much as a model trained here.
COLD_START = "base"
#: The business threshold: above that cold start (which would otherwise pass the gate and stop
#: the flow before training), below what a model trained on 700 of these tweets reaches (0.514
#: on 2026-12-04, with the brand list of that day).
THRESHOLD = 0.30

#: Flow tasks -> stage names of the report (evaluate_on_gold runs twice, see below).
STAGES = {
    "close_abandoned_runs": "housekeeping",
    "pull_annotations": "pull",
    "prepare_gold": "split",
    "find_champion": "evaluate champion",
    "train_challenger": "train",
    "log_challenger": "log + register",
    "promote_if_better": "promote",
}


def _stage_seconds(stages: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per report stage; the 1st gold evaluation is the champion's, the 2nd the
    challenger's."""
    totals: dict[str, float] = {}
    evaluations = 0
    for stage in stages:
        name = str(stage["name"])
        if name == "evaluate_on_gold":
            evaluations += 1
            label = "evaluate champion" if evaluations == 1 else "evaluate challenger"
        else:
            label = STAGES.get(name, "other tasks")
        totals[label] = totals.get(label, 0.0) + float(stage["seconds"])
    return totals


#: The flow's stages in the order they run (the keys of :func:`_stage_seconds`).
STAGE_ORDER = (
    "pull",
    "split",
    "evaluate champion",
    "train",
    "log + register",
    "evaluate challenger",
    "promote",
    "housekeeping",
    "other tasks",
)


def _metrics(
    n_labels: int,
    summary: dict[str, Any],
    total: float,
    landed: float,
    per_stage: dict[str, float],
    api_seconds: float,
) -> list[Metric]:
    """Seconds from the export landing to a promoted champion, then per stage."""
    promoted = summary.get("status") == "promoted"
    overhead = total - landed - sum(per_stage.values())
    headline = Metric(
        f"{n_labels} labels -> promoted champion",
        total if promoted else None,
        "s",
        f"≤ {TARGET_SECONDS:.0f} s",
        at_most(total, TARGET_SECONDS) if promoted else False,
        note=(
            f"status {summary.get('status')}; {summary.get('n_train')} trained, "
            f"{summary.get('n_gold')} gold; challenger F1 "
            f"{float(summary.get('challenger_f1') or 0):.3f} vs cold start "
            f"{float(summary.get('champion_f1') or 0):.3f} ({COLD_START}; threshold {THRESHOLD})"
        ),
    )
    stages = [Metric(f"stage: {n}", per_stage[n], "s") for n in STAGE_ORDER if n in per_stage]
    return [
        headline,
        Metric("export written to storage", landed, "s"),
        *stages,
        Metric(
            "stage: flow overhead",
            overhead,
            "s",
            note=f"flow start/finish, between tasks; Prefect API warm-up {api_seconds:.0f} s "
            "before the clock",
        ),
    ]


@benchmark(
    "loop",
    description="1,000-label export in storage -> promoted champion, per stage",
    budget_seconds=150,
)
def run(ctx: Context) -> dict[str, Any]:
    from bench.support import (
        flow_settings,
        fresh_dir,
        run_flow,
        task_stages,
        warm_up_prefect,
        write_export,
    )
    from bench.support import wnut as load_wnut
    from ner.storage import open_storage

    n_labels = ctx.size(N_LABELS, 120)
    pool = load_wnut("train")
    labelled = random.Random(ctx.seed).sample(pool, n_labels)
    fresh_dir(ctx.out_dir)
    quick: dict[str, Any] = {"max_epochs": 1} if ctx.quick else {}
    settings = flow_settings(ctx.out_dir, None, threshold=THRESHOLD, cold_start=COLD_START, **quick)
    storage = open_storage(settings["storage_uri"], settings["env"])

    from flows.train_ner import train_ner

    api_seconds = warm_up_prefect()
    log.info("export of %d labels lands; train-ner starts", n_labels)
    clock = time.perf_counter()
    write_export(storage, "exports/labels-1000.json", labelled)
    landed = time.perf_counter() - clock
    summary, flow_run_id, flow_seconds = run_flow(train_ner, source="storage", overrides=settings)
    total = time.perf_counter() - clock
    stages = task_stages(flow_run_id)
    per_stage = _stage_seconds(stages)

    metrics = _metrics(n_labels, summary, total, landed, per_stage, api_seconds)
    return {
        "metrics": metrics,
        "n_labels": n_labels,
        "seconds_total": total,
        "seconds_flow": flow_seconds,
        "seconds_export": landed,
        "per_stage": per_stage,
        "stages": stages,
        "flow_summary": summary,
        "flow_run_id": flow_run_id,
        "prefect_api_seconds": api_seconds,
        "settings": {k: v for k, v in settings.items() if k != "mlflow_artifact_location"},
    }
