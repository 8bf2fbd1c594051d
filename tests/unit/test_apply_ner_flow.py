"""Helpers of the ``apply-ner`` flow (flows/apply_ner.py) that are pure logic."""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest

from flows.apply_ner import Fetched, fetch_posts, import_lease, no_posts_hint
from ner import sources
from ner.errors import StorageError
from ner.records import read_posts
from ner.settings import load_settings
from ner.storage import LocalStorage


def test_a_jsonl_file_read_before_names_its_checkpoint(tmp_path: Path) -> None:
    # Given a store (a trial re-ran apply on the same file and saw only "no new posts")
    storage = LocalStorage(tmp_path / "store")
    ctx = cast(Any, SimpleNamespace(storage=storage))
    storage.write_lines("inbox/posts.jsonl", ['{"id": "1", "text": "Fenty gloss"}'])
    sources.fetch_jsonl_to_storage(storage, "inbox/posts.jsonl", "posts/s0.jsonl", 5)
    # Then the JSONL source says which checkpoint to delete to predict the file again
    nothing = Fetched(posts_key=None, n_posts=0, n_rejected=0, source="jsonl")
    hint = no_posts_hint(ctx, "jsonl", "inbox/posts.jsonl", nothing)
    checkpoint = storage.uri(sources.jsonl_checkpoint_key(storage, "inbox/posts.jsonl"))
    assert hint == (
        f"every line of inbox/posts.jsonl was read by an earlier run (checkpoint {checkpoint}); "
        "to predict it again, with another model say: `brandloop apply --reread` "
        "(the flow's reread=True)"
    )
    assert checkpoint.startswith(storage.uri("checkpoints/jsonl-"))
    # And the X source says it has nothing newer
    x_none = nothing.model_copy(update={"source": "x"})
    said = no_posts_hint(ctx, "x", None, x_none)
    assert said == "the source has no post newer than the last one fetched"


