"""Flow ``train-ner``: pull labels -> evaluate champion -> gate -> train -> log -> evaluate
-> promote.

1. Pull human annotations from Label Studio (API) or from export snapshots in storage.
2. Freeze the gold set (once) and, beside it, the canary set (posts from earlier time windows
   and other sources, :mod:`ner.canary`; dates and sources joined from the stored post
   batches); the gold set also takes the newest posts. The training pool never holds a gold
   or canary post.
3. Evaluate the champion (or the cold start when there is none) on the gold and canary sets.
4. Gate: if its gold F1 reaches ``NER_THRESHOLD``, stop.
5. Train a challenger on the training pool; log params, metrics, dataset hash, plots and
   the model to MLflow (the run starts when training does); register it as ``@challenger``.
6. Evaluate the challenger on the same gold and canary sets and run the gate of
   :mod:`ner.gate` (threshold, beat the champion, bootstrap confidence, no label regression,
   no canary regression). Its decision, rule by rule with the numbers, goes into the flow
   result, the run and the version (tags, ``gate.*`` metrics) and the version's model card
   (its description); ``@champion`` moves only when no rule refused. Metric names are the
   same in every run: ``gold.f1``, ``gold.BRAND.f1``, ``canary.f1``, ``dev.ents_f``.

Failures: every task retries transient errors (``NER_IO_RETRIES``, backoff from
``NER_IO_RETRY_DELAY_S``). The training run stays RUNNING until the promotion step ends it
FINISHED; a run that fails after it was opened ends it FAILED. When MLflow itself was down at
that moment, the next train-ner run closes it (step 0: runs of flow runs that have ended
are marked FAILED) and completes or reverts the alias moves they left half done, naming
them in its result (``repaired``). Storage writes are atomic, and ``@champion`` moves only
in the last step, so a failed run promotes nothing and leaves no half-written object.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel, ConfigDict

from flows.context import (
    RunContext,
    flow_run_id,
    io_task,
    publish_result,
    run_context,
    run_logger,
    run_stamp,
)
from ner import canary, datasets, evaluation, layout, leases, rehearsal
from ner.audit import is_abandoned
from ner.base_model import default_base_model
from ner.errors import ConfigError, GoldSetError, RegistryError
from ner.gate import (
    GateDecision,
    GatePolicy,
    ModelScores,
    SetScores,
    decide_promotion,
    no_canary_set,
    score_spans,
)
from ner.labelstudio import exchange
from ner.labelstudio.client import LabelStudioProject
from ner.modelcard import (
    ModelCard,
    Recipe,
    SetMetrics,
    TrainingData,
    render_model_card,
)
from ner.models import configured_brands, gazetteer_version
from ner.registry import (
    CHALLENGER,
    CHAMPION,
    FINGERPRINT_TAG,
    Decision,
    git_commit,
    needs_training,
    run_tags,
)
from ner.report import fields_table, first_ids, quantity, value_cell
from ner.settings import BRAND_LIST_FIELDS, Settings, TrainSettings
from ner.storage import Storage
from ner.tempfiles import owned_temp_dir
from ner.tokenizer import blank_en, report_unkept
from ner.training import MIN_TRAIN_POSTS, dev_slice_size, training_fingerprint
from ner.training_worker import train_isolated
from ner.transformer import base_name
from ner.types import Annotation, Rejected


class TrainStatus(StrEnum):
    """How a train-ner run ended."""

    NO_LABELS = "no_labels"
    NO_GOLD = "no_gold"
    THRESHOLD_MET = "threshold_met"
    NOT_ENOUGH_LABELS = "not_enough_labels"
    PROMOTED = "promoted"
    NOT_PROMOTED = "not_promoted"
    #: A version was trained on the same inputs (training posts, recipe, seed, code):
    #: training again would make the same model, so nothing was trained.
    ALREADY_TRAINED = "already_trained"


class Pulled(BaseModel):
    """The annotations collected into one JSONL in storage."""

    annotations_key: str
    n_annotations: int
    n_rejected: int
    n_repaired: int
    #: Export files moved aside as unreadable: ``"<key> -> <quarantine key>: <reason>"``.
    quarantined: list[str] = []
    #: Tasks and annotations deleted in Label Studio since they were exported.
    n_deleted_tasks: int = 0
    n_deleted_annotations: int = 0
    #: Posts with tasks but no finished annotation (none, skipped, or every one deleted).
    n_unlabelled: int = 0
    #: Posts left with no label (every annotation deleted): they leave the gold set too.
    withdrawn_post_ids: list[str] = []
    #: Posts that lost an annotation but keep another (a gold post takes the one it kept).
    fallen_back_post_ids: list[str] = []
    #: Posts whose annotators disagree, held out of training (``NER_AGREEMENT_POLICY=review``).
    held_post_ids: list[str] = []
    #: Posts the last pull held for review that this one does not.
    released_post_ids: list[str] = []
    #: Records another task of the same post superseded (a newer annotation).
    n_superseded: int = 0

    def quality_note(self) -> str:
        """``360 posts pulled: 4 rejected, 2 spans repaired, ...`` (what an auditor of the model
        card needs of the pull; the records are in ``annotations/<stamp>.rejected.json``)."""
        settled = sum(1 for a in self.agreement if a["score"] < 1.0)
        return (
            f"{quantity(self.n_annotations, 'labelled post')} pulled: {self.n_rejected:,} "
            f"rejected, {quantity(self.n_repaired, 'span')} repaired, "
            f"{len(self.held_post_ids):,} held for review, {settled:,} with disagreeing "
            f"annotators (policy {self.agreement_policy}), "
            f"{quantity(self.n_superseded, 'post')} whose earlier records a newer annotation "
            f"superseded, {quantity(self.n_deleted_annotations, 'annotation')} deleted in "
            "Label Studio"
        )

    #: The policy, and each multi-annotator post's agreement (:class:`ner.agreement.Agreement`
    #: as JSON: ``post_id``, ``score``, ``outcome`` ...).
    agreement_policy: str = "latest"
    agreement: list[dict[str, Any]] = []
    review_key: str | None = None
    #: Every rejected, repaired and superseded record with its reason (None: there is none).
    rejected_key: str | None = None


class Splits(BaseModel):
    """The frozen gold set and this run's training pool (:func:`ner.datasets.prepare_splits`)."""

    gold_name: str | None = None
    gold_key: str | None
    gold_hash: str | None
    n_gold: int
    train_key: str
    train_hash: str
    n_train: int
    canary_key: str | None = None
    canary_hash: str | None = None
    n_canary: int = 0
    canary_note: str = ""
    gold_waiting: int = 0
    gold_has_spans: bool = True
    gold_repeats: str | None = None
    #: Gold posts among this run's labelled posts (:attr:`ner.datasets.Splits.n_gold_pulled`).
    n_gold_pulled: int = 0
    #: What the pull made of the labels (:meth:`Pulled.quality_note`), for the model card.
    pull_note: str = ""

    def gold(self) -> tuple[str, str]:
        """``(gold_key, gold_hash)``; :class:`GoldSetError` if no gold set is frozen yet."""
        if self.gold_key is None or self.gold_hash is None:
            raise GoldSetError("no gold set is frozen yet: nothing to evaluate on")
        return self.gold_key, self.gold_hash


class Evaluation(BaseModel):
    """A model scored on the gold set and the canary set (when there is one): ``version`` is
    its registry version, if registered; ``gold`` and ``canary`` hold the per-post counts the
    gate needs."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    model_version: str
    version: str | None
    f1: float
    metrics: dict[str, float]
    canary_f1: float | None = None
    gold: SetScores
    canary: SetScores | None = None

    def scores(self) -> ModelScores:
        return ModelScores(self.gold, self.canary)


class Trained(BaseModel):
    """A challenger trained on disk and how training went."""

    model_dir: str
    train_size: int
    dev_size: int
    n_rejected: int
    seconds: float
    curve: list[dict[str, float]]
    dev_scores: dict[str, float]
    params: dict[str, Any]
    started_ms: int
    #: Unlabelled posts trained on as hard negatives (``train.hard_negatives``).
    hard_negatives: int = 0
    #: Posts of the rehearsal set trained on (``train.rehearsal_uri``), after sampling.
    rehearsed: int = 0
    #: What was read of the rehearsal set, for the run's log ("" without one).
    rehearsal_note: str = ""
    #: :func:`ner.training.training_fingerprint` of the inputs.
    fingerprint: str = ""
    #: Spans trained widened to whole tokens (they cut a token), ``post id: span ...``.
    widened: list[str] = []
    #: Spans left out of training (no token, or overlapping another once aligned).
    left_out: list[str] = []


class EarlierTraining(BaseModel):
    """A registered version whose training run finished with the same fingerprint."""

    version: str
    run_id: str
    #: Its F1 on the current gold set, when it was evaluated on it.
    gold_f1: float | None = None
    #: The rules the gate refused it by (:meth:`ner.registry.Registry.gate_refusals`).
    refused_by: list[str] = []


class TrainingInputs(BaseModel):
    """What a challenger is trained from, read before training, and its fingerprint
    (:func:`ner.training.training_fingerprint`)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pool: list[Annotation]
    unlabelled: list[Annotation]
    rehearsed: rehearsal.RehearsalSet | None
    fingerprint: str
    #: The version trained earlier on the same inputs, if any.
    earlier: EarlierTraining | None = None


