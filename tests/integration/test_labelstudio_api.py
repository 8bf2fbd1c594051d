"""Label Studio through its API, against the real server (Label Studio 1.23.2, SDK 2.1.2).

Covers the project client (ensure, idempotent import, incremental pulls into immutable
snapshots), the offset round trip of awkward texts, both retraining triggers (webhooks to a
receiver on 127.0.0.1, and polling), the label-trigger service starting ``train-ner`` on a
real Prefect server, and the feedback loop waiting for people who label through the API.

"Humans" here are API calls: ``client.annotations.create`` with the result JSON the Label
Studio editor saves. Its ``Text`` tag (web/libs/editor, RichText ``domManager``) counts global
offsets in code points (``[...text]``), so the spans are written in code points. Earlier
editors counted UTF-16 units; that variant is written too, and the offset guard must bring
both back to the same code-point spans.
"""

from __future__ import annotations

import json
import secrets
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient

from apps.webhook import (
    SECRET_HEADER,
    WEBHOOK_PATH,
    WebhookReceiver,
    register_webhook,
    running_receiver,
)
from deployments import label_trigger
from flows.feedback_loop import TIMED_OUT, feedback_loop
from flows.train_ner import train_ner
from ner.errors import ConfigError, LabelStudioError, ProjectNotFoundError
from ner.labelstudio.client import LabelStudioProject, list_projects
from ner.labelstudio.config import label_config
from ner.labelstudio.exchange import (
    collect_annotations,
    import_items,
    import_predictions,
    snapshot_export,
    snapshot_keys,
    to_tasks,
)
from ner.labelstudio.export import codepoint_to_utf16
from ner.labelstudio.triggers import poll_for_labels, wait_for_labels
from ner.replay import ReplayAnnotator, demo_posts_path
from ner.settings import Settings
from ner.storage import Storage
from ner.types import Post, Prediction, Span
from tests.support import annotating
from tests.support.annotating import (
    annotate,
    brand,
    import_posts,
    project_settings,
    result,
    tasks_by_post,
    unique,
)
from tests.support.flows import demo_slice
from tests.support.servers import (
    PROJECT_ROOT,
    LabelStudioService,
    ManagedServer,
    PrefectService,
    free_port,
)
from tests.support.waiting import eventually

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LABELS = ("BRAND",)


def posts(n: int, prefix: str = "p") -> list[Post]:
    return [Post(id=f"{prefix}{i}", text=f"post {i}: new Glossier balm") for i in range(n)]


def predictions_of(items: list[Post]) -> list[Prediction]:
    return [
        Prediction(
            post_id=p.id,
            spans=(Span(*brand(p.text, "Glossier").key[:2], "BRAND", "Glossier", score=0.87),),
            model_version="gazetteer@test",
            score=0.87,
        )
        for p in items
    ]


# --- fixtures -------------------------------------------------------------------------------
@pytest.fixture
def ls_settings(label_studio: LabelStudioService, tmp_path: Path) -> Settings:
    """Settings for a fresh project on the test server (its own title, its own storage)."""
    return project_settings(label_studio, tmp_path, "brandloop-it")


project = annotating.project
storage = annotating.storage