def test_a_jsonl_file_with_no_post_says_whether_it_is_empty_or_all_rejected(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path / "store")
    ctx = cast(Any, SimpleNamespace(storage=storage, settings=load_settings()))
    # Given an empty file (a trial read "every line was read by an earlier run" on its 1st run)
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    fetched = fetch_posts.fn(ctx, "jsonl", str(tmp_path / "empty.jsonl"), [], 10, "s1")
    said = no_posts_hint(ctx, "jsonl", str(tmp_path / "empty.jsonl"), fetched)
    assert said.endswith("empty.jsonl holds no post: it is empty, or holds only blank lines")
    # Given a JSON array, not JSONL: the rejected line and where its reason is are named
    (array := tmp_path / "posts.json").write_text('[{"id": "1", "text": "Fenty"}]\n')
    fetched = fetch_posts.fn(ctx, "jsonl", str(array), [], 10, "s2")
    assert (fetched.posts_key, fetched.rejected_key) == (None, "posts/s2.rejected.json")
    said = no_posts_hint(ctx, "jsonl", str(array), fetched)
    report = storage.uri("posts/s2.rejected.json")
    assert said == (
        f"no line of {array} read now is a new post: 1 line rejected, each with its reason "
        f"in {report}; fix them and run again"
    )
    assert storage.read_json("posts/s2.rejected.json")[0]["reason"].startswith("a JSON array")
    # Given a file read before, then rewritten with the same posts in another order
    (moved := tmp_path / "moved.jsonl").write_text(
        '{"id": "a", "text": "A"}\n{"id": "b", "text": "B"}\n'
    )
    assert fetch_posts.fn(ctx, "jsonl", str(moved), [], 10, "s3").n_posts == 2
    moved.write_text('{"id": "b", "text": "B"}\n{"id": "a", "text": "A"}\n')
    fetched = fetch_posts.fn(ctx, "jsonl", str(moved), [], 10, "s4")
    assert (fetched.posts_key, fetched.n_fetched_before) == (None, 2)
    said = no_posts_hint(ctx, "jsonl", str(moved), fetched)
    assert said == f"no line of {moved} read now is a new post: 2 posts fetched before " + (
        "with the same id and text (from another file, or an earlier version of this one; a "
        "post fixed in place is fetched again); to predict them again, with another model "
        "say: `brandloop apply --reread` (the flow's reread=True)"
    )
    # Given a copy of it, with one new post (a trial's copy re-sent every post to storage)
    copy = tmp_path / "copy.jsonl"
    lines = ['{"id": "b", "text": "B"}', '{"id": "a", "text": "A2"}', '{"id": "c", "text": "C"}']
    copy.write_text("\n".join(lines) + "\n")
    fetched = fetch_posts.fn(ctx, "jsonl", str(copy), [], 10, "s5")
    # Then only the edited post and the new one are fetched, and a reread fetches them all
    assert (fetched.n_posts, fetched.n_fetched_before) == (2, 1)
    assert [p.id for p in read_posts(storage, "posts/s5.jsonl")] == ["a", "c"]
    again = fetch_posts.fn(ctx, "jsonl", str(copy), [], 10, "s6", reread=True)
    assert (again.n_posts, again.n_fetched_before) == (3, 0)
    # And the first file, changed in place, does not send its unchanged post "a" again,
    # though "a" was last fetched with another text (a trial saw its old text re-sent)
    moved.write_text('{"id": "b", "text": "B2"}\n{"id": "a", "text": "A"}\n')
    fixed = fetch_posts.fn(ctx, "jsonl", str(moved), [], 10, "s7")
    assert (fixed.n_posts, fixed.n_fetched_before) == (1, 1)
    assert [p.text for p in read_posts(storage, "posts/s7.jsonl")] == ["B2"]
    # And a dump read one post a run leaves out what other files sent in its later runs too
    dump = tmp_path / "dump.jsonl"
    rows = [{"id": i, "text": i.upper()} for i in ("d", "e", "c", "f")]
    dump.write_text("".join(json.dumps(row) + "\n" for row in rows))
    runs = [fetch_posts.fn(ctx, "jsonl", str(dump), [], 1, f"s{n}") for n in (8, 9, 10)]
    assert [(r.n_posts, r.n_fetched_before) for r in runs] == [(1, 0), (1, 1), (1, 0)]
    assert [p.id for p in read_posts(storage, "posts/s9.jsonl")] == ["e"]  # not "c"


def test_forgotten_posts_do_not_count_towards_max_posts_and_every_cause_is_named(
    tmp_path: Path,
) -> None:
    from ner import forget

    storage = LocalStorage(tmp_path / "store")
    ctx = cast(Any, SimpleNamespace(storage=storage, settings=load_settings()))
    # Given a file of four posts, two of them forgotten (deleted upstream)
    src = tmp_path / "posts.jsonl"
    src.write_text("".join(json.dumps({"id": i, "text": i.upper()}) + "\n" for i in "abcd"))
    forget.record(storage, ["a", "b"], by="ops", reason="deleted on X", stamp="f1")
    # When two posts are asked for
    fetched = fetch_posts.fn(ctx, "jsonl", str(src), [], 2, "s1")
    # Then the two others come (a trial's max_posts 100 sent 98: forgotten ones counted)
    assert (fetched.n_posts, fetched.n_forgotten) == (2, 2)
    assert [p.id for p in read_posts(storage, "posts/s1.jsonl")] == ["c", "d"]
    # And a copy holding them all, plus a bad line, names every reason nothing came
    copy = tmp_path / "copy.jsonl"
    copy.write_text(src.read_text() + "not json\n")
    again = fetch_posts.fn(ctx, "jsonl", str(copy), [], 10, "s2")
    assert (again.posts_key, again.n_forgotten, again.n_fetched_before) == (None, 2, 2)
    said = no_posts_hint(ctx, "jsonl", str(copy), again)
    assert said.startswith(f"no line of {copy} read now is a new post: 2 posts forgotten before;")
    assert "; 1 line rejected, each with its reason in " in said
    assert "; 2 posts fetched before with the same id and text" in said


