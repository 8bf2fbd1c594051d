"""Collecting export snapshots into one annotations JSONL: deletions reconciled, agreement scored.

:func:`collect_annotations` reads the snapshots in order; the latest annotation of a post wins.

* **Deletions.** A snapshot of a Label Studio project (``exports/<stamp>-ls-<project>…``) is
  first reconciled with the project's live set (:mod:`ner.labelstudio.liveset`): tasks and
  annotations deleted in Label Studio since are removed, so they leave the training pool, and
  a task whose latest annotation was deleted falls back to its remaining ones. Posts that
  lost every label this way are *withdrawn* (``CollectReport.withdrawn_post_ids``); the train
  flow drops them from the frozen gold set too (:func:`ner.datasets.drop_from_gold_set`).
* **Agreement.** For each task with several finished (not skipped) annotations, in its latest
  exported version, every annotation is parsed on its own and scored
  (:mod:`ner.agreement`); the policy keeps the latest, takes the majority spans, or holds the
  post for review. Held posts are left out of the output and written to
  ``layout.review_report(out_key)``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ner import forget, layout
from ner.agreement import Agreement, AgreementPolicy, Outcome, resolve
from ner.datasets import dataset_hash, write_annotations
from ner.errors import StorageError
from ner.labelstudio.export import (
    TEXTS_DIFFER,
    ExportAnnotation,
    TaskAnnotations,
    duplicate_reason,
    parse_export,
)
from ner.labelstudio.liveset import LiveSet, load_live_set, reconcile
from ner.labelstudio.quarantine import QuarantinedFile, read_export_or_quarantine
from ner.report import quantity
from ner.storage import Storage
from ner.types import Annotation, Parsed, Rejected

log = logging.getLogger(__name__)

#: Default agreement threshold of the ``review`` policy (mean pairwise span F1).
DEFAULT_AGREEMENT_THRESHOLD = 0.8


class CollectReport(BaseModel):
    """What :func:`collect_annotations` read and wrote.

    ``n_deleted_tasks`` / ``n_deleted_annotations`` count the distinct tasks and annotations
    of the snapshots that Label Studio no longer holds. ``agreement`` has one entry per task
    with several finished annotations (score in [0, 1], mean pairwise span F1);
    ``held_post_ids`` are the posts kept out for review.
    """

    model_config = ConfigDict(frozen=True)

    annotations_key: str
    export_keys: list[str]
    n_annotations: int
    n_rejected: int
    #: Spans repaired in the annotations written (a post several snapshots hold counts once).
    n_repaired: int
    #: The first 100 rejections, each ``"<export key>: <record id>: <reason>"``.
    rejected: list[str]
    dataset_hash: str
    n_deleted_tasks: int = 0
    n_deleted_annotations: int = 0
    withdrawn_post_ids: list[str] = []
    #: Posts that lost an annotation in Label Studio but keep another, which now gives their
    #: label (a gold post frozen with the deleted one takes it: a new gold set version).
    fallen_back_post_ids: list[str] = []
    agreement_policy: AgreementPolicy = AgreementPolicy.LATEST
    agreement: list[Agreement] = []
    held_post_ids: list[str] = []
    #: Posts the last pull held for review that this one does not (agreed, edited, deleted).
    released_post_ids: list[str] = []
    review_key: str | None = None
    #: ``<out_key>.rejected.json``: every rejected, repaired and superseded record with its
    #: reason (None when there is none).
    rejected_key: str | None = None
    #: Unreadable export files moved to quarantine, each ``"<key> -> <quarantine key>: <why>"``.
    quarantined: list[str] = []
    #: Posts whose tasks hold no finished annotation in any snapshot (none, skipped, or all
    #: deleted): left out, and no error.
    n_unlabelled: int = 0
    #: Posts with records not read because another annotation or task gives the post its
    #: label (a newer one of the same post id): each record reported as
    #: ``superseded: ...``, not rejected; counted per post, as rejections are (trial W).
    n_superseded: int = 0


@dataclass(slots=True)
class _Pool:
    """What the snapshots add up to, read in order."""

    latest: dict[str, tuple[str, int, Annotation]] = field(default_factory=dict)
    #: post id -> (snapshot key, how each span was repaired) of the record ``latest`` holds
    #: (a post in several snapshots counts once)
    repairs: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    #: (snapshot key, rejected record), in reading order
    rejected: list[tuple[str, Rejected]] = field(default_factory=list)
    #: post id -> (updated_at, snapshot order) of its newest rejected record read so far
    rejected_stamps: dict[str, tuple[str, int]] = field(default_factory=dict)
    unlabelled: set[str] = field(default_factory=set)
    #: task id -> its latest exported version, for tasks with several finished annotations
    disputed: dict[int, Any] = field(default_factory=dict)
    lost: set[str] = field(default_factory=set)
    deleted_tasks: set[int] = field(default_factory=set)
    deleted_annotations: set[int] = field(default_factory=set)
    #: post id -> the spans each annotator chose, for posts held for review
    choices: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    #: unreadable snapshot files moved aside (:mod:`ner.labelstudio.quarantine`)
    quarantined: list[QuarantinedFile] = field(default_factory=list)


def _say_forgotten(pool: _Pool, keys: Sequence[str], forgotten: frozenset[str]) -> None:
    """Warn when exports hold forgotten posts again (an export sent after the forget): they
    are left out, but the files keep them until ``forget`` runs again."""
    holding = sorted({keys[entry[1]] for p, entry in pool.latest.items() if p in forgotten})
    if holding:
        n = sum(1 for p in pool.latest if p in forgotten)
        log.warning(
            "%d forgotten posts left out of the labels; %s still hold(s) them: run "
            "`brandloop forget` with their ids again to remove them there",
            n,
            ", ".join(holding),
        )


Entry = dict[str, Any]
"""An entry of a pull's ``.rejected.json`` report: ``{"kind": "rejected" | "repaired" |
"superseded", "export": <snapshot key>, "post_id": str | None, "reason": str, "also_in":
[<other snapshot keys holding the record alike>]}``."""


def _entry(kind: str, keys: Sequence[str], post_id: str | None, reason: str) -> Entry:
    found = Rejected(post_id, reason).entry()
    return {"kind": kind, "export": keys[0], **found, "also_in": list(keys[1:])}


def report_line(entry: Entry | str) -> str:
    """An entry as the run's log names it: ``[<kind>: ]<export>: <post>: <reason>[ (also in
    <keys>)]`` (rejected entries have no kind prefix; a report written before entries were
    objects holds these lines as they are)."""
    if isinstance(entry, str):
        return entry
    kind = "" if entry["kind"] == "rejected" else f"{entry['kind']}: "
    also = f" (also in {', '.join(entry['also_in'])})" if entry.get("also_in") else ""
    return f"{kind}{entry['export']}: {Rejected(entry['post_id'], entry['reason'])}{also}"


def _sort_rejected(pool: _Pool, forgotten: frozenset[str]) -> tuple[list[Entry], list[Entry], int]:
    """``(rejected entries, superseded entries, rejected tasks)``: a record of a post whose
    label comes from another task (a newer annotation of the same post id) is superseded,
    not a rejected post; a forgotten post's records are not reported at all. A task that
    lost a span gives several entries and counts once; a record that several snapshots hold
    alike is one entry (``also_in`` the others)."""
    where: dict[tuple[str | None, str], list[str]] = {}
    for key, item in pool.rejected:
        if item.record_id not in forgotten:
            where.setdefault((item.record_id, item.reason), []).append(key)
    rejected, superseded, tasks = [], [], set()
    for (record_id, reason), keys in where.items():
        if record_id in pool.latest:
            superseded.append(_entry("superseded", keys, record_id, reason))
        else:
            rejected.append(_entry("rejected", keys, record_id, reason))
            tasks.add((record_id, reason.partition(":")[0]))
    return rejected, superseded, len(tasks)


def _finished(raw: Any) -> int:
    try:
        task = TaskAnnotations.model_validate(raw)
    except ValidationError:
        return 0
    return sum(1 for a in task.readable_annotations() if not a.was_cancelled)


def _track_disputes(pool: _Pool, tasks: Any) -> None:
    for raw in tasks if isinstance(tasks, list) else []:
        ident = raw.get("id") if isinstance(raw, dict) else None
        if type(ident) is not int:
            continue
        if _finished(raw) > 1:
            pool.disputed[ident] = raw
        else:
            pool.disputed.pop(ident, None)


def _live_tasks(storage: Storage, key: str, cache: dict[int, LiveSet | None], pool: _Pool) -> Any:
    """The tasks of snapshot ``key``, reconciled with its project's live set if there is one;
    None when the file cannot be read (it is moved to quarantine and recorded in ``pool``)."""
    tasks = read_export_or_quarantine(storage, key)
    if isinstance(tasks, QuarantinedFile):
        pool.quarantined.append(tasks)
        return None
    project_id = layout.export_snapshot_project(key)
    if project_id is None:
        return tasks
    if project_id not in cache:
        cache[project_id] = load_live_set(storage, project_id)
    live = cache[project_id]
    if live is None or not live.covers(key):
        return tasks
    outcome = reconcile(tasks, live)
    pool.deleted_tasks.update(outcome.deleted_task_ids)
    pool.deleted_annotations.update(outcome.deleted_annotation_ids)
    if outcome.removed:
        gone = parse_export(outcome.removed, labels=[], keep_partial=True)
        pool.lost.update(a.post_id for a in gone.records)
    return outcome.kept


def _read_snapshots(storage: Storage, keys: Sequence[str], labels: Sequence[str]) -> _Pool:
    """The latest annotation of each post over ``keys``, deletions reconciled."""
    pool = _Pool()
    cache: dict[int, LiveSet | None] = {}
    for order, key in enumerate(keys):
        tasks = _live_tasks(storage, key, cache, pool)
        if tasks is None:
            continue
        _track_disputes(pool, tasks)
        parsed = parse_export(tasks, labels=labels, keep_partial=False)
        pool.rejected.extend((key, item) for item in parsed.rejected)
        pool.unlabelled.update(parsed.unlabelled)
        for annotation in parsed.records:
            stamp = (annotation.updated_at or "", order, annotation)
            if stamp[:2] <= pool.rejected_stamps.get(annotation.post_id, ("", -1)):
                continue  # a newer record of the post, in a file read before, was rejected
            known = pool.latest.get(annotation.post_id)
            newer = known is None or stamp[:2] >= known[:2]
            if known is not None and known[2].task_id != annotation.task_id:
                _supersede(pool, key, annotation, known[2], newer)
            if newer:
                pool.latest[annotation.post_id] = stamp
                pool.repairs[annotation.post_id] = (
                    key,
                    parsed.repairs.get(annotation.post_id, []),
                )
        _drop_outdated(pool, parsed, order)
    return pool


def _supersede(pool: _Pool, key: str, read: Annotation, known: Annotation, newer: bool) -> None:
    """Name the record of another task of the same post that gives way, as one export names
    its own duplicates: ``read`` (of snapshot ``key``) against ``known``, the record kept so
    far (a post sent twice lands in two tasks, mostly in two pulls' snapshots)."""
    kept, lost = (read, known) if newer else (known, read)
    lost_key = pool.repairs[known.post_id][0] if newer else key
    why = f"(updated {kept.updated_at})" if kept.updated_at else "(in a later export)"
    reason = duplicate_reason(
        f"task {lost.task_id}", f"task {kept.task_id}", why, lost.text != kept.text
    )
    pool.rejected.append((lost_key, Rejected(lost.post_id, reason)))


def _drop_outdated(pool: _Pool, parsed: Parsed, order: int) -> None:
    """A post whose record snapshot ``order`` rejects loses the record an earlier snapshot
    gave it, unless that record is newer: a later snapshot holds the task's newest annotation
    (the parser reads a task's newest one), so training on the earlier one would use labels
    an annotator replaced (a trial's newer annotation with an unknown label was "superseded"
    by the older one). The rejection is then reported as one. Newer is decided as between
    kept records, by ``updated_at``, then by the order read: exports are read in key order,
    which a hand-named file does not follow (trial BE: ``export-2.json`` before
    ``export.json``, whose older label was rejected and dropped the fixed one). The
    rejection's stamp is kept, so that an older record read later is not kept either
    (trial BH: the newer file, rejected, sorted first)."""
    for post_id in filter(None, {item.record_id for item in parsed.rejected}):
        rejected = (parsed.rejected_at.get(post_id, ""), order)
        pool.rejected_stamps[post_id] = max(pool.rejected_stamps.get(post_id, ("", -1)), rejected)
        known = pool.latest.get(post_id)
        if known is None or known[1] >= order:
            continue
        if rejected >= known[:2]:
            del pool.latest[post_id]
            pool.repairs.pop(post_id, None)


def _each_annotation(raw: dict[str, Any], labels: Sequence[str]) -> list[Annotation]:
    """The finished annotation of each annotator of one task, parsed alone (rejected ones
    are left out): one vote per person, their latest (a trial's annotator who saved twice
    counted twice). Annotations that name no annotator count one each."""
    latest: dict[str, tuple[Any, Annotation]] = {}
    for position, annotation in enumerate(raw.get("annotations") or []):
        alone = parse_export(
            [{**raw, "annotations": [annotation]}], labels=labels, keep_partial=False
        )
        for record in alone.records:
            when = ExportAnnotation.model_validate(annotation).recency(position)
            who = record.annotator or f"#{position}"
            if who not in latest or latest[who][0] < when:
                latest[who] = (when, record)
    return [record for _, record in latest.values()]


def _apply_agreement(
    pool: _Pool, labels: Sequence[str], policy: AgreementPolicy, threshold: float
) -> list[Agreement]:
    """Score every disputed task; replace or hold its post's annotation as ``policy`` says."""
    agreements: list[Agreement] = []
    for task_id in sorted(pool.disputed):
        annotations = _each_annotation(pool.disputed[task_id], labels)
        if len(annotations) < 2:
            continue
        resolution = resolve(annotations, policy, threshold)
        agreements.append(resolution.agreement)
        if resolution.annotation is None:  # held: the review report shows what each chose
            pool.choices[resolution.agreement.post_id] = {
                a.annotator or "?": [f"[{x.start}, {x.end}) {x.text!r} {x.label}" for x in a.spans]
                for a in annotations
            }
        post_id = resolution.agreement.post_id
        known = pool.latest.get(post_id)
        if known is None or known[2].task_id != task_id:
            continue  # the post's label comes from another task (a duplicate post)
        if resolution.annotation is None:
            del pool.latest[post_id]
        else:
            pool.latest[post_id] = (*known[:2], resolution.annotation)
    return agreements


def _snapshot_keys(storage: Storage, export_keys: Sequence[str] | None) -> list[str]:
    if export_keys:
        return list(export_keys)
    keys = storage.list(layout.EXPORTS)  # a CSV export is set aside, named, not ignored
    return [k for k in keys if layout.is_export(k) or layout.is_other_export(k)]


def _repaired(pool: _Pool, annotations: Sequence[Annotation]) -> list[Entry]:
    """One ``repaired`` entry per span repaired in the records kept (``reason``: how)."""
    return [
        _entry("repaired", [pool.repairs[a.post_id][0]], a.post_id, note)
        for a in annotations
        for note in pool.repairs.get(a.post_id, ("", []))[1]
    ]


def _write_review(
    storage: Storage, out_key: str, pool: _Pool, held: Sequence[Agreement]
) -> str | None:
    """Write the posts ``held`` for review, with the spans each annotator chose, next to
    ``out_key``; returns the report's key (None when none is held)."""
    if not held:
        return None
    review_key = layout.review_report(out_key)
    review = [{**a.to_dict(), "spans": pool.choices.get(a.post_id, {})} for a in held]
    storage.write_json(review_key, review)
    log.warning(
        "%s held for review (annotators disagree): %s", quantity(len(held), "post"), review_key
    )
    return review_key


def _released(storage: Storage, out_key: str, held: Collection[str]) -> list[str]:
    """The posts the last pull before ``out_key`` held for review that this one does not
    (``held``): released (a trial saw only ``brandloop status``'s count drop). None for a
    pull outside ``annotations/``, or after none that held a post."""
    if not layout.is_pulled_annotations(out_key):
        return []
    folder = out_key.rpartition("/")[0]
    pulls = [k for k in storage.list(folder) if layout.is_pulled_annotations(k) and k < out_key]
    report = layout.review_report(pulls[-1]) if pulls else None
    if report is None or not storage.exists(report):
        return []
    earlier = storage.read_json(report)
    ids = [e["post_id"] for e in earlier if isinstance(e, dict) and "post_id" in e]
    return [post_id for post_id in ids if post_id not in held]


def _write_rejected(
    storage: Storage,
    out_key: str,
    rejected: Sequence[Entry],
    repaired: Sequence[Entry],
    superseded: Sequence[Entry],
) -> str | None:
    """Write the rejected, repaired and superseded records next to ``out_key`` (a list of
    :data:`Entry`) and log the first ones; returns the report's key (None when there is
    nothing to report)."""
    if not (rejected or superseded or repaired):
        return None
    rejected_key = layout.rejected_report(out_key)
    earlier_key, earlier = _earlier_report(storage, rejected_key)
    storage.write_json(rejected_key, [*rejected, *repaired, *superseded])
    reused = [entry for entry in superseded if TEXTS_DIFFER in entry["reason"]]
    new_rejected = [e for e in rejected if _stem(e) not in earlier]
    new_reused = [e for e in reused if _stem(e) not in earlier]
    named, more = _first_posts(new_rejected, NAMED_POSTS)
    for entry in named:
        log.warning("rejected %s", report_line(entry))
    if more:
        log.warning("and %s more rejected posts, in the report below", f"{more:,}")
    if named:  # the first pull said only why (trial AM); a later one said what to do
        log.warning(
            "to take a rejected post back, fix its annotation in Label Studio (or its record "
            "in the export files): the next pull reads it again"
        )
    for entry in new_reused[:5]:
        log.warning("%s", report_line(entry))
    if routine := len(superseded) - len(reused):  # a label fixed, a post sent again
        log.info("%s superseded by a newer one of the same post", quantity(routine, "record"))
    if again := [e for e in [*rejected, *reused] if _stem(e) in earlier]:
        log.warning(
            "%s (%s) of the last pull's report (%s) still stand, not named again: fix or "
            "delete those records (in Label Studio, or in the export files) to clear them",
            _standing_posts(again),
            quantity(len(again), "line"),
            earlier_key,
        )
    log.info("every rejected, repaired and superseded record: %s", storage.uri(rejected_key))
    return rejected_key


def _standing_posts(entries: Sequence[Entry]) -> str:
    """``"2 rejected posts and 1 post whose id holds another text"``: the posts of report
    ``entries`` by kind, each counted once (a post may have several lines), so that the
    number reads beside the pull's count of rejected posts (a trial's did not)."""
    rejected = {e["post_id"] for e in entries if e["kind"] == "rejected"}
    reused = {e["post_id"] for e in entries if e["kind"] != "rejected"} - rejected
    parts = [quantity(len(rejected), "rejected post")] if rejected else []
    if reused:
        parts.append(quantity(len(reused), "post") + " whose id holds another text")
    return " and ".join(parts)


#: Rejected posts a pull names one by one in its log (each with all its lines).
NAMED_POSTS = 20


def _first_posts(entries: Sequence[Entry], limit: int) -> tuple[list[Entry], int]:
    """The entries of the first ``limit`` posts (a post's rejected span and the post itself
    are two entries; an entry without a post id counts as one post), and how many posts
    are left out."""
    posts: set[object] = set()
    kept: list[Entry] = []
    for entry in entries:
        posts.add(entry.get("post_id") or id(entry))
        if len(posts) <= limit:
            kept.append(entry)
    return kept, max(len(posts) - limit, 0)


def _stem(entry: Entry | str) -> str:
    """A report entry's line without its ``(also in …)`` tail, which grows as snapshots
    arrive (the same for an entry and for the line an older report holds)."""
    return report_line(entry).split(" (also in ", 1)[0]


def _earlier_report(storage: Storage, rejected_key: str) -> tuple[str | None, frozenset[str]]:
    """The newest rejected report of an earlier pull in ``rejected_key``'s folder (keys sort
    by run stamp) and its lines' stems: those records were named already, so a pull names
    only the new ones one by one. ``(None, ∅)`` when there is none."""
    folder = rejected_key.rpartition("/")[0]
    reports = [
        key for key in storage.list(folder) if layout.is_rejected_report(key) and key < rejected_key
    ]
    if not reports:
        return None, frozenset()
    try:
        lines = storage.read_json(reports[-1])
    except StorageError as exc:  # then every record is named again, as before
        log.info("earlier rejected report unread: %s", exc)
        return None, frozenset()
    if not isinstance(lines, list):
        return None, frozenset()
    stems = (_stem(e) for e in lines if isinstance(e, str) or _is_entry(e))
    return reports[-1], frozenset(stems)


def _is_entry(item: Any) -> bool:
    return isinstance(item, dict) and {"kind", "export", "post_id", "reason"} <= item.keys()


def collect_annotations(
    storage: Storage,
    export_keys: Sequence[str] | None,
    labels: Sequence[str],
    *,
    out_key: str,
    policy: AgreementPolicy = AgreementPolicy.LATEST,
    threshold: float = DEFAULT_AGREEMENT_THRESHOLD,
) -> CollectReport:
    """Parse export snapshots from storage into one annotations JSONL at ``out_key``.

    ``export_keys`` defaults to every ``exports/*.json``. A post labelled in several
    snapshots keeps its most recent annotation; deleted tasks and annotations are dropped and
    disagreeing annotators are resolved by ``policy`` (see the module docstring). Rejected
    records are written next to the output (``…rejected.json``) with their reasons (and the
    spans repaired in the records kept, ``repaired: …``, and superseded records), and
    counted; held posts go to ``…review.json``. A post that lost a span to a bad offset is
    rejected whole, so half-read annotations never become gold. A file that cannot be read
    at all (not UTF-8, not JSON, nested too deeply, not a list) is moved to ``quarantine/``
    with its reason (:mod:`ner.labelstudio.quarantine`) and the others are read. Raises
    :class:`~ner.errors.DataError` for a malformed live set.
    """
    keys = _snapshot_keys(storage, export_keys)
    pool = _read_snapshots(storage, keys, labels)
    agreements = _apply_agreement(pool, labels, policy, threshold)
    forgotten = forget.forgotten_ids(storage)
    annotations = [pool.latest[p][2] for p in sorted(pool.latest) if p not in forgotten]
    _say_forgotten(pool, keys, forgotten)
    write_annotations(storage, out_key, annotations)
    rejected, superseded, n_rejected = _sort_rejected(pool, forgotten)
    repaired = _repaired(pool, annotations)
    rejected_key = _write_rejected(storage, out_key, rejected, repaired, superseded)
    held = [a for a in agreements if a.outcome is Outcome.HELD]
    review_key = _write_review(storage, out_key, pool, held)
    withdrawn = sorted(pool.lost - set(pool.latest) - {a.post_id for a in held})
    return CollectReport(
        annotations_key=out_key,
        export_keys=keys,
        n_annotations=len(annotations),
        n_rejected=n_rejected,
        n_repaired=len(repaired),
        rejected=[report_line(e) for e in rejected[:100]],
        n_superseded=len({e["post_id"] for e in superseded}),
        dataset_hash=dataset_hash(annotations),
        n_deleted_tasks=len(pool.deleted_tasks),
        n_deleted_annotations=len(pool.deleted_annotations),
        withdrawn_post_ids=withdrawn,
        fallen_back_post_ids=sorted((pool.lost & set(pool.latest)) - forgotten),
        agreement_policy=policy,
        agreement=agreements,
        held_post_ids=[a.post_id for a in held],
        released_post_ids=_released(storage, out_key, {a.post_id for a in held}),
        review_key=review_key,
        rejected_key=rejected_key,
        quarantined=[item.describe() for item in pool.quarantined],
        n_unlabelled=len(pool.unlabelled - set(pool.latest)),
    )
