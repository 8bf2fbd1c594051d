"""Flow ``forget-posts``: forget posts deleted upstream, everywhere, audited.

1. Record the tombstones (``forgotten/<stamp>.json``, :mod:`ner.forget`): from then on every
   reader skips the posts (predictions, Label Studio import files, pulled annotations, the
   gold set, the training pool, active learning), even if a later step fails.
2. Delete their Label Studio tasks (found by ``data.post_id``), unless ``label_studio`` is
   False (storage-only environments), so no later pull exports them again.
3. Remove them from storage where they sit (:mod:`ner.purge`): posts, predictions, import
   files, export snapshots, selections, pulled annotations, training pools, gold sets.
4. Remove them from the evaluation error lists of the environment's MLflow runs
   (``evaluation/*_errors.json``, which name posts and their spans) and from its model
   cards (the spans a training left out or widened, named by post).
5. Rewrite the record as the audit: who, when, why, how many, which keys were rewritten
   (and how many records each lost), which tasks were deleted.

Every step is idempotent: a failed run is repaired by running it again with the same ids.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.context import RunContext, flow_run_id, io_task, run_context, run_logger, run_stamp
from ner import datasets, forget, layout, purge
from ner.errors import LabelStudioError
from ner.forget import ForgetRecord, ForgetStatus
from ner.labelstudio.client import LabelStudioProject
from ner.registry import default_actor
from ner.report import quantity


class ForgetResult(BaseModel):
    """What a forget-posts run did (the counts of its audit record at ``record_key``)."""

    record_key: str
    status: ForgetStatus
    n_posts: int
    n_records_removed: int
    rewritten: dict[str, int]
    n_tasks_deleted: int
    unreadable: list[str]
    #: Frozen sets that lost posts, each ``"<key>: <n> posts, hash <old> -> <new>"``.
    rehashed: list[str] = []
    #: Ids nothing held because an earlier forget tombstoned them (a repeated forget).
    forgotten_before: list[str] = []
    #: Ids no readable stored object, MLflow error list or model card and no Label Studio
    #: task held, and no earlier forget named: not post ids, or only in an unreadable object.
    unmatched: list[str] = []


@io_task()
def record_tombstones(
    ctx: RunContext, post_ids: list[str], by: str, reason: str, stamp: str
) -> ForgetRecord:
    """Write the run's forget record (status recorded): every reader skips the posts now."""
    return forget.record(ctx.storage, post_ids, by=by, reason=reason, stamp=stamp)


@io_task()
def already_forgotten(ctx: RunContext, post_ids: list[str]) -> list[str]:
    """Those of ``post_ids`` an earlier forget tombstoned (and no lift freed since)."""
    tombstoned = forget.forgotten_ids(ctx.storage)
    return [p for p in post_ids if p in tombstoned]


@io_task()
def delete_tasks(ctx: RunContext, post_ids: list[str]) -> dict[str, list[int]]:
    """Delete the posts' tasks in the Label Studio project of the settings."""
    return LabelStudioProject.connect(ctx.settings, create=False).delete_post_tasks(post_ids)


def _deleted_tasks(ctx: RunContext, post_ids: list[str], tombstones: str) -> dict[str, list[int]]:
    """:func:`delete_tasks`, whose failure (after its retries) says what is done and what
    is not: Label Studio goes first, so that no later pull exports the posts again."""
    try:
        return delete_tasks(ctx, post_ids)
    except LabelStudioError as exc:
        raise LabelStudioError(
            f"{exc}. The posts are forgotten ({tombstones}: every reader leaves them out) "
            "but not yet removed from storage or MLflow: run the same forget again once "
            "Label Studio answers, or with --no-label-studio (label_studio=False) to remove "
            "them from storage and MLflow now and their tasks by a later run"
        ) from exc


