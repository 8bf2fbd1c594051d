"""Forgetting posts deleted upstream, end to end: local storage after a whole round (apply,
replayed labels, the train-ner pull), the ``brandloop forget`` command on a real Prefect
server, and the posts' tasks on a real Label Studio server."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from apps import cli
from flows.apply_ner import apply_ner
from flows.context import RunContext
from flows.feedback_loop import replay_labels
from flows.forget import forget_posts
from flows.train_ner import prepare_gold, pull_annotations
from ner import canary, forget, layout, purge
from ner.datasets import load_gold_set, read_annotations
from ner.evaluation import evaluate
from ner.labelstudio.client import LabelStudioProject
from ner.labelstudio.exchange import collect_annotations, import_predictions, snapshot_export
from ner.records import count_lines, read_posts, write_records
from ner.registry import Registry
from ner.replay import demo_gold_path
from ner.settings import Settings, load_settings
from ner.storage import Storage, open_storage
from ner.types import Post, Prediction, Span
from tests.support.flows import demo_slice
from tests.support.servers import GcsService, LabelStudioService, MlflowService, PrefectService

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_POSTS = 60


def holders(storage: Storage, post_ids: set[str]) -> dict[str, list[str]]:
    """Every stored object (forget records aside) whose JSON names one of ``post_ids``."""
    found: dict[str, list[str]] = {}
    for key in storage.list():
        if key.startswith(f"{layout.FORGOTTEN}/"):
            continue
        text = storage.read_text(key)
        hits = sorted(p for p in post_ids if json.dumps(p) in text)
        if hits:
            found[key] = hits
    return found


def pull_and_split(ctx: RunContext, stamp: str) -> tuple[set[str], set[str]]:
    """train-ner's pull and split: (pulled post ids, training pool post ids)."""
    pulled = pull_annotations.fn(ctx, "storage", None, stamp)
    splits = prepare_gold.fn(ctx, pulled.annotations_key, stamp)
    storage = ctx.storage
    ids = {a.post_id for a in read_annotations(storage, pulled.annotations_key)}
    pool = {a.post_id for a in read_annotations(storage, splits.train_key)}
    return ids, pool