@pytest.fixture
def prefect_api(prefect_server: PrefectService) -> Iterator[PrefectService]:
    """In-process Prefect clients and flows talk to the session's Prefect server."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_ANALYTICS_ENABLED,
        temporary_settings,
    )

    with temporary_settings(
        updates={
            PREFECT_API_URL: prefect_server.api_url,
            PREFECT_HOME: str(prefect_server.client_home),
            PREFECT_SERVER_ANALYTICS_ENABLED: False,
        }
    ):
        yield prefect_server
        # Ship the in-process flows' logs while the server is still up.
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=5)


def create_train_deployment(name: str) -> str:
    """A deployment of flows/train_ner.py named ``name`` (no work pool: runs stay queued).

    Registered through the client API with the flow's real parameter schema, enforced as in
    prefect.yaml, so a run with bad parameters would be refused. Returns its id.
    """
    from prefect.client.orchestration import get_client
    from prefect.utilities.callables import parameter_schema

    from flows.train_ner import train_ner

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow_from_name("train-ner")
        deployment_id = client.create_deployment(
            flow_id=flow_id,
            name=name,
            entrypoint="flows/train_ner.py:train_ner",
            parameters={"source": "label_studio"},
            parameter_openapi_schema=parameter_schema(train_ner).model_dump_for_openapi(),
            enforce_parameter_schema=True,
        )
    return str(deployment_id)


def flow_runs_of(deployment_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(
                id=DeploymentFilterId(any_=[uuid.UUID(deployment_id)])
            )
        )


# --- 1. the project -------------------------------------------------------------------------
def test_ensure_project_is_idempotent_and_adds_a_missing_label(ls_settings: Settings) -> None:
    # Given no project of that title, when brandloop connects twice
    first = LabelStudioProject.connect(ls_settings)
    second = LabelStudioProject.connect(ls_settings)
    # Then one project exists, with the generated config read back from the server
    assert first.project_id == second.project_id
    title = ls_settings.project_title
    same_title = [p for p in first.client.projects.list(title=title) if p.title == title]
    assert [p.id for p in same_title] == [first.project_id]
    assert first.client.projects.get(id=first.project_id).label_config == label_config(LABELS)
    assert (first.config.from_name, first.config.to_name, first.config.labels) == (
        "label",
        "text",
        LABELS,
    )

    # When the settings ask for one more label
    wider = ls_settings.model_copy(update={"labels": ("BRAND", "PRODUCT")})
    third = LabelStudioProject.connect(wider)
    # Then the same project gains it, and the old label stays
    assert third.project_id == first.project_id
    assert third.config.labels == ("BRAND", "PRODUCT")
    server_xml = third.client.projects.get(id=third.project_id).label_config
    assert server_xml == label_config(["BRAND", "PRODUCT"])


def test_a_hand_written_config_is_read_not_overwritten(ls_settings: Settings) -> None:
    from label_studio_sdk import LabelStudio

    client = LabelStudio(
        base_url=ls_settings.label_studio_url,
        api_key=ls_settings.require_secret("label_studio_api_key"),
    )
    title = unique("custom")
    custom = (
        '<View><Header value="Brands"/><Text name="post" value="$body"/>'
        '<Labels name="brand" toName="post"><Label value="BRAND"/></Labels></View>'
    )
    made = client.projects.create(title=title, label_config=custom)
    # When brandloop ensures that project
    project = LabelStudioProject.ensure(client, title, LABELS)
    # Then it uses the project's own names and text field
    assert project.project_id == made.id
    assert (project.config.from_name, project.config.to_name, project.config.text_key) == (
        "brand",
        "post",
        "body",
    )
    text = "my new Glossier balm"
    import_items(project, [(Post(id="c1", text=text), predictions_of([Post("c1", text)])[0])])
    (task,) = project.iter_tasks(fields="all")
    assert task["data"]["body"] == text
    assert task["predictions"][0]["result"][0]["from_name"] == "brand"
    # And a label missing from a hand-written config is an error, not a rewrite
    with pytest.raises(LabelStudioError, match="custom labelling config"):
        LabelStudioProject.ensure(client, title, ("BRAND", "PRODUCT"))
    assert client.projects.get(id=project.project_id).label_config == custom


def test_a_refused_key_fails_at_once_as_an_auth_error(ls_settings: Settings) -> None:
    # Given settings whose key the server does not know
    from pydantic import SecretStr

    from flows.context import PERMANENT_ERRORS
    from ner.errors import LabelStudioAuthError

    bad = ls_settings.model_copy(update={"label_studio_api_key": SecretStr("f" * 40)})
    # When a project is looked up, the server's 401 is the permanent kind, with its reason
    with pytest.raises(LabelStudioAuthError) as refused:
        LabelStudioProject.connect(bad)
    assert isinstance(refused.value, PERMANENT_ERRORS)  # tasks do not retry it
    text = str(refused.value)
    assert "HTTP 401: " in text and "NER_LABEL_STUDIO_API_KEY" in text
    assert "f" * 40 not in text and '"status_code"' not in text


def test_reading_labels_never_creates_a_missing_project(
    label_studio: LabelStudioService,
    prefect_api: PrefectService,
    ls_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given no project of the settings' title (a misspelled environment or project, say),
    # and one whose title is close
    from label_studio_sdk import LabelStudio

    title = ls_settings.project_title
    client = LabelStudio(base_url=label_studio.url, api_key=label_studio.token)
    client.projects.create(title=f"{title}-v2", label_config=label_config(LABELS))
    for key, value in label_studio.env().items():
        monkeypatch.setenv(key, value)
    # When training reads its labels from Label Studio
    state: Any = train_ner(
        source="label_studio",
        overrides={
            "storage_uri": ls_settings.storage_uri,
            "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
            "label_studio_project": title,
        },
        return_state=True,
    )
    # Then the run fails naming the project and the closest one (a trial's run created it
    # and said no_labels), the settings to check first, and how a new environment gets one
    assert state.is_failed(), state
    with pytest.raises(ProjectNotFoundError) as missing:
        state.result()
    said = str(missing.value)
    assert f"no Label Studio project is titled {title!r} (did you mean '{title}-v2'?" in said
    assert said.index("NER_LABEL_STUDIO_PROJECT") < said.index("brandloop labelstudio setup")
    # And no project was created, by the flow or by a direct read
    with pytest.raises(ProjectNotFoundError):
        LabelStudioProject.connect(ls_settings, create=False)
    assert [p.id for p in list_projects(client, title) if p.title == title] == []


def test_listing_projects_asks_for_no_page_past_the_end(label_studio: LabelStudioService) -> None:
    import httpx
    from label_studio_sdk import LabelStudio

    # Given a client that records every request, on a server with a few projects
    asked: list[str] = []
    recorder = httpx.Client(event_hooks={"request": [lambda r: asked.append(str(r.url))]})
    client = LabelStudio(
        base_url=label_studio.url, api_key=label_studio.token, httpx_client=recorder
    )
    client.projects.create(title=unique("listed"), label_config=label_config(LABELS))
    # When every project is listed
    asked.clear()
    projects = list_projects(client)
    # Then no page past the last was asked for (the SDK's pager asks for one, which Label
    # Studio answers with a 404 it logs as an ERROR with a traceback)
    assert projects
    assert len(asked) == -(-len(projects) // 100), asked


def test_listing_tasks_asks_for_no_page_past_the_end(
    label_studio: LabelStudioService, ls_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx
    from label_studio_sdk import LabelStudio

    from ner.labelstudio import client as client_module

    # Given a project of 5 tasks, listed 2 per page by a client that records its requests
    asked: list[str] = []
    recorder = httpx.Client(event_hooks={"request": [lambda r: asked.append(str(r.url))]})
    client = LabelStudio(
        base_url=label_studio.url, api_key=label_studio.token, httpx_client=recorder
    )
    project = LabelStudioProject.ensure(client, ls_settings.project_title, LABELS)
    import_posts(project, posts(5))
    monkeypatch.setattr(client_module, "PAGE_SIZE", 2)
    asked.clear()
    # When its post ids are listed
    found = project.post_ids()
    # Then every task came, in 3 pages, and no 4th page was asked for (Label Studio answers
    # it with a 404 it logs as an ERROR with a traceback: a trial counted 44 in a session)
    assert sorted(found) == [f"p{i}" for i in range(5)]
    pages = [url for url in asked if "/api/tasks" in url]
    assert len(pages) == 3, pages


# --- 2. idempotent import -------------------------------------------------------------------
def write_batch(storage: Storage, items: list[Post]) -> tuple[str, str]:
    storage.write_lines("posts/batch.jsonl", [json.dumps(p.to_dict()) for p in items])
    storage.write_lines(
        "predictions/batch.jsonl", [json.dumps(p.to_dict()) for p in predictions_of(items)]
    )
    return "posts/batch.jsonl", "predictions/batch.jsonl"


def test_import_three_times_gives_one_task_per_post_with_predictions(
    project: LabelStudioProject, storage: Storage
) -> None:
    # Given 7 posts (one of them twice in the file) and their predictions in storage
    items = posts(7)
    keys = write_batch(storage, [*items, items[2]])
    # When the import runs three times, in batches of 3
    runs = [import_predictions(project, storage, *keys, batch_size=3) for _ in range(3)]
    # Then only the first run imported anything, and every post is one task
    assert (runs[0].n_imported, runs[0].n_batches, runs[0].n_duplicates_in_input) == (
        7,
        3,
        1,
    )
    assert all(r.n_imported == 0 and r.n_skipped_existing == 8 for r in runs[1:])
    tasks = list(project.iter_tasks(fields="all"))
    assert Counter(str(t["data"]["post_id"]) for t in tasks) == Counter(p.id for p in items)
    # And each task carries its pre-annotation: model version, scores, code-point offsets
    for task in tasks:
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == "gazetteer@test"
        assert prediction["score"] == pytest.approx(0.87)
        (region,) = prediction["result"]
        value = region["value"]
        assert region["score"] == pytest.approx(0.87)
        assert task["data"]["text"][value["start"] : value["end"]] == value["text"] == "Glossier"


def test_posts_predicted_again_with_another_model_get_its_predictions_beside_the_old(
    project: LabelStudioProject, storage: Storage
) -> None:
    import dataclasses

    # Given 4 posts in the project with the predictions of one model (one post twice)
    items = posts(4)
    keys = write_batch(storage, [*items, items[1]])
    assert import_predictions(project, storage, *keys).n_imported == 4
    # When they are predicted again with another model and sent (a trial's `apply --reread
    # --destination label_studio` said "199 already there" and left the old predictions)
    newer = [dataclasses.replace(p, model_version="brand-ner/4") for p in predictions_of(items)]
    storage.write_lines(keys[1], [json.dumps(p.to_dict()) for p in [*newer, newer[1]]])
    again = import_predictions(project, storage, *keys)
    # Then no task is added, and each task holds both models' predictions, once each
    assert (again.n_imported, again.n_skipped_existing, again.n_predictions_added) == (0, 5, 4)
    for task in project.iter_tasks(fields="all"):
        versions = sorted(p["model_version"] for p in task["predictions"])
        assert versions == ["brand-ner/4", "gazetteer@test"], task["predictions"]
    # And a third send adds nothing (idempotent per task and model version)
    assert import_predictions(project, storage, *keys).n_predictions_added == 0


def test_import_crashing_after_a_batch_resumes_without_duplicates(
    project: LabelStudioProject, storage: Storage
) -> None:
    items = posts(8)
    keys = write_batch(storage, items)

    class Crash(Exception):
        pass

    def crash_after_first(number: int, task_ids: list[int]) -> None:
        assert len(task_ids) == 3
        raise Crash(f"killed after batch {number}")

    # Given an import that dies right after its first batch reached the server
    with pytest.raises(Crash):
        import_predictions(project, storage, *keys, batch_size=3, on_batch=crash_after_first)
    assert len(project.post_ids()) == 3
    # When it runs again
    again = import_predictions(project, storage, *keys, batch_size=3)
    # Then it imports the rest only: every post once, none missing
    assert (again.n_skipped_existing, again.n_imported) == (3, 5)
    found = project.post_ids()
    assert sorted(found) == sorted(p.id for p in items)
    assert all(len(task_ids) == 1 for task_ids in found.values())


def test_a_post_whose_id_the_project_holds_with_another_text_is_named_not_dropped(
    project: LabelStudioProject, storage: Storage
) -> None:
    # Given a project holding posts p0 and p1
    first = posts(2)
    import_predictions(project, storage, *write_batch(storage, first))
    task_of_p1 = project.post_ids()["p1"]
    # When a later batch (another source) brings p0 again, p1 with another text, and p2
    reused = Post(id="p1", text="another source's post 1: Glossier again")
    report = import_predictions(
        project, storage, *write_batch(storage, [first[0], reused, posts(3)[2]])
    )
    # Then p2 is imported, p0 is skipped as already there, and p1 is not sent but named,
    # with the task that holds the id
    assert (report.n_imported, report.n_skipped_existing, report.n_id_conflicts) == (1, 1, 1)
    (conflict,) = report.conflicts
    assert (conflict["post_id"], conflict["task_ids"]) == ("p1", task_of_p1)
    assert conflict["reason"].startswith("not sent: the project's task ")
    assert str(task_of_p1[0]) in conflict["reason"] and "another text" in conflict["reason"]
    # And the project still holds one task per id, p1 with the text it had
    tasks = {str(t["data"]["post_id"]): t for t in project.iter_tasks(fields="all")}
    assert sorted(tasks) == ["p0", "p1", "p2"]
    assert tasks["p1"]["data"]["text"] == first[1].text


def test_a_post_whose_id_a_hand_made_task_holds_is_checked_against_it(
    project: LabelStudioProject, storage: Storage
) -> None:
    # Given tasks made by hand in Label Studio, without data.post_id: one with data.id, one
    # with none (the pull reads them as posts "hm-1" and "<task id>")
    made = project.import_tasks([{"text": "hand made: Dior", "id": "hm-1"}, {"text": "by hand"}])
    by_task = str(made[1])
    # When apply sends posts of those ids, with other texts, and a new post
    batch = [
        Post(id="hm-1", text="a source's post hm-1: Glossier"),
        Post(id=by_task, text="a source's post with a task's id: Glossier"),
        posts(1)[0],
    ]
    report = import_predictions(project, storage, *write_batch(storage, batch))
    # Then the two are not sent but named (a trial's hand-made labels were dropped from
    # training as superseded by the posts imported over them), and the new one is sent
    assert (report.n_imported, report.n_id_conflicts) == (1, 2)
    assert sorted(c["post_id"] for c in report.conflicts) == sorted(["hm-1", by_task])


def test_a_post_the_project_holds_twice_is_named_in_the_warning(
    project: LabelStudioProject, storage: Storage, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a project holding post p0 in two tasks (imported twice by hand)
    first = posts(2)
    project.import_tasks(to_tasks([(first[0], None), (first[0], None)], project.config))
    # When apply imports again
    with caplog.at_level("WARNING", logger="ner"):
        import_predictions(project, storage, *write_batch(storage, first))
    # Then the warning names the project and the post (a trial read "project
    # <LabelStudioProject 1 'brandloop-dev'> already holds 1 posts more than once")
    said = [r.getMessage() for r in caplog.records if "more than once" in r.getMessage()]
    assert said == [
        f"Label Studio project {project.title!r} (id {project.project_id}) already holds 1 post "
        "more than once: p0 (the pull keeps one label per post and names the others superseded)"
    ]


# --- 3. incremental pulls -------------------------------------------------------------------
def test_incremental_pulls_keep_immutable_snapshots(
    project: LabelStudioProject, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = posts(5)
    tasks = import_posts(project, items)
    exported: list[bytes] = []
    real_export = project.export_json

    def spy(task_ids: Any = None) -> bytes:
        raw = real_export(task_ids)
        exported.append(raw)
        return raw

    monkeypatch.setattr(project, "export_json", spy)

    def pulled(key: str) -> set[str]:
        return {str(t["data"]["post_id"]) for t in json.loads(storage.read_bytes(key))}

    # Given two posts labelled, the first pull holds every annotated task
    a0 = annotate(project, tasks["p0"]["id"], [brand(items[0].text, "Glossier")])
    annotate(project, tasks["p1"]["id"], [])  # "no brand here" is a label too
    key1 = snapshot_export(project, storage, "s1")
    first = storage.read_bytes(key1)
    assert pulled(key1) == {"p0", "p1"}
    assert first == exported[-1]  # exactly the bytes Label Studio sent

    # When one more post is labelled, one label is corrected and one post is skipped
    annotate(project, tasks["p2"]["id"], [brand(items[2].text, "Glossier")])
    project.client.annotations.update(
        id=a0, result=[result(*brand(items[0].text, "Glossier balm").key[:2], "Glossier balm")]
    )
    annotate(project, tasks["p3"]["id"], [], was_cancelled=True)
    key2 = snapshot_export(project, storage, "s2")
    # Then the second pull holds only those tasks
    assert pulled(key2) == {"p0", "p2", "p3"}
    assert storage.read_bytes(key2) == exported[-1]

    # And a pull with nothing new writes an empty list
    key3 = snapshot_export(project, storage, "s3")
    assert json.loads(storage.read_bytes(key3)) == []
    # And a reused stamp never overwrites a snapshot
    key4 = snapshot_export(project, storage, "s1")
    assert key4 != key1 and json.loads(storage.read_bytes(key4)) == []
    assert storage.read_bytes(key1) == first
    assert snapshot_keys(storage, project.project_id) == [key1, key4, key2, key3]

    # And reading every snapshot gives each post's latest label, the skipped one left out
    collected = collect_annotations(
        storage, snapshot_keys(storage, project.project_id), LABELS, out_key="annotations/all.jsonl"
    )
    records = {
        a["post_id"]: a for a in map(json.loads, storage.iter_lines("annotations/all.jsonl"))
    }
    assert sorted(records) == ["p0", "p1", "p2"] and collected.n_annotations == 3
    assert [s["text"] for s in records["p0"]["spans"]] == ["Glossier balm"]
    assert records["p1"]["spans"] == []
    # (a skipped task is no bad record: counted as unlabelled, not rejected)
    assert collected.n_unlabelled == 1 and collected.n_rejected == 0, collected.rejected


# --- 4. offsets through the server ----------------------------------------------------------
ROUND_TRIP = {
    # a surrogate-pair emoji with a skin-tone modifier (two astral code points) first
    "emoji": ("🤳🏽 new Fenty Beauty gloss 😍 and Glossier", ["Fenty Beauty", "Glossier"]),
    # a ZWJ sequence and emoji right against the brand
    "zwj": ("👩‍🔬💄Rare Beauty💄 blush by 👩‍👩‍👧 NARS", ["Rare Beauty", "NARS"]),
    # CRLF line breaks and double spaces, inside a brand too
    "crlf": (
        "restock:\r\nNARS  blush\r\n\r\nand  Charlotte  Tilbury  again",
        ["NARS", "Charlotte  Tilbury"],
    ),
    "spaces": ("double  spaces  before  MAC  and after", ["MAC"]),
}


def test_spans_round_trip_exactly_through_the_server(
    ls_settings: Settings, storage: Storage
) -> None:
    expected = {
        post_id: [brand(text, needle) for needle in needles]
        for post_id, (text, needles) in ROUND_TRIP.items()
    }
    for editor in ("codepoints", "utf16"):
        # Given the posts in a project, labelled by a "human" whose editor counts offsets in
        # code points (Label Studio 1.23) or UTF-16 units with whitespace runs squashed in
        # value.text (older editors, label-studio issues 1347/3078)
        settings = ls_settings.model_copy(update={"label_studio_project": unique(editor)})
        project = LabelStudioProject.connect(settings)
        import_items(project, ((Post(id=k, text=t), None) for k, (t, _) in ROUND_TRIP.items()))
        tasks = tasks_by_post(project)
        sent: dict[str, list[dict[str, Any]]] = {}
        for post_id, spans in expected.items():
            text = ROUND_TRIP[post_id][0]
            # The server keeps the text exactly: CRLF, double spaces, emoji
            assert tasks[post_id]["data"]["text"] == text
            if editor == "codepoints":
                regions = [result(s.start, s.end, s.text) for s in spans]
            else:
                regions = [
                    result(
                        codepoint_to_utf16(text, s.start),
                        codepoint_to_utf16(text, s.end),
                        " ".join(s.text.split()),
                    )
                    for s in spans
                ]
            sent[post_id] = regions
            project.client.annotations.create(id=tasks[post_id]["id"], result=regions)

        # When the labels are pulled through the export API and parsed
        key = snapshot_export(project, storage, editor)
        raw = json.loads(storage.read_bytes(key))
        out_key = f"annotations/{editor}.jsonl"
        collected = collect_annotations(storage, [key], LABELS, out_key=out_key)

        # Then Label Studio stored and exported the regions exactly as they were sent
        for task in raw:
            post_id = task["data"]["post_id"]
            assert task["data"]["text"] == ROUND_TRIP[post_id][0]
            stored = [r["value"] for r in task["annotations"][0]["result"]]
            assert stored == [r["value"] for r in sent[post_id]]
        # And every span comes back with code-point offsets and its exact text
        assert collected.n_rejected == 0, collected.rejected
        records = {a["post_id"]: a for a in map(json.loads, storage.iter_lines(out_key))}
        assert sorted(records) == sorted(ROUND_TRIP)
        for post_id, record in records.items():
            text = ROUND_TRIP[post_id][0]
            got = [(s["start"], s["end"], s["text"]) for s in record["spans"]]
            assert got == [(s.start, s.end, s.text) for s in expected[post_id]]
            for start, end, span_text in got:
                assert text[start:end] == span_text
        # And only the UTF-16 / squashed-whitespace labels needed the offset guard
        if editor == "codepoints":
            assert collected.n_repaired == 0
        else:
            # after an astral character (4 spans) or with a squashed value.text (1 span)
            assert collected.n_repaired == 5


# --- 5. triggers against the real server ----------------------------------------------------
def test_webhooks_reach_the_receiver_and_trigger_once_at_the_gate(
    project: LabelStudioProject,
) -> None:
    items = posts(5)
    tasks = import_posts(project, items)
    calls: list[float] = []
    secret = secrets.token_hex(16)
    receiver = WebhookReceiver(
        lambda: calls.append(time.monotonic()),
        min_new_labels=3,
        secret=secret,
        project_id=project.project_id,
    )

    def received(action: str) -> int:
        return receiver.stats.received.get(action, 0)

    with running_receiver(receiver.app) as base_url:
        # Given the receiver registered as the project's webhook (twice: idempotent)
        url = base_url + WEBHOOK_PATH
        hook = register_webhook(project, url, secret=secret)
        assert register_webhook(project, url, secret=secret) == hook
        hooks = [h for h in project.client.webhooks.list(project=str(project.project_id))]
        assert [(h.id, h.url) for h in hooks] == [(hook, url)]
        assert dict(hooks[0].headers or {}) == {SECRET_HEADER: secret}
        try:
            # When two posts are labelled and one label is corrected
            a0 = annotate(project, tasks["p0"]["id"], [brand(items[0].text, "Glossier")])
            annotate(project, tasks["p1"]["id"], [])
            project.client.annotations.update(id=a0, result=[])
            eventually(
                lambda: received("ANNOTATION_CREATED") == 2 and received("ANNOTATION_UPDATED") == 1,
                "Label Studio posts the three events",
            )
            # Then nothing is triggered: two distinct labels, the gate is three
            assert calls == [] and receiver.counter.pending == 2
            assert receiver.stats.rejected == 0 and receiver.stats.ignored == 0

            # When a third post is labelled, the trigger is called once
            annotate(project, tasks["p2"]["id"], [])
            eventually(lambda: len(calls) == 1, "on_trigger called after the third label")
            # And a fourth label starts counting towards the next trigger only
            annotate(project, tasks["p3"]["id"], [])
            eventually(lambda: received("ANNOTATION_CREATED") == 4, "the fourth event")
            assert len(calls) == 1 and receiver.counter.pending == 1
            assert receiver.stats.triggers == 1 and receiver.stats.failures == 0
        finally:
            project.client.webhooks.delete(id=hook)


def test_polling_counts_new_labels_against_the_server(
    project: LabelStudioProject, storage: Storage
) -> None:
    items = posts(8)
    tasks = import_posts(project, items)
    calls: list[int] = []

    def trigger() -> None:
        calls.append(1)

    # Given no labels, nothing triggers
    assert poll_for_labels(project, storage, 3, on_trigger=trigger) == 0
    # When two posts are labelled and one skipped, still below the gate of three
    a0 = annotate(project, tasks["p0"]["id"], [brand(items[0].text, "Glossier")])
    annotate(project, tasks["p1"]["id"], [])
    annotate(project, tasks["p2"]["id"], [], was_cancelled=True)
    assert poll_for_labels(project, storage, 3, on_trigger=trigger) == 0
    assert calls == []
    # When a third label arrives, the poll triggers once and moves its checkpoint
    annotate(project, tasks["p3"]["id"], [])
    assert poll_for_labels(project, storage, 3, on_trigger=trigger) == 3
    assert calls == [1]
    assert poll_for_labels(project, storage, 1, on_trigger=trigger) == 0
    # And a corrected label is new again
    project.client.annotations.update(id=a0, result=[])
    assert poll_for_labels(project, storage, 1) == 1

    # wait_for_labels: nobody labels -> 0 after the timeout
    assert wait_for_labels(project, storage, 2, timeout=0.5, interval=0.2) == 0

    # while it waits, a human labels two posts -> it returns with them
    def human() -> None:
        for post_id in ("p4", "p5"):
            annotate(project, tasks[post_id]["id"], [])

    labeller = threading.Thread(target=human)
    labeller.start()
    try:
        assert wait_for_labels(project, storage, 2, timeout=60, interval=0.2) == 2
    finally:
        labeller.join()


# --- 6. the label-trigger service starts train-ner on Prefect ------------------------------
def test_trigger_service_starts_train_ner_from_label_studio_webhooks(
    label_studio: LabelStudioService,
    prefect_api: PrefectService,
    ls_settings: Settings,
    tmp_path: Path,
) -> None:
    # Given a train-ner deployment, and a project with tasks
    name = unique("label-trigger")
    deployment_id = create_train_deployment(name)
    project = LabelStudioProject.connect(ls_settings)
    items = posts(5)
    tasks = import_posts(project, items)
    port = free_port()
    url = f"http://127.0.0.1:{port}{WEBHOOK_PATH}"
    webhook_secret = secrets.token_hex(16)

    def registered() -> bool:
        try:
            listed = project.client.webhooks.list(project=str(project.project_id))
            return any(h.url == url for h in listed)
        except Exception:  # the check must not raise (the harness polls it)
            return False

    # When `python -m deployments.label_trigger serve` runs with --register-url
    service = ManagedServer(
        "label-trigger",
        [
            sys.executable,
            "-m",
            "deployments.label_trigger",
            "serve",
            "--env",
            "dev",
            "--deployment",
            name,
            "--port",
            str(port),
            "--register-url",
            url,
        ],
        workdir=tmp_path / "label-trigger",
        cwd=PROJECT_ROOT,
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        ready_check=registered,
        env={
            **prefect_api.env(),
            **label_studio.env(),
            "NER_LABEL_STUDIO_PROJECT": ls_settings.project_title,
            "NER_MIN_NEW_LABELS": "3",
            "NER_LABEL_STUDIO_WEBHOOK_SECRET": webhook_secret,
            "NER_STORAGE_URI": str(tmp_path / "storage"),
        },
        unset_env=("NER_LABEL_STUDIO_API_KEY_BLOCK", "NER_X_BEARER_TOKEN_BLOCK"),
        startup_timeout=90,
    )
    health = f"http://127.0.0.1:{port}/health"
    with service:
        # Then it registered the project's webhook with the shared secret
        (hook,) = [
            h for h in project.client.webhooks.list(project=str(project.project_id)) if h.url == url
        ]
        assert dict(hook.headers or {}) == {SECRET_HEADER: webhook_secret}
        # And a forged event without the secret is refused
        forged = {"action": "ANNOTATION_CREATED", "annotation": {"id": 999}}
        assert requests.post(url, json=forged, timeout=5).status_code == 401

        # When two posts are labelled: no run yet
        annotate(project, tasks["p0"]["id"], [brand(items[0].text, "Glossier")])
        annotate(project, tasks["p1"]["id"], [])
        eventually(lambda: requests.get(health, timeout=5).json()["pending"] == 2, "2 labels")
        assert requests.get(health, timeout=5).json()["triggers"] == 0
        assert flow_runs_of(deployment_id) == []

        # When a third is labelled: one train-ner run is queued on the Prefect server
        annotate(project, tasks["p2"]["id"], [])
        eventually(lambda: len(flow_runs_of(deployment_id)) == 1, "a train-ner flow run")
        (run,) = flow_runs_of(deployment_id)
        assert run.state is not None and run.state.type.value in ("SCHEDULED", "PENDING")
        assert run.parameters == {"source": "label_studio"}
        assert label_trigger.RUN_TAG in run.tags
        eventually(
            lambda: requests.get(health, timeout=5).json()["triggers"] == 1, "trigger counted"
        )
        # And a fourth label counts towards the next run only
        annotate(project, tasks["p3"]["id"], [])
        eventually(lambda: requests.get(health, timeout=5).json()["pending"] == 1, "4th label")
        assert requests.get(health, timeout=5).json()["triggers"] == 1
        assert len(flow_runs_of(deployment_id)) == 1
    # And no secret reached its log
    log_text = service.log_path.read_text(encoding="utf-8", errors="replace")
    assert "queued flow run" in log_text
    assert label_studio.token not in log_text and webhook_secret not in log_text


def test_trigger_poll_mode_starts_train_ner(
    label_studio: LabelStudioService,
    prefect_api: PrefectService,
    ls_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    name = unique("label-poll")
    deployment_id = create_train_deployment(name)
    project = LabelStudioProject.connect(ls_settings)
    items = posts(6)
    tasks = import_posts(project, items)
    for key, value in {
        **label_studio.env(),
        "NER_LABEL_STUDIO_PROJECT": ls_settings.project_title,
        "NER_MIN_NEW_LABELS": "2",
        "NER_STORAGE_URI": ls_settings.storage_uri,
    }.items():
        monkeypatch.setenv(key, value)
    for key in ("NER_LABEL_STUDIO_API_KEY_BLOCK", "NER_ENV"):
        monkeypatch.delenv(key, raising=False)
    argv = ["poll", "--env", "dev", "--deployment", name, "--interval", "0", "--max-polls", "1"]

    # Given one label (gate: two), a poll starts nothing
    annotate(project, tasks["p0"]["id"], [])
    assert label_trigger.main(argv) == 0
    assert flow_runs_of(deployment_id) == []
    # When a second label arrives, the next poll queues one train-ner run
    annotate(project, tasks["p1"]["id"], [])
    assert label_trigger.main(argv) == 0
    (run,) = flow_runs_of(deployment_id)
    assert run.parameters == {"source": "label_studio"}
    # And the poll after it finds nothing new
    assert label_trigger.main(argv) == 0
    assert len(flow_runs_of(deployment_id)) == 1
    # When two more labels arrive while that run has not started (no worker here): it will
    # read them when it starts, so no second run is queued
    annotate(project, tasks["p2"]["id"], [])
    annotate(project, tasks["p3"]["id"], [])
    assert label_trigger.queued_run(f"train-ner/{name}") == str(run.id)
    assert label_trigger.main(argv) == 0
    assert len(flow_runs_of(deployment_id)) == 1
    # When it has started (it may have read Label Studio already), new labels queue another
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Running(), force=True)
    annotate(project, tasks["p4"]["id"], [])
    annotate(project, tasks["p5"]["id"], [])
    assert label_trigger.main(argv) == 0
    assert len(flow_runs_of(deployment_id)) == 2


def test_a_trigger_for_a_deployment_that_does_not_exist_names_it(
    prefect_api: PrefectService,
) -> None:
    # Prefect's ObjectNotFound says nothing ("None" in the log): the trigger names the
    # deployment, the API it asked and what to do
    missing = f"train-ner/{unique('nowhere')}"
    with pytest.raises(ConfigError) as raised:
        label_trigger.start_training(missing)()
    message = str(raised.value)
    assert message.startswith(f"no deployment {missing!r} on {prefect_api.api_url}")
    assert "PREFECT_API_URL" in message and "brandloop deploy" in message


# --- 7. the feedback loop waits for people labelling in Label Studio ------------------------
class Human(threading.Thread):
    """Labels ``quota`` posts of each new batch of tasks with the demo's gold spans."""

    def __init__(self, project: LabelStudioProject, batch: int, quotas: list[int]) -> None:
        super().__init__(name="human", daemon=True)
        self.project = project
        self.batch = batch
        self.quotas = quotas
        self.gold = ReplayAnnotator.demo()
        self.labelled: list[str] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for number, quota in enumerate(self.quotas):
                tasks: list[dict[str, Any]] = []
                while len(tasks) < (number + 1) * self.batch:
                    if self.stop.wait(0.2):
                        return
                    tasks = sorted(self.project.iter_tasks(fields="all"), key=lambda t: t["id"])
                todo = tasks[number * self.batch : number * self.batch + quota]
                for exported in self.gold.annotate(todo):
                    self.project.client.annotations.create(
                        id=exported["id"], result=exported["annotations"][0]["result"]
                    )
                    self.labelled.append(str(exported["data"]["post_id"]))
        except BaseException as exc:  # reported by the test
            self.error = exc