@io_task()
def purge_storage(ctx: RunContext, made: ForgetRecord) -> purge.PurgeReport:
    """Rewrite every stored object holding ``made``'s posts without them. Each object
    rewritten goes into ``made``'s record at once, so what an attempt that failed half-way
    removed stays in the audit: its retry finds those objects clean, and reports them from
    the record (their counts as the first attempt saw them)."""
    saved = ForgetRecord.model_validate(ctx.storage.read_json(made.key))
    progress = dict(saved.rewritten)  # an earlier attempt's, when this is a retry
    held = set(saved.held)

    def keep(step: purge.PurgeReport) -> None:
        progress.update(step.rewritten)
        held.update(step.held)
        update = {"rewritten": dict(progress), "held": sorted(held)}
        forget.save(ctx.storage, made.model_copy(update=update))

    report = purge.purge_storage(ctx.storage, made.post_ids, on_rewritten=keep)
    held.update(report.held)  # this attempt's are in progress and held too
    return report.model_copy(update={"rewritten": progress, "held": sorted(held)})


class MlflowPurge(BaseModel):
    """What :func:`purge_error_lists` removed: records per MLflow object, the post ids
    some object held, and the error lists it could not read."""

    rewritten: dict[str, int] = {}
    held: list[str] = []
    unreadable: list[str] = []


@io_task()
def purge_error_lists(ctx: RunContext, post_ids: list[str]) -> MlflowPurge:
    """Rewrite the MLflow runs' evaluation error lists, and the model cards that name the
    posts, without them (a local store that does not exist yet holds none and is not
    created)."""
    db = ctx.settings.tracking_db
    if db is not None and not db.exists():
        return MlflowPurge()
    ids, held = set(post_ids), set[str]()
    rewritten, unreadable = ctx.registry.forget_in_error_lists(ids, held)
    rewritten |= ctx.registry.forget_in_cards(ids, held)
    return MlflowPurge(rewritten=rewritten, held=sorted(held), unreadable=unreadable)


@io_task()
def rehashed_sets(ctx: RunContext, rewritten: dict[str, int]) -> list[str]:
    """The gold and canary sets the purge re-hashed: ``"<key>: <n> posts, hash <old12> ->
    <new12>"`` (their records keep the old hashes under ``hashes_before_forget``)."""
    said = []
    for key in sorted(rewritten):
        frozen = layout.gold_set_name(key) or layout.canary_set_gold_name(key)
        if not key.startswith(f"{layout.GOLDSETS}/") or frozen is None:
            continue  # gold_set_name reads keys listed under goldsets/ only
        record = ctx.storage.read_json(key)
        old, new = record["hashes_before_forget"][-1] or "", record["hash"]
        said.append(f"{key}: {quantity(record['n_posts'], 'post')}, hash {old[:12]} -> {new[:12]}")
        emptied = record["n_posts"] == 0 and layout.gold_set_name(key)
        if emptied and emptied == datasets.current_gold_set_name(ctx.storage):
            run_logger().warning(
                "gold set %s holds no post any more: train-ner cannot score a model on it and "
                "stops with no_gold; `brandloop gold-set retire --reason ...` lets the next "
                "train freeze a new one",
                key,
            )
    return said


@io_task()
def write_audit(ctx: RunContext, done: ForgetRecord) -> str:
    """Rewrite the forget record with what was removed (status done)."""
    return forget.save(ctx.storage, done)


