"""Flow ``apply-ner-sharded``: the apply flow with its predict step spread over a Dask cluster.

Same steps, parameters and batch bookkeeping as ``apply-ner`` (it runs apply-ner's body,
:func:`flows.apply_ner.run_apply`: unfinished batches first, then fetch -> predict -> send),
with the predict step replaced, plus three parameters:

* ``cluster_address`` - the Dask scheduler to use (``tcp://scheduler:8786``); defaults to the
  ``NER_DASK_ADDRESS`` setting. Without either, a ``LocalCluster`` of ``workers``
  single-threaded worker processes is started for the run.
* ``workers`` - size of that local cluster (default 2), and the default number of shards.
* ``n_shards`` - how many contiguous line ranges the posts are cut into (default ``workers``).
  With a remote cluster, set it to the number of worker processes there.

The predict step runs as the sub-flow ``predict-sharded`` on a ``prefect_dask.DaskTaskRunner``:
one task per shard loads the model once, predicts its lines into
``predictions/<stamp>/shard-<i>.jsonl``, and a final task joins the shards in order into
``predictions/<stamp>.jsonl`` - the same object, line for line, as ``apply-ner`` writes.

Workers of a remote cluster need brandloop installed, access to the storage
(``NER_STORAGE_URI``) and to MLflow, and ``PREFECT_API_URL`` pointing at the Prefect API.
A local cluster gets the API address of this process (also Prefect's ephemeral server).
"""

from __future__ import annotations

import os
import socket
import time
from typing import TYPE_CHECKING, Any, Literal, cast

from prefect import flow
from prefect_dask import DaskTaskRunner

from flows.context import RunContext, flow_run_id, io_task, run_context, run_stamp
from ner import sharding
from ner.errors import ConfigError, ModelError
from ner.settings import Settings
from ner.storage import PREDICTIONS, open_storage

if TYPE_CHECKING:
    from prefect.task_runners import TaskRunner

    from flows.apply_ner import ApplyResult


