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

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.context import (
    Count,
    RunContext,
    flow_run_id,
    io_task,
    publish_result,
    require_counts,
    run_context,
    run_logger,
    run_stamp,
)
from ner import active, layout, leases, parallel, purge, sources
from ner.errors import ConfigError, DataError, StorageError
from ner.labelstudio import exchange
from ner.labelstudio.client import LabelStudioProject
from ner.models import LoadedModel, check_model_spec, expand_model_spec, pin_model_uri
from ner.records import count_lines
from ner.registry import CHAMPION
from ner.report import fields_table, quantity
from ner.storage import Storage


class Fetched(BaseModel):
    """What :func:`fetch_posts` stored: ``posts_key`` is None when nothing new came."""

    posts_key: str | None
    n_posts: int
    n_rejected: int
    source: str
    #: Posts the source sent again that were forgotten before (left out of the batch).
    n_forgotten: int = 0
    #: Where the rejected lines are listed with their reasons (None: none rejected).
    rejected_key: str | None = None
    #: Lines of a JSONL file rejected by earlier runs and unchanged since (not read again).
    n_rejected_before: int = 0
    #: Posts a replaced JSONL file sent again with the same id and text (left out).
    n_fetched_before: int = 0


class Predicted(BaseModel):
    """The predictions of one batch, and the model version that made them."""

    predictions_key: str
    n_predictions: int
    model_version: str
    #: Whether the model was the cold start (``NER_COLD_START``: no champion yet, or named).
    cold_start: bool = False
    #: How many line ranges the posts were cut into, and ``host:pid`` of the processes
    #: that predicted them.
    n_shards: int = 1
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
    #: Posts not sent: the project holds their id with another text (named in
    #: ``tasks/<stamp>.rejected.json``).
    n_id_conflicts: int = 0
    n_batches: int = 0
    #: Tasks already there given this run's predictions (a post predicted again with
    #: another model: ``reread``), which they held no prediction of.
    n_predictions_added: int = 0


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
    """A batch an earlier run left unfinished: delivered now, skipped with ``error``, or
    left to another run (``skipped`` says why: it holds the batch's lease, or finished it)."""

    posts_key: str
    delivered: Delivered | None = None
    error: str | None = None
    skipped: str | None = None


