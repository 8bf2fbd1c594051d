"""Unreadable export files moved aside, bad records rejected alone, through local storage
(issue 11, item 8). The demo gold export is a real-shaped export of 453 annotated tasks."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from flows.context import RunContext, is_transient
from flows.train_ner import pull_annotations
from ner import layout
from ner.errors import ExportFileError, LabelStudioError, StorageError
from ner.labelstudio import client
from ner.labelstudio.client import LabelStudioProject, batched
from ner.labelstudio.config import LabelConfig
from ner.labelstudio.exchange import collect_annotations
from ner.labelstudio.quarantine import quarantine_file, quarantined_files
from ner.records import read_annotations
from ner.settings import load_settings
from ner.storage import LocalStorage

GOLD = Path(__file__).resolve().parents[2] / "ner" / "resources" / "demo" / "gold_export.json"
LABELS = ("BRAND",)
GOOD_KEY = "exports/20261120T100000Z-ls-1.json"
BAD_KEY = "exports/20261121T100000Z-ls-1.json"
OUT = "annotations/run.jsonl"


def _gold() -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = json.loads(GOLD.read_text(encoding="utf-8"))
    return tasks


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (
            json.dumps(_gold()[:50]).encode("utf-16"),
            "not UTF-8: it looks UTF-16 (byte 0xff at offset 0); save it as UTF-8",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply to read"),
        (json.dumps(_gold()[:50]).encode()[:-3], "the JSON ends early ("),
    ],
    ids=["utf-16", "deep", "truncated"],
)
def test_unreadable_file_is_quarantined_and_the_next_run_works(
    storage: LocalStorage, bad: bytes, reason: str
) -> None:
    # given a good export and an unreadable one in exports/
    storage.write_bytes(GOOD_KEY, GOLD.read_bytes())
    storage.write_bytes(BAD_KEY, bad)
    # when annotations are collected
    first = collect_annotations(storage, None, LABELS, out_key=OUT)
    # then the good file is read whole and the bad one is moved aside, named with its reason
    assert first.n_annotations == 453
    assert len(first.quarantined) == 1
    assert first.quarantined[0].startswith(f"{BAD_KEY} -> quarantine/{BAD_KEY}: {reason}")
    assert storage.list(layout.EXPORTS) == [GOOD_KEY]
    assert storage.read_bytes(f"quarantine/{BAD_KEY}") == bad
    (record,) = quarantined_files(storage)
    assert (record.key, record.quarantine_key) == (BAD_KEY, f"quarantine/{BAD_KEY}")
    assert record.reason.startswith(reason)
    assert (record.size_bytes, record.sha256) == (len(bad), hashlib.sha256(bad).hexdigest())
    # and the next run proceeds without it, to the same annotations
    second = collect_annotations(storage, None, LABELS, out_key="annotations/next.jsonl")
    assert (second.n_annotations, second.quarantined) == (453, [])
    assert second.dataset_hash == first.dataset_hash


def test_an_export_of_another_format_is_set_aside_named_not_ignored(storage: LocalStorage) -> None:
    # Given a good export and a CSV export someone dropped beside it (a trial's was ignored
    # without a word), and files that are not exports yet: a partial copy, a hidden file
    storage.write_bytes(GOOD_KEY, GOLD.read_bytes())
    csv = b"id,text,label\n1,love Glossier,Glossier\n"
    storage.write_bytes("exports/export.csv", csv)
    storage.write_bytes("exports/next.json.part", b"[")
    # When annotations are collected
    pulled = collect_annotations(storage, None, LABELS, out_key=OUT)
    # Then the CSV is moved aside with a reason that says to export as JSON
    assert pulled.n_annotations == 453
    (named,) = pulled.quarantined
    assert named.startswith("exports/export.csv -> quarantine/exports/export.csv: not JSON")
    assert named.endswith("export the project from Label Studio as JSON")
    assert storage.read_bytes("quarantine/exports/export.csv") == csv
    # and the partial copy is left for a later pull
    assert storage.list(layout.EXPORTS) == [GOOD_KEY, "exports/next.json.part"]
    assert [layout.is_other_export(k) for k in ("exports/.x.csv", "exports/a/b.csv")] == [
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("text", "lipstick \ud83d", "data.text holds a lone surrogate U+D83D at character 9"),
        (
            "post_id",
            "\ud83d1",
            "data.post_id '\\ud83d1' holds a lone surrogate U+D83D at character 0",
        ),
        ("updated_at", "2026-11-16\ud83d", "updated_at holds a lone surrogate U+D83D"),
        ("completed_by", {"email": "a\udc00@x.org"}, "completed_by holds a lone surrogate"),
        ("post_id", [1, 2], "data.post_id is not a string or an integer (list [1, 2])"),
        ("post_id", True, "data.post_id is not a string or an integer (bool True)"),
        ("post_id", 2.5, "data.post_id is not a string or an integer (float 2.5)"),
        ("id", True, "task id is not a string or an integer (bool True)"),
        ("id", "7\udfff", "task id '7\\udfff' holds a lone surrogate U+DFFF at character 1"),
    ],
)
def test_a_bad_record_is_rejected_by_name_and_the_rest_of_the_file_kept(
    storage: LocalStorage, field: str, value: Any, reason: str
) -> None:
    # given the 453-task export with one bad record, written as Label Studio writes JSON
    tasks = _gold()
    bad = tasks[5]
    ref = f"task {bad['id']}: " if field != "id" else "(export item #5): "
    if field in ("text", "post_id"):
        bad["data"][field] = value
    elif field == "id":
        bad["id"] = value
    else:
        bad["annotations"][0][field] = value
    storage.write_bytes(BAD_KEY, json.dumps(tasks).encode("ascii"))
    # when annotations are collected
    report = collect_annotations(storage, None, LABELS, out_key=OUT)
    # then the 452 others are written and readable, the bad one is named with its reason
    assert (report.n_annotations, report.n_rejected, report.quarantined) == (452, 1, [])
    assert len(list(read_annotations(storage, OUT))) == 452
    (rejected,) = json.loads(storage.read_text(layout.rejected_report(OUT)))
    assert (rejected["kind"], rejected["export"]) == ("rejected", BAD_KEY)
    assert ref in rejected["reason"] and reason in rejected["reason"]
    assert storage.list(layout.EXPORTS) == [BAD_KEY]


def test_a_second_file_of_the_same_name_is_quarantined_beside_the_first(
    storage: LocalStorage,
) -> None:
    # given a file quarantined once
    storage.write_bytes(BAD_KEY, b"\xff first")
    first = quarantine_file(storage, BAD_KEY, "not UTF-8")
    # when a file of the same name is quarantined again
    storage.write_bytes(BAD_KEY, b"\xff second")
    second = quarantine_file(storage, BAD_KEY, "not UTF-8")
    # then both are kept, each with its reason record
    assert first.quarantine_key == f"quarantine/{BAD_KEY}"
    assert second.quarantine_key == "quarantine/exports/20261121T100000Z-ls-1-2.json"
    assert storage.read_bytes(first.quarantine_key) == b"\xff first"
    assert storage.read_bytes(second.quarantine_key) == b"\xff second"
    assert {q.quarantine_key for q in quarantined_files(storage)} == {
        first.quarantine_key,
        second.quarantine_key,
    }
    assert not storage.exists(BAD_KEY)


class _QuarantineDown(LocalStorage):
    """Local storage whose writes under quarantine/ fail (a transient storage outage)."""

    def write_bytes(self, key: str, data: bytes) -> str:
        if key.startswith(f"{layout.QUARANTINE}/"):
            raise StorageError(f"cannot write {key}: connection reset")
        return super().write_bytes(key, data)


def test_a_failed_move_keeps_the_file_and_is_transient(tmp_path: Path) -> None:
    # given an unreadable export and a storage that cannot write to quarantine/
    storage = _QuarantineDown(tmp_path)
    storage.write_bytes(BAD_KEY, b"\xff\xfe[]")
    # when annotations are collected, the storage error propagates (the step retries it)
    with pytest.raises(StorageError):
        collect_annotations(storage, None, LABELS, out_key=OUT)
    # then the file was not deleted
    assert storage.read_bytes(BAD_KEY) == b"\xff\xfe[]"
    assert is_transient(None, None, SimpleNamespace(data=StorageError("reset")))


def test_an_unreadable_file_is_a_permanent_error() -> None:
    error = ExportFileError(BAD_KEY, "not UTF-8: byte 0xff at offset 0")
    assert not is_transient(None, None, SimpleNamespace(data=error))
    assert str(error) == f"record {BAD_KEY!r}: not UTF-8: byte 0xff at offset 0"


def test_quarantine_keys_are_outside_the_exports_listing() -> None:
    key = layout.quarantined(BAD_KEY)
    assert not key.startswith(f"{layout.EXPORTS}/")
    assert layout.quarantine_reason(key) == f"quarantine/{BAD_KEY}.reason.json"
    assert layout.is_quarantine_reason(layout.quarantine_reason(key))
    assert not layout.is_quarantine_reason(key)


def test_a_chunked_label_studio_export_with_a_lone_surrogate_is_kept_whole(
    storage: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given an export of more tasks than one request takes, one holding a lone surrogate
    # (the answers of the SDK's export call are stood in for: the joining is under test)
    tasks = _gold()
    tasks[7]["data"]["text"] += " \ud83d"
    chunks = {
        tuple(t["id"] for t in part): json.dumps(part).encode("ascii")
        for part in batched(tasks, 200)
    }
    project = LabelStudioProject(None, 1, "fuzz", LabelConfig.for_labels(LABELS))  # type: ignore[arg-type]
    monkeypatch.setattr(client, "EXPORT_IDS_PER_REQUEST", 200)
    monkeypatch.setattr(project, "export_json", lambda ids: chunks[tuple(ids)])
    # when the tasks are exported, joined and kept as a snapshot
    raw, parsed = project.export_tasks([t["id"] for t in tasks])
    storage.write_bytes(BAD_KEY, raw)
    # then the snapshot holds every task and the pull keeps all but the bad record
    assert len(parsed) == 453 and json.loads(raw) == parsed
    report = collect_annotations(storage, None, LABELS, out_key=OUT)
    assert (report.n_annotations, report.n_rejected, report.quarantined) == (452, 1, [])
    assert f"task {tasks[7]['id']}: data.text holds a lone surrogate" in report.rejected[0]


def test_the_train_ner_pull_step_moves_a_bad_file_aside_and_pulls_the_rest(
    tmp_path: Path, clean_env: None
) -> None:
    # given the storage of an environment with a good export and a Latin-1 one
    settings = load_settings(
        storage_uri=str(tmp_path),
        env="dev",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",  # not the default in cwd
    )
    storage = LocalStorage(tmp_path / "dev")
    storage.write_bytes(GOOD_KEY, GOLD.read_bytes())
    storage.write_bytes(BAD_KEY, '[{"data": {"text": "crème"}}]'.encode("latin-1"))
    # when train-ner's pull step runs (its body: no retry is involved, nothing is raised)
    ctx = RunContext.open(settings)
    pulled = pull_annotations.fn(ctx, "storage", None, "run-1")
    # then it pulled the good file's 453 annotations and named the quarantined file
    assert pulled.n_annotations == 453
    assert pulled.quarantined == [
        f"{BAD_KEY} -> quarantine/{BAD_KEY}: not UTF-8: byte 0xe8 at offset 22; save it as UTF-8"
    ]
    # and the next run's pull proceeds from the remaining file
    assert pull_annotations.fn(ctx, "storage", None, "run-2").quarantined == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (
            json.dumps([{"id": 1}]).encode("utf-16"),
            "not UTF-8: it looks UTF-16 (byte 0xff at offset 0); save it as UTF-8",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply to read"),
        (b"<html>502 Bad Gateway</html>", "not JSON: "),
    ],
    ids=["utf-16", "deep", "html"],
)
def test_an_export_answer_the_pull_could_not_read_is_never_snapshotted(
    monkeypatch: pytest.MonkeyPatch, answer: bytes, reason: str
) -> None:
    # given a Label Studio answer that no snapshot reader could read (the SDK call stood in)
    project = LabelStudioProject(None, 3, "t", LabelConfig.for_labels(LABELS))  # type: ignore[arg-type]
    monkeypatch.setattr(project, "export_json", lambda ids: answer)
    # when it is exported, the error names the project's export and says why (a retry may
    # get a good answer: LabelStudioError is transient)
    with pytest.raises(LabelStudioError) as caught:
        project.export_tasks(None)
    assert str(caught.value).startswith(f"the export of project 3: {reason}")
    assert is_transient(None, None, SimpleNamespace(data=caught.value))


def test_a_retried_pull_with_the_same_keys_finds_the_file_in_quarantine(
    storage: LocalStorage,
) -> None:
    # given a pull of explicit keys that quarantined one of them
    storage.write_bytes(GOOD_KEY, GOLD.read_bytes())
    storage.write_bytes(BAD_KEY, b"\xff\xfe[]")
    first = collect_annotations(storage, [GOOD_KEY, BAD_KEY], LABELS, out_key=OUT)
    # when the step is retried with the same keys
    again = collect_annotations(storage, [GOOD_KEY, BAD_KEY], LABELS, out_key=OUT)
    # then it reads the good file again and reports the same quarantined file
    assert (again.n_annotations, again.quarantined) == (453, first.quarantined)
    assert len(quarantined_files(storage)) == 1
    # and a key missing for another reason is still a storage error
    with pytest.raises(StorageError, match="does not exist"):
        collect_annotations(storage, ["exports/never-written.json"], LABELS, out_key=OUT)