class Logged(BaseModel):
    """The training run (left open), the registered challenger version, its logged model
    and what it was trained on (for the model card)."""

    run_id: str
    version: str
    model_id: str | None = None
    trained: Trained


class RuleVerdict(BaseModel):
    """One rule of the gate: its status, a one-line reason and the numbers it compared."""

    rule: str
    status: str
    reason: str
    numbers: dict[str, float]


class GateResult(BaseModel):
    """The gate's decision (:class:`ner.gate.GateDecision`) in the flow's result."""

    promote: bool
    outcome: str
    reason: str
    refused_by: list[str]
    verdicts: list[RuleVerdict]


class Outcome(BaseModel):
    """What the gate said; ``repaired`` names the interrupted alias moves of an earlier
    attempt that this one completed or reverted."""

    promote: bool
    reason: str
    gate: GateResult
    repaired: list[str] = []


class Cleanup(BaseModel):
    """What the first step put right: training runs closed, alias moves repaired (by name,
    ``@alias: from -> to completed|reverted``)."""

    closed_runs: list[str]
    repaired_moves: list[str]


#: A pending alias move older than this (seconds) is repaired whoever made it: a move
#: takes seconds, so its maker is gone.
STALE_MOVE_S = 600.0


class TrainSummary(BaseModel):
    """What a train-ner run did; the fields after ``status`` are set as far as it got."""

    status: TrainStatus
    labels: int
    rejected: int
    gold_hash: str | None = None
    #: Posts of the frozen gold set, which every model is scored on; some may not be among
    #: the posts this run pulled (held for review, or forgotten): the split line counts them.
    n_gold: int | None = None
    n_train: int | None = None
    #: The gold-set F1 of the model the challenger must beat: ``@champion``, or the cold
    #: start (``NER_COLD_START``) while there is none, which ``champion_version`` then says
    #: (None).
    champion_f1: float | None = None
    #: That model: a registered version (``brand-ner-dev/3``) or the cold start's name.
    champion_model: str | None = None
    #: Its version (None for the cold start); a promotion does not change it (a script read
    #: the new version beside the old champion's F1): ``promoted_version`` is the new one.
    champion_version: str | None = None
    challenger_version: str | None = None
    run_id: str | None = None
    challenger_f1: float | None = None
    champion_canary_f1: float | None = None
    challenger_canary_f1: float | None = None
    #: Posts of the frozen canary set, counted as ``n_gold`` is.
    n_canary: int | None = None
    decision: str | None = None
    gate: GateResult | None = None
    promoted_version: str | None = None
    repaired: list[str] = []

    def markdown(self) -> str:
        """The run's result as Markdown (the Prefect UI shows it as the run's artifact):
        a table of the fields set, then every rule of the gate with its reason."""
        fields = self.model_dump(mode="json", exclude={"gate", "repaired"}, exclude_none=True)
        lines = [f"# train-ner: {self.status}", "", *fields_table(fields)]
        if self.gate is not None:
            lines += ["", f"## Gate: {self.gate.outcome}", "", "| rule | status | reason |"]
            lines += ["|---|---|---|"]
            lines += [
                f"| {v.rule} | {v.status} | {value_cell(v.reason)} |" for v in self.gate.verdicts
            ]
        return "\n".join(lines) + "\n"


@io_task()
def close_abandoned_runs(ctx: RunContext) -> Cleanup:
    """Mark FAILED the brandloop runs still RUNNING whose Prefect flow run has ended, and
    repair the alias moves such runs left half done (:func:`repair_abandoned_moves`).

    They belong to flow runs that failed while MLflow was unreachable (so they could not
    close their own run) or that crashed. Runs of flow runs still in progress, and runs
    whose flow run this Prefect API does not know, are left alone. A local store whose file
    does not exist yet holds no run: it is not created here (a run that stops early, without
    labels, leaves no ``mlflow.db`` behind).
    """
    db = ctx.settings.tracking_db
    if db is not None and not db.exists():
        return Cleanup(closed_runs=[], repaired_moves=[])
    return Cleanup(closed_runs=_close_runs(ctx), repaired_moves=repair_abandoned_moves(ctx))


def _close_runs(ctx: RunContext) -> list[str]:
    current = flow_run_id()
    closed = []
    for run_id, tags in ctx.registry.open_runs():
        owner = tags.get("brandloop.prefect_flow_run_id")
        if not owner or owner == current:
            continue
        ended = _ended_flow_run(owner)
        if ended is None:
            continue
        ctx.registry.close_run(
            run_id, "FAILED", reason=f"flow run {owner} ended {ended} with this run open"
        )
        closed.append(run_id)
    if closed:
        get_run_logger().warning("closed %d abandoned MLflow run(s): %s", len(closed), closed)
    return closed


def repair_abandoned_moves(ctx: RunContext) -> list[str]:
    """Complete (alias moved) or revert (alias not moved) the pending alias moves of flow
    runs that have ended, of this flow run, or older than :data:`STALE_MOVE_S`; returns
    their names. Moves of runs still in progress are left to them."""
    current, now = flow_run_id(), time.time()
    abandoned = [
        move
        for move in ctx.registry.pending_moves()
        if is_abandoned(
            move,
            current_owner=current,
            ended_owner=bool(move.owner and move.owner != current and _ended_flow_run(move.owner)),
            age_s=now - move.started,
            stale_s=STALE_MOVE_S,
        )
    ]
    repairs = ctx.registry.repair_moves(abandoned, actor=_actor())
    for repair in repairs:
        get_run_logger().warning("repaired alias move %s: %s", repair.name, repair.reason)
    return [repair.name for repair in repairs]


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
    ctx: RunContext, source: str, export_keys: list[str] | None, stamp: str
) -> Pulled:
    """Collect every human annotation into one JSONL in storage.

    From Label Studio, the labels saved since the last pull are exported into a new
    snapshot, then every snapshot of the project is read (each holds only what changed),
    the latest annotation of a post winning.
    """
    exchange.check_pull_source(source, export_keys or ())
    if source == "label_studio":
        project = LabelStudioProject.connect(ctx.settings, create=False)
        exchange.snapshot_export(project, ctx.storage, stamp)
        export_keys = exchange.snapshot_keys(ctx.storage, project.project_id)
        _say_hand_exports(ctx.storage)
    elif export_keys:
        export_keys = [exchange.find_export(ctx.storage, key) for key in export_keys]
    collected = exchange.collect_annotations(
        ctx.storage,
        export_keys,
        ctx.settings.labels,
        out_key=layout.pulled_annotations(stamp),
        policy=ctx.settings.agreement_policy,
        threshold=ctx.settings.agreement_threshold,
    )
    if source == "storage" and export_keys and collected.quarantined:  # named, so fail at once
        raise ConfigError(
            "the export named with --export-key cannot be read, so nothing was pulled; it was "
            f"moved aside so that later pulls skip it: {collected.quarantined[0]}. Fix the "
            f"file and put it back at {ctx.storage.uri(collected.quarantined[0].split(' -> ')[0])}"
        )
    return Pulled.model_validate(collected.model_dump(mode="json"))  # extra fields dropped


def _say_hand_exports(storage: Storage) -> None:
    """Warn of export files in ``exports/`` that a ``label_studio`` pull leaves unread (a
    trial's deployment trained on 6 posts of the project beside 29 in a hand-made export)."""
    if unread := exchange.hand_exports(storage):
        names = [key.removeprefix(f"{layout.EXPORTS}/") for key in unread]
        run_logger().warning(
            "%s in %s/ not read: source label_studio reads only the project's snapshots (%s); "
            "source storage (`brandloop train --source storage`) reads every file there, "
            "snapshots included",
            quantity(len(unread), "export file"),
            storage.uri(layout.EXPORTS),
            first_ids(names, 5),
        )