def test_a_rejected_line_left_unfixed_is_named_again_until_it_is_fixed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = LocalStorage(tmp_path / "store")
    ctx = cast(Any, SimpleNamespace(storage=storage, settings=load_settings()))
    # Given a file whose 2nd line is rejected on the first read
    src = tmp_path / "posts.jsonl"
    src.write_text('{"id": "a", "text": "A"}\nnot json\n')
    first = fetch_posts.fn(ctx, "jsonl", str(src), [], 10, "s1")
    assert (first.n_posts, first.rejected_key) == (1, "posts/s1.rejected.json")
    report = storage.uri("posts/s1.rejected.json")
    # When it is read again unchanged (a trial saw only "every line was read")
    caplog.set_level(logging.WARNING, logger="ner.sources")
    caplog.clear()
    again = fetch_posts.fn(ctx, "jsonl", str(src), [], 10, "s2")
    # (named once, by the "no new posts" line below: the fetch does not warn of it too)
    assert [r.getMessage() for r in caplog.records] == []
    # (counted apart from this run's rejections: a trial read "n_rejected 0" beside the
    # warning)
    assert (again.n_rejected, again.n_rejected_before) == (0, 1)
    said = no_posts_hint(ctx, "jsonl", str(src), again)
    # Then the line and its report are named
    assert said == (
        f"no line of {src} read now is a new post: 1 line rejected by an earlier run and "
        f"unchanged since (line 2; the reasons in {report}); fix it and run again"
    )
    # And a run that reads an appended post warns of it too
    with src.open("a") as out:
        out.write('{"id": "c", "text": "C"}\n')
    caplog.clear()
    assert fetch_posts.fn(ctx, "jsonl", str(src), [], 10, "s3").n_posts == 1
    warned = [r.getMessage() for r in caplog.records if "by earlier runs" in r.getMessage()]
    assert warned == [
        f"1 line of {src} rejected by earlier runs is unchanged (line 2; the reasons in "
        f"{report}): fix it and run apply again"
    ]
    # And once the line is fixed, the file is read from line 1 and nothing is named
    src.write_text('{"id": "a", "text": "A"}\n{"id": "b", "text": "B"}\n{"id": "c", "text": "C"}\n')
    fixed = fetch_posts.fn(ctx, "jsonl", str(src), [], 10, "s4")
    assert (fixed.n_posts, fixed.n_fetched_before, fixed.rejected_key) == (1, 2, None)
    assert fixed.n_rejected_before == 0
    assert sources.line_checkpoint(storage, str(src)).rejected == {}
    nothing = fetch_posts.fn(ctx, "jsonl", str(src), [], 10, "s5")
    assert no_posts_hint(ctx, "jsonl", str(src), nothing).startswith(f"every line of {src} was")


def test_the_fetch_step_holds_posts_to_the_settings_limit(tmp_path: Path) -> None:
    # Given a JSONL file with a post longer than NER_MAX_POST_CHARS=20
    src = tmp_path / "posts.jsonl"
    src.write_text('{"id": "a", "text": "Glossier"}\n{"id": "b", "text": "' + "x" * 21 + '"}\n')
    storage = LocalStorage(tmp_path / "store")
    ctx = cast(
        Any, SimpleNamespace(storage=storage, settings=load_settings({"max_post_chars": 20}))
    )
    # When the apply flow's fetch step reads it
    fetched = fetch_posts.fn(ctx, "jsonl", str(src), [], 10, "s1")
    # Then the long post is rejected by name and the other kept
    assert (fetched.n_posts, fetched.n_rejected) == (1, 1)
    (said,) = storage.read_json("posts/s1.rejected.json")
    assert (said["line"], said["post_id"]) == (2, "b")
    assert said["reason"].startswith("text of 21 characters; the limit is 20")


