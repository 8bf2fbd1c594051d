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
from pydantic import BaseModel

from flows.context import RunContext, flow_run_id, io_task, run_context, run_stamp
from ner import active, inference, labelstudio, labelstudio_client, sources
from ner.errors import ConfigError, DataError
from ner.models import pin_model_uri
from ner.registry import CHAMPION
from ner.storage import POSTS, PREDICTIONS, SELECTIONS, TASKS, Storage


class Fetched(BaseModel):
    """What :func:`fetch_posts` stored: ``posts_key`` is None when nothing new came."""

    posts_key: str | None
    n_posts: int
    n_rejected: int
    source: str


class Predicted(BaseModel):
    """The predictions of one batch, and the model version that made them."""

    predictions_key: str
    n_predictions: int
    model_version: str
    #: ``host:pid`` of the processes that predicted (sharded prediction only).
    shard_processes: list[str] = []


class Selection(BaseModel):
    """The posts of a batch chosen for the annotators (``NER_LABEL_BUDGET``)."""

    selection_key: str
    selection_strategy: str
    n_selected: int


class Imported(BaseModel):
    """Counts of an import through the Label Studio API, into project ``project_id``."""

    project_id: int | None = None
    n_imported: int = 0
    n_skipped_existing: int = 0
    n_duplicates_in_input: int = 0
    n_batches: int = 0


class Delivered(BaseModel):
    """One batch predicted and sent: to ``tasks_key`` in storage, or through the API."""

    posts_key: str
    predicted: Predicted
    selection: Selection | None = None
    tasks_key: str | None = None
    imported: Imported | None = None

    @property
    def n_predictions(self) -> int:
        return self.predicted.n_predictions


class Recovered(BaseModel):
    """A batch an earlier run left unfinished: delivered now, or skipped with ``error``."""

    posts_key: str
    delivered: Delivered | None = None
    error: str | None = None


class ApplyResult(BaseModel):
    """What one apply-ner run did: the batch it fetched (and delivered, if any posts came)
    and the earlier batches it finished first."""

    fetched: Fetched
    destination: str
    delivered: Delivered | None = None
    recovered: list[Recovered] = []

    @property
    def n_posts(self) -> int:
        return self.fetched.n_posts

    @property
    def model_version(self) -> str | None:
        return None if self.delivered is None else self.delivered.predicted.model_version

    def posts_sent(self) -> int:
        """Posts delivered by this run, earlier batches it finished included."""
        earlier = [r.delivered.n_predictions for r in self.recovered if r.delivered]
        return self.fetched.n_posts + sum(earlier)

    def tasks_keys(self) -> list[str]:
        """Label Studio import files written by this run, oldest batch first."""
        batches = [r.delivered for r in self.recovered] + [self.delivered]
        return [b.tasks_key for b in batches if b is not None and b.tasks_key]


@io_task()
def fetch_posts(
    ctx: RunContext,
    source: str,
    input_uri: str | None,
    keywords: list[str],
    max_posts: int,
    stamp: str,
) -> Fetched:
    """Fetch new posts into ``posts/<stamp>.jsonl``. A bad ``source`` or a missing
    ``input_uri`` raises :class:`ConfigError` (never retried)."""
    key = f"{POSTS}/{stamp}.jsonl"
    if source == "x":
        result = sources.fetch_x_to_storage(ctx.settings, ctx.storage, key, keywords, max_posts)
    elif source == "jsonl":
        if not input_uri:
            raise ConfigError("source='jsonl' needs input_uri (a local path or storage key)")
        result = sources.fetch_jsonl_to_storage(ctx.storage, input_uri, key, max_posts)
    else:
        raise ConfigError(f"unknown source {source!r}: use 'x' or 'jsonl'")
    fetched = Fetched.model_validate(result)
    if fetched.n_posts == 0:
        ctx.storage.delete(key)  # an empty batch is no batch (nothing to finish later)
        return fetched.model_copy(update={"posts_key": None})
    return fetched


def batch_stamp(posts_key: str) -> str:
    """``<stamp>`` of ``posts/<stamp>.jsonl``."""
    return posts_key.removeprefix(f"{POSTS}/").removesuffix(".jsonl")