@io_task()
def prepare_gold(
    ctx: RunContext,
    annotations_key: str,
    stamp: str,
    withdrawn: list[str] | None = None,
    fallen_back: list[str] | None = None,
) -> Splits:
    """Freeze the gold set and its canary set on first use (drop ``withdrawn`` posts from the
    gold set, give ``fallen_back`` ones the label they kept: a new version); write the
    training pool (never gold or canary posts). Dates and sources come from the stored post
    batches."""
    settings, storage = ctx.settings, ctx.storage
    annotations = list(datasets.read_annotations(storage, annotations_key))
    stamps = canary.post_stamps(storage, [a.post_id for a in annotations])
    loaded = datasets.load_gold_set(storage)
    holdout, found, trained = None, None, set[str]()
    if loaded is None:
        trained = _pooled_after_retirement(storage)
        holdout = canary.plan_holdout(
            stamps,
            window=timedelta(days=settings.canary_window_days),
            fraction=settings.canary_fraction,
            recent_fraction=settings.gold_recent_fraction,
            trained=trained,
        )
        recent, held_out = (set(holdout.recent), set(holdout.canary)) if holdout else (set(), set())
    else:
        found = canary.load_canary_set(storage, loaded[0].name)
        recent, held_out = set(), (found[0].held_out(stamps) if found else set())
        _say_canary_relabelled(found, annotations)
    splits = Splits.model_validate(
        datasets.prepare_splits(
            storage,
            annotations,
            gold_fraction=settings.gold_fraction,
            train_key=layout.training_pool(stamp),
            withdrawn=withdrawn or (),
            fallen_back=fallen_back or (),
            recent=recent,
            held_out=held_out,
            never_gold=trained,
            min_gold_posts=settings.gold_min_posts,
            policy=settings.agreement_policy.value,
        ).to_dict()
    )
    if loaded is None:
        _say_gold_size(settings, splits, len(annotations))
        splits = _freeze_canary(ctx, splits, annotations, holdout)
        _say_uncut_gold(storage, annotations, settings.train.post_tokenizer)
    else:
        splits, found = _drop_withdrawn_canary(storage, splits, found, withdrawn or ())
        splits = _with_canary(splits, found)
        _say_other_policy(storage, loaded[0], settings.agreement_policy.value)
        if splits.gold_name != loaded[0].name:  # a new version: relabelled, fallen back
            _say_uncut_revised(storage, loaded[1], settings.train.post_tokenizer)
    _say_pulled_split(splits, annotations, found)
    _say_relabelled(storage, splits.train_key)
    return splits


def _drop_withdrawn_canary(
    storage: Storage,
    splits: Splits,
    found: tuple[canary.CanarySet, list[Annotation]] | None,
    withdrawn: list[str] | tuple[()],
) -> tuple[Splits, tuple[canary.CanarySet, list[Annotation]] | None]:
    """``splits`` and the canary set ``found`` after withdrawn canary posts left it
    (:func:`ner.canary.drop_from_canary_set`: a new version of the gold set, same posts)."""
    revised = canary.drop_from_canary_set(storage, withdrawn)
    if revised is None:
        return splits, found
    name = revised[0].gold_name
    update = {"gold_name": name, "gold_key": layout.gold_set_annotations(name)}
    return splits.model_copy(update=update), revised


def _say_other_policy(storage: Storage, gold: datasets.GoldSet, policy: str) -> None:
    """Warn when ``gold`` froze under another agreement policy than ``policy`` (a trial
    switched policies and its gold posts kept the old policy's labels in silence)."""
    frozen = datasets.frozen_policy(storage, gold)
    if frozen is not None and frozen != policy:
        run_logger().warning(
            "gold set %s froze under agreement policy %s, and this run pulls under %s: its "
            "posts keep the labels %s gave them unless relabelled later (retire the gold set "
            "to freeze one under %s, or keep NER_AGREEMENT_POLICY=%s)",
            gold.name, frozen, policy, frozen, policy, frozen,
        )  # fmt: skip


def _say_canary_relabelled(
    found: tuple[canary.CanarySet, list[Annotation]] | None, pulled: list[Annotation]
) -> None:
    """Name the canary posts relabelled since the canary set froze: it stays as frozen (a
    trial saw their new labels ignored without a word)."""
    latest = {a.post_id: a for a in pulled}
    changed = [
        c.post_id
        for c in (found[1] if found else [])
        if datasets.is_relabelled(c, latest.get(c.post_id))
    ]
    if changed:
        run_logger().info(
            "%s relabelled since the canary set froze, kept with their frozen labels (the "
            "canary set takes no corrections; retire the gold set to freeze both anew): %s",
            quantity(len(changed), "canary post"),
            first_ids(changed),
        )


def _say_relabelled(storage: Storage, pool_key: str) -> None:
    """Name the training posts whose labels changed since the last run's training pool (gold
    posts relabelled are named by the gold set's revision)."""
    found = datasets.relabelled_in_pool(storage, pool_key)
    where = storage.uri(found.earlier or "")
    if found.relabelled:
        run_logger().info(
            "%s relabelled since the last training pool (%s), trained on with the new labels: %s",
            quantity(len(found.relabelled), "training post"),
            where,
            first_ids(found.relabelled),
        )
    if found.older:  # a trial's --export-key of an older export undid corrections in silence
        run_logger().warning(
            "%s %s labels saved before those of the last training pool (%s), which this run "
            "trains on: the exports read hold no newer one (an --export-key naming an older "
            "export?): %s",
            quantity(len(found.older), "training post"),
            "takes" if len(found.older) == 1 else "take",
            where,
            first_ids(found.older),
        )


def _pooled_after_retirement(storage: Storage) -> set[str]:
    """With no gold set in force after one was retired (``brandloop gold-set retire``): the
    posts earlier training pools held, which the new gold and canary sets must not hold
    (logged); else nothing."""
    retired = datasets.retirement(storage)
    if retired is None:
        return set()
    pooled = datasets.pooled_post_ids(storage)
    run_logger().info(
        "gold set %s was retired (%s): freezing a new gold set and canary set from the labels "
        "pulled now, without the %s earlier training pools held",
        retired.gold_name,
        retired.reason,
        quantity(len(pooled), "post"),
    )
    return pooled


def _say_uncut_gold(storage: Storage, annotations: list[Annotation], post_rules: bool) -> None:
    """Name the spans of a gold set frozen now that cut a token (``Fenty`` of
    ``#FentyBeauty``; with ``post_rules``, the recipe's ``post_tokenizer``, only what those
    rules still cut): kept as labelled, but no model of this tokenizer predicts them
    exactly, so each counts as an error for every model scored on the set."""
    frozen = datasets.load_gold_set(storage)
    if frozen is not None:
        _say_uncut("gold", frozen[0].post_ids, annotations, post_rules)


def _say_uncut_revised(storage: Storage, before: list[Annotation], post_rules: bool) -> None:
    """Name the spans that cut a token among the gold posts a new version of the gold set
    changed (their labels kept as given, as at the first freeze: trial BH's relabel to
    ``Nik`` inside ``Nike`` went unnamed)."""
    now = datasets.load_gold_set(storage)
    if now is None:
        return
    spans_before = {a.post_id: a.spans for a in before}
    changed = [a.post_id for a in now[1] if spans_before.get(a.post_id) != a.spans]
    _say_uncut("gold", changed, now[1], post_rules)


def _say_uncut(
    which: str, post_ids: Sequence[str], annotations: list[Annotation], post_rules: bool
) -> None:
    """Name the spans of the ``which`` set's posts ``post_ids`` that cut a token."""
    ids = set(post_ids)
    frozen = [a for a in annotations if a.post_id in ids]
    if frozen:
        unkept = report_unkept(frozen, blank_en(post_rules))
        say_spans(f"{which} span no model predicts exactly", unkept)


def _say_pulled_split(
    splits: Splits,
    annotations: list[Annotation],
    found: tuple[canary.CanarySet, list[Annotation]] | None,
) -> None:
    """:func:`_say_split` of the pulled ``annotations`` beside the canary set ``found`` in
    force (None: frozen now from the pulled posts, or none)."""
    pulled = {a.post_id for a in annotations}
    in_canary = len(pulled & set(found[0].post_ids)) if found else splits.n_canary
    dropped = len(pulled & set(found[0].dropped)) if found else 0
    _say_split(splits, len(annotations), splits.n_gold_pulled, in_canary, dropped)


def _say_split(
    splits: Splits,
    n_labelled: int,
    in_gold: int | None = None,
    in_canary: int | None = None,
    dropped: int = 0,
) -> None:
    """Log where the ``n_labelled`` posts went, every one accounted for: ``in_gold`` and
    ``in_canary`` of them are in the frozen sets (default: the sets' sizes), which may hold
    posts the pull does not (a trial read 10 gold posts where the pull held 9); ``dropped``
    were withdrawn from the canary set (labelled again since, or read from a file export):
    never trained on, and not of the gold split (a trial's line said they were)."""
    in_gold = splits.n_gold if in_gold is None else in_gold
    in_canary = splits.n_canary if in_canary is None else in_canary
    later = n_labelled - in_gold - in_canary - dropped - splits.n_train
    elsewhere = splits.n_gold - in_gold + splits.n_canary - in_canary
    run_logger().info(
        "%s: %d in the gold set, %d in the canary set (older posts or other "
        "sources, kept to catch forgetting), %d in the training pool%s%s%s",
        quantity(n_labelled, "labelled post"),
        in_gold,
        in_canary,
        splits.n_train,
        f", {dropped} withdrawn from the canary set (never trained on)" if dropped else "",
        _left_out(later, frozen=splits.gold_hash is not None),
        f"; the frozen gold set holds {splits.n_gold} posts and the canary set "
        f"{splits.n_canary}, {elsewhere} of them not among the posts pulled (they keep the "
        "labels they froze with: the pull read only the exports named, or labels were "
        "deleted or held for review since)"
        if elsewhere > 0
        else "",
    )