def test_feedback_loop_waits_for_label_studio_then_trains_and_times_out_without_labels(
    label_studio: LabelStudioService,
    prefect_api: PrefectService,
    ls_settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given 60 demo posts, 20 a round, a gate of 10 new labels and a threshold nobody meets
    source = demo_slice(tmp_path, 60)
    for key, value in label_studio.env().items():
        monkeypatch.setenv(key, value)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    settings = {
        "storage_uri": ls_settings.storage_uri,
        "mlflow_tracking_uri": tracking,
        "mlflow_artifact_location": (tmp_path / "mlartifacts").as_uri(),
        "label_studio_project": ls_settings.project_title,
        "min_new_labels": 10,
        # the gold set is the hash split alone here (no newest-posts slice): this test is
        # about waiting for labels, and its counts assume that split
        "gold_recent_fraction": 0.0,
        "threshold": 0.99,
        "cold_start": "gazetteer",
        "train": {"max_epochs": 2},
        "seed": 7,
    }
    project = LabelStudioProject.connect(ls_settings)

    def loop(wait_timeout_s: float) -> Any:
        return feedback_loop(
            source="jsonl",
            input_uri=str(source),
            posts_per_round=20,
            annotator="label_studio",
            max_rounds=2,
            wait_timeout_s=wait_timeout_s,
            poll_interval_s=0.5,
            overrides=settings,
        )

    # And a human who labels 10 posts of each of the first two batches, and then stops
    human = Human(project, batch=20, quotas=[10, 10])
    human.start()
    try:
        # When the loop runs two rounds, sending posts through the API and waiting
        result = loop(wait_timeout_s=120)
    finally:
        human.stop.set()
        human.join(timeout=30)
    assert human.error is None, human.error
    first, second = [r.table_row() for r in result.rounds]
    # Then round 1 waited for the 10 labels and pulled them through the API: 2 went to
    # the frozen gold set, 8 to training, fewer than the 10 it takes to train
    assert first["posts_sent"] == 20 and first["new_labels"] == 10
    assert (first["labels"], first["n_gold"], first["n_train"]) == (10, 2, 8)
    assert first["status"] == "not_enough_labels"
    # And round 2 pulled its 10 new labels on top of round 1's (every snapshot is read),
    # trained a challenger on the same gold set and did not promote it below the threshold
    assert second["new_labels"] == 10 and second["labels"] == 20
    assert second["gold_hash"] == first["gold_hash"] and second["n_train"] == 16
    assert second["status"] == "not_promoted" and second["challenger_version"] == "1"
    assert result.status == "budget_spent"
    assert len(project.post_ids()) == 40 and len(human.labelled) == 20
    client = MlflowClient(tracking_uri=tracking, registry_uri=tracking)
    experiment = client.get_experiment_by_name("brand-ner-dev")
    assert experiment is not None
    runs_before = len(client.search_runs(experiment_ids=[experiment.experiment_id]))

    # When it runs again and nobody labels the next batch
    again = loop(wait_timeout_s=2)
    # Then it stops with a clear status after one round: nothing trained, nothing promoted
    assert again.status == TIMED_OUT
    (only,) = [r.table_row() for r in again.rounds]
    assert (only["status"], only["posts_sent"], only["new_labels"]) == (TIMED_OUT, 20, 0)
    assert len(project.post_ids()) == 60
    assert len(client.search_runs(experiment_ids=[experiment.experiment_id])) == runs_before
    assert [str(v.version) for v in client.search_model_versions("name='brand-ner-dev'")] == ["1"]
    assert client.get_registered_model("brand-ner-dev").aliases.get("champion") is None
    # And the Prefect API holds the loop's rounds as its artifact (the server is shared by
    # the session's tests: the newest one is this run's)
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as prefect_client:
        published = prefect_client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["feedback-loop-dev"]))
        )
    latest = max(published, key=lambda a: a.created)
    assert str(latest.data).startswith(f"# feedback-loop: {TIMED_OUT}")


