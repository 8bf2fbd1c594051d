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
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.apply_ner import ApplyResult, apply_ner
from flows.context import (
    Count,
    PollSeconds,
    RunContext,
    WaitSeconds,
    io_task,
    publish_result,
    require_counts,
    run_context,
    run_logger,
    run_stamp,
)
from flows.train_ner import TrainStatus, TrainSummary, train_ner
from ner import layout
from ner.errors import ConfigError
from ner.labelstudio.client import LabelStudioProject
from ner.labelstudio.exchange import checkpoint_key
from ner.labelstudio.export import count_labelled
from ner.labelstudio.quarantine import QuarantinedFile, read_export_or_quarantine
from ner.labelstudio.triggers import wait_for_labels
from ner.replay import ReplayAnnotator, demo_gold_path
from ner.report import quantity, rounds_table
from ner.storage import Storage


class LoopStatus(StrEnum):
    """Why a feedback loop stopped."""

    THRESHOLD_MET = "threshold_met"
    BUDGET_SPENT = "budget_spent"
    NO_NEW_POSTS = "no_new_posts"
    TIMED_OUT = "timed_out_waiting_for_labels"


#: Status of a loop that stopped because too few labels came in time.
TIMED_OUT = LoopStatus.TIMED_OUT


class Labelled(BaseModel):
    """New human labels found for a round (``export_keys``: the snapshots holding them)."""

    n_labelled: int
    export_keys: list[str] = []
    project_id: int | None = None
    #: the wait ended before enough labels came: the round trains nothing
    timed_out: bool = False


class RoundResult(BaseModel):
    """One round: what was sent, how many labels came back, and what train-ner did."""

    round: int
    posts_sent: int
    model_used: str | None
    #: Whether ``model_used`` was the cold start (no champion when the round began).
    cold_start: bool = False
    new_labels: int
    train: TrainSummary | None = None

    @property
    def status(self) -> LoopStatus | TrainStatus:
        """The train-ner run's status, or :data:`TIMED_OUT` when too few labels came to
        train (the round's only outcome without a run)."""
        return LoopStatus.TIMED_OUT if self.train is None else self.train.status

    def table_row(self) -> dict[str, Any]:
        """The flat row :func:`ner.report.rounds_table` prints."""
        trained = self.train.model_dump(mode="json") if self.train else {}
        if self.status == TrainStatus.ALREADY_TRAINED:  # no challenger: an earlier version
            trained |= {"challenger_f1": None, "challenger_version": None}
        if self.train is None:  # nothing trained: the champion is the one that predicted
            used = self.model_used  # (a trial read the cold start's name as a champion's)
            trained = {"champion_model": f"none (cold start {used})" if self.cold_start else used}
        row = self.model_dump(exclude={"train", "cold_start"})
        return {**trained, **row, "status": str(self.status)}


class LoopResult(BaseModel):
    """Why the loop stopped, and every round it played."""

    status: LoopStatus
    rounds: list[RoundResult] = []

    def markdown(self) -> str:
        """The loop's result as Markdown (its Prefect artifact): the status, every round."""
        table = rounds_table([r.table_row() for r in self.rounds]) if self.rounds else "no round"
        return f"# feedback-loop: {self.status}\n\n{table}\n"


class RoundPlan(BaseModel):
    """The parameters of a feedback-loop run that each round uses."""

    source: Literal["x", "jsonl"]
    input_uri: str | None
    keywords: list[str] | None
    posts_per_round: int | None
    annotator: Literal["storage", "replay", "label_studio"]
    gold_export: str | None
    wait_timeout_s: float
    poll_interval_s: float
    overrides: dict[str, Any] | None

    def check(self) -> None:
        """Refuse a poll interval not above 0 s or a negative wait (:class:`ConfigError`),
        and read a replay gold export before round 1 fetches posts (a JSONL input's
        checkpoint would move past them): :class:`NotFoundError` for no such file,
        :class:`ConfigError` or :class:`DataError` for one that cannot be read
        (:meth:`ReplayAnnotator.from_file`; a trial's truncated export failed after apply)."""
        if self.poll_interval_s <= 0:
            raise ConfigError(f"poll_interval_s={self.poll_interval_s:g}: must be above 0 s")
        if self.wait_timeout_s < 0:
            raise ConfigError(f"wait_timeout_s={self.wait_timeout_s:g}: must be at least 0 s")
        if self.annotator == "replay" and self.gold_export:
            ReplayAnnotator.from_file(Path(self.gold_export))


