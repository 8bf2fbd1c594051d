"""Flow ``feedback-loop``: apply -> wait for human labels -> train, round after round.

Each round sends a batch of posts with the current model's predictions to the annotators,
waits until enough of them are labelled, then runs ``train-ner`` (evaluate the champion on
the frozen gold set, train and promote a challenger when it is below the threshold). The
loop ends when the champion meets the threshold, when the round budget is spent, or when
there are no new posts.

Annotators:

* ``storage``: people label in Label Studio and export snapshots land in ``exports/``
  (the bucket exchange); the flow polls storage for them.
* ``label_studio``: the posts go to Label Studio through its API; the flow polls the project
  until ``NER_MIN_NEW_LABELS`` new labels are there (or ``wait_timeout_s`` passes: the loop
  then stops with status ``timed_out_waiting_for_labels``, nothing trained or promoted),
  and ``train-ner`` pulls them through the API.
* ``replay``: the :class:`ner.replay.ReplayAnnotator` hands back known gold labels (demo,
  tests, simulations).

Run the demo with ``python -m flows.feedback_loop --demo`` (``make demo``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.apply_ner import apply_ner
from flows.common import build_settings, io_task, open_settings_storage, retrying, run_stamp
from flows.train_ner import train_ner
from ner import labelstudio, labelstudio_client, triggers
from ner.replay import ReplayAnnotator, demo_gold_path
from ner.settings import Settings
from ner.storage import CHECKPOINTS, EXPORTS

#: Status of a loop that stopped because too few labels came in time.
TIMED_OUT = "timed_out_waiting_for_labels"


@io_task()
def replay_labels(settings: Settings, tasks_key: str, gold_path: str, stamp: str) -> dict[str, Any]:
    """The replay annotator labels the sent tasks; its export lands in ``exports/``."""
    storage = open_settings_storage(settings)
    annotator = ReplayAnnotator.from_file(Path(gold_path))
    export = annotator.annotate(storage.read_json(tasks_key))
    key = f"{EXPORTS}/{stamp}-replay.json"
    storage.write_json(key, export)
    return {"export_key": key, "n_labelled": len(export)}


@io_task(retries=0)
def wait_for_exports(
    settings: Settings, known: list[str], timeout_s: float, poll_s: float
) -> dict[str, Any]:
    """Poll storage until new export snapshots hold at least ``min_new_labels`` labels."""
    storage = open_settings_storage(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        new = [k for k in storage.list(EXPORTS) if k.endswith(".json") and k not in known]
        labelled = sum(labelstudio.count_labelled(storage.read_json(k)) for k in new)
        if labelled >= settings.min_new_labels:
            return {"export_keys": new, "n_labelled": labelled}
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"only {labelled} new labels after {timeout_s:.0f}s "
                f"(need {settings.min_new_labels}); exports seen: {new}"
            )
        time.sleep(poll_s)


@io_task(retries=0)
def wait_for_label_studio(settings: Settings, timeout_s: float, poll_s: float) -> dict[str, Any]:
    """Poll the Label Studio project until ``min_new_labels`` labels are new since the last
    round, or ``timeout_s`` passes (``n_labelled`` 0). The loop keeps its own checkpoint,
    apart from the label trigger's."""
    storage = open_settings_storage(settings)
    project = labelstudio_client.LabelStudioProject.connect(settings)
    found = triggers.wait_for_labels(
        project,
        storage,
        settings.min_new_labels,
        timeout=timeout_s,
        interval=poll_s,
        checkpoint_key=f"{CHECKPOINTS}/labelstudio-{project.project_id}-feedback-loop.json",
    )
    return {"n_labelled": found, "project_id": project.project_id}


@flow(name="feedback-loop")
def feedback_loop(
    source: Literal["x", "jsonl"] = "x",
    input_uri: str | None = None,
    keywords: list[str] | None = None,
    posts_per_round: int | None = None,
    annotator: Literal["storage", "replay", "label_studio"] = "storage",
    gold_export: str | None = None,
    max_rounds: int | None = None,
    wait_timeout_s: float = 24 * 3600,
    poll_interval_s: float = 60,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run rounds until the threshold is met or the budget is spent; returns every round."""
    logger = get_run_logger()
    cfg = build_settings(settings)
    budget = max_rounds or cfg.max_rounds
    rounds: list[dict[str, Any]] = []
    status = "budget_spent"
    for number in range(1, budget + 1):
        storage = open_settings_storage(cfg)
        known = storage.list(EXPORTS)
        applied = apply_ner(
            keywords=keywords,
            source=source,
            input_uri=input_uri,
            max_posts=posts_per_round,
            destination="label_studio" if annotator == "label_studio" else "storage",
            settings=settings,
        )
        # batches an earlier, interrupted run fetched but never delivered count as sent
        finished = [r for r in applied.get("recovered", []) if "error" not in r]
        posts_sent = applied["n_posts"] + sum(int(r.get("n_predictions", 0)) for r in finished)
        if posts_sent == 0:
            status = "no_new_posts"
            break
        if annotator == "replay":
            tasks_keys = [r["tasks_key"] for r in finished if r.get("tasks_key")]
            if applied.get("tasks_key"):
                tasks_keys.append(applied["tasks_key"])
            gold = gold_export or str(demo_gold_path())
            stamp = run_stamp()
            replies = [
                retrying(replay_labels, cfg)(cfg, key, gold, f"{stamp}-{n}" if n else stamp)
                for n, key in enumerate(tasks_keys)
            ]
            labelled = {
                "export_keys": [reply["export_key"] for reply in replies],
                "n_labelled": sum(reply["n_labelled"] for reply in replies),
            }
        elif annotator == "label_studio":
            labelled = retrying(wait_for_label_studio, cfg)(cfg, wait_timeout_s, poll_interval_s)
            if labelled["n_labelled"] == 0:
                status = TIMED_OUT
                rounds.append(
                    {
                        "round": number,
                        "posts_sent": posts_sent,
                        "model_used": applied.get("model_version"),
                        "new_labels": 0,
                        "status": TIMED_OUT,
                    }
                )
                logger.warning(
                    "round %d: fewer than %d new labels after %.0f s; stopping",
                    number,
                    cfg.min_new_labels,
                    wait_timeout_s,
                )
                break
        else:
            labelled = retrying(wait_for_exports, cfg)(cfg, known, wait_timeout_s, poll_interval_s)
        trained = train_ner(
            source="label_studio" if annotator == "label_studio" else "storage",
            settings=settings,
        )
        row = {
            "round": number,
            "posts_sent": posts_sent,
            "model_used": applied.get("model_version"),
            "new_labels": labelled["n_labelled"],
            **trained,
        }
        rounds.append(row)
        logger.info("round %d: %s", number, trained.get("status"))
        if trained.get("status") == "threshold_met":
            status = "threshold_met"
            break
    return {"status": status, "rounds": rounds}


if __name__ == "__main__":  # the brandloop command line parses the arguments
    from apps.cli import flow_main

    flow_main("flows.feedback_loop")