def test_apply_with_a_labelling_budget_sends_only_the_chosen_posts(
    label_studio: LabelStudioService,
    prefect_api: PrefectService,
    ls_settings: Settings,
    storage: Storage,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flows.apply_ner import apply_ner

    # Given 40 demo posts, the pretrained base as the model and a budget of 8 posts a run
    lines = demo_posts_path().read_text(encoding="utf-8").splitlines()[:80]
    source = tmp_path / "posts.jsonl"
    source.write_text("\n".join(lines[:40]) + "\n", encoding="utf-8")
    for key, value in label_studio.env().items():
        monkeypatch.setenv(key, value)
    settings = {
        "storage_uri": ls_settings.storage_uri,
        "label_studio_project": ls_settings.project_title,
        "mlflow_tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "label_budget": 8,
    }
    project = LabelStudioProject.connect(ls_settings)

    def send() -> Any:
        return apply_ner(
            source="jsonl",
            input_uri=str(source),
            model="base",
            destination="label_studio",
            overrides=settings,
        ).delivered

    # When apply-ner sends them to Label Studio
    first = send()

    # Then every post was predicted, but only the 8 chosen ones became tasks
    assert first.n_predictions == 40 and first.selection.n_selected == 8
    assert first.selection.selection_strategy == "uncertainty"
    record = storage.read_json(first.selection.selection_key)
    ids = {str(t["data"]["post_id"]) for t in project.iter_tasks(fields="all")}
    assert ids == set(record["post_ids"]) and len(ids) == 8
    assert first.imported.n_imported == 8
    # And they are the most uncertain posts of the batch under that model
    assert min(record["uncertainty"].values()) > 0.0

    # When 40 more posts arrive
    with source.open("a", encoding="utf-8") as more:
        more.write("\n".join(lines[40:]) + "\n")
    second = send()
    # Then 8 of the new posts are chosen, and no post is sent to the annotators twice
    again = storage.read_json(second.selection.selection_key)
    assert second.n_predictions == 40 and len(again["post_ids"]) == 8
    assert not set(again["post_ids"]) & set(record["post_ids"])
    tasks = list(project.iter_tasks(fields="all"))
    assert len(tasks) == 16
    assert Counter(str(t["data"]["post_id"]) for t in tasks).most_common(1)[0][1] == 1