@flow(name="forget-posts")
def forget_posts(
    post_ids: list[str],
    reason: str,
    by: str | None = None,
    label_studio: bool = True,
    overrides: dict[str, Any] | None = None,
) -> ForgetResult:
    """Forget ``post_ids`` (deleted upstream) everywhere; ``reason`` and ``by`` (default: the
    OS user) go to the audit. ``label_studio=False`` leaves Label Studio alone (no project).
    Raises :class:`~ner.errors.ConfigError` for no ids or no reason (nothing is changed)."""
    logger = get_run_logger()
    with run_context(overrides) as ctx:
        stamp = run_stamp(flow_run_id())
        earlier = already_forgotten(ctx, list(forget.clean_post_ids(post_ids)))
        made = record_tombstones(ctx, post_ids, by or default_actor(), reason, stamp)
        ids = list(made.post_ids)
        where = ctx.storage.uri(made.key)  # names the storage: the environment's, or not
        logger.info("tombstones of %s recorded in %s", quantity(made.n_posts, "post id"), where)
        deleted = _deleted_tasks(ctx, ids, where) if label_studio else {}
        purged = purge_storage(ctx, made)
        mlflow = purge_error_lists(ctx, ids)
        in_mlflow, in_tasks = mlflow.rewritten, (p for p, tasks in deleted.items() if tasks)
        done = made.model_copy(
            update={
                "status": ForgetStatus.DONE,
                "rewritten": {**purged.rewritten, **in_mlflow},
                "held": sorted({*purged.held, *mlflow.held, *in_tasks}),
                "deleted_tasks": deleted,
                "unreadable": [*purged.unreadable, *mlflow.unreadable],
            }
        )
        write_audit(ctx, done)
        rehashed = rehashed_sets(ctx, purged.rewritten)
    for line in rehashed:
        logger.info("re-hashed %s: models are scored on it again at the next train run", line)
    removed = (purged.n_removed + sum(in_mlflow.values()), len(purged.rewritten), len(in_mlflow))
    return _outcome(done, removed, rehashed, earlier)


def _outcome(
    done: ForgetRecord, removed: tuple[int, int, int], rehashed: list[str], earlier: list[str]
) -> ForgetResult:
    """Log what the run forgot and name the ids nothing held; its result. ``removed``:
    ``(records, stored objects, MLflow objects)``; ``earlier``: ids forgotten before it."""
    logger = get_run_logger()
    held = set(done.held)
    unmatched = [p for p in done.post_ids if p not in held]
    if done.rewritten or done.n_tasks_deleted:
        logger.info(
            "forgot %s: %s removed from %s and %s "
            "(evaluation error lists, model cards), %s deleted",
            quantity(done.n_posts - len(unmatched), "post"),
            quantity(removed[0], "record"),
            quantity(removed[1], "stored object"),
            quantity(removed[2], "MLflow object"),
            quantity(done.n_tasks_deleted, "task"),
        )
    for line in _unmatched_lines(unmatched, bool(done.unreadable), earlier):
        logger.warning(line)
    return ForgetResult(
        record_key=done.key,
        status=done.status,
        n_posts=done.n_posts,
        n_records_removed=removed[0],
        rewritten=done.rewritten,
        n_tasks_deleted=done.n_tasks_deleted,
        unreadable=done.unreadable,
        rehashed=rehashed,
        forgotten_before=[p for p in unmatched if p in earlier],
        unmatched=[p for p in unmatched if p not in earlier],
    )


def _named(ids: list[str], shown: int) -> tuple[str, str]:
    """``("this id: 'a'", …)`` or ``("these 12 ids: 'a', … and 2 more", …)`` and the noun
    phrase of their kind (``"not a post id"`` / ``"not post ids"``)."""
    named = ", ".join(repr(p) for p in ids[:shown])
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    if len(ids) == 1:
        return f"this id: {named}", "not a post id"
    return f"these {len(ids)} ids: {named}{more}", "not post ids"


def _unmatched_lines(
    unmatched: list[str], unreadable: bool, earlier: Collection[str] = (), shown: int = 10
) -> list[str]:
    """The warnings naming the ids nothing held (the first ``shown`` of each kind): those
    an earlier forget tombstoned (``earlier``: nothing holds them since), and the others;
    with ``unreadable`` objects, that those may hold them."""
    again = [p for p in unmatched if p in earlier]
    unknown = [p for p in unmatched if p not in earlier]
    maybe = ", or held only by the unreadable objects named above" if unreadable else ""
    lines = []
    if again:  # a trial could not tell a repeated forget from a wrong id
        which, _ = _named(again, shown)
        lines.append(f"forgotten before, nothing held {which} (an earlier forget's tombstone)")
    if unknown:
        which, kind = _named(unknown, shown)
        lines.append(
            f"nothing held {which} ({kind}: a post id is the id a source gave the post, "
            f"data.post_id in Label Studio, not a task id{maybe}); the tombstones stay, so "
            "such posts are dropped if they ever arrive"
        )
    return lines