def test_the_fetch_step_counts_posts_forgotten_before(tmp_path: Path) -> None:
    # Given p1 forgotten, and a new file holding only p1 (a trial's apply then said the file
    # "was read by an earlier run", which no run had)
    from ner import forget

    storage = LocalStorage(tmp_path / "store")
    forget.record(storage, ["p1"], by="ops", reason="deleted on X", stamp="f1")
    src = tmp_path / "posts.jsonl"
    src.write_text('{"id": "p1", "text": "Glossier again"}\n')
    ctx = cast(Any, SimpleNamespace(storage=storage, settings=load_settings()))
    # When the fetch step reads it
    fetched = fetch_posts.fn(ctx, "jsonl", str(src), [], 10, "s1")
    # Then no batch is stored and the post is counted as forgotten, not as nothing
    assert (fetched.posts_key, fetched.n_posts, fetched.n_forgotten) == (None, 0, 1)


def test_two_imports_into_one_project_take_turns(tmp_path: Path) -> None:
    # a trial's two apply runs started 41 ms apart both listed the project, both found the
    # same 20 posts missing and both imported them
    storage = LocalStorage(tmp_path / "dev")
    log = logging.getLogger("test")
    inside: list[tuple[str, float, float]] = []

    def run(name: str) -> None:
        with import_lease(storage, 7, name, log):
            start = time.monotonic()
            time.sleep(0.3)  # listing the project, then importing what is missing
            inside.append((name, start, time.monotonic()))

    runs = [threading.Thread(target=run, args=(f"run-{i}",)) for i in range(2)]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join(timeout=30)
    # Then both imported, one after the other, never at once
    assert sorted(name for name, _, _ in inside) == ["run-0", "run-1"]
    (_, _, first_end), (_, second_start, _) = sorted(inside, key=lambda item: item[1])
    assert second_start >= first_end
    # And a run that waits past its limit fails with a storage error (retried by the task)
    late = import_lease(storage, 7, "late", log, wait_s=0.2)
    with (
        import_lease(storage, 7, "holder", log),
        pytest.raises(StorageError, match="held the import into Label Studio project 7"),
        late,
    ):
        pass


def test_the_apply_result_as_markdown_names_the_outcome_and_the_figures_that_apply() -> None:
    from flows.apply_ner import ApplyResult, Delivered, Fetched, Imported, Predicted, Recovered

    predicted = Predicted(
        predictions_key="predictions/s1.jsonl", n_predictions=2, model_version="v"
    )
    delivered = Delivered(
        posts_key="posts/s1.jsonl",
        predicted=predicted,
        imported=Imported(project_id=3, n_imported=1, n_skipped_existing=1),
    )
    result = ApplyResult(
        fetched=Fetched(posts_key="posts/s1.jsonl", n_posts=2, n_rejected=0, source="jsonl"),
        destination="label_studio",
        delivered=delivered,
        recovered=[Recovered(posts_key="posts/s0.jsonl", skipped="another run holds it")],
    )
    # a scheduled run's result was not kept: its Prefect artifact is this text
    shown = result.markdown(lambda key: f"gs://b/dev/{key}")
    assert shown.splitlines()[:4] == [
        "# apply-ner: delivered",
        "",
        "| field | value |",
        "|---|---|",
    ]
    assert "| posts_key | gs://b/dev/posts/s1.jsonl |" in shown
    assert "| n_imported | 1 |\n| n_skipped_existing | 1 |\n" in shown
    assert "| earlier_left | 1 |" in shown
    assert "n_id_conflicts" not in shown and "tasks_key" not in shown and "recovered" not in shown
    # and a run with nothing new says so
    idle = ApplyResult(
        fetched=Fetched(posts_key=None, n_posts=0, n_rejected=0, source="x"), destination="storage"
    )
    assert idle.outcome == "no_new_posts" and idle.markdown().startswith("# apply-ner: no_new_")
    said = idle.model_copy(update={"no_posts": "in.jsonl holds no post"}).markdown()
    assert "| no_posts | in.jsonl holds no post |" in said  # why, in a deployment's artifact
    assert idle.model_copy(update={"skipped": "leased"}).outcome == "skipped"