def _left_out(later: int, *, frozen: bool) -> str:
    """``", 28 left out (...)"``: labelled posts of the gold split kept from the pool."""
    if later <= 0:
        return ""
    if frozen:
        return (
            f", {later} left out (of the gold split, labelled after it froze: neither trained "
            "on nor scored; a new gold set, after `brandloop gold-set retire`, can take them)"
        )
    return f", {later} left out (of the gold split, waiting for a gold set to freeze)"


def _newest_too(settings: Settings) -> str:
    """Says that a gold set about to freeze holds the newest posts as well as its split's
    (so its size is more than the gold split's posts left out of the pool)."""
    if settings.gold_recent_fraction <= 0:
        return ""
    return " (the gold split's posts and the newest ones, NER_GOLD_RECENT_FRACTION)"


def _say_gold_size(settings: Settings, splits: Splits, n_labelled: int) -> None:
    """Log why no gold set was frozen yet, or warn when the one frozen now is small (it is
    frozen for good)."""
    logger = run_logger()
    if splits.gold_repeats is not None:
        logger.warning(
            "no gold set frozen: its %s would be gold set %s again, posts and labels, which "
            "was retired; label new posts first",
            quantity(splits.gold_waiting, "post"),
            splits.gold_repeats,
        )
    elif splits.n_gold == 0 and splits.gold_waiting and not splits.gold_has_spans:
        logger.warning(
            "no gold set frozen yet: the %s that would make it%s %s no span, so every "
            "model would score F1 0 on it for good; it is frozen once a gold post with a "
            "span is labelled",
            quantity(splits.gold_waiting, "post"),
            _newest_too(settings),
            "holds" if splits.gold_waiting == 1 else "hold",
        )
    elif splits.n_gold == 0:
        missing = max(settings.gold_min_posts - splits.gold_waiting, 1)
        share = settings.gold_fraction
        logger.info(
            "no gold set frozen yet: the %s %s %s%s, and "
            "NER_GOLD_MIN_POSTS=%d must be reached first (%s)",
            quantity(n_labelled, "labelled post"),
            "holds" if n_labelled == 1 else "hold",
            quantity(splits.gold_waiting, "gold post"),
            _newest_too(settings),
            settings.gold_min_posts,
            f"about {100 * share:.0f} % of new labels are gold posts: about "
            f"{quantity(max(round(missing / share), 1), 'more label')}"
            if share > 0
            else "NER_GOLD_FRACTION=0 splits none off: adopt a gold set instead",
        )
    elif splits.n_gold < datasets.SMALL_GOLD_SET:
        logger.warning(
            "froze a gold set (hash %s) of only %s: every later round is scored on them, "
            "and one post moves F1 by about %.1f points; to freeze a larger one, label more "
            "first, or set NER_GOLD_MIN_POSTS (the fewest posts a gold set is frozen with: "
            "the first, or one after `brandloop gold-set retire`)",
            (splits.gold_hash or "")[:12],
            quantity(splits.n_gold, "post"),
            100 / splits.n_gold,
        )


def _freeze_canary(
    ctx: RunContext,
    splits: Splits,
    annotations: list[Annotation],
    holdout: canary.HoldoutSplit | None,
) -> Splits:
    """``splits`` with the canary set frozen now beside the gold set frozen now (if one was)."""
    if splits.gold_name is None:
        return splits
    frozen = canary.freeze_canary_set(
        ctx.storage, splits.gold_name, annotations, holdout, n_labelled=len(annotations)
    )
    if 0 < len(frozen.post_ids) < datasets.SMALL_GOLD_SET:  # as the gold set's warning
        run_logger().warning(
            "froze a canary set of only %s: the canary rule compares the models on it, one "
            "post moves its F1 by about %.1f points, and its interval says little (one post: "
            "none at all); a later gold set (`brandloop gold-set retire`) gets a larger one "
            "when more labelled posts are from earlier windows or other sources",
            quantity(len(frozen.post_ids), "post"),
            100 / len(frozen.post_ids),
        )
    elif not frozen.post_ids:  # a trial saw the small one warned of and the empty one not
        run_logger().warning(
            "froze no canary set beside gold set %s (%s): the canary rule will not apply to "
            "any model it scores; a later gold set (`brandloop gold-set retire`) gets one",
            splits.gold_name,
            frozen.note or "no labelled post from an earlier window or another source",
        )
    _say_uncut("canary", frozen.post_ids, annotations, ctx.settings.train.post_tokenizer)
    return _with_canary(splits, (frozen, []))


def _with_canary(splits: Splits, found: tuple[canary.CanarySet, list[Annotation]] | None) -> Splits:
    """``splits`` with the canary set of its gold set, ``found`` (None: frozen without one)."""
    if found is None:
        note = f"gold set {splits.gold_name} was frozen without a canary set"
        return splits.model_copy(update={"canary_note": note})
    frozen = found[0]
    return splits.model_copy(
        update={
            "canary_key": frozen.annotations_key if frozen.post_ids else None,
            "canary_hash": frozen.hash if frozen.post_ids else None,
            "n_canary": len(frozen.post_ids),
            "canary_note": frozen.note,
        }
    )


@io_task()
def find_champion(ctx: RunContext) -> str | None:
    """The version behind ``@champion``, if any."""
    return ctx.registry.alias_version(CHAMPION)


@io_task()
def evaluate_on_gold(
    ctx: RunContext,
    model_spec: str,
    splits: Splits,
    role: str,
    run_id: str | None = None,
    model_id: str | None = None,
) -> Evaluation:
    """Score a model on the frozen gold set and on the canary set (when there is one), and
    record both evaluations in MLflow (``gold.*`` and ``canary.*`` metrics of one run)."""
    settings, registry = ctx.settings, ctx.registry
    gold_key, gold_hash = splits.gold()
    loaded = ctx.load_model(model_spec)
    gold = _score(ctx, loaded.nlp, gold_key)
    prefix = f"{settings.registered_model_name}/"
    version = loaded.version.split("/")[-1] if loaded.version.startswith(prefix) else None
    tags = run_tags(settings.env, _prefect_tags())

    def log(scores: SetScores, digest: str, into: str | None, set_name: str) -> str:
        return registry.log_evaluation(
            scores.report,
            model_version=loaded.version,
            role=role,
            gold_hash=digest,
            tags=tags,
            run_id=into,
            set_name=set_name,
            model_id=model_id,
        )

    run_id = log(gold, gold_hash, run_id, "gold")
    scored = None
    if splits.canary_key is not None and splits.canary_hash is not None:
        scored = _score(ctx, loaded.nlp, splits.canary_key)
        log(scored, splits.canary_hash, run_id, "canary")
    metrics = gold.report.to_metrics()
    if version is not None:
        registry.record_evaluation(version, gold_hash, metrics)
    return Evaluation(
        model_version=loaded.version,
        version=version,
        f1=gold.f1,
        metrics=metrics,
        canary_f1=None if scored is None else scored.f1,
        gold=gold,
        canary=scored,
    )


def _score(ctx: RunContext, nlp: Any, key: str) -> SetScores:
    """``nlp`` scored on the annotations at ``key``, with the per-post counts of the gate."""
    annotations = list(datasets.read_annotations(ctx.storage, key))
    labels = ctx.settings.labels
    predicted = evaluation.predict_spans(nlp, annotations, labels)
    return score_spans(evaluation.spans_by_post(annotations), predicted, labels)


