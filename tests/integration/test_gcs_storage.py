"""``GCSStorage`` semantics against the GCS emulator, through google-cloud-storage over HTTP.

The smoke test in test_servers.py covers the round trip; here: overwrite and atomicity
(a failed write leaves the old object, and no partial one), listing boundaries, missing
keys and buckets, large resumable uploads, and an unreachable endpoint failing within
``NER_GCS_TIMEOUT_S``. Exclusive creates and leases run on fake-gcs-server, which honours
``ifGenerationMatch`` as GCS does (the emulator above ignores it).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from threading import Barrier
from typing import Any

import pytest
import requests

from flows.context import PERMANENT_ERRORS
from ner import leases
from ner.errors import ObjectNotFoundError, StorageAuthError, StorageError, StorageNotFoundError
from ner.storage import GCSStorage, Storage, create_bucket_hint, open_storage
from tests.support.fake_gcs import fake_gcs_service
from tests.support.servers import GcsService, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def bucket(gcs_emulator: GcsService) -> str:
    name = f"gcs-{uuid.uuid4().hex[:10]}"
    gcs_emulator.client().create_bucket(name)
    return name


@pytest.fixture
def storage(bucket: str) -> Storage:
    return open_storage(f"gs://{bucket}/loop", "dev", gcs_timeout_s=30)


def raw_names(gcs: GcsService, bucket: str) -> list[str]:
    return sorted(b.name for b in gcs.client().list_blobs(bucket))


def test_overwrite_replaces_the_whole_object(
    gcs_emulator: GcsService, bucket: str, storage: Storage
) -> None:
    # Given an object written once
    storage.write_json("goldsets/CURRENT.json", {"hash": "a" * 64, "n": 3})
    blob = gcs_emulator.client().bucket(bucket).get_blob("loop/dev/goldsets/CURRENT.json")
    first_generation = blob.generation
    # When a shorter document is written to the same key
    storage.write_json("goldsets/CURRENT.json", {"hash": "b" * 64})
    # Then readers get exactly the new one (nothing of the old tail), as a new generation
    assert storage.read_json("goldsets/CURRENT.json") == {"hash": "b" * 64}
    again = gcs_emulator.client().bucket(bucket).get_blob("loop/dev/goldsets/CURRENT.json")
    assert again.generation != first_generation
    assert raw_names(gcs_emulator, bucket) == ["loop/dev/goldsets/CURRENT.json"]


def test_a_failed_streamed_write_keeps_the_old_object_and_leaves_no_partial_one(
    gcs_emulator: GcsService, bucket: str, storage: Storage
) -> None:
    # Given posts already stored
    storage.write_lines("posts/batch.jsonl", ['{"id": "1"}', '{"id": "2"}'])

    def dies_half_way() -> Iterator[str]:
        for i in range(5_000):
            yield json.dumps({"id": str(i), "text": "x" * 200})
        raise RuntimeError("source died")

    # When a rewrite of that key and a write of a new key both fail half-way
    with pytest.raises(RuntimeError, match="source died"):
        storage.write_lines("posts/batch.jsonl", dies_half_way())
    with pytest.raises(RuntimeError, match="source died"):
        storage.write_lines("posts/new.jsonl", dies_half_way())
    # Then the old object is intact, the new key does not exist, and the bucket holds
    # nothing else (no temporary or partial object)
    assert list(storage.iter_lines("posts/batch.jsonl")) == ['{"id": "1"}', '{"id": "2"}']
    assert not storage.exists("posts/new.jsonl")
    assert raw_names(gcs_emulator, bucket) == ["loop/dev/posts/batch.jsonl"]
    # and reading it is a missing object, which no retry finds (a permanent error)
    with pytest.raises(ObjectNotFoundError, match=r"posts/new.jsonl does not exist"):
        list(storage.iter_lines("posts/new.jsonl"))
    with pytest.raises(ObjectNotFoundError, match=r"posts/new.jsonl does not exist"):
        storage.read_bytes("posts/new.jsonl")


def test_a_large_stream_goes_up_in_one_resumable_upload_and_streams_back(
    storage: Storage,
) -> None:
    # Given ~11 MB of JSONL lines (above the client's 8 MB single-request limit)
    lines = [
        json.dumps({"id": str(i), "text": f"Fenty gloss 💄 {'y' * 100} {i}"}) for i in range(90_000)
    ]
    # When they are streamed in and back out
    uri = storage.write_lines("posts/large.jsonl", iter(lines))
    # Then every line comes back in order, byte for byte
    assert uri.endswith("/loop/dev/posts/large.jsonl")
    assert sum(len(x.encode()) + 1 for x in lines) > 8 * 1024 * 1024
    count = 0
    for expected, got in zip(lines, storage.iter_lines("posts/large.jsonl"), strict=True):
        assert got == expected
        count += 1
    assert count == 90_000


def test_listing_respects_folder_boundaries_and_environments(bucket: str) -> None:
    # Given keys that share leading characters, nested keys, and another environment
    dev = open_storage(f"gs://{bucket}/loop", "dev")
    prod = open_storage(f"gs://{bucket}/loop", "prod")
    for key in ("posts/a.jsonl", "posts/sub/b.jsonl", "postscript.json", "posts2/c.jsonl"):
        dev.write_text(key, "x")
    prod.write_text("posts/prod-only.jsonl", "x")
    # When listed, then a prefix is a folder, results are sorted and stay in their env
    assert dev.list("posts") == ["posts/a.jsonl", "posts/sub/b.jsonl"]
    assert dev.list("posts/") == dev.list("posts")
    assert dev.list("posts/sub") == ["posts/sub/b.jsonl"]
    assert dev.list() == sorted(
        ["posts/a.jsonl", "posts/sub/b.jsonl", "postscript.json", "posts2/c.jsonl"]
    )
    assert dev.list("exports") == []
    assert prod.list() == ["posts/prod-only.jsonl"]
    # And a storage at the bucket's root (no prefix but the env) lists the same way
    root = open_storage(f"gs://{bucket}", "prod")
    root.write_text("tasks/t.json", "[]")
    assert root.list() == ["tasks/t.json"]
    assert root.uri("tasks/t.json") == f"gs://{bucket}/prod/tasks/t.json"


def test_missing_keys_and_bad_content_are_clear_storage_errors(storage: Storage) -> None:
    # Given an empty environment, reading any missing key names its gs:// URI
    for read in (
        lambda: storage.read_bytes("exports/nope.json"),
        lambda: storage.read_json("exports/nope.json"),
        lambda: list(storage.iter_lines("exports/nope.json")),
    ):
        with pytest.raises(StorageError, match=r"gs://.*/loop/dev/exports/nope\.json does not"):
            read()
    # And lookups and deletes of missing keys are quiet
    assert not storage.exists("exports/nope.json")
    storage.delete("exports/nope.json")
    # And invalid keys and invalid JSON are refused with a reason
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.write_text("../escape.json", "{}")
    storage.write_text("exports/bad.json", "{not json")
    with pytest.raises(StorageError, match="not valid JSON"):
        storage.read_json("exports/bad.json")


def test_a_missing_bucket_is_a_permanent_storage_error(gcs_emulator: GcsService) -> None:
    # Given a storage URI naming a bucket that does not exist
    storage = open_storage(f"gs://no-such-bucket-{uuid.uuid4().hex[:8]}/x", "dev")
    # When written to, then the error is ours, names the object and says the bucket is missing
    with pytest.raises(StorageError, match=r"GCS upload of gs://no-such-bucket-.*/x/dev/a\.json"):
        storage.write_json("a.json", {})
    assert isinstance(storage, GCSStorage)
    with pytest.raises(StorageNotFoundError, match=r"bucket 'no-such-bucket-\w+' does not exist"):
        storage.list("posts")
    # And a task would not retry it (a trial waited 14 s for three retries of a 404)
    with pytest.raises(StorageError) as caught:
        storage.write_json("a.json", {})
    assert isinstance(caught.value, PERMANENT_ERRORS)


def test_doctor_names_a_missing_bucket_and_missing_credentials_with_their_fix(
    gcs_emulator: GcsService, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a trial's doctor line was cut at 160 characters, before the way out
    from apps.doctor import CheckStatus, check_storage
    from ner.settings import Settings

    missing = check_storage(Settings(storage_uri="gs://no-such-bucket-doc/x"))
    assert (missing.status, missing.detail) == (
        CheckStatus.FAIL,
        "bucket 'no-such-bucket-doc' does not exist",
    )
    assert "BRANDLOOP_<ENV>_STORAGE_URI=gs://no-such-bucket-doc brandloop deploy" in missing.fix
    # and the emulator's way needs no Prefect API (a trial's CLI-only user had none): the
    # request the hint shows makes the bucket
    hint = create_bucket_hint("made-by-the-hint")
    shown = re.search(r"curl -X POST \$STORAGE_EMULATOR_HOST(\S+) (.*) -d '(\{.*?\})'", hint)
    assert shown is not None and "Content-Type: application/json" in shown[2], hint
    host = os.environ["STORAGE_EMULATOR_HOST"]
    headers = {"Content-Type": "application/json"}
    made = requests.post(host + shown[1], data=shown[3], headers=headers, timeout=10)
    assert made.status_code == 200, made.text
    assert check_storage(Settings(storage_uri="gs://made-by-the-hint/x")).status is CheckStatus.OK
    # and deploy's --create-bucket makes it from that variable, or says why it cannot (a trial
    # ran it with only --set storage_uri and read "bucket created: false")
    from deployments.bootstrap import ensure_bucket

    variable = "BRANDLOOP_DEV_STORAGE_URI"
    assert ensure_bucket("gs://no-such-bucket-doc/x", variable) == "created gs://no-such-bucket-doc"
    assert ensure_bucket("gs://no-such-bucket-doc/x", variable) == "gs://no-such-bucket-doc exists"
    assert check_storage(Settings(storage_uri="gs://no-such-bucket-doc/x")).status is CheckStatus.OK
    assert ensure_bucket("", variable) == f"none ({variable} is unset, not a gs:// URI)"
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-key.json"))
    no_key = check_storage(Settings(storage_uri="gs://any-bucket/x"))
    assert no_key.status is CheckStatus.FAIL and "no usable credentials" in no_key.detail
    assert "STORAGE_EMULATOR_HOST" in no_key.fix


def test_missing_credentials_are_a_permanent_storage_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Given no emulator and no Application Default Credentials (a trial's worker without
    # STORAGE_EMULATOR_HOST retried DefaultCredentialsError three times)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "no-key.json"))
    storage = open_storage("gs://any-bucket/p", "dev", gcs_timeout_s=5)
    # When used, then the error names the way to give credentials, and is permanent
    with pytest.raises(StorageAuthError, match="STORAGE_EMULATOR_HOST in the process") as caught:
        storage.write_json("a.json", {})
    assert isinstance(caught.value, PERMANENT_ERRORS)


def test_an_unreachable_endpoint_fails_within_the_timeout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given STORAGE_EMULATOR_HOST pointing at a port where nothing listens
    emulator = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
    storage = open_storage("gs://any-bucket/p", "dev", gcs_timeout_s=1.0)
    # When read and written, then each call gives up with a StorageError (instead of the
    # client's default 120 s of retries)
    with pytest.raises(StorageError, match=r"GCS download of gs://any-bucket/p/dev/a\.json") as e:
        storage.read_bytes("a.json")
    # naming the endpoint, why, and the setting (a trial read 300 characters of urllib3's chain)
    said = str(e.value)
    assert f"the emulator at STORAGE_EMULATOR_HOST={emulator} did not answer within 1 s" in said
    assert "(Connection refused); is it running? NER_GCS_TIMEOUT_S bounds the wait" in said
    assert "HTTPConnection" not in said and "Max retries" not in said
    with pytest.raises(StorageError, match=r"GCS upload of gs://any-bucket/p/dev/a\.json"):
        storage.write_bytes("a.json", b"x")
    with pytest.raises(StorageError, match="GCS listing of"):
        storage.list("posts")


# --------------------------------------------------------------------------- exclusive
RACERS = 8


@pytest.fixture(scope="module")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GcsService]:
    """fake-gcs-server for this module; a server that cannot start fails the tests."""
    with fake_gcs_service(tmp_path_factory.mktemp("fake-gcs")) as service:
        yield service


@pytest.fixture
def exclusive(fake_gcs: GcsService) -> Callable[[], GCSStorage]:
    """New GCSStorage objects (each with its own client) on one fresh bucket."""
    name = f"excl-{uuid.uuid4().hex[:10]}"
    fake_gcs.client().create_bucket(name)
    return lambda: GCSStorage(name, "loop/dev", fake_gcs.client(), timeout_s=30)


def race(function: Callable[[int], Any]) -> list[Any]:
    """Run ``function(racer)`` on RACERS threads released together."""
    barrier = Barrier(RACERS)

    def go(racer: int) -> Any:
        barrier.wait()
        return function(racer)

    with ThreadPoolExecutor(RACERS) as pool:
        return list(pool.map(go, range(RACERS)))


def test_exclusive_create_on_gcs_lets_exactly_one_racer_win(
    exclusive: Callable[[], GCSStorage],
) -> None:
    # Given eight writers, each with its own client, ready to create the same object
    stores = [exclusive() for _ in range(RACERS)]
    # When they create it at once
    wins = race(lambda i: stores[i].create_exclusive("leases/b/race.json", f"racer {i}".encode()))
    # Then exactly one succeeded and the object holds its bytes
    assert wins.count(True) == 1
    assert stores[0].read_text("leases/b/race.json") == f"racer {wins.index(True)}"
    # And a later create changes nothing, while an ordinary write still overwrites
    assert not stores[1].create_exclusive("leases/b/race.json", b"late")
    assert stores[1].read_text("leases/b/race.json") == f"racer {wins.index(True)}"
    stores[1].write_text("leases/b/race.json", "overwritten")
    assert stores[2].read_text("leases/b/race.json") == "overwritten"


def test_leases_on_gcs_give_a_batch_to_one_run_and_pass_it_on(
    exclusive: Callable[[], GCSStorage],
) -> None:
    stores = [exclusive() for _ in range(RACERS)]
    now = [1_800_000_000.0]

    def clock() -> float:
        return now[0]

    def take(racer: int) -> leases.Lease | None:
        return leases.acquire(stores[racer], "20261129T2104", f"run-{racer}", ttl_s=60, clock=clock)

    # When eight runs want the same batch at once, exactly one gets it
    first = [lease for lease in race(take) if lease is not None]
    assert [lease.epoch for lease in first] == [0]
    # And while it is held, nobody else does; once it expires, exactly one takes it over
    assert take(0) is None
    now[0] += 60
    second = [lease for lease in race(take) if lease is not None]
    assert [lease.epoch for lease in second] == [1]
    assert not leases.holds(stores[0], first[0], clock=clock)
    # And a release hands it on at once, to exactly one
    assert leases.release(stores[0], second[0], clock=clock)
    third = [lease for lease in race(take) if lease is not None]
    assert [lease.epoch for lease in third] == [3]
    assert sorted(stores[0].list("leases")) == [
        f"leases/20261129T2104/{epoch:09d}.json" for epoch in range(4)
    ]


def test_exclusive_create_in_a_missing_bucket_is_a_storage_error(fake_gcs: GcsService) -> None:
    storage = GCSStorage("no-such-bucket-x1", "p", fake_gcs.client(), timeout_s=5)
    with pytest.raises(StorageError, match=r"GCS exclusive create of gs://no-such-bucket-x1/p/a"):
        storage.create_exclusive("a", b"x")


def test_the_index_of_fetched_posts_on_gcs_is_read_by_segment_and_purged(
    gcs_emulator: GcsService, bucket: str, storage: Storage
) -> None:
    from ner import fetched, layout, purge
    from ner.records import write_records
    from ner.types import Post

    # Given two posts batches in the bucket
    write_records(
        storage, layout.posts_batch("a"), [Post(id="p0", text="Dior"), Post(id="p1", text="Fenty")]
    )
    write_records(storage, layout.posts_batch("b"), [Post(id="p2", text="Glossier")])
    # When what was fetched before is asked for, twice
    first = fetched.fetched_before(storage)
    assert raw_names(gcs_emulator, bucket)[0] == f"loop/dev/{layout.fetched_segment(1)}"
    assert fetched.fetched_before(storage) == first
    # Then it names every post with its text's digest, from one segment object
    assert first == {
        "p0": {fetched.text_digest("Dior")},
        "p1": {fetched.text_digest("Fenty")},
        "p2": {fetched.text_digest("Glossier")},
    }
    # And a purge takes a forgotten post out of the segment in the bucket
    assert purge.purge_storage(storage, ["p1"]).rewritten[layout.fetched_segment(1)] == 1
    assert set(fetched.fetched_before(storage)) == {"p0", "p2"}


def test_labelstudio_add_export_puts_a_local_export_in_the_bucket(
    gcs_emulator: GcsService, bucket: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from apps import cli
    from ner.labelstudio.collect import collect_annotations

    # Given a Label Studio JSON export on disk (a trial found no way to put one in the
    # emulator's bucket: gsutil does not reach it, and its upload call stored nothing)
    task = {"id": 3, "data": {"text": "new Anker charger", "post_id": "a3"}, "annotations": [
        {"id": 30, "result": [{"from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": 4, "end": 9, "text": "Anker", "labels": ["BRAND"]}}]}]}  # fmt: skip
    export = tmp_path / "project-1-at-2026-12-06.json"
    export.write_text(json.dumps([task]), encoding="utf-8")
    # When it is added to the environment's storage on gs://
    uri = f"gs://{bucket}/loop"
    args = ["labelstudio", "add-export", str(export), "--set", f"storage_uri={uri}"]
    result = CliRunner().invoke(cli.app, args)
    # Then it is in the bucket under exports/, and the pull reads its label
    assert result.exit_code == 0, result.output
    key = "loop/dev/exports/project-1-at-2026-12-06.json"
    assert key in raw_names(gcs_emulator, bucket)
    assert f"copied to gs://{bucket}/{key}" in " ".join(result.output.split())
    storage = open_storage(uri, "dev", gcs_timeout_s=30)
    report = collect_annotations(
        storage, storage.list("exports"), ["BRAND"], out_key="annotations/run.jsonl"
    )
    assert report.n_annotations == 1