def _api_url() -> str | None:
    """The Prefect API this process talks to, including a running ephemeral server."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if url:
        return str(url)
    try:
        from prefect.server.api.server import SubprocessASGIServer
    except ImportError:  # server extras absent: there is no ephemeral server to share
        return None
    server = SubprocessASGIServer()
    return server.api_url if getattr(server, "running", False) else None


def dask_task_runner(cluster_address: str | None = None, workers: int = 2) -> DaskTaskRunner:
    """A task runner on the scheduler at ``cluster_address``, else on a fresh LocalCluster.

    Local workers are told this process's Prefect API address: otherwise each of them would
    start its own ephemeral API server (tens of seconds each).
    """
    if cluster_address:
        return DaskTaskRunner(address=cluster_address)
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}")
    url = _api_url()
    cluster_kwargs: dict[str, Any] = {
        "n_workers": workers,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "env": {"PREFECT_API_URL": url} if url else {},
    }
    return DaskTaskRunner(cluster_kwargs=cluster_kwargs)


def _storage(settings: Settings) -> Any:
    return open_storage(settings.storage_uri, settings.env, gcs_timeout_s=settings.gcs_timeout_s)


@io_task()
def plan_shards(settings: Settings, posts_key: str, n_shards: int) -> list[sharding.Shard]:
    """Cut the posts object into ``n_shards`` contiguous line ranges."""
    return sharding.plan_shards(sharding.count_lines(_storage(settings), posts_key), n_shards)


@io_task()
def predict_shard(
    settings: Settings,
    model_spec: str,
    posts_key: str,
    shard: sharding.Shard,
    stamp: str,
) -> dict[str, Any]:
    """Load the model once and predict one shard; returns its key, count and timings."""
    started = time.time()
    cfg = settings
    loaded = RunContext.open(cfg).load_model(model_spec)
    loaded_at = time.time()
    key = sharding.shard_key(stamp, shard.index)
    count = sharding.predict_shard(
        loaded.nlp,
        _storage(cfg),
        posts_key,
        shard,
        key,
        model_version=loaded.version,
        labels=cfg.labels,
        batch_size=cfg.batch_size,
    )
    return {
        "index": shard.index,
        "key": key,
        "n_predictions": count,
        "model_version": loaded.version,
        "process": f"{socket.gethostname()}:{os.getpid()}",
        "started": started,
        "load_seconds": loaded_at - started,
        "finished": time.time(),
    }


@io_task()
def join_shards(settings: Settings, shards: list[dict[str, Any]], stamp: str) -> dict[str, Any]:
    """Join the shard outputs in shard order into ``predictions/<stamp>.jsonl``."""
    versions = {item["model_version"] for item in shards}
    if len(versions) > 1:
        raise ModelError(f"shards were predicted by different models: {sorted(versions)}")
    storage = _storage(settings)
    ordered = sorted(shards, key=lambda item: item["index"])
    key = f"{PREDICTIONS}/{stamp}.jsonl"
    count = sharding.concat_shards(storage, [item["key"] for item in ordered], key)
    return {"predictions_key": key, "n_predictions": count, "model_version": versions.pop()}


@flow(name="predict-sharded", log_prints=False)
def predict_sharded(
    model_spec: str,
    posts_key: str,
    stamp: str | None = None,
    n_shards: int = 2,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict ``posts_key`` shard by shard on this flow's task runner.

    Run it with ``predict_sharded.with_options(task_runner=dask_task_runner(...))``; on the
    default runner the shards run in threads of this process. Called by apply-ner-sharded
    with its ``overrides``, it shares that run's context; the shard tasks get its settings
    (secrets already read) and its retry policy.
    """
    with run_context(overrides) as ctx:
        settings = ctx.settings
    stamp = stamp or run_stamp(flow_run_id())
    shards = plan_shards(settings, posts_key, n_shards)
    if not shards:
        raise ConfigError(f"{posts_key} has no lines to predict")
    futures = [
        predict_shard.submit(settings, model_spec, posts_key, shard, stamp) for shard in shards
    ]
    results = [future.result() for future in futures]
    joined = join_shards(settings, results, stamp)
    return {
        **joined,
        "n_shards": len(results),
        "shards": sorted(results, key=lambda item: item["index"]),
    }


@flow(name="apply-ner-sharded", log_prints=False)
def apply_ner_sharded(
    keywords: list[str] | None = None,
    source: Literal["x", "jsonl"] = "x",
    input_uri: str | None = None,
    model: str | None = None,
    max_posts: int | None = None,
    destination: Literal["storage", "label_studio"] = "storage",
    overrides: dict[str, Any] | None = None,
    cluster_address: str | None = None,
    workers: int = 2,
    n_shards: int | None = None,
) -> ApplyResult:
    """apply-ner with the predict step sharded over Dask: finish unfinished batches, then
    fetch -> predict -> send. Returns the keys written and counts."""
    # apply-ner's body; imported here so that predict-sharded needs nothing but ``ner``.
    from flows.apply_ner import Predicted, run_apply

    def predict(ctx: RunContext, spec: str, posts_key: str, stamp: str) -> Predicted:
        address = cluster_address or ctx.settings.dask_address
        runner = cast("TaskRunner[Any]", dask_task_runner(address, workers))
        predicted = predict_sharded.with_options(task_runner=runner)(
            spec, posts_key, stamp, n_shards or workers, overrides
        )
        return Predicted(
            predictions_key=predicted["predictions_key"],
            n_predictions=predicted["n_predictions"],
            model_version=predicted["model_version"],
            shard_processes=sorted({shard["process"] for shard in predicted["shards"]}),
        )

    with run_context(overrides) as ctx:
        return run_apply(
            ctx,
            keywords=keywords,
            source=source,
            input_uri=input_uri,
            model=model,
            max_posts=max_posts,
            destination=destination,
            predict=predict,
        )


if __name__ == "__main__":
    print(apply_ner_sharded())