class ApplyResult(BaseModel):
    """What one apply-ner run did: the batch it fetched (and delivered, if any posts came)
    and the earlier batches it finished first."""

    fetched: Fetched
    destination: str
    delivered: Delivered | None = None
    #: Why the fetched batch was left to another run (see :class:`Recovered`).
    skipped: str | None = None
    recovered: list[Recovered] = []
    #: Why nothing new was fetched (the input read to its end, every line rejected...).
    no_posts: str | None = None

    @property
    def n_posts(self) -> int:
        return self.fetched.n_posts

    @property
    def model_version(self) -> str | None:
        return None if self.delivered is None else self.delivered.predicted.model_version

    @property
    def cold_start(self) -> bool:
        """Whether the batch was predicted by the cold start, not a registered version."""
        return self.delivered is not None and self.delivered.predicted.cold_start

    def posts_sent(self) -> int:
        """Posts delivered by this run, earlier batches it finished included."""
        earlier = [r.delivered.n_predictions for r in self.recovered if r.delivered]
        return self.fetched.n_posts + sum(earlier)

    def refused_all(self) -> bool:
        """Whether this run refused records (lines the fetch rejected, posts Label Studio
        holds under their id with another text) and sent none: ``brandloop apply`` then
        exits 4 (trial BA: exit 0 with every line rejected)."""
        conflicts = sum(b.imported.n_id_conflicts for b in self._batches() if b.imported)
        return self.fetched.n_rejected + conflicts > 0 and self.posts_sent() <= conflicts

    def tasks_keys(self) -> list[str]:
        """Label Studio import files written by this run, oldest batch first."""
        return [b.tasks_key for b in self._batches() if b.tasks_key]

    def _batches(self) -> list[Delivered]:
        """The batches this run delivered, earlier ones it finished first."""
        batches = [r.delivered for r in self.recovered] + [self.delivered]
        return [b for b in batches if b is not None]

    @property
    def outcome(self) -> str:
        """``delivered``, ``skipped`` (left to another run) or ``no_new_posts``."""
        if self.delivered is not None:
            return "delivered"
        return "skipped" if self.skipped else "no_new_posts"

    def summary(self, uri: Callable[[str], str] = str) -> dict[str, Any]:
        """The run's figures by name (None: does not apply), storage keys through ``uri``
        (``Storage.uri`` gives full ``file://`` / ``gs://`` addresses). ``recovered`` counts
        the earlier batches delivered now, ``earlier_left`` those left to another run or
        failing (trial W)."""
        delivered, fetched = self.delivered, self.fetched
        imported = delivered.imported if delivered else None
        selection = delivered.selection if delivered else None

        def where(key: str | None) -> str | None:
            return None if key is None else uri(key)

        return {
            "n_posts": fetched.n_posts,
            "n_rejected": fetched.n_rejected,
            "rejected_key": where(fetched.rejected_key),
            "n_rejected_before": fetched.n_rejected_before or None,
            "n_forgotten": fetched.n_forgotten or None,
            "n_fetched_before": fetched.n_fetched_before or None,
            "model_version": self.model_version,
            "posts_key": where(fetched.posts_key),
            "predictions_key": where(delivered.predicted.predictions_key) if delivered else None,
            "tasks_key": where(delivered.tasks_key) if delivered else None,
            "n_selected": selection.n_selected if selection else None,
            "selection_key": where(selection.selection_key) if selection else None,
            "n_imported": imported.n_imported if imported else None,
            "n_skipped_existing": imported.n_skipped_existing if imported else None,
            "n_predictions_added": (imported.n_predictions_added or None) if imported else None,
            "n_id_conflicts": (imported.n_id_conflicts or None) if imported else None,
            "recovered": sum(r.delivered is not None for r in self.recovered) or None,
            "earlier_left": sum(r.delivered is None for r in self.recovered) or None,
            "skipped": self.skipped,
            "no_posts": self.no_posts,
        }

    def markdown(self, uri: Callable[[str], str] = str) -> str:
        """The run's result as Markdown (its Prefect artifact): the outcome, the figures
        of :meth:`summary` that apply."""
        lines = [f"# apply-ner: {self.outcome}", "", *fields_table(self.summary(uri))]
        return "\n".join(lines) + "\n"


@io_task()
def fetch_posts(
    ctx: RunContext,
    source: str,
    input_uri: str | None,
    keywords: list[str],
    max_posts: int,
    stamp: str,
    reread: bool = False,
) -> Fetched:
    """Fetch new posts into ``posts/<stamp>.jsonl`` (``reread``: a JSONL file from its first
    line again). A bad ``source``, a missing ``input_uri`` or ``reread`` of X raises
    :class:`ConfigError` (never retried)."""
    key = layout.posts_batch(stamp)
    if source == "x" and reread:
        raise ConfigError("reread reads a JSONL file again; X posts are fetched once")
    if source == "x":
        result = sources.fetch_x_to_storage(ctx.settings, ctx.storage, key, keywords, max_posts)
    elif source == "jsonl":
        if not input_uri:
            raise ConfigError("source='jsonl' needs input_uri (a local path or storage key)")
        result = sources.fetch_jsonl_to_storage(
            ctx.storage, input_uri, key, max_posts, ctx.settings.max_post_chars, from_start=reread
        )
    else:
        raise ConfigError(f"unknown source {source!r}: use 'x' or 'jsonl'")
    fetched = Fetched.model_validate(result)  # a JSONL fetch leaves forgotten posts out
    if source == "x":  # deleted upstream, still sent by X
        forgotten = purge.drop_forgotten_posts(ctx.storage, key)
        fetched.n_posts -= forgotten
        fetched.n_forgotten += forgotten
    if fetched.n_forgotten:
        run_logger().info(
            "left out %s forgotten before (tombstones under forgotten/; `brandloop forget "
            "--lift` if by mistake)",
            quantity(fetched.n_forgotten, "post"),
        )
    if fetched.n_posts == 0:
        ctx.storage.delete(key)  # an empty batch is no batch (nothing to finish later)
        return fetched.model_copy(update={"posts_key": None})
    return fetched