def test_the_summary_counts_tasks_given_the_new_predictions() -> None:
    from flows.apply_ner import ApplyResult, Delivered, Imported, Predicted

    # a trial's re-predicted posts read "n_skipped_existing 3" alone in the summary table
    imported = Imported(project_id=3, n_skipped_existing=3, n_predictions_added=3)
    predicted = Predicted(predictions_key="predictions/s1.jsonl", n_predictions=3,
                          model_version="gazetteer")  # fmt: skip
    delivered = Delivered(posts_key="posts/s1.jsonl", predicted=predicted, imported=imported)
    fetched = Fetched(posts_key="posts/s1.jsonl", n_posts=3, n_rejected=0, source="jsonl")
    result = ApplyResult(fetched=fetched, destination="label_studio", delivered=delivered)
    summary = result.summary()
    assert (summary["n_skipped_existing"], summary["n_predictions_added"]) == (3, 3)
    again = imported.model_copy(update={"n_predictions_added": 0})
    sent_again = delivered.model_copy(update={"imported": again})
    assert (
        result.model_copy(update={"delivered": sent_again}).summary()["n_predictions_added"] is None
    )


def test_with_a_label_budget_the_summary_and_the_log_line_say_how_many_posts_were_sent() -> None:
    from flows.apply_ner import ApplyResult, Delivered, Predicted, Selection, _delivery_line

    # Given 453 posts predicted and 20 of them chosen for labelling into the tasks file
    predicted = Predicted(predictions_key="predictions/s1.jsonl", n_predictions=453,
                          model_version="gazetteer")  # fmt: skip
    chosen = Selection(selection_key="selections/s1.json", selection_strategy="active",
                       n_selected=20)  # fmt: skip
    delivered = Delivered(posts_key="posts/s1.jsonl", predicted=predicted, selection=chosen,
                          tasks_key="tasks/s1.json")  # fmt: skip
    fetched = Fetched(posts_key="posts/s1.jsonl", n_posts=453, n_rejected=0, source="jsonl")
    result = ApplyResult(fetched=fetched, destination="storage", delivered=delivered)
    # Then the summary counts them (a trial read "453 predictions" of a 20-task file) ...
    summary = result.summary(lambda key: f"file:///s/dev/{key}")
    assert (summary["n_posts"], summary["n_selected"]) == (453, 20)
    assert summary["selection_key"] == "file:///s/dev/selections/s1.json"
    # ... and so does the run's last log line
    assert _delivery_line(delivered) == (
        "453 predictions of posts/s1.jsonl -> 20 posts chosen for labelling (NER_LABEL_BUDGET) "
        "-> tasks/s1.json"
    )
    # And without a budget neither is there
    every = delivered.model_copy(update={"selection": None})
    plain = result.model_copy(update={"delivered": every}).summary()
    assert plain["n_selected"] is None and plain["selection_key"] is None
    assert _delivery_line(every) == "453 predictions of posts/s1.jsonl -> tasks/s1.json"


def test_with_no_mlflow_store_yet_the_cold_start_predicts_and_none_is_created(
    tmp_path: Path,
) -> None:
    from flows.apply_ner import resolve_model
    from ner.environments import open_registry

    # Given a SQLite store that does not exist yet (trial AN: apply created a 950 KB one to
    # look for @champion)
    db = tmp_path / "mlflow.db"
    settings = load_settings(mlflow_tracking_uri=f"sqlite:///{db}")
    ctx = cast(Any, SimpleNamespace(settings=settings, registry=open_registry(settings)))
    # When the model is resolved, then it is the cold start, and no store was made
    assert resolve_model.fn(ctx, None) == settings.cold_start
    assert not db.exists()