@io_task()
def replay_labels(ctx: RunContext, tasks_key: str, gold_path: str, stamp: str) -> Labelled:
    """The replay annotator labels the sent tasks; its export lands in ``exports/``."""
    annotator = ReplayAnnotator.from_file(Path(gold_path))
    tasks = ctx.storage.read_json(tasks_key)
    export = annotator.annotate(tasks)
    key = layout.replay_export(stamp)
    ctx.storage.write_json(key, export)
    if len(export) < len(tasks):  # the others stay unlabelled, as tasks nobody got to
        run_logger().warning(
            "the replay annotator labelled %d of %s: the others' post ids are not in %s",
            len(export),
            quantity(len(tasks), "task"),
            gold_path,
        )
    return Labelled(export_keys=[key], n_labelled=len(export))


@io_task(retries=0)
def wait_for_exports(
    ctx: RunContext, known: list[str], timeout_s: float, poll_s: float
) -> Labelled:
    """Poll storage until export snapshots not in ``known`` hold ``min_new_labels`` labels,
    or ``timeout_s`` passes (``timed_out``, with the labels that did come)."""
    storage, need, logger = ctx.storage, ctx.settings.min_new_labels, get_run_logger()
    where = storage.uri(layout.EXPORTS)
    deadline = time.monotonic() + timeout_s
    while True:
        new, labelled = _new_exports(storage, known)
        if labelled >= need:
            logger.info("%s in %s", quantity(labelled, "new label"), where)
            return Labelled(export_keys=new, n_labelled=labelled)
        left = deadline - time.monotonic()
        if left <= 0:  # the narration marks the wait "!" rather than "✓"
            logger.warning(
                "%s in %s after %.0f s (need %d)",
                quantity(labelled, "new label"),
                where,
                timeout_s,
                need,
            )
            return Labelled(export_keys=new, n_labelled=labelled, timed_out=True)
        logger.info("waiting for %s in %s: %.0f s left", quantity(need, "new label"), where, left)
        time.sleep(min(poll_s, left))


def _new_exports(storage: Storage, known: list[str]) -> tuple[list[str], int]:
    """Export keys not in ``known`` and the labels they hold; an unreadable file is moved
    aside (:mod:`ner.labelstudio.quarantine`) and left out."""
    keys, labelled = [], 0
    for key in storage.list(layout.EXPORTS):
        if not layout.is_export(key) or key in known:
            continue
        export = read_export_or_quarantine(storage, key)
        if isinstance(export, QuarantinedFile):
            get_run_logger().error("export %s moved aside: %s", key, export.reason)
            continue
        keys.append(key)
        labelled += count_labelled(export)
    return keys, labelled


@io_task(retries=0)
def wait_for_label_studio(ctx: RunContext, timeout_s: float, poll_s: float) -> Labelled:
    """Poll the Label Studio project until ``min_new_labels`` labels are new, or
    ``timeout_s`` passes (``n_labelled`` 0). New: saved after both the loop's last trigger
    (its own checkpoint, apart from the label trigger's) and what the last training pull
    read (``train --source label_studio``, in a loop round or not), so the labels a model
    was already trained on never start a round."""
    project, need = LabelStudioProject.connect(ctx.settings), ctx.settings.min_new_labels
    logger = get_run_logger()

    def say_waiting(left: float) -> None:  # the narration's progress line while it waits
        logger.info(
            "waiting for %s in project %s: %.0f s left",
            quantity(need, "new label"),
            project.project_id,
            left,
        )

    found = wait_for_labels(
        project,
        ctx.storage,
        need,
        timeout=timeout_s,
        interval=poll_s,
        checkpoint_key=layout.labelstudio_checkpoint(project.project_id, "feedback-loop"),
        read_key=checkpoint_key(project.project_id),
        on_wait=say_waiting,
    )
    if found:
        logger.info(
            "%s in project %s since the last training pull",
            quantity(found, "new label"),
            project.project_id,
        )
    else:  # the narration marks the wait "!" rather than "✓"
        few = "no new label" if need == 1 else f"fewer than {quantity(need, 'new label')}"
        logger.warning("%s in project %s after %.0f s", few, project.project_id, timeout_s)
    return Labelled(n_labelled=found, project_id=project.project_id, timed_out=not found)