@io_task()
def prepare_training(
    ctx: RunContext, splits: Splits, labelled_keys: list[str], champion_version: str | None
) -> TrainingInputs:
    """Read what the challenger is trained from: the training pool (gold posts excluded);
    with ``train.hard_negatives``, stored posts in none of ``labelled_keys`` (the pulled
    annotations, the gold and canary sets) as the pool hard negatives come from; with
    ``train.rehearsal_uri``, the rehearsal set's posts in none of them
    (:func:`ner.rehearsal.rehearsal_set`). Fingerprint them with the recipe, the seed, the
    start and the code, and look for a registered version whose training run finished with
    that fingerprint (:meth:`ner.registry.Registry.trained_with`) and that was scored on
    today's gold set: one that was not (the gold set changed since, and it is not the
    champion, which is scored every run) could not be promoted, so a copy is trained."""
    settings = ctx.settings
    labelled = _labelled_ids(ctx, labelled_keys)
    pool = list(datasets.read_annotations(ctx.storage, splits.train_key))
    unlabelled, rehearsed = _unlabelled_pool(ctx, labelled), _rehearsal_set(ctx, labelled)
    from_champion = settings.train.start_from == "champion" and champion_version
    # the gold and canary sets only shape the pool, so they are not in it
    fingerprint = training_fingerprint(
        pool,
        start_from=f"champion v{champion_version}" if from_champion else settings.base_model,
        labels=settings.labels,
        recipe=settings.train,
        seed=settings.seed,
        unlabelled=unlabelled,
        rehearsal=rehearsed.annotations if rehearsed else (),
        context={"code": git_commit(), "brands": _brands_digest(settings)},
    )
    found = ctx.registry.trained_with(fingerprint)
    earlier = None
    if found is not None:
        f1 = ctx.registry.evaluated_f1(found[0], splits.gold()[1])
        if f1 is None:
            get_run_logger().info(
                "version %s was trained on the same posts but never scored on gold set %s: "
                "training a copy, to score and gate it",
                found[0],
                splits.gold()[1][:12],
            )
        else:
            refused = ctx.registry.gate_refusals(found[0])[0]
            earlier = EarlierTraining(
                version=found[0], run_id=found[1], gold_f1=f1, refused_by=refused
            )
    return TrainingInputs(
        pool=pool,
        unlabelled=unlabelled,
        rehearsed=rehearsed,
        fingerprint=fingerprint,
        earlier=earlier,
    )


@io_task(retries=1)
def train_challenger(
    ctx: RunContext, inputs: TrainingInputs, start_from: str, model_dir: str
) -> Trained:
    """Fine-tune a challenger on ``inputs`` (:func:`prepare_training`), in a process of its
    own (:func:`ner.training_worker.train_isolated`) with the recipe ``settings.train``."""
    settings, logger = ctx.settings, get_run_logger()
    pool, unlabelled, rehearsed = inputs.pool, inputs.unlabelled, inputs.rehearsed
    started_ms = int(time.time() * 1000)
    tokenizer = blank_en(settings.train.post_tokenizer)
    widened = say_spans("trained widened to whole tokens", report_unkept(pool, tokenizer))
    n_dev = dev_slice_size(len(pool), settings.train.dev_fraction)
    result = train_isolated(
        pool,
        start_from=start_from,
        output_dir=Path(model_dir),
        labels=settings.labels,
        recipe=settings.train,
        seed=settings.seed,
        on_epoch=lambda e: logger.info(
            "epoch %d/%d, step %d: loss %.2f per batch, held-out slice F1 %.3f (%s)",
            e.epoch,
            e.max_epochs,
            e.step,
            e.loss_per_batch,
            e.dev_f1,
            quantity(n_dev, "post"),
        ),
        unlabelled=unlabelled,
        rehearsal=rehearsed.annotations if rehearsed else (),
        brands=configured_brands(settings),
    )
    params = _recipe_params(settings, start_from)
    digest = _brands_digest(settings)
    if digest is not None:  # the team's own list or additions: files and digest (shipped: none)
        params.update({name: str(getattr(settings, name) or "-") for name in BRAND_LIST_FIELDS})
        params["brand_list_digest"] = digest
    if rehearsed:
        unread = len({r.record_id for r in rehearsed.rejected})
        params.update(rehearsal_hash=rehearsed.digest, rehearsal_rejected=unread)
    return Trained(
        model_dir=str(result.model_dir),
        train_size=result.train_size,
        dev_size=result.dev_size,
        n_rejected=len(result.rejected),
        seconds=result.seconds,
        curve=list(result.curve),
        dev_scores=result.dev_scores,
        params=params,
        started_ms=started_ms,
        hard_negatives=result.hard_negatives,
        rehearsed=result.rehearsed,
        rehearsal_note=_rehearsal_note(rehearsed, settings.train, result.rehearsed),
        fingerprint=inputs.fingerprint,
        widened=widened,
        left_out=say_spans("left out of training", result.rejected),
    )


def _recipe_params(settings: Settings, start_from: str) -> dict[str, Any]:
    """The recipe's MLflow params (:meth:`TrainSettings.as_params`) and ``start_from``;
    ``recipe_changed`` names ``base_model`` too when it is not the default (trial AN read
    the demo's knobs as trained on the default's md model)."""
    if settings.train.recipe == "accurate":  # it starts from its encoder, never a pipeline
        start_from = trained_base(settings)
    params = {**settings.train.as_params(settings.seed), "start_from": start_from}
    if settings.base_model != default_base_model():
        changed = [k for k in str(params["recipe_changed"]).split(",") if k != "none"]
        params["recipe_changed"] = ",".join(sorted([*changed, "base_model"]))
    return params


def trained_base(settings: Settings) -> str:
    """What a challenger is trained from: the spaCy base model, or under the accurate recipe
    its encoder (``all-MiniLM-L6-v2``, or the folder name of ``train.accurate_model``)."""
    if settings.train.recipe == "accurate":
        return base_name(settings.train.accurate_model)
    return settings.base_model


def _brands_digest(settings: Settings) -> str | None:
    """A digest of the brand list the settings choose (None for the shipped lists alone:
    the team's own lists, or names added to either): a model trained with another list is
    another model."""
    brands = configured_brands(settings)
    return None if brands is None else gazetteer_version(brands.names, brands.exact_case)


#: Spans a run names one by one (a line each) before it only counts the rest.
SPANS_NAMED = 10


def say_spans(what: str, items: Sequence[Rejected]) -> list[str]:
    """Warn of each span of ``items`` (:class:`~ner.types.Rejected`, a post id and why), at
    most :data:`SPANS_NAMED` lines and then how many more; returns them as
    ``post id: why`` lines (for the model card)."""
    lines = [f"{item.record_id}: {item.reason}" for item in items]
    for line in lines[:SPANS_NAMED]:
        run_logger().warning("%s: %s", what, line)
    if len(lines) > SPANS_NAMED:
        run_logger().warning("%s: %d more spans", what, len(lines) - SPANS_NAMED)
    return lines


#: Unlabelled posts read per hard negative wanted (only some have entities and no ORG).
HARD_NEGATIVE_CANDIDATES = 10


def _labelled_ids(ctx: RunContext, labelled_keys: list[str]) -> set[str]:
    """Post ids of the annotation files ``labelled_keys`` (pulled, gold, canary); read only
    when a recipe knob needs them."""
    train = ctx.settings.train
    if not (train.rehearsal_uri or (train.hard_negatives and not train.negatives_uri)):
        return set()
    return {a.post_id for key in labelled_keys for a in datasets.read_annotations(ctx.storage, key)}


def _rehearsal_note(
    found: rehearsal.RehearsalSet | None, recipe: TrainSettings, trained: int
) -> str:
    """What was read of the rehearsal set and what of it was trained on (``trained`` posts),
    for the run's log ("" without one)."""
    if found is None:
        return ""
    unread = len({r.record_id for r in found.rejected})
    name = (recipe.rehearsal_uri or "").rsplit("/", 1)[-1]
    return (
        f"{len(found.annotations)} drawn of {name}; {found.left_out} left out as labelled "
        f"here, {unread} not read, {len(found.annotations) - trained} brand-less left out "
        f"by negative sampling (train.negative_fraction {recipe.negative_fraction:g})"
    )


def _rehearsal_set(ctx: RunContext, labelled: set[str]) -> rehearsal.RehearsalSet | None:
    """The rehearsal set of ``train.rehearsal_uri`` without the posts in ``labelled``; None
    when the recipe has none."""
    train = ctx.settings.train
    if not train.rehearsal_uri:
        return None
    return rehearsal.rehearsal_set(
        ctx.storage,
        train.rehearsal_uri,
        labels=ctx.settings.labels,
        limit=train.rehearsal_posts,
        seed=ctx.settings.seed,
        exclude=labelled,
    )


def _unlabelled_pool(ctx: RunContext, labelled: set[str]) -> list[Annotation]:
    """The posts of ``train.negatives_uri`` when set, else the stored posts whose id is not
    in ``labelled``; at most :data:`HARD_NEGATIVE_CANDIDATES` per hard negative of the
    recipe (none when it is 0)."""
    wanted = ctx.settings.train.hard_negatives
    if wanted == 0:
        return []
    uri = ctx.settings.train.negatives_uri
    if uri:
        posts = rehearsal.posts_from_file(ctx.storage, uri, wanted * HARD_NEGATIVE_CANDIDATES)
        get_run_logger().info("%d posts of %s for up to %d hard negatives", len(posts), uri, wanted)
        return posts
    posts = rehearsal.unlabelled_posts(ctx.storage, labelled, wanted * HARD_NEGATIVE_CANDIDATES)
    get_run_logger().info("%d unlabelled posts for up to %d hard negatives", len(posts), wanted)
    return posts