def receipt_key(stamp: str) -> str:
    """Where the API import of batch ``stamp`` is recorded."""
    return f"{TASKS}/{stamp}.imported.json"


@io_task()
def unfinished_batches(ctx: RunContext) -> list[str]:
    """Posts batches stored by earlier runs that never reached Label Studio, oldest first."""
    storage = ctx.storage
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
def resolve_model(ctx: RunContext, model: str | None) -> str:
    """The model spec to predict with: explicit, else @champion, else the cold start. A
    registry alias is pinned to its version, so every step of the run loads the same model.
    An alias or model that does not exist raises :class:`ModelNotFoundError` (not retried)."""
    if model:
        return pin_model_uri(model, ctx.settings.mlflow_tracking_uri)
    version = ctx.registry.alias_version(CHAMPION)
    if version is None:
        return ctx.settings.cold_start
    return f"models:/{ctx.registry.model_name}/{version}"


@io_task()
def predict_posts(ctx: RunContext, model_spec: str, posts_key: str, stamp: str) -> Predicted:
    """Stream the posts through the model into ``predictions/<stamp>.jsonl``."""
    loaded = ctx.load_model(model_spec)
    key = f"{PREDICTIONS}/{stamp}.jsonl"
    count = inference.predict_to_storage(
        loaded.nlp,
        ctx.storage,
        posts_key,
        key,
        model_version=loaded.version,
        labels=ctx.settings.labels,
        batch_size=ctx.settings.batch_size,
        n_process=ctx.settings.n_process,
    )
    return Predicted(predictions_key=key, n_predictions=count, model_version=loaded.version)


@io_task()
def select_for_labelling(ctx: RunContext, model_spec: str, posts_key: str, stamp: str) -> Selection:
    """Choose the batch's ``label_budget`` posts for the annotators (active learning) into
    ``selections/<stamp>.json``."""
    settings = ctx.settings
    key = f"{SELECTIONS}/{stamp}.json"
    record = active.select_batch(
        ctx.storage,
        posts_key,
        key,
        settings.label_budget,
        nlp=ctx.load_model(model_spec).nlp,
        labels=settings.labels,
        diversity=settings.label_diversity,
        explore=settings.label_explore,
        seed=settings.seed,
    )
    return Selection(
        selection_key=key,
        selection_strategy=record["strategy"],
        n_selected=len(record["post_ids"]),
    )


def _selected_ids(storage: Storage, selection: Selection | None) -> set[str] | None:
    if selection is None:
        return None
    return {str(i) for i in storage.read_json(selection.selection_key)["post_ids"]}


@io_task()
def write_tasks(
    ctx: RunContext,
    posts_key: str,
    predictions_key: str,
    stamp: str,
    selection: Selection | None = None,
) -> str:
    """Write Label Studio import JSON (tasks with pre-annotations) into ``tasks/``: every
    post, or those of ``selection``; returns its key."""
    key = f"{TASKS}/{stamp}.json"
    only = _selected_ids(ctx.storage, selection)
    labelstudio.write_import_file(
        ctx.storage, posts_key, predictions_key, key, ctx.settings.labels, only=only
    )
    return key


@io_task()
def send_to_label_studio(
    ctx: RunContext,
    posts_key: str,
    predictions_key: str,
    selection: Selection | None = None,
) -> Imported:
    """Import the tasks (every post, or the selection's) through the Label Studio API
    (idempotent per post id), then write the batch's receipt ``tasks/<stamp>.imported.json``."""
    client = labelstudio_client.LabelStudioProject.connect(ctx.settings)
    only = _selected_ids(ctx.storage, selection)
    counts = client.import_predictions(ctx.storage, posts_key, predictions_key, only=only)
    ctx.storage.write_json(
        receipt_key(batch_stamp(posts_key)),
        {"posts_key": posts_key, "predictions_key": predictions_key, **counts},
    )
    return Imported.model_validate(counts)


#: The predict step of one batch: ``(context, model spec, posts key, stamp)`` -> predictions.
Predict = Callable[[RunContext, str, str, str], Predicted]


