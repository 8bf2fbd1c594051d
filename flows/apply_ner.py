"""Flow ``apply-ner``: fetch posts -> predict brands -> send them to Label Studio.

Posts come from the X API (``source="x"``) or a JSONL file/storage key (``source="jsonl"``).
The model is ``model`` if given, else the registry's ``@champion``, else the cold start
(``NER_COLD_START``). Predictions go to Label Studio as pre-annotated tasks: into storage as
Label Studio import JSON (``destination="storage"``), or through its API
(``destination="label_studio"``).

**Nothing fetched is lost.** A batch is the posts one run fetched, ``posts/<stamp>.jsonl``;
the source's checkpoint moves as soon as it is stored. The batch is finished when its
Label Studio import JSON ``tasks/<stamp>.json`` is written, or, when it went through the API,
the receipt ``tasks/<stamp>.imported.json``. A run that fails in between (storage, MLflow or
Label Studio down beyond the task retries) leaves the batch unfinished, and the next run
finishes it first, under its own stamp, before fetching new posts. So every fetched post
reaches Label Studio once (API imports are idempotent per post id anyway).

**Labelling budget.** With ``NER_LABEL_BUDGET`` > 0 only that many posts of a batch go to
Label Studio, chosen by active learning (:func:`ner.active.select_batch`): the most uncertain
under the model that predicted them, diverse, no retweets or near-duplicates, none chosen
before. Every post is still predicted; the choice is kept in ``selections/<stamp>.json``.
"""

from __future__ import annotations

from collections.abc import Callable
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
from ner import active, inference, labelstudio, labelstudio_client, sources
from ner.errors import DataError
from ner.models import pin_model_uri
from ner.registry import CHAMPION
from ner.settings import Settings
from ner.storage import POSTS, PREDICTIONS, SELECTIONS, TASKS, Storage


@io_task()
def fetch_posts(
    settings: Settings,
    source: str,
    input_uri: str | None,
    keywords: list[str],
    max_posts: int,
    stamp: str,
) -> dict[str, Any]:
    """Fetch new posts into ``posts/<stamp>.jsonl``; returns the key and counts."""
    storage = open_settings_storage(settings)
    key = f"{POSTS}/{stamp}.jsonl"
    if source == "x":
        result = sources.fetch_x_to_storage(settings, storage, key, keywords, max_posts)
    elif source == "jsonl":
        if not input_uri:
            raise ValueError("source='jsonl' needs input_uri (a local path or storage key)")
        result = sources.fetch_jsonl_to_storage(storage, input_uri, key, max_posts)
    else:
        raise ValueError(f"unknown source {source!r}: use 'x' or 'jsonl'")
    if result["n_posts"] == 0:
        storage.delete(key)  # an empty batch is no batch (nothing to finish later)
        result["posts_key"] = None
    return result


def batch_stamp(posts_key: str) -> str:
    """``<stamp>`` of ``posts/<stamp>.jsonl``."""
    return posts_key.removeprefix(f"{POSTS}/").removesuffix(".jsonl")


def receipt_key(stamp: str) -> str:
    """Where the API import of batch ``stamp`` is recorded."""
    return f"{TASKS}/{stamp}.imported.json"


@io_task()
def unfinished_batches(settings: Settings) -> list[str]:
    """Posts batches stored by earlier runs that never reached Label Studio, oldest first."""
    storage = open_settings_storage(settings)
    done = {
        key.removeprefix(f"{TASKS}/").removesuffix(".json").removesuffix(".imported")
        for key in storage.list(TASKS)
        if key.endswith(".json")
    }
    return [
        key
        for key in storage.list(POSTS)
        if key.endswith(".jsonl") and key.count("/") == 1 and batch_stamp(key) not in done
    ]


@io_task()
def resolve_model(settings: Settings, model: str | None) -> str:
    """The model spec to predict with: explicit, else @champion, else the cold start. A
    registry alias is pinned to its version, so every step of the run loads the same model."""
    if model:
        return pin_model_uri(model, settings.mlflow_tracking_uri)
    registry = make_registry(settings)
    version = registry.alias_version(CHAMPION)
    if version is None:
        return settings.cold_start
    return f"models:/{registry.model_name}/{version}"


@io_task()
def predict_posts(
    settings: Settings, model_spec: str, posts_key: str, stamp: str
) -> dict[str, Any]:
    """Stream the posts through the model into ``predictions/<stamp>.jsonl``."""
    storage = open_settings_storage(settings)
    loaded = load_settings_model(settings, model_spec)
    key = f"{PREDICTIONS}/{stamp}.jsonl"
    count = inference.predict_to_storage(
        loaded.nlp,
        storage,
        posts_key,
        key,
        model_version=loaded.version,
        labels=settings.labels,
        batch_size=settings.batch_size,
        n_process=settings.n_process,
    )
    return {"predictions_key": key, "n_predictions": count, "model_version": loaded.version}


@io_task()
def select_for_labelling(
    settings: Settings, model_spec: str, posts_key: str, stamp: str
) -> dict[str, Any]:
    """Choose the batch's ``label_budget`` posts for the annotators (active learning) into
    ``selections/<stamp>.json``; returns its key, the strategy and the counts."""
    storage = open_settings_storage(settings)
    loaded = load_settings_model(settings, model_spec)
    key = f"{SELECTIONS}/{stamp}.json"
    record = active.select_batch(
        storage,
        posts_key,
        key,
        settings.label_budget,
        nlp=loaded.nlp,
        labels=settings.labels,
        diversity=settings.label_diversity,
        explore=settings.label_explore,
        seed=settings.seed,
    )
    return {
        "selection_key": key,
        "selection_strategy": record["strategy"],
        "n_selected": len(record["post_ids"]),
    }