def _training_params(ctx: RunContext, trained: Trained) -> dict[str, Any]:
    settings = ctx.settings
    return {
        **trained.params,
        "base_model": settings.base_model,
        "labels": ",".join(settings.labels),
        "gold_fraction": settings.gold_fraction,
        "threshold": settings.threshold,
        "env": settings.env,
        **_gate_params(ctx),
    }


def gate_policy(settings: Settings) -> GatePolicy:
    """The gate's policy (:class:`ner.gate.GatePolicy`) from the settings."""
    return GatePolicy(
        threshold=settings.threshold,
        promotion_margin=settings.promotion_margin,
        bootstrap_level=settings.gate_bootstrap_level,
        bootstrap_resamples=settings.gate_bootstrap_resamples,
        bootstrap_seed=settings.seed,
        label_regression_margin=settings.gate_label_regression_margin,
        canary_margin=settings.gate_canary_margin,
    )


def _gate_params(ctx: RunContext) -> dict[str, Any]:
    policy, settings = gate_policy(ctx.settings), ctx.settings
    return {
        "gate.bootstrap_level": policy.bootstrap_level,
        "gate.bootstrap_resamples": policy.bootstrap_resamples,
        "gate.label_regression_margin": policy.label_regression_margin,
        "gate.canary_margin": policy.canary_margin,
        "canary.window_days": settings.canary_window_days,
        "canary.fraction": settings.canary_fraction,
        "gold.recent_fraction": settings.gold_recent_fraction,
    }


def _training_metrics(trained: Trained) -> dict[str, float]:
    return {
        "train_size": trained.train_size,
        "dev_size": trained.dev_size,
        "train_rejected": trained.n_rejected,
        "train_seconds": trained.seconds,
        "train_hard_negatives": trained.hard_negatives,
        "train_rehearsed": trained.rehearsed,
        **{f"dev.{k}": v for k, v in trained.dev_scores.items()},
    }


@io_task()
def log_challenger(ctx: RunContext, trained: Trained, splits: Splits, stamp: str) -> Logged:
    """Log the training run (params, dataset, curve) and register the model as @challenger."""
    registry, storage = ctx.registry, ctx.storage
    gold_key, gold_hash = splits.gold()
    run_id = registry.log_training_run(
        run_name=f"train {stamp}",
        params=_training_params(ctx, trained),
        metrics=_training_metrics(trained),
        curve=trained.curve,
        dataset_hash=splits.train_hash,
        dataset_uri=storage.uri(splits.train_key),
        gold_hash=gold_hash,
        gold_uri=storage.uri(gold_key),
        tags=run_tags(ctx.settings.env, {**_prefect_tags(), FINGERPRINT_TAG: trained.fingerprint}),
        start_time_ms=trained.started_ms,
    )
    try:
        uri, version = registry.log_model(Path(trained.model_dir), run_id)
        if version is None:
            raise RegistryError(f"the model of run {run_id} was logged but not registered")
        registry.set_alias(
            CHALLENGER,
            version,
            actor=_actor(),
            reason=f"trained by run {run_id}",
            gold_hash=gold_hash,
            tags=_prefect_tags(),
        )
    except Exception as exc:  # a retry opens a new run: end this one
        registry.close_run(run_id, "FAILED", reason=f"logging failed: {exc}", best_effort=True)
        raise
    model_id = uri.removeprefix("models:/") if uri.startswith("models:/m-") else None
    return Logged(run_id=run_id, version=version, model_id=model_id, trained=trained)


def gate_result(decision: GateDecision) -> GateResult:
    """The decision as the flow's result reports it (every rule with its numbers)."""
    return GateResult.model_validate(decision.to_dict())


@io_task()
def promote_if_better(
    ctx: RunContext,
    challenger: Evaluation,
    baseline: Evaluation,
    splits: Splits,
    logged: Logged,
    has_champion: bool,
) -> Outcome:
    """Run the gate (:func:`ner.gate.decide_promotion`); record its decision on the
    challenger's run and model version (tags, metrics, the model card); move @champion
    (audited) when no rule refused; then end the training run FINISHED. ``baseline`` is the
    champion's evaluation, or the cold start's when no version holds @champion
    (``has_champion`` False: then the threshold applies, and the challenger may not fall
    below the cold start on the gold set, nor by more than the canary margin on the canary
    set)."""
    settings, registry = ctx.settings, ctx.registry
    champion = baseline if has_champion else None
    _, gold_hash = splits.gold()
    decision = decide_promotion(
        challenger.scores(),
        None if champion is None else champion.scores(),
        gate_policy(ctx.settings),
        cold_start=None if has_champion else (baseline.model_version, baseline.f1),
        cold_start_canary=None if has_champion else baseline.canary,
    )
    reason = decision.reason
    if splits.n_canary == 0 and champion is not None:
        reason += f" (canary: not applicable, {no_canary_set(splits.canary_note)})"
    repairs = registry.repair_moves(registry.pending_moves(_actor()), actor=_actor())
    for repair in repairs:
        get_run_logger().warning("repaired alias move %s: %s", repair.name, repair.reason)
    _record_gate(ctx, challenger, champion, splits, logged, decision, reason)
    # Safe to repeat on a retry: a move already made is not made again (Registry.promote).
    if decision.promote:
        registry.promote(
            logged.version,
            gold_hash=gold_hash,
            decision=Decision(True, reason),
            metrics={  # with no champion, the baseline is the cold start (a trial read it
                "challenger_f1": challenger.f1,  # as a champion's F1 in the audit run)
                ("champion_f1" if has_champion else "cold_start_f1"): baseline.f1,
                "threshold": settings.threshold,
            },
            actor=_actor(),
            tags=_prefect_tags(),
        )
    registry.close_run(logged.run_id, "FINISHED", reason=reason)
    get_run_logger().info(  # said as it happens: a run that then loses Prefect's API never
        "version %s %s",  # returns its summary (a trial's console did not say it promoted)
        logged.version,
        f"promoted to @{CHAMPION}"
        if decision.promote
        else f"not promoted: refused by {', '.join(str(v.rule) for v in decision.refusals)}",
    )
    return Outcome(
        promote=decision.promote,
        reason=reason,
        gate=gate_result(decision),
        repaired=[repair.name for repair in repairs],
    )


def _record_gate(
    ctx: RunContext,
    challenger: Evaluation,
    champion: Evaluation | None,
    splits: Splits,
    logged: Logged,
    decision: GateDecision,
    reason: str,
) -> None:
    """The gate's decision on the challenger's run and model version: tags (the refusing
    rule; the reason, as ``brandloop.promotion_reason`` of a promoted version and
    ``brandloop.refusal_reason`` of a refused one), ``gate.*`` metrics and the model card as
    the version description."""
    said = "brandloop.promotion_reason" if decision.promote else "brandloop.refusal_reason"
    tags = {**decision.to_tags(), said: reason[:5000]}
    ctx.registry.record_gate(
        logged.version,
        logged.run_id,
        tags=tags,
        metrics=decision.to_metrics("gate."),
        model_id=logged.model_id,
    )
    card = _model_card(ctx, challenger, champion, splits, logged, decision)
    ctx.registry.describe_version(logged.version, render_model_card(card))


def _model_card(
    ctx: RunContext,
    challenger: Evaluation,
    champion: Evaluation | None,
    splits: Splits,
    logged: Logged,
    decision: GateDecision,
) -> ModelCard:
    """The model card of the challenger (:mod:`ner.modelcard`)."""
    settings, trained = ctx.settings, logged.trained
    policy = gate_policy(ctx.settings)

    def metrics(name: str, mine: SetScores, theirs: SetScores | None, digest: str | None) -> Any:
        return SetMetrics.from_scores(
            name,
            mine,
            champion=theirs,
            dataset_hash=digest,
            level=policy.bootstrap_level,
            resamples=policy.bootstrap_resamples,
            seed=policy.bootstrap_seed,
        )

    theirs = ModelScores(champion.gold, champion.canary) if champion else None
    gold_theirs = theirs.gold if theirs else None
    sets = [metrics("gold", challenger.gold, gold_theirs, splits.gold_hash)]
    if challenger.canary is not None:
        canary_theirs = theirs.canary if theirs else None
        sets.append(metrics("canary", challenger.canary, canary_theirs, splits.canary_hash))
    limits = () if splits.n_canary else (no_canary_set(splits.canary_note),)
    params = {k: v for k, v in trained.params.items() if isinstance(v, str | int | float | bool)}
    return ModelCard(
        model_name=settings.registered_model_name,
        version=logged.version,
        training=TrainingData(
            n_train=trained.train_size,
            dataset_hash=splits.train_hash,
            n_dev=trained.dev_size,
            n_rejected_spans=trained.n_rejected,
            left_out=tuple(trained.left_out),
            widened=tuple(trained.widened),
            source_uri=ctx.storage.uri(splits.train_key),
            n_rehearsed=trained.rehearsed,
            rehearsal_uri=settings.train.rehearsal_uri,
            rehearsal_hash=trained.params.get("rehearsal_hash"),
            n_pool=splits.n_train,
            pull_note=splits.pull_note,
        ),
        recipe=Recipe(
            base_model=trained_base(settings),
            name=settings.train.recipe,
            params=params,
            changed=settings.train.changed_knobs(),
        ),
        evaluations=tuple(sets),
        decision=decision,
        run_id=logged.run_id,
        champion_version=None if champion is None else champion.version,
        limits=limits,
    )


