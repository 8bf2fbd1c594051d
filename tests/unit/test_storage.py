from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ner.errors import StorageError
from ner.storage import GCSStorage, LocalStorage, open_storage


def test_local_layout_is_per_environment(tmp_path: Path) -> None:
    storage = open_storage(str(tmp_path), "staging")
    uri = storage.write_json("tasks/a.json", [{"x": 1}])
    assert (tmp_path / "staging" / "tasks" / "a.json").is_file()
    assert uri.startswith("file://")
    assert storage.read_json("tasks/a.json") == [{"x": 1}]
    assert storage.list("tasks") == ["tasks/a.json"]


def test_file_uris_are_read_as_rfc_8089_says(tmp_path: Path) -> None:
    from ner.storage import local_path

    spaced = tmp_path / "my store"
    for uri in (f"file://{spaced}", f"file://localhost{spaced}", f"file:{spaced}"):
        assert local_path(uri.replace(" ", "%20")) == spaced
    assert local_path("relative/store") == Path("relative/store")
    storage = open_storage(f"file://localhost{tmp_path}", "dev")
    storage.write_json("a.json", [])
    assert (tmp_path / "dev" / "a.json").is_file()  # not under a folder named "localhost"
    for bad in ("file://tmp/store", "file:relative", f"file://{tmp_path}#x"):
        with pytest.raises(StorageError, match=r"names the host|not a file URI of a local path"):
            local_path(bad)


def test_write_lines_streams_and_reads_back(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_lines("posts/p.jsonl", (f'{{"i": {i}}}' for i in range(1000)))
    lines = list(storage.iter_lines("posts/p.jsonl"))
    assert len(lines) == 1000 and lines[-1] == '{"i": 999}'


def test_failed_write_leaves_no_half_file(tmp_path: Path) -> None:
    # Given a generator that fails half-way through
    storage = LocalStorage(tmp_path)
    storage.write_lines("posts/p.jsonl", ["old"])

    def broken() -> object:
        yield "new-1"
        raise RuntimeError("source died")

    # When the write fails
    with pytest.raises(RuntimeError):
        storage.write_lines("posts/p.jsonl", broken())  # type: ignore[arg-type]
    # Then the previous content is intact and no temp file is visible
    assert list(storage.iter_lines("posts/p.jsonl")) == ["old"]
    assert storage.list() == ["posts/p.jsonl"]


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_written_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    # a trial's import JSON was 0600 under umask 022: unreadable to Label Studio's own user
    storage = LocalStorage(tmp_path)
    previous = os.umask(umask)
    try:
        storage.write_json("tasks/a.json", [{"x": 1}])
        storage.write_lines("posts/p.jsonl", ["{}"])
    finally:
        os.umask(previous)
    for written in ("tasks/a.json", "posts/p.jsonl"):
        assert stat.S_IMODE((tmp_path / written).stat().st_mode) == 0o666 & ~umask


def test_missing_and_invalid_keys_are_clear_errors(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(StorageError, match="does not exist"):
        storage.read_bytes("exports/nope.json")
    with pytest.raises(StorageError, match="invalid storage key"):
        storage.write_text("../escape.txt", "x")
    storage.write_text("exports/bad.json", "{not json")
    with pytest.raises(StorageError, match="not valid JSON"):
        storage.read_json("exports/bad.json")


def test_gs_uri_maps_to_bucket_prefix_and_env() -> None:
    storage = open_storage("gs://brand-bucket/loop", "prod")
    assert isinstance(storage, GCSStorage)
    assert storage.bucket_name == "brand-bucket"
    assert storage.uri("posts/x.jsonl") == "gs://brand-bucket/loop/prod/posts/x.jsonl"


def test_unsupported_scheme_is_refused() -> None:
    with pytest.raises(StorageError, match="unsupported storage URI"):
        open_storage("s3://bucket", "dev")


def test_retries_that_ended_on_an_http_error_are_not_called_no_answer() -> None:
    from google.api_core import exceptions as gexc

    # GCS answered 503 until the deadline: the error says so, not "did not answer"
    last = gexc.ServiceUnavailable("GET https://storage.googleapis.com/b: backend error")
    gave_up = gexc.RetryError("Timeout of 5.0s exceeded", last)
    said = str(GCSStorage("b", timeout_s=5)._wrap("download of", "k", gave_up))
    assert said.startswith("GCS download of gs://b/k failed: Timeout of 5.0s exceeded")
    assert "503" in said and "did not answer" not in said