def deliver(
    ctx: RunContext,
    destination: str,
    spec: str,
    posts_key: str,
    stamp: str,
    predict: Predict = predict_posts,
) -> Delivered:
    """Predict one stored batch and send it to ``destination``: every post, or with
    ``label_budget`` set, the posts active learning chooses."""
    predicted = predict(ctx, spec, posts_key, stamp)
    selection = None
    if ctx.settings.label_budget > 0:
        selection = select_for_labelling(ctx, spec, posts_key, stamp)
    done = Delivered(posts_key=posts_key, predicted=predicted, selection=selection)
    if destination == "label_studio":
        done.imported = send_to_label_studio(ctx, posts_key, predicted.predictions_key, selection)
    else:
        done.tasks_key = write_tasks(ctx, posts_key, predicted.predictions_key, stamp, selection)
    return done


def finish_unfinished(
    ctx: RunContext, destination: str, resolve: Callable[[], str], predict: Predict
) -> list[Recovered]:
    """Deliver the batches earlier runs fetched but never delivered, oldest first. A batch
    with a bad record is skipped (and reported), so it cannot block every later run."""
    logger = get_run_logger()
    recovered: list[Recovered] = []
    for posts_key in unfinished_batches(ctx):
        try:
            done = deliver(ctx, destination, resolve(), posts_key, batch_stamp(posts_key), predict)
        except DataError as exc:
            logger.error("cannot finish batch %s, skipped: %s", posts_key, exc)
            recovered.append(Recovered(posts_key=posts_key, error=str(exc)))
            continue
        logger.info("finished batch %s left by an earlier run", posts_key)
        recovered.append(Recovered(posts_key=posts_key, delivered=done))
    return recovered


def run_apply(
    ctx: RunContext,
    *,
    keywords: list[str] | None,
    source: str,
    input_uri: str | None,
    model: str | None,
    max_posts: int | None,
    destination: str,
    predict: Predict = predict_posts,
) -> ApplyResult:
    """The body of the apply flows: finish unfinished batches, then fetch -> predict -> send.

    ``predict`` is the one step the flows do differently (in process, or sharded over Dask).
    Must run inside a flow.
    """
    logger = get_run_logger()
    if destination not in ("storage", "label_studio"):
        raise ConfigError(f"unknown destination {destination!r}: use 'storage' or 'label_studio'")
    stamp = run_stamp(flow_run_id())
    specs: list[str] = []

    def resolve() -> str:  # resolved once, and only when there is something to predict
        if not specs:
            specs.append(resolve_model(ctx, model))
        return specs[0]

    recovered = finish_unfinished(ctx, destination, resolve, predict)
    wanted = list(keywords or ctx.settings.keywords)
    fetched = fetch_posts(
        ctx, source, input_uri, wanted, max_posts or ctx.settings.max_posts, stamp
    )
    logger.info("fetched %s posts (%s rejected)", fetched.n_posts, fetched.n_rejected)
    result = ApplyResult(fetched=fetched, destination=destination, recovered=recovered)
    if fetched.posts_key is None:
        logger.info("no new posts: nothing to predict")
        return result
    result.delivered = deliver(ctx, destination, resolve(), fetched.posts_key, stamp, predict)
    logger.info("done with %s: %s", result.model_version, result.delivered)
    return result


@flow(name="apply-ner", log_prints=False)
def apply_ner(
    keywords: list[str] | None = None,
    source: Literal["x", "jsonl"] = "x",
    input_uri: str | None = None,
    model: str | None = None,
    max_posts: int | None = None,
    destination: Literal["storage", "label_studio"] = "storage",
    overrides: dict[str, Any] | None = None,
) -> ApplyResult:
    """Finish unfinished batches, then fetch -> predict -> send. ``overrides`` are settings
    on top of the environment (``{"label_budget": 50}``). Returns what was fetched and
    delivered (``recovered``: the earlier batches finished by this run)."""
    with run_context(overrides) as ctx:
        return run_apply(
            ctx,
            keywords=keywords,
            source=source,
            input_uri=input_uri,
            model=model,
            max_posts=max_posts,
            destination=destination,
        )


if __name__ == "__main__":
    print(apply_ner())