@io_task(retries=0)
def abandon_run(ctx: RunContext, run_id: str, reason: str) -> bool:
    """End training run ``run_id`` FAILED if MLflow answers (else a later run will)."""
    return ctx.registry.close_run(run_id, "FAILED", reason=reason, best_effort=True)


def _prefect_tags() -> dict[str, str]:
    run_id = flow_run_id()
    return {"brandloop.prefect_flow_run_id": run_id} if run_id else {}


def _actor() -> str:
    run_id = flow_run_id()
    return f"prefect:train-ner/{run_id}" if run_id else "brandloop"


def evaluate_champion(ctx: RunContext, splits: Splits, summary: TrainSummary) -> Evaluation:
    """Score @champion (or the cold start when there is none) on the gold set; note it in
    ``summary``."""
    version = find_champion(ctx)
    spec = ctx.registry.model_uri(CHAMPION) if version else ctx.settings.cold_start
    # the cold start is no champion: its evaluation says so (brandloop status lists roles)
    champion = evaluate_on_gold(ctx, spec, splits, "champion" if version else "cold start")
    summary.champion_f1 = champion.f1
    summary.champion_canary_f1 = champion.canary_f1
    summary.champion_model = champion.model_version
    summary.champion_version = version
    get_run_logger().info(
        "%s %s: F1 %.4f on the gold set %s (%s)",
        "champion" if version else "no champion yet; the cold start",
        champion.model_version,
        champion.f1,
        (splits.gold_hash or "")[:12],
        quantity(splits.n_gold, "post"),
    )
    return champion


def train_and_log(
    ctx: RunContext,
    splits: Splits,
    inputs: TrainingInputs,
    champion_version: str | None,
    stamp: str,
) -> Logged:
    """Train a challenger on ``inputs`` (from the base model, or the champion's weights
    with ``train.start_from=champion``), log it and register it as @challenger."""
    with owned_temp_dir("brandloop-model-") as tmp:
        start_from = ctx.settings.base_model
        if ctx.settings.train.start_from == "champion" and champion_version:
            start_from = str(ctx.registry.download_model(CHAMPION, Path(tmp) / "champion"))
        model_dir = str(Path(tmp) / "model")
        trained = train_challenger(ctx, inputs, start_from, model_dir)
        if trained.rehearsal_note:
            get_run_logger().info(
                "trained on %d documents, %d rehearsal posts (%s)",
                trained.train_size,
                trained.rehearsed,
                trained.rehearsal_note,
            )
        return log_challenger(ctx, trained, splits, stamp)


def challenge(
    ctx: RunContext, splits: Splits, champion: Evaluation, logged: Logged, summary: TrainSummary
) -> TrainSummary:
    """Score the challenger on the same gold and canary sets and run the gate; a failure
    ends the training run FAILED before it is raised. Returns ``summary`` completed."""
    spec = f"models:/{ctx.settings.registered_model_name}/{logged.version}"
    summary.challenger_version, summary.run_id = logged.version, logged.run_id
    try:
        challenger = evaluate_on_gold(
            ctx, spec, splits, "challenger", run_id=logged.run_id, model_id=logged.model_id
        )
        summary.challenger_f1 = challenger.f1
        summary.challenger_canary_f1 = challenger.canary_f1
        outcome = promote_if_better(
            ctx, challenger, champion, splits, logged, summary.champion_version is not None
        )
    except Exception as exc:
        abandon_run(ctx, logged.run_id, f"train-ner failed after training: {exc}")
        raise
    summary.decision, summary.gate = outcome.reason, outcome.gate
    summary.repaired += outcome.repaired
    summary.status = TrainStatus.PROMOTED if outcome.promote else TrainStatus.NOT_PROMOTED
    if outcome.promote:
        summary.promoted_version = logged.version  # champion_* stay the champion it beat
    return summary


def _say_pulled(ctx: RunContext, pulled: Pulled) -> None:
    """The pull's line: what was read, rejected, repaired, held; where the records are."""
    n = pulled.n_annotations
    get_run_logger().info(
        "pulled %s (%s rejected, %s repaired, "
        "%s whose earlier records a newer annotation superseded (a label fixed, a post sent "
        "again), %s deleted in Label Studio (since the first export read, not only since the "
        "last pull), %d held for review; exported tasks without a "
        "finished annotation (skipped, or not labelled yet), left out: %d)",
        f"the labels of {quantity(n, 'post')}, one label each" if n else "no label",
        quantity(pulled.n_rejected, "post"),
        quantity(pulled.n_repaired, "span"),
        quantity(pulled.n_superseded, "post"),
        quantity(pulled.n_deleted_annotations, "annotation"),
        len(pulled.held_post_ids),
        pulled.n_unlabelled,
    )
    if pulled.rejected_key:
        get_run_logger().info(
            "each rejected, repaired and superseded record, with its reason: %s",
            ctx.storage.uri(pulled.rejected_key),
        )
    _say_disagreements(pulled)


#: Seconds a train-ner run waits for another's in the same environment (and how long a run
#: holds the environment's training lease without renewing it).
TRAIN_WAIT_S = 7200.0


def run_train(
    ctx: RunContext, source: str, export_keys: list[str] | None, stamp: str
) -> TrainSummary:
    """The body of train-ner (see the module docstring), one run at a time per environment:
    a run that finds another under way waits for it (the environment's ``train-ner`` lease,
    :func:`ner.leases.hold`), then finds what it trained. Two ``brandloop train`` at once
    registered the same model twice (trial AR); deployments had only their concurrency
    limit. Must run inside a flow."""

    def waiting() -> None:
        run_logger().info(
            "another train-ner run is under way in environment %s: waiting for it to end",
            ctx.settings.env,
        )

    owner = flow_run_id() or stamp
    what = f"train-ner in environment {ctx.settings.env}"
    with leases.hold(
        ctx.storage, "train-ner", owner, what=what, wait_s=TRAIN_WAIT_S, ttl_s=TRAIN_WAIT_S,
        on_wait=waiting,
    ):  # fmt: skip
        return _run_train(ctx, source, export_keys, stamp)


def _run_train(
    ctx: RunContext, source: str, export_keys: list[str] | None, stamp: str
) -> TrainSummary:
    cleanup = close_abandoned_runs(ctx)
    pulled = pull_annotations(ctx, source, export_keys, stamp)
    _say_pulled(ctx, pulled)
    summary = TrainSummary(
        status=TrainStatus.NO_LABELS,
        labels=pulled.n_annotations,
        rejected=pulled.n_rejected,
        repaired=cleanup.repaired_moves,
    )
    if pulled.n_annotations == 0:
        summary.decision = _no_labels_note(ctx, source, pulled)
        return summary
    splits = prepare_gold(
        ctx, pulled.annotations_key, stamp, pulled.withdrawn_post_ids, pulled.fallen_back_post_ids
    )
    splits = splits.model_copy(update={"pull_note": pulled.quality_note()})
    summary.gold_hash, summary.n_gold, summary.n_train, summary.n_canary = (
        splits.gold_hash,
        splits.n_gold,
        splits.n_train,
        splits.n_canary,
    )
    if splits.n_gold == 0:
        summary.status = TrainStatus.NO_GOLD
        summary.decision = no_gold_note(ctx.settings, splits, ctx.storage.uri(layout.GOLDSETS))
        return summary
    champion = evaluate_champion(ctx, splits, summary)
    if not needs_training(champion.f1, ctx.settings.threshold):
        summary.status = TrainStatus.THRESHOLD_MET
        summary.decision = threshold_met_note(
            champion.model_version, champion.f1, ctx.settings.threshold, splits.n_gold
        )
        return summary
    if too_few := _too_few_to_train(splits.n_train, ctx.settings.min_new_labels):
        summary.status, summary.decision = TrainStatus.NOT_ENOUGH_LABELS, too_few
        run_logger().info("nothing trained: %s", summary.decision)
        return summary
    labelled = [k for k in (pulled.annotations_key, splits.gold_key, splits.canary_key) if k]
    inputs = prepare_training(ctx, splits, labelled, summary.champion_version)
    if inputs.earlier is not None:
        return already_trained(inputs.earlier, inputs.fingerprint, summary)
    logged = train_and_log(ctx, splits, inputs, summary.champion_version, stamp)
    return challenge(ctx, splits, champion, logged, summary)