def test_forget_removes_posts_everywhere_in_storage_and_keeps_them_out(
    prefect: PrefectService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "storage"
    monkeypatch.setenv("NER_STORAGE_URI", str(store))
    monkeypatch.setenv("NER_GOLD_FRACTION", "0.3")
    monkeypatch.setenv("NER_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    settings = load_settings()
    ctx = RunContext.open(settings)
    storage = ctx.storage
    # Given a round: apply-ner on demo posts, labels replayed, train-ner's pull and split
    inbox = demo_slice(tmp_path, N_POSTS)
    applied = apply_ner(source="jsonl", input_uri=str(inbox), model="gazetteer")
    (tasks_key,) = applied.tasks_keys()
    replay_labels.fn(ctx, tasks_key, str(demo_gold_path()), "replay-1")
    pulled, pool = pull_and_split(ctx, "pull-1")
    loaded = load_gold_set(storage)
    assert loaded is not None
    gold_before = set(loaded[0].post_ids)
    frozen_canary = canary.load_canary_set(storage, loaded[0].name)
    assert frozen_canary is not None and frozen_canary[0].post_ids  # apply stored dated posts
    canary_before = set(frozen_canary[0].post_ids)
    # four labelled posts: one of the gold set, two of the training pool, one canary post
    forgotten = {sorted(gold_before)[0], *sorted(pool)[:2], sorted(canary_before)[0]}
    assert len(forgotten) == 4
    posts_key = applied.delivered.posts_key if applied.delivered else ""
    before = {
        "posts": count_lines(storage, posts_key),
        "tasks": len(storage.read_json(tasks_key)),
        "annotations": len(pulled),
        "gold": len(gold_before),
        "pool": len(pool),
        "canary": len(canary_before),
    }
    assert set(holders(storage, forgotten)) >= {posts_key, tasks_key}

    # When an operator forgets them with the command line (storage only: no Label Studio)
    args = ["forget", *sorted(forgotten), "--reason", "deleted on X", "--by", "ops:test"]
    result = CliRunner().invoke(cli.app, [*args, "--no-label-studio"])
    assert result.exit_code == 0, result.output + result.stderr
    # (and says the gold set was re-hashed: a trial learnt it from the next train's hash)
    said = " ".join(result.output.split())
    gold_key = layout.gold_set(loaded[0].name)
    assert f"re-hashed {gold_key}: {before['gold'] - 1} posts, hash " in said
    assert "models are scored on it again at the next train run" in said

    # Then no stored object but the forget record names them any more
    assert holders(storage, forgotten) == {}
    after = {
        "posts": count_lines(storage, posts_key),
        "tasks": len(storage.read_json(tasks_key)),
        "annotations": count_lines(storage, layout.pulled_annotations("pull-1")),
        "gold": len(load_gold_set(storage)[0].post_ids),  # type: ignore[index]
        "pool": count_lines(storage, layout.training_pool("pull-1")),
        "canary": len(canary.load_canary_set(storage, loaded[0].name)[0].post_ids),  # type: ignore[index]
    }
    assert after == {
        "posts": before["posts"] - 4,
        "tasks": before["tasks"] - 4,
        "annotations": before["annotations"] - 4,
        "gold": before["gold"] - 1,
        "pool": before["pool"] - 2,
        "canary": before["canary"] - 1,
    }, (before, after)
    print(f"\nforget on local storage: before {before}, after {after}")
    # And the audit says who, when, why, how many and which keys were rewritten
    (record_key,) = storage.list(layout.FORGOTTEN)
    audit = storage.read_json(record_key)
    assert (audit["by"], audit["reason"], audit["status"]) == ("ops:test", "deleted on X", "done")
    assert audit["n_posts"] == 4 and sorted(audit["post_ids"]) == sorted(forgotten)
    assert audit["at"].endswith("Z") and audit["deleted_tasks"] == {}
    assert {posts_key, tasks_key, layout.replay_export("replay-1")} <= set(audit["rewritten"])
    # every frozen object it rewrote is named: gold and canary, annotations and record
    name = loaded[0].name
    assert {
        layout.gold_set(name),
        layout.gold_set_annotations(name),
        layout.canary_set(name),
        layout.canary_set_annotations(name),
    } <= set(audit["rewritten"])

    # When the posts come again (a source re-sends them, a late export still holds them)
    again = demo_slice(tmp_path, N_POSTS, name="again.jsonl")
    first_read = apply_ner(source="jsonl", input_uri=str(again), model="gazetteer")
    assert (first_read.fetched.n_posts, first_read.fetched.n_fetched_before) == (0, N_POSTS - 4)
    assert first_read.fetched.n_forgotten == 4  # (a new file leaves out posts fetched before)
    reapplied = apply_ner(source="jsonl", input_uri=str(again), model="gazetteer", reread=True)
    assert (reapplied.fetched.n_posts, reapplied.fetched.n_forgotten) == (N_POSTS - 4, 4)
    storage.write_json("exports/late-replay.json", _gold_tasks_of(forgotten))
    ids, pool_again = pull_and_split(ctx, "pull-2")
    # Then a following pull and split do not bring them back
    assert ids.isdisjoint(forgotten) and pool_again.isdisjoint(forgotten)
    assert forgotten.isdisjoint(load_gold_set(storage)[0].post_ids)  # type: ignore[index]
    late = holders(storage, forgotten)
    assert set(late) == {"exports/late-replay.json"}  # only the tombstoned late snapshot

    # When ids that nothing holds are forgotten (a trial passed Label Studio task ids)
    args = ["forget", "5", "6", "--reason", "typo", "--by", "ops:test", "--no-label-studio"]
    result = CliRunner().invoke(cli.app, args)
    # Then the run says so, and what such ids might be, instead of a silent success
    assert result.exit_code == 0, result.output + result.stderr
    said = " ".join(result.output.split())
    assert "nothing held these 2 ids: '5', '6' (not post ids:" in said
    assert "forgot 2 posts" not in said  # the summary does not claim what the warning denies
    # And beside a post that is held, only the unmatched id is named (a trial read "forgot 2")
    kept = sorted(gold_before - forgotten)[0]
    args = ["forget", kept, "7", "--reason", "typo", "--by", "ops:test", "--no-label-studio"]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output + result.stderr
    said = " ".join(result.output.split())
    assert "forgot 1 post:" in said and "nothing held this id: '7' (not a post id" in said
    assert "unmatched 7" in said and holders(storage, {kept}) == {}
    assert "ids_given 2" in said and "forgotten 1" in said  # a trial read "n_posts 6"
    # And an id forgotten before is said to be that, not a wrong id (trial AA)
    args = ["forget", "5", "--reason", "again", "--by", "ops:test", "--no-label-studio"]
    again = " ".join(CliRunner().invoke(cli.app, args).output.split())
    assert "forgotten before, nothing held this id: '5' (an earlier forget's tombstone)" in again
    assert "forgotten_before 5" in again and "unmatched" not in again  # not a wrong id (AE)


def _gold_tasks_of(post_ids: set[str]) -> list[object]:
    gold = json.loads(demo_gold_path().read_text(encoding="utf-8"))
    return [task for task in gold if str(task["data"]["post_id"]) in post_ids]


# --- the real Label Studio server ------------------------------------------------------------
def _posts(n: int) -> list[Post]:
    return [Post(id=f"fg-{i}", text=f"post {i}: new Glossier balm") for i in range(n)]


def _predictions(items: list[Post]) -> list[Prediction]:
    return [
        Prediction(
            post_id=p.id,
            spans=(
                Span(p.text.index("Glossier"), p.text.index("Glossier") + 8, "BRAND", "Glossier"),
            ),
            model_version="gazetteer@test",
        )
        for p in items
    ]


@pytest.fixture
def ls_settings(
    label_studio: LabelStudioService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for key, value in label_studio.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NER_LABEL_STUDIO_PROJECT", f"brandloop-forget-{uuid.uuid4().hex[:8]}")
    monkeypatch.setenv("NER_STORAGE_URI", str(tmp_path / "storage"))
    monkeypatch.setenv("NER_MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return load_settings()


def test_forget_deletes_the_posts_tasks_on_label_studio_and_keeps_the_others(
    prefect: PrefectService, ls_settings: Settings
) -> None:
    ctx = RunContext.open(ls_settings)
    storage, project = ctx.storage, LabelStudioProject.connect(ls_settings)
    items = _posts(8)
    write_records(storage, "posts/b.jsonl", items)
    write_records(storage, "predictions/b.jsonl", _predictions(items))
    import_predictions(project, storage, "posts/b.jsonl", "predictions/b.jsonl")
    tasks = project.post_ids()
    # two annotated tasks (one of a post to forget), pulled into a snapshot
    for post_id in ("fg-0", "fg-5"):
        (task_id,) = tasks[post_id]
        text = f"post {post_id[3:]}: new Glossier balm"
        start = text.index("Glossier")
        value = {"start": start, "end": start + 8, "text": "Glossier", "labels": ["BRAND"]}
        project.client.annotations.create(
            id=task_id,
            result=[{"from_name": "label", "to_name": "text", "type": "labels", "value": value}],
        )
    snapshot = snapshot_export(project, storage, "pull-1")
    forgotten = {"fg-0", "fg-1", "fg-2"}
    before = {"tasks": len(tasks), "posts": count_lines(storage, "posts/b.jsonl")}

    result = forget_posts(post_ids=sorted(forgotten), reason="deleted on X", by="ops:test")

    remaining = project.post_ids()
    after = {"tasks": len(remaining), "posts": count_lines(storage, "posts/b.jsonl")}
    print(f"\nforget on Label Studio: before {before}, after {after}")
    assert set(remaining) == {p.id for p in items} - forgotten
    assert after == {"tasks": before["tasks"] - 3, "posts": before["posts"] - 3}
    assert result.n_tasks_deleted == 3 and result.n_posts == 3
    audit = storage.read_json(result.record_key)
    assert {p: len(ids) for p, ids in audit["deleted_tasks"].items()} == dict.fromkeys(forgotten, 1)
    assert snapshot in audit["rewritten"] and holders(storage, forgotten) == {}
    # a later pull exports the remaining annotation only
    snapshot_export(project, storage, "pull-2")
    collected = collect_annotations(storage, None, ["BRAND"], out_key="annotations/p2.jsonl")
    assert collected.n_annotations == 1
    # forgetting again is harmless: nothing left to delete or rewrite
    again = forget_posts(post_ids=sorted(forgotten), reason="deleted on X", by="ops:test")
    assert (again.n_tasks_deleted, again.n_records_removed) == (0, 0)


# --- the MLflow server: evaluation error lists --------------------------------------------
def _error_list(registry: Registry, run_id: str, name: str, tmp: Path) -> list[dict[str, object]]:
    local = registry.client.download_artifacts(run_id, f"evaluation/{name}", str(tmp))
    return json.loads(Path(local).read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_forget_rewrites_the_mlflow_error_lists_that_name_the_posts(
    prefect: PrefectService,
    mlflow_server: MlflowService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    experiment = f"brand-ner-forget-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("NER_MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("NER_EXPERIMENT_NAME", experiment)
    monkeypatch.setenv("NER_REGISTERED_MODEL_NAME", experiment)
    monkeypatch.setenv("NER_STORAGE_URI", str(tmp_path / "storage"))
    registry = Registry(mlflow_server.url, model_name=experiment, experiment_name=experiment)
    brand = Span(0, 6, "BRAND", "Glossy")
    gold = {"p1": (brand,), "p2": (brand,), "p3": (brand,)}
    missed_all = evaluate(gold, {})  # an error item for each of p1, p2, p3
    missed_p3 = evaluate({"p3": (brand,)}, {})
    # Given three evaluations: of p1-p3 (gold and canary lists), of p3 alone, and a deleted one
    kept = registry.log_evaluation(
        missed_all, model_version="1", role="champion", gold_hash="h1", tags={}
    )
    registry.log_evaluation(
        missed_all, model_version="1", role="champion", gold_hash="h1", tags={},
        run_id=kept, set_name="canary",
    )  # fmt: skip
    untouched = registry.log_evaluation(
        missed_p3, model_version="2", role="challenger", gold_hash="h2", tags={}
    )
    deleted = registry.log_evaluation(
        missed_all, model_version="3", role="challenger", gold_hash="h1", tags={}
    )
    registry.client.delete_run(deleted)
    # and a registered version whose card names p1 among the spans its training widened
    card = (
        "# card\n\n- spans trained widened to whole tokens: 2\n"
        "  - p1: span [0, 6) 'Glossy' BRAND cuts token(s) 'Glossybrow'\n"
        "  - p3: span [0, 6) 'Glossy' BRAND cuts token(s) 'Glossyskin'\n- training run: x"
    )
    registry.client.create_registered_model(experiment)
    registry.client.create_model_version(
        experiment, source=f"runs:/{kept}/evaluation", run_id=kept, description=card
    )

    # When p1 and p2 are forgotten
    result = forget_posts(post_ids=["p1", "p2"], reason="deleted on X", label_studio=False)

    # Then every list that named them is rewritten without them, the deleted run's too
    for run_id, name in ((kept, "gold_errors.json"), (kept, "canary_errors.json")):
        assert [e["post_id"] for e in _error_list(registry, run_id, name, tmp_path / run_id)] == [
            "p3"
        ]
    assert _error_list(registry, deleted, "gold_errors.json", tmp_path / "d") == [
        e for e in missed_all.errors_list() if e["post_id"] == "p3"
    ]
    # the list without them is left as it was, and the audit names each rewritten list
    assert _error_list(registry, untouched, "gold_errors.json", tmp_path / "u") == (
        missed_p3.errors_list()
    )
    expected = {
        f"mlflow:{kept}/evaluation/gold_errors.json": 2,
        f"mlflow:{kept}/evaluation/canary_errors.json": 2,
        f"mlflow:{deleted}/evaluation/gold_errors.json": 2,
        f"mlflow:models/{experiment}/1": 1,
    }
    assert result.rewritten == expected and result.n_records_removed == 7
    # and the card no longer names p1, the rest of it as it was
    described = registry.client.get_model_version(experiment, "1").description
    assert described == card.replace(
        "  - p1: span [0, 6) 'Glossy' BRAND cuts token(s) 'Glossybrow'\n", ""
    ).replace("whole tokens: 2", "whole tokens: 1")  # the count follows
    audit = open_storage(str(tmp_path / "storage"), "dev").read_json(result.record_key)
    assert audit["rewritten"] == expected
    # and posts held only in MLflow count as forgotten, not as ids nothing held
    assert result.unmatched == [] and audit["held"] == ["p1", "p2"]
    # and forgetting them again rewrites nothing, and says nothing held them now
    again = forget_posts(post_ids=["p1", "p2"], reason="deleted on X", label_studio=False)
    assert again.rewritten == {} and again.n_records_removed == 0
    assert (again.forgotten_before, again.unmatched) == (["p1", "p2"], [])


# --- a GCS bucket (the emulator) -------------------------------------------------------------
def test_forget_on_a_gcs_bucket_rewrites_only_the_objects_holding_the_posts(
    gcs_emulator: GcsService, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in gcs_emulator.env().items():
        monkeypatch.setenv(key, value)
    bucket = f"forget-{uuid.uuid4().hex[:10]}"
    gcs_emulator.client().create_bucket(bucket)
    storage = open_storage(f"gs://{bucket}/loop", "dev", gcs_timeout_s=30)
    items = _posts(6)
    write_records(storage, "posts/a.jsonl", items[:3])
    write_records(storage, "posts/b.jsonl", items[3:])
    write_records(storage, "predictions/a.jsonl", _predictions(items[:3]))
    storage.write_json("tasks/a.json", [{"data": {"post_id": p.id}} for p in items[:3]])
    forget.record(storage, ["fg-1"], by="ops:test", reason="deleted on X", stamp="s1")
    # readers honour the tombstone at once, before anything is rewritten
    assert [p.id for p in read_posts(storage, "posts/a.jsonl")] == ["fg-0", "fg-2"]
    report = purge.purge_storage(storage, ["fg-1"])
    assert report.rewritten == {"posts/a.jsonl": 1, "predictions/a.jsonl": 1, "tasks/a.json": 1}
    assert holders(storage, {"fg-1"}) == {}
    assert count_lines(storage, "posts/b.jsonl") == 3


def test_forget_with_set_env_cleans_that_environments_deployment_bucket(
    prefect: PrefectService, gcs_emulator: GcsService, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given staging's deployments on a bucket (prefect.yaml: BRANDLOOP_STAGING_STORAGE_URI)
    # and no NER_STORAGE_URI (a trial's forget --set env=staging cleaned the local default)
    for key, value in gcs_emulator.env().items():
        monkeypatch.setenv(key, value)
    bucket = f"forget-env-{uuid.uuid4().hex[:8]}"
    gcs_emulator.client().create_bucket(bucket)
    monkeypatch.setenv("BRANDLOOP_STAGING_STORAGE_URI", f"gs://{bucket}")
    monkeypatch.delenv("NER_STORAGE_URI", raising=False)
    storage = open_storage(f"gs://{bucket}", "staging", gcs_timeout_s=30)
    write_records(storage, "posts/a.jsonl", _posts(3))
    # When a post is forgotten there with the command line
    args = ["forget", "fg-1", "--reason", "deleted on X", "--no-label-studio"]
    result = CliRunner().invoke(cli.app, [*args, "--set", "env=staging"])
    # Then the bucket is cleaned and the output names the storage it used
    assert result.exit_code == 0, result.output + result.stderr
    said = " ".join((result.output + result.stderr).split())
    assert f"staging's storage: gs://{bucket} (BRANDLOOP_STAGING_STORAGE_URI)" in said
    assert f"recorded in gs://{bucket}/staging/forgotten/" in said and "unmatched" not in said
    assert holders(storage, {"fg-1"}) == {} and count_lines(storage, "posts/a.jsonl") == 2