@io_task()
def unfinished_batches(ctx: RunContext) -> list[str]:
    """Posts batches stored by earlier runs that never reached Label Studio, oldest first."""
    storage = ctx.storage
    done = {layout.delivered_stamp(key) for key in storage.list(layout.TASKS)}
    return [
        key
        for key in storage.list(layout.POSTS)
        if layout.is_posts_batch(key) and layout.batch_stamp(key) not in done
    ]


@io_task()
def resolve_model(ctx: RunContext, model: str | None) -> str:
    """The model spec to predict with: explicit (``@champion`` and ``3`` name this
    environment's registered model, :func:`~ner.models.expand_model_spec`), else @champion,
    else the cold start. A registry alias is pinned to its version, so every step of the run
    loads the same model. An alias or model that does not exist raises
    :class:`ModelNotFoundError` (not retried)."""
    if model:
        model = expand_model_spec(model, ctx.registry.model_name)
        spec = pin_model_uri(model, ctx.settings.mlflow_tracking_uri)  # an alias: resolved
        if spec == model:  # a name, path or pinned version: checked without loading it
            check_model_spec(spec, ctx.settings.mlflow_tracking_uri)
        return spec
    if (db := ctx.settings.tracking_db) is not None and not db.exists():
        # no store, no champion: asking MLflow would create an empty one (trial AN)
        run_logger().info("no MLflow store at %s yet: no champion, the cold start predicts", db)
        return ctx.settings.cold_start
    version = ctx.registry.alias_version(CHAMPION)
    if version is None:
        return ctx.settings.cold_start
    return f"models:/{ctx.registry.model_name}/{version}"


#: Where the predict step runs: processes of this machine, or a Dask cluster.
Executor = Literal["processes", "dask"]


class Parallelism(BaseModel, frozen=True):
    """The flow's parallel parameters for the predict step (see :func:`apply_ner`)."""

    executor: Executor = "processes"
    workers: int | None = None
    cluster_address: str | None = None
    n_shards: int | None = None


@io_task()
def predict_posts(
    ctx: RunContext,
    model_spec: str,
    posts_key: str,
    stamp: str,
    parallelism: Parallelism | None = None,
) -> Predicted:
    """Predict the posts into ``predictions/<stamp>.jsonl`` on the flow's executor
    (:func:`ner.parallel.predict_parallel`): the same output whatever the executor."""
    settings, how, logger = ctx.settings, parallelism or Parallelism(), get_run_logger()
    dask = how.executor == "dask"
    workers = how.workers or (2 if dask else settings.n_process)
    model: LoadedModel | parallel.ModelRef = ctx.model_ref(model_spec)
    if parallel.loads_here(how.executor, workers, how.n_shards):
        model = ctx.shared_model(model_spec)  # the selection step reuses it
    run = parallel.predict_parallel(
        ctx.storage,
        posts_key,
        layout.predictions(stamp),
        model,
        backend=how.executor,
        workers=workers,
        address=(how.cluster_address or settings.dask_address) if dask else None,
        n_shards=how.n_shards,
        labels=settings.labels,
        batch_size=settings.batch_size,
        on_progress=lambda p: logger.info(
            "predicted %d/%s (%s)", p.n_predicted, quantity(p.n_posts, "post"), p.rate_text
        ),
    )
    where = ", ".join(run.processes)  # host:pid of each process that predicted a shard
    if run.n_shards == 1:
        logger.info("predicted %s in one process (%s)", quantity(run.n_predictions, "post"), where)
    else:
        logger.info(
            "predicted %d posts in %d shards on %s (processes %s)",
            run.n_predictions,
            run.n_shards,
            run.backend,
            where,
        )
    return Predicted(
        predictions_key=run.predictions_key,
        n_predictions=run.n_predictions,
        model_version=run.model_version,
        cold_start=model_spec == settings.cold_start,
        n_shards=run.n_shards,
        shard_processes=list(run.processes),
    )


