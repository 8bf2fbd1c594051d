"""Deletions and disagreeing annotators against the real Label Studio server (1.23.2).

* an annotation or task deleted in Label Studio leaves the training pool at the next pull
  (and a gold post whose task was deleted leaves the frozen gold set, as a new version);
  the deletion webhooks reach the receiver and count as changes;
* two real users (the second one signs up through an invite link, as a person would, and
  labels with their own API token) annotate one task differently; the pull reports their
  agreement and each policy (latest, majority, review) does what it says.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
import requests
from label_studio_sdk import LabelStudio

from apps.webhook import WEBHOOK_PATH, WebhookReceiver, register_webhook, running_receiver
from ner import datasets, layout
from ner.agreement import AgreementPolicy, Outcome
from ner.datasets import Splits, prepare_splits, read_annotations, split_of
from ner.labelstudio.client import LabelStudioProject
from ner.labelstudio.collect import CollectReport
from ner.labelstudio.exchange import (
    collect_annotations,
    snapshot_export,
    snapshot_keys,
)
from ner.settings import Settings
from ner.storage import Storage
from ner.types import Annotation, Post
from tests.support import annotating
from tests.support.annotating import annotate, brand, import_posts, result, tasks_by_post
from tests.support.servers import LabelStudioService
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABELS = ("BRAND",)
GOLD_FRACTION = 0.5


@pytest.fixture
def ls_settings(label_studio: LabelStudioService, tmp_path: Path) -> Settings:
    return annotating.project_settings(
        label_studio, tmp_path, "brandloop-deletions", gold_fraction=GOLD_FRACTION
    )


project = annotating.project
storage = annotating.storage


def post(post_id: str) -> Post:
    return Post(id=post_id, text=f"post {post_id}: new Glossier balm at Sephora")


def ids_in(split: str, n: int) -> list[str]:
    """``n`` post ids that the hash split puts in ``split`` at :data:`GOLD_FRACTION`."""
    found = (f"{split[0]}{i}" for i in range(10_000))
    return [p for p in found if split_of(p, GOLD_FRACTION) == split][:n]


def pull(
    project: LabelStudioProject, storage: Storage, stamp: str, **policy: Any
) -> tuple[CollectReport, Splits, dict[str, Annotation]]:
    """One pull as train-ner does it: snapshot, collect, gold set and training pool."""
    snapshot_export(project, storage, stamp)
    keys = snapshot_keys(storage, project.project_id)
    out_key = layout.pulled_annotations(stamp)
    report = collect_annotations(storage, keys, LABELS, out_key=out_key, **policy)
    splits = prepare_splits(
        storage,
        list(read_annotations(storage, out_key)),
        GOLD_FRACTION,
        layout.training_pool(stamp),
        withdrawn=report.withdrawn_post_ids,
        fallen_back=report.fallen_back_post_ids,
    )
    pool = {a.post_id: a for a in read_annotations(storage, layout.training_pool(stamp))}
    return report, splits, pool


def test_a_gold_post_whose_newer_label_is_deleted_falls_back_to_the_one_it_kept(
    project: LabelStudioProject, storage: Storage
) -> None:
    # Given a gold post labelled Glossier and frozen, then labelled again (Glossier and
    # Sephora, a correction the gold set takes)
    (g,) = ids_in("gold", 1)
    item = post(g)
    tasks = import_posts(project, [item])
    annotate(project, tasks[g]["id"], [brand(item.text, "Glossier")])
    pull(project, storage, "r0")
    newer = annotate(
        project, tasks[g]["id"], [brand(item.text, "Glossier"), brand(item.text, "Sephora")]
    )
    _, corrected, _ = pull(project, storage, "r1")
    assert storage.read_json(layout.gold_set(str(corrected.gold_name)))["corrected_post_ids"] == [g]
    # When the newer annotation is deleted in Label Studio (a trial's gold set kept scoring
    # models on the deleted label: the one left is older, so it read as no correction)
    project.client.annotations.delete(id=newer)
    report, splits, _ = pull(project, storage, "r2")
    # Then the post keeps its first label, and the gold set takes it in a new version
    assert report.fallen_back_post_ids == [g] and report.withdrawn_post_ids == []
    assert splits.gold_revised_from == corrected.gold_name
    record = storage.read_json(layout.gold_set(str(splits.gold_name)))
    assert record["fallen_back_post_ids"] == [g]
    gold = datasets.load_gold_set(storage)
    assert gold is not None and [s.text for s in gold[1][0].spans] == ["Glossier"]


def test_deleted_annotations_and_tasks_leave_the_training_pool_and_the_gold_set(
    project: LabelStudioProject, storage: Storage
) -> None:
    # Given 2 gold and 4 train posts, each labelled; train post t0 relabelled (a 2nd annotation)
    gold, train = ids_in("gold", 2), ids_in("train", 4)
    items = {p: post(p) for p in gold + train}
    tasks = import_posts(project, items.values())
    first = {
        p: annotate(project, tasks[p]["id"], [brand(items[p].text, "Glossier")]) for p in items
    }
    t0 = items[train[0]].text
    relabel = annotate(
        project, tasks[train[0]]["id"], [brand(t0, "Glossier"), brand(t0, "Sephora")]
    )
    before, splits, pool = pull(project, storage, "r1")
    assert before.n_annotations == 6 and before.n_deleted_annotations == 0
    assert splits.n_gold == 2 and splits.n_train == 4
    assert len(pool[train[0]].spans) == 2

    receiver = WebhookReceiver(lambda: None, min_new_labels=100, project_id=project.project_id)
    with running_receiver(receiver.app) as base_url:
        hook = register_webhook(project, base_url + WEBHOOK_PATH)
        try:
            # When the relabel and train post t1's label are deleted, and the tasks of train
            # post t2 and gold post g0 are deleted
            project.client.annotations.delete(id=relabel)
            project.client.annotations.delete(id=first[train[1]])
            project.client.tasks.delete(id=tasks[train[2]]["id"])
            project.client.tasks.delete(id=tasks[gold[0]]["id"])
            # Then the deletion events reach the receiver and count as 4 changes
            eventually(lambda: receiver.counter.pending == 4, "the four deletion events")
            assert receiver.stats.received.get("ANNOTATIONS_DELETED") == 2
            assert receiver.stats.received.get("TASKS_DELETED") == 2
        finally:
            project.client.webhooks.delete(id=hook)

    # And the next pull drops them: t0 falls back to its first label, t1 and t2 are gone
    after, splits, pool = pull(project, storage, "r2")
    assert after.n_annotations == 3
    assert after.n_deleted_tasks == 2 and after.n_deleted_annotations == 4
    assert after.withdrawn_post_ids == sorted([train[1], train[2], gold[0]])
    assert sorted(pool) == sorted([train[0], train[3]])
    assert [s.text for s in pool[train[0]].spans] == ["Glossier"]
    # And the gold set is a new version without g0 (drop and re-hash)
    assert splits.n_gold == 1 and splits.gold_revised_from is not None
    record = storage.read_json(layout.gold_set(splits.gold_name))
    assert record["dropped_post_ids"] == [gold[0]] and record["post_ids"] == [gold[1]]
    print(
        f"\ndeletions: annotations {before.n_annotations} -> {after.n_annotations}, "
        f"training pool 4 -> {splits.n_train}, gold set 2 -> {splits.n_gold}"
    )


def second_annotator(label_studio: LabelStudioService) -> LabelStudio:
    """A second person: signs up through the organisation's invite link, then uses the API
    with their own token (Label Studio's legacy token of that user)."""
    headers = {"Authorization": f"Token {label_studio.token}"}
    invite = requests.get(f"{label_studio.url}/api/invite", headers=headers, timeout=10).json()
    signup = label_studio.url + invite["invite_url"]
    session = requests.Session()
    session.get(signup, timeout=10).raise_for_status()
    answer = session.post(
        signup,
        data={
            "email": f"{annotating.unique('annotator')}@example.com",
            "password": secrets.token_urlsafe(16),
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        headers={"Referer": signup},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302, answer.text[:500]
    token = session.get(f"{label_studio.url}/api/current-user/token", timeout=10).json()["token"]
    return LabelStudio(base_url=label_studio.url, api_key=token)


def test_two_annotators_disagree_and_each_policy_resolves_it(
    label_studio: LabelStudioService, project: LabelStudioProject, storage: Storage
) -> None:
    # Given two posts, each annotated by two different users: they agree on "b" and not on
    # "a" (the second user also marks Sephora: span F1 2 * 1 / (1 + 2) = 0.667)
    other = second_annotator(label_studio)
    items = {p: post(p) for p in ("a", "b")}
    tasks = import_posts(project, items.values())
    for post_id, item in items.items():
        annotate(project, tasks[post_id]["id"], [brand(item.text, "Glossier")])
        spans = [brand(item.text, "Glossier")]
        if post_id == "a":
            spans.append(brand(item.text, "Sephora"))
        other.annotations.create(
            id=tasks[post_id]["id"], result=[result(s.start, s.end, s.text) for s in spans]
        )
    annotators = {
        a["completed_by"] for t in tasks_by_post(project).values() for a in t["annotations"]
    }
    assert len(annotators) == 2, "two distinct users annotated"

    # When pulled with each policy
    review, _, pool = pull(project, storage, "review", policy=AgreementPolicy.REVIEW, threshold=0.8)
    scores = {a.post_id: a for a in review.agreement}
    # Then the report scores both tasks, and review holds "a" out of training and lists it
    assert scores["a"].score == pytest.approx(2 / 3) and scores["b"].score == 1.0
    assert scores["a"].outcome is Outcome.HELD and review.held_post_ids == ["a"]
    assert review.review_key is not None
    assert [r["post_id"] for r in storage.read_json(review.review_key)] == ["a"]
    assert review.n_annotations == 1 and "a" not in pool
    spans_of: dict[str, list[str] | None] = {}
    for policy in (AgreementPolicy.LATEST, AgreementPolicy.MAJORITY):
        out_key = layout.pulled_annotations(str(policy))
        keys = snapshot_keys(storage, project.project_id)
        report = collect_annotations(storage, keys, LABELS, out_key=out_key, policy=policy)
        labels = {a.post_id: a for a in read_annotations(storage, out_key)}
        held = report.held_post_ids == ["a"] and "a" not in labels
        spans_of[str(policy)] = None if held else [s.text for s in labels["a"].spans]
        assert [s.text for s in labels["b"].spans] == ["Glossier"]
    # latest: the second user's label; majority: held, since one of two marked Sephora (a
    # tie on whether it is a brand, which trained as it stands would say "no brand")
    assert spans_of == {"latest": ["Glossier", "Sephora"], "majority": None}
    print(f"\nagreement: a {scores['a'].score:.3f}, b {scores['b'].score:.3f}; {spans_of}")