def _selected_ids(storage: Storage, selection_key: str | None) -> set[str] | None:
    if selection_key is None:
        return None
    return {str(i) for i in storage.read_json(selection_key)["post_ids"]}


@io_task()
def write_tasks(
    settings: Settings,
    posts_key: str,
    predictions_key: str,
    stamp: str,
    selection_key: str | None = None,
) -> str:
    """Write Label Studio import JSON (tasks with pre-annotations) into ``tasks/``: every
    post, or those of the selection at ``selection_key``."""
    storage = open_settings_storage(settings)
    key = f"{TASKS}/{stamp}.json"
    only = _selected_ids(storage, selection_key)
    labelstudio.write_import_file(
        storage, posts_key, predictions_key, key, settings.labels, only=only
    )
    return key


@io_task()
def send_to_label_studio(
    settings: Settings,
    posts_key: str,
    predictions_key: str,
    selection_key: str | None = None,
) -> dict[str, int]:
    """Import the tasks (every post, or the selection's) through the Label Studio API
    (idempotent per post id), then write the batch's receipt ``tasks/<stamp>.imported.json``."""
    storage = open_settings_storage(settings)
    client = labelstudio_client.LabelStudioProject.connect(settings)
    only = _selected_ids(storage, selection_key)
    counts = client.import_predictions(storage, posts_key, predictions_key, only=only)
    storage.write_json(
        receipt_key(batch_stamp(posts_key)),
        {"posts_key": posts_key, "predictions_key": predictions_key, **counts},
    )
    return counts


#: The predict step of one batch: ``(settings, model spec, posts key, stamp)`` -> a dict with
#: at least ``predictions_key``, ``n_predictions`` and ``model_version``.
Predict = Callable[[Settings, str, str, str], dict[str, Any]]


def predict_in_process(cfg: Settings, spec: str, posts_key: str, stamp: str) -> dict[str, Any]:
    """apply-ner's predict step: :func:`predict_posts` with the settings' retries."""
    return retrying(predict_posts, cfg)(cfg, spec, posts_key, stamp)


def deliver(
    cfg: Settings,
    destination: str,
    spec: str,
    posts_key: str,
    stamp: str,
    predict: Predict = predict_in_process,
) -> dict[str, Any]:
    """Predict one stored batch and send it to ``destination``: every post, or with
    ``label_budget`` set, the posts active learning chooses. Returns keys and counts."""
    predicted = predict(cfg, spec, posts_key, stamp)
    out: dict[str, Any] = dict(predicted)
    selection_key: str | None = None
    if cfg.label_budget > 0:
        out.update(retrying(select_for_labelling, cfg)(cfg, spec, posts_key, stamp))
        selection_key = out["selection_key"]
    if destination == "label_studio":
        sent = retrying(send_to_label_studio, cfg)
        out.update(sent(cfg, posts_key, predicted["predictions_key"], selection_key))
    else:
        write = retrying(write_tasks, cfg)
        out["tasks_key"] = write(cfg, posts_key, predicted["predictions_key"], stamp, selection_key)
    return out


def run_apply(
    cfg: Settings,
    *,
    keywords: list[str] | None,
    source: str,
    input_uri: str | None,
    model: str | None,
    max_posts: int | None,
    destination: str,
    predict: Predict = predict_in_process,
) -> dict[str, Any]:
    """The body of the apply flows: finish unfinished batches, then fetch -> predict -> send.

    ``predict`` is the one step the flows do differently (in process, or sharded over Dask).
    Must run inside a flow.
    """
    logger = get_run_logger()
    stamp = run_stamp(flow_run_id())
    spec: str | None = None
    recovered: list[dict[str, Any]] = []
    for posts_key in retrying(unfinished_batches, cfg)(cfg):
        spec = spec or retrying(resolve_model, cfg)(cfg, model)
        try:
            done = deliver(cfg, destination, spec, posts_key, batch_stamp(posts_key), predict)
        except DataError as exc:  # a damaged batch must not block every later run
            logger.error("cannot finish batch %s, skipped: %s", posts_key, exc)
            recovered.append({"posts_key": posts_key, "error": str(exc)})
            continue
        logger.info("finished batch %s left by an earlier run", posts_key)
        recovered.append({"posts_key": posts_key, **done})
    fetched = retrying(fetch_posts, cfg)(
        cfg, source, input_uri, list(keywords or cfg.keywords), max_posts or cfg.max_posts, stamp
    )
    logger.info("fetched %s posts (%s rejected)", fetched["n_posts"], fetched["n_rejected"])
    summary: dict[str, Any] = {**fetched, "destination": destination, "recovered": recovered}
    if fetched["n_posts"] == 0:
        logger.info("no new posts: nothing to predict")
        return summary
    spec = spec or retrying(resolve_model, cfg)(cfg, model)
    summary.update(deliver(cfg, destination, spec, fetched["posts_key"], stamp, predict))
    logger.info("done with %s: %s", summary["model_version"], summary)
    return summary


@flow(name="apply-ner", log_prints=False)
def apply_ner(
    keywords: list[str] | None = None,
    source: Literal["x", "jsonl"] = "x",
    input_uri: str | None = None,
    model: str | None = None,
    max_posts: int | None = None,
    destination: Literal["storage", "label_studio"] = "storage",
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Finish unfinished batches, then fetch -> predict -> send. Returns the storage keys
    written and the counts (``recovered``: the earlier batches finished by this run)."""
    return run_apply(
        build_settings(settings),
        keywords=keywords,
        source=source,
        input_uri=input_uri,
        model=model,
        max_posts=max_posts,
        destination=destination,
    )


if __name__ == "__main__":  # the brandloop command line parses the arguments
    from apps.cli import flow_main

    flow_main("flows.apply_ner")