@io_task()
def select_for_labelling(ctx: RunContext, model_spec: str, posts_key: str, stamp: str) -> Selection:
    """Choose the batch's ``label_budget`` posts for the annotators (active learning) into
    ``selections/<stamp>.json``."""
    settings = ctx.settings
    key = layout.selection(stamp)
    record = active.select_batch(
        ctx.storage,
        posts_key,
        key,
        settings.label_budget,
        nlp=ctx.shared_model(model_spec).nlp,
        labels=settings.labels,
        diversity=settings.label_diversity,
        explore=settings.label_explore,
        seed=settings.seed,
    )
    chosen = len(record.post_ids)
    run_logger().info(
        "chose %s of %s for the annotators (NER_LABEL_BUDGET=%d, %s); the others are "
        "predicted and stored, not sent: %s",
        quantity(chosen, "post"),
        count_lines(ctx.storage, posts_key),
        settings.label_budget,
        record.strategy,
        key,
    )
    return Selection(selection_key=key, selection_strategy=record.strategy, n_selected=chosen)


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
    key = layout.tasks_import(stamp)
    only = _selected_ids(ctx.storage, selection)
    exchange.write_import_file(
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
    client = LabelStudioProject.connect(ctx.settings)
    only = _selected_ids(ctx.storage, selection)
    n_posts = len(only) if only is not None else count_lines(ctx.storage, posts_key)
    logger = get_run_logger()
    with import_lease(ctx.storage, client.project_id, flow_run_id() or posts_key, logger):
        report = exchange.import_predictions(
            client,
            ctx.storage,
            posts_key,
            predictions_key,
            only=only,
            on_batch=_import_progress(n_posts, logger),
        )
    stamp = layout.batch_stamp(posts_key)
    if report.conflicts:  # written before the receipt: a receipt means the batch is done
        ctx.storage.write_json(layout.import_rejected(stamp), report.conflicts)
    counts = report.model_dump(exclude={"conflicts"})
    ctx.storage.write_json(
        layout.import_receipt(stamp),
        {"posts_key": posts_key, "predictions_key": predictions_key, **counts},
    )
    return Imported.model_validate(counts)


#: Seconds an import waits for another run's import into the same project before it fails
#: (a :class:`StorageError`: the task's retries wait again).
IMPORT_WAIT_S = 900.0


@contextmanager
def import_lease(
    storage: Storage, project_id: int, owner: str, logger: Any, wait_s: float = IMPORT_WAIT_S
) -> Iterator[None]:
    """Hold Label Studio project ``project_id``'s import lease (:mod:`ner.leases`, in the
    environment's storage) while importing: an import lists the project's post ids, then
    imports the missing posts, so two runs at once would both find a post missing and both
    import it (a trial's two runs 41 ms apart made 20 duplicate tasks). A run that finds the
    lease held waits for it, ``wait_s`` seconds at most."""

    def waiting() -> None:
        logger.info("another run is importing into project %d: waiting for it", project_id)

    what = f"the import into Label Studio project {project_id}"
    name = f"labelstudio-import-{project_id}"
    with leases.hold(storage, name, owner, what=what, wait_s=wait_s, on_wait=waiting):
        yield


def _release(
    storage: Storage, lease: leases.Lease, logger: Any, what: str, *, done: bool = False
) -> None:
    """:func:`ner.leases.end` ``lease``; a storage failure is a warning (the lease expires on
    its own, and the next release prunes)."""
    try:
        leases.end(storage, lease, done=done)
    except StorageError as exc:
        logger.warning("could not release the lease of %s: %s", what, exc)


def _import_progress(n_posts: int, logger: Any) -> exchange.OnBatch:
    """An ``on_batch`` for :func:`exchange.import_items` that logs to ``logger`` the tasks
    imported so far out of ``n_posts`` (posts already in the project are skipped, so it may
    end below)."""
    imported = [0]

    def on_batch(number: int, task_ids: list[int]) -> None:
        imported[0] += len(task_ids)
        logger.info(
            "batch %d: %s so far, of %s (a post already in the project is skipped)",
            number,
            quantity(imported[0], "new task"),
            quantity(n_posts, "post"),
        )

    return on_batch


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


@contextmanager
def batch_lease(ctx: RunContext, posts_key: str, stamp: str) -> Iterator[str | None]:
    """Hold batch ``stamp``'s lease (:mod:`ner.leases`) while delivering it, so that of several
    runs at once exactly one delivers it. Yields None when this run may deliver, else why it
    must not (another run holds the lease, or finished the batch meanwhile)."""
    logger = get_run_logger()
    storage = ctx.storage
    lease = leases.acquire(storage, stamp, owner=flow_run_id() or stamp)
    if lease is None:
        logger.info("batch %s is being delivered by another run: skipped", posts_key)
        yield "another run holds the batch's lease"
        return

    def finished() -> bool:
        return storage.exists(layout.tasks_import(stamp)) or storage.exists(
            layout.import_receipt(stamp)
        )

    try:
        yield "finished by another run" if finished() else None
    finally:
        try:
            done = finished()
        except StorageError:
            done = False  # the next run's release retires it
        _release(storage, lease, logger, f"batch {posts_key}", done=done)


def finish_unfinished(
    ctx: RunContext, destination: str, resolve: Callable[[], str], predict: Predict
) -> list[Recovered]:
    """Deliver the batches earlier runs fetched but never delivered, oldest first. A batch
    with a bad record is skipped (and reported), so it cannot block every later run."""
    logger = get_run_logger()
    recovered: list[Recovered] = []
    for posts_key in unfinished_batches(ctx):
        stamp = layout.batch_stamp(posts_key)
        try:
            with batch_lease(ctx, posts_key, stamp) as skip:
                if skip:
                    recovered.append(Recovered(posts_key=posts_key, skipped=skip))
                    continue
                done = deliver(ctx, destination, resolve(), posts_key, stamp, predict)
        except DataError as exc:
            logger.error("cannot finish batch %s, skipped: %s", posts_key, exc)
            recovered.append(Recovered(posts_key=posts_key, error=str(exc)))
            continue
        logger.info("finished batch %s left by an earlier run", posts_key)
        recovered.append(Recovered(posts_key=posts_key, delivered=done))
    return recovered


def no_posts_hint(ctx: RunContext, source: str, input_uri: str | None, fetched: Fetched) -> str:
    """Why a fetch found no new post, every cause at once: posts forgotten before, and for a
    JSONL file lines rejected (now, or by an earlier run and still unfixed) and posts fetched
    before (and how to read them again); else that the file holds none, or that earlier runs
    read every line."""
    causes = []
    if fetched.n_forgotten:
        causes.append(f"{quantity(fetched.n_forgotten, 'post')} forgotten before")
    if source != "jsonl" or not input_uri:
        return "; ".join(causes) or "the source has no post newer than the last one fetched"
    if fetched.rejected_key:
        causes.append(
            f"{quantity(fetched.n_rejected, 'line')} rejected, each with its reason in "
            f"{ctx.storage.uri(fetched.rejected_key)}; fix them and run again"
        )
    state = sources.line_checkpoint(ctx.storage, input_uri)
    earlier = {n: k for n, k in state.rejected.items() if k != fetched.rejected_key}
    if earlier:
        causes.append(
            f"{quantity(len(earlier), 'line')} rejected by an earlier run and unchanged since "
            f"({sources.rejected_lines_phrase(ctx.storage, earlier)}); fix "
            f"{'it' if len(earlier) == 1 else 'them'} and run again"
        )
    if fetched.n_fetched_before:
        causes.append(
            f"{quantity(fetched.n_fetched_before, 'post')} fetched before with the same id and "
            "text (from another file, or an earlier version of this one; a post fixed in place "
            "is fetched again); to predict them again, with another model say: `brandloop "
            "apply --reread` (the flow's reread=True)"
        )
    if causes:
        return f"no line of {input_uri} read now is a new post: " + "; ".join(causes)
    if state.line == 0:
        return f"{input_uri} holds no post: it is empty, or holds only blank lines"
    checkpoint = ctx.storage.uri(sources.jsonl_checkpoint_key(ctx.storage, input_uri))
    return (
        f"every line of {input_uri} was read by an earlier run (checkpoint {checkpoint}); "
        "to predict it again, with another model say: `brandloop apply --reread` "
        "(the flow's reread=True)"
    )


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
    reread: bool = False,
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

    if model:  # a model the user named is checked before any post is fetched
        resolve()
    recovered = finish_unfinished(ctx, destination, resolve, predict)
    wanted = list(keywords or ctx.settings.keywords)
    limit = ctx.settings.max_posts if max_posts is None else max_posts
    fetched = fetch_posts(ctx, source, input_uri, wanted, limit, stamp, reread)
    left_out = [f"{fetched.n_rejected} rejected"] + [
        f"{n} {what} before"
        for n, what in ((fetched.n_fetched_before, "fetched"), (fetched.n_forgotten, "forgotten"))
        if n
    ]
    n_posts = quantity(fetched.n_posts, "post")
    logger.info("fetched %s (%s)", n_posts, ", ".join(left_out))
    result = ApplyResult(fetched=fetched, destination=destination, recovered=recovered)
    if fetched.posts_key is None:
        why = no_posts_hint(ctx, source, input_uri, fetched)
        logger.info("no new posts: nothing to predict (%s)", why)
        result.no_posts = why  # a deployment's run shows it in its artifact (trial AB)
        return result
    with batch_lease(ctx, fetched.posts_key, stamp) as skip:
        if skip:
            result.skipped = skip
        else:
            result.delivered = deliver(
                ctx, destination, resolve(), fetched.posts_key, stamp, predict
            )
    logger.info("done with %s: %s", result.model_version, _delivery_line(result.delivered))
    return result


def _delivery_line(delivered: Delivered | None) -> str:
    """One readable line for the run's log: how many predictions went where."""
    if delivered is None:
        return "nothing delivered"
    if delivered.imported is not None:
        imported = delivered.imported
        new = quantity(imported.n_imported, "new task")
        where = f"Label Studio project {imported.project_id} ({new}"
        if imported.n_skipped_existing:
            where += f", {imported.n_skipped_existing} already there"
        if imported.n_predictions_added:  # a post predicted again with another model
            where += f", {imported.n_predictions_added} of them given these predictions"
        if imported.n_id_conflicts:
            report = layout.import_rejected(layout.batch_stamp(delivered.posts_key))
            where += (
                f", {imported.n_id_conflicts} not sent: the project holds the id with "
                f"another text, see {report}"
            )
        where += ")"
    else:
        where = str(delivered.tasks_key)
    if delivered.selection is not None:  # a trial read "453 predictions" of a 20-task file
        chosen = quantity(delivered.selection.n_selected, "post")
        where = f"{chosen} chosen for labelling (NER_LABEL_BUDGET) -> {where}"
    return f"{quantity(delivered.n_predictions, 'prediction')} of {delivered.posts_key} -> {where}"


@flow(name="apply-ner", log_prints=False)
def apply_ner(
    keywords: list[str] | None = None,
    source: Literal["x", "jsonl"] = "x",
    input_uri: str | None = None,
    model: str | None = None,
    max_posts: Count = None,
    destination: Literal["storage", "label_studio"] = "storage",
    overrides: dict[str, Any] | None = None,
    executor: Executor = "processes",
    workers: Count = None,
    cluster_address: str | None = None,
    n_shards: Count = None,
    reread: bool = False,
) -> ApplyResult:
    """Finish unfinished batches, then fetch -> predict -> send. ``overrides`` are settings
    on top of the environment (``{"label_budget": 50}``); ``reread`` reads a JSONL
    ``input_uri`` from its first line again (to predict it with another model). Returns
    what was fetched and delivered (``recovered``: the earlier batches finished by this
    run).

    The predict step runs on ``executor``: ``"processes"`` - ``workers`` processes of this
    machine (default ``NER_N_PROCESS``; 1 predicts in the flow's own process), or
    ``"dask"`` - the Dask scheduler at ``cluster_address`` (default ``NER_DASK_ADDRESS``),
    else a local cluster of ``workers`` processes (default 2). The posts are cut into
    ``n_shards`` line ranges (default ``workers``); the output is the same either way.
    """
    require_counts(max_posts=max_posts, workers=workers, n_shards=n_shards)
    how = Parallelism(
        executor=executor, workers=workers, cluster_address=cluster_address, n_shards=n_shards
    )

    def predict(ctx: RunContext, spec: str, posts_key: str, stamp: str) -> Predicted:
        return predict_posts(ctx, spec, posts_key, stamp, how)

    with run_context(overrides) as ctx:
        result = run_apply(
            ctx,
            keywords=keywords,
            source=source,
            input_uri=input_uri,
            model=model,
            max_posts=max_posts,
            destination=destination,
            predict=predict,
            reread=reread,
        )
        markdown = result.markdown(ctx.storage.uri)
        publish_result(f"apply-ner-{ctx.settings.env}", markdown, result.outcome)
    return result


if __name__ == "__main__":  # the brandloop command line parses the arguments
    from apps.cli import flow_main

    flow_main("flows.apply_ner")