def _too_few_to_train(n_train: int, min_new_labels: int) -> str | None:
    """Why a training pool of ``n_train`` posts trains nothing, or None: fewer than
    ``NER_MIN_NEW_LABELS``, or than the :data:`~ner.training.MIN_TRAIN_POSTS` a challenger
    needs (a trial's one-post pool failed in training, retried once, with no hint)."""
    held = f"the training pool holds {quantity(n_train, 'post')} (gold and canary posts are "
    held += "never trained on)"
    if n_train < MIN_TRAIN_POSTS:
        return f"{held}, and a challenger needs at least {MIN_TRAIN_POSTS}: label more posts"
    if n_train < min_new_labels:
        return f"{held}; NER_MIN_NEW_LABELS={min_new_labels}"
    return None


def no_gold_note(settings: Settings, splits: Splits, goldsets: str) -> str:
    """Why no model can be scored: the gold set in force holds no post any more (forgotten
    or withdrawn; ``goldsets`` is where it is stored), or none is frozen yet."""
    if splits.gold_name is not None:
        return (
            f"gold set {splits.gold_name} holds no post any more (its posts were forgotten, or "
            "their labels deleted), so no model can be scored and nothing is trained or "
            "promoted. A frozen gold set is never re-split in place: `brandloop gold-set "
            "retire --reason ...` takes it out of force, and the next train freezes a new "
            "one and its canary set from the labels then (none that a training pool held). "
            f"Its files stay in {goldsets}/. Meanwhile `brandloop evaluate --on FILE` "
            "scores a model on a labelled export"
        )
    if splits.gold_repeats is not None:
        return (
            f"no gold set frozen: the labels pulled now would freeze gold set "
            f"{splits.gold_repeats} again, the same posts and labels (it was retired, and "
            "no gold post was labelled since); label new posts first, or undo the "
            "retirement: brandloop gold-set reinstate --reason ... (with this run's "
            "--set flags: it undoes the retirement in the store they name)"
        )
    if splits.gold_waiting and not splits.gold_has_spans:  # none waiting: a trial read
        return (  # "its 0 posts hold no span"
            f"no gold set frozen yet: its {quantity(splits.gold_waiting, 'post')} "
            f"{'holds' if splits.gold_waiting == 1 else 'hold'} no span; it is frozen once a "
            "gold post with a span is labelled"
        )
    return (
        f"no gold set frozen yet: {quantity(splits.gold_waiting, 'gold post')} of the "
        f"{settings.gold_min_posts} NER_GOLD_MIN_POSTS asks for"
    )


def threshold_met_note(model_version: str, f1: float, threshold: float, n_gold: int = 0) -> str:
    """Why nothing trained, and the threshold that would train a challenger: the next
    hundredth above ``f1``. At F1 1, where no threshold trains one, a gold set of ``n_gold``
    posts under :data:`~ner.datasets.SMALL_GOLD_SET` is named with the way to a larger one
    (a trial's one-post gold set stopped every run there)."""
    met = f"{model_version} scores F1 {f1:.4f} >= threshold {threshold:.4f} on the gold set"
    if f1 >= 1.0:
        small = (
            f"; it holds only {quantity(n_gold, 'post')}: `brandloop gold-set retire --reason "
            "...` lets the next train freeze a larger one (NER_GOLD_MIN_POSTS sets its least "
            "size)"
            if 0 < n_gold < datasets.SMALL_GOLD_SET
            else ""
        )
        return f"{met}: nothing trained (no challenger can beat F1 1.0 on this gold set{small})"
    above = min(math.floor(f1 * 100 + 1) / 100, 1.0)
    return (
        f"{met}: nothing trained (a threshold above {f1:.4f}, e.g. --set threshold={above:.2f}, "
        "trains a challenger)"
    )


def _say_disagreements(pulled: Pulled) -> None:
    """Name the posts the last pull held that this one released, and say how many posts'
    annotators disagreed and were settled by the policy without a review (``held`` posts are
    said by the pull itself)."""
    disagree = {a["post_id"] for a in pulled.agreement if a["score"] < 1.0}
    agreed = [i for i in pulled.released_post_ids if i not in disagree]
    if agreed:
        run_logger().info(
            "%s held for review by the last pull released (their annotations now agree, or "
            "one was edited or deleted): %s",
            quantity(len(agreed), "post"),
            first_ids(agreed),
        )
    if still := [i for i in pulled.released_post_ids if i in disagree]:  # a trial read them
        run_logger().info(  # as agreeing after it had only changed the policy
            "%s held for review by the last pull released by this run's agreement settings "
            "(NER_AGREEMENT_POLICY=%s), though their annotators still disagree: %s",
            quantity(len(still), "post"),
            pulled.agreement_policy,
            first_ids(still),
        )
    settled = [
        a for a in pulled.agreement if a["score"] < 1.0 and a["outcome"] != "held_for_review"
    ]
    if settled:
        review = pulled.agreement_policy == "review"  # these were above its threshold
        run_logger().info(
            "annotators disagree on %s (agreement below 1, first %s at %.2f); %s",
            quantity(len(settled), "post"),
            settled[0]["post_id"],
            settled[0]["score"],
            "above the review threshold, their latest labels were kept (a higher "
            "NER_AGREEMENT_THRESHOLD holds them)"
            if review
            else f"policy {pulled.agreement_policy} settled them (NER_AGREEMENT_POLICY=review "
            "holds them for a look instead)",
        )


def _no_labels_note(ctx: RunContext, source: str, pulled: Pulled) -> str:
    """Where a run that found no annotation looked, how labels get there, and what it could
    not read (files set aside, rejected records)."""
    unread = (
        f" ({len(pulled.quarantined)} export file(s) unreadable and set aside, first: "
        f"{pulled.quarantined[0]})"
        if pulled.quarantined
        else f" ({pulled.n_rejected} rejected: see the lines above)"
        if pulled.n_rejected
        else ""
    )
    if source == "label_studio":
        return f"no annotation in Label Studio project {ctx.settings.project_title!r}{unread}"
    return (
        f"no usable annotation in {ctx.storage.uri(layout.EXPORTS)}/{unread}: put Label Studio "
        "JSON exports there, or read them from Label Studio with --source label_studio"
    )


def already_trained(
    earlier: EarlierTraining, fingerprint: str, summary: TrainSummary
) -> TrainSummary:
    """``summary`` of a run that trained nothing: ``earlier`` was trained on the same
    inputs (its version, run and gold F1 go into the challenger's fields)."""
    summary.status = TrainStatus.ALREADY_TRAINED
    summary.challenger_version, summary.run_id = earlier.version, earlier.run_id
    summary.challenger_f1 = earlier.gold_f1
    if earlier.version == summary.champion_version:
        promote = f"version {earlier.version} is @champion already"
    elif earlier.refused_by:  # a trial was sent to a promote that refused it by them again
        promote = (
            f"the gate refused version {earlier.version} by {', '.join(earlier.refused_by)}; "
            f"`brandloop promote {earlier.version} --reason ... --force` overrides it, audited"
        )
    else:
        promote = (
            f"`brandloop promote {earlier.version} --reason ...` puts that version through "
            "the promotion rule on today's gold set"
        )
    summary.decision = (
        f"version {earlier.version} (run {earlier.run_id}) was trained on the same training "
        f"posts, recipe, seed and code (fingerprint {fingerprint[:12]}): training again "
        f"would make the same model. Label more posts or change the recipe to train; {promote}"
    )
    return summary


@flow(name="train-ner")
def train_ner(
    source: Literal["storage", "label_studio"] = "storage",
    export_keys: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainSummary:
    """Run one evaluate-gate-train-promote cycle. ``overrides`` are settings on top of the
    environment (``{"threshold": 0.7, "train": {"max_epochs": 5}}``). Returns what happened."""
    with run_context(overrides) as ctx:
        summary = run_train(ctx, source, export_keys, run_stamp(flow_run_id()))
        publish_result(f"train-ner-{ctx.settings.env}", summary.markdown(), summary.status)
    why = f" ({summary.decision})" if summary.decision else ""
    get_run_logger().info("train-ner: %s%s", summary.status, why)
    return summary


if __name__ == "__main__":  # the brandloop command line parses the arguments
    from apps.cli import flow_main

    flow_main("flows.train_ner")