def collect_labels(
    ctx: RunContext, plan: RoundPlan, applied: ApplyResult, known: list[str]
) -> Labelled:
    """The labels of this round, from the plan's annotator."""
    if plan.annotator == "replay":
        gold = plan.gold_export or str(demo_gold_path())
        stamp = run_stamp()
        replies = [
            replay_labels(ctx, key, gold, f"{stamp}-{n}" if n else stamp)
            for n, key in enumerate(applied.tasks_keys())
        ]
        return Labelled(
            export_keys=[key for reply in replies for key in reply.export_keys],
            n_labelled=sum(reply.n_labelled for reply in replies),
        )
    if plan.annotator == "label_studio":
        return wait_for_label_studio(ctx, plan.wait_timeout_s, plan.poll_interval_s)
    return wait_for_exports(ctx, known, plan.wait_timeout_s, plan.poll_interval_s)


def play_round(ctx: RunContext, plan: RoundPlan, number: int) -> RoundResult | None:
    """Apply, wait for labels, train. None when there were no new posts to send."""
    known = ctx.storage.list(layout.EXPORTS)
    through_api = plan.annotator == "label_studio"
    applied = apply_ner(
        keywords=plan.keywords,
        source=plan.source,
        input_uri=plan.input_uri,
        max_posts=plan.posts_per_round,
        destination="label_studio" if through_api else "storage",
        overrides=plan.overrides,
    )
    posts_sent = applied.posts_sent()
    if posts_sent == 0:
        return None
    labelled = collect_labels(ctx, plan, applied, known)
    result = RoundResult(
        round=number,
        posts_sent=posts_sent,
        model_used=applied.model_version,
        cold_start=applied.cold_start,
        new_labels=labelled.n_labelled,
    )
    if labelled.timed_out:
        get_run_logger().info("round %d: stopping (the wait above timed out)", number)
        return result
    result.train = train_ner(
        source="label_studio" if through_api else "storage", overrides=plan.overrides
    )
    return result


@flow(name="feedback-loop")
def feedback_loop(
    source: Literal["x", "jsonl"] = "x",
    input_uri: str | None = None,
    keywords: list[str] | None = None,
    posts_per_round: Count = None,
    annotator: Literal["storage", "replay", "label_studio"] = "storage",
    gold_export: str | None = None,
    max_rounds: Count = None,
    wait_timeout_s: WaitSeconds = 24 * 3600,
    poll_interval_s: PollSeconds = 60,
    overrides: dict[str, Any] | None = None,
) -> LoopResult:
    """Run rounds until the threshold is met or the budget is spent; returns every round.
    ``overrides`` are settings on top of the environment, for every sub-flow too."""
    require_counts(max_rounds=max_rounds, posts_per_round=posts_per_round)
    plan = RoundPlan(**{k: v for k, v in locals().items() if k in RoundPlan.model_fields})
    plan.check()
    with run_context(overrides) as ctx:
        result = LoopResult(status=LoopStatus.BUDGET_SPENT)
        budget = ctx.settings.max_rounds if max_rounds is None else max_rounds
        for number in range(1, budget + 1):
            played = play_round(ctx, plan, number)
            if played is None:
                result.status = LoopStatus.NO_NEW_POSTS
                break
            result.rounds.append(played)
            get_run_logger().info("round %d: %s", number, played.status)
            if played.train is None:
                result.status = LoopStatus.TIMED_OUT
                break
            if played.train.status == TrainStatus.THRESHOLD_MET:
                result.status = LoopStatus.THRESHOLD_MET
                break
            if played.train.status == TrainStatus.ALREADY_TRAINED:  # a trial read it as stuck
                get_run_logger().info(
                    "round %d trained nothing: its labels left the training posts as they were "
                    "(labels of gold or canary posts, or of posts left out); a next round, if "
                    "any, sends new posts",
                    number,
                )
        publish_result(f"feedback-loop-{ctx.settings.env}", result.markdown(), result.status)
    return result


if __name__ == "__main__":  # the brandloop command line parses the arguments
    from apps.cli import flow_main

    flow_main("flows.feedback_loop")
